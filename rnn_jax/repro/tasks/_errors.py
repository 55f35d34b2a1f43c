"""Argument checks around the tasks' error measures (``Task.error``).

:func:`checked` wraps an error measure of :mod:`rnn_jax.repro.tasks.base` so that a call with
the wrong things fails with a message instead of a silently wrong error rate: ``batch``
must be a :class:`~rnn_jax.repro.tasks.base.Batch`; a classification task's predictions must
have one logit per class on their last axis (argmax over 3 logits of a 4-class task
never predicts class 3: every error rate would be wrong); floating targets are compared
in the predictions' dtype (a float64 prediction of float32 targets is fine).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rnn_jax._checks import UserTypeError, UserValueError, check_floating, describe
from rnn_jax.repro.tasks.base import Batch


def checked(name: str, classes: int, error: Callable) -> Callable:
    """``error(predictions, batch)`` with its arguments checked; ``classes`` 0 for a regression task."""

    def task_error(predictions: jax.Array, batch: Batch) -> jax.Array:
        if not isinstance(batch, Batch):
            raise UserTypeError(f"{name}.error batch: expected a tasks.Batch (from task.sample), got {describe(batch)}")
        check_floating(f"{name}.error predictions", predictions)
        if classes and (predictions.ndim < 1 or predictions.shape[-1] != classes):
            raise UserValueError(
                f"{name}.error: predictions of shape {tuple(predictions.shape)} do not have the task's {classes} "
                f"logits (one per class) on their last axis"
            )
        targets = batch.targets
        if hasattr(targets, "dtype") and jnp.issubdtype(targets.dtype, jnp.floating):
            batch = batch._replace(targets=targets.astype(predictions.dtype))
        return error(predictions, batch)

    task_error.__doc__ = f"{error.__doc__}\n\n(With its arguments checked: :func:`rnn_jax.repro.tasks._errors.checked`.)"
    task_error.__name__ = getattr(error, "__name__", "error")
    return task_error
