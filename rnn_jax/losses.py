"""Losses over sequences, on the last valid step or on every valid step.

Conventions (those of the paper's code, ``pascanur/trainingRNNs``):
  * mean squared error: squared error summed over output features, averaged
    over the valid (sequence[, step]) positions;
  * softmax cross-entropy: ``-log softmax(logits)[label]`` averaged over the
    valid positions; labels are integer class indices in ``[0, C)``.
A position is valid when its mask is 1 (0 elsewhere); masks come from sequence
lengths. A masked-out position's target -- NaN padding, an out-of-range label -- reaches
neither the loss nor its gradients. (Its prediction must be finite, as
:func:`rnn_jax.model.loss`'s are: the outputs at padded steps are zero.)

What is checked, and when. Shapes and dtypes always, at trace time. Values known at
trace time too: concrete labels must lie in ``[0, C)`` at the valid positions (a
``ValueError`` naming the argument, the range and the values that came), a concrete
mask must hold only 0s and 1s, concrete lengths must lie in ``[0, time]``. Traced
values (under ``jit``, ``vmap``, ``grad``) cannot be inspected:

  * a traced label outside ``[0, C)`` at a valid position makes the loss *and every
    gradient* NaN (never a finite wrong number: ``-1`` does not wrap around to the last
    class, ``C`` does not read past the logits). This costs one compare-and-select per
    position, on the labels only;
  * a traced mask is used as given (it weighs the positions);
  * traced lengths are clipped into ``[0, time]``, as :func:`rnn_jax.unroll.unroll` does.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax._checks import (
    UserTypeError, UserValueError, as_lengths, check_array, check_floating, check_integer, check_labels,
    check_lengths_range, describe, is_concrete,
)


def sequence_mask(lengths: jax.Array, time: int, dtype=jnp.float32) -> jax.Array:
    """``mask[..., t] = 1`` where ``t < lengths[...]``: shape ``lengths.shape + (time,)``.

    ``lengths``: integers (an array, a list or a number); ``time``: a non-negative integer."""
    lengths = as_lengths(lengths)
    check_integer("lengths", lengths)
    if isinstance(time, bool) or not isinstance(time, (int, np.integer)) or time < 0:
        raise UserValueError(f"time: expected a non-negative integer (the number of steps), got {describe(time)}")
    return (jnp.arange(time, dtype=lengths.dtype) < lengths[..., None]).astype(dtype)


def _check_outputs_lengths(outputs, lengths):
    check_floating("outputs", outputs)
    if outputs.ndim < 2:
        raise UserValueError(f"outputs: expected shape (..., time, features), got {tuple(outputs.shape)}")
    if lengths is None:
        return None
    lengths = as_lengths(lengths)
    check_integer("lengths", lengths)
    if tuple(lengths.shape) != tuple(outputs.shape[:-2]):
        raise UserValueError(
            f"lengths: expected shape {tuple(outputs.shape[:-2])} (one per sequence of outputs "
            f"{tuple(outputs.shape)}), got {tuple(lengths.shape)}"
        )
    check_lengths_range("lengths", lengths, outputs.shape[-2])
    return lengths


def last_outputs(outputs: jax.Array, lengths: Optional[jax.Array] = None) -> jax.Array:
    """The output at each sequence's last valid step.

    outputs: ``(batch, time, F)`` or ``(time, F)``; lengths: ``(batch,)`` / scalar or None
    (then the last step). A sequence of length 0 gets its step-0 output, which the
    losses below mask out (see :func:`last_step_mask`). Concrete lengths must lie in
    ``[0, time]``; traced ones are clipped into it.
    """
    lengths = _check_outputs_lengths(outputs, lengths)
    if lengths is None:
        return outputs[..., -1, :]
    idx = jnp.clip(lengths - 1, 0, outputs.shape[-2] - 1)
    return jnp.take_along_axis(outputs, idx[..., None, None], axis=-2)[..., 0, :]


def last_step_mask(lengths: Optional[jax.Array], batch_shape: tuple, dtype) -> Optional[jax.Array]:
    """1 for sequences with at least one valid step; None when there are no lengths."""
    if lengths is None:
        return None
    lengths = as_lengths(lengths)
    check_integer("lengths", lengths)
    return (lengths > 0).astype(dtype)


def _check_mask(mask, shape, dtype):
    """``mask`` of ``shape`` (bool, integer or floating) in ``dtype``; a concrete one holds 0s and 1s only."""
    if mask is None:
        return None
    check_array("mask", mask)
    if tuple(mask.shape) != tuple(shape):
        raise UserValueError(f"mask: expected shape {tuple(shape)}, got {tuple(mask.shape)}")
    if not (mask.dtype == jnp.bool_ or jnp.issubdtype(mask.dtype, jnp.integer) or jnp.issubdtype(mask.dtype, jnp.floating)):
        raise UserTypeError(f"mask: expected a bool, integer or floating array of 0s and 1s, got {describe(mask)}")
    if is_concrete(mask) and mask.size:
        values = np.asarray(mask)
        if not np.all((values == 0) | (values == 1)):
            wrong = np.unique(values[(values != 0) & (values != 1)])[:5]
            raise UserValueError(f"mask: expected 1 at valid positions and 0 elsewhere, got values {wrong.tolist()}")
    return mask.astype(dtype)


def _masked_mean(values, mask):
    """Mean of ``values`` over the positions where ``mask`` (already checked) is not 0."""
    if mask is None:
        return jnp.mean(values)
    # where, not a product: a NaN at a masked-out position must not reach the sum (NaN * 0 = NaN)
    return jnp.sum(jnp.where(mask != 0, values * mask, 0)) / jnp.maximum(jnp.sum(mask), 1)


def _mse(predictions, targets, mask, what: str = "targets"):
    check_floating("predictions", predictions)
    check_floating(what, targets)
    if predictions.shape != targets.shape:
        raise UserValueError(f"{what}: expected shape {tuple(predictions.shape)} like the predictions, got {tuple(targets.shape)}")
    mask = _check_mask(mask, predictions.shape[:-1], predictions.dtype)
    # targets of another floating dtype (float64 data for a float32 model) are compared in the predictions' dtype
    targets = targets.astype(predictions.dtype)
    if mask is not None:  # a masked-out target (NaN padding) must not reach the gradient either: 0 * NaN = NaN
        targets = jnp.where(mask[..., None] != 0, targets, jnp.zeros_like(targets))
    return _masked_mean(squared_errors(predictions, targets), mask)


def squared_errors(predictions, targets):
    """``Σ_features (predictions − targets)²`` at every position (no checks, no mask): the mean
    squared error before its average, shared with the fused engine (:mod:`rnn_jax.repro.fused`)."""
    return jnp.sum((predictions - targets) ** 2, axis=-1)


def _xent(logits, labels, mask, what: str = "labels"):
    check_floating("logits", logits)
    check_integer(what, labels)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise UserValueError(f"logits: expected shape (..., classes) with at least one class, got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:-1]:
        raise UserValueError(f"{what}: expected shape {tuple(logits.shape[:-1])} (one class index per position), got {tuple(labels.shape)}")
    mask = _check_mask(mask, labels.shape, logits.dtype)
    classes = logits.shape[-1]
    check_labels(what, labels, classes, mask)
    logp = jax.nn.log_softmax(logits, axis=-1)
    # Out-of-range labels (traced ones: concrete ones at valid positions were refused above) read
    # class 0, and at a valid position the factor NaN makes the loss and every gradient NaN.
    in_range = (labels >= 0) & (labels < classes)
    picked = jnp.take_along_axis(logp, jnp.where(in_range, labels, 0)[..., None].astype(jnp.int32), axis=-1)[..., 0]
    invalid = ~in_range if mask is None else ~in_range & (mask != 0)
    nll = -picked * jnp.where(invalid, jnp.asarray(jnp.nan, logp.dtype), jnp.asarray(1, logp.dtype))
    return _masked_mean(nll, mask)


def mean_squared_error(predictions: jax.Array, targets: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """``mean over valid positions of sum_features (predictions - targets)²``.

    predictions, targets: floating ``(..., F)`` of the same shape (targets of another
    floating dtype are cast to the predictions'); mask: ``(...)`` of 0s and 1s, or None.
    """
    return _mse(predictions, targets, mask)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """``mean over valid positions of -log softmax(logits)[label]``.

    logits: ``(..., C)``; labels: integer ``(...)`` in ``[0, C)``; mask: ``(...)`` of 0s and
    1s, or None. Concrete labels outside ``[0, C)`` at a valid position raise ``ValueError``;
    traced ones make the loss and its gradients NaN (see the module docstring). A
    masked-out position's label is not read.
    """
    return _xent(logits, labels, mask)


LOSSES = {"mse": mean_squared_error, "xent": softmax_cross_entropy}
# The same, naming their second argument (model.loss's "targets", say) in their messages.
_NAMED = {"mse": _mse, "xent": _xent}


def compute(loss: str, predictions: Any, targets: Any, mask: Any = None, what: str = "targets"):
    """The loss called ``loss`` (a key of :data:`LOSSES`), with ``what`` naming ``targets`` in errors."""
    return _NAMED[loss](predictions, targets, mask, what)
