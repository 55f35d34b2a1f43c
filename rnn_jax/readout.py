"""A linear readout ``y = h @ w + b`` from the hidden state to the outputs."""

from __future__ import annotations

from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp

from rnn_jax import initializers
from rnn_jax._checks import (
    UserTypeError, UserValueError, check_float_dtype, check_floating, check_key, check_positive_int, describe,
)


class ReadoutParams(NamedTuple):
    """w: (hidden_size, output_size); b: (output_size,)."""

    w: jax.Array
    b: jax.Array


def readout_init(
    key: jax.Array,
    hidden_size: int,
    output_size: int,
    *,
    weight_init: Union[str, initializers.Initializer] = "uniform",
    bias_init: Union[str, initializers.Initializer] = "zeros",
    dtype=jnp.float32,
) -> ReadoutParams:
    """Initialise a readout; ``weight_init`` ``"sigmoid"`` gives the paper's N(0, 0.01²)."""
    check_key("readout_init key", key)
    check_positive_int("readout hidden_size", hidden_size)
    check_positive_int("readout output_size", output_size)
    dtype = check_float_dtype("readout_init dtype", dtype)
    w_init = initializers.resolve("readout weight_init", weight_init, hidden_size)
    b_init = initializers.resolve("readout bias_init", bias_init, hidden_size)
    k_w, k_b = jax.random.split(key)
    return ReadoutParams(w_init(k_w, (hidden_size, output_size), dtype), b_init(k_b, (output_size,), dtype))


def check_readout_params(params: Any, what: str = "readout params", hidden_size: Any = None, dtype: Any = None) -> None:
    """A :class:`ReadoutParams` with floating ``w`` ``(H, O)`` and ``b`` ``(O,)`` of one dtype;
    ``H`` and the dtype as given, when given (the cell's hidden size and parameter dtype)."""
    if not isinstance(params, ReadoutParams):
        raise UserTypeError(f"{what}: expected rnn_jax.ReadoutParams(w, b) (from readout_init), got {describe(params)}")
    check_floating(f"{what}.w", params.w)
    check_floating(f"{what}.b", params.b)
    w, b = params.w, params.b
    if w.ndim != 2 or tuple(b.shape) != tuple(w.shape[1:]) or (hidden_size is not None and w.shape[0] != hidden_size):
        rows = "hidden_size" if hidden_size is None else f"H={hidden_size}"
        raise UserValueError(
            f"{what}: expected w of shape ({rows}, output_size) and b of shape (output_size,), "
            f"got w {tuple(w.shape)} and b {tuple(b.shape)}"
        )
    if b.dtype != w.dtype:
        raise UserTypeError(f"{what}.b: expected dtype {w.dtype} like w, got {b.dtype}")
    if dtype is not None and w.dtype != dtype:
        raise UserTypeError(f"{what}.w: expected dtype {dtype} like the cell's parameters, got {w.dtype}")


def readout(params: ReadoutParams, hidden: jax.Array) -> jax.Array:
    """``hidden @ w + b``; hidden: ``(..., hidden_size)`` in the readout's dtype -> ``(..., output_size)``."""
    check_readout_params(params)
    check_floating("readout input", hidden)
    if hidden.ndim < 1 or hidden.shape[-1] != params.w.shape[0]:
        raise UserValueError(f"readout input: expected shape (..., {params.w.shape[0]}), got {tuple(hidden.shape)}")
    if hidden.dtype != params.w.dtype:
        raise UserTypeError(f"readout input: expected dtype {params.w.dtype} like the readout's weights, got {hidden.dtype}")
    return hidden @ params.w + params.b
