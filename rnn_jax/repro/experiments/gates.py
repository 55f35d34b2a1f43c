"""Gates against vanishing gradients (a short RNN tutorial on BPTT, clipping, LSTM and GRU; the notes "RNN的几个难点"): tanh RNN vs LSTM vs GRU.

What it shows. The documents say that a plain RNN's gradient through time is a
product of Jacobians ``diag(f') W_hh`` that shrinks geometrically when ``W_hh``'s
spectral radius is below 1 (the notes "RNN的几个难点"), and that the LSTM and the GRU avoid
this: the LSTM's cell state is carried by ``c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t``, whose
derivative along the carry is the forget gate itself -- hence the advice to
initialise the forget gate open (a bias of 1) -- and the GRU's
``h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}`` has a similar gated additive path. Here
the three cells (the LSTM with forget-gate bias 0 and 1) learn the same long-range
tasks at a few lengths, with the same optimizer, hidden size and seeds, and we
measure

* the gradient over time ``‖δ_k‖ = ‖∂E/∂h_k‖`` for ``k = 1..T`` (total derivative,
  :func:`rnn_jax.diagnostics.state_gradients`, batch mean) at initialisation and
  after training, and the ratio ``‖δ_1‖ / ‖δ_T‖``: how much of the loss's gradient
  reaches the first step (for the LSTM also ``‖∂E/∂c_k‖``);
* the success rate (under 1 % of fresh sequences wrong, Wilson 95 % interval over
  seeds), the final error and the number of updates to success.

Every cell starts from PyTorch's initialisation (all weights and biases
U(−1/√H, 1/√H)), the forget-gate bias shifted by 0 or 1 for the LSTM; the two
LSTM variants of a seed share every other initial value and the training data.
Training: the engine (:mod:`rnn_jax.repro.train`), a fresh minibatch of 20 per update,
global-norm clipping at 1 then Adam (lr 0.01; the documents name no optimizer for
gated cells, and Adam trains all three in a CPU budget), success checked on fresh
sequences every ``chunk_steps`` updates, no regulariser.

Measured (quick: temporal order, H = 32, 4 seeds). At initialisation the gradient
reaching step 1 shrinks geometrically for every cell, by a per-step factor of
about 0.57 for the tanh RNN (``ρ(W_hh)`` ≈ 0.58 at this initialisation), 0.63 for
the GRU and the forget-bias-0 LSTM (gates near σ(0) = 0.5) and 0.82 for the
forget-bias-1 LSTM (forget gates near σ(1) = 0.73): ``‖δ_1‖/‖δ_T‖`` at T = 50 is
1.5e-12 (RNN), 2e-10 (GRU),
6e-11 (LSTM, bias 0) and 6e-5 (LSTM, bias 1). So at initialisation only the open
forget gate is "flatter"; the GRU starts as vanishing as the RNN. Training: at
T = 20 every cell solves 4/4; at T = 50 the RNN and the bias-0 LSTM solve 0/4, the
bias-1 LSTM 3/4 and the GRU 4/4 -- and in the solved runs the gradient over time
has become nearly flat (ratio 2e-3 to 4e-2), while in the failed ones it vanished
further (1e-20 to 1e-24): gated cells learn to open their additive path, the RNN
cannot. (A T = 100 run, 4,000 updates: GRU 3/4 on temporal order and on adding,
LSTM 0/4 with either bias, RNN 0/4.)

Units of work: one ``(task, length, cell)`` each -- gradient curves at
initialisation, training of every seed (and for the LSTM both forget biases as
members of one vmapped program: a :func:`~rnn_jax.repro.sweep.run_sweep` in
``units/<unit>/``), gradient curves after training -- appended to ``results.jsonl``; a
rerun skips finished units and resumes an unfinished one from its sweep's checkpoint.
Profiles: ``tiny`` (tests: temporal order T = 30, tanh RNN and LSTM, 100 updates),
``quick`` (temporal order, T = 20 and 50, three cells, 4 seeds, H = 32, up to 1,500
updates), ``full`` (temporal order and adding, T = 20, 50, 100, 200, H = 50, 10 seeds,
up to 20,000 updates, 10,000 fresh sequences per success check).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import cells as _cells
from rnn_jax import diagnostics, optim
from rnn_jax.repro import sweep, tasks, train
from rnn_jax.repro.experiments import common
from rnn_jax.repro.tasks.base import lengths as batch_lengths

NAME = "gates"

PROFILES: Dict[str, dict] = {
    # for the tests: seconds
    "tiny": dict(tasks=("temporal_order",), lengths=(30,), cells=("rnn", "lstm"), hidden_size=16, seeds=2,
                 batch_size=20, max_steps=100, chunk_steps=50, eval_size=200, diag_batch=50),
    # 1.9 min measured on two shared CPU cores (load average 5), 3.6 min at load average 15
    "quick": dict(tasks=("temporal_order",), lengths=(20, 50), cells=("rnn", "lstm", "gru"), hidden_size=32, seeds=4,
                  batch_size=20, max_steps=1500, chunk_steps=250, eval_size=1000, diag_batch=100),
    # the paper's hidden size, longer sequences, more seeds: estimated from measured throughput
    # (T = 100: 0.21 s per update of all three cells incl. evaluation, two loaded cores) at
    # 8.6 h if no unit stops early, about 5 h with early stops; for an accelerator
    "full": dict(tasks=("temporal_order", "adding"), lengths=(20, 50, 100, 200), cells=("rnn", "lstm", "gru"),
                 hidden_size=50, seeds=10, batch_size=20, max_steps=20_000, chunk_steps=500, eval_size=10_000,
                 diag_batch=200),
}

LEARNING_RATE = 0.01
CLIP_THRESHOLD = 1.0
FORGET_BIASES = (0.0, 1.0)  # the LSTM's two variants
DTYPE = jnp.float32
DIAG_KEY = 20_13  # the batch the gradient curves are measured on (the same for every cell)
# The curves are computed in float32 with the loss scaled by a power of two so that the
# largest ‖δ_k‖ is about 2^100 (see gradient_curves): ratios down to ~1e-70 are resolved.
# A gradient that is exactly 0 (a saturated unit whose derivative rounds to 0) stays 0;
# statistics and plots put such values at this floor and count them ("zero").
FLOOR = 1e-80
TARGET_SCALE_LOG2 = 100


# ---------------------------------------------------------------- cells and optimizer


def make_cell(kind: str, hidden_size: int) -> _cells.Cell:
    """The cell of ``kind`` (``rnn``: Elman tanh; ``lstm``: forget bias 0, shifted per member; ``gru``)."""
    return common.make_cell(kind, hidden_size, forget_bias=0.0)


def adam_optimizer(hp: Dict[str, jax.Array]) -> optax.GradientTransformation:
    """Global-norm clipping at ``hp["clip"]``, then Adam with ``hp["learning_rate"]`` (per member).

    optax's bias correction computes ``decay ** count`` (a Python float to an int32
    power), which ``jax_numpy_dtype_promotion="strict"`` rejects; the update is traced
    under standard promotion, which gives the same numbers.
    """
    inner = optax.chain(optim.clip_by_global_norm(hp["clip"]), optax.adam(hp["learning_rate"]))

    def update(updates, state, params=None):
        with jax.numpy_dtype_promotion("standard"):
            return inner.update(updates, state, params)

    return optax.GradientTransformation(inner.init, update)


def variants(cell_kind: str) -> List[Optional[float]]:
    """The forget biases of a cell's members: (0, 1) for the LSTM, ``[None]`` for the others."""
    return list(FORGET_BIASES) if cell_kind == "lstm" else [None]


def variant_name(cell_kind: str, forget_bias: Optional[float]) -> str:
    return cell_kind if forget_bias is None else f"{cell_kind}_fb{forget_bias:g}"


def with_forget_bias(state: train.MemberState, hidden_size: int, forget_biases: Sequence[float]) -> train.MemberState:
    """Add each member's forget bias to the f-gate block ``b[H:2H]`` of its LSTM parameters.

    ``lstm(H, forget_bias=f).init(key)`` is ``lstm(H).init(key)`` with ``f`` added to that
    block, so the members equal LSTMs built with their own forget bias (the optimizer
    states are zeros either way).
    """
    shift = jnp.asarray(forget_biases, DTYPE)[:, None]
    b = state.params.cell.b
    b = b.at[:, hidden_size:2 * hidden_size].add(shift)
    return state._replace(params=state.params._replace(cell=state.params.cell._replace(b=b)))


# ---------------------------------------------------------------- gradient over time


def _norm(v: jax.Array) -> jax.Array:
    """``‖v‖`` over the last axis without overflow or underflow of the squares (scaled by max |v|)."""
    m = jnp.max(jnp.abs(v), axis=-1, keepdims=True)
    safe = jnp.where(m > 0, m, jnp.ones_like(m))
    return m[..., 0] * jnp.linalg.norm(v / safe, axis=-1)


@functools.partial(jax.jit, static_argnames=("cell", "loss", "on"))
def _scaled_curves(params, scale, xs, targets, lengths, *, cell, loss: str, on: str):
    def one(p, s):
        zeros = diagnostics.zero_perturbations(cell, xs, p.cell.w_ih.dtype)
        deltas = jax.grad(lambda eps: s * diagnostics.perturbed_loss(
            cell, p, xs, targets, eps, loss=loss, on=on, lengths=lengths)[0])(zeros)
        hidden = jnp.mean(_norm(deltas.hidden), axis=0)
        cell_state = jnp.mean(_norm(deltas.cell), axis=0) if "cell" in deltas._fields else jnp.zeros_like(hidden)
        return hidden, cell_state

    return jax.vmap(one)(params, scale)


def gradient_curves(cell, params, xs, targets, lengths, *, loss: str, on: str):
    """Batch-mean ``‖∂E/∂h_k‖`` (and ``‖∂E/∂c_k‖`` for the LSTM) of every member, as float64.

    ``δ_k = ∂E/∂h_k`` is the total derivative of
    :func:`rnn_jax.diagnostics.state_gradients` (through the perturbations of
    :func:`~rnn_jax.diagnostics.perturbed_loss`). In float32 ``‖δ_1‖`` of a long
    sequence underflows (0.5^100 ≈ 1e-30 of ``‖δ_T‖``, and the squares in a norm
    underflow sooner), so the curves are computed twice: once as they are, then with
    the loss multiplied by ``2^p`` chosen per member so that its largest ``‖δ_k‖`` is
    about ``2^100``. The backward pass is linear in that factor and a power of two
    scales every float exactly, so the second pass equals the first wherever the first
    was representable and resolves what underflowed; it is divided out in float64.

    Args:
      cell: the cell (static).
      params: ModelParams with a leading member axis M.
      xs, targets, lengths: one batch, shared by the members.
      loss, on: as in :func:`rnn_jax.model.loss`.

    Returns:
      ``(hidden, cell_state)``: ``(M, T)`` float64 arrays, ``cell_state`` zeros for
      cells without a cell state; zero at padded steps.
    """
    m = jax.tree_util.tree_leaves(params)[0].shape[0]
    dtype = params.cell.w_ih.dtype
    kw = dict(cell=cell, loss=loss, on=on)
    ones = jnp.ones((m,), dtype)
    first, _ = _scaled_curves(params, ones, xs, targets, lengths, **kw)
    peak = np.max(np.asarray(first, np.float64), axis=1)
    exponent = np.where(peak > 0, TARGET_SCALE_LOG2 - np.ceil(np.log2(np.where(peak > 0, peak, 1.0))), 0.0)
    scale = np.exp2(exponent)
    hidden, cell_state = _scaled_curves(params, jnp.asarray(scale, dtype), xs, targets, lengths, **kw)
    unscale = lambda c: np.asarray(c, np.float64) / scale[:, None]
    return unscale(hidden), unscale(cell_state)


def curve_ratio(curve: np.ndarray, length: int) -> float:
    """``‖δ_1‖ / ‖δ_T‖`` of a curve over the first ``length`` (valid) steps."""
    return float(curve[0] / curve[length - 1])


def diagnostic_batch(task: tasks.Task, size: int, length: int):
    """The fixed batch of the gradient curves: drawn from :data:`DIAG_KEY` folded with the length."""
    batch = task.sample(jax.random.fold_in(jax.random.key(DIAG_KEY), length), size)
    return batch.inputs.astype(DTYPE), batch.targets, batch_lengths(batch)


# ---------------------------------------------------------------- one unit


@functools.lru_cache(maxsize=None)
def make_task(name: str, length: int) -> tasks.Task:
    """The task at one fixed nominal length (cached: one compiled sampler per process)."""
    return tasks.get(name, min_length=length, max_length=length, dtype=DTYPE)


def make_setup(task_name: str, length: int, cell_kind: str, cfg: dict) -> train.Setup:
    """The engine's static description of one unit."""
    return train.Setup(
        cell=make_cell(cell_kind, cfg["hidden_size"]), task=make_task(task_name, length),
        batch_size=cfg["batch_size"], make_optimizer=adam_optimizer, regularize=False,
        eval_size=cfg["eval_size"], eval_batch_size=min(cfg["eval_size"], 500), dtype=DTYPE,
    )


def run_unit(task_name: str, length: int, cell_kind: str, seeds: Sequence[int], cfg: dict,
             out_dir: Optional[str] = None, progress: bool = False) -> dict:
    """Gradient curves at initialisation, training to success or ``max_steps``, curves after training.

    Training is one :func:`~rnn_jax.repro.sweep.run_sweep` of every (forget bias, seed) member
    in ``out_dir`` (resumable; a temporary folder when None), without compaction: the members
    share one vmapped program from start to end, finished members frozen in it.

    Returns the unit's record: per member its seed, forget bias, outcome, updates,
    final error, error after every chunk, and the two gradient curves with their
    ratios ``‖δ_1‖/‖δ_T‖``.
    """
    if out_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return run_unit(task_name, length, cell_kind, seeds, cfg, tmp, progress)
    setup = make_setup(task_name, length, cell_kind, cfg)
    forget_bias = {variant_name(cell_kind, fb): fb for fb in variants(cell_kind)}
    members = [dict(seed=seed, learning_rate=LEARNING_RATE, clip=CLIP_THRESHOLD, variant=v)
               for v in forget_bias for seed in seeds]

    def shift(state, slots):  # each LSTM member's forget bias (a label of the member)
        if cell_kind != "lstm":
            return state
        return with_forget_bias(state, cfg["hidden_size"], [forget_bias[m["variant"]] for m in slots])

    m = len(members)
    hparams = {"learning_rate": np.full(m, LEARNING_RATE), "clip": np.full(m, CLIP_THRESHOLD)}
    initial = shift(train.init_members(setup, [mb["seed"] for mb in members], hparams), members).params
    xs, targets, lens = diagnostic_batch(setup.task, cfg["diag_batch"], length)
    valid = int(lens[0])  # one length per minibatch: every sequence of the batch has it
    curves = lambda params: gradient_curves(setup.cell, params, xs, targets, lens, loss=setup.task.loss,
                                            on=setup.task.on)
    init_hidden, init_cell = curves(initial)

    # one device: a unit's 2-20 members gain nothing from sharding, and XLA:CPU's float32 results depend
    # on the batch each device holds, so the unit computes what it did before it ran through run_sweep
    results = sweep.run_sweep(setup, members, out_dir, max_steps=cfg["max_steps"], chunk_steps=cfg["chunk_steps"],
                              mesh=sweep.member_mesh(jax.local_devices()[:1]),
                              progress=progress, compact=False, transform_init=shift)
    history, loss_history = _histories(sweep.read_results(os.path.join(out_dir, sweep.CHUNKS)), results)
    one = jax.tree_util.tree_map(lambda a: a[0], initial)
    trained = [sweep.load_member_params(out_dir, i, one) for i in range(m)]
    trained_hidden, trained_cell = curves(jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trained))

    records = []
    for i, (member, result) in enumerate(zip(members, results)):
        fb = forget_bias[member["variant"]]
        records.append({
            "seed": member["seed"], "forget_bias": fb, "variant": member["variant"],
            "outcome": result["outcome"], "steps": result["steps"],
            "error": history[i][-1], "error_history": history[i], "loss_history": loss_history[i],
            "init": {"curve": init_hidden[i, :valid].tolist(), "cell_curve": init_cell[i, :valid].tolist(),
                     "ratio": curve_ratio(init_hidden[i], valid)},
            "trained": {"curve": trained_hidden[i, :valid].tolist(), "cell_curve": trained_cell[i, :valid].tolist(),
                        "ratio": curve_ratio(trained_hidden[i], valid)},
        })
    return {"task": task_name, "length": length, "cell": cell_kind, "valid_steps": valid,
            "chunk_steps": cfg["chunk_steps"], "members": records}


def _histories(chunks: List[dict], results: List[dict]):
    """Every member's error and mean loss after every chunk of its sweep, from ``chunks.jsonl``.

    A chunk's line lists the members still reported (running until that chunk's end); a member
    that finished earlier keeps its error and has no loss (nan). A line rewritten by a resumed
    run lacks the members whose results line was written before the kill: their values for that
    chunk are those of the results line.
    """
    nan = lambda v: float("nan") if v is None else float(v)
    errors, losses = [[] for _ in results], [[] for _ in results]
    finished = [False] * len(results)
    for line in sorted(chunks, key=lambda c: c["chunk"]):
        slot = {i: j for j, i in enumerate(line["members"])}
        for i, r in enumerate(results):
            if i in slot:
                errors[i].append(nan(line["error"][slot[i]]))
                losses[i].append(nan(line["loss"][slot[i]]))
                finished[i] = line["status"][slot[i]] != "running"
            elif finished[i]:
                errors[i].append(errors[i][-1])
                losses[i].append(float("nan"))
            else:
                errors[i].append(nan(r["error"]))
                losses[i].append(nan(r["metrics"]["loss"]))
                finished[i] = True
    return errors, losses


# ---------------------------------------------------------------- the run


def _unit_key(task_name: str, length: int, cell_kind: str, seeds: Sequence[int], cfg: dict) -> str:
    return (f"{task_name}|T={length}|{cell_kind}|H={cfg['hidden_size']}|seeds={','.join(map(str, seeds))}"
            f"|batch={cfg['batch_size']}|steps={cfg['max_steps']}/{cfg['chunk_steps']}|eval={cfg['eval_size']}"
            f"|lr={LEARNING_RATE:g}|clip={CLIP_THRESHOLD:g}|diag={cfg['diag_batch']}")


def run(out_dir: str, profile: str = "quick", seeds=None, progress: bool = True) -> dict:
    """Run (or resume) the gates reproduction into ``out_dir``; returns the summary.

    Writes ``results.jsonl`` (one line per (task, length, cell)), ``table.md``,
    ``grad_over_time.png``, ``success_vs_length.png``, ``learning_curves.png`` and
    ``summary.json``; each unit's sweep files are in ``units/``.
    """
    cfg = common.get_profile(PROFILES, profile)
    seeds = common.seed_list(seeds, cfg)
    results = common.Results(out_dir)
    units = [(t, n, c) for t in cfg["tasks"] for n in cfg["lengths"] for c in cfg["cells"]]
    prog = common.Progress(NAME, len(units), enabled=progress)
    for task_name, length, cell_kind in units:
        key = _unit_key(task_name, length, cell_kind, seeds, cfg)
        if results.done(key):
            prog.update(note=f"{task_name} T={length} {cell_kind} (done before)")
            continue
        start = time.perf_counter()
        folder = f"{task_name}_T{length}_{cell_kind}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
        record = run_unit(task_name, length, cell_kind, seeds, cfg, os.path.join(out_dir, "units", folder), progress)
        record["seconds"] = time.perf_counter() - start
        results.add(key, record)
        solved = sum(r["outcome"] == "solved" for r in record["members"])
        prog.update(note=f"{task_name} T={length} {cell_kind}: {solved}/{len(record['members'])} solved "
                         f"({record['seconds']:.0f} s)")
    records = [results.get(_unit_key(t, n, c, seeds, cfg)) for t, n, c in units]
    summary = _summarize(cfg, profile, seeds, records)
    common.write_text(out_dir, "table.md", _table(summary))
    _plots(out_dir, cfg, summary, records)
    return common.write_summary(out_dir, summary)


def _log_stats(values: Sequence[float]) -> dict:
    """Geometric mean and spread (min, max, std of log10) of non-negative values; exact
    zeros (saturated units) count in ``zero`` and enter the statistics as :data:`FLOOR`."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"geometric_mean": float("nan"), "min": float("nan"), "max": float("nan"), "log10_std": float("nan"),
                "n": 0, "zero": 0}
    zero = int(np.sum(v < FLOOR))
    log = np.log10(np.maximum(v, FLOOR))
    return {"geometric_mean": float(10 ** log.mean()), "min": float(10 ** log.min()), "max": float(10 ** log.max()),
            "log10_std": float(log.std()), "n": int(v.size), "zero": zero}


def _by_variant(records: List[dict]) -> Dict[tuple, List[dict]]:
    out: Dict[tuple, List[dict]] = {}
    for rec in records:
        for m in rec["members"]:
            out.setdefault((rec["task"], rec["length"], m["variant"]), []).append(m)
    return out


def _summarize(cfg: dict, profile: str, seeds: List[int], records: List[dict]) -> dict:
    groups = _by_variant(records)
    out: Dict[str, Any] = {
        "profile": profile, "seeds": seeds, "tasks": list(cfg["tasks"]), "lengths": list(cfg["lengths"]),
        "cells": list(cfg["cells"]), "variants": [], "hidden_size": cfg["hidden_size"],
        "batch_size": cfg["batch_size"], "max_steps": cfg["max_steps"], "chunk_steps": cfg["chunk_steps"],
        "eval_size": cfg["eval_size"], "learning_rate": LEARNING_RATE, "clip_threshold": CLIP_THRESHOLD,
        "optimizer": "clip_by_global_norm + adam", "initialisation": "PyTorch U(-1/sqrt(H), 1/sqrt(H)); LSTM f-gate bias + 0 or 1",
        "results": {},
    }
    for (task_name, length, variant), members in groups.items():
        if variant not in out["variants"]:
            out["variants"].append(variant)
        solved = [m for m in members if m["outcome"] == "solved"]
        entry = {
            "success": common.rate_with_interval(len(solved), len(members)),
            "final_error": common.mean_and_spread([m["error"] for m in members]),
            "steps_to_solve": common.mean_and_spread([m["steps"] for m in solved]),
            "diverged": sum(m["outcome"] == "diverged" for m in members),
            "ratio_init": _log_stats([m["init"]["ratio"] for m in members]),
            "ratio_trained": _log_stats([m["trained"]["ratio"] for m in members]),
        }
        out["results"].setdefault(task_name, {}).setdefault(str(length), {})[variant] = entry
    return out


def _ratio_text(stats: dict) -> str:
    text = f"{stats['geometric_mean']:.2e} [{stats['min']:.1e}, {stats['max']:.1e}]"
    if stats["zero"]:
        text += f" ({stats['zero']} exactly 0)"
    return text


def _table(summary: dict) -> str:
    head = (f"# Gates against vanishing ({summary['profile']} profile)\n\n"
            f"{len(summary['seeds'])} seeds per cell, H = {summary['hidden_size']}, minibatch {summary['batch_size']}, "
            f"clip {summary['clip_threshold']:g} + Adam lr {summary['learning_rate']:g}, up to {summary['max_steps']} "
            f"updates; success = under 1 % of {summary['eval_size']} fresh sequences wrong. Gradient ratio = "
            f"‖∂E/∂h_1‖ / ‖∂E/∂h_T‖ (batch mean; geometric mean over seeds [min, max]; an exact 0, from "
            f"saturated units, counts as {FLOOR:g}).\n")
    rows = []
    for task_name, by_length in summary["results"].items():
        for length, by_variant in by_length.items():
            for variant, e in by_variant.items():
                s, st = e["success"], e["steps_to_solve"]
                rows.append([
                    task_name, length, variant,
                    f"{s['rate'] * s['n']:.0f}/{s['n']} [{s['low']:.2f}, {s['high']:.2f}]",
                    f"{e['final_error']['mean']:.3g} ± {e['final_error']['std']:.2g}",
                    f"{st['mean']:.0f}" if st["n"] else "-",
                    _ratio_text(e["ratio_init"]), _ratio_text(e["ratio_trained"]),
                ])
    headers = ["task", "T", "cell", "solved [95 % CI]", "final error", "updates to solve (mean)",
               "gradient ratio at init", "gradient ratio trained"]
    return head + "\n" + common.markdown_table(headers, rows)


COLORS = {"rnn": "tab:red", "lstm_fb0": "tab:purple", "lstm_fb1": "tab:blue", "gru": "tab:green"}


def _plots(out_dir: str, cfg: dict, summary: dict, records: List[dict]) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    groups = _by_variant(records)
    task_lengths = [(t, n) for t in cfg["tasks"] for n in cfg["lengths"]]
    variants_ = summary["variants"]

    # 1. gradient over time, normalised by the last step, at init and after training
    fig, axes = plt.subplots(len(task_lengths), 2, figsize=(10, 3.4 * len(task_lengths)), squeeze=False,
                             constrained_layout=True)
    for r, (task_name, length) in enumerate(task_lengths):
        for c, when in enumerate(("init", "trained")):
            ax = axes[r][c]
            for v in variants_:
                members = groups.get((task_name, length, v), [])
                if not members:
                    continue
                curves = np.asarray([m[when]["curve"] for m in members], np.float64)
                curves = np.maximum(curves / curves[:, -1:], FLOOR)
                k = np.arange(1, curves.shape[1] + 1)
                ax.plot(k, 10 ** np.log10(curves).mean(0), color=COLORS.get(v), label=v)
                ax.fill_between(k, curves.min(0), curves.max(0), color=COLORS.get(v), alpha=0.15, linewidth=0)
            ax.set_yscale("log")
            ax.set_title(f"{task_name}, T = {length}, {'at initialisation' if when == 'init' else 'after training'}")
            ax.set_xlabel("time step k")
            ax.set_ylabel("‖∂E/∂h_k‖ / ‖∂E/∂h_T‖")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("gradient over time: geometric mean over seeds, band = min..max")
    common.save_figure(fig, out_dir, "grad_over_time.png")

    # 2. success rate and updates to success vs length
    fig, axes = plt.subplots(2, len(cfg["tasks"]), figsize=(5 * len(cfg["tasks"]), 6.4), squeeze=False,
                             constrained_layout=True)
    # a small horizontal offset per variant keeps equal rates apart
    offset = {v: (i - (len(variants_) - 1) / 2) * 0.01 * (max(cfg["lengths"]) - min(cfg["lengths"]) + 1)
              for i, v in enumerate(variants_)}
    for c, task_name in enumerate(cfg["tasks"]):
        for v in variants_:
            entries = [summary["results"][task_name][str(n)].get(v) for n in cfg["lengths"]]
            if any(e is None for e in entries):
                continue
            rate = np.asarray([e["success"]["rate"] for e in entries])
            low = rate - np.asarray([e["success"]["low"] for e in entries])
            high = np.asarray([e["success"]["high"] for e in entries]) - rate
            x = np.asarray(cfg["lengths"], np.float64) + offset[v]
            axes[0][c].errorbar(x, rate, yerr=[low, high], marker="o", capsize=3, color=COLORS.get(v), label=v)
            steps = [e["steps_to_solve"]["mean"] for e in entries]
            axes[1][c].plot(x, steps, marker="o", color=COLORS.get(v), label=v)
        axes[0][c].set_title(task_name)
        axes[0][c].set_ylabel("success rate (95 % Wilson)")
        axes[0][c].set_ylim(-0.05, 1.05)
        axes[1][c].set_ylabel("updates to success (solved seeds)")
        axes[1][c].set_xlabel("sequence length T")
    axes[0][0].legend(fontsize=8)
    common.save_figure(fig, out_dir, "success_vs_length.png")

    # 3. learning curves: error on fresh sequences vs updates (speed; forget bias 0 vs 1)
    fig, axes = plt.subplots(1, len(task_lengths), figsize=(4.5 * len(task_lengths), 3.4), squeeze=False,
                             constrained_layout=True)
    for c, (task_name, length) in enumerate(task_lengths):
        ax = axes[0][c]
        for v in variants_:
            for i, m in enumerate(groups.get((task_name, length, v), [])):
                # a solved member stops updating: its curve ends at its last evaluation
                errors = m["error_history"][:max(1, -(-m["steps"] // cfg["chunk_steps"]))]
                x = cfg["chunk_steps"] * np.arange(1, len(errors) + 1)
                ax.plot(x, errors, color=COLORS.get(v), alpha=0.7, marker=".", label=v if i == 0 else None)
        ax.set_title(f"{task_name}, T = {length}")
        ax.set_xlabel("updates")
        ax.set_ylabel("error on fresh sequences")
    axes[0][0].legend(fontsize=8)
    common.save_figure(fig, out_dir, "learning_curves.png")
