"""Activation functions with hand-written derivatives.

The derivatives are written out (not taken with autodiff) because the BPTT
reference and the gradient diagnostics must not depend on ``jax.grad``.

Each entry maps a name to ``(f, df)`` where ``df(pre)`` is ``f'`` evaluated at
the pre-activation ``pre``. ``gamma`` is the bound ``max |f'|`` that enters the
paper's sufficient condition for vanishing gradients (largest singular value of
``W_rec`` below ``1 / gamma``). ``derivative_from_output(y)`` is the same ``f'`` written
in terms of the output ``y = f(pre)`` (``1 - y²`` for tanh): a reverse pass that keeps
only the outputs (:mod:`rnn_jax.hand_scan`, :mod:`rnn_jax.repro.fused`, :mod:`rnn_jax.repro.regularizer`) needs nothing else.
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


def _activation(name, fn, derivative_from_output, gamma) -> Activation:
    """``derivative(pre)`` is ``derivative_from_output(fn(pre))``: one formula per activation."""
    return Activation(name, fn, lambda pre: derivative_from_output(fn(pre)), gamma, derivative_from_output)


ACTIVATIONS = {
    "tanh": _activation("tanh", jnp.tanh, lambda y: 1 - y * y, 1.0),
    "sigmoid": _activation("sigmoid", jax.nn.sigmoid, lambda y: y * (1 - y), 0.25),
    # relu(pre) > 0 exactly when pre > 0
    "relu": _activation("relu", jax.nn.relu, lambda y: (y > 0).astype(y.dtype), 1.0),
    "identity": _activation("identity", lambda pre: pre, jnp.ones_like, 1.0),
}


def get(name: str) -> Activation:
    """Look up an activation by name (``tanh``, ``sigmoid``, ``relu``, ``identity``)."""
    return ACTIVATIONS[check_choice("activation", name, ACTIVATIONS)]
