"""Pascanu et al.'s vanishing-gradient regulariser Ω (eq. 9/10), as the authors' code computes it.

With ``δ_k = ∂E/∂s_k`` (the total derivative, :func:`rnn_jax.diagnostics.state_gradients`)
and the one-step backward map ``v_k = δ_k J_k`` (``J_k = ∂s_k/∂s_{k-1}``, row-vector
convention), for k = 1..T::

    elman   (h_k = σ(h_{k-1} @ w_hh + ...)):  v_k = (δ_k ⊙ σ'(h_k)) @ w_hh.T
    pascanu (x_k = σ(x_{k-1}) @ w_hh + ...):  v_k = (δ_k @ w_hh.T) ⊙ σ'(x_{k-1})

    r_k = ‖v_k‖² / ‖δ_k‖²,   valid where ‖δ_k‖² >= 1e-20,
    Ω   = mean over the valid (k, sequence) pairs of (r_k − 1)².

For elman, ``σ'`` is written in terms of the state, as in the code: tanh ``1 − h²``,
sigmoid ``h(1 − h)`` (identity 1, relu ``h > 0``). ``δ`` and the states are held
constant (``stop_gradient``), so Ω's gradient reaches only ``W_hh``; training adds
``α · ∂Ω/∂W_hh`` to the loss gradient (paper α = 4, :data:`PAPER_ALPHA`; the code's
default is 2, :data:`CODE_ALPHA`). Ω asks every Jacobian to preserve the norm of the
error signal in its direction, which counteracts vanishing.

Index convention. The code (``RNN.py`` in ``pascanur/trainingRNNs``) takes ``d_ht``
= ∂cost/∂(scan's state buffer), whose entries are ``h_0 .. h_T``, and pairs
``d_ht[1:]`` (``δ_1 .. δ_T``) with ``ht`` = the scan's outputs (``h_1 .. h_T``): the
same step ``k`` for δ and for ``σ'(h_k)``, which is exactly ``δ_k J_k`` above, k = 1..T.
We follow it: ``ratios[..., k-1]`` is ``r_k``. The code's denominator is the number
of valid pairs (``n_elems``); when no pair is valid we return Ω = 0 (the code would
divide by zero). Padded steps (``t >= length``) have ``δ = 0`` and so are never valid.
The paper's eq. 10 uses the ratio of norms, not of squared norms; the code (and
this module) uses squared norms.

Example::

    cell = rnn_jax.elman(50, scheme="smart_tanh")
    loss, omega_value, grads = loss_and_grad_with_omega(cell, params, xs, labels, 4.0, loss="xent")
    # grads == jax.grad(rnn_jax.model.loss)(...) except grads.cell.w_hh += 4 * ∂Ω/∂W_hh

References:
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
  networks", ICML 2013, section 3.3; code: github.com/pascanur/trainingRNNs.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import activations
from rnn_jax._checks import UserTypeError, UserValueError, check_floating, check_real, describe
from rnn_jax.cells import Cell, check_cell as _check_is_cell, recurrence_vjp
from rnn_jax.diagnostics import perturbed_loss, state_gradients, zero_perturbations
from rnn_jax.model import ModelParams

Array = jax.Array

PAPER_ALPHA = 4.0  # the paper's weight of Ω (temporal-order experiments)
CODE_ALPHA = 2.0  # the default of the authors' code
BOUND = 1e-20  # the code's `bound`: steps with ‖δ_k‖² below it are left out

class OmegaAux(NamedTuple):
    """Side results of :func:`omega`.

    loss: () the loss E.
    ratios: ``(batch, time)``: ``r_k = ‖v_k‖²/‖δ_k‖²`` (set to 1 where not valid).
    valid: ``(batch, time)`` bool: ``‖δ_k‖² >= bound``.
    fraction_valid: () mean of ``valid``, the code's "steps in the past" log entry.
    """

    loss: Array
    ratios: Array
    valid: Array
    fraction_valid: Array


def check_cell(cell: Cell) -> None:
    """Raise unless Ω is defined for ``cell``: an elman or pascanu cell."""
    _check_is_cell(cell)
    if cell.traits.recurrence is None:
        raise UserValueError(
            f"Ω is defined for Elman-type cells whose one-step Jacobian is diag(σ')·W_hh "
            f"(cells 'elman', 'pascanu': Traits.recurrence set); got a {cell.kind!r} cell"
        )
    if cell.traits.recurrence == "activated" and cell.reverse_rule is None:
        raise UserValueError(f"Ω of an Elman cell uses its ReverseRule (its one-step Jacobian); got {cell!r} without one")
    activations.get(cell.activation)  # σ' known: raises a UserValueError naming the known ones


def omega_ratios(deltas: Array, v: Array, bound: float = BOUND):
    """``r = ‖v‖²/‖δ‖²`` over the last axis where ``valid = ‖δ‖² >= bound``, 1 elsewhere: ``(r, valid,
    safe)``, ``safe`` the denominator (1 where not valid, so that no NaN reaches a gradient)."""
    delta_sq = jnp.sum(deltas * deltas, axis=-1)
    valid = delta_sq >= bound
    safe = jnp.where(valid, delta_sq, 1)
    return jnp.where(valid, jnp.sum(v * v, axis=-1) / safe, 1), valid, safe


def omega_terms(cell: Cell, w_hh: Array, deltas: Array, states: Array, *, bound: float = BOUND):
    """Ω from given ``δ_k`` and states; differentiable with respect to ``w_hh`` only.

    Args:
      cell: an elman or pascanu cell.
      w_hh: ``(H, H)`` the recurrent matrix (``(in, out)`` layout).
      deltas: ``(..., time, H)``: ``δ_k = ∂E/∂s_k`` (``StateGradients.deltas.hidden``).
      states: ``(..., time, H)``: ``s_k`` after each step (``StateGradients.carries.hidden``);
        for pascanu the state before step 1 is taken to be 0 (the default initial carry).
      bound: pairs with ``‖δ_k‖² < bound`` are left out; a positive finite number (at 0,
        a zero ``δ_k`` would divide 0 by 0). A traced bound is not checked.

    Returns:
      ``(omega, ratios, valid)``, ratios and valid ``(..., time)``.
    """
    check_cell(cell)
    check_real("bound", bound, low=0.0, low_open=True)
    for name, a in (("w_hh", w_hh), ("deltas", deltas), ("states", states)):
        check_floating(f"omega_terms {name}", a)
    h = cell.hidden_size
    if w_hh.shape != (h, h):
        raise UserValueError(f"omega_terms w_hh: expected shape {(h, h)}, got {describe(w_hh)}")
    if deltas.ndim < 2 or deltas.shape[-1] != h or states.shape != deltas.shape:
        raise UserValueError(
            f"omega_terms: expected deltas and states of the same shape (..., time, {h}), "
            f"got deltas {describe(deltas)} and states {describe(states)}"
        )
    deltas = jax.lax.stop_gradient(deltas)
    states = jax.lax.stop_gradient(states)
    previous = jnp.concatenate([jnp.zeros_like(states[..., :1, :]), states[..., :-1, :]], axis=-2)
    act = activations.get(cell.activation)
    _, v = recurrence_vjp(cell, deltas, lambda d: d @ w_hh.T, output=states, previous_output=act.fn(previous))  # δ_k J_k
    ratios, valid, _ = omega_ratios(deltas, v, bound)
    count = jnp.sum(valid)
    omega = jnp.sum((ratios - 1) ** 2) / jnp.maximum(count, 1).astype(w_hh.dtype)  # invalid pairs add 0
    return omega, ratios, valid


def _check_model(cell: Cell, params) -> None:
    check_cell(cell)
    if not isinstance(params, ModelParams):
        raise UserTypeError(f"Ω: expected ModelParams(cell=..., readout=...), got {type(params).__name__}")


def omega(
    cell: Cell,
    params: ModelParams,
    xs: Array,
    targets: Array,
    *,
    loss: str = "mse",
    on: str = "last",
    lengths: Optional[Array] = None,
    bound: float = BOUND,
):
    """Ω of the model on a minibatch, and :class:`OmegaAux`.

    Arguments as in :func:`rnn_jax.model.loss` (``xs`` batch-major or unbatched);
    ``bound`` as in :func:`omega_terms`. ``jax.grad`` of the returned Ω with respect to ``params`` is zero everywhere but
    ``params.cell.w_hh`` (δ and the states are constants). jit- and vmap-able.
    """
    _check_model(cell, params)
    check_real("bound", bound, low=0.0, low_open=True)
    sg = state_gradients(cell, params, xs, targets, loss=loss, on=on, lengths=lengths)
    value, ratios, valid = omega_terms(cell, params.cell.w_hh, sg.deltas.hidden, sg.carries.hidden, bound=bound)
    return value, OmegaAux(sg.loss, ratios, valid, jnp.mean(valid.astype(ratios.dtype)))


def loss_and_grad_with_omega(
    cell: Cell,
    params: ModelParams,
    xs: Array,
    targets: Array,
    alpha: float = PAPER_ALPHA,
    *,
    loss: str = "mse",
    on: str = "last",
    lengths: Optional[Array] = None,
    bound: float = BOUND,
):
    """The loss E, Ω, and the regularised gradient ``∂E/∂θ + α ∂Ω/∂W_hh`` (MSGD-CR's gradient).

    One forward and one backward pass give ``∂E/∂θ`` and every ``δ_k`` together; Ω and
    its gradient with respect to ``W_hh`` are then cheap. Only ``grads.cell.w_hh``
    differs from ``jax.grad(rnn_jax.model.loss)``. jit- and vmap-able.

    ``alpha``: Ω's weight, a finite number ``>= 0`` (0: no regularisation); a traced
    (per-member, under ``vmap``) alpha cannot be checked and is used as given. ``bound``
    as in :func:`omega_terms`.

    Returns:
      ``(loss, omega, grads)``, grads a :class:`~rnn_jax.model.ModelParams`.
    """
    _check_model(cell, params)
    check_real("alpha", alpha, low=0.0, allow_array=True)
    check_real("bound", bound, low=0.0, low_open=True)
    grad_fn = jax.value_and_grad(
        lambda p, eps: perturbed_loss(cell, p, xs, targets, eps, loss=loss, on=on, lengths=lengths),
        argnums=(0, 1),
        has_aux=True,
    )
    (value, carries), (grads, deltas) = grad_fn(params, zero_perturbations(cell, xs, params.cell.w_ih.dtype))
    w_hh = params.cell.w_hh
    omega_value, omega_grad = jax.value_and_grad(
        lambda w: omega_terms(cell, w, deltas.hidden, carries.hidden, bound=bound)[0]
    )(w_hh)
    w_grad = grads.cell.w_hh + jnp.asarray(alpha, w_hh.dtype) * omega_grad
    return value, omega_value, grads._replace(cell=grads.cell._replace(w_hh=w_grad))
