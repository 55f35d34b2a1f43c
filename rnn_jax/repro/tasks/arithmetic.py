"""The adding and multiplication problems (Hochreiter & Schmidhuber 1997; ``addition.py``, ``multiplication.py``).

Two input channels: channel 0 marks two positions, channel 1 holds values drawn
uniformly in [0, 1) at every step. As in the code, the actual length is
``T' = T + randint(T // 10)`` (T drawn per minibatch, T' per minibatch too), and
the marked positions are drawn per sequence::

    p0 uniform in [0, T'//10)        p1 uniform in [T'//10, T'//10 + 4T'//10)

(``int(0.1 T') == T' // 10`` and ``int(0.4 T') == 4T' // 10`` exactly.) The target,
read at the last valid step, is ``(x_p0 + x_p1) / 2`` (adding) or ``x_p0 · x_p1``
(multiplication), shape ``(batch, 1)``; squared error on the last step; a sequence
is wrong when its squared error exceeds 0.04.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.repro.tasks._errors import checked
from rnn_jax.repro.tasks.base import (
    PATHOLOGICAL_SUCCESS, Batch, Task, check_dtype, check_lengths, draw_length, make_sample, prefix_mask, steps,
    thresholded_squared_error,
)

COMBINE = {
    "adding": lambda a, b: (a + b) / 2,
    "multiplication": lambda a, b: a * b,
}


def _arithmetic(name: str, min_length: int, max_length: int, dtype) -> Task:
    # T >= 10 so that randint(T // 10) and the window of p0 are non-empty, as the code needs.
    longest = check_lengths(name, min_length, max_length, smallest=10, why=" (T' = T + randint(T // 10))")
    dtype = check_dtype(name, dtype)
    max_steps = longest + longest // 10 - 1
    combine = COMBINE[name]

    def generate(key, batch_size, length, nominal=None):
        k_length, k_extra, k_p0, k_p1, k_value = jax.random.split(key, 5)
        t = draw_length(k_length, min_length, max_length) if nominal is None else nominal
        total = t + jax.random.randint(k_extra, (), 0, t // 10, dtype=jnp.int32)
        p0 = jax.random.randint(k_p0, (batch_size,), 0, total // 10, dtype=jnp.int32)
        p1 = total // 10 + jax.random.randint(k_p1, (batch_size,), 0, (4 * total) // 10, dtype=jnp.int32)
        mask = prefix_mask(batch_size, length, total, dtype)
        values = jax.random.uniform(k_value, (batch_size, length), dtype) * mask
        time = steps(length)[None, :]
        markers = ((time == p0[:, None]) | (time == p1[:, None])).astype(dtype)
        inputs = jnp.stack([markers, values], axis=-1)
        x0 = jnp.take_along_axis(values, p0[:, None], axis=1)
        x1 = jnp.take_along_axis(values, p1[:, None], axis=1)
        return Batch(inputs, combine(x0, x1), mask)

    return Task(
        name=name,
        input_size=2,
        output_size=1,
        loss="mse",
        on="last",
        sample=make_sample(name, max_steps, generate, (min_length, max_length)),
        error=checked(name, 0, thresholded_squared_error),
        success_threshold=PATHOLOGICAL_SUCCESS,
        min_length=min_length,
        max_length=max_length,
        max_steps=max_steps,
    )


def adding(min_length: int = 50, max_length: int = 200, *, dtype=jnp.float32) -> Task:
    """The adding problem: target ``(x_p0 + x_p1) / 2``, shape (batch, 1).

    Args:
      min_length, max_length: the nominal T, drawn once per minibatch, uniform in
        ``[min_length, max_length)`` (``min_length`` if equal); at least 10. The
        sequences are ``T + randint(T // 10)`` steps long, so ``max_steps`` exceeds
        ``max_length`` by about 10 %.
      dtype: float dtype of the inputs, targets and mask.

    Example::

        task = adding(50, 200)
        batch = task.sample(jax.random.key(0), 20)   # inputs (20, 217, 2), targets (20, 1)
    """
    return _arithmetic("adding", min_length, max_length, dtype)


def multiplication(min_length: int = 50, max_length: int = 200, *, dtype=jnp.float32) -> Task:
    """The multiplication problem: target ``x_p0 · x_p1``. Arguments as :func:`adding`."""
    return _arithmetic("multiplication", min_length, max_length, dtype)
