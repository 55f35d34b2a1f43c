"""Teacher and student (``seeds/000``): can momentum SGD recover a small sigmoid RNN?

What it shows. A *teacher* Elman network (3 inputs, 2 sigmoid hidden units, 1
linear output, every weight N(0, 1)) has its ``W_hh`` rebuilt from its SVD with
the largest singular value set by hand: 0.2 (the *vanishing* setting; below the
document's own 0.25 and far below Pascanu et al.'s ``1/γ = 4`` for the sigmoid,
so ``γ σ_max = 0.05 < 1`` is sufficient for vanishing) or 10 (the *exploding*
setting, the value in the document's commented code; ``γ σ_max = 2.5 > 1``, the
necessary condition for explosion). The teacher labels a fixed set of random
N(0, 1) input sequences with its last output; a *student* of the same shape
(weights N(0, 0.01²), zero biases) is trained on them with the document's
momentum SGD: one sequence per update, learning rate 0.001, momentum 0.5 for
epochs 0..5 then 0.9, mean squared error on the last step. The table is the
document's: the cost after 500 and 1500 epochs for lengths 2, 10 and 100 --
here over many seeds (student initialisation and data set), with and without
gradient-norm clipping before the momentum (Algorithm 1 of Pascanu et al.), so
the spread and the effect of clipping are visible.

The document's numbers (its teacher's "vanishing" value is not given):

================  ==========  ==========  ==========
vanishing          T = 2       T = 10      T = 100
================  ==========  ==========  ==========
500 epochs         1.2e-5      1.44e-5     1.35e-5
1500 epochs        3.21e-9     5.11e-9     2.7e-9
================  ==========  ==========  ==========

================  ==========  ==========  ==========
exploding          T = 2       T = 10      T = 100
================  ==========  ==========  ==========
500 epochs         0.00144     0.00358     0.0045
1500 epochs        2.39e-5     0.00352     0.0045
================  ==========  ==========  ==========

The "cost" of an epoch is what the document prints: the mean, over the epoch's
updates, of the loss of the sequence just before it is used for an update. The
summary adds the cost on 1,000 fresh sequences at the end of every chunk of
epochs (generalisation) and the distance of the student's weights to the
teacher's (up to a permutation of the two hidden units).

Measured (``full``, 32 seeds; the teacher is ours, the document's is not
recoverable): vanishing -- 3e-5 ± 5e-5 after 500 epochs (document 1.2-1.4e-5)
and 7e-7 ± 4e-7 after 1500 (document 3e-9), the same at every length, since the
teacher's output depends on its last inputs only; exploding -- 1.7e-3 after 500
epochs (document 1.4-4.5e-3) and 7e-4 (T = 2), 2.2e-4 (T = 10 and 100) after
1500: no length stays stuck as the document's T = 10 and 100 runs did (4.5e-3).
The student's gradient norm never exceeds 3.5 in either setting, so clipping at
1 touches 0.1-0.8 % of the updates (early ones): no change in the vanishing
setting, a slightly slower start in the exploding one (costs 5-25 % higher). The
teacher's ``σ_max`` shapes the function to learn, not the student's gradients.
(The document's own criterion, "no singular value above 0.25", takes the
sigmoid's ``γ = 1/4`` for the threshold; Pascanu et al.'s is ``σ_max < 1/γ = 4``.)

Units of work: ``(length, block of seeds, chunk of epochs)``; each record holds
the members' curves and their final training state (parameters and optimizer
state, exact float32 values), so a rerun resumes after the last finished chunk
and reproduces the same numbers bit for bit.

Profiles: ``full`` is the document's setting (500 sequences, 1500 epochs, table
at 500 and 1500) for 32 seeds; ``quick`` keeps 500 sequences and the momentum
switch-over but runs 150 epochs (table at 50 and 150, the document's 1:3 ratio)
for 8 seeds; ``tiny`` (tests) 60 sequences, 12 epochs, lengths 2 and 10.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from typing import Any, Dict, List, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import model, optim
from rnn_jax.cells import elman
from rnn_jax.experiments import common
from rnn_jax.tasks.teacher import TEACHER_SUCCESS, make_teacher, teacher_cell, teacher_student

NAME = "teacher-student"

# The teacher's W_hh largest singular value per setting. Teacher key 1 draws
# W_hh with singular values (1.59, 0.095), so 0.2 is still the largest.
SETTINGS: Dict[str, float] = {"vanishing": 0.2, "exploding": 10.0}
TEACHER_KEY = 1
SIGMOID_GAMMA = 0.25  # sup of the sigmoid's derivative

# The document's tables (cost after `epoch` epochs, by length).
DOCUMENT = {
    "vanishing": {500: {2: 1.2e-5, 10: 1.44e-5, 100: 1.35e-5}, 1500: {2: 3.21e-9, 10: 5.11e-9, 100: 2.7e-9}},
    "exploding": {500: {2: 0.00144, 10: 0.00358, 100: 0.0045}, 1500: {2: 2.39e-5, 10: 0.00352, 100: 0.0045}},
}

PROFILES: Dict[str, dict] = {
    # for the tests: seconds
    "tiny": dict(lengths=(2, 10), sequences=60, epochs=12, report_epochs=(4, 12), seeds=2, seed_block=2,
                 epochs_per_unit=6, test_size=200),
    # 2.3 min measured on two CPU cores shared with other jobs (load average 15)
    "quick": dict(lengths=(2, 10, 100), sequences=500, epochs=150, report_epochs=(50, 150), seeds=8, seed_block=8,
                  epochs_per_unit=75, test_size=1000),
    # the document's setting: 32 min measured at low priority on two loaded cores (6 CPU-minutes)
    "full": dict(lengths=(2, 10, 100), sequences=500, epochs=1500, report_epochs=(500, 1500), seeds=32,
                 seed_block=32, epochs_per_unit=100, test_size=1000),
}

# The document's optimizer and student initialisation.
LEARNING_RATE = 0.001
INITIAL_MOMENTUM, FINAL_MOMENTUM, MOMENTUM_SWITCHOVER = 0.5, 0.9, 5  # 0.5 while epoch <= 5
# Clipping threshold (global norm) of the clipped members: the paper's temporal-order
# value. Measured: the mean norm of a one-sequence gradient is ~0.7 in the first
# epoch and 0.03-0.5 afterwards, so 1 is 1.4-30x the average norm, within the
# paper's advice of 0.5-10x (it clips 1-7 % of the updates, mostly early ones).
CLIP_THRESHOLD = 1.0
DTYPE = jnp.float32
# lax.scan unroll factor of the student's forward pass: the state is 2 numbers, so
# the loop overhead dominates on a CPU; unrolling does not change any value.
UNROLL = {2: 2, 10: 10}
DEFAULT_UNROLL = 10

CELL = teacher_cell(2)


# ---------------------------------------------------------------- the model and its training


def student_init(key: jax.Array, dtype=DTYPE) -> model.ModelParams:
    """The document's student: every weight N(0, 0.01²), zero biases (``my_rnn.py``).

    ``elman(2, scheme="sigmoid")`` draws ``w_ih`` and ``w_hh`` N(0, 0.01²) and a zero
    ``b``; the readout's ``"sigmoid"`` initialiser is N(0, 0.01²) with a zero bias.
    The parameters are those of :data:`CELL` (same equations).
    """
    return model.init(key, elman(2, scheme="sigmoid"), 3, 1, readout_weight_init="sigmoid", dtype=dtype)


def make_optimizer(threshold: Any, updates_per_epoch: int) -> optax.GradientTransformation:
    """Global-norm clipping at ``threshold`` (``inf``: none), then the document's momentum SGD.

    ``v ← μ v − η g; w ← w + v`` with ``η = 0.001`` and ``μ = 0.5`` for epochs 0..5,
    0.9 afterwards (:func:`rnn_jax.optim.teacher_student`); ``threshold`` may be a
    tracer, so clipped and unclipped members share one compiled program.
    """
    return optax.chain(
        optim.clip_by_global_norm(threshold),
        optim.teacher_student(LEARNING_RATE, updates_per_epoch=updates_per_epoch,
                              momentum_switchover=MOMENTUM_SWITCHOVER, initial_momentum=INITIAL_MOMENTUM,
                              final_momentum=FINAL_MOMENTUM),
    )


class EpochStats(NamedTuple):
    """Per-epoch statistics of one member, each ``(epochs,)``."""

    cost: jax.Array  # mean over the epoch's updates of the sequence's cost before its update (the document's)
    grad_norm: jax.Array  # mean global gradient norm (before clipping)
    max_grad_norm: jax.Array  # largest global gradient norm
    clipped_fraction: jax.Array  # fraction of updates whose norm reached the threshold


def train_member(params, opt_state, threshold, inputs, targets, *, num_epochs: int, unroll: int = 1):
    """``num_epochs`` epochs of ONE student over its fixed data set, one sequence per update.

    Args:
      params, opt_state: the student and its optimizer state (:func:`make_optimizer`).
      threshold: () clipping threshold (``inf``: no clipping).
      inputs: (N, T, 3); targets: (N, 1). Visited in order every epoch, as in the document.
      num_epochs: static; unroll: static ``lax.scan`` unroll factor (speed only).

    Returns:
      ``(params, opt_state, EpochStats)``.
    """
    optimizer = make_optimizer(threshold, inputs.shape[0])

    def update(carry, sequence):
        params, opt_state = carry
        x, y = sequence
        cost, grads = jax.value_and_grad(
            lambda p: model.loss(CELL, p, x[None], y[None], loss="mse", on="last", unroll=unroll))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (cost, optax.tree.norm(grads))

    def epoch(carry, _):
        carry, (costs, norms) = jax.lax.scan(update, carry, (inputs, targets))
        clipped = jnp.mean((norms >= threshold).astype(costs.dtype))
        return carry, EpochStats(jnp.mean(costs), jnp.mean(norms), jnp.max(norms), clipped)

    (params, opt_state), stats = jax.lax.scan(epoch, (params, opt_state), None, length=num_epochs)
    return params, opt_state, stats


@functools.partial(jax.jit, static_argnames=("num_epochs", "unroll"))
def train_members(params, opt_state, thresholds, inputs, targets, *, num_epochs: int, unroll: int = 1):
    """:func:`train_member` vmapped over a leading member axis of every argument (one compiled program)."""
    fn = functools.partial(train_member, num_epochs=num_epochs, unroll=unroll)
    return jax.vmap(fn)(params, opt_state, thresholds, inputs, targets)


@functools.partial(jax.jit, static_argnames=("unroll",))
def member_costs(params, inputs, targets, *, unroll: int = 1):
    """Mean squared last-step error of every member on its own sequences: ``(M,)``."""
    return jax.vmap(lambda p, x, y: model.loss(CELL, p, x, y, loss="mse", on="last", unroll=unroll))(
        params, inputs, targets)


def init_members(seeds: Sequence[int], thresholds: np.ndarray, updates_per_epoch: int):
    """Stacked students and optimizer states; member ``i`` is initialised from ``seeds[i]`` alone
    (the same student for every length, setting and clipping choice: paired comparisons)."""
    keys = jnp.stack([member_keys(s).init for s in seeds])
    return _init_members(keys, jnp.asarray(thresholds, DTYPE), updates_per_epoch=updates_per_epoch)


@functools.partial(jax.jit, static_argnames=("updates_per_epoch",))
def _init_members(keys, thresholds, *, updates_per_epoch: int):
    params = jax.vmap(student_init)(keys)
    opt_state = jax.vmap(lambda th, p: make_optimizer(th, updates_per_epoch).init(p))(thresholds, params)
    return params, opt_state


class MemberKeys(NamedTuple):
    init: jax.Array  # the student's weights
    data: jax.Array  # the training and test sequences (folded with the length)


def member_keys(seed: int) -> MemberKeys:
    """The two independent keys of a seed."""
    return MemberKeys(*jax.random.split(jax.random.key(int(seed)), 2))


@functools.lru_cache(maxsize=None)
def teacher_task(setting: str, length: int):
    """The teacher/student task of ``setting`` (its teacher key is fixed) at a fixed ``length``
    (cached: its jitted sampler compiles once per process)."""
    return teacher_student(jax.random.key(TEACHER_KEY), SETTINGS[setting], min_length=length, max_length=length,
                           dtype=DTYPE)


def teacher_summary(setting: str) -> dict:
    """The teacher's ``W_hh``: singular values, spectral radius and Pascanu's ``γ σ_max`` (sigmoid γ = 1/4)."""
    teacher = make_teacher(jax.random.key(TEACHER_KEY), SETTINGS[setting], dtype=DTYPE)
    w = np.asarray(teacher.cell.w_hh, np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    return {
        "largest_singular_value": float(s[0]),
        "singular_values": [float(v) for v in s],
        "spectral_radius": float(np.max(np.abs(np.linalg.eigvals(w)))),
        "gamma_sigma_max": float(SIGMOID_GAMMA * s[0]),
        "vanishing_sufficient_condition": bool(SIGMOID_GAMMA * s[0] < 1),
    }


def weight_distance(student: model.ModelParams, teacher: model.ModelParams) -> float:
    """``min_P ‖student − P(teacher)‖ / ‖teacher‖`` over the permutations P of the hidden units
    (all parameters flattened; the permutation relabels the units, which changes no output)."""
    flat = lambda tree: np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(tree)])
    t = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), teacher)
    best = math.inf
    for perm in itertools.permutations(range(t.cell.w_hh.shape[0])):
        p = np.asarray(perm)
        permuted = model.ModelParams(
            cell=t.cell._replace(w_ih=t.cell.w_ih[:, p], w_hh=t.cell.w_hh[p][:, p], b=t.cell.b[p]),
            readout=t.readout._replace(w=t.readout.w[p]),
        )
        best = min(best, float(np.linalg.norm(flat(student) - flat(permuted)) / np.linalg.norm(flat(t))))
    return best


# ---------------------------------------------------------------- state <-> JSON (exact)


def state_to_json(tree: Any) -> List[Any]:
    """The leaves of a pytree as nested lists; float32 values survive JSON exactly (via float64)."""
    return [np.asarray(leaf).tolist() for leaf in jax.tree_util.tree_leaves(tree)]


def state_from_json(leaves: List[Any], template: Any) -> Any:
    """Inverse of :func:`state_to_json`, with the structure and dtypes of ``template``."""
    template_leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(leaves) != len(template_leaves):
        raise ValueError(f"saved state: expected {len(template_leaves)} leaves, got {len(leaves)}")
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(np.asarray(v, dtype=t.dtype).reshape(t.shape)) for v, t in zip(leaves, template_leaves)])


# ---------------------------------------------------------------- the run


def _members(block: Sequence[int]) -> List[tuple]:
    """(setting, clipped, seed) of every member of a block, in program order."""
    return [(s, c, seed) for s in SETTINGS for c in (False, True) for seed in block]


def _unit_key(length: int, block: Sequence[int], chunk: int, cfg: dict, threshold: float) -> str:
    e0 = chunk * cfg["epochs_per_unit"]
    return (f"T={length}|seeds={','.join(map(str, block))}|sequences={cfg['sequences']}|test={cfg['test_size']}"
            f"|clip={threshold:g}|epochs={e0}-{e0 + cfg['epochs_per_unit']}")


def _block_data(block, length, cfg):
    """Training and test sets of every member of a block, stacked ``(M, ...)``.

    One draw of ``sequences + test_size`` sequences per (setting, seed): the first
    ``sequences`` are the fixed training set, the rest the fresh test sequences. A
    seed has the same inputs in both settings and both clipping choices (as the
    document's numpy stream would give); only the teachers' labels differ.
    """
    tasks = {s: teacher_task(s, length) for s in SETTINGS}
    n = cfg["sequences"]
    drawn = {}
    for setting, _, seed in _members(block):
        if (setting, seed) not in drawn:
            drawn[setting, seed] = tasks[setting].sample(jax.random.fold_in(member_keys(seed).data, length),
                                                         n + cfg["test_size"])
    batches = [drawn[setting, seed] for setting, _, seed in _members(block)]
    stack = lambda f, part: jnp.stack([f(b)[part] for b in batches])
    train, test = slice(0, n), slice(n, None)
    return (stack(lambda b: b.inputs, train), stack(lambda b: b.targets, train),
            stack(lambda b: b.inputs, test), stack(lambda b: b.targets, test))


def _stats(values: np.ndarray) -> dict:
    """Spread over seeds of positive costs: mean ± std, median, geometric mean, min, max, solved fraction."""
    v = np.asarray(values, np.float64)
    out = common.mean_and_spread(v)
    finite = v[np.isfinite(v)]
    out["median"] = float(np.median(finite)) if finite.size else float("nan")
    out["geometric_mean"] = float(10 ** np.mean(np.log10(np.maximum(finite, 1e-300)))) if finite.size else float("nan")
    out["solved_fraction"] = float(np.mean(finite < TEACHER_SUCCESS)) if finite.size else float("nan")
    return out


def run(out_dir: str, profile: str = "quick", seeds=None, progress: bool = True) -> dict:
    """Run (or resume) the teacher/student reproduction into ``out_dir``; returns the summary.

    Writes ``results.jsonl`` (one line per (length, seed block, chunk of epochs)),
    ``table.md``, ``cost.png``, ``grad_norm.png`` and ``summary.json``.
    """
    cfg = common.get_profile(PROFILES, profile)
    seeds = list(range(cfg["seeds"])) if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    epochs, per_unit = cfg["epochs"], cfg["epochs_per_unit"]
    if epochs % per_unit:
        raise ValueError(f"profile {profile}: epochs ({epochs}) must be a multiple of epochs_per_unit ({per_unit})")
    chunks = epochs // per_unit
    blocks = [seeds[i:i + cfg["seed_block"]] for i in range(0, len(seeds), cfg["seed_block"])]
    results = common.Results(out_dir)
    prog = common.Progress(NAME, len(cfg["lengths"]) * len(blocks) * chunks, enabled=progress)
    threshold = CLIP_THRESHOLD
    timing = {}

    for length in cfg["lengths"]:
        unroll = UNROLL.get(length, DEFAULT_UNROLL)
        for block in blocks:
            members = _members(block)
            thresholds = np.asarray([threshold if c else np.inf for _, c, _ in members])
            state, data = None, None
            for chunk in range(chunks):
                key = _unit_key(length, block, chunk, cfg, threshold)
                if results.done(key):
                    prog.update(note=f"T={length} chunk {chunk + 1}/{chunks} (done before)")
                    continue
                if state is None:
                    template = init_members([seed for _, _, seed in members], thresholds, cfg["sequences"])
                    state = template if chunk == 0 else state_from_json(
                        results.get(_unit_key(length, block, chunk - 1, cfg, threshold))["state"], template)
                if data is None:
                    data = _block_data(block, length, cfg)
                start = time.perf_counter()
                params, opt_state, stats = train_members(*state, jnp.asarray(thresholds, DTYPE), data[0], data[1],
                                                         num_epochs=per_unit, unroll=unroll)
                test = np.asarray(member_costs(params, data[2], data[3], unroll=unroll), np.float64)
                jax.block_until_ready(params)
                seconds = time.perf_counter() - start
                timing[key] = seconds
                state = (params, opt_state)
                teachers = {s: make_teacher(jax.random.key(TEACHER_KEY), SETTINGS[s], dtype=DTYPE) for s in SETTINGS}
                host = jax.tree_util.tree_map(np.asarray, params)
                records = []
                for i, (setting, clipped, seed) in enumerate(members):
                    student = jax.tree_util.tree_map(lambda a: a[i], host)
                    records.append({
                        "setting": setting, "clipped": clipped, "seed": seed,
                        **{f: np.asarray(getattr(stats, f)[i], np.float64).tolist() for f in EpochStats._fields},
                        "test_cost": float(test[i]),
                        "weight_distance": weight_distance(student, teachers[setting]),
                    })
                results.add(key, {"length": length, "chunk": chunk, "epochs": [chunk * per_unit, (chunk + 1) * per_unit],
                                  "members": records, "state": state_to_json(state), "seconds": seconds})
                prog.update(note=f"T={length} chunk {chunk + 1}/{chunks} ({seconds:.0f} s)")

    curves = _collect(results, cfg, blocks, chunks, threshold)
    summary = _summarize(cfg, profile, seeds, curves, threshold)
    common.write_text(out_dir, "table.md", _table(summary))
    _plots(out_dir, cfg, curves)
    if timing:
        common.write_text(out_dir, "timing.json", json.dumps(timing, indent=2) + "\n")
    return common.write_summary(out_dir, summary)


def _collect(results, cfg, blocks, chunks, threshold) -> dict:
    """``curves[setting][clipped][length][field]``: (seeds, epochs) arrays; plus end-of-run scalars."""
    curves: dict = {s: {c: {} for c in (False, True)} for s in SETTINGS}
    for length in cfg["lengths"]:
        per_member: Dict[tuple, dict] = {}
        for block in blocks:
            for chunk in range(chunks):
                rec = results.get(_unit_key(length, block, chunk, cfg, threshold))
                for m in rec["members"]:
                    slot = per_member.setdefault((m["setting"], m["clipped"], m["seed"]), {f: [] for f in EpochStats._fields})
                    for f in EpochStats._fields:
                        slot[f].extend(m[f])
                    slot["test_cost"], slot["weight_distance"] = m["test_cost"], m["weight_distance"]
        for setting in SETTINGS:
            for clipped in (False, True):
                seeds = [k[2] for k in per_member if k[0] == setting and k[1] == clipped]
                rows = [per_member[(setting, clipped, s)] for s in seeds]
                curves[setting][clipped][length] = {
                    **{f: np.asarray([r[f] for r in rows], np.float64) for f in EpochStats._fields},
                    "test_cost": np.asarray([r["test_cost"] for r in rows]),
                    "weight_distance": np.asarray([r["weight_distance"] for r in rows]),
                }
    return curves


def _label(clipped: bool) -> str:
    return "clipped" if clipped else "not_clipped"


def _summarize(cfg, profile, seeds, curves, threshold) -> dict:
    out = {
        "profile": profile,
        "settings": {s: teacher_summary(s) for s in SETTINGS},
        "teacher_key": TEACHER_KEY,
        "seeds": seeds,
        "sequences": cfg["sequences"],
        "epochs": cfg["epochs"],
        "report_epochs": list(cfg["report_epochs"]),
        "lengths": list(cfg["lengths"]),
        "learning_rate": LEARNING_RATE,
        "momentum": [INITIAL_MOMENTUM, FINAL_MOMENTUM, MOMENTUM_SWITCHOVER],
        "clip_threshold": threshold,
        "success_threshold": TEACHER_SUCCESS,
        "document": {s: {str(e): {str(t): v for t, v in row.items()} for e, row in tab.items()} for s, tab in DOCUMENT.items()},
        "cost": {}, "test_cost": {}, "weight_distance": {}, "max_grad_norm": {}, "clipped_fraction": {},
    }
    for setting in SETTINGS:
        for clipped in (False, True):
            name = f"{setting}/{_label(clipped)}"
            c = curves[setting][clipped]
            out["cost"][name] = {str(t): {str(e): _stats(c[t]["cost"][:, e - 1]) for e in cfg["report_epochs"]}
                                 for t in cfg["lengths"]}
            out["test_cost"][name] = {str(t): _stats(c[t]["test_cost"]) for t in cfg["lengths"]}
            out["weight_distance"][name] = {str(t): common.mean_and_spread(c[t]["weight_distance"]) for t in cfg["lengths"]}
            out["max_grad_norm"][name] = {str(t): float(np.max(c[t]["max_grad_norm"])) for t in cfg["lengths"]}
            out["clipped_fraction"][name] = {str(t): float(np.mean(c[t]["clipped_fraction"])) for t in cfg["lengths"]}
    return out


def _fmt(s: dict) -> str:
    return f"{s['mean']:.3g} ± {s['std']:.2g} (median {s['median']:.3g})"


def _table(summary: dict) -> str:
    lengths = summary["lengths"]
    parts = [
        f"# Teacher and student ({summary['profile']} profile)\n\n"
        f"Cost (the document's epoch-mean of the last-step squared error) over {len(summary['seeds'])} seeds: "
        f"mean ± std (median). {summary['sequences']} sequences, one per update, lr {summary['learning_rate']}, "
        f"momentum 0.5 -> 0.9 after epoch 5; clipped: global norm {summary['clip_threshold']:g} before the momentum. "
        f"Teacher W_hh largest singular value: "
        + ", ".join(f"{s} {v['largest_singular_value']:g} (γσ = {v['gamma_sigma_max']:g})"
                    for s, v in summary["settings"].items()) + ".\n"
    ]
    for setting in SETTINGS:
        rows = []
        for e in summary["report_epochs"]:
            for clipped in (False, True):
                name = f"{setting}/{_label(clipped)}"
                rows.append([f"{e} epochs, {'clipped' if clipped else 'no clipping'}"]
                            + [_fmt(summary["cost"][name][str(t)][str(e)]) for t in lengths])
        for e, row in DOCUMENT[setting].items():
            rows.append([f"document, {e} epochs"] + [f"{row[t]:.3g}" if t in row else "" for t in lengths])
        for clipped in (False, True):
            name = f"{setting}/{_label(clipped)}"
            rows.append([f"fresh sequences at the end, {'clipped' if clipped else 'no clipping'}"]
                        + [_fmt(summary["test_cost"][name][str(t)]) for t in lengths])
            rows.append([f"largest gradient norm, {'clipped' if clipped else 'no clipping'}"]
                        + [f"{summary['max_grad_norm'][name][str(t)]:.3g}" for t in lengths])
        parts.append(f"\n## {setting}\n\n" + common.markdown_table(["epoch \\ length"] + [str(t) for t in lengths], rows))
    return "".join(parts)


def _plots(out_dir: str, cfg: dict, curves: dict) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    lengths = cfg["lengths"]
    for field, name, ylabel in (("cost", "cost.png", "epoch cost (last-step MSE)"),
                                ("max_grad_norm", "grad_norm.png", "largest gradient norm in the epoch")):
        fig, axes = plt.subplots(len(SETTINGS), len(lengths), figsize=(4 * len(lengths), 3.2 * len(SETTINGS)),
                                 squeeze=False, sharex=True)
        for r, setting in enumerate(SETTINGS):
            for col, length in enumerate(lengths):
                ax = axes[r][col]
                for clipped, color in ((False, "tab:blue"), (True, "tab:orange")):
                    y = np.maximum(curves[setting][clipped][length][field], 1e-300)
                    epochs = np.arange(1, y.shape[1] + 1)
                    log = np.log10(y)
                    ax.plot(epochs, 10 ** log.mean(0), color=color, label="clipped" if clipped else "not clipped")
                    ax.fill_between(epochs, y.min(0), y.max(0), color=color, alpha=0.2, linewidth=0)
                if field == "cost":
                    for e, row in DOCUMENT[setting].items():
                        if e <= cfg["epochs"] and length in row:
                            ax.plot([e], [row[length]], "kx", label="document" if e == min(DOCUMENT[setting]) else None)
                ax.set_yscale("log")
                ax.set_title(f"{setting}, T = {length}")
                if r == len(SETTINGS) - 1:
                    ax.set_xlabel("epoch")
                if col == 0:
                    ax.set_ylabel(ylabel)
        axes[0][0].legend(fontsize=8)
        fig.suptitle("teacher/student: geometric mean over seeds, band = min..max")
        common.save_figure(fig, out_dir, name)
