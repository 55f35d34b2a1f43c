"""Stacked and bidirectional recurrent layers built from the pure cells.

A layer is a ``NamedTuple`` of pure functions over cells (:class:`~rnn_jax.cells.Cell`)::

    layer = stacked([bidirectional(lstm(64), lstm(64)), bidirectional(lstm(64), lstm(64))])
    params = layer.init(jax.random.key(0), input_size=8)       # (BidirectionalParams, BidirectionalParams)
    final, ys = layer.apply(params, xs, lengths=lengths)       # xs: (batch, time, 8) -> ys: (batch, time, 128)

The contract, for :class:`Bidirectional` and :class:`Stacked` alike:

* ``init(key, input_size, dtype=jnp.float32) -> params``; keys are split deterministically:
  ``jax.random.split(key, num_layers)`` for a stack (layer 0 first), then ``split(key, 2)``
  (forward, backward) inside a bidirectional layer.
* ``apply(params, xs, *, lengths=None, initial_carries=None) -> (final_carries, outputs)``;
  ``xs`` is ``(batch, time, features)``, or ``(time, batch, features)`` for a layer
  built with ``time_major=True``, or one unbatched ``(time, features)`` sequence;
  ``outputs`` has the same layout with ``output_size`` features.
* ``initial_carry(batch_shape=(), dtype=jnp.float32) -> carries`` (zeros), the structure
  ``apply`` takes as ``initial_carries`` and returns as ``final_carries``.

Semantics are PyTorch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` with ``num_layers`` and
``bidirectional`` (in eval mode: no dropout between layers):

* :func:`bidirectional` runs the forward cell from step 0 and the backward cell from
  each sequence's last valid step back to step 0 (:func:`rnn_jax.unroll` with
  ``reverse=True``: packed-sequence semantics), and concatenates the outputs on the
  feature axis, ``[forward | backward]``.
* :func:`stacked` feeds layer k the outputs of layer k-1; ``lengths`` reaches every
  layer, so padded steps never leak into valid ones (their outputs are zero).
* A stacked bidirectional network is a :func:`stacked` of :func:`bidirectional` layers.

Parameters and carries are pytrees: a cell's own NamedTuples, :class:`BidirectionalParams`
/ :class:`BidirectionalState` for the two directions, and a tuple with one entry per layer
for a stack. :mod:`rnn_jax.interop` converts them to and from PyTorch and Flax.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp

from rnn_jax._checks import UserTypeError, UserValueError, check_float_dtype, check_key, check_positive_int, describe
from rnn_jax.cells import Cell
from rnn_jax.unroll import unroll


class BidirectionalParams(NamedTuple):
    """Parameters of a :class:`Bidirectional` layer: each direction's cell parameters."""

    forward: Any
    backward: Any


class BidirectionalState(NamedTuple):
    """Carry of a :class:`Bidirectional` layer: each direction's cell carry, leaves (..., H).

    ``backward`` is the carry after the backward cell has read step 0 (PyTorch's
    ``h_n[1]``), ``forward`` the one after the last valid step.
    """

    forward: Any
    backward: Any


class Bidirectional(NamedTuple):
    """Two cells reading a sequence in opposite directions (see :func:`bidirectional`).

    Attributes:
      forward, backward: the two :class:`~rnn_jax.cells.Cell` s.
      output_size: ``forward.hidden_size + backward.hidden_size``.
      time_major: layout of ``xs`` (see the module docstring).
      init, apply, initial_carry: the layer contract of the module docstring.
    """

    forward: Cell
    backward: Cell
    output_size: int
    time_major: bool
    init: Callable[..., Any]
    apply: Callable[..., Any]
    initial_carry: Callable[..., Any]


class Stacked(NamedTuple):
    """Layers run one on the outputs of the other (see :func:`stacked`).

    Attributes:
      layers: tuple of :class:`~rnn_jax.cells.Cell` or :class:`Bidirectional`, input layer first.
      output_size: the last layer's output size.
      time_major: layout of ``xs`` for the whole stack (the layers' own ``time_major`` is not used).
      init, apply, initial_carry: the layer contract of the module docstring.
    """

    layers: tuple
    output_size: int
    time_major: bool
    init: Callable[..., Any]
    apply: Callable[..., Any]
    initial_carry: Callable[..., Any]


Layer = Union[Cell, Bidirectional]


def output_size(layer: Union[Cell, Bidirectional, Stacked]) -> int:
    """Features of the outputs of a cell (its hidden size) or a layer."""
    return layer.hidden_size if isinstance(layer, Cell) else layer.output_size


def _check_init_args(what: str, key, input_size, dtype):
    check_key(f"{what}.init key", key)
    check_positive_int(f"{what}.init input_size", input_size)
    return check_float_dtype(f"{what}.init dtype", dtype)


def _with_context(context: str, fn: Callable[[], Any]):
    """Run ``fn``; prefix the message of a ValueError/TypeError with ``context`` (which layer, which direction)."""
    try:
        return fn()
    except (ValueError, TypeError) as err:
        raise type(err)(f"{context}: {err}") from err


# ---------------------------------------------------------------- bidirectional


def _bidirectional_apply(layer: Bidirectional, params, xs, lengths, initial_carries, time_major: bool):
    if not isinstance(params, BidirectionalParams):
        raise UserTypeError(f"bidirectional layer: expected BidirectionalParams(forward, backward), got {describe(params)}")
    if initial_carries is None:
        initial_carries = BidirectionalState(None, None)
    elif not isinstance(initial_carries, BidirectionalState):
        raise UserTypeError(
            f"bidirectional layer: expected initial_carries as BidirectionalState(forward, backward) or None, "
            f"got {describe(initial_carries)}"
        )
    fw_final, fw_out = _with_context(
        "bidirectional layer, forward direction",
        lambda: unroll(layer.forward, params.forward, xs, initial_carry=initial_carries.forward, lengths=lengths,
                       time_major=time_major),
    )
    bw_final, bw_out = _with_context(
        "bidirectional layer, backward direction",
        lambda: unroll(layer.backward, params.backward, xs, initial_carry=initial_carries.backward, lengths=lengths,
                       time_major=time_major, reverse=True),
    )
    return BidirectionalState(fw_final, bw_final), jnp.concatenate([fw_out, bw_out], axis=-1)


def bidirectional(forward: Cell, backward: Cell, *, time_major: bool = False) -> Bidirectional:
    """A bidirectional layer: ``forward`` reads steps 0..T-1, ``backward`` reads them back.

    With ``lengths``, the backward cell starts at each sequence's last valid step
    (``length - 1``), as PyTorch does on a packed sequence; its output at step t
    stays at position t. ``outputs[..., t, :] = [h_fw(t) | h_bw(t)]``, zero at padded steps.

    Args:
      forward, backward: cells (usually of the same kind and size, as PyTorch requires;
        different ones are allowed here).
      time_major: ``xs`` is ``(time, batch, features)`` (True) or ``(batch, time, features)``.

    Returns:
      A :class:`Bidirectional`; ``apply(params, xs, *, lengths=None, initial_carries=None)
      -> (BidirectionalState, outputs)`` with ``forward.hidden_size + backward.hidden_size`` features.
    """
    for name, cell in (("forward", forward), ("backward", backward)):
        if not isinstance(cell, Cell):
            raise UserTypeError(f"bidirectional: expected the {name} cell to be an rnn_jax Cell, got {describe(cell)}")
    if not isinstance(time_major, bool):
        raise UserTypeError(f"bidirectional: time_major must be a bool, got {time_major!r}")
    layer = None

    def init(key, input_size, dtype=jnp.float32):
        dtype = _check_init_args("bidirectional", key, input_size, dtype)
        k_fw, k_bw = jax.random.split(key)
        return BidirectionalParams(forward.init(k_fw, input_size, dtype), backward.init(k_bw, input_size, dtype))

    def apply(params, xs, *, lengths=None, initial_carries=None):
        return _bidirectional_apply(layer, params, xs, lengths, initial_carries, time_major)

    def initial_carry(batch_shape=(), dtype=jnp.float32):
        return BidirectionalState(forward.initial_carry(batch_shape, dtype), backward.initial_carry(batch_shape, dtype))

    layer = Bidirectional(forward, backward, forward.hidden_size + backward.hidden_size, time_major, init, apply,
                          initial_carry)
    return layer


# ---------------------------------------------------------------- stacked


def _apply_layer(layer: Layer, params, xs, lengths, initial_carry, time_major: bool):
    if isinstance(layer, Cell):
        return unroll(layer, params, xs, initial_carry=initial_carry, lengths=lengths, time_major=time_major)
    return _bidirectional_apply(layer, params, xs, lengths, initial_carry, time_major)


def stacked(layers: Sequence[Layer], *, time_major: bool = False) -> Stacked:
    """Layers stacked in depth: layer k reads the outputs of layer k-1 (PyTorch's ``num_layers``).

    Args:
      layers: a non-empty sequence of cells and/or :class:`Bidirectional` layers, input layer first.
        Layer k's input size is layer k-1's output size (``hidden_size``, or twice it if bidirectional).
      time_major: ``xs`` is ``(time, batch, features)`` (True) or ``(batch, time, features)``;
        applies to every layer.

    Returns:
      A :class:`Stacked`. ``params`` and carries are tuples with one entry per layer;
      ``apply(params, xs, *, lengths=None, initial_carries=None) -> (final_carries, outputs)``,
      where ``initial_carries`` is None or a tuple whose entries are a layer's carry or None (zeros),
      and ``outputs`` are the last layer's.
    """
    if isinstance(layers, (Cell, Bidirectional, Stacked)) or not isinstance(layers, (list, tuple)):
        raise UserTypeError(f"stacked: expected a list of cells and bidirectional layers, got {describe(layers)}")
    if not layers:
        raise UserValueError("stacked: expected at least one layer, got an empty list")
    for k, layer in enumerate(layers):
        if not isinstance(layer, (Cell, Bidirectional)):
            raise UserTypeError(
                f"stacked: layer {k} must be an rnn_jax Cell or a Bidirectional layer, got {describe(layer)}"
            )
    if not isinstance(time_major, bool):
        raise UserTypeError(f"stacked: time_major must be a bool, got {time_major!r}")
    layers = tuple(layers)
    n = len(layers)
    sizes = [output_size(layer) for layer in layers]

    def init(key, input_size, dtype=jnp.float32):
        dtype = _check_init_args("stacked", key, input_size, dtype)
        keys = jax.random.split(key, n)
        in_sizes = [input_size] + sizes[:-1]
        return tuple(layer.init(k, size, dtype) for layer, k, size in zip(layers, keys, in_sizes))

    def apply(params, xs, *, lengths=None, initial_carries=None):
        # a NamedTuple (one cell's or one bidirectional layer's parameters) is not a per-layer tuple
        if not isinstance(params, (tuple, list)) or hasattr(params, "_fields"):
            raise UserTypeError(f"stacked: expected params as a tuple with one entry per layer ({n}), got {describe(params)}")
        if len(params) != n:
            raise UserValueError(f"stacked: expected parameters for {n} layers, got {len(params)}")
        if initial_carries is None:
            initial_carries = (None,) * n
        elif not isinstance(initial_carries, (tuple, list)) or hasattr(initial_carries, "_fields") or len(initial_carries) != n:
            raise UserValueError(
                f"stacked: expected initial_carries as None or a tuple of {n} per-layer carries (or None), "
                f"got {describe(initial_carries)}"
            )
        finals = []
        for k, (layer, layer_params, carry) in enumerate(zip(layers, params, initial_carries)):
            final, xs = _with_context(
                f"stacked layer {k} of {n}",
                lambda: _apply_layer(layer, layer_params, xs, lengths, carry, time_major),
            )
            finals.append(final)
        return tuple(finals), xs

    def initial_carry(batch_shape=(), dtype=jnp.float32):
        return tuple(layer.initial_carry(batch_shape, dtype) for layer in layers)

    return Stacked(layers, sizes[-1], time_major, init, apply, initial_carry)
