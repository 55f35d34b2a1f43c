"""The training engine's throughput on the paper's temporal-order sweeps (issue 14, point 5).

    python -m benchmarks.engine                       # every measurement, all CPU cores as devices
    python -m benchmarks.engine --quick               # small sizes (the smoke test)
    python -m benchmarks.engine --baseline-tree DIR   # also the compaction sweep on another checkout

What it measures, in one process (a comparison is only made between figures of one run):

* **throughput**: ``train.train_chunk`` on 24 members (MSGD, MSGD-C, MSGD-CR x 8 seeds; 50 basic-tanh
  units, batch 20), its members sharded over every device as :func:`rnn_jax.repro.sweep.run_sweep` does,
  at T = 50, 100, 200 and on the range [50, 200) (one length drawn per update), with Ω
  (``regularize=True``) and without: member-updates per second and member time steps per second
  (member-updates x the mean length drawn);
* **range against fixed length**: the [50, 200) sweep against the same sweep at its mean length, 125
  (padding every update to 199 steps would cost ~1.6x);
* **compaction**: :func:`rnn_jax.repro.sweep.run_sweep` on 24 members of which 18 finish (diverge on cue,
  :func:`finishing_optimizer`) half-way through the first of four chunks, with finished members leaving the compiled batch
  (``compact=True``) and without (``compact=False``); with ``--baseline-tree`` the same sweep runs
  in a subprocess on that checkout (e.g. the commit before compaction) for the "before" figure.

Timings are wall-clock medians over ``--rounds`` repeats after a warm-up call (compilation excluded,
except in the compaction sweeps, which include their compiles as a user pays them). It writes its
JSON to ``benchmarks/results/engine.json`` and prints a markdown section for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time


def _set_devices(n):
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])


def _members(seeds):
    from rnn_jax.repro.experiments.temporal_order import make_members

    return make_members(("MSGD", "MSGD-C", "MSGD-CR"), list(range(seeds)))


def finishing_optimizer(hp):
    """The paper's MSGD-C(R) step, whose update turns NaN at update ``hp["finish"]``: a member that
    finishes (diverges) on cue, so that a sweep's members finish when the benchmark says."""
    import jax.numpy as jnp
    import optax

    from rnn_jax import optim

    cue = lambda count: jnp.where(count.astype(jnp.float32) >= hp["finish"], jnp.nan, 1.0).astype(jnp.float32)
    return optax.chain(optim.clip_by_global_norm(hp["clip"]), optax.scale_by_schedule(cue),
                       optax.sgd(hp["learning_rate"]))


def _setup(min_length, max_length, regularize, eval_size=1000, **kw):
    import rnn_jax
    from rnn_jax.repro import tasks, train

    return train.Setup(cell=rnn_jax.elman(50, scheme="basic_tanh"),
                       task=tasks.get("temporal_order", min_length=min_length, max_length=max_length),
                       batch_size=20, regularize=regularize, eval_size=eval_size, eval_batch_size=min(1000, eval_size),
                       readout_weight_init="basic_tanh", **kw)


def throughput(min_length, max_length, regularize, seeds, updates, rounds):
    """Member-updates and member time steps per second of train_chunk, members sharded over every device."""
    import jax
    import numpy as np

    from rnn_jax.repro import sweep, train

    setup = _setup(min_length, max_length, regularize)
    members = _members(seeds)
    names = sweep.hyperparameter_names(members)
    hp = {k: np.asarray([m[k] for m in members], np.float64) for k in names}
    mesh = sweep.member_mesh()
    pad = -len(members) % mesh.devices.size
    if pad:
        raise ValueError(f"{len(members)} members do not split over {mesh.devices.size} devices")
    state = train.init_members(setup, [m["seed"] for m in members], hp)
    hp_s, st = sweep.shard_members(hp, mesh), sweep.shard_members(jax.tree_util.tree_map(np.asarray, state), mesh)
    st = jax.block_until_ready(train.train_chunk(setup, hp_s, st, updates))  # compile + warm-up
    times, lengths = [], []
    for _ in range(rounds):
        step0 = int(np.asarray(st.step).max())
        t0 = time.perf_counter()
        st = jax.block_until_ready(train.train_chunk(setup, hp_s, st, updates))
        times.append(time.perf_counter() - t0)
        drawn = [int(train.minibatch_length(setup, s)) for s in range(step0, step0 + updates)]
        lengths.append(float(np.mean(drawn)))
    sec = float(np.median(times))
    n = len(members) * updates
    return {"min_length": min_length, "max_length": max_length, "regularize": regularize, "members": len(members),
            "updates": updates, "seconds": sec, "times": times, "member_updates_per_s": n / sec,
            "mean_length": float(np.mean(lengths)), "member_steps_per_s": n * float(np.mean(lengths)) / sec}


def compaction_sweep(out_dir, compact, seeds, chunk_steps, length):
    """Wall time of run_sweep where 3/4 of the members diverge in the first of four chunks."""
    from rnn_jax.repro import sweep

    setup = _setup(length, length, True, eval_size=200, make_optimizer=finishing_optimizer)
    members = _members(seeds)
    for i, m in enumerate(members):  # three members in four finish (diverge) half-way through the first chunk
        m["finish"] = float(chunk_steps // 2 if i % 4 else 10**9)
    kwargs = {} if compact is None else {"compact": compact}
    t0 = time.perf_counter()
    results = sweep.run_sweep(setup, members, out_dir, max_steps=4 * chunk_steps, chunk_steps=chunk_steps,
                              progress=False, **kwargs)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "diverged": sum(r["outcome"] == "diverged" for r in results),
            "members": len(results), "compact": compact}


def _baseline(tree, seeds, chunk_steps, length, devices):
    """The compaction sweep run by another checkout of the code (its default behaviour)."""
    here = os.path.abspath(__file__)
    code = (f"import sys, json, runpy, tempfile; sys.path.insert(0, {tree!r})\n"
            f"sweep = runpy.run_path({here!r})['compaction_sweep']\n"
            f"print('RESULT', json.dumps(sweep(tempfile.mkdtemp(), None, {seeds}, {chunk_steps}, {length})))")
    env = dict(os.environ, PYTHONPATH=tree)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    out = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
    out["tree"] = tree
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=os.cpu_count(), help="CPU devices (default: every core)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=200, help="updates per timed call")
    parser.add_argument("--baseline-tree", default=None, help="a checkout whose run_sweep gives the 'before' figure")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "engine.json"))
    parser.add_argument("--only", default="throughput,range,compaction")
    parser.add_argument("--chunk-steps", type=int, default=500,
                        help="updates per chunk of the compaction sweep (four chunks; longer amortises compiles)")
    args = parser.parse_args(argv)
    _set_devices(args.devices)
    import jax
    import numpy as np

    import rnn_jax

    seeds = 2 if args.quick else 8
    updates = 10 if args.quick else args.updates
    rounds = 1 if args.quick else args.rounds
    only = set(args.only.split(","))
    out = {"command": "python -m benchmarks.engine " + " ".join(argv if argv is not None else sys.argv[1:]),
           "device": f"{jax.devices()[0].device_kind} x {jax.device_count()}", "platform": platform.platform(),
           "processor": platform.processor(), "cpus": os.cpu_count(), "jax": jax.__version__,
           "rnn_jax": rnn_jax.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    lengths = [(20, 20), (30, 60)] if args.quick else [(50, 50), (100, 100), (200, 200), (50, 200)]
    if "throughput" in only:
        out["throughput"] = [throughput(lo, hi, reg, seeds, updates, rounds) for lo, hi in lengths
                             for reg in (False, True)]
    if "range" in only:
        lo, hi = (30, 60) if args.quick else (50, 200)
        mid = (lo + hi - 1) // 2 if args.quick else 125
        ranged = throughput(lo, hi, True, seeds, updates, rounds)
        fixed = throughput(mid, mid, True, seeds, updates, rounds)
        out["range"] = {"range": ranged, "fixed": fixed, "ratio": ranged["seconds"] / fixed["seconds"],
                        "ratio_per_step": (ranged["seconds"] / ranged["mean_length"]) / (fixed["seconds"] / fixed["mean_length"])}
    if "compaction" in only:
        chunk, length = (5, 20) if args.quick else (args.chunk_steps, 50)
        comp = {}
        for compact in (True, False):
            with tempfile.TemporaryDirectory() as d:
                comp["compact" if compact else "no_compaction"] = compaction_sweep(d, compact, seeds, chunk, length)
        if args.baseline_tree:
            comp["baseline"] = _baseline(os.path.abspath(args.baseline_tree), seeds, chunk, length, args.devices)
        comp["ratio_vs_no_compaction"] = comp["compact"]["seconds"] / comp["no_compaction"]["seconds"]
        if "baseline" in comp:
            comp["ratio_vs_baseline"] = comp["compact"]["seconds"] / comp["baseline"]["seconds"]
        out["compaction"] = comp
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    print(report(out))
    return 0


def report(out) -> str:
    lines = [f"## Training engine (issue 14): {out['date']}", "",
             f"`{out['command']}` on {out['device']} ({out['cpus']} cores, {out['processor'] or out['platform']}), "
             f"jax {out['jax']}. Temporal order, 50 basic-tanh units, batch 20, 24 members (MSGD, MSGD-C, MSGD-CR "
             f"x 8 seeds) sharded over the devices; wall-clock medians.", ""]
    if "throughput" in out:
        lines += ["| lengths | Ω | member-updates / s | member time steps / s | mean length |", "|---|---|---|---|---|"]
        for r in out["throughput"]:
            span = f"{r['min_length']}" if r["min_length"] == r["max_length"] else f"[{r['min_length']}, {r['max_length']})"
            lines.append(f"| {span} | {'yes' if r['regularize'] else 'no'} | {r['member_updates_per_s']:,.0f} | "
                         f"{r['member_steps_per_s']:,.0f} | {r['mean_length']:.1f} |")
        lines.append("")
    if "range" in out:
        r = out["range"]
        lines.append(f"Range against fixed length (with Ω): [{r['range']['min_length']}, {r['range']['max_length']}) "
                     f"took {r['ratio']:.2f}x the time of T = {r['fixed']['min_length']} (per drawn time step "
                     f"{r['ratio_per_step']:.2f}x; target <= 1.2x).")
        lines.append("")
    if "compaction" in out:
        c = out["compaction"]
        text = (f"Compaction (3 members in 4 finish half-way through the first of four chunks; "
                f"{c['compact']['diverged']} of {c['compact']['members']} did): run_sweep {c['compact']['seconds']:.1f} s "
                f"with compaction, {c['no_compaction']['seconds']:.1f} s without ({c['ratio_vs_no_compaction']:.2f}x)")
        if "baseline" in c:
            text += f", {c['baseline']['seconds']:.1f} s on the baseline checkout ({c['ratio_vs_baseline']:.2f}x)"
        lines.append(text + "; compiles included.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
