"""What every reproduction shares: profiles, output folders, tables, plots, progress.

A reproduction is a module with a ``PROFILES`` dict (``tiny`` for its test,
``quick`` for two CPU cores within 5 minutes, ``full`` for a GPU) and a
``run(out_dir, profile="quick", seeds=None, progress=True) -> dict`` function that
writes into ``out_dir``:

* ``results.jsonl`` -- one JSON line per finished unit of work (appended and
  fsync-ed as each finishes; a rerun skips what is there: :class:`Results`);
* ``table.md`` -- the markdown table of the headline numbers;
* ``*.png`` -- the plots (matplotlib, the ``plots`` extra; skipped with a notice
  when it is not installed);
* ``summary.json`` -- the headline numbers, also returned by ``run``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from rnn_jax._checks import UserTypeError, UserValueError, check_choice
from rnn_jax.repro import sweep
from rnn_jax.repro.experiments import verdicts as _verdicts
from rnn_jax.repro.sweep import append_results, read_results

PROFILE_NAMES = ("tiny", "quick", "full")


def get_profile(profiles: Dict[str, dict], name: str) -> dict:
    """The named profile's settings, with a clear error for unknown names."""
    return dict(profiles[check_choice("profile", name, profiles)])


def make_cell(kind: str, hidden_size: int, forget_bias: float = 0.0):
    """The cell of ``kind`` for the reproductions that compare architectures: ``rnn`` (Elman tanh), ``lstm``
    (with ``forget_bias``), ``gru``. (Cells compare by configuration, so the jitted functions that take
    one as a static argument compile once per shape, whichever call made it.)"""
    from rnn_jax import cells

    if kind == "rnn":
        return cells.elman(hidden_size, "tanh")
    if kind == "lstm":
        return cells.lstm(hidden_size, forget_bias=forget_bias)
    if kind == "gru":
        return cells.gru(hidden_size)
    raise ValueError(f"cell: expected one of rnn, lstm, gru, got {kind!r}")


def sweep_into(results: "Results", keys: Sequence[str], setup, members: List[dict], path: str, settings: dict,
               progress: bool, fields: Callable[[dict], dict] = lambda rec: {}) -> float:
    """Run one sweep of ``members`` (checkpointed in ``path``) and add a results line for each member whose
    key (``keys[member]``) is not done: ``fields(record)``, then its optimizer, seed, clip, alpha, outcome,
    steps, error, metrics and the sweep's wall seconds. Returns the seconds."""
    t0 = time.time()
    records = sweep.run_sweep(setup, members, path, max_steps=settings["max_steps"], chunk_steps=settings["chunk_steps"],
                              progress=progress, confirm_size=settings.get("confirm_size"))
    seconds = time.time() - t0
    for rec in records:
        if not results.done(keys[rec["member"]]):
            m = rec["config"]
            results.add(keys[rec["member"]], finite(dict(
                fields(rec), optimizer=m["optimizer"], seed=m["seed"], clip=m["clip"], alpha=m["alpha"],
                outcome=rec["outcome"], steps=rec["steps"], error=rec["error"], metrics=rec["metrics"],
                setup_seconds=seconds)))
    return seconds


class Results:
    """An append-only JSON-lines file keyed by a unit-of-work id (resume support).

    ``done(key)`` tells whether a unit finished in an earlier run; ``add(key, record)``
    appends its line at once (fsync-ed). A truncated last line is cut off on open.
    """

    def __init__(self, out_dir: str, name: str = "results.jsonl"):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, name)
        self.records: Dict[str, dict] = {r["key"]: r for r in read_results(self.path)}

    def done(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict:
        return self.records[key]

    def add(self, key: str, record: dict) -> dict:
        record = dict(record, key=key)
        append_results(self.path, [record])
        self.records[key] = record
        return record

    def all(self) -> List[dict]:
        return list(self.records.values())


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats printed with 4 significant digits."""

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_text(out_dir: str, name: str, text: str) -> str:
    path = os.path.join(out_dir, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def code_commit() -> Optional[str]:
    """The git commit of the checkout this package runs from (None outside a git checkout)."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip() if out.returncode == 0 else ""
    return commit or None


def run_commits(out_dir: str) -> list:
    """The commits a run in ``out_dir`` ran on, in order (one more each time it resumed on other code)."""
    path = os.path.join(out_dir, "commits.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def write_summary(out_dir: str, summary: dict) -> dict:
    """Write ``summary.json``, recording the commit the run ran on (``commit``: the last, which finished it;
    ``commits``: all of them, in order, when it resumed on other code) and the commit of the code that wrote the summary (``written_by_commit``)."""
    commits = run_commits(out_dir)
    summary = dict(summary, written_by_commit=code_commit())
    if commits:
        summary.update(commit=commits[-1], **({"commits": commits} if len(commits) > 1 else {}))
    write_text(out_dir, "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    return summary


def pyplot():
    """matplotlib's pyplot with a non-interactive backend, or None (with a notice) if absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:  # the plots extra is optional
        print("[plots] matplotlib is not installed (pip install 'rnn_jax[plots]'): skipping figures", file=sys.stderr)
        return None


def save_figure(fig, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


class Progress:
    """A one-line progress report on stderr: ``[name] 3/10 units, 12 s, eta 28 s``."""

    def __init__(self, name: str, total: int, enabled: bool = True):
        self.name, self.total, self.enabled = name, total, enabled
        self.count, self.start = 0, time.time()

    def update(self, n: int = 1, note: str = "") -> None:
        self.count += n
        if not self.enabled:
            return
        elapsed = time.time() - self.start
        eta = elapsed / self.count * (self.total - self.count) if self.count else float("nan")
        sys.stderr.write(f"[{self.name}] {self.count}/{self.total} {note} {elapsed:.0f} s elapsed, eta {eta:.0f} s\n")
        sys.stderr.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(f"[{self.name}] {text}\n")
            sys.stderr.flush()


def mean_and_spread(values: Sequence[float]) -> Dict[str, float]:
    """Mean, standard deviation, min, max and count of ``values`` (nan-aware)."""
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def nan_median(values) -> float:
    """The median of the finite values (None counts as missing), nan when there is none."""
    a = np.asarray([np.nan if v is None else v for v in values], np.float64)
    return float(np.median(a[np.isfinite(a)])) if np.any(np.isfinite(a)) else float("nan")


def nan_max(values) -> float:
    """The largest finite value (None counts as missing), nan when there is none."""
    a = np.asarray([np.nan if v is None else v for v in values], np.float64)
    return float(np.max(a[np.isfinite(a)])) if np.any(np.isfinite(a)) else float("nan")


def outcome_statistics(records: Sequence[dict]) -> Dict[str, Any]:
    """What every reproduction's row says of its sweep members (records of ``rnn_jax.repro.sweep``):
    outcome counts, medians over each member's last chunk of updates (gradient norm, fraction
    clipped), and over each whole run its largest applied gradient norm and its explosions
    (updates above 10x their chunk's median)."""
    metric = lambda key: [r["metrics"].get(key) for r in records]
    return {
        "diverged": sum(r["outcome"] == "diverged" for r in records),
        "exhausted": sum(r["outcome"] == "exhausted" for r in records),
        "median_grad_norm": nan_median(metric("grad_norm")),
        "median_clipped_fraction": nan_median(metric("clipped_fraction")),
        "median_max_grad_norm": nan_median(metric("run_grad_norm_max")),
        "largest_grad_norm": nan_max(metric("run_grad_norm_max")),
        "median_explosions": nan_median(metric("run_explosions")),
        "members_with_explosions": sum((v or 0) > 0 for v in metric("run_explosions")),
    }


def rate_with_interval(successes: int, n: int) -> Dict[str, float]:
    """A success rate with its Wilson 95 % interval (the spread across seeds)."""
    if n == 0:
        return {"rate": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    z, p = 1.96, successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"rate": p, "low": float(max(0.0, centre - half)), "high": float(min(1.0, centre + half)), "n": n}


def seed_list(seeds: Union[None, int, Sequence[int]], default: Union[int, dict]) -> List[int]:
    """Seeds to run: ``range(default)`` when None (``default`` a count, or a profile with
    a ``seeds`` count), ``range(n)`` for an int, else the given seeds (distinct non-negative integers)."""
    if seeds is None:
        seeds = default["seeds"] if isinstance(default, dict) else default
    if isinstance(seeds, (bool, np.bool_, str, bytes)):
        raise UserTypeError(f"seeds: expected a number of seeds or a list of integer seeds, got {type(seeds).__name__} "
                            f"{seeds!r}")
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise UserValueError(f"seeds: expected a positive number of seeds, got {seeds}")
        return list(range(int(seeds)))
    try:
        items = list(seeds)
    except TypeError:
        raise UserTypeError(f"seeds: expected a number of seeds or a list of integer seeds, got "
                            f"{type(seeds).__name__}") from None
    bad = [s for s in items if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 0]
    if bad:
        raise UserTypeError(f"seeds: expected non-negative integers, got {bad[:3]!r}")
    items = [int(s) for s in items]
    if not items or len(set(items)) != len(items):
        raise UserValueError(f"seeds: expected a non-empty list of distinct seeds, got {items}")
    return items


def finite(tree):
    """``tree`` with every non-finite float replaced by None (strict JSON; "overflowed" reads as None)."""
    if isinstance(tree, dict):
        return {k: finite(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [finite(v) for v in tree]
    if isinstance(tree, (float, np.floating)):
        return float(tree) if np.isfinite(tree) else None
    return tree


def claim_folder(out_dir: str, experiment: str, settings: dict) -> None:
    """Record ``settings`` in ``out_dir/run.json``, or refuse if the folder holds a run with other settings;
    record the commit of the code it runs on in ``out_dir/commits.json`` (see :func:`run_commits`).

    Results are keyed by unit (a sweep numbers its members), so a rerun must use the
    same profile and seeds to resume; anything else needs a new folder.
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "run.json")
    mine = json.loads(json.dumps(finite({"experiment": experiment, **settings})))
    if os.path.exists(path):
        with open(path) as f:
            theirs = json.load(f)
        if theirs != mine:
            diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
            raise UserValueError(f"{out_dir} holds a run with other settings (differing: {', '.join(diff)}); "
                             f"expected the same profile and seeds to resume, or use a new output folder")
    else:
        write_text(out_dir, "run.json", json.dumps(mine, indent=1, sort_keys=True) + "\n")
    commits, commit = run_commits(out_dir), code_commit()
    if commit and commit not in commits:  # the code this (resumed) run trains with
        write_text(out_dir, "commits.json", json.dumps(commits + [commit]) + "\n")


# ---------------------------------------------------------------- committed results and the README

README_BEGIN = "<!-- begin {name}: generated from results/{name}/summary.json and provenance.json -->"
README_END = "<!-- end {name} -->"


def verdicts_or_note(decide: Optional[Callable[[], list]], note: str):
    """``(verdicts as dicts, their markdown)`` from ``decide()`` when the profile decides claims (``decide``
    given); else ``(None, a Verdicts section holding note)``, what a smoke profile prints instead."""
    if not decide:
        return None, "\n## Verdicts\n\n" + note + "\n"
    decided = decide()
    return [v.as_dict() for v in decided], _verdicts.render_markdown(decided)


def verdict_lines(verdicts: Sequence[dict]) -> List[str]:
    """One markdown line per recorded verdict (a dict of summary.json): claim, outcome, test, p."""
    out = []
    for v in verdicts or []:
        p = v.get("p_value")
        p_text = "" if p is None else f", p = {p:.3g}"
        against = v.get("p_against")
        if v.get("outcome") == "contradicted" and against is not None:
            p_text = f", p (opposite direction) = {against:.3g}"
        out.append(f"- **{v['claim']}**: {v['outcome'].upper()} ({v['test']}{p_text})")
    return out


def readme_block(name: str, body: str) -> str:
    """The README's generated block for the committed results of experiment ``name``."""
    return README_BEGIN.format(name=name) + "\n" + body.rstrip("\n") + "\n" + README_END.format(name=name)


def provenance(command: str, wall_seconds: float, commit: str, **extra) -> dict:
    """What a committed run needs to be trusted: the command, the machine, the wall time, the commit."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    import jax

    return dict(command=command, wall_seconds=float(wall_seconds), commit=commit, cpu=cpu, cores=os.cpu_count(),
                platform=platform.platform(), python=platform.python_version(), jax=jax.__version__,
                devices=f"{jax.device_count()} x {jax.devices()[0].device_kind}", **extra)
