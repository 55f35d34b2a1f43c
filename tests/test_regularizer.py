"""Tests of Pascanu et al.'s regulariser Ω against a brute-force NumPy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import diagnostics, model
from rnn_jax.repro import regularizer
from rnn_jax.cells import ElmanParams
from rnn_jax.model import ModelParams
from rnn_jax.readout import ReadoutParams

ACT = {
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
}


def _params(seed, hidden=4, inputs=3, outputs=2, scale=1.0):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(scale * rng.normal(size=shape))
    return ModelParams(
        ElmanParams(normal(inputs, hidden), normal(hidden, hidden), normal(hidden)),
        ReadoutParams(normal(hidden, outputs), normal(outputs)),
    )


def _brute_force(kind, activation, params, xs, targets, loss, on):
    """δ_k by explicit Jacobian products in float64, and Ω(W) with δ and the states frozen.

    Returns (omega_of_w, w_hh, deltas): ``omega_of_w(w)`` rebuilds every J_k from the
    frozen states with ``w`` as the recurrent matrix, so its finite differences are ∂Ω/∂W_hh.
    """
    f, df = ACT[activation]
    w_ih, w_hh, b = (np.asarray(a) for a in params.cell)
    w_out, b_out = (np.asarray(a) for a in params.readout)
    xs, targets = np.asarray(xs), np.asarray(targets)
    batch, time, _ = xs.shape
    hidden = w_hh.shape[0]

    # forward: states s_0 .. s_T, and the step-k factor of J_k that does not involve W
    states = np.zeros((batch, time + 1, hidden))
    factor = np.zeros((batch, time + 1, hidden))  # elman: f'(pre_k); pascanu: σ'(x_{k-1})
    for k in range(1, time + 1):
        prev = states[:, k - 1]
        if kind == "elman":
            pre = prev @ w_hh + xs[:, k - 1] @ w_ih + b
            states[:, k], factor[:, k] = f(pre), df(pre)
        else:
            states[:, k], factor[:, k] = f(prev) @ w_hh + xs[:, k - 1] @ w_ih + b, df(prev)
    outputs = states[:, 1:] if kind == "elman" else f(states[:, 1:])
    out_grad = np.ones_like(outputs) if kind == "elman" else df(states[:, 1:])  # ∂y_k/∂s_k (diagonal)

    def jacobian(w, bi, k):  # J_k = ∂s_k/∂s_{k-1}, column convention
        return np.diag(factor[bi, k]) @ w.T if kind == "elman" else w.T @ np.diag(factor[bi, k])

    # immediate ∂⁺E/∂y_k of the batch-mean loss
    positions = range(time) if on == "every" else [time - 1]
    count = batch * len(positions)
    dy = np.zeros_like(outputs)
    for k in positions:
        pred = outputs[:, k] @ w_out + b_out
        tgt = targets[:, k] if on == "every" else targets
        if loss == "mse":
            dpred = 2 * (pred - tgt) / count
        else:
            p = np.exp(pred - pred.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            dpred = (p - np.eye(pred.shape[-1])[tgt]) / count
        dy[:, k] = dpred @ w_out.T
    immediate = dy * out_grad

    # δ_k = Σ_{t >= k} ∂⁺E/∂s_t · (J_t J_{t-1} ⋯ J_{k+1}), the explicit products
    deltas = np.zeros((batch, time, hidden))
    for bi in range(batch):
        for k in range(1, time + 1):
            product = np.eye(hidden)
            for t in range(k, time + 1):
                if t > k:
                    product = jacobian(w_hh, bi, t) @ product
                deltas[bi, k - 1] += immediate[bi, t - 1] @ product

    def omega_of_w(w):
        terms = []
        for bi in range(batch):
            for k in range(1, time + 1):
                d = deltas[bi, k - 1]
                if d @ d >= 1e-20:
                    v = d @ jacobian(w, bi, k)  # δ_k ∂s_k/∂s_{k-1}
                    terms.append((v @ v / (d @ d) - 1) ** 2)
        return np.mean(terms)

    return omega_of_w, w_hh, deltas


def _central_differences(fn, w, h=1e-6):
    grad = np.zeros_like(w)
    for index in np.ndindex(*w.shape):
        up, down = w.copy(), w.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (fn(up) - fn(down)) / (2 * h)
    return grad


CASES = [
    ("elman", "tanh", "mse", "last"),
    ("elman", "sigmoid", "xent", "every"),
    ("pascanu", "tanh", "xent", "every"),
    ("pascanu", "sigmoid", "mse", "last"),
]


@pytest.mark.parametrize("kind,activation,loss,on", CASES)
def test_omega_value_and_gradient_match_brute_force(kind, activation, loss, on):
    cell = rnn_jax.make(kind, 4, activation=activation)
    params = _params(CASES.index((kind, activation, loss, on)), scale=1.5 if activation == "sigmoid" else 0.8)
    xs = jax.random.normal(jax.random.key(0), (3, 5, 3), jnp.float64)
    shape = (3, 5) if on == "every" else (3,)
    targets = (
        jax.random.normal(jax.random.key(1), shape + (2,), jnp.float64)
        if loss == "mse"
        else jax.random.randint(jax.random.key(1), shape, 0, 2)
    )
    omega_of_w, w_hh, deltas = _brute_force(kind, activation, params, xs, targets, loss, on)
    expected_value = omega_of_w(w_hh)
    expected_grad = _central_differences(omega_of_w, w_hh)

    kw = dict(loss=loss, on=on)

    @jax.jit
    def compute(params):
        value, aux = regularizer.omega(cell, params, xs, targets, **kw)
        omega_grad = jax.grad(lambda p: regularizer.omega(cell, p, xs, targets, **kw)[0])(params)
        reg = regularizer.loss_and_grad_with_omega(cell, params, xs, targets, 4.0, **kw)
        plain = jax.grad(lambda p: model.loss(cell, p, xs, targets, **kw))(params)
        return value, aux, omega_grad, reg, plain, diagnostics.state_gradients(cell, params, xs, targets, **kw)

    value, aux, omega_grad, (loss_value, omega_value, grads), plain, sg = compute(params)
    assert 0.05 < expected_value  # a case where Ω is far from its minimum
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(omega_value, expected_value, rtol=1e-12)
    assert bool(jnp.all(aux.valid)) and float(aux.fraction_valid) == 1.0
    np.testing.assert_allclose(omega_grad.cell.w_hh, expected_grad, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(loss_value, aux.loss, rtol=1e-14)
    # only W_hh receives α ∂Ω/∂W_hh; every other gradient is the plain loss gradient
    np.testing.assert_allclose(grads.cell.w_hh, plain.cell.w_hh + 4.0 * expected_grad, rtol=1e-7, atol=1e-9)
    for name in ("w_ih", "b"):
        np.testing.assert_allclose(getattr(grads.cell, name), getattr(plain.cell, name), rtol=1e-12, atol=1e-15)
        assert np.all(np.asarray(getattr(omega_grad.cell, name)) == 0)
    for got, want, zero in zip(grads.readout, plain.readout, omega_grad.readout):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        assert np.all(np.asarray(zero) == 0)
    # the δ_k Ω uses are the brute-force ones
    np.testing.assert_allclose(sg.deltas.hidden, deltas, rtol=1e-10, atol=1e-15)


def test_omega_with_lengths_is_the_mean_over_each_sequence_alone():
    """r_k does not depend on the scale of δ, so padded batches give each sequence's own ratios."""
    cell = rnn_jax.elman(4, "tanh")
    params = _params(7, scale=0.8)
    xs = jax.random.normal(jax.random.key(0), (3, 6, 3), jnp.float64)
    targets = jax.random.normal(jax.random.key(1), (3, 2), jnp.float64)
    lens = [6, 4, 2]
    lengths = jnp.asarray(lens)

    @jax.jit
    def compute(params):
        batched = regularizer.omega(cell, params, xs, targets, lengths=lengths)
        alone = [regularizer.omega(cell, params, xs[b, :n], targets[b]) for b, n in enumerate(lens)]
        return batched, alone

    (value, aux), alone = compute(params)
    valid = np.arange(6)[None, :] < np.asarray(lens)[:, None]
    np.testing.assert_array_equal(aux.valid, valid)
    np.testing.assert_allclose(aux.fraction_valid, valid.mean(), rtol=1e-14)
    ratios = np.concatenate([np.asarray(a[1].ratios) for a in alone])
    np.testing.assert_allclose(np.asarray(aux.ratios)[valid], ratios, rtol=1e-12)
    np.testing.assert_allclose(value, np.mean((ratios - 1) ** 2), rtol=1e-12)


def test_no_valid_step_gives_zero_and_finite_gradients():
    cell = rnn_jax.elman(4, "tanh")
    params = _params(3)
    params = params._replace(readout=params.readout._replace(w=jnp.zeros_like(params.readout.w)))  # δ = 0
    xs = jax.random.normal(jax.random.key(0), (2, 5, 3), jnp.float64)
    targets = jnp.zeros((2, 2), jnp.float64)
    (value, aux), (_, omega_value, grads) = jax.jit(
        lambda p: (regularizer.omega(cell, p, xs, targets), regularizer.loss_and_grad_with_omega(cell, p, xs, targets))
    )(params)
    assert float(value) == 0.0 and float(aux.fraction_valid) == 0.0
    assert float(omega_value) == 0.0
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(grads))


def test_training_on_omega_alone_pushes_the_ratios_toward_one():
    """Plain gradient descent on W_hh with ∂Ω/∂W_hh alone: the mean |r_k − 1| falls markedly."""
    cell = rnn_jax.elman(8, scheme="basic_tanh")
    params = model.init(jax.random.key(0), cell, 3, 2, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (10, 15, 3), jnp.float64)
    targets = jax.random.normal(jax.random.key(2), (10, 2), jnp.float64)

    @jax.jit
    def distance(params):  # mean |r_k − 1| over the valid pairs, and Ω
        value, aux = regularizer.omega(cell, params, xs, targets)
        valid = aux.valid.astype(aux.ratios.dtype)
        return jnp.sum(jnp.abs(aux.ratios - 1) * valid) / jnp.sum(valid), value

    @jax.jit
    def train(params):
        def step(params, _):  # δ_k is recomputed at every step from the current W_hh
            g = jax.grad(lambda p: regularizer.omega(cell, p, xs, targets)[0])(params)
            return jax.tree_util.tree_map(lambda p, d: p - 0.3 * d, params, g), None

        return jax.lax.scan(step, params, None, length=300)[0]

    trained = train(params)
    (before, omega_before), (after, omega_after) = distance(params), distance(trained)
    # measured: mean |r − 1| 0.91 -> 0.11, Ω 0.83 -> 0.018
    assert before > 0.5 and after < 0.2 * before, (before, after)
    assert omega_after < 0.1 * omega_before, (omega_before, omega_after)
    # only the recurrent matrix moved
    for name in ("w_ih", "b"):
        np.testing.assert_array_equal(getattr(trained.cell, name), getattr(params.cell, name))
    np.testing.assert_array_equal(trained.readout.w, params.readout.w)


def test_jit_vmap_and_float32():
    cell = rnn_jax.pascanu(5, "sigmoid")
    params = model.init(jax.random.key(0), cell, 3, 2, dtype=jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (4, 6, 3), jnp.float32)
    targets = jax.random.normal(jax.random.key(2), (4, 2), jnp.float32)
    fn = jax.jit(lambda p: regularizer.loss_and_grad_with_omega(cell, p, xs, targets, regularizer.CODE_ALPHA))
    loss, omega_value, grads = fn(params)
    assert omega_value.dtype == jnp.float32 and grads.cell.w_hh.dtype == jnp.float32
    fn(jax.tree_util.tree_map(lambda a: a * 2, params))
    assert fn._cache_size() == 1  # a second call with new values does not retrace
    ensemble = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), params)
    many = jax.jit(jax.vmap(lambda p: regularizer.loss_and_grad_with_omega(cell, p, xs, targets, 2.0)))(ensemble)
    np.testing.assert_allclose(many[1][0], omega_value, rtol=1e-5)
    np.testing.assert_allclose(many[2].cell.w_hh[0], grads.cell.w_hh, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gated_cells_are_rejected(kind):
    cell = rnn_jax.make(kind, 3)
    params = model.init(jax.random.key(0), cell, 2, 1, dtype=jnp.float64)
    xs, targets = jnp.zeros((2, 3, 2), jnp.float64), jnp.zeros((2, 1), jnp.float64)
    with pytest.raises(ValueError, match="elman"):
        regularizer.omega(cell, params, xs, targets)
    with pytest.raises(ValueError, match="elman"):
        regularizer.loss_and_grad_with_omega(cell, params, xs, targets)


def test_bad_arguments_are_rejected():
    cell = rnn_jax.elman(3, "tanh")
    params = model.init(jax.random.key(0), cell, 2, 1, dtype=jnp.float64)
    xs, targets = jnp.zeros((2, 3, 2), jnp.float64), jnp.zeros((2, 1), jnp.float64)
    with pytest.raises(TypeError, match="ModelParams"):
        regularizer.omega(cell, params.cell, xs, targets)
    with pytest.raises(ValueError, match="unknown activation 'softplus'"):
        regularizer.omega(cell.replace(activation="softplus"), params, xs, targets)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        regularizer.omega_terms(rnn_jax.elman(4), jnp.zeros((3, 3)), jnp.zeros((2, 4)), jnp.zeros((2, 4)))
