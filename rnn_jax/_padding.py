"""The padding rule every scan over a cell follows (``unroll``, the hand reverse pass, the
diagnostics; the fused engine uses :func:`valid_at`): at a step ``t >= length`` the carry
is kept and the output is zero. In a reverse pass the same selection passes the carry's
cotangent through a padded step and zeroes that step's own.

:func:`rnn_jax.unroll.python_unroll` spells the rule out again on purpose: it is the
independent reference the scans are tested against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def valid_at(t, lengths):
    """``(*batch, 1)`` booleans: is step ``t`` within each sequence's length."""
    return (t < lengths)[..., None]


def valid_steps(ts, lengths):
    """``(len(ts), *batch, 1)`` booleans: :func:`valid_at` for each step of ``ts`` at once."""
    return valid_at(ts.reshape((-1,) + (1,) * lengths.ndim), lengths)


def hold_padded(valid, new_carry, carry, y):
    """``(carry', y')``: the new carry and output where ``valid``, else the old carry and 0
    (``y`` may be a pytree: the reverse pass's cotangent blocks)."""
    new_carry = jax.tree_util.tree_map(lambda n, o: jnp.where(valid, n, o), new_carry, carry)
    return new_carry, jax.tree_util.tree_map(lambda a: jnp.where(valid, a, jnp.zeros_like(a)), y)
