"""The paper's optimizers as optax transformations (``init``/``update`` pairs).

* :func:`sgd` (with optional, possibly scheduled, momentum) and
  :func:`clip_by_global_norm` (Algorithm 1 of Pascanu et al.), the two the
  training engine chains; :func:`clip_by_global_norm_counted` also counts the
  steps it rescaled;
* the paper's chains :func:`msgd`, :func:`msgd_c`, :func:`msgd_cr`, and the
  teacher/student tutorial's momentum SGD :func:`teacher_student` with its
  :func:`switchover_momentum` schedule;
* the counting tutorial's :func:`rprop_minus` and optax's iRprop−
  (:func:`irprop_minus`), which the counting experiment compares;
* two guards against a NaN/Inf gradient: :func:`skip_nonfinite` and the original
  code's :func:`original_nonfinite_fallback`; :func:`counters` reads the
  counters they and the counted clipping keep in their states;
* :func:`descent_step`, one update of an optimizer on a loss as a pure function,
  the step of every hand-written training loop.

Hyperparameters may be Python numbers, arrays or tracers (build the optimizer
inside ``jax.vmap`` to give each member its own). Where one meets a gradient it
is cast to that gradient's dtype (:func:`_like`), so float64 hyperparameters
work with float32 parameters under strict dtype promotion. Concrete values are
validated when the optimizer is built; traced ones cannot be.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax._checks import UserTypeError, UserValueError, all_finite, check_choice, describe, is_concrete

Array = jax.Array
ScalarOrSchedule = Union[float, Array, Callable[[Array], Array]]

__all__ = [
    "ClipCountState", "TraceWithScheduleState", "NonfiniteFallbackState", "RpropMinusState", "SkipNonfiniteState",
    "clip_by_global_norm", "clip_by_global_norm_counted", "counters", "descent_step", "irprop_minus", "is_clipped", "msgd", "msgd_c",
    "msgd_cr", "original_nonfinite_fallback", "rprop_minus", "sgd", "skip_nonfinite", "switchover_momentum",
    "teacher_student",
]


# ---------------------------------------------------------------- helpers


def _like(value: Any, leaf: Array) -> Array:
    """A hyperparameter in ``leaf``'s dtype: the one place where hyperparameters meet gradients."""
    return jnp.asarray(value, leaf.dtype)


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


def _check_transformation(what: str, value: Any) -> optax.GradientTransformationExtraArgs:
    """``value`` (None: the identity) as a transformation that accepts extra arguments."""
    if value is not None and not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise UserTypeError(f"{what}: expected an optax GradientTransformation (or None), got {describe(value)}")
    return optax.with_extra_args_support(optax.identity() if value is None else value)


def _stateless(update: Callable[[Any], Any]) -> optax.GradientTransformation:
    return optax.GradientTransformation(optax.init_empty_state, lambda updates, state, params=None: (update(updates), state))


# ---------------------------------------------------------------- momentum SGD


class TraceWithScheduleState(NamedTuple):
    count: Array  # int32 (): updates seen so far; a momentum schedule is evaluated at it
    trace: optax.Params  # like params: the momentum buffer m_t


def _momentum(decay: ScalarOrSchedule) -> optax.GradientTransformation:
    """``m_t = g_t + μ_t · m_{t-1}`` (``m_0 = 0``, ``μ_t = decay(t)`` or constant); updates = ``m_t``.

    ``optax.trace``'s rule (bit for bit), with a schedule allowed and ``μ`` in each leaf's dtype.
    """

    def init_fn(params):
        return TraceWithScheduleState(count=jnp.zeros([], jnp.int32), trace=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        mu = decay(state.count) if callable(decay) else decay
        trace = jax.tree.map(lambda g, m: g + _like(mu, g) * m, updates, state.trace)
        return trace, TraceWithScheduleState(count=optax.safe_increment(state.count), trace=trace)

    return optax.GradientTransformation(init_fn, update_fn)


def switchover_momentum(initial: float = 0.5, final: float = 0.9, *, switchover: int) -> optax.Schedule:
    """Momentum schedule: ``initial`` for updates ``0 .. switchover-1``, then ``final``.

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
    # not optax.piecewise_constant_schedule: it does not trace under strict dtype promotion
    return optax.join_schedules([optax.constant_schedule(initial), optax.constant_schedule(final)], [int(switchover)])


def sgd(learning_rate: ScalarOrSchedule, momentum: Optional[ScalarOrSchedule] = None) -> optax.GradientTransformation:
    """Stochastic gradient descent: ``m_t = g_t + μ_t · m_{t-1}``, ``updates = −η · m_t``.

    Without momentum ``m_t = g_t`` (``optax.sgd``); with it, for a constant ``η``,
    the tutorials' ``v_t = μ_t v_{t-1} − η g_t; w += v_t``. The updates equal
    ``optax.sgd``'s bit for bit.

    Args:
      learning_rate: ``η > 0``: a number, an array (per member under ``vmap``) or a schedule.
      momentum: ``None``, a number in ``[0, 1)`` or a schedule ``count -> μ``
        (e.g. :func:`switchover_momentum`).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from rnn_jax import optim
      >>> tx = optim.sgd(0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> updates, _ = tx.update(2 * params, tx.init(params))
      >>> print(optax.apply_updates(params, updates))
      [ 0.8 -1.6]
    """
    if not callable(learning_rate):
        _check_positive("learning_rate", learning_rate)
    if not callable(momentum):
        _check_range("momentum", momentum, 0.0, 1.0, low_open=False, high_open=True)
    if callable(learning_rate):  # optax.scale_by_schedule casts the rate to each leaf's dtype
        step = optax.scale_by_learning_rate(learning_rate)
    else:
        step = _stateless(lambda updates: jax.tree.map(lambda g: -_like(learning_rate, g) * g, updates))
    return optax.chain(optax.identity() if momentum is None else _momentum(momentum), step)


# ---------------------------------------------------------------- clipping


def _clip(updates: Any, threshold: Any) -> tuple[Any, Array]:
    """``optax.clip_by_global_norm``'s rule with ``threshold`` in the gradients' dtype; also the norm."""
    norm = optax.tree.norm(updates)
    keep = norm < _like(threshold, norm)
    return jax.tree.map(lambda g: jax.lax.select(keep, g, g / norm.astype(g.dtype) * _like(threshold, g)), updates), norm


def clip_by_global_norm(threshold: Union[float, Array]) -> optax.GradientTransformation:
    """Gradient norm clipping, Algorithm 1 of Pascanu et al.: ``g · threshold / ‖g‖`` if ``‖g‖ ≥ threshold``.

    ``‖g‖`` is the L2 norm of all leaves together. As ``optax.clip_by_global_norm``
    (bit for bit): ``‖g‖ = threshold`` is rescaled by 1, a NaN norm gives NaN
    updates; ``threshold = inf`` never clips (so MSGD and MSGD-C members can
    share one chain).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.clip_by_global_norm(1.0)
      >>> updates, _ = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, tx.init(None))
      >>> print(updates["a"], updates["b"])
      [0.6] [0.8]
    """
    _check_positive("threshold", threshold, allow_inf=True)
    return _stateless(lambda updates: _clip(updates, threshold)[0])


def is_clipped(norm: Array, threshold) -> Array:
    """Whether :func:`clip_by_global_norm` rescales a gradient of norm ``norm``: ``‖g‖ ≥ threshold``,
    or a NaN norm. The one definition of a clipped update (the counters, the engine's statistics)."""
    return jnp.logical_not(norm < _like(threshold, norm))


class ClipCountState(NamedTuple):
    num_steps: Array  # int32 (): updates seen
    num_clipped: Array  # int32 (): of which rescaled (‖g‖ ≥ threshold or ‖g‖ NaN)
    last_norm: Array  # (): ‖g‖ of the last update, before clipping


def clip_by_global_norm_counted(threshold: Union[float, Array]) -> optax.GradientTransformation:
    """:func:`clip_by_global_norm`, counting the rescaled steps (a NaN norm counts) and keeping ``‖g‖``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.clip_by_global_norm_counted(1.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> for g in ([3.0, 4.0], [0.3, 0.4]):
      ...     updates, state = tx.update(jnp.array(g), state)
      >>> print(int(state.num_clipped), int(state.num_steps), float(state.last_norm))
      1 2 0.5
    """
    _check_positive("threshold", threshold, allow_inf=True)

    def init_fn(params):
        zero = jnp.zeros([], jnp.int32)
        return ClipCountState(num_steps=zero, num_clipped=zero, last_norm=jnp.zeros([], optax.tree.dtype(params, "highest")))

    def update_fn(updates, state, params=None):
        updates, norm = _clip(updates, threshold)
        norm = norm.astype(state.last_norm.dtype)
        clipped = is_clipped(norm, threshold)
        return updates, ClipCountState(
            num_steps=optax.safe_increment(state.num_steps),
            num_clipped=jnp.where(clipped, optax.safe_increment(state.num_clipped), state.num_clipped),
            last_norm=norm,
        )

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------- non-finite gradients


class SkipNonfiniteState(NamedTuple):
    num_skipped: Array  # int32 (): updates skipped because a gradient entry was NaN or Inf
    inner_state: optax.OptState  # the wrapped transformation's state, frozen on skipped steps


def skip_nonfinite(inner: Optional[optax.GradientTransformation] = None) -> optax.GradientTransformationExtraArgs:
    """Zero updates and a frozen ``inner`` state when any gradient entry is NaN or ±Inf; counted.

    Wrap the whole optimizer (``skip_nonfinite(msgd_c(...))``) for a true skip:
    momentum, counters and schedules do not advance. ``optax.apply_if_finite``
    with ``max_consecutive_errors=∞`` and a smaller state.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.skip_nonfinite(optim.msgd(0.1))
      >>> updates, state = tx.update(jnp.array([1.0, jnp.nan]), tx.init(jnp.zeros(2)))
      >>> print(updates, int(state.num_skipped))
      [0. 0.] 1
    """
    inner = _check_transformation("skip_nonfinite inner", inner)

    def init_fn(params):
        return SkipNonfiniteState(num_skipped=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        finite = all_finite(updates)
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        return optax.tree.where(finite, new_updates, optax.tree.zeros_like(new_updates)), SkipNonfiniteState(
            num_skipped=jnp.where(finite, state.num_skipped, optax.safe_increment(state.num_skipped)),
            inner_state=optax.tree.where(finite, new_inner, state.inner_state),
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class NonfiniteFallbackState(NamedTuple):
    num_fallbacks: Array  # int32 (): updates replaced by the fallback
    inner_state: optax.OptState  # the wrapped transformation's state, frozen on fallback steps


def original_nonfinite_fallback(
    threshold: Union[float, Array] = 1e10,
    *,
    select: Union[str, Callable[[tuple], bool]] = "w_hh",
    inner: Optional[optax.GradientTransformation] = None,
    factor: float = 0.02,
) -> optax.GradientTransformationExtraArgs:
    """The original code's guard (not in the paper): a bad gradient becomes ``factor · W_hh``.

    If the incoming gradient's global norm is NaN, Inf or above ``threshold``, the
    updates are ``factor · W_hh`` for the selected leaf and 0 elsewhere (``inner``'s
    state frozen, ``num_fallbacks`` counted); otherwise ``inner``'s. Followed by
    ``sgd(η)`` this shrinks ``W_hh`` by ``1 − 0.02 η``. In ``RNN.py`` of
    ``pascanur/trainingRNNs`` the test reads the norm before clipping and the
    replacement is not clipped, hence the clipping goes in as ``inner`` (what
    :func:`msgd_c` builds with ``nonfinite="original"``).

    Args:
      threshold: norms above it fall back (the code's ``1e10``).
      select: ``W_hh``'s leaf: a name compared with the last key of each leaf's
        path, or a predicate on the ``jax.tree_util`` key path.
      inner: the transformation for good gradients (``None``: identity).
      factor: the multiplier of ``W_hh`` (the code's 0.02).

    ``update`` needs ``params``.

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
        key_name = lambda key: next((getattr(key, a) for a in ("name", "key", "idx") if hasattr(key, a)), key)
        is_selected = lambda path: bool(path) and str(key_name(path[-1])) == select
    elif callable(select):
        is_selected = select
    else:
        raise UserTypeError(f"select must be a leaf name (str) or a predicate on a key path, got {select!r}")
    inner = _check_transformation("original_nonfinite_fallback inner", inner)

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
        bad = jnp.logical_or(jnp.logical_not(jnp.isfinite(norm)), norm > _like(threshold, norm))
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        fallback = jax.tree_util.tree_map_with_path(
            lambda path, p: _like(factor, p) * p if is_selected(path) else jnp.zeros_like(p), params
        )
        return optax.tree.where(bad, fallback, new_updates), NonfiniteFallbackState(
            num_fallbacks=jnp.where(bad, optax.safe_increment(state.num_fallbacks), state.num_fallbacks),
            inner_state=optax.tree.where(bad, state.inner_state, new_inner),
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------- Rprop


def _check_rprop(step_what: str, step: Any, eta_plus: Any, eta_minus: Any) -> None:
    _check_positive(step_what, step)
    _check_range("eta_plus", eta_plus, 1.0, np.inf, low_open=False, high_open=True)
    _check_range("eta_minus", eta_minus, 0.0, 1.0, low_open=True, high_open=False)


class RpropMinusState(NamedTuple):
    step_size: optax.Params  # like params: Δ, the step of each weight
    prev_sign: optax.Params  # like params: sign of the previous gradient, 0 before the first update


def rprop_minus(
    initial_step: Union[float, Array] = 0.001,
    eta_plus: Union[float, Array] = 1.2,
    eta_minus: Union[float, Array] = 0.5,
) -> optax.GradientTransformation:
    """Rprop− as the counting-ones tutorial (Roelants, "How to implement a recurrent neural network") codes it.

    Per weight, with ``s_t = sign(g_t)`` and ``s_0 = 0``: ``Δ_t = Δ_{t-1} · η+`` if
    ``s_t == s_{t-1}``, else ``Δ_{t-1} · η−``; ``updates = −s_t · Δ_t``. So the
    first update shrinks (it moves by ``initial_step · η−``), a step is taken
    right after a flip (with the shrunk ``Δ``), and ``Δ`` has no bounds. optax's
    iRprop− (:func:`irprop_minus`) instead returns each step one call late,
    returns 0 after a flip, and bounds ``Δ``: the two take different paths.

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
    """
    _check_rprop("initial_step", initial_step, eta_plus, eta_minus)

    def init_fn(params):
        return RpropMinusState(
            step_size=jax.tree.map(lambda p: jnp.full_like(p, _like(initial_step, p)), params),
            prev_sign=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        sign = jax.tree.map(jnp.sign, updates)
        step_size = jax.tree.map(
            lambda s, prev, step: jnp.where(s == prev, step * _like(eta_plus, step), step * _like(eta_minus, step)),
            sign, state.prev_sign, state.step_size,
        )
        return jax.tree.map(lambda s, step: -(s * step), sign, step_size), RpropMinusState(step_size, sign)

    return optax.GradientTransformation(init_fn, update_fn)


def irprop_minus(
    learning_rate: Union[float, Array] = 0.001,
    eta_minus: Union[float, Array] = 0.5,
    eta_plus: Union[float, Array] = 1.2,
    min_step_size: Union[float, Array] = 1e-6,
    max_step_size: Union[float, Array] = 50.0,
) -> optax.GradientTransformation:
    """optax's Rprop (``optax.rprop``, iRprop−; ``torch.optim.Rprop``'s defaults), bit for bit.

    Per weight, with ``p_t = g_t · ĝ_{t-1}`` (``ĝ`` the stored step, zeroed after a
    flip): ``Δ_t = clip(Δ_{t-1} · (η+ if p_t > 0 else η−), min, max)`` unless
    ``p_t = 0``; ``ĝ_t = 0 if p_t < 0 else Δ_t · sign(g_t)``; ``updates = 0 if
    p_t < 0 else −ĝ_{t-1}``. Restated from ``optax.scale_by_rprop`` so that the
    hyperparameters meet the gradients in their dtype; same state.

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
    """
    _check_rprop("learning_rate", learning_rate, eta_plus, eta_minus)
    _check_positive("min_step_size", min_step_size)
    _check_positive("max_step_size", max_step_size)
    if all(is_concrete(v) and not callable(v) for v in (min_step_size, max_step_size)):
        if np.any(np.asarray(min_step_size, np.float64) > np.asarray(max_step_size, np.float64)):
            raise UserValueError(f"min_step_size ({min_step_size!r}) must not exceed max_step_size ({max_step_size!r})")

    def init_fn(params):
        step = jax.tree.map(lambda p: jnp.full_like(p, _like(learning_rate, p)), params)
        return optax.ScaleByRpropState(step, optax.tree.zeros_like(params)), optax.EmptyState()

    def leaf(g, step, prev):
        p = g * prev
        factor = jnp.where(p > 0, _like(eta_plus, g), _like(eta_minus, g))
        step = jnp.where(p == 0, step, jnp.clip(step * factor, min=_like(min_step_size, g), max=_like(max_step_size, g)))
        stored = jnp.where(p < 0, jnp.zeros_like(g), step * jnp.sign(g))
        return -1.0 * jnp.where(p < 0, jnp.zeros_like(prev), prev), step, stored

    def update_fn(updates, state, params=None):
        rprop = state[0]
        out = jax.tree.map(leaf, updates, rprop.step_sizes, rprop.prev_updates)
        pick = lambda i: jax.tree.map(lambda _, o: o[i], updates, out)
        return pick(0), (optax.ScaleByRpropState(pick(1), pick(2)), state[1])

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------- the paper's configurations


def _assemble(preprocess, step, nonfinite: Optional[str], fallback_threshold) -> optax.GradientTransformation:
    """``chain(preprocess, step)`` with the chosen guard against non-finite gradients."""
    if nonfinite is None:
        return optax.chain(preprocess, step)
    if check_choice("nonfinite", nonfinite, ("skip", "original")) == "skip":
        return skip_nonfinite(optax.chain(preprocess, step))
    # the original code: the test reads the unclipped norm and the replacement skips clipping, not the lr
    return optax.chain(original_nonfinite_fallback(fallback_threshold, inner=preprocess), step)


def msgd(
    learning_rate: ScalarOrSchedule = 0.01, *, nonfinite: Optional[str] = None, fallback_threshold: Union[float, Array] = 1e10
) -> optax.GradientTransformation:
    """MSGD, the paper's plain minibatch SGD: ``updates = −η g`` (the paper: ``η = 0.01``).

    Args:
      learning_rate: ``η`` (number, per-member array, tracer or schedule).
      nonfinite: ``None`` (the paper: a NaN gradient gives NaN parameters),
        ``"skip"`` (:func:`skip_nonfinite` around the chain) or ``"original"``
        (:func:`original_nonfinite_fallback` before the step).
      fallback_threshold: the norm above which ``"original"`` falls back.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.msgd()
      >>> print(tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))[0])
      [-0.01  0.02]
    """
    return _assemble(optax.identity(), sgd(learning_rate), nonfinite, fallback_threshold)


def msgd_c(
    learning_rate: ScalarOrSchedule = 0.01,
    threshold: Union[float, Array] = 1.0,
    *,
    nonfinite: Optional[str] = None,
    fallback_threshold: Union[float, Array] = 1e10,
) -> optax.GradientTransformation:
    """MSGD-C: ``chain(clip_by_global_norm_counted(threshold), sgd(η))`` (the paper: ``η = 0.01``, threshold 1).

    ``nonfinite`` and ``fallback_threshold`` as in :func:`msgd`; the state counts
    the clipped steps (:func:`counters`).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnn_jax import optim
      >>> tx = optim.msgd_c(learning_rate=0.1, threshold=1.0)
      >>> updates, state = tx.update(jnp.array([3.0, 4.0]), tx.init(jnp.zeros(2)))
      >>> print(updates, optim.counters(state)["num_clipped"])
      [-0.06 -0.08] 1
    """
    return _assemble(clip_by_global_norm_counted(threshold), sgd(learning_rate), nonfinite, fallback_threshold)


def msgd_cr(
    learning_rate: ScalarOrSchedule = 0.01,
    threshold: Union[float, Array] = 1.0,
    *,
    nonfinite: Optional[str] = None,
    fallback_threshold: Union[float, Array] = 1e10,
) -> optax.GradientTransformation:
    """MSGD-CR: clipping plus the regulariser Ω -- the same chain as :func:`msgd_c`.

    Ω needs the data, so its gradient ``α ∂Ω/∂W_hh`` (``rnn_jax.repro.regularizer``)
    must already be in the gradient passed to ``update``: Algorithm 1 clips the
    norm of the total gradient, Ω's included (as ``RNN.py`` does)::

        grads = jax.grad(lambda p: loss(p, batch) + alpha * omega(p, batch))(params)
        updates, state = msgd_cr(0.01, 1.0).update(grads, state, params)
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
) -> optax.GradientTransformation:
    """Momentum SGD of the teacher/student tutorial (``my_rnn.py``): ``v ← μ v − η g; w ← w + v``.

    ``μ = final_momentum if epoch > momentum_switchover else initial_momentum``,
    epochs of ``updates_per_epoch`` updates counted from 0: by default 0.5 for the
    first ``(5 + 1) · 500 = 3000`` updates, then 0.9. That is :func:`sgd` with
    ``momentum = switchover_momentum(initial, final, switchover=3000)``.
    ``nonfinite``, ``fallback_threshold``: as in :func:`msgd`.
    """
    if isinstance(updates_per_epoch, bool) or not isinstance(updates_per_epoch, (int, np.integer)) or updates_per_epoch <= 0:
        raise UserValueError(f"updates_per_epoch must be a positive integer, got {updates_per_epoch!r}")
    if isinstance(momentum_switchover, bool) or not isinstance(momentum_switchover, (int, np.integer)) or momentum_switchover < -1:
        raise UserValueError(f"momentum_switchover must be an integer epoch >= -1, got {momentum_switchover!r}")
    schedule = switchover_momentum(
        initial_momentum, final_momentum, switchover=(int(momentum_switchover) + 1) * int(updates_per_epoch)
    )
    return _assemble(optax.identity(), sgd(learning_rate, momentum=schedule), nonfinite, fallback_threshold)


def counters(state: Any) -> dict[str, Array]:
    """The counters found in an optimizer state (nested in chains and wrappers, or vmapped).

    Those of ``num_steps``, ``num_clipped``, ``last_norm``
    (:func:`clip_by_global_norm_counted`), ``num_skipped`` (:func:`skip_nonfinite`)
    and ``num_fallbacks`` (:func:`original_nonfinite_fallback`) that the state holds.
    """
    found = {}
    for key in ("num_steps", "num_clipped", "last_norm", "num_skipped", "num_fallbacks"):
        value = optax.tree.get(state, key)
        if value is not None:
            found[key] = value
    return found


# ---------------------------------------------------------------- one update


def descent_step(tx: optax.GradientTransformation, loss_fn: Callable[..., Array]) -> Callable:
    """One update of ``tx`` on ``loss_fn(params, *args)``, as a pure function (a ``lax.scan`` step).

    Returns ``step((params, opt_state), *args) -> ((params, opt_state), (value, grads))``:
    ``value, grads = jax.value_and_grad(loss_fn)(params, *args)``, then
    ``tx.update(grads, opt_state, params)`` and ``optax.apply_updates``. ``value`` and
    ``grads`` are those of the incoming ``params`` (before the update). It is the loop
    body the experiments share instead of each writing its own; it does no ``jit``,
    ``vmap`` or looping itself, so it composes with all three.
    """
    value_and_grad = jax.value_and_grad(loss_fn)

    def step(carry: tuple[Any, Any], *args: Any) -> tuple[tuple[Any, Any], tuple[Array, Any]]:
        params, opt_state = carry
        value, grads = value_and_grad(params, *args)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (value, grads)

    return step
