"""Polyphonic music (issue #16): the chorale loader and its stored split, the Bernoulli loss
against a hand computation, Ω for per-step losses against the library's regulariser, the
reference models against brute force, and tiny end-to-end runs that must beat the
independent-pitch frequency model. Tests that parse chorales need music21 and skip without it."""

import importlib.util
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fractions import Fraction

import rnn_jax
from rnn_jax import diagnostics, model
from rnn_jax.repro import next_step, regularizer
from rnn_jax.repro.data import music as data_music
from rnn_jax.repro.experiments import music, natural

HAVE_MUSIC21 = importlib.util.find_spec("music21") is not None
needs_music21 = pytest.mark.skipif(not HAVE_MUSIC21, reason="music21 is not installed (pip install 'rnn_jax[music]')")


# ---------------------------------------------------------------- the stored split


def test_split_is_a_fixed_partition_of_named_pieces():
    split = data_music.load_split()
    names = {s: split[s] for s in data_music.SPLITS}
    assert {s: len(v) for s, v in names.items()} == {"train": 218, "valid": 73, "test": 71} == split["sizes"]
    everything = [n for v in names.values() for n in v]
    assert len(everything) == len(set(everything))  # disjoint
    assert set(everything) == set(split["digests"])  # every piece has its roll's digest
    assert not set(everything) & set(split["excluded"])
    assert all(v == sorted(v) for v in names.values())
    assert (split["lowest_pitch"], split["highest_pitch"], split["frame_quarters"]) == (36, 81, "1/2")
    # stability: the file is the data set's definition; changing it changes every result key
    assert data_music.split_fingerprint() == "5ebe834e1d0d59f5"
    assert data_music.split_names("valid") == split["valid"]
    with pytest.raises(ValueError, match="split"):
        data_music.split_names("validation")


def test_make_split_is_deterministic_and_keeps_tunes_and_duplicates_apart():
    rng = np.random.default_rng(0)
    embed = lambda r, shift: np.pad(r, ((0, 0), (shift, 6 - shift)))
    rolls = {f"p{i:02d}": embed(r, 0) for i, r in enumerate(data_music.synthetic_rolls(rng, 30, pitches=40))}
    rolls["q_dup"] = embed(rolls["p03"][:, :40], 2)  # the same roll a whole tone up
    tune = rolls["p05"].copy()
    tune[:, :3] = 1 - tune[:, :3]  # another harmonisation of p05's soprano line (bass changed)
    rolls["q_tune"] = tune
    a = data_music.make_split(rolls, seed=1)
    b = data_music.make_split(dict(reversed(list(rolls.items()))), seed=1)
    assert a == b  # independent of the order the corpus lists its pieces in
    assert a["excluded"] == {"q_dup": "same roll as p03 (up to transposition)"}
    where = {n: s for s in data_music.SPLITS for n in a[s]}
    assert where["q_tune"] == where["p05"]
    assert sorted(where) == sorted(set(rolls) - {"q_dup"})
    assert len(a["train"]) >= 0.6 * 30 and len(a["valid"]) >= 0.2 * 30 - 2


# ---------------------------------------------------------------- rolls


def test_roll_from_notes_samples_each_frame_at_its_start():
    notes = [(60, Fraction(0), Fraction(1)),          # a quarter: frames 0, 1
             (64, Fraction(1, 2), Fraction(1, 4)),    # a sixteenth on the grid: frame 1
             (65, Fraction(3, 4), Fraction(1, 4)),    # a sixteenth off the grid: no frame
             (67, Fraction(3, 4), Fraction(1, 2)),    # sounds at 1.0: frame 2
             (72, Fraction(1), Fraction(0)),          # a grace note: skipped
             (48, Fraction(1), Fraction(3, 2))]       # frames 2, 3, 4
    roll = data_music.roll_from_notes(notes, Fraction(5, 2), lowest=48, highest=72)
    expected = np.zeros((5, 25), np.uint8)
    expected[[0, 1], 60 - 48] = 1
    expected[1, 64 - 48] = 1
    expected[2, 67 - 48] = 1
    expected[[2, 3, 4], 0] = 1
    np.testing.assert_array_equal(roll, expected)
    with pytest.raises(data_music.MusicDataError, match="pitch 84"):
        data_music.roll_from_notes([(84, 0, 1)], 1, lowest=48, highest=72, name="x")


def test_next_step_arrays_shift_pad_and_mask():
    rng = np.random.default_rng(1)
    rolls = data_music.synthetic_rolls(rng, 3, frames=(5, 9), pitches=6)
    arrays = data_music.next_step_arrays(rolls, time=10)
    assert arrays.inputs.shape == arrays.targets.shape == (3, 10, 6)
    for i, r in enumerate(rolls):
        n = r.shape[0] - 1
        assert arrays.lengths[i] == n
        np.testing.assert_array_equal(arrays.inputs[i, :n], r[:-1])
        np.testing.assert_array_equal(arrays.targets[i, :n], r[1:])
        assert not arrays.inputs[i, n:].any() and not arrays.targets[i, n:].any()
    # the padding is masked: garbage there changes neither the loss nor its gradient
    cell = rnn_jax.elman(5)
    params = model.init(jax.random.key(0), cell, 6, 6, dtype=jnp.float64)
    xs, ts = (jnp.asarray(a, jnp.float64) for a in arrays[:2])
    lengths = jnp.asarray(arrays.lengths)
    mask = jnp.arange(10, dtype=jnp.int32)[None, :, None] >= lengths[:, None, None]
    noisy = lambda a: jnp.where(mask, 7.0, a)
    f = lambda p, x, t: next_step.loss(cell, p, x, t, lengths, "bernoulli")
    np.testing.assert_allclose(f(params, xs, ts), f(params, noisy(xs), noisy(ts)), rtol=1e-12)
    g1, g2 = jax.grad(f)(params, xs, ts), jax.grad(f)(params, noisy(xs), noisy(ts))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14), g1, g2)


def test_length_buckets_group_and_pad():
    rolls = [np.ones((n + 1, 3), np.uint8) for n in (4, 9, 5, 12, 3)]
    buckets = data_music.length_buckets(rolls, (5, 10, 20))
    assert [b.inputs.shape for b in buckets] == [(3, 5, 3), (1, 10, 3), (1, 20, 3)]
    assert sorted(buckets[0].lengths.tolist()) == [3, 4, 5]
    with pytest.raises(ValueError, match="last edge"):
        data_music.length_buckets(rolls, (5, 10))


# ---------------------------------------------------------------- loading, errors, cache


def test_missing_music21_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "music21", None)  # import music21 now raises ImportError
    with pytest.raises(data_music.MissingMusic21Error, match=r"rnn_jax\[music\]"):
        data_music.require_music21()
    with pytest.raises(ImportError, match="music21"):
        data_music.load_rolls(cache_dir="/nonexistent/never-written")


def test_the_cache_is_read_without_music21_and_a_drift_is_reported(tmp_path, monkeypatch):
    split = data_music.load_split()
    names = [n for s in data_music.SPLITS for n in split[s]]
    rng = np.random.default_rng(2)
    fake = {n: r for n, r in zip(names, data_music.synthetic_rolls(rng, len(names), frames=(3, 4)))}
    data_music._write_cache(data_music.cache_path(str(tmp_path)), fake, "test")
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.warns(UserWarning, match="parse differently"):
        rolls = data_music.load_rolls(str(tmp_path))
    assert list(rolls["test"]) == split["test"]
    np.testing.assert_array_equal(rolls["valid"][split["valid"][0]], fake[split["valid"][0]])


@needs_music21
def test_parsed_chorales_match_the_stored_digests(tmp_path):
    rolls = data_music.load_rolls(str(tmp_path), counts={"train": 2, "valid": 1, "test": 1})
    split = data_music.load_split()
    assert [list(rolls[s]) for s in data_music.SPLITS] == [split["train"][:2], split["valid"][:1], split["test"][:1]]
    for part in rolls.values():
        for name, roll in part.items():
            assert roll.dtype == np.uint8 and roll.shape[1] == data_music.NUM_PITCHES
            assert data_music.roll_digest(roll) == split["digests"][name]
            assert 1 <= roll.sum(axis=1).max() <= 4 + 1  # four voices (a unison merges, a divisi adds)
    assert not os.listdir(tmp_path)  # a subset is not cached


@needs_music21
def test_a_piece_that_cannot_be_parsed_is_named(tmp_path):
    bad = tmp_path / "broken.xml"
    bad.write_text("<score-partwise><part id='P1'><measure>not music")
    with pytest.raises(data_music.MusicDataError, match="'broken'"):
        data_music.parse_piece("broken", str(bad))
    with pytest.raises(data_music.MusicDataError, match="not in music21"):
        data_music.parse_piece("bwv0.0")


# ---------------------------------------------------------------- the loss and Ω


def test_bernoulli_nll_against_a_hand_computation():
    logits = np.array([[[2.0, -1.0, 0.5], [0.0, 30.0, -30.0]], [[-3.0, 1.5, 0.2], [1.0, 1.0, 1.0]]])
    targets = np.array([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    sig = 1 / (1 + np.exp(-logits))
    by_hand = -np.sum(targets * np.log(sig) + (1 - targets) * np.log(1 - sig), axis=-1)
    got = next_step.bernoulli_nll(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(got, by_hand, rtol=1e-10)
    lengths = jnp.array([2, 1])  # the second sequence's second step is padding
    total, count = next_step.summed_loss(jnp.asarray(logits), jnp.asarray(targets), lengths, "bernoulli")
    np.testing.assert_allclose([total, count], [by_hand[0].sum() + by_hand[1, 0], 3], rtol=1e-10)
    np.testing.assert_allclose(next_step.mean_loss(jnp.asarray(logits), jnp.asarray(targets), lengths, "bernoulli"),
                               (by_hand[0].sum() + by_hand[1, 0]) / 3, rtol=1e-10)
    with pytest.raises(ValueError, match="targets"):
        next_step.bernoulli_nll(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


def _model(hidden=6, features=5, outputs=4):
    cell = rnn_jax.elman(hidden)
    params = model.init(jax.random.key(0), cell, features, outputs, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (3, 7, features), jnp.float64)
    return cell, params, xs, jnp.array([7, 4, 1])


def test_state_gradients_and_omega_equal_the_librarys_for_its_losses():
    cell, params, xs, lengths = _model()
    targets = jax.random.normal(jax.random.key(2), (3, 7, 4), jnp.float64)
    ys = rnn_jax.unroll(cell, params.cell, xs, lengths=lengths)[1]
    direct = jax.grad(lambda y: model.loss_from_outputs(params.readout, y, targets, loss="mse", on="every",
                                                        lengths=lengths))(ys)
    deltas = next_step.elman_state_gradients(cell, params.cell.w_hh, ys, direct)
    reference = diagnostics.state_gradients(cell, params, xs, targets, loss="mse", on="every", lengths=lengths)
    np.testing.assert_allclose(deltas, reference.deltas.hidden, atol=1e-14)
    # softmax cross-entropy: loss, Ω and the regularised gradient equal rnn_jax.repro.regularizer's
    labels = jax.random.randint(jax.random.key(3), (3, 7), 0, 4)
    loss, omega, grads = next_step.loss_and_grad(cell, params, xs, labels, lengths, "softmax", alpha=2.0)
    loss2, omega2, grads2 = regularizer.loss_and_grad_with_omega(cell, params, xs, labels, 2.0, loss="xent",
                                                                 on="every", lengths=lengths)
    np.testing.assert_allclose([loss, omega], [loss2, omega2], rtol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14), grads, grads2)


def test_bernoulli_gradient_is_autodiffs_and_omega_reaches_only_w_hh():
    cell, params, xs, lengths = _model(outputs=5)
    targets = (jax.random.uniform(jax.random.key(4), (3, 7, 5)) < 0.3).astype(jnp.float64)
    loss, omega, grads = next_step.loss_and_grad(cell, params, xs, targets, lengths, "bernoulli")
    auto = jax.grad(lambda p: next_step.loss(cell, p, xs, targets, lengths, "bernoulli"))(params)
    assert omega == 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14), grads, auto)
    _, omega, regularised = next_step.loss_and_grad(cell, params, xs, targets, lengths, "bernoulli", alpha=3.0)
    assert omega > 0
    np.testing.assert_array_equal(regularised.readout.w, grads.readout.w)
    np.testing.assert_array_equal(regularised.cell.w_ih, grads.cell.w_ih)
    assert not np.allclose(regularised.cell.w_hh, grads.cell.w_hh)
    with pytest.raises(ValueError, match="elman"):
        next_step.loss_and_grad(rnn_jax.gru(4), model.init(jax.random.key(0), rnn_jax.gru(4), 5, 5, dtype=jnp.float64),
                                xs, targets, lengths, "bernoulli", alpha=1.0)


# ---------------------------------------------------------------- reference models


def test_reference_models_equal_brute_force():
    rng = np.random.default_rng(3)
    train = data_music.synthetic_rolls(rng, 6, pitches=8)
    test = data_music.synthetic_rolls(rng, 4, pitches=8)
    p = data_music.frequency_model(train)
    targets = np.concatenate([r[1:] for r in train])
    np.testing.assert_allclose(p, (targets.sum(0) + 0.5) / (len(targets) + 1))
    frames = np.concatenate([r[1:] for r in test]).astype(np.float64)
    logit = np.log(p) - np.log1p(-p)
    brute = np.mean(next_step.bernoulli_nll(jnp.asarray(np.broadcast_to(logit, frames.shape)), jnp.asarray(frames)))
    np.testing.assert_allclose(data_music.frequency_nll(p, test), brute, rtol=1e-10)

    a, b = data_music.repeat_model(train)
    prev = np.concatenate([r[:-1] for r in train]).astype(bool)
    nxt = np.concatenate([r[1:] for r in train]).astype(bool)
    np.testing.assert_allclose([a, b], [((nxt & prev).sum() + 0.5) / (prev.sum() + 1),
                                        ((nxt & ~prev).sum() + 0.5) / ((~prev).sum() + 1)])
    prev_t = np.concatenate([r[:-1] for r in test]).astype(bool)
    prob = np.where(prev_t, a, b)
    brute = np.mean(next_step.bernoulli_nll(jnp.asarray(np.log(prob) - np.log1p(-prob)), jnp.asarray(frames)))
    np.testing.assert_allclose(data_music.repeat_nll((a, b), test), brute, rtol=1e-10)
    # smoothing keeps the NLL finite on a frame the training set never showed
    assert np.isfinite(data_music.repeat_nll(data_music.repeat_model([np.zeros((4, 8), np.uint8)]), test))


# ---------------------------------------------------------------- end to end


def _synthetic_splits():
    rng = np.random.default_rng(4)
    make = lambda n: {f"s{i}": r for i, r in enumerate(data_music.synthetic_rolls(rng, n, frames=(30, 60)))}
    return {"train": make(12), "valid": make(4), "test": make(4)}


def test_tiny_run_beats_the_frequency_model_and_resumes(tmp_path):
    out = str(tmp_path / "music")
    rolls = _synthetic_splits()
    summary = music.run(out, "tiny", progress=False, rolls=rolls)
    freq = summary["references"]["independent-pitch frequency"]["test"]
    assert set(summary["rows"]) == {"tanh RNN MSGD", "tanh RNN MSGD-C", "tanh RNN MSGD-CR"}
    for row in summary["rows"].values():
        assert row["test"]["n"] == 1 and row["test"]["max"] < freq
    # Table 1's two claims, each on the one paired seed: the sign of the test-loss difference decides p (1/2 or 1)
    tests = {r: summary["rows"][r]["test"]["mean"] for r in summary["rows"]}
    verdicts = {v["claim"]: v for v in summary["verdicts"]}
    for claim, better, worse in (("clipping", "MSGD-C", "MSGD"), ("regulariser", "MSGD-CR", "MSGD-C")):
        v = verdicts[claim]
        lower = tests[f"tanh RNN {better}"] < tests[f"tanh RNN {worse}"]
        assert v["n_pairs"] == 1 and v["outcome"] == "not shown"
        assert v["p_value"] == pytest.approx(0.5 if lower else 1.0)
        assert v["statement"].startswith(f"{better} against {worse}")
    with open(os.path.join(out, "results.jsonl")) as f:
        lines = f.readlines()
    assert len(lines) == 2  # the search and the final group of the one cell
    final = json.loads(lines[1])
    trace = final["traces"]["msgd_c"]
    clip = next(m["clip"] for m in final["members"] if m["optimizer"] == "msgd_c")
    norms = np.asarray(trace["grad_norm"], np.float64)
    np.testing.assert_array_equal(np.nonzero(norms >= clip)[0], trace["clipped"])  # where clipping acted
    assert not final["traces"]["msgd"]["clipped"]
    for name in ("table.md", "summary.json", "learning_curves.png", "grad_norm_trace.png", "search.png"):
        assert os.path.exists(os.path.join(out, name)), name
    prov = {"command": "rnn-jax music --profile tiny", "wall_seconds": 60.0, "cores": 2, "cpu": "cpu", "commit": "abcdef0"}
    block = music.readme_body(summary, prov)  # the README's quote once a run is committed under results/
    assert f"{summary['rows']['tanh RNN MSGD-C']['test']['mean']:.3f}" in block
    assert "(results/music/grad_norm_trace.png)" in block and "took 1 minutes on 2 cores" in block
    assert "- **clipping** (MSGD-C against MSGD on 1 paired seeds): NOT SHOWN" in block
    again = music.run(out, "tiny", progress=False, rolls=rolls)  # resumes: nothing is trained again
    assert again == summary
    with open(os.path.join(out, "results.jsonl")) as f:
        assert f.readlines() == lines
    with pytest.raises(ValueError, match="other settings"):
        music.run(out, "tiny", seeds=[5], progress=False, rolls=rolls)


@needs_music21
def test_tiny_run_on_chorales_beats_the_frequency_model(tmp_path):
    summary = music.run(str(tmp_path / "out"), "tiny", progress=False, cache_dir=str(tmp_path / "cache"))
    freq = summary["references"]["independent-pitch frequency"]["test"]
    assert summary["data"]["pieces"] == {"train": 12, "valid": 4, "test": 4}
    assert all(row["test"]["max"] < freq for row in summary["rows"].values())


def test_search_grid_gives_every_row_the_same_points():
    grid = natural.search_grid(4, (0.01, 1.0), (0.5, 10.0), (0.1, 10.0))
    assert len(grid) == 4 and [g["learning_rate"] for g in grid] == sorted(g["learning_rate"] for g in grid)
    assert all(0.01 <= g["learning_rate"] <= 1 and 0.5 <= g["clip"] <= 10 for g in grid)
    # a Latin hypercube: one point in each quarter of every log-range
    quarter = lambda v, lo, hi: int(4 * (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo)) - 1e-9)
    assert sorted(quarter(g["clip"], 0.5, 10.0) for g in grid) == [0, 1, 2, 3]
    msgd, c, cr = (natural.row_config(o, grid[1], 100.0) for o in natural.OPTIMIZERS)
    assert msgd["clip"] == math.inf and msgd["alpha"] == c["alpha"] == 0 and cr["alpha"] == grid[1]["alpha"]
    assert msgd["learning_rate"] == c["learning_rate"] == cr["learning_rate"] and c["clip"] == cr["clip"]
