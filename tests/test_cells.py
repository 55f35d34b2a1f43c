"""Cells against a NumPy transcription of their published equations, and the initialisers."""

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import rnn_jax
from rnn_jax import activations, initializers
from tests.helpers import CELL_CONFIGS, np_sigmoid, random_params

ACT = {"tanh": np.tanh, "sigmoid": np_sigmoid, "relu": lambda x: np.maximum(x, 0), "identity": lambda x: x}


def numpy_step(cell, p, carry, x):
    """Column-vector equations (W = w.T), written from the papers / PyTorch docs, in NumPy."""
    p = {k: np.asarray(v) for k, v in p._asdict().items()}
    h_prev = np.asarray(carry[0])
    H = cell.hidden_size
    if cell.kind == "elman":
        h = ACT[cell.activation](p["w_hh"].T @ h_prev + p["w_ih"].T @ x + p["b"])
        return (h,), h
    if cell.kind == "pascanu":
        f = ACT[cell.activation]
        xs = p["w_hh"].T @ f(h_prev) + p["w_ih"].T @ x + p["b"]
        return (xs,), f(xs)
    if cell.kind == "lstm":
        W_i, W_h = p["w_ih"].T, p["w_hh"].T  # (4H, I), (4H, H): PyTorch's layout
        gates = W_i @ x + W_h @ h_prev + p["b"]
        i, f, g, o = (gates[k * H:(k + 1) * H] for k in range(4))
        c = np_sigmoid(f) * np.asarray(carry[1]) + np_sigmoid(i) * np.tanh(g)
        h = np_sigmoid(o) * np.tanh(c)
        return (h, c), h
    if cell.kind == "gru":
        W_i, W_h = p["w_ih"].T, p["w_hh"].T
        gi, gh = W_i @ x + p["b"], W_h @ h_prev
        r = np_sigmoid(gi[:H] + gh[:H])
        z = np_sigmoid(gi[H:2 * H] + gh[H:2 * H])
        n = np.tanh(gi[2 * H:] + r * (gh[2 * H:] + p["b_hn"]))
        h = (1 - z) * n + z * h_prev
        return (h,), h
    if cell.kind == "mgu":  # Zhou et al. (2016), eq. 7-9
        W_i = p["w_ih"].T
        gi = W_i @ x + p["b"]
        f = np_sigmoid(gi[:H] + p["w_hh"].T @ h_prev)
        n = np.tanh(gi[H:] + p["w_hn"].T @ (f * h_prev))
        h = (1 - f) * h_prev + f * n
        return (h,), h
    raise AssertionError(cell.kind)


class StepEquationsTest(chex.TestCase):
    """Every cell's step against the NumPy equations, with and without jit (chex variants)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*sorted(CELL_CONFIGS))
    def test_step_matches_numpy_equations(self, name):
        _check_step_against_numpy(name, self.variant)


def _check_step_against_numpy(name, variant):
    cell = CELL_CONFIGS[name](5)
    params = random_params(cell, 3, jax.random.key(1))
    rng = np.random.default_rng(0)
    carry = cell.carry_type(*[jnp.asarray(rng.normal(size=5)) for _ in cell.carry_type._fields])
    x = rng.normal(size=3)
    step = variant(cell.step)
    new_carry, y = step(params, carry, jnp.asarray(x))
    want_carry, want_y = numpy_step(cell, params, carry, x)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-14)
    for got, want in zip(new_carry, want_carry):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # batched step == per-row unbatched steps
    xb = jnp.asarray(rng.normal(size=(4, 3)))
    cb = cell.carry_type(*[jnp.asarray(rng.normal(size=(4, 5))) for _ in cell.carry_type._fields])
    _, yb = step(params, cb, xb)
    for row in range(4):
        _, yr = numpy_step(cell, params, cell.carry_type(*[c[row] for c in cb]), np.asarray(xb[row]))
        np.testing.assert_allclose(yb[row], yr, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(CELL_CONFIGS))
def test_step_projected_equals_step(name):
    cell = CELL_CONFIGS[name](4)
    params = random_params(cell, 2, jax.random.key(2))
    carry = cell.carry_type(*[jnp.full((3, 4), 0.3) for _ in cell.carry_type._fields])
    x = jax.random.normal(jax.random.key(3), (3, 2), jnp.float64)
    a = cell.step(params, carry, x)
    b = cell.step_projected(params, carry, cell.project(params, x))
    np.testing.assert_array_equal(a[1], b[1])


def test_linear_rnn_is_the_counting_tutorial_recurrence():
    """identity activation, H = I = 1: s_k = s_{k-1} w_rec + x_k w_x (Roelants' tutorial)."""
    cell = rnn_jax.elman(1, "identity")
    params = rnn_jax.ElmanParams(jnp.array([[0.7]]), jnp.array([[1.3]]), jnp.array([0.0]))
    xs = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    s, want = 0.0, []
    for x in xs:
        s = s * 1.3 + x * 0.7
        want.append(s)
    _, ys = rnn_jax.unroll(cell, params, jnp.asarray(xs)[:, None])
    np.testing.assert_allclose(ys[:, 0], want, rtol=1e-14)


def test_lstm_forget_bias_shifts_only_the_forget_gate():
    key = jax.random.key(4)
    base = rnn_jax.lstm(6, bias_init="zeros").init(key, 3)
    shifted = rnn_jax.lstm(6, forget_bias=1.0, bias_init="zeros").init(key, 3)
    expected = np.zeros(24, np.float32)
    expected[6:12] = 1.0
    np.testing.assert_array_equal(shifted.b - base.b, expected)
    np.testing.assert_array_equal(shifted.w_hh, base.w_hh)


def test_paper_init_schemes_statistics():
    key = jax.random.key(5)
    for scheme, std, act in [("sigmoid", 0.01, "sigmoid"), ("basic_tanh", 0.1, "tanh")]:
        cell = rnn_jax.elman(200, scheme=scheme)
        assert cell.activation == act
        p = cell.init(key, 100)
        for w in (p.w_ih, p.w_hh):
            assert abs(float(jnp.std(w)) / std - 1) < 0.02
            assert abs(float(jnp.mean(w))) < 4 * std / np.sqrt(w.size)
        np.testing.assert_array_equal(p.b, 0)


def test_smart_tanh_is_sparse_with_spectral_radius_095():
    cell = rnn_jax.elman(50, scheme="smart_tanh")
    p = cell.init(jax.random.key(6), 6)
    w = np.asarray(p.w_hh, np.float64)
    np.testing.assert_array_equal((w != 0).sum(axis=1), 15)  # 15 non-zeros per row (original code)
    np.testing.assert_allclose(np.max(np.abs(np.linalg.eigvals(w))), 0.95, rtol=1e-5)
    assert abs(float(jnp.std(p.w_ih)) / 0.01 - 1) < 0.1  # inputs N(0, 0.01²) under smart_tanh
    assert cell.activation == "tanh"


def test_uniform_and_orthogonal_initialisers():
    key = jax.random.key(7)
    w = initializers.pytorch_default(64)(key, (500, 256))
    bound = 1 / np.sqrt(64)
    assert float(jnp.max(jnp.abs(w))) <= bound
    assert float(jnp.max(jnp.abs(w))) > 0.99 * bound
    q = np.asarray(initializers.orthogonal(key, (8, 24), jnp.float64))
    for k in range(3):
        block = q[:, 8 * k:8 * (k + 1)]
        np.testing.assert_allclose(block.T @ block, np.eye(8), atol=1e-12)


def test_init_is_deterministic_and_key_dependent():
    cell = rnn_jax.gru(4)
    a = cell.init(jax.random.key(0), 3)
    b = cell.init(jax.random.key(0), 3)
    c = cell.init(jax.random.key(1), 3)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)
    # the legacy uint32[2] keys work too and agree with themselves
    d = cell.init(jax.random.PRNGKey(0), 3)
    assert all(np.isfinite(leaf).all() for leaf in d)


def test_cells_compare_and_hash_by_configuration_so_equal_cells_compile_once():
    """Two cells built alike are equal and hash alike (a jit static argument traces once for
    both); any difference of configuration makes them unequal (a second trace)."""
    same = [rnn_jax.lstm(4, forget_bias=1.0), rnn_jax.lstm(4, forget_bias=jnp.ones(4)[0] * 1.0)]
    assert same[0] == same[1] and hash(same[0]) == hash(same[1])
    assert rnn_jax.elman(4) == rnn_jax.elman(4, "tanh") == rnn_jax.make("elman", 4)
    s_in, s_rec, s_act = initializers.PAPER_SCHEMES["basic_tanh"]
    assert rnn_jax.elman(4, scheme="basic_tanh") == rnn_jax.elman(4, s_act, input_init=s_in, recurrent_init=s_rec,
                                                                  bias_init="zeros")
    different = [rnn_jax.lstm(4), rnn_jax.lstm(5), rnn_jax.lstm(4, forget_bias=1.0), rnn_jax.gru(4), rnn_jax.mgu(4),
                 rnn_jax.elman(4), rnn_jax.elman(4, "relu"), rnn_jax.pascanu(4), rnn_jax.lstm(4, bias_init="zeros"),
                 rnn_jax.lstm(4, forget_bias=np.array([1.0, 0.0, 0.0, 0.0])), rnn_jax.lstm(4).replace(reverse_rule=None)]
    for i, a in enumerate(different):
        for j, b in enumerate(different):
            assert (a == b) == (i == j), (a, b)
    traces = []

    @partial(jax.jit, static_argnums=0)
    def first_output(cell, params, x):
        traces.append(cell.kind)
        return cell.step(params, cell.initial_carry(x.shape[:-1], x.dtype), x)[1]

    params = same[0].init(jax.random.key(0), 3)
    x = jnp.ones((2, 3), jnp.float32)
    first_output(same[0], params, x)
    first_output(same[1], params, x)
    first_output(rnn_jax.lstm(4, forget_bias=1.0), params, x)
    assert traces == ["lstm"]
    first_output(rnn_jax.lstm(4), params, x)
    assert traces == ["lstm", "lstm"]


def test_a_cell_is_immutable_and_replace_names_its_fields():
    cell = rnn_jax.gru(3)
    with pytest.raises(AttributeError, match="immutable"):
        cell.hidden_size = 4
    with pytest.raises(TypeError, match="expected fields among"):
        cell.replace(colour="red")
    import copy

    assert copy.copy(cell) is cell and copy.deepcopy({"cell": cell})["cell"] is cell


@pytest.mark.parametrize("name", ["elman-tanh", "elman-relu", "pascanu-tanh", "pascanu-sigmoid"])
def test_recurrence_vjp_is_the_transposed_step_jacobian(name):
    """δ J_k of the Elman-type recurrences against the brute-force Jacobian of the step, and d_z
    against the autodiff cotangent of the step's pre-activation."""
    cell = CELL_CONFIGS[name](5)
    params = random_params(cell, 3, jax.random.key(2))
    rng = np.random.default_rng(1)
    previous = jnp.asarray(rng.normal(size=5))
    xp = jnp.asarray(rng.normal(size=3)) @ params.w_ih + params.b
    delta = jnp.asarray(rng.normal(size=5))
    step = lambda h: cell.step_projected(params, cell.carry_type(h), xp)[0].hidden
    act = activations.get(cell.activation)
    state = step(previous)
    d_z, v = rnn_jax.recurrence_vjp(cell, delta, lambda d: d @ params.w_hh.T, output=act.fn(state) if
                                    name.startswith("pascanu") else state, previous_output=act.fn(previous))
    np.testing.assert_allclose(v, delta @ jax.jacfwd(step)(previous), rtol=1e-12, atol=1e-12)
    z = previous @ params.w_hh + xp if name.startswith("elman") else act.fn(previous) @ params.w_hh + xp
    from_z = lambda zz: cell.combine(params, cell.carry_type(previous), zz, 0.0)[0].hidden  # the carry from z
    np.testing.assert_allclose(d_z, jax.vjp(from_z, z)[1](delta)[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="expected an Elman-type cell"):
        rnn_jax.recurrence_vjp(rnn_jax.gru(5), delta, lambda d: d, output=state)
