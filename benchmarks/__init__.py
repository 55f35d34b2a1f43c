"""Benchmarks of rnn_jax against plain JAX, Flax, Equinox and PyTorch.

Run ``python -m benchmarks --help`` from the repository root; see
``benchmarks/README.md``. Layout:

* :mod:`benchmarks.workloads` -- sizes, shared weights and data, FLOP counts;
* ``fw_*.py`` -- one module per framework, each building the same functions
  from the same weights;
* :mod:`benchmarks.linear` -- linear recurrences, sequential vs parallel scan;
* :mod:`benchmarks.timing` -- repetition statistics, page faults, peak memory;
* :mod:`benchmarks.worker` -- one measurement group in one (fresh) process;
* :mod:`benchmarks.cli` -- plans the groups, runs them, checks, reports.
"""

SCHEMA_VERSION = 1
