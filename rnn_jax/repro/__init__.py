"""The reproductions: what the source documents' experiments need beyond the library.

- :mod:`~rnn_jax.repro.tasks` and :mod:`~rnn_jax.repro.data`: the synthetic tasks of Pascanu,
  Mikolov & Bengio (2013) and of the two tutorials, and the natural data sets;
- :mod:`~rnn_jax.repro.regularizer`: the paper's Ω, and :mod:`~rnn_jax.repro.next_step` for
  per-step (language-model) losses;
- :mod:`~rnn_jax.repro.train` (with its fused member engine, :mod:`~rnn_jax.repro.fused`) and
  :mod:`~rnn_jax.repro.sweep`: many seeds trained in one compiled program, resumable;
- :mod:`~rnn_jax.repro.experiments`: one module per result, and :mod:`~rnn_jax.repro.cli`, the
  ``rnn-jax`` command over them.

Everything here is built on the library (:mod:`rnn_jax`); nothing in the library imports it.
"""

from rnn_jax.repro import regularizer, tasks

__all__ = ["regularizer", "tasks"]
