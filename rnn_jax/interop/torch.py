"""Convert weights and states between rnn_jax and PyTorch's recurrent modules.

PyTorch is imported lazily, inside the functions that create tensors or inspect
modules; :func:`from_torch_state_dict` also accepts NumPy or JAX arrays (and is
traceable with JAX arrays, so ``jax.grad`` through it maps gradients back to
PyTorch's parameters).

Correspondence (PyTorch's names on the left; ``G`` gate blocks: 1 RNN, 4 LSTM ``i|f|g|o``,
3 GRU ``r|z|n``, in the same order on both sides)::

    weight_ih_l{k}[_reverse]  (G*H, in)   <->  w_ih = weight_ih.T   (in, G*H)
    weight_hh_l{k}[_reverse]  (G*H, H)    <->  w_hh = weight_hh.T   (H, G*H)
    bias_ih_l{k}, bias_hh_l{k}  (G*H,)    <->  b = bias_ih + bias_hh           (RNN, LSTM)
                                               b = [bias_ih + bias_hh]_{r,z} ++ bias_ih_n,
                                               b_hn = bias_hh_n                 (GRU)

Back to PyTorch: ``bias_ih = b`` and ``bias_hh = 0`` (GRU: ``[0, 0, b_hn]``), so
rnn_jax -> PyTorch -> rnn_jax is bit-exact; PyTorch -> rnn_jax -> PyTorch changes how
the bias is split between ``bias_ih`` and ``bias_hh``, not what the module computes
(up to the rounding of one addition). A ``bias=False`` module converts to zero
biases; converting back to ``bias=False`` requires every bias to be exactly zero.

Structures: ``nn.RNN``/``nn.LSTM``/``nn.GRU`` become a :class:`rnn_jax.layers.Stacked`
with one entry per layer (a :class:`rnn_jax.layers.Bidirectional` per layer when
``bidirectional=True``), even for ``num_layers=1``; ``nn.RNNCell``/``nn.LSTMCell``/
``nn.GRUCell`` become a plain :class:`~rnn_jax.cells.Cell`. ``batch_first`` maps to the
layer's ``time_major = not batch_first``. Dropout between layers (training only) is not
represented: the conversion matches the module in ``eval()`` mode. ``nn.LSTM`` with
``proj_size > 0`` has no rnn_jax counterpart and is refused.

Example::

    module = torch.nn.LSTM(8, 32, num_layers=2, bidirectional=True, batch_first=True)
    layer, params = rnn_jax.interop.torch.from_torch(module)
    final, ys = layer.apply(params, xs, lengths=lengths)        # xs: (batch, time, 8)
    module.load_state_dict(rnn_jax.interop.torch.to_torch_state_dict(layer, params))
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import cells as _cells
from rnn_jax._checks import UserTypeError, UserValueError, check_choice, check_float_dtype, check_floating, describe
from rnn_jax.cells import Cell, ElmanParams, GRUParams, LSTMParams, LSTMState, RNNState
from rnn_jax.layers import Bidirectional, BidirectionalParams, BidirectionalState, Stacked, bidirectional, stacked

# PyTorch's module name -> (rnn_jax cell kind, number of gate blocks)
KINDS = {"rnn": ("elman", 1), "lstm": ("lstm", 4), "gru": ("gru", 3)}
NONLINEARITIES = ("tanh", "relu")

_LAYERED_KEY = re.compile(r"^(weight|bias)_(ih|hh)_l(\d+)(_reverse)?$")
_CELL_KEY = re.compile(r"^(weight|bias)_(ih|hh)$")

Model = Union[Cell, Bidirectional, Stacked]


# ---------------------------------------------------------------- arrays


def _is_torch_tensor(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _to_jax(name: str, value, dtype):
    """A PyTorch tensor / NumPy array / JAX array as a JAX array (JAX arrays and tracers pass through)."""
    if isinstance(value, jax.Array):
        return value if dtype is None else value.astype(dtype)
    if _is_torch_tensor(value):
        import torch

        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # NumPy has no bfloat16; the widening is exact
            array = value.to(torch.float32).numpy()
            dtype = jnp.bfloat16 if dtype is None else dtype
        else:
            array = value.numpy()
    elif isinstance(value, np.ndarray):
        array = value
    else:
        raise UserTypeError(f"state_dict[{name!r}]: expected a torch.Tensor, NumPy or JAX array, got {describe(value)}")
    if not np.issubdtype(array.dtype, np.floating) and array.dtype != jnp.bfloat16:
        raise UserTypeError(f"state_dict[{name!r}]: expected floating-point weights, got dtype {array.dtype}")
    target = jnp.dtype(array.dtype if dtype is None else dtype)
    if target == jnp.float64 and not jax.config.jax_enable_x64:
        raise UserTypeError(
            f"state_dict[{name!r}] is float64 but JAX's 64-bit mode is off: enable it with "
            f"jax.config.update('jax_enable_x64', True), or pass dtype=jnp.float32 to convert"
        )
    return jnp.asarray(array.astype(target) if array.dtype != target else array)


def _to_torch(array):
    """A concrete JAX/NumPy array as a new (writable, contiguous) torch tensor of the same dtype."""
    import torch

    if isinstance(array, jax.core.Tracer):
        raise UserTypeError("cannot convert a traced value to a torch tensor; call this outside jax.jit / jax.grad")
    a = np.asarray(array)
    if a.dtype == jnp.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(a.astype(np.float32))).to(torch.bfloat16)
    return torch.from_numpy(np.array(a, copy=True, order="C"))


# ---------------------------------------------------------------- PyTorch -> rnn_jax


def _make_cell(kind: str, hidden_size: int, nonlinearity: str) -> Cell:
    if kind == "elman":
        return _cells.elman(hidden_size, nonlinearity)
    return _cells.lstm(hidden_size) if kind == "lstm" else _cells.gru(hidden_size)


def _convert_one(kind: str, gates: int, arrays: Mapping[str, Any], suffix: str, has_bias: bool,
                 hidden_size: int, input_size: Optional[int]):
    """One direction of one layer: PyTorch arrays (already JAX) -> rnn_jax parameters."""
    w_ih, w_hh = arrays["weight_ih" + suffix], arrays["weight_hh" + suffix]
    gh = gates * hidden_size
    if tuple(w_hh.shape) != (gh, hidden_size):
        raise UserValueError(
            f"weight_hh{suffix}: expected shape ({gh}, {hidden_size}) ({gates} gate block(s) of hidden size "
            f"{hidden_size}), got {tuple(w_hh.shape)}; mismatched hidden sizes, or not a {kind} state dict?"
        )
    if w_ih.ndim != 2 or w_ih.shape[0] != gh or (input_size is not None and w_ih.shape[1] != input_size):
        want = f"({gh}, {input_size if input_size is not None else 'input_size'})"
        raise UserValueError(f"weight_ih{suffix}: expected shape {want}, got {tuple(w_ih.shape)}")
    dtype = w_ih.dtype
    for name in ("weight_hh", "bias_ih", "bias_hh") if has_bias else ("weight_hh",):
        leaf = arrays[name + suffix]
        if name.startswith("bias") and tuple(leaf.shape) != (gh,):
            raise UserValueError(f"{name}{suffix}: expected shape ({gh},), got {tuple(leaf.shape)}")
        if leaf.dtype != dtype:
            raise UserTypeError(f"{name}{suffix}: expected dtype {dtype} like weight_ih{suffix}, got {leaf.dtype}")
    if has_bias:
        b_ih, b_hh = arrays["bias_ih" + suffix], arrays["bias_hh" + suffix]
    else:
        b_ih = b_hh = jnp.zeros((gh,), dtype)
    if kind == "gru":
        h2 = 2 * hidden_size
        b = jnp.concatenate([b_ih[:h2] + b_hh[:h2], b_ih[h2:]])
        return GRUParams(w_ih.T, w_hh.T, b, b_hh[h2:])
    params_type = LSTMParams if kind == "lstm" else ElmanParams
    return params_type(w_ih.T, w_hh.T, b_ih + b_hh)


def from_torch_state_dict(
    state_dict: Mapping[str, Any],
    kind: str,
    *,
    nonlinearity: str = "tanh",
    batch_first: bool = False,
    dtype=None,
):
    """Build rnn_jax parameters (and the matching cell or layer) from a PyTorch state dict.

    Args:
      state_dict: ``module.state_dict()`` of an ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (keys
        ``weight_ih_l{k}[_reverse]`` ...) or of an ``nn.RNNCell``/``nn.LSTMCell``/``nn.GRUCell``
        (keys ``weight_ih`` ...). Values: torch tensors, NumPy or JAX arrays. The number of
        layers, the directions and whether there are biases are read from the keys.
      kind: ``"rnn"``, ``"lstm"`` or ``"gru"`` (case-insensitive; ``"elman"`` = ``"rnn"``).
      nonlinearity: ``"tanh"`` or ``"relu"``, for ``kind="rnn"``.
      batch_first: the module's ``batch_first``; the layer gets ``time_major = not batch_first``.
      dtype: cast the weights to this dtype (default: keep theirs).

    Returns:
      ``(cell, params)`` for a single-step cell's state dict, else ``(layer, params)`` with
      ``layer`` a :class:`~rnn_jax.layers.Stacked` (of :class:`~rnn_jax.layers.Bidirectional`
      layers if the keys have ``_reverse``) and ``params`` a tuple with one entry per layer.
    """
    kind_key = "rnn" if isinstance(kind, str) and kind.lower() == "elman" else kind.lower() if isinstance(kind, str) else kind
    cell_kind, gates = KINDS[check_choice("PyTorch module kind", kind_key, KINDS)]
    check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    if not isinstance(batch_first, bool):
        raise UserTypeError(f"batch_first must be a bool, got {batch_first!r}")
    if not isinstance(state_dict, Mapping):
        raise UserTypeError(f"state_dict: expected a mapping of names to tensors, got {describe(state_dict)}")
    keys = list(state_dict)
    if not keys:
        raise UserValueError("state_dict is empty")
    if dtype is not None:
        dtype = check_float_dtype("dtype", dtype)
    arrays = {name: _to_jax(name, value, dtype) for name, value in state_dict.items()}

    if all(_CELL_KEY.match(k) for k in keys):
        missing = {"weight_ih", "weight_hh"} - set(keys)
        has_bias = "bias_ih" in keys
        if missing or has_bias != ("bias_hh" in keys):
            raise UserValueError(f"state_dict of a PyTorch {kind_key.upper()} cell: incomplete keys {sorted(keys)}")
        hidden_size = int(arrays["weight_hh"].shape[-1])
        params = _convert_one(cell_kind, gates, arrays, "", has_bias, hidden_size, None)
        return _make_cell(cell_kind, hidden_size, nonlinearity), params

    layers: dict = {}
    for name in keys:
        match = _LAYERED_KEY.match(name)
        if match is None:
            hint = " (nn.LSTM with proj_size > 0 is not supported)" if name.startswith("weight_hr") else ""
            raise UserValueError(
                f"state_dict: unexpected key {name!r}{hint}; expected PyTorch RNN keys like "
                f"'weight_ih_l0', 'bias_hh_l1_reverse' or single-cell keys 'weight_ih', 'bias_hh'"
            )
        layers.setdefault(int(match.group(3)), set()).add(name)
    num_layers = max(layers) + 1
    if sorted(layers) != list(range(num_layers)):
        raise UserValueError(f"state_dict: layers {sorted(layers)} are not numbered 0..{num_layers - 1}")
    is_bidirectional = any(k.endswith("_reverse") for k in keys)
    has_bias = any(k.startswith("bias") for k in keys)
    suffixes = ["", "_reverse"] if is_bidirectional else [""]
    for k in range(num_layers):
        want = {f"{w}_{m}_l{k}{s}" for w in (("weight", "bias") if has_bias else ("weight",)) for m in ("ih", "hh")
                for s in suffixes}
        if layers[k] != want:
            raise UserValueError(
                f"state_dict: layer {k} has keys {sorted(layers[k])}; expected {sorted(want)} "
                f"(every layer needs the same directions and biases)"
            )
    hidden_size = int(arrays["weight_hh_l0"].shape[-1])
    directions = len(suffixes)
    out_params, out_layers = [], []
    for k in range(num_layers):
        input_size = None if k == 0 else directions * hidden_size
        per_direction = [
            _convert_one(cell_kind, gates, arrays, f"_l{k}{s}", has_bias, hidden_size, input_size) for s in suffixes
        ]
        if is_bidirectional:
            out_params.append(BidirectionalParams(*per_direction))
            out_layers.append(
                bidirectional(_make_cell(cell_kind, hidden_size, nonlinearity), _make_cell(cell_kind, hidden_size, nonlinearity))
            )
        else:
            out_params.append(per_direction[0])
            out_layers.append(_make_cell(cell_kind, hidden_size, nonlinearity))
    return stacked(out_layers, time_major=not batch_first), tuple(out_params)


def _module_config(module) -> dict:
    """Kind, nonlinearity and layout of a supported PyTorch module; raise for anything else."""
    import torch.nn as nn

    if isinstance(module, nn.RNNBase):
        mode = getattr(module, "mode", None)
        modes = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"), "LSTM": ("lstm", "tanh"), "GRU": ("gru", "tanh")}
        if mode not in modes:
            raise UserValueError(f"from_torch: unsupported {type(module).__name__} mode {mode!r}; expected one of {list(modes)}")
        if getattr(module, "proj_size", 0):
            raise UserValueError(
                f"from_torch: nn.LSTM with proj_size={module.proj_size} (a projected hidden state) has no rnn_jax "
                f"counterpart; only proj_size=0 is supported"
            )
        kind, nonlinearity = modes[mode]
        return dict(kind=kind, nonlinearity=nonlinearity, batch_first=bool(module.batch_first))
    if isinstance(module, nn.RNNCell):
        if module.nonlinearity not in NONLINEARITIES:
            raise UserValueError(f"from_torch: unsupported nonlinearity {module.nonlinearity!r}; expected tanh or relu")
        return dict(kind="rnn", nonlinearity=module.nonlinearity, batch_first=False)
    if isinstance(module, nn.LSTMCell):
        return dict(kind="lstm", nonlinearity="tanh", batch_first=False)
    if isinstance(module, nn.GRUCell):
        return dict(kind="gru", nonlinearity="tanh", batch_first=False)
    raise UserTypeError(
        f"from_torch: unsupported module {type(module).__name__}; expected torch.nn.RNN, LSTM, GRU, RNNCell, "
        f"LSTMCell or GRUCell"
    )


def from_torch(module, *, dtype=None):
    """Convert a PyTorch recurrent module to rnn_jax: ``(layer_or_cell, params)``.

    Args:
      module: ``torch.nn.RNN`` (tanh or relu), ``LSTM`` (``proj_size=0``), ``GRU`` (a
        :class:`~rnn_jax.layers.Stacked` comes back), or ``RNNCell``/``LSTMCell``/``GRUCell``
        (a :class:`~rnn_jax.cells.Cell` comes back).
      dtype: cast the weights (default: the module's dtype; float64 needs JAX's x64 mode).

    Returns:
      See :func:`from_torch_state_dict`. ``layer.apply(params, xs, lengths=...)`` then
      computes what ``module`` computes in eval mode on the same layout of ``xs``.
    """
    try:
        import torch  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("from_torch needs PyTorch: pip install torch (or rnn_jax[peers])") from err
    config = _module_config(module)
    model, params = from_torch_state_dict(module.state_dict(), config["kind"], nonlinearity=config["nonlinearity"],
                                          batch_first=config["batch_first"], dtype=dtype)
    hidden = _carry_cells(model)[0].hidden_size
    if hidden != module.hidden_size:
        raise UserValueError(f"from_torch: the weights have hidden size {hidden} but the module says {module.hidden_size}")
    return model, params


# ---------------------------------------------------------------- rnn_jax -> PyTorch


def _cells_of(model: Model, where: str = "to PyTorch") -> list:
    """The cells of ``model`` per layer: [[cell] or [forward, backward], ...]; checks PyTorch can hold it."""
    if isinstance(model, Cell):
        return [[model]]
    if isinstance(model, Bidirectional):
        return [[model.forward, model.backward]]
    if isinstance(model, Stacked):
        per_layer = [[layer] if isinstance(layer, Cell) else [layer.forward, layer.backward] for layer in model.layers]
        if len({len(cells) for cells in per_layer}) != 1:
            raise UserValueError(
                f"{where}: the stack mixes unidirectional and bidirectional layers; a PyTorch module has one "
                "`bidirectional` setting for all its layers"
            )
        return per_layer
    raise UserTypeError(f"{where}: expected an rnn_jax Cell, Bidirectional or Stacked layer, got {describe(model)}")


def _torch_kind(cells: list) -> tuple:
    """(PyTorch kind, nonlinearity, hidden size) shared by every cell, or a clear error."""
    first = cells[0]
    for cell in cells:
        if cell.kind == "pascanu":
            raise UserValueError(
                "to PyTorch: the pascanu cell (the paper's pre-activation state x_t = W σ(x_{t-1}) + ...) has no "
                "PyTorch counterpart; use rnn_jax.elman for an nn.RNN"
            )
        if cell.kind not in _TORCH_KINDS:
            raise UserValueError(f"to PyTorch: the {cell.kind} cell has no PyTorch counterpart; expected an elman "
                                 f"(nn.RNN), lstm (nn.LSTM) or gru (nn.GRU) cell")
        if cell.kind == "elman" and cell.activation not in NONLINEARITIES:
            raise UserValueError(
                f"to PyTorch: unsupported nonlinearity {cell.activation!r} for nn.RNN; PyTorch has only 'tanh' and 'relu'"
            )
        if (cell.kind, cell.activation) != (first.kind, first.activation):
            raise UserValueError(
                f"to PyTorch: every cell must be of one kind, got {first.kind}/{first.activation} and "
                f"{cell.kind}/{cell.activation}"
            )
        if cell.hidden_size != first.hidden_size:
            raise UserValueError(
                f"to PyTorch: mismatched hidden sizes {first.hidden_size} and {cell.hidden_size}; a PyTorch module "
                f"has one hidden_size for every layer and direction"
            )
    return _TORCH_KINDS[first.kind], first.activation, first.hidden_size


_TORCH_KINDS = {"elman": "rnn", "lstm": "lstm", "gru": "gru"}  # the cells with a PyTorch counterpart


def _params_per_layer(model: Model, params) -> list:
    if isinstance(model, Cell):
        return [[params]]
    if isinstance(model, Bidirectional):
        if not isinstance(params, BidirectionalParams):
            raise UserTypeError(f"to PyTorch: expected BidirectionalParams for a Bidirectional layer, got {describe(params)}")
        return [[params.forward, params.backward]]
    if not isinstance(params, (tuple, list)) or hasattr(params, "_fields") or len(params) != len(model.layers):
        raise UserValueError(
            f"to PyTorch: expected a tuple of {len(model.layers)} per-layer parameters for the stack, got {describe(params)}"
        )
    out = []
    for layer, p in zip(model.layers, params):
        out.extend(_params_per_layer(layer, p))
    return out


def _validated(model: Model, params):
    cells = _cells_of(model)
    kind, activation, hidden_size = _torch_kind([c for layer in cells for c in layer])
    per_layer = _params_per_layer(model, params)
    input_size = None
    for k, (layer_cells, layer_params) in enumerate(zip(cells, per_layer)):
        for cell, p in zip(layer_cells, layer_params):
            size = _cells.check_params(cell, p)
            if k > 0 and size != len(layer_cells) * hidden_size:
                raise UserValueError(f"to PyTorch: layer {k} has input size {size}, expected {len(layer_cells) * hidden_size}")
            input_size = size if k == 0 else input_size
    return cells, per_layer, kind, activation, hidden_size, input_size


def _check_zero_biases(where: str, p) -> None:
    for name in ("b", "b_hn"):
        if name in p._fields:
            leaf = getattr(p, name)
            if isinstance(leaf, jax.core.Tracer):
                raise UserTypeError("to PyTorch with bias=False: cannot check traced biases; call this outside jax.jit")
            peak = float(np.max(np.abs(np.asarray(leaf, dtype=np.float64)))) if leaf.size else 0.0
            if peak != 0.0:
                raise UserValueError(
                    f"to PyTorch with bias=False: {where} has a non-zero bias {name} (max |{name}| = {peak:g}); "
                    f"a bias=False module cannot hold it. Convert with bias=True"
                )


def _torch_arrays(p, hidden_size: int) -> dict:
    """rnn_jax parameters of one direction -> PyTorch's (weight_ih, weight_hh, bias_ih, bias_hh) as arrays."""
    b_hh = jnp.zeros_like(p.b)
    if isinstance(p, GRUParams):
        b_hh = b_hh.at[2 * hidden_size:].set(p.b_hn)
    return {"weight_ih": p.w_ih.T, "weight_hh": p.w_hh.T, "bias_ih": p.b, "bias_hh": b_hh}


def to_torch_state_dict(model: Model, params, *, bias: bool = True) -> "OrderedDict[str, Any]":
    """PyTorch state dict of ``params``: load it with ``module.load_state_dict(...)``.

    Args:
      model: a :class:`~rnn_jax.cells.Cell` (keys of ``nn.RNNCell``/``LSTMCell``/``GRUCell``),
        a :class:`~rnn_jax.layers.Bidirectional` (keys of a one-layer bidirectional module)
        or a :class:`~rnn_jax.layers.Stacked` (keys ``*_l{k}[_reverse]``). Elman cells must
        use tanh or relu; all cells must share kind and hidden size; pascanu cells are refused.
      params: ``model``'s parameters.
      bias: produce ``bias_ih``/``bias_hh`` (True) or the keys of a ``bias=False`` module, which
        requires every bias in ``params`` to be exactly zero.

    Returns:
      An ``OrderedDict`` of new torch tensors in ``params``' dtype: ``bias_ih = b``,
      ``bias_hh = 0`` (GRU: ``[0, 0, b_hn]``).
    """
    if not isinstance(bias, bool):
        raise UserTypeError(f"bias must be a bool, got {bias!r}")
    cells, per_layer, _, _, hidden_size, _ = _validated(model, params)
    single_cell = isinstance(model, Cell)
    state = OrderedDict()
    for k, layer_params in enumerate(per_layer):
        for d, p in enumerate(layer_params):
            suffix = "" if single_cell else f"_l{k}" + ("_reverse" if d == 1 else "")
            if not bias:
                _check_zero_biases(f"layer {k}" + (" (reverse)" if d == 1 else ""), p)
            arrays = _torch_arrays(p, hidden_size)
            for name in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ()):
                state[name + suffix] = _to_torch(arrays[name])
    return state


def to_torch(model: Model, params, *, bias: bool = True, batch_first: Optional[bool] = None):
    """A new PyTorch module holding ``params`` (see :func:`to_torch_state_dict`).

    A :class:`~rnn_jax.cells.Cell` gives an ``nn.RNNCell``/``nn.LSTMCell``/``nn.GRUCell``;
    a Bidirectional or Stacked layer gives an ``nn.RNN``/``nn.LSTM``/``nn.GRU`` with
    ``num_layers`` and ``bidirectional`` to match, and ``batch_first`` (default: ``not
    model.time_major``). The module has ``params``' dtype.
    """
    import torch.nn as nn

    cells, per_layer, kind, activation, hidden_size, input_size = _validated(model, params)
    state = to_torch_state_dict(model, params, bias=bias)
    dtype = next(iter(state.values())).dtype
    if isinstance(model, Cell):
        if batch_first is not None:
            raise UserValueError("to_torch: batch_first does not apply to a single cell")
        if kind == "rnn":
            module = nn.RNNCell(input_size, hidden_size, bias=bias, nonlinearity=activation)
        else:
            module = (nn.LSTMCell if kind == "lstm" else nn.GRUCell)(input_size, hidden_size, bias=bias)
    else:
        batch_first = (not model.time_major) if batch_first is None else batch_first
        common = dict(num_layers=len(per_layer), bias=bias, batch_first=batch_first, bidirectional=len(cells[0]) == 2)
        if kind == "rnn":
            module = nn.RNN(input_size, hidden_size, nonlinearity=activation, **common)
        else:
            module = (nn.LSTM if kind == "lstm" else nn.GRU)(input_size, hidden_size, **common)
    module = module.to(dtype)
    module.load_state_dict(state, strict=True)
    return module


# ---------------------------------------------------------------- states


def _carry_cells(model: Model, where: str = "to PyTorch") -> list:
    """The cells in PyTorch's ``h_n`` order: layer-major, forward before reverse."""
    return [cell for layer in _cells_of(model, where) for cell in layer]


def carries_from_torch(model: Model, h, c=None):
    """PyTorch's states -> the carries ``model.apply`` returns / takes as ``initial_carries``.

    Args:
      model: a Cell (``h``, ``c``: (batch, H) or (H,)), or a Bidirectional/Stacked layer
        (``h``, ``c``: (num_layers * num_directions, batch, H), PyTorch's ``h_n``/``c_n``).
      h, c: torch tensors or arrays; ``c`` for LSTMs only.

    Returns:
      A cell carry, a :class:`~rnn_jax.layers.BidirectionalState`, or a tuple per layer.
    """
    cells = _carry_cells(model, "carries_from_torch")
    is_lstm = cells[0].carry_type is LSTMState
    if is_lstm != (c is not None):
        raise UserValueError("carries_from_torch: pass c (the cell state) for an LSTM, and only for an LSTM")
    h = _to_jax("h", h, None)
    c = _to_jax("c", c, None) if is_lstm else None
    hidden = cells[0].hidden_size
    for name, leaf in (("h", h), ("c", c)):
        if leaf is not None and (leaf.ndim < 1 or leaf.shape[-1] != hidden):
            raise UserValueError(f"carries_from_torch: {name} has shape {tuple(leaf.shape)}; expected (..., {hidden}) (hidden size {hidden})")

    def carry(i):
        if isinstance(model, Cell):
            return LSTMState(h, c) if is_lstm else RNNState(h)
        return LSTMState(h[i], c[i]) if is_lstm else RNNState(h[i])

    if not isinstance(model, Cell):
        for name, leaf in (("h", h), ("c", c)):
            if leaf is not None and (leaf.ndim not in (2, 3) or leaf.shape[0] != len(cells)):
                raise UserValueError(
                    f"carries_from_torch: {name} has shape {tuple(leaf.shape)}; expected "
                    f"({len(cells)}, batch, H) = (num_layers * num_directions, batch, H)"
                )
    if isinstance(model, Cell):
        return carry(0)
    if isinstance(model, Bidirectional):
        return BidirectionalState(carry(0), carry(1))
    out, i = [], 0
    for layer in model.layers:
        if isinstance(layer, Cell):
            out.append(carry(i))
            i += 1
        else:
            out.append(BidirectionalState(carry(i), carry(i + 1)))
            i += 2
    return tuple(out)


def carries_to_torch(model: Model, carries):
    """The inverse of :func:`carries_from_torch`: ``h`` (or ``(h, c)`` for an LSTM) as torch tensors,
    stacked over layers and directions as PyTorch's modules take ``hx`` and return ``h_n``."""
    cells = _carry_cells(model, "carries_to_torch")

    def directions(carry):
        if not isinstance(carry, BidirectionalState):
            raise UserTypeError(f"carries_to_torch: expected a BidirectionalState for a bidirectional layer, got {describe(carry)}")
        return [carry.forward, carry.backward]

    if isinstance(model, Cell):
        flat = [carries]
    elif isinstance(model, Bidirectional):
        flat = directions(carries)
    else:
        if not isinstance(carries, (tuple, list)) or hasattr(carries, "_fields") or len(carries) != len(model.layers):
            raise UserValueError(f"carries_to_torch: expected a tuple of {len(model.layers)} per-layer carries, got {describe(carries)}")
        flat = []
        for layer, carry in zip(model.layers, carries):
            flat.extend([carry] if isinstance(layer, Cell) else directions(carry))
    for cell, carry in zip(cells, flat):
        if not isinstance(carry, cell.carry_type):
            raise UserTypeError(f"carries_to_torch: expected {cell.carry_type.__name__} carries, got {describe(carry)}")
        for name, leaf in zip(carry._fields, carry):
            check_floating(f"carries_to_torch carry.{name}", leaf)
            if leaf.shape[-1:] != (cell.hidden_size,) or leaf.shape != flat[0].hidden.shape:
                raise UserValueError(
                    f"carries_to_torch: carry.{name} has shape {tuple(leaf.shape)}; expected {tuple(flat[0].hidden.shape[:-1]) + (cell.hidden_size,)} "
                    f"(the same batch for every layer and direction, hidden size {cell.hidden_size})"
                )
    if isinstance(model, Cell):
        h, c = flat[0].hidden, getattr(flat[0], "cell", None)
    else:
        h = jnp.stack([carry.hidden for carry in flat])
        c = jnp.stack([carry.cell for carry in flat]) if cells[0].carry_type is LSTMState else None
    return (_to_torch(h), _to_torch(c)) if c is not None else _to_torch(h)
