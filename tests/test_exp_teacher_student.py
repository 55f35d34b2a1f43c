"""Teacher/student reproduction against the document's code (the Theano teacher/student blog post), rebuilt in NumPy.

The references below are written from the document's text, not from the library:
``rnn_generator.py``'s draws with NumPy's global generator as printed, and
``my_rnn.py``'s ``train_step`` as Theano runs it -- the update list
``(gW, μ·gW − lr·∂C/∂W), (W, W + gW)`` with every right-hand side evaluated from the
values before the call -- with hand-written BPTT, float64. The loop test fails on the
textbook form ``W ← W + (new gW)`` (the library's ``update="sequential"``), which it
also checks against its own reference.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax.repro.experiments import teacher_student as ts
from rnn_jax.repro.tasks.teacher import document_inputs, document_student, document_teacher

LR = 0.001  # my_rnn.py's test_fixed_weights


# ---------------------------------------------------------------- independent references


def _document_draws(s00, seq_len, data_num):
    """``RNNGenerator(3, 1, 2)`` then ``inputs_outputs(data_num, seq_len)`` as printed, on NumPy's
    global generator (its state restored afterwards). ``s00``: the commented ``s[0,0] = ...`` line
    (None: commented out). Returns the column-vector weights, the inputs and last-step targets."""
    saved = np.random.get_state()
    try:
        np.random.seed(19910715)
        W_hh = np.random.randn(2, 2)
        u, s, v = np.linalg.svd(W_hh, full_matrices=True, compute_uv=True)
        s = np.diag(s)
        if s00 is not None:
            s[0, 0] = s00
            W_hh = np.dot(np.dot(u, s), v)
        b_hh = np.random.randn(2)
        W_hi = np.random.randn(2, 3)
        W_yh = np.random.randn(1, 2)
        b_yh = np.random.randn(1)
        m_inputs = np.random.randn(data_num, seq_len, 3)
    finally:
        np.random.set_state(saved)
    targets = np.zeros((data_num, 1))
    for j in range(data_num):
        h = np.zeros(2)
        for i in range(seq_len):  # the generator's scan: sigmoid(W_hh h + W_hi u + b_hh), column vectors
            h = 1.0 / (1.0 + np.exp(-(np.dot(W_hh, h) + np.dot(W_hi, m_inputs[j, i]) + b_hh)))
        targets[j] = np.dot(W_yh, h) + b_yh  # m_outputs[j, -1]
    return (W_hh, b_hh, W_hi, W_yh, b_yh), m_inputs, targets


def _document_student():
    """``RNN.__init__``: W_uh, W_hh, W_hy from RandomState(1234), N(0, 0.01²), zero biases."""
    rng = np.random.RandomState(1234)
    W_uh = rng.normal(size=(3, 2), scale=.01, loc=.0)
    W_hh = rng.normal(size=(2, 2), scale=.01, loc=.0)
    W_hy = rng.normal(size=(2, 1), scale=.01, loc=0.0)
    return [W_uh, W_hh, W_hy, np.zeros(2), np.zeros(1)]


def _cost_and_grads(W, u, target):
    """``cost = mean((target[-1] - y_pred[-1])**2)`` and its gradient, BPTT by hand.
    Row vectors: ``h_t = sigmoid(h_{t-1} W_hh + u_t W_uh + b_hh)``, ``y = h W_hy + b_hy``."""
    W_uh, W_hh, W_hy, b_hh, b_hy = W
    hs = [np.zeros(2)]
    for u_t in u:
        hs.append(1.0 / (1.0 + np.exp(-(np.dot(hs[-1], W_hh) + np.dot(u_t, W_uh) + b_hh))))
    y = np.dot(hs[-1], W_hy) + b_hy
    cost = np.mean((target - y) ** 2)
    dy = 2.0 * (y - target) / y.size
    g_uh, g_hh, g_bh = np.zeros_like(W_uh), np.zeros_like(W_hh), np.zeros_like(b_hh)
    delta = np.dot(W_hy, dy)  # dC/dh_T
    for t in range(len(u), 0, -1):
        dz = delta * hs[t] * (1.0 - hs[t])
        g_uh += np.outer(u[t - 1], dz)
        g_hh += np.outer(hs[t - 1], dz)
        g_bh += dz
        delta = np.dot(W_hh, dz)
    return cost, [g_uh, g_hh, np.outer(hs[-1], dy), g_bh, dy]


def _train_step_loop(W, inputs, targets, epochs, *, simultaneous=True, threshold=np.inf):
    """``test_fixed_weights``: ``epochs`` × the sequences in order, ``mom = 0.9 if e > 5 else 0.5``.

    ``simultaneous`` (Theano): ``updates=[(gW, mom*gW - lr*grad), (W, W + gW)]`` computes every
    right-hand side from the values before the call, so W moves by the OLD gW. Otherwise the
    textbook form, W moves by the new one. ``threshold``: global-norm clipping of the gradient
    first (not in the document). Returns the per-epoch mean costs, the weights and the gW's."""
    W = [np.array(w, np.float64) for w in W]
    gW = [np.zeros_like(w) for w in W]
    curve = []
    for e in range(epochs):
        mom = 0.9 if e > 5 else 0.5
        e_vals = []
        for u, t in zip(inputs, targets):
            cost, grads = _cost_and_grads(W, u, t)
            norm = np.sqrt(sum(np.sum(g ** 2) for g in grads))
            if norm >= threshold:
                grads = [g * (threshold / norm) for g in grads]
            new_gW = [mom * g - LR * d for g, d in zip(gW, grads)]
            new_W = [w + g for w, g in zip(W, gW if simultaneous else new_gW)]
            W, gW = new_W, new_gW
            e_vals.append(cost)
        curve.append(np.average(e_vals))
    return np.asarray(curve), W, gW


def _library_order(params):
    """ModelParams -> [W_uh, W_hh, W_hy, b_hh, b_hy] (the library stores the student's layout)."""
    return [np.asarray(a, np.float64) for a in (params.cell.w_ih, params.cell.w_hh, params.readout.w,
                                                params.cell.b, params.readout.b)]


# ---------------------------------------------------------------- the document's draws


@pytest.mark.parametrize("s00", [None, 10.0, ts.VANISHING_S00])
def test_document_draws_are_the_documents_code(s00):
    (W_hh, b_hh, W_hi, W_yh, b_yh), m_inputs, _ = _document_draws(s00, 4, 7)
    drawn = document_teacher(s00)
    p = drawn.params
    for ours, theirs in ((p.cell.w_hh, W_hh.T), (p.cell.w_ih, W_hi.T), (p.cell.b, b_hh), (p.readout.w, W_yh.T),
                         (p.readout.b, b_yh)):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(document_inputs(drawn.rng, 7, 4), m_inputs)
    # the hand-set value is W_hh's singular value, the other one is the drawn matrix's
    s = np.linalg.svd(W_hh, compute_uv=False)
    if s00 is not None:
        assert sorted([s00, drawn.drawn_singular_values[1]]) == pytest.approx(sorted(s), rel=1e-12)
    np.testing.assert_allclose(drawn.singular_values, s, rtol=1e-12)
    for ours, theirs in zip(_library_order(document_student()), _document_student()):
        np.testing.assert_array_equal(ours, theirs)


def test_document_draws_reject_bad_input():
    for bad in (-1.0, 0.0, float("nan"), "10", True):
        with pytest.raises(ValueError, match="s00: expected a positive number or None"):
            document_teacher(bad)
    with pytest.raises(ValueError, match=r"seed: expected an integer NumPy seed in \[0, 2\*\*32\), got -1"):
        document_teacher(None, seed=-1)
    with pytest.raises(ValueError, match="seed: expected an integer NumPy seed"):
        document_student(seed=1.5)
    with pytest.raises(TypeError, match="expected a numpy.random.RandomState"):
        document_inputs(np.random.default_rng(0), 3, 2)
    with pytest.raises(ValueError, match="update: expected one of 'theano', 'sequential', got 'nesterov'"):
        ts.make_optimizer(1.0, 10, "nesterov")
    with pytest.raises(ValueError, match="update: expected one of"):
        ts.run("/nonexistent-never-written", "tiny", update="simultaneous", progress=False)
    with pytest.raises(ValueError, match="setting: expected one of 'vanishing', 'exploding', 'as_printed'"):
        ts.teacher("vanishig")


# ---------------------------------------------------------------- the training loop


# one compiled program per update form, shared by both thresholds
_train = jax.jit(ts.train_member, static_argnames=("num_epochs", "unroll", "update"))


@pytest.mark.parametrize("threshold", [np.inf, 1.0])
def test_training_loop_is_theanos_update_list(threshold):
    """8 epochs (the momentum switches after epoch 5) of the document's first 16 sequences at
    T = 3, its exploding teacher and its student: the library's default equals Theano's update
    list to rounding; the textbook form (the named option) equals its own reference and is
    measurably different, so this test fails on it."""
    _, inputs, targets = _document_draws(10.0, 3, 16)
    W0 = _document_student()
    params = jax.tree_util.tree_map(jnp.asarray, document_student())
    x, y = jnp.asarray(inputs), jnp.asarray(targets)
    th = jnp.asarray(threshold, jnp.float64)
    runs = {}
    for update in ("default", "sequential"):  # the module's defaults, then the named option
        kwargs = {} if update == "default" else {"update": update}
        opt_state = ts.make_optimizer(threshold, 16, **kwargs).init(params)
        out, _, stats = _train(params, opt_state, th, x, y, num_epochs=8, unroll=3, **kwargs)
        runs[update] = (np.asarray(stats.cost), _library_order(out), stats)
    for update, simultaneous in (("default", True), ("sequential", False)):
        curve, W, _ = _train_step_loop(W0, inputs, targets, 8, simultaneous=simultaneous, threshold=threshold)
        np.testing.assert_allclose(runs[update][0], curve, rtol=1e-10, err_msg=update)
        for ours, theirs in zip(runs[update][1], W):
            np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-15, err_msg=update)
    # the two forms differ far beyond rounding, so the comparison above tells them apart
    theano_curve = _train_step_loop(W0, inputs, targets, 8, simultaneous=True, threshold=threshold)[0]
    assert np.max(np.abs(runs["sequential"][0] / theano_curve - 1)) > 1e-4
    fraction = float(np.mean(runs["default"][2].clipped_fraction))
    assert (0 < fraction < 1) if np.isfinite(threshold) else fraction == 0.0


def test_each_step_is_the_previous_velocity():
    """Theano's update list on any gradients g_k: the steps are 0, −lr·g₀, μ₁(−lr·g₀) − lr·g₁, ...
    (μ = 0.5 for the first 6 epochs of 2 updates, then 0.9): the step of update k is v_k."""
    rng = np.random.RandomState(0)
    params = {"a": jnp.zeros((2, 3), jnp.float64), "b": jnp.zeros((1,), jnp.float64)}
    grads = [{k: rng.randn(*v.shape) for k, v in params.items()} for _ in range(16)]
    tx = ts.make_optimizer(np.inf, 2)
    update = jax.jit(tx.update)
    state = tx.init(params)
    velocity = {k: np.zeros(v.shape) for k, v in params.items()}
    for k, g in enumerate(grads):
        step, state = update(jax.tree_util.tree_map(jnp.asarray, g), state, params)
        for name in params:
            np.testing.assert_allclose(step[name], velocity[name], rtol=1e-15, atol=0)
        mu = 0.9 if k // 2 > 5 else 0.5
        velocity = {name: mu * velocity[name] - LR * g[name] for name in params}
    assert not np.any(np.asarray(grads[0]["a"]) == 0)  # so the first step being zero means something


def test_printed_figures_and_rows():
    assert [ts.printed_digits(t) for t in ("1.2e-5", "1.44e-5", "0.0045", "0.00358", "2.7e-9")] == [2, 3, 2, 3, 2]
    assert ts.matches_printed(0.0014430527, "0.00144") and not ts.matches_printed(0.0014513, "0.00144")
    assert ts.matches_printed(0.0045485, "0.0045") and not ts.matches_printed(0.00455, "0.0045")
    assert ts.matches_printed(1.4449e-5, "1.44e-5") and not ts.matches_printed(1.4451e-5, "1.44e-5")
    # the document prints `epoch e` for e = 0..1499: row 500 is that line, row 1500 the last one
    assert ts.report_index(500, 1500) == 500 and ts.report_index(1500, 1500) == 1499


# ---------------------------------------------------------------- the tiny run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("teacher_student"))
    summary = ts.run(out, "tiny", progress=False)
    return out, summary


def _canonical(summary):
    """JSON text of a summary: NaN (e.g. no solved seed) compares equal to itself."""
    return json.dumps(summary, sort_keys=True)


def _records(out):
    with open(os.path.join(out, "results.jsonl")) as f:
        return [json.loads(line) for line in f]


def _curves(out):
    curves = {}
    for rec in sorted(_records(out), key=lambda r: (r["length"], r["chunk"])):
        for m in rec["members"]:
            curves.setdefault((rec["length"], m["setting"], m["clipped"], m["seed"]), []).extend(m["cost"])
    return curves


def test_tiny_run_writes_its_files(tiny_run):
    out, summary = tiny_run
    for name in ("results.jsonl", "table.md", "summary.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    pytest.importorskip("matplotlib")
    for name in ("cost.png", "grad_norm.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    cfg = ts.PROFILES["tiny"]
    assert len(_records(out)) == len(cfg["lengths"]) * cfg["epochs"] // cfg["epochs_per_unit"]
    assert summary["update"] == "theano"
    for setting in cfg["settings"]:
        assert summary["settings"][setting]["largest_singular_value"] == pytest.approx(ts.SETTINGS[setting], rel=1e-12)


def test_tiny_runs_document_member_is_the_documents_run(tiny_run):
    """The member labelled "document": the document's draws (its first 60 sequences) and Theano's
    loop, end to end, against the NumPy reference, both teachers, with and without clipping."""
    out, _ = tiny_run
    cfg = ts.PROFILES["tiny"]
    curves = _curves(out)
    for length in cfg["lengths"]:
        for setting in cfg["settings"]:
            _, inputs, targets = _document_draws(ts.SETTINGS[setting], length, cfg["sequences"])
            for clipped in (False, True):
                expected = _train_step_loop(_document_student(), inputs, targets, cfg["epochs"],
                                            threshold=ts.CLIP_THRESHOLD if clipped else np.inf)[0]
                np.testing.assert_allclose(curves[(length, setting, clipped, ts.DOCUMENT_MEMBER)], expected, rtol=1e-9)


def test_cost_decreases_over_epochs(tiny_run):
    out, summary = tiny_run
    cfg = ts.PROFILES["tiny"]
    curves = _curves(out)
    assert len(curves) == len(cfg["lengths"]) * len(cfg["settings"]) * 2 * (cfg["seeds"] + 1)
    for curve in curves.values():
        assert len(curve) == cfg["epochs"]
        assert curve[-1] < 0.7 * curve[0]
    first, last = cfg["report_epochs"]
    for setting in cfg["settings"]:
        for clip in ("clipped", "not_clipped"):
            for length in cfg["lengths"]:
                table = summary["cost"][f"{setting}/{clip}"][str(length)]
                assert table[str(last)]["mean"] < table[str(first)]["mean"]


def test_rerun_resumes_and_gives_the_same_summary(tiny_run, monkeypatch):
    out, summary = tiny_run
    with open(os.path.join(out, "results.jsonl")) as f:
        lines = f.readlines()

    # 1. everything done: no training at all
    def refuse(*args, **kwargs):
        raise AssertionError("a finished unit was trained again")

    monkeypatch.setattr(ts, "_plots", lambda *args: None)  # written by the first run; seconds each
    with monkeypatch.context() as m:
        m.setattr(ts, "train_members", refuse)
        assert _canonical(ts.run(out, "tiny", progress=False)) == _canonical(summary)

    # 2. the last chunk lost: it is retrained from the state saved by the chunk before, bit for bit
    with open(os.path.join(out, "results.jsonl"), "w") as f:
        f.writelines(lines[:-1])
    calls = []
    original = ts.train_members

    def counting(*args, **kwargs):
        calls.append(kwargs["num_epochs"])
        return original(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(ts, "train_members", counting)
        assert _canonical(ts.run(out, "tiny", progress=False)) == _canonical(summary)
    assert calls == [ts.PROFILES["tiny"]["epochs_per_unit"]]
    assert _records(out)[-1]["members"] == json.loads(lines[-1])["members"]
