"""The fused member-batched BPTT equals autodiff of the model's loss (and of Ω) member by member,
and the engine trained through it equals the engine trained through vmap(jax.value_and_grad)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import model
from rnn_jax.repro import fused, regularizer, tasks, train
from rnn_jax._checks import UserValueError
from tests.helpers import CELL_CONFIGS, max_abs_diff

M, B, T, I, H, O = 3, 4, 9, 3, 5, 2
FUSED_CELLS = [name for name in CELL_CONFIGS if name.startswith(("elman", "pascanu"))]
LENGTHS = jnp.array([[9, 4, 0, 1], [9, 9, 9, 9], [3, 8, 2, 9]], jnp.int32)  # full, padded, empty


def _members(cell, seed, scale=0.6):
    """M members' float64 parameters with non-zero biases, drawn per member."""
    keys = jax.random.split(jax.random.key(seed), M + 1)
    params = jax.vmap(lambda k: model.init(k, cell, I, O, dtype=jnp.float64))(keys[:M])
    return jax.tree_util.tree_map(lambda a: a + scale * jax.random.normal(keys[M], a.shape, a.dtype), params)


def _data(loss, on, seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    xs = jax.random.normal(k1, (M, B, T, I), jnp.float64)
    lead = (M, B) if on == "last" else (M, B, T)
    targets = jax.random.randint(k2, lead, 0, O) if loss == "xent" else jax.random.normal(k2, lead + (O,), jnp.float64)
    return xs, targets


def _relative(a, b):
    """Largest |a - b| over every leaf, relative to that leaf's largest |b|."""
    return max(float(jnp.max(jnp.abs(x - y)) / jnp.maximum(jnp.max(jnp.abs(y)), 1e-300))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _autodiff(cell, params, xs, targets, loss, on, lengths):
    def one(p, x, y, n):
        return jax.value_and_grad(lambda q: model.loss(cell, q, x, y, loss=loss, on=on, lengths=n))(p)

    if lengths is None:
        return jax.jit(jax.vmap(lambda p, x, y: one(p, x, y, None)))(params, xs, targets)
    return jax.jit(jax.vmap(one))(params, xs, targets, lengths)


def _fused(cell, params, xs, targets, loss, on, lengths, alpha=None):
    run = lambda p, x, y, n, a: fused.loss_and_grads(cell, p, x, y, loss=loss, on=on, lengths=n, alpha=a)
    return jax.jit(run)(params, xs, targets, lengths, alpha)


# Every cell with two (loss, on, lengths) cases; every case with two cells: each compile costs.
CASES = [("xent", "last", True), ("mse", "every", True), ("mse", "last", True), ("xent", "every", True),
         ("xent", "last", False), ("mse", "every", False)]
GRID = [(cell, *CASES[(2 * i + j) % len(CASES)]) for i, cell in enumerate(FUSED_CELLS) for j in range(2)]


@pytest.mark.parametrize("cell_name,loss,on,with_lengths", GRID)
def test_loss_and_gradients_equal_autodiff_in_float64(cell_name, loss, on, with_lengths):
    cell = CELL_CONFIGS[cell_name](H)
    params = _members(cell, 1)
    xs, targets = _data(loss, on, 2)
    lengths = LENGTHS if with_lengths else None
    res = _fused(cell, params, xs, targets, loss, on, lengths)
    want_loss, want_grads = _autodiff(cell, params, xs, targets, loss, on, lengths)
    assert _relative(res.loss, want_loss) < 1e-10
    assert _relative(res.grads, want_grads) < 1e-10
    assert float(jnp.max(jnp.abs(res.omega))) == 0.0


@pytest.mark.parametrize("cell_name,loss,on", [(c, *CASES[i % 4][:2]) for i, c in enumerate(FUSED_CELLS)])
def test_omega_and_its_gradient_equal_the_regularizer(cell_name, loss, on):
    """Ω, the loss and ∂E/∂θ + α ∂Ω/∂w_hh against rnn_jax.repro.regularizer (autodiff through δ)."""
    cell = CELL_CONFIGS[cell_name](H)
    params = _members(cell, 3)
    alpha = jnp.array([0.5, 2.0, 4.0], jnp.float64)
    xs, targets = _data(loss, on, 4)
    res = _fused(cell, params, xs, targets, loss, on, LENGTHS, alpha)
    want = jax.jit(jax.vmap(lambda p, x, y, n, a: regularizer.loss_and_grad_with_omega(cell, p, x, y, a, loss=loss, on=on, lengths=n)))(
        params, xs, targets, LENGTHS, alpha)
    assert float(jnp.min(res.omega)) > 0  # the regulariser is active in this case
    for got, expected in zip(res, want):
        assert _relative(got, expected) < 1e-10


def test_unbounded_activation_past_the_end_stays_finite():
    """identity/relu cells keep the carry at padded steps: 40 padded steps of a growing state
    (|w_hh| = 3) would overflow float32 and turn a zero cotangent into nan."""
    cell = rnn_jax.elman(H, "identity")
    keys = jax.random.split(jax.random.key(5), 3)
    params = jax.vmap(lambda k: model.init(k, cell, I, O))(keys[:1])
    params = params._replace(cell=params.cell._replace(w_hh=3 * jnp.eye(H, dtype=jnp.float32)[None]))
    xs = jax.random.normal(keys[1], (1, B, 48, I), jnp.float32)
    targets = jax.random.randint(keys[2], (1, B), 0, O)
    lengths = jnp.array([[3, 5, 8, 2]], jnp.int32)
    res = _fused(cell, params, xs, targets, "xent", "last", lengths)
    want_loss, want_grads = _autodiff(cell, params, xs, targets, "xent", "last", lengths)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(res))
    assert _relative(res.grads, want_grads) < 1e-5 and _relative(res.loss, want_loss) < 1e-6


def test_member_of_the_batch_equals_the_member_alone():
    cell = rnn_jax.pascanu(H, "tanh")
    params = _members(cell, 6)
    xs, targets = _data("xent", "every", 7)
    alpha = jnp.full((M,), 2.0, jnp.float64)
    together = _fused(cell, params, xs, targets, "xent", "every", LENGTHS, alpha)
    for i in range(M):
        take = lambda tree: jax.tree_util.tree_map(lambda a: a[i:i + 1], tree)
        alone = _fused(cell, take(params), xs[i:i + 1], targets[i:i + 1], "xent", "every", LENGTHS[i:i + 1], alpha[i:i + 1])
        assert max_abs_diff(take(together), alone) < 1e-13


def test_engine_entry_vmaps_into_groups_and_broadcasts_unbatched_arguments():
    """vmap over 6 members (groups of 3) with the inputs shared: each member's result is its own
    call on one member, which equals autodiff."""
    cell = rnn_jax.elman(H, "sigmoid")
    params = jax.vmap(lambda k: model.init(k, cell, I, O, dtype=jnp.float64))(jax.random.split(jax.random.key(8), 6))
    xs, targets = _data("mse", "last", 9)
    fn = fused.engine_loss_and_grads(cell, "mse", "last", False)
    lengths, alpha = LENGTHS[0], jnp.zeros((), jnp.float64)
    batched = jax.jit(jax.vmap(fn, in_axes=(0, None, None, None, None)))(params, xs[0], targets[0], lengths, alpha)
    alone_fn = jax.jit(fn)
    for i in range(6):
        p = jax.tree_util.tree_map(lambda a: a[i], params)
        alone = alone_fn(p, xs[0], targets[0], lengths, alpha)
        assert max_abs_diff(jax.tree_util.tree_map(lambda a: a[i], batched), alone) < 1e-13
    want_loss, want_grads = _autodiff(cell, params, jnp.broadcast_to(xs[0], (6,) + xs.shape[1:]),
                                      jnp.broadcast_to(targets[0], (6,) + targets.shape[1:]), "mse", "last",
                                      jnp.broadcast_to(lengths, (6, B)))
    assert _relative(batched[2], want_grads) < 1e-10 and _relative(batched[0], want_loss) < 1e-10


@pytest.mark.parametrize("regularize", [False, True])
def test_engine_fused_equals_engine_generic_after_updates(regularize):
    """float32, 25 updates of 6 members on the temporal order task (lengths vary per minibatch):
    the fused engine and the vmap(autodiff) engine agree to float32 rounding."""
    task = tasks.get("temporal_order", min_length=10, max_length=16)
    hp = {"learning_rate": jnp.full(6, 0.1, jnp.float32), "clip": jnp.array([1.0, 0.3, np.inf] * 2, jnp.float32),
          "alpha": jnp.array([0.0, 2.0, 4.0] * 2, jnp.float32)}
    setups = [train.Setup(rnn_jax.elman(12, scheme="basic_tanh"), task, 5, regularize=regularize, engine=engine)
              for engine in ("fused", "generic")]
    fast, slow = [train.train_chunk(setup, hp, train.init_members(setup, range(6), hp), 25) for setup in setups]
    for got, want in zip(jax.tree_util.tree_leaves(fast.params), jax.tree_util.tree_leaves(slow.params)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.stats.loss, slow.stats.loss, rtol=1e-5)
    np.testing.assert_allclose(fast.stats.omega, slow.stats.omega, rtol=1e-4, atol=1e-7)
    assert np.array_equal(fast.stats.clipped, slow.stats.clipped)
    if regularize:
        assert float(np.min(np.asarray(fast.stats.omega))) > 0


def test_supports_and_bad_arguments():
    assert fused.supports(rnn_jax.elman(4, "relu"), loss="xent", on="every")
    assert not fused.supports(rnn_jax.lstm(4), loss="xent", on="last")
    assert not fused.supports(rnn_jax.gru(4), loss="mse", on="last")
    cell = rnn_jax.elman(H)
    params = _members(cell, 0)
    xs, targets = _data("xent", "last", 0)
    with pytest.raises(ValueError, match="expected an elman or pascanu cell"):
        fused.loss_and_grads(rnn_jax.gru(H), params, xs, targets, loss="xent")
    with pytest.raises(ValueError, match=r"xs: expected rank 4"):
        fused.loss_and_grads(cell, params, xs[0], targets, loss="xent")
    with pytest.raises(ValueError, match=r"params.cell.w_hh: expected shape \(3, 5, 5\)"):
        fused.loss_and_grads(cell, params._replace(cell=params.cell._replace(w_hh=params.cell.w_hh[:2])), xs, targets, loss="xent")
    with pytest.raises(TypeError, match="expected dtype float32 like xs"):
        fused.loss_and_grads(cell, params, xs.astype(jnp.float32), targets, loss="xent")
    with pytest.raises(ValueError, match=r"targets: expected shape \(3, 4, 9\)"):
        fused.loss_and_grads(cell, params, xs, targets, loss="xent", on="every")
    with pytest.raises(ValueError, match=r"lengths: expected shape \(3, 4\)"):
        fused.loss_and_grads(cell, params, xs, targets, loss="xent", lengths=LENGTHS[0])
    with pytest.raises(ValueError, match="fused path: expected an elman or pascanu cell"):
        fused.engine_loss_and_grads(rnn_jax.lstm(H), "xent", "last", False)


def test_setup_engine_is_checked():
    task = tasks.get("temporal_order", min_length=10, max_length=11)
    hp = {"learning_rate": jnp.full(1, 0.1), "clip": jnp.full(1, 1.0)}
    with pytest.raises(UserValueError, match="unknown Setup.engine 'fast'; expected one of 'auto', 'fused', 'generic'"):
        train.init_members(train.Setup(rnn_jax.elman(4), task, 2, engine="fast"), [0], hp)
    with pytest.raises(UserValueError, match="Setup.engine='fused': the fused path takes elman and pascanu cells only"):
        train.init_members(train.Setup(rnn_jax.lstm(4), task, 2, engine="fused"), [0], hp)
