"""Chunked checkpointing (rnn_jax.long) against plain autodiff of the straightforward unroll + readout + loss."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import long, model

B, I, H, O = 3, 4, 5, 2

CELLS = {
    "elman": lambda: rnn_jax.elman(H, "tanh"),
    "lstm": lambda: rnn_jax.lstm(H, forget_bias=1.0),
    "gru": lambda: rnn_jax.gru(H),
}

# T, chunk, loss, targets given (mse; None: zero targets), time_major, lengths (None: all steps), initial_carry given
CASES = {
    "remainder+lengths+carry": dict(time=13, chunk=4, loss="mse", targets=True, time_major=False, lengths=[13, 5, 0], carry=True),
    "chunk=1+xent+time_major": dict(time=7, chunk=1, loss="xent", targets=True, time_major=True, lengths=[7, 2, 6], carry=False),
    "chunk=T": dict(time=7, chunk=7, loss="mse", targets=False, time_major=False, lengths=None, carry=False),
}


def _both(chunked, plain, argnums):
    """One compiled program for both value_and_grads (a compilation costs more than these runs)."""
    vg = lambda fn: jax.value_and_grad(fn, argnums=argnums)
    return jax.jit(lambda *args: (vg(chunked)(*args), vg(plain)(*args)))


def rel_err(got, want):
    """Largest over leaves of max |got - want| / max |want|."""
    errs = []
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        g, w = np.asarray(g), np.asarray(w)
        errs.append(np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-300))
    return max(errs)


def _params(cell, rng):
    """Cell parameters with every entry (biases included) N(0, 0.5²), drawn in NumPy:
    eager jax.random would compile an op per new shape, which costs more than these tests."""
    template = jax.eval_shape(lambda k: cell.init(k, I, jnp.float64), jax.random.key(0))
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(0.5 * rng.standard_normal(leaf.shape)), template)


def _model(cell, rng):
    readout = rnn_jax.ReadoutParams(jnp.asarray(0.5 * rng.standard_normal((H, O))), jnp.asarray(0.5 * rng.standard_normal(O)))
    return rnn_jax.ModelParams(_params(cell, rng), readout)


def _case_data(cell, case, rng):
    t = case["time"]
    params = _model(cell, rng)
    xs = rng.standard_normal((B, t, I))
    lengths = None if case["lengths"] is None else np.array(case["lengths"], np.int32)
    if lengths is not None:  # padding contents must reach neither the loss nor the gradients
        xs[np.arange(t)[None, :] >= lengths[:, None]] = np.nan
    if case["time_major"]:
        xs = np.swapaxes(xs, 0, 1)
    if case["loss"] == "xent":
        targets = jnp.asarray(rng.integers(0, O, (B, t)))
    else:
        targets = jnp.asarray(rng.standard_normal((B, t, O))) if case["targets"] else None
    carry = None
    if case["carry"]:
        carry = cell.carry_type(*[jnp.asarray(0.5 * rng.standard_normal((B, H))) for _ in cell.carry_type._fields])
    return params, jnp.asarray(xs), targets, lengths, carry


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(CELLS))
def test_model_loss_every_equals_plain_autodiff(name, case):
    """Value and gradients (parameters, inputs, initial carry) equal those of model.loss(on="every")."""
    cell, c = CELLS[name](), CASES[case]
    params, xs, targets, lengths, carry = _case_data(cell, c, np.random.default_rng(zlib.crc32(f"{name}/{case}".encode())))
    kw = dict(loss=c["loss"], lengths=lengths, time_major=c["time_major"])
    ref_targets = jnp.zeros((B, c["time"], O), jnp.float64) if targets is None else targets

    def chunked(p, x, h0):
        return long.model_loss_every(cell, p, x, targets, chunk=c["chunk"], initial_carry=h0, **kw)

    def plain(p, x, h0):
        return model.loss(cell, p, x, ref_targets, on="every", initial_carry=h0, **kw)

    (v1, g1), (v2, g2) = _both(chunked, plain, (0, 1, 2))(params, xs, carry)
    assert np.isfinite(float(v1)) and np.all(np.isfinite(np.asarray(g1[1])))
    assert rel_err(v1, v2) <= 1e-10
    assert rel_err(g1, g2) <= 1e-10
    if lengths is not None:  # padded inputs get exactly zero gradient
        pad = np.arange(c["time"])[None, :] >= lengths[:, None]
        gx = np.asarray(jnp.swapaxes(g1[1], 0, 1) if c["time_major"] else g1[1])
        assert np.all(gx[pad] == 0.0)


def _reference_total(cell, params, xs, step_loss, lengths=None, time_major=False):
    """The sum over steps of step_loss on unroll's outputs, as a Python loop over t."""
    _, ys = rnn_jax.unroll(cell, params, xs, lengths=lengths, time_major=time_major)
    time_axis = 1 if ys.ndim == 3 and not time_major else 0
    total = 0.0
    for t in range(ys.shape[time_axis]):
        value = step_loss(jnp.take(ys, t, axis=time_axis), jnp.int32(t))
        if lengths is not None:
            value = jnp.where(t < lengths, value, 0.0)
        total = total + jnp.sum(value)
    return total


def test_chunked_loss_with_a_step_dependent_loss():
    """A step_loss that uses t and closes over a parameter: one value per sequence with lengths; a scalar, unbatched.

    The cell does not matter here (the model test above runs every cell): an LSTM."""
    cell = CELLS["lstm"]()
    rng = np.random.default_rng(7)
    params = _params(cell, rng)
    w = jnp.asarray(rng.standard_normal(H))
    per_seq = lambda y, t: jnp.cos(0.3 * t.astype(jnp.float64)) * jnp.tanh(y @ w) ** 3
    scalar = lambda y, t: jnp.sum(per_seq(y, t))
    xs = jnp.asarray(rng.standard_normal((B, 10, I)))
    runs = [  # (xs, step_loss, chunk, lengths)
        (xs, per_seq, None, np.array([10, 4, 1], np.int32)),  # default chunk 3: a remainder of 1
        (xs[1], scalar, 4, None),  # one unbatched sequence, a remainder of 2
    ]
    for x, fn, chunk, lengths in runs:
        chunked = lambda p, s: long.chunked_loss(cell, p, x, lambda y, t: s * fn(y, t), chunk=chunk, lengths=lengths)
        plain = lambda p, s: _reference_total(cell, p, x, lambda y, t: s * fn(y, t), lengths=lengths)
        got, want = _both(chunked, plain, (0, 1))(params, 1.5)
        assert rel_err(got, want) <= 1e-10


def _temp_bytes(fn, *args):
    analysis = jax.jit(jax.grad(fn)).lower(*args).compile().memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no memory analysis")
    return analysis.temp_size_in_bytes


def test_backward_pass_stores_chunk_boundaries_only():
    """XLA's scratch for the gradient: every step's carry (remat=True) against ~sqrt(T) steps' worth (chunked)."""
    cell = rnn_jax.lstm(32)
    time, batch = 16384, 4
    params = model.init(jax.random.key(0), cell, 8, 8, dtype=jnp.float32)
    xs = jnp.zeros((batch, time, 8), jnp.float32)
    sq = lambda p, x, **kw: jnp.mean(jnp.sum(model.predict(cell, p, x, on="every", **kw) ** 2, axis=-1))
    remat = _temp_bytes(lambda p, x: sq(p, x, remat=True), params, xs)
    chunked = _temp_bytes(lambda p, x: long.model_loss_every(cell, p, x), params, xs)
    carry_bytes = 2 * batch * 32 * 4  # an LSTM carry: h and c
    assert remat >= time * carry_bytes  # every step's carry
    # 128 boundary carries plus one chunk of 128 steps' residuals (about 1 MiB); not a copy of xs (2 MiB) per chunk
    sizes = f"XLA temp: remat {remat / 2**20:.2f} MiB, chunked {chunked / 2**20:.2f} MiB"
    assert chunked < remat / 8, sizes
    assert chunked < time * carry_bytes / 8, sizes


def test_errors():
    cell = rnn_jax.lstm(H)
    params = _model(cell, np.random.default_rng(0))
    xs = jnp.zeros((B, 6, I), jnp.float64)
    sq = lambda y, t: jnp.sum(y**2, axis=-1)
    for bad in (0, -2, 2.5, True, "3", np.float64(2.0)):
        with pytest.raises(ValueError, match="chunk must be a positive integer"):
            long.chunked_loss(cell, params.cell, xs, sq, chunk=bad)
    with pytest.raises(ValueError, match=r"chunk: expected at most 6 \(the number of steps\), got 7"):
        long.chunked_loss(cell, params.cell, xs, sq, chunk=7)
    with pytest.raises(ValueError, match="expected at most 3"):  # time-major: the time axis is the first
        long.chunked_loss(cell, params.cell, xs[:, :3], sq, chunk=4, time_major=True)
    with pytest.raises(TypeError, match="step_loss: expected a callable"):
        long.chunked_loss(cell, params.cell, xs, "sq")
    with pytest.raises(ValueError, match=r"a scalar or one value per sequence \(shape \(3,\)\), got shape \(3, 5\)"):
        long.chunked_loss(cell, params.cell, xs, lambda y, t: y)
    with pytest.raises(ValueError, match="with lengths, expected one value per sequence"):
        long.chunked_loss(cell, params.cell, xs, lambda y, t: jnp.sum(y), lengths=np.array([6, 2, 1]))
    with pytest.raises(TypeError, match="step_loss result: expected a floating-point array"):
        long.chunked_loss(cell, params.cell, xs, lambda y, t: t)
    with pytest.raises(TypeError, match="project_inputs"):
        long.chunked_loss(cell, params.cell, xs, sq, project_inputs=1)
    # unroll's own checks, with the layout the caller used
    with pytest.raises(ValueError, match=r"xs: expected 4 features .* got shape \(3, 6, 2\)"):
        long.chunked_loss(cell, params.cell, xs[..., :2], sq)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 6\]"):
        long.chunked_loss(cell, params.cell, xs, sq, lengths=np.array([7, 1, 1]))
    with pytest.raises(ValueError, match=r"lengths: expected shape \(3,\)"):
        long.chunked_loss(cell, params.cell, xs, sq, lengths=np.array([6, 1]))
    with pytest.raises(ValueError, match=r"carry.hidden: expected shape \(3, 5\)"):
        long.chunked_loss(cell, params.cell, xs, sq, initial_carry=cell.initial_carry((2,), jnp.float64))
    with pytest.raises(ValueError, match="zero steps"):
        long.chunked_loss(cell, params.cell, xs[:, :0], sq)
    # the model convenience
    with pytest.raises(TypeError, match="ModelParams"):
        long.model_loss_every(cell, params.cell, xs)
    with pytest.raises(ValueError, match="targets: required for loss 'xent'"):
        long.model_loss_every(cell, params, xs, loss="xent")
    with pytest.raises(ValueError, match=r"targets: expected shape \(3, 6, 2\)"):
        long.model_loss_every(cell, params, xs, jnp.zeros((6, 3, 2), jnp.float64))
    with pytest.raises(TypeError, match="targets: expected an integer array"):
        long.model_loss_every(cell, params, xs, jnp.zeros((3, 6), jnp.float64), loss="xent")
    with pytest.raises(ValueError, match="unknown loss 'mae'"):
        long.model_loss_every(cell, params, xs, loss="mae")
    with pytest.raises(ValueError, match="time must be a positive integer"):
        long.default_chunk(0)
