"""rnn_jax: recurrent networks as pure JAX functions, and the experiments on why they are hard to train.

Two parts (the README's layering table lists every module):

- the library, this package: cells, the scanned unroll and its reverse passes, models and
  layers, losses, optax chains, gradient diagnostics, long sequences, interop, and the
  hand-written BPTT reference that checks them;
- the reproductions, :mod:`rnn_jax.repro`: the source documents' tasks and data, Pascanu's
  regulariser, the training engine, seed sweeps, the experiments and the ``rnn-jax`` command.
  ``import rnn_jax`` does not load them; ``rnn_jax.repro`` (or ``import rnn_jax.repro``) does.
"""

from rnn_jax import activations, initializers, losses
from rnn_jax._checks import UserError, UserTypeError, UserValueError
from rnn_jax import cells
from rnn_jax.cells import *  # noqa: F403 (the cells and their types: rnn_jax.cells.__all__)
from rnn_jax.readout import ReadoutParams, readout, readout_init
from rnn_jax.unroll import default_backward, default_project_inputs, python_unroll, unroll
from rnn_jax.linear import linear_recurrence
from rnn_jax import model
from rnn_jax.model import ModelParams
from rnn_jax import long  # chunked checkpointing for long sequences (uses unroll and model)
from rnn_jax import bptt, diagnostics, layers, optim

__version__ = "0.1.0"

__all__ = [
    "UserError", "UserTypeError", "UserValueError",
    *cells.__all__, "ModelParams", "ReadoutParams",
    "activations", "bptt", "default_backward", "default_project_inputs", "diagnostics", "optim", "initializers", "layers", "linear_recurrence", "long", "losses", "model",
    "python_unroll", "readout", "readout_init", "repro", "unroll",
]


def __getattr__(name):
    # the reproductions load on first use, so that importing the library stays light
    if name == "repro":
        import importlib

        return importlib.import_module("rnn_jax.repro")
    raise AttributeError(f"module 'rnn_jax' has no attribute {name!r}")
