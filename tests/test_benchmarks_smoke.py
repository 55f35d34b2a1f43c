"""Smoke test of the benchmark harness (``python -m benchmarks``), the profile CI runs.

One subprocess runs the quick profile of W1 and W3 for every installed framework
(in-process groups, tiny sizes, 2 repetitions): the JSON must have its fields,
and every framework -- which builds its model from the same shared weights --
must compute the same loss as rnn_jax to 1e-5 relative. The linear-recurrence
workload's sequential and parallel scans are checked in this process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import analysis, linear, report, workloads  # noqa: E402

INSTALLED = [fw for fw in workloads.FRAMEWORKS if importlib.util.find_spec(workloads.FRAMEWORK_MODULES[fw]) is not None]
# what each framework must have measured (equinox.nn has no Elman cell, so not W1)
EXPECTED = {
    "W1": {"rnn_jax", "jax", "flax", "torch"},
    "W3": {"rnn_jax", "jax", "flax", "equinox", "torch"},
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    results_md = os.path.join(ROOT, "benchmarks", "RESULTS.md")
    before = open(results_md).read() if os.path.exists(results_md) else None
    cmd = [
        sys.executable, "-m", "benchmarks", "--quick", "--workloads", "W1,W3", "--no-sweep", "--in-process",
        "--repeats", "2", "--max-time", "0.5", "--rounds", "2", "--no-write", "--out", str(out),
    ]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    after = open(results_md).read() if os.path.exists(results_md) else None
    assert before == after, "--no-write must leave benchmarks/RESULTS.md alone"
    assert proc.returncode == 0, f"harness failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
    with open(out) as f:
        return json.load(f), proc.stdout


def test_json_has_meta_and_timing_fields(quick_run):
    result, _ = quick_run
    meta = result["meta"]
    for key in ("device", "backend", "versions", "flags", "command", "date", "profile", "matmul_flops_per_s", "repeats"):
        assert key in meta, key
    assert meta["profile"] == "quick"
    assert meta["versions"]["jax"]
    assert meta["matmul_flops_per_s"] > 0
    timed = [r for r in result["records"] if r["workload"] in EXPECTED and r["status"] == "ok"]
    assert timed
    assert meta["rounds"] == 2
    for rec in timed:
        assert rec["min_s"] <= rec["median_s"] <= rec["max_s"], rec
        assert rec["repeats"] >= 1 and rec["first_call_s"] > 0
        # two rounds pooled: one record per measurement, its statistics those of all calls
        assert rec["rounds"] == 2 and rec["repeats"] == len(rec["times_s"]) >= 2, rec
        assert rec["median_s"] == np.median(rec["times_s"]) and rec["min_s"] == min(rec["times_s"]), rec
        assert rec["flops"] > 0 and rec["floor_s"] > 0 and rec["x_floor"] > 0
        assert np.isfinite(rec["loss"])
    assert {s["workload"] for s in result["summary"]} == set(EXPECTED)


@pytest.mark.parametrize("workload", sorted(EXPECTED))
def test_every_framework_computes_the_same_loss(quick_run, workload):
    result, _ = quick_run
    records = [r for r in result["records"] if r["workload"] == workload]
    statuses = {(r["framework"], r["variant"]): r["status"] for r in records}
    assert not [k for k, s in statuses.items() if s == "error"], [r for r in records if r["status"] == "error"]
    ok = [r for r in records if r["status"] == "ok"]
    measured = {r["framework"] for r in ok}
    assert measured == EXPECTED[workload] & set(INSTALLED), statuses
    (ref,) = [r for r in ok if r["framework"] == "rnn_jax" and r["variant"] == "default"]
    for rec in ok:
        assert rec["loss"] == pytest.approx(ref["loss"], rel=1e-5), (rec["framework"], rec["variant"])
    checks = [c for c in result["checks"] if c["workload"] == workload]
    assert len(checks) == len(ok) - 1 and all(c["ok"] for c in checks)


def test_printed_report_has_the_tables(quick_run):
    _, stdout = quick_run
    assert "rnn_jax against the best peer" in stdout
    assert "### W3:" in stdout and "checks passed" in stdout


def test_linear_recurrence_scans_agree():
    """Sequential scan, associative scan and rnn_jax's identity cell give the same h and gradients."""
    fake = lambda step, sync: {"median_s": 1.0, "min_s": 1.0, "max_s": 1.0, "repeats": 1}
    records = linear.run((300,), (1,), fake)
    assert {r["config"]["method"] for r in records} == {"scan", "associative_scan", "rnn_jax.unroll", "rnn_jax.linear_recurrence"}
    for rec in records:
        if rec["config"]["method"] != "scan":
            assert rec["agrees"], rec
            assert rec["rel_err_h"] <= 1e-5 and rec["rel_err_grad_x"] <= 1e-5


def test_linear_recurrence_matches_closed_form():
    a, x = linear._data(50, 2)
    expected = np.zeros_like(x, dtype=np.float64)
    h = np.zeros(2)
    for t in range(50):
        h = a.astype(np.float64) * h + x[t]
        expected[t] = h
    import jax.numpy as jnp

    for fn in (linear.sequential, linear.parallel):
        np.testing.assert_allclose(np.asarray(fn(jnp.asarray(a), jnp.asarray(x))), expected, rtol=1e-5, atol=1e-5)


def test_matrix_flops_counts_forward_and_backward():
    cfg = workloads.FULL["W3"]
    b, t, i, h, o = 64, 100, 128, 256, 128
    forward = 2 * b * t * (i * 4 * h + h * 4 * h + h * o)
    backward = 2 * b * t * (i * 4 * h + 2 * h * 4 * h + 2 * h * o)
    assert workloads.matrix_flops(cfg) == forward + backward


def test_results_md_section_is_replaced_not_duplicated(tmp_path):
    meta = {
        "device_label": "CPU (test)", "profile": "full", "date": "today", "command": "python -m benchmarks", "device": "cpu:0",
        "versions": {"jax": "0"}, "flags": {}, "repeats": 3, "max_time_s": 1, "json": "x.json", "backend": "cpu",
        "device_kind": "cpu", "cpu_count": 2,
    }
    path = tmp_path / "RESULTS.md"
    report.update_results_md(str(path), {"meta": dict(meta, note="first"), "records": [], "checks": []})
    report.update_results_md(str(path), {"meta": dict(meta, note="second"), "records": [], "checks": []})
    report.update_results_md(str(path), {"meta": dict(meta, backend="gpu", device_kind="H100", note="other"), "records": [], "checks": []})
    text = path.read_text()
    assert text.startswith("# Benchmark results")
    assert "**first**" not in text and text.count("**second**") == 1 and "**other**" in text
    assert text.index("**other**") < text.index("**second**")  # newest first


def test_rounds_pool_calls_and_keep_failures():
    def rec(variant, times, status="ok", faults=10.0):
        return {"workload": "W2", "framework": "jax", "variant": variant, "status": status, "times_s": times,
                "repeats": len(times), "minflt_per_call": faults, "median_s": float(np.median(times))}

    merged = analysis.merge_rounds([rec("a", [3.0, 1.0]), rec("b", [5.0]), rec("a", [2.0, 9.0, 4.0], faults=20.0),
                                    dict(rec("b", []), status="error", message="boom"), {"workload": "MM", "status": "ok"}])
    a, b, mm = merged
    assert a["times_s"] == [3.0, 1.0, 2.0, 9.0, 4.0] and a["median_s"] == 3.0 and a["min_s"] == 1.0 and a["max_s"] == 9.0
    assert a["repeats"] == 5 and a["rounds"] == 2 and a["minflt_per_call"] == (2 * 10.0 + 3 * 20.0) / 5
    assert b["status"] == "error" and b["rounds"] == 2
    assert mm == {"workload": "MM", "status": "ok"}


def test_loss_checks_flag_a_disagreement():
    base = {"status": "ok", "workload": "W2", "config": {"time": 1}}
    records = [
        dict(base, framework="rnn_jax", variant="default", loss=1.0),
        dict(base, framework="torch", variant="eager", loss=1.0 + 2e-6),
        dict(base, framework="flax", variant="SimpleCell", loss=1.001),
    ]
    checks = analysis.loss_checks(records)
    assert [c["ok"] for c in checks] == [True, False]
