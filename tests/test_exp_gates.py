"""Gates reproduction: at initialisation the tanh RNN's gradient reaching step 1 is a far
smaller fraction than the forget-bias-1 LSTM's, forget bias 1 beats 0, the recorded ratios
equal an independent step-by-step computation, and reruns resume exactly."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import losses
from rnn_jax.repro import train
from rnn_jax.repro.experiments import gates
from rnn_jax.readout import readout

TASK, LENGTH = "temporal_order", 30


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("gates"))
    summary = gates.run(out, "tiny", progress=False)
    return out, summary


def _canonical(summary):
    """JSON text of a summary: NaN (e.g. no solved seed) compares equal to itself."""
    return json.dumps(summary, sort_keys=True)


def _records(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def _ratio_by_hand(cell, params, xs, labels):
    """``mean_b ‖∂E/∂h_1‖ / mean_b ‖∂E/∂h_T‖`` from the cell's step alone (no diagnostics code):
    E as a function of h_1 (carry otherwise fixed) is the loss of the steps 2..T run from it."""
    carry1, _ = cell.step(params.cell, cell.initial_carry((xs.shape[0],), xs.dtype), xs[:, 0])

    def loss_from(carry, start):
        for t in range(start, xs.shape[1]):
            carry, _ = cell.step(params.cell, carry, xs[:, t])
        return losses.softmax_cross_entropy(readout(params.readout, carry.hidden), labels)

    d1 = jax.grad(lambda h: loss_from(carry1._replace(hidden=h), 1))(carry1.hidden)
    carry_t = carry1
    for t in range(1, xs.shape[1]):
        carry_t, _ = cell.step(params.cell, carry_t, xs[:, t])
    d_t = jax.grad(lambda h: loss_from(carry_t._replace(hidden=h), xs.shape[1]))(carry_t.hidden)
    norm = lambda d: float(jnp.mean(jnp.linalg.norm(d, axis=-1)))
    return norm(d1) / norm(d_t)


def test_tiny_run_writes_its_files(tiny_run):
    out, summary = tiny_run
    for name in ("results.jsonl", "table.md", "summary.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert len(_records(out)) == len(gates.PROFILES["tiny"]["cells"])
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    pytest.importorskip("matplotlib")
    for name in ("grad_over_time.png", "success_vs_length.png", "learning_curves.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0


def test_at_initialisation_the_tanh_rnn_vanishes_and_the_forget_bias_helps(tiny_run):
    _, summary = tiny_run
    entry = summary["results"][TASK][str(LENGTH)]
    rnn, fb0, fb1 = (entry[v]["ratio_init"] for v in ("rnn", "lstm_fb0", "lstm_fb1"))
    # per step, an open forget gate keeps σ(1) ≈ 0.73 of the cell-state gradient, while the
    # tanh RNN's Jacobian diag(tanh') W_hh shrinks it by about ρ(W_hh) ≈ 0.58 or less at this
    # initialisation (U(±1/√H)): over 29 steps, orders of magnitude; for every seed
    assert fb1["geometric_mean"] > 100 * rnn["geometric_mean"]
    assert fb1["min"] > rnn["max"]
    # forget bias 0 keeps σ(0) = 0.5 per step: forget bias 1 passes far more
    assert fb1["geometric_mean"] > 100 * fb0["geometric_mean"]
    assert fb1["min"] > fb0["max"]
    assert rnn["geometric_mean"] < 1e-3  # the tanh RNN's gradient reaching step 1 vanishes


def test_recorded_ratios_match_a_step_by_step_computation(tiny_run):
    out, _ = tiny_run
    cfg = gates.PROFILES["tiny"]
    task = gates.make_task(TASK, LENGTH)
    xs, labels, lens = gates.diagnostic_batch(task, cfg["diag_batch"], LENGTH)
    assert np.all(np.asarray(lens) == LENGTH)  # temporal order at a fixed T: no padding
    by_cell = {rec["cell"]: rec for rec in _records(out)}
    for kind, forget_bias in (("rnn", None), ("lstm", 0.0), ("lstm", 1.0)):
        setup = gates.make_setup(TASK, LENGTH, kind, cfg)
        hp = {"learning_rate": np.full(1, 0.01), "clip": np.full(1, 1.0)}
        state = train.init_members(setup, [1], hp)
        if forget_bias is not None:
            state = gates.with_forget_bias(state, cfg["hidden_size"], [forget_bias])
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0], jnp.float64), state.params)
        expected = _ratio_by_hand(setup.cell, params, xs.astype(jnp.float64), labels)
        member = next(m for m in by_cell[kind]["members"] if m["seed"] == 1 and m["forget_bias"] == forget_bias)
        assert member["init"]["ratio"] == pytest.approx(expected, rel=1e-3)  # float32 run vs float64


def test_forget_bias_members_equal_lstms_built_with_that_bias():
    cfg = gates.PROFILES["tiny"]
    setup = gates.make_setup(TASK, LENGTH, "lstm", cfg)
    hp = {"learning_rate": np.full(2, 0.01), "clip": np.full(2, 1.0)}
    shifted = gates.with_forget_bias(train.init_members(setup, [4, 4], hp), cfg["hidden_size"], [0.0, 1.0])
    for i, forget_bias in enumerate((0.0, 1.0)):
        direct = setup._replace(cell=gates._cells.lstm(cfg["hidden_size"], forget_bias=forget_bias))
        reference = train.init_members(direct, [4], {k: v[:1] for k, v in hp.items()})
        for a, b in zip(jax.tree_util.tree_leaves(shifted.params), jax.tree_util.tree_leaves(reference.params)):
            np.testing.assert_array_equal(np.asarray(a[i]), np.asarray(b[0]))


def test_rerun_resumes_and_gives_the_same_summary(tiny_run, monkeypatch):
    out, summary = tiny_run
    with open(os.path.join(out, "results.jsonl")) as f:
        lines = f.readlines()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished unit was run again")

    with monkeypatch.context() as m:
        m.setattr(gates, "run_unit", refuse)
        assert _canonical(gates.run(out, "tiny", progress=False)) == _canonical(summary)

    # the last unit lost: only it is run again, and training is deterministic
    with open(os.path.join(out, "results.jsonl"), "w") as f:
        f.writelines(lines[:-1])
    calls = []
    original = gates.run_unit

    def counting(*args, **kwargs):
        calls.append(args[:3])
        return original(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(gates, "run_unit", counting)
        assert _canonical(gates.run(out, "tiny", progress=False)) == _canonical(summary)
    assert calls == [(TASK, LENGTH, gates.PROFILES["tiny"]["cells"][-1])]


def test_an_interrupted_unit_resumes_from_its_sweep_to_the_same_record(tiny_run, tmp_path, monkeypatch):
    """A unit stopped after its first chunk (its sweep's checkpoint written) resumes from its folder
    and gives the uninterrupted unit's record bit for bit: histories from ``chunks.jsonl``, trained
    curves from the finished members' parameter files."""
    out, _ = tiny_run
    cfg = gates.PROFILES["tiny"]
    seeds = list(range(cfg["seeds"]))
    expected = {k: v for k, v in next(r for r in _records(out) if r["cell"] == "lstm").items()
                if k not in ("key", "seconds")}
    original = gates.sweep.run_sweep

    class Stop(Exception):
        pass

    def stop(c, h):
        raise Stop

    with monkeypatch.context() as m:
        m.setattr(gates.sweep, "run_sweep", lambda *a, **kw: original(*a, on_chunk=stop, **kw))
        with pytest.raises(Stop):
            gates.run_unit(TASK, LENGTH, "lstm", seeds, cfg, str(tmp_path))
    assert len(gates.sweep.read_results(str(tmp_path / gates.sweep.CHUNKS))) == 1
    record = gates.run_unit(TASK, LENGTH, "lstm", seeds, cfg, str(tmp_path))
    assert _canonical(json.loads(json.dumps(record))) == _canonical(expected)


def test_histories_fill_in_members_missing_from_a_rewritten_chunk_line():
    """Member 1 finished in chunk 1, but a kill before that chunk's checkpoint made the resumed run
    redo chunk 1 without it: its values there come from its results line; later it keeps its error
    and has no loss."""
    chunks = [
        {"chunk": 0, "members": [0, 1], "status": ["running", "running"], "error": [0.5, 0.4], "loss": [1.0, 0.9]},
        {"chunk": 1, "members": [0], "status": ["running"], "error": [0.3], "loss": [0.8]},
        {"chunk": 2, "members": [0], "status": ["exhausted"], "error": [None], "loss": [0.7]},
    ]
    results = [{"error": None, "metrics": {"loss": 0.7}}, {"error": 0.0, "metrics": {"loss": 0.2}}]
    errors, losses = gates._histories(chunks, results)
    assert _canonical(errors) == _canonical([[0.5, 0.3, float("nan")], [0.4, 0.0, 0.0]])
    assert _canonical(losses) == _canonical([[1.0, 0.8, 0.7], [0.9, 0.2, float("nan")]])
