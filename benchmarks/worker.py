"""One measurement group, run in its own process: ``python -m benchmarks.worker SPEC.json OUT.json``.

A group is one (workload, framework) -- for ``MEM`` and ``COMPILE`` one
(workload, framework, variant), so that every peak-memory and first-call figure
comes from a fresh process. Only the framework under test is imported (PyTorch
groups do not import JAX), so frameworks do not share thread pools.

The spec (JSON): ``kind`` (``seq``, ``seeds``, ``mem``, ``compile``, ``lin``, ``mm``),
``workload``, ``framework``, ``variants`` (None: all; ``sweep`` false: the first), ``profile`` (``full`` or
``quick``), ``time`` (T override), ``repeats``, ``max_time_s``. The output (JSON):
``{"records": [...], "env": {...}}``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback

from benchmarks import timing, workloads
from benchmarks.bench import NotApplicable

MODULES = {
    "rnn_jax": "benchmarks.fw_rnn_jax",
    "jax": "benchmarks.fw_jax",
    "flax": "benchmarks.fw_flax",
    "equinox": "benchmarks.fw_equinox",
    "torch": "benchmarks.fw_torch",
}
SEEDS_VARIANTS = {"rnn_jax": ["vmap", "loop", "vmap-autodiff", "loop-autodiff"], "torch": ["loop"]}


def jax_environment() -> dict:
    import jax

    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": str(device),
        "device_kind": getattr(device, "device_kind", None),
        "device_count": jax.device_count(),
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
    }


def torch_environment() -> dict:
    import torch

    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}


def _base(spec: dict, cfg, variant: str) -> dict:
    rec = {"workload": spec["workload"], "framework": spec["framework"], "variant": variant, "status": "ok"}
    if cfg is not None:
        rec["config"] = cfg.as_dict()
        rec["flops"] = workloads.matrix_flops(cfg)
    return rec


def _guarded(rec: dict, fn) -> dict:
    """Run ``fn(rec)``; a NotApplicable or any error becomes the record's status."""
    try:
        fn(rec)
    except NotApplicable as e:
        rec.update(status="n/a", message=str(e))
    except Exception as e:  # noqa: BLE001 -- one failing measurement must not lose the others
        rec.update(status="error", message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=8))
    return rec


def _timed(bench, spec: dict) -> dict:
    out = {}
    result = timing.measure(
        bench.step,
        bench.sync,
        repeats=spec["repeats"],
        max_time_s=spec.get("max_time_s"),
        on_first=lambda first: out.update(loss=bench.loss_of(first)),
    )
    out.update(result)
    return out


def run_seq(spec: dict) -> list:
    cfg = workloads.config(spec["workload"], spec["profile"], spec.get("time"))
    module = importlib.import_module(MODULES[spec["framework"]])
    w, d = workloads.weights(cfg), workloads.data(cfg)
    records = []
    variants = spec.get("variants") or module.variants(cfg)
    if not spec.get("sweep", True):
        variants = variants[:1]  # each module lists its default (or most common) variant first
    for variant in variants:
        def go(rec, variant=variant):
            bench = module.build(cfg, w, d, variant)
            rec["info"] = bench.info
            rec.update(_timed(bench, spec))
        records.append(_guarded(_base(spec, cfg, variant), go))
    return records


def run_seeds(spec: dict) -> list:
    cfg = workloads.config("W5", spec["profile"])
    framework = spec["framework"]
    if framework not in SEEDS_VARIANTS:
        return [dict(_base(spec, cfg, "-"), status="n/a", message="W5 is measured for rnn_jax (vmap, loop) and torch (loop)")]
    module = importlib.import_module(MODULES[framework])
    ws, ds = workloads.member_weights(cfg), workloads.member_data(cfg)
    records = []
    for variant in spec.get("variants") or SEEDS_VARIANTS[framework]:
        def go(rec, variant=variant):
            bench = module.build_seeds(cfg, ws, ds, variant)
            rec["info"] = bench.info
            rec.update(_timed(bench, spec))
        records.append(_guarded(_base(spec, cfg, variant), go))
    return records


def _memory_analysis(compiled) -> dict:
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 -- not every backend has one
        return {}
    if ma is None:
        return {}
    fields = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "generated_code_size_in_bytes")
    return {f"xla_{f.replace('_size_in_bytes', '')}_mb": getattr(ma, f) / 2**20 for f in fields if hasattr(ma, f)}


def run_mem(spec: dict) -> list:
    """Peak resident memory of W3's gradient at a long T, one variant per fresh process."""
    cfg = workloads.config("MEM", spec["profile"], spec["time"])
    module = importlib.import_module(MODULES[spec["framework"]])
    (variant,) = spec["variants"]

    def go(rec):
        bench = module.build(cfg, workloads.weights(cfg), workloads.data(cfg), variant)
        rec["info"] = bench.info
        run = bench.step
        if bench.lower is not None:
            t0 = time.perf_counter()
            compiled = bench.lower().compile()
            rec["compile_s"] = time.perf_counter() - t0
            rec.update(_memory_analysis(compiled))
            run = lambda: compiled(*bench.args)
        rec.update(timing.measure_peak_memory(run, bench.sync, calls=2, on_first=lambda out: rec.update(loss=bench.loss_of(out))))
        rec.update(timing.measure(run, bench.sync, repeats=min(spec["repeats"], 5), warmup=1, max_time_s=spec.get("max_time_s")))

    return [_guarded(_base(spec, cfg, variant), go)]


def run_compile(spec: dict) -> list:
    """The first call of W3's gradient in this fresh process: trace + lower, compile, first run."""
    cfg = workloads.config("COMPILE", spec["profile"])
    module = importlib.import_module(MODULES[spec["framework"]])
    (variant,) = spec["variants"]

    def go(rec):
        bench = module.build(cfg, workloads.weights(cfg), workloads.data(cfg), variant)
        rec["info"] = bench.info
        if bench.lower is None:  # eager: the first call is all there is
            rec.update(_timed(bench, dict(spec, repeats=min(spec["repeats"], 5))))
            return
        t0 = time.perf_counter()
        lowered = bench.lower()
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        out = compiled(*bench.args)
        bench.sync(out)
        t3 = time.perf_counter()
        rec.update(lower_s=t1 - t0, compile_s=t2 - t1, first_execute_s=t3 - t2, first_call_s=t3 - t0, loss=bench.loss_of(out))
        steady = timing.measure(lambda: compiled(*bench.args), bench.sync, repeats=min(spec["repeats"], 5), warmup=1)
        rec.update({k: v for k, v in steady.items() if k != "first_call_s"})

    return [_guarded(_base(spec, cfg, variant), go)]


def run_lin(spec: dict) -> list:
    from benchmarks import linear

    profile = spec["profile"]
    frameworks = spec.get("frameworks") or ("jax", "rnn_jax")
    measure = lambda step, sync: timing.measure(step, sync, repeats=spec["repeats"], max_time_s=spec.get("max_time_s"))
    times = [spec["time"]] if spec.get("time") else workloads.LIN_TIMES[profile]
    return linear.run(times, workloads.LIN_WIDTHS[profile], measure, frameworks)


def run_mm(spec: dict) -> list:
    """The device's f32 matrix-product rate: an N x N by N x N product, 2 N^3 FLOPs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    n = workloads.MATMUL_SIZE[spec["profile"]]
    if spec["profile"] == "full" and jax.default_backend() != "cpu":
        n = 8192
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    b = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    fn = jax.jit(jnp.matmul)
    rec = {"workload": "MM", "framework": "jax", "variant": f"{n}x{n} f32", "status": "ok", "config": {"n": n}, "flops": 2.0 * n**3}
    rec.update(timing.measure(lambda: fn(a, b), jax.block_until_ready, repeats=spec["repeats"], max_time_s=spec.get("max_time_s")))
    rec["flops_per_s"] = rec["flops"] / rec["median_s"]
    rec["best_flops_per_s"] = rec["flops"] / rec["min_s"]
    return [rec]


RUNNERS = {"seq": run_seq, "seeds": run_seeds, "mem": run_mem, "compile": run_compile, "lin": run_lin, "mm": run_mm}


def run_group(spec: dict) -> dict:
    """Run one group in this process; never raises (errors become records)."""
    started = time.time()
    env = {"load_average_start": timing.load_average()}
    try:
        if spec["framework"] == "torch":
            env.update(torch_environment())
        else:
            env.update(jax_environment())
        records = RUNNERS[spec["kind"]](spec)
    except Exception as e:  # noqa: BLE001
        records = [
            {
                "workload": spec["workload"],
                "framework": spec["framework"],
                "variant": ",".join(spec.get("variants") or []) or "-",
                "status": "error",
                "message": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(limit=8),
            }
        ]
    env["load_average_end"] = timing.load_average()
    env["wall_s"] = time.time() - started
    return {"records": records, "env": env}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m benchmarks.worker SPEC.json OUT.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    result = run_group(spec)
    with open(argv[1], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
