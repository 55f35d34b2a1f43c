"""Activation functions with hand-written derivatives.

The derivatives are written out (not taken with autodiff) because the BPTT
reference and the gradient diagnostics must not depend on ``jax.grad``.

Each entry maps a name to ``(f, df)`` where ``df(pre)`` is ``f'`` evaluated at
the pre-activation ``pre``. ``gamma`` is the bound ``max |f'|`` that enters the
paper's sufficient condition for vanishing gradients (largest singular value of
``W_rec`` below ``1 / gamma``). ``derivative_from_output(y)`` is the same ``f'`` written
in terms of the output ``y = f(pre)`` (``1 - y²`` for tanh): a reverse pass that keeps
only the outputs (:mod:`rnn_jax.hand_scan` for the Elman cell) needs nothing else.
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
    derivative_from_output: Callable[[jax.Array], jax.Array]  # f'(pre) as a function of f(pre)


def _sigmoid_derivative(pre):
    s = jax.nn.sigmoid(pre)
    return s * (1 - s)


def _tanh_derivative(pre):
    t = jnp.tanh(pre)
    return 1 - t * t


ACTIVATIONS = {
    "tanh": Activation("tanh", jnp.tanh, _tanh_derivative, 1.0, lambda y: 1 - y * y),
    "sigmoid": Activation("sigmoid", jax.nn.sigmoid, _sigmoid_derivative, 0.25, lambda y: y * (1 - y)),
    # relu(pre) > 0 exactly when pre > 0
    "relu": Activation("relu", jax.nn.relu, lambda pre: (pre > 0).astype(pre.dtype), 1.0,
                       lambda y: (y > 0).astype(y.dtype)),
    "identity": Activation("identity", lambda pre: pre, jnp.ones_like, 1.0, jnp.ones_like),
}


def get(name: str) -> Activation:
    """Look up an activation by name (``tanh``, ``sigmoid``, ``relu``, ``identity``)."""
    return ACTIVATIONS[check_choice("activation", name, ACTIVATIONS)]
