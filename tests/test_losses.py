"""Losses and the model loss against NumPy computations written from their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import losses
from tests.helpers import CELL_CONFIGS, random_params


def test_mse_and_xent_against_numpy():
    rng = np.random.default_rng(0)
    pred, tgt = rng.normal(size=(4, 6, 3)), rng.normal(size=(4, 6, 3))
    mask = (np.arange(6) < np.array([6, 2, 0, 4])[:, None]).astype(float)
    want = ((pred - tgt) ** 2).sum(-1)[mask > 0].mean()
    np.testing.assert_allclose(losses.mean_squared_error(jnp.asarray(pred), jnp.asarray(tgt), jnp.asarray(mask)), want, rtol=1e-13)
    logits, labels = rng.normal(size=(4, 6, 5)), rng.integers(0, 5, size=(4, 6))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask)), nll[mask > 0].mean(), rtol=1e-13
    )
    np.testing.assert_array_equal(losses.sequence_mask(jnp.array([6, 2, 0, 4]), 6, jnp.float64), mask)


def test_last_outputs_picks_each_last_valid_step():
    ys = jnp.arange(2 * 4 * 1, dtype=jnp.float64).reshape(2, 4, 1)
    np.testing.assert_array_equal(losses.last_outputs(ys, jnp.array([4, 2]))[:, 0], [3.0, 5.0])
    np.testing.assert_array_equal(losses.last_outputs(ys)[:, 0], [3.0, 7.0])


@pytest.mark.parametrize("on", ["last", "every"])
@pytest.mark.parametrize("loss", ["mse", "xent"])
@pytest.mark.parametrize("name", ["elman-tanh", "lstm", "gru"])
def test_model_loss_equals_per_sequence_numpy_average(name, loss, on):
    """The batched, masked model loss equals the average of per-sequence losses on truncated sequences."""
    cell = CELL_CONFIGS[name](3)
    key = jax.random.key(1)
    params = rnn_jax.ModelParams(random_params(cell, 2, key), rnn_jax.readout_init(key, 3, 4, dtype=jnp.float64))
    xs = jax.random.normal(jax.random.key(2), (3, 5, 2), jnp.float64)
    lengths = np.array([5, 2, 3])
    shape = (3,) + ((5,) if on == "every" else ())
    if loss == "mse":
        targets = jax.random.normal(jax.random.key(3), shape + (4,), jnp.float64)
    else:
        targets = jax.random.randint(jax.random.key(3), shape, 0, 4)
    got = rnn_jax.model.loss(cell, params, xs, targets, loss=loss, on=on, lengths=lengths)
    per_position = []
    for b, n in enumerate(lengths):
        _, ys = rnn_jax.python_unroll(cell, params.cell, xs[b, :n])
        out = np.asarray(ys @ params.readout.w + params.readout.b)
        out = out[-1:] if on == "last" else out
        tgt = np.asarray(targets[b])[None] if on == "last" else np.asarray(targets[b, :n])
        if loss == "mse":
            per_position += list(((out - tgt) ** 2).sum(-1))
        else:
            logp = out - np.log(np.exp(out).sum(-1, keepdims=True))
            per_position += list(-logp[np.arange(len(tgt)), tgt])
    np.testing.assert_allclose(got, np.mean(per_position), rtol=1e-12)


def test_xent_labels_outside_the_classes_never_give_a_finite_wrong_loss():
    """Issue #19, defect 3. Concrete labels outside [0, C) at a valid position are refused at
    trace time (as the reference BPTT refuses them); traced ones make the loss and every
    gradient NaN, where before a label C gave a NaN loss with finite gradients and -1 counted
    as the last class. A padded position's label is not read, traced or not."""
    cell = rnn_jax.elman(3)
    params = rnn_jax.model.init(jax.random.key(0), cell, 2, 4, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 2), jnp.float64)
    loss = lambda p, y, **kw: rnn_jax.model.loss(cell, p, xs, y, loss="xent", **kw)
    for bad in ([0, 4], [-1, 0]):
        labels = jnp.asarray(bad)  # made outside jit: a constant of the trace, checked at trace time
        with pytest.raises(ValueError, match=r"targets: class labels must lie in \[0, 4\)"):
            jax.jit(lambda p: loss(p, labels))(params)
        with pytest.raises(ValueError, match=r"class labels must lie in \[0, 4\)"):
            rnn_jax.bptt.bptt(cell, params, xs, labels, loss="xent")
        value, grads = jax.jit(jax.value_and_grad(loss))(params, labels)  # traced labels
        assert np.isnan(value) and all(np.all(np.isnan(g)) for g in jax.tree_util.tree_leaves(grads))
    # valid labels: the same numbers as the definition (test_mse_and_xent_against_numpy), finite gradients
    value, grads = jax.jit(jax.value_and_grad(loss))(params, jnp.array([0, 3]))
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    # -1 padding where the sequence has ended is not read
    labels, lengths = jnp.array([[0, 1, -1, -1, -1], [2, 3, 0, 1, 2]]), np.array([2, 5])
    padded = loss(params, labels, on="every", lengths=lengths)
    traced = jax.jit(lambda y, n: loss(params, y, on="every", lengths=n))(labels, lengths)
    reference = rnn_jax.bptt.bptt(cell, params, xs, labels, loss="xent", on="every", lengths=lengths).loss
    np.testing.assert_allclose([padded, traced], [reference, reference], rtol=1e-12)
