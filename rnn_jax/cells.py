"""Recurrent cells as pure functions over named parameter pytrees.

A cell is a :class:`Cell`, an immutable bundle of pure functions returned by a small
constructor (:func:`elman`, :func:`pascanu`, :func:`lstm`, :func:`gru`, :func:`mgu`) and
compared by the arguments it was built from::

    cell = rnn_jax.lstm(hidden_size=64, forget_bias=1.0)
    params = cell.init(jax.random.key(0), input_size=8)      # LSTMParams(...)
    carry = cell.initial_carry(batch_shape=(32,))            # LSTMState(hidden, cell)
    carry, y = cell.step(params, carry, x)                   # x: (32, 8) -> y: (32, 64)

Conventions (the original Theano code's row-vector layout): matrices are stored
``(in, out)`` and applied as ``x @ W``, so ``w_hh`` here is the transpose of the
``W_hh`` of the column-vector formulas (``h_t = f(W_hh h_{t-1} + ...)``).  Gated
cells concatenate their gates along the output axis in PyTorch's order
(LSTM ``i, f, g, o``; GRU ``r, z, n``) and fold the two PyTorch biases into one
(except GRU's ``b_hn``, which multiplies the reset gate and cannot be folded).
``step`` accepts unbatched ``(input_size,)`` or batched ``(..., input_size)`` inputs.

Every cell also exposes ``project(params, x) = x @ w_ih + b`` and
``step_projected(params, carry, xp)``, with ``step = step_projected ∘ project``,
so an unroll may compute the input projection for all steps at once.

A new cell is a constructor here (and its transcription in the hand-written reference,
:mod:`rnn_jax.bptt`): what the rest of the library needs (its output, parameter shapes,
reverse rule, :class:`Traits`) travels with the :class:`Cell`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import activations, initializers
from rnn_jax._checks import (
    UserTypeError, UserValueError, check_batch_shape, check_choice, check_float_dtype, check_floating, check_key,
    check_positive_int, check_real, describe,
)

__all__ = [
    "Cell", "ElmanParams", "GRUParams", "LSTMParams", "LSTMState", "MGUParams", "ReverseRule", "RNNState", "Traits",
    "elman", "gru", "lstm", "make", "mgu", "pascanu", "recurrence_vjp",
]

Array = jax.Array


# ---------------------------------------------------------------- carries


class RNNState(NamedTuple):
    """Carry of the Elman, Pascanu and GRU cells.

    hidden: (..., hidden_size). For :func:`pascanu` it holds the pre-activation
    state ``x_t`` of the paper's equation 2, not ``σ(x_t)``.
    """

    hidden: Array


class LSTMState(NamedTuple):
    """Carry of the LSTM: hidden ``h`` and cell ``c``, each (..., hidden_size)."""

    hidden: Array
    cell: Array


# ---------------------------------------------------------------- parameters


class ElmanParams(NamedTuple):
    """Parameters of :func:`elman` and :func:`pascanu`.

    w_ih: (input_size, H); w_hh: (H, H); b: (H,).
    """

    w_ih: Array
    w_hh: Array
    b: Array


class LSTMParams(NamedTuple):
    """Parameters of :func:`lstm`; gate blocks along the last axis in order i, f, g, o.

    w_ih: (input_size, 4H); w_hh: (H, 4H); b: (4H,) = PyTorch's b_ih + b_hh.
    """

    w_ih: Array
    w_hh: Array
    b: Array


class GRUParams(NamedTuple):
    """Parameters of :func:`gru`; gate blocks along the last axis in order r, z, n.

    w_ih: (input_size, 3H); w_hh: (H, 3H);
    b: (3H,) = [b_ir + b_hr, b_iz + b_hz, b_in]; b_hn: (H,).
    """

    w_ih: Array
    w_hh: Array
    b: Array
    b_hn: Array


class Traits(NamedTuple):
    """What code outside the cell definitions may rely on about a cell, besides its functions.

    Attributes:
      recurrence: the Elman-type recurrences Pascanu et al. analyse (one block, one
        elementwise ``f``): ``"activated"`` when the carry is ``h_t = f(h_{t-1} @ w_hh + xp_t)``
        and is the output (:func:`elman`), ``"preactivation"`` when the carry is
        ``x_t = f(x_{t-1}) @ w_hh + xp_t`` and the output ``f(x_t)`` (:func:`pascanu`); None
        for other cells. The paper's regulariser, its vanishing bound and the fused engine
        need one of the two.
      summed: ``combine`` reads ``xp`` and ``hh`` only through ``xp + hh`` (a reverse pass may
        store their sum alone); for cells without a :class:`ReverseRule`.
    """

    recurrence: Optional[str] = None
    summed: bool = False


def recurrence_vjp(cell: "Cell", delta, times_w_hh_t, output=None, previous_output=None):
    """One step of an Elman-type recurrence (:attr:`Traits.recurrence`) backwards: ``(d_z, v)``,
    ``d_z`` the cotangent of the step's pre-activation ``z`` (what the weights' gradients
    need) and ``v = δ J_k`` the cotangent ``δ`` of the carry after the step carried back to
    the carry before it; ``times_w_hh_t(a)`` is ``a @ w_hhᵀ`` (batched as the caller needs).

    ``activated`` (:func:`elman`, ``h_k = f(z_k)``): ``d_z = δ ⊙ f'(z_k)``, ``v = d_z w_hhᵀ``,
    ``f'`` read from ``output`` ``= h_k``; ``preactivation`` (:func:`pascanu`, ``x_k = z_k``):
    ``d_z = δ``, ``v = (δ w_hhᵀ) ⊙ f'(x_{k-1})``, read from ``previous_output`` ``= f(x_{k-1})``.
    The one place outside the reference where this Jacobian is written: the elman cell's
    reverse rule, the regulariser, the closed-form Jacobians and the fused engine use it.
    """
    derivative = activations.get(cell.activation).derivative_from_output
    if cell.traits.recurrence == "activated":
        d_z = delta * derivative(output)
        return d_z, times_w_hh_t(d_z)
    if cell.traits.recurrence == "preactivation":
        return delta, times_w_hh_t(delta) * derivative(previous_output)
    raise UserValueError(f"recurrence_vjp: expected an Elman-type cell (elman, pascanu), got {cell!r}")


class Cell:
    """A recurrent cell: pure functions plus the static configuration they were built from.

    Cells compare and hash by that configuration (``lstm(64) == lstm(64)``), so a cell is a
    valid static argument of ``jax.jit``: equal cells share one compiled program. They are
    immutable.

    Attributes:
      kind: the constructor's name (``"elman"``, ``"pascanu"``, ``"lstm"``, ``"gru"``,
        ``"mgu"``), for messages and for the hand-written reference; nothing else switches on it.
      config: the constructor's arguments, frozen (what equality and hashing compare).
      hidden_size: number of units H.
      activation: name of the state nonlinearity (``tanh`` for the gated cells).
      init: ``init(key, input_size, dtype=jnp.float32) -> params``.
      initial_carry: ``initial_carry(batch_shape=(), dtype=jnp.float32) -> carry`` (zeros).
      step: ``step(params, carry, x) -> (carry, y)``; ``y`` is what a readout sees.
      output: ``output(carry) -> y``, the step's output as a function of its new carry.
      params_type, carry_type: the parameters' and the carry's NamedTuple classes.
      param_shapes: ``param_shapes(input_size) -> {name: shape}`` for every parameter.
      project: ``project(params, x) -> x @ w_ih + b`` of shape (..., G*H).
      step_projected: ``step_projected(params, carry, xp) -> (carry, y)``; ``step`` is
        ``step_projected ∘ project`` (so an unroll may project every step's input at once).
      recurrent_input: ``recurrent_input(carry) -> m``, what multiplies ``w_hh``
        (``carry.hidden``; ``σ(carry.hidden)`` for :func:`pascanu`).
      combine: ``combine(params, carry, xp, hh) -> (carry, y)``, the step given the
        input projection ``xp`` and the recurrent product ``hh = m @ w_hh``; it reads
        no parameter but those outside ``w_ih``, ``w_hh``, ``b`` (GRU's ``b_hn``).
        ``step_projected`` is ``combine`` after the product, and the hand-written reverse
        pass (:mod:`rnn_jax.hand_scan`) differentiates it.
      reverse_rule: a :class:`ReverseRule` or None: ``combine`` with its derivative written
        out, for a reverse pass that keeps only what it needs.
      traits: :class:`Traits`.
    """

    __slots__ = ("kind", "config", "hidden_size", "activation", "init", "initial_carry", "step", "output",
                 "params_type", "carry_type", "param_shapes", "project", "step_projected", "recurrent_input",
                 "combine", "reverse_rule", "traits")

    def __init__(self, **fields):
        missing = set(self.__slots__) - set(fields)
        if missing:
            raise TypeError(f"Cell: missing {', '.join(sorted(missing))}")
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"Cell is immutable; build a new one with rnn_jax.{self.kind}(...)")

    def __copy__(self):  # immutable: a copy is the cell itself
        return self

    def __deepcopy__(self, memo):
        return self

    def _key(self):
        return (self.kind, self.config)

    def __eq__(self, other):
        return isinstance(other, Cell) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        args = ", ".join(f"{name}={value!r}" for name, value in self.config)
        return f"{self.kind}({args})"

    def replace(self, **changes) -> "Cell":
        """A copy with some fields changed (e.g. ``reverse_rule=None``); the changes join the
        configuration, so the copy is not equal to the original."""
        unknown = set(changes) - set(self.__slots__) - {"config"}
        if unknown or "config" in changes:
            raise UserTypeError(f"Cell.replace: expected fields among {', '.join(self.__slots__[2:])}, "
                                f"got {', '.join(sorted(unknown | ({'config'} & set(changes))))}")
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        fields["config"] = self.config + tuple((f"replaced {name}", _freeze(v)) for name, v in sorted(changes.items()))
        return Cell(**fields)


class ReverseRule(NamedTuple):
    """A cell's ``combine`` with its reverse step written out by hand, for cells whose output
    is ``carry.hidden`` and whose ``recurrent_input`` is ``carry.hidden`` (Elman, LSTM, GRU).

    Attributes:
      forward: ``forward(params, carry, xp, hh) -> (carry, y, saved)``: ``combine``, plus
        the tuple of per-step values the reverse step needs besides ``y`` (``()`` for Elman:
        ``f'`` is a function of ``y``; for the LSTM its four gates and the previous cell
        state). ``combine`` is this without ``saved``.
      backward: ``backward(saved, y, d_carry, d_y, times_w_hh_t) -> (d_prev_carry, d_blocks)``:
        the cotangent of the previous carry and a tuple of cotangent blocks (the gates'
        pre-activations), given those of the new carry and of ``y``; ``times_w_hh_t(d_hh)``
        is ``d_hh @ w_hhᵀ``, the path through ``hh``. The reverse pass writes block ``k``
        over ``saved[k]``'s stack where it fits (that step's ``saved`` is dead once read),
        else over the outputs' cotangents (:func:`rnn_jax.hand_scan._overwrite_targets`).
      xp_blocks: the blocks that, concatenated, are the cotangent of ``xp`` (gate order).
      hh_blocks: the same for ``hh``, or None where it equals ``xp``'s (``combine`` reads
        ``xp`` and ``hh`` only through their sum).
      extra_grads: ``d_blocks -> {name: gradient}`` for the parameters ``combine`` reads
        itself (GRU's ``b_hn``), over stacked steps, or None.
    """

    forward: Callable[..., Any]
    backward: Callable[..., Any]
    xp_blocks: Tuple[int, ...] = (0,)
    hh_blocks: Optional[Tuple[int, ...]] = None
    extra_grads: Optional[Callable[..., Any]] = None


InitSpec = Union[str, initializers.Initializer]


# ---------------------------------------------------------------- validation


def check_cell(cell: Any, what: str = "cell") -> Cell:
    """Raise unless ``cell`` is a :class:`Cell` (a user passing a name or a layer gets told so)."""
    if not isinstance(cell, Cell):
        raise UserTypeError(f"{what}: expected an rnn_jax Cell such as rnn_jax.lstm(64), got {describe(cell)}")
    return cell


def check_params(cell: Cell, params: Any) -> int:
    """Check ``params`` against ``cell`` at trace time (type, floating dtypes, one dtype, the
    shapes of :attr:`Cell.param_shapes`) and return the input size, the first parameter's
    leading axis."""
    check_cell(cell)
    if not isinstance(params, cell.params_type):
        raise UserTypeError(
            f"{cell.kind} cell: expected parameters of type {cell.params_type.__name__} "
            f"(fields {', '.join(cell.params_type._fields)}), got {type(params).__name__}"
        )
    for name in params._fields:
        check_floating(f"{cell.kind} params.{name}", getattr(params, name))
    first, lead = params._fields[0], params[0]
    columns = cell.param_shapes(1)[first][1:]
    if lead.ndim != 1 + len(columns) or tuple(lead.shape[1:]) != columns:
        raise UserValueError(f"{cell.kind} params.{first}: expected shape (input_size, {', '.join(map(str, columns))}), "
                             f"got {tuple(lead.shape)}")
    expected = cell.param_shapes(int(lead.shape[0]))
    for name in params._fields[1:]:
        leaf = getattr(params, name)
        if tuple(leaf.shape) != expected[name]:
            raise UserValueError(f"{cell.kind} params.{name}: expected shape {expected[name]}, got {tuple(leaf.shape)}")
        if leaf.dtype != lead.dtype:
            raise UserTypeError(f"{cell.kind} params.{name}: expected dtype {lead.dtype} like {first}, got {leaf.dtype}")
    return int(lead.shape[0])


def params_dtype(params: Any):
    """The dtype of a cell's parameters (all share one; :func:`check_params` checks it)."""
    return params[0].dtype


def check_carry(cell: Cell, carry: Any, batch_shape: tuple, dtype) -> None:
    """Check a carry's type, shapes (``batch_shape + (H,)``) and dtype."""
    if not isinstance(carry, cell.carry_type):
        raise UserTypeError(
            f"{cell.kind} cell: expected a carry of type {cell.carry_type.__name__} "
            f"(fields {', '.join(cell.carry_type._fields)}), got {type(carry).__name__}"
        )
    want = tuple(batch_shape) + (cell.hidden_size,)
    for name in carry._fields:
        leaf = getattr(carry, name)
        check_floating(f"{cell.kind} carry.{name}", leaf)
        if tuple(leaf.shape) != want:
            raise UserValueError(f"{cell.kind} carry.{name}: expected shape {want}, got {tuple(leaf.shape)}")
        if leaf.dtype != dtype:
            raise UserTypeError(f"{cell.kind} carry.{name}: expected dtype {dtype} like the parameters, got {leaf.dtype}")


def _check_step_input(cell: Cell, params, carry, x) -> None:
    """``step``'s checks: the parameters, ``x`` of shape ``(..., input_size)`` in their dtype, and a
    carry of the cell's type with leaves ``x.shape[:-1] + (H,)`` (no broadcasting between them)."""
    input_size, dtype = check_params(cell, params), params_dtype(params)
    check_floating(f"{cell.kind} step input x", x)
    if x.ndim < 1 or x.shape[-1] != input_size:
        raise UserValueError(f"{cell.kind} step input x: expected shape (..., {input_size}), got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise UserTypeError(f"{cell.kind} step input x: expected dtype {dtype} to match the parameters, got {x.dtype}")
    check_carry(cell, carry, tuple(x.shape[:-1]), dtype)


def _check_init_args(kind: str, key, input_size, dtype):
    """Check ``init``'s arguments; return the dtype resolved (a name such as ``"float32"`` works)."""
    check_key(f"{kind}.init key", key)
    check_positive_int(f"{kind}.init input_size", input_size)
    return check_float_dtype(f"{kind}.init dtype", dtype)


def _project_single(params, x):
    return x @ params.w_ih + params.b


def _make_initial_carry(carry_type, hidden_size):
    def initial_carry(batch_shape: tuple = (), dtype=jnp.float32):
        shape = check_batch_shape("initial_carry batch_shape", batch_shape) + (hidden_size,)
        dtype = check_float_dtype("initial_carry dtype", dtype)
        return carry_type(*[jnp.zeros(shape, dtype) for _ in carry_type._fields])

    return initial_carry


def _resolve_inits(kind, hidden_size, input_init, recurrent_init, bias_init):
    return (
        initializers.resolve(f"{kind} input_init", input_init, hidden_size),
        initializers.resolve(f"{kind} recurrent_init", recurrent_init, hidden_size),
        initializers.resolve(f"{kind} bias_init", bias_init, hidden_size),
    )


def _hidden(carry):
    return carry.hidden


def _without_saved(forward):
    """``combine`` from a :class:`ReverseRule`'s ``forward`` (XLA drops the unused residuals)."""

    def combine(params, carry, xp, hh):
        new, y, _ = forward(params, carry, xp, hh)
        return new, y

    return combine


def _freeze(value):
    """A constructor argument as a hashable, comparable value (arrays by dtype, shape and values;
    a callable initialiser by identity)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        array = np.asarray(value)
        return ("array", str(array.dtype), array.shape, tuple(array.ravel().tolist()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _gated_shapes(hidden_size, blocks, extra=None):
    """``param_shapes`` of a cell with ``w_ih (I, blocks*H)``, ``w_hh (H, blocks*H)``, ``b (blocks*H,)``."""
    h = hidden_size

    def param_shapes(input_size):
        return {"w_ih": (input_size, blocks * h), "w_hh": (h, blocks * h), "b": (blocks * h,), **(extra or {})}

    return param_shapes


def _build(kind, config, hidden_size, activation, init, combine, params_type, carry_type, param_shapes, *,
           recurrent_input=_hidden, output=_hidden, reverse_rule=None, traits=Traits()) -> Cell:
    """Assemble a :class:`Cell`; ``step`` validates its arguments then projects and steps."""
    cell = None

    def step_projected(params, carry, xp):
        return combine(params, carry, xp, recurrent_input(carry) @ params.w_hh)

    def step(params, carry, x):
        _check_step_input(cell, params, carry, x)
        return step_projected(params, carry, _project_single(params, x))

    cell = Cell(kind=kind, config=tuple((name, _freeze(v)) for name, v in config.items()), hidden_size=hidden_size,
                activation=activation, init=init, initial_carry=_make_initial_carry(carry_type, hidden_size), step=step,
                output=output, params_type=params_type, carry_type=carry_type, param_shapes=param_shapes,
                project=_project_single, step_projected=step_projected, recurrent_input=recurrent_input,
                combine=combine, reverse_rule=reverse_rule, traits=traits)
    return cell


# ---------------------------------------------------------------- Elman


def _elman_family(kind, hidden_size, activation, scheme, input_init, recurrent_init, bias_init):
    hidden_size = check_positive_int(f"{kind} hidden_size", hidden_size)
    if scheme is not None:
        check_choice("initialisation scheme", scheme, initializers.PAPER_SCHEMES)
        s_in, s_rec, s_act = initializers.PAPER_SCHEMES[scheme]
        input_init = s_in if input_init is None else input_init
        recurrent_init = s_rec if recurrent_init is None else recurrent_init
        bias_init = "zeros" if bias_init is None else bias_init
        activation = s_act if activation is None else activation
    activation = "tanh" if activation is None else activation
    act = activations.get(activation)
    specs = ["uniform" if spec is None else spec for spec in (input_init, recurrent_init, bias_init)]
    inits = _resolve_inits(kind, hidden_size, *specs)
    config = dict(hidden_size=hidden_size, activation=act.name, input_init=specs[0], recurrent_init=specs[1],
                  bias_init=specs[2])
    return hidden_size, act, inits, config


def _elman_init(kind, hidden_size, inits):
    input_init, recurrent_init, bias_init = inits

    def init(key, input_size, dtype=jnp.float32):
        dtype = _check_init_args(kind, key, input_size, dtype)
        k_ih, k_hh, k_b = jax.random.split(key, 3)
        return ElmanParams(
            w_ih=input_init(k_ih, (input_size, hidden_size), dtype),
            w_hh=recurrent_init(k_hh, (hidden_size, hidden_size), dtype),
            b=bias_init(k_b, (hidden_size,), dtype),
        )

    return init


def elman(
    hidden_size: int,
    activation: Optional[str] = None,
    *,
    scheme: Optional[str] = None,
    input_init: Optional[InitSpec] = None,
    recurrent_init: Optional[InitSpec] = None,
    bias_init: Optional[InitSpec] = None,
) -> Cell:
    """Elman RNN: ``h_t = f(h_{t-1} @ w_hh + x_t @ w_ih + b)``, output ``y_t = h_t``.

    (Column-vector form: ``h_t = f(W_hh h_{t-1} + W_ih x_t + b)`` with ``W = w.T``.)

    Args:
      hidden_size: number of units H.
      activation: ``tanh`` (default), ``sigmoid``, ``relu`` or ``identity``. With
        ``identity`` and H = 1 this is the linear RNN of the counting tutorial,
        ``s_k = s_{k-1} w_rec + x_k w_x``.
      scheme: one of the paper's initialisations ``sigmoid``, ``basic_tanh``,
        ``smart_tanh``; sets the activation (unless given), the input and
        recurrent initialisers (unless given) and zero biases.
      input_init, recurrent_init, bias_init: a name from
        :data:`rnn_jax.initializers.NAMED` or a callable ``(key, shape, dtype)``.
        Default: PyTorch's U(-1/√H, 1/√H) for all three.
    """
    hidden_size, act, inits, config = _elman_family("elman", hidden_size, activation, scheme, input_init,
                                                    recurrent_init, bias_init)

    def forward(params, carry, xp, hh):
        h = act.fn(xp + hh)
        return RNNState(h), h, ()

    def backward(saved, y, d_carry, d_y, times_w_hh_t):
        d_z, d_previous = recurrence_vjp(cell, d_carry.hidden + d_y, times_w_hh_t, output=y)
        return RNNState(d_previous), (d_z,)

    init = _elman_init("elman", hidden_size, inits)
    cell = _build("elman", config, hidden_size, act.name, init, _without_saved(forward), ElmanParams, RNNState,
                  _gated_shapes(hidden_size, 1), reverse_rule=ReverseRule(forward, backward),
                  traits=Traits(recurrence="activated"))
    return cell


def pascanu(
    hidden_size: int,
    activation: Optional[str] = None,
    *,
    scheme: Optional[str] = None,
    input_init: Optional[InitSpec] = None,
    recurrent_init: Optional[InitSpec] = None,
    bias_init: Optional[InitSpec] = None,
) -> Cell:
    """Pascanu et al.'s theory form (eq. 2): ``x_t = σ(x_{t-1}) @ w_rec + u_t @ w_in + b``.

    The carry is the pre-activation state ``x_t``; the step's output is
    ``y_t = σ(x_t)``, the quantity a readout sees. Arguments as in :func:`elman`
    (``w_ih`` is ``W_in``, ``w_hh`` is ``W_rec``, both transposed).
    """
    hidden_size, act, inits, config = _elman_family("pascanu", hidden_size, activation, scheme, input_init,
                                                    recurrent_init, bias_init)

    def combine(params, carry, xp, hh):
        x = hh + xp
        return RNNState(x), act.fn(x)

    init = _elman_init("pascanu", hidden_size, inits)
    state_output = lambda carry: act.fn(carry.hidden)
    return _build("pascanu", config, hidden_size, act.name, init, combine, ElmanParams, RNNState,
                  _gated_shapes(hidden_size, 1), recurrent_input=state_output, output=state_output,
                  traits=Traits(recurrence="preactivation", summed=True))


# ---------------------------------------------------------------- LSTM


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 0.0,
    input_init: InitSpec = "uniform",
    recurrent_init: InitSpec = "uniform",
    bias_init: InitSpec = "uniform",
) -> Cell:
    """LSTM with PyTorch's equations and gate order ``i, f, g, o``::

        i = σ(x W_ii + h W_hi + b_i)     f = σ(x W_if + h W_hf + b_f)
        g = tanh(x W_ig + h W_hg + b_g)  o = σ(x W_io + h W_ho + b_o)
        c' = f ⊙ c + i ⊙ g               h' = o ⊙ tanh(c'),   output y = h'

    Args:
      hidden_size: number of units H.
      forget_bias: added to the forget gate's bias at initialisation (1.0 is the
        usual remedy against early vanishing, Gers et al. 2000); a finite number, or
        one per unit (shape ``(H,)``).
      input_init, recurrent_init, bias_init: names or callables; default
        PyTorch's U(-1/√H, 1/√H).
    """
    hidden_size = check_positive_int("lstm hidden_size", hidden_size)
    check_real("lstm forget_bias", forget_bias, allow_array=True)
    if hasattr(forget_bias, "shape") and tuple(forget_bias.shape) not in ((), (hidden_size,)):
        raise UserValueError(f"lstm forget_bias: expected a number or shape ({hidden_size},), got {describe(forget_bias)}")
    inits = _resolve_inits("lstm", hidden_size, input_init, recurrent_init, bias_init)
    h = hidden_size

    def init(key, input_size, dtype=jnp.float32):
        dtype = _check_init_args("lstm", key, input_size, dtype)
        k_ih, k_hh, k_b = jax.random.split(key, 3)
        b = inits[2](k_b, (4 * h,), dtype)
        b = b.at[h : 2 * h].add(jnp.asarray(forget_bias, dtype))
        return LSTMParams(inits[0](k_ih, (input_size, 4 * h), dtype), inits[1](k_hh, (h, 4 * h), dtype), b)

    def forward(params, carry, xp, hh):
        z = xp + hh
        i = jax.nn.sigmoid(z[..., :h])
        f = jax.nn.sigmoid(z[..., h : 2 * h])
        g = jnp.tanh(z[..., 2 * h : 3 * h])
        o = jax.nn.sigmoid(z[..., 3 * h :])
        c = f * carry.cell + i * g
        hidden = o * jnp.tanh(c)
        # one (…, 4H) row per step: the reverse pass writes δz over it
        return LSTMState(hidden, c), hidden, (jnp.concatenate([i, f, g, o], axis=-1), carry.cell)

    def backward(saved, y, d_carry, d_y, times_w_hh_t):
        gates, c_prev = saved
        i, f, g, o = (gates[..., k * h : (k + 1) * h] for k in range(4))
        tanh_c = jnp.tanh(f * c_prev + i * g)  # recomputed: one tanh instead of a stored (T, B, H)
        d_h = d_carry.hidden + d_y
        d_c = d_carry.cell + d_h * o * (1 - tanh_c * tanh_c)
        d_z = jnp.concatenate(
            [d_c * g * i * (1 - i), d_c * c_prev * f * (1 - f), d_c * i * (1 - g * g), d_h * tanh_c * o * (1 - o)],
            axis=-1,
        )
        return LSTMState(times_w_hh_t(d_z), d_c * f), (d_z,)

    # a number and a 0-d array of it are one configuration; a per-unit array, its values
    bias_values = np.asarray(forget_bias, np.float64)
    config = dict(hidden_size=h, forget_bias=float(bias_values) if bias_values.ndim == 0 else tuple(bias_values.tolist()),
                  input_init=input_init, recurrent_init=recurrent_init,
                  bias_init=bias_init)
    return _build("lstm", config, h, "tanh", init, _without_saved(forward), LSTMParams, LSTMState, _gated_shapes(h, 4),
                  reverse_rule=ReverseRule(forward, backward))


# ---------------------------------------------------------------- GRU


def gru(
    hidden_size: int,
    *,
    input_init: InitSpec = "uniform",
    recurrent_init: InitSpec = "uniform",
    bias_init: InitSpec = "uniform",
) -> Cell:
    """GRU with PyTorch's equations and gate order ``r, z, n``::

        r = σ(x W_ir + h W_hr + b_r)     z = σ(x W_iz + h W_hz + b_z)
        n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
        h' = (1 − z) ⊙ n + z ⊙ h,        output y = h'

    ``b_hn`` sits inside the reset gate's product and is kept apart from ``b_in``.
    """
    hidden_size = check_positive_int("gru hidden_size", hidden_size)
    inits = _resolve_inits("gru", hidden_size, input_init, recurrent_init, bias_init)
    h = hidden_size

    def init(key, input_size, dtype=jnp.float32):
        dtype = _check_init_args("gru", key, input_size, dtype)
        k_ih, k_hh, k_b, k_bn = jax.random.split(key, 4)
        return GRUParams(
            inits[0](k_ih, (input_size, 3 * h), dtype),
            inits[1](k_hh, (h, 3 * h), dtype),
            inits[2](k_b, (3 * h,), dtype),
            inits[2](k_bn, (h,), dtype),
        )

    def forward(params, carry, xp, hh):
        r = jax.nn.sigmoid(xp[..., :h] + hh[..., :h])
        z = jax.nn.sigmoid(xp[..., h : 2 * h] + hh[..., h : 2 * h])
        hn = hh[..., 2 * h :] + params.b_hn
        n = jnp.tanh(xp[..., 2 * h :] + r * hn)
        hidden = (1 - z) * n + z * carry.hidden
        # each stacked on its own: the reverse pass writes its four cotangent blocks over r,
        # z, n and hn (W4 0.88-0.955x against stacking the cotangents anew)
        return RNNState(hidden), hidden, (r, z, n, hn, carry.hidden)

    # xp's cotangent is blocks 0-2; hh's is 0, 1 and 3, the candidate's block times the
    # reset gate, by which its recurrent part enters
    xp_blocks, hh_blocks = (0, 1, 2), (0, 1, 3)

    def backward(saved, y, d_carry, d_y, times_w_hh_t):
        r, z, n, hn, h_prev = saved
        d_h = d_carry.hidden + d_y
        d_pre_n = d_h * (1 - z) * (1 - n * n)
        d_pre_r = d_pre_n * hn * r * (1 - r)
        d_pre_z = d_h * (h_prev - n) * z * (1 - z)
        d_blocks = (d_pre_r, d_pre_z, d_pre_n, d_pre_n * r)
        d_hh = jnp.concatenate([d_blocks[k] for k in hh_blocks], axis=-1)
        return RNNState(times_w_hh_t(d_hh) + d_h * z), d_blocks

    def extra_grads(d_blocks):
        return {"b_hn": d_blocks[3].reshape(-1, h).sum(axis=0)}

    config = dict(hidden_size=h, input_init=input_init, recurrent_init=recurrent_init, bias_init=bias_init)
    return _build("gru", config, h, "tanh", init, _without_saved(forward), GRUParams, RNNState,
                  _gated_shapes(h, 3, {"b_hn": (h,)}), reverse_rule=ReverseRule(forward, backward, xp_blocks=xp_blocks, hh_blocks=hh_blocks,
                                           extra_grads=extra_grads))


# ---------------------------------------------------------------- MGU


class MGUParams(NamedTuple):
    """Parameters of :func:`mgu`; input blocks along the last axis in order f, n.

    w_ih: (input_size, 2H); w_hh: (H, H), the forget gate's recurrent weight; b: (2H,);
    w_hn: (H, H), the candidate's recurrent weight, applied to ``f ⊙ h``.
    """

    w_ih: Array
    w_hh: Array
    b: Array
    w_hn: Array


def mgu(
    hidden_size: int,
    *,
    input_init: InitSpec = "uniform",
    recurrent_init: InitSpec = "uniform",
    bias_init: InitSpec = "uniform",
) -> Cell:
    """Minimal gated unit (Zhou, Wu, Zhang & Zhou 2016, "Minimal Gated Unit for Recurrent
    Neural Networks"), one gate that both forgets and resets::

        f = σ(x W_if + h W_hf + b_f)
        n = tanh(x W_in + (f ⊙ h) W_hn + b_n)
        h' = (1 − f) ⊙ h + f ⊙ n,        output y = h'

    ``w_hh`` is ``W_hf`` alone (the candidate's recurrent product waits for the gate), so
    ``combine`` reads ``w_hn`` itself, as the GRU's reads ``b_hn``.
    """
    hidden_size = check_positive_int("mgu hidden_size", hidden_size)
    inits = _resolve_inits("mgu", hidden_size, input_init, recurrent_init, bias_init)
    h = hidden_size

    def init(key, input_size, dtype=jnp.float32):
        dtype = _check_init_args("mgu", key, input_size, dtype)
        k_ih, k_hh, k_b, k_hn = jax.random.split(key, 4)
        return MGUParams(inits[0](k_ih, (input_size, 2 * h), dtype), inits[1](k_hh, (h, h), dtype),
                         inits[2](k_b, (2 * h,), dtype), inits[1](k_hn, (h, h), dtype))

    def combine(params, carry, xp, hh):
        f = jax.nn.sigmoid(xp[..., :h] + hh)
        n = jnp.tanh(xp[..., h:] + (f * carry.hidden) @ params.w_hn)
        hidden = (1 - f) * carry.hidden + f * n
        return RNNState(hidden), hidden

    def param_shapes(input_size):
        return {"w_ih": (input_size, 2 * h), "w_hh": (h, h), "b": (2 * h,), "w_hn": (h, h)}

    config = dict(hidden_size=h, input_init=input_init, recurrent_init=recurrent_init, bias_init=bias_init)
    return _build("mgu", config, h, "tanh", init, combine, MGUParams, RNNState, param_shapes)


CELLS = {"elman": elman, "pascanu": pascanu, "lstm": lstm, "gru": gru, "mgu": mgu}


def make(kind: str, hidden_size: int, **kwargs) -> Cell:
    """Build a cell by name: ``make("lstm", 64, forget_bias=1.0)``."""
    constructor = CELLS[check_choice("cell kind", kind, CELLS)]
    try:
        inspect.signature(constructor).bind(hidden_size, **kwargs)
    except TypeError as err:
        options = [n for n in inspect.signature(constructor).parameters if n != "hidden_size"]
        raise UserTypeError(f"make({kind!r}, ...): {err}; a {kind} cell takes {', '.join(options)}") from None
    return constructor(hidden_size, **kwargs)
