"""Repetition statistics, page-fault counts and peak resident memory of this process.

Nothing here imports a framework: a measurement passes its own ``step`` (run one
forward plus backward pass, return something to wait on) and ``sync`` (wait on
it: ``jax.block_until_ready``; nothing for PyTorch on the CPU).
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable, Optional


def measure(
    step: Callable[[], Any],
    sync: Callable[[Any], Any],
    *,
    repeats: int,
    warmup: int = 2,
    max_time_s: Optional[float] = None,
    min_repeats: int = 3,
    on_first: Optional[Callable[[Any], Any]] = None,
) -> dict:
    """Time ``sync(step())``: the first call apart (compilation), then ``repeats`` calls.

    ``warmup`` calls (the first included) are not counted. The timed loop stops
    early once ``max_time_s`` has passed and ``min_repeats`` calls are done; the
    number actually timed is returned as ``repeats``. Garbage collection is off
    during the loop, as in :mod:`timeit`. ``on_first`` receives the first call's
    result (e.g. to read the loss at the initial weights).

    Returns seconds per call (``median_s``, ``min_s``, ``max_s``, ``mean_s``, and every
    call's in ``times_s``), the first call's time (``first_call_s``), and the minor page
    faults per timed call (``minflt_per_call``: pages the allocator had to fault in again).
    """
    start = time.perf_counter()
    out = step()
    sync(out)
    first = time.perf_counter() - start
    if on_first is not None:
        on_first(out)
    del out
    for _ in range(max(warmup - 1, 0)):
        sync(step())
    times = []
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        loop_start = time.perf_counter()
        for _ in range(max(repeats, 1)):
            t0 = time.perf_counter()
            sync(step())
            times.append(time.perf_counter() - t0)
            if max_time_s is not None and len(times) >= min_repeats and time.perf_counter() - loop_start > max_time_s:
                break
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    finally:
        if enabled:
            gc.enable()
    return {
        "first_call_s": first,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "mean_s": statistics.fmean(times),
        "repeats": len(times),
        "minflt_per_call": faults / len(times),
        "times_s": times,
    }


# ---------------------------------------------------------------- memory


def rss_bytes() -> Optional[int]:
    """Current resident set size, or None where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since start or since :func:`reset_peak_rss` (VmHWM), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def measure_peak_memory(
    step: Callable[[], Any], sync: Callable[[Any], Any], *, calls: int = 1, on_first: Optional[Callable[[Any], Any]] = None
) -> dict:
    """Peak resident memory added by ``calls`` calls of ``sync(step())`` above the RSS before them.

    Call it after a warm-up (compilation) so that only the computation's own
    buffers count. Uses VmHWM after resetting it; where it cannot be reset the
    figure is ``ru_maxrss`` minus the RSS before, which also counts any earlier peak
    (``peak_method`` says which). ``on_first`` receives the first call's result
    after the peak has been read.
    """
    gc.collect()
    baseline = rss_bytes()
    exact = reset_peak_rss()
    first = None
    for i in range(calls):
        out = step()
        sync(out)
        if i == 0:
            first = out
        del out
    peak = peak_rss_bytes()
    if on_first is not None:
        on_first(first)
    del first
    return {
        "baseline_rss_mb": None if baseline is None else baseline / 2**20,
        "peak_rss_mb": peak / 2**20,
        "peak_delta_mb": None if baseline is None else (peak - baseline) / 2**20,
        "peak_method": "VmHWM after clear_refs" if exact else "ru_maxrss",
    }


def load_average() -> Optional[list]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
