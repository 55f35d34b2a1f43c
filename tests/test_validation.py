"""Every malformed call to the core API fails at trace time with a message naming what was expected.

Each case is (description, thunk, exception type, regex the message must match). The thunks
run under ``jax.jit`` where the call is traceable, to show the error comes at trace time.
Every error is a :class:`rnn_jax._checks.UserError` (a ValueError or TypeError too).
tests/test_hostile.py has the hostile cases of issue #19 (labels, consistency, every module).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import losses
from rnn_jax._checks import UserError

H, I = 4, 3
CELL = rnn_jax.lstm(H)
P = CELL.init(jax.random.key(0), I)
ELMAN = rnn_jax.elman(H)
PE = ELMAN.init(jax.random.key(0), I)
XS = jnp.ones((2, 5, I), jnp.float32)


def jitted(f, *args):
    return lambda: jax.jit(f)(*args)


CASES = [
    # cells and their construction
    ("unknown activation", lambda: rnn_jax.elman(4, "softsign"), ValueError, r"unknown activation 'softsign'; expected one of .*'tanh'"),
    ("unknown initialiser", lambda: rnn_jax.elman(4, recurrent_init="glorot"), ValueError, r"unknown elman recurrent_init 'glorot'.*'orthogonal'"),
    ("unknown scheme", lambda: rnn_jax.elman(4, scheme="clever_tanh"), ValueError, r"unknown initialisation scheme 'clever_tanh'.*'smart_tanh'"),
    ("unknown cell kind", lambda: rnn_jax.make("transformer", 4), ValueError, r"unknown cell kind 'transformer'.*'lstm'"),
    ("zero hidden size", lambda: rnn_jax.gru(0), ValueError, r"gru hidden_size must be a positive integer, got 0"),
    ("float hidden size", lambda: rnn_jax.lstm(4.0), ValueError, r"lstm hidden_size must be a positive integer, got 4.0"),
    ("int as key", lambda: CELL.init(0, I), TypeError, r"expected a PRNG key .* got int 0"),
    ("batch of keys", lambda: CELL.init(jax.random.split(jax.random.key(0), 2), I), ValueError, r"expected a single PRNG key .* shape \(2,\)"),
    ("zero input size", lambda: CELL.init(jax.random.key(0), 0), ValueError, r"input_size must be a positive integer, got 0"),
    ("integer param dtype", lambda: CELL.init(jax.random.key(0), I, jnp.int32), TypeError, r"expected a floating dtype, got int32"),
    # step
    ("step: wrong feature size", jitted(lambda x: CELL.step(P, CELL.initial_carry((2,)), x), jnp.ones((2, 7))), ValueError, r"expected shape \(\.\.\., 3\), got \(2, 7\)"),
    ("step: integer input", lambda: CELL.step(P, CELL.initial_carry((2,)), jnp.ones((2, I), jnp.int32)), TypeError, r"expected a floating-point array, got dtype int32"),
    # unroll: xs
    ("rank-1 xs", jitted(lambda x: rnn_jax.unroll(CELL, P, x), jnp.ones((5,))), ValueError, r"expected rank 3 .* or rank 2 .* got array of shape \(5,\)"),
    ("rank-4 xs", jitted(lambda x: rnn_jax.unroll(CELL, P, x), jnp.ones((2, 5, 1, I))), ValueError, r"expected rank 3"),
    ("wrong feature count", jitted(lambda x: rnn_jax.unroll(CELL, P, x), jnp.ones((2, 5, I + 1))), ValueError, r"expected 3 features .* got shape \(2, 5, 4\)"),
    ("integer xs", lambda: rnn_jax.unroll(CELL, P, jnp.ones((2, 5, I), jnp.int32)), TypeError, r"xs: expected a floating-point array, got dtype int32"),
    ("xs dtype differs from params", lambda: rnn_jax.unroll(CELL, P, jnp.ones((2, 5, I), jnp.float64)), TypeError, r"expected dtype float32 to match the parameters, got float64"),
    ("empty sequence", jitted(lambda x: rnn_jax.unroll(CELL, P, x), jnp.ones((2, 0, I), jnp.float32)), ValueError, r"zero steps .* expected at least one"),
    ("xs not an array", lambda: rnn_jax.unroll(CELL, P, [[1.0, 2.0, 3.0]]), TypeError, r"xs: expected an array, got list"),
    # unroll: lengths
    ("length above T", lambda: rnn_jax.unroll(CELL, P, XS, lengths=np.array([5, 6])), ValueError, r"expected values in \[0, 5\] .* got values in \[5, 6\]"),
    ("negative length", lambda: rnn_jax.unroll(CELL, P, XS, lengths=np.array([-1, 2])), ValueError, r"expected values in \[0, 5\]"),
    ("float lengths", lambda: rnn_jax.unroll(CELL, P, XS, lengths=jnp.array([2.0, 3.0], jnp.float32)), TypeError, r"lengths: expected an integer array, got dtype float32"),
    ("lengths wrong shape", jitted(lambda n: rnn_jax.unroll(CELL, P, XS, lengths=n), jnp.array([1, 2, 3])), ValueError, r"lengths: expected shape \(2,\) .* got \(3,\)"),
    # unroll: params and carry
    ("params of another cell", lambda: rnn_jax.unroll(CELL, PE, XS), TypeError, r"expected parameters of type LSTMParams .* got ElmanParams"),
    ("params with wrong hidden size", lambda: rnn_jax.unroll(rnn_jax.lstm(5), P, XS), ValueError, r"params.w_ih: expected shape \(input_size, 20\), got \(3, 16\)"),
    ("params with mixed dtypes", lambda: rnn_jax.unroll(CELL, P._replace(b=P.b.astype(jnp.float64)), XS), TypeError, r"params.b: expected dtype float32 like w_ih, got float64"),
    ("carry of another cell", lambda: rnn_jax.unroll(CELL, P, XS, initial_carry=rnn_jax.RNNState(jnp.zeros((2, H)))), TypeError, r"expected a carry of type LSTMState .* got RNNState"),
    ("carry with wrong batch", lambda: rnn_jax.unroll(CELL, P, XS, initial_carry=CELL.initial_carry((3,))), ValueError, r"carry.hidden: expected shape \(2, 4\), got \(3, 4\)"),
    ("unroll factor 0", lambda: rnn_jax.unroll(CELL, P, XS, unroll=0), ValueError, r"unroll: expected a positive integer, got 0"),
    # losses and model
    ("xent with float labels", lambda: losses.softmax_cross_entropy(jnp.ones((2, 4)), jnp.ones((2,), jnp.float32)), TypeError, r"labels: expected an integer array, got dtype float32"),
    ("xent labels wrong shape", lambda: losses.softmax_cross_entropy(jnp.ones((2, 4)), jnp.ones((2, 4), jnp.int32)), ValueError, r"labels: expected shape \(2,\) .* got \(2, 4\)"),
    ("mse target shape", lambda: losses.mean_squared_error(jnp.ones((2, 1)), jnp.ones((2,))), ValueError, r"targets: expected shape \(2, 1\) like the predictions, got \(2,\)"),
    ("unknown loss", lambda: rnn_jax.model.loss(CELL, rnn_jax.model.init(jax.random.key(0), CELL, I, 1), XS, jnp.ones((2, 1)), loss="hinge"), ValueError, r"unknown loss 'hinge'; expected one of 'mse', 'xent'"),
    ("unknown 'on'", lambda: rnn_jax.model.loss(CELL, rnn_jax.model.init(jax.random.key(0), CELL, I, 1), XS, jnp.ones((2, 1)), on="first"), ValueError, r"unknown on 'first'; expected one of 'last', 'every'"),
    ("readout size mismatch", lambda: rnn_jax.readout(rnn_jax.readout_init(jax.random.key(0), 5, 2), jnp.ones((2, 4))), ValueError, r"readout input: expected shape \(\.\.\., 5\), got \(2, 4\)"),
]


@pytest.mark.parametrize("description,thunk,exc,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(description, thunk, exc, pattern):
    with pytest.raises(exc, match=pattern) as info:
        thunk()
    assert isinstance(info.value, UserError), "a check of the library's, not an error from deeper down"


def test_empty_batch_is_allowed_and_gives_empty_outputs():
    """A batch of zero sequences is not an error: outputs have a zero batch axis (documented)."""
    carry, ys = rnn_jax.unroll(CELL, P, jnp.ones((0, 5, I), jnp.float32))
    assert ys.shape == (0, 5, H) and carry.hidden.shape == (0, H)


def test_non_finite_values_at_valid_steps_propagate_visibly():
    """Documented behaviour: a NaN/Inf input or parameter is not masked or replaced; every output
    it reaches is non-finite (never a silently finite wrong number). Padding is the exception:
    see tests/test_properties.py (nothing in a padded step reaches outputs or gradients)."""
    xs = jnp.ones((2, 5, I), jnp.float32).at[0, 2, 1].set(jnp.nan)
    _, ys = rnn_jax.unroll(ELMAN, PE, xs)
    assert np.all(np.isfinite(ys[0, :2])) and np.all(np.isnan(ys[0, 2:])) and np.all(np.isfinite(ys[1]))
    bad = PE._replace(w_hh=PE.w_hh.at[0, 0].set(jnp.inf))
    _, ys = rnn_jax.unroll(ELMAN, bad, XS)
    assert not np.all(np.isfinite(ys))
