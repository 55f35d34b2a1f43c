"""Flax linen: ``nn.RNN(cell)`` (an ``nn.scan`` over the cell) and an ``nn.Dense`` readout.

Cells: ``SimpleCell`` (tanh RNN), ``LSTMCell`` and ``OptimizedLSTMCell`` (variants
of the LSTM workloads), ``GRUCell``. The shared weights are split into Flax's
per-gate ``Dense`` kernels; Flax sums the input and recurrent projections, so
only one of each pair carries the bias.
"""

from __future__ import annotations

import numpy as np

from benchmarks.bench import Bench, jax_value_and_grad_bench
from benchmarks.workloads import SeqConfig

CELLS = {"rnn": ("SimpleCell",), "lstm": ("LSTMCell", "OptimizedLSTMCell"), "gru": ("GRUCell",)}


def variants(cfg: SeqConfig) -> list:
    return list(CELLS[cfg.cell])


def cell_params(cfg: SeqConfig, w: dict) -> dict:
    """The shared weights as a Flax cell's parameter dict (kernels ``(in, out)``)."""
    h = cfg.hidden_size
    block = lambda a, k: np.ascontiguousarray(a[..., k * h:(k + 1) * h])
    if cfg.cell == "rnn":
        return {"i": {"kernel": w["w_ih"], "bias": w["b"]}, "h": {"kernel": w["w_hh"]}}
    if cfg.cell == "lstm":
        p = {}
        for k, gate in enumerate("ifgo"):
            p["i" + gate] = {"kernel": block(w["w_ih"], k)}
            p["h" + gate] = {"kernel": block(w["w_hh"], k), "bias": block(w["b"], k)}
        return p
    return {
        "ir": {"kernel": block(w["w_ih"], 0), "bias": block(w["b"], 0)},
        "iz": {"kernel": block(w["w_ih"], 1), "bias": block(w["b"], 1)},
        "in": {"kernel": block(w["w_ih"], 2), "bias": block(w["b"], 2)},
        "hr": {"kernel": block(w["w_hh"], 0)},
        "hz": {"kernel": block(w["w_hh"], 1)},
        "hn": {"kernel": block(w["w_hh"], 2), "bias": w["b_hn"]},
    }


def build(cfg: SeqConfig, w: dict, d: dict, variant: str) -> Bench:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    if variant not in CELLS[cfg.cell]:
        raise ValueError(f"unknown flax variant {variant!r} for {cfg.cell}; expected one of {CELLS[cfg.cell]}")
    cell_cls = getattr(nn, variant)
    last = cfg.loss == "xent_last"

    class Net(nn.Module):
        @nn.compact
        def __call__(self, xs):
            ys = nn.RNN(cell_cls(cfg.hidden_size, name="cell"))(xs)
            if last:
                ys = ys[:, -1]
            return nn.Dense(cfg.output_size, name="readout")(ys)

    net = Net()
    xs = jnp.asarray(d["xs"])
    template = net.init(jax.random.key(0), xs[:1])["params"]
    ours = {"cell": cell_params(cfg, w), "readout": {"kernel": w["w_out"], "bias": w["b_out"]}}
    shapes = lambda t: jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), t)
    if shapes(template) != shapes(ours):
        raise AssertionError(f"flax parameter layout changed: expected {shapes(template)}, built {shapes(ours)}")
    params = jax.tree_util.tree_map(jnp.asarray, ours)

    if last:
        labels = jnp.asarray(d["labels"])

        def loss(p, xs, labels):
            logits = net.apply({"params": p}, xs)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

        return jax_value_and_grad_bench(loss, params, xs, labels, info={"cell": variant})

    def loss(p, xs):
        ys = net.apply({"params": p}, xs)
        return jnp.mean(jnp.sum(ys * ys, axis=-1))

    return jax_value_and_grad_bench(loss, params, xs, info={"cell": variant})
