"""Markdown tables of a run, and the section of ``benchmarks/RESULTS.md`` it replaces.

A section is delimited by ``<!-- benchmarks:begin KEY -->`` / ``<!-- benchmarks:end KEY -->``
with KEY = backend, device kind, profile, scope (the workloads and frameworks, when
not all) and the ``--env`` settings: a new run with the same key replaces the old
section; complete runs are inserted first (newest first), partial runs appended
after them. Text outside the markers is kept.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from benchmarks.workloads import CELL_LABEL

INTRO = """# Benchmark results

Written by `python -m benchmarks` (see `benchmarks/README.md`); one section per
device, profile, scope and `--env` setting: complete runs first (newest first),
partial runs after them. Each section names its device, versions, flags
and command, and the JSON file with every raw figure. Times are medians over
repetitions of a jitted, warmed-up, synchronised forward plus backward pass
(min and max in the detail tables); every (workload, framework) ran in its own
fresh process.
"""


def _ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms >= 0.01 else f"{seconds * 1e6:.2g} µs"


def _num(x: Optional[float], fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _describe(config: Optional[dict]) -> str:
    if not config or "cell" not in config:
        return ""
    text = f"{CELL_LABEL[config['cell']]} I={config['input_size']} H={config['hidden_size']} B={config['batch']} T={config['time']}"
    return text + (f" ×{config['members']}" if config.get("members", 1) > 1 else "")


def summary_table(summary: list) -> str:
    rows = []
    for s in summary:
        rows.append(
            [
                s["workload"],
                _describe(s.get("config")),
                _ms(s.get("rnn_jax_default_s")),
                f"{_ms(s.get('rnn_jax_best_s'))} ({s.get('rnn_jax_best_variant', '–')})",
                f"{_ms(s.get('best_peer_s'))} ({s.get('best_peer', '–')})",
                _num(s.get("ratio_default_to_best_peer")),
                _num(s.get("ratio_best_to_best_peer")),
                _ms(s.get("floor_s")),
            ]
        )
    header = ["workload", "model", "rnn_jax default", "rnn_jax best variant", "best peer", "default / best peer", "best / best peer", "floor"]
    return _table(header, rows)


def detail_table(records: list, workload: str) -> str:
    rows = []
    for r in records:
        if r["workload"] != workload:
            continue
        if r.get("status") != "ok":
            rows.append([r["framework"], r.get("variant", "–"), r.get("status"), (r.get("message") or "")[:90]] + [""] * 7)
            continue
        rows.append(
            [
                r["framework"],
                r["variant"],
                _ms(r["median_s"]),
                f"{_ms(r['min_s'])} – {_ms(r['max_s'])}",
                r["repeats"],
                _ms(r.get("first_call_s")),
                _num(r.get("minflt_per_call"), "{:.0f}"),
                _num(r.get("x_floor"), "{:.1f}"),
                _num(r.get("loss"), "{:.6g}"),
                _num(r.get("loss_rel_diff"), "{:.1e}"),
                "",
            ]
        )
    header = ["framework", "variant", "median", "min – max", "n", "first call", "page faults / call", "× floor", "loss", "Δloss (rel.)", ""]
    return _table(header[:-1], [row[:-1] for row in rows])


def memory_table(records: list) -> str:
    rows = []
    for r in sorted((r for r in records if r["workload"] == "MEM"), key=lambda r: ((r.get("config") or {}).get("time", 0), r["framework"])):
        if r.get("status") != "ok":
            rows.append([(r.get("config") or {}).get("time", "–"), r["framework"], r.get("variant"), r.get("status"), (r.get("message") or "")[:80], "", "", ""])
            continue
        rows.append(
            [
                r["config"]["time"],
                r["framework"],
                r["variant"],
                _num(r.get("peak_delta_mb"), "{:.0f}"),
                _num(r.get("peak_rss_mb"), "{:.0f}"),
                _num(r.get("xla_temp_mb"), "{:.0f}"),
                _ms(r.get("median_s")),
                _num(r.get("loss_rel_diff"), "{:.1e}"),
            ]
        )
    header = ["T", "framework", "variant", "peak RSS added (MiB)", "peak RSS (MiB)", "XLA temp buffers (MiB)", "median time", "Δloss (rel.)"]
    return _table(header, rows)


def compile_table(records: list) -> str:
    rows = []
    for r in records:
        if r["workload"] != "COMPILE":
            continue
        if r.get("status") != "ok":
            rows.append([r["framework"], r.get("variant"), r.get("status"), (r.get("message") or "")[:80], "", ""])
            continue
        rows.append(
            [r["framework"], r["variant"], _ms(r.get("lower_s")), _ms(r.get("compile_s")), _ms(r.get("first_call_s")), _ms(r.get("median_s"))]
        )
    return _table(["framework", "variant", "trace + lower", "XLA compile", "first call (total)", "later calls (median)"], rows)


def linear_table(records: list) -> str:
    lin = [r for r in records if r["workload"] == "LIN" and r.get("status") == "ok"]
    keys = sorted({(r["config"]["width"], r["config"]["time"]) for r in lin})
    methods = [m for m in ("scan", "associative_scan", "rnn_jax.unroll", "rnn_jax.linear_recurrence")
               if any(r["config"]["method"] == m for r in lin)]
    rows = []
    for width, time in keys:
        cell = {}
        for r in lin:
            c = r["config"]
            if (c["width"], c["time"]) == (width, time):
                cell[(c["method"], c["pass"])] = r
        row = [width, f"{time:,}"]
        for m in methods:
            for p in ("forward", "forward+backward"):
                row.append(_ms(cell[(m, p)]["median_s"]) if (m, p) in cell else "–")
        seq, par = cell.get(("scan", "forward+backward")), cell.get(("associative_scan", "forward+backward"))
        row.append(_num(seq["median_s"] / par["median_s"]) if seq and par else "–")
        errs = [r["rel_err_h"] for r in cell.values() if r.get("rel_err_h") is not None]
        row.append(_num(max(errs), "{:.1e}") if errs else "–")
        autos = {r["config"].get("auto_method") for r in cell.values() if r["config"].get("auto_method")}
        row.append(", ".join(sorted(autos)) or "–")
        rows.append(row)
    header = ["width", "T"] + [f"{m} {'fwd' if p == 'forward' else 'fwd+bwd'}" for m in methods for p in ("forward", "forward+backward")]
    header += ["parallel speed-up (fwd+bwd)", "max rel. diff of h", "linear_recurrence's auto choice"]
    return _table(header, rows)


def checks_text(checks: list) -> str:
    if not checks:
        return "No loss checks ran."
    failed = [c for c in checks if not c["ok"]]
    worst = max(checks, key=lambda c: c["rel_diff"])
    text = f"{len(checks) - len(failed)} of {len(checks)} checks passed (largest relative difference {worst['rel_diff']:.1e}: {worst['workload']}, {worst['what']})."
    if failed:
        text += "\n\nFailed:\n\n" + "\n".join(f"- {c['workload']}: {c['what']}: {c['rel_diff']:.2e} > {c['tolerance']:.0e}" for c in failed)
    return text


def section(result: dict) -> str:
    """The markdown section of one run (also what the command line prints)."""
    meta, records = result["meta"], result["records"]
    title = f"## {meta['device_label']} — {meta['profile']} profile"
    if meta.get("scope", "all") != "all":
        title += f" — {meta['scope']}"
    if meta.get("env"):
        title += " — " + " ".join(f"{k}={v}" for k, v in sorted(meta["env"].items()))
    parts = [f"{title} — {meta['date']}"]
    if meta.get("note"):
        parts.append(f"**{meta['note']}**")
    load = meta.get("load_average_start"), meta.get("load_average_end")
    cpus = meta.get("cpu_count")
    if load[0] and cpus and max(load[0][0], (load[1] or [0])[0]) > 0.5 * cpus:
        parts.append(
            f"⚠ The machine was loaded by other processes (load average {load[0][0]} at the start, "
            f"{(load[1] or ['?'])[0]} at the end, {cpus} CPUs): absolute times and small differences are noise."
        )
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    flags = ", ".join(f"`{k}={v}`" for k, v in meta["flags"].items()) or "none"
    rate = meta.get("matmul_flops_per_s")
    parts.append(
        "\n".join(
            [
                f"- command: `{meta['command']}`",
                f"- device: {meta['device']}; host: {meta.get('cpu_model') or '?'}, {cpus} CPUs; Python {meta.get('python', '?')}",
                f"- versions: {versions}",
                f"- flags and environment: {flags}",
                f"- matrix-product rate: {rate / 1e9:.1f} GFLOP/s (f32, {meta.get('matmul_size')}², median)" if rate else "- matrix-product rate: not measured",
                f"- repetitions: up to {meta['repeats']} per measurement, at most {meta['max_time_s']} s each"
                + (f", in {meta['rounds']} rounds (every framework once per round, in turn; the rounds' calls pooled)"
                   if meta.get("rounds", 1) > 1 else "")
                + f"; JSON: `{meta['json']}`",
            ]
        )
    )
    if result.get("summary"):
        parts.append(
            "### rnn_jax against the best peer\n\nTime of one forward + backward pass (W5: one training step of all "
            "members). Ratio < 1: rnn_jax is faster. Floor: the matrix FLOPs at the matrix-product rate.\n\n"
            + summary_table(result["summary"])
        )
    for workload in ("W1", "W2", "W3", "W4", "W5"):
        if any(r["workload"] == workload for r in records):
            cfg = next((r.get("config") for r in records if r["workload"] == workload and r.get("config")), None)
            parts.append(f"### {workload}: {_describe(cfg)}\n\n" + detail_table(records, workload))
    if any(r["workload"] == "MEM" for r in records):
        parts.append(
            "### Memory: W3's gradient at long T\n\nPeak RSS added: the process's peak resident memory during two "
            "calls above its resident memory before them (after compilation). XLA temp buffers: XLA's own count of the "
            "compiled program's scratch memory.\n\n" + memory_table(records)
        )
    if any(r["workload"] == "COMPILE" for r in records):
        parts.append("### Compile time: the first call of W3's gradient in a fresh process\n\n" + compile_table(records))
    if any(r["workload"] == "LIN" for r in records):
        parts.append(
            "### Linear recurrences h_t = a·h_{t-1} + x_t: sequential `lax.scan` against `lax.associative_scan`\n\n"
            + linear_table(records)
        )
    parts.append("### Checks\n\n" + checks_text(result.get("checks", [])))
    return "\n\n".join(parts) + "\n"


def section_key(meta: dict) -> str:
    """Device, profile, scope (which workloads/frameworks) and ``--env`` names: runs that differ in any get their own section."""
    key = f"{meta['backend']}-{meta.get('device_kind') or 'device'}-{meta['profile']}"
    if meta.get("scope", "all") != "all":
        key += "-" + meta["scope"]
    if meta.get("env"):
        key += "-env-" + "-".join(f"{k}={v}" for k, v in sorted(meta["env"].items()))
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", key)


def update_results_md(path: str, result: dict) -> None:
    """Put this run's section into ``path``: replace the one with the same key, else insert it first."""
    key = section_key(result["meta"])
    begin, end = f"<!-- benchmarks:begin {key} -->", f"<!-- benchmarks:end {key} -->"
    block = f"{begin}\n{section(result)}{end}\n"
    text = open(path).read() if os.path.exists(path) else INTRO
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    first = text.find("<!-- benchmarks:begin ")
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    elif first < 0 or result["meta"].get("scope", "all") != "all":
        text = text.rstrip("\n") + "\n\n" + block  # partial runs go after the complete ones
    else:
        text = text[:first] + block + "\n" + text[first:]
    with open(path, "w") as f:
        f.write(text)
