"""Counting ones with a linear RNN: exploding/vanishing gradients and why Rprop still trains it (Roelants' tutorial).

Roelants' tutorial ("How to implement a recurrent neural network, part 1") trains
the one-unit linear RNN ``s_k = s_{k-1} w_rec + x_k w_x`` (``s_0 = 0``, output the
last state ``y = s_n``) to count the ones of 20 binary sequences of 10 bits; the
cost is ``ξ = mean over the sequences of (s_n − t)²`` and its minimum is
``(w_x, w_rec) = (1, 1)``. This reproduction shows, on the tutorial's own data
(:func:`rnn_jax.repro.tasks.counting_ones_dataset`):

(a) the BPTT gradient is right: autodiff (``jax.grad``) and the hand-written BPTT
    (:func:`rnn_jax.bptt.bptt`) both agree with central finite differences (the
    tutorial's ``eps = 1e-7``) at the tutorial's check point ``(1.2, 1.2)``, at the
    Rprop start and at the six sampled points;
(b) the cost surface over ``(w_x, w_rec)`` (the tutorial's views ``[-3, 3]²`` and
    ``[0, 2]²``, log colour scale of ``ξ + 1``): a narrow valley around ``(1, 1)``,
    walls that rise like ``w_rec^(2n)`` for ``|w_rec| > 1``;
(c) the gradient over time ``δ_k = ∂ξ/∂s_k`` (:func:`rnn_jax.diagnostics.state_gradients`)
    at the tutorial's points: it is the geometric sequence ``δ_k = δ_n w_rec^(n−k)``
    -- exploding for ``w_rec = ±2`` (alternating in sign for −2), vanishing for
    ``w_rec = ±0.5``, zero before the last step for ``w_rec = 0``, constant for ``w_rec = 1``;
(d) Rprop− (the tutorial's variant, :func:`rnn_jax.optim.rprop_minus`) from
    ``(−1.5, 2)``, where ``‖∇ξ‖ ≈ 5·10⁶``, reaches ``(1, 1)`` in 500 iterations because
    it uses only the gradient's sign; the trained model counts the tutorial's test
    sequence;
(e) from the same start, optax's Rprop (iRprop−, :func:`rnn_jax.optim.irprop_minus`)
    also converges; plain SGD either explodes (η = 1e-3, the largest stable rate at the
    minimum is ``2/λ_max ≈ 1.9e-3``: the first step lands ~5000 away and the cost
    overflows) or crawls (η = 1e-8, small enough for the start, far too small
    afterwards); SGD with the gradient clipped to norm 20 at η = 1e-3 (MSGD-C) walks
    down the wall into the valley.

Seeds: the tutorial's dataset is one draw (``np.random.seed(1)``); (d)/(e) are
repeated on ``seeds`` datasets drawn by the tutorial's own procedure with numpy
seeds ``0 .. seeds−1`` (seed 1 is the tutorial's), vmapped, and the final distance
to ``(1, 1)`` and the final cost are reported as mean ± spread.

Everything runs in float64 (``jax.enable_x64`` inside :func:`run`): the costs span
``1`` to ``10⁷⁰`` and the finite differences need the precision.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnn_jax
from rnn_jax import bptt as _bptt
from rnn_jax import diagnostics, optim
from rnn_jax.repro.experiments import common
from rnn_jax.repro.tasks.counting import counting_ones_dataset

# ---------------------------------------------------------------- the tutorial's constants

START = (-1.5, 2.0)  # (w_x, w_rec) where the tutorial's Rprop run starts
OPTIMUM = (1.0, 1.0)
CHECK_POINT = (1.2, 1.2)  # the tutorial's gradient-check parameters
CHECK_EPS = 1e-7  # the tutorial's finite-difference step
# The tutorial's sampled points (w_x, w_rec, colour). Its text lost the minus signs;
# its prose restores them: (1, -2) "alternating gradient explosion", (1, -0.5) vanishing.
POINTS = ((2.0, 1.0, "r"), (1.0, 2.0, "b"), (1.0, -2.0, "g"), (1.0, 0.0, "c"), (1.0, 0.5, "m"), (1.0, -0.5, "y"))
TEST_SEQUENCE = (0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1, 1)  # the tutorial's "final model" test input: 5 ones
ITERATIONS = 500  # the tutorial's; every profile keeps it (a 2-weight scan: compile time dominates)
SURFACE_VIEWS = {"overview": ((-3.0, 3.0), (-3.0, 3.0)), "zoom": ((0.0, 2.0), (0.0, 2.0))}
NUM_SEQUENCES, SEQUENCE_LENGTH = 20, 10
WITHIN = 1e-2  # "converged": final (w_x, w_rec) within this distance of (1, 1)

# Optimizers of (d) and (e): name -> (label, hyperparameters, factory).
OPTIMIZERS: Dict[str, Tuple[str, dict, Callable[..., optax.GradientTransformation]]] = {
    "rprop_minus": ("Rprop− (tutorial)", dict(initial_step=0.001, eta_plus=1.2, eta_minus=0.5), optim.rprop_minus),
    "irprop_minus": ("optax Rprop (iRprop−)", dict(learning_rate=0.001, eta_minus=0.5, eta_plus=1.2), optim.irprop_minus),
    "sgd": ("SGD", dict(learning_rate=1e-3), optim.msgd),
    "sgd_tiny_lr": ("SGD, tiny rate", dict(learning_rate=1e-8), optim.msgd),
    "clipped_sgd": ("SGD, clipped (MSGD-C)", dict(learning_rate=1e-3, threshold=20.0), optim.msgd_c),
}
PATH_STYLE = {"rprop_minus": "b.", "irprop_minus": "c.", "sgd": "r.-", "sgd_tiny_lr": "m.", "clipped_sgd": "g."}

PROFILES = {
    # tiny: the test's; quick: 2 CPU cores, well under a minute; full: more datasets, finer surface
    "tiny": dict(seeds=4, surface_points=25, iterations=ITERATIONS),
    "quick": dict(seeds=64, surface_points=200, iterations=ITERATIONS),
    "full": dict(seeds=1024, surface_points=400, iterations=ITERATIONS),
}


# ---------------------------------------------------------------- the model


CELL = rnn_jax.elman(1, "identity")


def model_params(w: jax.Array) -> rnn_jax.ModelParams:
    """The tutorial's model as library parameters: ``w = (w_x, w_rec)``, shape (2,).

    ``ElmanParams(w_ih=[[w_x]], w_hh=[[w_rec]], b=[0])`` with the identity activation
    gives ``s_k = s_{k-1} w_rec + x_k w_x``; the readout ``y = s_n · 1 + 0`` is the last state.
    """
    one = jnp.ones((1, 1), w.dtype)
    zero = jnp.zeros((1,), w.dtype)
    return rnn_jax.ModelParams(rnn_jax.ElmanParams(w[0] * one, w[1] * one, zero), rnn_jax.ReadoutParams(one, zero))


def cost(w: jax.Array, xs: jax.Array, targets: jax.Array) -> jax.Array:
    """``ξ(w) = mean_b (s_n − t_b)²``; ``w`` (2,), ``xs`` (B, n, 1), ``targets`` (B, 1)."""
    return rnn_jax.model.loss(CELL, model_params(w), xs, targets, loss="mse", on="last")


def output(w: jax.Array, sequence: jax.Array) -> jax.Array:
    """The model's count ``s_n`` for one bit sequence ``(n,)``."""
    return rnn_jax.model.predict(CELL, model_params(w), sequence[None, :, None])[0, 0]


def dataset(seed: int, dtype=jnp.float64) -> Tuple[jax.Array, jax.Array]:
    """The tutorial's data procedure with numpy seed ``seed``: ``(xs (20, 10, 1), counts (20, 1))``.

    ``np.around(rand(20, 10))`` with the legacy generator, as the tutorial fills its rows
    (seed 1 is exactly :func:`rnn_jax.repro.tasks.counting_ones_dataset`).
    """
    bits = np.around(np.random.RandomState(int(seed)).rand(NUM_SEQUENCES, SEQUENCE_LENGTH))
    return jnp.asarray(bits[:, :, None], dtype), jnp.asarray(bits.sum(axis=1, keepdims=True), dtype)


# ---------------------------------------------------------------- (a) gradient check


def finite_difference_gradient(fn: Callable[[np.ndarray], float], w: np.ndarray, eps: float = CHECK_EPS) -> np.ndarray:
    """Central differences ``(fn(w + eps e_i) − fn(w − eps e_i)) / (2 eps)`` for each coordinate."""
    w = np.asarray(w, np.float64)
    grad = np.zeros_like(w)
    for i in range(w.size):
        e = np.zeros_like(w)
        e[i] = eps
        grad[i] = (fn(w + e) - fn(w - e)) / (2 * eps)
    return grad


def gradient_check(xs: jax.Array, targets: jax.Array, points: Sequence[Tuple[float, float]], eps: float = CHECK_EPS) -> List[dict]:
    """∂ξ/∂(w_x, w_rec) by autodiff, by hand-written BPTT and by central differences.

    Returns one dict per point: the three gradients and the relative errors
    ``|g − g_fd| / |g_fd|`` (norms over the two weights) and ``|g_auto − g_bptt| / |g_bptt|``.
    """
    cost_fn = jax.jit(cost)
    grad_fn = jax.jit(jax.grad(cost))
    rows = []
    for point in points:
        w = jnp.asarray(point, xs.dtype)
        auto = np.asarray(grad_fn(w, xs, targets))
        hand_grads = _bptt.bptt(CELL, model_params(w), xs, targets, loss="mse", on="last").grads.cell
        hand = np.array([float(hand_grads.w_ih[0, 0]), float(hand_grads.w_hh[0, 0])])
        fd = finite_difference_gradient(lambda v: float(cost_fn(jnp.asarray(v, xs.dtype), xs, targets)), np.asarray(point), eps)
        rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
        rows.append(
            dict(
                w=[float(v) for v in point],
                autodiff=auto.tolist(),
                bptt=hand.tolist(),
                finite_difference=fd.tolist(),
                rel_error_autodiff_vs_fd=rel(auto, fd),
                rel_error_bptt_vs_fd=rel(hand, fd),
                rel_error_autodiff_vs_bptt=rel(auto, hand),
                tutorial_isclose=bool(np.all(np.isclose(fd, hand))),  # the tutorial's own criterion
            )
        )
    return rows


# ---------------------------------------------------------------- (b) cost surface


def cost_surface(xs: jax.Array, targets: jax.Array, w_x_range, w_rec_range, points: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ξ`` on a ``points × points`` grid: ``(w_x grid, w_rec grid, costs)``, each (points, points).

    Rows vary ``w_rec``, columns ``w_x`` (``np.meshgrid`` order, as the tutorial).
    """
    w_x = np.linspace(*w_x_range, points)
    w_rec = np.linspace(*w_rec_range, points)
    grid_x, grid_rec = np.meshgrid(w_x, w_rec)
    ws = jnp.asarray(np.stack([grid_x.ravel(), grid_rec.ravel()], axis=1), xs.dtype)
    costs = jax.jit(jax.vmap(cost, in_axes=(0, None, None)))(ws, xs, targets)
    return grid_x, grid_rec, np.asarray(costs).reshape(grid_x.shape)


# ---------------------------------------------------------------- (c) gradient over time


@jax.jit
def _state_gradients(w, xs, targets):
    return diagnostics.state_gradients(CELL, model_params(w), xs, targets, loss="mse", on="last")


def gradient_over_time(xs: jax.Array, targets: jax.Array, w: Tuple[float, float]) -> dict:
    """``δ_k = ∂ξ/∂s_k`` for ``k = 1..n`` at ``w`` (:func:`rnn_jax.diagnostics.state_gradients`).

    Returns ``sum`` (the sum over the sequences of ``δ_k``, signed, the tutorial's curve),
    ``mean_norm`` (the batch mean of ``‖δ_k‖``), ``ratio`` (the median of the step ratios
    ``Σ_b δ_{k-1} / Σ_b δ_k``, which the linear model makes exactly ``w_rec``; None when
    ``δ_n`` sums to 0 or ``w_rec = 0``) and ``closed_form_error``: the largest
    ``|δ_k − δ_n w_rec^(n−k)|`` relative to ``max |δ|``.
    """
    sg = _state_gradients(jnp.asarray(w, xs.dtype), xs, targets)
    deltas = np.asarray(sg.deltas.hidden[..., 0])  # (B, n)
    n = deltas.shape[1]
    w_rec = float(w[1])
    closed = deltas[:, -1:] * w_rec ** (n - 1 - np.arange(n))[None, :]
    scale = max(float(np.max(np.abs(deltas))), 1e-300)
    summed = deltas.sum(axis=0)
    ratio = None
    if w_rec != 0 and np.all(summed != 0):
        ratio = float(np.median(summed[:-1] / summed[1:]))
    kind = "constant" if abs(w_rec) == 1 else ("exploding" if abs(w_rec) > 1 else "vanishing")
    return dict(
        w=[float(v) for v in w],
        kind=kind,
        sum=summed.tolist(),
        mean_norm=np.asarray(sg.norms).mean(axis=0).tolist(),
        ratio=ratio,
        closed_form_error=float(np.max(np.abs(deltas - closed)) / scale),
        growth=float(abs(summed[0]) / abs(summed[-1])) if summed[-1] != 0 else None,  # |δ_1| / |δ_n|
    )


# ---------------------------------------------------------------- (d), (e) optimisation


def optimize(tx: optax.GradientTransformation, w0: jax.Array, xs: jax.Array, targets: jax.Array, iterations: int):
    """Full-batch descent of ``ξ`` with ``tx`` from ``w0`` (2,): ``(path (iterations+1, 2), costs (iterations+1,))``.

    ``path[i]`` is the weight after ``i`` updates, ``costs[i] = ξ(path[i])``; a pure scan,
    vmap-able over datasets.
    """

    step = optim.descent_step(tx, cost)

    def body(carry, _):
        new, (value, _) = step(carry, xs, targets)
        return new, (carry[0], value)

    (w_final, _), (path, costs) = jax.lax.scan(body, (w0, tx.init(w0)), None, length=iterations)
    path = jnp.concatenate([path, w_final[None]], axis=0)
    costs = jnp.concatenate([costs, cost(w_final, xs, targets)[None]], axis=0)
    return path, costs


def _finite_or_none(values) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float64).ravel()]


def _first_nonfinite(path: np.ndarray, costs: np.ndarray) -> Optional[int]:
    bad = ~(np.all(np.isfinite(path), axis=1) & np.isfinite(costs))
    return int(np.argmax(bad)) if bad.any() else None


def run_optimizer(name: str, seeds: Sequence[int], iterations: int, dtype=jnp.float64) -> dict:
    """One optimizer of (d)/(e) on the tutorial's data and on each seed's dataset (vmapped).

    The record holds the tutorial run's path, costs, final weights, distance to (1, 1)
    and its output on the tutorial's test sequence, and per seed the final distance and
    cost (None where the run overflowed).
    """
    label, hyper, factory = OPTIMIZERS[name]
    tx = factory(**hyper)
    tut_xs, tut_t = counting_ones_dataset(dtype).inputs, counting_ones_dataset(dtype).targets
    data = [dataset(s, dtype) for s in seeds]
    xs = jnp.stack([tut_xs] + [d[0] for d in data])
    ts = jnp.stack([tut_t] + [d[1] for d in data])
    w0 = jnp.asarray(START, dtype)
    paths, costs = jax.jit(jax.vmap(lambda x, t: optimize(tx, w0, x, t, iterations)))(xs, ts)
    paths, costs = np.asarray(paths), np.asarray(costs)
    finals = paths[:, -1]
    distance = np.linalg.norm(finals - np.asarray(OPTIMUM), axis=1)
    test_out = float(output(jnp.asarray(finals[0], dtype), jnp.asarray(TEST_SEQUENCE, dtype)))
    return dict(
        optimizer=name,
        label=label,
        hyperparameters=hyper,
        iterations=iterations,
        tutorial=dict(
            path=[_finite_or_none(p) for p in paths[0]],
            costs=_finite_or_none(costs[0]),
            final_w=_finite_or_none(finals[0]),
            final_cost=_finite_or_none(costs[0, -1:])[0],
            distance=_finite_or_none(distance[:1])[0],
            diverged_at=_first_nonfinite(paths[0], costs[0]),
            test_output=test_out if np.isfinite(test_out) else None,
            test_target=int(sum(TEST_SEQUENCE)),
        ),
        seeds=[int(s) for s in seeds],
        seed_distance=_finite_or_none(distance[1:]),
        seed_cost=_finite_or_none(costs[1:, -1]),
    )


# ---------------------------------------------------------------- run




def _seed_key(seeds: Sequence[int]) -> str:
    return f"0..{len(seeds) - 1}" if list(seeds) == list(range(len(seeds))) else ",".join(map(str, seeds))


def _surface_unit(results: common.Results, out_dir: str, xs, targets, points: int) -> dict:
    key = f"surface/points={points}"
    path = os.path.join(out_dir, f"surface_{points}.npz")
    if results.done(key) and os.path.exists(path):
        return results.get(key)
    arrays, record = {}, dict(points=points, file=os.path.basename(path))
    for view, (x_range, rec_range) in SURFACE_VIEWS.items():
        gx, gr, c = cost_surface(xs, targets, x_range, rec_range, points)
        arrays.update({f"{view}_w_x": gx, f"{view}_w_rec": gr, f"{view}_cost": c})
        i = np.unravel_index(np.argmin(c), c.shape)
        record[view] = dict(w_x_range=list(x_range), w_rec_range=list(rec_range), min_cost=float(c[i]),
                            argmin=[float(gx[i]), float(gr[i])], max_cost=float(np.max(c)))
    np.savez(path, **arrays)
    record["cost_at_start"] = float(cost(jnp.asarray(START, xs.dtype), xs, targets))
    record["cost_at_optimum"] = float(cost(jnp.asarray(OPTIMUM, xs.dtype), xs, targets))
    return results.add(key, record)


def run(out_dir: str, profile: str = "quick", seeds=None, progress: bool = True) -> dict:
    """Run experiment 1 (counting ones) into ``out_dir``; returns the summary (also ``summary.json``).

    Units (``results.jsonl``, skipped on a rerun): the gradient check, the surface
    (grids in ``surface_<points>.npz``), the gradient over time, one per optimizer.
    ``seeds``: a number of datasets (numpy seeds ``0..seeds−1``) or a list of seeds.
    """
    settings = common.get_profile(PROFILES, profile)
    seed_list = common.seed_list(seeds, settings)
    os.makedirs(out_dir, exist_ok=True)
    with jax.enable_x64(True):
        results = common.Results(out_dir)
        data = counting_ones_dataset(jnp.float64)
        xs, targets = data.inputs, data.targets
        bar = common.Progress("counting", 3 + len(OPTIMIZERS), progress)

        check_points = [CHECK_POINT, START] + [p[:2] for p in POINTS]
        key = "gradient_check"
        check = results.get(key) if results.done(key) else results.add(key, dict(eps=CHECK_EPS, points=gradient_check(xs, targets, check_points)))
        bar.update(note="gradient check")

        surface = _surface_unit(results, out_dir, xs, targets, settings["surface_points"])
        bar.update(note="cost surface")

        key = "gradient_over_time"
        curves = results.get(key) if results.done(key) else results.add(key, dict(points=[gradient_over_time(xs, targets, p[:2]) for p in POINTS]))
        bar.update(note="gradient over time")

        runs = {}
        for name in OPTIMIZERS:
            key = f"optimize/{name}/iterations={settings['iterations']}/seeds={_seed_key(seed_list)}"
            runs[name] = results.get(key) if results.done(key) else results.add(key, run_optimizer(name, seed_list, settings["iterations"]))
            bar.update(note=name)

        summary = common.finite(_summarise(profile, check, surface, curves, runs))
        common.write_text(out_dir, "table.md", _table(summary))
        _plots(out_dir, surface, curves, runs)
    return common.write_summary(out_dir, summary)


# ---------------------------------------------------------------- summary, table, plots


def _summarise(profile, check, surface, curves, runs) -> dict:
    errors = [max(r["rel_error_autodiff_vs_fd"], r["rel_error_bptt_vs_fd"]) for r in check["points"]]
    optimizers = {}
    for name, rec in runs.items():
        tut = rec["tutorial"]
        dist = [d for d in rec["seed_distance"] if d is not None]
        n = len(rec["seeds"])
        optimizers[name] = dict(
            label=rec["label"],
            hyperparameters=rec["hyperparameters"],
            final_w=tut["final_w"],
            final_cost=tut["final_cost"],
            distance=tut["distance"],
            diverged_at=tut["diverged_at"],
            test_output=tut["test_output"],
            seeds_distance=common.mean_and_spread([d if d is not None else np.nan for d in rec["seed_distance"]]),
            seeds_cost=common.mean_and_spread([c if c is not None else np.nan for c in rec["seed_cost"]]),
            seeds_median_cost=float(np.median([c if c is not None else np.inf for c in rec["seed_cost"]])),
            seeds_converged=common.rate_with_interval(sum(d < WITHIN for d in dist), n),
            seeds_diverged=sum(d is None for d in rec["seed_distance"]),
        )
    return dict(
        experiment="counting",
        profile=profile,
        iterations=next(iter(runs.values()))["iterations"],
        num_seeds=len(next(iter(runs.values()))["seeds"]),
        gradient_check=dict(eps=check["eps"], max_rel_error=float(max(errors)),
                            max_rel_error_autodiff_vs_bptt=float(max(r["rel_error_autodiff_vs_bptt"] for r in check["points"])),
                            all_tutorial_isclose=all(r["tutorial_isclose"] for r in check["points"])),
        surface=dict(points=surface["points"], cost_at_start=surface["cost_at_start"], cost_at_optimum=surface["cost_at_optimum"],
                     zoom_argmin=surface["zoom"]["argmin"], overview_max_cost=surface["overview"]["max_cost"]),
        gradient_over_time={f"({c['w'][0]:g}, {c['w'][1]:g})": dict(kind=c["kind"], ratio=c["ratio"], growth=c["growth"],
                                                                     closed_form_error=c["closed_form_error"]) for c in curves["points"]},
        optimizers=optimizers,
        test_sequence=list(TEST_SEQUENCE),
    )




def _fmt(v, spec=".4g"):
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _table(summary: dict) -> str:
    rows = []
    for name, o in summary["optimizers"].items():
        w = o["final_w"]
        sd = o["seeds_distance"]
        rows.append([
            o["label"],
            ", ".join(f"{k}={v:g}" for k, v in o["hyperparameters"].items()),
            "diverged" if w is None or None in w else f"({w[0]:.4f}, {w[1]:.4f})",
            _fmt(o["final_cost"]), _fmt(o["distance"]), _fmt(o["test_output"], ".3f"),
            f"{_fmt(sd['mean'])} ± {_fmt(sd['std'])}" if sd["n"] else "—",
            _fmt(o["seeds_median_cost"]),
            f"{o['seeds_converged']['rate']:.2f} [{o['seeds_converged']['low']:.2f}, {o['seeds_converged']['high']:.2f}]",
            f"{o['seeds_diverged']}/{summary['num_seeds']}",
        ])
    text = (f"# Counting ones (Roelants' tutorial), profile {summary['profile']}\n\n"
            f"From (w_x, w_rec) = {START}, {summary['iterations']} full-batch iterations. Tutorial data: numpy seed 1; "
            f"seeds: {summary['num_seeds']} datasets drawn the same way. Test sequence {''.join(map(str, TEST_SEQUENCE))} "
            f"(target {sum(TEST_SEQUENCE)}).\n\n")
    text += common.markdown_table(
        ["optimizer", "hyperparameters", "final (w_x, w_rec)", "final cost", "dist. to (1,1)", "test output",
         "seeds: distance mean ± std", "seeds: median cost", f"seeds: within {WITHIN:g} [95% CI]", "seeds: overflowed"], rows)
    g = summary["gradient_check"]
    text += (f"\nGradient check (eps {g['eps']:g}, {len(POINTS) + 2} points): max relative error vs central differences "
             f"{g['max_rel_error']:.2e}; autodiff vs hand BPTT {g['max_rel_error_autodiff_vs_bptt']:.2e}.\n\n")
    rows = [[k, v["kind"], _fmt(v["ratio"]), _fmt(v["growth"]), f"{v['closed_form_error']:.1e}"] for k, v in summary["gradient_over_time"].items()]
    text += common.markdown_table(["(w_x, w_rec)", "gradient over time", "ratio δ_{k-1}/δ_k", "|δ_1|/|δ_n|", "error vs δ_n w_rec^(n-k)"], rows)
    return text


def _plot_surface(ax, gx, gr, c, levels):
    from matplotlib import cm
    from matplotlib.colors import LogNorm

    surf = ax.contourf(gx, gr, c + 1, levels=levels, cmap=cm.pink, norm=LogNorm())
    ax.set_xlabel("$w_x$")
    ax.set_ylabel("$w_{rec}$")
    return surf


def _surface_figure(plt, arrays, title):
    # the tutorial's colour levels (its text lost the minus sign; ξ + 1 ≥ 1 so any lower bound ≤ 0 fills the plane)
    levels = np.logspace(-0.2, 8, 30)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, view in zip(axes, SURFACE_VIEWS):
        surf = _plot_surface(ax, arrays[f"{view}_w_x"], arrays[f"{view}_w_rec"], arrays[f"{view}_cost"], levels)
        (x0, x1), (r0, r1) = SURFACE_VIEWS[view]
        ax.set_xlim(x0, x1)
        ax.set_ylim(r0, r1)
    fig.subplots_adjust(right=0.8)
    cax = fig.add_axes([0.85, 0.12, 0.03, 0.78])
    cbar = fig.colorbar(surf, ticks=np.logspace(0, 8, 9), cax=cax)
    cbar.ax.set_ylabel("$\\xi + 1$")
    fig.suptitle(title)
    return fig, axes


def _plots(out_dir, surface, curves, runs) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    arrays = np.load(os.path.join(out_dir, surface["file"]))

    fig, axes = _surface_figure(plt, arrays, "Cost surface (log colour scale) and the sampled points")
    for ax in axes:
        for wx, wrec, colour in POINTS:
            ax.plot(wx, wrec, colour + "o")
    common.save_figure(fig, out_dir, "cost_surface.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for c, (_, _, colour) in zip(curves["points"], POINTS):
        n = len(c["sum"])
        ks = np.arange(1, n + 1)
        label = f"({c['w'][0]:g}, {c['w'][1]:g}) {c['kind']}"
        ax1.plot(ks, c["sum"], colour + "-o", ms=3, label=label)
        norms = np.asarray(c["mean_norm"])
        ax2.plot(ks[norms > 0], norms[norms > 0], colour + "-o", ms=3, label=label)
    ax1.set_yscale("symlog", linthresh=1e-3)
    ax1.set_ylabel("$\\sum_b \\partial\\xi/\\partial s_k$")
    ax2.set_yscale("log")
    ax2.set_ylabel("mean $\\|\\partial\\xi/\\partial s_k\\|$")
    for ax in (ax1, ax2):
        ax.set_xlabel("time step k (backpropagation runs right to left)")
        ax.grid(True)
    ax2.legend(title="$(w_x, w_{rec})$", loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    fig.suptitle("Gradient over time: $\\delta_k = \\delta_n w_{rec}^{n-k}$")
    common.save_figure(fig, out_dir, "gradient_over_time.png")

    fig, axes = _surface_figure(plt, arrays, f"Optimisation paths from {START}")
    for name, rec in runs.items():
        path = np.array([[np.nan, np.nan] if p is None or None in p else p for p in rec["tutorial"]["path"]], np.float64)
        for ax in axes:
            ax.plot(path[:, 0], path[:, 1], PATH_STYLE[name], ms=2, lw=0.5, label=rec["label"])
    for ax in axes:
        ax.plot(*START, "k*", ms=10)
    axes[0].legend(loc="lower left", fontsize=7)
    common.save_figure(fig, out_dir, "optimization_paths.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(runs)
    data = [[d for d in runs[n]["seed_distance"] if d is not None] or [np.nan] for n in names]
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), [runs[n]["label"] for n in names], rotation=15, fontsize=7)
    ax.set_yscale("log")
    ax.axhline(WITHIN, color="k", ls=":", lw=0.8)
    ax.set_ylabel("final distance to (1, 1)")
    ax.set_title(f"Over {len(next(iter(runs.values()))['seeds'])} datasets (overflowed runs left out)")
    common.save_figure(fig, out_dir, "seeds_final_distance.png")
