"""linear_recurrence against a NumPy loop, a closed form, finite differences and rnn_jax's identity Elman cell.

Everything in float64 (tests/conftest.py enables x64 and strict dtype promotion)
except the float32 agreement of the two methods.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import linear
from rnn_jax.linear import linear_recurrence

METHODS = ("sequential", "parallel")
# One compilation per case: unjitted, associative_scan dispatches (and compiles) dozens of small ops.
jitted = jax.jit(linear_recurrence, static_argnames=("axis", "reverse", "method"))


def loop_reference(a, x, h0=None, axis=0, reverse=False):
    """The recurrence step by step in NumPy float64: the definition, with no scan of any kind."""
    x, a = np.asarray(x, np.float64), np.asarray(a, np.float64)
    a = np.moveaxis(np.broadcast_to(a, x.shape), axis, 0)
    x = np.moveaxis(x, axis, 0)
    h = np.zeros(x.shape[1:]) if h0 is None else np.broadcast_to(np.asarray(h0, np.float64), x.shape[1:])
    out = np.empty_like(x)
    for t in reversed(range(len(x))) if reverse else range(len(x)):
        h = a[t] * h + x[t]
        out[t] = h
    return np.moveaxis(out, 0, axis)


def rel_err(ref, other):
    ref, other = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    return float(np.max(np.abs(ref - other)) / np.max(np.abs(ref)))


def _normal(seed, shape, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _decay(seed, shape, dtype=np.float64):
    """Decays in (-1, 1), negative ones included, so the states neither die out nor blow up over these lengths."""
    return np.random.default_rng(seed).uniform(-0.99, 0.99, shape).astype(dtype)


# (x shape, time axis, a shape, h0 shape or None): scalar, channels, per-step decays, batch dims
CASES = {
    "scalar-constant": ((37,), 0, (), None),
    "scalar-per-step": ((37,), 0, (37,), ()),
    "one-step": ((1, 3), 0, (3,), (3,)),
    "channels-constant": ((33, 5), 0, (5,), (5,)),
    "channels-per-step": ((33, 5), 0, (33, 5), None),
    "batch-time-channels-shared-decay": ((3, 29, 4), 1, (29, 4), (3, 4)),
    "batch-time-channels-per-sequence": ((3, 29, 4), 1, (3, 29, 4), (4,)),
    "time-last": ((2, 3, 31), -1, (3, 1), (2, 3)),
}


@pytest.mark.parametrize("reverse", (False, True), ids=("forward", "reverse"))
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", METHODS)
def test_equals_numpy_loop_in_float64(method, case, reverse):
    x_shape, axis, a_shape, h0_shape = CASES[case]
    x, a = _normal(0, x_shape), _decay(1, a_shape)
    h0 = None if h0_shape is None else _normal(2, h0_shape)
    h = jitted(jnp.asarray(a), jnp.asarray(x), None if h0 is None else jnp.asarray(h0), axis=axis, reverse=reverse, method=method)
    assert h.shape == x.shape and h.dtype == jnp.float64
    assert rel_err(loop_reference(a, x, h0, axis, reverse), h) <= 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_constant_scalar_decay_closed_form(method):
    """h_t = sum_{k<=t} a^{t-k} x_k + a^{t+1} h0: a lower-triangular matrix of powers times x."""
    t_len, a, h0 = 40, 0.93, 0.7
    x = _normal(3, (t_len,))
    t, k = np.arange(t_len)[:, None], np.arange(t_len)[None, :]
    powers = np.where(k <= t, a ** np.maximum(t - k, 0).astype(np.float64), 0.0)
    expected = powers @ x + a ** (np.arange(t_len) + 1.0) * h0
    h = jitted(jnp.asarray(a), jnp.asarray(x), jnp.asarray(h0), method=method)
    assert rel_err(expected, h) <= 1e-12
    # reversed: h_t = sum_{k>=t} a^{k-t} x_k + a^{T-t} h0
    expected_rev = powers.T @ x + a ** (t_len - np.arange(t_len, dtype=np.float64)) * h0
    h_rev = jitted(jnp.asarray(a), jnp.asarray(x), jnp.asarray(h0), reverse=True, method=method)
    assert rel_err(expected_rev, h_rev) <= 1e-12


def test_float32_parallel_agrees_with_sequential():
    """Only the rounding differs: h and the gradient for x (itself a reversed recurrence) within 1e-5 relative."""
    a = jnp.asarray(np.random.default_rng(4).uniform(0.5, 0.999, (8,)).astype(np.float32))
    x = jnp.asarray(_normal(5, (1000, 8), np.float32))
    results = {}
    for method in METHODS:
        fn = lambda x, method=method: linear_recurrence(a, x, method=method)
        loss = lambda x, fn=fn: jnp.sum(fn(x) ** 2)
        results[method] = jax.jit(fn)(x), jax.jit(jax.grad(loss))(x)
        assert results[method][0].dtype == jnp.float32
    (h_seq, g_seq), (h_par, g_par) = results["sequential"], results["parallel"]
    assert rel_err(h_seq, h_par) <= 1e-5
    assert rel_err(g_seq, g_par) <= 1e-5
    # and both are float32 roundings of the float64 loop
    ref = loop_reference(np.asarray(a), np.asarray(x))
    assert rel_err(ref, h_seq) <= 1e-5 and rel_err(ref, h_par) <= 1e-5


GRAD_CASES = {
    "per-step": ((2, 17, 3), 1, (17, 3), (2, 3)),
    "constant": ((2, 17, 3), 1, (3,), (3,)),
}


@pytest.mark.parametrize("reverse", (False, True), ids=("forward", "reverse"))
@pytest.mark.parametrize("case", sorted(GRAD_CASES))
def test_gradients_agree_and_match_finite_differences(case, reverse):
    x_shape, axis, a_shape, h0_shape = GRAD_CASES[case]
    a, x, h0 = jnp.asarray(_decay(6, a_shape)), jnp.asarray(_normal(7, x_shape)), jnp.asarray(_normal(8, h0_shape))
    weights = jnp.asarray(_normal(9, x_shape))

    def loss(params, method):
        a, x, h0 = params
        h = linear_recurrence(a, x, h0, axis=axis, reverse=reverse, method=method)
        return jnp.sum(weights * h + 0.5 * h**3)  # non-quadratic: the gradient depends on h

    params = (a, x, h0)
    grads = {m: jax.jit(jax.grad(loss), static_argnums=1)(params, m) for m in METHODS}
    loss = jax.jit(loss, static_argnums=1)
    for g_seq, g_par in zip(grads["sequential"], grads["parallel"]):
        assert rel_err(g_seq, g_par) <= 1e-12
    eps = 1e-6
    rng = np.random.default_rng(10)
    for _ in range(3):
        direction = tuple(jnp.asarray(rng.standard_normal(p.shape)) for p in params)
        shifted = lambda s: tuple(p + s * d for p, d in zip(params, direction))
        numeric = (loss(shifted(eps), "sequential") - loss(shifted(-eps), "sequential")) / (2 * eps)
        for method in METHODS:
            analytic = sum(jnp.vdot(g, d) for g, d in zip(grads[method], direction))
            assert float(analytic) == pytest.approx(float(numeric), rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_vmap_and_jit_equal_the_batched_call(method):
    """vmap over sequences (each with its own decays) equals one call with a batch axis."""
    x, a, h0 = _normal(11, (4, 23, 3)), _decay(12, (4, 23, 3)), _normal(13, (4, 3))
    fn = lambda a, x, h0: linear_recurrence(a, x, h0, method=method)
    mapped = jax.jit(jax.vmap(fn))(jnp.asarray(a), jnp.asarray(x), jnp.asarray(h0))
    batched = jitted(jnp.asarray(a), jnp.asarray(x), jnp.asarray(h0), axis=1, method=method)
    assert rel_err(batched, mapped) <= 1e-12
    assert rel_err(loop_reference(a, x, h0, axis=1), mapped) <= 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_identity_elman_cell_with_one_unit_is_this_recurrence(method):
    """rnn_jax.unroll of elman(1, "identity") with w_ih = 1, w_hh = a, b = 0: h_t = a h_{t-1} + x_t."""
    a = jnp.asarray(0.97)
    xs = jnp.asarray(_normal(14, (3, 50, 1)))  # (batch, time, features = 1), unroll's default layout
    cell = rnn_jax.elman(1, "identity")
    params = rnn_jax.ElmanParams(w_ih=jnp.ones((1, 1)), w_hh=a.reshape(1, 1), b=jnp.zeros(1))
    _, ys = rnn_jax.unroll(cell, params, xs)
    h = jitted(a, xs, axis=1, method=method)
    assert rel_err(ys, h) <= 1e-12
    # and with the cell's initial carry as h0, run backwards
    h0 = jnp.asarray(_normal(15, (3, 1)))
    _, ys_rev = rnn_jax.unroll(cell, params, xs, initial_carry=rnn_jax.RNNState(h0), reverse=True)
    assert rel_err(ys_rev, jitted(a, xs, h0, axis=1, reverse=True, method=method)) <= 1e-12


def _uses_sequential_scan(fn, *args) -> bool:
    """The sequential path lowers to a while loop; the associative scan to none (slices, pads,
    elementwise ops). Lowered for this host: "auto" stages every platform's choice and lowering
    keeps this platform's (tests/test_lowering.py checks the other platforms')."""
    return "stablehlo.while" in jax.jit(fn).lower(*args).as_text()


def test_auto_follows_the_table_for_this_backend(monkeypatch):
    backend = jax.default_backend()
    x = jnp.asarray(_normal(16, (200, 2)))
    a = jnp.asarray(_decay(17, (2,)))
    threshold = linear.PARALLEL_FROM_LENGTH.get(backend, linear.PARALLEL_FROM_LENGTH["gpu"])
    expected = "parallel" if threshold is not None and 200 >= threshold else "sequential"
    assert linear.default_method(200) == expected
    # a new function each time: a traced function keeps the choice made when it was traced
    auto = lambda: lambda a, x: linear_recurrence(a, x, method="auto")
    explicit = lambda a, x: linear_recurrence(a, x, method=expected)
    assert _uses_sequential_scan(auto(), a, x) == _uses_sequential_scan(explicit, a, x) == (expected == "sequential")
    # editing the table changes what auto picks, on either side of the threshold
    monkeypatch.setitem(linear.PARALLEL_FROM_LENGTH, backend, 100)
    assert linear.default_method(200) == "parallel" and not _uses_sequential_scan(auto(), a, x)
    assert rel_err(loop_reference(a, x), jax.jit(auto())(a, x)) <= 1e-12
    assert linear.default_method(99) == "sequential" and _uses_sequential_scan(auto(), a, x[:99])
    monkeypatch.setitem(linear.PARALLEL_FROM_LENGTH, backend, None)
    assert linear.default_method(10**9) == "sequential" and _uses_sequential_scan(auto(), a, x)


def test_default_method_table_per_backend():
    table = linear.PARALLEL_FROM_LENGTH
    for backend in ("cpu", "gpu", "tpu", "some-new-backend"):
        threshold = table.get(backend, table["gpu"])
        for length in (1, 63, 64, 10**6):
            expected = "parallel" if threshold is not None and length >= threshold else "sequential"
            assert linear.default_method(length, backend) == expected, (backend, length)


def test_python_float_decay_and_h0():
    x = jnp.asarray(_normal(18, (20, 2)))
    expected = jitted(jnp.asarray(0.5), x, jnp.asarray(1.5), method="sequential")
    floats = jax.jit(lambda x: linear_recurrence(0.5, x, 1.5, method="parallel"))(x)  # 0.5 and 1.5 stay Python floats
    assert rel_err(expected, floats) <= 1e-12


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="fast"), ValueError, "unknown method 'fast'"),
        (dict(x=np.arange(10)), TypeError, "x: expected a floating-point array"),
        (dict(a=np.float32(0.5) * np.ones(3, np.float32)), TypeError, "a: expected dtype float64 to match x"),
        (dict(a=np.ones(3, np.int32)), TypeError, "a: expected a floating-point array"),
        (dict(a=np.ones((11, 3))), ValueError, r"a: expected a shape that broadcasts to x's shape \(10, 3\)"),
        (dict(a=np.ones((2, 10, 3))), ValueError, "a: expected a shape that broadcasts"),
        (dict(a=1), TypeError, "a: expected an array, got int"),
        (dict(h0=np.ones(4)), ValueError, r"h0: expected a shape that broadcasts to the state shape \(3,\)"),
        (dict(h0=np.ones((10, 3))), ValueError, "h0: expected a shape that broadcasts"),
        (dict(h0=np.ones(3, np.float32)), TypeError, "h0: expected dtype float64"),
        (dict(axis=2), ValueError, r"axis: expected an integer in \[-2, 2\)"),
        (dict(axis=True), ValueError, "axis: expected an integer"),
        (dict(x=np.ones((0, 3)), a=np.ones(3)), ValueError, "zero steps"),
        (dict(x=np.float64(1.0), a=np.float64(1.0)), ValueError, "x: expected at least one axis"),
    ],
)
def test_bad_input_raises_at_trace_time(kwargs, error, match):
    args = dict(a=np.full(3, 0.5), x=np.ones((10, 3)), h0=None)
    args.update(kwargs)
    method = args.pop("method", "sequential")
    axis = args.pop("axis", 0)
    to_jnp = lambda v: v if v is None or isinstance(v, int) else jnp.asarray(v)
    a, x, h0 = to_jnp(args["a"]), to_jnp(args["x"]), to_jnp(args["h0"])
    with pytest.raises(error, match=match):
        jax.jit(lambda x: linear_recurrence(a, x, h0, axis=axis, method=method))(x)
