"""Character-level language modelling (issue #16): the text loader and its held-out tail, the
evaluation layout (state carried across windows = one long unroll), the reference models
against brute force, and a tiny end-to-end run on a generated text that must beat the
unigram model."""

import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import model
from rnn_jax.repro import next_step
from rnn_jax.repro.data import text as data_text
from rnn_jax.repro.experiments import chars

HAVE_MUSIC21 = importlib.util.find_spec("music21") is not None


def generated_text(n_sentences=400, seed=0):
    """Sentences from a tiny grammar: structure a network can learn in a few dozen updates."""
    rng = np.random.default_rng(seed)
    subjects = ["the cat", "a dog", "my aunt", "the old man", "her sister"]
    verbs = ["sat on", "looked at", "walked to", "thought of"]
    objects = ["the mat", "a house", "the sea", "his letter", "the garden"]
    return " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(n_sentences)) + "\n"


def test_split_tail_holds_out_the_end_in_order():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, valid, test = data_text.split_tail(text, 0.1, 0.05)
    assert train + valid + test == text
    assert (len(train), len(valid), len(test)) == (850, 100, 50)
    with pytest.raises(ValueError, match="fractions"):
        data_text.split_tail(text, 0.6, 0.5)


def test_vocabulary_and_encode_map_unseen_characters_to_zero():
    vocab = data_text.vocabulary("abcab", min_count=1)
    assert vocab == [data_text.UNKNOWN, "a", "b", "c"]
    np.testing.assert_array_equal(data_text.encode("cabz", vocab), [3, 1, 2, 0])
    assert data_text.vocabulary("abcab", min_count=2) == [data_text.UNKNOWN, "a", "b"]


def test_load_text_errors_are_clear(tmp_path):
    with pytest.raises(data_text.TextError, match="no such file"):
        data_text.load_text(str(tmp_path / "missing.txt"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(data_text.TextError, match="not UTF-8"):
        data_text.load_text(str(latin1))
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(data_text.TextError, match="at least"):
        data_text.load_text(str(short))
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"line one\r\n" * 30)
    assert data_text.load_text(str(crlf)) == "line one\n" * 30
    assert data_text.strip_gutenberg("***The Project Gutenberg Etext of X***\nbody\nEnd of the Project Gutenberg Etext\n") == "body\n"


@pytest.mark.skipif(not HAVE_MUSIC21, reason="the default text ships with music21")
def test_the_default_text_is_lady_susan():
    text = data_text.default_text()
    assert text.startswith("LADY SUSAN") and "Gutenberg" not in text and 120_000 < len(text) < 130_000


def test_run_without_text_or_music21_asks_for_text(tmp_path, monkeypatch):
    monkeypatch.setattr(data_text, "default_text", lambda: None)
    with pytest.raises(data_text.TextError, match="--text"):
        chars.run(str(tmp_path), "tiny", progress=False)


def test_reference_models_equal_brute_force():
    vocab = data_text.vocabulary("abcd")
    train = data_text.encode("abcabcabdaabcd", vocab)
    test = data_text.encode("abcdda", vocab)
    size = len(vocab)
    p = data_text.unigram_model(train, size)
    counts = {c: list(train[1:]).count(c) for c in range(size)}
    np.testing.assert_allclose(p, [(counts[c] + 0.5) / (len(train) - 1 + size * 0.5) for c in range(size)])
    np.testing.assert_allclose(data_text.unigram_bits(p, test), np.mean([-math.log2(p[c]) for c in test[1:]]))
    q = data_text.bigram_model(train, size)
    pairs = list(zip(train[:-1], train[1:]))
    for a in range(size):
        following = [b for x, b in pairs if x == a]
        for b in range(size):
            assert q[a, b] == pytest.approx((following.count(b) + 0.5) / (len(following) + size * 0.5))
    np.testing.assert_allclose(data_text.bigram_bits(q, test),
                               np.mean([-math.log2(q[a, b]) for a, b in zip(test[:-1], test[1:])]))


@pytest.mark.parametrize("rows,window", [(1, 7), (3, 4), (4, 50)])
def test_windowed_evaluation_equals_one_long_unroll_per_row(rows, window):
    rng = np.random.default_rng(0)
    size = 6
    codes = rng.integers(0, size, 41).astype(np.int32)
    eye = jnp.eye(size, dtype=jnp.float64)
    x, y, lengths, _ = chars.eval_layout(codes, rows, window, eye)
    # the layout holds every prediction exactly once, row after row
    flat = lambda a: np.concatenate([np.asarray(a)[:, r].ravel()[:int(np.asarray(lengths)[:, r].sum())]
                                     for r in range(np.asarray(a).shape[1])])
    np.testing.assert_array_equal(flat(x), codes[:-1])
    np.testing.assert_array_equal(flat(y), codes[1:])
    cell = rnn_jax.elman(5)
    params = model.init(jax.random.key(1), cell, size, size, dtype=jnp.float64)
    total, count = chars.score(cell, params, (x, y, lengths, eye))
    # reference: each row unrolled in one piece from the zero state
    per_row = -(-(len(codes) - 1) // rows)
    expected = 0.0
    for r in range(rows):
        seg_in, seg_out = codes[:-1][r * per_row:(r + 1) * per_row], codes[1:][r * per_row:(r + 1) * per_row]
        if len(seg_in) == 0:
            continue
        _, logits = next_step.outputs(cell, params, eye[seg_in][None])
        expected += float(jnp.sum(next_step.softmax_nll(logits[0], jnp.asarray(seg_out))))
    assert count == len(codes) - 1
    np.testing.assert_allclose(total, expected, rtol=1e-10)


def test_tiny_run_beats_the_unigram_model(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(generated_text())
    out = str(tmp_path / "chars")
    summary = chars.run(out, "tiny", progress=False, text=str(path))
    unigram = summary["references"]["unigram (add-½)"]["test"]
    assert summary["unit"] == "bits per character"
    assert set(summary["rows"]) == {"tanh RNN MSGD", "tanh RNN MSGD-C", "tanh RNN MSGD-CR"}
    for row in summary["rows"].values():
        assert row["test"]["max"] < unigram
    assert summary["data"]["parts"]["test"] == round(0.05 * len(generated_text()))
    for name in ("table.md", "summary.json", "results.jsonl", "learning_curves.png", "grad_norm_trace.png"):
        assert os.path.exists(os.path.join(out, name))
