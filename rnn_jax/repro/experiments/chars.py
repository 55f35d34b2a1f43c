"""Character-level language modelling (the paper's Table 1, Penn Treebank rows) on a given text.

What the paper reports. On Penn Treebank characters a tanh RNN reaches 1.50 / 1.42 / 1.41
bits per character on test with MSGD / MSGD-C / MSGD-CR (train 1.46 / 1.34 / 1.36): clipping
helps, the regulariser barely. Penn Treebank cannot be had here; the text is the user's
(``--text FILE``), by default Jane Austen's *Lady Susan*, the public-domain English
text that ``music21`` ships (:func:`rnn_jax.repro.data.text.default_text`; about 125,000
characters against Penn Treebank's five million, so the numbers are not comparable).

Data (:mod:`rnn_jax.repro.data.text`): the text's head trains, its tail is held out -- 5 %
validation, then the last 5 % test; the vocabulary is the training part's characters
(index 0 for any other). Training draws minibatches of ``batch_size`` windows of
``window`` characters at random offsets; each window starts from the zero state and is
scored at every step (softmax cross-entropy of the next character). Evaluation runs each
held-out part as ``eval_rows`` contiguous rows, carrying the state across windows of
``eval_window`` steps, so a character is predicted from everything before it in its row.
The "train" column scores the last ``train_eval_characters`` (200,000) of the training
part the same way. References with closed forms: unigram and bigram frequencies (add-½),
fitted on the training part.

The rows, the hyperparameter search on validation (the same budget for every row) and
early stopping are those of :mod:`rnn_jax.repro.experiments.music` (see
:mod:`rnn_jax.repro.experiments.natural`); by default only the paper's three rows (tanh RNN
with MSGD, MSGD-C, MSGD-CR), the ``full`` profile adds LSTM and GRU. Losses are reported
in bits per character.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.repro import next_step
from rnn_jax.repro.data import text as data_text
from rnn_jax.repro.experiments import common, natural

NAME = "chars"

_COMMON = dict(lr_range=(0.3, 5.0), clip_range=(0.2, 4.0), alpha_range=(0.1, 10.0), alpha_decay=100.0,
               order_seed=0, valid_fraction=0.05, test_fraction=0.05, min_count=1, eval_rows=8, eval_window=256,
               train_eval_characters=200_000)
PROFILES: Dict[str, dict] = {
    # the tests: a small generated text, one cell, a handful of updates
    "tiny": dict(_COMMON, cells=("rnn",), hidden_size=16, batch_size=4, window=20, search_budget=1, seeds=1,
                 max_steps=60, chunk_steps=10, eval_every=20, patience=100, eval_rows=2, eval_window=32,
                 lr_range=(0.5, 0.5), clip_range=(3.0, 3.0), alpha_range=(0.5, 0.5)),
    # on Lady Susan: 100 s of CPU (257 s wall on two cores shared with a load average of 10)
    "quick": dict(_COMMON, cells=("rnn",), hidden_size=64, batch_size=16, window=100, search_budget=3, seeds=3,
                  max_steps=1000, chunk_steps=10, eval_every=100, patience=4),
    # estimated from a measured chunk (21 ms of CPU per member-update on Lady Susan): at most
    # 48 CPU-minutes if no member stops early, under 50 minutes on two quiet cores
    "cpu": dict(_COMMON, cells=("rnn",), hidden_size=128, batch_size=32, window=100, search_budget=6, seeds=5,
                max_steps=4000, chunk_steps=20, eval_every=200, patience=5),
    # an accelerator or a long CPU run
    "full": dict(_COMMON, cells=("rnn", "lstm", "gru"), hidden_size=256, batch_size=32, window=200,
                 search_budget=12, seeds=10, max_steps=30_000, chunk_steps=50, eval_every=500, patience=8),
}


# ---------------------------------------------------------------- the task's functions (static)


def sample_windows(data, key, batch_size, *, window: int):
    """``batch_size`` windows of ``window + 1`` characters at uniform offsets: one-hot inputs, next-character labels."""
    codes, eye = data
    offsets = jax.random.randint(key, (batch_size,), 0, codes.shape[0] - window)
    chunks = jax.vmap(lambda o: jax.lax.dynamic_slice(codes, (o,), (window + 1,)))(offsets)
    return eye[chunks[:, :-1]], chunks[:, 1:], None


@functools.lru_cache(maxsize=None)
def make_sampler(window: int):
    """:func:`sample_windows` for one window length (one object per length: compiled programs are reused)."""
    return functools.partial(sample_windows, window=window)


def score(cell, params, batch):
    """Summed softmax NLL (nats) and count over an evaluation layout ``(inputs, targets, lengths, eye)``.

    ``inputs``/``targets``: ``(windows, rows, window)`` codes; ``lengths``: ``(windows, rows)``
    valid steps. The state is carried from window to window along each row.
    """
    inputs, targets, lengths, eye = batch
    dtype = eye.dtype

    def body(carry, chunk):
        x, y, n = chunk
        carry, logits = next_step.outputs(cell, params, eye[x], n, initial_carry=carry)
        return carry, next_step.summed_loss(logits, y, n, "softmax")

    carry = cell.initial_carry((inputs.shape[1],), dtype)
    _, (sums, counts) = jax.lax.scan(body, carry, (inputs, targets, lengths))
    return jnp.sum(sums), jnp.sum(counts)


# ---------------------------------------------------------------- data


def eval_layout(codes: np.ndarray, rows: int, window: int, eye) -> tuple:
    """A held-out part for :func:`score`: the predictions of ``codes[1:]`` from ``codes[:-1]`` as
    ``rows`` contiguous rows (row ``r`` holds positions ``r·m .. (r+1)·m − 1``, ``m = ceil(n/rows)``),
    cut into windows of ``window`` steps; the ends of the rows are padded and masked by the lengths."""
    inputs, targets = np.asarray(codes[:-1], np.int32), np.asarray(codes[1:], np.int32)
    n = len(inputs)
    rows = max(1, min(rows, n))
    per_row = -(-n // rows)
    windows = -(-per_row // window)
    row_length = np.clip(n - np.arange(rows) * per_row, 0, per_row)

    def grid(a):
        out = np.zeros((rows, windows * window), np.int32)
        for r in range(rows):
            out[r, :row_length[r]] = a[r * per_row:r * per_row + row_length[r]]
        return out.reshape(rows, windows, window).transpose(1, 0, 2)

    lengths = np.clip(row_length[None, :] - np.arange(windows)[:, None] * window, 0, window).astype(np.int32)
    return jnp.asarray(grid(inputs)), jnp.asarray(grid(targets)), jnp.asarray(lengths), eye


def task_data(text: str, cfg: dict, source: str) -> natural.TaskData:
    """The comparison's inputs from a text: windows to sample, evaluation layouts, references."""
    corpus = data_text.corpus(text, cfg["valid_fraction"], cfg["test_fraction"], cfg["min_count"])
    size = len(corpus.vocab)
    if len(corpus.train) <= cfg["window"] + 1:
        raise data_text.TextError(f"the training part ({len(corpus.train)} characters) is shorter than a window "
                                  f"({cfg['window']} + 1)")
    eye = jnp.eye(size, dtype=jnp.float32)
    parts = {"train": corpus.train, "valid": corpus.valid, "test": corpus.test}
    unigram = data_text.unigram_model(corpus.train, size)
    bigram = data_text.bigram_model(corpus.train, size)
    references = {"unigram (add-½)": {s: data_text.unigram_bits(unigram, c) for s, c in parts.items()},
                  "bigram (add-½)": {s: data_text.bigram_bits(bigram, c) for s, c in parts.items()}}
    layout = lambda codes: [eval_layout(codes, cfg["eval_rows"], cfg["eval_window"], eye)]
    # the training loss reported at the end: on the last train_eval_characters of the training part
    train_tail = corpus.train[-cfg["train_eval_characters"]:]
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    info = {"title": f"Characters of {source}", "source": source, "characters": len(text), "sha256_16": digest,
            "vocabulary": size, "unknown_in_valid": int(np.sum(corpus.valid == 0)),
            "unknown_in_test": int(np.sum(corpus.test == 0)),
            "parts": {s: int(len(c)) for s, c in parts.items()}}
    return natural.TaskData(
        name=NAME, loss="softmax", input_size=size, output_size=size,
        sample=make_sampler(cfg["window"]), score=score,
        train=natural.Buckets([(jnp.asarray(corpus.train), eye)], np.ones(1)),
        valid=layout(corpus.valid), test=layout(corpus.test), train_eval=layout(train_tail),
        references=references, unit="bits per character", scale=1 / math.log(2),
        fingerprint=f"text-{digest}-{cfg['window']}", info=info)


def run(out_dir: str, profile: str = "quick", seeds=None, progress: bool = True, *, text: Optional[str] = None) -> dict:
    """Run (or resume) the character-level comparison into ``out_dir``; returns the summary.

    Args:
      out_dir, profile, seeds, progress: as every reproduction (:mod:`rnn_jax.repro.experiments.common`).
      text: the path of a UTF-8 text file (the command's ``--text``); None: *Lady Susan*
        from music21 (:func:`rnn_jax.repro.data.text.default_text`), an error if it is not installed.
    """
    cfg = common.get_profile(PROFILES, profile)
    seeds = common.seed_list(seeds, cfg)
    if text is None:
        content = data_text.default_text()
        if content is None:
            raise data_text.TextError("no text: give one with --text FILE (a UTF-8 text file), or install music21 "
                                      "(pip install 'rnn_jax[music]') for the default, Jane Austen's Lady Susan")
        source = data_text.DEFAULT_TEXT_NAME
    else:
        content, source = data_text.load_text(text), text
    data = task_data(content, cfg, source)
    common.claim_folder(out_dir, NAME, {"profile": profile, "seeds": seeds, "data": data.fingerprint})
    return natural.run_comparison(out_dir, profile, cfg, data, seeds, progress)


def readme_body(summary: dict, prov: dict) -> str:
    """The README's quote of a committed run (see :func:`rnn_jax.repro.experiments.natural.readme_body`)."""
    return natural.readme_body(summary, prov)
