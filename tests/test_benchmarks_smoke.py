"""Smoke test of the benchmark harness (``python -m benchmarks``), the profile CI runs.

One subprocess runs the quick profile of W1 and W3 for every installed framework
(in-process groups, tiny sizes, 2 repetitions): the JSON must have its fields,
and every framework -- which builds its model from the same shared weights --
must compute the same loss as rnn_jax to 1e-5 relative. The linear-recurrence
workload's sequential and parallel scans are checked in this process.

The device check (``python -m benchmarks --profile device``, benchmarks/device.py) runs its
smoke profile on this CPU (``--allow-cpu --smoke``): every part at tiny sizes, in one
subprocess; and it must refuse a CPU when not asked.
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

from benchmarks import analysis, cli, device, linear, report, workloads  # noqa: E402

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
    # on a CPU every core is an XLA device unless XLA_FLAGS already set how many
    user_flags = os.environ.get("XLA_FLAGS", "")
    expected = cli.with_host_devices(user_flags)
    assert meta["flags"]["XLA_FLAGS"] == expected
    count = int(expected.split(cli.HOST_DEVICES_FLAG + "=")[1].split()[0])
    assert f"{count} device(s)" in meta["device"]
    if cli.HOST_DEVICES_FLAG not in user_flags:
        assert count == os.cpu_count()
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


# ---------------------------------------------------------------- every core a device


def test_host_devices_flag_is_added_kept_or_overridden():
    flag = cli.HOST_DEVICES_FLAG
    assert cli.with_host_devices("") == f"{flag}={os.cpu_count()}"
    assert cli.with_host_devices("--xla_backend_optimization_level=0") == f"--xla_backend_optimization_level=0 {flag}={os.cpu_count()}"
    assert cli.with_host_devices(f"--a=1 {flag}=5") == f"--a=1 {flag}=5"  # the user's own setting wins
    assert cli.with_host_devices(f"--a=1 {flag}=5", 3) == f"--a=1 {flag}=3"  # ... unless --devices
    assert cli.with_host_devices(f"{flag}=5 --b", 1) == f"--b {flag}=1"


def test_devices_and_profile_arguments_are_checked(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--devices", "0"])
    assert exit_info.value.code == 2 and "expected a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.split_profile(["--profile", "gpu"])
    assert exit_info.value.code == 2 and "expected one of full, quick, device, got 'gpu'" in capsys.readouterr().err
    assert cli.split_profile(["--profile", "device", "--smoke"]) == ("device", ["--smoke"])
    assert cli.split_profile(["--profile=quick", "--no-write"]) == ("quick", ["--no-write", "--quick"])
    assert cli.split_profile(["--workloads", "W1"]) == ("full", ["--workloads", "W1"])


def test_importing_the_library_changes_no_process_flag():
    code = ("import os; before = dict(os.environ); import rnn_jax, benchmarks.cli, benchmarks.device; "
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---------------------------------------------------------------- the device check


def _device_check(args, tmp_path, timeout=600):
    out = tmp_path / "device.json"
    results_md = os.path.join(ROOT, "benchmarks", "RESULTS.md")
    before = open(results_md).read() if os.path.exists(results_md) else None
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--profile", "device", *args, "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    after = open(results_md).read() if os.path.exists(results_md) else None
    assert before == after, "the smoke profile must leave benchmarks/RESULTS.md alone"
    return proc, (json.loads(out.read_text()) if out.exists() else None)


@pytest.fixture(scope="module")
def device_smoke(tmp_path_factory):
    # a budget no loaded CI machine runs out of: the profile's sizes take seconds
    proc, result = _device_check(["--smoke", "--allow-cpu", "--in-process", "--budget", "900"],
                                 tmp_path_factory.mktemp("device"))
    assert proc.returncode == 0, f"device check failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
    return result, proc.stdout


def test_device_check_refuses_a_cpu_unless_asked(tmp_path):
    proc, result = _device_check([], tmp_path, timeout=120)
    assert proc.returncode == 2 and result is None
    assert "default backend is the CPU" in proc.stderr and "--allow-cpu" in proc.stderr


def test_device_check_smoke_measures_every_part(device_smoke):
    result, stdout = device_smoke
    meta, records = result["meta"], result["records"]
    assert meta["profile"] == "smoke" and meta["backend"] == "cpu" and result["failures"] == []
    assert meta["command"].startswith("python -m benchmarks --profile device --smoke")
    assert set(meta["parts"]) == set(device.PARTS) and not any(p["failure"] for p in meta["parts"].values())
    status = {(r["workload"], r["framework"], r["variant"]): r["status"] for r in records}
    assert "skipped" not in status.values() and "error" not in status.values(), status
    # W1 and W3 against plain JAX; jax.experimental.rnn: cuDNN is not applicable on a CPU, its
    # reference scan computes W3 from the packed weights (the layout check of the cuDNN variant)
    for key in [("W1", "rnn_jax", "default"), ("W1", "jax", "inside"), ("W3", "rnn_jax", "default"),
                ("W3", "jax.experimental.rnn", "lstm_ref"), ("MM", "jax", "256x256 f32")]:
        assert status[key] == "ok", key
    assert status[("W3", "jax.experimental.rnn", "cudnn")] == "n/a"
    checks = {c["what"]: c for c in result["checks"]}
    assert checks["jax.experimental.rnn lstm_ref vs rnn_jax default"]["ok"]
    assert all(c["ok"] for c in result["checks"]) and len(result["checks"]) >= 4
    # W5: the engine and the loop of its step, member-updates per second
    w5 = {r["variant"]: r for r in records if r["workload"] == "W5-engine"}
    assert set(w5) == {"engine", "loop"} and all(r["member_updates_per_s"] > 0 for r in w5.values())
    # LIN: both scans, rnn_jax's unroll and linear_recurrence (auto: sequential on a CPU), agreeing
    lin = [r for r in records if r["workload"] == "LIN"]
    assert {r["config"]["method"] for r in lin} == set(linear.METHODS)
    assert all(r["agrees"] for r in lin if r["config"]["method"] != "scan")
    assert {r["config"]["auto_method"] for r in lin if "auto_method" in r["config"]} == {"sequential"}
    # MEM: the chunked loss at long T (here 20) trains: one SGD step lowers the loss
    (mem,) = [r for r in records if r["workload"] == "MEM-long"]
    assert mem["mode"] == "chunked" and mem["loss_after_sgd"] < mem["loss"]
    # agreement: float32 here against float64 on the CPU, each reverse pass; float64 against BPTT
    agree = {r["variant"]: r for r in records if r["workload"] == "AGREE"}
    assert set(agree) == {"hand", "autodiff"}
    for rec in agree.values():
        assert rec["highest_ok"] and rec["highest_grad_rel"] <= device.AGREEMENT_TOLERANCE["highest"]
    assert sum(r["is_default_here"] for r in agree.values()) == 1
    (f64,) = [r for r in records if r["workload"] == "AGREE64"]
    assert f64["ok"] and f64["autodiff_vs_bptt"] <= 1e-10
    # the defaults reported for this device are the CPU's, and the printed section shows every part
    assert result["env"]["defaults"]["lstm"] == {"backward": "hand", "project_inputs": False}
    for heading in ("— device check", "### W3:", "per-device defaults on this device", "### W5 engine", "### Memory",
                    "### Gradients: this device's float32", "### Float64 on the device", "### Linear recurrences"):
        assert heading in stdout, heading


def test_device_check_skips_what_its_budget_cannot_fit(tmp_path):
    """A budget spent before the parts start: every measurement is recorded as skipped (none
    is dropped or half-run), and the section says so."""
    proc, result = _device_check(["--smoke", "--allow-cpu", "--in-process", "--budget", "0.5"], tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = {r["status"] for r in result["records"]}
    assert statuses == {"skipped"}, statuses
    skipped = {r["workload"] for r in result["records"]}
    assert {"MM", "W1", "W3", "W5-engine", "LIN", "MEM-long", "AGREE"} <= skipped
    assert "Skipped for time:" in proc.stdout


def test_device_check_writes_its_own_results_section(tmp_path):
    """Its section goes between its own markers, replaced on the next run, other sections kept."""
    path = tmp_path / "RESULTS.md"
    path.write_text(report.INTRO + "\n<!-- benchmarks:begin cpu-cpu-full -->\nCPU section\n<!-- benchmarks:end cpu-cpu-full -->\n")
    device.update_results_md(str(path), "device-check-gpu-H100-device", "FIRST RUN\n")
    device.update_results_md(str(path), "device-check-gpu-H100-device", "SECOND RUN\n")
    text = path.read_text()
    assert "FIRST RUN" not in text and text.count("SECOND RUN") == 1 and "CPU section" in text
    assert text.index("SECOND RUN") < text.index("CPU section")
