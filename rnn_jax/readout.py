"""A linear readout ``y = h @ w + b`` from the hidden state to the outputs."""

from __future__ import annotations

from typing import NamedTuple, Union

import jax
import jax.numpy as jnp

from rnn_jax import initializers
from rnn_jax._checks import check_floating, check_key, check_positive_int


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
    w_init = initializers.resolve("readout weight_init", weight_init, hidden_size)
    b_init = initializers.resolve("readout bias_init", bias_init, hidden_size)
    k_w, k_b = jax.random.split(key)
    return ReadoutParams(w_init(k_w, (hidden_size, output_size), dtype), b_init(k_b, (output_size,), dtype))


def readout(params: ReadoutParams, hidden: jax.Array) -> jax.Array:
    """``hidden @ w + b``; hidden: ``(..., hidden_size)`` -> ``(..., output_size)``."""
    check_floating("readout input", hidden)
    if hidden.shape[-1] != params.w.shape[0]:
        raise ValueError(f"readout input: expected shape (..., {params.w.shape[0]}), got {tuple(hidden.shape)}")
    return hidden @ params.w + params.b
