"""Tests of rnn_jax.diagnostics against closed forms, finite differences and NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import diagnostics, model
from rnn_jax.cells import ElmanParams
from rnn_jax.model import ModelParams
from rnn_jax.readout import ReadoutParams

KINDS = ("elman", "pascanu", "lstm", "gru")
ACTIVATIONS = ("tanh", "sigmoid", "relu", "identity")


def _model(kind, hidden=3, inputs=2, outputs=2, seed=0, **kwargs):
    cell = rnn_jax.make(kind, hidden, **kwargs)
    params = model.init(jax.random.key(seed), cell, inputs, outputs, dtype=jnp.float64)
    return cell, params


def _data(batch=2, time=4, inputs=2, seed=1):
    return jax.random.normal(jax.random.key(seed), (batch, time, inputs), jnp.float64)


# ---------------------------------------------------------------- linear RNN (Roelants' tutorial)


def test_linear_rnn_jacobian_powers_and_gradient_over_time():
    """S_k = S_{k-1} w_rec + x_k w_x: ∂S_k/∂S_{k-m} = w_rec^m and δ_k = δ_n w_rec^(n-k)."""
    cell = rnn_jax.elman(1, "identity")
    n = 8
    xs = jax.random.bernoulli(jax.random.key(0), 0.5, (3, n, 1)).astype(jnp.float64)
    targets = jnp.sum(xs, axis=1)  # the tutorial's count of ones
    spans = [(0, n), (2, 7), (5, 6), (3, 3)]

    @jax.jit
    def compute(params):
        jacobians = diagnostics.step_jacobians(cell, params, xs)
        svs = [diagnostics.jacobian_product_singular_values(jacobians, a, b) for a, b in spans]
        return jacobians, svs, diagnostics.state_gradients(cell, params, xs, targets, loss="mse", on="last")

    for w_rec in (2.0, -2.0, 1.0, 0.5, -0.5):  # exploding, alternating, constant, vanishing (the tutorial's points)
        params = ModelParams(
            ElmanParams(jnp.ones((1, 1), jnp.float64), jnp.full((1, 1), w_rec, jnp.float64), jnp.zeros(1, jnp.float64)),
            ReadoutParams(jnp.ones((1, 1), jnp.float64), jnp.zeros(1, jnp.float64)),
        )
        jacobians, svs, sg = compute(params)
        np.testing.assert_allclose(jacobians, np.full((3, n, 1, 1), w_rec), rtol=0, atol=0)
        for (start, end), sv in zip(spans, svs):
            np.testing.assert_allclose(sv, np.full((3, 1), abs(w_rec) ** (end - start)), rtol=1e-13)
        states = np.asarray(sg.carries.hidden[..., 0])
        delta_n = 2 * (states[:, -1] - np.asarray(targets[:, 0])) / 3  # d/dS_n of the batch-mean squared error
        expected = delta_n[:, None] * w_rec ** (n - 1 - np.arange(n))[None, :]
        np.testing.assert_allclose(sg.deltas.hidden[..., 0], expected, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(sg.norms, np.abs(expected), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- step Jacobians


@pytest.mark.parametrize("kind, activation", [(k, a) for k in ("elman", "pascanu") for a in ACTIVATIONS]
                         + [("lstm", None), ("gru", None)])
def test_closed_form_step_jacobians_match_autodiff(kind, activation):
    """Elman and Pascanu in closed form; the LSTM and the GRU from their ReverseRule's hand-written derivative."""
    cell = rnn_jax.make(kind, 4, **({} if activation is None else {"activation": activation}))
    params = cell.init(jax.random.key(2), 3, jnp.float64)
    xs = _data(batch=3, time=5, inputs=3)
    fields = len(cell.carry_type._fields)
    initial = cell.carry_type(*[jax.random.normal(jax.random.key(3 + i), (3, 4), jnp.float64) for i in range(fields)])
    lengths = jnp.array([5, 2, 0], jnp.int32)
    auto, closed = jax.jit(
        lambda p: [f(cell, p, xs, initial_carry=initial, lengths=lengths)
                   for f in (diagnostics.step_jacobians, diagnostics.closed_form_step_jacobians)]
    )(params)
    n = 4 * fields
    assert auto.shape == (3, 5, n, n)
    np.testing.assert_allclose(closed, auto, rtol=1e-12, atol=1e-14)
    # padded steps copy the carry: identity Jacobian
    np.testing.assert_array_equal(auto[1, 2:], np.broadcast_to(np.eye(n), (3, n, n)))
    np.testing.assert_array_equal(closed[2], np.broadcast_to(np.eye(n), (5, n, n)))


def _python_states(cell, params, xs, carry):
    """Flattened carries [s_1 .. s_T] of one unbatched sequence, by a Python loop over cell.step."""
    out = []
    for t in range(xs.shape[0]):
        carry, _ = cell.step(params, carry, xs[t])
        out.append(jnp.concatenate(list(carry)))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_jacobian_product_is_the_derivative_across_steps(kind):
    """jacobian_product(J, a, b) = ∂s_b/∂s_a, checked with jacfwd of a Python-loop forward from s_a."""
    cell, params = _model(kind)
    xs = _data(batch=1, time=5)[0]
    n = len(cell.carry_type._fields) * cell.hidden_size
    spans = [(0, 5), (1, 4), (2, 3), (3, 3)]

    @jax.jit
    def compute(params):
        jacobians = diagnostics.step_jacobians(cell, params, xs)
        got = [diagnostics.jacobian_product(jacobians, a, b) for a, b in spans]
        states = [jnp.zeros(n, jnp.float64)] + _python_states(cell, params.cell, xs, cell.initial_carry((), jnp.float64))
        expected = []
        for start, end in spans:
            def forward(flat, start=start, end=end):
                carry = cell.carry_type(*jnp.split(flat, len(cell.carry_type._fields)))
                return _python_states(cell, params.cell, xs[start:end], carry)[-1] if end > start else flat

            expected.append(jax.jacfwd(forward)(states[start]))
        return jacobians, got, expected

    jacobians, got, expected = compute(params)
    assert jacobians.shape == (5, n, n)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)


def test_jacobian_product_singular_values_match_numpy():
    rng = np.random.default_rng(0)
    jacobians = rng.normal(size=(2, 6, 4, 4))
    for start, end in [(0, 6), (1, 5), (2, 3), (4, 4)]:
        for b in range(2):
            product = np.eye(4)
            for k in range(start, end):
                product = jacobians[b, k] @ product
            expected = np.linalg.svd(product, compute_uv=False)
            got = diagnostics.jacobian_product_singular_values(jnp.asarray(jacobians), start, end)[b]
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_jacobian_product_rejects_bad_spans():
    jacobians = jnp.zeros((5, 3, 3))
    with pytest.raises(ValueError, match="start <= end"):
        diagnostics.jacobian_product(jacobians, 3, 2)
    with pytest.raises(ValueError, match="start <= end"):
        diagnostics.jacobian_product(jacobians, 0, 6)
    with pytest.raises(TypeError, match="Python int"):
        diagnostics.jacobian_product(jacobians, 0, jnp.asarray(2))
    with pytest.raises(ValueError, match="time, n, n"):
        diagnostics.jacobian_product(jnp.zeros((5, 3, 2)), 0, 1)


@pytest.mark.parametrize("activation,gamma", [("tanh", 1.0), ("sigmoid", 0.25)])
def test_jacobian_products_obey_the_vanishing_bound(activation, gamma):
    """‖∂h_k/∂h_{k-m}‖ <= (γ σ_max(W_hh))^m (the proof of the sufficient condition)."""
    cell = rnn_jax.elman(6, activation)
    params = cell.init(jax.random.key(4), 2, jnp.float64)
    w = jax.random.normal(jax.random.key(5), (6, 6), jnp.float64)
    params = params._replace(w_hh=0.9 / gamma * w / jnp.linalg.norm(w, 2))
    condition = diagnostics.vanishing_condition(cell, params.w_hh)
    np.testing.assert_allclose(condition.ratio, 0.9, rtol=1e-12)
    assert bool(condition.vanishing)
    xs = _data(batch=2, time=12)
    ms = (1, 4, 12)

    @jax.jit
    def tops(params):
        jacobians = diagnostics.step_jacobians(cell, params, xs)
        return [diagnostics.jacobian_product_singular_values(jacobians, 12 - m, 12)[:, 0] for m in ms]

    for m, top in zip(ms, tops(params)):
        assert np.all(np.asarray(top) <= 0.9**m * (1 + 1e-12))


# ---------------------------------------------------------------- δ_k against finite differences


def _output(cell, carry):
    """What the readout sees, from each cell's documented equations."""
    if cell.kind == "pascanu":
        return rnn_jax.activations.get(cell.activation).fn(carry.hidden)
    return carry.hidden


def _fd_loss(cell, params, xs, targets, eps, loss, on, lengths):
    """The loss with s_k ← s_k + eps_k, by a Python loop over cell.step (independent of the scan)."""
    batch, time = xs.shape[:2]
    carry = cell.initial_carry((batch,), jnp.float64)
    ys = []
    for t in range(time):
        new, _ = cell.step(params.cell, carry, xs[:, t])
        new = cell.carry_type(*[leaf + e[:, t] for leaf, e in zip(new, eps)])
        valid = np.ones((batch, 1), bool) if lengths is None else (t < np.asarray(lengths))[:, None]
        carry = cell.carry_type(*[jnp.where(valid, n, o) for n, o in zip(new, carry)])
        ys.append(jnp.where(valid, _output(cell, carry), 0.0))
    ys = jnp.stack(ys, axis=1)  # (batch, time, H)
    lens = np.full(batch, time) if lengths is None else np.asarray(lengths)
    if on == "last":
        ys = ys[np.arange(batch), np.maximum(lens - 1, 0)]
        weights = (lens > 0).astype(np.float64)
    else:
        weights = (np.arange(time)[None, :] < lens[:, None]).astype(np.float64)
    pred = ys @ params.readout.w + params.readout.b
    if loss == "mse":
        per = jnp.sum((pred - targets) ** 2, axis=-1)
    else:
        per = -jnp.take_along_axis(jax.nn.log_softmax(pred, -1), targets[..., None], -1)[..., 0]
    return jnp.sum(per * weights) / weights.sum()


CASES = [("mse", "last", None), ("mse", "every", [4, 2]), ("xent", "last", [3, 0])]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loss,on,lengths", CASES)
def test_state_gradients_match_finite_differences(kind, loss, on, lengths):
    cell, params = _model(kind, seed=KINDS.index(kind))
    xs = _data()
    shape = (2,) if on == "last" else (2, 4)
    if loss == "mse":
        targets = jax.random.normal(jax.random.key(7), shape + (2,), jnp.float64)
    else:
        targets = jax.random.randint(jax.random.key(7), shape, 0, 2)
    lengths = None if lengths is None else jnp.asarray(lengths)
    kw = dict(loss=loss, on=on, lengths=lengths)
    sg, expected_loss = jax.jit(
        lambda p: (diagnostics.state_gradients(cell, p, xs, targets, **kw), model.loss(cell, p, xs, targets, **kw))
    )(params)
    np.testing.assert_allclose(sg.loss, expected_loss, rtol=1e-14)

    f = jax.jit(lambda eps: _fd_loss(cell, params, xs, targets, eps, loss, on, lengths))
    zeros = diagnostics.zero_perturbations(cell, xs)
    h = 1e-6
    for field in range(len(zeros)):
        numeric = np.zeros(zeros[field].shape)
        for index in np.ndindex(*numeric.shape):
            bump = lambda s: zeros._replace(**{zeros._fields[field]: zeros[field].at[index].set(s)})
            numeric[index] = (f(bump(h)) - f(bump(-h))) / (2 * h)
        np.testing.assert_allclose(sg.deltas[field], numeric, rtol=1e-6, atol=1e-9)
    if lengths is not None:  # padded steps have no state of their own: δ = 0 there
        mask = np.arange(4)[None, :] >= np.asarray(lengths)[:, None]
        assert np.all(np.asarray(sg.deltas.hidden)[mask] == 0)
    np.testing.assert_allclose(sg.norms, np.linalg.norm(np.asarray(sg.deltas.hidden), axis=-1), rtol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_perturbed_loss_gives_the_model_loss_gradient(kind):
    cell, params = _model(kind)
    xs, targets = _data(), jax.random.normal(jax.random.key(7), (2, 2), jnp.float64)
    zeros = diagnostics.zero_perturbations(cell, xs)
    grads, expected = jax.jit(
        lambda params: (
            jax.grad(lambda p: diagnostics.perturbed_loss(cell, p, xs, targets, zeros)[0])(params),
            jax.grad(lambda p: model.loss(cell, p, xs, targets))(params),
        )
    )(params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15), grads, expected)


def test_state_gradients_unbatched_jit_and_vmap():
    cell, params = _model("lstm")
    xs, targets = _data(batch=3), jax.random.normal(jax.random.key(7), (3, 2), jnp.float64)
    ensemble = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), params)

    @jax.jit
    def compute(params, ensemble):
        batched = diagnostics.state_gradients(cell, params, xs, targets)
        single = diagnostics.state_gradients(cell, params, xs[1], targets[1])
        many = jax.vmap(lambda p: diagnostics.state_gradients(cell, p, xs, targets))(ensemble)
        second = diagnostics.state_gradients(cell, jax.tree_util.tree_map(lambda a: 2 * a, params), xs, targets)
        return batched, single, many, second

    batched, single, many, second = compute(params, ensemble)
    # one unbatched sequence: the same δ up to the batch mean's factor 1/3
    assert single.deltas.hidden.shape == (4, 3) and single.norms.shape == (4,)
    np.testing.assert_allclose(single.deltas.hidden / 3, batched.deltas.hidden[1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(single.deltas.cell / 3, batched.deltas.cell[1], rtol=1e-12, atol=1e-15)
    # an ensemble of two models through vmap
    np.testing.assert_allclose(many.norms[1], second.norms, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(many.deltas.cell[0], batched.deltas.cell, rtol=1e-12, atol=1e-15)
    # eager and jitted calls agree
    eager = diagnostics.state_gradients(cell, params, xs, targets)
    np.testing.assert_allclose(eager.deltas.cell, batched.deltas.cell, rtol=1e-12, atol=1e-15)


def test_state_gradients_rejects_bad_arguments():
    cell, params = _model("elman")
    xs, targets = _data(), jnp.zeros((2, 2), jnp.float64)
    with pytest.raises(TypeError, match="ModelParams"):
        diagnostics.perturbed_loss(cell, params.cell, xs, targets, diagnostics.zero_perturbations(cell, xs))
    with pytest.raises(ValueError, match="perturbations.hidden"):
        diagnostics.perturbed_loss(cell, params, xs, targets, cell.carry_type(jnp.zeros((2, 3, 3), jnp.float64)))
    with pytest.raises(ValueError, match="unknown on"):
        diagnostics.state_gradients(cell, params, xs, targets, on="first")


# ---------------------------------------------------------------- W_hh conditions


def test_spectral_radius_of_known_matrices():
    theta, scale = 0.7, 1.3
    rotation = scale * jnp.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])  # λ = 1.3 e^{±0.7i}
    np.testing.assert_allclose(diagnostics.spectral_radius(rotation), 1.3, rtol=1e-12)
    triangular = jnp.array([[0.5, 10.0, -3.0], [0.0, -0.8, 7.0], [0.0, 0.0, 0.3]])  # λ = diagonal, σ_max > 10
    np.testing.assert_allclose(diagnostics.spectral_radius(triangular), 0.8, rtol=1e-12)
    np.testing.assert_allclose(
        diagnostics.largest_singular_value(triangular), np.linalg.svd(np.asarray(triangular), compute_uv=False)[0], rtol=1e-12
    )
    # a gated cell's (H, G*H) matrix: one value per gate block
    gated = jnp.concatenate([triangular, 2 * triangular, triangular.T / 4], axis=1)
    np.testing.assert_allclose(diagnostics.spectral_radius(gated), [0.8, 1.6, 0.2], rtol=1e-12)
    np.testing.assert_allclose(jax.jit(diagnostics.spectral_radius)(gated), [0.8, 1.6, 0.2], rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(diagnostics.spectral_radius)(jnp.stack([rotation, rotation / 2])), [1.3, 0.65], rtol=1e-12)
    with pytest.raises(ValueError, match=r"\(H, G\*H\)"):
        diagnostics.spectral_radius(jnp.zeros((3, 4)))


def test_spectral_radius_float32_and_explosion_of_a_linear_rnn():
    """ρ > 1 is necessary for explosion (the notes "RNN的几个难点"): products of W grow like ρ^m, not σ_max^m."""
    w = jnp.array([[0.5, 10.0], [0.0, -0.8]], jnp.float32)
    rho = diagnostics.spectral_radius(w)
    assert rho.dtype == jnp.float32
    np.testing.assert_allclose(rho, 0.8, rtol=1e-6)
    power = np.linalg.matrix_power(np.asarray(w, np.float64).T, 200)
    assert np.linalg.norm(power, 2) < 1e-10  # σ_max ≈ 10 but ρ < 1: no explosion


@pytest.mark.parametrize("activation,gamma", [("tanh", 1.0), ("sigmoid", 0.25)])
def test_vanishing_condition_on_a_matrix_with_known_top_singular_value(activation, gamma):
    rng = np.random.default_rng(3)
    u, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    v, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    for top in (0.9, 3.5, 4.2):
        w = jnp.asarray(u @ np.diag([top, 0.7, 0.5, 0.2, 0.1]) @ v.T)
        for how in (activation, rnn_jax.elman(5, activation), rnn_jax.activations.get(activation)):
            cond = diagnostics.vanishing_condition(how, w)
            assert cond.gamma == gamma
            np.testing.assert_allclose(cond.largest_singular_value, top, rtol=1e-12)
            np.testing.assert_allclose(cond.ratio, gamma * top, rtol=1e-12)
            assert bool(cond.vanishing) == (top < 1 / gamma)


def test_vanishing_condition_rejects_gated_cells_and_non_square_matrices():
    with pytest.raises(ValueError, match="elman or pascanu"):
        diagnostics.vanishing_condition(rnn_jax.lstm(3), jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="square"):
        diagnostics.vanishing_condition("tanh", jnp.zeros((3, 6)))
    with pytest.raises(ValueError, match="unknown activation"):
        diagnostics.vanishing_condition("softplus", jnp.zeros((3, 3)))
