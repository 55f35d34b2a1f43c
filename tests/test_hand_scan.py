"""The hand-written reverse pass of ``unroll`` (rnn_jax.hand_scan) against independent references.

* both of ``unroll``'s reverse passes (``backward="hand"`` and ``"autodiff"``) against the
  hand BPTT of rnn_jax.bptt, every cell, padded lengths and an initial carry, float64;
* the two against each other where bptt does not reach: reversed sequences, gradients of
  the final carry, unbatched sequences, a vmapped batch of problems, second derivatives;
* the padding contract: a NaN in a padded step reaches neither outputs nor gradients;
* the contract's edges: forward-mode autodiff needs ``backward="autodiff"`` (a clear
  error otherwise), ``backward="hand"`` with ``remat``/``return_carries`` is refused.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import model
from rnn_jax.bptt import bptt
from rnn_jax.unroll import unroll
from tests.helpers import CELL_CONFIGS, max_abs_diff, random_params

B, T, I, H, O = 3, 6, 2, 4, 3
LENGTHS = jnp.asarray([6, 2, 0])


def _problem(name, seed=0):
    cell = CELL_CONFIGS[name](H)
    k = jax.random.split(jax.random.key(seed), 5)
    params = model.ModelParams(
        random_params(cell, I, k[0]),
        rnn_jax.ReadoutParams(0.5 * jax.random.normal(k[1], (H, O), jnp.float64), 0.3 * jax.random.normal(k[2], (O,), jnp.float64)),
    )
    xs = jax.random.normal(k[3], (B, T, I), jnp.float64)
    carry = jax.tree_util.tree_map(lambda a: 0.5 * jax.random.normal(k[4], a.shape, a.dtype), cell.initial_carry((B,), jnp.float64))
    return cell, params, xs, carry


def _rel(reference, other):
    return max(
        float(np.linalg.norm(np.asarray(r) - np.asarray(o)) / max(np.linalg.norm(np.asarray(r)), 1e-300))
        for r, o in zip(jax.tree_util.tree_leaves(reference), jax.tree_util.tree_leaves(other))
    )


@pytest.mark.parametrize("name", CELL_CONFIGS)
@pytest.mark.parametrize("backward", ["hand", "autodiff"])
def test_both_reverse_passes_match_hand_bptt(name, backward):
    cell, params, xs, carry = _problem(name)
    targets = jax.random.normal(jax.random.key(7), (B, T, O), jnp.float64)
    fn = lambda p, c: model.loss(cell, p, xs, targets, loss="mse", on="every", lengths=LENGTHS, initial_carry=c, backward=backward)
    value, (g_params, g_carry) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(params, carry)
    ref = bptt(cell, params, xs, targets, loss="mse", on="every", lengths=LENGTHS, initial_carry=carry)
    np.testing.assert_allclose(value, ref.loss, rtol=1e-12)
    assert _rel(ref.grads, g_params) <= 1e-10
    assert _rel(ref.initial_carry_grad, g_carry) <= 1e-10


def _unroll_loss(cell, backward, reverse, lengths, time_major=False):
    def loss(params, xs, carry):
        final, ys = unroll(cell, params, xs, initial_carry=carry, lengths=lengths, reverse=reverse,
                           time_major=time_major, backward=backward)
        # weights every output and the final carry differently, so each cotangent matters
        w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        return jnp.sum(w * jnp.tanh(ys)) + sum(jnp.sum(jnp.sin(leaf)) for leaf in final)

    return loss


@pytest.mark.parametrize("name", ["elman-tanh", "pascanu-sigmoid", "lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_hand_equals_autodiff(name, reverse, padded):
    """Gradients for the cell's parameters, the inputs and the initial carry, with a loss that
    reads every output and the final carry."""
    cell, params, xs, carry = _problem(name, seed=1)
    lengths = LENGTHS if padded else None
    grads = {
        how: jax.grad(_unroll_loss(cell, how, reverse, lengths), argnums=(0, 1, 2))(params.cell, xs, carry)
        for how in ("hand", "autodiff")
    }
    assert max_abs_diff(grads["hand"], grads["autodiff"]) <= 1e-12
    assert _rel(grads["autodiff"], grads["hand"]) <= 1e-12


@pytest.mark.parametrize("name", ["elman-tanh", "lstm", "gru"])
@pytest.mark.parametrize("project_inputs", [False, True])
def test_projection_inside_or_ahead(name, project_inputs):
    """Cells with a ReverseRule project inside the step or ahead of the loop; either way
    the weights' gradients (w_ih's and b's from δz after the loop, when inside) equal
    autodiff's, reversed and padded, unbatched too."""
    cell, params, xs, carry = _problem(name, seed=3)

    def loss(backward, reverse, lengths, xs, carry):
        def fn(params, xs, carry):
            final, ys = unroll(cell, params, xs, initial_carry=carry, lengths=lengths, reverse=reverse,
                               backward=backward, project_inputs=project_inputs)
            w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
            return jnp.sum(w * jnp.tanh(ys)) + sum(jnp.sum(jnp.sin(leaf)) for leaf in final)

        return jax.grad(fn, argnums=(0, 1, 2))(params.cell, xs, carry)

    one = jax.tree_util.tree_map(lambda a: a[0], carry)
    for reverse, lengths, x, c in [(True, LENGTHS, xs, carry), (False, LENGTHS, xs, carry), (True, None, xs[0], one)]:
        hand, auto = loss("hand", reverse, lengths, x, c), loss("autodiff", reverse, lengths, x, c)
        assert _rel(auto, hand) <= 1e-12, (reverse, lengths is not None)


@pytest.mark.parametrize("name", ["elman-tanh", "lstm", "gru"])
def test_cells_without_a_rule_take_the_vjp_path(name):
    """A cell without a ReverseRule (a user's own, or a built-in one with it removed) is
    differentiated through jax.vjp of its combine at every reverse step: the same gradients."""
    cell, params, xs, carry = _problem(name, seed=4)
    bare = cell.replace(reverse_rule=None)
    for reverse, lengths in [(False, LENGTHS), (True, None)]:
        grads = [
            jax.grad(_unroll_loss(c, how, reverse, lengths), argnums=(0, 1, 2))(params.cell, xs, carry)
            for c, how in [(bare, "hand"), (cell, "hand"), (cell, "autodiff")]
        ]
        assert _rel(grads[2], grads[0]) <= 1e-12 and _rel(grads[2], grads[1]) <= 1e-12


@pytest.mark.parametrize("kind, saved_width", [("elman", 0), ("lstm", 5), ("gru", 5)])
def test_cotangents_take_no_memory_of_their_own(kind, saved_width):
    """The reverse pass writes its cotangents over stacks whose step is dead once read: per
    step and batch row, XLA's temporaries for the gradient of a readout's loss grow by the
    rule's saved values (LSTM: 4 gates and the previous cell state, GRU: 3 gates,
    ``h W_hn + b_hn`` and the previous state: 5 H each), the outputs, their cotangent (over
    which Elman's δz is written), one shifted copy (3 H), the time-major inputs (I) and the
    readout's outputs (O): not by a stacked cotangent besides (at least H more). Every
    stack here is at least ``IN_PLACE_MIN_BYTES`` (2 MiB), the size written over."""
    b, i, h, o = 16, 5, 64, 16
    cell = rnn_jax.make(kind, h)
    params = cell.init(jax.random.key(0), i)
    readout = jax.random.normal(jax.random.key(1), (h, o), jnp.float32)

    def temp_bytes(steps):
        xs = jnp.ones((b, steps, i), jnp.float32)
        loss = lambda p, xs: jnp.sum((unroll(cell, p, xs, backward="hand")[1] @ readout) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss)).lower(params, xs).compile().memory_analysis().temp_size_in_bytes

    per_step_row = (temp_bytes(1024) - temp_bytes(512)) / 512 / b / 4  # float32 values
    assert per_step_row <= saved_width * h + 3 * h + i + o + h / 2, per_step_row


@pytest.mark.parametrize("name", sorted(rnn_jax.activations.ACTIVATIONS))
def test_derivative_from_output_is_the_derivative(name):
    """What the Elman rule reads, f' written in terms of f's output, against autodiff of f
    at the pre-activation (zero included, where relu's output is 0 and its slope taken as 0)."""
    act = rnn_jax.activations.get(name)
    pre = jnp.concatenate([jnp.linspace(-6.0, 6.0, 101, dtype=jnp.float64), jnp.zeros(1, jnp.float64)])
    slope = jax.vmap(jax.grad(act.fn))(pre)
    np.testing.assert_allclose(act.derivative_from_output(act.fn(pre)), slope, rtol=1e-12, atol=1e-15)


def test_unbatched_and_time_major_sequences():
    cell, params, xs, carry = _problem("gru", seed=2)
    one = xs[0]
    for how_args in [dict(xs=one, carry=jax.tree_util.tree_map(lambda a: a[0], carry), time_major=False),
                     dict(xs=jnp.swapaxes(xs, 0, 1), carry=carry, time_major=True)]:
        g = {
            how: jax.grad(_unroll_loss(cell, how, False, None, how_args["time_major"]), argnums=(0, 1))(
                params.cell, how_args["xs"], how_args["carry"])
            for how in ("hand", "autodiff")
        }
        assert max_abs_diff(g["hand"], g["autodiff"]) <= 1e-12


def test_vmap_over_problems_equals_each_alone():
    """A vmapped batch of parameter sets (what the training engine does with members)."""
    cell = rnn_jax.lstm(H)
    keys = jax.random.split(jax.random.key(3), 4)
    stacked = jax.vmap(lambda k: random_params(cell, I, k))(keys)
    xs = jax.random.normal(jax.random.key(4), (4, B, T, I), jnp.float64)
    loss = _unroll_loss(cell, "hand", False, LENGTHS)
    zero = cell.initial_carry((B,), jnp.float64)
    batched = jax.vmap(jax.grad(loss), in_axes=(0, 0, None))(stacked, xs, zero)
    for m in range(4):
        alone = jax.grad(_unroll_loss(cell, "autodiff", False, LENGTHS))(
            jax.tree_util.tree_map(lambda a: a[m], stacked), xs[m], zero)
        assert max_abs_diff(jax.tree_util.tree_map(lambda a: a[m], batched), alone) <= 1e-12


def test_second_derivative_through_the_hand_pass():
    """Reverse-over-reverse: the hand pass is itself differentiable (a Hessian-vector product
    by grad-of-grad equals the autodiff path's)."""
    cell, params, xs, carry = _problem("elman-tanh", seed=5)
    v = jax.tree_util.tree_map(jnp.ones_like, params.cell)

    def hvp(how):
        g = lambda p: jax.grad(_unroll_loss(cell, how, False, LENGTHS))(p, xs, carry)
        inner = lambda p: sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g(p)), jax.tree_util.tree_leaves(v)))
        return jax.grad(inner)(params.cell)

    assert _rel(hvp("autodiff"), hvp("hand")) <= 1e-10


def test_nan_in_padding_reaches_nothing():
    cell, params, xs, carry = _problem("lstm", seed=6)
    poisoned = xs.at[1, 3:].set(jnp.nan).at[2].set(jnp.inf)  # lengths 2 and 0: all padding
    loss = _unroll_loss(cell, "hand", False, LENGTHS)
    value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(params.cell, poisoned, carry)
    clean_value, clean = jax.value_and_grad(loss, argnums=(0, 1, 2))(params.cell, xs, carry)
    assert np.isfinite(value) and value == clean_value
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert max_abs_diff(grads[0], clean[0]) == 0.0
    assert float(jnp.max(jnp.abs(grads[1][1, 2:]))) == 0.0 and float(jnp.max(jnp.abs(grads[1][2]))) == 0.0


def test_forward_mode_needs_autodiff():
    cell, params, xs, carry = _problem("elman-tanh", seed=8)
    f = lambda how: (lambda p: unroll(cell, p, xs, backward=how)[1])
    tangent = jax.tree_util.tree_map(jnp.ones_like, params.cell)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(f("hand"), (params.cell,), (tangent,))
    _, jvp_out = jax.jvp(f("autodiff"), (params.cell,), (tangent,))
    # the JVP against a central difference along the tangent (the outputs are smooth)
    eps = 1e-6
    plus = f("autodiff")(jax.tree_util.tree_map(lambda a, t: a + eps * t, params.cell, tangent))
    minus = f("autodiff")(jax.tree_util.tree_map(lambda a, t: a - eps * t, params.cell, tangent))
    np.testing.assert_allclose(jvp_out, (plus - minus) / (2 * eps), atol=1e-7)


def test_bad_backward_arguments():
    cell, params, xs, _ = _problem("elman-tanh")
    with pytest.raises(ValueError, match="backward: expected one of 'hand', 'autodiff', got 'manual'"):
        unroll(cell, params.cell, xs, backward="manual")
    for kwargs in (dict(remat=True), dict(return_carries=True)):
        with pytest.raises(ValueError, match="cannot be combined with remat=True or return_carries=True"):
            unroll(cell, params.cell, xs, backward="hand", **kwargs)


def test_default_is_measured_per_device():
    assert rnn_jax.default_backward(rnn_jax.elman(3), "cpu") == "hand"
    assert rnn_jax.default_backward(rnn_jax.gru(3), "cpu") == "hand"
    assert rnn_jax.default_backward(rnn_jax.lstm(3), "gpu") == "autodiff"
