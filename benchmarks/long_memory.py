"""W3's gradient at long T: peak memory and time of three ways to run it.

``python -m benchmarks.long_memory [--times 1000,4000,100000] [--json PATH]``
(a quick look: ``--times 50,200``).

Modes, all on the W3 model (LSTM, 128 inputs, 256 units, batch 64, a 256 -> 128
readout at every step, loss = mean over batch and time of the sum of squared
outputs, float32, the weights of :func:`benchmarks.workloads.weights`):

* ``plain``   W3 as the benchmarks run it (:mod:`benchmarks.fw_rnn_jax`): ``unroll``,
  the readout of the ``(T, B, H)`` outputs, the mean; every step's residuals are stored;
* ``remat``   the same with ``unroll(..., remat=True)``: every step's carry is stored;
* ``chunked`` :func:`rnn_jax.long.model_loss_every`: the loss accumulated inside a
  two-level scan, only the carries at chunk boundaries stored (``chunk = round(sqrt(T))``
  unless ``--chunk``).

``plain`` and ``remat`` store something per step (about 1 MiB and 0.4 MiB at these
sizes), so they run only up to ``--max-stored-time`` (default 4,000); ``chunked`` runs
at every T. Each (T, mode) runs in its own fresh subprocess, because the peak resident
memory of a process (``ru_maxrss``) never goes down. In it: the inputs, N(0, 1) float32
drawn with ``jax.random`` in blocks of time steps (so drawing them takes no more memory
than they occupy: 3.3 GB at T = 100,000), time-major ``(T, B, I)`` with
``time_major=True`` for every mode so that no mode copies them; then
``jit(value_and_grad(loss))`` compiled ahead of time, and one call of it timed.
``chunked`` also takes one SGD step (``--lr``, default W3's 0.01) and evaluates the loss
again on the same batch, to show that it trains.

Reported: ``peak RSS``: ``ru_maxrss`` at the end of the subprocess (its whole life:
inputs, compilation, the call); ``RSS before``: resident memory just before the call
(interpreter, JAX, inputs, compiled program); ``XLA temp``: XLA's count of the program's
scratch buffers; the call's wall time and per step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

MODES = ("plain", "remat", "chunked")
RESULT_PREFIX = "RESULT "


# ---------------------------------------------------------------- one (T, mode), in a subprocess


def _inputs(time_steps: int, batch: int, features: int, seed: int = 1):
    """N(0, 1) float32 ``(T, B, I)``, drawn block by block into the one output buffer."""
    import jax
    import jax.numpy as jnp

    block = math.gcd(time_steps, 1000)
    key = jax.random.key(seed)

    @jax.jit
    def draw():
        blocks = jax.lax.map(lambda i: jax.random.normal(jax.random.fold_in(key, i), (block, batch, features), jnp.float32),
                             jnp.arange(time_steps // block))
        return blocks.reshape(time_steps, batch, features)

    return jax.block_until_ready(draw())


def _loss_fn(mode: str, cfg, cell, chunk):
    from benchmarks import fw_rnn_jax
    from rnn_jax import long

    if mode == "chunked":
        return lambda params, xs: long.model_loss_every(cell, params, xs, time_major=True, chunk=chunk)
    kwargs = {"time_major": True, "remat": mode == "remat"}
    return fw_rnn_jax._loss_fn(cfg, cell, kwargs)


def run_one(time_steps: int, mode: str, chunk, lr: float) -> dict:
    """Measure one (T, mode) in this process."""
    import jax
    import numpy as np

    from benchmarks import fw_rnn_jax, timing, workloads
    from rnn_jax import long

    cfg = workloads.config("W3", "full", time_steps)
    cell = fw_rnn_jax._cell(cfg)
    params = fw_rnn_jax._params(cfg, cell, workloads.weights(cfg))
    if mode == "chunked" and chunk is None:
        chunk = long.default_chunk(time_steps)
    rec = {"time": time_steps, "mode": mode, "chunk": chunk if mode == "chunked" else None, "config": cfg.as_dict()}

    t0 = time.perf_counter()
    xs = _inputs(time_steps, cfg.batch, cfg.input_size)
    rec["inputs_s"] = time.perf_counter() - t0
    rec["inputs_mb"] = xs.nbytes / 2**20

    loss_fn = _loss_fn(mode, cfg, cell, chunk)
    t0 = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss_fn)).lower(params, xs).compile()
    rec["compile_s"] = time.perf_counter() - t0
    analysis = compiled.memory_analysis()
    if analysis is not None:
        rec["xla_temp_mb"] = analysis.temp_size_in_bytes / 2**20

    rec["rss_before_mb"] = timing.rss_bytes() / 2**20
    t0 = time.perf_counter()
    loss, grads = jax.block_until_ready(compiled(params, xs))
    rec["grad_s"] = time.perf_counter() - t0
    rec["ms_per_step"] = 1e3 * rec["grad_s"] / time_steps
    rec["loss"] = float(loss)
    rec["grad_norm"] = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in jax.tree_util.tree_leaves(grads)))

    if mode == "chunked":  # one SGD step, then the loss again on the same batch
        new_params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        del grads
        t0 = time.perf_counter()
        rec["loss_after_sgd"] = float(jax.jit(loss_fn)(new_params, xs))
        rec["forward_s"] = time.perf_counter() - t0  # compilation included
        rec["lr"] = lr
    rec["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    return rec


# ---------------------------------------------------------------- the driver


def _child(time_steps: int, mode: str, chunk, lr: float, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.long_memory", "--child", "--times", str(time_steps), "--modes", mode, "--lr", repr(lr)]
    if chunk is not None:
        cmd += ["--chunk", str(chunk)]
    base = {"time": time_steps, "mode": mode}
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(base, status="timeout", message=f"no result after {timeout:.0f} s")
    wall = time.perf_counter() - started
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return dict(json.loads(line[len(RESULT_PREFIX):]), status="ok", process_s=wall)
    return dict(base, status="failed", message=f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(records: list) -> str:
    plain_loss = {r["time"]: r["loss"] for r in records if r.get("mode") == "plain" and r.get("status") == "ok"}
    lines = [
        "| T | mode | chunk | peak RSS (MiB) | RSS before (MiB) | XLA temp (MiB) | compile | gradient | per step | loss | Δloss vs plain (rel.) | loss after 1 SGD step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.get("status") != "ok":
            lines.append(f"| {r['time']} | {r['mode']} | {r.get('status')}: {r.get('message', '')[:200]} |" + " |" * 9)
            continue
        ref = plain_loss.get(r["time"])
        delta = None if ref is None or r["mode"] == "plain" else abs(r["loss"] - ref) / abs(ref)
        lines.append(
            f"| {r['time']} | {r['mode']} | {_fmt(r['chunk'], 'd')} | {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} | "
            f"{_fmt(r.get('xla_temp_mb'), '.0f')} | {r['compile_s']:.1f} s | {r['grad_s']:.1f} s | {r['ms_per_step']:.2f} ms | "
            f"{r['loss']:.6f} | {_fmt(delta, '.1e')} | {_fmt(r.get('loss_after_sgd'), '.6f')} |"
        )
    return "\n".join(lines)


def _int_list(text: str) -> list:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--times", default="1000,4000,100000", help="comma-separated T (default 1000,4000,100000)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--max-stored-time", type=int, default=4000,
                        help="plain and remat (which store every step) run only up to this T (default 4000)")
    parser.add_argument("--chunk", type=int, default=None, help="chunked mode's chunk (default round(sqrt(T)))")
    parser.add_argument("--lr", type=float, default=0.01, help="the SGD step of the chunked mode (default 0.01, W3's)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per (T, mode) subprocess (default 3600)")
    parser.add_argument("--json", metavar="PATH", help="also write the records as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    times, modes = _int_list(args.times), [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            parser.error(f"unknown mode {m!r}; expected one of {', '.join(MODES)}")
    if args.child:
        (t,), (m,) = times, modes
        print(RESULT_PREFIX + json.dumps(run_one(t, m, args.chunk, args.lr)), flush=True)
        return 0

    records = []
    for t in times:
        for m in modes:
            if m != "chunked" and t > args.max_stored_time:
                continue
            rec = _child(t, m, args.chunk, args.lr, args.timeout)
            records.append(rec)
            print(f"T={t} {m}: " + (f"peak RSS {rec['peak_rss_mb']:.0f} MiB, gradient {rec['grad_s']:.1f} s" if rec["status"] == "ok"
                                     else f"{rec['status']} {rec.get('message', '')[:500]}"), file=sys.stderr, flush=True)
    print(table(records))
    if args.json:
        meta = {"argv": sys.argv, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "machine": platform.platform(),
                "cpus": os.cpu_count(), "load_average_end": list(os.getloadavg())}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
