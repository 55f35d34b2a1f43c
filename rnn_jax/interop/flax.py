"""Convert weights and carries between rnn_jax and Flax linen's recurrent cells.

Flax is imported lazily, only by the functions that inspect or build Flax modules;
:func:`params_from_flax` and :func:`params_to_flax` are plain pytree functions
(traceable: ``jax.grad`` through them maps gradients between the two layouts).

Parameter names, as in flax 0.12's ``flax/linen/recurrent.py`` (kernels ``(in, out)``,
one Dense per gate; rnn_jax concatenates the gates along the output axis)::

    SimpleCell  h' = act(x W_i + b_i + h W_h)
      {'i': {'kernel', 'bias'}, 'h': {'kernel'}}
      <-> ElmanParams(w_ih = i.kernel, w_hh = h.kernel, b = i.bias)
    LSTMCell / OptimizedLSTMCell (same parameters; gates i, f, g, o; biases on the h side)
      {'ii','if','ig','io': {'kernel'}, 'hi','hf','hg','ho': {'kernel', 'bias'}}
      <-> LSTMParams(w_ih = [ii|if|ig|io].kernel, w_hh = [hi|hf|hg|ho].kernel, b = [hi|hf|hg|ho].bias)
    GRUCell  n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))   (PyTorch's equations)
      {'ir','iz','in': {'kernel', 'bias'}, 'hr','hz': {'kernel'}, 'hn': {'kernel', 'bias'}}
      <-> GRUParams(w_ih = [ir|iz|in].kernel, w_hh = [hr|hz|hn].kernel, b = [ir|iz|in].bias, b_hn = hn.bias)

Every Flax parameter maps to exactly one rnn_jax entry, so both directions are
bit-exact. Carries: Flax's LSTM carry is ``(c, h)``, rnn_jax's ``LSTMState(hidden=h,
cell=c)``; the other cells carry ``h`` alone (:func:`carry_from_flax`, :func:`carry_to_flax`).

Example::

    module = flax.linen.LSTMCell(features=32)
    cell, params = rnn_jax.interop.flax.from_flax(module, variables)
    module, variables = rnn_jax.interop.flax.to_flax(cell, params)
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from rnn_jax import cells as _cells
from rnn_jax.activations import ACTIVATIONS
from rnn_jax._checks import UserTypeError, UserValueError, check_floating, describe
from rnn_jax.cells import Cell, ElmanParams, GRUParams, LSTMParams, LSTMState, RNNState, check_cell
from rnn_jax.layers import Bidirectional, BidirectionalParams, bidirectional

LSTM_GATES = ("i", "f", "g", "o")
GRU_GATES = ("r", "z", "n")
# the exact parameter tree of each Flax cell: module name -> parameter names
_LAYOUTS = {
    "simple": {"i": {"kernel", "bias"}, "h": {"kernel"}},
    "lstm": {**{"i" + g: {"kernel"} for g in LSTM_GATES}, **{"h" + g: {"kernel", "bias"} for g in LSTM_GATES}},
    "gru": {"ir": {"kernel", "bias"}, "iz": {"kernel", "bias"}, "in": {"kernel", "bias"},
            "hr": {"kernel"}, "hz": {"kernel"}, "hn": {"kernel", "bias"}},
}


def _flax_kind(tree: Mapping) -> str:
    keys = set(tree)
    for kind, layout in _LAYOUTS.items():
        if keys == set(layout):
            return kind
    raise UserValueError(
        f"Flax parameters with modules {sorted(keys)} are not those of a SimpleCell {sorted(_LAYOUTS['simple'])}, "
        f"an LSTMCell/OptimizedLSTMCell {sorted(_LAYOUTS['lstm'])} or a GRUCell {sorted(_LAYOUTS['gru'])}"
    )


def _unwrap(variables: Any, *path: str) -> Mapping:
    """Accept ``{'params': {...}}`` or the parameter dict itself, then follow ``path``."""
    if not isinstance(variables, Mapping):
        raise UserTypeError(f"expected Flax variables (a dict like {{'params': ...}}), got {describe(variables)}")
    tree = variables["params"] if "params" in variables else variables
    for name in path:
        if not isinstance(tree, Mapping) or name not in tree:
            have = sorted(tree) if isinstance(tree, Mapping) else describe(tree)
            raise UserValueError(f"Flax variables: expected a {name!r} entry, found {have}")
        tree = tree[name]
    return tree


def params_from_flax(flax_params: Mapping):
    """Flax cell parameters -> rnn_jax parameters (the kind is read from the parameter names).

    Args:
      flax_params: ``variables['params']`` of a SimpleCell, LSTMCell, OptimizedLSTMCell or
        GRUCell (or the full ``variables``).

    Returns:
      ``ElmanParams``, ``LSTMParams`` or ``GRUParams``.
    """
    tree = _unwrap(flax_params)
    kind = _flax_kind(tree)
    for module, names in _LAYOUTS[kind].items():
        if not isinstance(tree[module], Mapping):
            raise UserTypeError(f"Flax parameters: {module!r} should be a dict of {sorted(names)}, got {describe(tree[module])}")
        if set(tree[module]) != names:
            raise UserValueError(f"Flax parameters: {module!r} has {sorted(tree[module])}, expected {sorted(names)}")
    for module, names in _LAYOUTS[kind].items():
        for name in sorted(names):
            check_floating(f"Flax parameters: {module}.{name}", tree[module][name])
    dtypes = {f"{m}.{n}": tree[m][n].dtype for m, names in _LAYOUTS[kind].items() for n in names}
    if len(set(dtypes.values())) > 1:
        raise UserTypeError(f"Flax parameters: expected one dtype for every parameter, got {dtypes}")
    hidden_size = int(tree["h" if kind == "simple" else "hi" if kind == "lstm" else "hr"]["kernel"].shape[-1])
    for module, names in _LAYOUTS[kind].items():
        kernel = tree[module]["kernel"]
        want_in = hidden_size if module.startswith("h") else None
        if kernel.ndim != 2 or kernel.shape[-1] != hidden_size or (want_in is not None and kernel.shape[0] != want_in):
            raise UserValueError(
                f"Flax parameters: {module}.kernel has shape {tuple(kernel.shape)}, expected "
                f"({want_in if want_in is not None else 'input_size'}, {hidden_size}); mismatched hidden sizes"
            )
        if "bias" in names and tuple(tree[module]["bias"].shape) != (hidden_size,):
            raise UserValueError(f"Flax parameters: {module}.bias has shape {tuple(tree[module]['bias'].shape)}, expected ({hidden_size},)")
    cat = lambda modules, leaf: jnp.concatenate([jnp.asarray(tree[m][leaf]) for m in modules], axis=-1)
    if kind == "simple":
        return ElmanParams(jnp.asarray(tree["i"]["kernel"]), jnp.asarray(tree["h"]["kernel"]), jnp.asarray(tree["i"]["bias"]))
    if kind == "lstm":
        return LSTMParams(cat(["i" + g for g in LSTM_GATES], "kernel"), cat(["h" + g for g in LSTM_GATES], "kernel"),
                          cat(["h" + g for g in LSTM_GATES], "bias"))
    return GRUParams(cat(["i" + g for g in GRU_GATES], "kernel"), cat(["h" + g for g in GRU_GATES], "kernel"),
                     cat(["i" + g for g in GRU_GATES], "bias"), jnp.asarray(tree["hn"]["bias"]))


COUNTERPARTS = {"elman": "SimpleCell", "lstm": "LSTMCell", "gru": "GRUCell"}
"""The rnn_jax cells with a Flax counterpart (the translation is per named cell of each library)."""


def _check_cell_for_flax(cell: Cell) -> None:
    if not isinstance(cell, Cell):
        raise UserTypeError(f"to Flax: expected an rnn_jax Cell, got {describe(cell)}")
    if cell.kind == "pascanu":
        raise UserValueError(
            "to Flax: the pascanu cell (the paper's pre-activation state x_t = W σ(x_{t-1}) + ...) has no Flax "
            "counterpart; use rnn_jax.elman for a SimpleCell"
        )
    if cell.kind not in COUNTERPARTS:
        raise UserValueError(f"to Flax: the {cell.kind} cell has no Flax counterpart; expected one of "
                             f"{', '.join(f'{k} ({v})' for k, v in COUNTERPARTS.items())}")


def params_to_flax(cell: Cell, params) -> dict:
    """rnn_jax parameters -> the ``params`` dict of the matching Flax cell (see the module docstring)."""
    _check_cell_for_flax(cell)
    _cells.check_params(cell, params)
    h = cell.hidden_size
    split = lambda w, gates: {g: w[..., k * h:(k + 1) * h] for k, g in enumerate(gates)}
    if cell.kind == "elman":
        return {"i": {"kernel": params.w_ih, "bias": params.b}, "h": {"kernel": params.w_hh}}
    if cell.kind == "lstm":
        w_i, w_h, b = split(params.w_ih, LSTM_GATES), split(params.w_hh, LSTM_GATES), split(params.b, LSTM_GATES)
        return {**{"i" + g: {"kernel": w_i[g]} for g in LSTM_GATES},
                **{"h" + g: {"kernel": w_h[g], "bias": b[g]} for g in LSTM_GATES}}
    w_i, w_h, b = split(params.w_ih, GRU_GATES), split(params.w_hh, GRU_GATES), split(params.b, GRU_GATES)
    out = {**{"i" + g: {"kernel": w_i[g], "bias": b[g]} for g in GRU_GATES},
           **{"h" + g: {"kernel": w_h[g]} for g in GRU_GATES}}
    out["hn"]["bias"] = params.b_hn
    return out


# ---------------------------------------------------------------- modules


def _activation_name(fn) -> str:
    for name, activation in ACTIVATIONS.items():
        if fn is activation.fn:
            return name
    raise UserValueError(
        f"from_flax: unsupported nonlinearity {getattr(fn, '__name__', fn)!r}; expected one of "
        f"{', '.join(ACTIVATIONS)} (the functions of rnn_jax.activations.ACTIVATIONS: jnp.tanh, jax.nn.sigmoid, "
        f"jax.nn.relu, and its identity)"
    )


def _cell_from_module(module) -> Cell:
    import flax.linen as nn

    if isinstance(module, nn.SimpleCell):
        if module.residual:
            raise UserValueError("from_flax: SimpleCell(residual=True) has no rnn_jax counterpart; only residual=False")
        return _cells.elman(module.features, _activation_name(module.activation_fn))
    if isinstance(module, (nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell)):
        if module.gate_fn is not ACTIVATIONS["sigmoid"].fn or module.activation_fn is not ACTIVATIONS["tanh"].fn:
            raise UserValueError(
                f"from_flax: {type(module).__name__} with gate_fn={getattr(module.gate_fn, '__name__', module.gate_fn)}, "
                f"activation_fn={getattr(module.activation_fn, '__name__', module.activation_fn)}: unsupported "
                f"nonlinearity; rnn_jax's gated cells use sigmoid gates and tanh"
            )
        return (_cells.gru if isinstance(module, nn.GRUCell) else _cells.lstm)(module.features)
    raise UserTypeError(
        f"from_flax: unsupported module {type(module).__name__}; expected flax.linen SimpleCell, LSTMCell, "
        f"OptimizedLSTMCell, GRUCell, or nn.RNN / nn.Bidirectional wrapping them"
    )


def _convert_cell(module, tree: Mapping, where: str):
    cell = _cell_from_module(module)
    params = params_from_flax(tree)
    want = {"elman": ElmanParams, "lstm": LSTMParams, "gru": GRUParams}[cell.kind]
    if not isinstance(params, want):
        raise UserValueError(f"from_flax: {where} is a {type(module).__name__} but its parameters are those of another cell")
    if params.w_hh.shape[0] != cell.hidden_size:
        raise UserValueError(
            f"from_flax: mismatched hidden sizes: {where} is a {type(module).__name__}(features={cell.hidden_size}) "
            f"but its parameters have hidden size {params.w_hh.shape[0]}"
        )
    return cell, params


def from_flax(module, variables):
    """Convert a Flax linen recurrent module and its variables to rnn_jax.

    Args:
      module: ``SimpleCell`` (activation tanh, sigmoid or relu; ``residual=False``),
        ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell`` (sigmoid gates, tanh), an ``nn.RNN``
        wrapping one of them, or an ``nn.Bidirectional`` of two ``nn.RNN`` with the default
        (concatenating) ``merge_fn``.
      variables: what ``module.init`` returned (``{'params': ...}``) or its ``params``.

    Returns:
      ``(cell, params)`` for a cell or ``nn.RNN`` (run it with :func:`rnn_jax.unroll`; the
      wrapper's ``time_major``/``reverse`` settings are arguments of ``unroll``, not part of a
      cell), or ``(bidirectional_layer, BidirectionalParams)`` for ``nn.Bidirectional`` (its
      ``time_major`` is kept).
    """
    import flax.linen as nn
    from flax.linen import recurrent

    if isinstance(module, nn.Bidirectional):
        if module.merge_fn is not recurrent._concatenate:
            raise UserValueError("from_flax: nn.Bidirectional with a custom merge_fn; only the default concatenation is supported")
        results = []
        for name in ("forward_rnn", "backward_rnn"):
            rnn = getattr(module, name)
            if not isinstance(rnn, nn.RNN):
                raise UserTypeError(f"from_flax: nn.Bidirectional.{name} must be an nn.RNN, got {type(rnn).__name__}")
            results.append(_convert_cell(rnn.cell, _unwrap(variables, name, "cell"), name))
        (fw, p_fw), (bw, p_bw) = results
        return bidirectional(fw, bw, time_major=bool(module.time_major)), BidirectionalParams(p_fw, p_bw)
    if isinstance(module, nn.RNN):
        return _convert_cell(module.cell, _unwrap(variables, "cell"), "nn.RNN.cell")
    return _convert_cell(module, _unwrap(variables), type(module).__name__)


def _module_for(cell: Cell, dtype, optimized_lstm: bool):
    import flax.linen as nn

    _check_cell_for_flax(cell)
    if cell.kind == "elman":
        return nn.SimpleCell(cell.hidden_size, activation_fn=ACTIVATIONS[cell.activation].fn, param_dtype=dtype)
    if cell.kind == "lstm":
        return (nn.OptimizedLSTMCell if optimized_lstm else nn.LSTMCell)(cell.hidden_size, param_dtype=dtype)
    return nn.GRUCell(cell.hidden_size, param_dtype=dtype)


def to_flax(model, params, *, optimized_lstm: bool = False):
    """Build the Flax module matching ``model`` and its variables ``{'params': ...}``.

    Args:
      model: an elman (any activation), lstm or gru :class:`~rnn_jax.cells.Cell` (a cell module
        comes back), or a :class:`~rnn_jax.layers.Bidirectional` (an ``nn.Bidirectional`` of two
        ``nn.RNN``). Flax linen has no stacked RNN module: convert a stack layer by layer.
      params: ``model``'s parameters.
      optimized_lstm: build ``OptimizedLSTMCell`` instead of ``LSTMCell`` (same parameters).

    Returns:
      ``(module, variables)``; ``module.apply(variables, carry, x)`` steps like ``cell.step``
      (carry via :func:`carry_to_flax`).
    """
    import flax.linen as nn

    if isinstance(model, Bidirectional):
        if not isinstance(params, BidirectionalParams):
            raise UserTypeError(f"to_flax: expected BidirectionalParams for a Bidirectional layer, got {describe(params)}")
        fw = _module_for(model.forward, params.forward.w_ih.dtype, optimized_lstm)
        bw = _module_for(model.backward, params.backward.w_ih.dtype, optimized_lstm)
        module = nn.Bidirectional(nn.RNN(fw), nn.RNN(bw), time_major=model.time_major)
        variables = {"params": {"forward_rnn": {"cell": params_to_flax(model.forward, params.forward)},
                                "backward_rnn": {"cell": params_to_flax(model.backward, params.backward)}}}
        return module, variables
    if not isinstance(model, Cell):
        raise UserTypeError(
            f"to_flax: expected an rnn_jax Cell or Bidirectional layer, got {describe(model)}; Flax linen has no "
            f"stacked RNN module, so convert a Stacked layer by layer: to_flax(stack.layers[k], params[k])"
        )
    _check_cell_for_flax(model)
    _cells.check_params(model, params)
    return _module_for(model, params.w_ih.dtype, optimized_lstm), {"params": params_to_flax(model, params)}


def carry_from_flax(cell: Cell, carry):
    """Flax carry -> rnn_jax carry: LSTM ``(c, h)`` -> ``LSTMState(hidden=h, cell=c)``; else ``h`` -> ``RNNState(h)``.

    Leaves must be floating arrays of shape ``(..., H)``, the same for ``c`` and ``h``."""
    check_cell(cell)
    _check_cell_for_flax(cell)
    lstm = cell.carry_type is LSTMState
    if lstm:
        if not (isinstance(carry, (tuple, list)) and len(carry) == 2):
            raise UserTypeError(f"carry_from_flax: expected Flax's LSTM carry (c, h), got {describe(carry)}")
        c, h = carry
        leaves = {"c": c, "h": h}
    else:
        leaves = {"h": carry}
    for name, leaf in leaves.items():
        check_floating(f"carry_from_flax {name}", leaf)
        if leaf.ndim < 1 or leaf.shape[-1] != cell.hidden_size or leaf.shape != leaves["h"].shape:
            raise UserValueError(
                f"carry_from_flax: {name} has shape {tuple(leaf.shape)}; expected (..., {cell.hidden_size}) "
                f"(the {cell.kind} cell's hidden size, the same for c and h)"
            )
    return LSTMState(h, c) if lstm else RNNState(carry)


def carry_to_flax(cell: Cell, carry):
    """rnn_jax carry -> Flax carry: ``LSTMState(h, c)`` -> ``(c, h)``; ``RNNState(h)`` -> ``h``."""
    check_cell(cell)
    _check_cell_for_flax(cell)
    if not isinstance(carry, cell.carry_type):
        raise UserTypeError(f"carry_to_flax: expected a {cell.carry_type.__name__}, got {describe(carry)}")
    return (carry.cell, carry.hidden) if isinstance(carry, LSTMState) else carry.hidden
