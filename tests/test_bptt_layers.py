"""Stacked and bidirectional layers against the hand-written BPTT reference.

The reference (:func:`rnn_jax.bptt.bptt_outputs`, NumPy, no autodiff) goes back
through one cell from the cotangent of its outputs and returns the cotangent of its
inputs; chaining it from the top layer down -- a bidirectional layer's output
cotangent split into its ``[forward | backward]`` halves, the backward direction run
in reverse, the two input cotangents added -- gives the gradient of the whole network.
It must equal ``jax.grad`` through :mod:`rnn_jax.layers` for the loss
``E = Σ outputs ⊙ C`` (C fixed and random, so ``∂E/∂outputs = C`` at valid steps),
for every cell kind, random non-zero parameters and initial carries, and lengths with
padding (a length-0 sequence included). Everything in float64.

``python tests/test_bptt_layers.py`` prints the largest relative error per cell.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import bptt, layers
from rnn_jax.cells import Cell
from rnn_jax.layers import BidirectionalParams, BidirectionalState, Stacked

CELLS = {
    "elman-tanh": lambda h: rnn_jax.elman(h, "tanh"),
    "pascanu-sigmoid": lambda h: rnn_jax.pascanu(h, "sigmoid"),
    "lstm": lambda h: rnn_jax.lstm(h, forget_bias=1.0),
    "gru": lambda h: rnn_jax.gru(h),
}
NETWORKS = {
    "stacked": lambda make: layers.stacked([make(3), make(2)]),
    "bidirectional": lambda make: layers.bidirectional(make(3), make(2)),
    "stacked-bidirectional": lambda make: layers.stacked(
        [layers.bidirectional(make(3), make(2)), layers.bidirectional(make(2), make(3))]
    ),
}
BATCH, TIME, INPUT = 4, 5, 2
LENGTHS = (5, 3, 0, 1)  # full, padded, empty, one step
TINY = np.finfo(np.float64).tiny


def randomize(rng, template, scale=0.7):
    """Every leaf of ``template`` (biases included) drawn N(0, scale²): no zero entries."""
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape)), template)


def relative_errors(reference, other):
    """Per leaf ‖reference − other‖ / ‖reference‖."""
    ref_leaves, other_leaves = jax.tree_util.tree_leaves(reference), jax.tree_util.tree_leaves(other)
    assert len(ref_leaves) == len(other_leaves)
    return [
        float(np.linalg.norm(np.asarray(r) - np.asarray(o)) / max(np.linalg.norm(np.asarray(r)), TINY))
        for r, o in zip(ref_leaves, other_leaves)
    ]


# ---------------------------------------------------------------- the hand-written chain


def hand_forward(layer, params, xs, lengths, carry):
    """A cell or bidirectional layer's outputs (B, T, H) by :func:`rnn_jax.bptt.forward`."""
    if isinstance(layer, Cell):
        return jnp.asarray(bptt.forward(layer, params, xs, lengths=lengths, initial_carry=carry).outputs)
    fw = bptt.forward(layer.forward, params.forward, xs, lengths=lengths, initial_carry=carry.forward)
    bw = bptt.forward(layer.backward, params.backward, xs, lengths=lengths, initial_carry=carry.backward, reverse=True)
    return jnp.asarray(np.concatenate([fw.outputs, bw.outputs], axis=-1))


def hand_backward(layer, params, xs, d_outputs, lengths, carry):
    """``(∂E/∂params, ∂E/∂initial carry, ∂E/∂xs)`` of a cell or bidirectional layer from ∂E/∂outputs."""
    if isinstance(layer, Cell):
        g = bptt.bptt_outputs(layer, params, xs, d_outputs, lengths=lengths, initial_carry=carry)
        return g.params, g.initial_carry, g.inputs
    split = layer.forward.hidden_size
    fw = bptt.bptt_outputs(layer.forward, params.forward, xs, d_outputs[..., :split], lengths=lengths,
                           initial_carry=carry.forward)
    bw = bptt.bptt_outputs(layer.backward, params.backward, xs, d_outputs[..., split:], lengths=lengths,
                           initial_carry=carry.backward, reverse=True)
    # both directions read the same xs: their input cotangents add up
    return (BidirectionalParams(fw.params, bw.params), BidirectionalState(fw.initial_carry, bw.initial_carry),
            fw.inputs + bw.inputs)


def hand_network(network, params, xs, d_outputs, lengths, carries):
    """Outputs and ``(∂E/∂params, ∂E/∂initial carries, ∂E/∂xs)`` of a network from ∂E/∂outputs,
    layer by layer from the top down."""
    if not isinstance(network, Stacked):
        return hand_forward(network, params, xs, lengths, carries), hand_backward(network, params, xs, d_outputs, lengths, carries)
    inputs = [xs]
    for layer, p, c in zip(network.layers, params, carries):
        inputs.append(hand_forward(layer, p, inputs[-1], lengths, c))
    grads, carry_grads, d = [None] * len(params), [None] * len(params), d_outputs
    for k in range(len(params) - 1, -1, -1):  # the output cotangent of layer k-1 is the input cotangent of layer k
        grads[k], carry_grads[k], d = hand_backward(network.layers[k], params[k], inputs[k], d, lengths, carries[k])
    return inputs[-1], (tuple(grads), tuple(carry_grads), d)


def compare(cell_name, network_name, seed=0):
    """Largest relative error (over every leaf of params, carries and xs) of the chained
    reference against jax.grad through ``network.apply``."""
    rng = np.random.default_rng(seed)
    network = NETWORKS[network_name](CELLS[cell_name])
    params = randomize(rng, jax.eval_shape(lambda: network.init(jax.random.key(0), INPUT, jnp.float64)))
    carries = randomize(rng, network.initial_carry((BATCH,), jnp.float64), scale=1.0)
    xs = jnp.asarray(rng.standard_normal((BATCH, TIME, INPUT)))
    lengths = jnp.asarray(LENGTHS)
    valid = np.arange(TIME)[None, :] < np.asarray(LENGTHS)[:, None]
    c = rng.standard_normal((BATCH, TIME, layers.output_size(network)))

    def loss(p, h0, x):
        _, outputs = network.apply(p, x, lengths=lengths, initial_carries=h0)
        return jnp.sum(outputs * c), outputs

    (_, outputs), auto = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, carries, xs)
    d_outputs = jnp.asarray(np.where(valid[..., None], c, 0.0))  # padded outputs are constant zeros
    hand_outputs, hand = hand_network(network, params, xs, d_outputs, lengths, carries)

    np.testing.assert_allclose(hand_outputs, outputs, rtol=1e-12, atol=1e-13)
    assert jax.tree_util.tree_structure(hand) == jax.tree_util.tree_structure(auto)
    errors = relative_errors(auto, hand)
    assert max(errors) <= 1e-10, f"{cell_name} {network_name}: relative errors per leaf {errors}"
    assert not np.any(np.asarray(hand[2])[~valid]), "padded inputs must get a zero gradient"
    return max(errors)


@pytest.mark.parametrize("network_name", NETWORKS)
@pytest.mark.parametrize("cell_name", CELLS)
def test_chained_bptt_matches_autodiff_through_layers(cell_name, network_name):
    compare(cell_name, network_name)


# ---------------------------------------------------------------- bptt_outputs on its own


@pytest.mark.parametrize("cell_name", CELLS)
def test_reverse_forward_matches_unroll(cell_name):
    """forward(reverse=True) is unroll(reverse=True): outputs and every carry."""
    rng = np.random.default_rng(1)
    cell = CELLS[cell_name](3)
    params = randomize(rng, jax.eval_shape(lambda: cell.init(jax.random.key(0), INPUT, jnp.float64)))
    carry = randomize(rng, cell.initial_carry((BATCH,), jnp.float64), scale=1.0)
    xs, lengths = jnp.asarray(rng.standard_normal((BATCH, TIME, INPUT))), jnp.asarray(LENGTHS)
    final, outputs, carries = rnn_jax.unroll(cell, params, xs, lengths=lengths, initial_carry=carry, reverse=True,
                                             return_carries=True)
    traj = bptt.forward(cell, params, xs, lengths=lengths, initial_carry=carry, reverse=True)
    np.testing.assert_allclose(traj.outputs, outputs, rtol=1e-12, atol=1e-13)
    for hand, auto in zip(traj.carries, carries):
        np.testing.assert_allclose(hand, auto, rtol=1e-12, atol=1e-13)
    # the final carry is the one after step 0 (or the initial one for a length-0 sequence)
    for hand, auto in zip(jax.tree_util.tree_map(lambda leaf: leaf[:, 0], traj.carries), final):
        np.testing.assert_allclose(hand, auto, rtol=1e-12, atol=1e-13)


def test_nan_padding_and_one_sequence():
    """NaN in the padding reaches no gradient (as in the unroll); an unbatched sequence
    gives the row of the batched result."""
    rng = np.random.default_rng(2)
    cell = CELLS["lstm"](3)
    params = randomize(rng, jax.eval_shape(lambda: cell.init(jax.random.key(0), INPUT, jnp.float64)))
    xs = rng.standard_normal((BATCH, TIME, INPUT))
    d_outputs = jnp.asarray(rng.standard_normal((BATCH, TIME, 3)))
    lengths = jnp.asarray(LENGTHS)
    valid = np.arange(TIME)[None, :] < np.asarray(LENGTHS)[:, None]
    for reverse in (False, True):
        clean = bptt.bptt_outputs(cell, params, jnp.asarray(np.where(valid[..., None], xs, 0.0)), d_outputs,
                                  lengths=lengths, reverse=reverse)
        nan = bptt.bptt_outputs(cell, params, jnp.asarray(np.where(valid[..., None], xs, np.nan)), d_outputs,
                                lengths=lengths, reverse=reverse)
        for a, b in zip(jax.tree_util.tree_leaves(clean), jax.tree_util.tree_leaves(nan)):
            np.testing.assert_array_equal(a, b)
        one = bptt.bptt_outputs(cell, params, jnp.asarray(xs[1]), d_outputs[1], lengths=LENGTHS[1], reverse=reverse)
        row = bptt.bptt_outputs(cell, params, jnp.asarray(xs[1:2]), d_outputs[1:2], lengths=lengths[1:2], reverse=reverse)
        for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(row)):
            np.testing.assert_allclose(a, b[0] if a.ndim < b.ndim else b, rtol=1e-13, atol=1e-15)


def test_bad_arguments_raise():
    rng = np.random.default_rng(3)
    cell = CELLS["gru"](3)
    params = randomize(rng, jax.eval_shape(lambda: cell.init(jax.random.key(0), INPUT, jnp.float64)))
    xs = jnp.asarray(rng.standard_normal((BATCH, TIME, INPUT)))
    with pytest.raises(ValueError, match=r"d_outputs: expected shape \(4, 5, 3\).*got \(4, 5, 2\)"):
        bptt.bptt_outputs(cell, params, xs, jnp.zeros((BATCH, TIME, 2), jnp.float64))
    with pytest.raises(TypeError, match="d_outputs: expected dtype float64"):
        bptt.bptt_outputs(cell, params, xs, jnp.zeros((BATCH, TIME, 3), jnp.float32))
    with pytest.raises(TypeError, match="reverse: expected a bool"):
        bptt.bptt_outputs(cell, params, xs, jnp.zeros((BATCH, TIME, 3), jnp.float64), reverse=1)


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    for name in CELLS:
        worst = max(compare(name, network) for network in NETWORKS)
        print(f"{name:16s} largest relative error {worst:.2e}")
