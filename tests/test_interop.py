"""Weight conversion against PyTorch and Flax: outputs, final states and gradients agree.

The other library is the reference. Gradients are compared per parameter of the
other library: JAX differentiates ``loss(convert(their_params))``, so the chain
rule through the conversion (bias folding, transposes, gate concatenation) maps the
rnn_jax gradient back onto their parameters; the reference gradient is their own
autograd (PyTorch) or ``jax.grad`` through their module (Flax).

Errors are measured relative to the reference tensor's scale,
``max|ours - theirs| / max|theirs|``; the largest per (library, cell, dtype) is
printed at the end of the module (``pytest -s``).
"""

import collections
import subprocess
import zlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import layers
from rnn_jax.interop import flax as rflax
from rnn_jax.interop import torch as rtorch

TOL = {"float32": 1e-5, "float64": 1e-10}
DTYPES = ["float32", "float64"]
_WORST = collections.defaultdict(float)  # (library, cell, dtype) -> largest relative difference seen


def rel_diff(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = np.max(np.abs(theirs)) if theirs.size else 0.0
    return float(np.max(np.abs(ours - theirs)) / max(scale, 1e-30)) if theirs.size else 0.0


def check_close(library, cell, dtype, what, ours, theirs):
    err = rel_diff(ours, theirs)
    key = (library, cell, dtype)
    _WORST[key] = max(_WORST[key], err)
    assert err <= TOL[dtype], f"{library} {cell} {dtype} {what}: relative difference {err:.3g} > {TOL[dtype]:g}"


@pytest.fixture(scope="module", autouse=True)
def report_worst():
    yield
    if _WORST:
        lines = ["", "largest relative difference (max|ours-theirs| / max|theirs|) per library, cell, dtype:"]
        lines += [f"  {lib:6s} {cell:16s} {dtype:8s} {err:.3e}" for (lib, cell, dtype), err in sorted(_WORST.items())]
        print("\n".join(lines))


def test_peers_are_not_imported_by_the_library():
    code = ("import sys, rnn_jax, rnn_jax.layers, rnn_jax.interop, rnn_jax.interop.torch, rnn_jax.interop.flax; "
            "print(sorted(m for m in ('torch', 'flax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ================================================================= PyTorch

TORCH_KINDS = {  # name -> (module class name, extra kwargs, kind for from_torch_state_dict, nonlinearity)
    "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}, "rnn", "tanh"),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}, "rnn", "relu"),
    "lstm": ("LSTM", {}, "lstm", "tanh"),
    "gru": ("GRU", {}, "gru", "tanh"),
}

# (num_layers, bidirectional, bias, batch_first, lengths, random initial state) per (kind, dtype).
# Every factor is seen both ways for every kind, and stacked-bidirectional with lengths and an
# initial state in both dtypes. (One case per (kind, dtype): each costs an XLA compilation of a few
# seconds on a small CPU, and the file must stay under 90 s.)
TORCH_CONFIGS = {
    ("rnn_tanh", "float32"): (2, True, True, True, True, True),
    ("rnn_tanh", "float64"): (1, False, False, False, False, False),
    ("rnn_relu", "float32"): (1, True, False, False, True, False),
    ("rnn_relu", "float64"): (2, False, True, True, True, True),
    ("lstm", "float32"): (2, False, False, False, True, True),
    ("lstm", "float64"): (2, True, True, True, True, True),
    ("gru", "float32"): (1, True, True, False, False, True),
    ("gru", "float64"): (2, True, False, False, True, True),
}
BATCH, TIME, INPUT, HIDDEN = 4, 6, 3, 5
LENGTHS = np.array([6, 3, 1, 5])


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _torch_dtype(torch, dtype):
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def _torch_run(torch, module, x, lengths, hx):
    """Module output (padded with zeros past each length, in the module's layout) and final states."""
    if lengths is None:
        out, state = module(x, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=module.batch_first,
                                                         enforce_sorted=False)
        out, state = module(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=module.batch_first, total_length=TIME)
    return out, state


def _jax_loss(kind, nonlinearity, batch_first, lengths, state_dict, x, h0, c0):
    """sum(outputs²) + sum(final states²) through the conversion, with ``state_dict`` differentiable."""
    layer, params = rtorch.from_torch_state_dict(state_dict, kind, nonlinearity=nonlinearity, batch_first=batch_first)
    initial = None if h0 is None else rtorch.carries_from_torch(layer, h0, c0)
    final, ys = layer.apply(params, x, lengths=lengths, initial_carries=initial)
    loss = jnp.sum(ys**2) + sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(final))
    return loss, (final, ys)


def _config_id(key):
    layers_, bidir, bias, batch_first, lengths, h0 = TORCH_CONFIGS[key]
    flags = [f"{layers_}layer", "bidir" if bidir else "", "" if bias else "nobias", "batchfirst" if batch_first else "",
             "lengths" if lengths else "", "h0" if h0 else ""]
    return "-".join([*key, *filter(None, flags)])


@pytest.mark.parametrize("name,dtype", [pytest.param(*key, id=_config_id(key)) for key in TORCH_CONFIGS])
def test_torch_outputs_states_gradients(torch, name, dtype):
    num_layers, bidir, bias, batch_first, use_lengths, use_h0 = TORCH_CONFIGS[name, dtype]
    cls_name, kwargs, kind, nonlinearity = TORCH_KINDS[name]
    tdtype = _torch_dtype(torch, dtype)
    torch.manual_seed(zlib.crc32(f"{name}/{dtype}".encode()))
    module = getattr(torch.nn, cls_name)(INPUT, HIDDEN, num_layers=num_layers, bias=bias, batch_first=batch_first,
                                         bidirectional=bidir, **kwargs).to(tdtype)
    x = torch.randn((BATCH, TIME, INPUT) if batch_first else (TIME, BATCH, INPUT), dtype=tdtype, requires_grad=True)
    lengths = LENGTHS if use_lengths else None
    n_states = num_layers * (2 if bidir else 1)
    h0 = c0 = None
    if use_h0:
        h0 = (0.5 * torch.randn(n_states, BATCH, HIDDEN, dtype=tdtype)).requires_grad_()
        c0 = (0.5 * torch.randn(n_states, BATCH, HIDDEN, dtype=tdtype)).requires_grad_() if kind == "lstm" else None
    hx = None if h0 is None else (h0, c0) if kind == "lstm" else h0

    out, state = _torch_run(torch, module, x, lengths, hx)
    states = state if kind == "lstm" else (state,)
    loss = (out**2).sum() + sum((s**2).sum() for s in states)
    loss.backward()

    to_np = lambda t: t.detach().numpy()
    sd = {k: jnp.asarray(to_np(v)) for k, v in module.state_dict().items()}
    args = (jnp.asarray(to_np(x)), None if h0 is None else jnp.asarray(to_np(h0)),
            None if c0 is None else jnp.asarray(to_np(c0)))
    fn = lambda sd, x, h0, c0: _jax_loss(kind, nonlinearity, batch_first, None if lengths is None else jnp.asarray(lengths),
                                         sd, x, h0, c0)
    (j_loss, (final, ys)), grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3), has_aux=True))(sd, *args)
    layer, _ = rtorch.from_torch_state_dict(sd, kind, nonlinearity=nonlinearity, batch_first=batch_first)

    check = lambda what, ours, theirs: check_close("torch", name, dtype, what, ours, theirs)
    assert ys.dtype == jnp.dtype(dtype)
    check("loss", j_loss, to_np(loss))
    check("outputs", ys, to_np(out))
    h_n = rtorch.carries_to_torch(layer, final)
    for what, ours, theirs in zip(("h_n", "c_n"), h_n if kind == "lstm" else (h_n,), states):
        check(what, ours.numpy(), to_np(theirs))
    g_sd, g_x, g_h0, g_c0 = grads
    for key, param in module.named_parameters():
        check(f"d loss / d {key}", g_sd[key], to_np(param.grad))
    check("d loss / d x", g_x, to_np(x.grad))
    if use_h0:
        check("d loss / d h0", g_h0, to_np(h0.grad))
        if kind == "lstm":
            check("d loss / d c0", g_c0, to_np(c0.grad))


@pytest.mark.parametrize("dtype,bias", [("float32", False), ("float64", True)])
@pytest.mark.parametrize("name", list(TORCH_KINDS))
def test_torch_single_cells(torch, name, dtype, bias):
    """nn.RNNCell / LSTMCell / GRUCell: one step, its state and gradients."""
    cls_name, kwargs, kind, _ = TORCH_KINDS[name]
    tdtype = _torch_dtype(torch, dtype)
    torch.manual_seed(7)
    module = getattr(torch.nn, cls_name + "Cell")(INPUT, HIDDEN, bias=bias, **kwargs).to(tdtype)
    x = torch.randn(BATCH, INPUT, dtype=tdtype, requires_grad=True)
    h = torch.randn(BATCH, HIDDEN, dtype=tdtype)
    c = torch.randn(BATCH, HIDDEN, dtype=tdtype)
    new = module(x, (h, c) if kind == "lstm" else h)
    new = new if kind == "lstm" else (new,)
    loss = sum((s**2).sum() for s in new)
    loss.backward()

    cell, params = rtorch.from_torch(module)
    assert isinstance(cell, rnn_jax.Cell) and cell.hidden_size == HIDDEN
    carry = rtorch.carries_from_torch(cell, h, c if kind == "lstm" else None)
    nonlinearity = kwargs.get("nonlinearity", "tanh")

    def fn(sd, x):
        cell, params = rtorch.from_torch_state_dict(sd, kind, nonlinearity=nonlinearity)
        new, _ = cell.step(params, carry, x)
        return sum(jnp.sum(leaf**2) for leaf in new), new

    sd = {k: jnp.asarray(v.detach().numpy()) for k, v in module.state_dict().items()}
    (j_loss, j_new), (g_sd, g_x) = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(sd, jnp.asarray(x.detach().numpy()))
    check = lambda what, ours, theirs: check_close("torch", name, dtype, what, ours, theirs)
    for ours, theirs in zip(j_new, new):  # rnn_jax (hidden, cell) vs torch (h, c)
        check("state", ours, theirs.detach().numpy())
    for key, param in module.named_parameters():
        check(f"d loss / d {key}", g_sd[key], param.grad.numpy())
    check("d loss / d x", g_x, x.grad.numpy())


def _rnn_jax_models(kind, activation="tanh"):
    make = lambda: rnn_jax.elman(HIDDEN, activation) if kind == "elman" else rnn_jax.make(kind, HIDDEN)
    return {
        "cell": make(),
        "bidirectional": layers.bidirectional(make(), make()),
        "stacked": layers.stacked([make(), make(), make()]),
        "stacked-bidirectional": layers.stacked([layers.bidirectional(make(), make()) for _ in range(2)], time_major=True),
    }


def _random_model_params(model, dtype, seed=0, input_size=INPUT):
    """Random parameters with non-zero biases for any model (N(0, 0.5²) for every entry), drawn with
    NumPy on the shapes of ``model.init`` (abstractly evaluated: nothing to compile)."""
    shapes = jax.eval_shape(lambda key: model.init(key, input_size, dtype), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and bool(jnp.all(x == y)) for x, y in zip(la, lb))


@pytest.mark.parametrize("structure", ["cell", "bidirectional", "stacked", "stacked-bidirectional"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,activation", [("elman", "tanh"), ("elman", "relu"), ("lstm", "tanh"), ("gru", "tanh")])
def test_torch_round_trip_is_bit_exact(torch, kind, activation, dtype, structure):
    """rnn_jax -> torch module -> rnn_jax gives back the very same bits (what the module computes is
    checked in test_torch_outputs_states_gradients, which converts the other way)."""
    model = _rnn_jax_models(kind, activation)[structure]
    params = _random_model_params(model, jnp.dtype(dtype), seed=3)
    module = rtorch.to_torch(model, params)
    model2, params2 = rtorch.from_torch(module)
    if isinstance(model, layers.Bidirectional):  # a lone Bidirectional comes back as a one-layer stack
        assert isinstance(model2, layers.Stacked) and _leaves_equal(params2, (params,))
    else:
        assert type(model2) is type(model) and _leaves_equal(params2, params)
    assert _leaves_equal(rtorch.from_torch_state_dict(rtorch.to_torch_state_dict(model, params), kind,
                                                      nonlinearity=activation)[1], params2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(TORCH_KINDS))
def test_torch_module_round_trip_computes_the_same(torch, name, dtype):
    """torch -> rnn_jax -> torch: weights identical, biases re-split, outputs and states unchanged."""
    cls_name, kwargs, _, _ = TORCH_KINDS[name]
    tdtype = _torch_dtype(torch, dtype)
    torch.manual_seed(11)
    module = getattr(torch.nn, cls_name)(INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=True, **kwargs).to(tdtype)
    back = rtorch.to_torch(*rtorch.from_torch(module))
    assert (type(back), back.num_layers, back.bidirectional, back.batch_first, back.mode) == (
        type(module), 2, True, True, module.mode)
    sd, sd_back = module.state_dict(), back.state_dict()
    assert list(sd) == list(sd_back)
    for key in sd:
        if key.startswith("weight"):
            assert torch.equal(sd[key], sd_back[key]), key
    x = torch.randn(BATCH, TIME, INPUT, dtype=tdtype)
    with torch.no_grad():
        (out, state), (out_back, state_back) = module(x), back(x)
    check_close("torch", name, dtype, "re-exported outputs", out_back.numpy(), out.numpy())
    for s, s_back in zip(state if isinstance(state, tuple) else (state,), state_back if isinstance(state_back, tuple) else (state_back,)):
        check_close("torch", name, dtype, "re-exported states", s_back.numpy(), s.numpy())


def test_torch_bias_false_round_trip(torch):
    module = torch.nn.GRU(INPUT, HIDDEN, num_layers=2, bias=False).double()
    model, params = rtorch.from_torch(module)
    for p in params:
        assert not jnp.any(p.b) and not jnp.any(p.b_hn)
    state = rtorch.to_torch_state_dict(model, params, bias=False)
    assert set(state) == set(module.state_dict())
    back = rtorch.to_torch(model, params, bias=False)
    assert back.bias is False
    for key, value in module.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


def test_torch_conversion_errors(torch):
    nn = torch.nn
    with pytest.raises(TypeError, match="unsupported module Linear"):
        rtorch.from_torch(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="proj_size"):
        rtorch.from_torch(nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="unknown PyTorch module kind 'transformer'"):
        rtorch.from_torch_state_dict(nn.GRU(3, 4).state_dict(), "transformer")
    with pytest.raises(ValueError, match="unknown nonlinearity 'gelu'"):
        rtorch.from_torch_state_dict(nn.RNN(3, 4).state_dict(), "rnn", nonlinearity="gelu")
    # a GRU state dict read as an LSTM: 3H rows are not 4H
    with pytest.raises(ValueError, match=r"weight_hh_l0: expected shape \(16, 4\)"):
        rtorch.from_torch_state_dict(nn.GRU(3, 4).state_dict(), "lstm")
    # mismatched hidden sizes across layers
    sd = dict(nn.LSTM(3, 4, num_layers=2).state_dict())
    sd.update({k.replace("l0", "l1"): v for k, v in nn.LSTM(4, 5).state_dict().items()})
    with pytest.raises(ValueError, match="mismatched hidden sizes"):
        rtorch.from_torch_state_dict(sd, "lstm")
    sd = dict(nn.LSTM(3, 4).state_dict(), extra=torch.zeros(1))
    with pytest.raises(ValueError, match="unexpected key 'extra'"):
        rtorch.from_torch_state_dict(sd, "lstm")
    sd = dict(nn.LSTM(3, 4, num_layers=2).state_dict())
    del sd["bias_hh_l1"]
    with pytest.raises(ValueError, match="layer 1 has keys"):
        rtorch.from_torch_state_dict(sd, "lstm")

    pascanu = rnn_jax.pascanu(4)
    with pytest.raises(ValueError, match="pascanu cell .* has no PyTorch counterpart"):
        rtorch.to_torch(pascanu, _random_model_params(pascanu, jnp.float32))
    mgu = rnn_jax.mgu(4)  # a cell PyTorch lacks is refused by name, not translated as another
    with pytest.raises(ValueError, match="mgu cell has no PyTorch counterpart"):
        rtorch.to_torch(mgu, _random_model_params(mgu, jnp.float32))
    sig = rnn_jax.elman(4, "sigmoid")
    with pytest.raises(ValueError, match="unsupported nonlinearity 'sigmoid'"):
        rtorch.to_torch_state_dict(sig, _random_model_params(sig, jnp.float32))
    mixed = layers.stacked([rnn_jax.lstm(4), rnn_jax.lstm(5)])
    with pytest.raises(ValueError, match="mismatched hidden sizes 4 and 5"):
        rtorch.to_torch(mixed, _random_model_params(mixed, jnp.float32))
    kinds = layers.stacked([rnn_jax.lstm(4), rnn_jax.gru(4)])
    with pytest.raises(ValueError, match="every cell must be of one kind"):
        rtorch.to_torch(kinds, _random_model_params(kinds, jnp.float32))
    directions = layers.stacked([layers.bidirectional(rnn_jax.gru(4), rnn_jax.gru(4)), rnn_jax.gru(4)])
    with pytest.raises(ValueError, match="mixes unidirectional and bidirectional"):
        rtorch.to_torch(directions, _random_model_params(directions, jnp.float32))
    stack = layers.stacked([rnn_jax.gru(4), rnn_jax.gru(4)])
    params = _random_model_params(stack, jnp.float32)
    zero = lambda p: p._replace(b=jnp.zeros_like(p.b), b_hn=jnp.zeros_like(p.b_hn))
    params = (zero(params[0]), zero(params[1])._replace(b_hn=jnp.zeros_like(params[1].b_hn).at[2].set(0.25)))
    with pytest.raises(ValueError, match=r"bias=False: layer 1 has a non-zero bias b_hn \(max \|b_hn\| = 0.25\)"):
        rtorch.to_torch_state_dict(stack, params, bias=False)
    with pytest.raises(ValueError, match="expected a tuple of 2 per-layer parameters"):
        rtorch.to_torch_state_dict(stack, params[0])
    with pytest.raises(ValueError, match=r"expected \(2, batch, H\)"):
        rtorch.carries_from_torch(stack, torch.zeros(3, 2, 4))
    with pytest.raises(ValueError, match="pass c"):
        rtorch.carries_from_torch(stack, torch.zeros(2, 2, 4), torch.zeros(2, 2, 4))


# ================================================================= Flax

FLAX_CELLS = {  # name -> (module class name, kwargs builder)
    "simple-tanh": ("SimpleCell", lambda nn: {"activation_fn": nn.tanh}),
    "simple-relu": ("SimpleCell", lambda nn: {"activation_fn": nn.relu}),
    "simple-sigmoid": ("SimpleCell", lambda nn: {"activation_fn": nn.sigmoid}),
    "lstm": ("LSTMCell", lambda nn: {}),
    "optimized-lstm": ("OptimizedLSTMCell", lambda nn: {}),
    "gru": ("GRUCell", lambda nn: {}),
}


@pytest.fixture
def nn():
    return pytest.importorskip("flax.linen")


def _flax_cell(nn, name, dtype):
    cls_name, kwargs = FLAX_CELLS[name]
    return getattr(nn, cls_name)(HIDDEN, param_dtype=jnp.dtype(dtype), **kwargs(nn))


def _randomised(variables, key):
    """Every Flax parameter (biases too: Flax initialises them to zero) drawn N(0, 0.5²)."""
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [0.5 * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])


def _valid(lengths):
    return (jnp.arange(TIME)[None, :] < jnp.asarray(lengths)[:, None])[..., None]


def _squares(tree):
    return sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FLAX_CELLS))
def test_flax_step_outputs_carry_gradients(nn, name, dtype):
    """One step of the Flax cell against cell.step of the converted cell, from a random carry."""
    module = _flax_cell(nn, name, dtype)
    x = jax.random.normal(jax.random.key(1), (BATCH, INPUT), jnp.dtype(dtype))
    carry0 = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.key(5), a.shape, a.dtype),
                                    module.initialize_carry(jax.random.key(0), x.shape))
    variables = _randomised(module.init(jax.random.key(0), carry0, x), jax.random.key(2))

    def flax_loss(variables, x, carry0):
        carry, y = module.apply(variables, carry0, x)
        return jnp.sum(y**2) + _squares(carry), (carry, y)

    def ours_loss(variables, x, carry0):
        cell, params = rflax.from_flax(module, variables)
        new, y = cell.step(params, rflax.carry_from_flax(cell, carry0), x)
        carry = rflax.carry_to_flax(cell, new)
        return jnp.sum(y**2) + _squares(carry), (carry, y)

    _compare_flax(name, dtype, flax_loss, ours_loss, (variables, x, carry0), jit=False)


def _compare_flax(name, dtype, flax_loss, ours_loss, args, jit=True):
    """Loss, aux outputs and gradients (w.r.t. every argument) of the two losses agree."""
    grad = jax.value_and_grad(flax_loss, argnums=tuple(range(len(args))), has_aux=True)
    ours = jax.value_and_grad(ours_loss, argnums=tuple(range(len(args))), has_aux=True)
    (l_ref, aux_ref), g_ref = (jax.jit(grad) if jit else grad)(*args)
    (l_our, aux_our), g_our = (jax.jit(ours) if jit else ours)(*args)
    check_close("flax", name, dtype, "loss", l_our, l_ref)
    for what, tree_our, tree_ref in (("output", aux_our, aux_ref), ("gradient", g_our, g_ref)):
        assert jax.tree_util.tree_structure(tree_our) == jax.tree_util.tree_structure(tree_ref)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree_our):
            check_close("flax", name, dtype, f"{what} {jax.tree_util.keystr(path)}", leaf, _at(tree_ref, path))


@pytest.mark.parametrize("name,dtype", [("simple-relu", "float64"), ("optimized-lstm", "float32")])
def test_flax_rnn_with_lengths(nn, name, dtype):
    """nn.RNN(cell) with seq_lengths and a random initial carry against rnn_jax.unroll of the converted cell."""
    rnn = nn.RNN(_flax_cell(nn, name, dtype), return_carry=True)
    x = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.dtype(dtype))
    lengths = jnp.asarray(LENGTHS)
    variables = _randomised(rnn.init(jax.random.key(0), x), jax.random.key(2))
    carry0 = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.key(5), a.shape, a.dtype),
                                    rnn.cell.initialize_carry(jax.random.key(0), x[:, 0].shape))
    valid = _valid(lengths)

    def flax_loss(variables, x, carry0):
        carry, ys = rnn.apply(variables, x, initial_carry=carry0, seq_lengths=lengths)
        ys = jnp.where(valid, ys, 0)  # Flax leaves arbitrary values at padded steps
        return jnp.sum(ys**2) + _squares(carry), (carry, ys)

    def ours_loss(variables, x, carry0):
        cell, params = rflax.from_flax(rnn, variables)
        final, ys = rnn_jax.unroll(cell, params, x, lengths=lengths, initial_carry=rflax.carry_from_flax(cell, carry0))
        return jnp.sum(ys**2) + _squares(rflax.carry_to_flax(cell, final)), (rflax.carry_to_flax(cell, final), ys)

    _compare_flax(name, dtype, flax_loss, ours_loss, (variables, x, carry0))


def _at(tree, path):
    for entry in path:
        tree = tree[getattr(entry, "key", getattr(entry, "idx", None))]
    return tree


@pytest.mark.parametrize("name,dtype", [("gru", "float64")])
def test_flax_bidirectional_matches_layers_bidirectional(nn, name, dtype):
    """nn.Bidirectional (packed-sequence reverse via seq_lengths) against rnn_jax.layers.bidirectional."""
    module = nn.Bidirectional(nn.RNN(_flax_cell(nn, name, dtype)), nn.RNN(_flax_cell(nn, name, dtype)), return_carry=True)
    x = jax.random.normal(jax.random.key(1), (BATCH, TIME, INPUT), jnp.dtype(dtype))
    lengths = jnp.asarray(LENGTHS)
    variables = _randomised(module.init(jax.random.key(0), x), jax.random.key(3))
    valid = _valid(lengths)

    def flax_loss(variables, x):
        carry, ys = module.apply(variables, x, seq_lengths=lengths)
        ys = jnp.where(valid, ys, 0)
        return jnp.sum(ys**2) + _squares(carry), (carry, ys)

    def ours_loss(variables, x):
        layer, params = rflax.from_flax(module, variables)
        final, ys = layer.apply(params, x, lengths=lengths)
        carry = (rflax.carry_to_flax(layer.forward, final.forward), rflax.carry_to_flax(layer.backward, final.backward))
        return jnp.sum(ys**2) + _squares(carry), (carry, ys)

    _compare_flax(name, dtype, flax_loss, ours_loss, (variables, x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FLAX_CELLS))
def test_flax_round_trips_are_bit_exact(nn, name, dtype):
    module = _flax_cell(nn, name, dtype)
    x = jnp.ones((BATCH, INPUT), jnp.dtype(dtype))
    variables = _randomised(module.init(jax.random.key(0), module.initialize_carry(jax.random.key(0), x.shape), x),
                            jax.random.key(1))
    cell, params = rflax.from_flax(module, variables)
    module2, variables2 = rflax.to_flax(cell, params, optimized_lstm=name == "optimized-lstm")
    assert type(module2) is type(module) and module2.activation_fn is module.activation_fn
    assert _leaves_equal(variables2, dict(variables))
    cell3, params3 = rflax.from_flax(module2, variables2)
    assert cell3.kind == cell.kind and cell3.activation == cell.activation and _leaves_equal(params3, params)


@pytest.mark.parametrize("kind,activation", [("elman", "identity"), ("lstm", "tanh"), ("gru", "tanh")])
def test_flax_from_rnn_jax_round_trip(nn, kind, activation):
    """rnn_jax -> Flax -> rnn_jax is bit-exact (identity activation included), for cells and bidirectional layers."""
    make = lambda: rnn_jax.elman(HIDDEN, activation) if kind == "elman" else rnn_jax.make(kind, HIDDEN)
    for model in (make(), layers.bidirectional(make(), make())):
        params = _random_model_params(model, jnp.float64, seed=9)
        module, variables = rflax.to_flax(model, params)
        model2, params2 = rflax.from_flax(module, variables)
        assert type(model2) is type(model) and _leaves_equal(params2, params)


def test_flax_conversion_errors(nn):
    x = jnp.ones((2, INPUT), jnp.float32)
    init = lambda m: m.init(jax.random.key(0), m.initialize_carry(jax.random.key(0), x.shape), x)
    with pytest.raises(TypeError, match="unsupported module Dense"):
        rflax.from_flax(nn.Dense(4), {})
    with pytest.raises(TypeError, match="unsupported module MGUCell"):
        rflax.from_flax(nn.MGUCell(4), init(nn.MGUCell(4)))
    gelu = nn.SimpleCell(4, activation_fn=nn.gelu)
    with pytest.raises(ValueError, match="unsupported nonlinearity 'gelu'"):
        rflax.from_flax(gelu, init(gelu))
    hard = nn.LSTMCell(4, gate_fn=nn.hard_sigmoid)
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        rflax.from_flax(hard, init(hard))
    residual = nn.SimpleCell(4, residual=True)
    with pytest.raises(ValueError, match="residual=True"):
        rflax.from_flax(residual, init(residual))
    with pytest.raises(ValueError, match="mismatched hidden sizes"):
        rflax.from_flax(nn.GRUCell(5), init(nn.GRUCell(4)))
    with pytest.raises(ValueError, match="parameters are those of another cell"):
        rflax.from_flax(nn.GRUCell(4), init(nn.LSTMCell(4)))
    broken = init(nn.LSTMCell(4))["params"]
    broken = {k: v for k, v in broken.items() if k != "ho"}
    with pytest.raises(ValueError, match="are not those of a SimpleCell"):
        rflax.params_from_flax(broken)
    pascanu = rnn_jax.pascanu(4)
    with pytest.raises(ValueError, match="pascanu cell .* has no Flax counterpart"):
        rflax.to_flax(pascanu, _random_model_params(pascanu, jnp.float32))
    mgu = rnn_jax.mgu(4)
    with pytest.raises(ValueError, match="mgu cell has no Flax counterpart"):
        rflax.to_flax(mgu, _random_model_params(mgu, jnp.float32))
    with pytest.raises(ValueError, match="mgu cell has no Flax counterpart"):
        rflax.params_to_flax(mgu, mgu.init(jax.random.key(0), 3))
    stack = layers.stacked([rnn_jax.gru(4), rnn_jax.gru(4)])
    with pytest.raises(TypeError, match="no stacked RNN module"):
        rflax.to_flax(stack, _random_model_params(stack, jnp.float32))
    with pytest.raises(TypeError, match=r"expected Flax's LSTM carry \(c, h\)"):
        rflax.carry_from_flax(rnn_jax.lstm(4), jnp.zeros((2, 4)))
