"""The noiseless memorization problem (Hochreiter & Schmidhuber 1997; ``memorization.py``).

Inputs have ``n_values + 2`` channels: the values (one-hot), then "wait" and "go".
For a nominal length T (drawn per minibatch) a sequence has ``T + 2 n_positions``
steps::

    steps 0 .. n_pos-1            a pattern of n_pos values, each uniform in 0..n_values-1
    steps n_pos .. T+2n_pos-1     "wait" on, except at step T + n_pos where "go" is on instead

(The code draws the pattern as one integer uniform in ``[0, n_values ** n_pos)``
and writes its base-``n_values`` digits; drawing the digits independently and
uniformly is the same distribution, without overflow for long patterns.)

Targets are per step, ``n_values + 1`` classes: the "blank" class ``n_values``
for the first ``T + n_pos`` steps, then the pattern, starting at the "go" step.
Softmax cross-entropy at every valid step; a sequence is wrong when any valid
step's arg-max is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax._checks import check_positive_int
from rnn_jax.repro.tasks._errors import checked
from rnn_jax.repro.tasks.base import (
    PATHOLOGICAL_SUCCESS, Batch, Task, any_step_error, check_dtype, check_lengths, draw_length, make_sample,
    prefix_mask, steps,
)


def noiseless_memorization(
    n_values: int = 5, n_positions: int = 10, min_length: int = 50, max_length: int = 200, *, dtype=jnp.float32
) -> Task:
    """The noiseless memorization problem: reproduce an ``n_positions``-long pattern after T steps.

    Args:
      n_values: size of the alphabet (5 in the paper); the output has ``n_values + 1``
        classes, the last one "blank".
      n_positions: length of the pattern (10 in the paper).
      min_length, max_length: T is drawn once per minibatch, uniform in
        ``[min_length, max_length)`` (``min_length`` if equal); sequences have
        ``T + 2 n_positions`` steps.
      dtype: float dtype of the inputs and mask.

    Example::

        task = noiseless_memorization(5, 10, 50, 200)
        batch = task.sample(jax.random.key(0), 20)   # inputs (20, 219, 7), targets (20, 219) in 0..5
    """
    name = "noiseless_memorization"
    n_values = check_positive_int(f"{name} n_values", n_values)
    n_positions = check_positive_int(f"{name} n_positions", n_positions)
    longest = check_lengths(name, min_length, max_length)
    dtype = check_dtype(name, dtype)
    max_steps = longest + 2 * n_positions
    blank = n_values  # the target class of the steps before recall; inputs: channel n_values waits, n_values+1 goes

    def generate(key, batch_size, length, nominal=None):
        k_length, k_pattern = jax.random.split(key)
        t = draw_length(k_length, min_length, max_length) if nominal is None else nominal
        pattern = jax.random.randint(k_pattern, (batch_size, n_positions), 0, n_values, dtype=jnp.int32)
        time = steps(length)
        go_step = t + n_positions
        mask = prefix_mask(batch_size, length, go_step + n_positions, dtype)

        # Pattern one-hots in the first n_positions steps, then the wait/go channels.
        shown = jnp.pad(jax.nn.one_hot(pattern, n_values + 2, dtype=dtype), ((0, 0), (0, length - n_positions), (0, 0)))
        wait_on = (time >= n_positions) & (time != go_step)
        signals = jnp.stack([wait_on, time == go_step], axis=-1).astype(dtype)
        signals = jnp.pad(signals, ((0, 0), (n_values, 0)))[None, :, :]
        inputs = (shown + signals) * mask[:, :, None]

        recall = time - go_step  # index into the pattern at the last n_positions steps
        recalled = pattern[:, jnp.clip(recall, 0, n_positions - 1)]
        targets = jnp.where(((recall >= 0) & (recall < n_positions))[None, :], recalled, blank)
        return Batch(inputs, targets, mask)

    return Task(
        name=name,
        input_size=n_values + 2,
        output_size=n_values + 1,
        loss="xent",
        on="every",
        sample=make_sample(name, max_steps, generate, (min_length, max_length)),
        error=checked(name, n_values + 1, any_step_error),
        success_threshold=PATHOLOGICAL_SUCCESS,
        min_length=min_length,
        max_length=max_length,
        max_steps=max_steps,
    )
