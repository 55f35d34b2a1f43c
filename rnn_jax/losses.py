"""Losses over sequences, on the last valid step or on every valid step.

Conventions (those of the paper's code, ``pascanur/trainingRNNs``):
  * mean squared error: squared error summed over output features, averaged
    over the valid (sequence[, step]) positions;
  * softmax cross-entropy: ``-log softmax(logits)[label]`` averaged over the
    valid positions; labels are integer class indices.
A position is valid when its mask is 1; masks come from sequence lengths.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from rnn_jax._checks import check_floating, check_integer


def sequence_mask(lengths: jax.Array, time: int, dtype=jnp.float32) -> jax.Array:
    """``mask[..., t] = 1`` where ``t < lengths[...]``: shape ``lengths.shape + (time,)``."""
    check_integer("lengths", lengths)
    return (jnp.arange(time, dtype=lengths.dtype) < lengths[..., None]).astype(dtype)


def last_outputs(outputs: jax.Array, lengths: Optional[jax.Array] = None) -> jax.Array:
    """The output at each sequence's last valid step.

    outputs: ``(batch, time, F)`` or ``(time, F)``; lengths: ``(batch,)`` / scalar or None
    (then the last step). A sequence of length 0 gets its step-0 output, which the
    losses below mask out (see :func:`last_step_mask`).
    """
    if lengths is None:
        return outputs[..., -1, :]
    idx = jnp.clip(lengths - 1, 0, outputs.shape[-2] - 1)
    return jnp.take_along_axis(outputs, idx[..., None, None], axis=-2)[..., 0, :]


def last_step_mask(lengths: Optional[jax.Array], batch_shape: tuple, dtype) -> Optional[jax.Array]:
    """1 for sequences with at least one valid step; None when there are no lengths."""
    if lengths is None:
        return None
    return (lengths > 0).astype(dtype)


def _masked_mean(values, mask):
    if mask is None:
        return jnp.mean(values)
    if mask.shape != values.shape:
        raise ValueError(f"mask: expected shape {tuple(values.shape)}, got {tuple(mask.shape)}")
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1)


def mean_squared_error(predictions: jax.Array, targets: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """``mean over valid positions of sum_features (predictions - targets)²``.

    predictions, targets: ``(..., F)`` of the same shape; mask: ``(...)`` or None.
    """
    check_floating("predictions", predictions)
    check_floating("targets", targets)
    if predictions.shape != targets.shape:
        raise ValueError(f"targets: expected shape {tuple(predictions.shape)} like the predictions, got {tuple(targets.shape)}")
    return _masked_mean(jnp.sum((predictions - targets) ** 2, axis=-1), mask)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """``mean over valid positions of -log softmax(logits)[label]``.

    logits: ``(..., C)``; labels: integer ``(...)`` in ``[0, C)``; mask: ``(...)`` or None.
    """
    check_floating("logits", logits)
    check_integer("labels", labels)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels: expected shape {tuple(logits.shape[:-1])} (one class index per position), got {tuple(labels.shape)}")
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return _masked_mean(nll, mask)


LOSSES = {"mse": mean_squared_error, "xent": softmax_cross_entropy}
