"""Run a cell over a sequence: :func:`unroll` (``lax.scan``) and :func:`python_unroll`.

Both take the same arguments and give the same results; the Python loop is the
plain reference that tests compare the scan against.

Layouts of ``xs``:
  * ``(batch, time, features)`` -- the default;
  * ``(time, batch, features)`` -- with ``time_major=True``;
  * ``(time, features)`` -- one unbatched sequence.
Outputs (and carries, on request) come back in the same layout as ``xs``.

``lengths`` (``(batch,)`` integers, or a scalar for an unbatched sequence) marks
each sequence's valid steps ``0 .. length-1``: at a padded step the carry is kept
and the output is zero (and whatever the padding holds, NaN included, reaches
neither the outputs nor the gradients), so the final carry is the one after the last valid step.
With ``reverse=True`` each sequence is read from its own last valid step back to
step 0 (PyTorch's packed-sequence semantics) and outputs stay at their positions.
Lengths known at trace time are checked to lie in ``[0, time]``; traced lengths
cannot be inspected and are clipped into that range (documented, tested).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax._checks import (
    UserTypeError, UserValueError, as_lengths, check_bool, check_floating, check_integer, check_lengths_range, describe,
)
from rnn_jax._padding import hold_padded, valid_at, valid_steps
from rnn_jax._platforms import OTHER, per_platform, table_key
from rnn_jax.cells import Cell, check_carry, check_cell, check_params, params_dtype
from rnn_jax.hand_scan import hand_scan

# The tables below are keyed by backend, "cpu", "gpu" (CUDA and ROCm) and "tpu"; a backend
# missing from a table gets its "gpu" entry. unroll reads them for the platform the program is
# LOWERED for (rnn_jax._platforms: jax.lax.platform_dependent), so a program exported for cuda
# on a CPU host gets the gpu entries. Editing a table changes what later traces choose.
#
# Whether to compute x @ w_ih + b for all steps before the loop, per backend: on CPU the
# projection inside the step was faster (hoisting materialises a (T, B, G*H) tensor and its
# gradient); on accelerators hoisting turns T small matmuls into one. (The hand pass of a
# cell without a ReverseRule always projects ahead: resolve_project_inputs.)
PROJECT_INPUTS_DEFAULT = {"cpu": False, "gpu": True, "tpu": True}
# Whether unroll's reverse pass is the hand-written one of rnn_jax.hand_scan (for cells with
# a combine) or autodiff of the scan, per backend: hand on CPU, where it was faster for every
# cell; autodiff on accelerators until `python -m benchmarks --profile device` says otherwise.
# The measurements behind both tables: benchmarks/RESULTS.md, "Measurements behind the defaults".
HAND_BACKWARD_DEFAULT = {"cpu": True, "gpu": False, "tpu": False}
BACKWARDS = ("hand", "autodiff")


def default_backward(cell: Cell, backend: Optional[str] = None) -> str:
    """The measured default for ``unroll``'s ``backward`` on ``backend``: ``"hand"`` or ``"autodiff"``.

    ``backend``: ``"cpu"``, ``"gpu"``, ``"tpu"`` or a lowering platform (``"cuda"``,
    ``"rocm"``); default JAX's default backend. :func:`unroll` asks for the platform its
    program is lowered for, whatever the host's default.
    """
    backend = table_key(backend or jax.default_backend())
    hand = HAND_BACKWARD_DEFAULT.get(backend, HAND_BACKWARD_DEFAULT["gpu"])
    return "hand" if hand and cell.combine is not None else "autodiff"


def resolve_backward(cell: Cell, backward: Optional[str] = None, *, remat: bool = False,
                     return_carries: bool = False, backend: Optional[str] = None) -> str:
    """The reverse pass :func:`unroll` runs for these arguments (checked): ``backward`` if
    given, else autodiff with ``remat``/``return_carries``, else :func:`default_backward`."""
    if backward is not None and backward not in BACKWARDS:
        raise UserValueError(f"backward: expected one of {', '.join(map(repr, BACKWARDS))}, got {backward!r}")
    if backward == "hand" and (remat or return_carries):
        raise UserValueError(
            "backward='hand' stores what its reverse pass needs itself; it cannot be combined with "
            f"remat=True or return_carries=True (got remat={remat}, return_carries={return_carries}); "
            "use backward='autodiff'"
        )
    if backward is not None:
        return backward
    return "autodiff" if (remat or return_carries) else default_backward(cell, backend)


def default_project_inputs(cell: Cell, backend: Optional[str] = None, backward: str = "autodiff") -> bool:
    """The measured default for ``project_inputs`` on ``backend`` (as in
    :func:`default_backward`; default JAX's default backend) with the reverse pass ``backward``."""
    if backward == "hand" and cell.reverse_rule is None:
        return True
    backend = table_key(backend or jax.default_backend())
    return PROJECT_INPUTS_DEFAULT.get(backend, PROJECT_INPUTS_DEFAULT["gpu"])


def resolve_project_inputs(cell: Cell, backward: str, project_inputs: Optional[bool] = None,
                           backend: Optional[str] = None) -> bool:
    """Whether :func:`unroll` projects the inputs ahead of the loop under the reverse pass
    ``backward``: as asked, else :func:`default_project_inputs`; the hand pass of a cell
    without a :class:`~rnn_jax.cells.ReverseRule` always does."""
    if backward == "hand" and cell.reverse_rule is None:
        return True
    return project_inputs if project_inputs is not None else default_project_inputs(cell, backend, backward)


class _Prepared(NamedTuple):
    xs: jax.Array  # (time, *batch, features)
    carry: Any
    lengths: Optional[jax.Array]  # (*batch,) int32 or None
    from_time_major: Any  # callable putting a time-major array back in the layout of xs


def _prepare(cell: Cell, params, xs, initial_carry, lengths, time_major) -> _Prepared:
    """Validate every argument at trace time and bring ``xs`` to time-major layout."""
    check_cell(cell)
    time_major = check_bool("time_major", time_major)
    input_size, dtype = check_params(cell, params), params_dtype(params)
    check_floating("xs", xs)
    if xs.ndim not in (2, 3):
        raise UserValueError(
            f"xs: expected rank 3 (batch, time, features), (time, batch, features) with time_major=True, "
            f"or rank 2 (time, features); got {describe(xs)}"
        )
    if xs.shape[-1] != input_size:
        raise UserValueError(f"xs: expected {input_size} features (the parameters' input size), got shape {tuple(xs.shape)}")
    if xs.dtype != dtype:
        raise UserTypeError(f"xs: expected dtype {dtype} to match the parameters, got {xs.dtype}")
    if xs.ndim == 3 and not time_major:
        xs_t = jnp.swapaxes(xs, 0, 1)
        batch_shape = (xs.shape[0],)
        from_tm = lambda a: jnp.swapaxes(a, 0, 1)
    else:
        xs_t = xs
        batch_shape = tuple(xs.shape[1:-1])
        from_tm = lambda a: a
    time = xs_t.shape[0]
    if time == 0:
        raise UserValueError(f"xs: the sequence has zero steps (shape {tuple(xs.shape)}); expected at least one")

    if initial_carry is None:
        carry = cell.initial_carry(batch_shape, dtype)
    else:
        if isinstance(initial_carry, cell.carry_type):
            # an unbatched carry (e.g. a learnable initial state) is broadcast to the batch
            initial_carry = cell.carry_type(
                *[
                    jnp.broadcast_to(leaf, batch_shape + leaf.shape) if hasattr(leaf, "ndim") and leaf.ndim == 1 and batch_shape else leaf
                    for leaf in initial_carry
                ]
            )
        check_carry(cell, initial_carry, batch_shape, dtype)
        carry = initial_carry

    if lengths is not None:
        lengths = as_lengths(lengths)
        check_integer("lengths", lengths)
        if tuple(lengths.shape) != batch_shape:
            raise UserValueError(f"lengths: expected shape {batch_shape} (one per sequence), got {tuple(lengths.shape)}")
        check_lengths_range("lengths", lengths, time)
        lengths = jnp.clip(lengths, 0, time).astype(jnp.int32)
    return _Prepared(xs_t, carry, lengths, from_tm)


def masked_scan(step, carry, inputs, lengths=None, *, reverse: bool = False, unroll: int = 1,
                remat: bool = False, return_carries: bool = False):
    """The scan over a cell that :func:`unroll` (autodiff path) and the diagnostics share:
    ``lax.scan`` of ``step(carry, input) -> (carry, y)`` over time-major ``inputs`` (a pytree) where
    a step ``t >= lengths`` (``(*batch,)`` int32, or None) zeroes its input, keeps the carry and
    outputs 0. Unchecked (:func:`unroll` is the checked entry point); other options as in
    :func:`unroll`. Returns ``(final, ys)`` or ``(final, ys, carries)``, time-major."""
    if lengths is None:
        body = lambda carry, inp: step(carry, inp[0])
    else:
        def body(carry, inp):
            x, t = inp
            valid = valid_at(t, lengths)
            # Padded inputs are zeroed before the step: the carry is masked anyway, but a NaN or
            # Inf there would otherwise turn the step's zero cotangent into NaN gradients.
            new_carry, y = step(carry, jax.tree_util.tree_map(lambda a: jnp.where(valid, a, jnp.zeros_like(a)), x))
            return hold_padded(valid, new_carry, carry, y)
    if return_carries:
        masked = body
        body = lambda carry, inp: (lambda c, y: (c, (y, c)))(*masked(carry, inp))
    if remat:
        body = jax.checkpoint(body)
    steps = jnp.arange(jax.tree_util.tree_leaves(inputs)[0].shape[0], dtype=jnp.int32)
    final, out = jax.lax.scan(body, carry, (inputs, steps), reverse=reverse, unroll=unroll)
    return (final, *out) if return_carries else (final, out)


def unroll(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    *,
    initial_carry: Any = None,
    lengths: Optional[jax.Array] = None,
    time_major: bool = False,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool = False,
    return_carries: bool = False,
    project_inputs: Optional[bool] = None,
    backward: Optional[str] = None,
):
    """Run ``cell`` over ``xs`` with ``lax.scan``.

    Args:
      cell: a :class:`~rnn_jax.cells.Cell`.
      params: the cell's parameters.
      xs: ``(batch, time, features)``, ``(time, batch, features)`` if ``time_major``,
        or ``(time, features)``; same floating dtype as ``params``.
      initial_carry: the cell's carry type with leaves ``(*batch, H)`` or ``(H,)``
        (broadcast); default zeros. A learnable initial state is a parameter passed here.
      lengths: ``(batch,)`` integer valid lengths (scalar if unbatched; an array, a list or
        a number), or None. Concrete lengths must lie in ``[0, T]``; traced ones cannot be
        checked and are clipped into it.
      time_major: see the layouts above.
      reverse: run from the last step to the first.
      unroll: ``lax.scan``'s unroll factor.
      remat: wrap the step in ``jax.checkpoint`` so the backward pass recomputes
        the step's internals and stores only the carries (for long sequences).
      return_carries: also return the carry after every step.
      project_inputs: compute ``x @ w_ih + b`` for all steps before the loop
        (True) or inside each step (False); default per device and cell,
        :func:`default_project_inputs` (which has a table per reverse pass), for the
        platform the program is lowered for (not the host's default backend). The
        hand-written reverse pass projects Pascanu's inputs ahead always
        (:func:`resolve_project_inputs`).
      backward: the reverse pass when this is differentiated: ``"hand"``
        (:func:`rnn_jax.hand_scan.hand_scan`: the recurrent weight's gradient as one
        large product after the loop; no forward-mode autodiff) or ``"autodiff"``
        (of the scan); default per device and cell, :func:`default_backward`, for the
        platform the program is lowered for. Where platforms differ, both are traced
        (``jax.lax.platform_dependent``) and lowering keeps one: forward-mode autodiff
        through the default then fails on every device, so pass ``"autodiff"`` for it.
        ``remat`` and ``return_carries`` use autodiff; asking for ``"hand"`` with
        them is an error.

    Returns:
      ``(final_carry, outputs)``, or ``(final_carry, outputs, carries)`` with
      ``return_carries``; ``outputs`` has the layout of ``xs`` with H features.
    """
    check_cell(cell)
    if not (isinstance(unroll, (int, np.integer)) and not isinstance(unroll, bool) and unroll >= 1):
        raise UserValueError(f"unroll: expected a positive integer, got {unroll!r}")
    reverse = check_bool("reverse", reverse)
    remat = check_bool("remat", remat)
    return_carries = check_bool("return_carries", return_carries)
    if project_inputs is not None:
        project_inputs = check_bool("project_inputs", project_inputs)

    def choose(backend):
        how = resolve_backward(cell, backward, remat=remat, return_carries=return_carries, backend=backend)
        return how, resolve_project_inputs(cell, how, project_inputs, backend)

    choose(OTHER)  # the backward argument's checks, before the inputs'
    prep = _prepare(cell, params, xs, initial_carry, lengths, time_major)
    options = dict(reverse=reverse, unroll=int(unroll), remat=remat, return_carries=return_carries)
    # the defaults of the platform this is lowered for (rnn_jax._platforms)
    out = per_platform(choose, lambda choice: partial(_scan, cell, *choice, **options),
                       params, prep.xs, prep.carry, prep.lengths)
    if return_carries:
        final, ys, carries = out
        return final, prep.from_time_major(ys), jax.tree_util.tree_map(prep.from_time_major, carries)
    final, ys = out
    return final, prep.from_time_major(ys)


def _scan(cell: Cell, backward: str, project_inputs: bool, params, xs_t, carry, lengths, *, reverse: bool, unroll: int,
          remat: bool, return_carries: bool):
    """:func:`unroll` over prepared, time-major inputs with the reverse pass and projection
    resolved: ``(final, ys)`` or ``(final, ys, carries)``, time-major. The lowered program
    names the choice in its operations' locations (the scope ``unroll[backward=...,
    project_inputs=...]``), where profiles and tests can read it."""
    with jax.named_scope(f"unroll[backward={backward},project_inputs={project_inputs}]"):
        if backward == "hand":
            if lengths is not None:
                # padded inputs are zeroed before the projection (a NaN there must not reach the gradients)
                valid = valid_steps(jnp.arange(xs_t.shape[0], dtype=jnp.int32), lengths)
                xs_t = jnp.where(valid, xs_t, jnp.zeros_like(xs_t))
            return hand_scan(cell, params, xs_t, carry, lengths, reverse=reverse, unroll=unroll,
                             project_inputs=project_inputs)
        if project_inputs:  # x @ w_ih + b for all steps before the loop
            inputs, step = cell.project(params, xs_t), lambda c, xp: cell.step_projected(params, c, xp)
        else:
            inputs, step = xs_t, lambda c, x: cell.step_projected(params, c, cell.project(params, x))
        return masked_scan(step, carry, inputs, lengths, reverse=reverse, unroll=unroll, remat=remat,
                           return_carries=return_carries)


def python_unroll(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    *,
    initial_carry: Any = None,
    lengths: Optional[jax.Array] = None,
    time_major: bool = False,
    reverse: bool = False,
    return_carries: bool = False,
):
    """The same as :func:`unroll`, as a plain Python loop over :attr:`Cell.step` (a reference)."""
    check_cell(cell)
    reverse = check_bool("reverse", reverse)
    return_carries = check_bool("return_carries", return_carries)
    prep = _prepare(cell, params, xs, initial_carry, lengths, time_major)
    time = prep.xs.shape[0]
    carry = prep.carry
    ys = [None] * time
    carries = [None] * time
    order = range(time - 1, -1, -1) if reverse else range(time)
    for t in order:
        x = prep.xs[t]
        if prep.lengths is not None:
            valid = (t < prep.lengths)[..., None]
            x = jnp.where(valid, x, jnp.zeros_like(x))
        new_carry, y = cell.step(params, carry, x)
        if prep.lengths is not None:
            new_carry = cell.carry_type(*[jnp.where(valid, n, o) for n, o in zip(new_carry, carry)])
            y = jnp.where(valid, y, 0.0)
        carry = new_carry
        ys[t] = y
        carries[t] = carry
    outputs = prep.from_time_major(jnp.stack(ys))
    if return_carries:
        stacked = cell.carry_type(*[prep.from_time_major(jnp.stack(leaves)) for leaves in zip(*carries)])
        return carry, outputs, stacked
    return carry, outputs
