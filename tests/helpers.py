"""Shared test utilities: random parameters with non-zero biases, cell registry, error measures."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import rnn_jax

# Every cell configuration the parameterised tests run over. A new cell is tested by adding it here.
CELL_CONFIGS = {
    "elman-tanh": lambda h: rnn_jax.elman(h, "tanh"),
    "elman-sigmoid": lambda h: rnn_jax.elman(h, "sigmoid"),
    "elman-relu": lambda h: rnn_jax.elman(h, "relu"),
    "elman-identity": lambda h: rnn_jax.elman(h, "identity"),
    "pascanu-tanh": lambda h: rnn_jax.pascanu(h, "tanh"),
    "pascanu-sigmoid": lambda h: rnn_jax.pascanu(h, "sigmoid"),
    "lstm": lambda h: rnn_jax.lstm(h, forget_bias=1.0),
    "gru": lambda h: rnn_jax.gru(h),
    "mgu": lambda h: rnn_jax.mgu(h),
}


def random_params(cell, input_size, key, dtype=jnp.float64, scale=0.5):
    """Parameters with every entry (biases included) drawn N(0, scale²): no zero biases."""
    template = cell.init(jax.random.key(0), input_size, dtype)
    leaves, treedef = jax.tree_util.tree_flatten(template)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [scale * jax.random.normal(k, leaf.shape, dtype) for k, leaf in zip(keys, leaves)]
    )


def max_abs_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) if x.size else 0.0 for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))
