"""Determinism: the same key gives bit-identical results, run to run and process to process (CPU)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import rnn_jax
from rnn_jax.repro import tasks, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import hashlib, jax, jax.numpy as jnp, numpy as np, rnn_jax
from rnn_jax.repro import tasks, train
setup = train.Setup(cell=rnn_jax.gru(6), task=tasks.get("temporal_order", min_length=10, max_length=14),
                    batch_size=4, eval_size=32, eval_batch_size=32)
hp = {"learning_rate": jnp.array([0.1, 0.05], jnp.float32), "clip": jnp.array([1.0, 1.0], jnp.float32)}
state = train.train_chunk(setup, hp, train.init_members(setup, [11, 12], hp), 25)
leaves = [np.asarray(l) for l in jax.tree_util.tree_leaves(state.params)]
print(hashlib.sha256(b"".join(l.tobytes() for l in leaves)).hexdigest())
"""


def _digest():
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_training_is_bit_identical_across_processes():
    assert _digest() == _digest()


def test_same_key_same_bits_in_process():
    cell = rnn_jax.lstm(5)
    a = rnn_jax.model.init(jax.random.key(3), cell, 2, 1)
    b = rnn_jax.model.init(jax.random.key(3), cell, 2, 1)
    xs = jax.random.normal(jax.random.key(4), (3, 7, 2), jnp.float32)
    ga = jax.jit(jax.grad(lambda p: rnn_jax.model.loss(cell, p, xs, jnp.ones((3, 1), jnp.float32))))(a)
    gb = jax.jit(jax.grad(lambda p: rnn_jax.model.loss(cell, p, xs, jnp.ones((3, 1), jnp.float32))))(b)
    for x, y in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
        np.testing.assert_array_equal(x, y)
