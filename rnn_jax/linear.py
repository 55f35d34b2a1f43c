"""Linear recurrences ``h_t = a_t ⊙ h_{t-1} + x_t``, sequentially or as a parallel prefix scan.

An RNN whose activation is the identity and whose recurrent matrix is diagonal
(the linear recurrent layers of S4/S5/LRU-style models, or an exponential moving
average) needs no matrix product per step, and then the recurrence itself can be
evaluated in parallel over time. :func:`linear_recurrence` computes every ``h_t``
in one of two ways:

* ``"sequential"``: ``lax.scan``, one step after the other: T dependent steps of
  O(state) work each;
* ``"parallel"``: ``lax.associative_scan`` over the pairs ``(a_t, x_t)``. Step t
  is the affine map ``h -> a_t h + x_t``; composing the map ``(a1, b1)`` with the
  later map ``(a2, b2)`` gives ``h -> a2 (a1 h + b1) + b2``, so

      (a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2),

  an associative operation whose prefix "sums" hold ``h_t`` in their second
  component (starting from ``h_{-1} = 0``). The prefix scan takes O(log T)
  dependent levels and about three times the arithmetic of the sequential loop
  (about 2T combines of 3 operations, against T steps of 2).

Both give the same ``h`` up to rounding (floating-point products and sums are
associated differently: below 1e-6 relative in float32 up to T = 1M, see
benchmarks/RESULTS.md) and both are differentiable (``grad`` of either is again a
scan of the same kind). ``"auto"`` picks one per platform from
:data:`PARALLEL_FROM_LENGTH` (:func:`default_method`), for the platform the program is
lowered for.

Layouts: ``x`` is ``(..., time, ...)`` with the time axis at ``axis`` and any
other axes (batch, channels) elementwise; the result has ``x``'s shape.
``a`` broadcasts to ``x``'s shape by NumPy's rules, so its extent along the time
axis says whether it changes per step (T) or is constant (1, or absent): e.g.
for ``x`` of shape ``(T, C)``, ``a`` of shape ``()`` is one scalar, ``(C,)``
one decay per channel, ``(T, C)`` one per step and channel.
``h0`` (default zeros) is the state before the first step; it broadcasts to the
state shape (``x``'s shape without the time axis). The parallel path folds it
into the first input: ``h_0 = a_0 h0 + x_0`` is also the first state of the
recurrence from zero with input ``x_0 + a_0 h0``, and every later step is unchanged.

``reverse=True`` runs the recurrence from the last step back to the first,
``h_t = a_t ⊙ h_{t+1} + x_t`` with ``h_T = h0``, and keeps each ``h_t`` at its
position ``t`` (like ``lax.scan(..., reverse=True)``); it is the forward
recurrence of the time-reversed sequences (the parallel path folds ``h0`` into
``x_{T-1}``). The gradient of a forward recurrence for ``x`` is such a reversed
one, with the decays shifted by one step.

A caveat of the parallel path: it forms the products ``a_s ... a_t`` over
sub-ranges of time. With ``|a| > 1`` they grow geometrically and, once they
overflow (float32: e.g. ``a = 1.1`` over ~930 steps), can give ``NaN``
even where ``h`` itself is finite (``x`` all zero); the sequential path does not.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax._checks import UserTypeError, UserValueError, check_bool, check_choice, check_floating, describe
from rnn_jax._platforms import per_platform, table_key

METHODS = ("auto", "sequential", "parallel")

# The sequence length from which method="auto" takes the parallel scan, per backend
# (None: never). A backend missing here gets the "gpu" entry ("gpu" covers CUDA and ROCm).
# linear_recurrence reads it for the platform the program is lowered for, not the host's
# default backend (rnn_jax._platforms). Edit this table to change the default for a process.
#
# cpu -- never: the associative scan does three times the arithmetic and a CPU has no idle
#   parallel units for it to fill (it measured 0.2-1.9x the sequential scan's speed).
# gpu, tpu -- from 64 steps, an estimate (2 log2(T) levels of a few kernels against T loop
#   iterations of one launch each); `python -m benchmarks --workloads LIN` on a device checks it.
# The measurements and the estimate's arithmetic: benchmarks/RESULTS.md, "Measurements behind the defaults".
PARALLEL_FROM_LENGTH: dict = {"cpu": None, "gpu": 64, "tpu": 64}


def default_method(length: int, backend: Optional[str] = None) -> str:
    """The method ``"auto"`` resolves to for ``length`` steps on ``backend`` (``"cpu"``,
    ``"gpu"``, ``"tpu"`` or a lowering platform, ``"cuda"``, ``"rocm"``; default JAX's default
    backend). :func:`linear_recurrence` asks for the platform its program is lowered for.

    Returns ``"parallel"`` when :data:`PARALLEL_FROM_LENGTH` gives the backend a
    threshold and ``length`` reaches it, else ``"sequential"``.
    """
    backend = table_key(backend or jax.default_backend())
    threshold = PARALLEL_FROM_LENGTH.get(backend, PARALLEL_FROM_LENGTH["gpu"])
    return "parallel" if threshold is not None and length >= threshold else "sequential"


def _as_array(what: str, value: Any, dtype) -> Any:
    """Accept a Python float as a scalar of ``dtype`` (it has no dtype of its own); check arrays."""
    if type(value) is float:
        return jnp.asarray(value, dtype)
    check_floating(what, value)
    if value.dtype != dtype:
        raise UserTypeError(f"{what}: expected dtype {dtype} to match x, got {describe(value)}")
    return value


def _broadcasts_to(shape, target) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def _check(a, x, h0, axis, method):
    """Validate at trace time; return ``(a, h0, axis)`` with ``a`` of x's rank and ``axis`` non-negative."""
    check_choice("method", method, METHODS)
    check_floating("x", x)
    if x.ndim == 0:
        raise UserValueError(f"x: expected at least one axis (time), got {describe(x)}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
        raise UserValueError(f"axis: expected an integer in [{-x.ndim}, {x.ndim}) for x of shape {tuple(x.shape)}, got {axis!r}")
    axis = int(axis) % x.ndim
    if x.shape[axis] == 0:
        raise UserValueError(f"x: the sequence has zero steps (axis {axis} of shape {tuple(x.shape)}); expected at least one")
    a = _as_array("a", a, x.dtype)
    if not _broadcasts_to(a.shape, x.shape):
        raise UserValueError(
            f"a: expected a shape that broadcasts to x's shape {tuple(x.shape)} (time axis {axis}: "
            f"extent {x.shape[axis]} per step or 1 for constant), got {tuple(a.shape)}"
        )
    a = jnp.reshape(a, (1,) * (x.ndim - a.ndim) + tuple(a.shape))
    if h0 is not None:
        h0 = _as_array("h0", h0, x.dtype)
        state = tuple(x.shape[:axis] + x.shape[axis + 1:])
        if not _broadcasts_to(h0.shape, state):
            raise UserValueError(
                f"h0: expected a shape that broadcasts to the state shape {state} (x's shape without "
                f"the time axis {axis}), got {tuple(h0.shape)}"
            )
    return a, h0, axis


def _sequential(a, x, h0, reverse):
    """``lax.scan`` over time-major ``a`` (T or 1, ...) and ``x`` (T, ...)."""
    h0 = jnp.zeros(x.shape[1:], x.dtype) if h0 is None else jnp.broadcast_to(h0, x.shape[1:])
    constant = a.shape[0] == 1  # close over a constant decay rather than scanning T copies of it

    def step(h, inputs):
        a_t, x_t = (a[0], inputs) if constant else inputs
        h = a_t * h + x_t
        return h, h

    return jax.lax.scan(step, h0, x if constant else (a, x), reverse=reverse)[1]


def _combine(earlier, later):
    """``(a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2)``: apply the earlier affine map, then the later one."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def _parallel(a, x, h0, reverse):
    """``lax.associative_scan`` over time-major pairs; ``a`` keeps its own (broadcastable) non-time shape."""
    a = jnp.broadcast_to(a, x.shape[:1] + a.shape[1:])
    if h0 is not None:
        first = -1 if reverse else 0
        x = x.at[first].add(a[first] * h0)
    # With reverse=True associative_scan runs over the reversed sequence, where the
    # later step is again the right-hand argument: the same combine applies.
    return jax.lax.associative_scan(_combine, (a, x), reverse=reverse, axis=0)[1]


def linear_recurrence(a, x, h0=None, *, axis: int = 0, reverse: bool = False, method: str = "auto") -> jax.Array:
    """All states of ``h_t = a_t ⊙ h_{t-1} + x_t`` (elementwise), for t = 0 .. T-1.

    Args:
      a: the decays, broadcastable to ``x.shape`` (extent T along the time axis for
        per-step decays, 1 or absent for constant ones); same dtype as ``x``, or a
        Python float.
      x: the inputs, a floating array with the time axis at ``axis``.
      h0: the state before the first step (after the last with ``reverse=True``);
        broadcastable to ``x``'s shape without the time axis; default zeros.
      axis: the time axis of ``x`` (and of ``a``, counted in ``x``'s axes).
      reverse: run from step T-1 down to 0, ``h_t = a_t ⊙ h_{t+1} + x_t``.
      method: ``"sequential"`` (``lax.scan``), ``"parallel"``
        (``lax.associative_scan``) or ``"auto"`` (:func:`default_method` for
        this length on the platform the program is lowered for: where platforms
        differ both are traced, ``jax.lax.platform_dependent``, and lowering keeps
        one). The lowered program names the method in its operations' locations
        (the scope ``linear_recurrence[method=...]``).

    Returns:
      ``h``, of ``x``'s shape and dtype: ``h_t`` at position ``t`` along ``axis``.

    Works under ``jit``, ``vmap`` and ``grad``; all checks run at trace time
    (``ValueError`` for shapes and unknown options, ``TypeError`` for dtypes).
    """
    a, h0, axis = _check(a, x, h0, axis, method)
    reverse = check_bool("reverse", reverse)
    a_tm, x_tm = jnp.moveaxis(a, axis, 0), jnp.moveaxis(x, axis, 0)
    choose = (lambda backend: default_method(x.shape[axis], backend)) if method == "auto" else (lambda _: method)
    h = per_platform(choose, lambda chosen: partial(_run, chosen, reverse=reverse), a_tm, x_tm, h0)
    return jnp.moveaxis(h, 0, axis)


def _run(method: str, a, x, h0, *, reverse: bool):
    """One method over time-major ``a`` and ``x``, in a scope that names it."""
    with jax.named_scope(f"linear_recurrence[method={method}]"):
        return (_parallel if method == "parallel" else _sequential)(a, x, h0, reverse)
