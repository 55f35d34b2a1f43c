"""Temporal order: success rate against sequence length (Pascanu, Mikolov & Bengio 2013, figure 7).

What it shows. A 50-unit Elman network learns the temporal order problem (which
of A/B came first and second, 4 classes, read out at the last step) with the
paper's three initialisations -- ``sigmoid`` (sigmoid units, weights N(0, 0.01²)),
``basic_tanh`` (tanh, N(0, 0.1²)), ``smart_tanh`` (tanh, sparse recurrent matrix of
spectral radius 0.95, N(0, 0.01²) elsewhere) -- and three optimizer configurations:

* ``MSGD``: minibatch SGD, learning rate 0.01, batch 20 (clip = ∞, α = 0);
* ``MSGD-C``: the same with the gradient's global norm clipped at 1 (α = 0);
* ``MSGD-CR``: clipping plus the vanishing-gradient regulariser Ω with α = 4.

A run *succeeds* when it misclassifies under 1 % of fresh sequences (the paper:
10,000 of them). The paper's finding: clipping matters more and more as the
sequences grow longer, the regulariser extends the lengths that can be solved,
and sigmoid units fail most.

How it runs. The three configurations differ only in numbers (``clip``,
``alpha``), so for each (initialisation, length) ONE :class:`rnn_jax.repro.train.Setup`
with ``regularize=True`` trains ``3 × seeds`` members as one vmapped program
(:func:`rnn_jax.repro.sweep.run_sweep`, one sub-folder per Setup: resume for free).
The same seeds are used for the three configurations, so each comparison is
paired: same initial weights, same minibatches. Members are evaluated after
every chunk of updates and stop when solved (early stopping) or when they reach
the profile's update budget; a member that is not solved within the budget
counts as a failure -- "not within N updates", which is weaker than the paper's
"not within 5 million".

Lengths. The paper's code draws one length per minibatch from
``[min_length, max_length)``; here a point of the curve at length ``L`` trains and
evaluates on sequences of exactly ``L`` steps
(``tasks.get("temporal_order", min_length=L, max_length=L)``).

Cost (measured on the 2-core CPU of the project with the engine of this commit):
the training step with Ω runs about 44,000 member·time-steps per CPU-second
(updates/s per member ≈ 44,000 / (members × T); e.g. 48 members at T = 200: 4.6
updates/s each), and each (initialisation, length) compiles for 10-20 s. The
``quick`` profile takes about 190 CPU-seconds (≈ 3 minutes on idle cores; 12
minutes of wall time on the loaded machine it was measured on). The ``full``
profile (15 Setups × 48 members × up to 500,000 updates) is a worst case of
3.7e10 member·time-steps: about 10 days on that CPU; on a GPU an update is
latency-bound (the scan is sequential in time; the members and the batch run
in parallel): at an assumed ~50 µs per time step for the forward, backward and
Ω passes, ≈ 10 ms per update at T = 200, i.e. at most ≈ 11 hours if every Setup
spends its whole budget (the short lengths stop early). Check the first chunks'
times printed by the sweep and scale.

Outputs in ``out_dir``: ``run.json`` (the settings: a rerun must match them),
``<scheme>_T<L>/results.jsonl`` (the sweep's own lines and
checkpoint), ``results.jsonl`` (one line per member: scheme, length, optimizer,
seed, outcome, updates, error, diagnostics), ``table.md``, ``success_vs_length.png``
(one panel per initialisation, a line per optimizer, Wilson 95 % intervals, as in
figure 7), ``updates_to_solve.png`` and ``summary.json`` (rates, intervals, and
plain statements of where the paper's pattern is or is not seen).
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Sequence

import numpy as np

import rnn_jax
from rnn_jax.repro import tasks, train
from rnn_jax.repro.experiments import common, verdicts

NAME = "temporal_order"
SCHEMES = ("sigmoid", "basic_tanh", "smart_tanh")
# The paper's optimizer configurations: (global-norm clipping threshold, weight α of Ω).
OPTIMIZERS: Dict[str, Dict[str, float]] = {
    "MSGD": {"clip": math.inf, "alpha": 0.0},
    "MSGD-C": {"clip": 1.0, "alpha": 0.0},
    "MSGD-CR": {"clip": 1.0, "alpha": 4.0},
}
# Readout weights: N(0, 0.01²) for sigmoid and smart_tanh, N(0, 0.1²) for basic_tanh (as every other matrix).
READOUT_INIT = {"sigmoid": "sigmoid", "basic_tanh": "basic_tanh", "smart_tanh": "sigmoid"}
HIDDEN_SIZE = 50
LEARNING_RATE = 0.01
BATCH_SIZE = 20

# Profiles. ``seeds``: seeds per (scheme, length, optimizer); ``max_steps``: the update
# budget per member; ``chunk_steps``: updates between evaluations (early stopping);
# ``eval_size``: fresh sequences per evaluation (the paper: 10,000).
PROFILES: Dict[str, dict] = {
    # The test's: one trivially short length where every member solves within a few hundred updates.
    "tiny": dict(lengths=(10,), schemes=("basic_tanh",), optimizers=tuple(OPTIMIZERS), seeds=2,
                 max_steps=1000, chunk_steps=250, eval_size=500, verdicts=True),
    # A smoke test of the command on two CPU cores (< 5 minutes): lengths where the symbol windows are not
    # degenerate, but too few seeds and updates to decide anything; it prints no verdict.
    "quick": dict(lengths=(30, 50), schemes=SCHEMES, optimizers=tuple(OPTIMIZERS), seeds=2,
                  max_steps=1500, chunk_steps=500, eval_size=500, verdicts=False),
    # The measured pilot that chose the cpu profile's lengths: plain MSGD, 8 seeds, 2,000 updates; where do
    # its gradients explode? (results in results/temporal_order_pilot/)
    "pilot": dict(lengths=(30, 50, 100, 150, 200), schemes=SCHEMES, optimizers=("MSGD",), seeds=8,
                  max_steps=2000, chunk_steps=500, eval_size=1000, verdicts=False),
    # Two CPU cores, <= 90 minutes: the pilot's lengths where plain MSGD exploded (30: basic and smart tanh)
    # and where it mostly did not (50: smart tanh 3 of 8 runs, basic tanh and sigmoid none), 8 paired seeds,
    # 20,000 updates; success screened on 1,000 sequences, confirmed on 10,000 (the paper's). T = 100 (no
    # explosion in the pilot) did not fit: sigmoid runs never finish, so every length costs its whole budget.
    "cpu": dict(lengths=(30, 50), schemes=SCHEMES, optimizers=tuple(OPTIMIZERS), seeds=8,
                max_steps=20_000, chunk_steps=1000, eval_size=1000, confirm_size=10_000, verdicts=True),
    # A long GPU job: the paper's lengths, large budgets, 16 seeds per cell.
    "full": dict(lengths=(50, 100, 150, 200), schemes=SCHEMES, optimizers=tuple(OPTIMIZERS), seeds=16,
                 max_steps=500_000, chunk_steps=2000, eval_size=1000, confirm_size=10_000, verdicts=True),
}

PAPER = ("Pascanu et al. (2013), figure 7: MSGD-CR gives the best success rate for every initialisation; "
         "the benefit of clipping grows with the sequence length; sigmoid units fail most; runs of up to "
         "5 million updates on lengths 50-200 (one basic-tanh model trained on 50-200 generalised to 5000).")


def make_setup(scheme: str, length: int, eval_size: int = 10_000) -> train.Setup:
    """The compiled program of one (initialisation, length): MSGD, MSGD-C and MSGD-CR members share it.

    ``regularize=True`` so that α (0 for MSGD and MSGD-C, 4 for MSGD-CR) is a
    per-member number; with α = 0 Ω is still computed and logged but has no effect.
    """
    return train.Setup(
        cell=rnn_jax.elman(HIDDEN_SIZE, scheme=scheme),
        task=tasks.get("temporal_order", min_length=length, max_length=length),
        batch_size=BATCH_SIZE,
        regularize=True,
        eval_size=eval_size,
        eval_batch_size=min(1000, eval_size),
        readout_weight_init=READOUT_INIT[scheme],
    )


def make_members(optimizers: Sequence[str], seeds: Sequence[int]) -> List[dict]:
    """Sweep members: every optimizer configuration × every seed (paired: same seeds for each)."""
    return [dict(seed=s, learning_rate=LEARNING_RATE, clip=OPTIMIZERS[o]["clip"], alpha=OPTIMIZERS[o]["alpha"],
                 optimizer=o) for o in optimizers for s in seeds]




def _cell_key(scheme: str, length: int) -> str:
    return f"{scheme}_T{length}"


def aggregate(records: Sequence[dict], schemes, lengths, optimizers) -> List[dict]:
    """Per (scheme, length, optimizer): solved / members, Wilson interval, median updates of the solved."""
    rows = []
    for scheme in schemes:
        for length in lengths:
            for opt in optimizers:
                rs = [r for r in records if r["scheme"] == scheme and r["length"] == length and r["optimizer"] == opt]
                solved = [r for r in rs if r["outcome"] == "solved"]
                rate = common.rate_with_interval(len(solved), len(rs))
                rows.append({
                    "scheme": scheme, "length": length, "optimizer": opt, "members": len(rs),
                    "solved": len(solved), "rate": rate["rate"], "low": rate["low"], "high": rate["high"],
                    "median_updates_solved": float(np.median([r["steps"] for r in solved])) if solved else float("nan"),
                    "median_error": common.nan_median([r["error"] for r in rs]),
                    **common.outcome_statistics(rs),
                })
    return rows


def explanation(rows, schemes, lengths, optimizers) -> str:
    """Where gradients exploded: per length, MSGD's largest gradient norms, explosion counts and
    divergences, and the fraction of MSGD-C updates that were clipped (the data behind the verdicts)."""
    lines = []
    for L in lengths:
        msgd = [r for r in rows if r["length"] == L and r["optimizer"] == "MSGD"]
        clip = [r for r in rows if r["length"] == L and r["optimizer"] == "MSGD-C"]
        if not msgd:
            continue
        parts = [f"{r['scheme']}: largest norm {r['largest_grad_norm']:.3g} (median over runs "
                 f"{r['median_max_grad_norm']:.3g}), {r['members_with_explosions']}/{r['members']} runs with "
                 f"explosions, {r['diverged']} diverged" for r in msgd]
        text = f"- T = {L}, MSGD: " + "; ".join(parts)
        fractions = [f"{r['scheme']} {r['median_clipped_fraction']:.0%}" for r in clip
                     if np.isfinite(r["median_clipped_fraction"])]
        if fractions:
            text += "; MSGD-C updates clipped (median fraction): " + ", ".join(fractions)
        lines.append(text)
    if not lines:
        return ""
    return ("An update *explodes* when its gradient norm exceeds 10x the median of its chunk of updates "
            "(rnn_jax.repro.sweep); largest norm: over every applied update of every run.\n\n" + "\n".join(lines) + "\n")


def _table(rows, settings: dict, verdict_text: str, why: str) -> str:
    headers = ["initialisation", "length", "optimizer", "solved / runs", "success", "95 % interval",
               "median updates (solved)", "diverged", "out of budget", "median error", "median gradient norm",
               "median fraction clipped", "largest gradient norm", "runs with explosions"]
    body = [[r["scheme"], r["length"], r["optimizer"], f"{r['solved']} / {r['members']}", r["rate"],
             f"[{r['low']:.2f}, {r['high']:.2f}]", r["median_updates_solved"], r["diverged"], r["exhausted"],
             r["median_error"], r["median_grad_norm"], r["median_clipped_fraction"], r["largest_grad_norm"],
             r["members_with_explosions"]] for r in rows]
    confirm = settings.get("confirm_size")
    check = (f"screened every {settings['chunk_steps']:,} updates on {settings['eval_size']:,} fresh sequences and "
             f"confirmed on {confirm:,}" if confirm else
             f"evaluated every {settings['chunk_steps']:,} updates on {settings['eval_size']:,} fresh sequences")
    text = ["# Temporal order: success rate against length (Pascanu et al. 2013, figure 7)\n",
            f"Profile `{settings['profile']}`: {settings['seeds']} seeds per cell (the same seeds for every "
            f"optimizer), update budget {settings['max_steps']:,} per run, {check} (success: error < 1 %), "
            f"learning rate {LEARNING_RATE}, batch {BATCH_SIZE}, {HIDDEN_SIZE} units, fresh sequences of exactly "
            f"the length shown for every update. Gradient norm and fraction clipped: over each run's last chunk "
            f"of updates (the norm includes alpha dOmega/dW_hh; MSGD never clips).\n",
            common.markdown_table(headers, body), "\n## Where gradients exploded\n", why,
            "\n## Against the paper\n", PAPER + "\n", verdict_text]
    return "\n".join(text) + "\n"


SMOKE_NOTE = ("This profile does not decide the paper's claims (a smoke test, or the pilot: too few seeds, "
              "lengths or updates), and no verdict is printed. `rnn-jax temporal-order --profile cpu` decides them "
              "with paired tests; its committed results are in `results/temporal_order/` (see the README).")


def _plots(out_dir: str, rows: Sequence[dict], schemes, lengths, optimizers) -> List[str]:
    plt = common.pyplot()
    if plt is None:
        return []
    files = []
    fig, axes = plt.subplots(1, len(schemes), figsize=(4.2 * len(schemes), 3.4), sharey=True, squeeze=False)
    for ax, scheme in zip(axes[0], schemes):
        span = (max(lengths) - min(lengths)) or 1.0
        for i, opt in enumerate(optimizers):
            sel = [r for r in rows if r["scheme"] == scheme and r["optimizer"] == opt]
            # a small sideways dodge, so that equal rates of different optimizers stay visible
            x = np.array([r["length"] for r in sel], float) + (i - (len(optimizers) - 1) / 2) * 0.015 * span
            y = np.array([r["rate"] for r in sel])
            err = np.array([[r["rate"] - r["low"] for r in sel], [r["high"] - r["rate"] for r in sel]])
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=opt)
        ax.set_title(scheme)
        ax.set_xlabel("sequence length")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xticks(list(lengths))
    axes[0][0].set_ylabel("success rate (Wilson 95 %)")
    axes[0][-1].legend()
    files.append(common.save_figure(fig, out_dir, "success_vs_length.png"))

    fig, axes = plt.subplots(1, len(schemes), figsize=(4.2 * len(schemes), 3.4), sharey=True, squeeze=False)
    for ax, scheme in zip(axes[0], schemes):
        for opt in optimizers:
            sel = [r for r in rows if r["scheme"] == scheme and r["optimizer"] == opt]
            ax.plot([r["length"] for r in sel], [r["median_updates_solved"] for r in sel], marker="o", label=opt)
        ax.set_title(scheme)
        ax.set_xlabel("sequence length")
        ax.set_xticks(list(lengths))
    axes[0][0].set_ylabel("median updates to solve (solved runs)")
    axes[0][-1].legend()
    files.append(common.save_figure(fig, out_dir, "updates_to_solve.png"))
    return files


def run(out_dir: str, profile: str = "quick", seeds=None, progress: bool = True) -> dict:
    """Train every (initialisation, length, optimizer, seed) of ``profile`` and write the results.

    Args:
      out_dir: output folder (created); a rerun with the same arguments resumes
        (finished members are read back, an interrupted sweep goes on from its checkpoint).
      profile: ``"tiny"`` (tests), ``"quick"`` (a smoke test, minutes), ``"pilot"`` (where MSGD
        explodes), ``"cpu"`` (the claims on two CPU cores, <= 90 minutes) or ``"full"`` (GPU).
      seeds: a count or a list of seeds per cell; default the profile's count.
      progress: report progress on stderr.

    Returns:
      The summary written to ``summary.json``: settings, one row per
      (scheme, length, optimizer) with solved / members, the success rate and its
      Wilson 95 % interval, the explosion statistics, and ``verdicts`` (the paper's claims
      decided by paired tests, :mod:`rnn_jax.repro.experiments.verdicts`; None for the smoke profiles).
    """
    settings = common.get_profile(PROFILES, profile)
    chosen = common.seed_list(seeds, settings["seeds"])
    schemes, lengths, optimizers = settings["schemes"], settings["lengths"], settings["optimizers"]
    common.claim_folder(out_dir, NAME, dict(settings, profile=profile, seed_list=chosen))
    results = common.Results(out_dir)
    members = make_members(optimizers, chosen)
    bar = common.Progress(NAME, len(schemes) * len(lengths), progress)
    for scheme in schemes:
        for length in lengths:
            cell = _cell_key(scheme, length)
            keys = [f"{cell}/{m['optimizer']}/seed{m['seed']}" for m in members]
            if all(results.done(k) for k in keys):
                bar.update(note=f"{cell} (done earlier)")
                continue
            setup = make_setup(scheme, length, settings["eval_size"])
            seconds = common.sweep_into(results, keys, setup, members, os.path.join(out_dir, cell), settings, progress,
                                        lambda rec: {"scheme": scheme, "length": length})
            bar.update(note=f"{cell} ({seconds:.0f} s)")

    records = [r for r in results.all() if r["seed"] in chosen and r["scheme"] in schemes
               and r["length"] in lengths and r["optimizer"] in optimizers]
    rows = aggregate(records, schemes, lengths, optimizers)
    why = explanation(rows, schemes, lengths, optimizers)
    decided, verdict_text = common.verdicts_or_note(
        settings.get("verdicts") and (lambda: verdicts.temporal_order_verdicts(
            records, long_lengths=settings.get("long_lengths"), short_lengths=settings.get("short_lengths"))),
        SMOKE_NOTE)
    summary = {
        "experiment": NAME,
        "profile": profile,
        "settings": dict(settings, seeds=len(chosen), seed_list=chosen, hidden_size=HIDDEN_SIZE,
                         learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE, optimizer_hparams=OPTIMIZERS,
                         readout_init=READOUT_INIT, success="error < 1 % of eval_size fresh sequences"),
        "rows": rows,
        "verdicts": decided,
        "explosions": why,
        "paper": PAPER,
        # Wall time of the sweeps, as recorded when each finished (a rerun that trains nothing keeps it).
        "train_seconds": float(sum({(r["scheme"], r["length"]): r["setup_seconds"] for r in records}.values())),
    }
    summary["settings"]["profile"] = profile
    common.write_text(out_dir, "table.md", _table(rows, dict(summary["settings"], seeds=len(chosen)), verdict_text, why))
    summary["figures"] = [os.path.basename(p) for p in _plots(out_dir, rows, schemes, lengths, optimizers)]
    return common.write_summary(out_dir, common.finite(summary))


def readme_body(summary: dict, prov: dict) -> str:
    """The README's quote of a committed run: success per (length, scheme, optimizer), the verdicts, the cost.
    A test checks that the README holds exactly this text for ``results/temporal_order``."""
    rows = summary["rows"]
    settings = summary["settings"]
    opts = list(settings["optimizers"])
    lines = ["| T | initialisation | " + " | ".join(f"{o} solved" for o in opts)
             + " | MSGD: runs with explosions | MSGD: largest gradient norm |",
             "|---|---|" + "---|" * (len(opts) + 2)]
    for L in settings["lengths"]:
        for sch in settings["schemes"]:
            sel = {r["optimizer"]: r for r in rows if r["length"] == L and r["scheme"] == sch}
            cells = [f"{sel[o]['solved']} / {sel[o]['members']}" for o in opts]
            m = sel.get("MSGD")
            boom = f"{m['members_with_explosions']} / {m['members']} | {m['largest_grad_norm']:.3g}" if m else "- | -"
            lines.append(f"| {L} | {sch} | " + " | ".join(cells) + f" | {boom} |")
    verdict = common.verdict_lines(summary.get("verdicts"))
    if verdict:
        lines += [""] + verdict
    check = (f"success confirmed on {settings['confirm_size']:,} sequences" if settings.get("confirm_size") else
             f"evaluated on {settings['eval_size']:,} sequences")
    lines.append("")
    lines.append(f"{settings['seeds']} paired seeds, {settings['max_steps']:,} updates per run, {check}; "
                 f"`{prov['command']}` took "
                 f"{prov['wall_seconds'] / 60:.0f} minutes on {prov['cores']} cores ({prov['cpu']}), commit "
                 f"{prov['commit'][:7]}.")
    return "\n".join(lines)
