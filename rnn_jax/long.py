"""Losses over very long sequences with chunked ("sqrt(T)") checkpointing.

Reverse-mode differentiation of :func:`rnn_jax.unroll.unroll` followed by a loss on
its outputs keeps, for the backward pass, every intermediate value of every step:
for an LSTM with batch 64 and 256 units about 1 MiB a step, 100 GB at
T = 100,000. ``unroll(..., remat=True)`` recomputes each step's internals but still
stores the carry after every step (13 GB for that LSTM at T = 100,000), and the
``(T, batch, H)`` outputs and their cotangent are materialised besides.

:func:`chunked_loss` never materialises more than one chunk's outputs: it runs on
two levels, an outer ``lax.scan`` over chunks of ``chunk`` steps whose body, wrapped
in ``jax.checkpoint``, runs :func:`~rnn_jax.unroll.unroll` over the chunk's steps (with
its per-device reverse pass and projection) and sums the per-step loss over that chunk's
outputs. The forward pass stores only the carry
at each chunk boundary (T / chunk of them); the backward pass recomputes one
chunk at a time from its boundary carry and holds that chunk's per-step residuals
only. Memory goes as ``T / chunk`` carries plus ``chunk`` steps of residuals, so
``chunk ~ sqrt(T)`` (the default) keeps both terms at ``sqrt(T)``; the price is
one more forward pass (every step runs forward twice). When ``T`` is not a multiple
of ``chunk`` the last ``T % chunk`` steps run as one shorter chunk after the outer
scan; it is not checkpointed, since it is the first chunk the backward pass needs
and its residuals are no more than what recomputing it would hold.

``xs`` is read one chunk at a time with ``lax.dynamic_slice`` in the layout it
comes in, so the inputs are never copied as a whole (unroll of the whole ``xs`` would
transpose a batch-major one; at T = 100,000 W3's inputs alone are 3.3 GB).

:func:`model_loss_every` is :func:`rnn_jax.model.loss` with ``on="every"``
computed this way: a readout and a loss at every valid step, averaged over the
valid (sequence, step) positions.

Layouts, ``lengths`` and ``initial_carry`` are those of :func:`rnn_jax.unroll.unroll`
(no ``reverse``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rnn_jax import losses as _losses
from rnn_jax._checks import (
    UserTypeError, UserValueError, as_lengths, check_choice, check_floating, check_integer, check_labels,
    check_positive_int, describe, is_concrete,
)
from rnn_jax._padding import valid_steps
from rnn_jax.cells import Cell
from rnn_jax.model import ModelParams, check_model_params
from rnn_jax.readout import readout
from rnn_jax.unroll import unroll


class _Long(NamedTuple):
    xs: jax.Array  # as given: the time axis is time_axis
    time_axis: int
    time: int
    batch_shape: tuple
    carry: Any  # broadcast to the batch
    lengths: Optional[jax.Array]  # (*batch,) int32 in [0, time], or None
    chunk: int
    project_inputs: Optional[bool]  # None: unroll's default


def default_chunk(time: int) -> int:
    """``round(sqrt(time))``: the chunk length that balances stored carries against one chunk's residuals."""
    return max(1, round(math.sqrt(check_positive_int("time", time))))


def _prepare_long(cell: Cell, params, xs, initial_carry, lengths, time_major, chunk, project_inputs) -> _Long:
    """Validate every argument at trace time with unroll's checks and messages: unroll over the
    whole of ``xs`` runs abstractly (eval_shape computes nothing, so nothing is copied)."""
    final = jax.eval_shape(lambda p, x, c: unroll(cell, p, x, initial_carry=c, lengths=lengths, time_major=time_major,
                                                  project_inputs=project_inputs, backward="autodiff")[0],
                           params, xs, initial_carry)
    time_axis = 1 if xs.ndim == 3 and not time_major else 0
    time = int(xs.shape[time_axis])
    leaf = jax.tree_util.tree_leaves(final)[0]
    if initial_carry is None:
        carry = cell.initial_carry(leaf.shape[:-1], leaf.dtype)
    else:
        carry = jax.tree_util.tree_map(lambda c, f: jnp.broadcast_to(c, f.shape), initial_carry, final)
    lengths = as_lengths(lengths)
    if lengths is not None:
        lengths = jnp.clip(lengths, 0, time).astype(jnp.int32)
    if chunk is None:
        chunk = default_chunk(time)
    chunk = check_positive_int("chunk", chunk)
    if chunk > time:
        raise UserValueError(f"chunk: expected at most {time} (the number of steps), got {chunk}")
    return _Long(xs, time_axis, time, leaf.shape[:-1], carry, lengths, chunk, project_inputs)


def _loss_dtype(step_loss, cell: Cell, long: _Long):
    """Check ``step_loss``'s result (abstractly, before the scan is traced) and return its dtype."""
    if not callable(step_loss):
        raise UserTypeError(f"step_loss: expected a callable step_loss(y_t, t), got {describe(step_loss)}")
    y = jax.ShapeDtypeStruct(long.batch_shape + (cell.hidden_size,), jax.tree_util.tree_leaves(long.carry)[0].dtype)
    out = jax.eval_shape(step_loss, y, jax.ShapeDtypeStruct((), jnp.int32))
    check_floating("step_loss result", out)
    if long.lengths is not None and tuple(out.shape) != long.batch_shape:
        raise UserValueError(
            f"step_loss result: with lengths, expected one value per sequence (shape {long.batch_shape}) "
            f"so that padded steps can be left out, got shape {tuple(out.shape)}"
        )
    if tuple(out.shape) not in ((), long.batch_shape):
        raise UserValueError(
            f"step_loss result: expected a scalar or one value per sequence (shape {long.batch_shape}), got shape {tuple(out.shape)}"
        )
    return out.dtype


def _run(cell: Cell, params, long: _Long, step_loss) -> jax.Array:
    """The two-level scan of the module docstring; returns the summed loss."""
    dtype = _loss_dtype(step_loss, cell, long)

    def chunk_sum(carry, start, size):
        """Run steps ``start .. start + size - 1``; the carry after them and their summed loss.

        The sum starts from 0 in each chunk, so the float32 total is a sum of T / chunk
        chunk sums rather than one running sum over T terms."""
        x = jnp.moveaxis(lax.dynamic_slice_in_dim(long.xs, start, size, axis=long.time_axis), long.time_axis, 0)
        lengths = None if long.lengths is None else jnp.clip(long.lengths - start, 0, size)
        carry, ys = unroll(cell, params, x, initial_carry=carry, lengths=lengths, time_major=True,
                           project_inputs=long.project_inputs)
        steps = start + jnp.arange(size, dtype=jnp.int32)
        values = jax.vmap(step_loss)(ys, steps)
        if long.lengths is not None:
            values = jnp.where(valid_steps(steps, long.lengths)[..., 0], values, jnp.zeros_like(values))
        return carry, jnp.sum(values)

    # prevent_cse=False: inside a scan the recomputation cannot be merged with the forward pass
    chunk_fn = jax.checkpoint(lambda carry, start: chunk_sum(carry, start, long.chunk), prevent_cse=False)

    def outer(state, start):
        carry, total = state
        carry, acc = chunk_fn(carry, start)
        return (carry, total + acc), None

    full, rest = divmod(long.time, long.chunk)
    starts = jnp.arange(full, dtype=jnp.int32) * long.chunk
    (carry, total), _ = lax.scan(outer, (long.carry, jnp.zeros((), dtype)), starts)
    if rest:
        _, acc = chunk_sum(carry, jnp.int32(full * long.chunk), rest)
        total = total + acc
    return total


def chunked_loss(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    step_loss: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    chunk: Optional[int] = None,
    initial_carry: Any = None,
    time_major: bool = False,
    lengths: Optional[jax.Array] = None,
    project_inputs: Optional[bool] = None,
) -> jax.Array:
    """``sum over steps t (and sequences) of step_loss(y_t, t)``, with chunked checkpointing.

    Equal (to rounding) to summing ``step_loss`` over the outputs of
    :func:`rnn_jax.unroll.unroll`, and so are its gradients, but only one chunk's outputs
    exist at a time and the backward pass keeps only the carries at chunk boundaries plus
    one chunk's residuals (see the module docstring).

    Args:
      cell, params, xs, initial_carry, time_major, lengths: as in :func:`rnn_jax.unroll.unroll`.
      step_loss: ``step_loss(y_t, t)`` -> a scalar or one value per sequence (shape
        ``batch``), for the cell output ``y_t`` (``(*batch, H)``, zero at padded steps)
        at step ``t`` (an int32 scalar counted from 0 over the whole sequence: index
        per-step targets with it). It may close over other parameters (a readout),
        which then get gradients too. With ``lengths`` it must return one value per
        sequence: the values at padded steps (``t >= length``) are left out. It is applied
        to a chunk's steps at once through ``jax.vmap``.
      chunk: steps per checkpointed chunk, a positive integer at most T; default
        :func:`default_chunk` (``round(sqrt(T))``). T need not be a multiple of it.
      project_inputs: compute ``x @ w_ih + b`` for a whole chunk before its steps
        (True) or inside each step (False); default: :func:`rnn_jax.unroll.unroll`'s.

    Returns:
      The scalar total, in ``step_loss``'s dtype; divide it for a mean.
    """
    long = _prepare_long(cell, params, xs, initial_carry, lengths, time_major, chunk, project_inputs)
    return _run(cell, params, long, step_loss)


def model_loss_every(
    cell: Cell,
    params: ModelParams,
    xs: jax.Array,
    targets: Optional[jax.Array] = None,
    *,
    loss: str = "mse",
    chunk: Optional[int] = None,
    initial_carry: Any = None,
    time_major: bool = False,
    lengths: Optional[jax.Array] = None,
    project_inputs: Optional[bool] = None,
) -> jax.Array:
    """``rnn_jax.model.loss(..., on="every")`` through :func:`chunked_loss`.

    The readout of every step's output, the per-position loss of
    :data:`rnn_jax.losses.LOSSES`, averaged over the valid (sequence, step) positions.

    Args:
      params: a :class:`rnn_jax.model.ModelParams` (cell and readout).
      targets: per step, batch-major whatever the layout of ``xs`` (as in
        :func:`rnn_jax.model.loss`): ``(batch, time, O)`` floats for ``"mse"``,
        ``(batch, time)`` integer labels for ``"xent"`` (``(time, ...)`` unbatched).
        None with ``"mse"`` means zero targets: the mean of the squared readout,
        the W3 benchmark's loss.
      loss: ``"mse"`` or ``"xent"``.
      chunk, initial_carry, time_major, lengths, project_inputs: as in :func:`chunked_loss`.

    What cannot be checked when traced: as in :func:`rnn_jax.model.loss`, concrete labels
    outside ``[0, O)`` at a valid step raise ``ValueError``; traced ones there make the
    loss and every gradient NaN. A padded step's target is never read.
    """
    check_model_params(cell, params)
    check_choice("loss", loss, _losses.LOSSES)
    long = _prepare_long(cell, params.cell, xs, initial_carry, lengths, time_major, chunk, project_inputs)
    out_size = params.readout.w.shape[-1]
    batch_major = long.batch_shape + (long.time,)
    if targets is None:
        if loss != "mse":
            raise UserValueError(f"targets: required for loss {loss!r} (None means zero targets, for 'mse' only)")
    elif loss == "mse":
        check_floating("targets", targets)
        if tuple(targets.shape) != batch_major + (out_size,):
            raise UserValueError(f"targets: expected shape {batch_major + (out_size,)} (batch-major, one per step), got {tuple(targets.shape)}")
    else:
        check_integer("targets", targets)
        if tuple(targets.shape) != batch_major:
            raise UserValueError(f"targets: expected shape {batch_major} (batch-major, one label per step), got {tuple(targets.shape)}")
        given = as_lengths(lengths)  # NumPy for concrete lengths: long.lengths is traced under jit
        if is_concrete(given):  # concrete labels are checked at the valid steps
            valid = None if given is None else np.arange(long.time) < np.asarray(given)[..., None]
            check_labels("targets", targets, out_size, valid)

    # the library's loss on a single position is that position's value (0 at a padded step,
    # whose target is not read); vmap gives one per sequence
    if long.lengths is None:
        per_position = lambda p, target, _: _losses.compute(loss, p[None], target[None], None, "targets")
    else:
        per_position = lambda p, target, valid: _losses.compute(loss, p[None], target[None], valid[None], "targets")
    for _ in long.batch_shape:
        per_position = jax.vmap(per_position)
    time_axis = len(long.batch_shape)  # of the batch-major targets

    def step_loss(y, t):
        predictions = readout(params.readout, y)
        if targets is None:
            target = jnp.zeros_like(predictions)
        else:
            target = lax.dynamic_index_in_dim(targets, t, axis=time_axis, keepdims=False)
        valid = jnp.ones(long.batch_shape, jnp.bool_) if long.lengths is None else t < long.lengths
        return per_position(predictions, target, valid)

    total = _run(cell, params.cell, long, step_loss)
    if long.lengths is None:
        return total / math.prod(batch_major)
    return total / jnp.maximum(jnp.sum(long.lengths), 1).astype(total.dtype)
