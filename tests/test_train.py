"""The training engine: vmapped members equal members trained alone, divergence is isolated,
per-member hyperparameters are honoured, and success stops a member."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnn_jax
from rnn_jax import model
from rnn_jax.repro import tasks, train
from tests.helpers import max_abs_diff


def _setup(**kw):
    task = tasks.get("adding", min_length=10, max_length=12)
    base = dict(cell=rnn_jax.elman(8, scheme="basic_tanh"), task=task, batch_size=8, eval_size=64, eval_batch_size=32)
    base.update(kw)
    return train.Setup(**base)


SETUP = None


def _shared_setup():
    """One setup object for the tests that need no special cell: jit caches on its identity."""
    global SETUP
    if SETUP is None:
        SETUP = _setup()
    return SETUP


def _hp(**values):
    return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}


def test_member_of_a_vmapped_sweep_equals_the_same_seed_trained_alone():
    setup = _setup(regularize=True)
    hp = _hp(learning_rate=[0.05, 0.1, 0.2], clip=[1.0, 0.5, 1.0], alpha=[0.0, 2.0, 4.0])
    together = train.train_chunk(setup, hp, train.init_members(setup, [3, 4, 5], hp), 30)
    for i, seed in enumerate([3, 4, 5]):
        hp_i = {k: v[i:i + 1] for k, v in hp.items()}
        alone = train.train_chunk(setup, hp_i, train.init_members(setup, [seed], hp_i), 30)
        # float32, 30 updates: vmapped and single programs may round differently (stated tolerance)
        assert max_abs_diff(jax.tree_util.tree_map(lambda a: a[i], together.params),
                            jax.tree_util.tree_map(lambda a: a[0], alone.params)) < 1e-5


def test_train_step_is_the_hand_written_sgd_update():
    """One engine step = sample the member's minibatch, gradient by jax.grad, clip, SGD: rebuilt by hand."""
    setup = _shared_setup()
    hp = _hp(learning_rate=[0.3], clip=[0.05])
    state = train.init_members(setup, [7], hp)
    after = train.train_chunk(setup, hp, state, 1)
    params = jax.tree_util.tree_map(lambda a: a[0], state.params)
    _, k_batch = jax.random.split(state.key[0])
    batch = setup.task.sample(k_batch, 8, setup.steps)
    g = jax.grad(lambda p: model.loss(setup.cell, p, batch.inputs, batch.targets, loss="mse", on="last",
                                      lengths=tasks.lengths(batch)))(params)
    norm = float(optax.tree.norm(g))
    assert norm > 0.05  # the threshold bites in this case
    want = jax.tree_util.tree_map(lambda p, d: p - 0.3 * d * (0.05 / norm), params, g)
    assert max_abs_diff(want, jax.tree_util.tree_map(lambda a: a[0], after.params)) < 1e-6
    assert int(after.stats.clipped[0]) == 1 and int(after.step[0]) == 1


def test_exploding_member_is_frozen_with_finite_parameters_while_others_go_on():
    setup = _setup(cell=rnn_jax.elman(8, "relu"))
    hp = _hp(learning_rate=[0.05, 1e6, 0.05], clip=[np.inf, np.inf, np.inf])
    state = train.init_members(setup, [0, 1, 2], hp, init_scale=jnp.array([1.0, 30.0, 1.0]))
    state = train.train_chunk(setup, hp, state, 40)
    status = np.asarray(state.status)
    assert status.tolist() == [train.RUNNING, train.DIVERGED, train.RUNNING]
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(state.params))
    steps = np.asarray(state.step)
    assert steps[0] == steps[2] == 40 and steps[1] < 40


def test_evaluation_marks_success_and_freezes_solved_members():
    setup = _shared_setup()
    hp = _hp(learning_rate=[0.1], clip=[1.0])
    state = train.init_members(setup, [0], hp)
    # check the criterion itself: with a threshold of 1.01 every model passes; a solved member
    # then receives no update.
    easy = setup._replace(task=setup.task._replace(success_threshold=1.01))
    state = train.evaluate_members(easy, state)
    assert np.asarray(state.status).tolist() == [train.SOLVED]
    frozen = train.train_chunk(setup, hp, state, 1)
    assert max_abs_diff(frozen.params, state.params) == 0.0
    errors = np.asarray(state.error)
    assert np.all((errors >= 0) & (errors <= 1))


def test_bad_hparams_are_refused():
    setup = _setup(regularize=True)
    import pytest

    with pytest.raises(ValueError, match=r"expected 2 values per member .* got lengths"):
        train.init_members(setup, [0, 1], _hp(learning_rate=[0.1, 0.1, 0.1], clip=[1.0, 1.0, 1.0], alpha=[0, 0, 0]))
    with pytest.raises(ValueError, match=r"regularize=True needs an 'alpha' entry"):
        train.init_members(setup, [0], _hp(learning_rate=[0.1], clip=[1.0]))
