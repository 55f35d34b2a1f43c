"""Experiment 5 (one-unit dynamics, paper figures 3 and 6) against root finding, NumPy loops and finite differences."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

from rnn_jax.repro.experiments import one_unit


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_final_output(w, b, steps=50, x0=0.5):
    """σ(x_steps) of x_t = w σ(x_{t-1}) + b by a plain loop."""
    x = x0
    for _ in range(steps):
        x = w * np_sigmoid(x) + b
    return np_sigmoid(x)


def solved_by_root_finding(w=5.0):
    """Saddle-nodes by bracketing the root of w σ'(x) − 1 on each side of 0, then b = x − w σ(x)."""
    g = lambda x: w * np_sigmoid(x) * (1 - np_sigmoid(x)) - 1
    xs = [brentq(g, 1e-9, 10, xtol=1e-15), brentq(g, -10, -1e-9, xtol=1e-15)]
    return sorted(x - w * np_sigmoid(x) for x in xs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("one_unit"))
    summary = one_unit.run(out, "tiny", progress=False)
    return out, summary


def records(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def record(out, prefix):
    (rec,) = [r for r in records(out) if r["key"].startswith(prefix)]
    return rec


# ---------------------------------------------------------------- (a) bifurcations


def test_closed_form_saddle_nodes_solve_both_equations():
    expected = solved_by_root_finding()
    points = one_unit.saddle_node_points(5.0)
    np.testing.assert_allclose([p["b"] for p in points], expected, atol=1e-10)
    for p in points:
        assert p["x"] == pytest.approx(5 * np_sigmoid(p["x"]) + p["b"], abs=1e-12)  # a fixed point
        assert 5 * np_sigmoid(p["x"]) * (1 - np_sigmoid(p["x"])) == pytest.approx(1.0, abs=1e-12)  # tangent
    with pytest.raises(ValueError, match="w > 4"):
        one_unit.saddle_node_points(4.0)


def test_diagram_finds_the_bifurcations_to_the_grid_resolution(tiny):
    out, summary = tiny
    expected = solved_by_root_finding()
    bif = summary["bifurcation"]
    spacing = bif["grid_spacing"]
    assert len(bif["diagram_b"]) == 2 and bif["max_attractors"] == 2
    for found, truth in zip(bif["diagram_b"], expected):
        assert abs(found - truth) <= spacing
    # the count is 2 strictly inside the bistable interval and 1 outside it
    data = np.load(os.path.join(out, record(out, "bifurcation")["file"]))
    b, counts = data["b"], data["counts"]
    inside = (b > expected[0] + spacing) & (b < expected[1] - spacing)
    outside = (b < expected[0] - spacing) | (b > expected[1] + spacing)
    assert np.all(counts[inside] == 2) and np.all(counts[outside] == 1)
    # every end point is a fixed point of the map, and a stable one
    ends = data["end_points"][np.abs(b - (-2.5)).argmin()]
    np.testing.assert_allclose(5 * np_sigmoid(ends) + (-2.5), ends, atol=1e-8)
    assert np.all(5 * np_sigmoid(ends) * (1 - np_sigmoid(ends)) < 1)


# ---------------------------------------------------------------- (b) surface and wall


def test_cell_based_error_matches_a_plain_loop():
    with jax.enable_x64(True):
        for w, b in [(5.0, -2.6), (5.0, -2.62), (2.0, -1.0), (8.0, -4.0), (0.5, 0.3)]:
            value = float(one_unit.error(jnp.array([w, b], jnp.float64)))
            assert value == pytest.approx((np_final_output(w, b) - 0.7) ** 2, rel=1e-10, abs=1e-15)


def test_wall_is_where_x0_is_the_unstable_fixed_point(tiny):
    _, summary = tiny
    wall = summary["wall"]
    assert 5 * np_sigmoid(0.5) + wall["wall_b"] == pytest.approx(0.5, abs=1e-12)
    assert abs(wall["crest_b"] - wall["wall_b"]) < wall["wall_width"]
    assert wall["grad_norm_at_wall"] > 1e3
    # across the wall E jumps from the upper attractor's error to the lower one's
    lo, hi = wall["wall_b"] - 5 * wall["wall_width"], wall["wall_b"] + 5 * wall["wall_width"]
    assert (np_final_output(5.0, lo) - 0.7) ** 2 - (np_final_output(5.0, hi) - 0.7) ** 2 > 0.25


def test_huge_gradient_at_the_start_is_real(tiny):
    """jax.grad through the 50 steps agrees with central differences far below the wall's width."""
    _, summary = tiny
    w0, b0 = summary["wall"]["start"]
    eps = 1e-3 * summary["wall"]["wall_width"]
    e = lambda w, b: (np_final_output(w, b) - 0.7) ** 2
    fd = np.array([(e(w0 + eps, b0) - e(w0 - eps, b0)) / (2 * eps), (e(w0, b0 + eps) - e(w0, b0 - eps)) / (2 * eps)])
    assert np.linalg.norm(fd) == pytest.approx(summary["wall"]["grad_norm_at_start"], rel=1e-3)
    assert np.linalg.norm(fd) > 100


def test_clipped_step_is_threshold_times_lr_unclipped_is_orders_larger(tiny):
    out, summary = tiny
    wall = summary["wall"]
    lr, threshold = wall["learning_rate"], wall["threshold"]
    clipped, unclipped = wall["steps"]["clipped"], wall["steps"]["unclipped"]
    assert clipped["first_step"] == pytest.approx(lr * threshold, rel=1e-9)
    assert unclipped["first_step"] == pytest.approx(lr * wall["grad_norm_at_start"], rel=1e-9)
    assert unclipped["first_step"] > 100 * clipped["first_step"]
    assert clipped["max_step"] <= lr * threshold * (1 + 1e-9)
    rec = record(out, "wall/")
    assert rec["unclipped"]["path"][0] == rec["clipped"]["path"][0] == wall["start"]
    # the unclipped jump lands on a plateau (σ saturated: E = 0.3² or 0.7²) where it stays;
    # the clipped descent goes on along the wall to E ≈ 0
    assert unclipped["final_error"] == pytest.approx(0.09, abs=1e-6) or unclipped["final_error"] == pytest.approx(0.49, abs=1e-6)
    assert clipped["final_error"] < 1e-3
    # the same over the random starts
    seeded = record(out, "wall_seeds")
    np.testing.assert_allclose(seeded["clipped"]["first_step"], lr * threshold, rtol=1e-9)
    ratio = np.asarray(seeded["unclipped"]["first_step"]) / (lr * threshold)
    assert np.all(ratio > 10) and np.median(ratio) > 100
    assert np.all(np.asarray(seeded["clipped"]["final_error"]) < np.asarray(seeded["unclipped"]["final_error"]))
    assert len(seeded["seeds"]) == one_unit.PROFILES["tiny"]["seeds"]


# ---------------------------------------------------------------- outputs, resume, arguments


def test_outputs_and_resume(tiny):
    out, summary = tiny
    for name in ("results.jsonl", "table.md", "summary.json", "bifurcation.png", "error_surface.png", "wall_steps.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert json.load(open(os.path.join(out, "summary.json"))) == summary
    before = open(os.path.join(out, "results.jsonl"), "rb").read()
    assert one_unit.run(out, "tiny", progress=False) == summary
    assert open(os.path.join(out, "results.jsonl"), "rb").read() == before  # nothing recomputed
    lines = []
    for r in records(out):
        if r["key"].startswith("wall/"):
            r["section"]["max_grad_norm"] = 12345.0
        lines.append(json.dumps(r, sort_keys=True) + "\n")
    open(os.path.join(out, "results.jsonl"), "w").writelines(lines)
    assert one_unit.run(out, "tiny", progress=False)["wall"]["grad_norm_at_wall"] == 12345.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="profile"):
        one_unit.run("/nonexistent-never-created", "huge")
    with pytest.raises(ValueError, match="seeds"):
        one_unit.run("/nonexistent-never-created", "tiny", seeds=[])
