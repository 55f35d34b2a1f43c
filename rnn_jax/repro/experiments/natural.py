"""The training engine of the natural tasks (Table 1): next-step prediction on a fixed data set.

Shared by :mod:`rnn_jax.repro.experiments.music` and :mod:`rnn_jax.repro.experiments.chars`. Unlike
the pathological tasks (fresh sequences every update, :mod:`rnn_jax.repro.train`), a natural
task has a training set to draw minibatches from and validation and test sets to
score; training stops early when the validation loss stops improving, and the
parameters of the best validation loss are the ones scored on test.

Members. Every member -- a seed and its hyperparameters (learning rate, clipping
threshold, Ω's weight) -- is one slice of a leading axis, and one compiled program
(``jax.vmap``) trains all members of one cell: the paper's MSGD, MSGD-C and MSGD-CR differ
only in numbers (threshold ``inf`` = no clipping, α = 0 = no Ω), so they share it. The
optimizer is :func:`rnn_jax.optim.msgd_c` (global-norm clipping, then plain SGD); Ω enters
the gradient before clipping (:func:`rnn_jax.repro.next_step.loss_and_grad`), with the weight
``α_t = α / (1 + t/τ)`` (the paper: "a 1/t decreasing schedule" for the natural tasks).

Data. A task supplies pytrees of arrays and two module-level functions (static): ``sample(data,
key, batch_size) -> (xs, targets, lengths)`` draws one minibatch from a training *bucket*
(a group of sequences with one padded length, so one compiled program per bucket), and
``score(cell, params, batch) -> (sum, count)`` sums the per-step losses of one evaluation
batch. Chunks of ``chunk_steps`` updates draw from one bucket, chosen at random with
probability proportional to its size.

Each update records, per member, the training loss, the global gradient norm before
clipping (Ω's term included: what Algorithm 1 tests) and whether clipping acted.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import model, optim
from rnn_jax.repro import next_step
from rnn_jax._checks import all_finite
from rnn_jax.repro.experiments import common
from rnn_jax.cells import Cell

OPTIMIZERS = ("msgd", "msgd_c", "msgd_cr")


class Program(NamedTuple):
    """The static description of one compiled training program (hashable).

    cell: the cell; loss: ``"bernoulli"`` or ``"softmax"`` (:mod:`rnn_jax.repro.next_step`);
    regularize: compute Ω (Elman cells; members with α = 0 add nothing);
    batch_size: sequences per update; input_size, output_size: the model's;
    sample, score: the task's functions (module-level, see the module docstring);
    dtype: parameters and inputs.
    """

    cell: Cell
    loss: str
    regularize: bool
    batch_size: int
    input_size: int
    output_size: int
    sample: Callable
    score: Callable
    dtype: Any = jnp.float32


class Hparams(NamedTuple):
    """Per-member hyperparameters (``(members,)`` arrays when stacked)."""

    learning_rate: Any
    clip: Any  # inf: MSGD
    alpha: Any  # 0: no Ω
    alpha_decay: Any  # τ of α_t = α / (1 + t/τ), in updates


class State(NamedTuple):
    """One member's training state (a leading member axis when stacked).

    params, opt_state: the model and :func:`rnn_jax.optim.msgd_c`'s state; key: raw
    uint32[2] for the minibatches; step: int32 updates applied; running: bool, False once
    stopped early, diverged or out of updates; diverged: bool (a non-finite loss or
    parameter: that update is discarded); best_params: the parameters of the lowest
    validation loss so far; best_loss: that loss (inf before any evaluation); best_step:
    the update count there; since_best: evaluations since it improved.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    running: jax.Array
    diverged: jax.Array
    best_params: Any
    best_loss: jax.Array
    best_step: jax.Array
    since_best: jax.Array


def optimizer(hp: Hparams) -> optax.GradientTransformation:
    """MSGD-C with one member's numbers: clipping at ``hp.clip`` (``inf``: MSGD), SGD at ``hp.learning_rate``."""
    return optim.msgd_c(hp.learning_rate, hp.clip)


def hparams(members: Sequence[dict], dtype=jnp.float32) -> Hparams:
    """Stacked :class:`Hparams` from member dicts with ``learning_rate``, ``clip``, ``alpha``, ``alpha_decay``."""
    return Hparams(*[jnp.asarray([float(m[f]) for m in members], dtype) for f in Hparams._fields])


def init_state(program: Program, seeds: Sequence[int], hp: Hparams) -> State:
    """Stacked initial states; member ``i``'s parameters and minibatches depend on ``seeds[i]`` alone."""
    per_member = []
    for seed in seeds:
        k_init, k_data = jax.random.split(jax.random.PRNGKey(int(seed)))
        params = model.init(k_init, program.cell, program.input_size, program.output_size, dtype=program.dtype)
        per_member.append((params, k_data))
    params = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[p for p, _ in per_member])
    m = len(seeds)
    opt_state = jax.vmap(lambda h, p: optimizer(h).init(p))(hp, params)
    return State(params=params, opt_state=opt_state, key=jnp.stack([k for _, k in per_member]),
                 step=jnp.zeros(m, jnp.int32), running=jnp.ones(m, bool), diverged=jnp.zeros(m, bool),
                 best_params=params, best_loss=jnp.full(m, jnp.inf, program.dtype),
                 best_step=jnp.zeros(m, jnp.int32), since_best=jnp.zeros(m, jnp.int32))


def update(program: Program, hp: Hparams, state: State, data, max_steps) -> tuple:
    """One update of ONE member (vmap it): returns ``(state, (loss, grad_norm, clipped, omega))``.

    A member that is not running, or has made ``max_steps`` updates, keeps its state; its
    records are nan (clipped: False). An update whose loss or new parameters are not
    finite is discarded and the member stops as diverged.
    """
    key, k_batch = jax.random.split(state.key)
    active = state.running & (state.step < max_steps)
    xs, targets, lengths = program.sample(data, k_batch, program.batch_size)
    alpha = None
    if program.regularize:
        alpha = hp.alpha / (1 + state.step.astype(program.dtype) / hp.alpha_decay)
    loss, omega, grads = next_step.loss_and_grad(program.cell, state.params, xs, targets, lengths, program.loss, alpha)
    updates, opt_state = optimizer(hp).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    norm = optim.counters(opt_state)["last_norm"]
    finite = jnp.isfinite(loss) & all_finite(params)
    commit = active & finite
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(commit, n, o), new, old)
    new_state = state._replace(
        params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
        key=jnp.where(active, key, state.key), step=state.step + commit.astype(jnp.int32),
        running=state.running & ~(active & ~finite) & (state.step + commit.astype(jnp.int32) < max_steps),
        diverged=state.diverged | (active & ~finite),
    )
    nan = jnp.full((), jnp.nan, program.dtype)
    record = (jnp.where(active, loss, nan), jnp.where(active, norm.astype(program.dtype), nan),
              active & optim.is_clipped(norm, hp.clip), jnp.where(active, omega, nan))
    return new_state, record


@functools.partial(jax.jit, static_argnums=(0, 4))
def train_chunk(program: Program, hp: Hparams, state: State, data, num_steps: int, max_steps):
    """``num_steps`` updates of every member on minibatches of ``data`` (one bucket).

    Returns ``(state, records)``, records ``(loss, grad_norm, clipped, omega)`` each
    ``(num_steps, members)``.
    """
    step = jax.vmap(lambda h, s: update(program, h, s, data, max_steps))

    def body(s, _):
        return step(hp, s)

    return jax.lax.scan(body, state, None, length=num_steps)


@functools.partial(jax.jit, static_argnums=(0,))
def _score_batch(program: Program, params, batch):
    return jax.vmap(lambda p: program.score(program.cell, p, batch))(params)


def evaluate(program: Program, params, batches: Sequence[Any]) -> np.ndarray:
    """Loss per step (nats) of every member over ``batches``: ``(members,)`` float64.

    ``sum over batches of the loss sums / sum of the counts``: every predicted step of
    the data set weighs the same.
    """
    total, count = 0.0, 0.0
    for batch in batches:
        s, c = _score_batch(program, params, batch)
        total = total + np.asarray(s, np.float64)
        count = count + np.asarray(c, np.float64)
    return total / np.maximum(count, 1)


@jax.jit
def _track_best(state: State, loss: jax.Array, patience: jax.Array) -> State:
    """Keep the parameters of the lowest validation loss; stop members ``patience`` evaluations past it."""
    measured = state.step > 0
    improved = measured & (loss < state.best_loss)
    pick = lambda new, old: jax.tree_util.tree_map(
        lambda n, o: jnp.where(improved.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)
    since = jnp.where(improved, 0, state.since_best + measured.astype(jnp.int32))
    return state._replace(best_params=pick(state.params, state.best_params),
                          best_loss=jnp.where(improved, loss.astype(state.best_loss.dtype), state.best_loss),
                          best_step=jnp.where(improved, state.step, state.best_step), since_best=since,
                          running=state.running & (since < patience))


class Buckets(NamedTuple):
    """The training data: ``items`` (one pytree per bucket) and their sampling ``weights``."""

    items: List[Any]
    weights: np.ndarray


def train(program: Program, members: Sequence[dict], buckets: Buckets, valid: Sequence[Any], *,
          max_steps: int, chunk_steps: int, eval_every: int, patience: int, order_seed: int = 0,
          trace: bool = False, progress: Optional[Callable[[str], None]] = None, scale: float = 1.0) -> tuple:
    """Train ``members`` (dicts with ``seed`` and the :class:`Hparams` fields) until each stops.

    Every ``eval_every`` updates (a multiple of ``chunk_steps``) the validation loss is
    measured; a member stops after ``patience`` evaluations without a new best, after
    ``max_steps`` updates, or when it diverges. The chunks' buckets are drawn with
    ``numpy.random.default_rng(order_seed)`` (the same sequence for every member).
    ``progress`` gets a line per evaluation (losses times ``scale``).

    Returns:
      ``(state, history)``: the final :class:`State` (``best_params`` = early-stopping
      parameters) and a dict of host arrays: ``eval_steps`` (E,), ``valid`` (E, M),
      ``train_loss``/``grad_norm``/``omega``/``clipped_fraction`` (E, M) means over each
      interval, ``max_grad_norm`` (E, M), and with ``trace`` the per-update
      ``grad_norm``/``clipped``/``loss`` traces (steps, M).
    """
    if eval_every % chunk_steps:
        raise ValueError(f"eval_every ({eval_every}) must be a multiple of chunk_steps ({chunk_steps})")
    count = len(members)
    members, shard = _spread_over_devices(list(members))
    hp = shard(hparams(members, program.dtype), True)
    state = shard(init_state(program, [m["seed"] for m in members], hp), True)
    buckets = Buckets([shard(item, False) for item in buckets.items], buckets.weights)
    valid = [shard(batch, False) for batch in valid]
    rng = np.random.default_rng(order_seed)
    weights = np.asarray(buckets.weights, np.float64) / np.sum(buckets.weights)
    history: Dict[str, list] = {k: [] for k in ("eval_steps", "valid", "train_loss", "grad_norm", "max_grad_norm",
                                                "clipped_fraction", "omega")}
    traces: Dict[str, list] = {"loss": [], "grad_norm": [], "clipped": []}
    patience_arr = jnp.asarray(patience, jnp.int32)
    done_steps, start = 0, time.perf_counter()
    while done_steps < max_steps and bool(np.any(np.asarray(state.running))):
        interval = []
        for _ in range(eval_every // chunk_steps):
            bucket = buckets.items[int(rng.choice(len(buckets.items), p=weights))]
            state, records = train_chunk(program, hp, state, bucket, chunk_steps, jnp.asarray(max_steps, jnp.int32))
            interval.append([np.asarray(r) for r in records])
        done_steps += eval_every
        loss, norm, clipped, omega = (np.concatenate([c[i] for c in interval]) for i in range(4))
        valid_loss = evaluate(program, state.params, valid)
        state = _track_best(state, jnp.asarray(valid_loss, program.dtype), patience_arr)
        with np.errstate(invalid="ignore"), _quiet_nan_warnings():
            history["eval_steps"].append(done_steps)
            history["valid"].append(valid_loss)
            history["train_loss"].append(np.nanmean(loss, axis=0))
            history["grad_norm"].append(np.nanmean(norm, axis=0))
            history["max_grad_norm"].append(np.nanmax(norm, axis=0))
            history["omega"].append(np.nanmean(omega, axis=0))
            active = np.sum(np.isfinite(norm), axis=0)
            history["clipped_fraction"].append(np.sum(clipped, axis=0) / np.maximum(active, 1))
        if trace:
            traces["loss"].append(loss)
            traces["grad_norm"].append(norm)
            traces["clipped"].append(clipped)
        if progress is not None:
            running = int(np.sum(np.asarray(state.running)[:count]))
            progress(f"{done_steps} updates, {running}/{count} running, best valid "
                     f"{scale * np.nanmin(np.asarray(state.best_loss)):.4g}, {time.perf_counter() - start:.0f} s")
    out = {k: np.asarray(v)[:, :count] if np.ndim(v) == 2 else np.asarray(v) for k, v in history.items()}
    if trace:
        out.update({f"trace_{k}": (np.concatenate(v) if v else np.zeros((0, len(members))))[:, :count]
                    for k, v in traces.items()})
    return jax.tree_util.tree_map(lambda a: a[:count], state), out


def _spread_over_devices(members: List[dict]):
    """Members padded to a multiple of the device count, and ``shard(tree, per_member)``.

    With several devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes N
    of a CPU's cores devices, as ``rnn-jax`` does) the member axis is split over them and
    the data is replicated, so each device trains its share of the members; the padding
    members repeat the last one and are dropped from every result. One device: unchanged.
    """
    devices = jax.devices()
    if len(devices) < 2:
        return members, lambda tree, per_member: tree
    members = members + [members[-1]] * (-len(members) % len(devices))
    mesh = jax.sharding.Mesh(np.asarray(devices), ("members",))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("members"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return members, lambda tree, per_member: jax.device_put(tree, split if per_member else replicated)


class _quiet_nan_warnings:
    """nanmean/nanmax of all-nan columns (stopped members) warn; their nan is the answer."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# ---------------------------------------------------------------- hyperparameter search


def search_grid(budget: int, lr_range, clip_range, alpha_range, seed: int = 0) -> List[dict]:
    """``budget`` configurations on a Latin hypercube, log-uniform in each range.

    Every optimizer row gets the same ``budget``: MSGD uses the learning rates,
    MSGD-C the same learning rates each with its threshold, MSGD-CR the same pairs each
    with its α -- so the rows differ, configuration by configuration, only in what their
    optimizer adds. Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)

    def axis(lo_hi):
        lo, hi = np.log(lo_hi[0]), np.log(lo_hi[1])
        cells = (rng.permutation(budget) + rng.uniform(size=budget)) / budget
        return np.asarray([float(f"{v:.3g}") for v in np.exp(lo + (hi - lo) * cells)])

    lrs, clips, alphas = axis(lr_range), axis(clip_range), axis(alpha_range)
    order = np.argsort(lrs)
    return [dict(learning_rate=float(lrs[i]), clip=float(clips[i]), alpha=float(alphas[i])) for i in order]


def row_config(optimizer_name: str, point: dict, alpha_decay: float) -> dict:
    """A search point as one optimizer's hyperparameters (MSGD: no clipping; only MSGD-CR: Ω)."""
    if optimizer_name not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {optimizer_name!r}")
    return dict(learning_rate=point["learning_rate"],
                clip=math.inf if optimizer_name == "msgd" else point["clip"],
                alpha=point["alpha"] if optimizer_name == "msgd_cr" else 0.0,
                alpha_decay=float(alpha_decay))


# ---------------------------------------------------------------- the comparison of Table 1

SEARCH_SEED = 10_000  # search members use seeds SEARCH_SEED + i: never a seed of the final runs
ROW_NAMES = {"msgd": "MSGD", "msgd_c": "MSGD-C", "msgd_cr": "MSGD-CR"}
CELL_NAMES = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU"}


class TaskData(NamedTuple):
    """What a task gives the comparison.

    name: the experiment's name; loss: the per-step loss of :mod:`rnn_jax.repro.next_step`;
    input_size, output_size; sample, score: see the module docstring; train: the
    :class:`Buckets`; valid, test, train_eval: lists of evaluation batches (the training
    set scored at the end); references: ``{model name: {split: loss}}`` in the reported
    unit; unit: the unit's name; scale: nats → reported unit; fingerprint: identifies the
    data (part of every result key); info: facts about the data for the summary.
    """

    name: str
    loss: str
    input_size: int
    output_size: int
    sample: Callable
    score: Callable
    train: Buckets
    valid: List[Any]
    test: List[Any]
    train_eval: List[Any]
    references: Dict[str, Dict[str, float]]
    unit: str
    scale: float
    fingerprint: str
    info: Dict[str, Any]


def make_cell(kind: str, hidden_size: int) -> Cell:
    """``rnn``: Elman tanh; ``lstm`` (forget-gate bias 1); ``gru`` -- PyTorch's U(±1/√H) initialisation."""
    return common.make_cell(kind, hidden_size, forget_bias=1.0)


def rows_of(cell_kind: str) -> List[str]:
    """The optimizers a cell is trained with: the paper's three for the tanh RNN; MSGD-C for gated cells
    (Ω is defined for Elman cells only)."""
    return list(OPTIMIZERS) if cell_kind == "rnn" else ["msgd_c"]


def row_name(cell_kind: str, optimizer_name: str) -> str:
    return f"{CELL_NAMES[cell_kind]} {ROW_NAMES[optimizer_name]}"


def make_program(data: TaskData, cell_kind: str, cfg: dict) -> Program:
    return Program(cell=make_cell(cell_kind, cfg["hidden_size"]), loss=data.loss,
                   regularize=cell_kind == "rnn" and "msgd_cr" in rows_of(cell_kind),
                   batch_size=cfg["batch_size"], input_size=data.input_size, output_size=data.output_size,
                   sample=data.sample, score=data.score)


def _round(values, digits: int = 4) -> list:
    """Floats to ``digits`` significant digits (None for non-finite): compact JSON traces."""
    out = []
    for v in np.asarray(values, np.float64).ravel():
        out.append(float(f"{v:.{digits}g}") if np.isfinite(v) else None)
    return out


def _train_unit(data: TaskData, cell_kind: str, members: List[dict], cfg: dict, *, trace: bool, final: bool,
                progress: Optional[Callable[[str], None]]) -> dict:
    """Train ``members`` of one cell; per member its settings, outcome, curves and scores."""
    program = make_program(data, cell_kind, cfg)
    start = time.perf_counter()
    state, history = train(program, members, data.train, data.valid, max_steps=cfg["max_steps"],
                           chunk_steps=cfg["chunk_steps"], eval_every=cfg["eval_every"], patience=cfg["patience"],
                           order_seed=cfg.get("order_seed", 0), trace=trace, progress=progress,
                           scale=data.scale)
    scores = {}
    if final:  # the early-stopping parameters on test and on the training set (never during the search)
        scores = {"test": evaluate(program, state.best_params, data.test),
                  "train": evaluate(program, state.best_params, data.train_eval)}
    running = np.asarray(state.running)
    records = []
    for i, member in enumerate(members):
        rec = {**member, "cell": cell_kind,
               "best_valid": float(np.asarray(state.best_loss)[i]) * data.scale,
               "best_step": int(np.asarray(state.best_step)[i]), "steps": int(np.asarray(state.step)[i]),
               "diverged": bool(np.asarray(state.diverged)[i]),
               "stopped_early": bool(not running[i] and not np.asarray(state.diverged)[i]
                                     and np.asarray(state.step)[i] < cfg["max_steps"]),
               "valid_curve": _round(history["valid"][:, i] * data.scale),
               "train_loss_curve": _round(history["train_loss"][:, i] * data.scale),
               "grad_norm_curve": _round(history["grad_norm"][:, i]),
               "max_grad_norm_curve": _round(history["max_grad_norm"][:, i]),
               "clipped_fraction_curve": _round(history["clipped_fraction"][:, i], 3),
               "omega_curve": _round(history["omega"][:, i])}
        norms = history.get("trace_grad_norm")
        if norms is not None:
            valid_steps = np.isfinite(norms[:, i])
            rec["clipped_fraction"] = float(np.mean(history["trace_clipped"][valid_steps, i])) if valid_steps.any() else 0.0
        for split, values in scores.items():
            rec[split] = float(values[i]) * data.scale
        records.append(rec)
    out = {"cell": cell_kind, "eval_steps": [int(s) for s in history["eval_steps"]], "members": records,
           "seconds": time.perf_counter() - start}
    if trace:  # the per-update gradient norms of each row's first seed (the clipping figure)
        out["traces"] = {}
        for i, member in enumerate(members):
            key = member["optimizer"]
            if key in out["traces"]:
                continue
            steps = int(np.asarray(state.step)[i])
            out["traces"][key] = {"seed": member["seed"], "grad_norm": _round(history["trace_grad_norm"][:steps, i]),
                                  "clipped": [int(j) for j in np.nonzero(history["trace_clipped"][:steps, i])[0]],
                                  "loss": _round(history["trace_loss"][:steps, i] * data.scale)}
    return out


def _settings_key(cfg: dict) -> str:
    keys = ("hidden_size", "batch_size", "max_steps", "chunk_steps", "eval_every", "patience", "search_budget",
            "lr_range", "clip_range", "alpha_range", "alpha_decay", "order_seed")
    return "|".join(f"{k}={cfg.get(k)}" for k in keys)


def choose(search: dict) -> Dict[str, dict]:
    """Per optimizer row, the search member with the lowest validation loss (non-finite ones never win)."""
    chosen: Dict[str, dict] = {}
    for rec in search["members"]:
        v = rec["best_valid"]
        if not np.isfinite(v):
            continue
        if rec["optimizer"] not in chosen or v < chosen[rec["optimizer"]]["best_valid"]:
            chosen[rec["optimizer"]] = rec
    return chosen


def run_comparison(out_dir: str, profile: str, cfg: dict, data: TaskData, seeds: Sequence[int],
                   progress: bool = True) -> dict:
    """The search on validation, then the chosen settings with every seed, for every cell of ``cfg``.

    Units of ``results.jsonl``: ``search`` and ``final`` for each cell (a rerun skips
    finished ones). Writes ``table.md``, ``summary.json``, ``learning_curves.png``,
    ``grad_norm_trace.png`` and ``search.png``.
    """
    results = common.Results(out_dir)
    grid = search_grid(cfg["search_budget"], cfg["lr_range"], cfg["clip_range"], cfg["alpha_range"])
    cells_ = list(cfg["cells"])
    prog = common.Progress(data.name, 2 * len(cells_), enabled=progress)
    say = prog.message if progress else None
    base = f"{data.fingerprint}|{_settings_key(cfg)}"
    searches, finals = {}, {}
    for cell_kind in cells_:
        key = f"search|{cell_kind}|{base}"
        if not results.done(key):
            members = [dict(row_config(opt, point, cfg["alpha_decay"]), optimizer=opt, config=j,
                            seed=SEARCH_SEED + j) for opt in rows_of(cell_kind) for j, point in enumerate(grid)]
            prog.message(f"search {CELL_NAMES[cell_kind]}: {len(members)} members")
            results.add(key, _train_unit(data, cell_kind, members, cfg, trace=False, final=False, progress=say))
        searches[cell_kind] = results.get(key)
        prog.update(note=f"search {cell_kind} ({searches[cell_kind]['seconds']:.0f} s)")
    for cell_kind in cells_:
        chosen = choose(searches[cell_kind])
        picked = {opt: {k: chosen[opt][k] for k in ("learning_rate", "clip", "alpha", "alpha_decay", "config")}
                  for opt in rows_of(cell_kind) if opt in chosen}
        key = f"final|{cell_kind}|{base}|seeds={','.join(map(str, seeds))}|{sorted(picked.items())}"
        if not results.done(key):
            members = [dict(hp, optimizer=opt, seed=int(s)) for opt, hp in picked.items() for s in seeds]
            prog.message(f"final {CELL_NAMES[cell_kind]}: {len(members)} members")
            results.add(key, _train_unit(data, cell_kind, members, cfg, trace=True, final=True, progress=say))
        finals[cell_kind] = results.get(key)
        prog.update(note=f"final {cell_kind} ({finals[cell_kind]['seconds']:.0f} s)")
    summary = common.finite(summarize(profile, cfg, data, seeds, grid, searches, finals))
    common.write_text(out_dir, "table.md", table(summary))
    plots(out_dir, cfg, data, summary, searches, finals)
    return common.write_summary(out_dir, summary)


def summarize(profile: str, cfg: dict, data: TaskData, seeds: Sequence[int], grid, searches, finals) -> dict:
    """Headline numbers: per row the chosen settings and the spread over seeds of each split's loss."""
    rows = {}
    for cell_kind, final in finals.items():
        for opt in rows_of(cell_kind):
            members = [m for m in final["members"] if m["optimizer"] == opt]
            if not members:
                continue
            first = members[0]
            rows[row_name(cell_kind, opt)] = {
                "cell": cell_kind, "optimizer": opt,
                "learning_rate": first["learning_rate"], "clip": first["clip"], "alpha": first["alpha"],
                "alpha_decay": first["alpha_decay"], "search_config": first.get("config"),
                "train": common.mean_and_spread([m["train"] for m in members]),
                "valid": common.mean_and_spread([m["best_valid"] for m in members]),
                "test": common.mean_and_spread([m["test"] for m in members]),
                "best_step": common.mean_and_spread([m["best_step"] for m in members]),
                "clipped_fraction": common.mean_and_spread([m.get("clipped_fraction", 0.0) for m in members]),
                "diverged": sum(m["diverged"] for m in members),
                "seeds": [m["seed"] for m in members],
            }
    search = {}
    for cell_kind, s in searches.items():
        for m in s["members"]:
            search.setdefault(row_name(cell_kind, m["optimizer"]), []).append(
                {k: m[k] for k in ("config", "learning_rate", "clip", "alpha", "best_valid", "best_step", "diverged")})
    seconds = sum(u["seconds"] for u in list(searches.values()) + list(finals.values()))
    verdicts = [v.as_dict() for v in table1_verdicts(finals)]
    return {"verdicts": verdicts, "name": data.name, "profile": profile, "unit": data.unit, "seeds": list(seeds), "data": data.info, "figures": list(FIGURES),
            "references": data.references, "rows": rows, "search": search,
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
            "search_grid": grid, "training_seconds": seconds}


# Table 1's comparisons, each on the tanh RNN's paired seeds: (claim, better, worse).
CLAIMS = (("clipping", "msgd_c", "msgd"), ("regulariser", "msgd_cr", "msgd_c"))


def table1_verdicts(finals: dict) -> list:
    """The paper's Table 1 claims -- MSGD-C below MSGD, MSGD-CR below MSGD-C in test loss -- decided on the
    tanh RNN's paired seeds by :func:`rnn_jax.repro.experiments.verdicts.lower_loss` (rows that did not run: none)."""
    from rnn_jax.repro.experiments import verdicts

    members = finals.get("rnn", {}).get("members", [])
    by_opt = {}
    for m in members:
        by_opt.setdefault(m["optimizer"], {})[m["seed"]] = float(m["test"]) if m["test"] is not None else math.nan
    return [verdicts.lower_loss(by_opt[b], by_opt[w], ROW_NAMES[b], ROW_NAMES[w], claim, unit="test loss")
            for claim, b, w in CLAIMS if b in by_opt and w in by_opt]


def _verdict_lines(summary: dict) -> list:
    return [f"- **{v['claim']}** ({v['statement'].split(':')[0]}): {v['outcome'].upper()} "
            f"({v['test']}, p = {v['p_value']:.3g}, opposite direction p = {v['p_against']:.3g})"
            for v in summary.get("verdicts", []) if v["p_value"] is not None]


def table(summary: dict) -> str:
    """The markdown table: references first, then every row, test loss as mean ± std [min, max] over seeds."""
    unit = summary["unit"]
    n = len(summary["seeds"])
    head = (f"# {summary['data'].get('title', '')} ({summary['profile']} profile)\n\n"
            f"Loss: {unit}, lower is better. Network rows: mean ± std over {n} seeds [min, max], at the "
            f"update of the lowest validation loss (early stopping); hyperparameters chosen on validation, "
            f"{summary['settings']['search_budget']} configurations per row. Clipped: fraction of updates whose "
            f"gradient norm reached the threshold.\n")
    rows = []
    for name, ref in summary["references"].items():
        rows.append([name, "-", f"{ref['train']:.3f}", f"{ref['valid']:.3f}", f"{ref['test']:.3f}", "-", "-", "-"])
    order = lambda item: (list(CELL_NAMES).index(item[1]["cell"]), list(OPTIMIZERS).index(item[1]["optimizer"]))
    for name, r in sorted(summary["rows"].items(), key=order):  # summary.json stores them sorted by name
        fmt = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] else "-"
        t = r["test"]
        hp = f"lr {r['learning_rate']:.3g}"
        if r["clip"] is not None and np.isfinite(r["clip"]):
            hp += f", clip {r['clip']:.3g}"
        if r["alpha"]:
            hp += f", α {r['alpha']:.3g}/(1+t/{r['alpha_decay']:g})"
        test = f"{fmt(t)} [{t['min']:.3f}, {t['max']:.3f}]" if t["n"] else "-"
        rows.append([name, hp, fmt(r["train"]), fmt(r["valid"]), test,
                     f"{r['best_step']['mean']:.0f}" if r["best_step"]["n"] else "-",
                     f"{100 * r['clipped_fraction']['mean']:.1f} %" if r["clipped_fraction"]["n"] else "-",
                     f"{r['diverged']}/{len(r['seeds'])}"])
    headers = ["model", "hyperparameters", "train", "valid", "test", "updates to best", "clipped", "diverged"]
    text = head + "\n" + common.markdown_table(headers, rows)
    if summary.get("verdicts"):
        from rnn_jax.repro.experiments import verdicts

        text += "\n\n" + verdicts.render_markdown(verdicts.Verdict(**v) for v in summary["verdicts"])
    return text


def readme_body(summary: dict, prov: dict) -> str:
    """The README's quote of a committed run (``results/<name>/summary.json`` and ``provenance.json``):
    the table of references and rows, the settings and the cost, and the figures."""
    lines = table(summary).split("\n", 2)[2].split("\n\n## Verdicts")[0].strip("\n").split("\n")  # the table only
    if summary.get("verdicts"):
        lines += [""] + _verdict_lines(summary)
    s = summary["settings"]
    lines += ["", f"{len(summary['seeds'])} seeds per row; {', '.join(CELL_NAMES[c] for c in s['cells'])} of "
                  f"{s['hidden_size']} units; minibatches of {s['batch_size']}; up to {s['max_steps']:,} updates, "
                  f"validation every {s['eval_every']}, patience {s['patience']}; {s['search_budget']} search points "
                  f"per row. `{prov['command']}` took {prov['wall_seconds'] / 60:.0f} minutes on {prov['cores']} "
                  f"cores ({prov['cpu']}), commit {prov['commit'][:7]}.", ""]
    lines += [f"![{fig[:-4].replace('_', ' ')}](results/{summary['name']}/{fig})" for fig in summary.get("figures", [])]
    return "\n".join(lines)


FIGURES = ("learning_curves.png", "grad_norm_trace.png", "search.png")
COLORS = {"tanh RNN MSGD": "tab:red", "tanh RNN MSGD-C": "tab:orange", "tanh RNN MSGD-CR": "tab:purple",
          "LSTM MSGD-C": "tab:blue", "GRU MSGD-C": "tab:green"}


def plots(out_dir: str, cfg: dict, data: TaskData, summary: dict, searches: dict, finals: dict) -> None:
    """learning_curves.png, grad_norm_trace.png and search.png (skipped without matplotlib)."""
    plt = common.pyplot()
    if plt is None:
        return
    unit = data.unit
    # 1. validation loss against updates, every seed of every row, and the references
    fig, ax = plt.subplots(figsize=(7.5, 4.6), constrained_layout=True)
    for cell_kind, final in finals.items():
        steps = np.asarray(final["eval_steps"])
        for opt in rows_of(cell_kind):
            name = row_name(cell_kind, opt)
            members = [m for m in final["members"] if m["optimizer"] == opt]
            for j, m in enumerate(members):
                curve = np.asarray([np.nan if v is None else v for v in m["valid_curve"]], np.float64)
                ax.plot(steps[:len(curve)], curve, color=COLORS.get(name), alpha=0.6, lw=1,
                        label=name if j == 0 else None)
                ax.plot([m["best_step"]], [m["best_valid"]], "o", color=COLORS.get(name), ms=3)
    for k, (name, ref) in enumerate(data.references.items()):
        ax.axhline(ref["valid"], color="gray", ls=["--", ":", "-."][k % 3], lw=1, label=f"{name} (valid)")
    finite_refs = [ref["valid"] for ref in data.references.values()]
    if finite_refs:
        best = [r["valid"]["min"] for r in summary["rows"].values() if r["valid"]["n"]]
        low = min(best + finite_refs)
        ax.set_ylim(low - 0.05 * abs(low), max(finite_refs) + 0.15 * (max(finite_refs) - low + 1e-9))
    ax.set_xlabel("updates")
    ax.set_ylabel(f"validation loss ({unit})")
    ax.set_title(f"{data.info.get('title', data.name)}: learning curves (dots: early-stopping point)")
    ax.legend(fontsize=7)
    common.save_figure(fig, out_dir, "learning_curves.png")

    # 2. the gradient norm of every update for the first seed of each row, clipped updates marked
    traces = [(row_name(c, opt), opt, f["traces"][opt], f["members"]) for c, f in finals.items()
              for opt in rows_of(c) if opt in f.get("traces", {})]
    if traces:
        fig, axes = plt.subplots(len(traces), 1, figsize=(8, 2.1 * len(traces)), squeeze=False,
                                 constrained_layout=True, sharex=True)
        for ax, (name, opt, tr, members) in zip(axes[:, 0], traces):
            norms = np.asarray([np.nan if v is None else v for v in tr["grad_norm"]], np.float64)
            x = np.arange(1, len(norms) + 1)
            ax.plot(x, norms, color=COLORS.get(name, "k"), lw=0.6)
            clip = next(m["clip"] for m in members if m["optimizer"] == opt)
            if clip is not None and np.isfinite(clip):
                ax.axhline(clip, color="k", ls="--", lw=0.8, label=f"threshold {clip:.3g}")
                idx = np.asarray(tr["clipped"], int)
                ax.plot(idx + 1, norms[idx], "x", color="k", ms=3,
                        label=f"clipped: {len(idx)} of {len(norms)} updates")
                ax.legend(fontsize=7, loc="upper right")
            ax.set_yscale("log")
            ax.set_ylabel("‖g‖ before clipping")
            ax.set_title(f"{name}, seed {tr['seed']}", fontsize=9)
        axes[-1, 0].set_xlabel("update")
        common.save_figure(fig, out_dir, "grad_norm_trace.png")

    # 3. the search: best validation loss of each configuration against its learning rate
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for name, points in summary["search"].items():
        lr = [p["learning_rate"] for p in points]
        v = [np.nan if p["best_valid"] is None else p["best_valid"] for p in points]
        ax.plot(lr, v, "o-", color=COLORS.get(name), label=name, ms=4, lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (MSGD-C / -CR: with their own threshold and α)")
    ax.set_ylabel(f"best validation loss ({unit})")
    if finite_refs:
        ax.set_ylim(None, max(finite_refs) * 1.1)
    ax.legend(fontsize=7)
    ax.set_title("hyperparameter search")
    common.save_figure(fig, out_dir, "search.png")
