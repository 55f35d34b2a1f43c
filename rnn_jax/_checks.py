"""Argument checks that fail at trace time with a message naming what was expected.

Every public entry point validates shapes, ranks and dtypes with these helpers
before any computation is staged, so a malformed call raises a ``ValueError`` or
``TypeError`` in Python (under ``jit`` too: shapes and dtypes are static) instead
of failing deep inside XLA or, worse, broadcasting into a silently wrong result.

The errors these checks raise are :class:`UserValueError` and :class:`UserTypeError`:
subclasses of ``ValueError`` / ``TypeError`` (so ``except ValueError`` keeps working)
and of :class:`UserError`, which marks an exception as *the caller's mistake, found by a
check* rather than a defect of the library. The command line prints a ``UserError`` as
one line and exits with status 2; any other exception is a bug and keeps its traceback.

Values, not only shapes, are checked when they are known at trace time (concrete
arrays, Python numbers). A traced value (under ``jit``, ``vmap``, ``grad``) cannot be
inspected; each function's docstring says what it does with one instead.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np


class UserError(Exception):
    """An argument the caller got wrong, reported by one of the library's checks.

    Every error raised by :mod:`rnn_jax`'s argument checks is a ``UserError`` and also a
    ``ValueError`` (:class:`UserValueError`) or a ``TypeError`` (:class:`UserTypeError`).
    """


class UserValueError(UserError, ValueError):
    """A value, shape or range the caller got wrong."""


class UserTypeError(UserError, TypeError):
    """A type or dtype the caller got wrong."""


def describe(value: Any) -> str:
    """A short description of ``value`` for error messages: shape and dtype if array-like,
    the fields' shapes for a NamedTuple of arrays (parameters, carries), else type and repr."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"array of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        short = lambda v: f"{v.dtype}{list(v.shape)}" if hasattr(v, "shape") and hasattr(v, "dtype") else type(v).__name__
        fields = ", ".join(f"{name}={short(v)}" for name, v in zip(value._fields, value))
        return f"{type(value).__name__}({fields})"[:200]
    return f"{type(value).__name__} {value!r}"[:200]


def check_choice(what: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming all of them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise UserValueError(f"unknown {what} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def is_concrete(value: Any) -> bool:
    """True when ``value``'s contents are known at trace time (not a tracer)."""
    return not isinstance(value, jax.core.Tracer)


def check_positive_int(what: str, value: Any) -> int:
    if isinstance(value, jax.core.Tracer):
        raise UserValueError(
            f"{what} must be a positive integer known at trace time (a static argument), got a traced value {value!r}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise UserValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def check_bool(what: str, value: Any) -> bool:
    """A flag: ``True`` or ``False`` (NumPy's ``bool_`` too), never a truthy string or number."""
    if not isinstance(value, (bool, np.bool_)):
        raise UserTypeError(f"{what}: expected True or False, got {describe(value)}")
    return bool(value)


def check_array(what: str, value: Any) -> None:
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise UserTypeError(f"{what}: expected an array, got {describe(value)}")


def check_floating(what: str, value: Any) -> None:
    check_array(what, value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise UserTypeError(
            f"{what}: expected a floating-point array, got dtype {value.dtype} "
            f"(shape {tuple(value.shape)}); cast it, e.g. x.astype(jnp.float32)"
        )


def check_integer(what: str, value: Any) -> None:
    check_array(what, value)
    if not jnp.issubdtype(value.dtype, jnp.integer):
        raise UserTypeError(f"{what}: expected an integer array, got dtype {value.dtype} (shape {tuple(value.shape)})")


def check_float_dtype(what: str, dtype: Any):
    """``jnp.dtype(dtype)`` if it is a floating dtype (a name such as ``"float32"`` works too), else raise."""
    try:
        resolved = jnp.dtype(dtype)
    except TypeError:
        raise UserTypeError(f"{what}: expected a floating dtype such as jnp.float32, got {dtype!r}") from None
    if not jnp.issubdtype(resolved, jnp.floating):
        raise UserTypeError(f"{what}: expected a floating dtype, got {resolved}")
    return resolved


def check_batch_shape(what: str, batch_shape: Any) -> tuple:
    """A batch shape: a tuple (or list) of non-negative integers; a single integer ``n`` means ``(n,)``."""
    if isinstance(batch_shape, (int, np.integer)) and not isinstance(batch_shape, bool):
        batch_shape = (batch_shape,)
    if not isinstance(batch_shape, (tuple, list)) or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in batch_shape
    ):
        raise UserTypeError(f"{what}: expected a tuple of non-negative sizes such as (32,), got {describe(batch_shape)}")
    return tuple(int(n) for n in batch_shape)


def check_real(what: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
               low_open: bool = False, allow_array: bool = False) -> None:
    """A real number (Python or NumPy scalar; an array too with ``allow_array``), finite, at least
    ``low`` (above it with ``low_open``) and at most ``high``. Traced values pass unchecked."""
    if isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise UserTypeError(f"{what}: expected a real number, got {describe(value)}")
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        if not allow_array and tuple(value.shape) != ():
            raise UserTypeError(f"{what}: expected a real number (a scalar), got {describe(value)}")
        if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
            raise UserTypeError(f"{what}: expected real numbers, got {describe(value)}")
        arr = np.asarray(value, np.float64)
    elif isinstance(value, (int, float, np.integer, np.floating)):
        arr = np.asarray(float(value))
    else:
        raise UserTypeError(f"{what}: expected a real number, got {describe(value)}")
    bad = ~np.isfinite(arr)
    if low is not None:
        bad |= (arr <= low) if low_open else (arr < low)
    if high is not None:
        bad |= arr > high
    if np.any(bad):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{']' if high is not None else ')'}"
        raise UserValueError(f"{what}: expected a finite number in {interval}, got {value!r}")


def check_key(what: str, key: Any) -> None:
    """Accept a typed PRNG key (``jax.random.key``) or a raw uint32[2] key (``PRNGKey``)."""
    if isinstance(key, (int, np.integer)) or not hasattr(key, "dtype"):
        raise UserTypeError(
            f"{what}: expected a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed), got {describe(key)}"
        )
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise UserValueError(f"{what}: expected a single PRNG key (shape ()), got a key array of shape {key.shape}")
        return
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise UserTypeError(
            f"{what}: expected a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed), got {describe(key)}"
        )


def as_lengths(lengths: Any) -> Any:
    """``lengths`` as an array: None stays None; a Python/NumPy integer or a list or tuple of
    them becomes a NumPy array (concrete, so checked at trace time even under ``jit``); arrays
    and tracers pass. The dtype and the shape are checked by the caller
    (:func:`check_integer`), so ``[1.5, 2]`` is refused there."""
    if lengths is None:
        return None
    if isinstance(lengths, (int, np.integer, list, tuple)) and not isinstance(lengths, bool):
        try:
            return np.asarray(lengths)
        except (TypeError, ValueError):
            raise UserTypeError(f"lengths: expected integers, got {describe(lengths)}") from None
    return lengths


def check_lengths_range(what: str, lengths: Any, time: int) -> None:
    """Concrete lengths must lie in ``[0, time]``; traced ones are not checked."""
    if lengths is not None and is_concrete(lengths) and lengths.size:
        values = np.asarray(lengths)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > time:
            raise UserValueError(f"{what}: expected values in [0, {time}] (the number of steps), got values in [{lo}, {hi}]")


def check_labels(what: str, labels: Any, classes: int, valid: Any = None) -> bool:
    """Class labels must lie in ``[0, classes)`` at every valid position.

    ``valid`` (same shape as ``labels``, or None for all positions) says which positions
    count: a padded position's label is arbitrary. Returns True when the labels were
    checked (they and ``valid`` are concrete), False when they could not be (traced).
    """
    if not is_concrete(labels) or (valid is not None and not is_concrete(valid)):
        return False
    values = np.asarray(labels)
    bad = (values < 0) | (values >= classes)
    if valid is not None:
        bad &= np.asarray(valid) != 0
    if np.any(bad):
        wrong = np.unique(values[bad])
        shown = ", ".join(str(v) for v in wrong[:8]) + (", ..." if wrong.size > 8 else "")
        raise UserValueError(
            f"{what}: class labels must lie in [0, {classes}) ({classes} classes, the size of the predictions' "
            f"last axis), got {shown} at {int(np.sum(bad))} valid position(s)"
        )
    return True


def all_finite(tree: Any) -> jax.Array:
    """Traced: True iff every entry of every leaf of ``tree`` is finite (True for an empty tree)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])) if leaves else jnp.array(True)

