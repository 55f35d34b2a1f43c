"""PyTorch (CPU): ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` plus ``nn.Linear``, ``loss.backward()``.

The folded bias goes into ``bias_ih`` and ``bias_hh`` is zero (for the GRU,
``bias_hh = [0, 0, b_hn]``), so the function is the same as rnn_jax's. Each
timed step sets the gradients to None, runs forward and backward; there is
nothing to wait on for the CPU (``torch.cuda.synchronize`` if it ran on a GPU).
"""

from __future__ import annotations

import numpy as np

from benchmarks.bench import Bench
from benchmarks.workloads import SeqConfig


def variants(cfg: SeqConfig) -> list:
    return ["eager"]


def _sync(device):
    import torch

    if device.type == "cuda":
        return lambda out: torch.cuda.synchronize()
    return lambda out: None


def _model(cfg: SeqConfig, w: dict, device):
    import torch
    from torch import nn

    rnn_cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cfg.cell]
    rnn = rnn_cls(cfg.input_size, cfg.hidden_size, batch_first=True)
    readout = nn.Linear(cfg.hidden_size, cfg.output_size)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    b_hh = np.zeros(cfg.gates * cfg.hidden_size, np.float32)
    if cfg.cell == "gru":
        b_hh[2 * cfg.hidden_size:] = w["b_hn"]
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(t(w["w_ih"].T))
        rnn.weight_hh_l0.copy_(t(w["w_hh"].T))
        rnn.bias_ih_l0.copy_(t(w["b"]))
        rnn.bias_hh_l0.copy_(t(b_hh))
        readout.weight.copy_(t(w["w_out"].T))
        readout.bias.copy_(t(w["b_out"]))
    return rnn.to(device), readout.to(device)


def _loss(cfg: SeqConfig, rnn, readout, xs, labels):
    import torch.nn.functional as F

    hs, _ = rnn(xs)
    if cfg.loss == "xent_last":
        return F.cross_entropy(readout(hs[:, -1]), labels)
    ys = readout(hs)
    return (ys * ys).sum(-1).mean()


def _tensors(cfg: SeqConfig, d: dict, device):
    import torch

    xs = torch.from_numpy(d["xs"]).to(device)
    labels = torch.from_numpy(d["labels"].astype(np.int64)).to(device) if cfg.loss == "xent_last" else None
    return xs, labels


def build(cfg: SeqConfig, w: dict, d: dict, variant: str) -> Bench:
    import torch

    device = torch.device("cpu")
    rnn, readout = _model(cfg, w, device)
    params = list(rnn.parameters()) + list(readout.parameters())
    xs, labels = _tensors(cfg, d, device)

    def step():
        for p in params:
            p.grad = None
        loss = _loss(cfg, rnn, readout, xs, labels)
        loss.backward()
        return loss.detach()

    return Bench(step=step, sync=_sync(device), loss_of=float, info={"threads": torch.get_num_threads()})


def build_seeds(cfg: SeqConfig, ws: list, ds: list, variant: str) -> Bench:
    """W5: a Python loop over the members, each with its own model and ``torch.optim.SGD``."""
    import torch

    device = torch.device("cpu")
    members = []
    for w, d in zip(ws, ds):
        rnn, readout = _model(cfg, w, device)
        opt = torch.optim.SGD(list(rnn.parameters()) + list(readout.parameters()), lr=cfg.learning_rate)
        members.append((rnn, readout, opt) + _tensors(cfg, d, device))

    def step():
        losses = []
        for rnn, readout, opt, xs, labels in members:
            opt.zero_grad(set_to_none=True)
            loss = _loss(cfg, rnn, readout, xs, labels)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return losses

    return Bench(
        step=step,
        sync=_sync(device),
        loss_of=lambda losses: float(sum(float(l) for l in losses) / len(losses)),
        info={"threads": torch.get_num_threads(), "members": len(members)},
    )
