"""Sweeps that never stop on a diverging member, never read another sweep's files, check their members
before compiling, keep to their budget, and leave the compiled batch when finished (issues 19 and 14)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnn_jax
from rnn_jax.repro import sweep, tasks, train

# One Setup object for every sweep here: train_chunk's jit caches on it.
SETUP = train.Setup(cell=rnn_jax.elman(4, "relu"), task=tasks.get("temporal_order", min_length=10, max_length=11),
                    batch_size=4, eval_size=8, eval_batch_size=8)


def _blowup_optimizer(hp):
    """SGD whose step turns NaN at update ``hp["blowup"]``: a member that diverges on cue."""
    boost = lambda count: jnp.where(count.astype(jnp.float32) >= hp["blowup"], jnp.nan, 1.0).astype(jnp.float32)
    return optax.chain(optax.scale_by_schedule(boost), optax.sgd(hp["learning_rate"]))


BLOWUP = SETUP._replace(make_optimizer=_blowup_optimizer)


def test_the_issues_sweep_with_a_member_diverging_in_the_first_chunk_completes(tmp_path):
    # issue 19, defect 1: this raised "refusing to write a checkpoint with non-finite values"
    members = [dict(seed=s, learning_rate=lr, clip=float("inf")) for s, lr in enumerate([0.01, 0.02, 1.0, 1e4])]
    results = sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=20, chunk_steps=10, progress=False)
    outcome = {r["member"]: r["outcome"] for r in results}
    assert outcome[3] == "diverged" and results[3]["error"] is None  # never evaluated: no finite error
    assert [outcome[i] for i in range(3)] == ["exhausted"] * 3 and all(r["steps"] == 20 for r in results[:3])


def test_members_diverging_at_any_position_and_in_any_chunk_never_stop_the_others(tmp_path):
    # diverging members first, in the middle and last in the batch, at update 3 (first chunk), 13 (second)
    # and 23 (the last, third chunk); members 1 and 3 never diverge and must train to the end
    cues = [3, 10**9, 13, 10**9, 23]
    members = [dict(seed=i, learning_rate=0.01, blowup=float(c)) for i, c in enumerate(cues)]
    seen = []
    results = sweep.run_sweep(BLOWUP, members, str(tmp_path), max_steps=25, chunk_steps=10, progress=False,
                              on_chunk=lambda c, h: seen.append(c))
    for r in results:
        cue = cues[r["member"]]
        if cue > 25:
            assert r["outcome"] == "exhausted" and r["steps"] == 25
        else:  # the update at the cue is refused: it stops with `cue` updates applied
            assert r["outcome"] == "diverged" and r["steps"] == cue, r
    assert seen == [0, 1, 2]
    ck = json.load(open(tmp_path / sweep.CHECKPOINT_META))
    assert ck["chunk"] == 3
    for r in results:  # every finished member's parameters are finite (the last before it diverged)
        z = np.load(sweep.member_params_path(str(tmp_path), r["member"]))
        assert all(np.isfinite(z[k]).all() for k in z.files)
    chunks = [json.loads(l) for l in open(tmp_path / sweep.CHUNKS)]
    assert [c["chunk"] for c in chunks] == [0, 1, 2]
    assert chunks[0]["status"] == ["diverged", "running", "running", "running", "running"]


def test_a_changed_sweep_is_refused_in_the_same_folder(tmp_path):
    # issue 19, defect 2: the first sweep's records came back as if they were the second's
    members = [dict(seed=s, learning_rate=0.01, clip=1.0) for s in range(2)]
    first = sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=5, chunk_steps=5, progress=False)
    assert sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=5, chunk_steps=5, progress=False) == first
    changed = [dict(m, learning_rate=0.02) for m in members]
    with pytest.raises(sweep.ForeignRun, match="holds another sweep"):
        sweep.run_sweep(SETUP, changed, str(tmp_path), max_steps=5, chunk_steps=5, progress=False)
    with pytest.raises(sweep.ForeignRun, match="another sweep"):
        sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=6, chunk_steps=5, progress=False)
    # results without the folder's description (copied from elsewhere) are refused, not merged
    os.remove(tmp_path / sweep.SWEEP_META)
    with pytest.raises(sweep.ForeignRun, match="unknown sweep"):
        sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=5, chunk_steps=5, progress=False)


def test_a_foreign_or_tampered_results_line_is_refused(tmp_path):
    members = [dict(seed=s, learning_rate=0.01, clip=1.0) for s in range(2)]
    sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=5, chunk_steps=5, progress=False)
    path = tmp_path / sweep.RESULTS
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    record["config"]["learning_rate"] = 0.5  # a line whose member is not this sweep's member
    path.write_text("\n".join([json.dumps(record)] + lines[1:]) + "\n")
    with pytest.raises(sweep.ForeignRun, match="line 1: not a result of this sweep"):
        sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=5, chunk_steps=5, progress=False)
    path.write_text("\n".join([lines[0], lines[0]]) + "\n")
    with pytest.raises(sweep.ForeignRun, match="member 0 is there twice"):
        sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=5, chunk_steps=5, progress=False)


def test_numpy_typed_members_train_and_are_written_as_plain_json(tmp_path):
    # issue 19, defect 4: int64 seeds crashed the first write, float32 hyperparameters raised KeyError
    members = [dict(seed=s, learning_rate=np.float32(0.01), clip=np.float64(1.0), label=np.str_("x"))
               for s in np.arange(2)]
    results = sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=5, chunk_steps=5, progress=False)
    assert [r["config"]["seed"] for r in results] == [0, 1]
    assert results[0]["config"]["learning_rate"] == pytest.approx(0.01) and results[0]["config"]["label"] == "x"
    assert type(results[0]["config"]["seed"]) is int


@pytest.mark.parametrize("bad,error,phrase", [
    (dict(learning_rate=-0.5), ValueError, r"members\[1\]\['learning_rate'\]: expected a finite number > 0, got -0.5"),
    (dict(clip=-1.0), ValueError, r"members\[1\]\['clip'\]: expected a number > 0 \(inf: no clipping\), got -1.0"),
    (dict(clip=float("nan")), ValueError, r"\['clip'\]: expected a number > 0"),
    (dict(alpha=-1.0), ValueError, r"\['alpha'\]: expected a finite number >= 0"),
    (dict(init_scale=0.0), ValueError, r"\['init_scale'\]: expected a finite number > 0"),
    (dict(seed=-3), TypeError, r"members\[1\]\['seed'\]: expected an integer in \[0, 2\*\*63\), got int -3"),
    (dict(seed=1.5), TypeError, r"\['seed'\]: expected an integer"),
    (dict(learning_rate="fast"), TypeError, r"members\[1\]\['learning_rate'\]: expected a number like members\[0\]"),
    (dict(extra=1.0), ValueError, r"members\[1\]: expected the same keys as members\[0\]"),
    (dict(label=object()), TypeError, r"members\[1\]\['label'\]: a label must be JSON-serialisable"),
])
def test_member_values_are_checked_before_anything_compiles(tmp_path, bad, error, phrase):
    # issue 19, defect 5: learning_rate=-0.5 or clip=-1 trained silently
    members = [dict(seed=0, learning_rate=0.01, clip=1.0, alpha=0.0, init_scale=1.0, label="a"),
               dict(seed=1, learning_rate=0.01, clip=1.0, alpha=0.0, init_scale=1.0, label="b")]
    members[1].update(bad)
    with pytest.raises(error, match=phrase):
        sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=5, chunk_steps=5, progress=False)
    assert not os.path.exists(tmp_path / sweep.SWEEP_META)  # refused before the folder was claimed


def test_members_as_a_whole(tmp_path):
    with pytest.raises(TypeError, match="members: expected a list of dicts"):
        sweep.check_members(SETUP, {"seed": 0})
    with pytest.raises(ValueError, match="at least one member"):
        sweep.check_members(SETUP, [])
    with pytest.raises(ValueError, match=r"paper_optimizer reads \['clip'\]"):
        sweep.check_members(SETUP, [dict(seed=0, learning_rate=0.1)])
    with pytest.raises(ValueError, match="regularize=True needs an 'alpha'"):
        sweep.check_members(SETUP._replace(regularize=True), [dict(seed=0, learning_rate=0.1, clip=1.0)])
    with pytest.raises(ValueError, match="make_optimizer reads the hyperparameter 'blowup'"):
        sweep.run_sweep(BLOWUP, [dict(seed=0, learning_rate=0.1)], str(tmp_path), max_steps=5, progress=False)


def test_max_steps_is_never_exceeded_when_chunks_do_not_divide_it(tmp_path):
    # issue 19, defect 6: max_steps=25 with chunk_steps=10 recorded 30 updates
    members = [dict(seed=s, learning_rate=0.01, clip=1.0) for s in range(2)]
    results = sweep.run_sweep(SETUP, members, str(tmp_path), max_steps=25, chunk_steps=10, progress=False)
    assert [(r["outcome"], r["steps"]) for r in results] == [("exhausted", 25)] * 2
    results = sweep.run_sweep(SETUP, members, str(tmp_path / "b"), max_steps=7, chunk_steps=500, progress=False)
    assert [r["steps"] for r in results] == [7, 7]


def test_explosion_statistics_are_the_chunks_norms_counted_by_hand():
    rng = np.random.default_rng(0)
    norms = rng.uniform(0.5, 1.5, size=(40, 3))
    norms[[3, 17], 0] = [30.0, 12.0]  # two updates above 10x the member's median (~1)
    norms[5, 1] = 9.0  # not above 10x
    norms[:, 2] = np.nan  # a member that applied nothing
    norms[20:, 1] = np.nan  # a member that stopped half-way
    stats = sweep.chunk_norm_stats(norms)
    for j in range(2):
        col = norms[:, j][np.isfinite(norms[:, j])]
        assert stats["max"][j] == col.max() and stats["mean"][j] == pytest.approx(col.mean())
        assert stats["explosions"][j] == np.sum(col > 10 * np.median(col))
    assert list(stats["explosions"]) == [2, 0, 0] and np.isnan(stats["max"][2])


def test_recorded_gradient_norm_is_the_norm_of_the_update_gradient():
    """The norms train_chunk returns are the global norms of jax.grad of the member's minibatch loss."""
    from rnn_jax import model
    from rnn_jax.repro.tasks.base import lengths as batch_lengths

    hp = {"learning_rate": jnp.array([0.01], jnp.float32), "clip": jnp.array([1.0], jnp.float32)}
    state = train.init_members(SETUP, [4], hp)
    _, norms = train.train_chunk(SETUP, hp, state, 1, return_norms=True)
    _, k_batch = jax.random.split(state.key[0])
    batch = SETUP.task.sample(k_batch, 4, nominal_length=train.minibatch_length(SETUP, 0))
    params = jax.tree_util.tree_map(lambda a: a[0], state.params)
    grads = jax.grad(lambda p: model.loss(SETUP.cell, p, batch.inputs, batch.targets, loss="xent", on="last",
                                          lengths=batch_lengths(batch)))(params)
    want = np.sqrt(sum(float(jnp.sum(g.astype(jnp.float64) ** 2)) for g in jax.tree_util.tree_leaves(grads)))
    np.testing.assert_allclose(float(norms[0, 0]), want, rtol=1e-5)


def test_compaction_changes_no_member_and_no_outcome(tmp_path):
    """Members finishing early leave the compiled batch: every member's record and parameters are
    those of the run that keeps them all (the determinism test's tolerance)."""
    cues = [3, 10**9, 4, 10**9, 2, 5, 10**9, 6]  # five of eight diverge in the first chunk
    members = [dict(seed=i, learning_rate=0.01, blowup=float(c)) for i, c in enumerate(cues)]
    sizes = {}

    def record(name):
        return lambda c, h: sizes.setdefault(name, []).append(len(h.step))

    packed = sweep.run_sweep(BLOWUP, members, str(tmp_path / "packed"), max_steps=30, chunk_steps=10, progress=False,
                             on_chunk=record("packed"))
    kept = sweep.run_sweep(BLOWUP, members, str(tmp_path / "kept"), max_steps=30, chunk_steps=10, progress=False,
                           compact=False, on_chunk=record("kept"))
    # the batch after each chunk: three of eight still run after the first, so four slots (one padding)
    assert sizes["kept"] == [8, 8, 8] and sizes["packed"] == [4 * jax.device_count()] * 3
    for a, b in zip(packed, kept):
        assert (a["member"], a["outcome"], a["steps"]) == (b["member"], b["outcome"], b["steps"])
        za = np.load(sweep.member_params_path(str(tmp_path / "packed"), a["member"]))
        zb = np.load(sweep.member_params_path(str(tmp_path / "kept"), b["member"]))
        for k in za.files:
            np.testing.assert_allclose(za[k], zb[k], atol=1e-5)


def test_a_success_on_the_screen_counts_only_once_confirmed(tmp_path, monkeypatch):
    easy = SETUP._replace(task=SETUP.task._replace(success_threshold=2.0))  # every screen passes
    members = [dict(seed=s, learning_rate=0.01, clip=1.0) for s in range(2)]
    calls = []

    def confirm(setup, params, key, step, size):
        calls.append(size)
        return jnp.asarray(3.0)  # ...but the confirmation never does

    monkeypatch.setattr(train, "confirm_error", confirm)
    results = sweep.run_sweep(easy, members, str(tmp_path / "a"), max_steps=10, chunk_steps=5, progress=False,
                              confirm_size=100)
    assert [r["outcome"] for r in results] == ["exhausted", "exhausted"] and set(calls) == {100}
    assert len(calls) == 4 and results[0]["error"] == 3.0  # both members, both chunks
    monkeypatch.setattr(train, "confirm_error", lambda *a: jnp.asarray(0.5))
    results = sweep.run_sweep(easy, members, str(tmp_path / "b"), max_steps=10, chunk_steps=5, progress=False,
                              confirm_size=100)
    assert [(r["outcome"], r["steps"], r["error"]) for r in results] == [("solved", 5, 0.5)] * 2
