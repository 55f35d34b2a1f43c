"""Experiment 1 (counting ones, Roelants' tutorial) against the tutorial's own NumPy code and closed forms."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax.repro.experiments import counting
from rnn_jax.repro.tasks.counting import counting_ones_dataset


# ---------------------------------------------------------------- the tutorial's code (NumPy), the reference


def tutorial_forward_states(X, wx, wRec):
    """The tutorial's ``forward_states``: S[:, k+1] = S[:, k] * wRec + X[:, k] * wx, S[:, 0] = 0."""
    S = np.zeros((X.shape[0], X.shape[1] + 1))
    for k in range(X.shape[1]):
        S[:, k + 1] = X[:, k] * wx + S[:, k] * wRec
    return S


def tutorial_cost(X, t, wx, wRec):
    return ((t - tutorial_forward_states(X, wx, wRec)[:, -1]) ** 2).sum() / X.shape[0]


def tutorial_backward(X, S, grad_out, wRec):
    """The tutorial's ``backward_gradient``: (∂ξ/∂w_x, ∂ξ/∂w_rec) and the gradient over time (B, n+1)."""
    grad_over_time = np.zeros((X.shape[0], X.shape[1] + 1))
    grad_over_time[:, -1] = grad_out
    wx_grad = wRec_grad = 0.0
    for k in range(X.shape[1], 0, -1):
        wx_grad += np.sum(grad_over_time[:, k] * X[:, k - 1])
        wRec_grad += np.sum(grad_over_time[:, k] * S[:, k - 1])
        grad_over_time[:, k - 1] = grad_over_time[:, k] * wRec
    return (wx_grad, wRec_grad), grad_over_time


def tutorial_rprop(X, t, W, iterations=500, eta_p=1.2, eta_n=0.5):
    """The tutorial's Rprop loop, literally (sign 0 at the start, Δ = 0.001)."""
    W, W_delta, W_sign = list(W), [0.001, 0.001], [0, 0]
    for _ in range(iterations):
        S = tutorial_forward_states(X, W[0], W[1])
        grad_out = 2.0 * (S[:, -1] - t) / X.shape[0]
        grads, _ = tutorial_backward(X, S, grad_out, W[1])
        sign = np.sign(grads)
        for i in range(2):
            W_delta[i] *= eta_p if sign[i] == W_sign[i] else eta_n
        W_sign = sign
        for i in range(2):
            W[i] -= W_sign[i] * W_delta[i]
    return np.array(W)


@pytest.fixture(scope="module")
def tutorial_data():
    X = np.around(np.random.RandomState(1).rand(20, 10))  # the tutorial: np.random.seed(1), rows of np.around(rand(10))
    return X, X.sum(axis=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("counting"))
    summary = counting.run(out, "tiny", progress=False)
    return out, summary


def records(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def record(out, prefix):
    (rec,) = [r for r in records(out) if r["key"].startswith(prefix)]
    return rec


# ---------------------------------------------------------------- data


def test_seed_one_is_the_tutorials_dataset(tutorial_data):
    X, t = tutorial_data
    xs, counts = counting.dataset(1)
    np.testing.assert_array_equal(np.asarray(xs)[:, :, 0], X)
    np.testing.assert_array_equal(np.asarray(counts)[:, 0], t)
    np.testing.assert_array_equal(np.asarray(counting_ones_dataset(jnp.float64).inputs), np.asarray(xs))


# ---------------------------------------------------------------- (a) gradient check


def test_gradient_check_agrees_with_finite_differences_and_the_tutorials_bptt(tiny, tutorial_data):
    out, summary = tiny
    assert summary["gradient_check"]["max_rel_error"] < 1e-6
    assert summary["gradient_check"]["max_rel_error_autodiff_vs_bptt"] < 1e-12
    assert summary["gradient_check"]["all_tutorial_isclose"]
    X, t = tutorial_data
    rows = record(out, "gradient_check")["points"]
    assert [tuple(r["w"]) for r in rows][:2] == [counting.CHECK_POINT, counting.START]
    for row in rows:
        wx, wRec = row["w"]
        S = tutorial_forward_states(X, wx, wRec)
        (gx, grec), _ = tutorial_backward(X, S, 2.0 * (S[:, -1] - t) / X.shape[0], wRec)
        np.testing.assert_allclose(row["autodiff"], [gx, grec], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- (b) surface


def test_cost_surface_matches_the_tutorial_cost(tutorial_data):
    X, t = tutorial_data
    xs, counts = counting.dataset(1)
    gx, gr, c = counting.cost_surface(xs, counts, (-3, 3), (-3, 3), 7)
    expected = np.array([[tutorial_cost(X, t, a, b) for a, b in zip(rx, rr)] for rx, rr in zip(gx, gr)])
    np.testing.assert_allclose(c, expected, rtol=1e-12)
    assert gx[0, 0] == -3 and gr[-1, 0] == 3  # rows vary w_rec, as np.meshgrid


# ---------------------------------------------------------------- (c) gradient over time


@pytest.mark.parametrize("point", [(1.0, 2.0), (1.0, -2.0), (1.0, 0.5), (1.0, -0.5), (2.0, 1.0)])
def test_gradient_over_time_is_geometric_with_ratio_w_rec(tiny, tutorial_data, point):
    out, _ = tiny
    X, t = tutorial_data
    (curve,) = [c for c in record(out, "gradient_over_time")["points"] if tuple(c["w"]) == point]
    wx, w_rec = point
    n = X.shape[1]
    # closed form: δ_k = δ_n w_rec^(n-k), δ_n = 2 (s_n - t) / B, summed over the sequences
    s_n = tutorial_forward_states(X, wx, w_rec)[:, -1]
    delta_n = 2.0 * (s_n - t) / X.shape[0]
    expected = delta_n.sum() * w_rec ** (n - np.arange(1, n + 1))
    np.testing.assert_allclose(curve["sum"], expected, rtol=1e-12)
    np.testing.assert_allclose(curve["mean_norm"], np.abs(delta_n).mean() * abs(w_rec) ** (n - np.arange(1, n + 1)), rtol=1e-12)
    assert curve["ratio"] == pytest.approx(w_rec, rel=1e-12)
    norms = np.asarray(curve["mean_norm"])
    if abs(w_rec) > 1:  # exploding: grows going back in time (towards k = 1)
        assert curve["kind"] == "exploding" and np.all(norms[:-1] > norms[1:]) and norms[0] / norms[-1] > 100
    elif abs(w_rec) < 1:
        assert curve["kind"] == "vanishing" and np.all(norms[:-1] < norms[1:]) and norms[0] / norms[-1] < 1e-2
    else:
        assert curve["kind"] == "constant"


def test_gradient_over_time_at_w_rec_zero_stops_after_one_step(tiny):
    out, _ = tiny
    (curve,) = [c for c in record(out, "gradient_over_time")["points"] if tuple(c["w"]) == (1.0, 0.0)]
    assert curve["sum"][-1] != 0 and all(v == 0 for v in curve["sum"][:-1])


# ---------------------------------------------------------------- (d), (e) optimisation


def test_rprop_minus_retraces_the_tutorial_and_reaches_one_one(tiny, tutorial_data):
    out, summary = tiny
    rprop = summary["optimizers"]["rprop_minus"]
    assert np.linalg.norm(np.asarray(rprop["final_w"]) - 1.0) < 1e-2
    reference = tutorial_rprop(*tutorial_data, counting.START)
    np.testing.assert_allclose(rprop["final_w"], reference, rtol=1e-9)
    # the trained model counts the tutorial's test sequence (5 ones), as its NumPy forward pass does
    test = np.asarray(counting.TEST_SEQUENCE, np.float64)[None]
    assert rprop["test_output"] == pytest.approx(tutorial_forward_states(test, *reference)[0, -1], rel=1e-9)
    assert round(rprop["test_output"]) == 5 and abs(rprop["test_output"] - 5) < 0.05
    path = record(out, "optimize/rprop_minus")["tutorial"]["path"]
    assert len(path) == counting.ITERATIONS + 1 and tuple(path[0]) == counting.START
    # the first step: sign 0 -> a flip by the tutorial's rule, so Δ = 0.001 · 0.5 against the gradient's sign
    np.testing.assert_allclose(np.asarray(path[1]) - path[0], [0.0005, -0.0005], rtol=1e-12)


def test_optax_rprop_converges_and_the_seeds_too(tiny):
    _, summary = tiny
    ir = summary["optimizers"]["irprop_minus"]
    assert np.linalg.norm(np.asarray(ir["final_w"]) - 1.0) < 1e-2
    for name in ("rprop_minus", "irprop_minus"):
        o = summary["optimizers"][name]
        assert o["seeds_distance"]["n"] == summary["num_seeds"] == counting.PROFILES["tiny"]["seeds"]
        assert o["seeds_distance"]["max"] < 5e-2 and o["seeds_diverged"] == 0


def test_plain_sgd_explodes_or_crawls_clipped_sgd_makes_progress(tiny):
    out, summary = tiny
    opt = summary["optimizers"]
    start_cost = summary["surface"]["cost_at_start"]
    assert opt["sgd"]["diverged_at"] is not None and opt["sgd"]["diverged_at"] <= 5 and opt["sgd"]["final_w"] == [None, None]
    assert opt["sgd_tiny_lr"]["final_cost"] > 100 and opt["sgd_tiny_lr"]["distance"] > 1
    assert opt["clipped_sgd"]["final_cost"] < 1e-5 * start_cost and opt["clipped_sgd"]["distance"] < 0.5
    # while ‖g‖ ≫ threshold each clipped step is exactly η · threshold long
    path = np.asarray(record(out, "optimize/clipped_sgd")["tutorial"]["path"])
    hyper = counting.OPTIMIZERS["clipped_sgd"][1]
    np.testing.assert_allclose(np.linalg.norm(path[1] - path[0]), hyper["learning_rate"] * hyper["threshold"], rtol=1e-9)


# ---------------------------------------------------------------- outputs, resume, arguments


def test_outputs_and_resume(tiny):
    out, summary = tiny
    for name in ("results.jsonl", "table.md", "summary.json", "cost_surface.png", "gradient_over_time.png", "optimization_paths.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert json.load(open(os.path.join(out, "summary.json"))) == summary
    before = open(os.path.join(out, "results.jsonl"), "rb").read()
    assert counting.run(out, "tiny", progress=False) == summary
    assert open(os.path.join(out, "results.jsonl"), "rb").read() == before  # nothing recomputed
    # the rerun reads the finished units back: a tampered record shows up in the summary
    lines = []
    for r in records(out):
        if r["key"].startswith("optimize/rprop_minus"):
            r["tutorial"]["final_w"] = [7.0, 7.0]
        lines.append(json.dumps(r, sort_keys=True) + "\n")
    open(os.path.join(out, "results.jsonl"), "w").writelines(lines)
    assert counting.run(out, "tiny", progress=False)["optimizers"]["rprop_minus"]["final_w"] == [7.0, 7.0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="profile"):
        counting.run("/nonexistent-never-created", "huge")
    with pytest.raises(ValueError, match="seeds"):
        counting.run("/nonexistent-never-created", "tiny", seeds=0)
