"""Text as a sequence of characters, for character-level language modelling.

* :func:`load_text` reads a UTF-8 file (a clear error otherwise); :func:`default_text` is
  the public-domain English text that ``music21`` ships: Jane Austen's *Lady Susan*
  (Project Gutenberg etext, ``music21/languageExcerpts/trainingData/en.txt``, about
  125,000 characters once the Gutenberg header and footer lines are dropped), or None when
  ``music21`` is not installed.
* :func:`split_tail` keeps the text's head for training and holds out its tail: the
  validation part, then the test part at the very end (contiguous, never shuffled).
* :func:`vocabulary` is the characters of the training part (index 0 stands for any
  character not in it); :func:`encode` maps text to integer codes.
* Reference models with closed forms, in bits per character: :func:`unigram_bits` and
  :func:`bigram_bits` (add-½ smoothing, fitted on the training part).
"""

from __future__ import annotations

import collections
import importlib.util
import math
import os
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from rnn_jax._checks import UserValueError

UNKNOWN = "\u0000"  # the symbol at index 0: a character the training part does not have
DEFAULT_TEXT_NAME = "Jane Austen, Lady Susan (Project Gutenberg etext, shipped by music21)"
MIN_CHARACTERS = 200


class TextError(UserValueError):
    """A text that cannot be used (unreadable, not UTF-8, too short)."""


def load_text(path: str) -> str:
    """The file's text (UTF-8; ``\\r\\n`` read as ``\\n``), at least :data:`MIN_CHARACTERS` long."""
    try:
        with open(path, "r", encoding="utf-8", newline=None) as f:
            text = f.read()
    except FileNotFoundError:
        raise TextError(f"--text: no such file: {path}") from None
    except UnicodeDecodeError as error:
        raise TextError(f"--text: {path} is not UTF-8 text ({error})") from None
    except OSError as error:
        raise TextError(f"--text: cannot read {path}: {error}") from None
    if len(text) < MIN_CHARACTERS:
        raise TextError(f"--text: {path} has {len(text)} characters; expected at least {MIN_CHARACTERS}")
    return text


def strip_gutenberg(text: str) -> str:
    """The text without the lines that name Project Gutenberg (an etext's header and footer)."""
    lines = [line for line in text.split("\n") if "project gutenberg" not in line.lower()]
    return "\n".join(lines).strip("\n") + "\n"


def default_text_path() -> Optional[str]:
    """The path of *Lady Susan* inside the installed music21, or None (music21 is not imported)."""
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "languageExcerpts", "trainingData", "en.txt")
    return path if os.path.exists(path) else None


def default_text() -> Optional[str]:
    """*Lady Susan* without its Gutenberg header and footer, or None when music21 is not installed."""
    path = default_text_path()
    return None if path is None else strip_gutenberg(load_text(path))


def split_tail(text: str, valid_fraction: float = 0.05, test_fraction: float = 0.05) -> Tuple[str, str, str]:
    """``(train, valid, test)``: the head, then the held-out tail -- valid before test, test last."""
    if not (0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ValueError(f"split_tail: expected fractions in (0, 1) summing below 1, got {valid_fraction}, {test_fraction}")
    n = len(text)
    test_start = n - max(2, int(round(n * test_fraction)))
    valid_start = test_start - max(2, int(round(n * valid_fraction)))
    if valid_start < 2:
        raise TextError(f"split_tail: a text of {n} characters is too short to split")
    return text[:valid_start], text[valid_start:test_start], text[test_start:]


def vocabulary(train: str, min_count: int = 1) -> List[str]:
    """``[UNKNOWN] +`` the training part's characters seen at least ``min_count`` times, sorted."""
    counts = collections.Counter(train)
    return [UNKNOWN] + sorted(c for c, k in counts.items() if k >= min_count and c != UNKNOWN)


def encode(text: str, vocab: Sequence[str]) -> np.ndarray:
    """``int32`` codes: the index of each character in ``vocab``, 0 for characters not in it."""
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index.get(c, 0) for c in text), np.int32, count=len(text))


class CharCorpus(NamedTuple):
    """An encoded text: ``vocab`` and the ``train``/``valid``/``test`` codes (int32)."""

    vocab: List[str]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def corpus(text: str, valid_fraction: float = 0.05, test_fraction: float = 0.05, min_count: int = 1) -> CharCorpus:
    """:func:`split_tail`, :func:`vocabulary` of the training part and :func:`encode` of each part."""
    train, valid, test = split_tail(text, valid_fraction, test_fraction)
    vocab = vocabulary(train, min_count)
    return CharCorpus(vocab, encode(train, vocab), encode(valid, vocab), encode(test, vocab))


# ---------------------------------------------------------------- reference models (closed forms)


def unigram_model(train: np.ndarray, size: int, prior: float = 0.5) -> np.ndarray:
    """``p_c = (n_c + prior) / (N + size·prior)`` over the predicted characters ``train[1:]``."""
    counts = np.bincount(train[1:], minlength=size).astype(np.float64)
    return (counts + prior) / (counts.sum() + size * prior)


def unigram_bits(p: np.ndarray, codes: np.ndarray) -> float:
    """Bits per predicted character (``codes[1:]``) of :func:`unigram_model` ``p``."""
    return float(-np.mean(np.log2(p[codes[1:]])))


def bigram_model(train: np.ndarray, size: int, prior: float = 0.5) -> np.ndarray:
    """``P(b | a) = (n_ab + prior) / (n_a + size·prior)`` from the training part's consecutive pairs."""
    counts = np.zeros((size, size), np.float64)
    np.add.at(counts, (train[:-1], train[1:]), 1.0)
    return (counts + prior) / (counts.sum(axis=1, keepdims=True) + size * prior)


def bigram_bits(p: np.ndarray, codes: np.ndarray) -> float:
    """Bits per predicted character of :func:`bigram_model` ``p`` (each character given the one before)."""
    return float(-np.mean(np.log2(p[codes[:-1], codes[1:]])))


def bits(nats: float) -> float:
    """Nats to bits."""
    return nats / math.log(2)
