"""Experiment 3 (temporal order, figure 7): the tiny profile end to end, its bookkeeping and its verdicts."""

import json
import os
import time

import numpy as np
import pytest

from rnn_jax.repro import train
from rnn_jax.repro.experiments import common
from rnn_jax.repro.experiments import temporal_order as exp


def _lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("temporal_order"))
    t0 = time.time()
    summary = exp.run(out, "tiny", progress=False)
    return out, summary, time.time() - t0


def test_tiny_profile_writes_every_output(tiny):
    out, summary, _ = tiny
    for name in ("results.jsonl", "table.md", "summary.json", "success_vs_length.png", "updates_to_solve.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f) == summary
    assert "| basic_tanh | 10 | MSGD-C | 2 / 2 |" in open(os.path.join(out, "table.md")).read()


def test_success_rates_are_the_solved_lines_over_the_members(tiny):
    out, summary, _ = tiny
    settings = exp.PROFILES["tiny"]
    lines = _lines(os.path.join(out, "results.jsonl"))
    assert len(lines) == len(settings["schemes"]) * len(settings["lengths"]) * len(exp.OPTIMIZERS) * settings["seeds"]
    for row in summary["rows"]:
        cell = [l for l in lines if (l["scheme"], l["length"], l["optimizer"]) == (row["scheme"], row["length"], row["optimizer"])]
        assert row["members"] == len(cell) == settings["seeds"]
        assert row["solved"] == sum(l["outcome"] == "solved" for l in cell)
        assert 0.0 <= row["low"] <= row["rate"] == row["solved"] / row["members"] <= row["high"] <= 1.0
        # The per-Setup sweep file tells the same story as the aggregated lines.
        sweep_lines = _lines(os.path.join(out, f"{row['scheme']}_T{row['length']}", "results.jsonl"))
        mine = [l for l in sweep_lines if l["config"]["optimizer"] == row["optimizer"]]
        assert sorted(l["outcome"] for l in mine) == sorted(l["outcome"] for l in cell)
    for l in lines:
        # solved = under 1 % errors at the evaluation that stopped it; a chunk boundary; within the budget
        assert (l["outcome"] == "solved") == (l["error"] is not None and l["error"] < 0.01)
        assert l["steps"] % settings["chunk_steps"] == 0 and 0 < l["steps"] <= settings["max_steps"]
        assert (l["clip"] is None) == (l["optimizer"] == "MSGD") and l["alpha"] == exp.OPTIMIZERS[l["optimizer"]]["alpha"]
        # MSGD never clips; MSGD-C / MSGD-CR with threshold 1 do clip from the start of training
        if l["optimizer"] == "MSGD":
            assert l["metrics"]["clipped_fraction"] == 0.0


def test_trivially_short_length_is_solved_by_every_msgd_c_member(tiny):
    _, summary, _ = tiny
    rows = [r for r in summary["rows"] if r["optimizer"] == "MSGD-C"]
    assert rows and all(r["solved"] == r["members"] == 2 for r in rows)


def test_the_three_configurations_are_paired_on_the_same_seeds(tiny):
    out, _, _ = tiny
    lines = _lines(os.path.join(out, "results.jsonl"))
    seeds = {o: sorted(l["seed"] for l in lines if l["optimizer"] == o) for o in exp.OPTIMIZERS}
    assert seeds["MSGD"] == seeds["MSGD-C"] == seeds["MSGD-CR"] == [0, 1]


def test_rerun_resumes_without_training(tiny):
    out, summary, first = tiny
    before = open(os.path.join(out, "results.jsonl")).read()
    t0 = time.time()
    again = exp.run(out, "tiny", progress=False)
    assert again == summary
    assert open(os.path.join(out, "results.jsonl")).read() == before  # nothing retrained, nothing appended
    assert time.time() - t0 < 0.5 * first


def test_a_folder_with_other_settings_is_refused(tiny):
    out, _, _ = tiny
    with pytest.raises(ValueError, match="seed_list"):
        exp.run(out, "tiny", seeds=[5, 6], progress=False)
    with pytest.raises(ValueError, match="other settings"):
        exp.run(out, "quick", progress=False)


def test_readout_initialisation_follows_the_scheme():
    # sigmoid / smart_tanh readouts are N(0, 0.01²), basic_tanh N(0, 0.1²): the sample std of 50×4×8 weights.
    hp = {"learning_rate": np.full(8, 0.01), "clip": np.ones(8), "alpha": np.zeros(8)}
    for scheme, std in (("sigmoid", 0.01), ("basic_tanh", 0.1), ("smart_tanh", 0.01)):
        state = train.init_members(exp.make_setup(scheme, 10, eval_size=100), range(8), hp)
        np.testing.assert_allclose(np.std(np.asarray(state.params.readout.w)), std, rtol=0.1)


def test_verdicts_are_decided_on_the_runs_records_and_smoke_profiles_print_none(tiny):
    out, summary, _ = tiny
    # tiny: one length and one scheme, so the length and sigmoid claims cannot be tested, and two seeds
    # cannot make a McNemar test significant (smallest one-sided p = 1/4)
    outcomes = {v["claim"]: v["outcome"] for v in summary["verdicts"]}
    assert outcomes == {"clipping_vs_length": "not tested", "regulariser": "not shown", "sigmoid_fails_most": "not tested"}
    assert "## Verdicts" in open(os.path.join(out, "table.md")).read()
    for name in ("quick", "pilot"):
        assert not exp.PROFILES[name]["verdicts"], name
        assert min(exp.PROFILES[name]["lengths"]) >= 30, name  # the symbol windows are not degenerate
    assert exp.PROFILES["cpu"]["verdicts"] and exp.PROFILES["cpu"]["confirm_size"] == 10_000


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        exp.run(str(tmp_path), "huge", progress=False)
    with pytest.raises(ValueError, match="distinct"):
        common.seed_list([1, 1], 4)
    assert common.seed_list(None, 3) == [0, 1, 2] and common.seed_list(2, 5) == [0, 1] and common.seed_list([7], 5) == [7]
