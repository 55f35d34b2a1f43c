"""The other pathological problems with MSGD-CR and an MSGD-C control (Pascanu, Mikolov & Bengio 2013, §4.3).

What it shows. With clipping (threshold 1) and the regulariser Ω (α = 4), a
50-unit tanh Elman network, learning rate 0.01, batch 20, a fresh minibatch per
update, learns the long-term dependency problems of Hochreiter & Schmidhuber
(1997): adding, multiplication, 3-bit temporal order, random permutation
(100-dimensional one-hot inputs) and noiseless memorization (cross-entropy at
every step). The paper reports, over 5 runs each, 100 % success on adding,
multiplication, 3-bit temporal order and memorization for lengths up to 200, and
2 of 5 runs on random permutation; and one basic-tanh temporal-order model trained
on lengths 50-200 that generalised to sequences of length 5000. A run succeeds
when it gets under 1 % of 10,000 fresh sequences wrong.

How it runs. Per task ONE :class:`rnn_jax.repro.train.Setup` (``regularize=True``) trains
MSGD-CR (clip 1, α 4) and MSGD-C (clip 1, α 0) members as one vmapped sweep
(:func:`rnn_jax.repro.sweep.run_sweep`, one sub-folder per task: resume for free); both
configurations use the same seeds, so each MSGD-CR run is paired with an MSGD-C run
that has the same initial weights and minibatches. The nominal length T of every
minibatch is drawn uniformly from the profile's ``[min_length, max_length)`` (the
paper's code does the same; the adding problems add up to 10 %, memorization ``2 ×
n_positions``), and an update costs what its drawn length costs (the engine loops
over the drawn length only). Every task and run gets the same update budget
(``max_steps``, one number per profile: no per-task tuning). Members are screened
after every chunk on ``eval_size`` fresh sequences (in batches of ``eval_batch_size``,
one drawn length per batch) and a success is confirmed on ``confirm_size`` (10,000,
the paper's) before the run stops as solved. The initialisation is ``smart_tanh``
(the authors' code's default; the paper does not name the one of this section).

Then the *best* solved member of each task (MSGD-CR first, then the lowest error,
then the fewest updates) is evaluated with :func:`rnn_jax.repro.train.member_error` on
sequences of exactly 1×, 2×, 5× and 10× its longest training length (59 for
[30, 60)), on ``confirm_size`` sequences; and the paper's generalisation claim is
tested: a basic-tanh temporal-order model (4 classes,
``tasks.get("temporal_order", min_length, max_length)``), MSGD-CR, trained on the
same range with the same budget, its best solved member evaluated at the profile's
claim lengths (cpu: 60, 200, 500, 1000, 2000, 5000) on 10,000 sequences each.

Verdicts (profiles ``tiny``, ``cpu``, ``full``): per task "MSGD-CR solves 100 %"
(random permutation: the paper's 2 of 5) and "CR ≥ C" (exact McNemar test on the
paired seeds), decided by :func:`rnn_jax.repro.experiments.verdicts.pathological_verdicts`
on the raw member records, printed in ``table.md`` and listed in ``summary.json``.
``quick`` is a smoke test and prints no verdict.

Lengths of the ``cpu`` profile: [30, 60), not the paper's [50, 200). Measured on
the project's 2-core CPU (engine of this commit, 10 members = 5 seeds × 2
optimizers, one sweep of 500-update chunks, screen of 1,000 sequences after each;
CPU-seconds per 1,000 updates of the whole sweep, compile excluded): adding 9.4,
noiseless memorization 17.4, random permutation 17.8 (its 100-dimensional inputs); multiplication as adding
and 3-bit temporal order slightly less (the same lengths) -- about 63 CPU-s per
1,000 updates for the five tasks, plus about 5.5 for the claim's 5-member sweep
(padded to 6), i.e. ≈ 69 CPU-s per 1,000 updates of the shared budget when every
run spends it. The cost grows with the mean drawn length: [50, 200) has a mean
length of 125 against 44.5 for [30, 60), 2.8× as much per update, so the same
budget would cost ≈ 190 CPU-s per 1,000 updates, and 90 minutes (5,400 s, less
compilation and evaluation) would buy ≈ 27,000 updates per run (54,000 if the two
cores overlap fully): about what adding and multiplication needed at a FIXED length
of 10 (≈ 19,000 and 28,000 updates, measured by the former quick profile), and
nothing like the paper's budgets (up to 5 million updates). [30, 60) keeps windows
of 3-6 steps for the windowed tasks and affords 60,000 updates per run, two to three
times those needs, in the same 90 minutes.

Budget and wall time of ``cpu``: ONE budget of 60,000 updates for every task and
run. Worst case (every run spends the whole budget): 69 × 60 ≈ 4,100 CPU-s of
training, plus ≈ 6 × 20 CPU-s of compilation, the confirmations (one forward pass
on 10,000 sequences per screen success) and the generalisation evaluations (≈ 1-2
minutes: 10,000 sequences at lengths up to 5,000). On two quiet cores the two
devices of the sweep run in parallel, so the wall time lies between half that and
all of it: ≈ 37-74 minutes, under the 90-minute target even if the cores
never overlap; early stopping only shortens it (solved members leave the batch down
to its smallest size, 8). The measurement was taken on a loaded machine (load
average ≈ 14 on 2 cores: wall times there were 3× the CPU times); check the chunk
times the sweep prints.

Cost of the other profiles: ``quick`` (every task on [30, 40), 2 seeds × 2
optimizers, 2,000 updates, the claim's model evaluated at 60 and 200) measured 126
CPU-seconds (5.4 minutes of wall time on the loaded machine), most of it compilation;
``full`` (5 tasks × 20 members × up to 1,000,000 updates of T in [50, 200)) is a
GPU job: at an assumed ~50 µs per time step per update (latency-bound), ≈ 7
seconds per 1,000 updates, ≈ 2 hours per task that spends its whole budget.

The best members' parameters are the sweep's ``<task>/params/member_<i>.npz``, and
the generalisation errors use the fixed key ``fold_in(PRNGKey(GENERALISATION_SEED),
length)``, so a reader can recompute them.

Outputs in ``out_dir``: ``run.json`` (the settings: a rerun must match them),
``<task>/`` and ``claim_temporal_order_basic_tanh/`` (each sweep's results, chunk log,
checkpoint and parameters), ``results.jsonl`` (one line per member -- with its
``optimizer`` label, the pairing key of the verdicts -- per generalisation
evaluation and per baseline), ``table.md``, ``success.png``, ``generalisation.png``,
``summary.json``.
"""


from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import rnn_jax
from rnn_jax import model
from rnn_jax.repro import sweep, tasks, train
from rnn_jax.cells import ElmanParams
from rnn_jax.repro.experiments import common, verdicts
from rnn_jax.readout import ReadoutParams

NAME = "pathological"
TASKS = ("adding", "multiplication", "temporal_order_3bit", "random_permutation", "noiseless_memorization")
HIDDEN_SIZE = 50
LEARNING_RATE = 0.01
BATCH_SIZE = 20
# The two optimizer configurations of a task's sweep: (global-norm clipping threshold, weight α of Ω).
OPTIMIZERS: Dict[str, Dict[str, float]] = {
    "MSGD-CR": {"clip": 1.0, "alpha": 4.0},
    "MSGD-C": {"clip": 1.0, "alpha": 0.0},
}
CLIP = OPTIMIZERS["MSGD-CR"]["clip"]
ALPHA = OPTIMIZERS["MSGD-CR"]["alpha"]
READOUT_INIT = {"sigmoid": "sigmoid", "basic_tanh": "basic_tanh", "smart_tanh": "sigmoid"}
GENERALISATION_SEED = 2013
BASELINE_SEED = 1997
# The paper's generalisation claim: one basic-tanh temporal-order model (4 classes) trained on a range of lengths.
CLAIM_TASK = "temporal_order"
CLAIM_SCHEME = "basic_tanh"
CLAIM_OPTIMIZER = "MSGD-CR"
CLAIM_FOLDER = "claim_temporal_order_basic_tanh"

GENERALISATION_NOTE = (
    "A network trained on ONE fixed length learns the timing of that length (where the information is, when "
    "to answer), so it need not generalise to other lengths -- its error can even oscillate with the length "
    "when its memory is a rotation of the state. Trained on a range of lengths (the cpu profile: [30, 60); the "
    "paper: 50-200) it has to find the information wherever the range puts it; the paper reports one basic-tanh "
    "temporal-order model trained on 50-200 that generalised to 5000.")

# Reported by Pascanu et al. (2013) for MSGD-CR, 5 runs each, lengths up to 200.
PAPER = {
    "adding": "100 % (5 of 5)",
    "multiplication": "100 % (5 of 5)",
    "temporal_order_3bit": "100 % (5 of 5)",
    "random_permutation": "40 % (2 of 5)",
    "noiseless_memorization": "100 % (5 of 5)",
}
PAPER_CLAIM = ("Pascanu et al. (2013), section 4.3: MSGD-CR (clipping 1, α = 4) solves adding, multiplication, "
               "3-bit temporal order and noiseless memorization in 5 of 5 runs and random permutation in 2 of 5, "
               "trained on lengths 50-200 with up to 5 million updates; one basic-tanh temporal-order model "
               "trained on 50-200 generalised to sequences of length 5000.")

SMOKE_NOTE = ("This profile is a smoke test of the command: its budget and seeds are too small to decide the "
              "paper's claims, and no verdict is printed. `rnn-jax pathological --profile cpu` decides them with "
              "exact tests on paired seeds; its committed results are in `results/pathological/` (see the README).")


def _profile(task_names, min_length, max_length, *, seeds, max_steps, chunk_steps, eval_size, eval_batch_size,
             confirm_size, multiples, claim, verdicts, optimizers=tuple(OPTIMIZERS), scheme="smart_tanh") -> dict:
    return dict(tasks=tuple(task_names), min_length=min_length, max_length=max_length, optimizers=tuple(optimizers),
                seeds=seeds, max_steps=max_steps, chunk_steps=chunk_steps, eval_size=eval_size,
                eval_batch_size=eval_batch_size, confirm_size=confirm_size, multiples=tuple(multiples),
                scheme=scheme, claim=claim, verdicts=verdicts)


# Profiles. ``tasks``: the task names; ``min_length``/``max_length``: the nominal length T of every
# minibatch is drawn uniformly from [min_length, max_length) (exactly min_length when equal);
# ``max_steps``: THE update budget of every member of every task (one number: no per-task budget);
# ``optimizers``: the configurations of each task's sweep, paired by seed; ``chunk_steps``: updates
# between evaluations (early stopping); ``eval_size``: fresh sequences of the screen after every chunk
# (in batches of ``eval_batch_size``, one drawn length per batch); ``confirm_size``: fresh sequences
# that confirm a success seen on the screen (the paper: 10,000); ``multiples``: the generalisation
# lengths of each task's best member, as multiples of its longest training length; ``claim``: the
# generalisation claim's basic-tanh temporal-order model (its seeds, the test lengths and sequences per
# length), trained on the same range with the same budget; ``verdicts``: decide the paper's claims.
PROFILES: Dict[str, dict] = {
    # The test's (seconds): 3-bit temporal order at T = 10 (solved in about a thousand updates), both
    # optimizers on 2 paired seeds; the claim's model at T = 10 too, one seed.
    "tiny": _profile(("temporal_order_3bit",), 10, 10, seeds=2, max_steps=2000, chunk_steps=250, eval_size=500,
                     eval_batch_size=500, confirm_size=1000, multiples=(1, 2),
                     claim=dict(seeds=1, lengths=(20,), eval_size=500), verdicts=True),
    # A smoke test of the command on two CPU cores (< 5 minutes): every task on lengths drawn from [30, 40)
    # (the windows of the windowed tasks are not degenerate), 2 paired seeds, 2,000 updates; no verdict.
    "quick": _profile(TASKS, 30, 40, seeds=2, max_steps=2000, chunk_steps=500, eval_size=500, eval_batch_size=100,
                      confirm_size=1000, multiples=(2,), claim=dict(seeds=2, lengths=(60, 200), eval_size=1000),
                      verdicts=False),
    # Two CPU cores, <= 90 minutes (see the module docstring for the arithmetic): every task on lengths drawn
    # from [30, 60), MSGD-CR and MSGD-C on 5 paired seeds, ONE budget of 60,000 updates for every task,
    # screened on 1,000 sequences every 1,000 updates, confirmed on 10,000.
    "cpu": _profile(TASKS, 30, 60, seeds=5, max_steps=60_000, chunk_steps=1000, eval_size=1000, eval_batch_size=100,
                    confirm_size=10_000, multiples=(1, 2, 5, 10),
                    claim=dict(seeds=5, lengths=(60, 200, 500, 1000, 2000, 5000), eval_size=10_000), verdicts=True),
    # A GPU job: the paper's lengths [50, 200), 10 paired seeds, up to 1,000,000 updates, confirmed on 10,000.
    "full": _profile(TASKS, 50, 200, seeds=10, max_steps=1_000_000, chunk_steps=2000, eval_size=1000,
                     eval_batch_size=100, confirm_size=10_000, multiples=(1, 2, 5, 10),
                     claim=dict(seeds=10, lengths=(200, 500, 1000, 2000, 5000), eval_size=10_000), verdicts=True),
}


def make_task(name: str, min_length: int, max_length: int) -> tasks.Task:
    """The task at nominal lengths ``[min_length, max_length)`` (exactly ``min_length`` when equal)."""
    return tasks.get(name, min_length=min_length, max_length=max_length)


def longest_length(min_length: int, max_length: int) -> int:
    """The longest nominal length T a task draws: ``max_length - 1`` for a range, ``max_length`` when fixed."""
    return max_length - 1 if max_length > min_length else max_length


def lengths_label(min_length: int, max_length: int) -> str:
    """``"30-60"`` for the range [30, 60), ``"10"`` for a fixed length."""
    return f"{min_length}" if min_length == max_length else f"{min_length}-{max_length}"


def make_setup(name: str, min_length: int, max_length: int, scheme: str = "smart_tanh", eval_size: int = 1000,
               eval_batch_size: Optional[int] = None) -> train.Setup:
    """One task's compiled program: its MSGD-CR and MSGD-C members (α 4 and 0) share it.

    ``regularize=True`` so that α is a per-member number (with α = 0 Ω is computed and
    logged but has no effect). ``eval_batch_size``: sequences per evaluation batch; each
    batch draws one length, so a screen of ``eval_size`` sequences sees ``eval_size /
    eval_batch_size`` lengths of the range.
    """
    return train.Setup(
        cell=rnn_jax.elman(HIDDEN_SIZE, scheme=scheme),
        task=make_task(name, min_length, max_length),
        batch_size=BATCH_SIZE,
        regularize=True,
        eval_size=eval_size,
        eval_batch_size=min(eval_batch_size or 1000, eval_size),
        readout_weight_init=READOUT_INIT[scheme],
    )


def make_members(optimizers: Sequence[str], seeds: Sequence[int]) -> List[dict]:
    """Sweep members: every optimizer configuration × every seed (paired: the same seeds for each)."""
    return [dict(seed=s, learning_rate=LEARNING_RATE, clip=OPTIMIZERS[o]["clip"], alpha=OPTIMIZERS[o]["alpha"],
                 optimizer=o) for o in optimizers for s in seeds]


def generalisation_setup(setup: train.Setup, length: int, eval_size: int) -> train.Setup:
    """``setup`` with the task at exactly ``length`` steps (nominal T) and ``eval_size`` sequences."""
    task = make_task(setup.task.name, length, length)
    batch = max(1, min(1000, eval_size, 200_000 // task.max_steps))  # bound the (batch, time, hidden) buffers
    return setup._replace(task=task, length=None, eval_size=eval_size, eval_batch_size=batch)


def generalisation_key(length: int) -> jax.Array:
    """The key of the generalisation evaluation at ``length``: ``fold_in(PRNGKey(GENERALISATION_SEED), length)``."""
    return jax.random.fold_in(jax.random.PRNGKey(GENERALISATION_SEED), length)


def generalisation_error(setup: train.Setup, params: model.ModelParams, length: int, eval_size: int) -> float:
    """:func:`rnn_jax.repro.train.member_error` of ``params`` at ``length`` on ``eval_size`` fresh sequences."""
    g = generalisation_setup(setup, length, eval_size)
    return float(jax.jit(lambda p, k: train.member_error(g, p, k))(params, generalisation_key(length)))


def constant_baseline_error(task: tasks.Task, key: jax.Array, size: int) -> float:
    """Error of the best constant guess on ``size`` sequences drawn with ``key``.

    Regression: the mean target; classification: the most frequent class (at each
    step for per-step targets). A trained network should beat it by far.
    """
    batch = task.sample(key, size)
    targets = np.asarray(batch.targets)
    if task.loss == "mse":
        pred = np.broadcast_to(targets.mean(axis=0), targets.shape)
    else:
        counts = np.stack([np.sum(targets == c, axis=0) for c in range(task.output_size)], axis=-1)
        pred = np.broadcast_to(np.eye(task.output_size)[np.argmax(counts, axis=-1)], targets.shape + (task.output_size,))
    return float(jnp.mean(task.error(jnp.asarray(pred, batch.inputs.dtype), batch)))


# ---------------------------------------------------------------- parameters of solved members


_TEMPLATE = model.ModelParams(ElmanParams(0, 0, 0), ReadoutParams(0, 0))


def save_params(path: str, params: model.ModelParams) -> None:
    """Save one member's Elman ``ModelParams`` (the sweep's format: leaves named ``cell.w_hh``...)."""
    sweep.save_params_file(path, params)


def load_params(path: str) -> model.ModelParams:
    """Load Elman ``ModelParams`` saved by :func:`save_params` or by the sweep itself."""
    params = sweep.load_params_file(path, _TEMPLATE)
    return jax.tree_util.tree_map(jnp.asarray, params)


def params_path(folder: str, member: int) -> str:
    """A member's parameters, written by :func:`rnn_jax.repro.sweep.run_sweep` when it finished."""
    return sweep.member_params_path(folder, member)


def best_member(records: Sequence[dict]) -> Optional[dict]:
    """The member whose generalisation is tested: among the solved members with saved parameters,
    MSGD-CR first, then the lowest recorded error, the fewest updates, the lowest member index."""
    solved = [r for r in records if r["outcome"] == "solved" and r.get("params_file")]
    if not solved:
        return None
    return min(solved, key=lambda r: (r.get("optimizer") != "MSGD-CR", r["error"], r["steps"], r["member"]))


# ---------------------------------------------------------------- aggregation


def aggregate(records: Sequence[dict], task_names: Sequence[str], optimizers: Sequence[str],
              baselines: Dict[str, float]) -> List[dict]:
    """One row per (task, optimizer): solved / runs, Wilson interval, errors, explosion statistics."""
    rows = []
    for name in task_names:
        for opt in optimizers:
            rs = [r for r in records if r["task"] == name and r["optimizer"] == opt]
            solved = [r for r in rs if r["outcome"] == "solved"]
            rate = common.rate_with_interval(len(solved), len(rs))
            rows.append({
                "task": name, "lengths": rs[0]["lengths"] if rs else None, "optimizer": opt, "members": len(rs),
                "solved": len(solved), "rate": rate["rate"], "low": rate["low"], "high": rate["high"],
                "median_updates_solved": float(np.median([r["steps"] for r in solved])) if solved else float("nan"),
                "error_spread": common.mean_and_spread([np.nan if r["error"] is None else r["error"] for r in rs]),
                "baseline_error": baselines.get(name, float("nan")),
                "median_loss": common.nan_median([r["metrics"]["loss"] for r in rs]),
                **common.outcome_statistics(rs),
                "paper": PAPER[name] if opt == "MSGD-CR" else None,
            })
    return rows


# ---------------------------------------------------------------- outputs


def _fmt(x, spec=".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _table(rows, general, claim, settings: dict, verdict_text: str) -> str:
    headers = ["task", "T", "optimizer", "solved / runs", "success", "95 % interval", "median updates (solved)",
               "diverged", "out of budget", "final error mean ± std [min, max]", "constant-guess error",
               "median final training loss", "median fraction clipped", "largest gradient norm",
               "runs with explosions", "paper (MSGD-CR, T ≤ 200)"]
    body = []
    for r in rows:
        e = r["error_spread"]
        body.append([r["task"], r["lengths"], r["optimizer"], f"{r['solved']} / {r['members']}", r["rate"],
                     f"[{_fmt(r['low'], '.2f')}, {_fmt(r['high'], '.2f')}]", r["median_updates_solved"],
                     r["diverged"], r["exhausted"],
                     f"{_fmt(e['mean'])} ± {_fmt(e['std'])} [{_fmt(e['min'])}, {_fmt(e['max'])}]",
                     r["baseline_error"], r["median_loss"], r["median_clipped_fraction"], r["largest_grad_norm"],
                     f"{r['members_with_explosions']} / {r['members']}", r["paper"] or "—"])
    lengths = lengths_label(settings["min_length"], settings["max_length"])
    drawn = (f"nominal length T drawn per minibatch from [{settings['min_length']}, {settings['max_length']})"
             if settings["min_length"] != settings["max_length"] else f"every sequence of length T = {lengths}")
    confirm = settings.get("confirm_size")
    check = (f"screened every {settings['chunk_steps']:,} updates on {settings['eval_size']:,} fresh sequences and "
             f"confirmed on {confirm:,}" if confirm else
             f"evaluated every {settings['chunk_steps']:,} updates on {settings['eval_size']:,} fresh sequences")
    text = ["# The pathological problems with MSGD-CR and MSGD-C (Pascanu et al. 2013, section 4.3)\n",
            f"Profile `{settings['profile']}`: {settings['scheme']} initialisation, {HIDDEN_SIZE} units, learning rate "
            f"{LEARNING_RATE}, batch {BATCH_SIZE}, a fresh minibatch per update with its {drawn}; MSGD-CR (clip "
            f"{OPTIMIZERS['MSGD-CR']['clip']:g}, α = {OPTIMIZERS['MSGD-CR']['alpha']:g}) and MSGD-C (clip "
            f"{OPTIMIZERS['MSGD-C']['clip']:g}, α = 0) on the same {settings['seeds']} seeds per task; one update budget "
            f"for every task and run: {settings['max_steps']:,}; {check} (success: error < 1 %). Training loss and "
            f"fraction clipped: over each run's last chunk of updates; largest gradient norm: over every applied "
            f"update of every run (the norm includes α dΩ/dW_hh); a run has explosions when an update's norm "
            f"exceeded 10× its chunk's median.\n",
            common.markdown_table(headers, body)]
    text.append("\n## Generalisation to longer sequences\n")
    if general:
        head = ["task", "member (optimizer, seed)", "updates"] + [f"error at T = {e['length']} ({e['multiple']}×)"
                                                                  for e in next(iter(general.values()))["errors"]]
        gbody = [[t, f"{g['member']} ({g['optimizer']}, seed {g['seed']})", g["steps"]] +
                 [e["error"] for e in g["errors"]] for t, g in general.items()]
        text.append(f"The best solved member of each task (MSGD-CR first, then the lowest error), on "
                    f"{next(iter(general.values()))['eval_size']:,} fresh sequences of exactly T steps, T a multiple "
                    f"of the longest training length {longest_length(settings['min_length'], settings['max_length'])}"
                    f".\n\n" + common.markdown_table(head, gbody))
    else:
        text.append("No task has a solved member, so there is nothing to evaluate.\n")
    missing = [t for t in settings["tasks"] if t not in general]
    if general and missing:
        text.append(f"\nNo solved member (nothing to evaluate): {', '.join(missing)}.\n")
    text.append(f"\n{GENERALISATION_NOTE}\n")
    if claim is not None:
        text.append("\n## The paper's generalisation claim: basic-tanh temporal order\n")
        text.append(claim["statement"] + "\n")
        if claim["errors"]:
            text.append("\n" + common.markdown_table(["test length T", "error", "under 1 %"],
                                                     [[e["length"], e["error"], "yes" if e["under_1_percent"] else "no"]
                                                      for e in claim["errors"]]))
    text += ["\n## Against the paper\n", PAPER_CLAIM + "\n", verdict_text]
    return "\n".join(text) + "\n"


def _plots(out_dir: str, rows, general, claim, optimizers) -> List[str]:
    plt = common.pyplot()
    if plt is None:
        return []
    files = []
    task_names = list(dict.fromkeys(r["task"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(task_names) + 3, 3.4))
    width = 0.8 / len(optimizers)
    for i, opt in enumerate(optimizers):
        sel = [next(r for r in rows if r["task"] == t and r["optimizer"] == opt) for t in task_names]
        x = np.arange(len(task_names)) + (i - (len(optimizers) - 1) / 2) * width
        rates = np.array([r["rate"] for r in sel], float)
        err = np.array([[r["rate"] - r["low"] for r in sel], [r["high"] - r["rate"] for r in sel]], float)
        ax.bar(x, rates, width=width, yerr=err, capsize=3, label=opt, alpha=0.85)
    ax.set_xticks(np.arange(len(task_names)))
    ax.set_xticklabels([t.replace("_", " ") for t in task_names], fontsize=7, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (Wilson 95 %)")
    ax.set_title(f"Pathological problems, T in {rows[0]['lengths']}" if rows else "Pathological problems")
    ax.legend(fontsize=7)
    files.append(common.save_figure(fig, out_dir, "success.png"))
    if general or (claim and claim["errors"]):
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for t, g in general.items():
            ax.plot([e["length"] for e in g["errors"]], [e["error"] for e in g["errors"]], marker="o",
                    label=f"{t} ({g['optimizer']})")
        if claim and claim["errors"]:
            ax.plot([e["length"] for e in claim["errors"]], [e["error"] for e in claim["errors"]], marker="s",
                    ls="--", color="black", label=f"{CLAIM_TASK} ({CLAIM_SCHEME}, claim)")
        ax.set_xscale("log")
        ax.axhline(0.01, color="grey", ls=":", lw=1)
        ax.set_xlabel("test sequence length T")
        ax.set_ylabel("error of the best solved member")
        ax.legend(fontsize=6)
        files.append(common.save_figure(fig, out_dir, "generalisation.png"))
    return files


# ---------------------------------------------------------------- run


def _train(results: common.Results, out_dir: str, folder: str, setup: train.Setup, members: List[dict],
           keys: List[str], extra: dict, settings: dict, progress: bool) -> List[dict]:
    """Run one sweep (unless every key is done) and record one line per member; returns the lines."""
    path = os.path.join(out_dir, folder)
    def fields(rec):
        saved = params_path(path, rec["member"])
        return dict(extra, member=rec["member"],
                    params_file=os.path.relpath(saved, out_dir) if os.path.exists(saved) else None)

    if not all(results.done(k) for k in keys):
        common.sweep_into(results, keys, setup, members, path, settings, progress, fields)
    return [results.get(k) for k in keys]


def _generalise(results: common.Results, out_dir: str, setup: train.Setup, best: dict, lengths: Sequence[int],
                eval_size: int, prefix: str, extra: dict) -> List[dict]:
    params = load_params(os.path.join(out_dir, best["params_file"]))
    errs = []
    for length in lengths:
        gkey = f"{prefix}/T{length}"
        if not results.done(gkey):
            results.add(gkey, dict(extra, member=best["member"], optimizer=best.get("optimizer"), length=length,
                                   eval_size=eval_size,
                                   error=generalisation_error(setup, params, length, eval_size)))
        errs.append({"length": length, "error": results.get(gkey)["error"]})
    return errs


def run(out_dir: str, profile: str = "quick", seeds=None, progress: bool = True) -> dict:
    """Train MSGD-CR and MSGD-C members on every task of ``profile``, test the best ones on longer
    sequences, train the generalisation claim's basic-tanh temporal-order model, decide the claims.

    Args:
      out_dir: output folder (created); a rerun with the same arguments resumes and
        trains or evaluates nothing that is already in ``results.jsonl``.
      profile: ``"tiny"`` (tests), ``"quick"`` (a smoke test, two CPU cores, < 5 minutes),
        ``"cpu"`` (the claims on two CPU cores, <= 90 minutes) or ``"full"`` (GPU).
      seeds: a count or a list of seeds per (task, optimizer); default the profile's count
        (the claim's model keeps its own count).
      progress: report progress on stderr.

    Returns:
      The summary written to ``summary.json``: one row per (task, optimizer) with the
      success rate, its Wilson interval, the spread of the final errors, the
      constant-guess error and the explosion statistics; per task with a solved member
      the generalisation errors of its best member; the claim model's errors up to
      the longest test length (``generalisation_claim``); and ``verdicts`` (per task
      "solves 100 %" -- random permutation: 2 of 5 -- and "CR ≥ C", decided by
      :func:`rnn_jax.repro.experiments.verdicts.pathological_verdicts`; None for ``quick``).
    """
    settings = common.get_profile(PROFILES, profile)
    chosen = common.seed_list(seeds, settings["seeds"])
    common.claim_folder(out_dir, NAME, dict(settings, profile=profile, seed_list=chosen))
    results = common.Results(out_dir)
    task_names, optimizers = settings["tasks"], settings["optimizers"]
    lo, hi = settings["min_length"], settings["max_length"]
    lengths, longest = lengths_label(lo, hi), longest_length(lo, hi)
    trained_on = f"T drawn from [{lo}, {hi})" if hi > lo else f"T = {lo}"
    gen_size = settings.get("confirm_size") or settings["eval_size"]
    claim_spec = settings.get("claim")
    bar = common.Progress(NAME, len(task_names) + (claim_spec is not None), progress)
    members = make_members(optimizers, chosen)
    records, baselines, general, seconds = [], {}, {}, {}
    for name in task_names:
        setup = make_setup(name, lo, hi, settings["scheme"], settings["eval_size"], settings["eval_batch_size"])
        keys = [f"{name}/T{lengths}/{m['optimizer']}/seed{m['seed']}" for m in members]
        recs = _train(results, out_dir, name, setup, members, keys,
                      {"kind": "member", "task": name, "lengths": lengths}, settings, progress)
        records += recs
        seconds[name] = recs[0]["setup_seconds"]
        base_key = f"{name}/T{lengths}/baseline"
        if not results.done(base_key):
            results.add(base_key, {"kind": "baseline", "task": name, "lengths": lengths,
                                   "error": constant_baseline_error(setup.task, jax.random.PRNGKey(BASELINE_SEED),
                                                                    settings["eval_size"])})
        baselines[name] = results.get(base_key)["error"]
        best = best_member(recs)
        if best is not None:
            glengths = [m * longest for m in settings["multiples"]]
            errs = _generalise(results, out_dir, setup, best, glengths, gen_size,
                               f"{name}/T{lengths}/generalisation",
                               {"kind": "generalisation", "task": name, "lengths": lengths})
            general[name] = {"member": best["member"], "optimizer": best["optimizer"], "seed": best["seed"],
                             "steps": best["steps"], "params_file": best["params_file"], "eval_size": gen_size,
                             "key": f"fold_in(PRNGKey({GENERALISATION_SEED}), length)",
                             "errors": [dict(e, multiple=m) for e, m in zip(errs, settings["multiples"])]}
        bar.update(note=f"{name}: " + ", ".join(
            f"{o} {sum(r['outcome'] == 'solved' for r in recs if r['optimizer'] == o)}/{len(chosen)}"
            for o in optimizers))

    claim = None
    if claim_spec is not None:
        setup = make_setup(CLAIM_TASK, lo, hi, CLAIM_SCHEME, settings["eval_size"], settings["eval_batch_size"])
        cmembers = make_members((CLAIM_OPTIMIZER,), list(range(claim_spec["seeds"])))
        keys = [f"claim/{CLAIM_TASK}/{CLAIM_SCHEME}/T{lengths}/{m['optimizer']}/seed{m['seed']}" for m in cmembers]
        crecs = _train(results, out_dir, CLAIM_FOLDER, setup, cmembers, keys,
                       {"kind": "claim_member", "task": CLAIM_TASK, "scheme": CLAIM_SCHEME, "lengths": lengths},
                       settings, progress)
        seconds[CLAIM_FOLDER] = crecs[0]["setup_seconds"]
        best = best_member(crecs)
        solved = sum(r["outcome"] == "solved" for r in crecs)
        claim = {"task": CLAIM_TASK, "scheme": CLAIM_SCHEME, "optimizer": CLAIM_OPTIMIZER, "lengths": lengths,
                 "members": len(crecs), "solved": solved, "eval_size": claim_spec["eval_size"],
                 "key": f"fold_in(PRNGKey({GENERALISATION_SEED}), length)", "errors": []}
        if best is None:
            claim["statement"] = (f"No {CLAIM_SCHEME} {CLAIM_TASK} run of {len(crecs)} ({CLAIM_OPTIMIZER}, {trained_on}, "
                                  f"{settings['max_steps']:,} updates) was solved: the claim was not tested.")
        else:
            errs = _generalise(results, out_dir, setup, best, claim_spec["lengths"], claim_spec["eval_size"],
                               f"claim/{CLAIM_TASK}/{CLAIM_SCHEME}/T{lengths}/generalisation",
                               {"kind": "claim_generalisation", "task": CLAIM_TASK, "scheme": CLAIM_SCHEME,
                                "lengths": lengths})
            claim["errors"] = [dict(e, under_1_percent=e["error"] < 0.01) for e in errs]
            good = [e["length"] for e in claim["errors"] if e["under_1_percent"]]
            ok_all = len(good) == len(errs)
            claim.update(member=best["member"], seed=best["seed"], steps=best["steps"],
                         params_file=best["params_file"], longest_under_1_percent=max(good) if good else None,
                         holds_at_every_length=ok_all)
            claim["statement"] = (
                f"{solved} of {len(crecs)} {CLAIM_SCHEME} {CLAIM_TASK} runs ({CLAIM_OPTIMIZER}, {trained_on}, "
                f"{settings['max_steps']:,} updates) solved; the best (seed {best['seed']}, {best['steps']:,} updates) "
                f"on {claim_spec['eval_size']:,} fresh sequences per length: error under 1 % "
                + ("at every test length up to " + f"{max(claim_spec['lengths']):,}" if ok_all else
                   (f"up to T = {max(good):,} only" if good else "at no test length"))
                + f" (the paper: generalised to 5,000 after training on 50-200).")
        bar.update(note=f"claim: {solved}/{len(crecs)} solved")

    rows = aggregate(records, task_names, optimizers, baselines)
    decided, verdict_text = common.verdicts_or_note(
        settings.get("verdicts") and (lambda: verdicts.pathological_verdicts(records, tasks=list(task_names))),
        SMOKE_NOTE)
    summary = {
        "experiment": NAME,
        "profile": profile,
        "settings": dict(settings, profile=profile, seeds=len(chosen), seed_list=chosen, hidden_size=HIDDEN_SIZE,
                         learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE, optimizer_hparams=OPTIMIZERS,
                         readout_init=READOUT_INIT[settings["scheme"]], longest_training_length=longest,
                         success="error < 1 % of eval_size fresh sequences, confirmed on confirm_size"),
        "rows": rows,
        "verdicts": decided,
        "generalisation": general,
        "generalisation_claim": claim,
        "paper": PAPER,
        "paper_claim": PAPER_CLAIM,
        "generalisation_note": GENERALISATION_NOTE,
        # Wall time of the sweeps, as recorded when each finished (a rerun that trains nothing keeps it).
        "train_seconds": float(sum(seconds.values())),
    }
    common.write_text(out_dir, "table.md", _table(rows, general, claim, summary["settings"], verdict_text))
    summary["figures"] = [os.path.basename(p) for p in _plots(out_dir, rows, general, claim, optimizers)]
    return common.write_summary(out_dir, common.finite(summary))


def readme_body(summary: dict, prov: dict) -> str:
    """The README's quote of a committed run: solved per (task, optimizer), the verdicts, the generalisation
    claim, the cost. A test checks that the README holds exactly this text for ``results/pathological``."""
    settings = summary["settings"]
    rows = summary["rows"]
    opts = list(dict.fromkeys(r["optimizer"] for r in rows))
    lines = ["| task | lengths | " + " | ".join(f"{o} solved" for o in opts) + " | paper (MSGD-CR) |",
             "|---|---|" + "---|" * (len(opts) + 1)]
    for task in dict.fromkeys(r["task"] for r in rows):
        sel = {r["optimizer"]: r for r in rows if r["task"] == task}
        first = next(iter(sel.values()))
        lines.append(f"| {task} | {first['lengths']} | "
                     + " | ".join(f"{sel[o]['solved']} / {sel[o]['members']}" if o in sel else "-" for o in opts)
                     + f" | {PAPER.get(task, '-')} |")
    lines.append("")
    lines += common.verdict_lines(summary.get("verdicts"))
    claim = summary.get("generalisation_claim")
    if claim:
        lines += ["", "Generalisation claim: " + claim["statement"]]
        if claim.get("errors"):
            lines.append("Errors by test length: " + ", ".join(f"T = {e['length']:,}: {e['error']:.4f}"
                                                                for e in claim["errors"]) + ".")
    lines += ["", f"{settings['seeds']} paired seeds per optimizer, {settings['max_steps']:,} updates per run for "
                  f"every task; `{prov['command']}` took {prov['wall_seconds'] / 60:.0f} minutes on {prov['cores']} "
                  f"cores ({prov['cpu']}), commit {prov['commit'][:7]}."]
    return "\n".join(lines)
