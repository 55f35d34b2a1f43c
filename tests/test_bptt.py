"""The hand-written BPTT reference against autodiff, finite differences and the tutorial.

Everything in float64 (tests/conftest.py enables x64 and strict dtype promotion).

* property test (hypothesis): for every cell and every (loss, on), ``jax.grad`` of
  ``rnn_jax.model.loss`` and :func:`rnn_jax.bptt.bptt` agree to 1e-10 on random sizes,
  random non-zero parameters, random lengths with padding and random initial carries;
* central finite differences of ``model.loss`` (the tutorial's gradient check) agree
  with bptt to 1e-6;
* ``state_grads`` equal ``jax.grad`` with respect to an additive perturbation of each
  step's carry (:func:`rnn_jax.diagnostics.state_gradients`);
* the counting RNN of Roelants' tutorial: bptt equals the tutorial's closed-form BPTT.

``python tests/test_bptt.py`` prints the largest relative errors per cell over a fixed
sweep of random cases (autodiff and finite differences).

Each hypothesis example has new shapes, so it compiles ``jax.grad(model.loss)`` anew
(about a second on a loaded 2-core machine): one jitted function computes the
autodiff gradients of all four (loss, on) pairs at once (about twice the compile time
of one) and the examples per cell are few.
"""

from __future__ import annotations

import functools

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import rnn_jax
from rnn_jax import diagnostics, model
from rnn_jax.bptt import BPTTResult, bptt, bptt_outputs, forward
from rnn_jax.cells import ElmanParams
from rnn_jax.model import ModelParams
from rnn_jax.readout import ReadoutParams
from tests.helpers import CELL_CONFIGS

# The shared registry (a new cell is tested by registering it in tests/helpers.py).
CELLS = CELL_CONFIGS
COMBOS = (("mse", "last"), ("mse", "every"), ("xent", "last"), ("xent", "every"))
TINY = np.finfo(np.float64).tiny


# ---------------------------------------------------------------- problems


def random_params(cell, rng, input_size, output_size, scale=0.7):
    """Every parameter ~ N(0, scale²), biases included (init's readout bias is zero)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), cell, input_size, output_size))
    return jax.tree_util.tree_map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape)), shapes)


def random_carry(cell, rng, batch):
    zeros = jax.eval_shape(lambda: cell.initial_carry((batch,), jnp.float64))
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape)), zeros)


def random_targets(rng, loss, on, batch, time, output_size):
    positions = (batch,) if on == "last" else (batch, time)
    if loss == "mse":
        return jnp.asarray(rng.standard_normal(positions + (output_size,)))
    return jnp.asarray(rng.integers(0, output_size, positions))


def relative_errors(reference, other):
    """Per leaf ‖reference − other‖ / max(‖reference‖, tiny)."""
    return [
        float(np.linalg.norm(np.asarray(r) - np.asarray(o)) / max(np.linalg.norm(np.asarray(r)), TINY))
        for r, o in zip(jax.tree_util.tree_leaves(reference), jax.tree_util.tree_leaves(other), strict=True)
    ]


@functools.partial(jax.jit, static_argnames=("cell",))
def autodiff(cell, params, xs, targets, lengths, initial_carry):
    """``(loss, (∂params, ∂initial_carry))`` by ``jax.grad`` for every (loss, on) of COMBOS;
    targets: one per combo."""
    results = []
    for (loss, on), target in zip(COMBOS, targets):
        fn = lambda p, c: model.loss(cell, p, xs, target, loss=loss, on=on, lengths=lengths, initial_carry=c)
        results.append(jax.value_and_grad(fn, argnums=(0, 1))(params, initial_carry))
    return results


def compare_with_autodiff(cell, rng, batch, time, input_size, output_size, lengths, with_carry, scale=0.7):
    """Largest relative error (over leaves and the four (loss, on)) of bptt against jax.grad."""
    params = random_params(cell, rng, input_size, output_size, scale)
    xs = jnp.asarray(rng.standard_normal((batch, time, input_size)))
    carry = random_carry(cell, rng, batch) if with_carry else None
    targets = [random_targets(rng, loss, on, batch, time, output_size) for loss, on in COMBOS]
    worst = 0.0
    for (loss, on), target, (value, (g_params, g_carry)) in zip(COMBOS, targets, autodiff(cell, params, xs, targets, lengths, carry)):
        result = bptt(cell, params, xs, target, loss=loss, on=on, lengths=lengths, initial_carry=carry)
        what = f"{cell.kind}/{cell.activation} loss={loss} on={on} lengths={lengths} carry={with_carry}"
        np.testing.assert_allclose(result.loss, value, rtol=1e-12, atol=1e-14, err_msg=what)
        errors = relative_errors(g_params, result.grads)
        if with_carry:
            errors += relative_errors(g_carry, result.initial_carry_grad)
        assert max(errors) <= 1e-10, f"{what}: relative errors per leaf {errors}"
        for leaf, like in zip(jax.tree_util.tree_leaves(result.grads), jax.tree_util.tree_leaves(params)):
            assert leaf.shape == like.shape and leaf.dtype == like.dtype
        worst = max(worst, max(errors))
    return worst


# ---------------------------------------------------------------- autodiff (property-based)


@st.composite
def problems(draw):
    """(hidden, sizes, seed). Hypothesis tries its simplest example first: every draw is
    written so that the simplest one is the richest case (largest sizes, padded lengths,
    an initial carry), not B = T = I = H = O = 1."""
    at_most = lambda high, low=1: high - draw(st.integers(0, high - low))
    batch, time = at_most(4), at_most(8)
    sizes = dict(batch=batch, time=time, input_size=at_most(4), output_size=at_most(3))
    if draw(st.booleans()):
        sizes["lengths"] = None
    else:
        lengths = [at_most(time, 0) for _ in range(batch)]
        # at least one padded sequence (a length-0 one when time = 1)
        lengths[draw(st.integers(0, batch - 1))] = at_most(time - 1, 0)
        sizes["lengths"] = jnp.asarray(lengths)
    sizes["with_carry"] = not draw(st.booleans())
    sizes["scale"] = draw(st.sampled_from([0.7, 0.3, 1.5]))
    return at_most(5), sizes, draw(st.integers(0, 2**32 - 1))


@pytest.mark.parametrize("name", CELLS)
@settings(max_examples=2, deadline=None)
@given(problem=problems())
def test_bptt_matches_autodiff(name, problem):
    """All four (loss, on) on each example: rnn_jax.model.loss's jax.grad == bptt to 1e-10."""
    hidden, sizes, seed = problem
    compare_with_autodiff(CELLS[name](hidden), np.random.default_rng(seed), **sizes)


# ---------------------------------------------------------------- finite differences


FD_CASES = {
    # (batch, time, input, hidden, output, loss, on, lengths, with initial carry)
    "mse-last": (2, 4, 2, 3, 2, "mse", "last", None, False),
    "xent-every-padded": (3, 5, 2, 2, 3, "xent", "every", (5, 2, 0), True),
}


def finite_difference_errors(cell, seed, batch, time, input_size, hidden, output_size, loss, on, lengths, with_carry, eps=1e-6):
    """Per-leaf relative error between bptt and central differences of model.loss,
    over the parameters and (if given) the initial carry."""
    rng = np.random.default_rng(seed)
    params = random_params(cell, rng, input_size, output_size)
    xs = jnp.asarray(rng.standard_normal((batch, time, input_size)))
    carry = random_carry(cell, rng, batch) if with_carry else None
    target = random_targets(rng, loss, on, batch, time, output_size)
    lengths = None if lengths is None else jnp.asarray(lengths)
    result = bptt(cell, params, xs, target, loss=loss, on=on, lengths=lengths, initial_carry=carry)

    point = (params, carry)
    flat, unravel = ravel_pytree(point)
    objective = jax.jit(lambda v: model.loss(cell, unravel(v)[0], xs, target, loss=loss, on=on, lengths=lengths, initial_carry=unravel(v)[1]))
    flat = np.asarray(flat)
    numerical = np.empty_like(flat)
    for index in range(flat.size):  # the tutorial's gradient check: (E(w + ε) − E(w − ε)) / 2ε
        step = np.zeros_like(flat)
        step[index] = eps
        numerical[index] = (float(objective(flat + step)) - float(objective(flat - step))) / (2 * eps)
    return relative_errors((result.grads, result.initial_carry_grad if with_carry else None), unravel(jnp.asarray(numerical)))


@pytest.mark.parametrize("case", FD_CASES)
@pytest.mark.parametrize("name", CELLS)
def test_bptt_matches_finite_differences(name, case):
    errors = finite_difference_errors(CELLS[name](FD_CASES[case][3]), 3, *FD_CASES[case])
    assert max(errors) <= 1e-6, errors


# ---------------------------------------------------------------- state gradients


@pytest.mark.parametrize("name", CELLS)
def test_state_grads_are_gradients_wrt_each_steps_carry(name):
    rng = np.random.default_rng(7)
    batch, time, input_size, hidden, output_size = 3, 5, 2, 3, 2
    loss, on = ("mse", "every") if name.startswith(("elman", "lstm")) else ("xent", "last")
    cell = CELLS[name](hidden)
    params = random_params(cell, rng, input_size, output_size)
    xs = jnp.asarray(rng.standard_normal((batch, time, input_size)))
    target = random_targets(rng, loss, on, batch, time, output_size)
    lengths = jnp.asarray([5, 3, 0])
    result = bptt(cell, params, xs, target, loss=loss, on=on, lengths=lengths)

    # autodiff through zero perturbations of every step's carry (rnn_jax.diagnostics)
    expected = jax.jit(diagnostics.state_gradients, static_argnames=("cell", "loss", "on"))(
        cell, params, xs, target, loss=loss, on=on, lengths=lengths)
    np.testing.assert_allclose(expected.loss, result.loss, rtol=1e-13)
    errors = relative_errors(expected.deltas, result.state_grads)
    assert max(errors) <= 1e-10, errors
    assert type(result.state_grads) is cell.carry_type
    # padded steps (t >= length) get no gradient; the last valid step of a read-at-last sequence does
    for leaf in result.state_grads:
        assert leaf.shape == (batch, time, hidden)
        assert np.all(np.asarray(leaf)[1, 3:] == 0) and np.all(np.asarray(leaf)[2] == 0)
    assert np.any(np.asarray(result.state_grads.hidden)[1, 2] != 0)


# ---------------------------------------------------------------- the tutorial's counting RNN (Roelants' tutorial)


def counting_data():
    """The tutorial's dataset: 20 binary sequences of 10 steps, target = the number of ones."""
    np.random.seed(seed=1)
    X = np.zeros((20, 10))
    for row in range(20):
        X[row, :] = np.around(np.random.rand(10)).astype(int)
    return X, np.sum(X, axis=1)


def tutorial_bptt(X, t, wx, w_rec):
    """Roelants' tutorial, closed form: s_k = s_{k-1} w_rec + x_k w_x, s_0 = 0, ξ = Σ (t − s_n)² / N,
    δ_n = 2 (s_n − t) / N, δ_{k-1} = δ_k w_rec, ∂ξ/∂w_x = Σ_k Σ_b δ_k x_k, ∂ξ/∂w_rec = Σ_k Σ_b δ_k s_{k-1}."""
    samples, n = X.shape
    S = np.zeros((samples, n + 1))
    for k in range(n):
        S[:, k + 1] = X[:, k] * wx + S[:, k] * w_rec
    cost = ((t - S[:, -1]) ** 2).sum() / samples
    grad_over_time = np.zeros((samples, n + 1))
    grad_over_time[:, -1] = 2.0 * (S[:, -1] - t) / samples
    wx_grad = w_rec_grad = 0.0
    for k in range(n, 0, -1):
        wx_grad += np.sum(grad_over_time[:, k] * X[:, k - 1])
        w_rec_grad += np.sum(grad_over_time[:, k] * S[:, k - 1])
        grad_over_time[:, k - 1] = grad_over_time[:, k] * w_rec
    return cost, wx_grad, w_rec_grad, grad_over_time, S


@pytest.mark.parametrize("wx, w_rec", [(1.2, 1.2), (-1.5, 2.0), (1.0, 0.5), (1.0, -2.0)])
def test_counting_rnn_matches_the_tutorials_closed_form(wx, w_rec):
    X, t = counting_data()
    cell = rnn_jax.elman(1, "identity")
    params = ModelParams(
        ElmanParams(w_ih=jnp.full((1, 1), wx), w_hh=jnp.full((1, 1), w_rec), b=jnp.zeros(1)),
        ReadoutParams(w=jnp.ones((1, 1)), b=jnp.zeros(1)),
    )
    result = bptt(cell, params, jnp.asarray(X[:, :, None]), jnp.asarray(t[:, None]))
    cost, wx_grad, w_rec_grad, grad_over_time, S = tutorial_bptt(X, t, wx, w_rec)

    close = functools.partial(np.testing.assert_allclose, rtol=1e-12, atol=1e-12 * np.abs(grad_over_time).max())
    close(result.loss, cost)
    close(result.grads.cell.w_ih[0, 0], wx_grad)
    close(result.grads.cell.w_hh[0, 0], w_rec_grad)
    close(result.grads.cell.b[0], grad_over_time[:, 1:].sum())  # the bias is an input of constant 1
    close(result.state_grads.hidden[:, :, 0], grad_over_time[:, 1:])  # the gradient over time
    close(result.initial_carry_grad.hidden[:, 0], grad_over_time[:, 0])
    close(result.grads.readout.w[0, 0], np.sum(grad_over_time[:, -1] * S[:, -1]))
    # the geometric sequence: δ_k = δ_n w_rec^(n-k)
    powers = w_rec ** np.arange(X.shape[1] - 1, -1, -1)
    close(result.state_grads.hidden[:, :, 0], grad_over_time[:, -1:] * powers)


# ---------------------------------------------------------------- layouts, dtypes, forward


def test_one_sequence_is_a_batch_of_one():
    rng = np.random.default_rng(0)
    cell = rnn_jax.lstm(3)
    params = random_params(cell, rng, 2, 2)
    xs = jnp.asarray(rng.standard_normal((4, 2)))
    carry = rnn_jax.LSTMState(*(jnp.asarray(rng.standard_normal(3)) for _ in range(2)))
    target = jnp.asarray(rng.integers(0, 2, 4))
    one = bptt(cell, params, xs, target, loss="xent", on="every", lengths=3, initial_carry=carry)
    batch = bptt(cell, params, xs[None], target[None], loss="xent", on="every", lengths=jnp.asarray([3]),
                 initial_carry=jax.tree_util.tree_map(lambda leaf: leaf[None], carry))
    assert one.state_grads.hidden.shape == (4, 3) and one.initial_carry_grad.cell.shape == (3,)
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(batch)):
        np.testing.assert_array_equal(a, np.reshape(b, np.shape(a)))


def test_float32_parameters_give_float32_results_close_to_float64():
    rng = np.random.default_rng(1)
    cell = rnn_jax.gru(4)
    params = random_params(cell, rng, 3, 2)
    xs = jnp.asarray(rng.standard_normal((2, 6, 3)))
    target = jnp.asarray(rng.standard_normal((2, 2)))
    exact = bptt(cell, params, xs, target, lengths=jnp.asarray([6, 4]))
    to32 = lambda tree: jax.tree_util.tree_map(lambda leaf: leaf.astype(jnp.float32), tree)
    single = bptt(cell, to32(params), to32(xs), to32(target), lengths=jnp.asarray([6, 4]))
    for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(exact)):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["pascanu-tanh", "lstm"])
def test_forward_stores_the_unrolls_outputs_and_carries(name):
    rng = np.random.default_rng(2)
    cell = CELLS[name](3)
    params = random_params(cell, rng, 2, 1).cell
    xs = jnp.asarray(rng.standard_normal((3, 5, 2)))
    carry = random_carry(cell, rng, 3)
    lengths = jnp.asarray([5, 2, 0])
    traj = forward(cell, params, xs, lengths=lengths, initial_carry=carry)
    _, outputs, carries = rnn_jax.unroll(cell, params, xs, lengths=lengths, initial_carry=carry, return_carries=True)
    np.testing.assert_allclose(traj.outputs, outputs, rtol=1e-13, atol=1e-15)
    for a, b in zip(traj.carries, carries):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(traj.valid, np.arange(5)[None, :] < np.asarray(lengths)[:, None])
    assert len(traj.internals) == 5


# ---------------------------------------------------------------- the reference's own input handling


def test_the_reference_imports_nothing_of_the_code_it_checks():
    """bptt reads its inputs itself: a bug in the unroll's preparation cannot hide in both."""
    import ast
    import pathlib

    import rnn_jax.bptt

    tested = {f"rnn_jax.{name}" for name in ("unroll", "hand_scan", "fused", "linear", "long", "diagnostics")}
    imported = set()
    for node in ast.walk(ast.parse(pathlib.Path(rnn_jax.bptt.__file__).read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    assert not imported & tested, imported & tested


def _close(actual, expected):
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", CELLS)
def test_padding_reverse_and_carry_broadcast_against_each_sequence_run_alone(name):
    """A brute-force check of how bptt reads lengths, reverse order and an (H,) initial carry:
    each sequence cut to its valid steps and run alone (no padding, no mask, no broadcast)
    must give the padded batch's outputs, carries and gradients; a reversed read must be the
    forward read of the flipped sequence; the losses on "last" and "every" must be the
    per-sequence losses averaged as model.loss does (over sequences, over valid steps)."""
    rng = np.random.default_rng(5)
    cell = CELLS[name](3)
    full = random_params(cell, rng, 2, 2)
    params, lengths = full.cell, [4, 2, 0, 1]
    valid = np.arange(4)[None, :] < np.asarray(lengths)[:, None]
    xs = jnp.asarray(np.where(valid[..., None], rng.standard_normal((4, 4, 2)), np.nan))  # NaN padding is never read
    d_outputs = jnp.asarray(rng.standard_normal((4, 4, 3)))
    carry = jax.tree_util.tree_map(lambda leaf: leaf[0], random_carry(cell, rng, 1))  # (H,): every sequence's
    zeros = lambda tree: jax.tree_util.tree_map(np.zeros_like, tree)
    at = lambda tree, *index: jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[index], tree)  # every leaf[index]
    repeat = lambda tree, times: jax.tree_util.tree_map(lambda leaf: np.broadcast_to(leaf, (times,) + leaf.shape), tree)
    for reverse in (False, True):
        traj = forward(cell, params, xs, lengths=lengths, initial_carry=carry, reverse=reverse)
        grads = bptt_outputs(cell, params, xs, d_outputs, lengths=lengths, initial_carry=carry, reverse=reverse)
        summed = zeros(params)
        for b, n in enumerate(lengths):
            after_padding = carry  # reversed, padded steps run first; forward, they keep the last valid carry
            if n:
                alone = forward(cell, params, xs[b, :n], initial_carry=carry, reverse=reverse)
                one = bptt_outputs(cell, params, xs[b, :n], d_outputs[b, :n], initial_carry=carry, reverse=reverse)
                if reverse:
                    _close(alone.outputs[:, ::-1], forward(cell, params, xs[b, n - 1 :: -1], initial_carry=carry).outputs)
                else:
                    after_padding = at(alone.carries, 0, n - 1)
                _close((traj.outputs[b, :n], at(traj.carries, b, slice(0, n))), (alone.outputs[0], at(alone.carries, 0)))
                _close((grads.inputs[b, :n], at(grads.state_grads, b, slice(0, n))), (one.inputs, one.state_grads))
                _close(at(grads.initial_carry, b), one.initial_carry)
                summed = jax.tree_util.tree_map(np.add, summed, one.params)
            else:
                _close(at(grads.initial_carry, b), zeros(carry))
            _close(at(traj.carries, b, slice(n, None)), repeat(after_padding, 4 - n))
            assert not np.any(traj.outputs[b, n:]) and not np.any(np.asarray(grads.inputs)[b, n:])
            # δ after a padded step: none forward (nothing reads it); reversed, that carry is the one fed to the valid steps
            padded_delta = at(grads.initial_carry, b) if reverse else zeros(at(grads.initial_carry, b))
            _close(at(grads.state_grads, b, slice(n, None)), repeat(padded_delta, 4 - n))
        _close(grads.params, summed)

    targets = {"last": jnp.asarray(rng.standard_normal((4, 2))), "every": jnp.asarray(rng.standard_normal((4, 4, 2)))}
    for on, target in targets.items():
        batch = bptt(cell, full, xs, target, on=on, lengths=lengths, initial_carry=carry)
        alone = {n: bptt(cell, full, xs[b, :n], target[b, :n] if on == "every" else target[b], on=on, initial_carry=carry)
                 for b, n in enumerate(lengths) if n}
        weight = {n: (n if on == "every" else 1) / sum(n if on == "every" else 1 for n in alone) for n in alone}
        _close(batch.loss, sum(weight[n] * result.loss for n, result in alone.items()))
        _close(batch.grads, jax.tree_util.tree_map(lambda *g: sum(weight[n] * leaf for n, leaf in zip(alone, g)),
                                                   *(result.grads for result in alone.values())))


# ---------------------------------------------------------------- bad input


def _small_problem():
    cell = rnn_jax.elman(2)
    params = random_params(cell, np.random.default_rng(0), 3, 2)
    return cell, params, jnp.ones((2, 4, 3)), jnp.zeros((2, 2))


def test_bad_arguments_raise_clearly():
    cell, params, xs, target = _small_problem()
    with pytest.raises(ValueError, match="unknown cell kind.*'mystery'.*'elman', 'pascanu', 'lstm', 'gru'"):
        bptt(cell.replace(kind="mystery"), params, xs, target)
    with pytest.raises(ValueError, match="unknown cell kind"):
        forward(cell.replace(kind="mystery"), params.cell, xs)
    with pytest.raises(TypeError, match="expected an rnn_jax Cell"):
        bptt("elman", params, xs, target)
    with pytest.raises(ValueError, match="unknown loss 'mae'"):
        bptt(cell, params, xs, target, loss="mae")
    with pytest.raises(ValueError, match="unknown on 'first'"):
        bptt(cell, params, xs, target, on="first")
    with pytest.raises(TypeError, match="ModelParams"):
        bptt(cell, params.cell, xs, target)
    with pytest.raises(TypeError, match="expected parameters of type GRUParams"):
        bptt(rnn_jax.gru(2), params, xs, target)
    with pytest.raises(ValueError, match="expected 3 features"):
        bptt(cell, params, jnp.ones((2, 4, 5)), target)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 4\]"):
        bptt(cell, params, xs, target, lengths=jnp.asarray([5, 1]))
    with pytest.raises(ValueError, match=r"targets: expected shape \(2, 2\)"):
        bptt(cell, params, xs, jnp.zeros((2, 3)))
    with pytest.raises(TypeError, match="expected an integer array"):
        bptt(cell, params, xs, jnp.zeros(2), loss="xent")
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 2\)"):
        bptt(cell, params, xs, jnp.asarray([0, 2]), loss="xent")
    with pytest.raises(ValueError, match="params.readout: expected w"):
        bptt(cell, params._replace(readout=ReadoutParams(jnp.zeros((3, 2)), jnp.zeros(2))), xs, target)
    with pytest.raises(TypeError, match="traced value"):
        jax.jit(lambda xs: bptt(cell, params, xs, target).loss)(xs)


def test_result_is_a_bptt_result():
    cell, params, xs, target = _small_problem()
    result = bptt(cell, params, xs, target)
    assert isinstance(result, BPTTResult) and isinstance(result.grads, ModelParams)
    assert result.loss.shape == () and result.loss.dtype == jnp.float64


# ---------------------------------------------------------------- the numbers for the record


def _sweep(cases_per_cell=20):
    """Largest relative errors per cell: autodiff over random problems, finite differences over FD_CASES."""
    print(f"{'cell':16s} {'autodiff vs bptt':>18s} {'FD vs bptt':>12s}")
    for name, make in CELLS.items():
        rng = np.random.default_rng(12345)
        worst_auto = 0.0
        for _ in range(cases_per_cell):
            batch, time = int(rng.integers(1, 5)), int(rng.integers(1, 9))
            lengths = jnp.asarray(rng.integers(0, time + 1, batch)) if rng.random() < 0.7 else None
            worst_auto = max(worst_auto, compare_with_autodiff(
                make(int(rng.integers(1, 6))), rng, batch, time, int(rng.integers(1, 5)), int(rng.integers(1, 4)),
                lengths, bool(rng.random() < 0.5), float(rng.choice([0.3, 0.7, 1.5]))))
        worst_fd = max(max(finite_difference_errors(make(case[3]), seed, *case)) for case in FD_CASES.values() for seed in (3, 4))
        print(f"{name:16s} {worst_auto:18.2e} {worst_fd:12.2e}", flush=True)


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    _sweep()
