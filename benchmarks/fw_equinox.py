"""Equinox: ``eqx.nn.LSTMCell`` / ``eqx.nn.GRUCell`` over ``lax.scan``, ``vmap`` over the batch.

Equinox cells are unbatched, so the sequence function is written for one
sequence and ``jax.vmap`` batches it (the library's idiom). ``equinox.nn`` has no
Elman cell, so the tanh-RNN workloads (W1, W2) are not applicable. Weights use
PyTorch's layout ``(out, in)``; the GRU keeps ``bias_n`` apart as PyTorch does.
"""

from __future__ import annotations

import numpy as np

from benchmarks.bench import Bench, NotApplicable, jax_value_and_grad_bench
from benchmarks.workloads import SeqConfig


def variants(cfg: SeqConfig) -> list:
    return ["vmap-scan"]


def build(cfg: SeqConfig, w: dict, d: dict, variant: str) -> Bench:
    if cfg.cell not in ("lstm", "gru"):
        raise NotApplicable("equinox.nn has no Elman (tanh RNN) cell")
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    key_cell, key_out = jax.random.split(jax.random.key(0))
    t = lambda a: jnp.asarray(np.ascontiguousarray(np.asarray(a).T))
    if cfg.cell == "lstm":
        cell = eqx.nn.LSTMCell(cfg.input_size, cfg.hidden_size, key=key_cell)
        cell = eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias), cell, (t(w["w_ih"]), t(w["w_hh"]), jnp.asarray(w["b"])))
    else:
        cell = eqx.nn.GRUCell(cfg.input_size, cfg.hidden_size, key=key_cell)
        cell = eqx.tree_at(
            lambda c: (c.weight_ih, c.weight_hh, c.bias, c.bias_n),
            cell,
            (t(w["w_ih"]), t(w["w_hh"]), jnp.asarray(w["b"]), jnp.asarray(w["b_hn"])),
        )
    readout = eqx.nn.Linear(cfg.hidden_size, cfg.output_size, key=key_out)
    readout = eqx.tree_at(lambda l: (l.weight, l.bias), readout, (t(w["w_out"]), jnp.asarray(w["b_out"])))
    net = (cell, readout)
    params, static = eqx.partition(net, eqx.is_array)
    lstm = cfg.cell == "lstm"
    h = cfg.hidden_size

    def sequence(cell, readout, xs):  # xs: (T, I) -> (T, O)
        def body(state, x):
            state = cell(x, state)
            return state, state[0] if lstm else state

        init = (jnp.zeros(h, xs.dtype), jnp.zeros(h, xs.dtype)) if lstm else jnp.zeros(h, xs.dtype)
        _, hs = jax.lax.scan(body, init, xs)
        return jax.vmap(readout)(hs)

    def loss(p, xs):
        cell, readout = eqx.combine(p, static)
        ys = jax.vmap(sequence, in_axes=(None, None, 0))(cell, readout, xs)
        return jnp.mean(jnp.sum(ys * ys, axis=-1))

    if cfg.loss != "sq_every":
        raise NotApplicable(f"equinox: loss {cfg.loss!r} not built")
    return jax_value_and_grad_bench(loss, params, jnp.asarray(d["xs"]), info={"cell": type(cell).__name__})
