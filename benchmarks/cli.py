"""``python -m benchmarks``: plan the measurement groups, run each in a fresh process, report.

Examples::

    python -m benchmarks                          # everything, on JAX's default device
    python -m benchmarks --workloads W3,MEM --frameworks rnn_jax,torch
    python -m benchmarks --quick --no-write       # tiny sizes (the CI smoke profile)
    python -m benchmarks --profile device         # the accelerator check (benchmarks/device.py)

On a CPU host every core is an XLA device (``--xla_force_host_platform_device_count`` in
``XLA_FLAGS``, set before JAX starts in any process of the run) unless ``XLA_FLAGS`` already
sets that flag; ``--devices N`` sets N whatever ``XLA_FLAGS`` says. The flag concerns only
the CPU platform: accelerators are left as they are.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata

from benchmarks import SCHEMA_VERSION, analysis, report, timing, workloads
from rnn_jax.repro.cli import positive_int  # argparse type (importing it starts no JAX backend)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "benchmarks")

# (framework, variant) measured for MEM and COMPILE, each in its own process
MEM_RUNS = [("rnn_jax", "default"), ("rnn_jax", "remat"), ("jax", "inside"), ("torch", "eager")]
COMPILE_RUNS = [
    ("rnn_jax", "default"),
    ("jax", "inside"),
    ("flax", "LSTMCell"),
    ("flax", "OptimizedLSTMCell"),
    ("equinox", "vmap-scan"),
    ("torch", "eager"),
]
VERSION_PACKAGES = ("jax", "jaxlib", "numpy", "optax", "flax", "equinox", "torch")
FLAG_PREFIXES = ("XLA_", "JAX_", "TF_CPP", "OMP_", "MKL_", "OPENBLAS_", "MALLOC_", "LD_PRELOAD", "CUDA_VISIBLE", "TORCH_")
HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"
PROFILES = ("full", "quick", "device")


def with_host_devices(xla_flags: str, devices=None) -> str:
    """``xla_flags`` (an ``XLA_FLAGS`` value) with one XLA CPU device per core: unchanged when
    it already sets :data:`HOST_DEVICES_FLAG` and ``devices`` is None, else with the flag set to
    ``devices`` (default ``os.cpu_count()``), replacing any earlier value."""
    flags = xla_flags.split()
    if devices is None and any(f.split("=", 1)[0] == HOST_DEVICES_FLAG for f in flags):
        return xla_flags
    count = (os.cpu_count() or 1) if devices is None else devices
    return " ".join([f for f in flags if f.split("=", 1)[0] != HOST_DEVICES_FLAG] + [f"{HOST_DEVICES_FLAG}={count}"])


def split_profile(argv: list) -> tuple:
    """``(profile, the other arguments)`` from ``--profile NAME`` / ``--profile=NAME`` (default
    ``full``); ``--profile quick`` is ``--quick``. A bad name is a usage error (exit status 2)."""

    def usage(got):
        print(f"python -m benchmarks: error: --profile: expected one of {', '.join(PROFILES)}, got {got}", file=sys.stderr)
        raise SystemExit(2)

    profile, rest, i = "full", [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--profile" or arg.startswith("--profile="):
            if arg == "--profile":
                if i + 1 >= len(argv):
                    usage("nothing")
                profile, i = argv[i + 1], i + 2
            else:
                profile, i = arg.split("=", 1)[1], i + 1
            if profile not in PROFILES:
                usage(repr(profile))
            continue
        rest.append(arg)
        i += 1
    if profile == "quick" and "--quick" not in rest:
        rest.append("--quick")
    return profile, rest


def _csv(text: str, choices: tuple, what: str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in choices]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(bad)}; expected some of {', '.join(choices)}")
    return items


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default=",".join(workloads.ALL_WORKLOADS), type=lambda t: _csv(t, workloads.ALL_WORKLOADS, "workloads"),
                   help="comma-separated, from %(default)s (MM, the matrix-product rate, always runs)")
    p.add_argument("--frameworks", default=",".join(workloads.FRAMEWORKS), type=lambda t: _csv(t, workloads.FRAMEWORKS, "frameworks"),
                   help="comma-separated, from %(default)s; missing ones are skipped")
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions per measurement (default 30, --quick 3)")
    p.add_argument("--max-time", type=float, default=None, help="stop a measurement's repetitions after this many seconds, "
                   "keeping at least 3 (default 20, --quick 2)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repetitions: a smoke test, not a measurement")
    p.add_argument("--profile", choices=PROFILES, default="full", help="full (default); quick (= --quick); device: the "
                   "accelerator check, python -m benchmarks.device, which takes its own options (see its --help)")
    p.add_argument("--devices", type=positive_int, default=None, metavar="N",
                   help="XLA CPU devices (default one per core, unless XLA_FLAGS already sets "
                   "--xla_force_host_platform_device_count)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<backend>.json; "
                   "<backend>-quick.json with --quick, <backend>-unrecorded.json with --no-write)")
    p.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md")
    p.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md even with --quick")
    p.add_argument("--results-md", default=os.path.join(HERE, "RESULTS.md"), help=argparse.SUPPRESS)
    p.add_argument("--no-sweep", action="store_true", help="one variant per framework: rnn_jax's default (no project_inputs/unroll "
                   "sweep), plain JAX's projection inside the step, Flax's first cell")
    p.add_argument("--in-process", action="store_true", help="run every group in this process (faster; frameworks then share "
                   "threads and caches, so use it for smoke tests only)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set in every group's environment, e.g. MALLOC_MMAP_THRESHOLD_=... (recorded with the flags)")
    p.add_argument("--note", default=None, help="a line printed in bold at the top of the RESULTS.md section")
    p.add_argument("--rounds", type=int, default=1, help="measure the timed workloads (W1-W5) this many times, every "
                   "framework once per round in turn, and pool the rounds' calls: a drift of the machine's speed "
                   "then falls on every framework alike (default %(default)s)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per group before it is killed (default %(default)s)")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 30
    if args.max_time is None:
        args.max_time = 2.0 if args.quick else 20.0
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    for item in args.env:
        if "=" not in item:
            p.error(f"--env expects KEY=VALUE, got {item!r}")
    if args.env and args.in_process:
        p.error("--env sets the environment of fresh processes; it has no effect with --in-process")
    return args


def plan(args: argparse.Namespace) -> list:
    """The groups to run, in order; MM first (the floors need its rate). With ``--rounds``,
    the timed groups (sequence workloads and W5) come once per round, each round in the
    same order, before the others."""
    groups = _plan_once(args)
    timed = [g for g in groups if g["kind"] in ("seq", "seeds")]
    rest = [g for g in groups if g["kind"] not in ("seq", "seeds")]
    rounds = [dict(g, round=r, rounds=args.rounds) for r in range(1, args.rounds + 1) for g in timed]
    return rest[:1] + rounds + rest[1:]


def _plan_once(args: argparse.Namespace) -> list:
    profile = "quick" if args.quick else "full"
    base = {"profile": profile, "repeats": args.repeats, "max_time_s": args.max_time}
    groups = [dict(base, kind="mm", workload="MM", framework="jax")]
    fws = args.frameworks
    for wl in workloads.SEQUENCE_WORKLOADS:
        if wl in args.workloads:
            for fw in fws:
                groups.append(dict(base, kind="seq", workload=wl, framework=fw, sweep=not args.no_sweep))
    if "W5" in args.workloads:
        groups += [dict(base, kind="seeds", workload="W5", framework=fw) for fw in fws if fw in ("rnn_jax", "torch")]
    if "MEM" in args.workloads:
        for t in workloads.MEM_TIMES[profile]:
            groups += [dict(base, kind="mem", workload="MEM", framework=fw, variants=[v], time=t) for fw, v in MEM_RUNS if fw in fws]
    if "COMPILE" in args.workloads:
        groups += [dict(base, kind="compile", workload="COMPILE", framework=fw, variants=[v]) for fw, v in COMPILE_RUNS if fw in fws]
    if "LIN" in args.workloads and any(fw in fws for fw in ("jax", "rnn_jax")):
        groups.append(dict(base, kind="lin", workload="LIN", framework="jax", frameworks=[f for f in fws if f in ("jax", "rnn_jax")]))
    return groups


def _installed(framework: str) -> bool:
    return importlib.util.find_spec(workloads.FRAMEWORK_MODULES[framework]) is not None


def _describe_group(g: dict) -> str:
    extra = f" T={g['time']}" if g.get("time") else ""
    extra += f" (round {g['round']})" if g.get("round") and g.get("rounds", 1) > 1 else ""
    variants = f" [{','.join(g['variants'])}]" if g.get("variants") and g["kind"] in ("mem", "compile") else ""
    return f"{g['workload']}{extra} {g['framework']}{variants}"


def run_in_subprocess(spec: dict, env_extra: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="rnn_jax_bench_") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        env = dict(os.environ)
        env.update(env_extra)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.worker", spec_path, out_path],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
            )
            failure = None if proc.returncode == 0 and os.path.exists(out_path) else f"exit {proc.returncode}: {proc.stderr[-2000:]}"
        except subprocess.TimeoutExpired:
            failure = f"killed after {timeout:.0f} s"
        if failure is None:
            with open(out_path) as f:
                return json.load(f)
    rec = {"workload": spec["workload"], "framework": spec["framework"], "variant": ",".join(spec.get("variants") or []) or "-",
           "status": "error", "message": "worker process failed: " + failure}
    if spec.get("time"):
        rec["config"] = {"time": spec["time"]}
    return {"records": [rec], "env": {}}


def _versions() -> dict:
    out = {}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        out["rnn_jax"] = metadata.version("rnn_jax")
    except metadata.PackageNotFoundError:
        out["rnn_jax"] = "(source tree)"
    return out


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _flags(env_extra: dict) -> dict:
    flags = {k: v for k, v in os.environ.items() if k.startswith(FLAG_PREFIXES)}
    flags.update(env_extra)
    return dict(sorted(flags.items()))


def _scope(args: argparse.Namespace) -> str:
    """'all', or which workloads / frameworks / variants this run was limited to (part of the RESULTS.md key)."""
    parts = []
    if list(args.workloads) != list(workloads.ALL_WORKLOADS):
        parts.append(",".join(args.workloads))
    if list(args.frameworks) != list(workloads.FRAMEWORKS):
        parts.append(",".join(args.frameworks))
    if args.no_sweep:
        parts.append("no-sweep")
    return " × ".join(parts) or "all"


def main(argv=None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    profile, rest = split_profile(given)
    if profile == "device":
        from benchmarks import device

        return device.main(rest, command=shlex.join(["python", "-m", "benchmarks", *given]))
    argv = rest
    args = parse_args(argv)
    env_extra = dict(item.split("=", 1) for item in args.env)
    # one XLA device per core on a CPU, before JAX starts here (--in-process) or in a group's process
    os.environ["XLA_FLAGS"] = with_host_devices(os.environ.get("XLA_FLAGS", ""), args.devices)
    if "XLA_FLAGS" in env_extra:
        env_extra["XLA_FLAGS"] = with_host_devices(env_extra["XLA_FLAGS"], args.devices)
    groups = plan(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = timing.load_average()
    records, envs = [], []
    for i, g in enumerate(groups, 1):
        label = _describe_group(g)
        if not _installed(g["framework"]):
            records.append({"workload": g["workload"], "framework": g["framework"], "variant": "-", "status": "skipped",
                            "message": f"{g['framework']} is not installed"})
            print(f"[{i}/{len(groups)}] {label}: skipped ({g['framework']} not installed)", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        if args.in_process:
            from benchmarks.worker import run_group

            result = run_group(g)
        else:
            result = run_in_subprocess(g, env_extra, args.timeout)
        bad = [r for r in result["records"] if r.get("status") == "error"]
        print(f"[{i}/{len(groups)}] {label}: {len(result['records'])} measurement(s), {len(bad)} error(s), "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for r in bad:
            print(f"    {r['framework']} {r.get('variant')}: {r.get('message')}", file=sys.stderr)
        records += result["records"]
        envs.append({"group": label, **result.get("env", {})})

    jax_env = next((e for e in envs if "backend" in e), {})
    backend = jax_env.get("backend", "unknown")
    profile = "quick" if args.quick else "full"
    # The tracked JSON (results/<backend>.json) holds the figures of the RESULTS.md section written
    # with it; a run that writes no section (--no-write) goes to an ignored file instead of
    # overwriting them.
    records_results = not args.no_write and (args.write or not args.quick)
    suffix = "-quick" if args.quick else ("" if records_results else "-unrecorded")
    # a run limited in scope, or under --env, writes its own section and so its own file:
    # it must not replace the figures the complete run's section points to
    limits = ([] if _scope(args) == "all" else [_scope(args)]) + (
        ["env-" + "-".join(f"{k}={v}" for k, v in sorted(env_extra.items()))] if env_extra else [])
    if limits and records_results:
        suffix += "-" + re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", "-".join(limits))
    out_path = args.out or os.path.join(HERE, "results", f"{backend}{suffix}.json")
    records = analysis.merge_rounds(records)
    rate = analysis.matmul_rate(records)
    analysis.add_floors(records, rate)
    checks = analysis.loss_checks(records)
    mm = next((r for r in records if r["workload"] == "MM" and r.get("status") == "ok"), {})
    torch_env = next((e for e in envs if "torch_threads" in e), {})
    flags = _flags(env_extra)
    if torch_env:
        flags["torch.get_num_threads()"] = torch_env["torch_threads"]
    if jax_env:
        flags["jax_default_matmul_precision"] = jax_env.get("jax_default_matmul_precision")
        flags["jax_enable_x64"] = jax_env.get("jax_enable_x64")
    device_kind = jax_env.get("device_kind")
    meta = {
        "schema": SCHEMA_VERSION,
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks" + (" " + shlex.join(given) if given else ""),
        "profile": profile,
        "backend": backend,
        "device": f"{jax_env.get('device', '?')} ({device_kind}, {jax_env.get('device_count', '?')} device(s))",
        "device_kind": device_kind,
        "device_label": f"CPU ({_cpu_model() or '?'}, {os.cpu_count()} CPUs)" if backend == "cpu" else f"{backend.upper()} ({device_kind})",
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": _versions(),
        "flags": flags,
        "isolation": "in-process" if args.in_process else "one fresh process per group",
        "repeats": args.repeats,
        "max_time_s": args.max_time,
        "rounds": args.rounds,
        "matmul_flops_per_s": rate,
        "matmul_size": (mm.get("config") or {}).get("n"),
        "load_average_start": load_start,
        "load_average_end": timing.load_average(),
        "note": args.note,
        "scope": _scope(args),
        "env": env_extra,
        "json": os.path.relpath(out_path, ROOT) if os.path.abspath(out_path).startswith(ROOT) else out_path,
        "wall_s": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
        "groups": envs,
    }
    result = {"meta": meta, "records": records, "checks": checks, "summary": analysis.summary(records)}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(report.section(result))
    print(f"JSON: {out_path}", file=sys.stderr)
    if records_results:
        report.update_results_md(args.results_md, result)
        print(f"RESULTS.md section updated: {args.results_md}", file=sys.stderr)
    failed = [c for c in checks if not c["ok"]]
    errors = [r for r in records if r.get("status") == "error"]
    return 1 if failed or errors else 0
