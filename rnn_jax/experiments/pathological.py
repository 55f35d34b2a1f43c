"""The other pathological problems with MSGD-CR (Pascanu, Mikolov & Bengio 2013, section 4.3).

What it shows. With clipping (threshold 1) and the regulariser Ω (α = 4), a
50-unit tanh Elman network, learning rate 0.01, batch 20, learns the long-term
dependency problems of Hochreiter & Schmidhuber (1997): adding, multiplication,
3-bit temporal order, random permutation (100-dimensional one-hot inputs) and
noiseless memorization (cross-entropy at every step). The paper reports, over 5
runs each, 100 % success on adding, multiplication, 3-bit temporal order and
memorization for lengths up to 200, and 2 of 5 runs on random permutation. A
run succeeds when it gets under 1 % of fresh sequences wrong.

For each task the table gives the success rate over seeds with its Wilson 95 %
interval, the spread of the final errors across seeds, and the error of a
constant predictor (the mean target, or the most frequent class at each step)
on the same kind of sequences, so that an unsolved run can be told apart from a
run that learned nothing. Then the *best* solved member (lowest error at its
last evaluation, then fewest updates) is evaluated, with
:func:`rnn_jax.train.member_error`, on sequences 1×, 2×, 5× and 10× as long as the
longest it was trained on: does the solution generalise to longer sequences?

How it runs. One :class:`rnn_jax.train.Setup` per task (``regularize=True``), the
seeds as members of one vmapped sweep (:func:`rnn_jax.sweep.run_sweep`, one
sub-folder per task: resume for free), early stopping at every evaluation. The
initialisation is ``smart_tanh`` (the authors' code's default, ``state['init']``;
the paper does not name the one of this section) and α = 4 (the paper's weight;
the code's default is 2). Lengths: ``min_length = max_length = T`` trains on
exactly ``T`` steps (the adding problems add up to 10 %, memorization ``2 ×
n_positions``); the full profile draws T in the paper's ``[50, 200)``.

The best member's parameters are saved to ``<task>/params/member<i>.npz`` (taken
from the sweep's checkpoint, which holds every member's final state), and the
generalisation errors use the fixed key ``fold_in(PRNGKey(GENERALISATION_SEED),
length)``, so a reader can recompute them.

Cost (measured on the project's 2-core CPU): the training step with Ω runs about
44,000 member·time-steps per CPU-second and each task compiles for 10-20 s. The
``quick`` profile (length 10; adding needs ~19,000 updates, multiplication
~28,000) takes about 160 CPU-seconds (≈ 3 minutes on idle cores; 6 minutes of
wall time on the loaded machine it was measured on). The ``full`` profile (5
tasks × 10 members × up to 1,000,000 updates of ~220 steps) is a worst case of
1.1e10 member·time-steps, about 3 days on that CPU; on a GPU, at an assumed
~50 µs per time step per update (latency-bound), ≈ 3 hours per task that spends
its whole budget (random permutation will: the paper solved only 2 of 5), so
roughly 3-15 hours. Check the first chunks' times printed by the sweep and scale.

Outputs in ``out_dir``: ``run.json`` (the settings: a rerun must match them),
``<task>/results.jsonl`` and checkpoint (the sweep's),
``results.jsonl`` (one line per member, per generalisation evaluation and per
baseline), ``table.md``, ``success.png``, ``generalisation.png``, ``summary.json``.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import rnn_jax
from rnn_jax import model, sweep, tasks, train
from rnn_jax.cells import ElmanParams
from rnn_jax.experiments import common
from rnn_jax.readout import ReadoutParams

NAME = "pathological"
TASKS = ("adding", "multiplication", "temporal_order_3bit", "random_permutation", "noiseless_memorization")
HIDDEN_SIZE = 50
LEARNING_RATE = 0.01
BATCH_SIZE = 20
CLIP = 1.0
ALPHA = 4.0
READOUT_INIT = {"sigmoid": "sigmoid", "basic_tanh": "basic_tanh", "smart_tanh": "sigmoid"}
GENERALISATION_SEED = 2013
BASELINE_SEED = 1997

GENERALISATION_NOTE = (
    "A network trained on ONE fixed length learns the timing of that length (where the information is, when "
    "to answer), so it need not generalise to other lengths -- its error can even oscillate with the length "
    "when its memory is a rotation of the state. The paper's models were trained on a range of lengths "
    "(50-200; the full profile does the same), and one basic-tanh temporal-order model generalised to 5000.")

# Reported by Pascanu et al. (2013) for MSGD-CR, 5 runs each, lengths up to 200.
PAPER = {
    "adding": "100 % (5 of 5)",
    "multiplication": "100 % (5 of 5)",
    "temporal_order_3bit": "100 % (5 of 5)",
    "random_permutation": "40 % (2 of 5)",
    "noiseless_memorization": "100 % (5 of 5)",
}


def _spec(length: int, max_steps: int, min_length: Optional[int] = None) -> dict:
    return dict(min_length=length if min_length is None else min_length, max_length=length, max_steps=max_steps)


# Profiles. ``tasks``: per task the training lengths and the update budget per member;
# ``seeds``: members per task; ``chunk_steps``: updates between evaluations (early
# stopping); ``eval_size``: fresh sequences per evaluation (the paper: 10,000);
# ``multiples``: generalisation lengths as multiples of the longest training length.
PROFILES: Dict[str, dict] = {
    # The test's: 3-bit temporal order at length 10, solved in about a thousand updates.
    "tiny": dict(tasks={"temporal_order_3bit": _spec(10, 2000)}, seeds=2, chunk_steps=250, eval_size=500,
                 multiples=(1, 2), scheme="smart_tanh"),
    # Two CPU cores, < 5 minutes with compilation (measured: 160 CPU-seconds): length 10, small budgets,
    # evaluations on 1,000 sequences (not 10,000) to keep early stopping cheap.
    "quick": dict(tasks={"adding": _spec(10, 24_000), "multiplication": _spec(10, 40_000),
                         "temporal_order_3bit": _spec(10, 4000), "random_permutation": _spec(10, 4000),
                         "noiseless_memorization": _spec(10, 4000)},
                  seeds=4, chunk_steps=1000, eval_size=1000, multiples=(1, 2, 5, 10), scheme="smart_tanh"),
    # A GPU job: the paper's lengths 50-200 (one length per minibatch), 10 seeds, up to 1M updates.
    "full": dict(tasks={t: _spec(200, 1_000_000, min_length=50) for t in TASKS}, seeds=10, chunk_steps=2000,
                 eval_size=10_000, multiples=(1, 2, 5, 10), scheme="smart_tanh"),
}


def make_task(name: str, min_length: int, max_length: int) -> tasks.Task:
    """The task at nominal lengths ``[min_length, max_length)`` (exactly ``min_length`` when equal)."""
    return tasks.get(name, min_length=min_length, max_length=max_length)


def make_setup(name: str, spec: dict, scheme: str, eval_size: int) -> train.Setup:
    """One task's compiled program: ``seeds`` MSGD-CR members share it."""
    return train.Setup(
        cell=rnn_jax.elman(HIDDEN_SIZE, scheme=scheme),
        task=make_task(name, spec["min_length"], spec["max_length"]),
        batch_size=BATCH_SIZE,
        regularize=True,
        eval_size=eval_size,
        eval_batch_size=min(1000, eval_size),
        readout_weight_init=READOUT_INIT[scheme],
    )


def generalisation_setup(setup: train.Setup, length: int, eval_size: int) -> train.Setup:
    """``setup`` with the task at exactly ``length`` steps (nominal T) and ``eval_size`` sequences."""
    task = make_task(setup.task.name, length, length)
    batch = max(1, min(1000, eval_size, 200_000 // task.max_steps))  # bound the (batch, time, hidden) buffers
    return setup._replace(task=task, length=None, eval_size=eval_size, eval_batch_size=batch)


def generalisation_key(length: int) -> jax.Array:
    """The key of the generalisation evaluation at ``length``: ``fold_in(PRNGKey(GENERALISATION_SEED), length)``."""
    return jax.random.fold_in(jax.random.PRNGKey(GENERALISATION_SEED), length)


def generalisation_error(setup: train.Setup, params: model.ModelParams, length: int, eval_size: int) -> float:
    """:func:`rnn_jax.train.member_error` of ``params`` at ``length`` on ``eval_size`` fresh sequences."""
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
    """A member's parameters, written by :func:`rnn_jax.sweep.run_sweep` when it finished."""
    return sweep.member_params_path(folder, member)


# ---------------------------------------------------------------- run


def _table(rows: Sequence[dict], general: Dict[str, dict], settings: dict, multiples) -> str:
    headers = ["task", "T", "solved / runs", "success", "95 % interval", "median updates (solved)",
               "final error mean ± std [min, max]", "constant-guess error", "median final training loss",
               "paper (MSGD-CR, T ≤ 200)"]
    body = []
    for r in rows:
        e = r["error_spread"]
        body.append([r["task"], r["lengths"], f"{r['solved']} / {r['members']}", r["rate"],
                     f"[{r['low']:.2f}, {r['high']:.2f}]", r["median_updates_solved"],
                     f"{e['mean']:.3f} ± {e['std']:.3f} [{e['min']:.3f}, {e['max']:.3f}]", r["baseline_error"],
                     r["median_loss"], PAPER[r["task"]]])
    text = ["# The pathological problems with MSGD-CR (Pascanu et al. 2013, section 4.3)\n",
            f"Profile `{settings['profile']}`: {settings['scheme']} initialisation, {HIDDEN_SIZE} units, learning rate "
            f"{LEARNING_RATE}, batch {BATCH_SIZE}, clipping {CLIP}, α = {ALPHA}; {settings['seeds']} seeds per task; "
            f"evaluated every {settings['chunk_steps']} updates on {settings['eval_size']:,} fresh sequences "
            f"(success: error < 1 %); update budgets: "
            + ", ".join(f"{t} {s['max_steps']:,}" for t, s in settings["tasks"].items()) + ".\n",
            common.markdown_table(headers, body),
            "\n## Generalisation of the best solved member to longer sequences\n",
            "Error (fraction of wrong sequences) of `train.member_error` on "
            f"{settings['eval_size']:,} fresh sequences of the given nominal length. {GENERALISATION_NOTE}\n"]
    g_rows = [[t, g["member"], g["seed"], g["steps"]] + [f"T={e['length']}: {e['error']:.4f}" for e in g["errors"]]
              for t, g in general.items()]
    if g_rows:
        text.append(common.markdown_table(["task", "member", "seed", "updates"] + [f"{m}×" for m in multiples], g_rows))
    else:
        text.append("No member solved any task, so there is nothing to evaluate.\n")
    text.append("\n## Against the paper\n")
    text += [f"- **{r['task']}**: {r['verdict']}" for r in rows]
    return "\n".join(text) + "\n"


def _verdict(row: dict, budget: int) -> str:
    paper = PAPER[row["task"]]
    if row["solved"] == row["members"]:
        if row["task"] == "random_permutation":
            return (f"every run solved, more than the paper's {paper}: at T = {row['lengths']} the task is much "
                    f"easier than at the paper's lengths up to 200.")
        return f"every run solved (paper: {paper}) — agrees, at T = {row['lengths']} (the paper: up to 200)."
    note = (f"{row['solved']} of {row['members']} runs solved within {budget:,} updates (paper: {paper}, with up to "
            f"5,000,000 updates at lengths up to 200)")
    e, b = row["error_spread"]["mean"], row["baseline_error"]
    if row["task"] == "random_permutation":
        return note + "; the paper too solves only some runs."
    if np.isfinite(e) and e < b:
        return note + (f" — NOT REPRODUCED at this budget: the unsolved runs are still learning (mean error "
                       f"{e:.3f} against {b:.3f} for a constant guess); a larger budget is needed.")
    return note + (f" — NOT REPRODUCED at this budget: the runs are no better than a constant guess "
                   f"(mean error {e:.3f}, constant {b:.3f}).")


def _plots(out_dir: str, rows: Sequence[dict], general: Dict[str, dict]) -> List[str]:
    plt = common.pyplot()
    if plt is None:
        return []
    files = []
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(rows))
    rates = np.array([r["rate"] for r in rows])
    err = np.array([[r["rate"] - r["low"] for r in rows], [r["high"] - r["rate"] for r in rows]])
    ax.bar(x, rates, yerr=err, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['task'].replace('_', ' ')}\nT={r['lengths']}" for r in rows], fontsize=7,
                       rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (Wilson 95 %)")
    ax.set_title("MSGD-CR on the pathological problems")
    files.append(common.save_figure(fig, out_dir, "success.png"))
    if general:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for t, g in general.items():
            ax.plot([e["length"] for e in g["errors"]], [e["error"] for e in g["errors"]], marker="o", label=t)
        ax.set_xscale("log")
        ax.axhline(0.01, color="grey", ls=":", lw=1)
        ax.set_xlabel("test sequence length T")
        ax.set_ylabel("error of the best solved member")
        ax.legend(fontsize=7)
        files.append(common.save_figure(fig, out_dir, "generalisation.png"))
    return files


def run(out_dir: str, profile: str = "quick", seeds=None, progress: bool = True) -> dict:
    """Train ``seeds`` MSGD-CR members on every task of ``profile``, then test the best one on longer sequences.

    Args:
      out_dir: output folder (created); a rerun with the same arguments resumes and
        trains or evaluates nothing that is already in ``results.jsonl``.
      profile: ``"tiny"`` (tests), ``"quick"`` (two CPU cores, ~5 minutes) or ``"full"`` (GPU).
      seeds: a count or a list of seeds per task; default the profile's count.
      progress: report progress on stderr.

    Returns:
      The summary written to ``summary.json``: per task the success rate, its
      Wilson interval, the spread of the final errors, the constant-guess error and
      a verdict against the paper; per solved task the generalisation errors of its
      best member (``params_file`` and the evaluation key are recorded).
    """
    settings = common.get_profile(PROFILES, profile)
    chosen = common.seed_list(seeds, settings["seeds"])
    common.claim_folder(out_dir, NAME, dict(settings, profile=profile, seed_list=chosen))
    results = common.Results(out_dir)
    bar = common.Progress(NAME, len(settings["tasks"]), progress)
    members = [dict(seed=s, learning_rate=LEARNING_RATE, clip=CLIP, alpha=ALPHA) for s in chosen]
    rows, general = [], {}
    for name, spec in settings["tasks"].items():
        folder = os.path.join(out_dir, name)
        lengths = f"{spec['min_length']}" if spec["min_length"] == spec["max_length"] else \
            f"{spec['min_length']}-{spec['max_length']}"
        setup = make_setup(name, spec, settings["scheme"], settings["eval_size"])
        keys = [f"{name}/T{lengths}/seed{s}" for s in chosen]
        t0 = time.time()
        if not all(results.done(k) for k in keys):
            records = sweep.run_sweep(setup, members, folder, max_steps=spec["max_steps"],
                                      chunk_steps=settings["chunk_steps"], progress=progress)
            seconds = time.time() - t0
            for rec in records:
                key = keys[rec["member"]]
                if not results.done(key):
                    results.add(key, common.finite({
                        "kind": "member", "task": name, "lengths": lengths, "member": rec["member"],
                        "seed": rec["config"]["seed"], "outcome": rec["outcome"], "steps": rec["steps"],
                        "error": rec["error"], "metrics": rec["metrics"], "setup_seconds": seconds,
                        "params_file": (os.path.relpath(params_path(folder, rec["member"]), out_dir)
                                        if os.path.exists(params_path(folder, rec["member"])) else None),
                    }))
        recs = [results.get(k) for k in keys]
        base_key = f"{name}/T{lengths}/baseline"
        if not results.done(base_key):
            results.add(base_key, {"kind": "baseline", "task": name, "lengths": lengths,
                                   "error": constant_baseline_error(setup.task, jax.random.PRNGKey(BASELINE_SEED),
                                                                    settings["eval_size"])})
        solved = [r for r in recs if r["outcome"] == "solved"]
        rate = common.rate_with_interval(len(solved), len(recs))
        errors = [np.nan if r["error"] is None else r["error"] for r in recs]
        row = {
            "task": name, "lengths": lengths, "members": len(recs), "solved": len(solved),
            "rate": rate["rate"], "low": rate["low"], "high": rate["high"],
            "diverged": sum(r["outcome"] == "diverged" for r in recs),
            "exhausted": sum(r["outcome"] == "exhausted" for r in recs),
            "median_updates_solved": float(np.median([r["steps"] for r in solved])) if solved else float("nan"),
            "error_spread": common.mean_and_spread(errors),
            # mean training loss over each member's last chunk of updates
            "median_loss": float(np.median([np.nan if r["metrics"]["loss"] is None else r["metrics"]["loss"]
                                            for r in recs])),
            "baseline_error": results.get(base_key)["error"],
            "train_seconds": recs[0]["setup_seconds"],
            "paper": PAPER[name],
        }
        row["verdict"] = _verdict(row, spec["max_steps"])
        rows.append(row)

        # Generalisation of the best solved member whose parameters were saved.
        candidates = sorted((r for r in solved if r.get("params_file")),
                            key=lambda r: (r["error"], r["steps"], r["member"]))
        if candidates:
            best = candidates[0]
            params = load_params(os.path.join(out_dir, best["params_file"]))
            errs = []
            for m in settings["multiples"]:
                length = m * spec["max_length"]
                gkey = f"{name}/T{lengths}/generalisation/T{length}"
                if not results.done(gkey):
                    results.add(gkey, {"kind": "generalisation", "task": name, "lengths": lengths,
                                       "member": best["member"], "length": length, "multiple": m,
                                       "eval_size": settings["eval_size"],
                                       "error": generalisation_error(setup, params, length, settings["eval_size"])})
                errs.append({"multiple": m, "length": length, "error": results.get(gkey)["error"]})
            general[name] = {"member": best["member"], "seed": best["seed"], "steps": best["steps"],
                             "params_file": best["params_file"], "eval_size": settings["eval_size"],
                             "key": f"fold_in(PRNGKey({GENERALISATION_SEED}), length)", "errors": errs}
        bar.update(note=f"{name}: {len(solved)}/{len(recs)} solved")

    summary = {
        "experiment": NAME,
        "profile": profile,
        "settings": dict(settings, profile=profile, seeds=len(chosen), seed_list=chosen, hidden_size=HIDDEN_SIZE,
                         learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE, clip=CLIP, alpha=ALPHA,
                         readout_init=READOUT_INIT[settings["scheme"]],
                         success="error < 1 % of eval_size fresh sequences"),
        "rows": rows,
        "generalisation": general,
        "paper": PAPER,
        "generalisation_note": GENERALISATION_NOTE,
        "train_seconds": float(sum(r["train_seconds"] for r in rows)),
    }
    common.write_text(out_dir, "table.md", _table(rows, general, summary["settings"], settings["multiples"]))
    summary["figures"] = [os.path.basename(p) for p in _plots(out_dir, rows, general)]
    return common.write_summary(out_dir, common.finite(summary))
