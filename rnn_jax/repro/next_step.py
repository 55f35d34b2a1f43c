"""Next-step prediction over padded sequences: per-step losses, and Pascanu's Ω for any of them.

The models of the natural tasks (polyphonic music, characters) read a sequence and, at
every valid step ``t``, predict element ``t + 1`` through a linear readout of the cell's
output. Two per-step losses, in nats:

* ``"bernoulli"`` -- one sigmoid per output unit (a pitch of a piano roll), the Bernoulli
  negative log-likelihood *summed over the units*:
  ``−Σ_j [y_j log σ(z_j) + (1 − y_j) log(1 − σ(z_j))] = Σ_j softplus(z_j) − y_j z_j``;
* ``"softmax"`` -- softmax over classes (characters), ``−log softmax(z)[label]``.

A batch's loss is the mean over its valid ``(sequence, step)`` positions (``t < length``),
the benchmark's "negative log-likelihood per time step". :mod:`rnn_jax.losses` has the
softmax cross-entropy but not the Bernoulli likelihood, and :func:`rnn_jax.repro.regularizer.omega`
gets its ``δ_k = ∂E/∂h_k`` through :func:`rnn_jax.diagnostics.perturbed_loss`, which knows
only the losses of :mod:`rnn_jax.losses`. Here :func:`loss_and_grad` takes one forward and
one backward pass through :func:`rnn_jax.unroll.unroll` (its hand-written reverse pass where
that is the default), reads ``∂E/∂y_k`` (the direct part) from the readout's backward, and
for an Elman cell completes the total derivative with the one-step Jacobian::

    δ_T = ∂E/∂y_T,    δ_k = ∂E/∂y_k + (δ_{k+1} ⊙ σ'(h_{k+1})) @ w_hh.T      (row vectors)

(:func:`elman_state_gradients`), then hands ``δ`` and the states to
:func:`rnn_jax.repro.regularizer.omega_terms`, the one place Ω is written.

Example::

    cell = rnn_jax.elman(64)
    params = rnn_jax.model.init(key, cell, input_size=46, output_size=46)
    loss, omega, grads = loss_and_grad(cell, params, xs, targets, lengths, "bernoulli", alpha=1.0)
"""

from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from rnn_jax import activations
from rnn_jax.repro import regularizer
from rnn_jax._checks import check_choice, check_floating, check_integer, describe
from rnn_jax.cells import Cell
from rnn_jax.model import ModelParams
from rnn_jax.readout import readout
from rnn_jax.unroll import unroll

Array = jax.Array

LOSSES = ("bernoulli", "softmax")


def bernoulli_nll(logits: Array, targets: Array) -> Array:
    """Bernoulli NLL of binary ``targets`` under ``σ(logits)``, summed over the last axis.

    ``Σ_j softplus(z_j) − y_j z_j`` (exact for any real ``z``, no ``log(0)``).

    Args:
      logits: ``(..., units)`` floats; targets: ``(..., units)`` in {0, 1} (same dtype).

    Returns:
      ``(...)`` nats per position.
    """
    check_floating("logits", logits)
    check_floating("targets", targets)
    if logits.shape != targets.shape:
        raise ValueError(f"targets: expected shape {tuple(logits.shape)} like the logits, got {describe(targets)}")
    return jnp.sum(jnp.logaddexp(jnp.zeros_like(logits), logits) - targets * logits, axis=-1)


def softmax_nll(logits: Array, labels: Array) -> Array:
    """``−log softmax(logits)[label]`` per position: logits ``(..., classes)``, labels integer ``(...)``."""
    check_floating("logits", logits)
    check_integer("labels", labels)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels: expected shape {tuple(logits.shape[:-1])} (one class per position), got {describe(labels)}")
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


_STEP_LOSS = {"bernoulli": bernoulli_nll, "softmax": softmax_nll}


def step_losses(logits: Array, targets: Array, kind: str) -> Array:
    """The per-position loss of ``kind`` (``"bernoulli"`` or ``"softmax"``): ``(batch, time)``."""
    return _STEP_LOSS[check_choice("loss", kind, LOSSES)](logits, targets)


def valid_mask(lengths: Optional[Array], batch: int, time: int, dtype) -> Array:
    """``(batch, time)``: 1 where ``t < lengths[b]`` (all ones when ``lengths`` is None)."""
    if lengths is None:
        return jnp.ones((batch, time), dtype)
    check_integer("lengths", lengths)
    if lengths.shape != (batch,):
        raise ValueError(f"lengths: expected shape ({batch},), got {describe(lengths)}")
    return (jnp.arange(time, dtype=lengths.dtype)[None, :] < lengths[:, None]).astype(dtype)


def summed_loss(logits: Array, targets: Array, lengths: Optional[Array], kind: str) -> Tuple[Array, Array]:
    """``(sum of the per-step losses over valid positions, number of valid positions)``.

    For evaluation over many batches: the NLL per time step of a data set is the sum of
    the sums over the sum of the counts (every predicted step weighs the same).
    """
    per_step = step_losses(logits, targets, kind)
    mask = valid_mask(lengths, per_step.shape[0], per_step.shape[1], per_step.dtype)
    return jnp.sum(per_step * mask), jnp.sum(mask)


def mean_loss(logits: Array, targets: Array, lengths: Optional[Array], kind: str) -> Array:
    """The mean of the per-step losses over the valid positions (0 if there are none)."""
    total, count = summed_loss(logits, targets, lengths, kind)
    return total / jnp.maximum(count, 1)


def outputs(cell: Cell, params: ModelParams, xs: Array, lengths: Optional[Array] = None, initial_carry=None):
    """``(final_carry, logits)``: the readout at every step, ``(batch, time, units)``."""
    carry, ys = unroll(cell, params.cell, xs, lengths=lengths, initial_carry=initial_carry)[:2]
    return carry, readout(params.readout, ys)


def loss(cell: Cell, params: ModelParams, xs: Array, targets: Array, lengths: Optional[Array], kind: str) -> Array:
    """The training loss: :func:`mean_loss` of the model's logits (xs ``(batch, time, features)``)."""
    return mean_loss(outputs(cell, params, xs, lengths)[1], targets, lengths, kind)


def elman_state_gradients(cell: Cell, w_hh: Array, states: Array, direct: Array) -> Array:
    """``δ_k = ∂E/∂h_k`` (total derivative) of an Elman cell from the direct part ``∂E/∂y_k``.

    ``δ_k = direct_k + (δ_{k+1} ⊙ σ'(h_{k+1})) @ w_hh.T``, run backwards from ``δ_T =
    direct_T`` -- the recursion of :func:`rnn_jax.diagnostics.state_gradients`, whose
    perturbations cannot carry a loss from outside :mod:`rnn_jax.losses`. At padded steps
    (output and ``direct`` zero, the carry held) ``δ`` is zero: nothing reads a held carry
    but the next padded step.

    Args:
      cell: an ``elman`` cell (the output is the state).
      w_hh: ``(H, H)``.
      states: ``(batch, time, H)`` the outputs ``h_k`` (zero at padded steps).
      direct: ``(batch, time, H)`` ``∂E/∂y_k`` through the readout alone.

    Returns:
      ``(batch, time, H)``.
    """
    if cell.traits.recurrence != "activated":
        raise ValueError(f"elman_state_gradients: expected an 'elman' cell (its output is its state), got {cell.kind!r}")
    if states.shape != direct.shape or states.ndim != 3:
        raise ValueError(f"states and direct: expected the same (batch, time, H) shape, got {describe(states)} "
                         f"and {describe(direct)}")
    derivative = activations.get(cell.activation).derivative_from_output

    def body(back, inputs):
        g, h = inputs
        delta = g + back
        return (delta * derivative(h)) @ w_hh.T, delta

    time_major = lambda a: jnp.swapaxes(a, 0, 1)
    zeros = jnp.zeros_like(direct[:, 0])
    _, deltas = jax.lax.scan(body, zeros, (time_major(direct), time_major(states)), reverse=True)
    return time_major(deltas)


def loss_and_grad(
    cell: Cell,
    params: ModelParams,
    xs: Array,
    targets: Array,
    lengths: Optional[Array],
    kind: str,
    alpha: Optional[Array] = None,
    *,
    bound: float = regularizer.BOUND,
) -> Tuple[Array, Array, ModelParams]:
    """The loss E, Ω and the gradient ``∂E/∂θ (+ α ∂Ω/∂W_hh)`` in one forward and one backward pass.

    Args:
      cell, params: the model; ``xs`` ``(batch, time, features)``; ``targets`` binary
        ``(batch, time, units)`` (bernoulli) or integer ``(batch, time)`` (softmax);
        ``lengths`` ``(batch,)`` or None; ``kind`` the per-step loss.
      alpha: None -- no regulariser (Ω returned as 0); else the weight of Ω (a number,
        array or tracer; 0 gives the plain gradient and still computes Ω). Needs an
        ``elman`` cell.
      bound: as in :func:`rnn_jax.repro.regularizer.omega_terms`.

    Returns:
      ``(loss, omega, grads)``; ``grads`` a :class:`~rnn_jax.model.ModelParams`.
    """
    check_choice("loss", kind, LOSSES)
    if alpha is not None:
        regularizer.check_cell(cell)
        if cell.traits.recurrence != "activated":
            raise ValueError(f"loss_and_grad: Ω with per-step losses is implemented for 'elman' cells, got {cell.kind!r}")
    ys, cell_vjp = jax.vjp(lambda p: unroll(cell, p, xs, lengths=lengths)[1], params.cell)
    value, (g_readout, g_ys) = jax.value_and_grad(
        lambda r, y: mean_loss(readout(r, y), targets, lengths, kind), argnums=(0, 1))(params.readout, ys)
    (g_cell,) = cell_vjp(g_ys)
    omega = jnp.zeros((), value.dtype)
    if alpha is not None:
        w_hh = params.cell.w_hh
        deltas = elman_state_gradients(cell, w_hh, ys, g_ys)
        omega, omega_grad = jax.value_and_grad(
            lambda w: regularizer.omega_terms(cell, w, deltas, ys, bound=bound)[0])(w_hh)
        g_cell = g_cell._replace(w_hh=g_cell.w_hh + jnp.asarray(alpha, w_hh.dtype) * omega_grad)
    return value, omega, ModelParams(g_cell, g_readout)
