"""W5: the training engine's updates per second for 64 members of the paper's model.

Model and task: Elman tanh, 50 units, 6 one-hot inputs, batch 20, the temporal order
task at T = 50 and T = 200 (every sequence T long), 4-class cross-entropy on the last
step, SGD (learning rate 0.01) after clipping the gradient norm at 1. What is timed,
one member-update being one gradient + optimizer step of one member:

* ``engine``: ``rnn_jax.repro.train.train_chunk`` on 64 members, several updates per call
  (vmap of ``train_step``; Elman cells take the fused path, :mod:`rnn_jax.repro.fused`);
* ``engine-generic``: the same with ``train.Setup(engine="generic")``, i.e.
  ``vmap(jax.value_and_grad)``, the engine before the fused path;
* ``engine-sharded``: ``engine`` with the member axis sharded over one XLA host device
  per CPU (``--xla_force_host_platform_device_count``, ``rnn_jax.repro.sweep.shard_members``),
  as ``rnn_jax.repro.sweep.run_sweep`` shards it: each device runs its members on its own thread;
* ``loop``: a Python loop over the 64 members, each one call of the engine's
  ``train_step`` jitted on ONE member (one update per call); it takes the fused path
  with one member;
* ``loop-generic``: the same loop with the generic path;
* ``torch``: a Python loop over 64 ``nn.RNN`` + ``nn.Linear`` models, each with its own
  SGD optimizer: sample a minibatch, forward, backward, ``clip_grad_norm_``, step.

Each (variant, T) runs in its own fresh process. Reported per member-update: process
CPU time (``resource.getrusage``: every thread of the process, the measure that a
machine loaded by other processes distorts least) and wall time, median (and min)
over the repeats, and the ratios of ``engine`` to the others. ``--one-core`` pins
each worker to one CPU before JAX or PyTorch starts (then XLA splits no kernel
across threads and PyTorch runs one thread).

Usage (from the repository root)::

    python -m benchmarks.w5_engine                      # T = 50 and 200, all variants
    python -m benchmarks.w5_engine --one-core --lengths 200 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("engine", "engine-sharded", "engine-generic", "loop", "loop-generic", "torch")
MEMBERS, BATCH, HIDDEN, INPUTS, CLASSES = 64, 20, 50, 6, 4
LEARNING_RATE, CLIP = 0.01, 1.0


def _usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, time.perf_counter()


def _timed(block, repeats, per_block):
    """Run ``block`` ``repeats`` times; seconds of CPU and wall per member-update."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = _usage()
        block()
        c1, w1 = _usage()
        cpu.append((c1 - c0) / per_block)
        wall.append((w1 - w0) / per_block)
    return cpu, wall


def _jax_worker(variant, length, members, repeats):
    import jax
    import jax.numpy as jnp

    import rnn_jax
    from rnn_jax.repro import tasks, train

    if variant == "engine-sharded":
        assert jax.device_count() > 1 or (os.cpu_count() or 1) == 1, "XLA_FLAGS did not reach the worker"
    task = tasks.get("temporal_order", min_length=length, max_length=length + 1)  # every sequence `length` long
    setup = train.Setup(cell=rnn_jax.elman(HIDDEN, "tanh"), task=task, batch_size=BATCH,
                        engine="generic" if variant.endswith("generic") else "fused")
    hp = {"learning_rate": jnp.full(members, LEARNING_RATE, jnp.float32), "clip": jnp.full(members, CLIP, jnp.float32)}
    state = train.init_members(setup, range(members), hp)
    if variant == "engine-sharded":
        from rnn_jax.repro import sweep

        mesh = sweep.member_mesh()
        hp, state = sweep.shard_members(hp, mesh), sweep.shard_members(jax.device_get(state), mesh)
    if variant.startswith("engine"):
        updates = max(2, 1000 // length)  # updates per call (the engine amortises its calls)
        box = [train.train_chunk(setup, hp, state, updates)]
        jax.block_until_ready(box)

        def block():
            box[0] = train.train_chunk(setup, hp, box[0], updates)
            jax.block_until_ready(box[0])

        return _timed(block, repeats, updates * members)
    # train_step returns (state, the update's gradient norm); the loop carries the states
    step = jax.jit(lambda h, s: train.train_step(setup, h, s)[0])
    hps = train._member_hparams(hp, setup.dtype)
    one = [jax.tree_util.tree_map(lambda a: a[i], (hps, state)) for i in range(members)]
    box = [[step(h, s) for h, s in one]]
    jax.block_until_ready(box)

    def block():
        box[0] = [step(h, s) for (h, _), s in zip(one, box[0])]
        jax.block_until_ready(box[0])

    return _timed(block, repeats, members)


def _torch_worker(length, members, repeats, one_core):
    import torch

    if one_core:
        torch.set_num_threads(1)
    torch.manual_seed(0)
    models = [torch.nn.ModuleDict({"rnn": torch.nn.RNN(INPUTS, HIDDEN, nonlinearity="tanh", batch_first=True),
                                   "out": torch.nn.Linear(HIDDEN, CLASSES)}) for _ in range(members)]
    optimizers = [torch.optim.SGD(m.parameters(), lr=LEARNING_RATE) for m in models]
    generator = torch.Generator().manual_seed(1)

    def update(model, optimizer):
        symbols = torch.randint(0, INPUTS, (BATCH, length), generator=generator)
        inputs = torch.nn.functional.one_hot(symbols, INPUTS).float()
        labels = torch.randint(0, CLASSES, (BATCH,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        hidden, _ = model["rnn"](inputs)
        loss = torch.nn.functional.cross_entropy(model["out"](hidden[:, -1]), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()

    def block():
        for model, optimizer in zip(models, optimizers):
            update(model, optimizer)

    block()
    return _timed(block, repeats, members)


def worker(variant, length, members, repeats, one_core):
    """One (variant, T) measurement in this process; returns a JSON-able dict."""
    if variant == "torch":
        cpu, wall = _torch_worker(length, members, repeats, one_core)
    else:
        cpu, wall = _jax_worker(variant, length, members, repeats)
    ms = lambda xs: [1e3 * x for x in xs]
    return {"variant": variant, "length": length, "members": members, "cpu_ms": ms(cpu), "wall_ms": ms(wall)}


def _run_worker(variant, length, args):
    cmd = [sys.executable, "-m", "benchmarks.w5_engine", "--worker", variant, "--lengths", str(length),
           "--members", str(args.members), "--repeats", str(args.repeats)] + (["--one-core"] if args.one_core else [])
    env = dict(os.environ)
    if variant == "engine-sharded":
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} T={length} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="50,200", help="comma-separated T values")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one-core", action="store_true", help="pin every worker to one CPU")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")]
    if args.worker:
        if args.one_core:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before any thread pool starts
        print(json.dumps(worker(args.worker, lengths[0], args.members, args.repeats, args.one_core)))
        return 0

    variants = args.variants.split(",")
    print(f"W5: {args.members} members, Elman tanh H={HIDDEN}, batch {BATCH}, temporal order, "
          f"{'one core per worker' if args.one_core else 'all cores'}; load average at start: {_load()}")
    results = []
    for length in lengths:
        rows = {}
        for variant in variants:
            res = _run_worker(variant, length, args)
            results.append(res)
            rows[variant] = res
            med_cpu, med_wall = statistics.median(res["cpu_ms"]), statistics.median(res["wall_ms"])
            print(f"T={length:4d} {variant:15s} CPU {med_cpu:7.3f} (min {min(res['cpu_ms']):7.3f}) | wall {med_wall:7.3f} "
                  f"(min {min(res['wall_ms']):7.3f}) ms per member-update = {1e3 / med_cpu:8.0f} updates/s of CPU, "
                  f"{1e3 / med_wall:8.0f} updates/s of wall", flush=True)
        if "engine" in rows:
            base = rows["engine"]
            for variant, res in rows.items():
                if variant != "engine":
                    ratio = lambda key: statistics.median(res[key]) / statistics.median(base[key])
                    print(f"T={length:4d} engine is {ratio('cpu_ms'):5.2f}x (CPU) {ratio('wall_ms'):5.2f}x (wall) as fast as {variant}")
    print(f"load average at end: {_load()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_start_end": _load(), "one_core": args.one_core, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
