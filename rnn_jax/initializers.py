"""Weight initialisers: ``init(key, shape, dtype) -> array``.

Besides the usual ones (PyTorch's uniform ±1/√H, orthogonal, normal, zeros) this
module has the three schemes of Pascanu, Mikolov & Bengio (2013), taken from the
authors' code (``pascanur/trainingRNNs``, ``RNN.py``):

* ``sigmoid``: every weight ~ N(0, 0.01²) (used with sigmoid units);
* ``basic_tanh``: every weight ~ N(0, 0.1²) (tanh units);
* ``smart_tanh``: input/output weights ~ N(0, 0.01²); the recurrent matrix
  ~ N(0, 0.01²), of which each row keeps 15 random non-zeros (the original zeroes
  ``W_hh[i][perm[15:]]`` for every row ``i`` of the ``(in, out)`` matrix), then
  rescaled so that its spectral radius is 0.95.

Matrices are stored ``(in, out)`` as in the original code (``h @ W_hh``).
Recurrent matrices of gated cells have shape ``(H, G*H)``; ``orthogonal`` and
``smart_tanh`` then act on each ``(H, H)`` gate block separately.
"""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax._checks import check_choice

Initializer = Callable[[jax.Array, tuple, jnp.dtype], jax.Array]


def zeros(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype)


def normal(std: float) -> Initializer:
    """N(0, std²) for every entry."""

    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.normal(key, shape, dtype)

    return init


def uniform(scale: float) -> Initializer:
    """U(-scale, scale) for every entry."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def pytorch_default(hidden_size: int) -> Initializer:
    """U(-1/√hidden_size, 1/√hidden_size), PyTorch's initialisation of every RNN weight."""
    return uniform(1.0 / np.sqrt(hidden_size))


def _blockwise(square_init: Callable) -> Initializer:
    """Apply an initialiser of square ``(H, H)`` matrices to each gate block of ``(H, G*H)``."""

    def init(key, shape, dtype=jnp.float32):
        if len(shape) != 2 or shape[1] % shape[0] != 0:
            raise ValueError(f"expected a recurrent matrix of shape (H, G*H), got shape {shape}")
        hidden, gates = shape[0], shape[1] // shape[0]
        keys = jax.random.split(key, gates)
        return jnp.concatenate([square_init(k, hidden, dtype) for k in keys], axis=1)

    return init


def _orthogonal_square(key, n, dtype):
    a = jax.random.normal(key, (n, n), jnp.float64 if dtype == jnp.float64 else jnp.float32)
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diag(r))[None, :]
    return q.astype(dtype)


orthogonal = _blockwise(_orthogonal_square)
orthogonal.__doc__ = "A random orthogonal matrix for each (H, H) gate block."


def _smart_tanh_square(key, n, dtype, nonzeros=15, radius=0.95, std=0.01):
    k_val, k_perm = jax.random.split(key)
    w = np.asarray(std * jax.random.normal(k_val, (n, n), jnp.float32), np.float64)
    # a random permutation per row; its first `nonzeros` columns are kept
    order = np.argsort(np.asarray(jax.random.uniform(k_perm, (n, n))), axis=1)
    mask = np.zeros((n, n), bool)
    np.put_along_axis(mask, order[:, : min(nonzeros, n)], True, axis=1)
    w = np.where(mask, w, 0.0)
    rho = np.max(np.abs(np.linalg.eigvals(w)))
    return jnp.asarray(radius * w / rho, dtype)


def smart_tanh_recurrent(nonzeros: int = 15, radius: float = 0.95, std: float = 0.01) -> Initializer:
    """Sparse N(0, std²) matrix with ``nonzeros`` entries per row, rescaled to spectral radius ``radius``.

    Runs eagerly on the host (an eigenvalue decomposition); call it outside ``jit``.
    """

    def square(key, n, dtype):
        return _smart_tanh_square(key, n, dtype, nonzeros, radius, std)

    return _blockwise(square)


# Named initialisers for matrices. ``smart_tanh`` names the recurrent matrix's
# scheme; the paper's input and output weights under smart_tanh use ``sigmoid``'s
# N(0, 0.01²) -- see ``PAPER_SCHEMES``.
NAMED = {
    "zeros": lambda hidden: zeros,
    "uniform": lambda hidden: pytorch_default(hidden),
    "orthogonal": lambda hidden: orthogonal,
    "sigmoid": lambda hidden: normal(0.01),
    "basic_tanh": lambda hidden: normal(0.1),
    "smart_tanh": lambda hidden: smart_tanh_recurrent(),
}

# The paper's three schemes: (input init, recurrent init, activation).
PAPER_SCHEMES = {
    "sigmoid": ("sigmoid", "sigmoid", "sigmoid"),
    "basic_tanh": ("basic_tanh", "basic_tanh", "tanh"),
    "smart_tanh": ("sigmoid", "smart_tanh", "tanh"),
}


def resolve(what: str, init: Union[str, Initializer], hidden_size: int) -> Initializer:
    """Turn a name from ``NAMED`` or a callable into an initialiser."""
    if callable(init):
        return init
    return NAMED[check_choice(what, init, NAMED)](hidden_size)
