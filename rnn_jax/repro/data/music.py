"""Polyphonic music: the Bach chorales that ``music21`` ships, as binary piano rolls.

The paper's Table 1 uses Piano-midi.de, Nottingham and MuseData (Boulanger-Lewandowski
et al. 2012), which cannot be downloaded here; the chorales of ``music21``'s corpus are
the family of that paper's fourth set, JSB Chorales. This module turns them into the
benchmark's representation and fixes the data set once:

* **Pieces.** The ``.mxl``/``.xml`` files of ``music21.corpus.getComposer("bach")`` with
  exactly four parts (the SATB chorales; the others are orchestrated versions with
  instrument parts, or not chorales). Exact duplicates -- the same roll up to
  transposition -- are kept once; pieces on the same tune (identical soprano line) stay in
  one split. The names, per split, are stored in ``bach_chorales.json`` beside this module
  with a digest of every roll, so the data set never drifts with the package: a corpus
  that parses differently is reported (:func:`load_rolls`).
* **Frames.** One frame per eighth note (:data:`FRAME_QUARTERS` = 1/2 quarter note):
  pitch ``p`` is on in frame ``t`` when a note of pitch ``p`` sounds at the frame's start,
  time ``t/2`` quarter notes (onset included, release excluded; tied notes are
  consecutive notes and sound through; grace notes have no duration and are left out;
  repeats are not expanded). The eighth is the chorales' passing-note value: on a
  quarter-note grid (JSB Chorales') 20.7 % of the notes of the 362 pieces start between two
  frames -- mostly eighth-note passing and neighbour notes, shortened or lost -- against
  1.3 % on the eighth grid (sixteenth ornaments; 2.5 % of the notes are shorter than an
  eighth). Median piece: 96 frames, longest 386 (twice JSB's lengths in steps).
* **Pitches.** Binary vectors over the MIDI pitches present in the included pieces,
  :data:`LOWEST_PITCH` .. :data:`HIGHEST_PITCH` (36 = C2 .. 81 = A5, 46 units); the roll
  has no transposition.
* **Prediction.** The model reads frames ``0 .. t`` and predicts frame ``t + 1``, for
  ``t = 0 .. L − 2``: a piece of ``L`` frames gives ``L − 1`` predictions
  (:func:`next_step_arrays`; the first frame is not predicted).

The parsed rolls are cached in one ``.npz`` (:func:`default_cache_dir`), so only the first
run needs ``music21`` and its parse (a minute or two); the cache is keyed by the split
file's content. Reference models with closed forms (:func:`frequency_model`,
:func:`repeat_model`) give the numbers a trained network must beat.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import math
import os
import warnings
from fractions import Fraction
from typing import Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from rnn_jax._checks import UserError, UserValueError

SPLIT_FILE = "bach_chorales.json"
SPLITS = ("train", "valid", "test")
FRAME_QUARTERS = Fraction(1, 2)  # an eighth note
LOWEST_PITCH, HIGHEST_PITCH = 36, 81  # MIDI; fixed by the split file (checked on load)
NUM_PITCHES = HIGHEST_PITCH - LOWEST_PITCH + 1
CACHE_FORMAT = 1  # bump when the roll representation changes
INSTALL_HINT = "pip install 'rnn_jax[music]'  (or: pip install music21)"


class MusicDataError(UserValueError):
    """A piece could not be found, parsed or represented, or a cache is unusable."""


class MissingMusic21Error(UserError, ImportError):
    """music21 is not installed (an ImportError, and a UserError: one line on the command line)."""


# ---------------------------------------------------------------- the split


@functools.lru_cache(maxsize=None)
def _split_text() -> str:
    return importlib.resources.files("rnn_jax.repro.data").joinpath(SPLIT_FILE).read_text(encoding="utf-8")


def load_split() -> dict:
    """The stored split: ``train``/``valid``/``test`` name lists, ``digests``, ``excluded``, settings.

    A fresh dict each call (the file is read once per process).
    """
    split = json.loads(_split_text())
    if (split["lowest_pitch"], split["highest_pitch"]) != (LOWEST_PITCH, HIGHEST_PITCH) or \
            Fraction(split["frame_quarters"]) != FRAME_QUARTERS:
        raise MusicDataError(f"{SPLIT_FILE}: pitch range or frame value differ from this module's constants")
    return split


def split_names(split: str) -> List[str]:
    """The piece names of one split (``train``, ``valid`` or ``test``), in stored order."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    return list(load_split()[split])


def split_fingerprint() -> str:
    """SHA-256 (first 16 hex digits) of the split file: names the cache and the runs."""
    return hashlib.sha256(_split_text().encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- parsing


def require_music21():
    """The ``music21`` module, or a :class:`MissingMusic21Error` (an ImportError) that says how to install it."""
    try:
        import music21
    except ImportError as error:
        raise MissingMusic21Error(f"the Bach chorales come from the music21 package, which is not installed: "
                                  f"{INSTALL_HINT}") from error
    return music21


def corpus_paths() -> Dict[str, str]:
    """``{name: path}`` of music21's Bach scores (``.mxl`` preferred over ``.xml``); name = file stem."""
    music21 = require_music21()
    paths: Dict[str, str] = {}
    for path in sorted(music21.corpus.getComposer("bach"), key=lambda p: (p.suffix != ".mxl", str(p))):
        if path.suffix in (".mxl", ".xml"):
            paths.setdefault(path.stem, str(path))
    return paths


def roll_from_notes(notes: Iterable[Tuple[int, Fraction, Fraction]], end: Fraction, *,
                    frame: Fraction = FRAME_QUARTERS, lowest: int = LOWEST_PITCH,
                    highest: int = HIGHEST_PITCH, name: str = "piece") -> np.ndarray:
    """The piano roll of ``(midi_pitch, onset, duration)`` notes (times in quarter notes).

    Frame ``t`` samples time ``t · frame``: a note sounds there when ``onset <= t·frame <
    onset + duration``, i.e. in frames ``ceil(onset/frame) .. ceil((onset+duration)/frame) − 1``
    (a note shorter than a frame that starts off the grid is in no frame). Zero-duration
    notes (grace notes) are skipped.

    Returns:
      ``(ceil(end / frame), highest − lowest + 1)`` uint8.
    """
    frames = math.ceil(Fraction(end) / frame)
    roll = np.zeros((frames, highest - lowest + 1), np.uint8)
    for pitch, onset, duration in notes:
        if duration <= 0:
            continue
        if not lowest <= pitch <= highest:
            raise MusicDataError(f"{name}: pitch {pitch} lies outside the roll's range {lowest}..{highest}")
        first = math.ceil(Fraction(onset) / frame)
        stop = math.ceil((Fraction(onset) + Fraction(duration)) / frame)
        roll[first:stop, pitch - lowest] = 1
    return roll


def score_notes(score) -> Tuple[List[Tuple[int, Fraction, Fraction]], Fraction, int]:
    """``(notes, end, number of parts)`` of a music21 score: every pitch of every note and chord."""
    notes = []
    for element in score.flatten().notes:
        onset, duration = Fraction(element.offset), Fraction(element.quarterLength)
        notes.extend((int(p.midi), onset, duration) for p in element.pitches)
    return notes, Fraction(score.highestTime), len(score.parts)


def parse_piece(name: str, path: Optional[str] = None, *, parts: Optional[int] = 4,
                lowest: int = LOWEST_PITCH, highest: int = HIGHEST_PITCH) -> np.ndarray:
    """Parse one chorale of music21's corpus into its roll.

    Args:
      name: the file stem, e.g. ``"bwv1.6"``.
      path: the file (default: looked up in music21's Bach corpus).
      parts: the number of parts the score must have (None: any).
      lowest, highest: the roll's MIDI pitch range.

    Raises:
      ImportError: music21 is missing. MusicDataError: the piece is not in the corpus,
      cannot be parsed, has another number of parts, no notes, or pitches out of range.
    """
    music21 = require_music21()
    if path is None:
        path = corpus_paths().get(name)
        if path is None:
            raise MusicDataError(f"Bach chorale {name!r} is not in music21 {music21.__version__}'s corpus")
    try:
        score = music21.converter.parse(path)
        notes, end, num_parts = score_notes(score)
    except Exception as error:  # music21 raises many types; say which piece failed and why
        raise MusicDataError(f"could not parse Bach chorale {name!r} ({path}) with music21 "
                             f"{music21.__version__}: {type(error).__name__}: {error}") from error
    if parts is not None and num_parts != parts:
        raise MusicDataError(f"Bach chorale {name!r} ({path}): expected {parts} parts, found {num_parts}")
    if not notes:
        raise MusicDataError(f"Bach chorale {name!r} ({path}) has no notes")
    return roll_from_notes(notes, end, name=name, lowest=lowest, highest=highest)


def roll_digest(roll: np.ndarray) -> str:
    """SHA-256 (16 hex digits) of a roll's shape and bits: what the split file records."""
    roll = np.ascontiguousarray(roll, np.uint8)
    return hashlib.sha256(f"{roll.shape[0]}x{roll.shape[1]}:".encode() + roll.tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------- the cache


def default_cache_dir() -> str:
    """``$RNN_JAX_DATA_CACHE``, else ``$XDG_CACHE_HOME/rnn_jax``, else ``~/.cache/rnn_jax``."""
    if os.environ.get("RNN_JAX_DATA_CACHE"):
        return os.environ["RNN_JAX_DATA_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rnn_jax")


def cache_path(cache_dir: Optional[str] = None) -> str:
    """The rolls' cache file for the stored split: ``bach_chorales-<fingerprint>-v<format>.npz``."""
    return os.path.join(cache_dir or default_cache_dir(), f"bach_chorales-{split_fingerprint()}-v{CACHE_FORMAT}.npz")


def _read_cache(path: str, names: Sequence[str]) -> Optional[Dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            rolls = {name: np.asarray(data[name], np.uint8) for name in names}
    except (OSError, KeyError, ValueError) as error:
        warnings.warn(f"ignoring the unreadable chorale cache {path}: {error}", stacklevel=3)
        return None
    return rolls


def _write_cache(path: str, rolls: Mapping[str, np.ndarray], music21_version: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **rolls, __music21_version__=np.array(music21_version))
    os.replace(tmp, path)  # atomic: a killed run leaves no half-written cache


def load_rolls(cache_dir: Optional[str] = None, *, progress: Optional[Callable[[str], None]] = None,
               use_cache: bool = True, counts: Optional[Mapping[str, int]] = None) -> Dict[str, Dict[str, np.ndarray]]:
    """Every split's rolls, ``{split: {name: (frames, NUM_PITCHES) uint8}}``, in stored order.

    Read from the cache when it is there (music21 is then not needed); otherwise parsed
    (music21 required, about a minute or two of CPU) and written to the cache. Rolls whose
    digest differs from the split file's (another music21 version whose corpus or parser
    changed) are used but reported with a warning.

    Args:
      cache_dir: where the cache lives (default :func:`default_cache_dir`).
      progress: called with a line of text now and then while parsing.
      use_cache: False parses afresh and does not write the cache.
      counts: ``{split: n}`` -- only the first ``n`` pieces of those splits (the tests'
        small runs); read from the cache if there is one, else parsed and not cached.
    """
    split = load_split()
    if counts is not None:
        unknown = set(counts) - set(SPLITS)
        if unknown:
            raise ValueError(f"counts: expected keys among {', '.join(SPLITS)}, got {sorted(unknown)}")
        split = {**split, **{s: split[s][:int(counts.get(s, 0))] for s in SPLITS}}
    names = [name for s in SPLITS for name in split[s]]
    path = cache_path(cache_dir)
    rolls = _read_cache(path, names) if use_cache and os.path.exists(path) else None
    if rolls is None:
        music21 = require_music21()
        paths = corpus_paths()
        missing = [name for name in names if name not in paths]
        if missing:
            raise MusicDataError(f"{len(missing)} piece(s) of the stored split are not in music21 "
                                 f"{music21.__version__}'s corpus: {', '.join(missing[:10])}")
        rolls = {}
        for i, name in enumerate(names):
            rolls[name] = parse_piece(name, paths[name])
            if progress is not None and (i + 1) % 50 == 0:
                progress(f"parsed {i + 1}/{len(names)} chorales")
        if use_cache and counts is None:
            _write_cache(path, rolls, music21.__version__)
    changed = [name for name in names if roll_digest(rolls[name]) != split["digests"][name]]
    if changed:
        warnings.warn(f"{len(changed)} chorale(s) parse differently from when the split was made (music21 "
                      f"{split['music21_version']}): {', '.join(changed[:10])}", stacklevel=2)
    return {s: {name: rolls[name] for name in split[s]} for s in SPLITS}


# ---------------------------------------------------------------- making the split (once)


def _soprano_key(roll: np.ndarray) -> str:
    """The top voice's pitch intervals over the frames that sound: the tune, whatever its key."""
    sounding = roll.any(axis=1)
    top = roll.shape[1] - 1 - np.argmax(roll[sounding, ::-1], axis=1)
    return hashlib.sha256(np.diff(top).astype(np.int16).tobytes()).hexdigest()


def _transposition_key(roll: np.ndarray) -> str:
    used = np.nonzero(roll.any(axis=0))[0]
    cropped = np.ascontiguousarray(roll[:, used[0]:used[-1] + 1]) if used.size else roll
    return roll_digest(cropped)


def make_split(rolls: Mapping[str, np.ndarray], *, seed: int = 2013,
               fractions: Tuple[float, float] = (0.6, 0.2)) -> dict:
    """The procedure that made ``bach_chorales.json`` (run once; kept for the record and the tests).

    Names in sorted order; a piece whose roll equals an earlier one's up to transposition
    is excluded; pieces with the same soprano line form a group; groups are shuffled with
    ``numpy.random.default_rng(seed)`` and dealt to train until it holds ``fractions[0]``
    of the pieces, then to valid until ``fractions[1]``, the rest to test.

    Returns:
      ``{"train": [...], "valid": [...], "test": [...], "excluded": {name: reason}}``.
    """
    names = sorted(rolls)
    excluded, first_of, groups = {}, {}, {}
    for name in names:
        key = _transposition_key(rolls[name])
        if key in first_of:
            excluded[name] = f"same roll as {first_of[key]} (up to transposition)"
            continue
        first_of[key] = name
        groups.setdefault(_soprano_key(rolls[name]), []).append(name)
    ordered = [groups[k] for k in sorted(groups, key=lambda k: groups[k][0])]
    order = np.random.default_rng(seed).permutation(len(ordered))
    total = sum(len(g) for g in ordered)
    out: Dict[str, list] = {s: [] for s in SPLITS}
    for index in order:
        if len(out["train"]) < fractions[0] * total:
            target = "train"
        elif len(out["valid"]) < fractions[1] * total:
            target = "valid"
        else:
            target = "test"
        out[target].extend(ordered[index])
    return {**{s: sorted(v) for s, v in out.items()}, "excluded": excluded}


def build_split_file(path: str, *, seed: int = 2013, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Parse every 4-part Bach score of the installed music21 and write a split file to ``path``.

    How ``bach_chorales.json`` was made (music21 10.5.1): ``python -c "from rnn_jax.repro.data
    import music; music.build_split_file('rnn_jax/repro/data/bach_chorales.json')"``. Not
    needed to use the data set: the stored file is the data set's definition.
    """
    music21 = require_music21()
    rolls, skipped = {}, {}
    for name, piece_path in corpus_paths().items():
        try:
            rolls[name] = parse_piece(name, piece_path, parts=4, lowest=0, highest=127)
        except MusicDataError as error:
            skipped[name] = str(error).split(": ", 1)[-1]
        if progress is not None and (len(rolls) + len(skipped)) % 50 == 0:
            progress(f"parsed {len(rolls) + len(skipped)} scores")
    split = make_split(rolls, seed=seed)
    kept = [name for s in SPLITS for name in split[s]]
    used = np.nonzero(np.any([rolls[name].any(axis=0) for name in kept], axis=0))[0]
    rolls = {name: np.ascontiguousarray(rolls[name][:, used[0]:used[-1] + 1]) for name in kept}
    record = {
        "about": "Bach chorales of music21's corpus as piano rolls for next-frame prediction; made by "
                 "rnn_jax.repro.data.music.build_split_file. Pieces: the .mxl/.xml scores of "
                 "music21.corpus.getComposer('bach') with exactly 4 parts; a piece whose roll equals an "
                 "earlier one's up to transposition is excluded; pieces with the same soprano line stay in "
                 "one split; groups shuffled with numpy default_rng(seed) and dealt 60/20/20 %. Digests: "
                 "rnn_jax.repro.data.music.roll_digest of each roll (frame = frame_quarters quarter notes, MIDI "
                 "pitches lowest_pitch..highest_pitch).",
        "music21_version": music21.__version__,
        "seed": seed,
        "frame_quarters": str(FRAME_QUARTERS),
        "lowest_pitch": int(used[0]),
        "highest_pitch": int(used[-1]),
        "sizes": {s: len(split[s]) for s in SPLITS},
        "frames": {s: int(sum(rolls[name].shape[0] for name in split[s])) for s in SPLITS},
        **{s: split[s] for s in SPLITS},
        "excluded": {**split["excluded"], **{name: f"not a 4-part chorale: {why}" for name, why in sorted(skipped.items())}},
        "digests": {name: roll_digest(rolls[name]) for name in sorted(kept)},
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    return record


def synthetic_rolls(rng: np.random.Generator, count: int, *, frames: Tuple[int, int] = (20, 40),
                    pitches: int = NUM_PITCHES, voices: int = 4, hold: float = 0.6) -> List[np.ndarray]:
    """Chorale-like random rolls for tests (no music21): ``voices`` random walks in pitch.

    Each voice keeps its pitch from one frame to the next with probability ``hold``, else
    steps by −2..2; so a frame predicts the next one well, and a model that learns to
    repeat beats the independent-pitch frequency model.
    """
    out = []
    for _ in range(count):
        length = int(rng.integers(frames[0], frames[1] + 1))
        roll = np.zeros((length, pitches), np.uint8)
        pos = np.sort(rng.integers(2, pitches - 2, size=voices))
        for t in range(length):
            moves = rng.integers(-2, 3, size=voices) * (rng.random(voices) > hold)
            pos = np.clip(pos + moves, 0, pitches - 1)
            roll[t, pos] = 1
        out.append(roll)
    return out


# ---------------------------------------------------------------- arrays for training


class PaddedSet(NamedTuple):
    """Pieces as next-step arrays, zero-padded to a common length.

    inputs: ``(pieces, time, pitches)`` frames ``0 .. L−2``; targets: the same shape,
    frames ``1 .. L−1``; lengths: ``(pieces,)`` int32 ``L − 1`` (predicted steps).
    """

    inputs: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray


def next_step_arrays(rolls: Sequence[np.ndarray], time: Optional[int] = None, dtype=np.float32) -> PaddedSet:
    """Inputs frames ``0..L−2``, targets frames ``1..L−1``, padded with zeros to ``time`` steps.

    ``time`` defaults to the longest piece's ``L − 1``; a piece needs at least 2 frames.
    """
    if not rolls:
        raise ValueError("next_step_arrays: expected at least one roll")
    lengths = np.asarray([r.shape[0] - 1 for r in rolls], np.int32)
    if lengths.min() < 1:
        raise ValueError("next_step_arrays: every piece needs at least 2 frames")
    time = int(lengths.max()) if time is None else int(time)
    if time < lengths.max():
        raise ValueError(f"next_step_arrays: time {time} is shorter than the longest piece ({lengths.max()} steps)")
    pitches = rolls[0].shape[1]
    inputs = np.zeros((len(rolls), time, pitches), dtype)
    targets = np.zeros((len(rolls), time, pitches), dtype)
    for i, roll in enumerate(rolls):
        n = roll.shape[0] - 1
        inputs[i, :n] = roll[:-1]
        targets[i, :n] = roll[1:]
    return PaddedSet(inputs, targets, lengths)


def length_buckets(rolls: Sequence[np.ndarray], edges: Sequence[int], dtype=np.float32) -> List[PaddedSet]:
    """The pieces grouped by predicted steps ``L − 1`` into buckets ``(edges[i−1], edges[i]]``,
    each padded to its edge (the last edge must cover the longest piece); empty buckets are dropped.

    A batch drawn from one bucket wastes little on padding, and a bucket's shape is
    static, so one compiled program per bucket serves every batch.
    """
    steps = np.asarray([r.shape[0] - 1 for r in rolls])
    edges = sorted(int(e) for e in edges)
    if steps.max() > edges[-1]:
        raise ValueError(f"length_buckets: the last edge {edges[-1]} is below the longest piece ({steps.max()} steps)")
    out, low = [], 0
    for edge in edges:
        members = [r for r, n in zip(rolls, steps) if low < n <= edge]
        if members:
            out.append(next_step_arrays(members, edge, dtype))
        low = edge
    return out


# ---------------------------------------------------------------- reference models (closed forms)


def _counts(rolls: Sequence[np.ndarray]):
    """Predicted frames N and, over the targets (frames 1 .. L−1 of every piece): on-counts
    per pitch, and the transitions from the previous frame (on→on, on, off→on, off)."""
    frames = sum(r.shape[0] - 1 for r in rolls)
    on = sum(r[1:].sum(axis=0, dtype=np.int64) for r in rolls)
    previous_on = sum(int(np.sum(r[:-1])) for r in rolls)
    on_on = sum(int(np.sum(r[1:] & r[:-1])) for r in rolls)
    off_on = sum(int(np.sum(r[1:] & (1 - r[:-1]))) for r in rolls)
    previous_off = frames * rolls[0].shape[1] - previous_on
    return frames, np.asarray(on, np.int64), (on_on, previous_on, off_on, previous_off)


def frequency_model(train: Sequence[np.ndarray], prior: float = 0.5) -> np.ndarray:
    """Independent pitches: ``p_j = (n_j + prior) / (N + 2·prior)`` from the training targets.

    ``n_j`` counts the predicted frames (1 .. L−1 of every piece) where pitch ``j`` is on,
    ``N`` the predicted frames; the add-½ prior (Krichevsky–Trofimov) keeps ``0 < p < 1``,
    so the NLL of a pitch never seen in training stays finite.
    """
    frames, on, _ = _counts(train)
    return (on + prior) / (frames + 2 * prior)


def frequency_nll(p: np.ndarray, rolls: Sequence[np.ndarray]) -> float:
    """NLL per predicted frame (nats, summed over pitches) of :func:`frequency_model` ``p``:
    ``−Σ_j [m_j log p_j + (N − m_j) log(1 − p_j)] / N`` with ``m_j`` the on-counts in ``rolls``."""
    frames, on, _ = _counts(rolls)
    p = np.asarray(p, np.float64)
    return float(-(on @ np.log(p) + (frames - on) @ np.log1p(-p)) / frames)


class RepeatModel(NamedTuple):
    """:func:`repeat_model`: P(on | on in the previous frame), P(on | off in the previous frame)."""

    stay_on: float
    turn_on: float


def repeat_model(train: Sequence[np.ndarray], prior: float = 0.5) -> RepeatModel:
    """"Repeat the previous frame", smoothed: a pitch that sounds keeps sounding with probability
    ``a``, a silent one starts with probability ``b``, the same for every pitch.

    ``a = (n_on→on + prior) / (n_on + 2·prior)``, ``b = (n_off→on + prior) / (n_off + 2·prior)``
    over the training pieces' transitions (maximum likelihood with the add-½ prior): the
    exact repetition ``a = 1, b = 0`` would give an infinite NLL at the first change, and
    ``0 < b < a < 1`` keeps it finite.
    """
    _, _, (on_on, previous_on, off_on, previous_off) = _counts(train)
    return RepeatModel((on_on + prior) / (previous_on + 2 * prior), (off_on + prior) / (previous_off + 2 * prior))


def repeat_nll(model: RepeatModel, rolls: Sequence[np.ndarray]) -> float:
    """NLL per predicted frame (nats) of :func:`repeat_model`: with the transition counts of ``rolls``,
    ``−[n_on→on log a + n_on→off log(1−a) + n_off→on log b + n_off→off log(1−b)] / N``."""
    frames, _, (on_on, previous_on, off_on, previous_off) = _counts(rolls)
    a, b = model
    total = (on_on * math.log(a) + (previous_on - on_on) * math.log1p(-a)
             + off_on * math.log(b) + (previous_off - off_on) * math.log1p(-b))
    return float(-total / frames)
