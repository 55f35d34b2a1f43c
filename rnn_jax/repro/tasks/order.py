"""The temporal order problems (Hochreiter & Schmidhuber 1997; ``tempOrder.py``, ``tempOrder3bit.py``).

Six symbols, one-hot: 0 and 1 are A and B, 2-5 are distractors. Every step shows
a uniformly drawn distractor except at ``n`` (2 or 3) positions, each drawn
uniformly in its window of the sequence of length T, which show A or B (fair
coin). The label, read at the last step, is the binary number the relevant
symbols spell, first symbol lowest: ``v0 + 2 v1 (+ 4 v2)``. Windows, in the
code's integer arithmetic (``int(0.1 * T) == T // 10`` for every T up to 200,000,
checked)::

    temporal order:        [T//10, 2T//10)   [5T//10, 5T//10 + T//10)
    3-bit temporal order:  [T//10, 2T//10)   [3T//10, 3T//10 + T//10)   [6T//10, 6T//10 + T//10)

Softmax cross-entropy on the last step; a sequence is wrong when the arg-max is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.repro.tasks._errors import checked
from rnn_jax.repro.tasks.base import (
    PATHOLOGICAL_SUCCESS, Batch, Task, argmax_error, check_dtype, check_lengths, draw_length, make_sample,
    prefix_mask, steps,
)

N_SYMBOLS = 6  # A, B and four distractors
WINDOW_STARTS = {"temporal_order": (1, 5), "temporal_order_3bit": (1, 3, 6)}  # in tenths of T


def _temporal_order(name: str, min_length: int, max_length: int, dtype) -> Task:
    # T >= 10 so that every window (T // 10 positions wide) is non-empty, as the code needs.
    longest = check_lengths(name, min_length, max_length, smallest=10, why=" (each window is T // 10 steps wide)")
    dtype = check_dtype(name, dtype)
    starts = WINDOW_STARTS[name]
    n_bits = len(starts)

    def generate(key, batch_size, length, nominal=None):
        k_length, k_position, k_bit, k_distractor = jax.random.split(key, 4)
        t = draw_length(k_length, min_length, max_length) if nominal is None else nominal
        width = t // 10
        symbols = jax.random.randint(k_distractor, (batch_size, length), 2, N_SYMBOLS, dtype=jnp.int32)
        bits = jax.random.randint(k_bit, (n_bits, batch_size), 0, 2, dtype=jnp.int32)
        offsets = jax.random.randint(k_position, (n_bits, batch_size), 0, width, dtype=jnp.int32)
        label = jnp.zeros((batch_size,), jnp.int32)
        for i, start in enumerate(starts):
            position = (start * t) // 10 + offsets[i]
            symbols = jnp.where(steps(length)[None, :] == position[:, None], bits[i][:, None], symbols)
            label = label + bits[i] * 2**i
        mask = prefix_mask(batch_size, length, t, dtype)
        inputs = jax.nn.one_hot(symbols, N_SYMBOLS, dtype=dtype) * mask[:, :, None]
        return Batch(inputs, label, mask)

    return Task(
        name=name,
        input_size=N_SYMBOLS,
        output_size=2**n_bits,
        loss="xent",
        on="last",
        sample=make_sample(name, longest, generate, (min_length, max_length)),
        error=checked(name, 2**n_bits, argmax_error),
        success_threshold=PATHOLOGICAL_SUCCESS,
        min_length=min_length,
        max_length=max_length,
        max_steps=longest,
    )


def temporal_order(min_length: int = 50, max_length: int = 200, *, dtype=jnp.float32) -> Task:
    """The temporal order problem: 4 classes (AA, BA, AB, BB as ``v0 + 2 v1``).

    Args:
      min_length, max_length: T is drawn once per minibatch, uniform in
        ``[min_length, max_length)`` (``min_length`` if equal); at least 10.
      dtype: float dtype of the inputs and mask.

    Example::

        task = temporal_order(50, 200)
        batch = task.sample(jax.random.key(0), 20)   # inputs (20, 199, 6), targets (20,) in 0..3
    """
    return _temporal_order("temporal_order", min_length, max_length, dtype)


def temporal_order_3bit(min_length: int = 50, max_length: int = 200, *, dtype=jnp.float32) -> Task:
    """The 3-bit temporal order problem: 8 classes ``v0 + 2 v1 + 4 v2``. Arguments as :func:`temporal_order`."""
    return _temporal_order("temporal_order_3bit", min_length, max_length, dtype)
