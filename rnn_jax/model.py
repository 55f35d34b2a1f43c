"""A cell plus a linear readout plus a loss: the model every experiment trains.

``ModelParams(cell=..., readout=...)`` is a pytree, so ``jax.grad`` of
:func:`loss` gives gradients for both, optax updates both, and ``vmap`` over a
leading axis of every leaf trains many members at once.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import losses as _losses
from rnn_jax._checks import UserTypeError, as_lengths, check_choice, check_key, check_labels, describe, is_concrete
from rnn_jax.cells import Cell, check_cell
from rnn_jax.readout import ReadoutParams, check_readout_params, readout, readout_init
from rnn_jax.unroll import unroll

ON = ("last", "every")


class ModelParams(NamedTuple):
    cell: Any
    readout: ReadoutParams


def init(
    key: jax.Array,
    cell: Cell,
    input_size: int,
    output_size: int,
    *,
    readout_weight_init: Union[str, Any] = "uniform",
    dtype=jnp.float32,
) -> ModelParams:
    """Initialise the cell and its readout from one key (split deterministically)."""
    check_cell(cell)
    check_key("model.init key", key)
    k_cell, k_out = jax.random.split(key)
    return ModelParams(
        cell.init(k_cell, input_size, dtype),
        readout_init(k_out, cell.hidden_size, output_size, weight_init=readout_weight_init, dtype=dtype),
    )


def check_model_params(cell: Cell, params: Any) -> None:
    """``params`` must be a :class:`ModelParams` whose readout reads the cell's ``H`` units
    in the cell parameters' dtype (the cell's own parameters are checked by the unroll)."""
    check_cell(cell)
    if not isinstance(params, ModelParams):
        raise UserTypeError(
            f"params: expected rnn_jax.model.ModelParams(cell=..., readout=...) (from rnn_jax.model.init), "
            f"got {describe(params)}"
        )
    leaves = jax.tree_util.tree_leaves(params.cell)
    check_readout_params(params.readout, "params.readout", cell.hidden_size, getattr(leaves[0], "dtype", None) if leaves else None)


def predict(cell: Cell, params: ModelParams, xs: jax.Array, *, on: str = "last", lengths=None, **unroll_kwargs):
    """Readout of the outputs: ``(batch, O)`` at each last valid step (``on="last"``)
    or ``(batch, time, O)`` at every step (``on="every"``); always batch-major, whatever
    the layout of ``xs`` (``(O,)`` / ``(time, O)`` for an unbatched sequence).

    ``lengths`` and ``**unroll_kwargs`` as in :func:`rnn_jax.unroll.unroll` (an array, a
    list or a number; traced lengths are clipped into ``[0, time]``)."""
    check_choice("on", on, ON)
    check_model_params(cell, params)
    lengths = as_lengths(lengths)
    _, ys = unroll(cell, params.cell, xs, lengths=lengths, **unroll_kwargs)[:2]
    if unroll_kwargs.get("time_major") and ys.ndim == 3:
        ys = jnp.swapaxes(ys, 0, 1)
    if on == "last":
        ys = _losses.last_outputs(ys, lengths)
    return _readout_every_step(params.readout, ys)


def loss(
    cell: Cell,
    params: ModelParams,
    xs: jax.Array,
    targets: jax.Array,
    *,
    loss: str = "mse",
    on: str = "last",
    lengths: Optional[jax.Array] = None,
    **unroll_kwargs,
) -> jax.Array:
    """The scalar training loss.

    Args:
      loss: ``"mse"`` (targets ``(..., O)`` floats; another floating dtype than the
        parameters' is cast to theirs) or ``"xent"`` (integer labels in ``[0, O)``).
      on: ``"last"`` -- targets per sequence, compared with the readout at its last
        valid step; ``"every"`` -- targets per step (batch-major ``(batch, time, ...)``
        whatever the layout of ``xs``), padded steps masked out (their targets are
        not read: any label may pad them).
      lengths, **unroll_kwargs: passed to :func:`rnn_jax.unroll.unroll` (lengths as an
        array, a list or a number).

    What cannot be checked when traced: labels under ``jit``/``vmap``/``grad`` cannot be
    inspected; one outside ``[0, O)`` at a valid position makes the loss and every
    gradient NaN (concrete ones raise ``ValueError``). Traced lengths are clipped into
    ``[0, time]`` (concrete ones out of range raise).
    """
    check_choice("loss", loss, _losses.LOSSES)
    check_choice("on", on, ON)
    check_model_params(cell, params)
    lengths = as_lengths(lengths)
    _, ys = unroll(cell, params.cell, xs, lengths=lengths, **unroll_kwargs)[:2]
    if unroll_kwargs.get("time_major") and ys.ndim == 3:
        ys = jnp.swapaxes(ys, 0, 1)
    return loss_from_outputs(params.readout, ys, targets, loss=loss, on=on, lengths=lengths)


def loss_from_outputs(
    readout_params: ReadoutParams,
    outputs: jax.Array,
    targets: jax.Array,
    *,
    loss: str = "mse",
    on: str = "last",
    lengths: Optional[jax.Array] = None,
) -> jax.Array:
    """The reduction of :func:`loss` applied to a cell's per-step outputs.

    outputs: batch-major ``(batch, time, H)`` (or ``(time, H)``), zero at padded steps.
    Shared by :func:`loss` and by code that runs its own scan (the diagnostics).
    """
    check_choice("loss", loss, _losses.LOSSES)
    check_choice("on", on, ON)
    check_readout_params(readout_params, "params.readout")
    lengths = as_lengths(lengths)
    if on == "last":
        outputs = _losses.last_outputs(outputs, lengths)
    predictions = _readout_every_step(readout_params, outputs)
    if loss == "xent":
        _check_labels_on_host(targets, predictions.shape, lengths, on)
    mask = None
    if lengths is not None:
        if on == "last":
            mask = _losses.last_step_mask(lengths, lengths.shape, predictions.dtype)
        else:
            mask = _losses.sequence_mask(lengths, predictions.shape[-2], predictions.dtype)
    return _losses.compute(loss, predictions, targets, mask, "targets")


def _check_labels_on_host(targets, shape: tuple, lengths, on: str) -> None:
    """Concrete labels against the classes at the valid positions, with the validity computed
    from concrete lengths in NumPy (under ``jit`` a mask made with ``jnp`` is traced, even from
    constants); the loss's own check covers the rest."""
    if not (is_concrete(targets) and is_concrete(lengths) and hasattr(targets, "dtype")
            and jnp.issubdtype(targets.dtype, jnp.integer) and tuple(targets.shape) == tuple(shape[:-1])):
        return
    valid = None
    if lengths is not None:
        n = np.asarray(lengths)
        valid = np.arange(shape[-2]) < n[..., None] if on == "every" else n > 0
    check_labels("targets", targets, shape[-1], valid)


def _readout_every_step(readout_params: ReadoutParams, outputs: jax.Array) -> jax.Array:
    """:func:`readout` of ``(batch, time, H)`` outputs (or any other shape), with the
    product taken in time-major order when that moves less memory.

    The scan makes its outputs time-major and :func:`unroll` swaps them to batch-major; a
    readout to ``O < H`` features taken after swapping back (XLA cancels the two swaps)
    transposes the ``O``-feature predictions, and in the reverse pass their cotangent,
    instead of the ``H``-feature outputs and theirs.
    """
    if outputs.ndim != 3 or readout_params.w.shape[-1] >= outputs.shape[-1]:
        return readout(readout_params, outputs)
    return jnp.swapaxes(readout(readout_params, jnp.swapaxes(outputs, 0, 1)), 0, 1)
