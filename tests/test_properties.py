"""Property-based tests (hypothesis) of the unroll's invariants, across every cell.

Shapes are drawn from small ranges so that the number of distinct compilations stays low.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnn_jax
from tests.helpers import CELL_CONFIGS, max_abs_diff, random_params

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    name = draw(st.sampled_from(sorted(CELL_CONFIGS)))
    batch, time = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    lengths = np.array(draw(st.lists(st.integers(0, time), min_size=batch, max_size=batch)))
    seed = draw(st.integers(0, 2**16))
    cell = CELL_CONFIGS[name](3)
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = random_params(cell, 2, k1)
    xs = jax.random.normal(k2, (batch, time, 2), jnp.float64)
    return cell, params, xs, lengths, draw(st.booleans())


@SETTINGS
@given(problems())
def test_unroll_equals_python_loop(problem):
    cell, params, xs, lengths, reverse = problem
    a = rnn_jax.unroll(cell, params, xs, lengths=lengths, reverse=reverse)
    b = rnn_jax.python_unroll(cell, params, xs, lengths=lengths, reverse=reverse)
    assert max_abs_diff(a, b) < 1e-12


@SETTINGS
@given(problems(), st.floats(-1e6, 1e6) | st.just(float("nan")) | st.just(float("inf")))
def test_anything_in_a_padded_step_changes_nothing(problem, garbage):
    cell, params, xs, lengths, reverse = problem
    padded = jnp.where(jnp.arange(xs.shape[1])[None, :, None] >= lengths[:, None, None], garbage, xs)
    f = lambda p, x: jnp.sum(rnn_jax.unroll(cell, p, x, lengths=lengths, reverse=reverse)[1] ** 2)
    assert max_abs_diff(rnn_jax.unroll(cell, params, xs, lengths=lengths, reverse=reverse),
                        rnn_jax.unroll(cell, params, padded, lengths=lengths, reverse=reverse)) == 0.0
    assert max_abs_diff(jax.grad(f)(params, xs), jax.grad(f)(params, padded)) == 0.0


@SETTINGS
@given(problems())
def test_reversing_twice_is_the_identity(problem):
    """Reading the reversed sequence backwards is reading the sequence forwards."""
    cell, params, xs, _, _ = problem
    forward = rnn_jax.unroll(cell, params, xs)
    twice = rnn_jax.unroll(cell, params, xs[:, ::-1], reverse=True)
    assert max_abs_diff(forward[0], twice[0]) < 1e-12
    assert max_abs_diff(forward[1], twice[1][:, ::-1]) < 1e-12


@SETTINGS
@given(problems())
def test_vmapped_equals_looped(problem):
    cell, params, xs, lengths, reverse = problem
    # vmap over a stack of parameter sets (members), each on the same data
    stack = jax.tree_util.tree_map(lambda a: jnp.stack([a, 0.5 * a, -a]), params)
    vm = jax.vmap(lambda p: rnn_jax.unroll(cell, p, xs, lengths=lengths, reverse=reverse))(stack)
    for i in range(3):
        one = rnn_jax.unroll(cell, jax.tree_util.tree_map(lambda a: a[i], stack), xs, lengths=lengths, reverse=reverse)
        assert max_abs_diff(jax.tree_util.tree_map(lambda a: a[i], vm), one) < 1e-12
