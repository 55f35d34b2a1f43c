"""Backpropagation through time written out by hand: the reference for ``jax.grad``.

Nothing here uses autodiff (no ``jax.grad``, ``vjp``, ``jvp``, ``jacfwd``/``jacrev``).
:func:`forward` runs the cell's equations over the sequence in NumPy and stores
every state; :func:`bptt` then walks back through time with the recursion of Roelants'
tutorial ("How to implement a recurrent neural network, part 1") and of Pascanu, Mikolov
and Bengio, "On the difficulty of training recurrent neural networks" (2013)::

    δ_k = ∂E/∂s_k = δ_{k+1} ∂s_{k+1}/∂s_k  +  (direct term of the loss at step k)

where ``s_k`` is the carry after step k. The weights are tied across steps, so
each weight's gradient is the sum over the steps of its per-step gradient. The
activations and their derivatives are the hand-written ones of
:mod:`rnn_jax.activations`.

The loss pipeline is that of :func:`rnn_jax.model.loss`: a linear readout of the
cell outputs, ``"mse"`` or ``"xent"``, on the ``"last"`` valid step or on
``"every"`` valid step, optional ``lengths`` (a padded step keeps the carry and
outputs zero) and an optional ``initial_carry`` (default zeros). So::

    result = bptt(cell, params, xs, targets, loss="xent", on="every", lengths=lengths)
    result.grads  ~=  jax.grad(rnn_jax.model.loss, argnums=1)(
        cell, params, xs, targets, loss="xent", on="every", lengths=lengths)

:func:`bptt_outputs` starts from the cotangent of every step's output instead, runs
forward or reversed and returns ``∂E/∂xs`` too: chained from the top layer down, the
gradient of a stack of layers (:mod:`rnn_jax.layers`, ``tests/test_bptt_layers.py``).

It is a reference: a Python loop over time in NumPy on the host, clarity first. It
reads its inputs itself (layout, lengths, reverse order, the initial carry) and imports
nothing of :mod:`rnn_jax.unroll`, so a bug in the unroll's preparation cannot hide in both.
It runs eagerly (inputs must be concrete arrays, not traced under ``jit``), compiles
nothing but the activations' elementwise ops, and computes in the parameters' dtype.

Each cell kind has its forward and backward step written out below, in the
row-vector layout ``x @ w`` of :mod:`rnn_jax.cells` (LSTM and GRU as in PyTorch).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import activations
from rnn_jax import losses as _losses
from rnn_jax._checks import (
    UserTypeError, UserValueError, check_choice, check_floating, check_integer, check_labels, describe, is_concrete,
)
from rnn_jax.cells import Cell, ElmanParams, GRUParams, LSTMParams, LSTMState, MGUParams, RNNState
from rnn_jax.model import ON, ModelParams
from rnn_jax.readout import ReadoutParams, check_readout_params


class Trajectory(NamedTuple):
    """What :func:`forward` stores, as NumPy arrays; ``B`` sequences of ``T`` steps.

    inputs: (B, T, I) the inputs xs.
    initial_carry: the carry before step 0, leaves (B, H).
    carries: the carry after each step, leaves (B, T, H); a padded step repeats the previous carry.
    outputs: (B, T, H), what the readout sees (``h_t``; ``σ(x_t)`` for pascanu), 0 at padded steps.
    valid: (B, T) bool, ``t < length``.
    internals: a tuple over the T steps of the cell's intermediate values at that step
      (pre-activations, before masking), kind-specific; the backward pass reads them.
    """

    inputs: np.ndarray
    initial_carry: Any
    carries: Any
    outputs: np.ndarray
    valid: np.ndarray
    internals: tuple


class BPTTResult(NamedTuple):
    """What :func:`bptt` returns (JAX arrays in the parameters' dtype).

    loss: () the loss, as :func:`rnn_jax.model.loss` computes it.
    grads: ∂loss/∂params, a :class:`~rnn_jax.model.ModelParams` of the same structure,
      shapes and dtype as ``params``.
    state_grads: the cell's carry type (``RNNState`` or ``LSTMState``), leaves (B, T, H):
      ``δ_k = ∂loss/∂s_k``, the total derivative with respect to the carry ``s_k`` after
      step k, through the step-k output and every later step. Precisely: if the carry
      that step k produces is replaced by ``s_k + ε`` before the step's output is read
      from it, then ``δ_k = ∂loss/∂ε`` at ``ε = 0``. Per cell:

      * elman, gru: ``hidden`` is ``∂loss/∂h_k`` (the output is ``h_k``);
      * pascanu: ``hidden`` is ``∂loss/∂x_k``, the pre-activation state (output ``σ(x_k)``);
      * lstm: ``hidden`` is ``∂loss/∂h_k``; ``cell`` is ``∂loss/∂c_k`` with ``h_k`` held
        fixed, i.e. what reaches step k only through the cell state carried into step
        k+1 (the path ``h_k = o_k ⊙ tanh(c_k)`` is already inside ``∂loss/∂h_k``).

      Zero at padded steps (``t ≥ length``): nothing that reaches the loss reads those
      carries. These are the tutorial's gradient over time and Pascanu's ``δ_k``, the
      ``deltas`` that :func:`rnn_jax.diagnostics.state_gradients` gets by autodiff.
    initial_carry_grad: carry type, leaves (B, H): ∂loss/∂(initial carry), for a
      learnable initial state.
    """

    loss: jax.Array
    grads: ModelParams
    state_grads: Any
    initial_carry_grad: Any


# ---------------------------------------------------------------- activations on the host


class _HostActivation(NamedTuple):
    fn: Callable[[np.ndarray], np.ndarray]
    derivative: Callable[[np.ndarray], np.ndarray]  # f'(pre)


def _host(name: str) -> _HostActivation:
    """The hand-written activation and derivative of :mod:`rnn_jax.activations`, returning NumPy."""
    act = activations.get(name)
    return _HostActivation(lambda a: np.asarray(act.fn(a)), lambda a: np.asarray(act.derivative(a)))


# ---------------------------------------------------------------- per-cell steps
#
# Each kind has three functions on one step of (B, ...) NumPy arrays:
#   step(params, act, carry, x) -> (new_carry, output, internals)
#   output_vjp(act, new_carry, dy) -> the carry cotangent of output = out(new_carry)
#   backward(params, act, carry, x, internals, d_new) -> (d_carry, param_grads, d_x)
# with d_new = ∂E/∂(new carry), d_carry = ∂E/∂carry through this step only and
# d_x = ∂E/∂x (B, I), the step's input (what a lower layer of a stack receives).


def _elman_step(params: ElmanParams, act, carry: RNNState, x):
    pre = x @ params.w_ih + params.b + carry.hidden @ params.w_hh
    h = act.fn(pre)
    return RNNState(h), h, pre


def _hidden_output_vjp(act, new_carry, dy):
    """Elman and GRU read the hidden state itself."""
    return RNNState(dy)


def _elman_backward(params: ElmanParams, act, carry: RNNState, x, pre, d_new: RNNState):
    dpre = d_new.hidden * act.derivative(pre)
    grads = ElmanParams(w_ih=x.T @ dpre, w_hh=carry.hidden.T @ dpre, b=dpre.sum(axis=0))
    return RNNState(dpre @ params.w_hh.T), grads, dpre @ params.w_ih.T


def _pascanu_step(params: ElmanParams, act, carry: RNNState, u):
    state = act.fn(carry.hidden) @ params.w_hh + u @ params.w_ih + params.b
    return RNNState(state), act.fn(state), None


def _pascanu_output_vjp(act, new_carry: RNNState, dy):
    return RNNState(dy * act.derivative(new_carry.hidden))


def _pascanu_backward(params: ElmanParams, act, carry: RNNState, u, internals, d_new: RNNState):
    dx = d_new.hidden
    grads = ElmanParams(w_ih=u.T @ dx, w_hh=act.fn(carry.hidden).T @ dx, b=dx.sum(axis=0))
    return RNNState((dx @ params.w_hh.T) * act.derivative(carry.hidden)), grads, dx @ params.w_ih.T


_SIGMOID = _host("sigmoid")
_TANH = _host("tanh")


class _LSTMInternals(NamedTuple):
    pre: np.ndarray  # (B, 4H) gate pre-activations, blocks i, f, g, o
    cell: np.ndarray  # (B, H) the new cell state c


def _lstm_gates(pre):
    zi, zf, zg, zo = np.split(pre, 4, axis=-1)
    return _SIGMOID.fn(zi), _SIGMOID.fn(zf), _TANH.fn(zg), _SIGMOID.fn(zo)


def _lstm_step(params: LSTMParams, act, carry: LSTMState, x):
    pre = x @ params.w_ih + params.b + carry.hidden @ params.w_hh
    i, f, g, o = _lstm_gates(pre)
    c = f * carry.cell + i * g
    h = o * _TANH.fn(c)
    return LSTMState(h, c), h, _LSTMInternals(pre, c)


def _lstm_output_vjp(act, new_carry, dy):
    return LSTMState(dy, np.zeros_like(dy))


def _lstm_backward(params: LSTMParams, act, carry: LSTMState, x, internals: _LSTMInternals, d_new: LSTMState):
    zi, zf, zg, zo = np.split(internals.pre, 4, axis=-1)
    i, f, g, o = _lstm_gates(internals.pre)
    c = internals.cell
    dh = d_new.hidden
    dc = d_new.cell + dh * o * _TANH.derivative(c)  # h = o ⊙ tanh(c) reads the new c
    dpre = np.concatenate([dc * g * _SIGMOID.derivative(zi), dc * carry.cell * _SIGMOID.derivative(zf),
                           dc * i * _TANH.derivative(zg), dh * _TANH.fn(c) * _SIGMOID.derivative(zo)], axis=-1)
    grads = LSTMParams(w_ih=x.T @ dpre, w_hh=carry.hidden.T @ dpre, b=dpre.sum(axis=0))
    return LSTMState(dpre @ params.w_hh.T, dc * f), grads, dpre @ params.w_ih.T


class _GRUInternals(NamedTuple):
    pre_r: np.ndarray  # (B, H) reset gate pre-activation
    pre_z: np.ndarray  # (B, H) update gate pre-activation
    pre_n: np.ndarray  # (B, H) candidate pre-activation x w_in + b_in + r ⊙ hn
    hn: np.ndarray  # (B, H) h_prev w_hn + b_hn


def _gru_step(params: GRUParams, act, carry: RNNState, x):
    xr, xz, xn = np.split(x @ params.w_ih + params.b, 3, axis=-1)
    hr, hz, hn = np.split(carry.hidden @ params.w_hh, 3, axis=-1)
    hn = hn + params.b_hn
    pre_r, pre_z = xr + hr, xz + hz
    r, z = _SIGMOID.fn(pre_r), _SIGMOID.fn(pre_z)
    pre_n = xn + r * hn
    h = (1 - z) * _TANH.fn(pre_n) + z * carry.hidden
    return RNNState(h), h, _GRUInternals(pre_r, pre_z, pre_n, hn)


def _gru_backward(params: GRUParams, act, carry: RNNState, x, internals: _GRUInternals, d_new: RNNState):
    h_prev = carry.hidden
    r, z, n = _SIGMOID.fn(internals.pre_r), _SIGMOID.fn(internals.pre_z), _TANH.fn(internals.pre_n)
    dh = d_new.hidden
    d_pre_n = dh * (1 - z) * _TANH.derivative(internals.pre_n)
    d_pre_z = dh * (h_prev - n) * _SIGMOID.derivative(internals.pre_z)
    d_pre_r = d_pre_n * internals.hn * _SIGMOID.derivative(internals.pre_r)
    d_hn = d_pre_n * r  # of h_prev w_hn + b_hn
    d_xp = np.concatenate([d_pre_r, d_pre_z, d_pre_n], axis=-1)  # of x w_ih + b
    d_hh = np.concatenate([d_pre_r, d_pre_z, d_hn], axis=-1)  # of h_prev w_hh
    grads = GRUParams(w_ih=x.T @ d_xp, w_hh=h_prev.T @ d_hh, b=d_xp.sum(axis=0), b_hn=d_hn.sum(axis=0))
    return RNNState(dh * z + d_hh @ params.w_hh.T), grads, d_xp @ params.w_ih.T


class _MGUInternals(NamedTuple):
    pre_f: np.ndarray  # (B, H) the gate's pre-activation
    pre_n: np.ndarray  # (B, H) the candidate's: x w_in + b_n + (f ⊙ h_prev) w_hn


def _mgu_step(params: MGUParams, act, carry: RNNState, x):
    xf, xn = np.split(x @ params.w_ih + params.b, 2, axis=-1)
    pre_f = xf + carry.hidden @ params.w_hh
    f = _SIGMOID.fn(pre_f)
    pre_n = xn + (f * carry.hidden) @ params.w_hn
    h = (1 - f) * carry.hidden + f * _TANH.fn(pre_n)
    return RNNState(h), h, _MGUInternals(pre_f, pre_n)


def _mgu_backward(params: MGUParams, act, carry: RNNState, x, internals: _MGUInternals, d_new: RNNState):
    h_prev, dh = carry.hidden, d_new.hidden
    f, n = _SIGMOID.fn(internals.pre_f), _TANH.fn(internals.pre_n)
    d_pre_n = dh * f * _TANH.derivative(internals.pre_n)
    d_gated = d_pre_n @ params.w_hn.T  # of f ⊙ h_prev
    d_pre_f = (dh * (n - h_prev) + d_gated * h_prev) * _SIGMOID.derivative(internals.pre_f)
    d_xp = np.concatenate([d_pre_f, d_pre_n], axis=-1)  # of x w_ih + b
    grads = MGUParams(w_ih=x.T @ d_xp, w_hh=h_prev.T @ d_pre_f, b=d_xp.sum(axis=0), w_hn=(f * h_prev).T @ d_pre_n)
    return RNNState(dh * (1 - f) + d_gated * f + d_pre_f @ params.w_hh.T), grads, d_xp @ params.w_ih.T


class _Kind(NamedTuple):
    step: Callable
    output_vjp: Callable
    backward: Callable
    params_type: type
    carry_type: type
    shapes: Callable  # (H, input_size) -> {parameter: shape}


def _blocks(g, **extra):
    """Shapes of ``w_ih (I, gH)``, ``w_hh (H, gH)``, ``b (gH,)`` and ``extra`` ``(H,)`` or ``(H, H)``."""
    return lambda h, i: {"w_ih": (i, g * h), "w_hh": (h, g * h), "b": (g * h,),
                         **{name: (h,) * rank for name, rank in extra.items()}}


KINDS = {
    "elman": _Kind(_elman_step, _hidden_output_vjp, _elman_backward, ElmanParams, RNNState, _blocks(1)),
    "pascanu": _Kind(_pascanu_step, _pascanu_output_vjp, _pascanu_backward, ElmanParams, RNNState, _blocks(1)),
    "lstm": _Kind(_lstm_step, _lstm_output_vjp, _lstm_backward, LSTMParams, LSTMState, _blocks(4)),
    "gru": _Kind(_gru_step, _hidden_output_vjp, _gru_backward, GRUParams, RNNState, _blocks(3, b_hn=1)),
    "mgu": _Kind(_mgu_step, _hidden_output_vjp, _mgu_backward, MGUParams, RNNState,
                 lambda h, i: {"w_ih": (i, 2 * h), "w_hh": (h, h), "b": (2 * h,), "w_hn": (h, h)}),
}
"""The cell kinds with a hand-written backward step."""


# ---------------------------------------------------------------- reading the inputs (not rnn_jax.unroll's)


def _to_host(what: str, tree):
    """Concrete arrays -> NumPy; a traced value (under jit/vmap/grad) cannot be: say so."""
    for leaf in jax.tree_util.tree_leaves(tree):
        if not is_concrete(leaf):
            raise UserTypeError(f"{what}: got a traced value; bptt is an eager NumPy reference, call it outside jax.jit/vmap/grad")
    return jax.tree_util.tree_map(np.asarray, tree)


def _to_jax(tree, dtype):
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, dtype), tree)


class _Inputs(NamedTuple):
    """The inputs as the reference reads them: checked, NumPy, batch-major."""

    kind: _Kind
    params: Any  # the cell's parameters
    xs: np.ndarray  # (B, T, I)
    lengths: Optional[np.ndarray]  # (B,) integers in [0, T], or None (T each)
    carry: Any  # the carry before the first step run, leaves (B, H)
    unbatched: bool  # xs was one (T, I) sequence: the results drop the batch axis again


def _read_inputs(cell, params, xs, lengths, initial_carry, what: str, reverse: bool = False) -> _Inputs:
    """Check the arguments of :func:`forward` and bring them to NumPy with a batch axis;
    ``what`` names ``params`` (the cell's) in errors."""
    if not isinstance(cell, Cell):
        raise UserTypeError(f"cell: expected an rnn_jax Cell (e.g. rnn_jax.elman(8)), got {type(cell).__name__}")
    kind = KINDS[check_choice("cell kind", cell.kind, KINDS)]
    if not isinstance(reverse, bool):
        raise UserTypeError(f"reverse: expected a bool, got {describe(reverse)}")

    # the parameters: G blocks of H columns
    if not isinstance(params, kind.params_type):
        raise UserTypeError(f"{cell.kind} cell: expected parameters of type {kind.params_type.__name__} "
                            f"(fields {', '.join(kind.params_type._fields)}), got {type(params).__name__}")
    for name, leaf in zip(params._fields, params):
        check_floating(f"{what}.{name}", leaf)
    h, dtype = cell.hidden_size, params.w_ih.dtype
    columns = kind.shapes(h, 0)["w_ih"][1]
    if params.w_ih.ndim != 2 or params.w_ih.shape[1] != columns:
        raise UserValueError(f"{what}.w_ih: expected shape (input_size, {columns}), got {tuple(params.w_ih.shape)}")
    expected = kind.shapes(h, params.w_ih.shape[0])
    for name, leaf in zip(params._fields[1:], params[1:]):
        if tuple(leaf.shape) != expected[name]:
            raise UserValueError(f"{what}.{name}: expected shape {expected[name]}, got {tuple(leaf.shape)}")
        if leaf.dtype != dtype:
            raise UserTypeError(f"{what}.{name}: expected dtype {dtype} like w_ih, got {leaf.dtype}")

    # xs: batch-major, or one sequence
    check_floating("xs", xs)
    if xs.ndim not in (2, 3):
        raise UserValueError(f"xs: expected rank 3 (batch, time, features) or rank 2 (time, features), got {describe(xs)}")
    if xs.shape[-1] != params.w_ih.shape[0]:
        raise UserValueError(f"xs: expected {params.w_ih.shape[0]} features (the parameters' input size), got shape {tuple(xs.shape)}")
    if xs.dtype != dtype:
        raise UserTypeError(f"xs: expected dtype {dtype} to match the parameters, got {xs.dtype}")
    if xs.shape[-2] == 0:
        raise UserValueError(f"xs: the sequence has zero steps (shape {tuple(xs.shape)}); expected at least one")
    unbatched = xs.ndim == 2
    xs = _to_host("xs", xs)[None] if unbatched else _to_host("xs", xs)
    batch, time, _ = xs.shape

    # lengths: checked, never clipped
    if lengths is not None:
        lengths = np.asarray(_to_host("lengths", lengths))  # a number, a list or an array
        check_integer("lengths", lengths)
        if lengths.shape != (() if unbatched else (batch,)):
            raise UserValueError(f"lengths: expected shape {() if unbatched else (batch,)} (one per sequence), got {lengths.shape}")
        if lengths.size and (lengths.min() < 0 or lengths.max() > time):
            raise UserValueError(f"lengths: expected values in [0, {time}] (the number of steps), "
                                 f"got values in [{lengths.min()}, {lengths.max()}]")
        lengths = lengths.reshape(batch)

    # the initial carry: leaves (B, H), or (H,) broadcast to every sequence
    carry_type = kind.carry_type
    if initial_carry is None:
        initial_carry = carry_type(*(np.zeros(h, dtype) for _ in carry_type._fields))
    elif not isinstance(initial_carry, carry_type):
        raise UserTypeError(f"initial_carry: expected the {cell.kind} cell's carry {carry_type.__name__} "
                            f"(fields {', '.join(carry_type._fields)}), got {type(initial_carry).__name__}")
    shapes = [(h,)] if unbatched else [(batch, h), (h,)]
    for name, leaf in zip(carry_type._fields, initial_carry):
        check_floating(f"initial_carry.{name}", leaf)
        if tuple(leaf.shape) not in shapes:
            raise UserValueError(f"initial_carry.{name}: expected shape {' or '.join(map(str, shapes))}, got {tuple(leaf.shape)}")
        if leaf.dtype != dtype:
            raise UserTypeError(f"initial_carry.{name}: expected dtype {dtype} like the parameters, got {leaf.dtype}")
    carry = carry_type(*(np.broadcast_to(leaf, (batch, h)).copy() for leaf in _to_host("initial_carry", initial_carry)))
    return _Inputs(kind, _to_host(what, params), xs, lengths, carry, unbatched)


def _select(mask, new, old):
    """Row-wise choice between two carries: ``new`` where mask (B,) is true."""
    return jax.tree_util.tree_map(lambda n, o: np.where(mask[:, None], n, o), new, old)


def _stack_time(carries):
    """A list over time of carries with (B, H) leaves -> one carry with (B, T, H) leaves."""
    return jax.tree_util.tree_map(lambda *leaves: np.stack(leaves, axis=1), *carries)


# ---------------------------------------------------------------- forward


def _forward(cell: Cell, inputs: _Inputs, reverse: bool = False) -> Trajectory:
    """:func:`forward`. With ``reverse`` the steps run from T-1 down to 0: a padded step
    t ≥ length keeps the carry, so each sequence really starts at its last valid step."""
    xs, carry, time = inputs.xs, inputs.carry, inputs.xs.shape[1]
    valid = np.ones(xs.shape[:2], bool) if inputs.lengths is None else np.arange(time)[None, :] < inputs.lengths[:, None]
    act = _host(cell.activation)
    carries, outputs, internals = [None] * time, [None] * time, [None] * time
    for t in range(time - 1, -1, -1) if reverse else range(time):
        # padding never enters the cell, so NaN padding stays out of the internals
        x = np.where(valid[:, t, None], xs[:, t], 0)
        new_carry, y, internals[t] = inputs.kind.step(inputs.params, act, carry, x)
        carry = _select(valid[:, t], new_carry, carry)  # a padded step keeps the carry ...
        outputs[t] = np.where(valid[:, t, None], y, 0)  # ... and outputs 0
        carries[t] = carry
    return Trajectory(xs, inputs.carry, _stack_time(carries), np.stack(outputs, axis=1), valid, tuple(internals))


def forward(cell: Cell, params: Any, xs, *, lengths=None, initial_carry: Any = None, reverse: bool = False) -> Trajectory:
    """Run ``cell`` over ``xs`` with the hand-written step equations; store every state.

    Args:
      cell: an ``elman``, ``pascanu``, ``lstm`` or ``gru`` cell.
      params: the cell's parameters (not the :class:`~rnn_jax.model.ModelParams`).
      xs: (B, T, I) batch-major, or (T, I) for one sequence (then the trajectory has B = 1).
      lengths: (B,) integer valid lengths (a scalar for one sequence), or None.
      initial_carry: the cell's carry type, leaves (B, H) or (H,); default zeros.
      reverse: read each sequence from its last valid step back to step 0; outputs and
        carries stay at their step's position (``carries[:, t]`` is the carry after step t).

    Returns:
      a :class:`Trajectory` of NumPy arrays; its ``outputs`` and ``carries`` are those
      of :func:`rnn_jax.unroll.unroll` (with ``return_carries=True`` and the same ``reverse``).
    """
    return _forward(cell, _read_inputs(cell, params, xs, lengths, initial_carry, "params", reverse), reverse)


# ---------------------------------------------------------------- the loss and its gradient


def _readout_and_loss(readout_params: ReadoutParams, traj: Trajectory, lengths, targets, loss: str, on: str):
    """The loss of :func:`rnn_jax.model.loss` from the cell outputs, and by hand its
    gradients: ``(loss, readout grads, ∂loss/∂outputs (B, T, H))``."""
    outputs = traj.outputs
    batch, time, _ = outputs.shape
    if on == "last":
        # the output at each last valid step; a length-0 sequence reads step 0 and is masked out
        last = np.full(batch, time - 1) if lengths is None else np.clip(lengths - 1, 0, time - 1)
        read = outputs[np.arange(batch), last]  # (B, H)
        mask = None if lengths is None else (lengths > 0).astype(outputs.dtype)  # (B,)
    else:
        read = outputs  # (B, T, H)
        mask = None if lengths is None else traj.valid.astype(outputs.dtype)  # (B, T)
    w, b = readout_params.w, readout_params.b
    predictions = read @ w + b  # (B, O) or (B, T, O)
    positions, classes = predictions.shape[:-1], predictions.shape[-1]

    if loss == "mse":
        check_floating("targets", targets)
        if targets.shape != predictions.shape:
            raise UserValueError(f"targets: expected shape {predictions.shape} like the predictions, got {targets.shape}")
        per_position = np.sum((predictions - targets) ** 2, axis=-1)
        d_per_position = 2 * (predictions - targets)
    else:
        check_integer("targets (class labels)", targets)
        if targets.shape != positions:
            raise UserValueError(f"targets: expected shape {positions} (one class index per position), got {targets.shape}")
        # only the valid positions' labels are read (a padded position may hold any), as in model.loss
        check_labels("targets", targets, classes, mask)
        targets = np.where(mask != 0, targets, 0) if mask is not None else targets
        shifted = predictions - predictions.max(axis=-1, keepdims=True)
        log_probabilities = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
        one_hot = (np.arange(classes) == targets[..., None]).astype(predictions.dtype)
        per_position = -np.sum(log_probabilities * one_hot, axis=-1)
        d_per_position = np.exp(log_probabilities) - one_hot  # softmax − one-hot

    # the (masked) mean over positions and its weights
    weights = np.ones(positions, predictions.dtype) if mask is None else mask
    count = per_position.size if mask is None else max(mask.sum(), 1)
    # a masked-out position's target is not read (a NaN there stays out, as in model.loss)
    value = np.sum(np.where(weights != 0, per_position * weights, 0)) / count
    d_predictions = np.where(weights[..., None] != 0, d_per_position * (weights / count)[..., None], 0)

    flat_read, flat_d = read.reshape(-1, read.shape[-1]), d_predictions.reshape(-1, classes)
    readout_grads = ReadoutParams(w=flat_read.T @ flat_d, b=flat_d.sum(axis=0))
    d_read = d_predictions @ w.T
    if on == "last":
        d_outputs = np.zeros_like(outputs)
        d_outputs[np.arange(batch), last] = d_read
    else:
        d_outputs = d_read
    return value, readout_grads, d_outputs


# ---------------------------------------------------------------- backward


def _backward(cell: Cell, inputs: _Inputs, traj: Trajectory, d_outputs, reverse: bool):
    """The recursion through time, from the step run last back to the step run first.

    d_outputs: (B, T, H) ∂E/∂outputs (read only at valid steps). ``reverse`` as in
    :func:`_forward`: the step run before step t is t-1 (forward) or t+1 (reverse).
    Returns NumPy ``(cell_grads, d_inputs (B, T, I), state_grads (carry, leaves (B, T, H)),
    ∂E/∂initial carry)``; ``d_inputs`` is zero at padded steps.
    """
    kind, act, time = inputs.kind, _host(cell.activation), d_outputs.shape[1]
    before = 1 if reverse else -1  # the step whose carry step t reads
    carry_at = lambda t: traj.initial_carry if not 0 <= t < time else jax.tree_util.tree_map(lambda leaf: leaf[:, t], traj.carries)
    cell_grads = jax.tree_util.tree_map(np.zeros_like, inputs.params)
    delta = jax.tree_util.tree_map(np.zeros_like, traj.initial_carry)  # what flows back into the last carry: nothing
    state_grads = [None] * time
    d_inputs = np.zeros_like(traj.inputs)
    for t in range(time) if reverse else range(time - 1, -1, -1):
        valid = traj.valid[:, t]
        # δ_t = (through the steps run after t) + (the direct term: the loss reads the step-t output, unless padded)
        direct = kind.output_vjp(act, carry_at(t), d_outputs[:, t])
        delta = jax.tree_util.tree_map(lambda d, e: d + np.where(valid[:, None], e, 0), delta, direct)
        state_grads[t] = delta
        # back through step t: a valid row went through the cell, a padded row copied the carry
        through_cell = _select(valid, delta, jax.tree_util.tree_map(np.zeros_like, delta))
        x = np.where(valid[:, None], traj.inputs[:, t], 0)  # the cell saw zeros at padded steps
        d_prev, step_grads, d_x = kind.backward(inputs.params, act, carry_at(t + before), x, traj.internals[t], through_cell)
        cell_grads = jax.tree_util.tree_map(np.add, cell_grads, step_grads)  # tied weights: sum over time
        d_inputs[:, t] = np.where(valid[:, None], d_x, 0)  # a padded input reaches nothing
        delta = _select(valid, d_prev, delta)
    return cell_grads, d_inputs, _stack_time(state_grads), delta


def bptt(cell: Cell, params: ModelParams, xs, targets, *, loss: str = "mse", on: str = "last", lengths=None,
         initial_carry: Any = None) -> BPTTResult:
    """The loss of :func:`rnn_jax.model.loss` and its gradients, by hand-written BPTT.

    Args:
      cell: an ``elman`` (any activation), ``pascanu``, ``lstm`` or ``gru`` cell (else ``ValueError``).
      params: :class:`~rnn_jax.model.ModelParams` (the cell's parameters and the readout).
      xs: (B, T, I) batch-major inputs, or (T, I) for one sequence.
      targets: as :func:`rnn_jax.model.loss` takes them -- ``on="last"``: (B, O) floats
        for ``"mse"``, (B,) integer labels for ``"xent"``; ``on="every"``: (B, T, O) or
        (B, T). Without the batch axis for one sequence.
      loss: ``"mse"`` or ``"xent"``.
      on: ``"last"`` (each sequence's last valid step; length-0 sequences are masked out)
        or ``"every"`` (every valid step).
      lengths: (B,) integer valid lengths (a scalar for one sequence), or None (T each).
      initial_carry: the carry before step 0 (leaves (B, H) or (H,)); default zeros.

    Returns:
      a :class:`BPTTResult` ``(loss, grads, state_grads, initial_carry_grad)``; for one
      sequence the leaves of ``state_grads`` are (T, H) and of ``initial_carry_grad`` (H,).

    Example, the counting RNN of Roelants' tutorial (``s_k = s_{k-1} w_rec + x_k w_x``)::

        cell = rnn_jax.elman(1, "identity")
        result = bptt(cell, params, xs, counts)        # xs (20, 10, 1), counts (20, 1)
        result.grads.cell.w_hh                         # ∂ξ/∂w_rec, (1, 1)
        result.state_grads.hidden[:, :, 0]             # the tutorial's gradient over time
    """
    check_choice("loss", loss, _losses.LOSSES)
    check_choice("on", on, ON)
    if not isinstance(params, ModelParams):
        raise UserTypeError(f"params: expected rnn_jax.model.ModelParams(cell=..., readout=...), got {type(params).__name__}")
    inputs = _read_inputs(cell, params.cell, xs, lengths, initial_carry, "params.cell")
    dtype = inputs.params.w_ih.dtype
    check_readout_params(params.readout, "params.readout", cell.hidden_size, dtype)
    targets = _to_host("targets", targets[None] if inputs.unbatched and hasattr(targets, "ndim") else targets)
    traj = _forward(cell, inputs)
    value, readout_grads, d_outputs = _readout_and_loss(_to_host("params.readout", params.readout), traj, inputs.lengths,
                                                        targets, loss, on)
    cell_grads, _, state_grads, delta = _backward(cell, inputs, traj, d_outputs, False)
    if inputs.unbatched:
        state_grads, delta = jax.tree_util.tree_map(lambda leaf: leaf[0], (state_grads, delta))
    return _to_jax(BPTTResult(value, ModelParams(cell_grads, readout_grads), state_grads, delta), dtype)


# ---------------------------------------------------------------- from the outputs' cotangent (layers)


class SequenceGrads(NamedTuple):
    """What :func:`bptt_outputs` returns (JAX arrays in the parameters' dtype).

    params: ∂E/∂(cell params), the cell's params type; tied weights summed over the steps.
    inputs: (B, T, I) ∂E/∂xs, zero at padded steps: the output cotangent of the layer below.
    initial_carry: the carry type, leaves (B, H): ∂E/∂(initial carry).
    state_grads: the carry type, leaves (B, T, H): ``δ_t = ∂E/∂s_t`` for the carry after step t,
      as :attr:`BPTTResult.state_grads`; at a padded step zero, or with ``reverse`` (padded
      steps run first and keep the initial carry) the initial carry's.
    For one sequence (xs of rank 2) the batch axis is dropped again.
    """

    params: Any
    inputs: jax.Array
    initial_carry: Any
    state_grads: Any


def bptt_outputs(cell: Cell, cell_params: Any, xs, d_outputs, *, lengths=None, initial_carry: Any = None,
                 reverse: bool = False) -> SequenceGrads:
    """Hand-written BPTT from the cotangent of every step's output: one layer of a stack.

    For ``E`` any function of the outputs ``y_t`` of ``unroll(cell, cell_params, xs,
    lengths=, initial_carry=, reverse=)``, given ``d_outputs[:, t] = ∂E/∂y_t``::

        δ_t = ∂s_{next}/∂s_t · δ_{next}  +  ∂y_t/∂s_t · ∂E/∂y_t,
        ∂E/∂θ = Σ_t ∂s_t/∂θ · δ_t,      ∂E/∂x_t = ∂s_t/∂x_t · δ_t,

    where ``next`` is the step run after t (t+1, or t-1 with ``reverse``). ``inputs`` is
    the output cotangent of the layer below; a bidirectional layer's two directions take
    the ``[forward | backward]`` halves of its output cotangent and add their ``inputs``.

    Args:
      cell: an ``elman``, ``pascanu``, ``lstm`` or ``gru`` cell.
      cell_params: the cell's parameters (not :class:`~rnn_jax.model.ModelParams`).
      xs: (B, T, I) batch-major inputs, or (T, I) for one sequence.
      d_outputs: (B, T, H) ∂E/∂outputs (or (T, H)); padded steps are ignored (their output is 0).
      lengths: (B,) integer valid lengths (a scalar for one sequence), or None (T each).
      initial_carry: the carry before the first step run (leaves (B, H) or (H,)); default zeros.
      reverse: as :func:`rnn_jax.unroll.unroll`: each sequence is read from its last valid
        step back to step 0, outputs stay at their positions.

    Returns:
      a :class:`SequenceGrads` ``(params, inputs, initial_carry, state_grads)``.
    """
    inputs = _read_inputs(cell, cell_params, xs, lengths, initial_carry, "cell_params", reverse)
    dtype = inputs.params.w_ih.dtype
    check_floating("d_outputs", d_outputs)
    if d_outputs.dtype != dtype:
        raise UserTypeError(f"d_outputs: expected dtype {dtype} like the parameters, got {describe(d_outputs)}")
    traj = _forward(cell, inputs, reverse)
    d_outputs = _to_host("d_outputs", d_outputs)
    expected = traj.outputs.shape[1:] if inputs.unbatched else traj.outputs.shape
    if d_outputs.shape != expected:
        raise UserValueError(f"d_outputs: expected shape {expected} like the outputs (batch, time, hidden), got {d_outputs.shape}")
    grads = _backward(cell, inputs, traj, d_outputs[None] if inputs.unbatched else d_outputs, reverse)
    if inputs.unbatched:
        grads = (grads[0], *jax.tree_util.tree_map(lambda leaf: leaf[0], grads[1:]))
    cell_grads, d_inputs, state_grads, delta = grads
    return _to_jax(SequenceGrads(cell_grads, d_inputs, delta, state_grads), dtype)
