"""Member-batched BPTT for Elman-type cells: the training engine's fast path on the CPU.

The engine (:mod:`rnn_jax.repro.train`) trains M members at once. Under ``vmap`` of one
member's ``jax.value_and_grad`` the member axis lands in the middle of the stored
history (``(T, M, B, H)``), autodiff materialises a full zero cotangent of it although
the loss reads one step, and the weight gradients come after transposes of it. Here the same gradient is written
out by hand for a stack of members ("member-major": the member axis leads every
array, so every matrix product is a batched product with the batch axis first):

* one forward ``lax.scan`` over time, carry ``(M, B, H)``, the input projection
  inside the step (few inputs: no ``(M, B, T, H)`` array of projections), the
  outputs stored as ``(M, B, T + 1, H)``;
* one reverse ``lax.scan`` that propagates ``δ`` (one batched product per step) and
  stores ``d_t``; the loss's cotangent enters only where the loss reads the outputs;
* each weight gradient is then ONE contraction over (batch, time) (a per-step
  ``(M, H, H)`` outer product has a contraction of only B and is re-read every step).

The engine runs this on groups of :data:`MEMBER_GROUP` members in turn
(:func:`engine_loss_and_grads`): a group's history stays in cache and its
elementwise kernels are too small for XLA to split them across threads, which on a
loaded machine costs more than it gains. The measurements: ``benchmarks/RESULTS.md``,
"Measurements behind the defaults".

Equations, per member, row-vector layout (``x @ w``), ``⊙`` elementwise, a step is
*valid* when ``t < length`` (at a padded step the carry is kept and the output is 0)::

    elman    a_t = x_t w_ih + b + s_{t-1} w_hh,   s_t = f(a_t),    output y_t = s_t
    pascanu  s_t = f(s_{t-1}) w_hh + x_t w_ih + b,                  output y_t = f(s_t)

Backward, ``δ_t = ∂E/∂s_t`` through every later step, ``g_t = ∂E/∂y_t`` the loss's
direct term (the readout's gradient at the steps it reads), valid step t::

    elman    d_t = (δ_t + g_t) ⊙ f'(a_t),          δ_{t-1} = d_t w_hhᵀ
    pascanu  d_t = δ_t + g_t ⊙ f'(s_t),            δ_{t-1} = (d_t w_hhᵀ) ⊙ f'(s_{t-1})
    ∂w_hh += y_{t-1}ᵀ d_t,   ∂w_ih += x_tᵀ d_t,   ∂b += Σ_batch d_t

(``y_{t-1}`` is the carry for elman, ``f(s_{t-1})`` for pascanu); a padded step has
``d_t = 0`` and hands ``δ`` on unchanged. ``f'`` is read off the output ``y = f(·)``
(:attr:`rnn_jax.activations.Activation.derivative_from_output`):
tanh ``1 − y²``, sigmoid ``y (1 − y)``, relu ``y > 0``, identity 1 -- the values JAX's
own derivative rules use, so the result equals ``jax.grad`` of
:func:`rnn_jax.model.loss` to rounding.

Pascanu's regulariser Ω (:mod:`rnn_jax.repro.regularizer`) is built from the same
quantities: ``v_k = δ_k J_k`` is the product ``d_k w_hhᵀ`` the backward pass
computes anyway (times ``f'(s_{k-1})`` for pascanu), so ``Ω`` and ``∂Ω/∂w_hh``
cost one more small accumulation per step.

Example (M members stacked on every leaf)::

    result = fused.loss_and_grads(cell, params, xs, labels, loss="xent", on="last", lengths=lengths)
    result.grads   ~=  jax.vmap(jax.grad(lambda p, x, y, n: model.loss(cell, p, x, y, loss="xent",
                                                                       on="last", lengths=n)))(params, xs, labels, lengths)

:func:`engine_loss_and_grads` wraps this for the engine: a function of ONE member
whose ``vmap`` runs the member-batched code above (``jax.custom_batching.custom_vmap``),
so :func:`rnn_jax.repro.train.train_step` keeps its one-member form.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax import _padding
from rnn_jax import losses as _losses
from rnn_jax._checks import UserValueError, check_choice, check_floating, check_integer, describe
from rnn_jax.activations import get as get_activation
from rnn_jax.cells import Cell, ElmanParams, recurrence_vjp
from rnn_jax.model import ON, ModelParams
from rnn_jax.readout import ReadoutParams
from rnn_jax.repro.regularizer import BOUND, omega_ratios

Array = jax.Array

MEMBER_GROUP = 4
"""Members per group in :func:`engine_loss_and_grads` (see there; measured on XLA:CPU)."""

BLOCK = 16
"""Time steps per weight-gradient contraction when the loops follow the valid length."""

BOUNDED = ("tanh", "sigmoid")
"""Activations whose states stay finite whatever the inputs (see ``masked`` below)."""

RECURRENCES = ("activated", "preactivation")
"""The cells with a fused path: :attr:`~rnn_jax.cells.Traits.recurrence` set (elman, pascanu;
their one-step Jacobian is ``diag(f') w_hhᵀ``)."""

class Result(NamedTuple):
    """What :func:`loss_and_grads` returns, one entry per member.

    loss: (M,) the loss E, as :func:`rnn_jax.model.loss` computes it.
    omega: (M,) Ω (zeros when ``alpha`` is None).
    grads: :class:`~rnn_jax.model.ModelParams` with leaves (M, ...): ``∂E/∂θ``, plus
      ``alpha · ∂Ω/∂w_hh`` on ``grads.cell.w_hh`` when ``alpha`` is given.
    """

    loss: Array
    omega: Array
    grads: ModelParams


def supports(cell: Any, *, loss: str, on: str) -> bool:
    """Whether :func:`loss_and_grads` handles this cell, loss and reduction."""
    return isinstance(cell, Cell) and cell.traits.recurrence in RECURRENCES and loss in _losses.LOSSES and on in ON


# ---------------------------------------------------------------- small pieces


def _bmm(a: Array, w: Array) -> Array:
    """(M, B, K) @ (M, K, N) -> (M, B, N), member axis leading (a plain batched product)."""
    return jnp.einsum("mbk,mkn->mbn", a, w)


def _outer(a: Array, d: Array) -> Array:
    """Σ_batch aᵀ d: (M, B, K), (M, B, N) -> (M, K, N), a weight gradient's per-step term."""
    return jnp.einsum("mbk,mbn->mkn", a, d)


def _times_derivative(act: str, g: Array, y: Array) -> Array:
    """``g ⊙ f'(a)`` with ``f'`` read off ``y = f(a)``."""
    return g * get_activation(act).derivative_from_output(y)


def _loss_terms(kind: str, predictions: Array, targets: Array, weights: Array):
    """Weighted loss and its gradient with respect to the predictions.

    predictions (M, B, O); targets (M, B) labels for xent, (M, B, O) for mse;
    weights (M, B): 1/count on the positions the loss averages over, 0 elsewhere.
    Returns ``(Σ_B weights · value, ∂/∂predictions)`` of shapes (M,) and (M, B, O).
    """
    if kind == "xent":
        # −Σ logp ⊙ onehot, not losses' gather: the one-hot serves the gradient too, and the engine's
        # recorded losses keep their bits
        logp = jax.nn.log_softmax(predictions, axis=-1)
        onehot = jax.nn.one_hot(targets, predictions.shape[-1], dtype=predictions.dtype)
        nll = -jnp.sum(logp * onehot, axis=-1)
        grad = (jnp.exp(logp) - onehot) * weights[..., None]
    else:
        nll = _losses.squared_errors(predictions, targets)
        grad = (2 * (predictions - targets)) * weights[..., None]
    return jnp.sum(nll * weights, axis=-1), grad


def _weights(lengths: Optional[Array], shape: tuple, on: str, dtype) -> Array:
    """Per-position loss weights, ``mask / max(Σ mask, 1)`` per member (the losses' masked mean).

    shape: (M, B) for on="last", (M, B, T) for on="every".
    """
    if lengths is None:
        count = 1
        for n in shape[1:]:
            count *= n
        return jnp.full(shape, 1 / count, dtype)
    if on == "last":
        mask = _losses.last_step_mask(lengths, shape, dtype)
    else:
        mask = _losses.sequence_mask(lengths, shape[-1], dtype)
    total = jnp.sum(mask.reshape(shape[0], -1), axis=-1)
    return mask / jnp.maximum(total, 1).reshape((shape[0],) + (1,) * (len(shape) - 1))


# ---------------------------------------------------------------- validation


def _check(cell, params, xs, targets, loss, on, lengths):
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected an rnn_jax Cell (e.g. rnn_jax.elman(8)), got {type(cell).__name__}")
    if cell.traits.recurrence not in RECURRENCES:
        raise ValueError(f"fused path: expected an elman or pascanu cell, got a {cell.kind!r} cell")
    check_choice("loss", loss, _losses.LOSSES)
    check_choice("on", on, ON)
    if not (isinstance(params, ModelParams) and isinstance(params.cell, ElmanParams) and isinstance(params.readout, ReadoutParams)):
        raise TypeError(f"params: expected ModelParams(cell=ElmanParams, readout=ReadoutParams), got {type(params).__name__}")
    check_floating("xs", xs)
    if xs.ndim != 4:
        raise ValueError(f"xs: expected rank 4 (members, batch, time, features), got {describe(xs)}")
    m, b, t, i = xs.shape
    h = cell.hidden_size
    o = params.readout.w.shape[-1] if params.readout.w.ndim == 3 else None
    want = {
        "cell.w_ih": (params.cell.w_ih, (m, i, h)), "cell.w_hh": (params.cell.w_hh, (m, h, h)), "cell.b": (params.cell.b, (m, h)),
        "readout.w": (params.readout.w, (m, h, o)), "readout.b": (params.readout.b, (m, o)),
    }
    for name, (leaf, shape) in want.items():
        if tuple(leaf.shape) != shape:
            raise ValueError(f"params.{name}: expected shape {shape} (members first, as xs {tuple(xs.shape)}), got {describe(leaf)}")
        if leaf.dtype != xs.dtype:
            raise TypeError(f"params.{name}: expected dtype {xs.dtype} like xs, got {describe(leaf)}")
    lead = (m, b) if on == "last" else (m, b, t)
    if loss == "xent":
        check_integer("targets", targets)
        shape = lead
    else:
        check_floating("targets", targets)
        if targets.dtype != xs.dtype:
            raise TypeError(f"targets: expected dtype {xs.dtype} like xs, got {describe(targets)}")
        shape = lead + (o,)
    if tuple(targets.shape) != shape:
        raise ValueError(f"targets: expected shape {shape} for loss={loss!r}, on={on!r}, got {describe(targets)}")
    if lengths is not None:
        check_integer("lengths", lengths)
        if tuple(lengths.shape) != (m, b):
            raise ValueError(f"lengths: expected shape {(m, b)} (one per sequence), got {describe(lengths)}")


# ---------------------------------------------------------------- the gradient


def loss_and_grads(
    cell: Cell,
    params: ModelParams,
    xs: Array,
    targets: Array,
    *,
    loss: str = "mse",
    on: str = "last",
    lengths: Optional[Array] = None,
    alpha: Optional[Array] = None,
    bound: float = BOUND,
) -> Result:
    """Loss and gradients of M members at once, by hand-written BPTT (jit- and vmap-able).

    Args:
      cell: an ``elman`` or ``pascanu`` cell (tanh, sigmoid, relu or identity).
      params: :class:`~rnn_jax.model.ModelParams` whose every leaf has a leading
        member axis M: ``w_ih`` (M, I, H), ``w_hh`` (M, H, H), ``b`` (M, H), readout
        ``w`` (M, H, O), ``b`` (M, O).
      xs: (M, B, T, I) batch-major inputs, the parameters' dtype.
      targets: as :func:`rnn_jax.model.loss` takes them, with the member axis first:
        on="last" (M, B) labels (xent) or (M, B, O) floats (mse); on="every"
        (M, B, T) or (M, B, T, O).
      loss, on: as :func:`rnn_jax.model.loss`.
      lengths: (M, B) integer valid lengths (clipped into [0, T]), or None.
      alpha: None (no regulariser), or Ω's weight, a scalar or (M,): then ``grads.cell.w_hh``
        gets ``alpha · ∂Ω/∂w_hh`` added, as :func:`rnn_jax.repro.regularizer.loss_and_grad_with_omega`.
      bound: Ω leaves out the pairs with ``‖δ_k‖² < bound``.

    Returns:
      :class:`Result` ``(loss (M,), omega (M,), grads)``.
    """
    _check(cell, params, xs, targets, loss, on, lengths)
    m, b, time, _ = xs.shape
    hidden = cell.hidden_size
    dtype = xs.dtype
    act = get_activation(cell.activation)
    elman = cell.traits.recurrence == "activated"  # else pascanu's: the carry is the pre-activation
    p, r = params.cell, params.readout
    if lengths is not None:
        lengths = jnp.clip(lengths, 0, time).astype(jnp.int32)
    # The loops run over the steps some sequence still needs: ``trip`` = the longest valid length
    # (traced: a while loop), so an update costs what its sequences' length costs, not what the
    # padded array's T does. Every step from ``trip`` on is padded for every sequence, where the
    # forward keeps (or, bounded, ignores) the carry and the backward hands δ on unchanged, so
    # skipping them changes nothing.
    trip = time if lengths is None else jnp.max(lengths, initial=0)
    # A bounded activation keeps every state finite, so the recurrence may run on over the
    # padded steps: nothing the loss reads depends on them (it reads steps < length and its
    # cotangent enters there), and a finite state times a zero cotangent is zero. That
    # spares the selections of the padded-step rule. Unbounded activations could overflow
    # there (inf · 0 = nan), so they keep the carry at padded steps as the unroll does.
    masked = lengths is not None and cell.activation not in BOUNDED
    valid_step = (lambda t: _padding.valid_at(t, lengths)) if masked else (lambda t: None)
    slot = lambda buf, j: jax.lax.dynamic_index_in_dim(buf, j, axis=2, keepdims=False)

    # ---- forward. history (M, B, T + 1, H), slot j = y_{j-1}: the output of the carry before
    # step j (slot 0: of the zero initial carry). Members and batch lead, so that the weight
    # gradients below are single contractions over (B, T + 1); T + 1 slots so that step t
    # reads y_{t-1} and y_t at slots t and t + 1 with no special case at either end. The input
    # projection is made inside the step (precomputing it for all steps was measured not to pay).
    projected_at = lambda t: _bmm(slot(xs, t), p.w_ih) + p.b[:, None, :]

    def forward(carry, t):
        s, history = carry
        if elman:
            new = act.fn(projected_at(t) + _bmm(s, p.w_hh))
        else:
            new = _bmm(act.fn(s), p.w_hh) + projected_at(t)
        valid = valid_step(t)
        if valid is not None:
            new = jnp.where(valid, new, s)
        y_new = new if elman else act.fn(new)
        return (new, jax.lax.dynamic_update_index_in_dim(history, y_new, t + 1, axis=2)), None

    # slots past T + 1, up to a whole number of BLOCKs: the weight-gradient contractions below
    # read whole blocks (never written: their d is 0)
    slots = time + 1 if lengths is None else -(-(time + 1) // BLOCK) * BLOCK
    s0 = jnp.zeros((m, b, hidden), dtype)
    history0 = jnp.full((m, b, slots, hidden), 0 if elman else act.fn(jnp.zeros((), dtype)), dtype)
    _, history = jax.lax.fori_loop(0, trip, lambda t, c: forward(c, t)[0], (s0, history0))

    w_hh_t = jnp.swapaxes(p.w_hh, 1, 2)
    w_out_t = jnp.swapaxes(r.w, 1, 2)
    regularize = alpha is not None
    zm = jnp.zeros((m,), dtype)
    inject = None  # t -> the loss's cotangent entering at step t (on="last" with lengths, unmasked)

    # ---- the loss on the last valid step: read y at step length - 1 (the carry is kept after
    # it when masked, so the final slot serves then)
    if on == "last":
        if lengths is None or masked:
            y_read = slot(history, trip)
        else:
            y_read = jnp.take_along_axis(history, lengths.reshape(m, b, 1, 1), axis=2)[:, :, 0]
        if lengths is not None:
            y_read = jnp.where((lengths > 0)[..., None], y_read, 0)  # a length-0 sequence outputs 0
        weights = _weights(lengths, (m, b), on, dtype)
        value, d_pred = _loss_terms(loss, _bmm(y_read, r.w) + r.b[:, None, :], targets, weights)
        readout = ReadoutParams(_outer(y_read, d_pred), jnp.sum(d_pred, axis=1))
        g_read = _bmm(d_pred, w_out_t)
        seed = g_read if elman else _times_derivative(cell.activation, g_read, y_read)
        if lengths is None or masked:
            delta0 = seed  # enters at the final carry (a masked run hands it back to step length - 1)
        else:
            delta0 = jnp.zeros_like(seed)
            inject = lambda t: jnp.where((t == lengths - 1)[..., None], seed, 0)
    else:
        weights = _weights(lengths, (m, b, time), on, dtype)
        value = zm
        readout = ReadoutParams(jnp.zeros_like(r.w), jnp.zeros_like(r.b))
        delta0 = jnp.zeros_like(s0)

    class Carry(NamedTuple):
        v: Array  # (M, B, H) d_{t+1} J_{t+1}: δ_t through the later steps
        delta: Array  # (M, B, H) δ_{t+1} (masked runs: δ_t is δ_{t+1} where step t + 1 is padded)
        ds: Array  # (M, B, T + 1, H) d_t at slot t, slot T stays 0
        value: Array  # (M,) the loss (on="every": summed over the steps)
        readout: ReadoutParams
        omega_sum: Array  # (M,) Σ (r_k - 1)²
        omega_count: Array  # (M,) valid pairs
        omega_w: Array  # (M, H, H) Σ ∂(r_k - 1)²/∂w_hh ((M,) zeros without the regulariser)

    # ---- backward over time, t = T-1 .. 0. The selection of the padded-step rule is made at
    # the start of step t rather than at the end of step t + 1 so that XLA fuses it with d_t.
    def backward(c, t):
        y_now, y_prev = slot(history, t + 1), slot(history, t)
        valid = valid_step(t)
        delta = c.v if valid is None else jnp.where(valid_step(t + 1), c.v, c.delta)
        if inject is not None:
            delta = delta + inject(t)
        value, readout = c.value, c.readout
        if on == "every":
            out = y_now if valid is None else jnp.where(valid, y_now, 0)
            target = jax.lax.dynamic_index_in_dim(targets, t, axis=2, keepdims=False)
            v, d_pred = _loss_terms(loss, _bmm(out, r.w) + r.b[:, None, :], target, slot(weights[..., None], t)[..., 0])
            value = value + v
            readout = ReadoutParams(readout.w + _outer(out, d_pred), readout.b + jnp.sum(d_pred, axis=1))
            g = _bmm(d_pred, w_out_t)  # zero where the weight is (padded steps)
            delta = delta + (g if elman else _times_derivative(cell.activation, g, y_now))
        delta_t = delta if valid is None else jnp.where(valid, delta, 0)  # δ_t, 0 at a padded step
        # d_t, the pre-activation's cotangent, and v_t = δ_t J_t
        d, v_k = recurrence_vjp(cell, delta_t, lambda a: _bmm(a, w_hh_t), output=y_now, previous_output=y_prev)
        omega_sum, omega_count, omega_w = c.omega_sum, c.omega_count, c.omega_w
        if regularize:
            ratio, ok, safe = omega_ratios(delta_t, v_k, bound)  # Ω's pair at step t
            omega_sum = omega_sum + jnp.sum((ratio - 1) ** 2, axis=-1)
            omega_count = omega_count + jnp.sum(ok, axis=-1).astype(dtype)
            # ∂(r - 1)²/∂v = 4 (r - 1) v / ‖δ‖²; v = d w_hhᵀ (elman) or (δ w_hhᵀ) ⊙ f'(s_{t-1}) (pascanu)
            g_v = jnp.where(ok, 4 * (ratio - 1) / safe, 0)[..., None] * v_k
            if not elman:
                g_v = _times_derivative(cell.activation, g_v, y_prev)
            omega_w = omega_w + _outer(g_v, d)
        ds = jax.lax.dynamic_update_index_in_dim(c.ds, d, t, axis=2)
        return Carry(v_k, delta if masked else c.delta, ds, value, readout, omega_sum, omega_count, omega_w), None

    carry = Carry(delta0, delta0 if masked else zm, jnp.zeros_like(history), value, readout, zm, zm,
                  jnp.zeros_like(p.w_hh) if regularize else zm)
    carry = jax.lax.fori_loop(0, trip, lambda i, c: backward(c, trip - 1 - i)[0], carry)

    # ---- the cell's weight gradients: Σ over steps and sequences, each one contraction (with
    # lengths: one per BLOCK of steps, over the blocks up to ``trip``, so they follow the length too)
    xs_padded = jnp.pad(xs, ((0, 0), (0, 0), (0, slots - time), (0, 0)))  # ds is 0 from slot T on
    if lengths is None:
        flat = lambda a: a.reshape(m, -1, a.shape[-1])
        cell_grads = ElmanParams(
            jnp.einsum("mki,mkh->mih", flat(xs_padded), flat(carry.ds)),
            jnp.einsum("mkj,mkh->mjh", flat(history), flat(carry.ds)),
            jnp.sum(carry.ds, axis=(1, 2)),
        )
    else:
        block = lambda a, j: jax.lax.dynamic_slice_in_dim(a, j * BLOCK, BLOCK, axis=2)

        def accumulate(j, g):
            d = block(carry.ds, j)
            # the last block reaches past ``trip``, where the inputs and states were never read (their d is 0,
            # but 0 * nan is not): zero them
            live = (j * BLOCK + jnp.arange(BLOCK, dtype=jnp.int32) < trip)[None, None, :, None]
            x, y = jnp.where(live, block(xs_padded, j), 0), jnp.where(live, block(history, j), 0)
            return ElmanParams(g.w_ih + jnp.einsum("mbki,mbkh->mih", x, d),
                               g.w_hh + jnp.einsum("mbkj,mbkh->mjh", y, d),
                               g.b + jnp.sum(d, axis=(1, 2)))

        zero = ElmanParams(jnp.zeros_like(p.w_ih), jnp.zeros_like(p.w_hh), jnp.zeros_like(p.b))
        cell_grads = jax.lax.fori_loop(0, -(-trip // BLOCK), accumulate, zero)
    grads = ModelParams(cell_grads, carry.readout)
    omega = zm
    if regularize:
        count = jnp.maximum(carry.omega_count, 1)
        omega = carry.omega_sum / count
        scale = jnp.broadcast_to(jnp.asarray(alpha, dtype), (m,)) / count
        grads = grads._replace(cell=grads.cell._replace(w_hh=grads.cell.w_hh + scale[:, None, None] * carry.omega_w))
    return Result(carry.value, omega, grads)


# ---------------------------------------------------------------- the engine's entry point


@functools.lru_cache(maxsize=None)
def engine_loss_and_grads(cell: Cell, loss: str, on: str, regularize: bool) -> Callable:
    """``f(params, xs, targets, lengths, alpha) -> (loss, omega, grads)`` of ONE member.

    Arguments as :func:`loss_and_grads` without the member axis (``alpha`` a scalar,
    ignored unless ``regularize``). Called on one member it runs :func:`loss_and_grads`
    with M = 1; under ``jax.vmap`` (``jax.custom_batching.custom_vmap``) it runs it on
    the stacked members, in groups of up to :data:`MEMBER_GROUP` (the largest size
    that divides M) one group after the other. So the engine's ``vmap(train_step)``
    keeps its one-member form and costs what the hand-batched program costs.
    Arguments a ``vmap`` does not batch are broadcast to the member axis.

    Small groups keep the history in cache (the grouping's measurements: RESULTS.md).
    """
    if not supports(cell, loss=loss, on=on):
        raise UserValueError(f"fused path: expected an elman or pascanu cell with loss in {tuple(_losses.LOSSES)} and on "
                             f"in {tuple(ON)}; got a {getattr(cell, 'kind', cell)!r} cell, loss {loss!r}, on {on!r}")

    def run(args):
        params, xs, targets, lengths, alpha = args
        res = loss_and_grads(cell, params, xs, targets, loss=loss, on=on, lengths=lengths,
                             alpha=alpha if regularize else None)
        return res.loss, res.omega, res.grads

    def batched(*args):
        members = args[1].shape[0]
        size = max(g for g in range(1, min(MEMBER_GROUP, members) + 1) if members % g == 0)
        groups = members // size
        if groups == 1:
            return run(args)
        # member m = i * groups + j goes to group j: the loop runs over the minor part of the
        # member index, so a member axis sharded across devices (rnn_jax.repro.sweep) stays sharded
        # (its major part) and each device loops over its own members
        split = jax.tree_util.tree_map(lambda a: a.reshape((size, groups) + a.shape[1:]), args)

        def one_group(_, j):
            return None, run(jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False), split))

        _, out = jax.lax.scan(one_group, None, jnp.arange(groups))  # leaves (groups, size, ...)
        return jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1).reshape((members,) + a.shape[2:]), out)

    @jax.custom_batching.custom_vmap
    def one(params, xs, targets, lengths, alpha):
        args = jax.tree_util.tree_map(lambda a: a[None], (params, xs, targets, lengths, alpha))
        return jax.tree_util.tree_map(lambda a: a[0], batched(*args))

    @one.def_vmap
    def _rule(axis_size, in_batched, params, xs, targets, lengths, alpha):
        args = (params, xs, targets, lengths, alpha)
        args = jax.tree_util.tree_map(
            lambda a, is_batched: a if is_batched else jnp.broadcast_to(a, (axis_size,) + a.shape), args, tuple(in_batched))
        out = batched(*args)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return one
