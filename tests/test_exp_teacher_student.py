"""Teacher/student reproduction: the training loop is the document's Theano loop (rebuilt in
numpy with hand-written BPTT), the crafted teacher has the configured singular value, the
tiny profile writes its files with a decreasing cost, and reruns resume exactly."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax.experiments import teacher_student as ts
from rnn_jax.tasks import make_teacher


# ---------------------------------------------------------------- independent reference


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_document_loop(params, inputs, targets, epochs, threshold):
    """``my_rnn.py``'s ``test_fixed_weights`` in numpy: one sequence per update, last-step
    squared error, BPTT by hand, ``v = μ v − lr g; w += v`` with μ = 0.5 while epoch <= 5,
    then 0.9; optional global-norm clipping of g first. Returns the per-epoch mean costs."""
    w_ih, w_hh, b = (np.array(a, np.float64) for a in params.cell)
    w_out, b_out = (np.array(a, np.float64) for a in params.readout)
    weights = [w_ih, w_hh, b, w_out, b_out]
    velocity = [np.zeros_like(w) for w in weights]
    curve = []
    for epoch in range(epochs):
        momentum = 0.9 if epoch > 5 else 0.5
        costs = []
        for x, target in zip(inputs, targets):
            w_ih, w_hh, b, w_out, b_out = weights
            hs = [np.zeros(w_hh.shape[0])]
            for x_t in x:
                hs.append(_sigmoid(hs[-1] @ w_hh + x_t @ w_ih + b))
            y = hs[-1] @ w_out + b_out
            costs.append(float(np.sum((y - target) ** 2)))
            dy = 2 * (y - target)
            g_out, g_bout = np.outer(hs[-1], dy), dy
            g_ih, g_hh, g_b = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b)
            delta = w_out @ dy  # dE/dh_T
            for t in range(len(x), 0, -1):
                d_pre = delta * hs[t] * (1 - hs[t])
                g_ih += np.outer(x[t - 1], d_pre)
                g_hh += np.outer(hs[t - 1], d_pre)
                g_b += d_pre
                delta = w_hh @ d_pre
            grads = [g_ih, g_hh, g_b, g_out, g_bout]
            norm = np.sqrt(sum(np.sum(g ** 2) for g in grads))
            if norm > threshold:
                grads = [g * threshold / norm for g in grads]
            velocity = [momentum * v - ts.LEARNING_RATE * g for v, g in zip(velocity, grads)]
            weights = [w + v for w, v in zip(weights, velocity)]
        curve.append(np.mean(costs))
    return np.asarray(curve)


@pytest.mark.parametrize("threshold", [np.inf, 0.3])
def test_training_loop_is_the_documents_momentum_loop(threshold):
    """8 epochs (the momentum switches after epoch 5) of 12 sequences, float64: same costs as numpy."""
    task = ts.teacher_task("exploding", 3)
    data = task.sample(jax.random.key(5), 12)
    inputs = data.inputs.astype(jnp.float64)
    targets = data.targets.astype(jnp.float64)
    params = ts.student_init(jax.random.key(2), jnp.float64)
    # a larger start than N(0, 0.01²) so that the gradients are large enough for 0.3 to clip
    params = jax.tree_util.tree_map(lambda a: a * 50.0, params)
    opt_state = ts.make_optimizer(threshold, 12).init(params)
    _, _, stats = ts.train_member(params, opt_state, jnp.asarray(threshold, jnp.float64), inputs, targets,
                                  num_epochs=8, unroll=3)
    expected = _numpy_document_loop(params, np.asarray(inputs), np.asarray(targets), 8, threshold)
    np.testing.assert_allclose(np.asarray(stats.cost), expected, rtol=1e-9)
    if np.isfinite(threshold):
        assert 0 < float(np.mean(stats.clipped_fraction)) < 1  # the clipped branch was exercised
    else:
        assert float(np.max(stats.clipped_fraction)) == 0.0


def test_teacher_has_the_configured_largest_singular_value():
    # the experiment's teachers are float32 (the draw depends on the dtype); SVD in float64
    teacher = lambda value: np.asarray(make_teacher(jax.random.key(ts.TEACHER_KEY), value, dtype=ts.DTYPE).cell.w_hh,
                                       np.float64)
    s_raw = np.linalg.svd(teacher(None), compute_uv=False)
    for setting, value in ts.SETTINGS.items():
        s = np.linalg.svd(teacher(value), compute_uv=False)
        assert s[0] == pytest.approx(value, rel=1e-6)  # the crafted value is the largest (float32 rounding)
        assert s[1] == pytest.approx(s_raw[1], rel=1e-5)  # the other one is the drawn matrix's
        # Pascanu et al.'s condition with the sigmoid's γ = 1/4: vanishing iff γ σ_max < 1
        assert (0.25 * s[0] < 1) == (setting == "vanishing")


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
    # the recorded teacher is the configured one
    for setting, value in ts.SETTINGS.items():
        assert summary["settings"][setting]["largest_singular_value"] == pytest.approx(value, rel=1e-6)


def test_cost_decreases_over_epochs_in_the_vanishing_setting(tiny_run):
    out, summary = tiny_run
    cfg = ts.PROFILES["tiny"]
    curves = {}
    for rec in _records(out):
        for m in rec["members"]:
            curves.setdefault((rec["length"], m["setting"], m["clipped"], m["seed"]), {})[rec["chunk"]] = m["cost"]
    vanishing = [sum((c[k] for k in sorted(c)), []) for key, c in curves.items() if key[1] == "vanishing"]
    assert len(vanishing) == len(cfg["lengths"]) * 2 * cfg["seeds"]
    for curve in vanishing:
        assert len(curve) == cfg["epochs"]
        assert curve[-1] < 0.9 * curve[0]
    first, last = cfg["report_epochs"]
    for clip in ("clipped", "not_clipped"):
        for length in cfg["lengths"]:
            table = summary["cost"][f"vanishing/{clip}"][str(length)]
            assert table[str(last)]["mean"] < table[str(first)]["mean"]


def test_rerun_resumes_and_gives_the_same_summary(tiny_run, monkeypatch):
    out, summary = tiny_run
    with open(os.path.join(out, "results.jsonl")) as f:
        lines = f.readlines()

    # 1. everything done: no training at all
    def refuse(*args, **kwargs):
        raise AssertionError("a finished unit was trained again")

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
