"""The device check: ``python -m benchmarks --profile device`` (or ``python -m benchmarks.device``).

On whatever accelerator JAX sees, in at most 8 minutes end to end, with the harness's own pieces:

1. **W1–W4**, forward + backward (:mod:`benchmarks.worker` groups, the shared weights, losses
   checked equal): rnn_jax with this device's defaults and with each reverse pass × input
   projection; plain JAX; Flax; Equinox; for W3 also ``jax.experimental.rnn.lstm`` (cuDNN on
   NVIDIA GPUs) and its reference scan ``lstm_ref``;
2. **W5 engine**: the training engine (``rnn_jax.repro.train.train_chunk``, 64 vmapped members)
   against a Python loop of the same jitted single-member step, member-updates per second
   (:mod:`benchmarks.w5_engine`'s workers);
3. **LIN**: the sequential against the parallel linear recurrence, T = 1e3 … 1e6
   (:mod:`benchmarks.linear`);
4. **MEM**: W3's gradient at long T, plain / ``remat`` / chunked (:mod:`benchmarks.long_memory`),
   each in a fresh process, with the device's own peak memory;
5. **agreement**: the device's float32 gradients of W1–W4 (each reverse pass, JAX's default
   matmul precision and ``"highest"``) against float64 ones computed on the host CPU by the same
   code, with :func:`benchmarks.agreement.rel_norm_errors`; where the device has float64 (not
   TPUs), :func:`benchmarks.agreement.gradient_case` run on it (autodiff against the NumPy BPTT
   and central differences).

Each part runs in its own process (the parent never opens the accelerator: a TPU admits one
process at a time) under a time budget; a part checks the clock before each measurement, and
what no longer fits is recorded as ``skipped``, never dropped silently. The run writes its
section of ``benchmarks/RESULTS.md`` (key ``device-check-<backend>-<device kind>``) and
``benchmarks/results/<backend>-device.json``, prints the section, and exits 1 when a check
failed or a measurement raised. It refuses to start when JAX's default backend is the CPU unless
``--allow-cpu``; ``--smoke`` runs tiny sizes of every part (seconds on a CPU: what the tests
run; its JSON goes to the ignored ``<backend>-device-quick.json`` and RESULTS.md is left alone).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Optional

from benchmarks import SCHEMA_VERSION, analysis, report, timing, workloads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "benchmarks")
PARTS = ("seq", "w5", "lin", "mem", "agreement")
# the ``framework`` of the jax.experimental.rnn records (W3 only)
EXPERIMENTAL_RNN = "jax.experimental.rnn"
EXPERIMENTAL_RNN_VARIANTS = ("cudnn", "lstm_ref")
# Float32 gradients against the CPU's float64 ones, ‖g32 − g64‖₂ / ‖g64‖₂ per leaf: with
# "highest" matmul precision (float32 products throughout) a CPU measures ~2e-7 on W1–W4. JAX's
# default precision may use TF32 products on NVIDIA GPUs (a 10-bit mantissa) and bfloat16 passes
# on TPUs (an 8-bit one), whose errors on these workloads are not measured yet: that figure is
# reported, and fails only above a bound that a layout or sign error (order 1) would cross.
AGREEMENT_TOLERANCE = {"highest": 1e-5, "default": 0.1}
# Loss checks of the timed workloads against rnn_jax's default (analysis.loss_checks): the CPU
# harness's 1e-5; an accelerator's default precision (TF32, bfloat16 passes) moves losses by ~1e-3.
LOSS_RTOL = {"cpu": analysis.LOSS_RTOL, "accelerator": 1e-2}
RESULT_PREFIX = "RECORD "
# seconds kept at the end of the budget for the report; a part's process is killed this long
# after its deadline (it stops starting measurements at the deadline)
REPORT_S, GRACE_S = 5.0, 20.0


@dataclass(frozen=True)
class Profile:
    """What each part measures. ``budget_s``: the whole run; ``parts_s``: each part's share of
    it (a part stops starting measurements when its share is spent)."""

    name: str
    sizes: str  # workloads' sizes: "full" or "quick"
    workloads: tuple = ("W1", "W2", "W3", "W4")
    frameworks: tuple = ("rnn_jax", "jax", "flax", "equinox", EXPERIMENTAL_RNN)
    rnn_jax_variants: str = "passes"  # "passes": default + each reverse pass x projection; "default"
    peer_variants: str = "all"  # the peers' variants (plain JAX inside/hoisted, Flax's cells): "all" or "first"
    repeats: int = 20
    max_time_s: float = 1.5
    w5_lengths: tuple = (50, 200)
    w5_members: int = 64
    w5_repeats: int = 3
    lin_times: tuple = (1_000, 10_000, 100_000, 1_000_000)
    lin_widths: tuple = (1, 64)
    lin_unroll_up_to: int = 100_000  # rnn_jax.unroll of the identity cell, only up to this T
    # (T, mode) in order of interest: what the budget cuts is the end of this list
    mem_runs: tuple = ((1000, "plain"), (1000, "remat"), (1000, "chunked"), (100_000, "chunked"), (4000, "plain"),
                       (4000, "chunked"))
    agreement_workloads: tuple = ("W1", "W2", "W3", "W4")
    agreement_cells: tuple = ("elman tanh", "pascanu tanh", "lstm", "gru")  # float64 on the device
    budget_s: float = 460.0
    parts_s: tuple = (("seq", 150.0), ("w5", 55.0), ("lin", 95.0), ("mem", 95.0), ("agreement", 45.0))


PROFILES = {
    "device": Profile("device", "full"),
    # every part at tiny sizes: a test of the check, not a measurement
    "smoke": Profile(
        "smoke", "quick", workloads=("W1", "W3"), frameworks=("rnn_jax", "jax", EXPERIMENTAL_RNN), rnn_jax_variants="default",
        peer_variants="first", repeats=2, max_time_s=0.2, w5_lengths=(10,), w5_members=2, w5_repeats=1, lin_times=(64,),
        lin_widths=(1,), lin_unroll_up_to=64, mem_runs=((20, "chunked"),), agreement_workloads=("W1",),
        agreement_cells=("lstm",), budget_s=120.0,
        parts_s=(("seq", 40.0), ("w5", 20.0), ("lin", 15.0), ("mem", 25.0), ("agreement", 20.0)),
    ),
}


# ---------------------------------------------------------------- records


def _skipped(workload: str, framework: str, variant: str, why: str, **extra) -> dict:
    return dict({"workload": workload, "framework": framework, "variant": variant, "status": "skipped", "message": why}, **extra)


class Clock:
    """A part's deadline (``time.time()`` seconds): whether a measurement still fits."""

    def __init__(self, deadline: float):
        self.deadline = deadline

    def left(self) -> float:
        return self.deadline - time.time()

    def fits(self, estimate_s: float = 0.0) -> bool:
        return self.left() > estimate_s


# ---------------------------------------------------------------- jax.experimental.rnn (W3)


def build_experimental_lstm(cfg: workloads.SeqConfig, w: dict, d: dict, variant: str):
    """W3 with ``jax.experimental.rnn``: ``cudnn`` (``rnn.lstm``, cuDNN's kernel) or ``lstm_ref``
    (its scan in plain JAX), from the shared weights packed in cuDNN's layout: ``W_ih (4H, I)``,
    ``W_hh (4H, H)`` (gate order i, f, g, o, as PyTorch's and rnn_jax's), ``b_ih``, ``b_hh``; the
    folded bias goes to ``b_ih``, ``b_hh`` is zero. Raises NotApplicable where cuDNN is absent."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import rnn

    from benchmarks.bench import NotApplicable, jax_value_and_grad_bench

    if cfg.cell != "lstm" or cfg.loss != "sq_every":
        raise NotApplicable("jax.experimental.rnn has an LSTM only (W3)")
    if variant not in EXPERIMENTAL_RNN_VARIANTS:
        raise ValueError(f"unknown {EXPERIMENTAL_RNN} variant {variant!r}; expected one of {EXPERIMENTAL_RNN_VARIANTS}")
    i, h = cfg.input_size, cfg.hidden_size
    if variant == "cudnn" and (jax.default_backend() != "gpu"
                               or not hasattr(rnn.gpu_rnn, "compute_rnn_workspace_reserve_space_sizes")):
        raise NotApplicable(f"jax.experimental.rnn.lstm needs cuDNN (a CUDA GPU with jax's CUDA plugin); "
                            f"this backend is {jax.default_backend()}")
    packed = np.concatenate([w["w_ih"].T.ravel(), w["w_hh"].T.ravel(), w["b"], np.zeros(4 * h, np.float32)])
    expected = rnn.get_num_params_in_lstm(i, h, 1, False)
    if packed.size != expected:
        raise AssertionError(f"cuDNN LSTM weights: packed {packed.size} values, jax.experimental.rnn expects {expected}")
    params = {"lstm": jnp.asarray(packed), "w_out": jnp.asarray(w["w_out"]), "b_out": jnp.asarray(w["b_out"])}

    def outputs(weights, xs):
        batch, steps = xs.shape[0], xs.shape[1]
        zeros = jnp.zeros((1, batch, h), xs.dtype)
        lengths = jnp.full((batch,), steps, jnp.int32)
        if variant == "cudnn":
            return rnn.lstm(xs, zeros, zeros, weights, lengths, i, h, 1, 0.0, False)[0]
        w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, i, h, 1, False)
        return rnn.lstm_ref(xs, zeros, zeros, w_ih, w_hh, b_ih, b_hh, lengths, i, h, 1, 0.0, False)[0]

    def loss(p, xs):
        ys = outputs(p["lstm"], xs) @ p["w_out"] + p["b_out"]
        return jnp.mean(jnp.sum(ys * ys, axis=-1))

    return jax_value_and_grad_bench(loss, params, jnp.asarray(d["xs"]), info={"impl": variant})


# ---------------------------------------------------------------- the parts (each in a child process)


def part_probe(profile: Profile, clock: Clock, emit: Callable) -> None:
    """The device, versions, and the defaults rnn_jax resolves to on it."""
    import jax

    import rnn_jax
    from benchmarks.worker import jax_environment
    from rnn_jax.linear import PARALLEL_FROM_LENGTH, default_method

    env = jax_environment()
    device = jax.devices()[0]
    backend = env["backend"]
    defaults = {}
    for kind in ("elman", "pascanu", "lstm", "gru"):
        cell = rnn_jax.make(kind, 4)
        backward = rnn_jax.default_backward(cell, backend)
        defaults[kind] = {"backward": backward, "project_inputs": rnn_jax.default_project_inputs(cell, backend, backward)}
    threshold = PARALLEL_FROM_LENGTH.get(backend, PARALLEL_FROM_LENGTH["gpu"])
    stats = getattr(device, "memory_stats", lambda: None)() or {}
    emit({"kind": "env", **env, "platform": device.platform, "platform_version": getattr(device.client, "platform_version", None),
          "memory_limit_bytes": stats.get("bytes_limit"), "defaults": defaults, "parallel_from_length": threshold,
          "auto_method_at": {str(t): default_method(t, backend) for t in (64, 1000)}})


def part_seq(profile: Profile, clock: Clock, emit: Callable) -> None:
    """MM, then W1–W4 for every framework: :func:`benchmarks.worker.run_group` groups."""
    from benchmarks import fw_rnn_jax, worker

    base = {"profile": profile.sizes, "repeats": profile.repeats, "max_time_s": profile.max_time_s}
    if clock.fits():
        for rec in worker.run_group(dict(base, kind="mm", workload="MM", framework="jax"))["records"]:
            emit(rec)
    else:
        emit(_skipped("MM", "jax", "-", "time budget of the part spent"))
    estimate = 0.0
    for wl in profile.workloads:
        cfg = workloads.config(wl, profile.sizes)
        for fw in profile.frameworks:
            if fw == EXPERIMENTAL_RNN:
                if cfg.cell != "lstm":
                    continue
                variants = list(EXPERIMENTAL_RNN_VARIANTS)
            elif fw == "rnn_jax":
                variants = ["default"] if profile.rnn_jax_variants == "default" else [
                    v for v in fw_rnn_jax.variants(cfg) if v == "default" or v.endswith(",unroll=1")]
            else:
                module = importlib.import_module(worker.MODULES[fw])
                variants = module.variants(cfg)[:1 if profile.peer_variants == "first" else None]
            if not clock.fits(estimate * len(variants)):
                emit(_skipped(wl, fw, ",".join(variants), "time budget of the part spent", config=cfg.as_dict()))
                continue
            started = time.time()
            group = dict(base, kind="seq", workload=wl, framework=fw, variants=variants)
            if fw == EXPERIMENTAL_RNN:
                records = _experimental_rnn_group(group, cfg)
            else:
                records = worker.run_group(group)["records"]
            for rec in records:
                emit(rec)
            # the next group is guessed to take as long per variant as this one did
            estimate = (time.time() - started) / max(len(records), 1)


def _experimental_rnn_group(group: dict, cfg) -> list:
    from benchmarks import worker

    w, d = workloads.weights(cfg), workloads.data(cfg)
    records = []
    for variant in group["variants"]:
        def go(rec, variant=variant):
            bench = build_experimental_lstm(cfg, w, d, variant)
            rec["info"] = bench.info
            rec.update(worker._timed(bench, group))
        records.append(worker._guarded(worker._base(group, cfg, variant), go))
    return records


def part_w5(profile: Profile, clock: Clock, emit: Callable) -> None:
    """The training engine against a loop of its jitted step (:func:`benchmarks.w5_engine._jax_worker`)."""
    from benchmarks import w5_engine

    estimate = 0.0
    for length in profile.w5_lengths:
        for variant in ("engine", "loop"):
            config = {"length": length, "members": profile.w5_members, "hidden": w5_engine.HIDDEN, "batch": w5_engine.BATCH}
            if not clock.fits(estimate):
                emit(_skipped("W5-engine", "rnn_jax", variant, "time budget of the part spent", config=config))
                continue
            started = time.time()
            rec = {"workload": "W5-engine", "framework": "rnn_jax", "variant": variant, "status": "ok", "config": config}
            try:
                cpu, wall = w5_engine._jax_worker(variant, length, profile.w5_members, profile.w5_repeats)
                rec.update(cpu_ms=[1e3 * c for c in cpu], wall_ms=[1e3 * x for x in wall])
                rec["median_wall_ms"] = statistics.median(rec["wall_ms"])
                rec["member_updates_per_s"] = 1e3 / rec["median_wall_ms"]
            except Exception as e:  # noqa: BLE001 -- one failing measurement must not lose the others
                rec.update(status="error", message=f"{type(e).__name__}: {e}")
            emit(rec)
            estimate = time.time() - started


def part_lin(profile: Profile, clock: Clock, emit: Callable) -> None:
    """:func:`benchmarks.linear.run` per (T, width): the first call and one timed call at long T,
    the identity-cell unroll only up to ``lin_unroll_up_to``, and a method left out (recorded as
    skipped) once its time at the previous T, scaled by the ratio of the lengths, no longer fits:
    the sequential scans go first at long T, the parallel ones are still measured."""
    from benchmarks import linear

    spent: dict = {}  # (method, width) -> (T, seconds for its calls at T)
    for t in profile.lin_times:
        long_t = t >= 100_000
        measure = lambda step, sync, long_t=long_t: timing.measure(  # noqa: E731
            step, sync, repeats=1 if long_t else profile.repeats, warmup=1 if long_t else 2,
            max_time_s=profile.max_time_s, min_repeats=1 if long_t else 3)
        for width in profile.lin_widths:
            keep, budget = [], clock.left()
            for method in linear.METHODS:
                if method == "rnn_jax.unroll" and (width != 1 or t > profile.lin_unroll_up_to):
                    continue
                before = spent.get((method, width))
                guess = 0.0 if before is None else before[1] * t / before[0]
                if guess < budget:
                    keep.append(method)
                    budget -= guess
                else:
                    emit(_skipped("LIN", "rnn_jax" if method.startswith("rnn_jax.") else "jax", method,
                                  "time budget of the part spent", config={"time": t, "width": width, "method": method}))
            if not keep:
                continue
            with _linear_methods(linear, keep):
                try:
                    records = linear.run((t,), (width,), measure, ("jax", "rnn_jax"))
                except Exception as e:  # noqa: BLE001
                    records = [{"workload": "LIN", "framework": "jax", "variant": f"T={t} width={width}", "status": "error",
                                "message": f"{type(e).__name__}: {e}", "config": {"time": t, "width": width}}]
            cost: dict = {}
            for rec in records:
                emit(rec)
                if rec.get("status") == "ok":  # both passes of a method: its first calls and timed calls
                    method = rec["config"]["method"]
                    cost[method] = cost.get(method, 0.0) + rec["first_call_s"] + sum(rec["times_s"])
            spent.update({(method, width): (t, seconds) for method, seconds in cost.items()})


@contextlib.contextmanager
def _linear_methods(linear, keep):
    """``benchmarks.linear.METHODS`` limited to ``keep`` for the duration (this process only)."""
    saved = linear.METHODS
    linear.METHODS = {k: v for k, v in saved.items() if k in keep}
    try:
        yield
    finally:
        linear.METHODS = saved


def part_mem_one(time_steps: int, mode: str, profile: Profile) -> dict:
    """One (T, mode) of :func:`benchmarks.long_memory.run_one`, plus the device's peak memory."""
    import jax

    from benchmarks import long_memory

    rec = long_memory.run_one(time_steps, mode, None, 0.01)
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() or {}
    rec["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None
    rec["device_limit_mb"] = stats["bytes_limit"] / 2**20 if "bytes_limit" in stats else None
    return rec


def part_agreement(profile: Profile, clock: Clock, emit: Callable) -> None:
    """Float32 gradients on the device against float64 ones on the host CPU (same code)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import rnn_jax
    from benchmarks import agreement, fw_rnn_jax

    accelerator = jax.devices()[0]
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError as e:  # JAX_PLATFORMS without cpu
        cpu = None
        emit(_skipped("AGREE", "rnn_jax", "-", f"no CPU backend for the float64 reference: {e}"))
    for wl in profile.agreement_workloads if cpu is not None else ():
        cfg = workloads.config(wl, profile.sizes)
        cell = fw_rnn_jax._cell(cfg)
        w, d = workloads.weights(cfg), workloads.data(cfg)
        params = jax.device_put(fw_rnn_jax._params(cfg, cell, w), accelerator)
        args = jax.device_put(fw_rnn_jax._args(cfg, d), accelerator)
        reference = None
        for backward in ("hand", "autodiff"):
            if not clock.fits():
                emit(_skipped("AGREE", "rnn_jax", backward, "time budget of the part spent", config=cfg.as_dict()))
                continue
            rec = {"workload": "AGREE", "framework": "rnn_jax", "variant": backward, "status": "ok", "config": cfg.as_dict(),
                   "is_default_here": rnn_jax.default_backward(cell, jax.default_backend()) == backward,
                   "reference": "the host CPU, float64, autodiff"}
            try:
                if reference is None:  # the same loss in float64 on the host's CPU
                    with jax.enable_x64(True):
                        as64 = lambda a: (np.asarray(a, np.float64) if np.issubdtype(np.asarray(a).dtype, np.floating)  # noqa: E731
                                          else np.asarray(a))
                        p64 = jax.device_put(jax.tree_util.tree_map(as64, jax.device_get(params)), cpu)
                        a64 = jax.device_put(tuple(as64(a) for a in jax.device_get(args)), cpu)
                        loss64 = fw_rnn_jax._loss_fn(cfg, cell, {"backward": "autodiff"})
                        reference = jax.device_get(jax.jit(jax.value_and_grad(loss64))(p64, *a64))
                value64, grads64 = reference
                loss = fw_rnn_jax._loss_fn(cfg, cell, {"backward": backward})
                for precision in ("default", "highest"):
                    context = jax.default_matmul_precision(precision) if precision == "highest" else contextlib.nullcontext()
                    with context:
                        value, grads = jax.device_get(jax.jit(jax.value_and_grad(loss))(params, *args))
                    rec[f"{precision}_loss_rel"] = float(abs(value - value64) / max(abs(value64), 1e-30))
                    rec[f"{precision}_grad_rel"] = agreement.largest(agreement.rel_norm_errors(grads64, grads))
                    rec[f"{precision}_ok"] = bool(np.isfinite(rec[f"{precision}_grad_rel"])
                                                  and rec[f"{precision}_grad_rel"] <= AGREEMENT_TOLERANCE[precision])
            except Exception as e:  # noqa: BLE001
                rec.update(status="error", message=f"{type(e).__name__}: {e}")
            emit(rec)
    if accelerator.platform == "tpu":
        emit(_skipped("AGREE64", "rnn_jax", "-", "float64 on the device: TPUs have none"))
        return
    quick = agreement.PROFILES["quick"]
    with jax.enable_x64(True), jax.numpy_dtype_promotion("strict"):
        for k, name in enumerate(profile.agreement_cells):
            if not clock.fits():
                emit(_skipped("AGREE64", "rnn_jax", name, "time budget of the part spent"))
                continue
            rec = {"workload": "AGREE64", "framework": "rnn_jax", "variant": name, "status": "ok"}
            try:
                rec.update(agreement.gradient_case(name, 0, quick, (agreement.COMBOS[k % len(agreement.COMBOS)],)))
                rec["ok"] = bool(agreement._ok(rec["autodiff_vs_bptt"], agreement.TOLERANCES["autodiff_vs_bptt"])
                                 and agreement._ok(rec["autodiff_vs_fd"], agreement.TOLERANCES["autodiff_vs_fd"]))
            except Exception as e:  # noqa: BLE001
                rec.update(status="error", message=f"{type(e).__name__}: {e}")
            emit(rec)


PART_RUNNERS = {"probe": part_probe, "seq": part_seq, "w5": part_w5, "lin": part_lin, "agreement": part_agreement}


# ---------------------------------------------------------------- running the parts


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@contextlib.contextmanager
def _shared_compilation_cache():
    """JAX's persistent compilation cache in a temporary folder for the parts' processes (a
    program compiled by one part, e.g. a W1–W4 gradient, is not compiled again by another),
    unless the user set one; removed at the end."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="rnn_jax_device_cache_") as folder:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
        try:
            yield
        finally:
            del os.environ["JAX_COMPILATION_CACHE_DIR"]


def _run_child(args: list, timeout: float) -> tuple:
    """``python -m benchmarks.device --child ...``: its records (one ``RECORD`` line each, kept
    even when it is killed) and a failure message or None."""
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.device", "--child", *args], cwd=ROOT, env=_child_env(),
                                stdout=out, stderr=err, text=True)
        try:
            proc.wait(timeout=max(timeout, 1.0))
            failure = None if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            failure = f"killed after {timeout:.0f} s"
        out.seek(0)
        err.seek(0)
        records = [json.loads(line[len(RESULT_PREFIX):]) for line in out if line.startswith(RESULT_PREFIX)]
        if failure:
            failure += ": " + err.read()[-2000:]
    return records, failure


def run_part(part: str, profile: Profile, deadline: float, hard_timeout: float, in_process: bool) -> tuple:
    """Records of one part; ``(records, failure)``."""
    if in_process:
        records = []
        PART_RUNNERS[part](profile, Clock(deadline), records.append)
        return records, None
    return _run_child(["--part", part, "--profile", profile.name, "--deadline", repr(deadline)], hard_timeout)


def run_mem(profile: Profile, deadline: float, hard_deadline: float, in_process: bool) -> list:
    """Each (T, mode) of the memory part in its own process (peak memory never goes down);
    not started once the part's deadline has passed or the last one's time no longer fits."""
    records, last = [], 0.0
    for t, mode in profile.mem_runs:
        if time.time() + last > deadline:
            records.append(_skipped("MEM-long", "rnn_jax", mode, "time budget of the part spent", time=t, mode=mode))
            continue
        started = time.time()
        if in_process:
            try:
                rec = dict(part_mem_one(t, mode, profile), status="ok")
            except Exception as e:  # noqa: BLE001
                rec = {"time": t, "mode": mode, "status": "error", "message": f"{type(e).__name__}: {e}"}
        else:
            found, failure = _run_child(["--mem", str(t), mode, "--profile", profile.name], hard_deadline - time.time())
            rec = dict(found[0], status="ok") if found else {"time": t, "mode": mode, "status": "error", "message": failure}
        rec.update(workload="MEM-long", framework="rnn_jax", variant=mode)
        records.append(rec)
        last = time.time() - started
    return records


def run_parts(planned: list, profile: Profile, budgets: dict, scale: float, base: float, hard_end: float,
              in_process: bool, say: Callable) -> tuple:
    """Every planned part in turn, each until its cumulative deadline; ``(records, parts' meta)``.
    The parts' processes share a compilation cache (:func:`_shared_compilation_cache`)."""
    records, parts_meta, cumulative = [], {}, 0.0
    with contextlib.nullcontext() if in_process else _shared_compilation_cache():
        for part in planned:
            part_start = time.time()
            cumulative += scale * budgets[part]
            deadline = min(base + cumulative, hard_end - REPORT_S)
            hard_timeout = max(1.0, min(deadline + GRACE_S, hard_end - REPORT_S) - part_start)
            say(f"{part}: up to {deadline - part_start:.0f} s")
            if part == "mem":
                found, failure = run_mem(profile, deadline, part_start + hard_timeout, in_process), None
            else:
                found, failure = run_part(part, profile, deadline, hard_timeout, in_process)
            records += found
            parts_meta[part] = {"wall_s": time.time() - part_start, "records": len(found), "failure": failure}
            say(f"{part}: {len(found)} record(s) in {time.time() - part_start:.0f} s" + (f"; {failure[:300]}" if failure else ""))
            if failure:
                records.append({"workload": part.upper(), "framework": "-", "variant": "-", "status": "error",
                                "message": f"part {part}: {failure}"})
    return records, parts_meta


# ---------------------------------------------------------------- report


def _fmt(value, spec: str = ".3g", unit: str = "") -> str:
    return "–" if value is None else format(value, spec) + unit


def _default_rows(env: dict, records: list) -> list:
    """Per W1–W4: rnn_jax's default on this device against its fastest measured reverse pass
    and projection (what a measured table would set)."""
    rows = []
    for wl in ("W1", "W2", "W3", "W4"):
        ours = [r for r in records if r["workload"] == wl and r["framework"] == "rnn_jax" and r.get("status") == "ok"]
        if not ours:
            continue
        default = next((r for r in ours if r["variant"] == "default"), None)
        best = min(ours, key=lambda r: r["median_s"])
        info = (default or {}).get("info", {})
        best_info = best.get("info", {})
        rows.append([wl, f"{info.get('backward', '?')}, project_inputs={info.get('project_inputs', '?')}",
                     report._ms(default["median_s"]) if default else "–",
                     f"{best_info.get('backward', '?')}, project_inputs={best_info.get('project_inputs', '?')}",
                     report._ms(best["median_s"]), _fmt(default["median_s"] / best["median_s"], ".2f") if default else "–"])
    return rows


def _lin_crossover(records: list) -> str:
    """The smallest measured T at which the parallel scan's forward+backward beat the sequential one's, per width."""
    out = []
    lin = [r for r in records if r["workload"] == "LIN" and r.get("status") == "ok" and r["config"].get("pass") == "forward+backward"]
    for width in sorted({r["config"]["width"] for r in lin}):
        times = sorted({r["config"]["time"] for r in lin if r["config"]["width"] == width})
        faster = []
        for t in times:
            by = {r["config"]["method"]: r["median_s"] for r in lin if r["config"]["width"] == width and r["config"]["time"] == t}
            if "scan" in by and "associative_scan" in by and by["associative_scan"] < by["scan"]:
                faster.append(t)
        out.append(f"width {width}: parallel faster at T = {', '.join(f'{t:,}' for t in faster) or 'none measured'}")
    return "; ".join(out) or "not measured"


def section(result: dict) -> str:
    """The RESULTS.md section: the harness's tables (report.section) and the device check's own."""
    meta, records = result["meta"], result["records"]
    env = result.get("env", {})
    parts = [report.section(result).rstrip("\n").replace(f"— {meta['profile']} profile", "— device check", 1)]
    parts.append(
        f"Device check ({meta['profile']} profile): {meta['wall_s']:.0f} s end to end (budget {meta['budget_s']:.0f} s); "
        f"parts: " + ", ".join(f"{p} {s['wall_s']:.0f} s" + (f" ({s['failure'][:120]})" if s.get("failure") else "")
                              for p, s in meta["parts"].items()) + ". Loss checks at "
        f"{meta['loss_rtol']:g} relative (an accelerator's default matmul precision may use TF32 or bfloat16 products)."
    )
    skipped = [r for r in records if r.get("status") == "skipped"]
    if skipped:
        parts.append("Skipped for time: " + "; ".join(f"{r['workload']} {r['framework']} {r.get('variant', '')}"
                                                      + (f" T={(r.get('config') or {}).get('time') or r.get('time')}"
                                                         if (r.get('config') or {}).get('time') or r.get('time') else "")
                                                      for r in skipped[:30]))
    defaults = env.get("defaults") or {}
    if defaults:
        parts.append(
            "### rnn_jax's per-device defaults on this device\n\n"
            + report._table(["cell", "backward", "project_inputs"],
                            [[k, v["backward"], v["project_inputs"]] for k, v in defaults.items()])
            + f"\n\nlinear_recurrence method=\"auto\": parallel from T = {env.get('parallel_from_length')}; "
            + f"measured: {_lin_crossover(records)}.\n\n"
            + report._table(["workload", "default here", "its time", "fastest rnn_jax variant", "its time", "default / fastest"],
                            _default_rows(env, records))
        )
    w5 = [r for r in records if r["workload"] == "W5-engine"]
    if w5:
        rows = []
        for r in w5:
            if r.get("status") != "ok":
                rows.append([r["config"].get("length"), r["variant"], r.get("status"), (r.get("message") or "")[:80], "", ""])
                continue
            loop = next((x for x in w5 if x.get("status") == "ok" and x["variant"] == "loop"
                         and x["config"]["length"] == r["config"]["length"]), None)
            speedup = loop["median_wall_ms"] / r["median_wall_ms"] if loop and r["variant"] == "engine" else None
            rows.append([r["config"]["length"], r["variant"], _fmt(r["median_wall_ms"], ".4g", " ms"),
                         f"{r['member_updates_per_s']:,.0f}", _fmt(statistics.median(r["cpu_ms"]), ".4g", " ms"), _fmt(speedup, ".2f")])
        cfg = w5[0]["config"]
        parts.append(
            f"### W5 engine: {cfg['members']} members of the paper's model (Elman tanh {cfg['hidden']} units, batch "
            f"{cfg['batch']}), temporal order\n\n`train_chunk` (vmapped members, several updates per call) against a Python "
            "loop of the same `train_step` jitted on one member (benchmarks/w5_engine.py). Per member-update; the target "
            "is engine ≥ 5× the loop.\n\n"
            + report._table(["T", "variant", "wall per member-update", "member-updates / s", "host CPU per member-update",
                             "engine / loop speed-up"], rows))
    mem = [r for r in records if r["workload"] == "MEM-long"]
    if mem:
        rows = []
        for r in mem:
            if r.get("status") != "ok":
                rows.append([r.get("time"), r.get("mode"), r.get("status"), (r.get("message") or "")[:100]] + [""] * 6)
                continue
            rows.append([f"{r['time']:,}", r["mode"], _fmt(r.get("chunk"), "d"), _fmt(r.get("device_peak_mb"), ".0f"),
                         _fmt(r.get("xla_temp_mb"), ".0f"), _fmt(r.get("peak_rss_mb"), ".0f"), f"{r['compile_s']:.1f} s",
                         f"{r['grad_s']:.2f} s", f"{r['ms_per_step']:.3f} ms", f"{r['loss']:.6f}"])
        parts.append(
            "### Memory: W3's gradient at long T (benchmarks/long_memory.py), one process each\n\n"
            "Device peak: the allocator's peak bytes in use over the process (inputs, parameters, program); "
            "host peak RSS: the process's.\n\n"
            + report._table(["T", "mode", "chunk", "device peak (MiB)", "XLA temp (MiB)", "host peak RSS (MiB)", "compile",
                             "gradient", "per step", "loss"], rows))
    agree = [r for r in records if r["workload"] == "AGREE"]
    if agree:
        rows = []
        for r in agree:
            if r.get("status") != "ok":
                rows.append([r["config"]["name"], r["variant"], r.get("status"), (r.get("message") or "")[:100], "", ""])
                continue
            mark = lambda p: _fmt(r[f"{p}_grad_rel"], ".1e") + ("" if r[f"{p}_ok"] else " **FAIL**")  # noqa: E731
            rows.append([r["config"]["name"], r["variant"] + (" (the default here)" if r.get("is_default_here") else ""),
                         _fmt(r["default_loss_rel"], ".1e"), mark("default"),
                         _fmt(r["highest_loss_rel"], ".1e"), mark("highest")])
        parts.append(
            "### Gradients: this device's float32 against the host CPU's float64 (same code)\n\n"
            "‖g32 − g64‖₂ / ‖g64‖₂ per leaf, the largest; tolerance "
            f"{AGREEMENT_TOLERANCE['highest']:g} with matmul precision \"highest\", {AGREEMENT_TOLERANCE['default']:g} "
            "with JAX's default (TF32 or bfloat16 products on accelerators).\n\n"
            + report._table(["workload", "backward", "loss (default)", "gradients (default)", "loss (highest)",
                             "gradients (highest)"], rows))
    agree64 = [r for r in records if r["workload"] == "AGREE64"]
    if agree64:
        rows = [[r["variant"], r.get("status")] + ([_fmt(r["autodiff_vs_bptt"], ".1e"), _fmt(r["autodiff_vs_fd"], ".1e"),
                                                     "yes" if r["ok"] else "**FAIL**"] if r.get("status") == "ok"
                                                    else [(r.get("message") or "")[:100], "", ""]) for r in agree64]
        parts.append("### Float64 on the device: autodiff against the NumPy BPTT and central differences "
                     "(benchmarks/agreement.py, quick sizes)\n\n"
                     + report._table(["cell", "status", "vs BPTT", "vs central differences", "within tolerance"], rows))
    return "\n\n".join(parts) + "\n"


def checks(result: dict) -> list:
    """Every failed check, as text: loss checks, agreement figures, and measurements that raised."""
    bad = [f"loss: {c['workload']} {c['what']}: {c['rel_diff']:.2e} > {c['tolerance']:g}" for c in result["checks"] if not c["ok"]]
    for r in result["records"]:
        if r.get("status") == "error":
            bad.append(f"error: {r['workload']} {r.get('framework')} {r.get('variant')}: {(r.get('message') or '')[:300]}")
        elif r["workload"] == "AGREE" and r.get("status") == "ok":
            bad += [f"agreement: {r['config']['name']} {r['variant']} {p}: {r[f'{p}_grad_rel']:.2e}"
                    for p in ("default", "highest") if not r[f"{p}_ok"]]
        elif r["workload"] == "AGREE64" and r.get("status") == "ok" and not r["ok"]:
            bad.append(f"float64 agreement: {r['variant']}")
    return bad


def update_results_md(path: str, key: str, text: str) -> None:
    """Replace the section between ``key``'s markers in RESULTS.md, or put it first (the
    convention of :func:`benchmarks.report.update_results_md`)."""
    begin, end = f"<!-- benchmarks:begin {key} -->", f"<!-- benchmarks:end {key} -->"
    block = f"{begin}\n{text}{end}\n"
    current = open(path).read() if os.path.exists(path) else report.INTRO
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    first = current.find("<!-- benchmarks:begin ")
    if pattern.search(current):
        current = pattern.sub(lambda _: block, current, count=1)
    elif first < 0:
        current = current.rstrip("\n") + "\n\n" + block
    else:
        current = current[:first] + block + "\n" + current[first:]
    with open(path, "w") as f:
        f.write(current)


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--allow-cpu", action="store_true", help="run even when JAX's default backend is the CPU")
    p.add_argument("--smoke", action="store_true", help="tiny sizes of every part: a test of the check, not a measurement")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 460; --smoke 120)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)} (default all)")
    p.add_argument("--in-process", action="store_true", help="run every part in this process (smoke tests only)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<backend>-device.json; "
                   "-device-quick.json with --smoke, -device-unrecorded.json with --no-write)")
    p.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md")
    p.add_argument("--write", action="store_true", help="write benchmarks/RESULTS.md even with --smoke")
    p.add_argument("--results-md", default=os.path.join(HERE, "RESULTS.md"), help=argparse.SUPPRESS)
    p.add_argument("--note", default=None, help="a line printed in bold at the top of the RESULTS.md section")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)
    p.add_argument("--profile", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--mem", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        p.error(f"--parts: unknown {', '.join(bad)}; expected some of {', '.join(PARTS)}")
    args.parts = parts
    if args.budget is not None and args.budget <= 0:
        p.error(f"--budget: expected a positive number of seconds, got {args.budget}")
    return args


def _child_main(args) -> int:
    profile = PROFILES[args.profile]
    emit = lambda rec: print(RESULT_PREFIX + json.dumps(rec, default=str), flush=True)  # noqa: E731
    if args.mem:
        emit(part_mem_one(int(args.mem[0]), args.mem[1], profile))
    else:
        PART_RUNNERS[args.part](profile, Clock(args.deadline), emit)
    return 0


def main(argv=None, command: Optional[str] = None) -> int:
    """Run the check (``argv``: this module's options); ``command``: what to record as the command
    (``python -m benchmarks --profile device ...`` when the harness's command line delegates here)."""
    args = parse_args(argv)
    if args.child:
        return _child_main(args)
    profile = PROFILES["smoke" if args.smoke else "device"]
    if args.budget is not None:
        scale = args.budget / profile.budget_s
        profile = replace(profile, budget_s=args.budget, parts_s=tuple((k, v * scale) for k, v in profile.parts_s))
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.time()
    hard_end = t0 + profile.budget_s
    say = lambda text: print(f"[device check {time.time() - t0:6.1f} s] {text}", file=sys.stderr, flush=True)  # noqa: E731

    probe, failure = run_part("probe", profile, hard_end, min(120.0, profile.budget_s), args.in_process)
    env = next((r for r in probe if r.get("kind") == "env"), None)
    if env is None:
        print(f"device check: could not start JAX in a child process: {failure}", file=sys.stderr)
        return 2
    backend = env["backend"]
    say(f"JAX backend {backend}: {env['device']} ({env['device_kind']}, {env['device_count']} device(s))")
    if backend == "cpu" and not args.allow_cpu:
        print("device check: JAX's default backend is the CPU, and this check is for accelerators (GPU, TPU). "
              "Run it where JAX sees one, or pass --allow-cpu to run it on the CPU anyway "
              "(with --smoke: tiny sizes, a test of the check itself).", file=sys.stderr)
        return 2

    planned = [p for p in PARTS if p in args.parts]
    budgets = dict(profile.parts_s)
    # the parts' shares, scaled to what the probe left, as cumulative deadlines: time a part
    # leaves unused goes to the next ones; no child outlives the run's end
    base = time.time()
    scale = min(1.0, (hard_end - REPORT_S - base) / max(sum(budgets[p] for p in planned), 1e-9))
    records, parts_meta = run_parts(planned, profile, budgets, scale, base, hard_end, args.in_process, say)

    accelerator = backend != "cpu"
    rtol = LOSS_RTOL["accelerator" if accelerator else "cpu"]
    rate = analysis.matmul_rate(records)
    analysis.add_floors(records, rate)
    loss_checks = analysis.loss_checks([r for r in records if r["workload"] in ("W1", "W2", "W3", "W4", "LIN")], rtol=rtol)
    records_results = not args.no_write and (args.write or not args.smoke)
    suffix = "-device" + ("-quick" if args.smoke else "" if records_results else "-unrecorded")
    out_path = args.out or os.path.join(HERE, "results", f"{backend}{suffix}.json")
    mm = next((r for r in records if r["workload"] == "MM" and r.get("status") == "ok"), {})
    if command is None:
        given = sys.argv[1:] if argv is None else list(argv)
        command = "python -m benchmarks.device" + (" " + shlex.join(given) if given else "")
    meta = {
        "schema": SCHEMA_VERSION, "date": started.strftime("%Y-%m-%d %H:%M UTC"), "command": command,
        "profile": profile.name, "backend": backend,
        "device": f"{env['device']} ({env['device_kind']}, {env['device_count']} device(s))",
        "device_kind": env["device_kind"],
        "device_label": (f"{backend.upper()} ({env['device_kind']})" if accelerator
                         else f"CPU ({_cpu_model() or '?'}, {os.cpu_count()} CPUs)"),
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "versions": _versions(), "flags": _flags(env),
        "isolation": "in-process" if args.in_process else ("one process per part (and per memory run), sharing a "
                                                           "persistent compilation cache"),
        "repeats": profile.repeats, "max_time_s": profile.max_time_s, "rounds": 1,
        "matmul_flops_per_s": rate, "matmul_size": (mm.get("config") or {}).get("n"),
        "load_average_start": None, "load_average_end": timing.load_average(), "note": args.note, "scope": "all", "env": {},
        "json": os.path.relpath(out_path, ROOT) if os.path.abspath(out_path).startswith(ROOT) else out_path,
        "budget_s": profile.budget_s, "parts": parts_meta, "loss_rtol": rtol, "profile_settings": asdict(profile),
    }
    meta["wall_s"] = time.time() - t0
    result = {"meta": meta, "env": env, "records": records, "checks": loss_checks,
              "summary": analysis.summary([r for r in records if r["workload"] in ("W1", "W2", "W3", "W4")])}
    result["failures"] = checks(result)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1, default=str)
    text = section(result)
    print(text)
    say(f"JSON: {out_path}")
    if records_results:
        update_results_md(args.results_md, f"device-check-{report.section_key(meta)}", text)
        say(f"RESULTS.md section updated: {args.results_md}")
    for line in result["failures"]:
        say(f"FAILED {line}")
    return 1 if result["failures"] else 0


def _cpu_model() -> Optional[str]:
    from benchmarks import cli

    return cli._cpu_model()


def _versions() -> dict:
    from benchmarks import cli

    return cli._versions()


def _flags(env: dict) -> dict:
    from benchmarks import cli

    flags = cli._flags({})
    flags["jax_default_matmul_precision"] = env.get("jax_default_matmul_precision")
    return flags


if __name__ == "__main__":
    sys.exit(main())
