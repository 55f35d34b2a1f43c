"""The teacher/student task (the Theano teacher/student blog post on vanishing and exploding gradients): learn the function of a fixed random RNN.

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

The document's own draws. Its code fixes every random number with NumPy's legacy
generator: ``np.random.seed(19910715)``, then ``W_hh = randn(2, 2)``, the SVD of
``W_hh`` and the optional hand-set ``s[0,0]`` (``W_hh = u·diag(s)·v``, no draw),
``b_hh = randn(2)``, ``W_hi = randn(2, 3)``, ``W_yh = randn(1, 2)``,
``b_yh = randn(1)`` (:func:`document_teacher`), then the data
``randn(500, seq_len, 3)`` from the same stream (:func:`document_inputs`); the
student is ``RandomState(1234).normal(scale=0.01)`` for ``W_uh (3, 2)``,
``W_hh (2, 2)``, ``W_hy (2, 1)`` in that order and zero biases
(:func:`document_student`). ``np.random.RandomState(seed)`` gives the same numbers
as ``np.random.seed(seed)`` followed by ``np.random.*`` (it is the same Mersenne
twister and Gaussian sampler), without touching NumPy's global state.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import model
from rnn_jax._checks import check_key, check_positive_int, is_concrete
from rnn_jax.cells import Cell, ElmanParams, elman
from rnn_jax.readout import ReadoutParams
from rnn_jax.repro.tasks.base import Batch, Task, check_dtype, check_lengths, draw_length, make_sample, prefix_mask, squared_error

# The document's seeds (``rnn_generator.py`` and ``my_rnn.py``).
DOCUMENT_TEACHER_SEED = 19910715
DOCUMENT_STUDENT_SEED = 1234

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


# ---------------------------------------------------------------- the document's own draws


def _check_seed(what: str, seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2 ** 32:
        raise ValueError(f"{what}: expected an integer NumPy seed in [0, 2**32), got {seed!r}")
    return int(seed)


class DocumentTeacher(NamedTuple):
    """The teacher of ``rnn_generator.py`` and the generator positioned after its draws.

    params: :class:`rnn_jax.model.ModelParams` of float64 NumPy arrays in this project's
      row-vector layout (``w_hh = W_hh.T``, ``w_ih = W_hi.T``, readout ``w = W_yh.T``);
      convert with ``jax.tree_util.tree_map(jnp.asarray, params)`` (float64 needs
      ``jax_enable_x64``).
    singular_values: ``W_hh``'s singular values after the hand-set ``s[0,0]``, sorted.
    drawn_singular_values: those of the drawn ``W_hh`` (before ``s[0,0]`` is set).
    rng: the ``np.random.RandomState`` after the teacher's draws: the document's data
      come next (:func:`document_inputs`).
    """

    params: model.ModelParams
    singular_values: np.ndarray
    drawn_singular_values: np.ndarray
    rng: np.random.RandomState


def document_teacher(
    s00: Optional[float] = None,
    *,
    seed: int = DOCUMENT_TEACHER_SEED,
    input_size: int = 3,
    hidden_size: int = 2,
    output_size: int = 1,
) -> DocumentTeacher:
    """The document's teacher, drawn exactly as ``RNNGenerator.__init__`` draws it.

    ``np.random.seed(seed)``; ``W_hh = randn(H, H)``; ``u, s, v = svd(W_hh)``; if
    ``s00`` is given, ``s[0,0] = s00`` and ``W_hh = u·diag(s)·v`` (the document's
    commented lines, with ``s[0,0] = 10`` as printed); then ``b_hh = randn(H)``,
    ``W_hi = randn(H, I)``, ``W_yh = randn(O, H)``, ``b_yh = randn(O)``. The SVD draws
    no random number, so the biases and the other weights are the same whatever
    ``s00`` is. Like the document, ``s00`` replaces the drawn largest singular value
    whether or not it stays the largest.

    Args:
      s00: the hand-set first singular value (positive), or ``None`` for ``W_hh`` as
        drawn (the code as printed, the override commented out).
      seed: the NumPy seed (the document's 19910715).
      input_size, hidden_size, output_size: 3, 2, 1 in the document.

    Returns:
      :class:`DocumentTeacher` (float64 NumPy parameters, singular values and the
      generator for the data).
    """
    seed = _check_seed("document_teacher seed", seed)
    input_size = check_positive_int("document_teacher input_size", input_size)
    hidden_size = check_positive_int("document_teacher hidden_size", hidden_size)
    output_size = check_positive_int("document_teacher output_size", output_size)
    if s00 is not None:
        if isinstance(s00, bool) or not isinstance(s00, (int, float, np.integer, np.floating)) \
                or not np.isfinite(s00) or s00 <= 0:
            raise ValueError(f"document_teacher s00: expected a positive number or None, got {s00!r}")
    rng = np.random.RandomState(seed)
    w_hh = rng.randn(hidden_size, hidden_size)
    u, s, v = np.linalg.svd(w_hh, full_matrices=True, compute_uv=True)
    drawn = s.copy()
    if s00 is not None:
        s = s.copy()
        s[0] = float(s00)
        w_hh = np.dot(np.dot(u, np.diag(s)), v)
    b_hh = rng.randn(hidden_size)
    w_hi = rng.randn(hidden_size, input_size)
    w_yh = rng.randn(output_size, hidden_size)
    b_yh = rng.randn(output_size)
    params = model.ModelParams(
        cell=ElmanParams(w_ih=np.ascontiguousarray(w_hi.T), w_hh=np.ascontiguousarray(w_hh.T), b=b_hh),
        readout=ReadoutParams(w=np.ascontiguousarray(w_yh.T), b=b_yh),
    )
    return DocumentTeacher(params, np.sort(np.abs(s))[::-1], drawn, rng)


def document_inputs(rng: np.random.RandomState, num_sequences: int, length: int, input_size: int = 3) -> np.ndarray:
    """The document's inputs: ``rng.randn(num_sequences, length, input_size)`` (float64).

    Called with :func:`document_teacher`'s ``rng`` it gives ``RNNGenerator.inputs_outputs``'s
    ``m_inputs``. One draw fills the array in C order, so the first ``n`` sequences of a
    draw of ``N ≥ n`` are a draw of ``n``.
    """
    if not isinstance(rng, np.random.RandomState):
        raise TypeError(f"document_inputs rng: expected a numpy.random.RandomState (document_teacher(...).rng), "
                        f"got {type(rng).__name__}")
    num_sequences = check_positive_int("document_inputs num_sequences", num_sequences)
    length = check_positive_int("document_inputs length", length)
    input_size = check_positive_int("document_inputs input_size", input_size)
    return rng.randn(num_sequences, length, input_size)


def document_student(
    seed: int = DOCUMENT_STUDENT_SEED, *, input_size: int = 3, hidden_size: int = 2, output_size: int = 1,
) -> model.ModelParams:
    """The document's student (``my_rnn.py``'s ``RNN.__init__``) as float64 NumPy arrays.

    ``rng = RandomState(seed)``; ``W_uh = rng.normal(size=(I, H), scale=.01)``,
    ``W_hh = rng.normal(size=(H, H), scale=.01)``, ``W_hy = rng.normal(size=(H, O),
    scale=.01)`` in that order; ``b_hh``, ``b_hy`` zero. The student is written in the
    row-vector layout already (``h_t = σ(h_{t-1} W_hh + u_t W_uh + b_hh)``,
    ``y = h W_hy + b_hy``), so these are the fields of :func:`teacher_cell`'s parameters
    as they are.
    """
    seed = _check_seed("document_student seed", seed)
    input_size = check_positive_int("document_student input_size", input_size)
    hidden_size = check_positive_int("document_student hidden_size", hidden_size)
    output_size = check_positive_int("document_student output_size", output_size)
    rng = np.random.RandomState(seed)
    w_uh = rng.normal(size=(input_size, hidden_size), scale=.01, loc=.0)
    w_hh = rng.normal(size=(hidden_size, hidden_size), scale=.01, loc=.0)
    w_hy = rng.normal(size=(hidden_size, output_size), scale=.01, loc=0.0)
    return model.ModelParams(
        cell=ElmanParams(w_ih=w_uh, w_hh=w_hh, b=np.zeros(hidden_size)),
        readout=ReadoutParams(w=w_hy, b=np.zeros(output_size)),
    )
