"""The reproductions of the source documents, one module per experiment (see the README).

Each module has ``PROFILES`` and ``run(out_dir, profile, seeds, progress)``; the
command line (``rnn-jax <name>``) is a thin layer over them.
"""

import importlib.util as _util

_ALL = {
    "counting": "rnn_jax.repro.experiments.counting",
    "teacher-student": "rnn_jax.repro.experiments.teacher_student",
    "temporal-order": "rnn_jax.repro.experiments.temporal_order",
    "pathological": "rnn_jax.repro.experiments.pathological",
    "one-unit": "rnn_jax.repro.experiments.one_unit",
    "gates": "rnn_jax.repro.experiments.gates",
    "music": "rnn_jax.repro.experiments.music",
    "chars": "rnn_jax.repro.experiments.chars",
}

# Only the reproductions present in this installation (each lands with its tests).
EXPERIMENTS = {name: module for name, module in _ALL.items() if _util.find_spec(module) is not None}
