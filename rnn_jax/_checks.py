"""Argument checks that fail at trace time with a message naming what was expected.

Every public entry point validates shapes, ranks and dtypes with these helpers
before any computation is staged, so a malformed call raises a ``ValueError`` or
``TypeError`` in Python (under ``jit`` too: shapes and dtypes are static) instead
of failing deep inside XLA or, worse, broadcasting into a silently wrong result.
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np


def describe(value: Any) -> str:
    """A short description of ``value`` for error messages: shape and dtype if array-like."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:200]


def check_choice(what: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming all of them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def check_positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def check_array(what: str, value: Any) -> None:
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise TypeError(f"{what}: expected an array, got {describe(value)}")


def check_floating(what: str, value: Any) -> None:
    check_array(what, value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(
            f"{what}: expected a floating-point array, got dtype {value.dtype} "
            f"(shape {tuple(value.shape)}); cast it, e.g. x.astype(jnp.float32)"
        )


def check_integer(what: str, value: Any) -> None:
    check_array(what, value)
    if not jnp.issubdtype(value.dtype, jnp.integer):
        raise TypeError(f"{what}: expected an integer array, got dtype {value.dtype} (shape {tuple(value.shape)})")


def check_key(what: str, key: Any) -> None:
    """Accept a typed PRNG key (``jax.random.key``) or a raw uint32[2] key (``PRNGKey``)."""
    if isinstance(key, (int, np.integer)) or not hasattr(key, "dtype"):
        raise TypeError(
            f"{what}: expected a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed), got {describe(key)}"
        )
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{what}: expected a single PRNG key (shape ()), got a key array of shape {key.shape}")
        return
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise TypeError(
            f"{what}: expected a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed), got {describe(key)}"
        )


def is_concrete(value: Any) -> bool:
    """True when ``value``'s contents are known at trace time (not a tracer)."""
    return not isinstance(value, jax.core.Tracer)


def check_all_finite(what: str, tree: Any) -> None:
    """Raise if a concrete pytree holds NaN or Inf; a no-op for traced values."""
    for leaf in jax.tree_util.tree_leaves(tree):
        if is_concrete(leaf) and hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
            if not bool(np.all(np.isfinite(np.asarray(leaf)))):
                raise ValueError(f"{what}: contains NaN or Inf ({describe(leaf)})")
