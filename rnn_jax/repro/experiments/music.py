"""Polyphonic music prediction on Bach chorales: the paper's Table 1 (Pascanu, Mikolov & Bengio 2013).

What the paper reports. A tanh RNN predicts the next frame of a piano roll (one sigmoid
per pitch; the loss is the negative log-likelihood per time step), trained with MSGD,
MSGD-C (gradient-norm clipping) and MSGD-CR (clipping plus the regulariser Ω with a
1/t-decreasing weight), on Piano-midi.de, Nottingham and MuseData: clipping improves
both training and test NLL over MSGD, and MSGD-CR is best on test (e.g. Nottingham
3.80 → 3.48 → 3.36 nats). Hyperparameters were fixed across the three runs "except for the
regularization factor and clipping cutoff threshold" (given in its supplementary
material, which we do not have).

What runs here. Those data sets are not available offline, so the data is the Bach
chorales that ``music21`` ships (:mod:`rnn_jax.repro.data.music`: eighth-note frames, 46 pitches,
a fixed 218/73/71 split by piece stored in the package). Rows:

* references with closed forms on the same split: the independent-pitch frequency model
  and "repeat the previous frame" (smoothed: two transition probabilities);
* a tanh RNN with MSGD, MSGD-C and MSGD-CR (Ω's weight ``α/(1 + t/τ)``);
* an LSTM (forget-gate bias 1) and a GRU, beyond the paper, with MSGD-C.

Training: minibatches of whole pieces drawn uniformly from one length bucket (pieces of
similar length, padded to the bucket's edge; padded steps masked), early stopping on the
validation NLL (patience in evaluations), the parameters of the best validation NLL
scored on test. Hyperparameters: what the paper gives (plain SGD without momentum, tanh
units, Ω only with clipping, a 1/t schedule for α) is fixed; the rest is chosen on
validation with the same budget for every row: a Latin hypercube of ``search_budget``
points, log-uniform learning rate, threshold and α; MSGD uses the points' learning rates,
MSGD-C the same rates with the points' thresholds, MSGD-CR adds the points' α (one search
seed per point); LSTM and GRU search the same (rate, threshold) points. The chosen
settings then train every seed.

Profiles: ``tiny`` (tests: a few pieces, one cell), ``quick`` (≤ 5 min on two cores),
``cpu`` (≤ 90 min on two cores) and ``full`` (larger network, more seeds and updates).
Outputs in ``out_dir``: ``results.jsonl`` (a line per search and per final group of a
cell; a rerun resumes), ``table.md``, ``summary.json``, ``learning_curves.png``
(validation NLL against updates), ``grad_norm_trace.png`` (the gradient norm of every
update, the threshold and the clipped updates) and ``search.png``.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.repro import next_step
from rnn_jax.repro.data import music as data_music
from rnn_jax.repro.experiments import common, natural

NAME = "music"

_COMMON = dict(lr_range=(0.1, 3.0), clip_range=(0.5, 10.0), alpha_range=(0.1, 10.0), alpha_decay=100.0,
               order_seed=0, eval_batch=32)
PROFILES: Dict[str, dict] = {
    # the tests: 12 pieces, parsed in seconds; one cell, a handful of updates
    "tiny": dict(_COMMON, subset={"train": 12, "valid": 4, "test": 4}, cells=("rnn",), hidden_size=16,
                 batch_size=4, bucket_edges=(216,), search_budget=1, seeds=1, max_steps=60, chunk_steps=10,
                 eval_every=20, patience=100, lr_range=(0.5, 0.5), clip_range=(3.0, 3.0), alpha_range=(0.5, 0.5)),
    # 141 s of CPU (346 s wall on two cores shared with a load average of 10) from the parsed-roll
    # cache; the first run parses the corpus too (about 35 s of CPU)
    "quick": dict(_COMMON, subset=None, cells=("rnn", "lstm", "gru"), hidden_size=48, batch_size=16,
                  bucket_edges=(128, 386), search_budget=3, seeds=3, max_steps=400, chunk_steps=10,
                  eval_every=50, patience=4),
    # estimated from measured chunks (ms of CPU per member-update, H = 100: tanh RNN 14.5 with Ω,
    # LSTM 23, GRU 20): at most 48 CPU-minutes if no member stops early, so under 50 minutes
    # on two quiet cores (members split over two devices: about half); early stopping shortens it
    "cpu": dict(_COMMON, subset=None, cells=("rnn", "lstm", "gru"), hidden_size=100, batch_size=16,
                bucket_edges=(128, 386), search_budget=6, seeds=5, max_steps=3000, chunk_steps=10,
                eval_every=100, patience=5),
    # an accelerator or a long CPU run
    "full": dict(_COMMON, subset=None, cells=("rnn", "lstm", "gru"), hidden_size=200, batch_size=16,
                 bucket_edges=(96, 128, 192, 386), search_budget=12, seeds=10, max_steps=20_000, chunk_steps=20,
                 eval_every=200, patience=10),
}


# ---------------------------------------------------------------- the task's functions (static)


def sample(data, key, batch_size):
    """A minibatch of ``batch_size`` whole pieces of one bucket, uniformly with replacement."""
    inputs, targets, lengths = data
    index = jax.random.randint(key, (batch_size,), 0, inputs.shape[0])
    return inputs[index], targets[index], lengths[index]


def score(cell, params, batch):
    """Summed Bernoulli NLL and the number of predicted frames of one evaluation batch."""
    xs, targets, lengths = batch
    _, logits = next_step.outputs(cell, params, xs, lengths)
    return next_step.summed_loss(logits, targets, lengths, "bernoulli")


# ---------------------------------------------------------------- data


def eval_batches(rolls: Sequence[np.ndarray], edges: Sequence[int], batch: int, dtype=np.float32) -> List[tuple]:
    """Pieces grouped by length bucket, in batches of ``batch`` pieces (the last one filled
    with empty pieces of length 0, which count nothing): few distinct shapes to compile."""
    out = []
    for bucket in data_music.length_buckets(rolls, edges, dtype):
        n = len(bucket.lengths)
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            pad = batch - (stop - start)
            grow = lambda a: np.concatenate([a[start:stop], np.zeros((pad,) + a.shape[1:], a.dtype)])
            out.append(tuple(jnp.asarray(grow(a)) for a in bucket))
    return out


def task_data(rolls: Dict[str, Dict[str, np.ndarray]], cfg: dict, fingerprint: str, title: str) -> natural.TaskData:
    """The comparison's inputs from ``{split: {name: roll}}``: buckets, evaluation batches, references."""
    train = list(rolls["train"].values())
    edges = cfg["bucket_edges"]
    buckets = data_music.length_buckets(train, edges)
    freq = data_music.frequency_model(train)
    repeat = data_music.repeat_model(train)
    references = {
        "independent-pitch frequency": {s: data_music.frequency_nll(freq, list(rolls[s].values())) for s in rolls},
        "repeat previous frame (smoothed)": {s: data_music.repeat_nll(repeat, list(rolls[s].values())) for s in rolls},
    }
    sizes = {s: len(rolls[s]) for s in rolls}
    info = {"title": title, "frame": "eighth note", "pitches": int(train[0].shape[1]),
            "lowest_pitch": data_music.LOWEST_PITCH, "highest_pitch": data_music.HIGHEST_PITCH,
            "pieces": sizes, "predicted_frames": {s: int(sum(r.shape[0] - 1 for r in rolls[s].values())) for s in rolls},
            "buckets": [[int(b.inputs.shape[1]), int(b.inputs.shape[0])] for b in buckets],
            "repeat_model": {"stay_on": repeat.stay_on, "turn_on": repeat.turn_on}}
    batch = cfg["eval_batch"]
    return natural.TaskData(
        name=NAME, loss="bernoulli", input_size=int(train[0].shape[1]), output_size=int(train[0].shape[1]),
        sample=sample, score=score,
        train=natural.Buckets([tuple(jnp.asarray(a) for a in b) for b in buckets],
                              np.asarray([len(b.lengths) for b in buckets], np.float64)),
        valid=eval_batches(list(rolls["valid"].values()), edges, batch),
        test=eval_batches(list(rolls["test"].values()), edges, batch),
        train_eval=eval_batches(train, edges, batch),
        references=references, unit="nats per time step", scale=1.0, fingerprint=fingerprint, info=info)


def run(out_dir: str, profile: str = "quick", seeds=None, progress: bool = True, *,
        cache_dir: Optional[str] = None, rolls: Optional[Dict[str, Dict[str, np.ndarray]]] = None) -> dict:
    """Run (or resume) the music comparison into ``out_dir``; returns the summary.

    Args:
      out_dir, profile, seeds, progress: as every reproduction (:mod:`rnn_jax.repro.experiments.common`).
      cache_dir: where the parsed chorales are cached (:func:`rnn_jax.repro.data.music.default_cache_dir`).
      rolls: ``{split: {name: roll}}`` to use instead of the chorales (tests, other corpora).
    """
    cfg = common.get_profile(PROFILES, profile)
    seeds = common.seed_list(seeds, cfg)
    if rolls is None:
        say = (lambda text: common.Progress(NAME, 0).message(text)) if progress else None
        rolls = data_music.load_rolls(cache_dir, counts=cfg["subset"], progress=say)
        fingerprint = f"bach-{data_music.split_fingerprint()}-{cfg['subset']}"
        title = "Bach chorales (music21), next-frame prediction"
    else:
        digest = data_music.roll_digest(np.concatenate([r for s in data_music.SPLITS for r in rolls[s].values()]))
        fingerprint, title = f"given-{digest}", "given piano rolls, next-frame prediction"
    common.claim_folder(out_dir, NAME, {"profile": profile, "seeds": seeds, "data": fingerprint})
    data = task_data(rolls, cfg, fingerprint, title)
    return natural.run_comparison(out_dir, profile, cfg, data, seeds, progress)


def readme_body(summary: dict, prov: dict) -> str:
    """The README's quote of a committed run (see :func:`rnn_jax.repro.experiments.natural.readme_body`)."""
    return natural.readme_body(summary, prov)
