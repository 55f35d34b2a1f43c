"""Lengths drawn per update (issue 14): the draw is uniform over the task's range and shared by the
members, an update trains on exactly the drawn length, and the fused pass's loops over the longest
valid length ignore every padded step (autodiff of the truncated problem is the reference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import model
from rnn_jax.repro import fused, tasks, train
from rnn_jax.repro.tasks.base import lengths as batch_lengths

M, B, T, I, O = 2, 3, 12, 3, 4


def test_drawn_lengths_are_uniform_over_the_range_and_depend_on_the_update_count_only():
    from scipy import stats

    setup = train.Setup(cell=rnn_jax.elman(4), task=tasks.get("temporal_order", min_length=50, max_length=200),
                        batch_size=2)
    draws = np.asarray(jax.jit(jax.vmap(lambda s: train.minibatch_length(setup, s)))(jnp.arange(30_000)))
    assert draws.min() >= 50 and draws.max() <= 199
    counts = np.bincount(draws - 50, minlength=150)
    assert stats.chisquare(counts).pvalue > 1e-3  # uniform over the 150 lengths [50, 200)
    # serially uncorrelated: consecutive draws
    assert abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]) < 0.03
    other = train.Setup(**dict(setup._asdict(), length_seed=1))
    again = np.asarray(jax.vmap(lambda s: train.minibatch_length(other, s))(jnp.arange(200)))
    assert not np.array_equal(again, draws[:200])  # another length_seed, another sequence
    single = train.Setup(**dict(setup._asdict(), task=tasks.get("temporal_order", min_length=30, max_length=30)))
    assert int(train.minibatch_length(single, 7)) == 30


def test_a_sample_with_a_given_nominal_length_masks_exactly_that_length():
    task = tasks.get("temporal_order", min_length=20, max_length=40)
    for n in (20, 27, 39):
        batch = task.sample(jax.random.key(1), 5, nominal_length=n)
        assert batch.inputs.shape == (5, 39, 6)
        np.testing.assert_array_equal(np.asarray(batch.mask.sum(axis=1)), n)
        assert float(jnp.abs(batch.inputs[:, n:]).sum()) == 0.0
    with pytest.raises(ValueError, match=r"expected a length in \[20, 39\].*got 40"):
        task.sample(jax.random.key(1), 5, nominal_length=40)
    with pytest.raises(TypeError, match="integer scalar"):
        task.sample(jax.random.key(1), 5, nominal_length=25.0)


def _members(cell, seed):
    keys = jax.random.split(jax.random.key(seed), M + 1)
    params = jax.vmap(lambda k: model.init(k, cell, I, O, dtype=jnp.float64))(keys[:M])
    return jax.tree_util.tree_map(lambda a: a + 0.5 * jax.random.normal(keys[M], a.shape, a.dtype), params)


@pytest.mark.parametrize("kind,activation", [("elman", "tanh"), ("elman", "relu"), ("pascanu", "sigmoid")])
@pytest.mark.parametrize("on", ["last", "every"])
def test_fused_loops_over_the_longest_length_and_ignore_every_padded_step(kind, activation, on):
    cell = rnn_jax.make(kind, 5, activation=activation)
    params = _members(cell, 0)
    lengths = jnp.array([[7, 3, 0], [5, 7, 6]], jnp.int32)  # the longest is 7 < T = 12: the loops stop there
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    clean = jax.random.normal(k1, (M, B, T, I), jnp.float64)
    valid = jnp.arange(T, dtype=jnp.int32)[None, None, :] < lengths[..., None]
    clean = jnp.where(valid[..., None], clean, 0.0)
    # padded steps hold garbage: large values before the longest length, NaN from it on (never read)
    garbage = jnp.where(valid[..., None], clean, 50.0 * jax.random.normal(k3, clean.shape, jnp.float64))
    garbage = garbage.at[:, :, 7:].set(jnp.nan)
    lead = (M, B) if on == "last" else (M, B, T)
    targets = jax.random.randint(k2, lead, 0, O)
    run = jax.jit(lambda p, x, y, n: fused.loss_and_grads(cell, p, x, y, loss="xent", on=on, lengths=n))
    got = run(params, garbage, targets, lengths)  # lengths traced: the loops' trip count is too
    short = 7  # the reference: autodiff of the model's loss on the problem cut at the longest length
    ref_targets = targets if on == "last" else targets[:, :, :short]

    def one(p, x, y, n):
        return jax.value_and_grad(lambda q: model.loss(cell, q, x, y, loss="xent", on=on, lengths=n))(p)

    value, grads = jax.vmap(one)(params, clean[:, :, :short], ref_targets, lengths)
    np.testing.assert_allclose(got.loss, value, rtol=1e-11)
    for a, b in zip(jax.tree_util.tree_leaves(got.grads), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("regularize", [False, True])
def test_a_range_of_one_value_gives_the_fixed_length_gradients(regularize):
    cell = rnn_jax.elman(5, "tanh")
    params = _members(cell, 2)
    xs = jax.random.normal(jax.random.key(3), (M, B, T, I), jnp.float64)
    targets = jax.random.randint(jax.random.key(4), (M, B), 0, O)
    alpha = jnp.array([0.0, 4.0]) if regularize else None
    fixed = fused.loss_and_grads(cell, params, xs, targets, loss="xent", alpha=alpha)
    full = fused.loss_and_grads(cell, params, xs, targets, loss="xent", alpha=alpha,
                                lengths=jnp.full((M, B), T, jnp.int32))
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(fixed)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_an_engine_update_is_sgd_on_a_minibatch_of_the_drawn_length():
    """One engine update rebuilt by hand: the member's minibatch at the length drawn for update 0,
    cut to that length, its gradient by jax.grad of the model's loss, one SGD step."""
    task = tasks.get("temporal_order", min_length=10, max_length=30)
    setup = train.Setup(cell=rnn_jax.elman(6, scheme="basic_tanh"), task=task, batch_size=4, dtype=jnp.float64,
                        make_optimizer=lambda hp: __import__("optax").sgd(hp["learning_rate"]))
    hp = {"learning_rate": jnp.array([0.3], jnp.float64), "clip": jnp.array([jnp.inf], jnp.float64)}
    state = train.init_members(setup, [5], hp)
    after = train.train_chunk(setup, hp, state, 1)
    n = int(train.minibatch_length(setup, 0))
    _, k_batch = jax.random.split(state.key[0])
    batch = task.sample(k_batch, 4, nominal_length=n)
    assert int(batch_lengths(batch).max()) == n < task.max_steps
    params = jax.tree_util.tree_map(lambda a: a[0], state.params)
    grads = jax.grad(lambda p: model.loss(setup.cell, p, batch.inputs[:, :n].astype(jnp.float64), batch.targets,
                                          loss="xent", on="last"))(params)
    want = jax.tree_util.tree_map(lambda p, g: p - 0.3 * g, params, grads)
    for a, b in zip(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a: a[0], after.params)),
                    jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
