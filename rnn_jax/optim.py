"""Optimizers of the experiments as optax transformations and chains.

A transformation is an ``optax.GradientTransformation``: a ``NamedTuple`` of two
pure functions ``init(params) -> state`` and ``update(grads, state, params) ->
(updates, state)``; ``optax.apply_updates(params, updates)`` applies the result.
Where optax already has the transformation it is used; the new ones are

* :func:`trace_with_schedule` -- momentum whose coefficient follows a schedule
  (the teacher/student tutorial switches it from 0.5 to 0.9);
* :func:`clip_by_global_norm_counted` -- Algorithm 1 of Pascanu et al. that also
  counts the steps it rescaled, so a run can report the fraction of clipped steps;
* :func:`rprop_minus` -- the Rprop− of the counting-ones tutorial, step for step;
* :func:`skip_nonfinite` and :func:`original_nonfinite_fallback` -- what to do with
  a NaN/Inf gradient (skip the step; or the original code's ``0.02 · W_hh``).

and the paper's configurations are named chains: :func:`msgd`, :func:`msgd_c`,
:func:`msgd_cr`, plus :func:`teacher_student`, :func:`irprop_minus` (optax's Rprop)
and :func:`get` by name.

Hyperparameters (learning rate, threshold, Rprop factors, momentum) may be Python
numbers, arrays or tracers: build the optimizer inside ``jax.vmap`` to give every
member of an ensemble its own value. They are cast to the gradients' dtype at
update time, so a float64 per-member learning rate works with float32 parameters
under ``jax_numpy_dtype_promotion="strict"``. Concrete values are validated when
the optimizer is built; traced ones cannot be.

Counters live in the states (``num_steps``, ``num_clipped``, ``last_norm``,
``num_skipped``, ``num_fallbacks``); :func:`counters` collects them from any
(nested, possibly vmapped) state.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax._checks import UserTypeError, UserValueError, check_choice, describe, is_concrete

Array = jax.Array
KeyPath = tuple
ScalarOrSchedule = Union[float, Array, Callable[[Array], Array]]

__all__ = [
    "ClipCountState", "NonfiniteFallbackState", "OPTIMIZERS", "RpropMinusState", "SkipNonfiniteState",
    "TraceWithScheduleState", "clip", "clip_by_global_norm", "clip_by_global_norm_counted", "counters", "get",
    "irprop_minus", "msgd", "msgd_c", "msgd_cr", "original_nonfinite_fallback", "rprop_minus", "sgd",
    "skip_nonfinite", "switchover_momentum", "teacher_student", "trace_with_schedule",
]


# ---------------------------------------------------------------- helpers


def _tree_dtype(tree: Any):
    return optax.tree.dtype(tree, "highest")


def _cast(value: Any, dtype) -> Any:
    """A hyperparameter (number, array, tracer or schedule) in ``dtype``."""
    if value is None:
        return None
    if callable(value):
        return lambda count: jnp.asarray(value(count), dtype)
    return jnp.asarray(value, dtype)


def _hyperparams_in_gradient_dtype(factory: Callable[..., optax.GradientTransformation], **hyperparams):
    """``factory(**hyperparams)``, with the numeric hyperparameters cast to the gradients' dtype.

    optax multiplies its hyperparameters into the gradients as given; a float64
    array (a per-member learning rate under ``vmap`` with x64 on) times float32
    gradients then either upcasts the updates or, under strict promotion, raises.
    The transformation is rebuilt at trace time with cast hyperparameters: no
    runtime cost, same state structure.
    """

    def build(tree):
        dtype = _tree_dtype(tree)
        return optax.with_extra_args_support(factory(**{k: _cast(v, dtype) for k, v in hyperparams.items()}))

    def init_fn(params):
        return build(params).init(params)

    def update_fn(updates, state, params=None, **extra_args):
        return build(updates).update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_range(what: str, value: Any, low: float, high: float, *, low_open: bool, high_open: bool) -> None:
    """Raise if a concrete hyperparameter (or any entry of it) lies outside the interval; tracers pass."""
    if value is None or callable(value) or not is_concrete(value):
        return
    if isinstance(value, (str, bytes, bool, np.bool_)) or (
        hasattr(value, "dtype") and not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer))
    ):
        raise UserTypeError(f"{what} must be a number or an array of numbers, got {describe(value)}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserTypeError(f"{what} must be a number or an array of numbers, got {value!r}") from None
    ok_low = arr > low if low_open else arr >= low
    ok_high = arr < high if high_open else arr <= high
    if not (np.all(~np.isnan(arr)) and np.all(ok_low) and np.all(ok_high)):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise UserValueError(f"{what} must lie in {interval}, got {value!r}")


def _check_positive(what: str, value: Any, *, allow_inf: bool = False) -> None:
    _check_range(what, value, 0.0, np.inf, low_open=True, high_open=not allow_inf)


def _check_transformation(what: str, value: Any) -> None:
    """``value`` must be None or an optax transformation (``init`` and ``update`` functions)."""
    if value is not None and not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise UserTypeError(f"{what}: expected an optax GradientTransformation (or None), got {describe(value)}")


def _all_finite(tree: Any) -> Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])) if leaves else jnp.array(True)


def _select(pred: Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


# ---------------------------------------------------------------- momentum SGD


class TraceWithScheduleState(NamedTuple):
    """State of :func:`trace_with_schedule`."""

    count: Array  # int32 (): updates seen so far; the schedule is evaluated at it
    trace: optax.Params  # like params: the momentum buffer m_t


def trace_with_schedule(decay: ScalarOrSchedule) -> optax.GradientTransformation:
    """Momentum (``optax.trace``) whose coefficient may follow a schedule.

    Update rule, with ``μ_t = decay(t)`` (``t`` = number of earlier updates) or a
    constant::

        m_t = g_t + μ_t · m_{t-1},   m_0 = 0;   updates = m_t

    ``optax.trace`` takes a constant decay only; ``optax.inject_hyperparams(
    optax.trace)(decay=schedule)`` gives the same numbers but needs ``params`` in
    every ``update`` call to choose the hyperparameter dtype. Here ``μ_t`` is cast
    to each gradient leaf's dtype.

    Args:
      decay: the momentum coefficient, a number/array in ``[0, 1)`` or a schedule
        ``count -> μ`` (e.g. :func:`switchover_momentum`).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`TraceWithScheduleState`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from rnn_jax import optim
      >>> tx = optim.trace_with_schedule(optim.switchover_momentum(0.5, 0.9, switchover=2))
      >>> state = tx.init(jnp.zeros(1))
      >>> for _ in range(4):
      ...     m, state = tx.update(jnp.ones(1), state)
      ...     print(f"{float(m[0]):.4f}")
      1.0000
      1.5000
      2.3500
      3.1150
    """
    _check_range("decay", decay, 0.0, 1.0, low_open=False, high_open=True)

    def init_fn(params):
        return TraceWithScheduleState(count=jnp.zeros([], jnp.int32), trace=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        mu = decay(state.count) if callable(decay) else decay
        new_trace = jax.tree.map(lambda g, m: g + jnp.asarray(mu, g.dtype) * m, updates, state.trace)
        return new_trace, TraceWithScheduleState(count=optax.safe_increment(state.count), trace=new_trace)

    return optax.GradientTransformation(init_fn, update_fn)


def switchover_momentum(initial: float = 0.5, final: float = 0.9, *, switchover: int) -> optax.Schedule:
    """Momentum schedule: ``initial`` for updates ``0 .. switchover-1``, then ``final``.

    The teacher/student tutorial's schedule (``seeds/000``); see
    :func:`teacher_student` for the number of updates it uses. Built from
    ``optax.join_schedules`` of two constant schedules (optax's
    ``piecewise_constant_schedule`` does not trace under strict dtype promotion).

    Args:
      initial, final: the two momentum coefficients (numbers or arrays).
      switchover: the update count (0-based) from which ``final`` is used.

    Returns:
      An ``optax.Schedule``: ``count -> momentum``.

    Example:
      >>> from rnn_jax import optim
      >>> s = optim.switchover_momentum(0.5, 0.9, switchover=3)
      >>> [float(s(t)) for t in range(5)]
      [0.5, 0.5, 0.5, 0.9, 0.9]
    """
    if isinstance(switchover, bool) or not isinstance(switchover, (int, np.integer)) or switchover < 0:
        raise UserValueError(f"switchover must be a non-negative integer number of updates, got {switchover!r}")
    _check_range("initial", initial, 0.0, 1.0, low_open=False, high_open=True)
    _check_range("final", final, 0.0, 1.0, low_open=False, high_open=True)
    return optax.join_schedules(
        [optax.constant_schedule(initial), optax.constant_schedule(final)], [int(switchover)]
    )


def sgd(learning_rate: ScalarOrSchedule, momentum: Optional[ScalarOrSchedule] = None) -> optax.GradientTransformationExtraArgs:
    """Stochastic gradient descent, with optional (possibly scheduled) momentum.

    Update rule (``η`` the learning rate, ``μ_t`` the momentum)::

        m_t = g_t + μ_t · m_{t-1};   updates = −η · m_t        (m_t = g_t without momentum)

    For a constant ``η`` this is the tutorials' ``v_t = μ_t v_{t-1} − η g_t;
    w += v_t`` with ``v_t = −η m_t``.

    Args:
      learning_rate: ``η > 0``, a number, an array (per member under ``vmap``) or
        an optax schedule.
      momentum: ``None`` (plain SGD, ``optax.sgd``), a number in ``[0, 1)``
        (``optax.sgd(momentum=...)``) or a schedule (:func:`trace_with_schedule`).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from rnn_jax import optim
      >>> tx = optim.sgd(0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> updates, _ = tx.update(2 * params, tx.init(params))
      >>> print(optax.apply_updates(params, updates))
      [ 0.8 -1.6]

    References:
      Sutskever et al., `On the importance of initialization and momentum in deep
      learning <http://proceedings.mlr.press/v28/sutskever13.pdf>`_, 2013
    """
    if not callable(learning_rate):
        _check_positive("learning_rate", learning_rate)
    if callable(momentum):
        return optax.chain(
            trace_with_schedule(momentum),
            _hyperparams_in_gradient_dtype(optax.scale_by_learning_rate, learning_rate=learning_rate),
        )
    _check_range("momentum", momentum, 0.0, 1.0, low_open=False, high_open=True)
    return _hyperparams_in_gradient_dtype(optax.sgd, learning_rate=learning_rate, momentum=momentum)


# ---------------------------------------------------------------- clipping


def clip_by_global_norm(threshold: Union[float, Array]) -> optax.GradientTransformationExtraArgs:
    """Gradient norm clipping, Algorithm 1 of Pascanu et al. (``optax.clip_by_global_norm``).

    Update rule, with ``‖g‖`` the L2 norm of all gradient leaves together::

        updates = g · threshold / ‖g‖   if ‖g‖ ≥ threshold,   else g

    (optax tests ``‖g‖ < threshold`` to leave ``g`` alone, so ``‖g‖ = threshold``
    is "rescaled" by 1, and a NaN norm gives NaN updates; the original code tests
    ``‖g‖ > threshold`` -- the same numbers.) ``threshold`` is cast to the
    gradients' dtype. The paper's temporal-order experiment uses 1; it suggests
    0.5--10 times the average gradient norm.

    Args:
      threshold: the maximum global norm, ``> 0`` (number, array or tracer);
        ``inf`` never clips (so MSGD and MSGD-C members can share one chain).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (stateless).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.clip_by_global_norm(1.0)
      >>> updates, _ = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))
      >>> print(updates["a"], updates["b"])
      [0.6] [0.8]

    References:
      Pascanu et al., `On the difficulty of training Recurrent Neural Networks
      <https://arxiv.org/abs/1211.5063>`_, 2013
    """
    _check_positive("threshold", threshold, allow_inf=True)
    return _hyperparams_in_gradient_dtype(optax.clip_by_global_norm, max_norm=threshold)


def clip(max_delta: Union[float, Array]) -> optax.GradientTransformationExtraArgs:
    """Element-wise clipping of every gradient entry to ``[−max_delta, max_delta]`` (``optax.clip``).

    Unlike norm clipping this changes the direction of the gradient; the paper
    argues for rescaling the whole gradient instead (section 3.2).

    Args:
      max_delta: ``> 0``, cast to the gradients' dtype.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (stateless).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.clip(1.0)
      >>> print(tx.update(jnp.array([-3.0, 0.5, 2.0]), tx.init(None))[0])
      [-1.   0.5  1. ]
    """
    _check_positive("max_delta", max_delta, allow_inf=True)
    return _hyperparams_in_gradient_dtype(optax.clip, max_delta=max_delta)


class ClipCountState(NamedTuple):
    """State of :func:`clip_by_global_norm_counted`."""

    num_steps: Array  # int32 (): updates seen
    num_clipped: Array  # int32 (): of which rescaled (‖g‖ ≥ threshold or ‖g‖ NaN)
    last_norm: Array  # () in the gradients' dtype: ‖g‖ of the last update, before clipping


def clip_by_global_norm_counted(threshold: Union[float, Array]) -> optax.GradientTransformation:
    """:func:`clip_by_global_norm` that also counts the clipped steps.

    The updates are those of ``optax.clip_by_global_norm`` (it is called); the
    state adds ``num_steps``, ``num_clipped`` and ``last_norm`` so the training
    loop can report the fraction of clipped steps ``num_clipped / num_steps`` and
    the gradient norm without computing it twice. A step counts as clipped when
    optax rescales it: ``not (‖g‖ < threshold)``, so a NaN norm counts (wrap the
    chain in :func:`skip_nonfinite` to keep those out).

    Args:
      threshold: the maximum global norm, ``> 0`` (number, array or tracer).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`ClipCountState`.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.clip_by_global_norm_counted(1.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> for g in ([3.0, 4.0], [0.3, 0.4]):
      ...     updates, state = tx.update(jnp.array(g), state)
      >>> print(int(state.num_clipped), int(state.num_steps), float(state.last_norm))
      1 2 0.5

    References:
      Pascanu et al., `On the difficulty of training Recurrent Neural Networks
      <https://arxiv.org/abs/1211.5063>`_, 2013
    """
    clipper = clip_by_global_norm(threshold)

    def init_fn(params):
        return ClipCountState(
            num_steps=jnp.zeros([], jnp.int32),
            num_clipped=jnp.zeros([], jnp.int32),
            last_norm=jnp.zeros([], _tree_dtype(params)),
        )

    def update_fn(updates, state, params=None):
        norm = optax.tree.norm(updates).astype(state.last_norm.dtype)
        clipped = jnp.logical_not(norm < jnp.asarray(threshold, norm.dtype))
        updates, _ = clipper.update(updates, optax.EmptyState(), params)
        return updates, ClipCountState(
            num_steps=optax.safe_increment(state.num_steps),
            num_clipped=jnp.where(clipped, optax.safe_increment(state.num_clipped), state.num_clipped),
            last_norm=norm,
        )

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------- non-finite gradients


class SkipNonfiniteState(NamedTuple):
    """State of :func:`skip_nonfinite`."""

    num_skipped: Array  # int32 (): updates skipped because a gradient entry was NaN or Inf
    inner_state: optax.OptState  # the wrapped transformation's state, frozen on skipped steps


def skip_nonfinite(inner: Optional[optax.GradientTransformation] = None) -> optax.GradientTransformationExtraArgs:
    """Skip the update when any gradient entry is NaN or ±Inf, and count it.

    Update rule::

        if all entries of g are finite:  updates, inner_state = inner.update(g, inner_state, params)
        else:                            updates = 0, inner_state unchanged, num_skipped += 1

    Wrap the whole optimizer (``skip_nonfinite(msgd_c(...))``) for a true skip:
    momentum, clipping counters and schedule counts do not advance. Without
    ``inner`` it only zeroes the gradient, which later stateful transformations
    in a chain still see (momentum would decay and keep moving the parameters).

    This is ``optax.apply_if_finite(inner, max_consecutive_errors=∞)`` with a
    smaller state: optax's wrapper gives up and applies a non-finite update after
    ``max_consecutive_errors`` in a row; this one never does.

    Args:
      inner: the transformation to protect; ``None`` for the identity.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`SkipNonfiniteState`.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.skip_nonfinite(optim.msgd(0.1))
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([1.0, jnp.nan]), state)
      >>> print(updates, int(state.num_skipped))
      [0. 0.] 1
    """
    _check_transformation("skip_nonfinite inner", inner)
    inner = optax.with_extra_args_support(optax.identity() if inner is None else inner)

    def init_fn(params):
        return SkipNonfiniteState(num_skipped=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        finite = _all_finite(updates)
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        return optax.tree.where(finite, new_updates, optax.tree.zeros_like(new_updates)), SkipNonfiniteState(
            num_skipped=jnp.where(finite, state.num_skipped, optax.safe_increment(state.num_skipped)),
            inner_state=_select(finite, new_inner, state.inner_state),
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class NonfiniteFallbackState(NamedTuple):
    """State of :func:`original_nonfinite_fallback`."""

    num_fallbacks: Array  # int32 (): updates replaced by the fallback
    inner_state: optax.OptState  # the wrapped transformation's state, frozen on fallback steps


def _last_key_name(key: Any) -> Any:
    for attr in ("name", "key", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return key


def original_nonfinite_fallback(
    threshold: Union[float, Array] = 1e10,
    *,
    select: Union[str, Callable[[KeyPath], bool]] = "w_hh",
    inner: Optional[optax.GradientTransformation] = None,
    factor: float = 0.02,
) -> optax.GradientTransformationExtraArgs:
    """The original code's guard: a bad gradient is replaced by ``0.02 · W_hh`` (not in the paper).

    Update rule, with ``‖g‖`` the global norm of the incoming gradient::

        if ‖g‖ is NaN or Inf or ‖g‖ > threshold:
            updates = factor · W_hh for the selected leaf, 0 for every other leaf
            (inner_state unchanged, num_fallbacks += 1)
        else:
            updates, inner_state = inner.update(g, inner_state, params)

    Followed by ``sgd(η)`` this is ``W_hh ← (1 − 0.02 η) W_hh``: a small shrink of
    the recurrent matrix, pulling it back from the exploding regime. In
    ``pascanur/trainingRNNs`` (``RNN.py``, ``clipstyle == 'rescale'``) the test
    uses the norm *before* clipping and the replacement is *not* clipped, which
    is why the clipping is passed as ``inner`` rather than chained before or
    after: ``chain(original_nonfinite_fallback(inner=clip_by_global_norm_counted(1.)),
    sgd(η))`` reproduces it (what :func:`msgd_c` builds with
    ``nonfinite="original"``).

    Args:
      threshold: norms above it trigger the fallback (the code's ``1e10``).
      select: which parameter leaf is ``W_hh``: a name compared with the last key
        of each leaf's path (``ModelParams.cell.w_hh`` has path
        ``(.cell, .w_hh)``), or a predicate on the ``jax.tree_util`` key path.
      inner: the transformation applied to good gradients (``None``: identity).
      factor: the multiplier of ``W_hh`` (the code's ``0.02``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`NonfiniteFallbackState`; its ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> params = {"w_hh": jnp.array([[1.0, 2.0]]), "b": jnp.array([3.0])}
      >>> tx = optim.original_nonfinite_fallback()
      >>> grads = {"w_hh": jnp.array([[jnp.inf, 0.0]]), "b": jnp.array([1.0])}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> print(updates["w_hh"], updates["b"], int(state.num_fallbacks))
      [[0.02 0.04]] [0.] 1
    """
    _check_positive("threshold", threshold, allow_inf=True)
    _check_positive("factor", factor)
    if isinstance(select, str):
        name = select
        is_selected = lambda path: bool(path) and str(_last_key_name(path[-1])) == name
    elif callable(select):
        is_selected = select
    else:
        raise UserTypeError(f"select must be a leaf name (str) or a predicate on a key path, got {select!r}")
    _check_transformation("original_nonfinite_fallback inner", inner)
    inner = optax.with_extra_args_support(optax.identity() if inner is None else inner)

    def init_fn(params):
        return NonfiniteFallbackState(num_fallbacks=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise UserValueError("original_nonfinite_fallback needs params: call update(grads, state, params)")
        with_path = jax.tree_util.tree_leaves_with_path(params)
        if not any(is_selected(path) for path, _ in with_path):
            paths = ", ".join(jax.tree_util.keystr(path) for path, _ in with_path)
            raise UserValueError(f"original_nonfinite_fallback: no parameter leaf matches select={select!r}; the leaves are {paths}")
        norm = optax.tree.norm(updates)
        bad = jnp.logical_or(jnp.logical_not(jnp.isfinite(norm)), norm > jnp.asarray(threshold, norm.dtype))
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        fallback = jax.tree_util.tree_map_with_path(
            lambda path, p: jnp.asarray(factor, p.dtype) * p if is_selected(path) else jnp.zeros_like(p), params
        )
        return _select(bad, fallback, new_updates), NonfiniteFallbackState(
            num_fallbacks=jnp.where(bad, optax.safe_increment(state.num_fallbacks), state.num_fallbacks),
            inner_state=_select(bad, state.inner_state, new_inner),
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------- Rprop


class RpropMinusState(NamedTuple):
    """State of :func:`rprop_minus`."""

    step_size: optax.Params  # like params: Δ, the step of each weight
    prev_sign: optax.Params  # like params: sign of the previous gradient, 0 before the first update


def rprop_minus(
    initial_step: Union[float, Array] = 0.001,
    eta_plus: Union[float, Array] = 1.2,
    eta_minus: Union[float, Array] = 0.5,
) -> optax.GradientTransformation:
    """Rprop− exactly as the counting-ones tutorial (``seeds/003``) codes it.

    Update rule, per weight, with ``s_t = sign(g_t)`` and ``s_0 = 0``::

        Δ_t = Δ_{t-1} · η+   if s_t == s_{t-1}
              Δ_{t-1} · η−   otherwise
        updates = −s_t · Δ_t                 (w ← w − sign(g) · Δ)

    Literally the tutorial's ``if W_sign[i] == W_prev_sign[i]: W_delta[i] *=
    eta_p else: W_delta[i] *= eta_n``; so, beyond "same sign: grow, flipped sign:
    shrink":

    * the first update shrinks (``s_0 = 0 ≠ s_1``): it moves by
      ``initial_step · η− = 0.0005``, not 0.001;
    * a zero gradient after a non-zero one shrinks ``Δ`` and does not move; two
      zero gradients in a row grow ``Δ``;
    * after a sign flip it still steps, with the halved ``Δ`` (no backtracking,
      no zeroed update), and there are no bounds on ``Δ``;
    * a NaN gradient gives NaN updates and a NaN stored sign (wrap it in
      :func:`skip_nonfinite`).

    How it differs from optax's Rprop (:func:`irprop_minus`, iRprop−):
    ``optax.scale_by_rprop`` returns the update it stored at the *previous* call
    (the first call returns 0, and call ``t`` applies ``−sign(g_{t-1}) Δ_{t-1}``
    -- one call late), on a sign flip returns 0 and stores a zero gradient (so
    the next call leaves ``Δ`` unchanged and also returns 0), leaves ``Δ``
    unchanged when the product of signs is 0 (first call included), and clips
    ``Δ`` to ``[min_step_size, max_step_size]``. Both shrink by η− on a flip and
    grow by η+ otherwise, but they retrace different paths from the same start.

    Args:
      initial_step: ``Δ_0 > 0`` for every weight (the tutorial's 0.001).
      eta_plus: growth factor ``≥ 1`` (1.2).
      eta_minus: shrink factor in ``(0, 1]`` (0.5).

    Returns:
      An ``optax.GradientTransformation`` with state :class:`RpropMinusState`.
      Hyperparameters are cast to each leaf's dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.rprop_minus()
      >>> state = tx.init(jnp.zeros(1))
      >>> for g in (2.0, 5.0, -1.0):
      ...     updates, state = tx.update(jnp.array([g]), state)
      ...     print(f"{float(updates[0]):+.5f}")
      -0.00050
      -0.00060
      +0.00030

    References:
      Riedmiller & Braun, `A direct adaptive method for faster backpropagation
      learning: the RPROP algorithm <https://ieeexplore.ieee.org/document/298623>`_, 1993

      Igel & Hüsken, `Empirical evaluation of the improved Rprop learning
      algorithms <https://doi.org/10.1016/S0925-2312(01)00700-7>`_, 2003

      Roelants, `How to implement a recurrent neural network, part 1
      <https://peterroelants.github.io/posts/rnn-implementation-part01/>`_
    """
    _check_positive("initial_step", initial_step)
    _check_range("eta_plus", eta_plus, 1.0, np.inf, low_open=False, high_open=True)
    _check_range("eta_minus", eta_minus, 0.0, 1.0, low_open=True, high_open=False)

    def init_fn(params):
        return RpropMinusState(
            step_size=jax.tree.map(lambda p: jnp.full_like(p, jnp.asarray(initial_step, p.dtype)), params),
            prev_sign=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        sign = jax.tree.map(jnp.sign, updates)
        step_size = jax.tree.map(
            lambda s, prev, step: jnp.where(
                s == prev, step * jnp.asarray(eta_plus, step.dtype), step * jnp.asarray(eta_minus, step.dtype)
            ),
            sign,
            state.prev_sign,
            state.step_size,
        )
        new_updates = jax.tree.map(lambda s, step: -(s * step), sign, step_size)
        return new_updates, RpropMinusState(step_size=step_size, prev_sign=sign)

    return optax.GradientTransformation(init_fn, update_fn)


def irprop_minus(
    learning_rate: Union[float, Array] = 0.001,
    eta_minus: Union[float, Array] = 0.5,
    eta_plus: Union[float, Array] = 1.2,
    min_step_size: Union[float, Array] = 1e-6,
    max_step_size: Union[float, Array] = 50.0,
) -> optax.GradientTransformationExtraArgs:
    """optax's Rprop (``optax.rprop``, iRprop−), hyperparameters cast to the gradients' dtype.

    Per weight, with ``p_t = g_t · ĝ_{t-1}`` (``ĝ`` the stored gradient, zeroed
    after a flip)::

        Δ_t = clip(Δ_{t-1} · (η+ if p_t > 0 else η−), min_step_size, max_step_size)  if p_t ≠ 0
              Δ_{t-1}                                                                  if p_t = 0
        stored_t = 0 if p_t < 0 else Δ_t · sign(g_t)
        updates  = 0 if p_t < 0 else −stored_{t-1}      (one call late)

    ``torch.optim.Rprop`` has the same defaults. See :func:`rprop_minus` for how
    its path differs from the tutorial's Rprop−: the first call returns a zero
    update and every later update lags the gradient that produced it by one call.

    Args:
      learning_rate: the initial step ``Δ_0``.
      eta_minus, eta_plus: shrink / growth factors.
      min_step_size, max_step_size: bounds on ``Δ``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.irprop_minus()
      >>> state = tx.init(jnp.zeros(1))
      >>> for g in (2.0, 5.0, 1.0):
      ...     updates, state = tx.update(jnp.array([g]), state)
      ...     print(f"{float(updates[0]):+.5f}")
      -0.00000
      -0.00100
      -0.00120

    References:
      Igel & Hüsken, `Empirical evaluation of the improved Rprop learning
      algorithms <https://doi.org/10.1016/S0925-2312(01)00700-7>`_, 2003
    """
    _check_positive("learning_rate", learning_rate)
    _check_range("eta_plus", eta_plus, 1.0, np.inf, low_open=False, high_open=True)
    _check_range("eta_minus", eta_minus, 0.0, 1.0, low_open=True, high_open=False)
    _check_positive("min_step_size", min_step_size)
    _check_positive("max_step_size", max_step_size)
    low, high = min_step_size, max_step_size
    if is_concrete(low) and is_concrete(high) and not callable(low) and not callable(high):
        if np.any(np.asarray(low, np.float64) > np.asarray(high, np.float64)):
            raise UserValueError(f"min_step_size ({low!r}) must not exceed max_step_size ({high!r})")
    return _hyperparams_in_gradient_dtype(
        optax.rprop,
        learning_rate=learning_rate,
        eta_minus=eta_minus,
        eta_plus=eta_plus,
        min_step_size=min_step_size,
        max_step_size=max_step_size,
    )


# ---------------------------------------------------------------- the paper's configurations

NONFINITE = (None, "skip", "original")


def _assemble(
    preprocess: optax.GradientTransformation,
    step: optax.GradientTransformation,
    nonfinite: Optional[str],
    fallback_threshold: Union[float, Array],
) -> optax.GradientTransformationExtraArgs:
    """``chain(preprocess, step)`` with the chosen guard against non-finite gradients."""
    if nonfinite is not None:
        check_choice("nonfinite", nonfinite, NONFINITE[1:])
    if nonfinite is None:
        return optax.chain(preprocess, step)
    if nonfinite == "skip":
        return skip_nonfinite(optax.chain(preprocess, step))
    # the original code: the test reads the unclipped norm and the replacement skips clipping, not the lr
    return optax.chain(original_nonfinite_fallback(fallback_threshold, inner=preprocess), step)


def msgd(
    learning_rate: ScalarOrSchedule = 0.01,
    *,
    nonfinite: Optional[str] = None,
    fallback_threshold: Union[float, Array] = 1e10,
) -> optax.GradientTransformationExtraArgs:
    """MSGD: the paper's plain (minibatch) SGD, no momentum, no clipping.

    Update rule: ``updates = −η g``. The paper's experiments: ``η = 0.01``,
    minibatches of 20 generated afresh for every update.

    Args:
      learning_rate: ``η`` (number, per-member array, tracer or schedule).
      nonfinite: ``None`` (the paper: nothing; a NaN gradient gives NaN
        parameters), ``"skip"`` (:func:`skip_nonfinite` around the chain) or
        ``"original"`` (:func:`original_nonfinite_fallback` before the step).
      fallback_threshold: the norm above which ``"original"`` falls back.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.msgd()
      >>> print(tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))[0])
      [-0.01  0.02]

    References:
      Pascanu et al., `On the difficulty of training Recurrent Neural Networks
      <https://arxiv.org/abs/1211.5063>`_, 2013 (section 5)
    """
    return _assemble(optax.identity(), sgd(learning_rate), nonfinite, fallback_threshold)


def msgd_c(
    learning_rate: ScalarOrSchedule = 0.01,
    threshold: Union[float, Array] = 1.0,
    *,
    nonfinite: Optional[str] = None,
    fallback_threshold: Union[float, Array] = 1e10,
) -> optax.GradientTransformationExtraArgs:
    """MSGD-C: SGD on the gradient clipped to global norm ``threshold`` (Algorithm 1).

    Update rule: ``updates = −η · clip(g)``, ``clip(g) = g · threshold / ‖g‖`` when
    ``‖g‖ ≥ threshold``. The chain is ``clip_by_global_norm_counted(threshold),
    sgd(η)``, so the state counts the clipped steps (see :func:`counters`).
    The paper's temporal-order runs: ``η = 0.01``, threshold 1.

    Args:
      learning_rate: ``η``; threshold: the clipping norm (numbers, per-member
        arrays or tracers).
      nonfinite, fallback_threshold: as in :func:`msgd`; with ``"original"`` the
        code's guard wraps the clipping exactly as ``RNN.py`` does.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.msgd_c(learning_rate=0.1, threshold=1.0)
      >>> updates, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
      >>> print(updates, optim.counters(state)["num_clipped"])
      [-0.06 -0.08] 1

    References:
      Pascanu et al., `On the difficulty of training Recurrent Neural Networks
      <https://arxiv.org/abs/1211.5063>`_, 2013 (Algorithm 1, section 5)
    """
    return _assemble(clip_by_global_norm_counted(threshold), sgd(learning_rate), nonfinite, fallback_threshold)


def msgd_cr(
    learning_rate: ScalarOrSchedule = 0.01,
    threshold: Union[float, Array] = 1.0,
    *,
    nonfinite: Optional[str] = None,
    fallback_threshold: Union[float, Array] = 1e10,
) -> optax.GradientTransformationExtraArgs:
    """MSGD-CR: clipping plus the regulariser Ω -- the same chain as :func:`msgd_c`.

    The regulariser is not an optimizer transformation: it needs the data. Its
    gradient ``α · ∂Ω/∂W_hh`` (Ω from ``rnn_jax.regularizer``, weight α = 4 in the
    paper, 2 in the code) must already be *in the gradient* passed to
    ``update``, because Algorithm 1 clips the global norm of all gradients,
    the regulariser's included (``RNN.py``: ``gW_hh = gW_hh + alpha * gOmega``
    before ``norm_theta`` is computed). Differentiate the total objective::

        grads = jax.grad(lambda p: loss(p, batch) + alpha * omega(p, batch))(params)
        updates, state = msgd_cr(0.01, 1.0).update(grads, state, params)

    (Ω's own gradient flows only into ``W_hh``: the regulariser treats ``δ_k``
    and ``h_k`` as constants.) Adding ``α ∂Ω/∂W_hh`` after clipping would let the
    regulariser's term escape the threshold, which the paper does not do.

    Args / Returns: as :func:`msgd_c`.

    Example:
      >>> from rnn_jax import optim
      >>> tx = optim.msgd_cr(0.01, 1.0)

    References:
      Pascanu et al., `On the difficulty of training Recurrent Neural Networks
      <https://arxiv.org/abs/1211.5063>`_, 2013 (equations 9--10, section 5)
    """
    return msgd_c(learning_rate, threshold, nonfinite=nonfinite, fallback_threshold=fallback_threshold)


def teacher_student(
    learning_rate: ScalarOrSchedule = 0.001,
    *,
    updates_per_epoch: int = 500,
    momentum_switchover: int = 5,
    initial_momentum: Union[float, Array] = 0.5,
    final_momentum: Union[float, Array] = 0.9,
    nonfinite: Optional[str] = None,
    fallback_threshold: Union[float, Array] = 1e10,
) -> optax.GradientTransformationExtraArgs:
    """Momentum SGD of the teacher/student tutorial (``seeds/000``, ``my_rnn.py``).

    The tutorial trains one sequence per update (500 per epoch) with
    ``v ← μ v − η g; w ← w + v``, ``η = 0.001`` and
    ``μ = final_momentum if epoch > momentum_switchover else initial_momentum``
    (epochs counted from 0). So ``μ = 0.5`` for epochs 0..5 -- six epochs, the
    first ``(momentum_switchover + 1) · updates_per_epoch = 3000`` updates --
    then 0.9. This is :func:`sgd` with ``momentum =
    switchover_momentum(initial, final, switchover=3000)``; with a constant
    ``η`` it takes the tutorial's steps.

    Args:
      learning_rate: ``η``.
      updates_per_epoch: updates in one epoch (the tutorial's 500 sequences).
      momentum_switchover: the last epoch with ``initial_momentum`` (the code's
        ``momentum_switchover``).
      initial_momentum, final_momentum: the two momentum coefficients.
      nonfinite, fallback_threshold: as in :func:`msgd`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> from rnn_jax import optim
      >>> tx = optim.teacher_student(updates_per_epoch=500)
    """
    if isinstance(updates_per_epoch, bool) or not isinstance(updates_per_epoch, (int, np.integer)) or updates_per_epoch <= 0:
        raise UserValueError(f"updates_per_epoch must be a positive integer, got {updates_per_epoch!r}")
    if isinstance(momentum_switchover, bool) or not isinstance(momentum_switchover, (int, np.integer)) or momentum_switchover < -1:
        raise UserValueError(f"momentum_switchover must be an integer epoch >= -1, got {momentum_switchover!r}")
    schedule = switchover_momentum(
        initial_momentum, final_momentum, switchover=(int(momentum_switchover) + 1) * int(updates_per_epoch)
    )
    return _assemble(optax.identity(), sgd(learning_rate, momentum=schedule), nonfinite, fallback_threshold)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd,
    "msgd": msgd,
    "msgd_c": msgd_c,
    "msgd_cr": msgd_cr,
    "teacher_student": teacher_student,
    "rprop_minus": rprop_minus,
    "irprop_minus": irprop_minus,
}


def get(name: str, **kwargs: Any) -> optax.GradientTransformation:
    """The optimizer called ``name`` (case and ``-``/``_`` ignored: ``"MSGD-CR"``), built with ``kwargs``.

    Names: ``sgd``, ``msgd``, ``msgd_c``, ``msgd_cr``, ``teacher_student``,
    ``rprop_minus``, ``irprop_minus``.

    Example:
      >>> from rnn_jax import optim
      >>> tx = optim.get("MSGD-C", learning_rate=0.01, threshold=1.0)
    """
    if not isinstance(name, str):
        raise UserTypeError(f"optimizer name must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    check_choice("optimizer", key, OPTIMIZERS)
    factory = OPTIMIZERS[key]
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:
        raise UserTypeError(
            f"optimizer {key!r}: {err}; it takes {', '.join(inspect.signature(factory).parameters)}"
        ) from None
    return factory(**kwargs)


def counters(state: Any) -> dict[str, Array]:
    """The counters found in an optimizer state (nested in chains and wrappers, or vmapped).

    Returns a dict with those of ``num_steps``, ``num_clipped``, ``last_norm``
    (:func:`clip_by_global_norm_counted`), ``num_skipped`` (:func:`skip_nonfinite`)
    and ``num_fallbacks`` (:func:`original_nonfinite_fallback`) that the state
    holds; the fraction of clipped steps is ``num_clipped / num_steps``.
    """
    found = {}
    for key in ("num_steps", "num_clipped", "last_norm", "num_skipped", "num_fallbacks"):
        value = optax.tree.get(state, key)
        if value is not None:
            found[key] = value
    return found
