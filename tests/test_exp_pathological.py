"""Experiment 4 (the pathological problems with MSGD-CR): the tiny profile end to end, checked independently."""

import json
import os
import time

import jax
import numpy as np
import pytest

from rnn_jax import tasks, train
from rnn_jax.experiments import pathological as exp

TASK = "temporal_order_3bit"


def _lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pathological"))
    t0 = time.time()
    summary = exp.run(out, "tiny", progress=False)
    return out, summary, time.time() - t0


def test_tiny_profile_writes_every_output(tiny):
    out, summary, _ = tiny
    for name in ("results.jsonl", "table.md", "summary.json", "success.png", "generalisation.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f) == summary


def test_success_rate_is_the_solved_lines_over_the_members(tiny):
    out, summary, _ = tiny
    (row,) = summary["rows"]
    members = [l for l in _lines(os.path.join(out, "results.jsonl")) if l["kind"] == "member"]
    assert row["members"] == len(members) == exp.PROFILES["tiny"]["seeds"]
    assert row["solved"] == sum(l["outcome"] == "solved" for l in members)
    assert 0.0 <= row["low"] <= row["rate"] == row["solved"] / row["members"] <= row["high"] <= 1.0
    assert row["solved"] == row["members"]  # length 10 is easy: every member solves within the budget
    errors = [l["error"] for l in members]
    assert row["error_spread"]["max"] == max(errors) < 0.01 and row["error_spread"]["n"] == len(errors)


def test_constant_guess_baseline_matches_the_closed_form(tiny):
    # 8 equiprobable classes: guessing the most frequent one is wrong 7/8 of the time (500 samples: ±0.05).
    _, summary, _ = tiny
    assert abs(summary["rows"][0]["baseline_error"] - 7 / 8) < 0.05


def _numpy_error(params, task, key, eval_size, eval_batch_size):
    """member_error's sampling, but the forward pass and the arg-max error by hand in NumPy (float64)."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    wrong = []
    for k in jax.random.split(key, -(-eval_size // eval_batch_size)):
        batch = task.sample(k, eval_batch_size)
        xs, n = np.asarray(batch.inputs, np.float64), np.asarray(batch.mask).sum(1).astype(int)
        h = np.zeros((xs.shape[0], p.cell.w_hh.shape[0]))
        last = np.zeros_like(h)
        for t in range(xs.shape[1]):
            h = np.tanh(xs[:, t] @ p.cell.w_ih + h @ p.cell.w_hh + p.cell.b)
            last = np.where((t == n - 1)[:, None], h, last)
        logits = last @ p.readout.w + p.readout.b
        wrong.append(np.mean(np.argmax(logits, 1) != np.asarray(batch.targets)))
    return float(np.mean(wrong))


def test_generalisation_is_member_error_of_the_best_solved_member(tiny):
    out, summary, _ = tiny
    g = summary["generalisation"][TASK]
    members = {l["member"]: l for l in _lines(os.path.join(out, "results.jsonl")) if l["kind"] == "member"}
    solved = [m for m in members.values() if m["outcome"] == "solved"]
    assert members[g["member"]]["outcome"] == "solved"
    assert (members[g["member"]]["error"], g["steps"]) == min((m["error"], m["steps"]) for m in solved)
    params = exp.load_params(os.path.join(out, g["params_file"]))
    setup = exp.make_setup(TASK, exp.PROFILES["tiny"]["tasks"][TASK], "smart_tanh", g["eval_size"])
    assert [e["length"] for e in g["errors"]] == [10, 20]
    for e in g["errors"]:
        gs = exp.generalisation_setup(setup, e["length"], g["eval_size"])
        assert gs.task.max_steps == e["length"] and gs.task.name == TASK
        key = jax.random.fold_in(jax.random.PRNGKey(exp.GENERALISATION_SEED), e["length"])
        again = float(jax.jit(lambda p, k: train.member_error(gs, p, k))(params, key))
        assert again == e["error"]
        by_hand = _numpy_error(params, gs.task, key, gs.eval_size, gs.eval_batch_size)
        assert abs(by_hand - e["error"]) <= 2 / g["eval_size"]  # float32 vs float64 may flip a near-tie
    # solved at length 10 means it classifies fresh length-10 sequences too
    assert g["errors"][0]["error"] < 0.05


def test_saved_parameters_round_trip(tiny, tmp_path):
    out, summary, _ = tiny
    params = exp.load_params(os.path.join(out, summary["generalisation"][TASK]["params_file"]))
    path = str(tmp_path / "p.npz")
    exp.save_params(path, params)
    again = exp.load_params(path)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(a, b)
    assert params.cell.w_hh.shape == (50, 50) and params.readout.w.shape == (50, 8)


def test_rerun_resumes_without_training(tiny):
    out, summary, first = tiny
    before = open(os.path.join(out, "results.jsonl")).read()
    t0 = time.time()
    again = exp.run(out, "tiny", progress=False)
    assert again == summary
    assert open(os.path.join(out, "results.jsonl")).read() == before
    assert time.time() - t0 < 0.5 * first


def test_regression_baseline_is_the_mean_guess():
    # adding: target (x1 + x2)/2 is triangular on [0, 1]; guessing 0.5 misses by > 0.2 with probability 0.6² = 0.36.
    task = tasks.get("adding", min_length=10, max_length=10)
    assert abs(exp.constant_baseline_error(task, jax.random.PRNGKey(0), 4000) - 0.36) < 0.03
