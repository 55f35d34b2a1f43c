"""Workload definitions: sizes, the shared weights and data, matrix FLOP counts.

Every framework builds its model from the same NumPy weights, stored in
rnn_jax's layout (matrices ``(in, out)``, gate blocks in PyTorch's order
``i, f, g, o`` / ``r, z, n``, one folded bias, GRU's ``b_hn`` apart), so all of
them compute the same function and their losses can be compared.

Workloads (float32, one forward plus backward pass, gradients for all parameters):

* ``W1`` the paper's task: tanh RNN, 6 one-hot inputs, 50 units, batch 20,
  T = 200, a readout to 4 classes on the last step, softmax cross-entropy;
* ``W2``/``W3``/``W4``: tanh RNN / LSTM / GRU, 128 inputs, 256 units, batch 64,
  T = 100, a 256 -> 128 readout at every step, loss = mean over batch and time of
  the sum of squared outputs;
* ``W5`` W1's training step (gradient + SGD update) for 64 independent members;
* ``MEM`` W3 at long T, peak memory with and without remat;
* ``COMPILE`` the first call of W3's gradient in a fresh process;
* ``LIN`` linear recurrences ``h_t = a * h_{t-1} + x_t`` (see :mod:`benchmarks.linear`);
* ``MM`` the device's matrix-product rate, for the floors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

import numpy as np

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CELL_LABEL = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU"}

SEQUENCE_WORKLOADS = ("W1", "W2", "W3", "W4")
ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "MEM", "COMPILE", "LIN")
FRAMEWORKS = ("rnn_jax", "jax", "flax", "equinox", "torch")
# the Python module each framework needs (besides jax)
FRAMEWORK_MODULES = {"rnn_jax": "rnn_jax", "jax": "jax", "flax": "flax", "equinox": "equinox", "torch": "torch"}


@dataclass(frozen=True)
class SeqConfig:
    """One sequence model and its batch.

    loss: ``"xent_last"`` (softmax cross-entropy of the readout at the last step,
    integer labels) or ``"sq_every"`` (readout at every step, mean over batch and
    time of the sum of squared outputs).
    """

    name: str
    cell: str  # "rnn" | "lstm" | "gru"
    input_size: int
    hidden_size: int
    batch: int
    time: int
    output_size: int
    loss: str
    one_hot: bool = False
    members: int = 1  # W5: independent members trained at once
    learning_rate: float = 0.01

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    def describe(self) -> str:
        what = f"{CELL_LABEL[self.cell]} I={self.input_size} H={self.hidden_size} B={self.batch} T={self.time} O={self.output_size}"
        return what + (f" x{self.members} members" if self.members > 1 else "")

    def as_dict(self) -> dict:
        return asdict(self)


FULL = {
    "W1": SeqConfig("W1", "rnn", 6, 50, 20, 200, 4, "xent_last", one_hot=True),
    "W2": SeqConfig("W2", "rnn", 128, 256, 64, 100, 128, "sq_every"),
    "W3": SeqConfig("W3", "lstm", 128, 256, 64, 100, 128, "sq_every"),
    "W4": SeqConfig("W4", "gru", 128, 256, 64, 100, 128, "sq_every"),
    "W5": SeqConfig("W5", "rnn", 6, 50, 20, 200, 4, "xent_last", one_hot=True, members=64),
}
QUICK = {
    "W1": SeqConfig("W1", "rnn", 6, 16, 4, 20, 4, "xent_last", one_hot=True),
    "W2": SeqConfig("W2", "rnn", 16, 32, 8, 12, 16, "sq_every"),
    "W3": SeqConfig("W3", "lstm", 16, 32, 8, 12, 16, "sq_every"),
    "W4": SeqConfig("W4", "gru", 16, 32, 8, 12, 16, "sq_every"),
    "W5": SeqConfig("W5", "rnn", 6, 16, 4, 20, 4, "xent_last", one_hot=True, members=4),
}
MEM_TIMES = {"full": (1000, 4000), "quick": (50, 200)}
LIN_TIMES = {"full": (1_000, 10_000, 100_000, 1_000_000), "quick": (64, 1_000)}
LIN_WIDTHS = {"full": (1, 64), "quick": (1, 8)}  # scalar and diagonal
MATMUL_SIZE = {"full": 2048, "quick": 256}


def config(workload: str, profile: str, time: Optional[int] = None) -> SeqConfig:
    """The model of a sequence workload; ``MEM`` and ``COMPILE`` use W3's (``time`` overrides T)."""
    table = QUICK if profile == "quick" else FULL
    cfg = table["W3" if workload in ("MEM", "COMPILE") else workload]
    if workload in ("MEM", "COMPILE"):
        cfg = replace(cfg, name=workload)
    return cfg if time is None else replace(cfg, time=int(time))


# ---------------------------------------------------------------- shared weights and data


def weights(cfg: SeqConfig, seed: int = 0) -> dict:
    """PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for everything, in rnn_jax's layout, float32.

    Keys: ``w_ih (I, G*H)``, ``w_hh (H, G*H)``, ``b (G*H,)``, ``b_hn (H,)`` (GRU only),
    ``w_out (H, O)``, ``b_out (O,)``.
    """
    rng = np.random.default_rng(seed)
    i, h, g, o = cfg.input_size, cfg.hidden_size, cfg.gates, cfg.output_size
    bound = 1.0 / np.sqrt(h)
    u = lambda *shape: rng.uniform(-bound, bound, shape).astype(np.float32)
    w = {"w_ih": u(i, g * h), "w_hh": u(h, g * h), "b": u(g * h)}
    if cfg.cell == "gru":
        w["b_hn"] = u(h)
    w["w_out"] = u(h, o)
    w["b_out"] = u(o)
    return w


def data(cfg: SeqConfig, seed: int = 1) -> dict:
    """``xs (B, T, I)`` float32 (one-hot symbols for W1/W5, else N(0, 1)); W1/W5 also ``labels (B,)`` int32."""
    rng = np.random.default_rng(seed)
    b, t, i = cfg.batch, cfg.time, cfg.input_size
    if cfg.one_hot:
        xs = np.eye(i, dtype=np.float32)[rng.integers(0, i, (b, t))]
    else:
        xs = rng.standard_normal((b, t, i)).astype(np.float32)
    out = {"xs": xs}
    if cfg.loss == "xent_last":
        out["labels"] = rng.integers(0, cfg.output_size, (b,)).astype(np.int32)
    return out


def member_weights(cfg: SeqConfig) -> list:
    """W5: each member's own weights (seeds 1000 + m)."""
    return [weights(cfg, 1000 + m) for m in range(cfg.members)]


def member_data(cfg: SeqConfig) -> list:
    """W5: each member's own minibatch (seeds 2000 + m)."""
    return [data(cfg, 2000 + m) for m in range(cfg.members)]


# ---------------------------------------------------------------- FLOPs


def matrix_flops(cfg: SeqConfig) -> float:
    """Matrix-product FLOPs of one forward plus backward pass (2 per multiply-add).

    Forward: the input projection ``x @ w_ih`` and the recurrent product
    ``h @ w_hh`` at every step, the readout once (last step) or at every step.
    Backward: the input projection needs only its weight gradient (the inputs are
    data), the recurrent product and the readout need both gradients. W5 counts
    every member. Elementwise work (gates, tanh, the loss) is not counted.
    """
    b, t, i, h, gh, o = cfg.batch, cfg.time, cfg.input_size, cfg.hidden_size, cfg.gates * cfg.hidden_size, cfg.output_size
    projection = 2.0 * b * t * i * gh
    recurrent = 2.0 * b * t * h * gh
    readout = 2.0 * b * h * o * (1 if cfg.loss == "xent_last" else t)
    return cfg.members * (2 * projection + 3 * recurrent + 3 * readout)
