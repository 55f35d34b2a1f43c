"""Run a sweep of many members to completion: progress, results that survive, resume, sharding.

:func:`run_sweep` drives :mod:`rnn_jax.repro.train` from the host. Between compiled
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
import math
import os
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnn_jax.repro import train
from rnn_jax._checks import UserTypeError, UserValueError
from rnn_jax.diagnostics import spectral_radius

RESULTS = "results.jsonl"
CHECKPOINT = "checkpoint.npz"
CHECKPOINT_META = "checkpoint.json"
SWEEP_META = "sweep.json"
CHUNKS = "chunks.jsonl"


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


def save_checkpoint(directory: str, tree: Any, meta: dict, *, finite: Any = None) -> None:
    """Write ``tree``'s leaves as ``checkpoint.npz`` plus a JSON sidecar with its SHA-256 (atomically).

    ``finite``: the part of ``tree`` that must hold only finite floats (default: all of it);
    a non-finite value there is refused, never written.
    """
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
    must = leaves if finite is None else [np.asarray(x) for x in jax.tree_util.tree_leaves(finite)]
    if any(np.issubdtype(l.dtype, np.floating) and not np.all(np.isfinite(l)) for l in must):
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


# ---------------------------------------------------------------- members


class ForeignRun(UserValueError):
    """An output folder that holds the files of another sweep (other setup, members or budget)."""


# Hyperparameters the paper's optimizers read, with the values that make sense: (test, what is expected).
_RANGES = {
    "learning_rate": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "clip": (lambda v: v > 0 and not math.isnan(v), "a number > 0 (inf: no clipping)"),
    "alpha": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "init_scale": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
}


def _plain(value: Any) -> Any:
    """NumPy scalars as Python numbers (a seed from ``np.arange`` is an ``int64``)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_members(setup: train.Setup, members: Any) -> List[Dict[str, Any]]:
    """Validate a sweep's members as a whole, before anything compiles; returns them as plain Python.

    Every member is a dict with the same keys: an integer ``seed`` (``>= 0``), a number for
    each hyperparameter the optimizer reads (``learning_rate`` finite > 0, ``clip`` > 0 or
    ``inf``, ``alpha`` finite >= 0, ``init_scale`` finite > 0, any other number not NaN),
    and any JSON-serialisable labels (strings, ...). NumPy scalars are accepted and turned
    into Python numbers. Raises ``TypeError``/``ValueError`` naming the member and the key.
    """
    if isinstance(members, (str, bytes, Mapping)) or not isinstance(members, Sequence):
        raise UserTypeError(f"members: expected a list of dicts (one per member), got {type(members).__name__}")
    if not members:
        raise UserValueError("members: expected at least one member, got an empty list")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, Mapping):
            raise UserTypeError(f"members[{i}]: expected a dict, got {type(m).__name__}")
        out.append({str(k): _plain(v) for k, v in m.items()})
    keys = set(out[0])
    for i, m in enumerate(out):
        if set(m) != keys:
            raise UserValueError(f"members[{i}]: expected the same keys as members[0] ({sorted(keys)}), got {sorted(m)}")
    if "seed" not in keys:
        raise UserValueError("members: every member needs a 'seed' (an integer), members[0] has none")
    numeric = {k for k in keys if k != "seed" and _is_number(out[0][k])}
    for i, m in enumerate(out):
        seed = m["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise UserTypeError(f"members[{i}]['seed']: expected an integer in [0, 2**63), got {type(seed).__name__} {seed!r}")
        for k in sorted(keys - {"seed"}):
            v = m[k]
            if (k in numeric) != _is_number(v):
                raise UserTypeError(f"members[{i}][{k!r}]: expected {'a number' if k in numeric else type(out[0][k]).__name__} "
                                f"like members[0], got {type(v).__name__} {v!r}")
            if k in numeric:
                ok, want = _RANGES.get(k, (lambda x: not math.isnan(x), "a number (not NaN)"))
                if not ok(float(v)):
                    raise UserValueError(f"members[{i}][{k!r}]: expected {want}, got {v!r}")
            else:
                try:
                    json.dumps(v)
                except (TypeError, ValueError) as e:
                    raise UserTypeError(f"members[{i}][{k!r}]: a label must be JSON-serialisable, got "
                                    f"{type(v).__name__} ({e})") from None
    if setup.make_optimizer is train.paper_optimizer:
        missing = {"learning_rate", "clip"} - numeric
        if missing:
            raise UserValueError(f"members: train.paper_optimizer reads {sorted(missing)}; expected every member to give "
                             f"them as numbers, got keys {sorted(keys)}")
    if setup.regularize and "alpha" not in numeric:
        raise UserValueError(f"members: regularize=True needs an 'alpha' (Ω's weight) in every member, got keys {sorted(keys)}")
    return out


def hyperparameter_names(members: Sequence[Dict[str, Any]]) -> List[str]:
    """The numeric member keys that reach the optimizer (all but ``seed`` and ``init_scale``)."""
    return sorted(k for k, v in members[0].items() if k not in ("seed", "init_scale") and _is_number(v))


# ---------------------------------------------------------------- driver


def _fingerprint(setup: train.Setup, members: Sequence[dict], max_steps: int, chunk_steps: int,
                 confirm_size: Optional[int] = None) -> str:
    desc = {
        "cell": [setup.cell.kind, setup.cell.hidden_size, setup.cell.activation],
        "task": [setup.task.name, setup.task.min_length, setup.task.max_length, setup.steps],
        "batch_size": setup.batch_size, "regularize": setup.regularize, "eval_size": setup.eval_size,
        "dtype": str(jnp.dtype(setup.dtype)), "members": list(members), "max_steps": max_steps,
        "chunk_steps": chunk_steps, "length_seed": setup.length_seed, "confirm_size": confirm_size,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _number(x: Any) -> Optional[float]:
    """A float for JSON, None where it is not finite (strict JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _record(member: dict, index: int, h: train.MemberState, means: Dict[str, np.ndarray], chunk: Dict[str, np.ndarray],
            run: Dict[str, np.ndarray], j: int, fingerprint: str) -> dict:
    w_hh = np.asarray(jax.tree_util.tree_map(lambda a: a[j], h.params).cell.w_hh, np.float64)
    finite = bool(np.all(np.isfinite(w_hh)))
    return {
        "member": index,
        "fingerprint": fingerprint,
        "config": member,
        "outcome": train.STATUS_NAMES[int(h.status[j])],
        "steps": int(h.step[j]),
        "error": _number(h.error[j]),
        "metrics": {
            "loss": _number(means["loss"][j]),
            "grad_norm": _number(means["grad_norm"][j]),
            "omega": _number(means["omega"][j]),
            "clipped_fraction": _number(means["clipped_fraction"][j]),
            "grad_norm_max": _number(chunk["max"][j]),
            "explosions": int(chunk["explosions"][j]),
            "run_grad_norm_max": _number(run["max"][j]),
            "run_explosions": int(run["explosions"][j]),
            "spectral_radius": _number(np.max(np.asarray(spectral_radius(w_hh)))) if finite else None,
        },
    }


COMPACT_UNIT = 4
"""Batch sizes after compaction are ``devices · COMPACT_UNIT · 2^k`` (each size compiles once)."""

EXPLOSION_FACTOR = 10.0
"""An update *explodes* when its gradient norm exceeds this many times its chunk's median."""


def chunk_norm_stats(norms: np.ndarray) -> Dict[str, np.ndarray]:
    """Per member, from a chunk's ``(updates, members)`` gradient norms (nan: no update applied):
    the mean, the largest, the median and the explosion count (norms above
    :data:`EXPLOSION_FACTOR` × the median)."""
    norms = np.asarray(norms, np.float64)
    applied = np.isfinite(norms)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: members that applied nothing
        median = np.nanmedian(norms, axis=0)
        mean = np.nanmean(norms, axis=0)
        largest = np.nanmax(np.where(applied, norms, np.nan), axis=0)
        explosions = np.sum(applied & (norms > EXPLOSION_FACTOR * median[None, :]), axis=0)
    return {"mean": mean, "max": largest, "median": median, "explosions": explosions.astype(np.int64)}


def _claim(out_dir: str, fingerprint: str, desc: dict) -> None:
    """Mark ``out_dir`` as this sweep's, or refuse it when it holds another sweep's files."""
    path = os.path.join(out_dir, SWEEP_META)
    if os.path.exists(path):
        try:
            with open(path) as f:
                theirs = json.load(f).get("fingerprint")
        except ValueError as e:
            raise ForeignRun(f"{path}: unreadable ({e}); expected this sweep's description, use a new output folder") from e
        if theirs != fingerprint:
            raise ForeignRun(f"{out_dir} holds another sweep (fingerprint {theirs}, expected {fingerprint}: other setup, "
                             f"members, max_steps or chunk_steps); use a new output folder or remove it")
        return
    leftovers = [n for n in (RESULTS, CHECKPOINT_META, CHUNKS) if os.path.exists(os.path.join(out_dir, n))]
    if leftovers:
        raise ForeignRun(f"{out_dir} holds {', '.join(leftovers)} but no {SWEEP_META}: files of an unknown sweep; "
                         f"use a new output folder or remove them")
    _atomic_write(path, json.dumps(dict(desc, fingerprint=fingerprint), sort_keys=True, indent=1, default=str).encode())


def _own_results(path: str, members: Sequence[dict], fingerprint: str) -> Dict[int, dict]:
    """The finished members in ``results.jsonl``, each checked to be this sweep's member."""
    done = {}
    for n, r in enumerate(read_results(path)):
        i = r.get("member") if isinstance(r, dict) else None
        if (not isinstance(i, int) or not 0 <= i < len(members) or r.get("fingerprint") != fingerprint
                or r.get("config") != json.loads(json.dumps(members[i]))):
            raise ForeignRun(f"{path}, line {n + 1}: not a result of this sweep (fingerprint "
                             f"{r.get('fingerprint') if isinstance(r, dict) else None}, member {i}; expected "
                             f"{fingerprint} and one of members 0..{len(members) - 1} with its config); "
                             f"use a new output folder")
        if i in done:
            raise ForeignRun(f"{path}, line {n + 1}: member {i} is there twice; the file was not written by run_sweep")
        done[i] = r
    return done


def _bucket(n_running: int, current: int, unit: int) -> int:
    """The batch size that holds ``n_running`` members: the smallest ``unit · 2^k`` that does,
    or ``current`` if none is smaller (a few sizes: a few compiles)."""
    size = unit
    while size < n_running:
        size *= 2
    return min(size, current)


def _cut_chunk_log(path: str, chunks_done: int) -> None:
    """Drop the chunk lines of chunks a resumed run redoes (written after the last checkpoint)."""
    records = read_results(path)
    keep = [r for r in records if r.get("chunk", -1) < chunks_done]
    if len(keep) != len(records):
        data = b"".join((json.dumps(r, sort_keys=True) + "\n").encode() for r in keep)
        _atomic_write(path, data)


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
    compact: bool = True,
    confirm_size: Optional[int] = None,
    transform_init: Optional[Callable[[train.MemberState, List[Dict[str, Any]]], train.MemberState]] = None,
) -> List[dict]:
    """Train every member until it is solved, diverges or reaches ``max_steps`` updates.

    Args:
      setup: the static :class:`~rnn_jax.repro.train.Setup`.
      members: one dict per member, the same keys in each: ``seed`` plus a value for
        every hyperparameter the optimizer reads (e.g. ``learning_rate``, ``clip``,
        ``alpha``) and optionally ``init_scale``; other keys are kept in the results as
        labels. Checked as a whole before anything compiles (:func:`check_members`).
      out_dir: the folder of ``results.jsonl``, ``chunks.jsonl`` and the checkpoint; it
        belongs to one sweep (``sweep.json`` holds its fingerprint): a folder of another
        sweep is refused (:class:`ForeignRun`), never merged.
      max_steps: update budget per member (never exceeded; the last chunk is shorter when
        ``chunk_steps`` does not divide it); chunk_steps: updates per compiled chunk
        (evaluation, results and checkpoint happen between chunks).
      mesh: a 1-D ``members`` mesh; default every visible device.
      on_chunk: optional callback ``(chunk_index, host_state)`` (tests use it).
      compact: after each chunk, re-pack the members still running into a smaller
        batch (sizes ``devices · 4 · 2^k``: one compile each), so that finished members
        stop costing compute. ``False`` keeps every member in the batch to the end.
      confirm_size: when given, ``setup.eval_size`` sequences are a cheap screen between
        chunks, and a member that passes it is SOLVED only once its error on
        ``confirm_size`` fresh sequences is under the threshold too (the paper: 10,000);
        otherwise it trains on. Its recorded ``error`` is then the confirmed one.
      transform_init: optional ``(state, slot_members) -> state``, applied to the freshly
        initialised :class:`~rnn_jax.repro.train.MemberState` of the batch before training
        (``slot_members[j]``: the member dict of slot ``j``; padding slots repeat a member), e.g.
        an initial value that ``Setup`` cannot express per member; it must keep every shape.
        A resumed run starts from its checkpoint (the transformed state), and the fingerprint
        covers the members, not the function: let the members carry what it reads as labels.

    Returns:
      Every member's result record (from this run and earlier ones), by member index.
    """
    from rnn_jax._checks import check_positive_int as check
    max_steps, chunk_steps = check("max_steps", max_steps), check("chunk_steps", chunk_steps)
    if confirm_size is not None:
        confirm_size = check("confirm_size", confirm_size)
    members = check_members(setup, members)
    hp_names = hyperparameter_names(members)
    writer = jax.process_index() == 0
    fingerprint = _fingerprint(setup, members, max_steps, chunk_steps, confirm_size)
    results_path, chunks_path = os.path.join(out_dir, RESULTS), os.path.join(out_dir, CHUNKS)
    if writer:
        os.makedirs(out_dir, exist_ok=True)
        _claim(out_dir, fingerprint, {"members": len(members), "max_steps": max_steps, "chunk_steps": chunk_steps,
                                      "task": setup.task.name, "cell": setup.cell.kind})
    done = _own_results(results_path, members, fingerprint) if writer else {}
    finished_mask = np.array([i in done for i in range(len(members))])
    if jax.process_count() > 1:  # process 0 owns the files; the others learn what is done from it
        finished_mask = np.asarray(multihost_utils.broadcast_one_to_all(finished_mask))
    done_ids = set(np.flatnonzero(finished_mask).tolist())
    todo = [i for i in range(len(members)) if i not in done_ids]
    mesh = mesh or member_mesh()
    n_dev = mesh.devices.size
    if not todo:
        return [done[i] for i in sorted(done)] if writer else []

    # Pad the member axis to a multiple of the device count with frozen copies.
    padded = todo + [todo[0]] * (-len(todo) % n_dev)
    hparams = {k: np.asarray([float(members[i][k]) for i in padded]) for k in hp_names}
    scale = np.asarray([float(members[i].get("init_scale", 1.0)) for i in padded])
    try:
        fresh = train.init_members(setup, [members[i]["seed"] for i in padded], hparams,
                                   init_scale=scale if "init_scale" in members[0] else None)
        # trace one member's optimizer update (no compile): a hyperparameter it reads and the members lack
        one = jax.tree_util.tree_map(lambda a: a[0], (fresh.params, fresh.opt_state))
        hp0 = {k: jnp.asarray(v[0], setup.dtype) for k, v in hparams.items()}
        jax.eval_shape(lambda p, o: setup.make_optimizer(hp0).update(p, o, p), *one)
    except KeyError as e:
        raise UserValueError(f"members: setup.make_optimizer reads the hyperparameter {e}, which the members do not "
                             f"give (they have {sorted(members[0])})") from None
    if transform_init is not None:
        shapes = lambda t: jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), t)
        before, fresh = shapes(fresh), transform_init(fresh, [members[i] for i in padded])
        if shapes(fresh) != before:
            raise UserValueError("transform_init: expected a MemberState with the shapes and dtypes of the one it got")
    fresh = fresh._replace(status=fresh.status.at[len(todo):].set(train.EXHAUSTED))
    zeros = np.zeros(len(padded))
    host = {"state": jax.tree_util.tree_map(np.asarray, fresh), "run_max": zeros, "run_explosions": zeros.astype(np.int64)}
    batch_ids = np.asarray(padded, np.int64)  # member id of each slot of the vmapped batch
    chunk = 0

    loaded = load_checkpoint(out_dir, host, fingerprint) if writer else None
    if loaded is not None:
        ck, meta = loaded
        ids = [int(i) for i in meta["ids"]]
        pending = [j for j, i in enumerate(ids) if i in set(todo)]  # slots of members not yet reported
        if sorted(set(ids[j] for j in pending)) == sorted(todo):
            # the checkpoint's batch (maybe compacted) holds every unfinished member: take it as it is
            host = jax.tree_util.tree_map(np.asarray, ck)
            batch_ids = np.asarray(ids, np.int64)
            chunk = int(meta.get("chunk", 0))
        if progress:
            _progress(f"[sweep] resumed from checkpoint: {len(done_ids)} finished, {len(todo)} to go")
    if writer:
        _cut_chunk_log(chunks_path, chunk)
    if jax.process_count() > 1:
        host = multihost_utils.broadcast_one_to_all(host)
        batch_ids = np.asarray(multihost_utils.broadcast_one_to_all(batch_ids))
        chunk = int(multihost_utils.broadcast_one_to_all(np.asarray(chunk)))
    hparams = {k: np.asarray([float(members[int(i)][k]) for i in batch_ids]) for k in hp_names}

    # a slot is real when it is the first slot of a member not yet reported (the others are padding)
    todo_set = set(todo)
    first = {}
    for j, i in enumerate(batch_ids.tolist()):
        first.setdefault(i, j)
    real = np.array([i in todo_set and first[i] == j for j, i in enumerate(batch_ids.tolist())])
    h = host["state"]
    h = h._replace(stats=jax.tree_util.tree_map(np.zeros_like, h.stats),  # a checkpoint keeps its reported chunk's sums
                   status=np.where(real, np.asarray(h.status), np.where(np.asarray(h.status) == train.RUNNING,
                                                                         train.EXHAUSTED, np.asarray(h.status))))
    run_max, run_explosions = np.asarray(host["run_max"], np.float64), np.asarray(host["run_explosions"], np.int64)
    reported = set()
    t0 = time.time()
    while True:
        status, step = np.asarray(h.status), np.asarray(h.step)
        live = real & (status == train.RUNNING)
        remaining = max_steps - int(step[live].max()) if live.any() else 0
        num_steps = max(1, min(chunk_steps, remaining))
        state, norms = train.train_chunk(setup, shard_members(hparams, mesh), shard_members(h, mesh), num_steps,
                                         np.int32(max_steps), return_norms=True)
        state = train.evaluate_members(setup, state)
        before = np.asarray(h.status)
        h = to_host(state)
        norms = np.asarray(to_host(norms))
        status, step = np.array(h.status), np.asarray(h.step)
        if confirm_size is not None:
            # a success on the screen (setup.eval_size sequences) counts once confirmed on confirm_size more
            error = np.array(h.error)
            for j in np.flatnonzero(real & (before == train.RUNNING) & (status == train.SOLVED)):
                params_j = jax.tree_util.tree_map(lambda a: jnp.asarray(a[j]), h.params)
                error[j] = float(train.confirm_error(setup, params_j, jnp.asarray(h.key[j]), jnp.asarray(h.step[j]),
                                                     confirm_size))
                if not error[j] < setup.task.success_threshold:
                    status[j] = train.RUNNING
            h = h._replace(error=error)
        status = np.where((status == train.RUNNING) & (step >= max_steps), train.EXHAUSTED, status)
        h = h._replace(status=status)
        means = train.stats_means(h.stats)
        chunk_stats = chunk_norm_stats(norms)
        run_max = np.fmax(run_max, np.nan_to_num(chunk_stats["max"], nan=0.0))
        run_explosions = run_explosions + chunk_stats["explosions"]
        run = {"max": run_max, "explosions": run_explosions}
        active = [j for j in range(len(batch_ids)) if real[j] and int(batch_ids[j]) not in reported]
        finished = [j for j in active if status[j] != train.RUNNING]
        if writer:
            # parameters first, then the result lines, the chunk line and the checkpoint: each step is
            # atomic, and a kill between them is repaired by the rerun (see the module docstring)
            for j in finished:
                save_member_params(out_dir, int(batch_ids[j]), jax.tree_util.tree_map(lambda a: a[j], h.params))
            append_results(results_path, [_record(members[int(batch_ids[j])], int(batch_ids[j]), h, means, chunk_stats,
                                                  run, j, fingerprint) for j in finished])
            append_results(chunks_path, [{
                "chunk": chunk, "fingerprint": fingerprint, "members": [int(batch_ids[j]) for j in active],
                "steps": [int(step[j]) for j in active],
                "status": [train.STATUS_NAMES[int(status[j])] for j in active],
                "loss": [_number(means["loss"][j]) for j in active],
                "grad_norm_mean": [_number(chunk_stats["mean"][j]) for j in active],
                "grad_norm_median": [_number(chunk_stats["median"][j]) for j in active],
                "grad_norm_max": [_number(chunk_stats["max"][j]) for j in active],
                "explosions": [int(chunk_stats["explosions"][j]) for j in active],
                "clipped_fraction": [_number(means["clipped_fraction"][j]) for j in active],
                "error": [_number(h.error[j]) for j in active],
            }])
        reported.update(int(batch_ids[j]) for j in finished)
        median_loss = _median(means["loss"][real] if real.any() else means["loss"])
        running = real & (status == train.RUNNING)
        n_running = int(running.sum())
        size = _bucket(n_running, len(batch_ids), n_dev * COMPACT_UNIT) if compact else len(batch_ids)
        if n_running and size < len(batch_ids):
            # finished members leave the compiled batch: re-pack the running ones (frozen copies pad it)
            keep = np.flatnonzero(running)
            keep = np.concatenate([keep, np.repeat(keep[:1], size - len(keep))])
            real = np.arange(size) < n_running
            batch_ids = batch_ids[keep]
            h = jax.tree_util.tree_map(lambda a: np.asarray(a)[keep], h)
            h = h._replace(status=np.where(real, h.status, train.EXHAUSTED))
            hparams = {k: v[keep] for k, v in hparams.items()}
            run_max, run_explosions = run_max[keep], run_explosions[keep]
        chunk += 1
        if writer:
            save_checkpoint(out_dir, {"state": h, "run_max": run_max, "run_explosions": run_explosions},
                            {"fingerprint": fingerprint, "ids": [int(i) for i in batch_ids], "chunk": chunk},
                            finite=(h.params, h.opt_state))
        if progress and writer:
            done_now = len(done_ids) + len(reported)
            live_steps = step[running] if n_running else step
            _progress(f"[sweep] chunk {chunk}: {done_now}/{len(members)} members finished, {n_running} running "
                      f"(step {int(live_steps.max())}/{max_steps}, batch {len(batch_ids)}), median loss "
                      f"{median_loss:.4f}, "
                      f"{time.time() - t0:.0f} s")
        if on_chunk is not None:
            on_chunk(chunk - 1, h)
        if n_running == 0:
            break
        h = h._replace(stats=jax.tree_util.tree_map(np.zeros_like, h.stats))
    if not writer:
        return []
    return [r for r in sorted(read_results(results_path), key=lambda r: r["member"])]


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
