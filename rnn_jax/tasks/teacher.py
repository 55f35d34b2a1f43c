"""The teacher/student task (``seeds/000``): learn the function of a fixed random RNN.

The teacher is an Elman network in the document's column-vector form::

    h_t = sigmoid(W_hh h_{t-1} + W_hi u_t + b_hh),  h_0 = 0,    y_t = W_yh h_t + b_yh

with 3 inputs, 2 hidden units, 1 linear output and every weight and bias drawn
N(0, 1). ``W_hh`` is then rebuilt from its SVD ``U diag(s) V^T`` with its largest
singular value ``s[0]`` replaced by a chosen value (small: vanishing regime;
large, e.g. 10: exploding regime); the others are kept. Inputs are N(0, 1) at
every step (``np.random.randn(data_num, seq_len, input_num)``), and the target is
the teacher's output at the last step (the document's student is trained on the
last step only). The error of a sequence is its squared error, so the mean error
is the document's cost.

The teacher comes back as :class:`rnn_jax.model.ModelParams` for
``elman(hidden_size, "sigmoid")`` in this project's row-vector layout
(``w_hh = W_hh.T``, ``w_ih = W_hi.T``, readout ``w = W_yh.T``), so a student's
parameters can be compared with it field by field.

The document trains on one fixed set of 500 sequences; draw it once with a fixed
key: ``task.sample(jax.random.key(1), 500)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import model
from rnn_jax._checks import check_key, check_positive_int, is_concrete
from rnn_jax.cells import Cell, ElmanParams, elman
from rnn_jax.readout import ReadoutParams
from rnn_jax.tasks.base import Batch, Task, check_dtype, check_lengths, draw_length, make_sample, prefix_mask, squared_error

# Our choice, not the document's: its converged costs are 1e-5 or below, its
# stuck (exploding) runs stay at 4.5e-3; 1e-4 separates the two.
TEACHER_SUCCESS = 1e-4


def teacher_cell(hidden_size: int = 2) -> Cell:
    """The teacher's (and the student's) cell: ``elman(hidden_size, "sigmoid")``."""
    return elman(hidden_size, "sigmoid")


def make_teacher(
    key: jax.Array,
    largest_singular_value: Any,
    *,
    input_size: int = 3,
    hidden_size: int = 2,
    output_size: int = 1,
    dtype=jnp.float32,
) -> model.ModelParams:
    """The teacher's weights, N(0, 1) with ``W_hh``'s largest singular value set by hand.

    Args:
      key: a concrete PRNG key (the SVD surgery runs eagerly, in float64 numpy);
        split into ``W_hh, b_hh, W_hi, W_yh, b_yh`` in the document's order.
      largest_singular_value: the new ``s[0]``, positive, and not below the other
        singular values (else it would not be the largest: pick another key or a
        larger value); ``None`` keeps ``W_hh`` as drawn.
      input_size, hidden_size, output_size: 3, 2, 1 in the document.
      dtype: float dtype of the returned weights.

    Returns:
      ``ModelParams(cell=ElmanParams(w_ih, w_hh, b), readout=ReadoutParams(w, b))``
      for :func:`teacher_cell`, row-vector layout.
    """
    check_key("make_teacher key", key)
    if not is_concrete(key):
        raise TypeError("make_teacher key: expected a concrete key; build the teacher outside jit/vmap")
    input_size = check_positive_int("make_teacher input_size", input_size)
    hidden_size = check_positive_int("make_teacher hidden_size", hidden_size)
    output_size = check_positive_int("make_teacher output_size", output_size)
    dtype = check_dtype("make_teacher", dtype)
    k_hh, k_bh, k_hi, k_yh, k_by = jax.random.split(key, 5)
    normal = lambda k, shape: np.asarray(jax.random.normal(k, shape, dtype), np.float64)
    w_hh = normal(k_hh, (hidden_size, hidden_size))  # column-vector W_hh
    if largest_singular_value is not None:
        value = float(largest_singular_value)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"make_teacher largest_singular_value: expected a positive number, got {largest_singular_value!r}")
        u, s, vt = np.linalg.svd(w_hh)  # s sorted in decreasing order
        if hidden_size > 1 and value < s[1]:
            raise ValueError(
                f"make_teacher largest_singular_value: {value} is below this teacher's second singular value "
                f"{s[1]:.6g}, so it would not be the largest; pass a value >= {s[1]:.6g} or another key"
            )
        s[0] = value
        w_hh = (u * s) @ vt
    as_dtype = lambda a: jnp.asarray(a, dtype)
    return model.ModelParams(
        cell=ElmanParams(
            w_ih=as_dtype(normal(k_hi, (hidden_size, input_size)).T),
            w_hh=as_dtype(w_hh.T),
            b=as_dtype(normal(k_bh, (hidden_size,))),
        ),
        readout=ReadoutParams(w=as_dtype(normal(k_yh, (output_size, hidden_size)).T), b=as_dtype(normal(k_by, (output_size,)))),
    )


def teacher_student(
    key: jax.Array,
    largest_singular_value: Any,
    *,
    min_length: int = 10,
    max_length: int = 10,
    input_size: int = 3,
    hidden_size: int = 2,
    output_size: int = 1,
    success_threshold: float = TEACHER_SUCCESS,
    dtype=jnp.float32,
) -> Task:
    """Regress the last output of the teacher :func:`make_teacher` ``(key, largest_singular_value)``.

    Args:
      key, largest_singular_value, input_size, hidden_size, output_size: the teacher
        (see :func:`make_teacher`).
      min_length, max_length: T is drawn once per minibatch, uniform in
        ``[min_length, max_length)`` (``min_length`` if equal; the document uses
        fixed lengths 2, 10 and 100).
      success_threshold: mean squared error under which the student has learnt.
      dtype: float dtype of the inputs, targets and mask.

    Example::

        task = teacher_student(jax.random.key(0), 10.0, min_length=100, max_length=100)
        data = task.sample(jax.random.key(1), 500)   # inputs (500, 100, 3), targets (500, 1)
    """
    name = "teacher_student"
    longest = check_lengths(name, min_length, max_length)
    dtype = check_dtype(name, dtype)
    teacher = make_teacher(key, largest_singular_value, input_size=input_size, hidden_size=hidden_size,
                           output_size=output_size, dtype=dtype)
    cell = teacher_cell(hidden_size)

    def generate(sample_key, batch_size, length):
        k_length, k_inputs = jax.random.split(sample_key)
        t = draw_length(k_length, min_length, max_length)
        mask = prefix_mask(batch_size, length, t, dtype)
        inputs = jax.random.normal(k_inputs, (batch_size, length, input_size), dtype) * mask[:, :, None]
        targets = model.predict(cell, teacher, inputs, on="last", lengths=jnp.full((batch_size,), t, jnp.int32))
        return Batch(inputs, targets, mask)

    return Task(
        name=name,
        input_size=input_size,
        output_size=output_size,
        loss="mse",
        on="last",
        sample=make_sample(name, longest, generate),
        error=squared_error,
        success_threshold=float(success_threshold),
        min_length=min_length,
        max_length=max_length,
        max_steps=longest,
    )
