"""What every task shares: the :class:`Batch` and :class:`Task` contracts and their helpers.

Contract (one comment block, as in ``stax``)::

    task = rnn_jax.repro.tasks.get("temporal_order", min_length=50, max_length=200)
    batch = task.sample(key, batch_size, length)   # Batch(inputs, targets, mask)
    #   inputs (batch, length, task.input_size) float; mask (batch, length) float
    #   targets: (batch,) int labels            loss "xent", on "last"
    #            (batch, output_size) floats     loss "mse",  on "last"
    #            (batch, length) int labels      loss "xent", on "every"
    loss = rnn_jax.model.loss(cell, params, batch.inputs, batch.targets,
                              loss=task.loss, on=task.on, lengths=lengths(batch))
    predictions = rnn_jax.model.predict(cell, params, batch.inputs, on=task.on, lengths=lengths(batch))
    errors = task.error(predictions, batch)        # (batch,), 0 where the sequence is right
    solved = errors.mean() < task.success_threshold

Variable lengths with fixed shapes. As in the original code, one length is drawn
per minibatch (uniform in ``[min_length, max_length)``, or ``min_length`` when the
two are equal) and shared by all its sequences. ``sample`` always returns
``length`` time steps -- a static number, so a jitted or vmapped training step
never recompiles -- and the mask marks the drawn sequence length (plus what the
task adds to it: the adding task's ``T + randint(T // 10)``, memorization's
``2 * n_positions``). Padded steps hold zero inputs; their targets are
arbitrary and masked out. ``length`` defaults to ``task.max_steps``, the
longest sequence the task can draw, and must not be smaller.

Keys are split deterministically: the same key gives the same batch, and the
first split always draws the minibatch length.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax._checks import (
    UserTypeError, UserValueError, check_array, check_floating, check_key, check_positive_int, describe,
)

Array = jax.Array

# The original code's threshold for a wrong regression output (``RNN.py``, ``lastLinear``).
REGRESSION_TOLERANCE = 0.04
# Success: under 1 % of freshly generated sequences wrong (the paper; the code stops at 0 errors).
PATHOLOGICAL_SUCCESS = 0.01


class Batch(NamedTuple):
    """A minibatch.

    inputs: (batch, time, input_size) float.
    targets: (batch,) int labels, (batch, output_size) floats, or (batch, time) int labels.
    mask: (batch, time) float, 1 on the valid steps (a prefix of every sequence).
    """

    inputs: Array
    targets: Array
    mask: Array


class Task(NamedTuple):
    """A synthetic task: how to draw minibatches and how to score predictions.

    Attributes:
      name: the registry name (see :func:`rnn_jax.repro.tasks.get`).
      input_size, output_size: feature sizes of the inputs and of the readout.
      loss: ``"mse"`` or ``"xent"``, as in :func:`rnn_jax.model.loss`.
      on: ``"last"`` (one target per sequence) or ``"every"`` (one per step).
      sample: ``sample(key, batch_size, length=None) -> Batch``; pure, jit-able and
        vmap-able over keys with ``batch_size`` and ``length`` static; the output
        shapes depend on them only.
      error: ``error(predictions, batch) -> (batch,)`` per-sequence error (0/1 for
        the pathological tasks, a squared error for the regression-to-a-model
        tasks), ``predictions`` as returned by ``rnn_jax.model.predict(..., on=on)``.
      success_threshold: solved when the mean error over fresh sequences is below it.
      min_length, max_length: the range the nominal length T is drawn from.
      max_steps: the most valid steps a sequence can have; ``sample``'s default length.
    """

    name: str
    input_size: int
    output_size: int
    loss: str
    on: str
    sample: Callable[..., Batch]
    error: Callable[[Array, Batch], Array]
    success_threshold: float
    min_length: int
    max_length: int
    max_steps: int


def lengths(batch: Batch) -> Array:
    """Valid steps per sequence, ``(batch,)`` int32, for ``rnn_jax.model.loss(..., lengths=...)``."""
    return jnp.sum(batch.mask, axis=-1).astype(jnp.int32)


# ---------------------------------------------------------------- construction


def check_lengths(name: str, min_length: Any, max_length: Any, smallest: int = 1, why: str = "") -> int:
    """Validate a length range and return the longest nominal length T it can draw."""
    min_length = check_positive_int(f"{name} min_length", min_length)
    max_length = check_positive_int(f"{name} max_length", max_length)
    if min_length > max_length:
        raise ValueError(f"{name}: min_length ({min_length}) must not exceed max_length ({max_length})")
    if min_length < smallest:
        raise ValueError(f"{name}: min_length must be at least {smallest}{why}, got {min_length}")
    # As in the code: ``min_length + randint(max_length - min_length)``, or min_length when equal.
    return max_length - 1 if max_length > min_length else min_length


def check_dtype(name: str, dtype: Any):
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} dtype: expected a floating dtype for the inputs, got {dtype}")
    return dtype


def draw_length(key: Array, min_length: int, max_length: int) -> Array:
    """The minibatch's nominal length T, an int32 scalar: uniform in [min, max), or min when equal."""
    if max_length > min_length:
        return jax.random.randint(key, (), min_length, max_length, dtype=jnp.int32)
    return jnp.asarray(min_length, jnp.int32)


def steps(length: int) -> Array:
    """``arange(length)`` as int32, the time index every generator compares positions with."""
    return jnp.arange(length, dtype=jnp.int32)


def prefix_mask(batch_size: int, length: int, valid_steps: Array, dtype) -> Array:
    """(batch, length) mask, 1 on the first ``valid_steps`` steps (a shared scalar)."""
    return jnp.broadcast_to((steps(length) < valid_steps).astype(dtype), (batch_size, length))


def make_sample(name: str, max_steps: int, generate: Callable[..., Batch],
                length_range: Optional[tuple] = None) -> Callable[..., Batch]:
    """Wrap ``generate(key, batch_size, length[, nominal])`` with argument checks and a jit.

    The checks run in Python before anything is staged (``batch_size`` and
    ``length`` are static), so a bad call fails with a clear message, under an
    outer ``jit`` or ``vmap`` too. ``length_range`` ``(min_length, max_length)``:
    the task draws its nominal length T from it, and ``generate`` then accepts a
    given ``nominal`` T instead (``sample(..., nominal_length=T)``).
    """
    jitted = jax.jit(generate, static_argnums=(1, 2))

    def sample(key: Array, batch_size: int, length: Optional[int] = None, *, nominal_length: Any = None) -> Batch:
        check_key(f"{name}.sample key", key)
        batch_size = check_positive_int(f"{name}.sample batch_size", batch_size)
        length = max_steps if length is None else check_positive_int(f"{name}.sample length", length)
        if length < max_steps:
            raise ValueError(
                f"{name}.sample: length {length} cannot hold the longest sequence this task draws "
                f"({max_steps} steps); pass length >= {max_steps} or leave it out"
            )
        if nominal_length is None:
            return jitted(key, batch_size, length)
        if length_range is None:
            raise UserTypeError(f"{name}.sample: this task draws its own lengths; nominal_length is not supported")
        nominal = check_nominal_length(f"{name}.sample nominal_length", nominal_length, *length_range)
        return jitted(key, batch_size, length, nominal)

    sample.__doc__ = (
        f"Draw a {name} minibatch: ``sample(key, batch_size, length={max_steps}, *, nominal_length=None)`` -> "
        f"Batch with ``length`` time steps (at least {max_steps}). ``nominal_length``: the minibatch's T "
        f"(a scalar int, concrete or traced) instead of the task's own draw; a concrete one is checked to "
        f"lie in the task's range, a traced one cannot be and is used as it comes."
    )
    return sample


def check_nominal_length(name: str, value: Any, min_length: int, max_length: int) -> Array:
    """A minibatch's nominal length T: an int32 scalar in the task's range ``[min, max)`` (``min`` if equal).

    Concrete values are checked; a traced one is returned as int32 unchecked (it cannot be
    inspected at trace time).
    """
    arr = jnp.asarray(value) if not isinstance(value, jax.Array) else value
    if arr.ndim != 0 or not jnp.issubdtype(arr.dtype, jnp.integer):
        raise UserTypeError(f"{name}: expected an integer scalar, got {describe(value)}")
    if not isinstance(arr, jax.core.Tracer):
        v, hi = int(arr), (max_length - 1 if max_length > min_length else min_length)
        if not min_length <= v <= hi:
            raise UserValueError(f"{name}: expected a length in [{min_length}, {hi}] (the task's range), got {v}")
    return arr.astype(jnp.int32)


# ---------------------------------------------------------------- error measures


def _check_predictions(predictions: Array, batch: Batch, classes: bool) -> None:
    check_floating("task.error predictions", predictions)
    check_array("task.error batch.targets", batch.targets)
    want = tuple(batch.targets.shape)
    got = tuple(predictions.shape)
    if (got[:-1] if classes else got) != want:
        expected = f"{want + ('classes',)}" if classes else f"{want}"
        raise ValueError(
            f"task.error: predictions of shape {got} do not fit targets of shape {want}; expected {expected} "
            f"(rnn_jax.model.predict with the task's `on`)"
        )


def _wrong_class(predictions: Array, batch: Batch) -> Array:
    _check_predictions(predictions, batch, classes=True)
    return jnp.argmax(predictions, axis=-1).astype(batch.targets.dtype) != batch.targets


def argmax_error(predictions: Array, batch: Batch) -> Array:
    """1 where the arg-max of the last-step logits ``(batch, C)`` is not the label."""
    return _wrong_class(predictions, batch).astype(predictions.dtype)


def any_step_error(predictions: Array, batch: Batch) -> Array:
    """1 where any valid step's arg-max (logits ``(batch, time, C)``) is not its label."""
    wrong = _wrong_class(predictions, batch) & (batch.mask > 0)
    return jnp.any(wrong, axis=-1).astype(predictions.dtype)


def squared_error(predictions: Array, batch: Batch) -> Array:
    """``sum over outputs of (prediction - target)²`` per sequence; its mean is the MSE loss."""
    _check_predictions(predictions, batch, classes=False)
    return jnp.sum((predictions - batch.targets) ** 2, axis=-1)


def thresholded_squared_error(predictions: Array, batch: Batch) -> Array:
    """1 where the squared error exceeds 0.04 (the code's ``lastLinear`` error)."""
    return (squared_error(predictions, batch) > REGRESSION_TOLERANCE).astype(predictions.dtype)


__all__ = [
    "Batch", "Task", "lengths", "argmax_error", "any_step_error", "squared_error", "thresholded_squared_error",
    "REGRESSION_TOLERANCE", "PATHOLOGICAL_SUCCESS",
]
