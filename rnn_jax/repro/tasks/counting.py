"""Counting ones (Roelants, "How to implement a recurrent neural network, part 1").

Binary input sequences, each bit 0 or 1 with probability 1/2 (the tutorial
rounds a uniform draw); the target, read at the last step, is the number of ones
(shape ``(batch, 1)``). The linear RNN ``s_k = s_{k-1} w_rec + x_k w_x`` solves it
exactly with ``w_x = w_rec = 1``. Loss: mean squared error over the sequences,
the tutorial's cost; the error of a sequence is its squared error, so the mean
error is that cost.

:func:`counting_ones_dataset` rebuilds the tutorial's own 20 sequences of 10 bits
(``np.random.seed(1)``), the data its Rprop run starts from ``(-1.5, 2)`` on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.repro.tasks._errors import checked
from rnn_jax.repro.tasks.base import Batch, Task, check_dtype, check_lengths, draw_length, make_sample, prefix_mask, squared_error

# Our choice, not the tutorial's (it reports the cost only): a mean squared error
# under 1e-4 means every count is within about 0.01 of the truth on average.
COUNTING_SUCCESS = 1e-4


def counting_ones(min_length: int = 10, max_length: int = 10, *, dtype=jnp.float32) -> Task:
    """Count the ones of a binary sequence (the tutorial: length 10).

    Args:
      min_length, max_length: T is drawn once per minibatch, uniform in
        ``[min_length, max_length)`` (``min_length`` if equal, the default 10).
      dtype: float dtype of the inputs, targets and mask.

    Example::

        task = counting_ones()
        batch = task.sample(jax.random.key(0), 20)   # inputs (20, 10, 1) in {0, 1}, targets (20, 1)
    """
    name = "counting_ones"
    longest = check_lengths(name, min_length, max_length)
    dtype = check_dtype(name, dtype)

    def generate(key, batch_size, length, nominal=None):
        k_length, k_bits = jax.random.split(key)
        t = draw_length(k_length, min_length, max_length) if nominal is None else nominal
        mask = prefix_mask(batch_size, length, t, dtype)
        bits = jax.random.bernoulli(k_bits, 0.5, (batch_size, length)).astype(dtype) * mask
        return Batch(bits[:, :, None], jnp.sum(bits, axis=1, keepdims=True), mask)

    return Task(
        name=name,
        input_size=1,
        output_size=1,
        loss="mse",
        on="last",
        sample=make_sample(name, longest, generate, (min_length, max_length)),
        error=checked(name, 0, squared_error),
        success_threshold=COUNTING_SUCCESS,
        min_length=min_length,
        max_length=max_length,
        max_steps=longest,
    )


def counting_ones_dataset(dtype=jnp.float32) -> Batch:
    """The tutorial's fixed data: 20 sequences of 10 bits from ``np.random.seed(1)``.

    The tutorial fills row by row with ``np.around(np.random.rand(10))``, which
    reads numpy's legacy generator in the same order as one ``rand(20, 10)``.
    Returns a Batch: inputs (20, 10, 1), targets (20, 1) counts, mask of ones.
    """
    dtype = check_dtype("counting_ones_dataset", dtype)
    bits = np.around(np.random.RandomState(1).rand(20, 10))
    return Batch(
        jnp.asarray(bits[:, :, None], dtype),
        jnp.asarray(bits.sum(axis=1, keepdims=True), dtype),
        jnp.ones(bits.shape, dtype),
    )
