"""The random permutation problem (Hochreiter & Schmidhuber 1997; ``permutation.py``).

100 symbols, one-hot. Step 0 shows symbol 0 or 1 (fair coin); every other step
shows a symbol drawn uniformly in 2..99. The label, read at the last step, is the
step-0 symbol (100-way softmax, as in the code); softmax cross-entropy on the
last step; a sequence is wrong when the arg-max is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.repro.tasks._errors import checked
from rnn_jax.repro.tasks.base import (
    PATHOLOGICAL_SUCCESS, Batch, Task, argmax_error, check_dtype, check_lengths, draw_length, make_sample,
    prefix_mask, steps,
)

N_SYMBOLS = 100


def random_permutation(min_length: int = 50, max_length: int = 200, *, dtype=jnp.float32) -> Task:
    """The random permutation problem: remember the first symbol (0 or 1) over T steps.

    Args:
      min_length, max_length: T is drawn once per minibatch, uniform in
        ``[min_length, max_length)`` (``min_length`` if equal).
      dtype: float dtype of the inputs and mask.

    Example::

        task = random_permutation(50, 200)
        batch = task.sample(jax.random.key(0), 20)   # inputs (20, 199, 100), targets (20,) in {0, 1}
    """
    name = "random_permutation"
    longest = check_lengths(name, min_length, max_length)
    dtype = check_dtype(name, dtype)

    def generate(key, batch_size, length, nominal=None):
        k_length, k_first, k_rest = jax.random.split(key, 3)
        t = draw_length(k_length, min_length, max_length) if nominal is None else nominal
        first = jax.random.randint(k_first, (batch_size,), 0, 2, dtype=jnp.int32)
        rest = jax.random.randint(k_rest, (batch_size, length), 2, N_SYMBOLS, dtype=jnp.int32)
        symbols = jnp.where(steps(length)[None, :] == 0, first[:, None], rest)
        mask = prefix_mask(batch_size, length, t, dtype)
        inputs = jax.nn.one_hot(symbols, N_SYMBOLS, dtype=dtype) * mask[:, :, None]
        return Batch(inputs, first, mask)

    return Task(
        name=name,
        input_size=N_SYMBOLS,
        output_size=N_SYMBOLS,
        loss="xent",
        on="last",
        sample=make_sample(name, longest, generate, (min_length, max_length)),
        error=checked(name, N_SYMBOLS, argmax_error),
        success_threshold=PATHOLOGICAL_SUCCESS,
        min_length=min_length,
        max_length=max_length,
        max_steps=longest,
    )
