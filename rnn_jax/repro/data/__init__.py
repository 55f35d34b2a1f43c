"""Data sets of the natural tasks (the paper's Table 1), each importable without its optional packages.

* :mod:`rnn_jax.repro.data.music` -- the Bach chorales that ``music21`` ships, as piano rolls
  (``pip install 'rnn_jax[music]'``), with a fixed split stored in this package;
* :mod:`rnn_jax.repro.data.text` -- a text file as characters, split into a training head and
  held-out tail.
"""
