"""Run a sweep of many members to completion: progress, results that survive, resume, sharding.

:func:`run_sweep` drives :mod:`rnn_jax.train` from the host. Between compiled
chunks of updates it evaluates the members, appends one JSON line per member
that finished (solved, diverged, or out of updates) to ``results.jsonl``, and
writes a checkpoint of the rest. Killed at any point, a rerun with the same
arguments resumes from the last checkpoint and skips the members already in
``results.jsonl``:

* result lines are appended and ``fsync``-ed *before* the checkpoint that drops
  those members is written, so a finished member is never lost; a member whose
  line is already in the file is skipped, so none is duplicated;
* a truncated last line (a kill in mid-write) is cut off on resume;
* checkpoints are ``.npz`` files (NumPy's standard format) written to a temporary
  file, ``fsync``-ed and renamed into place, with a SHA-256 and the sweep's
  fingerprint in a JSON sidecar: a corrupt or foreign checkpoint is detected and
  refused, never loaded;
* diverged members keep their last finite parameters (the engine never commits
  a non-finite update), so no checkpoint holds NaN parameters.

The member axis is sharded across every visible device with ``jax.sharding``
(one device is the same code path); with ``jax.distributed`` initialised, across
the devices of every process, and process 0 alone writes files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnn_jax import train
from rnn_jax.diagnostics import spectral_radius

RESULTS = "results.jsonl"
CHECKPOINT = "checkpoint.npz"
CHECKPOINT_META = "checkpoint.json"


# ---------------------------------------------------------------- files


def read_results(path: str) -> List[dict]:
    """Parse ``results.jsonl``; a truncated (unparseable) last line is cut off the file."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    records, good_bytes = [], 0
    for line in data.splitlines(keepends=True):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no newline: a write was interrupted")
            records.append(json.loads(line))
            good_bytes += len(line)
        except ValueError:
            break
    if good_bytes != len(data):
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
            f.flush()
            os.fsync(f.fileno())
    return records


def append_results(path: str, records: Sequence[dict]) -> None:
    """Append JSON lines and fsync them before returning."""
    if not records:
        return
    with open(path, "ab") as f:
        for r in records:
            f.write((json.dumps(r, sort_keys=True) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CorruptCheckpoint(RuntimeError):
    """A checkpoint whose bytes do not match their recorded checksum, or that belongs to another sweep."""


def save_checkpoint(directory: str, tree: Any, meta: dict) -> None:
    """Write ``tree``'s leaves as ``checkpoint.npz`` plus a JSON sidecar with its SHA-256 (atomically)."""
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
    if any(np.issubdtype(l.dtype, np.floating) and not np.all(np.isfinite(l)) for l in leaves):
        raise ValueError("refusing to write a checkpoint with non-finite values")
    buf = io.BytesIO()
    np.savez(buf, *leaves)
    data = buf.getvalue()
    _atomic_write(os.path.join(directory, CHECKPOINT), data)
    meta = dict(meta, sha256=hashlib.sha256(data).hexdigest(), leaves=len(leaves))
    _atomic_write(os.path.join(directory, CHECKPOINT_META), json.dumps(meta, sort_keys=True).encode())


def load_checkpoint(directory: str, template: Any, fingerprint: str):
    """Load a checkpoint into ``template``'s structure; None if there is none.

    Raises :class:`CorruptCheckpoint` when the checksum or the fingerprint differ.
    """
    npz, meta_path = os.path.join(directory, CHECKPOINT), os.path.join(directory, CHECKPOINT_META)
    if not os.path.exists(meta_path):
        return None
    with open(meta_path) as f:
        try:
            meta = json.load(f)
        except ValueError as e:
            raise CorruptCheckpoint(f"{meta_path}: unreadable ({e})") from e
    if meta.get("fingerprint") != fingerprint:
        raise CorruptCheckpoint(
            f"{directory} holds a checkpoint of another sweep (fingerprint {meta.get('fingerprint')}, "
            f"expected {fingerprint}); use a new output folder")
    with open(npz, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise CorruptCheckpoint(f"{npz}: SHA-256 does not match {meta_path}; the checkpoint is corrupt and was not loaded")
    with np.load(io.BytesIO(data)) as z:
        leaves = [z[f"arr_{i}"] for i in range(meta["leaves"])]
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, leaves), meta


# ---------------------------------------------------------------- sharding


def member_mesh(devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A 1-D mesh named ``members`` over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("members",))


def shard_members(tree: Any, mesh: Mesh) -> Any:
    """Place host arrays with a leading member axis across ``mesh`` (works across processes)."""
    sharding = NamedSharding(mesh, PartitionSpec("members"))

    def place(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(place, tree)


def to_host(tree: Any) -> Any:
    """Gather a tree of global arrays, sharded over the mesh (possibly across processes), to NumPy."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree_util.tree_map(np.asarray, tree)


# ---------------------------------------------------------------- driver


def _fingerprint(setup: train.Setup, members: Sequence[dict], max_steps: int, chunk_steps: int) -> str:
    desc = {
        "cell": [setup.cell.kind, setup.cell.hidden_size, setup.cell.activation],
        "task": [setup.task.name, setup.task.min_length, setup.task.max_length, setup.steps],
        "batch_size": setup.batch_size, "regularize": setup.regularize, "eval_size": setup.eval_size,
        "dtype": str(jnp.dtype(setup.dtype)), "members": list(members), "max_steps": max_steps,
        "chunk_steps": chunk_steps,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _record(member: dict, index: int, state: dict, means: Dict[str, np.ndarray], i: int, setup: train.Setup) -> dict:
    params = jax.tree_util.tree_map(lambda a: a[i], state["params"])
    w_hh = np.asarray(params.cell.w_hh, np.float64)
    status = int(state["status"][i])
    finite = bool(np.all(np.isfinite(w_hh)))
    return {
        "member": index,
        "config": member,
        "outcome": train.STATUS_NAMES[status],
        "steps": int(state["step"][i]),
        "error": float(state["error"][i]),
        "metrics": {
            "loss": float(means["loss"][i]),
            "grad_norm": float(means["grad_norm"][i]),
            "omega": float(means["omega"][i]),
            "clipped_fraction": float(means["clipped_fraction"][i]),
            "spectral_radius": float(np.max(np.asarray(spectral_radius(w_hh)))) if finite else float("nan"),
        },
    }


def _progress(msg: str, stream=sys.stderr) -> None:
    stream.write(msg + "\n")
    stream.flush()


def run_sweep(
    setup: train.Setup,
    members: Sequence[Dict[str, Any]],
    out_dir: str,
    *,
    max_steps: int,
    chunk_steps: int = 500,
    mesh: Optional[Mesh] = None,
    progress: bool = True,
    on_chunk=None,
) -> List[dict]:
    """Train every member until it is solved, diverges or reaches ``max_steps`` updates.

    Args:
      setup: the static :class:`~rnn_jax.train.Setup`.
      members: one dict per member: ``seed`` plus a value for every hyperparameter
        the optimizer reads (e.g. ``learning_rate``, ``clip``, ``alpha``) and
        optionally ``init_scale``; other keys are kept in the results as labels.
      out_dir: the folder of ``results.jsonl`` and the checkpoint.
      max_steps: update budget per member; chunk_steps: updates per compiled chunk
        (evaluation, results and checkpoint happen between chunks).
      mesh: a 1-D ``members`` mesh; default every visible device.
      on_chunk: optional callback ``(chunk_index, host_state)`` (tests use it).

    Returns:
      Every member's result record (from this run and earlier ones), by member index.
    """
    from rnn_jax._checks import check_positive_int as check
    max_steps, chunk_steps = check("max_steps", max_steps), check("chunk_steps", chunk_steps)
    members = [dict(m) for m in members]
    if not members or any("seed" not in m for m in members):
        raise ValueError("members: expected a non-empty list of dicts, each with a 'seed'")
    hp_names = sorted(k for k in members[0] if k not in ("seed", "init_scale") and isinstance(members[0][k], (int, float)))
    writer = jax.process_index() == 0
    os.makedirs(out_dir, exist_ok=True)
    results_path = os.path.join(out_dir, RESULTS)
    done = {r["member"]: r for r in read_results(results_path)} if writer else {}
    finished_mask = np.array([i in done for i in range(len(members))])
    if jax.process_count() > 1:  # process 0 owns the files; the others learn what is done from it
        finished_mask = np.asarray(multihost_utils.broadcast_one_to_all(finished_mask))
    done_ids = set(np.flatnonzero(finished_mask).tolist())
    todo = [i for i in range(len(members)) if i not in done_ids]
    fingerprint = _fingerprint(setup, members, max_steps, chunk_steps)
    mesh = mesh or member_mesh()
    n_dev = mesh.devices.size
    if not todo:
        return [done[i] for i in sorted(done)] if writer else []

    # Pad the member axis to a multiple of the device count with frozen copies.
    padded = todo + [todo[0]] * (-len(todo) % n_dev)
    hparams = {k: np.asarray([float(members[i][k]) for i in padded]) for k in hp_names}
    scale = np.asarray([float(members[i].get("init_scale", 1.0)) for i in padded])
    fresh = train.init_members(setup, [members[i]["seed"] for i in padded], hparams,
                               init_scale=scale if "init_scale" in members[0] else None)
    fresh = fresh._replace(status=fresh.status.at[len(todo):].set(train.EXHAUSTED))
    host = {"state": jax.tree_util.tree_map(np.asarray, fresh)}

    loaded = load_checkpoint(out_dir, host["state"], fingerprint) if writer else None
    if loaded is not None:
        ck_state, meta = loaded
        ids = [int(i) for i in meta["ids"]]
        keep = [ids.index(i) for i in padded if i in ids]
        if len(keep) == len(padded):  # every unfinished member is in the checkpoint: take their states
            host["state"] = jax.tree_util.tree_map(lambda a: np.asarray(a)[keep], ck_state)
        if progress:
            _progress(f"[sweep] resumed from checkpoint: {len(done_ids)} finished, {len(todo)} to go")
    if jax.process_count() > 1:
        host["state"] = multihost_utils.broadcast_one_to_all(host["state"])

    batch_ids = np.asarray(padded, np.int64)  # member id of each slot of the vmapped batch
    real = np.arange(len(padded)) < len(todo)  # False for padding copies
    h = host["state"]
    h = h._replace(status=np.where(real, np.asarray(h.status), train.EXHAUSTED))  # padding copies stay frozen
    reported = set()
    chunk = 0
    t0 = time.time()
    while True:
        state = train.train_chunk(setup, shard_members(hparams, mesh), shard_members(h, mesh), chunk_steps)
        state = train.evaluate_members(setup, state)
        h = to_host(state)
        status, step = np.asarray(h.status), np.asarray(h.step)
        status = np.where((status == train.RUNNING) & (step >= max_steps), train.EXHAUSTED, status)
        h = h._replace(status=status)
        means = train.stats_means(h.stats)
        finished = [j for j in range(len(batch_ids)) if real[j] and status[j] != train.RUNNING
                    and int(batch_ids[j]) not in reported]
        if writer:
            # parameters first, then the result line, then the checkpoint: each step is atomic,
            # and a kill between them is repaired by the rerun (see the module docstring)
            for j in finished:
                save_member_params(out_dir, int(batch_ids[j]), jax.tree_util.tree_map(lambda a: a[j], h.params))
            hd = h._asdict()
            append_results(results_path, [_record(members[int(batch_ids[j])], int(batch_ids[j]), hd, means, j, setup)
                                          for j in finished])
        reported.update(int(batch_ids[j]) for j in finished)
        running = real & (status == train.RUNNING)
        # Frozen members cost as much as running ones: once half the batch is done, drop
        # them (a new batch shape compiles once; the persistent compilation cache helps).
        n_running = int(running.sum())
        if 0 < n_running <= len(batch_ids) // 2 and len(batch_ids) > n_dev:
            keep = np.flatnonzero(running)
            keep = np.concatenate([keep, np.repeat(keep[:1], -len(keep) % n_dev)])
            real = np.arange(len(keep)) < n_running
            batch_ids = batch_ids[keep]
            h = jax.tree_util.tree_map(lambda a: np.asarray(a)[keep], h)
            h = h._replace(status=np.where(real, h.status, train.EXHAUSTED))
            hparams = {k: v[keep] for k, v in hparams.items()}
        if writer:
            save_checkpoint(out_dir, h, {"fingerprint": fingerprint, "ids": [int(i) for i in batch_ids]})
        if progress and writer:
            done_now = len(done_ids) + len(reported)
            _progress(f"[sweep] chunk {chunk + 1}: {done_now}/{len(members)} members finished, {n_running} running "
                      f"(max step {int(step.max())}/{max_steps}), median loss {_median(means['loss']):.4f}, "
                      f"{time.time() - t0:.0f} s")
        if on_chunk is not None:
            on_chunk(chunk, h)
        chunk += 1
        if n_running == 0:
            break
        h = h._replace(stats=jax.tree_util.tree_map(np.zeros_like, h.stats))
    if not writer:
        return []
    return sorted(read_results(results_path), key=lambda r: r["member"])


def _median(values) -> float:
    a = np.asarray(values, np.float64)
    return float(np.median(a[np.isfinite(a)])) if np.any(np.isfinite(a)) else float("nan")


PARAMS_DIR = "params"


def member_params_path(out_dir: str, member: int) -> str:
    """Where :func:`run_sweep` keeps a finished member's parameters."""
    return os.path.join(out_dir, PARAMS_DIR, f"member_{member:05d}.npz")


def save_params_file(path: str, params: Any) -> str:
    """Write a parameter pytree as ``.npz`` (atomically), leaves named by their paths (``cell.w_hh``...)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    flat = {jax.tree_util.keystr(k, simple=True, separator="."): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    buf = io.BytesIO()
    np.savez(buf, **flat)
    _atomic_write(path, buf.getvalue())
    return path


def load_params_file(path: str, template: Any) -> Any:
    """Read a file of :func:`save_params_file` into ``template``'s structure (its leaves are not used)."""
    with np.load(path) as z:
        leaves = [z[jax.tree_util.keystr(k, simple=True, separator=".")]
                  for k, _ in jax.tree_util.tree_flatten_with_path(template)[0]]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)


def save_member_params(out_dir: str, member: int, params: Any) -> str:
    """Write one finished member's parameters to :func:`member_params_path`."""
    return save_params_file(member_params_path(out_dir, member), params)


def load_member_params(out_dir: str, member: int, template: Any) -> Any:
    """Read a member's parameters saved by :func:`run_sweep` into ``template``'s structure."""
    return load_params_file(member_params_path(out_dir, member), template)
