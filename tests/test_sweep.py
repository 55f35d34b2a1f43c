"""Sweeps: sharded across devices and processes give the single-device results; results survive kills."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax.repro import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The subprocesses compile the same programs: share them through JAX's persistent cache.
CACHE = None


def _env(devices=1):
    env = dict(os.environ)
    # keep the suite's other XLA flags (tests/conftest.py), set the device count
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = CACHE
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _run(out_dir, *extra, devices=1):
    proc = subprocess.run([sys.executable, "-m", "tests.sweep_worker", str(out_dir), *extra], cwd=ROOT,
                          env=_env(devices), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS "):])


def _by_member(results):
    return {r["member"]: r for r in results}


def _assert_same(a, b, tol):
    a, b = _by_member(a), _by_member(b)
    assert sorted(a) == sorted(b) == list(range(8))
    for i in a:
        assert a[i]["outcome"] == b[i]["outcome"] and a[i]["steps"] == b[i]["steps"], (a[i], b[i])
        num = lambda v: np.nan if v is None else v  # None: not finite (strict JSON)
        for k in ("loss", "grad_norm", "omega", "spectral_radius", "grad_norm_max", "run_grad_norm_max"):
            np.testing.assert_allclose(num(a[i]["metrics"][k]), num(b[i]["metrics"][k]), rtol=tol, atol=tol)
        assert a[i]["metrics"]["run_explosions"] == b[i]["metrics"]["run_explosions"]
        np.testing.assert_allclose(num(a[i]["error"]), num(b[i]["error"]), atol=tol)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    global CACHE
    CACHE = str(tmp_path_factory.mktemp("jax_cache"))
    return _run(tmp_path_factory.mktemp("single"))


def test_sharded_over_four_devices_equals_single_device(single_device, tmp_path):
    sharded = _run(tmp_path, devices=4)
    assert sharded["devices"] == 4 and single_device["devices"] == 1
    _assert_same(single_device["results"], sharded["results"], 1e-5)


def test_two_processes_with_jax_distributed_equal_single_device(single_device, tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, "-m", "tests.sweep_worker", str(tmp_path), "--distributed", port, str(i), "2"],
                              cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    first = json.loads([l for l in outs[0][0].splitlines() if l.startswith("RESULTS ")][-1][8:])
    assert first["processes"] == 2 and first["devices"] == 2
    _assert_same(single_device["results"], first["results"], 1e-5)


def test_sigkill_at_random_points_then_resume_loses_and_duplicates_nothing(single_device, tmp_path):
    rng = random.Random(0)
    kills = 0
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "tests.sweep_worker", str(tmp_path), "--slow"], cwd=ROOT,
                                env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # wait until the run is under way (a checkpoint exists), then kill it at a random moment
        deadline = time.time() + 300
        while not os.path.exists(tmp_path / sweep.CHECKPOINT_META) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
        lines = (tmp_path / sweep.RESULTS).read_bytes().splitlines() if (tmp_path / sweep.RESULTS).exists() else []
        members = [json.loads(l)["member"] for l in lines if l.strip().endswith(b"}")]
        assert len(members) == len(set(members)), "a member was written twice"
    # a kill in mid-write leaves a truncated last line: simulate one and check it is recovered
    with open(tmp_path / sweep.RESULTS, "ab") as f:
        f.write(b'{"member": 99, "trunc')
    resumed = _run(tmp_path)
    assert kills >= 1
    _assert_same(single_device["results"], resumed["results"], 1e-5)
    lines = (tmp_path / sweep.RESULTS).read_text().splitlines()
    assert len(lines) == 8 and sorted(json.loads(l)["member"] for l in lines) == list(range(8))


def test_corrupt_checkpoint_is_detected_not_loaded(tmp_path):
    tree = {"w": np.arange(6.0).reshape(2, 3), "step": np.array([1, 2])}
    sweep.save_checkpoint(str(tmp_path), tree, {"fingerprint": "abc"})
    loaded, meta = sweep.load_checkpoint(str(tmp_path), tree, "abc")
    np.testing.assert_array_equal(loaded["w"], tree["w"])
    with pytest.raises(sweep.CorruptCheckpoint, match="another sweep"):
        sweep.load_checkpoint(str(tmp_path), tree, "other")
    data = bytearray((tmp_path / sweep.CHECKPOINT).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / sweep.CHECKPOINT).write_bytes(bytes(data))
    with pytest.raises(sweep.CorruptCheckpoint, match="SHA-256 does not match"):
        sweep.load_checkpoint(str(tmp_path), tree, "abc")


def test_checkpoint_refuses_non_finite_values(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        sweep.save_checkpoint(str(tmp_path), {"w": np.array([1.0, np.nan])}, {"fingerprint": "x"})


def test_truncated_results_line_is_cut_off(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"member": 0}\n{"member": 1}\n{"memb')
    assert [r["member"] for r in sweep.read_results(str(path))] == [0, 1]
    assert path.read_bytes() == b'{"member": 0}\n{"member": 1}\n'


def test_exploding_members_are_reported_and_no_file_holds_nan(tmp_path):
    """Exploding regime (large recurrent weights, huge steps, no clipping): the sweep isolates the
    members that go non-finite, the others finish, and no checkpoint or parameter file holds NaN."""
    import rnn_jax
    from rnn_jax.repro import tasks, train

    setup = train.Setup(cell=rnn_jax.elman(8, "relu"), task=tasks.get("adding", min_length=10, max_length=12),
                        batch_size=8, eval_size=32, eval_batch_size=32)
    members = [dict(seed=s, learning_rate=lr, clip=float("inf"), init_scale=scale)
               for s, (lr, scale) in enumerate([(0.01, 1.0), (1e6, 30.0), (0.01, 1.0), (1e6, 30.0)])]
    seen = []
    results = sweep.run_sweep(setup, members, str(tmp_path), max_steps=30, chunk_steps=10, progress=False,
                              on_chunk=lambda c, h: seen.append(sweep.load_checkpoint(
                                  str(tmp_path), {"state": h, "run_max": 0, "run_explosions": 0},
                                  json.load(open(tmp_path / sweep.CHECKPOINT_META))["fingerprint"])))
    outcomes = {r["member"]: r["outcome"] for r in results}
    assert outcomes[1] == outcomes[3] == "diverged"
    assert outcomes[0] == outcomes[2] == "exhausted" and all(r["steps"] == 30 for r in results if r["member"] in (0, 2))
    for ck, _ in seen:  # every checkpoint written during the run
        state = ck["state"]
        assert all(np.isfinite(np.asarray(leaf, np.float64)).all()
                   for leaf in jax.tree_util.tree_leaves(state.params))
    for r in results:
        z = np.load(sweep.member_params_path(str(tmp_path), r["member"]))
        assert all(np.isfinite(z[k]).all() for k in z.files)


def test_transform_init_reaches_training_exactly_as_that_initialisation(tmp_path):
    """A member whose fresh state ``transform_init`` changed trains bit for bit as a member
    initialised that way by the engine itself (here: ``init_scale``, which multiplies the
    cell's initial w_ih and w_hh), and differently from the untransformed member."""
    import rnn_jax
    from rnn_jax.repro import tasks, train

    setup = train.Setup(cell=rnn_jax.elman(6, "tanh"), task=tasks.get("adding", min_length=10, max_length=12),
                        batch_size=8, eval_size=16, eval_batch_size=16)
    factors = {"half": 0.5, "same": 1.0, "x1.7": 1.7}
    labelled = [dict(seed=s, learning_rate=0.05, clip=1.0, scale=name) for s, name in enumerate(factors)]
    scaled = [dict(seed=s, learning_rate=0.05, clip=1.0, init_scale=f) for s, f in enumerate(factors.values())]

    def transform(state, slots):
        f = jnp.asarray([factors[m["scale"]] for m in slots], setup.dtype)[:, None, None]
        cell = state.params.cell
        return state._replace(params=state.params._replace(cell=cell._replace(w_ih=cell.w_ih * f, w_hh=cell.w_hh * f)))

    run = lambda members, folder, **kw: sweep.run_sweep(setup, members, str(tmp_path / folder), max_steps=20,
                                                       chunk_steps=10, progress=False, **kw)
    a, b = run(labelled, "transformed", transform_init=transform), run(scaled, "init_scale")
    plain = run([dict(m, scale="none") for m in labelled], "plain")
    hp = {"learning_rate": np.full(1, 0.05), "clip": np.full(1, 1.0)}
    template = jax.tree_util.tree_map(lambda x: x[0], train.init_members(setup, [0], hp).params)
    params = lambda folder, i: [np.asarray(x).tobytes() for x in jax.tree_util.tree_leaves(
        sweep.load_member_params(str(tmp_path / folder), i, template))]
    chunks = lambda folder: [{k: v for k, v in c.items() if k != "fingerprint"}
                             for c in sweep.read_results(str(tmp_path / folder / sweep.CHUNKS))]
    assert chunks("transformed") == chunks("init_scale")  # steps, status, loss, error, ... of every chunk
    for i, name in enumerate(factors):
        assert {k: a[i][k] for k in ("outcome", "steps", "error", "metrics")} == \
               {k: b[i][k] for k in ("outcome", "steps", "error", "metrics")}
        assert params("transformed", i) == params("init_scale", i)
        assert (params("transformed", i) == params("plain", i)) == (name == "same")
        assert (a[i]["metrics"] == plain[i]["metrics"]) == (name == "same")
    with pytest.raises(ValueError, match="transform_init: expected"):
        run(labelled, "bad", transform_init=lambda s, slots: s._replace(step=s.step[:1]))


def test_a_sweep_stopped_after_a_chunk_resumes_to_the_same_files_bit_for_bit(tmp_path):
    """Resumed from its checkpoint, a sweep writes the uninterrupted run's results and chunk lines
    (a checkpoint holds its reported chunk's sums of loss etc.: the next chunk must not add to them)."""
    import rnn_jax
    from rnn_jax.repro import tasks, train

    setup = train.Setup(cell=rnn_jax.elman(6, "tanh"), task=tasks.get("adding", min_length=10, max_length=12),
                        batch_size=8, eval_size=16, eval_batch_size=16)
    members = [dict(seed=s, learning_rate=0.05, clip=1.0) for s in range(3)]

    def stop(chunk, h):
        raise KeyboardInterrupt

    run = lambda folder, **kw: sweep.run_sweep(setup, members, str(tmp_path / folder), max_steps=30, chunk_steps=10,
                                              progress=False, compact=False, **kw)
    whole = run("whole")
    with pytest.raises(KeyboardInterrupt):
        run("resumed", on_chunk=stop)
    assert run("resumed") == whole
    chunks = lambda folder: sweep.read_results(str(tmp_path / folder / sweep.CHUNKS))
    assert len(chunks("whole")) == 3 and chunks("resumed") == chunks("whole")
