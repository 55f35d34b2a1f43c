"""The optimizers against hand computations, the tutorials' own loops, and optax.

References used here, each written independently of ``rnn_jax.optim``:
  * NumPy transcriptions of the tutorials' update loops (the teacher/student
    tutorial's ``my_rnn.py`` momentum with its epoch switch-over; Roelants' "How to
    implement a recurrent neural network" Rprop− with its BPTT gradient);
  * the paper's Algorithm 1 and the original code's NaN guard (``RNN.py``) by hand;
  * optax's own transforms (``sgd``, ``trace``, ``clip_by_global_norm``, ``rprop``,
    ``apply_if_finite``), bit for bit where ``rnn_jax.optim`` restates them;
  * hand-unrolled sequences of optax's iRprop− (to pin down how its path differs).
"""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_jax import ElmanParams, ModelParams, ReadoutParams, optim


# ---------------------------------------------------------------- fixtures


def model_params(rng, dtype=np.float64, scale=1.0, hidden=4, inputs=3, outputs=2):
    """A ModelParams tree with the field names the training engine uses."""
    draw = lambda *shape: jnp.asarray(scale * rng.normal(size=shape), dtype)
    return ModelParams(
        cell=ElmanParams(w_ih=draw(inputs, hidden), w_hh=draw(hidden, hidden), b=draw(hidden)),
        readout=ReadoutParams(w=draw(hidden, outputs), b=draw(outputs)),
    )


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def assert_trees_equal(a, b):
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def np_global_norm(tree):
    return np.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in leaves(tree)))


def test_docstring_examples_run():
    result = doctest.testmod(optim, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 20 and result.failed == 0


# ---------------------------------------------------------------- SGD and momentum


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_msgd_is_minus_learning_rate_times_gradient(dtype):
    rng = np.random.default_rng(0)
    params, grads = model_params(rng, dtype), model_params(rng, dtype)
    tx = optim.msgd(0.01)
    updates, _ = tx.update(grads, tx.init(params), params)
    for u, g in zip(leaves(updates), leaves(grads)):
        assert u.dtype == dtype
        np.testing.assert_array_equal(u, dtype(-0.01) * g)


def tutorial_momentum_updates(grads, lr, updates_per_epoch, switchover, initial=0.5, final=0.9):
    """The teacher/student tutorial's ``my_rnn.py``: ``gW = mom * gW - lr * g; W += gW`` with its epoch rule."""
    velocity, steps = np.zeros_like(grads[0]), []
    for n, g in enumerate(grads):
        e = n // updates_per_epoch
        mom = final if e > switchover else initial
        velocity = mom * velocity - lr * g
        steps.append(velocity.copy())
    return steps


def test_teacher_student_takes_the_tutorial_momentum_steps_and_switches_after_epoch_switchover():
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=3) for _ in range(12)]
    tx = optim.teacher_student(0.001, updates_per_epoch=2, momentum_switchover=2)  # 0.5 for epochs 0..2 = 6 updates
    state = tx.init(jnp.zeros(3))
    ours = []
    for g in grads:
        u, state = tx.update(jnp.asarray(g), state)
        ours.append(np.asarray(u))
    want = tutorial_momentum_updates(grads, 0.001, updates_per_epoch=2, switchover=2)
    np.testing.assert_allclose(np.array(ours), np.array(want), rtol=1e-13, atol=1e-18)
    # the switch happens exactly at update 6: 0.5 before, 0.9 from then on, recovered from the steps
    mus = [(ours[t] + 0.001 * grads[t]) / ours[t - 1] for t in range(1, 12)]
    np.testing.assert_allclose(np.array(mus), [[0.5] * 3] * 5 + [[0.9] * 3] * 6, rtol=1e-10)
    # the seed's defaults: 500 updates per epoch, epochs 0..5 at 0.5 => 3000 updates
    schedule = optim.switchover_momentum(0.5, 0.9, switchover=(5 + 1) * 500)
    assert [float(schedule(jnp.int32(t))) for t in (0, 2999, 3000, 10**6)] == [0.5, 0.5, 0.9, 0.9]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_and_momentum_match_optax_bit_for_bit(dtype):
    rng = np.random.default_rng(2)
    params = {"a": jnp.asarray(rng.normal(size=(2, 3)), dtype), "b": jnp.asarray(rng.normal(size=4), dtype)}
    schedule = optim.switchover_momentum(0.3, 0.8, switchover=3)
    pairs = [  # ours, optax's: plain, constant momentum, scheduled momentum, scheduled learning rate
        (optim.sgd(0.1), optax.sgd(0.1)),
        (optim.sgd(0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
        (optim.sgd(0.1, momentum=schedule),
         optax.chain(optax.inject_hyperparams(optax.trace)(decay=schedule), optax.scale_by_learning_rate(0.1))),
        (optim.sgd(optax.exponential_decay(0.1, 2, 0.5)), optax.sgd(optax.exponential_decay(0.1, 2, 0.5))),
    ]
    for ours, theirs in pairs:
        s_ours, s_theirs = ours.init(params), theirs.init(params)
        for _ in range(6):
            g = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), dtype), params)
            u_ours, s_ours = ours.update(g, s_ours)
            u_theirs, s_theirs = theirs.update(g, s_theirs, params)
            assert_trees_equal(u_ours, u_theirs)
            assert all(u.dtype == dtype for u in leaves(u_ours))


# ---------------------------------------------------------------- clipping


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_by_global_norm_rescales_above_the_threshold_and_leaves_the_rest(dtype):
    rng = np.random.default_rng(3)
    grads = model_params(rng, dtype)
    norm = np_global_norm(grads)
    tx = optim.clip_by_global_norm(norm / 4)
    clipped, _ = tx.update(grads, tx.init(grads))
    for c, g in zip(leaves(clipped), leaves(grads)):  # Algorithm 1: g * threshold / ||g||
        np.testing.assert_allclose(c, g.astype(np.float64) * 0.25, rtol=2e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_allclose(np_global_norm(clipped), norm / 4, rtol=2e-6 if dtype == np.float32 else 1e-14)
    for threshold in (norm * 1.01, np.inf):  # below the threshold: untouched, bit for bit
        tx = optim.clip_by_global_norm(threshold)
        assert_trees_equal(tx.update(grads, tx.init(grads))[0], grads)
    for threshold in (norm / 4, norm, norm * 1.01, np.inf):  # optax's rule, bit for bit
        theirs = optax.clip_by_global_norm(jnp.asarray(threshold, dtype))
        assert_trees_equal(optim.clip_by_global_norm(threshold).update(grads, optax.EmptyState())[0],
                           theirs.update(grads, optax.EmptyState())[0])


def test_counted_clipping_counts_and_matches_optax():
    rng = np.random.default_rng(4)
    base = model_params(rng)
    unit = jax.tree.map(lambda x: x / np_global_norm(base), base)
    norms = [0.5, 2.0, 3.0, 0.9, 1.5]
    tx, ref = optim.clip_by_global_norm_counted(1.0), optax.clip_by_global_norm(1.0)
    state = tx.init(base)
    for k, n in enumerate(norms):
        g = jax.tree.map(lambda x: n * x, unit)
        updates, state = tx.update(g, state)
        assert_trees_equal(updates, ref.update(g, optax.EmptyState())[0])
        np.testing.assert_allclose(float(state.last_norm), np_global_norm(g), rtol=1e-14)
        assert int(state.num_steps) == k + 1
    assert int(state.num_clipped) == 3  # 2.0, 3.0 and 1.5 exceed 1
    assert optim.counters(optim.msgd_c(0.01, 1.0).init(base)).keys() == {"num_steps", "num_clipped", "last_norm"}


# ---------------------------------------------------------------- Rprop


def tutorial_rprop(grad_fn, w, iterations, eta_p=1.2, eta_n=0.5):
    """Roelants' counting tutorial's loop (``update_rprop`` plus the weight update), minus signs restored."""
    W = list(w)
    W_delta = [0.001] * len(W)
    W_sign = [0] * len(W)
    path = [list(W)]
    for _ in range(iterations):
        W_grads = grad_fn(W)
        W_prev_sign, W_sign = W_sign, np.sign(W_grads)
        for i, _ in enumerate(W):
            if W_sign[i] == W_prev_sign[i]:
                W_delta[i] *= eta_p
            else:
                W_delta[i] *= eta_n
        for i, _ in enumerate(W):
            W[i] -= W_sign[i] * W_delta[i]
        path.append(list(W))
    return np.array(path)


def run_optax_path(tx, grad_fn, params, iterations):
    def body(carry, _):
        p, s = carry
        u, s = tx.update(grad_fn(p), s, p)
        p = optax.apply_updates(p, u)
        return (p, s), p

    _, path = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), None, length=iterations))(params)
    return path


def test_rprop_minus_reproduces_the_tutorial_loop_on_a_quadratic():
    rng = np.random.default_rng(5)
    a, c = rng.uniform(0.5, 3.0, size=5), rng.normal(size=5)
    start = rng.normal(size=5) * 3
    # two leaves of different shapes, flattened in the same order as the tutorial's weight list
    to_tree = lambda v: {"m": v[:4].reshape(2, 2), "v": v[4:]}
    a_t, c_t = to_tree(jnp.asarray(a)), to_tree(jnp.asarray(c))
    grad = lambda p: jax.tree.map(lambda w, aa, cc: aa * (w - cc), p, a_t, c_t)
    path = run_optax_path(optim.rprop_minus(), grad, to_tree(jnp.asarray(start)), 300)
    ours = np.concatenate([np.asarray(path["m"]).reshape(300, 4), np.asarray(path["v"])], axis=1)
    want = tutorial_rprop(lambda W: tuple(a * (np.array(W) - c)), start, 300)
    np.testing.assert_array_equal(ours, want[1:])
    np.testing.assert_allclose(ours[-1], c, atol=1e-3)


def counting_data():
    """The tutorial's data set: np.random.seed(1), 20 rounded-uniform binary sequences of length 10."""
    rng = np.random.RandomState(1)
    X = np.zeros((20, 10))
    for row in range(20):
        X[row, :] = np.around(rng.rand(10)).astype(int)
    return X, np.sum(X, axis=1)


def tutorial_counting_gradient(X, t, W):
    """The tutorial's forward_states / output_gradient / backward_gradient."""
    wx, wRec = W
    S = np.zeros((X.shape[0], X.shape[1] + 1))
    for k in range(X.shape[1]):
        S[:, k + 1] = X[:, k] * wx + S[:, k] * wRec
    grad_over_time = np.zeros((X.shape[0], X.shape[1] + 1))
    grad_over_time[:, -1] = 2.0 * (S[:, -1] - t) / X.shape[0]
    wx_grad = wRec_grad = 0
    for k in range(X.shape[1], 0, -1):
        wx_grad += np.sum(grad_over_time[:, k] * X[:, k - 1])
        wRec_grad += np.sum(grad_over_time[:, k] * S[:, k - 1])
        grad_over_time[:, k - 1] = grad_over_time[:, k] * wRec
    return (wx_grad, wRec_grad)


def counting_loss(w, X, t):
    """Linear RNN s_k = s_{k-1} w_rec + x_k w_x, cost = mean over sequences of (s_n - t)^2."""
    s = jnp.zeros(X.shape[0], w.dtype)
    for k in range(X.shape[1]):
        s = s * w[1] + X[:, k] * w[0]
    return jnp.mean((s - t) ** 2)


def test_rprop_minus_reproduces_the_tutorial_on_the_counting_rnn():
    X, t = counting_data()
    Xj, tj = jnp.asarray(X), jnp.asarray(t)
    grad = jax.grad(lambda w: counting_loss(w, Xj, tj))
    path = np.asarray(run_optax_path(optim.rprop_minus(), grad, jnp.array([-1.5, 2.0]), 500))
    # the tutorial's own BPTT gives the reference gradient: only its signs matter, and they agree
    want = tutorial_rprop(lambda W: tutorial_counting_gradient(X, t, W), [-1.5, 2.0], 500)
    np.testing.assert_array_equal(path, want[1:])
    np.testing.assert_allclose(path[-1], [1.0, 1.0], atol=1e-2)  # "very close to (1, 1)"


def test_optax_rprop_takes_a_different_path_one_call_late():
    """A fixed gradient sequence, unrolled by hand for both rules.

    Tutorial Rprop−: every call multiplies Δ (the first by η− since the stored
    sign starts at 0) and steps −sign(g)·Δ, also right after a flip.
    optax iRprop−: the first call returns 0; call t returns the step computed at
    call t−1; a flip returns 0 and stores 0, so the next call neither changes Δ
    nor moves.
    """
    gs = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0]
    ours_want = [-0.0005, -0.0006, -0.00072, 0.00036, 0.000432, 0.0005184, 0.00062208]
    optax_want = [0.0, -0.001, -0.0012, 0.0, 0.0, 0.00072, 0.000864]
    for tx, want in ((optim.rprop_minus(), ours_want), (optim.irprop_minus(0.001), optax_want)):
        state, got = tx.init(jnp.zeros(1)), []
        for g in gs:
            u, state = tx.update(jnp.array([g]), state)
            got.append(float(u[0]))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    # on the counting RNN the two start apart at once: optax does not move on its first call
    X, t = counting_data()
    grad = jax.grad(lambda w: counting_loss(w, jnp.asarray(X), jnp.asarray(t)))
    start = jnp.array([-1.5, 2.0])
    ours = np.asarray(run_optax_path(optim.rprop_minus(), grad, start, 50))
    theirs = np.asarray(run_optax_path(optim.irprop_minus(0.001), grad, start, 50))
    np.testing.assert_array_equal(theirs[0], [-1.5, 2.0])
    np.testing.assert_allclose(np.abs(ours[0] - [-1.5, 2.0]), [0.0005, 0.0005], rtol=1e-12)
    assert np.all(np.any(ours != theirs, axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_irprop_minus_is_optax_rprop_bit_for_bit(dtype):
    """irprop_minus restates optax.scale_by_rprop (to cast its hyperparameters): same path, same state."""
    X, t = counting_data()
    Xj, tj = jnp.asarray(X, dtype), jnp.asarray(t, dtype)
    grad = jax.grad(lambda w: counting_loss(w, Xj, tj))
    start = jnp.array([-1.5, 2.0], dtype)
    for hyper in ({}, dict(learning_rate=0.01, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-3, max_step_size=0.05)):
        ours = run_optax_path(optim.irprop_minus(**hyper), grad, start, 300)
        theirs = run_optax_path(optax.rprop(**{"learning_rate": 0.001, **hyper}), grad, start, 300)
        assert ours.dtype == dtype
        np.testing.assert_array_equal(ours, theirs)
    rng = np.random.default_rng(11)  # a tree with zero, flipping and repeated signs
    params = model_params(rng, dtype)
    ours, theirs = optim.irprop_minus(), optax.rprop(0.001)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    for k in range(8):
        g = jax.tree.map(lambda x: jnp.where(jnp.asarray(rng.random(x.shape) < 0.2), 0, x), model_params(rng, dtype))
        (u_ours, s_ours), (u_theirs, s_theirs) = ours.update(g, s_ours), theirs.update(g, s_theirs)
        assert_trees_equal(u_ours, u_theirs)
        assert_trees_equal(s_ours, s_theirs)
    assert jax.tree_util.tree_structure(s_ours) == jax.tree_util.tree_structure(s_theirs)


# ---------------------------------------------------------------- non-finite gradients


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_skip_nonfinite_zeroes_and_counts_like_optax_apply_if_finite(bad):
    rng = np.random.default_rng(6)
    params = model_params(rng)
    good = model_params(rng)
    broken = good._replace(readout=good.readout._replace(b=good.readout.b.at[0].set(bad)))
    tx = optim.skip_nonfinite()
    ref = optax.apply_if_finite(optax.identity(), max_consecutive_errors=10**6)
    s, sr = tx.init(params), ref.init(params)
    for g in (good, broken, broken, good):
        (u, s), (ur, sr) = tx.update(g, s, params), ref.update(g, sr, params)
        assert_trees_equal(u, ur)
        assert int(s.num_skipped) == int(sr.total_notfinite)
    assert int(s.num_skipped) == 2


def test_skip_nonfinite_around_momentum_is_a_true_skip():
    rng = np.random.default_rng(7)
    params = model_params(rng)
    g1, g2 = model_params(rng), model_params(rng)
    nan = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), g1)
    tx = optim.skip_nonfinite(optim.teacher_student(0.01, updates_per_epoch=1, momentum_switchover=0))
    plain = optim.teacher_student(0.01, updates_per_epoch=1, momentum_switchover=0)
    s, sp = tx.init(params), plain.init(params)
    got = []
    for g in (g1, nan, g2):
        u, s = tx.update(g, s, params)
        got.append(u)
    want = []
    for g in (g1, g2):
        u, sp = plain.update(g, sp, params)
        want.append(u)
    assert_trees_equal(got[1], jax.tree.map(jnp.zeros_like, g1))
    assert_trees_equal(got[0], want[0])
    assert_trees_equal(got[2], want[1])  # momentum and schedule count did not see the skipped step
    assert_trees_equal(s.inner_state, sp)
    assert int(optim.counters(s)["num_skipped"]) == 1


def test_original_fallback_reproduces_the_theano_update():
    """RNN.py with clipstyle='rescale': clip at c with the pre-clip norm, then replace a bad
    gradient by 0.02 W_hh (others 0), then W -= lr * g."""
    rng = np.random.default_rng(8)
    params = model_params(rng, scale=3.0)  # ||0.02 W_hh|| > c: the replacement must not be clipped
    lr, c = 0.1, 0.05
    assert 0.02 * np.linalg.norm(np.asarray(params.cell.w_hh)) > c

    def theano_step(p, g):
        p_np, g_np = leaves(p), leaves(g)
        norm = np.sqrt(sum(np.sum(x**2) for x in g_np))
        with np.errstate(invalid="ignore"):
            g_np = [c * x / norm if norm > c else x for x in g_np]
        if np.isnan(norm) or np.isinf(norm) or norm < 0 or norm > 1e10:
            g_np = [0.02 * w if i == 1 else np.zeros_like(w) for i, w in enumerate(p_np)]  # leaf 1 is cell.w_hh
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(p), [w - lr * x for w, x in zip(p_np, g_np)])

    tx = optim.msgd_c(lr, c, nonfinite="original")
    state, p_ours, p_ref = tx.init(params), params, params
    g = model_params(rng)
    for scale, poison in ((1.0, False), (1e11, False), (1.0, True), (1e-3, False)):
        grads = jax.tree.map(lambda x: scale * x, g)
        if poison:
            grads = grads._replace(cell=grads.cell._replace(w_ih=grads.cell.w_ih.at[0, 0].set(jnp.inf)))
        u, state = tx.update(grads, state, p_ours)
        p_ours, p_ref = optax.apply_updates(p_ours, u), theano_step(p_ref, grads)
        for a, b in zip(leaves(p_ours), leaves(p_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    stats = optim.counters(state)
    assert int(stats["num_fallbacks"]) == 2 and int(stats["num_steps"]) == 2 and int(stats["num_clipped"]) == 1


def test_original_fallback_leaf_selection_and_errors():
    params = {"rec": jnp.ones((2, 2)), "w_hh": jnp.ones(1), "b": jnp.ones(3)}
    grads = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), params)
    tx = optim.original_nonfinite_fallback(select=lambda path: jax.tree_util.keystr(path) == "['rec']")
    u, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(u["rec"], np.full((2, 2), 0.02))
    np.testing.assert_array_equal(u["w_hh"], [0.0])
    with pytest.raises(ValueError, match="needs params"):
        tx.update(grads, tx.init(params))
    tx = optim.original_nonfinite_fallback(select="W_rec")
    with pytest.raises(ValueError, match="no parameter leaf matches select='W_rec'.*'w_hh'"):
        tx.update(grads, tx.init(params), params)


# ---------------------------------------------------------------- validation


def test_hyperparameter_errors():
    with pytest.raises(ValueError, match=r"learning_rate must lie in \(0.0, inf\), got -0.1"):
        optim.msgd(-0.1)
    with pytest.raises(ValueError, match=r"threshold must lie in \(0.0, inf\], got 0.0"):
        optim.msgd_c(0.01, threshold=0.0)
    with pytest.raises(ValueError, match="threshold"):
        optim.msgd_c(0.01, threshold=np.nan)
    with pytest.raises(ValueError, match="learning_rate"):
        optim.msgd(np.inf)
    with pytest.raises(ValueError, match="eta_minus"):
        optim.rprop_minus(eta_minus=2.0)
    with pytest.raises(ValueError, match="momentum"):
        optim.sgd(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="unknown nonfinite 'nan'"):
        optim.msgd(nonfinite="nan")


# ---------------------------------------------------------------- jit, vmap, recompilation

CONFIGS = {
    "msgd": lambda lr, thr: optim.msgd(lr),
    "msgd_c": lambda lr, thr: optim.msgd_c(lr, thr),
    "msgd_cr-skip": lambda lr, thr: optim.msgd_cr(lr, thr, nonfinite="skip"),
    "msgd_c-original": lambda lr, thr: optim.msgd_c(lr, thr, nonfinite="original", fallback_threshold=20 * thr),
    "sgd-momentum": lambda lr, thr: optim.sgd(lr, momentum=thr / 10),
    "teacher_student": lambda lr, thr: optim.teacher_student(lr, updates_per_epoch=2, momentum_switchover=0),
    "rprop_minus": lambda lr, thr: optim.rprop_minus(initial_step=lr, eta_plus=1 + thr / 10),
    "irprop_minus": lambda lr, thr: optim.irprop_minus(lr, max_step_size=thr),
    "clip-sgd": lambda lr, thr: optax.chain(optim.clip_by_global_norm(thr), optim.sgd(lr)),  # train.paper_optimizer
}


def gradient_sequence(rng, template, steps, guarded):
    scales = [0.2, 3.0, 40.0, 1.0, 150.0, 0.5]
    seq = [jax.tree.map(lambda x: jnp.asarray(scales[k % 6] * rng.normal(size=(2,) + x.shape), x.dtype), template) for k in range(steps)]
    if guarded:  # one member gets an Inf at step 2, the other not
        seq[2] = seq[2]._replace(cell=seq[2].cell._replace(b=seq[2].cell.b.at[0, 0].set(jnp.inf)))
    return seq


@pytest.mark.parametrize("name", list(CONFIGS))
def test_vmapped_members_with_their_own_hyperparameters_match_single_runs(name):
    rng = np.random.default_rng(9)
    template = model_params(rng, np.float32)
    params = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), template)
    grads = gradient_sequence(rng, template, 6, guarded=name in ("msgd_cr-skip", "msgd_c-original"))
    lrs, thrs = jnp.array([0.01, 0.1]), jnp.array([0.5, 5.0])  # float64 hyperparameters, float32 parameters
    make = CONFIGS[name]

    def run(lr, thr, p, gs):
        tx = make(lr, thr)
        state = tx.init(p)
        for g in gs:
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        return p, state

    p_vm, s_vm = jax.jit(jax.vmap(run))(lrs, thrs, params, grads)
    for m, (lr, thr) in enumerate(((0.01, 0.5), (0.1, 5.0))):
        member = lambda tree: jax.tree.map(lambda x: x[m], tree)
        p_one, s_one = run(lr, thr, member(params), [member(g) for g in grads])
        for a, b in zip(leaves(member(p_vm)), leaves(p_one), strict=True):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
        for key, value in optim.counters(s_one).items():
            np.testing.assert_allclose(optim.counters(s_vm)[key][m], value, rtol=1e-6)
    if name == "msgd_c":  # the two thresholds clip different steps
        want = [sum(np_global_norm(jax.tree.map(lambda x: x[m], g)) >= thr for g in grads) for m, thr in enumerate((0.5, 5.0))]
        np.testing.assert_array_equal(optim.counters(s_vm)["num_clipped"], want)
        assert want[0] > want[1] > 0


def test_second_jitted_call_does_not_recompile():
    rng = np.random.default_rng(10)
    params = model_params(rng, np.float32)
    traces = []

    def train_step(lr, threshold, params, state, grads):
        traces.append(None)  # runs once per trace
        updates, state = optim.msgd_c(lr, threshold, nonfinite="skip").update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(train_step)
    state = optim.msgd_c(0.01, 1.0, nonfinite="skip").init(params)
    for lr, threshold in ((0.01, 1.0), (0.02, 0.5), (0.03, 2.0)):  # new values, same shapes: no retrace
        params, state = step(lr, threshold, params, state, model_params(rng, np.float32))
    assert len(traces) == 1
    tx, rprop_traces = optim.rprop_minus(), []

    def rprop_update(grads, state):
        rprop_traces.append(None)
        return tx.update(grads, state)

    update, s = jax.jit(rprop_update), tx.init(params)
    for _ in range(3):
        _, s = update(model_params(rng, np.float32), s)
    assert len(rprop_traces) == 1


# ---------------------------------------------------------------- descent_step


def test_descent_step_takes_the_hand_computed_steps_on_a_quadratic():
    """Weight-decayed momentum SGD on ``L(p, A, c) = ½ Σ_leaves (p − c)ᵀ A (p − c)``, whose gradient is
    ``A (p − c)``, against the same updates written out in NumPy: the step passes ``*args`` to the loss
    and ``params`` to ``tx.update`` (weight decay reads them), applies the update, and returns the
    value and gradient of the parameters it started from."""
    rng = np.random.default_rng(11)
    m = rng.normal(size=(3, 3))
    a, c = m @ m.T + 3 * np.eye(3), rng.normal(size=3)
    p0 = {"u": rng.normal(size=3), "v": rng.normal(size=(2, 3))}
    lr, mu, wd, steps = 0.05, 0.9, 0.1, 6

    def loss(p, a, c):
        return sum(0.5 * jnp.sum(((q - c) @ a) * (q - c)) for q in jax.tree_util.tree_leaves(p))

    tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=mu))
    step = jax.jit(optim.descent_step(tx, loss))
    p_init = {k: jnp.asarray(x) for k, x in p0.items()}
    carry = (p_init, tx.init(p_init))
    p, v = {k: x.copy() for k, x in p0.items()}, {k: np.zeros_like(x) for k, x in p0.items()}
    values = []
    for _ in range(steps):
        carry, (value, grads) = step(carry, jnp.asarray(a), jnp.asarray(c))
        g = {k: (x - c) @ a for k, x in p.items()}  # A symmetric: ∇ of ½ (x − c)ᵀ A (x − c)
        want = sum(0.5 * np.sum(((x - c) @ a) * (x - c)) for x in p.values())
        np.testing.assert_allclose(float(value), want, rtol=1e-12)
        values.append(want)
        for k in p:
            np.testing.assert_allclose(np.asarray(grads[k]), g[k], rtol=1e-12, atol=1e-14)
            v[k] = mu * v[k] + g[k] + wd * p[k]
            p[k] = p[k] - lr * v[k]
            np.testing.assert_allclose(np.asarray(carry[0][k]), p[k], rtol=1e-12, atol=1e-14)
    assert values[-1] < 0.6 * values[0]  # and it descends
    # as a lax.scan body (the data as the scanned inputs): the same path
    xs = (jnp.broadcast_to(jnp.asarray(a), (steps, 3, 3)), jnp.broadcast_to(jnp.asarray(c), (steps, 3)))
    (p_scan, _), (scanned, _) = jax.lax.scan(lambda cr, x: optim.descent_step(tx, loss)(cr, *x),
                                             (p_init, tx.init(p_init)), xs)
    np.testing.assert_allclose(np.asarray(scanned), values, rtol=1e-12)
    for k in p:
        np.testing.assert_allclose(np.asarray(p_scan[k]), p[k], rtol=1e-12, atol=1e-14)


def test_is_clipped_is_algorithm_1s_condition_and_what_the_counter_counts():
    """‖g‖ ≥ threshold (equality included: rescaled by 1) or a NaN norm; the counted chain and the
    engine's statistics read this one definition."""
    norms = jnp.array([0.5, 1.0, 1.5, jnp.inf, jnp.nan], jnp.float32)
    np.testing.assert_array_equal(optim.is_clipped(norms, 1.0), [False, True, True, True, True])
    np.testing.assert_array_equal(optim.is_clipped(norms, jnp.inf), [False, False, False, True, True])
    tx = optim.clip_by_global_norm_counted(1.0)
    state = tx.init(jnp.zeros(2, jnp.float32))
    for n in norms:
        _, state = tx.update(jnp.array([n, 0.0], jnp.float32), state)
    assert int(state.num_clipped) == int(np.sum(np.asarray(optim.is_clipped(norms, 1.0))))
