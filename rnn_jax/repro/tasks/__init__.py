"""Synthetic tasks: the paper's pathological problems, counting ones, and teacher/student.

One small module per task; :mod:`rnn_jax.repro.tasks.base` holds the contract
(:class:`Batch`, :class:`Task`, :func:`lengths`) and explains how variable
lengths live in fixed-shape arrays. Build a task by name with :func:`get`::

    task = rnn_jax.repro.tasks.get("adding", min_length=50, max_length=200)
    batch = task.sample(jax.random.key(0), 20)

| name | inputs | targets | loss, on | error |
|---|---|---|---|---|
| ``temporal_order`` | 6 one-hot | (batch,) in 0..3 | xent, last | arg-max wrong |
| ``temporal_order_3bit`` | 6 one-hot | (batch,) in 0..7 | xent, last | arg-max wrong |
| ``adding`` | marker, value | (batch, 1) | mse, last | squared error > 0.04 |
| ``multiplication`` | marker, value | (batch, 1) | mse, last | squared error > 0.04 |
| ``random_permutation`` | 100 one-hot | (batch,) in {0, 1} | xent, last | arg-max wrong |
| ``noiseless_memorization`` | n_values + 2 | (batch, time) in 0..n_values | xent, every | any step wrong |
| ``counting_ones`` | 1 bit | (batch, 1) | mse, last | squared error |
| ``teacher_student`` | 3 N(0, 1) | (batch, 1) | mse, last | squared error |

The names of the original code (``torder``, ``torder3``, ``add``, ``mul``,
``perm``, ``mem``) are accepted too.
"""

from __future__ import annotations

import inspect
from typing import Callable, Dict

from rnn_jax._checks import UserTypeError, check_choice
from rnn_jax.repro.tasks.arithmetic import adding, multiplication
from rnn_jax.repro.tasks.base import (
    PATHOLOGICAL_SUCCESS, REGRESSION_TOLERANCE, Batch, Task, any_step_error, argmax_error, lengths, squared_error,
    thresholded_squared_error,
)
from rnn_jax.repro.tasks.counting import counting_ones, counting_ones_dataset
from rnn_jax.repro.tasks.memorization import noiseless_memorization
from rnn_jax.repro.tasks.order import temporal_order, temporal_order_3bit
from rnn_jax.repro.tasks.permutation import random_permutation
from rnn_jax.repro.tasks.teacher import (
    DocumentTeacher, document_inputs, document_student, document_teacher, make_teacher, teacher_cell, teacher_student,
)

TASKS: Dict[str, Callable[..., Task]] = {
    "temporal_order": temporal_order,
    "temporal_order_3bit": temporal_order_3bit,
    "adding": adding,
    "multiplication": multiplication,
    "random_permutation": random_permutation,
    "noiseless_memorization": noiseless_memorization,
    "counting_ones": counting_ones,
    "teacher_student": teacher_student,
}

# The task names of the original code's ``state['task']``.
ALIASES = {
    "torder": "temporal_order",
    "torder3": "temporal_order_3bit",
    "add": "adding",
    "mul": "multiplication",
    "perm": "random_permutation",
    "mem": "noiseless_memorization",
}


def get(name: str, **kwargs) -> Task:
    """Build a task by name: ``get("noiseless_memorization", n_values=5, n_positions=10)``.

    ``kwargs`` go to the task's constructor (``teacher_student`` needs ``key`` and
    ``largest_singular_value``). Raises ``ValueError`` naming the known tasks, and
    ``TypeError`` naming the task's arguments for an unknown or missing one.
    """
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    constructor = TASKS[check_choice("task", name, TASKS)]
    try:
        inspect.signature(constructor).bind(**kwargs)
    except TypeError as err:
        options = ", ".join(inspect.signature(constructor).parameters)
        raise UserTypeError(f"task {name!r}: {err}; it takes {options}") from None
    return constructor(**kwargs)


__all__ = [
    "ALIASES", "Batch", "PATHOLOGICAL_SUCCESS", "REGRESSION_TOLERANCE", "TASKS", "Task", "adding", "any_step_error",
    "DocumentTeacher", "argmax_error", "counting_ones", "document_inputs", "document_student", "document_teacher", "counting_ones_dataset", "get", "lengths", "make_teacher", "multiplication",
    "noiseless_memorization", "random_permutation", "squared_error", "teacher_cell", "teacher_student",
    "temporal_order", "temporal_order_3bit", "thresholded_squared_error",
]
