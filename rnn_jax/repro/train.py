"""The training engine: a pure ``train_step`` and chunks of updates compiled as one program.

The same code trains one member or many: every function here works on one
member and is ``vmap``-ed over a leading *member* axis, so a sweep of hundreds
of seeds and per-member hyperparameters (learning rate, clipping threshold, α,
initialisation scale) is one compiled program::

    setup = train.Setup(cell=rnn_jax.elman(50, scheme="basic_tanh"),
                        task=tasks.get("temporal_order", min_length=20, max_length=21),
                        batch_size=20, make_optimizer=train.paper_optimizer)
    hparams = {"learning_rate": jnp.full(64, 0.01), "clip": jnp.full(64, 1.0), "alpha": jnp.zeros(64)}
    state = train.init_members(setup, seeds=range(64), hparams=hparams)
    state, metrics = train.train_chunk(setup, hparams, state, num_steps=500)   # jitted scan of vmapped steps
    state = train.evaluate_members(setup, state)                              # error on fresh sequences

Member status: ``RUNNING`` members update; ``SOLVED`` ones (error below the task's
success threshold on fresh sequences) and ``DIVERGED`` ones (a non-finite loss or
parameter after an update: the update is discarded, so the parameters stay the
last finite ones) are frozen while the others go on; ``EXHAUSTED`` marks members
that ran out of updates (set by the sweep driver, :mod:`rnn_jax.repro.sweep`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import model, optim
from rnn_jax.repro import fused
from rnn_jax._checks import UserTypeError, UserValueError, all_finite, check_choice
from rnn_jax.cells import Cell
from rnn_jax.repro.tasks.base import Task, draw_length as batch_draw_length, lengths as batch_lengths

RUNNING, SOLVED, DIVERGED, EXHAUSTED = 0, 1, 2, 3
STATUS_NAMES = {RUNNING: "running", SOLVED: "solved", DIVERGED: "diverged", EXHAUSTED: "exhausted"}

Hparams = Dict[str, jax.Array]
ENGINES = ("auto", "fused", "generic")


def paper_optimizer(hp: Hparams) -> optax.GradientTransformation:
    """The paper's MSGD / MSGD-C / MSGD-CR as one chain with per-member hyperparameters.

    ``hp["learning_rate"]``; ``hp["clip"]`` the global-norm threshold (``inf``: no
    clipping, i.e. MSGD); Ω enters through ``hp["alpha"]`` in the gradient, before
    clipping (MSGD-CR: clip 1, α > 0). Members of all three configurations can
    share one compiled program since they differ only in these numbers.
    """
    return optax.chain(optim.clip_by_global_norm(hp["clip"]), optim.sgd(hp["learning_rate"]))


class Setup(NamedTuple):
    """The static description of a compiled sweep (everything that shapes the program).

    Attributes:
      cell, task: the model's cell and the task it learns.
      batch_size: sequences per update (a fresh minibatch every update).
      make_optimizer: ``hp -> optax.GradientTransformation``, built inside the
        vmapped step from one member's hyperparameters (scalars).
      length: time steps of every sampled array (static); default ``task.max_steps``.
      regularize: add ``hp["alpha"] · ∂Ω/∂W_hh`` (Pascanu's regulariser; Elman cells).
      eval_size: fresh sequences per member for the success check (paper: 10,000).
      eval_batch_size: sequences per evaluation batch (memory bound).
      readout_weight_init: initialiser of the readout matrix.
      dtype: parameter and input dtype.
      length_seed: the seed of the minibatch lengths (tasks with a length range). The
        nominal length of update ``n`` (n = 0, 1, ... a member's update count) is drawn
        uniformly from the task's range with a key made of ``length_seed`` and ``n``
        alone, so every member of a sweep draws the same i.i.d. uniform sequence of
        lengths, and all running members of one compiled program train on the same length
        at each update (they share update counts). That is what lets an update cost what
        its length costs: the engine's hand-written pass (:mod:`rnn_jax.repro.fused`, Elman-type
        cells) loops over the drawn length only, not over ``steps``; other cells pay for
        ``steps``. A member trained alone draws the same lengths as in a sweep.
      engine: how the gradient is computed, one of :data:`ENGINES`: "fused" the hand-written
        member-batched BPTT of :mod:`rnn_jax.repro.fused` (elman and pascanu cells); "generic"
        ``jax.value_and_grad`` of :func:`rnn_jax.model.loss` (with ``regularize``:
        :func:`rnn_jax.repro.regularizer.loss_and_grad_with_omega`), vmapped; "auto" fused where
        :func:`rnn_jax.repro.fused.supports` the cell, generic elsewhere. Equal to rounding.
    """

    cell: Cell
    task: Task
    batch_size: int
    make_optimizer: Callable[[Hparams], optax.GradientTransformation] = paper_optimizer
    length: Optional[int] = None
    regularize: bool = False
    eval_size: int = 10_000
    eval_batch_size: int = 1_000
    readout_weight_init: Any = "uniform"
    dtype: Any = jnp.float32
    length_seed: int = 0
    engine: str = "auto"

    @property
    def steps(self) -> int:
        return self.task.max_steps if self.length is None else self.length


class Stats(NamedTuple):
    """Sums over the updates since the last :func:`reset_stats` (per member, scalars)."""

    updates: jax.Array  # int32: updates applied
    loss: jax.Array  # sum of training losses
    grad_norm: jax.Array  # sum of global gradient norms (Ω's term included)
    omega: jax.Array  # sum of Ω values (0 without the regulariser)
    clipped: jax.Array  # int32: updates whose gradient norm exceeded hp["clip"]
    max_grad_norm: jax.Array  # the largest global gradient norm of an applied update (0 before any)


class MemberState(NamedTuple):
    """One member's whole training state (a leading member axis when stacked).

    params: ModelParams; opt_state: the optimizer's state; key: uint32[2] raw key
    data for the minibatches; step: int32 updates so far; status: int32 (RUNNING,
    SOLVED, DIVERGED, EXHAUSTED); error: last evaluated error (nan before any);
    stats: :class:`Stats` since the last reset.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    status: jax.Array
    error: jax.Array
    stats: Stats


def _zero_stats(dtype) -> Stats:
    zi, zf = jnp.zeros((), jnp.int32), jnp.zeros((), dtype)
    return Stats(zi, zf, zf, zf, zi, zf)


def check_hparams(setup: Setup, hparams: Hparams, members: Optional[int] = None) -> int:
    """Every hyperparameter is an array with one entry per member; returns the member count."""
    if not isinstance(hparams, dict) or not hparams:
        raise UserTypeError(f"hparams: expected a non-empty dict of per-member arrays, got {type(hparams).__name__}")
    sizes = {name: np.shape(v)[0] if np.ndim(v) == 1 else None for name, v in hparams.items()}
    bad = {n: np.shape(v) for n, v in hparams.items() if sizes[n] is None}
    if bad:
        raise UserValueError(f"hparams: expected 1-D arrays (one value per member), got shapes {bad}")
    if len(set(sizes.values())) != 1 or (members is not None and members not in sizes.values()):
        want = f"{members} " if members is not None else ""
        raise UserValueError(f"hparams: expected {want}values per member for every entry, got lengths {sizes}")
    if setup.regularize and "alpha" not in hparams:
        raise UserValueError("hparams: regularize=True needs an 'alpha' entry (Ω's weight per member)")
    return next(iter(sizes.values()))


def _use_fused(setup: Setup) -> bool:
    """Whether ``setup.engine`` takes :mod:`rnn_jax.repro.fused`'s path (raises for an unknown or unsupported engine)."""
    engine = check_choice("Setup.engine", setup.engine, ENGINES)
    supported = fused.supports(setup.cell, loss=setup.task.loss, on=setup.task.on)
    if engine == "fused" and not supported:
        raise UserValueError(f"Setup.engine='fused': the fused path takes elman and pascanu cells only, got "
                             f"{getattr(setup.cell, 'kind', setup.cell)!r}; use engine='auto' or 'generic'")
    return engine == "fused" or (engine == "auto" and supported)


def _member_hparams(hparams: Hparams, dtype) -> Hparams:
    return {k: jnp.asarray(v, dtype) if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating) else jnp.asarray(v)
            for k, v in hparams.items()}


def init_members(
    setup: Setup,
    seeds: Iterable[int],
    hparams: Hparams,
    *,
    init_scale: Optional[jax.Array] = None,
) -> MemberState:
    """Stacked initial states, one per seed: member ``i`` depends only on ``seeds[i]``.

    The seed's key is split into an initialisation key and a data key, so member
    ``i`` of a sweep trains exactly as the same seed trained alone. Initialisation
    runs on the host per member (the smart-tanh scheme needs an eigenvalue
    decomposition); ``init_scale`` (one factor per member) multiplies the cell's
    initial weight matrices, the "initialisation" hyperparameter of a sweep.
    """
    seeds = [int(s) for s in seeds]
    check_hparams(setup, hparams, len(seeds))
    _use_fused(setup)  # a bad engine fails here, not at the first update
    if len(seeds) == 0:
        raise UserValueError("seeds: expected at least one member")
    per_member = []
    for i, seed in enumerate(seeds):
        k_init, k_data = jax.random.split(jax.random.PRNGKey(seed))
        params = model.init(k_init, setup.cell, setup.task.input_size, setup.task.output_size,
                            readout_weight_init=setup.readout_weight_init, dtype=setup.dtype)
        if init_scale is not None:
            s = jnp.asarray(init_scale[i], setup.dtype)
            params = params._replace(cell=params.cell._replace(w_ih=params.cell.w_ih * s, w_hh=params.cell.w_hh * s))
        per_member.append((params, k_data))
    params = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[p for p, _ in per_member])
    keys = jnp.stack([k for _, k in per_member])
    hp = _member_hparams(hparams, setup.dtype)
    opt_state = jax.vmap(lambda h, p: setup.make_optimizer(h).init(p))(hp, params)
    m = len(seeds)
    stats = jax.tree_util.tree_map(lambda z: jnp.broadcast_to(z, (m,)), _zero_stats(setup.dtype))
    return MemberState(
        params=params, opt_state=opt_state, key=keys,
        step=jnp.zeros(m, jnp.int32), status=jnp.full(m, RUNNING, jnp.int32),
        error=jnp.full(m, jnp.nan, setup.dtype), stats=stats,
    )


def _loss_and_grads(setup: Setup, hp: Hparams, params, batch):
    lengths = batch_lengths(batch)
    task = setup.task
    if _use_fused(setup):
        # Elman-type cells: hand-written BPTT whose vmap runs member-batched (rnn_jax.repro.fused);
        # equal to the autodiff path below to rounding, ~3x faster per member-update on a CPU.
        fn = fused.engine_loss_and_grads(setup.cell, task.loss, task.on, bool(setup.regularize))
        alpha = hp["alpha"] if setup.regularize else jnp.zeros((), setup.dtype)
        return fn(params, batch.inputs, batch.targets, lengths, alpha)
    if setup.regularize:
        from rnn_jax.repro import regularizer  # Elman cells only; imported lazily to keep the layering light

        loss, omega, grads = regularizer.loss_and_grad_with_omega(
            setup.cell, params, batch.inputs, batch.targets, hp["alpha"], loss=task.loss, on=task.on, lengths=lengths)
        return loss, omega, grads
    loss, grads = jax.value_and_grad(
        lambda p: model.loss(setup.cell, p, batch.inputs, batch.targets, loss=task.loss, on=task.on, lengths=lengths)
    )(params)
    return loss, jnp.zeros((), loss.dtype), grads


def minibatch_length(setup: Setup, step: jax.Array) -> jax.Array:
    """The nominal length T of update number ``step`` (int32): uniform over the task's range,
    from ``setup.length_seed`` and ``step`` alone (see :class:`Setup`)."""
    task = setup.task
    key = jax.random.fold_in(jax.random.PRNGKey(setup.length_seed), step)
    return batch_draw_length(key, task.min_length, task.max_length)


def train_step(setup: Setup, hp: Hparams, state: MemberState, step_limit: Optional[jax.Array] = None):
    """One update of ONE member (unbatched; ``vmap`` it over members).

    Draws a fresh minibatch from the member's key (its nominal length from
    :func:`minibatch_length`), computes the loss and its gradient (plus
    ``α ∂Ω/∂W_hh`` when ``setup.regularize``), applies the member's optimizer, and
    commits the update only if the member is RUNNING, below ``step_limit`` updates
    (if given) and the loss and new parameters are finite; otherwise a RUNNING
    member becomes DIVERGED with its last finite parameters.

    Returns ``(state, grad_norm)``: the new state and the global gradient norm of this
    update (nan when nothing was applied).
    """
    key, k_batch = jax.random.split(state.key)
    running = state.status == RUNNING
    if step_limit is not None:
        running = running & (state.step < step_limit)
    # A frozen member's update is discarded: it draws the shortest length, so that under vmap it
    # never lengthens the loop of the members that do train.
    nominal = jnp.where(running, minibatch_length(setup, state.step), setup.task.min_length).astype(jnp.int32)
    batch = setup.task.sample(k_batch, setup.batch_size, setup.steps, nominal_length=nominal)
    batch = batch._replace(inputs=batch.inputs.astype(setup.dtype))
    loss, omega, grads = _loss_and_grads(setup, hp, state.params, batch)
    optimizer = setup.make_optimizer(hp)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & all_finite(params)
    commit = running & finite
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(commit, n, o), new, old)
    grad_norm = optax.tree.norm(grads)
    clipped = optim.is_clipped(grad_norm, hp["clip"]) if "clip" in hp else jnp.zeros((), bool)
    s = state.stats
    c = commit.astype(jnp.int32)
    applied_norm = jnp.where(commit, grad_norm, 0).astype(s.grad_norm.dtype)
    stats = Stats(
        updates=s.updates + c,
        loss=s.loss + jnp.where(commit, loss, 0).astype(s.loss.dtype),
        grad_norm=s.grad_norm + applied_norm,
        omega=s.omega + jnp.where(commit, omega, 0).astype(s.omega.dtype),
        clipped=s.clipped + (commit & clipped).astype(jnp.int32),
        max_grad_norm=jnp.maximum(s.max_grad_norm, applied_norm),
    )
    new_state = MemberState(
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        key=jnp.where(running, key, state.key),
        step=state.step + c,
        status=jnp.where(running & ~finite, DIVERGED, state.status),
        error=state.error,
        stats=stats,
    )
    return new_state, jnp.where(commit, grad_norm, jnp.nan).astype(s.grad_norm.dtype)


@functools.partial(jax.jit, static_argnums=(0, 3), static_argnames=("return_norms",))
def train_chunk(setup: Setup, hparams: Hparams, state: MemberState, num_steps: int,
                step_limit: Optional[jax.Array] = None, *, return_norms: bool = False):
    """``num_steps`` updates of every member: a ``lax.scan`` over a vmapped :func:`train_step`.

    ``step_limit`` (an int scalar, traced): members stop updating once they have made
    that many updates (a budget that ``num_steps`` does not divide, without a second
    program). Returns the new state, and with ``return_norms=True`` also the
    ``(num_steps, members)`` global gradient norms of the updates (nan where a member
    applied none).
    """
    hp = _member_hparams(hparams, setup.dtype)
    limit = None if step_limit is None else jnp.asarray(step_limit, jnp.int32)
    step = jax.vmap(lambda h, s: train_step(setup, h, s, limit))

    def body(s, _):
        s, norms = step(hp, s)
        return s, norms if return_norms else None

    state, norms = jax.lax.scan(body, state, None, length=num_steps)
    return (state, norms) if return_norms else state


def member_error(setup: Setup, params, key: jax.Array) -> jax.Array:
    """Mean task error of ONE member's parameters on ``setup.eval_size`` fresh sequences."""
    n_batches = -(-setup.eval_size // setup.eval_batch_size)
    task = setup.task

    def one(k):
        batch = task.sample(k, setup.eval_batch_size, setup.steps)
        inputs = batch.inputs.astype(setup.dtype)
        predictions = model.predict(setup.cell, params, inputs, on=task.on, lengths=batch_lengths(batch))
        return jnp.mean(task.error(predictions, batch).astype(setup.dtype))

    return jnp.mean(jax.lax.map(one, jax.random.split(key, n_batches)))


@functools.partial(jax.jit, static_argnums=0)
def evaluate_members(setup: Setup, state: MemberState) -> MemberState:
    """Evaluate every RUNNING member on fresh sequences; those under the success threshold become SOLVED.

    The evaluation data come from a key derived from the member's data key and
    step count (``fold_in``), so they are fresh for every evaluation and never
    consume the training stream.
    """
    keys = jax.vmap(lambda k, s: jax.random.fold_in(jax.random.fold_in(k, 0x5EED), s))(state.key, state.step)
    errors = jax.vmap(lambda p, k: member_error(setup, p, k))(state.params, keys)
    running = state.status == RUNNING
    error = jnp.where(running, errors, state.error)
    solved = running & (errors < setup.task.success_threshold)
    return state._replace(error=error, status=jnp.where(solved, SOLVED, state.status))


@functools.partial(jax.jit, static_argnums=(0, 4))
def confirm_error(setup: Setup, params, key: jax.Array, step: jax.Array, size: int) -> jax.Array:
    """Error of ONE member on ``size`` fresh sequences, for confirming a success seen on a smaller screen.

    ``key``: the member's data key; ``step``: its update count. The sequences come from a
    key that neither the training stream nor :func:`evaluate_members` uses.
    """
    confirm = setup._replace(eval_size=size, eval_batch_size=min(setup.eval_batch_size, size))
    return member_error(confirm, params, jax.random.fold_in(jax.random.fold_in(key, 0xC0F1), step))


def reset_stats(state: MemberState) -> MemberState:
    """Zero the per-member running sums (after they were reported)."""
    return state._replace(stats=jax.tree_util.tree_map(jnp.zeros_like, state.stats))


def stats_means(stats: Stats) -> Dict[str, np.ndarray]:
    """Per-member means of the running sums, as host arrays (nan where no update was applied)."""
    n = np.asarray(stats.updates, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "updates": n.astype(np.int64),
            "loss": np.asarray(stats.loss, np.float64) / n,
            "grad_norm": np.asarray(stats.grad_norm, np.float64) / n,
            "omega": np.asarray(stats.omega, np.float64) / n,
            "clipped_fraction": np.asarray(stats.clipped, np.float64) / n,
            "max_grad_norm": np.where(n > 0, np.asarray(stats.max_grad_norm, np.float64), np.nan),
        }
