"""rnn_jax: recurrent networks as pure JAX functions, and the experiments on why they are hard to train.

Layering, bottom-up (nothing imports upward): activations, initializers -> cells
-> unroll, linear -> readout, losses, model, long -> bptt, diagnostics -> optim, regularizer
-> tasks -> train -> experiments -> cli.
"""

from rnn_jax import activations, initializers, losses
from rnn_jax._checks import UserError, UserTypeError, UserValueError
from rnn_jax.cells import (
    Cell,
    ElmanParams,
    GRUParams,
    LSTMParams,
    LSTMState,
    ReverseRule,
    RNNState,
    elman,
    gru,
    lstm,
    make,
    pascanu,
)
from rnn_jax.readout import ReadoutParams, readout, readout_init
from rnn_jax.unroll import default_backward, default_project_inputs, python_unroll, unroll
from rnn_jax.linear import linear_recurrence
from rnn_jax import model
from rnn_jax.model import ModelParams
from rnn_jax import long  # chunked checkpointing for long sequences (uses unroll and model)
from rnn_jax import bptt, diagnostics, layers, optim, regularizer, tasks

__version__ = "0.1.0"

__all__ = [
    "UserError", "UserTypeError", "UserValueError",
    "Cell", "ElmanParams", "GRUParams", "LSTMParams", "LSTMState", "ModelParams", "RNNState", "ReadoutParams", "ReverseRule",
    "activations", "bptt", "default_backward", "default_project_inputs", "diagnostics", "optim", "regularizer", "elman", "gru", "initializers", "layers", "linear_recurrence", "long", "losses", "lstm", "make", "model",
    "pascanu", "python_unroll", "readout", "readout_init", "tasks", "unroll",
]
