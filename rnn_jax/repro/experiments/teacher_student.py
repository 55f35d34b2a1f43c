"""Teacher and student (the Theano teacher/student blog post): the document's run rebuilt, and its spread over seeds.

What it shows. A *teacher* Elman network (3 inputs, 2 sigmoid hidden units, 1
linear output, every weight N(0, 1)) has its ``W_hh`` rebuilt from its SVD with
the first singular value set by hand; it labels random N(0, 1) input sequences
with its last output, and a *student* of the same shape (weights N(0, 0.01²),
zero biases) is trained on 500 of them with the document's momentum SGD: one
sequence per update, in the same order every epoch, learning rate 0.001,
momentum 0.5 for epochs 0..5 then 0.9, squared error of the last step. The
document prints the cost after 500 and 1500 epochs for lengths 2, 10 and 100,
for two teachers.

The document's run, rebuilt draw for draw. Its code fixes every random number
with NumPy's legacy generator, which still gives the same numbers
(:func:`rnn_jax.repro.tasks.teacher.document_teacher`, ``document_inputs``,
``document_student``): the teacher after ``np.random.seed(19910715)`` (``W_hh``,
its SVD and hand-set ``s[0,0]``, ``b_hh``, ``W_hi``, ``W_yh``, ``b_yh``), the
data next from the same stream, the student from ``RandomState(1234)``. The
member labelled ``"document"`` of every run is that run; the others are the
seed spread (see below).

Theano's simultaneous updates. ``my_rnn.py`` gives ``theano.function`` the
update list ``(gW, μ·gW − lr·∂C/∂W), (W, W + gW)`` for every parameter. Theano
evaluates every right-hand side with the values from before the call, then
assigns them all, so the step that moves ``W`` is the velocity of the *previous*
update::

    v_{k+1} = μ_k v_k − η ∇C_k(w_k),    w_{k+1} = w_k + v_k,    v_0 = 0

(the first update does not move the weights; the gradient at ``w_k`` moves them
from update ``k + 1`` on). That is the default here (``update="theano"``,
:func:`theano_momentum`); the textbook form ``w_{k+1} = w_k + v_{k+1}`` of
:func:`rnn_jax.optim.teacher_student` is the named option ``update="sequential"``
(what this module did before). The cost of an epoch is what the document prints:
the mean over the epoch's updates of the cost that update's Theano call returns,
computed with the weights before it.

Which epochs the document's rows are. The code prints ``epoch {e}, average cost``
for ``e = 0 .. 1499`` and, at the end, the last epoch's mean again. The rows match
the line ``epoch 500`` (the 501st epoch) and the last line (``epoch 1499``):
the exploding run at T = 2 prints 0.0014513 at ``epoch 499``, 0.0014431 at
``epoch 500`` (document 0.00144) and 2.4015e-5 at ``epoch 1498``, 2.3931e-5 at
``epoch 1499`` (document 2.39e-5). So a row labelled ``e`` is the epoch of index
``min(e, epochs − 1)``.

Which teacher gives which table. The second ("exploding") table is ``s[0,0] = 10``,
the value in the code's comment: all six printed figures come out to the digits
printed (:data:`PRINTED`; ``match`` in ``summary.json``). The first ("vanishing")
table is not the code as printed (setting ``as_printed``: ``W_hh`` as drawn,
singular values 1.361 and 0.0670): that teacher gives 1.964e-5 and 2.517e-5 after
500 epochs at T = 2 and 10, and 3.044e-9 and 5.407e-9 after 1500, against the
document's 1.2e-5, 1.44e-5, 3.21e-9 and 5.11e-9. With ``s[0,0] = c`` (the rest of
the draws unchanged) the six figures move smoothly with ``c``; scanning ``c`` from
0.01 to 5, no value gives all six. ``c`` in [0.064, 0.0667) gives five, missing
T = 2's 3.21e-9 (3.216-3.219e-9); ``c`` in [0.0686, 0.0709) gives five, missing
T = 10's 1.44e-5 after 500 epochs (1.446-1.448e-5); in between (``c = s[1,1] =
0.06699``, both singular values equal, among them) four. Setting both singular
values by hand does not help: along the pairs that give T = 2's 3.21e-9, T = 10's
1.44e-5 and 5.11e-9 need disjoint ranges again. The gap is not float rounding:
perturbing the student's start by 1e-13 moves none of the first eight digits
(the training is not chaotic). :data:`VANISHING_S00` = 0.07 is the value used here:
one significant digit, like the comment's 10, and five of the six figures; the
one off is T = 10 after 500 epochs (1.4473e-5 against 1.44e-5, 0.5 %). The table
printed by :func:`run` marks which figures match.

The printed figures barely tell the two update forms apart. With the document's
draws, the sequential form also prints all six exploding figures (0.0014439,
0.0035793, 0.0045460; 2.3890e-5, 0.0035217, 0.0045082), and with ``s[0,0] = 0.07``
three of the six vanishing ones (T = 2 after 1500 epochs 3.1940e-9 against 3.2135e-9
simultaneously, T = 10 5.1247e-9 against 5.1076e-9; at most 0.6 % apart). By the
coarse scan of ``c`` above, no ``c`` gives all six with it either (T = 10's two
figures need ``c`` in about [0.052, 0.065) and [0.027, 0.047)). The default is Theano's form
because it is what the code does, not because the tables single it out.

The seed spread. The same teacher and optimizer with other students and data:
member ``seed`` draws the student's weights (N(0, 0.01²)) and the sequences
(N(0, 1)) from ``jax.random.key(seed)``; the table gives mean ± std (median) over
those seeds next to the document's single run, each with and without
gradient-norm clipping before the momentum (Algorithm 1 of Pascanu et al.,
threshold 1). The summary adds the cost on fresh sequences after the last epoch
(1,000 per member; the document's member draws them from its stream after its
training data) and the distance of the student's weights to the teacher's (up
to a permutation of the two hidden units).

Measured (``full``: the document's run and 32 seeds, both forms of clipping,
three teachers; 41 min on two cores shared with other jobs, 17 CPU-minutes):

* exploding (``s[0,0] = 10``): the rebuilt run prints the document's six figures
  (0.0014431, 0.0035791, 0.0045485 after 500 epochs; 2.3931e-5, 0.0035212,
  0.0045105 after 1500). Over the seeds the document's "stuck" runs are the rule:
  at T = 10 and 100 every seed stays above 5e-4 after 1500 epochs (median 2.6e-3,
  0 of 32 under 1e-4, weights as far from the teacher's as the teacher's own size),
  while T = 2 keeps improving (3.5e-5 ± 1.5e-5, weight distance 0.035). The
  student's gradients do not explode, though: the largest norm of every run is in
  its first epoch (at most 7.35, the same in every setting and length; under 5.3
  afterwards) and the stuck students' mean norm over their last 100 epochs is
  0.05 (spikes to 2.7).
* vanishing (``s[0,0] = 0.07``): five of six figures (above); the seeds reach
  1.4-1.6e-5 after 500 epochs and 7.8-9.1e-9 after 1500 at every length, with the
  teacher's weights recovered (relative distance 1e-3): the teacher forgets, so
  its output depends on its last few inputs only, and length does not matter.
* as printed (``W_hh`` as drawn, ``σ_max = 1.36``): the same picture as the
  vanishing teacher (2.8e-5 and 1e-8 over the seeds), none of the first table's
  figures.
* clipping at 1 touches 0.4-1.1 % of the updates (with the vanishing and the
  as-printed teachers only in the first 90 epochs; in the stuck runs now and then
  until the end) and raises the costs of the runs that learn by 4-7 % after 1500
  epochs; it does not free the stuck runs.

Everything runs in float64 (``jax.enable_x64`` inside :func:`run`), as the
document's Theano code must (its velocities are float64 arrays and a float32
``floatX`` would make its updates change dtype, which Theano refuses): at
1500 epochs the costs are 1e-9 and the mean gradient norm over the last 100
epochs 2e-4, so the steps ``lr·g`` are 2e-7, about float32's resolution (1.2e-7)
of weights of size 1.

Units of work: ``(length, block of members, chunk of epochs)``; each record holds
the members' curves and their final training state (parameters and optimizer
state, exact float64 values), so a rerun resumes after the last finished chunk
and reproduces the same numbers bit for bit.

Profiles: ``full`` is the document's setting (500 sequences, 1500 epochs, rows
500 and 1500) for the document's run and 32 seeds, three teachers (41 min on two
shared cores); ``quick`` keeps 500 sequences and the momentum switch-over but runs
150 epochs (rows 50 and 150, the document's 1:3 ratio) for the document's run and
8 seeds (77 s); ``tiny`` (tests) 60 sequences (the first 60 of the document's), 12
epochs, lengths 2 and 10, the vanishing and exploding teachers, 2 seeds.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import model, optim
from rnn_jax.cells import elman
from rnn_jax.repro.experiments import common
from rnn_jax.repro.tasks.teacher import (
    DOCUMENT_STUDENT_SEED, DOCUMENT_TEACHER_SEED, TEACHER_SUCCESS, document_inputs, document_student,
    document_teacher, teacher_cell,
)

NAME = "teacher-student"

# The hand-set s[0,0] of the document's two teachers (``rnn_generator.py``): the exploding
# one is the code's comment; the vanishing one is not printed (see the module docstring).
VANISHING_S00 = 0.07
EXPLODING_S00 = 10.0
# "as_printed": the code as printed, the s[0,0] line commented out (W_hh as drawn), the
# other candidate for the first table (it does not give it: module docstring).
SETTINGS: Dict[str, Optional[float]] = {"vanishing": VANISHING_S00, "exploding": EXPLODING_S00, "as_printed": None}
# The document's table each setting is compared with.
COMPARED_WITH = {"vanishing": "vanishing", "exploding": "exploding", "as_printed": "vanishing"}
SIGMOID_GAMMA = 0.25  # sup of the sigmoid's derivative

# The document's tables as printed (cost after `epoch` epochs, by length); the strings
# carry the number of digits it prints.
PRINTED: Dict[str, Dict[int, Dict[int, str]]] = {
    "vanishing": {500: {2: "1.2e-5", 10: "1.44e-5", 100: "1.35e-5"}, 1500: {2: "3.21e-9", 10: "5.11e-9", 100: "2.7e-9"}},
    "exploding": {500: {2: "0.00144", 10: "0.00358", 100: "0.0045"}, 1500: {2: "2.39e-5", 10: "0.00352", 100: "0.0045"}},
}
DOCUMENT = {s: {e: {t: float(v) for t, v in row.items()} for e, row in tab.items()} for s, tab in PRINTED.items()}

# The member that is the document's run (numpy draws); the others are integer seeds.
DOCUMENT_MEMBER = "document"

# How the weights move (module docstring): Theano's simultaneous updates (the document's
# code, the default) or the textbook momentum step (the named option).
UPDATES = ("theano", "sequential")
UPDATE = "theano"

PROFILES: Dict[str, dict] = {
    # for the tests: seconds
    "tiny": dict(settings=("vanishing", "exploding"), lengths=(2, 10), sequences=60, epochs=12, report_epochs=(4, 12),
                 seeds=2, seed_block=3, epochs_per_unit=6, test_size=200),
    # 77 s measured on two cores shared with other jobs (44 CPU-seconds)
    "quick": dict(settings=tuple(SETTINGS), lengths=(2, 10, 100), sequences=500, epochs=150, report_epochs=(50, 150),
                  seeds=8, seed_block=9, epochs_per_unit=75, test_size=1000),
    # the document's setting: 41 min measured on two shared cores (17 CPU-minutes)
    "full": dict(settings=tuple(SETTINGS), lengths=(2, 10, 100), sequences=500, epochs=1500,
                 report_epochs=(500, 1500), seeds=32, seed_block=33, epochs_per_unit=100, test_size=1000),
}

# The document's optimizer.
LEARNING_RATE = 0.001
INITIAL_MOMENTUM, FINAL_MOMENTUM, MOMENTUM_SWITCHOVER = 0.5, 0.9, 5  # 0.5 while epoch <= 5
# Clipping threshold (global norm) of the clipped members: the paper's temporal-order
# value. Measured (full profile): one-sequence gradient norms reach 7.4 in the first
# epoch and stay under 4.3 afterwards, so 1 clips 0.4-1.1 % of the updates.
CLIP_THRESHOLD = 1.0
DTYPE = jnp.float64
# lax.scan unroll factor of the student's forward pass: the state is 2 numbers, so
# the loop overhead dominates on a CPU; unrolling does not change any value.
UNROLL = {2: 2, 10: 10}
DEFAULT_UNROLL = 10

CELL = teacher_cell(2)


# ---------------------------------------------------------------- the optimizer


class TheanoMomentumState(NamedTuple):
    count: jax.Array  # updates done
    velocity: Any  # v_k: the step the next update applies


def theano_momentum(learning_rate: float, momentum: optax.Schedule) -> optax.GradientTransformation:
    """The document's momentum under Theano's simultaneous updates.

    ``my_rnn.py``'s update list ``(v, μ v − η g), (w, w + v)`` is evaluated with the
    values before the call, so the returned update is the stored velocity ``v_k`` and
    the new one is ``v_{k+1} = μ_k v_k − η g_k``::

        w_{k+1} = w_k + v_k,    v_{k+1} = μ_k v_k − η g_k,    v_0 = 0

    Args:
      learning_rate: ``η`` (a number).
      momentum: ``count -> μ`` (e.g. :func:`rnn_jax.optim.switchover_momentum`).
    """

    def init_fn(params):
        return TheanoMomentumState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update_fn(grads, state, params=None):
        del params
        mu = momentum(state.count)
        new = jax.tree.map(lambda v, g: jnp.asarray(mu, g.dtype) * v - jnp.asarray(learning_rate, g.dtype) * g,
                           state.velocity, grads)
        return state.velocity, TheanoMomentumState(optax.safe_increment(state.count), new)

    return optax.GradientTransformation(init_fn, update_fn)


def check_update(update: Any) -> str:
    if update not in UPDATES:
        raise ValueError(f"teacher-student update: expected one of {', '.join(map(repr, UPDATES))}, got {update!r}")
    return update


def make_optimizer(threshold: Any, updates_per_epoch: int, update: str = UPDATE) -> optax.GradientTransformation:
    """Global-norm clipping at ``threshold`` (``inf``: none), then the document's momentum.

    ``η = 0.001``, ``μ = 0.5`` for epochs 0..5 and 0.9 afterwards, ``updates_per_epoch``
    updates an epoch; ``update="theano"`` (default): :func:`theano_momentum`, the
    document's simultaneous updates; ``"sequential"``: ``v ← μ v − η g; w ← w + v``
    (:func:`rnn_jax.optim.teacher_student`). ``threshold`` may be a tracer, so clipped
    and unclipped members share one compiled program.
    """
    check_update(update)
    if update == "sequential":
        momentum = optim.teacher_student(LEARNING_RATE, updates_per_epoch=updates_per_epoch,
                                         momentum_switchover=MOMENTUM_SWITCHOVER, initial_momentum=INITIAL_MOMENTUM,
                                         final_momentum=FINAL_MOMENTUM)
    else:
        schedule = optim.switchover_momentum(INITIAL_MOMENTUM, FINAL_MOMENTUM,
                                             switchover=(MOMENTUM_SWITCHOVER + 1) * int(updates_per_epoch))
        momentum = theano_momentum(LEARNING_RATE, schedule)
    return optax.chain(optim.clip_by_global_norm(threshold), momentum)


# ---------------------------------------------------------------- the model and its training


def student_init(key: jax.Array, dtype=DTYPE) -> model.ModelParams:
    """A student of the seed spread: every weight N(0, 0.01²), zero biases (as ``my_rnn.py``).

    ``elman(2, scheme="sigmoid")`` draws ``w_ih`` and ``w_hh`` N(0, 0.01²) and a zero
    ``b``; the readout's ``"sigmoid"`` initialiser is N(0, 0.01²) with a zero bias.
    The document's own student is :func:`rnn_jax.repro.tasks.teacher.document_student`.
    """
    return model.init(key, elman(2, scheme="sigmoid"), 3, 1, readout_weight_init="sigmoid", dtype=dtype)


class EpochStats(NamedTuple):
    """Per-epoch statistics of one member, each ``(epochs,)``."""

    cost: jax.Array  # mean over the epoch's updates of the sequence's cost before its update (the document's)
    grad_norm: jax.Array  # mean global gradient norm (before clipping)
    max_grad_norm: jax.Array  # largest global gradient norm
    clipped_fraction: jax.Array  # fraction of updates whose norm reached the threshold


def train_member(params, opt_state, threshold, inputs, targets, *, num_epochs: int, unroll: int = 1,
                 update: str = UPDATE):
    """``num_epochs`` epochs of ONE student over its fixed data set, one sequence per update.

    Args:
      params, opt_state: the student and its optimizer state (:func:`make_optimizer`
        with the same ``update``).
      threshold: () clipping threshold (``inf``: no clipping).
      inputs: (N, T, 3); targets: (N, 1). Visited in order every epoch, as in the document.
      num_epochs: static; unroll: static ``lax.scan`` unroll factor (speed only);
      update: static, ``"theano"`` or ``"sequential"`` (:func:`make_optimizer`).

    Returns:
      ``(params, opt_state, EpochStats)``.
    """
    cost_fn = lambda p, x, y: model.loss(CELL, p, x[None], y[None], loss="mse", on="last", unroll=unroll)
    update_fn = optim.descent_step(make_optimizer(threshold, inputs.shape[0], update), cost_fn)

    def step(carry, sequence):
        carry, (cost, grads) = update_fn(carry, *sequence)
        return carry, (cost, optax.tree.norm(grads))

    def epoch(carry, _):
        carry, (costs, norms) = jax.lax.scan(step, carry, (inputs, targets))
        clipped = jnp.mean((norms >= threshold).astype(costs.dtype))
        return carry, EpochStats(jnp.mean(costs), jnp.mean(norms), jnp.max(norms), clipped)

    (params, opt_state), stats = jax.lax.scan(epoch, (params, opt_state), None, length=num_epochs)
    return params, opt_state, stats


@functools.partial(jax.jit, static_argnames=("num_epochs", "unroll", "update"))
def train_members(params, opt_state, thresholds, inputs, targets, *, num_epochs: int, unroll: int = 1,
                  update: str = UPDATE):
    """:func:`train_member` over a block: ``(L, V)`` members, L data sets × V variants.

    params, opt_state: leading axes ``(L, V)``; thresholds: ``(V,)``; inputs:
    ``(L, N, T, 3)`` (one data set per label, shared by its variants, not copied);
    targets: ``(L, V, N, 1)``. One compiled program.
    """
    fn = functools.partial(train_member, num_epochs=num_epochs, unroll=unroll, update=update)
    per_label = jax.vmap(fn, in_axes=(0, 0, 0, None, 0))
    return jax.vmap(per_label, in_axes=(0, 0, None, 0, 0))(params, opt_state, thresholds, inputs, targets)


@functools.partial(jax.jit, static_argnames=("unroll",))
def member_costs(params, inputs, targets, *, unroll: int = 1):
    """Mean squared last-step error of every member on its label's sequences: ``(L, V)``."""
    cost = lambda p, x, y: model.loss(CELL, p, x, y, loss="mse", on="last", unroll=unroll)
    return jax.vmap(jax.vmap(cost, in_axes=(0, None, 0)), in_axes=(0, 0, 0))(params, inputs, targets)


class MemberKeys(NamedTuple):
    init: jax.Array  # the student's weights
    data: jax.Array  # the training and test sequences (folded with the length)


def member_keys(seed: int) -> MemberKeys:
    """The two independent keys of a seed of the spread."""
    return MemberKeys(*jax.random.split(jax.random.key(int(seed)), 2))


def _as_jax(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, DTYPE), tree)


@jax.jit
def _seed_student(key):
    return student_init(key)


def initial_student(label: Union[str, int]) -> model.ModelParams:
    """The student of a member, float64 NumPy: the document's (``RandomState(1234)``) or a seed's."""
    if label == DOCUMENT_MEMBER:
        return document_student(DOCUMENT_STUDENT_SEED)
    return jax.tree_util.tree_map(np.asarray, _seed_student(member_keys(label).init))


def init_members(labels: Sequence[Union[str, int]], thresholds: np.ndarray, updates_per_epoch: int,
                 update: str = UPDATE):
    """Students and optimizer states with leading axes ``(len(labels), len(thresholds))``: the
    same student for every variant of a label (paired comparisons)."""
    students = [initial_student(label) for label in labels]
    params = jax.tree_util.tree_map(lambda *a: jnp.asarray(np.stack(a), DTYPE), *students)
    return _init_members(params, jnp.asarray(thresholds, DTYPE), updates_per_epoch=updates_per_epoch, update=update)


@functools.partial(jax.jit, static_argnames=("updates_per_epoch", "update"))
def _init_members(params, thresholds, *, updates_per_epoch: int, update: str):
    variants = thresholds.shape[0]
    params = jax.tree_util.tree_map(lambda a: jnp.repeat(a[:, None], variants, axis=1), params)
    init = lambda th, p: make_optimizer(th, updates_per_epoch, update).init(p)
    opt_state = jax.vmap(jax.vmap(init), in_axes=(None, 0))(thresholds, params)
    return params, opt_state


def teacher(setting: str) -> model.ModelParams:
    """The document's teacher of ``setting`` (float64 NumPy arrays, row-vector layout)."""
    if setting not in SETTINGS:
        raise ValueError(f"teacher-student setting: expected one of {', '.join(map(repr, SETTINGS))}, got {setting!r}")
    return document_teacher(SETTINGS[setting]).params


def teacher_summary(setting: str) -> dict:
    """The teacher's ``W_hh``: hand-set ``s[0,0]``, singular values, spectral radius, Pascanu's ``γ σ_max``."""
    drawn = document_teacher(SETTINGS[setting])
    w = np.asarray(drawn.params.cell.w_hh, np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    return {
        "s00": SETTINGS[setting],
        "compared_with": COMPARED_WITH[setting],
        "numpy_seed": DOCUMENT_TEACHER_SEED,
        "drawn_singular_values": [float(v) for v in drawn.drawn_singular_values],
        "largest_singular_value": float(s[0]),
        "singular_values": [float(v) for v in s],
        "spectral_radius": float(np.max(np.abs(np.linalg.eigvals(w)))),
        "gamma_sigma_max": float(SIGMOID_GAMMA * s[0]),
        "vanishing_sufficient_condition": bool(SIGMOID_GAMMA * s[0] < 1),
    }


def weight_distance(student: model.ModelParams, teacher: model.ModelParams) -> float:
    """``min_P ‖student − P(teacher)‖ / ‖teacher‖`` over the permutations P of the hidden units
    (all parameters flattened; the permutation relabels the units, which changes no output)."""
    flat = lambda tree: np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(tree)])
    t = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), teacher)
    best = math.inf
    for perm in itertools.permutations(range(t.cell.w_hh.shape[0])):
        p = np.asarray(perm)
        permuted = model.ModelParams(
            cell=t.cell._replace(w_ih=t.cell.w_ih[:, p], w_hh=t.cell.w_hh[p][:, p], b=t.cell.b[p]),
            readout=t.readout._replace(w=t.readout.w[p]),
        )
        best = min(best, float(np.linalg.norm(flat(student) - flat(permuted)) / np.linalg.norm(flat(t))))
    return best


# ---------------------------------------------------------------- the document's figures


def printed_digits(text: str) -> int:
    """Significant digits of a printed figure: ``"1.44e-5"`` 3, ``"0.0045"`` 2, ``"1.2e-5"`` 2."""
    mantissa = text.lower().split("e")[0].replace("-", "").replace(".", "").lstrip("0")
    return max(len(mantissa), 1)


def round_to(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` significant digits."""
    return float(f"{value:.{digits - 1}e}")


def matches_printed(value: float, text: str) -> bool:
    """Whether ``value`` prints as the document's figure ``text`` at its number of digits."""
    return bool(np.isfinite(value)) and round_to(value, printed_digits(text)) == round_to(float(text), printed_digits(text))


def report_index(label: int, epochs: int) -> int:
    """The epoch (0-based, as the document prints it) of the row labelled ``label``: the
    line ``epoch {label}``, or the last epoch when there is none (the document's 1500)."""
    return min(int(label), int(epochs) - 1)


# ---------------------------------------------------------------- state <-> JSON (exact)


def state_to_json(tree: Any) -> List[Any]:
    """The leaves of a pytree as nested lists; float64 values survive JSON exactly (repr)."""
    return [np.asarray(leaf).tolist() for leaf in jax.tree_util.tree_leaves(tree)]


def state_from_json(leaves: List[Any], template: Any) -> Any:
    """Inverse of :func:`state_to_json`, with the structure and dtypes of ``template``."""
    template_leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(leaves) != len(template_leaves):
        raise ValueError(f"saved state: expected {len(template_leaves)} leaves, got {len(leaves)}")
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(np.asarray(v, dtype=t.dtype).reshape(t.shape)) for v, t in zip(leaves, template_leaves)])


# ---------------------------------------------------------------- the run


def _variants(settings: Sequence[str]) -> List[tuple]:
    """(setting, clipped) of the members of one label, in program order."""
    return [(s, c) for s in settings for c in (False, True)]


def _unit_key(length: int, block: Sequence, chunk: int, cfg: dict, threshold: float, update: str) -> str:
    e0 = chunk * cfg["epochs_per_unit"]
    teachers = ",".join(f"{s}={SETTINGS[s]}" for s in cfg["settings"])
    return (f"T={length}|members={','.join(map(str, block))}|sequences={cfg['sequences']}|test={cfg['test_size']}"
            f"|clip={threshold:g}|update={update}|s00:{teachers}|epochs={e0}-{e0 + cfg['epochs_per_unit']}")


def _inputs(label, length: int, cfg: dict) -> np.ndarray:
    """Training then test inputs of a label, ``(sequences + test_size, T, 3)`` float64.

    The document's member: its stream after the teacher's draws (the same for every
    teacher, the SVD draws nothing), training data first as in the document, then the
    test sequences (not in the document). A seed: N(0, 1) from its data key folded
    with the length. A label has the same inputs in both settings.
    """
    n, extra = cfg["sequences"], cfg["test_size"]
    if label == DOCUMENT_MEMBER:
        rng = document_teacher(None).rng
        return np.concatenate([document_inputs(rng, n, length), document_inputs(rng, extra, length)])
    return np.asarray(_seed_inputs(member_keys(label).data, length, n + extra))


@functools.partial(jax.jit, static_argnames=("length", "count"))
def _seed_inputs(key, length: int, count: int):
    return jax.random.normal(jax.random.fold_in(key, length), (count, length, 3), DTYPE)


@functools.partial(jax.jit, static_argnames=("unroll",))
def _teacher_outputs(teacher_params, inputs, *, unroll: int = 1):
    return model.predict(CELL, teacher_params, inputs, on="last", unroll=unroll)


def _block_data(block, length: int, cfg: dict, unroll: int):
    """Training and test sets of a block: inputs ``(L, ·, T, 3)``, targets ``(L, V, ·, 1)``."""
    inputs = np.stack([_inputs(label, length, cfg) for label in block])
    flat = jnp.asarray(inputs.reshape(-1, length, 3))
    outputs = {s: np.asarray(_teacher_outputs(_as_jax(teacher(s)), flat, unroll=unroll)).reshape(len(block), -1, 1)
               for s in cfg["settings"]}
    targets = np.stack([outputs[s] for s, _ in _variants(cfg["settings"])], axis=1)
    n = cfg["sequences"]
    return tuple(jnp.asarray(a) for a in (inputs[:, :n], targets[:, :, :n], inputs[:, n:], targets[:, :, n:]))


def _stats(values: np.ndarray) -> dict:
    """Spread over seeds of positive costs: mean ± std, median, geometric mean, min, max, solved fraction."""
    v = np.asarray(values, np.float64)
    out = common.mean_and_spread(v)
    finite = v[np.isfinite(v)]
    out["median"] = float(np.median(finite)) if finite.size else float("nan")
    out["geometric_mean"] = float(10 ** np.mean(np.log10(np.maximum(finite, 1e-300)))) if finite.size else float("nan")
    out["solved_fraction"] = float(np.mean(finite < TEACHER_SUCCESS)) if finite.size else float("nan")
    return out


def run(out_dir: str, profile: str = "quick", seeds=None, progress: bool = True, update: str = UPDATE) -> dict:
    """Run (or resume) the teacher/student reproduction into ``out_dir``; returns the summary.

    The members: the document's run (label ``"document"``) and the seeds (``seeds``: a
    count or a list of integers; default the profile's), each in both settings, with
    and without clipping. ``update``: ``"theano"`` (the document's simultaneous updates,
    default) or ``"sequential"``.

    Writes ``results.jsonl`` (one line per (length, block of members, chunk of epochs)),
    ``table.md``, ``cost.png``, ``grad_norm.png`` and ``summary.json``.
    """
    cfg = common.get_profile(PROFILES, profile)
    update = check_update(update)
    seeds = common.seed_list(seeds, cfg)
    epochs, per_unit = cfg["epochs"], cfg["epochs_per_unit"]
    if epochs % per_unit:
        raise ValueError(f"profile {profile}: epochs ({epochs}) must be a multiple of epochs_per_unit ({per_unit})")
    chunks = epochs // per_unit
    labels: List[Union[str, int]] = [DOCUMENT_MEMBER] + seeds
    blocks = [labels[i:i + cfg["seed_block"]] for i in range(0, len(labels), cfg["seed_block"])]
    threshold = CLIP_THRESHOLD
    variants = _variants(cfg["settings"])
    thresholds = np.asarray([threshold if c else np.inf for _, c in variants])
    timing = {}

    with jax.enable_x64(True):
        results = common.Results(out_dir)
        prog = common.Progress(NAME, len(cfg["lengths"]) * len(blocks) * chunks, enabled=progress)
        teachers = {s: teacher(s) for s in cfg["settings"]}
        for length in cfg["lengths"]:
            unroll = UNROLL.get(length, DEFAULT_UNROLL)
            for block in blocks:
                state, data = None, None
                for chunk in range(chunks):
                    key = _unit_key(length, block, chunk, cfg, threshold, update)
                    if results.done(key):
                        prog.update(note=f"T={length} chunk {chunk + 1}/{chunks} (done before)")
                        continue
                    if state is None:
                        template = init_members(block, thresholds, cfg["sequences"], update)
                        state = template if chunk == 0 else state_from_json(
                            results.get(_unit_key(length, block, chunk - 1, cfg, threshold, update))["state"], template)
                    if data is None:
                        data = _block_data(block, length, cfg, unroll)
                    start = time.perf_counter()
                    params, opt_state, stats = train_members(*state, jnp.asarray(thresholds, DTYPE), data[0], data[1],
                                                             num_epochs=per_unit, unroll=unroll, update=update)
                    test = np.asarray(member_costs(params, data[2], data[3], unroll=unroll), np.float64)
                    jax.block_until_ready(params)
                    seconds = time.perf_counter() - start
                    timing[key] = seconds
                    state = (params, opt_state)
                    host = jax.tree_util.tree_map(np.asarray, params)
                    records = []
                    for i, label in enumerate(block):
                        for j, (setting, clipped) in enumerate(variants):
                            student = jax.tree_util.tree_map(lambda a: a[i, j], host)
                            records.append({
                                "setting": setting, "clipped": clipped, "seed": label,
                                **{f: np.asarray(getattr(stats, f)[i, j], np.float64).tolist() for f in EpochStats._fields},
                                "test_cost": float(test[i, j]),
                                "weight_distance": weight_distance(student, teachers[setting]),
                            })
                    results.add(key, {"length": length, "chunk": chunk, "update": update,
                                      "epochs": [chunk * per_unit, (chunk + 1) * per_unit],
                                      "members": records, "state": state_to_json(state), "seconds": seconds})
                    prog.update(note=f"T={length} chunk {chunk + 1}/{chunks} ({seconds:.0f} s)")

        curves, document = _collect(results, cfg, blocks, chunks, threshold, update)
        summary = _summarize(cfg, profile, seeds, curves, document, threshold, update)
    common.write_text(out_dir, "table.md", _table(summary))
    _plots(out_dir, cfg, curves, document)
    if timing:
        common.write_text(out_dir, "timing.json", json.dumps(timing, indent=2) + "\n")
    return common.write_summary(out_dir, summary)


def _collect(results, cfg, blocks, chunks, threshold, update):
    """``curves[setting][clipped][length][field]``: (seeds, epochs) arrays of the seed spread, plus
    end-of-run scalars; ``document[setting][clipped][length][field]``: the document's run."""
    curves: dict = {s: {c: {} for c in (False, True)} for s in cfg["settings"]}
    document: dict = {s: {c: {} for c in (False, True)} for s in cfg["settings"]}
    for length in cfg["lengths"]:
        per_member: Dict[tuple, dict] = {}
        for block in blocks:
            for chunk in range(chunks):
                rec = results.get(_unit_key(length, block, chunk, cfg, threshold, update))
                for m in rec["members"]:
                    slot = per_member.setdefault((m["setting"], m["clipped"], m["seed"]), {f: [] for f in EpochStats._fields})
                    for f in EpochStats._fields:
                        slot[f].extend(m[f])
                    slot["test_cost"], slot["weight_distance"] = m["test_cost"], m["weight_distance"]
        for setting in cfg["settings"]:
            for clipped in (False, True):
                doc = per_member[(setting, clipped, DOCUMENT_MEMBER)]
                document[setting][clipped][length] = {k: np.asarray(v, np.float64) for k, v in doc.items()}
                seeds = [k[2] for k in per_member if k[0] == setting and k[1] == clipped and k[2] != DOCUMENT_MEMBER]
                rows = [per_member[(setting, clipped, s)] for s in seeds]
                curves[setting][clipped][length] = {
                    **{f: np.asarray([r[f] for r in rows], np.float64).reshape(len(rows), -1) for f in EpochStats._fields},
                    "test_cost": np.asarray([r["test_cost"] for r in rows], np.float64),
                    "weight_distance": np.asarray([r["weight_distance"] for r in rows], np.float64),
                }
    return curves, document


def _label(clipped: bool) -> str:
    return "clipped" if clipped else "not_clipped"


def _summarize(cfg, profile, seeds, curves, document, threshold, update) -> dict:
    epochs = cfg["epochs"]
    rows = {str(e): report_index(e, epochs) for e in cfg["report_epochs"]}
    out = {
        "profile": profile,
        "update": update,
        "settings": {s: teacher_summary(s) for s in cfg["settings"]},
        "student_numpy_seed": DOCUMENT_STUDENT_SEED,
        "seeds": seeds,
        "sequences": cfg["sequences"],
        "epochs": epochs,
        "report_epochs": list(cfg["report_epochs"]),
        "report_epoch_index": rows,
        "lengths": list(cfg["lengths"]),
        "learning_rate": LEARNING_RATE,
        "momentum": [INITIAL_MOMENTUM, FINAL_MOMENTUM, MOMENTUM_SWITCHOVER],
        "clip_threshold": threshold,
        "success_threshold": TEACHER_SUCCESS,
        "document": {s: {str(e): dict((str(t), v) for t, v in row.items()) for e, row in tab.items()}
                     for s, tab in PRINTED.items()},
        "document_run": {}, "match": {},
        "cost": {}, "test_cost": {}, "weight_distance": {}, "max_grad_norm": {}, "clipped_fraction": {},
    }
    for setting in cfg["settings"]:
        for clipped in (False, True):
            name = f"{setting}/{_label(clipped)}"
            c, d = curves[setting][clipped], document[setting][clipped]
            out["document_run"][name] = {
                str(t): {**{e: float(d[t]["cost"][i]) for e, i in rows.items()},
                         "test_cost": float(d[t]["test_cost"]), "weight_distance": float(d[t]["weight_distance"]),
                         "max_grad_norm": float(np.max(d[t]["max_grad_norm"]))}
                for t in cfg["lengths"]}
            out["cost"][name] = {str(t): {e: _stats(c[t]["cost"][:, i]) for e, i in rows.items()} for t in cfg["lengths"]}
            out["test_cost"][name] = {str(t): _stats(c[t]["test_cost"]) for t in cfg["lengths"]}
            out["weight_distance"][name] = {str(t): common.mean_and_spread(c[t]["weight_distance"]) for t in cfg["lengths"]}
            out["max_grad_norm"][name] = {str(t): float(np.max(c[t]["max_grad_norm"])) for t in cfg["lengths"]}
            out["clipped_fraction"][name] = {str(t): float(np.mean(c[t]["clipped_fraction"])) for t in cfg["lengths"]}
        # the document's figures against its rebuilt run (unclipped), when the profile is the document's
        for e, row in PRINTED[COMPARED_WITH[setting]].items():
            if epochs == 1500 and cfg["sequences"] == 500 and str(e) in rows:
                for t, text in row.items():
                    if t in cfg["lengths"]:
                        ours = out["document_run"][f"{setting}/not_clipped"][str(t)][str(e)]
                        out["match"].setdefault(setting, {}).setdefault(str(e), {})[str(t)] = {
                            "printed": text, "rebuilt": ours, "matches": matches_printed(ours, text)}
    return out


def _fmt(s: dict) -> str:
    if not s.get("n"):
        return "–"
    return f"{s['mean']:.3g} ± {s['std']:.2g} (median {s['median']:.3g})"


def _s00_text(s00) -> str:
    return "as drawn" if s00 is None else f"= {s00:g}"


def _table(summary: dict) -> str:
    lengths = summary["lengths"]
    n = len(summary["seeds"])
    parts = [
        f"# Teacher and student ({summary['profile']} profile, {summary['update']} updates)\n\n"
        f"Cost: the document's epoch mean of the last-step squared error. The document's run is rebuilt from its "
        f"numpy seeds (teacher {DOCUMENT_TEACHER_SEED}, student {DOCUMENT_STUDENT_SEED}); the seed spread is "
        f"mean ± std (median) over {n} seeds (other students and data, same teacher). "
        f"{summary['sequences']} sequences, one per update, lr {summary['learning_rate']}, momentum 0.5 -> 0.9 after "
        f"epoch 5; clipped: global norm {summary['clip_threshold']:g} before the momentum. Row `e` is the epoch printed "
        f"`epoch e` (0-based), the last one when there is none. Teacher W_hh singular values: "
        + "; ".join(f"{s} ({_s00_text(v['s00'])}) " + ", ".join(f"{x:.4g}" for x in v["singular_values"])
                    + f" (γσ = {v['gamma_sigma_max']:.3g})" for s, v in summary["settings"].items()) + ".\n"
    ]
    for setting, info in summary["settings"].items():
        rows = []
        table = info["compared_with"]
        match = summary["match"].get(setting, {})
        for e in summary["report_epochs"]:
            if str(e) in match:
                rows.append([f"document's {table} table, {e} epochs (printed)"]
                            + [PRINTED[table][e].get(t, "") for t in lengths])
            cells = []
            for t in lengths:
                v = summary["document_run"][f"{setting}/not_clipped"][str(t)][str(e)]
                m = match.get(str(e), {}).get(str(t))
                cells.append(f"{v:.5g}" + ("" if m is None else (" ✓" if m["matches"] else " ✗")))
            rows.append([f"document's run rebuilt, {e} epochs"] + cells)
            for clipped in (False, True):
                name = f"{setting}/{_label(clipped)}"
                rows.append([f"{n} seeds, {e} epochs, {'clipped' if clipped else 'no clipping'}"]
                            + [_fmt(summary["cost"][name][str(t)][str(e)]) for t in lengths])
        if not match:
            for e, printed in PRINTED[table].items():
                rows.append([f"document's {table} table, {e} epochs (printed; the full profile's row)"]
                            + [printed.get(t, "") for t in lengths])
        for clipped in (False, True):
            name = f"{setting}/{_label(clipped)}"
            rows.append([f"fresh sequences at the end, {n} seeds, {'clipped' if clipped else 'no clipping'}"]
                        + [_fmt(summary["test_cost"][name][str(t)]) for t in lengths])
            rows.append([f"largest gradient norm, {'clipped' if clipped else 'no clipping'} (seeds; document's run)"]
                        + [f"{summary['max_grad_norm'][name][str(t)]:.3g}; "
                           f"{summary['document_run'][name][str(t)]['max_grad_norm']:.3g}" for t in lengths])
        headers = ["epoch \\ length"] + [str(t) for t in lengths]
        parts.append(f"\n## {setting}: s[0,0] {_s00_text(info['s00'])}\n\n" + common.markdown_table(headers, rows))
    if summary["match"]:
        parts.append("\n✓/✗: the rebuilt run prints the document's figure at the digits printed: " + "; ".join(
            f"{s} {sum(m['matches'] for e in tab.values() for m in e.values())} of "
            f"{sum(len(e) for e in tab.values())} ({COMPARED_WITH[s]} table)" for s, tab in summary["match"].items()) + ".\n")
    return "".join(parts)


def _plots(out_dir: str, cfg: dict, curves: dict, document: dict) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    lengths, settings = cfg["lengths"], cfg["settings"]
    for field, name, ylabel in (("cost", "cost.png", "epoch cost (last-step MSE)"),
                                ("max_grad_norm", "grad_norm.png", "largest gradient norm in the epoch")):
        fig, axes = plt.subplots(len(settings), len(lengths), figsize=(4 * len(lengths), 3.2 * len(settings)),
                                 squeeze=False, sharex=True)
        for r, setting in enumerate(settings):
            for col, length in enumerate(lengths):
                ax = axes[r][col]
                for clipped, color in ((False, "tab:blue"), (True, "tab:orange")):
                    y = np.maximum(curves[setting][clipped][length][field], 1e-300)
                    if y.size:
                        epochs = np.arange(y.shape[1])
                        ax.plot(epochs, 10 ** np.log10(y).mean(0), color=color,
                                label=f"seeds, {'clipped' if clipped else 'not clipped'}")
                        ax.fill_between(epochs, y.min(0), y.max(0), color=color, alpha=0.2, linewidth=0)
                d = np.maximum(document[setting][False][length][field], 1e-300)
                ax.plot(np.arange(d.size), d, color="k", linewidth=1, label="document's run rebuilt")
                if field == "cost":
                    printed = DOCUMENT[COMPARED_WITH[setting]]
                    for e, row in printed.items():
                        if e <= cfg["epochs"] and length in row:
                            ax.plot([report_index(e, cfg["epochs"])], [row[length]], "rx", markersize=8,
                                    label="document (printed)" if e == min(printed) else None)
                ax.set_yscale("log")
                ax.set_title(f"{setting}, T = {length}")
                if r == len(settings) - 1:
                    ax.set_xlabel("epoch")
                if col == 0:
                    ax.set_ylabel(ylabel)
        axes[0][0].legend(fontsize=7)
        fig.suptitle("teacher/student: geometric mean over seeds, band = min..max; black: the document's run")
        common.save_figure(fig, out_dir, name)
