"""Copy a finished run into the repository's ``results/<name>/`` with its provenance, and print the
README block that quotes it (the block a test compares with ``results/<name>/summary.json``).

    python -m rnn_jax.repro.experiments.publish temporal_order RUN_DIR --command "rnn-jax temporal-order --profile cpu" \\
        --wall-seconds 4800 --commit 1234abc

Copied: ``table.md``, ``summary.json``, ``run.json``, ``results.jsonl``, the PNGs, and each sweep
folder's ``results.jsonl`` and ``chunks.jsonl`` (the per-chunk gradient-norm statistics); not the
checkpoints or parameter files. Written: ``provenance.json`` (command, machine, wall time, commit).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import shutil
import sys

from rnn_jax.repro.experiments import common

MODULES = {"temporal_order": "rnn_jax.repro.experiments.temporal_order", "pathological": "rnn_jax.repro.experiments.pathological",
           "temporal_order_pilot": "rnn_jax.repro.experiments.temporal_order", "music": "rnn_jax.repro.experiments.music",
           "chars": "rnn_jax.repro.experiments.chars"}
TOP_FILES = ("table.md", "summary.json", "run.json", "results.jsonl")
SWEEP_FILES = ("results.jsonl", "chunks.jsonl", "sweep.json")


def _full_commit(commit: str) -> str:
    """``commit`` as a full hash when git knows it (a short hash can become ambiguous)."""
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], capture_output=True,
                         text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else commit


def publish(name: str, run_dir: str, dest: str, command: str, wall_seconds: float, commit: str, **extra) -> str:
    """Copy ``run_dir`` into ``dest``, write its provenance (``extra``: more fields, e.g. a note) and
    return the README block."""
    if name not in MODULES:
        raise ValueError(f"name: expected one of {sorted(MODULES)}, got {name!r}")
    if not os.path.exists(os.path.join(run_dir, "summary.json")):
        raise ValueError(f"{run_dir}: no summary.json; the run has not finished (rerun its command to resume it)")
    os.makedirs(dest, exist_ok=True)
    for f in TOP_FILES:
        shutil.copy2(os.path.join(run_dir, f), os.path.join(dest, f))
    for png in glob.glob(os.path.join(run_dir, "*.png")):
        shutil.copy2(png, dest)
    for sub in sorted(os.listdir(run_dir)):
        folder = os.path.join(run_dir, sub)
        if os.path.isdir(folder) and os.path.exists(os.path.join(folder, "results.jsonl")):
            os.makedirs(os.path.join(dest, sub), exist_ok=True)
            for f in SWEEP_FILES:
                if os.path.exists(os.path.join(folder, f)):
                    shutil.copy2(os.path.join(folder, f), os.path.join(dest, sub, f))
    commit = _full_commit(commit)
    prov = common.provenance(command, wall_seconds, commit, **extra)
    common.write_text(dest, "provenance.json", json.dumps(prov, indent=1, sort_keys=True) + "\n")
    with open(os.path.join(dest, "summary.json")) as f:
        summary = json.load(f)
    # the summary names the commit the run ran on (the one given here: runs from before commits.json
    # did not record it), next to the one that wrote it
    summary["commit"] = commit
    common.write_text(dest, "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    return common.readme_block(name, importlib.import_module(MODULES[name]).readme_body(summary, prov))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnn_jax.repro.experiments.publish", description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(MODULES))
    p.add_argument("run_dir")
    p.add_argument("--dest", default=None, help="default results/<name>")
    p.add_argument("--command", required=True)
    p.add_argument("--wall-seconds", type=float, required=True)
    p.add_argument("--commit", required=True, help="the commit whose code trained the run")
    p.add_argument("--note", default=None, help="anything a reader must know about the run (parts, load)")
    a = p.parse_args(argv)
    extra = {"note": a.note} if a.note else {}
    print(publish(a.name, a.run_dir, a.dest or os.path.join("results", a.name), a.command, a.wall_seconds, a.commit,
                  **extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
