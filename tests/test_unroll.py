"""The scanned unroll against the Python loop, truncation, reversal, transformations and recompilation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from tests.helpers import CELL_CONFIGS, max_abs_diff, random_params

B, T, I, H = 3, 6, 2, 4

OPTION_SETS = {
    "plain": dict(),
    "lengths": dict(lengths=np.array([6, 2, 0])),
    "reverse+lengths": dict(reverse=True, lengths=np.array([4, 6, 1])),
    "hoisted+unroll3": dict(project_inputs=True, unroll=3),
    "inside+remat": dict(project_inputs=False, remat=True),
    "time_major": dict(time_major=True),
}


def _data(cell, key, dtype=jnp.float64):
    k1, k2 = jax.random.split(key)
    params = random_params(cell, I, k1, dtype)
    xs = jax.random.normal(k2, (B, T, I), dtype)
    return params, xs


@pytest.mark.parametrize("options", sorted(OPTION_SETS))
@pytest.mark.parametrize("name", sorted(CELL_CONFIGS))
def test_scan_equals_python_loop(name, options):
    cell = CELL_CONFIGS[name](H)
    params, xs = _data(cell, jax.random.key(0))
    kw = dict(OPTION_SETS[options])
    if kw.get("time_major"):
        xs = jnp.swapaxes(xs, 0, 1)
    loop_kw = {k: v for k, v in kw.items() if k not in ("project_inputs", "unroll", "remat")}
    c1, y1, s1 = rnn_jax.unroll(cell, params, xs, return_carries=True, **kw)
    c2, y2, s2 = rnn_jax.python_unroll(cell, params, xs, return_carries=True, **loop_kw)
    assert max_abs_diff((c1, y1, s1), (c2, y2, s2)) < 1e-13
    chex.assert_trees_all_equal_shapes(s1, s2)


@pytest.mark.parametrize("name", sorted(CELL_CONFIGS))
def test_padding_changes_nothing_and_final_carry_is_last_valid(name):
    """Running a padded batch equals running each sequence truncated to its length, alone."""
    cell = CELL_CONFIGS[name](H)
    params, xs = _data(cell, jax.random.key(1))
    lengths = np.array([5, 1, 6])
    garbage = xs.at[0, 5:].set(1e3).at[1, 1:].set(-1e3)  # padding contents must not matter
    for reverse in (False, True):
        carry, ys = rnn_jax.unroll(cell, params, garbage, lengths=lengths, reverse=reverse)
        for b, n in enumerate(lengths):
            c_alone, y_alone = rnn_jax.unroll(cell, params, xs[b, :n], reverse=reverse)
            np.testing.assert_allclose(ys[b, :n], y_alone, rtol=1e-12, atol=1e-14)
            np.testing.assert_array_equal(ys[b, n:], 0.0)
            for got, want in zip(carry, c_alone):
                np.testing.assert_allclose(got[b], want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["elman-tanh", "lstm", "gru"])
def test_reverse_equals_forward_on_flipped_sequence(name):
    cell = CELL_CONFIGS[name](H)
    params, xs = _data(cell, jax.random.key(2))
    c_rev, y_rev = rnn_jax.unroll(cell, params, xs, reverse=True)
    c_fwd, y_fwd = rnn_jax.unroll(cell, params, xs[:, ::-1])
    assert max_abs_diff((c_rev, y_rev), (c_fwd, y_fwd[:, ::-1])) < 1e-13


@pytest.mark.parametrize("name", ["elman-tanh", "pascanu-sigmoid", "lstm", "gru"])
def test_unbatched_vmap_and_batched_agree(name):
    cell = CELL_CONFIGS[name](H)
    params, xs = _data(cell, jax.random.key(3))
    lengths = jnp.array([6, 3, 1])
    batched = rnn_jax.unroll(cell, params, xs, lengths=lengths)
    vmapped = jax.vmap(lambda x, n: rnn_jax.unroll(cell, params, x, lengths=n))(xs, lengths)
    assert max_abs_diff(batched, vmapped) < 1e-13
    single = rnn_jax.unroll(cell, params, xs[1], lengths=3)
    assert max_abs_diff(single, jax.tree_util.tree_map(lambda a: a[1], batched)) < 1e-13


@pytest.mark.parametrize("name", ["elman-tanh", "lstm", "gru"])
def test_initial_carry_given_and_broadcast(name):
    cell = CELL_CONFIGS[name](H)
    params, xs = _data(cell, jax.random.key(4))
    h0 = cell.carry_type(*[jnp.linspace(-0.5, 0.5, H) for _ in cell.carry_type._fields])
    broadcast = rnn_jax.unroll(cell, params, xs, initial_carry=h0)
    full = cell.carry_type(*[jnp.tile(leaf, (B, 1)) for leaf in h0])
    explicit = rnn_jax.python_unroll(cell, params, xs, initial_carry=full)
    assert max_abs_diff(broadcast, explicit) < 1e-13
    zero = rnn_jax.unroll(cell, params, xs)
    assert max_abs_diff(broadcast, zero) > 1e-3  # the initial state matters
    # a learnable initial state: its gradient is non-zero and matches finite differences
    f = lambda h: jnp.sum(rnn_jax.unroll(cell, params, xs, initial_carry=h)[1] ** 2)
    g = jax.grad(f)(h0)
    eps, direction = 1e-6, cell.carry_type(*[jnp.ones(H) for _ in h0])
    plus = cell.carry_type(*[a + eps * d for a, d in zip(h0, direction)])
    minus = cell.carry_type(*[a - eps * d for a, d in zip(h0, direction)])
    fd = (f(plus) - f(minus)) / (2 * eps)
    np.testing.assert_allclose(sum(float(jnp.sum(x)) for x in g), float(fd), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", ["elman-tanh", "lstm", "gru"])
def test_jit_and_grad_in_both_dtypes(name, dtype):
    cell = CELL_CONFIGS[name](H)
    params, xs = _data(cell, jax.random.key(5), dtype)
    targets = jnp.ones((B, 2), dtype)
    mp = rnn_jax.ModelParams(params, rnn_jax.readout_init(jax.random.key(6), H, 2, dtype=dtype))
    loss = lambda p: rnn_jax.model.loss(cell, p, xs, targets, lengths=jnp.array([6, 4, 2]))
    eager = jax.value_and_grad(loss)(mp)
    jitted = jax.jit(jax.value_and_grad(loss))(mp)
    tol = 1e-5 if dtype == jnp.float32 else 1e-12
    assert max_abs_diff(eager, jitted) < tol
    for leaf in jax.tree_util.tree_leaves(jitted):
        assert leaf.dtype == dtype


def test_remat_and_hoisting_give_the_same_gradients():
    cell = rnn_jax.lstm(H)
    params, xs = _data(cell, jax.random.key(7))
    f = lambda p, **kw: jnp.sum(rnn_jax.unroll(cell, p, xs, **kw)[1] ** 2)
    g0 = jax.grad(f)(params)
    for kw in (dict(remat=True), dict(project_inputs=True), dict(project_inputs=False, unroll=2)):
        assert max_abs_diff(g0, jax.grad(lambda p: f(p, **kw))(params)) < 1e-12


def test_second_call_with_same_shapes_does_not_recompile():
    cell = rnn_jax.gru(H)
    params, xs = _data(cell, jax.random.key(8), jnp.float32)
    traces = []

    @jax.jit
    def run(p, x):
        traces.append(1)
        return rnn_jax.unroll(cell, p, x)[1]

    run(params, xs).block_until_ready()
    run(params, xs + 1.0).block_until_ready()
    assert len(traces) == 1
    run(params, xs[:, :3]).block_until_ready()  # a new length is a new shape: one more trace
    assert len(traces) == 2


def test_traced_lengths_are_clipped_into_range():
    """Under jit, lengths cannot be checked; they are clipped to [0, T] (documented behaviour)."""
    cell = rnn_jax.elman(H)
    params, xs = _data(cell, jax.random.key(9))
    f = jax.jit(lambda n: rnn_jax.unroll(cell, params, xs, lengths=n))
    over = f(jnp.array([99, -5, 6]))
    clipped = rnn_jax.unroll(cell, params, xs, lengths=np.array([6, 0, 6]))
    assert max_abs_diff(over, clipped) == 0.0
