"""Stacked and bidirectional layers against independent references.

* Forward: a hand-written Python loop over ``cell.step``, one sequence at a time, that
  reads the backward direction by reversing each sequence's valid prefix (PyTorch's
  packed-sequence semantics) -- it uses neither ``rnn_jax.unroll`` nor its masking.
* Gradients: central finite differences in float64 over every parameter and every
  entry of the initial carries.
* PyTorch's ``nn.LSTM(num_layers=2, bidirectional=True)`` (and the other modules), via
  the weight conversion: ``tests/test_interop.py::test_torch_outputs_states_gradients``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import rnn_jax
from rnn_jax import layers
from tests.helpers import CELL_CONFIGS

BATCH, TIME, INPUT, HIDDEN = 3, 5, 2, 3
LENGTHS = np.array([5, 2, 4])
CONFIGS = ["elman-tanh", "pascanu-sigmoid", "lstm", "gru"]


def random_tree(template, seed, scale=0.5):
    """NumPy N(0, scale²) entries on the shapes of an abstract pytree (nothing to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), template)


def model_for(config):
    """A two-layer network whose first layer is bidirectional and second unidirectional, plus a
    stacked bidirectional one: every way the layers compose."""
    make = lambda: CELL_CONFIGS[config](HIDDEN)
    return layers.stacked([layers.bidirectional(make(), make()), make()])


def setup(model, dtype=jnp.float64, seed=0):
    params = random_tree(jax.eval_shape(lambda k: model.init(k, INPUT, dtype), jax.random.key(0)), seed)
    carries = random_tree(jax.eval_shape(lambda: model.initial_carry((BATCH,), dtype)), seed + 1)
    xs = jnp.asarray(np.random.default_rng(seed + 2).standard_normal((BATCH, TIME, INPUT)), dtype)
    return params, carries, xs


# ---------------------------------------------------------------- the hand-written reference


def reference_layer(layer, params, xs, length, carry):
    """One unbatched sequence ``xs`` (time, features) through a cell or bidirectional layer, as a
    Python loop over valid steps only; padded outputs are zero."""
    def run(cell, p, carry, steps):
        outputs = {}
        for t in steps:
            carry, outputs[t] = cell.step(p, carry, xs[t])
        return carry, outputs

    def assemble(outputs, size):
        return jnp.stack([outputs.get(t, jnp.zeros(size, xs.dtype)) for t in range(xs.shape[0])])

    if isinstance(layer, rnn_jax.Cell):
        final, out = run(layer, params, carry, range(length))
        return final, assemble(out, layer.hidden_size)
    fw_final, fw = run(layer.forward, params.forward, carry.forward, range(length))
    bw_final, bw = run(layer.backward, params.backward, carry.backward, range(length - 1, -1, -1))
    ys = jnp.concatenate([assemble(fw, layer.forward.hidden_size), assemble(bw, layer.backward.hidden_size)], -1)
    return layers.BidirectionalState(fw_final, bw_final), ys


def reference_stacked(model, params, xs, lengths, carries):
    finals, outputs = [], []
    for b in range(xs.shape[0]):
        x = xs[b]
        per_layer = []
        for layer, p, c in zip(model.layers, params, carries):
            c_b = jax.tree_util.tree_map(lambda leaf: leaf[b], c)
            final, x = reference_layer(layer, p, x, int(lengths[b]), c_b)
            per_layer.append(final)
        finals.append(tuple(per_layer))
        outputs.append(x)
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *finals), jnp.stack(outputs)


def loss_fn(model, xs, lengths, weights):
    def loss(params, carries):
        final, ys = model.apply(params, xs, lengths=lengths, initial_carries=carries)
        return jnp.sum(weights * ys) + 0.5 * jnp.sum(ys**2) + sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(final))
    return loss


@pytest.mark.parametrize("config", CONFIGS)
def test_stacked_bidirectional_against_hand_loop_and_finite_differences(config):
    model = model_for(config)
    params, carries, xs = setup(model)
    lengths = jnp.asarray(LENGTHS)

    final, ys = model.apply(params, xs, lengths=lengths, initial_carries=carries)
    ref_final, ref_ys = reference_stacked(model, params, xs, LENGTHS, carries)
    assert ys.shape == (BATCH, TIME, HIDDEN) and model.output_size == HIDDEN
    np.testing.assert_allclose(ys, ref_ys, rtol=0, atol=1e-13)
    assert jax.tree_util.tree_structure(final) == jax.tree_util.tree_structure(ref_final)
    for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(ref_final)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    assert not jnp.any(ys[1, 2:]) and jnp.all(ys[1, :2] != 0)  # padded steps are zero

    weights = jnp.asarray(np.random.default_rng(5).standard_normal(ys.shape))
    loss = loss_fn(model, xs, lengths, weights)
    grads = jax.grad(loss, argnums=(0, 1))(params, carries)
    flat, unravel = ravel_pytree((params, carries))
    eps = 1e-6
    flat_loss = jax.jit(jax.vmap(lambda theta: loss(*unravel(theta))))
    basis = eps * jnp.eye(flat.size, dtype=flat.dtype)
    fd = (flat_loss(flat + basis) - flat_loss(flat - basis)) / (2 * eps)
    ad = ravel_pytree(grads)[0]
    # central differences: O(eps²) truncation + O(1e-16 / eps) rounding
    np.testing.assert_allclose(ad, fd, rtol=1e-7, atol=1e-8 * float(jnp.max(jnp.abs(fd))))
    assert float(jnp.max(jnp.abs(ad))) > 0.1  # a non-trivial gradient


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_stacked_of_bidirectional_layouts_and_jit(kind):
    """time_major, unbatched inputs and jax.jit give the batch-major eager result."""
    make = lambda: rnn_jax.make(kind, HIDDEN)
    batch_major = layers.stacked([layers.bidirectional(make(), make()) for _ in range(2)])
    time_major = layers.stacked([layers.bidirectional(make(), make()) for _ in range(2)], time_major=True)
    params, _, xs = setup(batch_major, jnp.float32)
    lengths = jnp.asarray(LENGTHS)
    final, ys = batch_major.apply(params, xs, lengths=lengths)
    assert ys.shape == (BATCH, TIME, 2 * HIDDEN) and batch_major.output_size == 2 * HIDDEN

    final_tm, ys_tm = jax.jit(lambda p, x: time_major.apply(p, x, lengths=lengths))(params, jnp.swapaxes(xs, 0, 1))
    np.testing.assert_allclose(jnp.swapaxes(ys_tm, 0, 1), ys, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(final_tm), jax.tree_util.tree_leaves(final)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    final_1, ys_1 = batch_major.apply(params, xs[1], lengths=int(LENGTHS[1]))  # one unbatched sequence
    np.testing.assert_allclose(ys_1, ys[1], rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(final_1), jax.tree_util.tree_leaves(final)):
        np.testing.assert_allclose(a, b[1], rtol=1e-6, atol=1e-6)


def test_bidirectional_alone_and_reverse_semantics():
    """A lone Bidirectional: the backward half at step t equals a forward run over the reversed valid prefix."""
    fw, bw = rnn_jax.gru(HIDDEN), rnn_jax.elman(2, "relu")  # different kinds and sizes are allowed
    layer = layers.bidirectional(fw, bw)
    params, _, xs = setup(layer)
    final, ys = layer.apply(params, xs, lengths=jnp.asarray(LENGTHS))
    assert ys.shape == (BATCH, TIME, HIDDEN + 2) and layer.output_size == HIDDEN + 2
    for b, n in enumerate(LENGTHS):
        _, rev = rnn_jax.python_unroll(bw, params.backward, xs[b, :n][::-1])
        np.testing.assert_allclose(ys[b, :n, HIDDEN:], rev[::-1], rtol=0, atol=1e-14)
        np.testing.assert_allclose(final.backward.hidden[b], rev[-1], rtol=0, atol=1e-14)
        _, fwd = rnn_jax.python_unroll(fw, params.forward, xs[b, :n])
        np.testing.assert_allclose(ys[b, :n, :HIDDEN], fwd, rtol=0, atol=1e-14)
        assert not jnp.any(ys[b, n:])


def test_init_splits_keys_deterministically_and_chains_sizes():
    cells = [layers.bidirectional(rnn_jax.lstm(4), rnn_jax.lstm(4)), rnn_jax.gru(5), rnn_jax.elman(2)]
    model = layers.stacked(cells)
    key = jax.random.key(42)
    params = model.init(key, 3, jnp.float32)
    keys = jax.random.split(key, 3)
    fw_key, bw_key = jax.random.split(keys[0])
    expected = (
        layers.BidirectionalParams(cells[0].forward.init(fw_key, 3), cells[0].backward.init(bw_key, 3)),
        cells[1].init(keys[1], 8),  # input: 4 + 4 from the bidirectional layer
        cells[2].init(keys[2], 5),
    )
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(expected)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(expected)):
        assert a.dtype == b.dtype and bool(jnp.all(a == b))
    carries = model.initial_carry((7,), jnp.float32)
    assert isinstance(carries[0], layers.BidirectionalState) and carries[0].forward.cell.shape == (7, 4)
    assert carries[1].hidden.shape == (7, 5) and model.output_size == 2


def test_validation_errors():
    gru = rnn_jax.gru(HIDDEN)
    with pytest.raises(ValueError, match="at least one layer"):
        layers.stacked([])
    with pytest.raises(TypeError, match="expected a list of cells"):
        layers.stacked(gru)
    with pytest.raises(TypeError, match="layer 1 must be an rnn_jax Cell or a Bidirectional layer, got str"):
        layers.stacked([gru, "lstm"])
    with pytest.raises(TypeError, match="expected the backward cell to be an rnn_jax Cell"):
        layers.bidirectional(gru, None)
    with pytest.raises(TypeError, match="time_major must be a bool"):
        layers.stacked([gru], time_major=1)

    model = layers.stacked([layers.bidirectional(gru, gru), gru])
    params, carries, xs = setup(model, jnp.float32)
    with pytest.raises(ValueError, match="stacked.init input_size must be a positive integer"):
        model.init(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="expected parameters for 2 layers, got 1"):
        model.apply(params[:1], xs)
    with pytest.raises(TypeError, match="expected params as a tuple with one entry per layer"):
        model.apply(params[1], xs)
    with pytest.raises(TypeError, match=r"stacked layer 0 of 2: bidirectional layer: expected BidirectionalParams"):
        model.apply((params[1], params[1]), xs)
    with pytest.raises(ValueError, match=r"stacked layer 0 of 2: bidirectional layer, forward direction: xs: expected 2 features"):
        model.apply(params, xs[..., :1])
    with pytest.raises(ValueError, match=r"stacked layer 1 of 2: gru params.w_hh: expected shape \(3, 9\), got \(3, 6\)"):
        model.apply((params[0], params[1]._replace(w_hh=params[1].w_hh[:, :6])), xs)
    with pytest.raises(ValueError, match="initial_carries as None or a tuple of 2"):
        model.apply(params, xs, initial_carries=carries[:1])
    with pytest.raises(TypeError, match="initial_carries as BidirectionalState"):
        model.apply(params, xs, initial_carries=(carries[1], None))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\]"):
        model.apply(params, xs, lengths=jnp.asarray([1, 6, 2]))
    with pytest.raises(TypeError, match="lengths: expected an integer array"):
        model.apply(params, xs, lengths=jnp.asarray([1.0, 2.0, 3.0], jnp.float32))
