"""Gradient diagnostics: the quantities the vanishing/exploding-gradient argument is made of.

Notation (the paper's, 1-based): the carry after step ``k`` is ``s_k`` (``k = 1..T``),
``s_0`` is the initial carry. For :func:`~rnn_jax.cells.elman` ``s_k = h_k``; for
:func:`~rnn_jax.cells.pascanu` it is the pre-activation state ``x_k`` of eq. 2; for
the LSTM it is the pair ``(h_k, c_k)``. Arrays are batch-major like ``xs``
(``(batch, time, ...)``, or ``(time, ...)`` for one unbatched sequence); index
``k - 1`` along the time axis holds step ``k``.

* :func:`state_gradients` -- ``δ_k = ∂E/∂s_k``, the *total* derivative of the loss
  with respect to each step's carry (through the readout at step ``k`` and through
  every later step), and ``‖δ_k‖``: the "gradient over time" of the counting
  tutorial (Roelants, "How to implement a recurrent neural network, part 1"), which for the linear one-unit RNN is ``δ_k = δ_T w_rec^(T-k)``.
* :func:`step_jacobians` -- ``J_k = ∂s_k/∂s_{k-1}`` by autodiff, and
  :func:`closed_form_step_jacobians` from the derivatives written by hand: the cell's
  :class:`~rnn_jax.cells.ReverseRule` (elman, ``h_k = f(h_{k-1} @ w_hh + ...)``:
  ``diag(f'(pre_k)) W_hh``, with the ``(in, out)`` layout ``diag(f'(pre_k)) @ w_hh.T``;
  LSTM, GRU) and ``W_rec diag(σ'(x_{k-1}))`` (pascanu, ``w_hh.T @ diag(σ'(x_{k-1}))``).
* :func:`jacobian_product` / :func:`jacobian_product_singular_values` --
  ``∂s_end/∂s_start = J_end ⋯ J_{start+1}`` and its singular values.
* :func:`spectral_radius`, :func:`largest_singular_value`, :func:`vanishing_condition`
  -- the conditions of Pascanu et al. (2013), section 2.1: with ``γ = sup|σ'|``
  (1/4 for the sigmoid, 1 for tanh), a largest singular value of ``W_hh`` below
  ``1/γ`` is *sufficient* for the long-term components to vanish, since then
  ``‖∏_m J‖ ≤ (γ σ_max)^m → 0``; conversely ``γ σ_max > 1`` is *necessary* for them
  to explode. For a linear RNN (γ = 1, ``J = W``) the sharp version is the spectral
  radius: ``ρ(W) < 1`` gives vanishing, ``ρ(W) > 1`` is necessary for explosion
  (the notes "RNN的几个难点", on the difficulties of training RNNs), because ``‖W^m‖^(1/m) → ρ(W)``.

Example::

    cell = rnn_jax.elman(50, scheme="basic_tanh")
    params = rnn_jax.model.init(jax.random.key(0), cell, input_size=6, output_size=4)
    sg = state_gradients(cell, params, xs, labels, loss="xent", on="last")
    curve = sg.norms.mean(axis=0)                 # (time,): mean over the batch of ‖δ_k‖
    js = step_jacobians(cell, params, xs[0])      # (time, 50, 50)
    jacobian_product_singular_values(js, 0, xs.shape[1])   # of ∂h_T/∂h_0

References:
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
  networks", ICML 2013, sections 2 and 3.3.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import activations
from rnn_jax import losses as _losses
from rnn_jax._checks import UserTypeError, UserValueError, as_lengths, check_choice, check_floating, describe
from rnn_jax.cells import Cell, check_cell, params_dtype, recurrence_vjp
from rnn_jax.model import ON, ModelParams, check_model_params, loss_from_outputs
from rnn_jax.unroll import masked_scan, unroll

Array = jax.Array


# ---------------------------------------------------------------- δ_k = ∂E/∂s_k


class StateGradients(NamedTuple):
    """Result of :func:`state_gradients`.

    loss: () the loss E.
    deltas: the cell's carry type, each leaf ``(batch, time, H)``: ``∂E/∂`` that leaf of
      ``s_k`` (``deltas.hidden`` is δ). Zero at padded steps (``t >= length``).
    carries: the carry type, each leaf ``(batch, time, H)``: the forward states ``s_k``.
    norms: ``(batch, time)``: ``‖δ_k‖ = ‖deltas.hidden[..., k-1, :]‖`` per sequence;
      ``norms.mean(axis=0)`` is the batch-mean "gradient over time" curve.
    """

    loss: Array
    deltas: Any
    carries: Any
    norms: Array


def _cell_params(params):
    return params.cell if isinstance(params, ModelParams) else params


def zero_perturbations(cell: Cell, xs: Array, dtype=None):
    """Zeros in the carry type, each leaf ``xs.shape[:-1] + (H,)`` (batch-major like ``xs``)."""
    check_cell(cell)
    check_floating("xs", xs)
    shape = tuple(xs.shape[:-1]) + (cell.hidden_size,)
    dtype = xs.dtype if dtype is None else dtype
    return cell.carry_type(*[jnp.zeros(shape, dtype) for _ in cell.carry_type._fields])


def perturbed_loss(
    cell: Cell,
    params: ModelParams,
    xs: Array,
    targets: Array,
    perturbations: Any,
    *,
    loss: str = "mse",
    on: str = "last",
    lengths: Optional[Array] = None,
):
    """The loss of :func:`rnn_jax.model.loss` with ``s_k ← s_k + ε_k`` after every step.

    Its gradient with respect to ``perturbations`` at zero is ``δ_k = ∂E/∂s_k``; with
    respect to ``params`` it is the ordinary loss gradient (one backward pass gives both).

    Args:
      cell, params, xs, targets, loss, on, lengths: as in :func:`rnn_jax.model.loss` (which
        says what cannot be checked when traced: labels, lengths);
        ``xs`` is ``(batch, time, features)`` or ``(time, features)`` (not time-major).
      perturbations: the carry type with leaves ``xs.shape[:-1] + (H,)``
        (:func:`zero_perturbations`). At padded steps the carry is copied from the
        previous step, unperturbed, as :func:`rnn_jax.unroll.unroll` does.

    Returns:
      ``(loss, carries)``, carries as in :class:`StateGradients`.
    """
    check_model_params(cell, params)
    check_choice("on", on, ON)
    check_choice("loss", loss, _losses.LOSSES)
    cell_params = params.cell
    # unroll's checks of the parameters, xs and lengths, run abstractly (nothing is computed)
    jax.eval_shape(lambda p, x: unroll(cell, p, x, lengths=lengths, backward="autodiff"), cell_params, xs)
    if not isinstance(perturbations, cell.carry_type):
        raise UserTypeError(f"perturbations: expected a {cell.carry_type.__name__}, got {type(perturbations).__name__}")
    shape, dtype = tuple(xs.shape[:-1]) + (cell.hidden_size,), xs.dtype
    for name, leaf in zip(cell.carry_type._fields, perturbations):
        check_floating(f"perturbations.{name}", leaf)
        if tuple(leaf.shape) != shape or leaf.dtype != dtype:
            raise UserValueError(f"perturbations.{name}: expected shape {shape} and dtype {dtype}, got {describe(leaf)}")
    output_of = cell.output  # a perturbed s_k reaches the readout at step k too

    def step(carry, inp):
        x, eps = inp
        new_carry, _ = cell.step_projected(cell_params, carry, cell.project(cell_params, x))
        new_carry = jax.tree_util.tree_map(jnp.add, new_carry, eps)
        return new_carry, output_of(new_carry)

    lengths = as_lengths(lengths)
    clipped = None if lengths is None else jnp.clip(lengths, 0, xs.shape[-2]).astype(jnp.int32)
    inputs = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, -2, 0), (xs, perturbations))  # time-major
    _, ys, carries = masked_scan(step, cell.initial_carry(xs.shape[:-2], dtype), inputs, clipped, return_carries=True)
    ys, carries = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, -2), (ys, carries))
    return loss_from_outputs(params.readout, ys, targets, loss=loss, on=on, lengths=lengths), carries


def state_gradients(
    cell: Cell,
    params: ModelParams,
    xs: Array,
    targets: Array,
    *,
    loss: str = "mse",
    on: str = "last",
    lengths: Optional[Array] = None,
) -> StateGradients:
    """``δ_k = ∂E/∂s_k`` for every step, by autodiff through zero perturbations of the carries.

    ``δ_k`` is the total derivative: the perturbation of ``s_k`` is seen by the readout
    at step ``k`` (for ``on="every"``, or at the last step) and by every later step, so
    ``δ_k = ∂⁺E/∂s_k + δ_{k+1} J_{k+1}`` (row-vector convention). Arguments as in
    :func:`perturbed_loss`. jit- and vmap-able.
    """
    check_model_params(cell, params)
    zeros = zero_perturbations(cell, xs, params_dtype(_cell_params(params)))
    grad_fn = jax.value_and_grad(
        lambda eps: perturbed_loss(cell, params, xs, targets, eps, loss=loss, on=on, lengths=lengths), has_aux=True
    )
    (value, carries), deltas = grad_fn(zeros)
    return StateGradients(value, deltas, carries, jnp.linalg.norm(deltas.hidden, axis=-1))


# ---------------------------------------------------------------- J_k = ∂s_k/∂s_{k-1}


def _flatten_carry(carry) -> Array:
    return jnp.concatenate(list(carry), axis=-1)


def _unflatten_carry(cell: Cell, flat: Array):
    return cell.carry_type(*jnp.split(flat, len(cell.carry_type._fields), axis=-1))


def _previous_carries(cell, params, xs, initial_carry, lengths):
    """``s_{k-1}`` for k = 1..T (carry type, leaves ``(*batch, time, H)``) and the projected inputs."""
    _, _, carries = unroll(cell, params, xs, initial_carry=initial_carry, lengths=lengths, return_carries=True)
    first = cell.initial_carry((), xs.dtype) if initial_carry is None else initial_carry
    previous = jax.tree_util.tree_map(
        lambda s0, rest: jnp.concatenate([jnp.broadcast_to(s0[..., None, :], rest[..., :1, :].shape), rest[..., :-1, :]],
                                         axis=-2),
        first, carries)
    return previous, cell.project(params, xs)


def _mask_padded(jacobians, lengths):
    """Identity at padded steps, where the carry is copied unchanged."""
    if lengths is None:
        return jacobians
    lengths = jnp.asarray(as_lengths(lengths))
    valid = (jnp.arange(jacobians.shape[-3], dtype=lengths.dtype) < lengths[..., None])[..., None, None]
    return jnp.where(valid, jacobians, jnp.eye(jacobians.shape[-1], dtype=jacobians.dtype))


def step_jacobians(cell: Cell, params, xs: Array, *, initial_carry=None, lengths=None) -> Array:
    """``J_k = ∂s_k/∂s_{k-1}`` for k = 1..T by forward-mode autodiff of the step.

    Args:
      cell: any cell.
      params: the cell's parameters, or :class:`~rnn_jax.model.ModelParams`.
      xs: ``(batch, time, features)`` or ``(time, features)``.
      initial_carry, lengths: as in :func:`rnn_jax.unroll.unroll`.

    Returns:
      ``(*batch, time, n, n)`` with ``n = H`` (elman, pascanu, gru) or ``2H`` (LSTM:
      the state vector is ``[h, c]``), column convention: ``J[..., k-1, i, j] =
      ∂s_k[i]/∂s_{k-1}[j]``. At padded steps ``J`` is the identity.
    """
    check_cell(cell)
    params = _cell_params(params)
    previous, projected = _previous_carries(cell, params, xs, initial_carry, lengths)

    def one(prev_flat, xp):
        step = lambda flat: _flatten_carry(cell.step_projected(params, _unflatten_carry(cell, flat), xp)[0])
        return jax.jacfwd(step)(prev_flat)

    prev_flat = _flatten_carry(previous)
    lead = prev_flat.shape[:-1]
    jac = jax.vmap(one)(prev_flat.reshape((-1, prev_flat.shape[-1])), projected.reshape((-1, projected.shape[-1])))
    return _mask_padded(jac.reshape(lead + jac.shape[-2:]), lengths)


def closed_form_step_jacobians(cell: Cell, params, xs: Array, *, initial_carry=None, lengths=None) -> Array:
    """``J_k`` from the derivative written out by hand (same layout as :func:`step_jacobians`).

    * a cell with a :class:`~rnn_jax.cells.ReverseRule` (elman, LSTM, GRU): row ``i`` is the
      rule's reverse step of the unit cotangent ``e_i`` of ``s_k``; elman (``h_k = f(pre_k)``):
      ``J_k = diag(f'(pre_k)) @ w_hh.T`` (``= diag(f'(pre_k)) W_hh`` in the column form);
    * pascanu: ``x_k = σ(x_{k-1}) @ w_hh + ...``, so ``J_k = w_hh.T @ diag(σ'(x_{k-1}))``
      (``= W_rec diag(σ'(x_{k-1}))``, the factor of the paper's eq. 5).
    """
    check_cell(cell)
    rule = cell.reverse_rule
    if rule is None and cell.traits.recurrence != "preactivation":
        raise UserValueError(f"closed_form_step_jacobians: expected a cell with a ReverseRule or a pascanu cell, "
                             f"got a {cell.kind} cell")
    params = _cell_params(params)
    previous, projected = _previous_carries(cell, params, xs, initial_carry, lengths)
    if rule is None:  # row i: the unit cotangent e_i of x_k carried back
        eye = jnp.eye(cell.hidden_size, dtype=previous.hidden.dtype)
        act = activations.get(cell.activation)
        _, jac = recurrence_vjp(cell, eye, lambda d: d @ params.w_hh.T, previous_output=act.fn(previous.hidden)[..., None, :])
    else:
        _, y, saved = rule.forward(params, previous, projected, previous.hidden @ params.w_hh)
        expand = lambda a: a[..., None, :]  # against the n unit cotangents
        units = _unflatten_carry(cell, jnp.eye(len(previous) * cell.hidden_size, dtype=y.dtype))
        d_previous, _ = rule.backward(jax.tree_util.tree_map(expand, saved), expand(y), units, 0.0,
                                      lambda d: d @ params.w_hh.T)
        jac = _flatten_carry(d_previous)
    return _mask_padded(jac, lengths)


def _check_span(jacobians, start, end) -> int:
    check_floating("jacobians", jacobians)
    if jacobians.ndim < 3 or jacobians.shape[-1] != jacobians.shape[-2]:
        raise UserValueError(f"jacobians: expected shape (..., time, n, n), got {describe(jacobians)}")
    time = jacobians.shape[-3]
    for name, v in (("start", start), ("end", end)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise UserTypeError(f"{name}: expected a Python int (a step index known at trace time), got {v!r}")
    if not 0 <= start <= end <= time:
        raise UserValueError(f"expected 0 <= start <= end <= {time} (the number of steps), got start={start}, end={end}")
    return time


def jacobian_product(jacobians: Array, start: int, end: int) -> Array:
    """``∂s_end/∂s_start = J_end @ J_{end-1} @ ⋯ @ J_{start+1}`` (identity when ``start == end``).

    jacobians: ``(..., time, n, n)`` from :func:`step_jacobians` (``jacobians[..., k-1]``
    is ``J_k``); ``0 <= start <= end <= time`` are states' indices (``s_0`` is the
    initial carry). Returns ``(..., n, n)``.
    """
    _check_span(jacobians, start, end)
    span = jnp.moveaxis(jacobians[..., start:end, :, :], -3, 0)
    eye = jnp.broadcast_to(jnp.eye(jacobians.shape[-1], dtype=jacobians.dtype), jacobians.shape[:-3] + jacobians.shape[-2:])
    product, _ = jax.lax.scan(lambda acc, jac: (jac @ acc, None), eye, span)
    return product


def jacobian_product_singular_values(jacobians: Array, start: int, end: int) -> Array:
    """Singular values (descending, ``(..., n)``) of :func:`jacobian_product` over ``start..end``."""
    return jnp.linalg.svd(jacobian_product(jacobians, start, end), compute_uv=False)


# ---------------------------------------------------------------- W_hh conditions


def _square_blocks(what: str, w: Array) -> Array:
    """``(H, G*H)`` -> ``(G, H, H)``: the gate blocks of a recurrent matrix (G = 1 when square)."""
    check_floating(what, w)
    if w.ndim != 2 or w.shape[1] % w.shape[0] != 0:
        raise UserValueError(f"{what}: expected a recurrent matrix of shape (H, H) or (H, G*H), got {describe(w)}")
    h, g = w.shape[0], w.shape[1] // w.shape[0]
    return jnp.transpose(w.reshape(h, g, h), (1, 0, 2))


def _per_block(w, values):
    return values[0] if w.shape[0] == w.shape[1] else values


def _host_spectral_radius(blocks):
    blocks = np.asarray(blocks)
    return np.max(np.abs(np.linalg.eigvals(blocks)), axis=-1).astype(blocks.dtype)


def spectral_radius(w: Array) -> Array:
    """``ρ(W) = max |λ_i(W)|``: scalar for a square ``(H, H)`` matrix, ``(G,)`` per gate block
    for a gated cell's ``(H, G*H)`` recurrent matrix (``ρ(W) = ρ(Wᵀ)``, so layout does not matter).

    For a linear RNN ``ρ > 1`` is necessary for exploding gradients and ``ρ < 1``
    sufficient for vanishing ones (the notes "RNN的几个难点", on the difficulties of training RNNs). The eigenvalues of a non-symmetric
    matrix are computed by NumPy on the host through ``jax.pure_callback``: it works
    under ``jit`` and ``vmap`` on any backend (JAX's own ``eigvals`` is CPU-only), but
    is not differentiable.
    """
    blocks = _square_blocks("spectral_radius w", w)
    result = jax.ShapeDtypeStruct(blocks.shape[:1], blocks.dtype)
    return _per_block(w, jax.pure_callback(_host_spectral_radius, result, blocks, vmap_method="broadcast_all"))


def largest_singular_value(w: Array) -> Array:
    """``σ_max(W) = ‖W‖₂``: scalar for ``(H, H)``, ``(G,)`` per gate block for ``(H, G*H)``."""
    blocks = _square_blocks("largest_singular_value w", w)
    return _per_block(w, jnp.linalg.svd(blocks, compute_uv=False)[..., 0])


class VanishingCondition(NamedTuple):
    """Result of :func:`vanishing_condition`.

    gamma: ``γ = sup |σ'|`` of the activation (a Python float).
    largest_singular_value: () ``σ_max(W_hh)``.
    ratio: () ``σ_max / (1/γ) = γ σ_max``; every ``‖J_k‖ ≤ ratio``.
    vanishing: () bool, ``ratio < 1``: sufficient for vanishing gradients (long-term
      components shrink at least like ``ratio^m``). Its negation (``ratio >= 1``) is
      necessary for exploding ones.
    """

    gamma: float
    largest_singular_value: Array
    ratio: Array
    vanishing: Array


def vanishing_condition(cell_or_activation: Union[Cell, str, activations.Activation], w_hh: Array) -> VanishingCondition:
    """Pascanu et al.'s sufficient condition for vanishing: ``σ_max(W_hh) < 1/γ``.

    Args:
      cell_or_activation: an elman or pascanu :class:`~rnn_jax.cells.Cell`, an activation
        name (``"tanh"``: γ = 1, ``"sigmoid"``: γ = 1/4, ...) or an
        :class:`~rnn_jax.activations.Activation`.
      w_hh: the square recurrent matrix ``(H, H)``.
    """
    if isinstance(cell_or_activation, Cell):
        if cell_or_activation.traits.recurrence is None:
            raise UserValueError(
                f"vanishing_condition: the bound holds for Elman-type recurrences s = σ(s @ W_hh + ...); "
                f"expected an elman or pascanu cell, got a {cell_or_activation.kind} cell"
            )
        act = activations.get(cell_or_activation.activation)
    elif isinstance(cell_or_activation, activations.Activation):
        act = cell_or_activation
    else:
        act = activations.get(cell_or_activation)
    check_floating("vanishing_condition w_hh", w_hh)
    if w_hh.ndim != 2 or w_hh.shape[0] != w_hh.shape[1]:
        raise UserValueError(f"vanishing_condition w_hh: expected a square matrix (H, H), got {describe(w_hh)}")
    sigma_max = largest_singular_value(w_hh)
    ratio = act.gamma * sigma_max
    return VanishingCondition(act.gamma, sigma_max, ratio, ratio < 1)
