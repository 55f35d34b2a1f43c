"""Numerical agreement figures: autodiff against hand-written BPTT and finite differences,
converted weights against PyTorch and Flax, stacked/bidirectional layers against the
chained BPTT reference.

``python -m benchmarks.agreement [--seeds N] [--quick] [--json PATH]`` prints, as
markdown tables, the largest relative errors over random configurations (the figures
the project's notes state), the versions and the command. The exit status is 1 when a
figure is not finite or above its tolerance (:data:`TOLERANCES`).

Three parts, each case a fresh random configuration (sizes, parameters with non-zero
biases, lengths with padding, initial carries) drawn from a seed derived from
(part, cell, dtype, index), so a run is reproducible:

* gradients (float64): ``jax.grad`` of :func:`rnn_jax.model.loss` for the four (loss,
  on) pairs against :func:`rnn_jax.bptt.bptt` (NumPy, no autodiff) and against central
  finite differences ``(E(w + h) − E(w − h)) / 2h`` of the same loss, per parameter and
  initial-carry leaf. Measure as ``tests/test_bptt.py``: ``‖autodiff − ref‖₂ / ‖ref‖₂``
  per leaf, the largest over leaves, (loss, on) pairs and cases; against differences the
  denominator is at least :data:`FD_FLOOR` times the largest leaf norm (see there);
* peers (float32 and float64): rnn_jax with converted weights (:mod:`rnn_jax.interop`)
  against PyTorch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (their autograd) and Flax linen's
  cells in ``nn.RNN``/``nn.Bidirectional`` (``jax.grad`` through their module): outputs,
  final states, gradients of ``Σ outputs² + Σ final states²`` with respect to the peer's
  parameters (through the conversion) and to the inputs and initial states. Measure as
  ``tests/test_interop.py``: ``max|ours − theirs| / max|theirs|`` per tensor. A peer that
  is not installed is skipped;
* layers (float64): ``jax.grad`` through :mod:`rnn_jax.layers` (stacked, bidirectional,
  stacked bidirectional) of ``E = Σ outputs ⊙ C`` against :func:`rnn_jax.bptt.bptt_outputs`
  chained from the top layer down, as ``tests/test_bptt_layers.py`` does; measure as
  the gradients part, over the parameters, initial carries and inputs.

Configurations of the peers sweep their factors (stacked, bidirectional, bias,
batch_first/time_major, lengths, initial state): configuration 0 has every factor on and
1 every factor off (float64 starts one later, so ``--seeds 1`` sees both), the others
draw each factor at random. The layers' configurations cycle through the three networks
(``--seeds 3`` gives every cell each one), batch- or time-major at random.

:func:`run` measures everything (with 64-bit types on, inside a context manager); the
``*_case`` functions measure one configuration and expect 64-bit types to be on already.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import platform
import shlex
import sys
import time
import zlib
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import rnn_jax
from rnn_jax import layers, model
from rnn_jax.bptt import bptt, bptt_outputs, forward
from rnn_jax.cells import Cell
from rnn_jax.interop import flax as rflax
from rnn_jax.interop import torch as rtorch
from rnn_jax.layers import BidirectionalParams, BidirectionalState, Stacked

TINY = np.finfo(np.float64).tiny
DTYPES = ("float32", "float64")
COMBOS = (("mse", "last"), ("mse", "every"), ("xent", "last"), ("xent", "every"))
# The central-difference step h (float64): the round-off ε|E|/h and the truncation h²|E‴|/6
# balance near h = (3ε)^(1/3) ≈ 1e-5 (over the full profile the errors are ~10x below h = 1e-6's).
FD_STEP = 1e-5
# A leaf's central-difference error is measured against at least this fraction of the largest
# leaf norm: the round-off of (E(w + h) − E(w − h)) / 2h is about ε|E|/h per entry whatever the
# leaf, so a leaf whose gradient has vanished (an initial carry read many steps back) cannot be
# resolved relative to itself (its unfloored figure is reported too).
FD_FLOOR = 1e-3

# Largest relative error allowed per figure: the issues' bounds (autodiff vs BPTT, peers per
# dtype) and tests/test_bptt.py's for central differences.
TOLERANCES = {
    "autodiff_vs_bptt": 1e-10,
    "autodiff_vs_fd": 1e-6,
    "layers_vs_chained_bptt": 1e-10,
    "peer_float32": 1e-5,
    "peer_float64": 1e-10,
}

GRADIENT_CELLS = {
    "elman tanh": lambda h: rnn_jax.elman(h, "tanh"),
    "elman sigmoid": lambda h: rnn_jax.elman(h, "sigmoid"),
    "elman relu": lambda h: rnn_jax.elman(h, "relu"),
    "elman identity": lambda h: rnn_jax.elman(h, "identity"),
    "pascanu tanh": lambda h: rnn_jax.pascanu(h, "tanh"),
    "lstm": lambda h: rnn_jax.lstm(h),
    "gru": lambda h: rnn_jax.gru(h),
}
NETWORKS = ("stacked", "bidirectional", "stacked bidirectional")

# name -> (torch.nn class, its extra kwargs, kind for from_torch_state_dict, nonlinearity)
TORCH_MODULES = {
    "rnn tanh": ("RNN", {"nonlinearity": "tanh"}, "rnn", "tanh"),
    "rnn relu": ("RNN", {"nonlinearity": "relu"}, "rnn", "relu"),
    "lstm": ("LSTM", {}, "lstm", "tanh"),
    "gru": ("GRU", {}, "gru", "tanh"),
}
TORCH_FACTORS = ("stacked", "bidirectional", "bias", "batch_first", "lengths", "initial_state")
# name -> (flax.linen cell class, SimpleCell's activation or None)
FLAX_CELLS = {
    "simple tanh": ("SimpleCell", "tanh"),
    "simple relu": ("SimpleCell", "relu"),
    "simple sigmoid": ("SimpleCell", "sigmoid"),
    "lstm": ("LSTMCell", None),
    "optimized lstm": ("OptimizedLSTMCell", None),
    "gru": ("GRUCell", None),
}
FLAX_FACTORS = ("bidirectional", "lengths", "initial_state", "time_major")


class Profile(NamedTuple):
    """Upper bounds of the random sizes (each drawn uniformly from 1 -- 2 for the batch and the
    classes -- up to it), configurations per cell, and what the quick profile leaves out."""

    name: str
    batch: int
    time: int
    input_size: int
    hidden: int
    output: int
    seeds: int  # default configurations per cell (and per dtype for the peers)
    # each configuration of a cell measures one (loss, on) pair and one dtype, the next ones in
    # turn from cell to cell, instead of all of them (every pair and dtype is still seen)
    rotate: bool
    # part ("gradients", "torch", "flax", "layers") -> the cells it measures, when not all of them
    subsets: Optional[dict] = None

    def cells(self, part: str, names) -> list:
        return [name for name in names if name in (self.subsets or {}).get(part, names)]


PROFILES = {
    "full": Profile("full", batch=4, time=8, input_size=4, hidden=5, output=3, seeds=3, rotate=False),
    # seconds: every cell's gradients and every PyTorch module, a few Flax cells and layers (each
    # configuration is an XLA compilation of about a second on a small CPU)
    "quick": Profile("quick", batch=2, time=3, input_size=2, hidden=2, output=2, seeds=1, rotate=True,
                     subsets={"flax": ("simple tanh", "optimized lstm", "gru"), "layers": ("elman tanh", "lstm", "gru")}),
}


# ---------------------------------------------------------------- measures


def rel_norm_errors(reference, other, floor: float = 0.0) -> list:
    """Per leaf ``‖other − reference‖₂ / max(‖reference‖₂, tiny)`` (tests/test_bptt.py's measure).

    With ``floor > 0`` the denominator is at least ``floor`` times the largest leaf norm of
    ``reference``: a leaf far smaller than the others is measured against the gradient's scale.
    """
    if jax.tree_util.tree_structure(reference) != jax.tree_util.tree_structure(other):
        raise ValueError(f"cannot compare trees of different structures: {jax.tree_util.tree_structure(reference)} "
                         f"and {jax.tree_util.tree_structure(other)}")
    refs = [np.asarray(r, np.float64) for r in jax.tree_util.tree_leaves(reference)]
    norms = [float(np.linalg.norm(r)) for r in refs]
    least = floor * max(norms, default=0.0)
    return [
        float(np.linalg.norm(np.asarray(o, np.float64) - r) / max(n, least, TINY))
        for r, n, o in zip(refs, norms, jax.tree_util.tree_leaves(other))
    ]


def rel_max(ours, theirs) -> float:
    """``max|ours − theirs| / max|theirs|`` over one tensor (tests/test_interop.py's measure)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"cannot compare shapes {ours.shape} and {theirs.shape}")
    if not theirs.size:
        return 0.0
    return float(np.max(np.abs(ours - theirs)) / max(float(np.max(np.abs(theirs))), 1e-30))


def largest(values) -> float:
    """The maximum, NaN if any value is NaN (Python's ``max`` would skip a NaN), 0 for none."""
    values = np.asarray(list(values), np.float64)
    return float(np.max(values)) if values.size else 0.0


def _norm(tree) -> float:
    """‖tree‖₂ over all its leaves."""
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(leaf, np.float64))) for leaf in jax.tree_util.tree_leaves(tree))))


def _scale(tree) -> float:
    """max |entry| over all leaves of ``tree``."""
    return max((float(np.max(np.abs(np.asarray(leaf, np.float64)))) for leaf in jax.tree_util.tree_leaves(tree) if np.size(leaf)),
               default=0.0)


def _rng(*parts) -> np.random.Generator:
    """A generator seeded by ``parts`` (strings hashed with CRC-32): one stream per case."""
    return np.random.default_rng([zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts])


def _random_like(rng, template, scale, dtype=None):
    """Every leaf of ``template`` (arrays or shape structs) drawn N(0, scale²): no zero biases."""
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype if dtype is None else dtype), template)


def _lengths(rng, batch, time, shortest):
    """(B,) lengths in [shortest, T] for B >= 2: one sequence full (so no case reads nothing), one
    padded (shorter than T, when T > shortest), the others at random."""
    lengths = rng.integers(shortest, time + 1, batch)
    full, padded = rng.choice(batch, 2, replace=False)
    lengths[full] = time
    if time > shortest:
        lengths[padded] = rng.integers(shortest, time)
    return lengths


def _factors(rng, names, index) -> dict:
    """Configuration ``index`` of a sweep: 0 every factor on, 1 every factor off, then random."""
    if index < 2:
        return {name: index == 0 for name in names}
    return {name: bool(rng.integers(2)) for name in names}


def _size(rng, high, low=1) -> int:
    return int(rng.integers(low, max(high, low) + 1))


# ---------------------------------------------------------------- gradients: autodiff vs BPTT and differences


def _unravel_numpy(template, vector):
    """``vector`` split into the leaves of ``template`` (in ``ravel_pytree``'s order), as NumPy arrays."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    ends = np.cumsum([np.size(leaf) for leaf in leaves])[:-1]
    parts = np.split(vector, ends)
    return jax.tree_util.tree_unflatten(treedef, [part.reshape(np.shape(leaf)) for part, leaf in zip(parts, leaves)])


def gradient_case(name: str, index: int, profile: Profile, combos=COMBOS) -> dict:
    """One random float64 problem of cell ``name``; errors of jax.grad of model.loss for each
    (loss, on) of ``combos`` against bptt and against central differences of model.loss."""
    rng = _rng("gradients", name, index, *(COMBOS.index(combo) for combo in combos))
    batch, steps = _size(rng, profile.batch, 2), _size(rng, profile.time)
    input_size, hidden, classes = _size(rng, profile.input_size), _size(rng, profile.hidden), _size(rng, profile.output, 2)
    cell = GRADIENT_CELLS[name](hidden)
    scale = float(rng.choice([0.3, 0.7, 1.5]))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), cell, input_size, classes, dtype=jnp.float64))
    params = _random_like(rng, shapes, scale)
    xs = jnp.asarray(rng.standard_normal((batch, steps, input_size)))
    lengths = None if rng.random() < 1 / 3 else jnp.asarray(_lengths(rng, batch, steps, 0))
    carry = None if rng.random() < 1 / 2 else _random_like(rng, cell.initial_carry((batch,), jnp.float64), 1.0)
    targets = tuple(
        jnp.asarray(rng.standard_normal(((batch,) if on == "last" else (batch, steps)) + (classes,))) if loss == "mse"
        else jnp.asarray(rng.integers(0, classes, (batch,) if on == "last" else (batch, steps)))
        for loss, on in combos
    )
    point = (params, carry)
    flat = np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(point)])
    perturbations = FD_STEP * np.eye(flat.size)
    points = jnp.asarray(np.concatenate([flat + perturbations, flat - perturbations]))

    @jax.jit
    def evaluate(params, carry, xs, targets, lengths, points):
        """The autodiff gradients (params, carry) per (loss, on), and every loss at every point."""
        unravel = ravel_pytree((params, carry))[1]
        losses = [
            lambda p, c, loss=loss, on=on, target=target: model.loss(cell, p, xs, target, loss=loss, on=on, lengths=lengths,
                                                                     initial_carry=c)
            for (loss, on), target in zip(combos, targets)
        ]
        grads = [jax.grad(fn, argnums=(0, 1))(params, carry) for fn in losses]
        at_points = jax.vmap(lambda v: jnp.stack([fn(*unravel(v)) for fn in losses]))(points)
        return grads, at_points

    grads, at_points = evaluate(params, carry, xs, targets, lengths, points)
    at_points = np.asarray(at_points)
    differences = (at_points[: flat.size] - at_points[flat.size:]) / (2 * FD_STEP)  # (P, combos)
    vs_bptt, vs_fd, vs_fd_raw, norm = [], [], [], 0.0
    for k, ((loss, on), target) in enumerate(zip(combos, targets)):
        result = bptt(cell, params, xs, target, loss=loss, on=on, lengths=lengths, initial_carry=carry)
        reference = (result.grads, None if carry is None else result.initial_carry_grad)
        vs_bptt += rel_norm_errors(reference, grads[k])
        numerical = _unravel_numpy(point, differences[:, k])
        vs_fd += rel_norm_errors(numerical, grads[k], floor=FD_FLOOR)
        vs_fd_raw += rel_norm_errors(numerical, grads[k])
        norm = max(norm, _norm(reference))
    return {
        "cell": name, "index": index, "combos": [f"{loss}/{on}" for loss, on in combos], "batch": batch, "time": steps,
        "input": input_size, "hidden": hidden, "classes": classes, "scale": scale,
        "sequence_lengths": None if lengths is None else np.asarray(lengths).tolist(), "initial_carry": carry is not None,
        "values": len(combos) * int(flat.size), "reference_norm": norm,
        "autodiff_vs_bptt": largest(vs_bptt), "autodiff_vs_fd": largest(vs_fd), "autodiff_vs_fd_per_leaf": largest(vs_fd_raw),
    }


# ---------------------------------------------------------------- peers: PyTorch


def torch_case(name: str, dtype: str, index: int, profile: Profile) -> dict:
    """A PyTorch module with random configuration against rnn_jax with its converted weights."""
    import torch

    rng = _rng("torch", name, dtype, index)
    config = _factors(rng, TORCH_FACTORS, index + DTYPES.index(dtype))
    batch, steps = _size(rng, profile.batch, 2), _size(rng, profile.time)
    input_size, hidden = _size(rng, profile.input_size), _size(rng, profile.hidden)
    cls_name, kwargs, kind, nonlinearity = TORCH_MODULES[name]
    tdtype = getattr(torch, dtype)
    torch.manual_seed(int(rng.integers(2**31)))
    num_layers, bidirectional, batch_first = 2 if config["stacked"] else 1, config["bidirectional"], config["batch_first"]
    module = getattr(torch.nn, cls_name)(input_size, hidden, num_layers=num_layers, bias=config["bias"], batch_first=batch_first,
                                         bidirectional=bidirectional, **kwargs).to(tdtype)
    x = torch.randn((batch, steps, input_size) if batch_first else (steps, batch, input_size), dtype=tdtype, requires_grad=True)
    lengths = _lengths(rng, batch, steps, 1) if config["lengths"] else None  # packed sequences need length >= 1
    h0 = c0 = None
    if config["initial_state"]:
        n_states = num_layers * (2 if bidirectional else 1)  # PyTorch's h0: (layers * directions, batch, H)
        h0 = torch.randn(n_states, batch, hidden, dtype=tdtype).requires_grad_()
        c0 = torch.randn(n_states, batch, hidden, dtype=tdtype).requires_grad_() if kind == "lstm" else None
    hx = None if h0 is None else (h0, c0) if kind == "lstm" else h0

    if lengths is None:
        out, state = module(x, hx)
    else:  # packed: the reverse direction starts at each sequence's last valid step, as rnn_jax's
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=batch_first,
                                                         enforce_sorted=False)
        out, state = module(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=steps)
    states = state if kind == "lstm" else (state,)
    torch_loss = (out**2).sum() + sum((s**2).sum() for s in states)
    torch_loss.backward()

    numpy = lambda t: t.detach().numpy()
    state_dict = {key: jnp.asarray(numpy(value)) for key, value in module.state_dict().items()}
    jax_lengths = None if lengths is None else jnp.asarray(lengths)

    def jax_loss(state_dict, x, h0, c0):
        """The same loss through the conversion, so the gradients land on PyTorch's parameters."""
        layer, params = rtorch.from_torch_state_dict(state_dict, kind, nonlinearity=nonlinearity, batch_first=batch_first)
        initial = None if h0 is None else rtorch.carries_from_torch(layer, h0, c0)
        final, ys = layer.apply(params, x, lengths=jax_lengths, initial_carries=initial)
        return jnp.sum(ys**2) + sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(final)), (final, ys)

    args = (jnp.asarray(numpy(x)), None if h0 is None else jnp.asarray(numpy(h0)), None if c0 is None else jnp.asarray(numpy(c0)))
    (_, (final, ys)), (g_sd, g_x, g_h0, g_c0) = jax.jit(jax.value_and_grad(jax_loss, argnums=(0, 1, 2, 3), has_aux=True))(
        state_dict, *args)
    if ys.dtype != jnp.dtype(dtype):
        raise TypeError(f"torch {name}: rnn_jax computed in {ys.dtype}, expected {dtype}")
    layer, _ = rtorch.from_torch_state_dict(state_dict, kind, nonlinearity=nonlinearity, batch_first=batch_first)
    h_n = rtorch.carries_to_torch(layer, final)
    inputs = [rel_max(g_x, numpy(x.grad))]
    if h0 is not None:
        inputs.append(rel_max(g_h0, numpy(h0.grad)))
        if c0 is not None:
            inputs.append(rel_max(g_c0, numpy(c0.grad)))
    return {
        "peer": "torch", "cell": name, "dtype": dtype, "index": index, **config, "batch": batch, "time": steps,
        "input": input_size, "hidden": hidden, "sequence_lengths": None if lengths is None else lengths.tolist(),
        "outputs": rel_max(ys, numpy(out)),
        "final_states": largest(rel_max(ours.numpy(), numpy(theirs))
                                for ours, theirs in zip(h_n if kind == "lstm" else (h_n,), states, strict=True)),
        "parameter_gradients": largest(rel_max(g_sd[key], numpy(p.grad)) for key, p in module.named_parameters()),
        "input_gradients": largest(inputs),
        "reference_scale": min(_scale(numpy(out)), _scale([numpy(p.grad) for p in module.parameters()])),
    }


# ---------------------------------------------------------------- peers: Flax


def flax_case(name: str, dtype: str, index: int, profile: Profile) -> dict:
    """A Flax linen nn.RNN / nn.Bidirectional with random configuration against rnn_jax with its
    converted weights; Flax's gradients by jax.grad through its own module."""
    import flax.linen as nn

    rng = _rng("flax", name, dtype, index)
    config = _factors(rng, FLAX_FACTORS, index + DTYPES.index(dtype))
    batch, steps = _size(rng, profile.batch, 2), _size(rng, profile.time)
    input_size, hidden = _size(rng, profile.input_size), _size(rng, profile.hidden)
    cls_name, activation = FLAX_CELLS[name]
    extra = {} if activation is None else {"activation_fn": getattr(nn, activation)}
    make = lambda: getattr(nn, cls_name)(hidden, param_dtype=jnp.dtype(dtype), **extra)
    time_major, bidirectional = config["time_major"], config["bidirectional"]
    if bidirectional:
        module = nn.Bidirectional(nn.RNN(make()), nn.RNN(make()), return_carry=True, time_major=time_major)
    else:
        module = nn.RNN(make(), return_carry=True, time_major=time_major)
    x = jnp.asarray(rng.standard_normal((steps, batch, input_size) if time_major else (batch, steps, input_size)), dtype)
    lengths = jnp.asarray(_lengths(rng, batch, steps, 1)) if config["lengths"] else None
    valid = np.ones((batch, steps), bool) if lengths is None else np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
    valid = jnp.asarray((valid.T if time_major else valid)[..., None])
    # every parameter redrawn (Flax's biases start at zero): only the shapes of init are needed
    variables = _random_like(rng, jax.eval_shape(module.init, jax.random.key(0), x), 0.5)
    cell_template = jax.eval_shape(lambda: make().initialize_carry(jax.random.key(0), (batch, input_size)))
    carry0 = None
    if config["initial_state"]:
        carries = [_random_like(rng, cell_template, 1.0) for _ in range(2 if bidirectional else 1)]
        carry0 = tuple(carries) if bidirectional else carries[0]
    squares = lambda tree: sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree))

    def flax_loss(variables, x, carry0):
        carry, ys = module.apply(variables, x, initial_carry=carry0, seq_lengths=lengths)
        ys = jnp.where(valid, ys, 0)  # Flax leaves arbitrary values at padded steps, rnn_jax zeros
        return jnp.sum(ys**2) + squares(carry), (carry, ys)

    def ours_loss(variables, x, carry0):
        if bidirectional:
            layer, params = rflax.from_flax(module, variables)
            initial = None if carry0 is None else BidirectionalState(rflax.carry_from_flax(layer.forward, carry0[0]),
                                                                     rflax.carry_from_flax(layer.backward, carry0[1]))
            final, ys = layer.apply(params, x, lengths=lengths, initial_carries=initial)
            carry = (rflax.carry_to_flax(layer.forward, final.forward), rflax.carry_to_flax(layer.backward, final.backward))
        else:
            cell, params = rflax.from_flax(module, variables)
            initial = None if carry0 is None else rflax.carry_from_flax(cell, carry0)
            final, ys = rnn_jax.unroll(cell, params, x, lengths=lengths, initial_carry=initial, time_major=time_major)
            carry = rflax.carry_to_flax(cell, final)
        return jnp.sum(ys**2) + squares(carry), (carry, ys)

    @jax.jit
    def both(variables, x, carry0):
        grad = lambda fn: jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)(variables, x, carry0)
        return grad(flax_loss), grad(ours_loss)

    ((_, (c_ref, y_ref)), g_ref), ((_, (c_our, y_our)), g_our) = both(variables, x, carry0)
    if y_our.dtype != jnp.dtype(dtype):
        raise TypeError(f"flax {name}: rnn_jax computed in {y_our.dtype}, expected {dtype}")
    leafwise = lambda ours, theirs: [
        rel_max(o, t) for o, t in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs), strict=True)]
    for ours, theirs in ((c_our, c_ref), (g_our, g_ref)):
        if jax.tree_util.tree_structure(ours) != jax.tree_util.tree_structure(theirs):
            raise ValueError(f"flax {name}: rnn_jax's and Flax's trees differ")
    return {
        "peer": "flax", "cell": name, "dtype": dtype, "index": index, **config, "batch": batch, "time": steps,
        "input": input_size, "hidden": hidden, "sequence_lengths": None if lengths is None else np.asarray(lengths).tolist(),
        "outputs": rel_max(y_our, y_ref),
        "final_states": largest(leafwise(c_our, c_ref)),
        "parameter_gradients": largest(leafwise(g_our[0], g_ref[0])),
        "input_gradients": largest(leafwise(g_our[1:], g_ref[1:])),
        "reference_scale": min(_scale(y_ref), _scale(g_ref[0])),
    }


# ---------------------------------------------------------------- layers: autodiff vs the chained BPTT reference


def _hand_forward(layer, params, xs, lengths, carry):
    """A cell or bidirectional layer's outputs (B, T, H) by :func:`rnn_jax.bptt.forward` (batch-major)."""
    if isinstance(layer, Cell):
        return jnp.asarray(forward(layer, params, xs, lengths=lengths, initial_carry=carry).outputs)
    fw = forward(layer.forward, params.forward, xs, lengths=lengths, initial_carry=carry.forward)
    bw = forward(layer.backward, params.backward, xs, lengths=lengths, initial_carry=carry.backward, reverse=True)
    return jnp.asarray(np.concatenate([fw.outputs, bw.outputs], axis=-1))


def _hand_backward(layer, params, xs, d_outputs, lengths, carry):
    """``(∂E/∂params, ∂E/∂initial carry, ∂E/∂xs)`` of a cell or bidirectional layer from ∂E/∂outputs:
    a bidirectional layer's backward cell runs in reverse on the second half of the output
    cotangent, and the two directions' input cotangents add (both read the same xs)."""
    if isinstance(layer, Cell):
        g = bptt_outputs(layer, params, xs, d_outputs, lengths=lengths, initial_carry=carry)
        return g.params, g.initial_carry, g.inputs
    split = layer.forward.hidden_size
    fw = bptt_outputs(layer.forward, params.forward, xs, d_outputs[..., :split], lengths=lengths, initial_carry=carry.forward)
    bw = bptt_outputs(layer.backward, params.backward, xs, d_outputs[..., split:], lengths=lengths,
                      initial_carry=carry.backward, reverse=True)
    return (BidirectionalParams(fw.params, bw.params), BidirectionalState(fw.initial_carry, bw.initial_carry),
            fw.inputs + bw.inputs)


def _hand_network(network, params, xs, d_outputs, lengths, carries):
    """Outputs and ``(∂E/∂params, ∂E/∂initial carries, ∂E/∂xs)`` of a network, layer by layer from
    the top down: layer k's input cotangent is layer k-1's output cotangent."""
    if not isinstance(network, Stacked):
        return (_hand_forward(network, params, xs, lengths, carries),
                _hand_backward(network, params, xs, d_outputs, lengths, carries))
    inputs = [xs]
    for layer, p, c in zip(network.layers, params, carries):
        inputs.append(_hand_forward(layer, p, inputs[-1], lengths, c))
    grads, carry_grads, d = [None] * len(params), [None] * len(params), d_outputs
    for k in range(len(params) - 1, -1, -1):
        grads[k], carry_grads[k], d = _hand_backward(network.layers[k], params[k], inputs[k], d, lengths, carries[k])
    return inputs[-1], (tuple(grads), tuple(carry_grads), d)


def layers_case(name: str, index: int, network_name: str, profile: Profile) -> dict:
    """A random stacked / bidirectional network of cell ``name`` (float64): jax.grad of
    Σ outputs ⊙ C through layers.apply against the chained hand-written BPTT."""
    rng = _rng("layers", name, network_name, index)
    make = GRADIENT_CELLS[name]
    hidden = lambda: _size(rng, profile.hidden)
    time_major = bool(rng.integers(2))
    if network_name == "stacked":
        network = layers.stacked([make(hidden()), make(hidden())], time_major=time_major)
    elif network_name == "bidirectional":
        network = layers.bidirectional(make(hidden()), make(hidden()), time_major=time_major)
    else:
        network = layers.stacked([layers.bidirectional(make(hidden()), make(hidden())) for _ in range(2)], time_major=time_major)
    batch, steps, input_size = _size(rng, profile.batch, 2), _size(rng, profile.time), _size(rng, profile.input_size)
    scale = float(rng.choice([0.3, 0.7, 1.5]))
    params = _random_like(rng, jax.eval_shape(lambda: network.init(jax.random.key(0), input_size, jnp.float64)), scale)
    carries = _random_like(rng, network.initial_carry((batch,), jnp.float64), 1.0)
    lengths = _lengths(rng, batch, steps, 0)
    xs = rng.standard_normal((batch, steps, input_size))  # batch-major; transposed for a time-major network
    c = rng.standard_normal((batch, steps, layers.output_size(network)))
    to_layout = (lambda a: jnp.asarray(np.swapaxes(a, 0, 1))) if time_major else jnp.asarray

    def loss(p, h0, x):
        _, outputs = network.apply(p, x, lengths=jnp.asarray(lengths), initial_carries=h0)
        return jnp.sum(outputs * to_layout(c)), outputs

    (_, outputs), (g_params, g_carries, g_xs) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        params, carries, to_layout(xs))
    valid = np.arange(steps)[None, :] < lengths[:, None]
    d_outputs = jnp.asarray(np.where(valid[..., None], c, 0.0))  # padded outputs are constant zeros
    hand_outputs, hand = _hand_network(network, params, jnp.asarray(xs), d_outputs, jnp.asarray(lengths), carries)
    batch_major = (lambda a: np.swapaxes(np.asarray(a), 0, 1)) if time_major else np.asarray
    errors = rel_norm_errors(hand, (g_params, g_carries, batch_major(g_xs)))
    return {
        "cell": name, "network": network_name, "index": index, "time_major": time_major, "batch": batch, "time": steps,
        "input": input_size, "scale": scale, "sequence_lengths": lengths.tolist(),
        "outputs": largest(rel_norm_errors(hand_outputs, batch_major(outputs))),
        "gradients": largest(errors),
        "reference_norm": _norm(hand),
    }


# ---------------------------------------------------------------- aggregation and report


def _worst_rows(cases, keys, figures, totals=()) -> list:
    """One row per value of ``keys`` (in order of appearance): the case count, the largest of each
    of ``figures`` and the sum of each of ``totals`` over its cases."""
    rows: dict = {}
    for case in cases:
        row = rows.setdefault(tuple(case[k] for k in keys), {**{k: case[k] for k in keys}, "cases": 0})
        row["cases"] += 1
        for figure in figures:
            row[figure] = largest([row.get(figure, 0.0), case[figure]])
        for total in totals:
            row[total] = row.get(total, 0) + case[total]
    return list(rows.values())


def _ok(value, tolerance) -> bool:
    return bool(np.isfinite(value) and value <= tolerance)


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _e(value) -> str:
    return f"{value:.2e}"


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("jax", "jaxlib", "numpy", "torch", "flax"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def run(seeds: Optional[int] = None, quick: bool = False, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Measure every figure; return ``{meta, tolerances, gradients, peers, layers, skipped, cases}``
    (rows as printed, ``cases`` every case's record).

    Runs with 64-bit types enabled (the float64 figures) and strict dtype promotion, as the
    tests do, so that no silent upcast turns a float32 figure into a float64 one; both are
    context managers here, JAX's global configuration is left as it was.
    """
    profile = PROFILES["quick" if quick else "full"]
    seeds = profile.seeds if seeds is None else seeds
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"seeds: expected a positive int, got {seeds!r}")
    start = time.perf_counter()
    cases: dict = {"gradients": [], "peers": [], "layers": []}
    skipped = []
    with jax.enable_x64(True), jax.numpy_dtype_promotion("strict"):
        for k, name in enumerate(profile.cells("gradients", GRADIENT_CELLS)):
            progress(f"gradients: {name}")
            for index in range(seeds):
                combos = (COMBOS[(k + index) % len(COMBOS)],) if profile.rotate else COMBOS
                cases["gradients"].append(gradient_case(name, index, profile, combos))
        for peer, names, case in (("torch", TORCH_MODULES, torch_case), ("flax", FLAX_CELLS, flax_case)):
            if importlib.util.find_spec(peer) is None:
                skipped.append(peer)
                continue
            for k, name in enumerate(profile.cells(peer, names)):
                progress(f"{peer}: {name}")
                for index in range(seeds):
                    dtypes = (DTYPES[(k + index) % len(DTYPES)],) if profile.rotate else DTYPES
                    cases["peers"] += [case(name, dtype, index, profile) for dtype in dtypes]
        for k, name in enumerate(profile.cells("layers", GRADIENT_CELLS)):
            progress(f"layers: {name}")
            # the networks cycle per cell, shifted per cell, so that one seed already sees each network
            cases["layers"] += [layers_case(name, index, NETWORKS[(index + k) % len(NETWORKS)], profile)
                                for index in range(seeds)]
        backend = jax.default_backend()

    gradients = _worst_rows(cases["gradients"], ("cell",), ("autodiff_vs_bptt", "autodiff_vs_fd", "autodiff_vs_fd_per_leaf",
                                                           "reference_norm"), ("values",))
    peers = _worst_rows(cases["peers"], ("peer", "cell", "dtype"),
                        ("outputs", "final_states", "parameter_gradients", "input_gradients", "reference_scale"))
    for row in peers:
        row["tolerance"] = TOLERANCES[f"peer_{row['dtype']}"]
    layer_rows = _worst_rows(cases["layers"], ("cell", "network"), ("outputs", "gradients", "reference_norm"))
    profile_sizes = {k: v for k, v in profile._asdict().items() if k not in ("name", "seeds", "rotate", "subsets")}
    return {
        "meta": {"profile": profile.name, "seeds": seeds, "rotate": profile.rotate, "subsets": profile.subsets,
                 "sizes_at_most": profile_sizes, "fd_step": FD_STEP, "fd_floor": FD_FLOOR,
                 "versions": _versions(), "backend": backend,
                 "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "wall_s": round(time.perf_counter() - start, 1)},
        "tolerances": dict(TOLERANCES), "gradients": gradients, "peers": peers, "layers": layer_rows,
        "skipped": skipped, "cases": cases,
    }


def failures(result: dict) -> list:
    """Every figure that is not finite or above its tolerance, as ``"part row: figure = value > tolerance"``."""
    found = []
    check = lambda where, figure, value, tolerance: None if _ok(value, tolerance) else found.append(
        f"{where}: {figure} = {value:.3g} > {tolerance:g}")
    for row in result["gradients"]:
        check(f"gradients {row['cell']}", "autodiff vs bptt", row["autodiff_vs_bptt"], TOLERANCES["autodiff_vs_bptt"])
        check(f"gradients {row['cell']}", "autodiff vs fd", row["autodiff_vs_fd"], TOLERANCES["autodiff_vs_fd"])
    for row in result["peers"]:
        for figure in ("outputs", "final_states", "parameter_gradients", "input_gradients"):
            check(f"{row['peer']} {row['cell']} {row['dtype']}", figure, row[figure], row["tolerance"])
    for row in result["layers"]:
        for figure in ("outputs", "gradients"):
            check(f"layers {row['cell']} {row['network']}", figure, row[figure], TOLERANCES["layers_vs_chained_bptt"])
    return found


def report(result: dict, command: str) -> str:
    """The markdown report: command, versions, the three tables, the verdict."""
    meta, tol = result["meta"], result["tolerances"]
    versions = ", ".join(f"{k} {v if v else 'not installed'}" for k, v in meta["versions"].items())
    sizes = ", ".join(f"{k} ≤ {v}" for k, v in meta["sizes_at_most"].items())
    mark = lambda value, tolerance: _e(value) + ("" if _ok(value, tolerance) else " **FAIL**")
    out = [
        "# rnn_jax numerical agreement", "",
        f"Command: `{command}`  ", f"Versions: {versions}; JAX backend {meta['backend']}  ",
        f"Profile: {meta['profile']}, {meta['seeds']} random configuration(s) per cell (and dtype); sizes {sizes}"
        + "".join(f"; {part} only for {', '.join(names)}" for part, names in (meta["subsets"] or {}).items())
        + f"; {meta['date']}", "",
        "## Gradients: autodiff against hand-written BPTT and central differences (float64)", "",
        f"`jax.grad` of `rnn_jax.model.loss` for mse/xent on the last/every step, over the parameters (readout included) "
        f"and, when given, the initial carry; random sizes, N(0, s²) parameters with s ∈ {{0.3, 0.7, 1.5}} (biases "
        f"included), lengths with padding (length 0 included), random initial carries. Relative error per leaf "
        f"‖g_autodiff − g_ref‖₂ / ‖g_ref‖₂ (tests/test_bptt.py), the largest over leaves, (loss, on) and cases; "
        f"g_ref = `rnn_jax.bptt.bptt` (tolerance {tol['autodiff_vs_bptt']:g}) or central differences "
        f"(E(w + h) − E(w − h)) / 2h of `model.loss`, h = {meta['fd_step']:g}. Their round-off, about ε|E|/h per entry, "
        f"swamps a leaf whose gradient has vanished (an initial carry many steps back), so against central differences "
        f"the denominator is max(‖g_ref‖₂, {meta['fd_floor']:g} × the largest leaf's ‖g_ref‖₂) (tolerance "
        f"{tol['autodiff_vs_fd']:g}); the last column is the plain per-leaf figure, for information."
        + (" Quick profile: one (loss, on) pair per cell, in turn." if meta["rotate"] else ""), "",
        _table(["cell", "cases", "gradient entries", "vs BPTT", "vs central differences", "vs central differences, per leaf"],
               [[r["cell"], r["cases"], r["values"], mark(r["autodiff_vs_bptt"], tol["autodiff_vs_bptt"]),
                 mark(r["autodiff_vs_fd"], tol["autodiff_vs_fd"]), _e(r["autodiff_vs_fd_per_leaf"])]
                for r in result["gradients"]]), "",
        "## Peers: rnn_jax with converted weights against PyTorch and Flax", "",
        "Largest relative difference max|ours − theirs| / max|theirs| per tensor (tests/test_interop.py) over the "
        "cases: outputs (zero at padded steps), final states, gradients of Σ outputs² + Σ final states² with respect to "
        "the peer's parameters (through the conversion) and to the inputs and initial states. PyTorch: nn.RNN/LSTM/GRU, "
        "1 or 2 layers, bidirectional or not, with or without bias, batch_first or not, packed lengths or none, "
        "initial state or zeros; Flax linen: the cell in nn.RNN or nn.Bidirectional, seq_lengths or none, initial "
        f"carry or zeros, time_major or not. Tolerance {tol['peer_float32']:g} (float32), {tol['peer_float64']:g} (float64)."
        + (" Quick profile: one dtype per cell, in turn." if meta["rotate"] else ""),
        "",
    ]
    if result["peers"]:
        out.append(_table(["peer", "cell", "dtype", "cases", "outputs", "final states", "parameter gradients",
                           "input/initial-state gradients"],
                          [[r["peer"], r["cell"], r["dtype"], r["cases"]] + [mark(r[f], r["tolerance"]) for f in
                           ("outputs", "final_states", "parameter_gradients", "input_gradients")] for r in result["peers"]]))
    out += [f"\n{peer}: not installed, skipped." for peer in result["skipped"]]
    out += [
        "", "## Layers: autodiff through rnn_jax.layers against the chained BPTT reference (float64)", "",
        "E = Σ outputs ⊙ C (C random): `jax.grad` through `layers.apply` against `rnn_jax.bptt.bptt_outputs` chained "
        "from the top layer down (tests/test_bptt_layers.py); random hidden sizes per layer, random parameters, initial "
        "carries, lengths with padding (length 0 included), batch- or time-major. Relative error per leaf as in the "
        f"gradients table, the largest over parameters, initial carries and inputs. Tolerance {tol['layers_vs_chained_bptt']:g}.",
        "",
        _table(["cell", "network", "cases", "outputs", "gradients"],
               [[r["cell"], r["network"], r["cases"], mark(r["outputs"], tol["layers_vs_chained_bptt"]),
                 mark(r["gradients"], tol["layers_vs_chained_bptt"])] for r in result["layers"]]),
        "",
    ]
    bad = failures(result)
    out.append(f"Wall time {meta['wall_s']:.1f} s. " + ("Every figure is finite and within its tolerance." if not bad else
                                                        f"{len(bad)} figure(s) above tolerance: " + "; ".join(bad)))
    return "\n".join(out)


def _to_json(value):
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.agreement", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=None,
                   help=f"random configurations per cell and dtype (default {PROFILES['full'].seeds}, "
                        f"--quick {PROFILES['quick'].seeds})")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one configuration: seconds, a smoke test")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every row and case to this JSON file")
    args = p.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        p.error(f"--seeds: expected a positive number, got {args.seeds}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.agreement", *(sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    result = run(args.seeds, args.quick, progress=lambda line: print(f"[agreement {time.perf_counter() - start:6.1f} s] {line}",
                                                                      file=sys.stderr, flush=True))
    result["meta"]["command"] = command
    print(report(result, command))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_to_json(result), f, indent=1)
    return 1 if failures(result) else 0


if __name__ == "__main__":
    sys.exit(main())
