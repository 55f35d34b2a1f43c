"""Activation functions with hand-written derivatives.

The derivatives are written out (not taken with autodiff) because the BPTT
reference and the gradient diagnostics must not depend on ``jax.grad``.

Each entry maps a name to ``(f, df)`` where ``df(pre)`` is ``f'`` evaluated at
the pre-activation ``pre``. ``gamma`` is the bound ``max |f'|`` that enters the
paper's sufficient condition for vanishing gradients (largest singular value of
``W_rec`` below ``1 / gamma``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from rnn_jax._checks import check_choice


class Activation(NamedTuple):
    name: str
    fn: Callable[[jax.Array], jax.Array]
    derivative: Callable[[jax.Array], jax.Array]  # f'(pre), elementwise
    gamma: float  # sup |f'|, used by the vanishing-gradient condition


def _sigmoid_derivative(pre):
    s = jax.nn.sigmoid(pre)
    return s * (1 - s)


def _tanh_derivative(pre):
    t = jnp.tanh(pre)
    return 1 - t * t


ACTIVATIONS = {
    "tanh": Activation("tanh", jnp.tanh, _tanh_derivative, 1.0),
    "sigmoid": Activation("sigmoid", jax.nn.sigmoid, _sigmoid_derivative, 0.25),
    "relu": Activation("relu", jax.nn.relu, lambda pre: (pre > 0).astype(pre.dtype), 1.0),
    "identity": Activation("identity", lambda pre: pre, jnp.ones_like, 1.0),
}


def get(name: str) -> Activation:
    """Look up an activation by name (``tanh``, ``sigmoid``, ``relu``, ``identity``)."""
    return ACTIVATIONS[check_choice("activation", name, ACTIVATIONS)]
