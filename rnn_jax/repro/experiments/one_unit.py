"""One-unit dynamics: bifurcations make the error surface grow walls, and clipping tames the step that hits one.

Pascanu, Mikolov & Bengio (2013), figures 3 and 6, for the paper's one-unit model
``x_t = w σ(x_{t-1}) + b`` (σ logistic, no input; :func:`rnn_jax.pascanu` with one unit):

(a) **Bifurcation diagram** (after Doya 1993), recurrent weight fixed at ``w = 5``.
    The fixed points ``x∞ = 5σ(x∞) + b`` form the curve ``b(x) = x − 5σ(x)``; a point
    is an attractor where ``5σ'(x) < 1``. Two attractors coexist for ``b`` between the
    two saddle-node bifurcations, where also ``5σ'(x) = 1``, i.e.
    ``σ(x) = (1 ± √(1 − 4/5))/2`` and ``b = x − 5σ(x)``: ``b ≈ −2.656`` and ``−2.344``.
    The diagram is also found the dynamical way -- iterating the map from many
    initial ``x`` on a fine ``b`` grid and counting the distinct end points -- and the
    ``b`` where that count changes agree with the solved points to the grid spacing.
(b) **Error surface with a wall**: ``x_0 = 0.5``, 50 steps, ``E = (σ(x_50) − 0.7)²`` over
    ``(w, b)``. Where ``x_0`` is the unstable fixed point, ``b = 0.5 − w σ(0.5)`` (for
    ``w σ'(0.5) > 1``, i.e. ``w > 4.26``), a change of ``b`` by ``ε`` moves ``x_50`` by
    about ``ε λ^50`` (``λ = w σ'(0.5)``): the final state switches basin and ``E``
    jumps -- a wall about ``λ^−50`` wide whose gradient is ``~10³`` at ``w = 5``. A
    gradient step taken just before the wall (``jax.grad`` through the 50 steps) is
    ``η ‖∇E‖`` long without clipping and throws the parameters far away, onto a
    plateau (σ saturated, ``E = 0.09``) where the gradient vanishes and descent stops
    for good; rescaled to the threshold (Algorithm 1, :func:`rnn_jax.optim.msgd_c`)
    it is exactly ``η · threshold`` long, and the clipped descent keeps bouncing
    along the wall, in bounded steps, down to where it ends (``w ≈ 4.3``) and
    reaches ``E ≈ 0`` within 1000 updates. Seeds: the same descents from random
    points on the near face of the wall (random ``w`` and depth into the wall),
    mean ± spread of the step lengths and final errors.
"""

from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnn_jax
from rnn_jax import optim
from rnn_jax.repro.experiments import common

W_BIFURCATION = 5.0  # Doya's / the paper's fixed recurrent weight of figure 3
X0, STEPS, TARGET = 0.5, 50, 0.7  # figure 6: x_0, number of steps, target of σ(x_50)
SURFACE_RANGE = ((0.0, 10.0), (-7.0, 1.0))  # (w, b): the smooth valley (w < 4.26) and the wall (w > 4.26)
LEARNING_RATE, THRESHOLD = 0.1, 1.0  # the gradient steps of (b): clipped steps are η·threshold = 0.1 long
MAIN_START = (5.0, 0.03)  # (w_0, depth c): b_0 = b_wall(w_0) + c λ^−50, just before the wall's crest
SEED_W_RANGE = (5.0, 6.5)  # random starts: w_0 uniform here (wall width λ^−50 from 3e-4 down to 6e-10) ...
SEED_DEPTH_RANGE = (1e-3, 0.1)  # ... and depth c log-uniform here
GAP = 0.1  # two end points of the iterated map closer than this are the same attractor

PROFILES = {
    # tiny: the test's; quick: 2 CPU cores in seconds; full: the fine grids (a GPU job)
    "tiny": dict(b_points=401, initial_points=16, iterations=1000, surface_points=40, section_points=2001, wall_steps=1000, seeds=4),
    "quick": dict(b_points=4001, initial_points=32, iterations=4000, surface_points=200, section_points=20001, wall_steps=1000, seeds=64),
    "full": dict(b_points=40001, initial_points=64, iterations=20000, surface_points=400, section_points=200001, wall_steps=1000, seeds=1024),
}
B_RANGE = (-3.5, -1.5)  # b grid of the diagram: the bistable interval and one monostable stretch each side


# ---------------------------------------------------------------- (a) bifurcations


def saddle_node_points(w: float = W_BIFURCATION) -> List[dict]:
    """The saddle-node bifurcations of ``x = w σ(x) + b``, solved in closed form; sorted by ``b``.

    Both equations hold there: ``x = w σ(x) + b`` and ``1 = w σ'(x)``. The second is
    ``σ(1 − σ) = 1/w``, so ``σ = (1 ± √(1 − 4/w))/2``, ``x = log(σ/(1 − σ))`` and
    ``b = x − w σ``. Needs ``w > 4`` (below, ``wσ' < 1`` everywhere: one attractor).
    Returns ``[{"b": ..., "x": ...}, ...]`` (two points).
    """
    if not w > 4:
        raise ValueError(f"saddle_node_points: expected a recurrent weight w > 4 (bistability needs w·max σ' = w/4 > 1), got {w}")
    root = np.sqrt(1 - 4 / w)
    points = []
    for s in ((1 - root) / 2, (1 + root) / 2):
        x = float(np.log(s / (1 - s)))
        points.append(dict(b=float(x - w * s), x=x))
    return sorted(points, key=lambda p: p["b"])


def fixed_point_curve(x: np.ndarray, w: float = W_BIFURCATION) -> Tuple[np.ndarray, np.ndarray]:
    """The fixed points parametrised by ``x``: ``(b(x) = x − w σ(x), stable = w σ'(x) < 1)``."""
    x = np.asarray(x, np.float64)
    s = 1 / (1 + np.exp(-x))
    return x - w * s, w * s * (1 - s) < 1


def iterate_map(bs: jax.Array, x0s: jax.Array, w: float, iterations: int) -> jax.Array:
    """``x ← w σ(x) + b`` iterated ``iterations`` times from every ``x0`` for every ``b``: (len(bs), len(x0s)).

    The step is the one-unit :func:`rnn_jax.pascanu` cell's with no input, written out
    so that a ``b`` grid times many starts runs as one vectorised loop.
    """
    step = lambda _, x: w * jax.nn.sigmoid(x) + bs[:, None]
    return jax.lax.fori_loop(0, iterations, step, jnp.broadcast_to(x0s[None, :], (bs.shape[0], x0s.shape[0])))


def count_attractors(end_points: np.ndarray, gap: float = GAP) -> np.ndarray:
    """Distinct end points per row (``(len(bs), len(x0s))`` -> ``(len(bs),)``): 1 + gaps wider than ``gap``."""
    ends = np.sort(np.asarray(end_points), axis=1)
    return 1 + np.sum(np.diff(ends, axis=1) > gap, axis=1)


def bifurcations_from_diagram(bs: np.ndarray, counts: np.ndarray) -> List[dict]:
    """The ``b`` where the number of attractors changes: midpoints of the grid intervals where it does.

    Returns ``[{"b": midpoint, "low": b_i, "high": b_{i+1}, "from": count_i, "to": count_{i+1}}, ...]``.
    """
    bs, counts = np.asarray(bs), np.asarray(counts)
    changes = np.nonzero(np.diff(counts))[0]
    return [dict(b=float((bs[i] + bs[i + 1]) / 2), low=float(bs[i]), high=float(bs[i + 1]), **{"from": int(counts[i]), "to": int(counts[i + 1])})
            for i in changes]


# ---------------------------------------------------------------- (b) error surface and wall

CELL = rnn_jax.pascanu(1, "sigmoid")


def final_output(wb: jax.Array, steps: int = STEPS, x0: float = X0) -> jax.Array:
    """``σ(x_steps)`` for ``x_t = w σ(x_{t-1}) + b``, ``x_0 = x0``; ``wb = (w, b)`` (2,).

    Runs the library's one-unit :func:`rnn_jax.pascanu` cell (``w_hh = w``, bias ``b``,
    zero input) with :func:`rnn_jax.unroll`.
    """
    one = jnp.ones((1, 1), wb.dtype)
    params = rnn_jax.ElmanParams(w_ih=0 * one, w_hh=wb[0] * one, b=wb[1] * jnp.ones((1,), wb.dtype))
    initial = rnn_jax.RNNState(jnp.full((1,), x0, wb.dtype))
    _, ys = rnn_jax.unroll(CELL, params, jnp.zeros((steps, 1), wb.dtype), initial_carry=initial)
    return ys[-1, 0]


def error(wb: jax.Array) -> jax.Array:
    """``E(w, b) = (σ(x_50) − 0.7)²``; ``wb`` (2,)."""
    return (final_output(wb) - TARGET) ** 2


def wall_b(w) -> np.ndarray:
    """Where the wall stands: ``b = x_0 − w σ(x_0)``, the ``b`` that makes ``x_0`` a fixed point.

    It is the unstable one (the basin boundary) where ``w σ'(x_0) > 1``; nearby, ``x_50``
    depends on ``b`` through ``λ^50``, ``λ = w σ'(x_0)``.
    """
    return X0 - np.asarray(w, np.float64) / (1 + np.exp(-X0))


def wall_multiplier(w) -> np.ndarray:
    """``λ = w σ'(x_0)``, the unstable fixed point's multiplier; the wall is about ``λ^−50`` wide."""
    s = 1 / (1 + np.exp(-X0))
    return np.asarray(w, np.float64) * s * (1 - s)


def start_point(w0: float, depth: float) -> Tuple[float, float]:
    """``(w_0, b_wall(w_0) + depth · λ^−50)``: on the low-error side, ``depth`` wall-widths before the crest."""
    return float(w0), float(wall_b(w0) + depth * wall_multiplier(w0) ** (-STEPS))


def error_surface(w_range, b_range, points: int, dtype=jnp.float64) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``E`` on a ``points × points`` grid: ``(w grid, b grid, E)``, rows varying ``b``."""
    grid_w, grid_b = np.meshgrid(np.linspace(*w_range, points), np.linspace(*b_range, points))
    wb = jnp.asarray(np.stack([grid_w.ravel(), grid_b.ravel()], axis=1), dtype)
    values = jax.jit(jax.vmap(error))(wb)
    return grid_w, grid_b, np.asarray(values).reshape(grid_w.shape)


def cross_section(w0: float, half_width: float, points: int, dtype=jnp.float64) -> dict:
    """``E`` and ``‖∇E‖`` along ``b`` at fixed ``w0``, across the wall (``b_wall ± half_width``).

    Returns arrays ``b``, ``error``, ``grad_norm`` and the crest: the ``b`` of the largest
    gradient norm and that norm.
    """
    bs = wall_b(w0) + np.linspace(-half_width, half_width, points)
    wb = jnp.asarray(np.stack([np.full_like(bs, w0), bs], axis=1), dtype)
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(error)))(wb)
    norms = np.linalg.norm(np.asarray(grads), axis=1)
    i = int(np.argmax(norms))
    return dict(b=bs, error=np.asarray(values), grad_norm=norms, crest_b=float(bs[i]), max_grad_norm=float(norms[i]))


def gradient_descent(tx: optax.GradientTransformation, start: jax.Array, steps: int):
    """``steps`` updates of ``tx`` on ``E`` from ``start`` (2,): ``(path (steps+1, 2), E (steps+1,), ‖∇E‖ (steps,))``."""

    step = optim.descent_step(tx, error)

    def body(carry, _):
        new, (value, grad) = step(carry)
        return new, (carry[0], value, jnp.linalg.norm(grad))

    (final, _), (path, values, norms) = jax.lax.scan(body, (start, tx.init(start)), None, length=steps)
    return jnp.concatenate([path, final[None]]), jnp.concatenate([values, error(final)[None]]), norms


OPTIMIZERS = {
    "unclipped": ("SGD", lambda: optim.msgd(LEARNING_RATE)),
    "clipped": (f"SGD, clipped to norm {THRESHOLD:g}", lambda: optim.msgd_c(LEARNING_RATE, THRESHOLD)),
}


def wall_steps(starts: np.ndarray, steps: int, dtype=jnp.float64) -> dict:
    """Unclipped and clipped descent from each start (``starts`` (S, 2)), vmapped.

    Returns per optimizer: ``path`` (S, steps+1, 2), ``error`` (S, steps+1), ``grad_norm``
    (S, steps) and ``step_length`` (S, steps), ``‖w_{i+1} − w_i‖``.
    """
    out = {}
    starts = jnp.asarray(starts, dtype)
    for name, (_, factory) in OPTIMIZERS.items():
        tx = factory()
        path, values, norms = jax.jit(jax.vmap(lambda s: gradient_descent(tx, s, steps)))(starts)
        path = np.asarray(path)
        out[name] = dict(path=path, error=np.asarray(values), grad_norm=np.asarray(norms),
                         step_length=np.linalg.norm(np.diff(path, axis=1), axis=2))
    return out


# ---------------------------------------------------------------- run




def _seed_key(seeds: Sequence[int]) -> str:
    return f"0..{len(seeds) - 1}" if list(seeds) == list(range(len(seeds))) else ",".join(map(str, seeds))


def random_starts(seeds: Sequence[int]) -> np.ndarray:
    """One start per seed (numpy ``RandomState(seed)``): ``w_0 ~ U(SEED_W_RANGE)``, depth log-uniform; (S, 2)."""
    starts = []
    for s in seeds:
        rng = np.random.RandomState(int(s))
        w0 = rng.uniform(*SEED_W_RANGE)
        depth = float(np.exp(rng.uniform(*np.log(SEED_DEPTH_RANGE))))
        starts.append(start_point(w0, depth))
    return np.asarray(starts, np.float64)


def _tolist(a) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, np.float64).ravel()]


def _bifurcation_unit(results, out_dir, settings) -> dict:
    n, m, iters = settings["b_points"], settings["initial_points"], settings["iterations"]
    key = f"bifurcation/w={W_BIFURCATION:g}/b_points={n}/initial_points={m}/iterations={iters}"
    path = os.path.join(out_dir, f"bifurcation_{n}_{m}_{iters}.npz")
    if results.done(key) and os.path.exists(path):
        return results.get(key)
    bs = np.linspace(*B_RANGE, n)
    x0s = np.linspace(-10.0, 10.0, m)  # the attractors lie in (b, b + w) ⊂ (−3.5, 3.5): every basin is sampled
    ends = np.asarray(jax.jit(iterate_map, static_argnums=(2, 3))(jnp.asarray(bs), jnp.asarray(x0s), W_BIFURCATION, iters))
    counts = count_attractors(ends)
    np.savez(path, b=bs, x0=x0s, end_points=ends, counts=counts)
    solved = saddle_node_points(W_BIFURCATION)
    found = bifurcations_from_diagram(bs, counts)
    spacing = float(bs[1] - bs[0])
    errors = [abs(f["b"] - s["b"]) for f, s in zip(found, solved)] if len(found) == len(solved) else []
    return results.add(key, dict(
        file=os.path.basename(path), w=W_BIFURCATION, grid_spacing=spacing, iterations=iters, initial_points=m,
        solved=solved, from_diagram=found, max_count=int(counts.max()),
        max_error=float(max(errors)) if errors else None,
        bistable_interval=[solved[0]["b"], solved[1]["b"]],
    ))


def _surface_unit(results, out_dir, points) -> dict:
    key = f"surface/points={points}"
    path = os.path.join(out_dir, f"error_surface_{points}.npz")
    if results.done(key) and os.path.exists(path):
        return results.get(key)
    gw, gb, e = error_surface(*SURFACE_RANGE, points)
    np.savez(path, w=gw, b=gb, error=e)
    # the jump across the wall, measured on the grid: the largest change of E between b-neighbours
    jumps = np.abs(np.diff(e, axis=0))
    i = np.unravel_index(np.argmax(jumps), jumps.shape)
    return results.add(key, dict(
        file=os.path.basename(path), points=points, w_range=list(SURFACE_RANGE[0]), b_range=list(SURFACE_RANGE[1]),
        min_error=float(e.min()), max_error=float(e.max()),
        largest_jump=dict(size=float(jumps[i]), w=float(gw[i]), b=float((gb[i] + gb[i[0] + 1, i[1]]) / 2),
                          wall_b=float(wall_b(gw[i]))),
    ))


def _wall_unit(results, out_dir, settings) -> dict:
    points, steps = settings["section_points"], settings["wall_steps"]
    w0, depth = MAIN_START
    key = f"wall/w0={w0:g}/depth={depth:g}/lr={LEARNING_RATE:g}/threshold={THRESHOLD:g}/steps={steps}/section={points}"
    if results.done(key):
        return results.get(key)
    width = float(wall_multiplier(w0) ** (-STEPS))
    section = cross_section(w0, 10 * width, points)
    start = start_point(w0, depth)
    runs = wall_steps(np.asarray([start]), steps)
    record = dict(
        w0=w0, depth=depth, start=list(start), wall_b=float(wall_b(w0)), wall_width=width, multiplier=float(wall_multiplier(w0)),
        learning_rate=LEARNING_RATE, threshold=THRESHOLD, steps=steps,
        section=dict(b=_tolist(section["b"]), error=_tolist(section["error"]), grad_norm=_tolist(section["grad_norm"]),
                     crest_b=section["crest_b"], max_grad_norm=section["max_grad_norm"]),
    )
    for name, run_ in runs.items():
        record[name] = dict(path=[_tolist(p) for p in run_["path"][0]], error=_tolist(run_["error"][0]),
                            grad_norm=_tolist(run_["grad_norm"][0]), step_length=_tolist(run_["step_length"][0]))
    return results.add(key, record)


def _seeds_unit(results, settings, seed_list) -> dict:
    steps = settings["wall_steps"]
    key = f"wall_seeds/lr={LEARNING_RATE:g}/threshold={THRESHOLD:g}/steps={steps}/seeds={_seed_key(seed_list)}"
    if results.done(key):
        return results.get(key)
    starts = random_starts(seed_list)
    runs = wall_steps(starts, steps)
    record = dict(seeds=seed_list, starts=[_tolist(s) for s in starts])
    for name, r in runs.items():
        record[name] = dict(start_grad_norm=_tolist(r["grad_norm"][:, 0]), first_step=_tolist(r["step_length"][:, 0]),
                            final_error=_tolist(r["error"][:, -1]), max_step=_tolist(r["step_length"].max(axis=1)),
                            distance=_tolist(np.linalg.norm(r["path"][:, -1] - r["path"][:, 0], axis=1)))
    return results.add(key, record)


def run(out_dir: str, profile: str = "quick", seeds=None, progress: bool = True) -> dict:
    """Run experiment 5 (one-unit dynamics) into ``out_dir``; returns the summary (also ``summary.json``).

    Units (``results.jsonl``, skipped on a rerun): the bifurcation diagram (end points in
    an ``.npz``), the error surface (``.npz``), the wall at ``MAIN_START`` (cross-section
    and the two descents), the random starts. ``seeds``: a number or a list of seeds.
    """
    settings = common.get_profile(PROFILES, profile)
    seed_list = common.seed_list(seeds, settings)
    os.makedirs(out_dir, exist_ok=True)
    with jax.enable_x64(True):
        results = common.Results(out_dir)
        bar = common.Progress("one-unit", 4, progress)
        bif = _bifurcation_unit(results, out_dir, settings)
        bar.update(note="bifurcation diagram")
        surface = _surface_unit(results, out_dir, settings["surface_points"])
        bar.update(note="error surface")
        wall = _wall_unit(results, out_dir, settings)
        bar.update(note="wall steps")
        seeded = _seeds_unit(results, settings, seed_list)
        bar.update(note="random starts")
        summary = common.finite(_summarise(profile, bif, surface, wall, seeded))
        common.write_text(out_dir, "table.md", _table(summary))
        _plots(out_dir, bif, surface, wall)
    return common.write_summary(out_dir, summary)


# ---------------------------------------------------------------- summary, table, plots


def _summarise(profile, bif, surface, wall, seeded) -> dict:
    steps = {}
    for name in OPTIMIZERS:
        steps[name] = dict(first_step=wall[name]["step_length"][0], final_error=wall[name]["error"][-1],
                           lowest_error=min(v for v in wall[name]["error"] if v is not None),
                           final_w_b=wall[name]["path"][-1], max_step=max(v for v in wall[name]["step_length"] if v is not None))
    ratio = [u / c for u, c in zip(seeded["unclipped"]["first_step"], seeded["clipped"]["first_step"]) if u is not None and c]
    seeds = {name: dict(start_grad_norm=common.mean_and_spread(_nan(seeded[name]["start_grad_norm"])),
                        first_step=common.mean_and_spread(_nan(seeded[name]["first_step"])),
                        final_error=common.mean_and_spread(_nan(seeded[name]["final_error"])),
                        distance=common.mean_and_spread(_nan(seeded[name]["distance"])))
             for name in OPTIMIZERS}
    seeds["first_step_ratio_median"] = float(np.median(ratio)) if ratio else None
    seeds["first_step_ratio_min"] = float(np.min(ratio)) if ratio else None
    for name in OPTIMIZERS:
        final = np.asarray(_nan(seeded[name]["final_error"]), np.float64)
        seeds[name]["final_error_median"] = float(np.median(final))
        seeds[name]["final_error_below_1e-3"] = common.rate_with_interval(int(np.sum(final < 1e-3)), len(final))
    seeds["n"] = len(seeded["seeds"])
    return dict(
        experiment="one_unit",
        profile=profile,
        bifurcation=dict(w=bif["w"], solved_b=[p["b"] for p in bif["solved"]], solved_x=[p["x"] for p in bif["solved"]],
                         diagram_b=[p["b"] for p in bif["from_diagram"]], grid_spacing=bif["grid_spacing"], max_error=bif["max_error"],
                         max_attractors=bif["max_count"]),
        surface=dict(points=surface["points"], min_error=surface["min_error"], max_error=surface["max_error"], largest_jump=surface["largest_jump"]),
        wall=dict(w0=wall["w0"], start=wall["start"], wall_b=wall["wall_b"], crest_b=wall["section"]["crest_b"], wall_width=wall["wall_width"],
                  multiplier=wall["multiplier"], grad_norm_at_wall=wall["section"]["max_grad_norm"],
                  grad_norm_at_start=wall["unclipped"]["grad_norm"][0], learning_rate=wall["learning_rate"], threshold=wall["threshold"],
                  n_steps=wall["steps"],
                  steps=steps),
        seeds=seeds,
    )




def _nan(values) -> list:
    return [np.nan if v is None else v for v in values]


def _table(s: dict) -> str:
    b, w = s["bifurcation"], s["wall"]
    text = f"# One-unit dynamics (paper figures 3 and 6), profile {s['profile']}\n\n## Saddle-node bifurcations of x = {b['w']:g}σ(x) + b\n\n"
    rows = [[i + 1, b["solved_b"][i], b["solved_x"][i], b["diagram_b"][i] if i < len(b["diagram_b"]) else "—",
             abs(b["diagram_b"][i] - b["solved_b"][i]) if i < len(b["diagram_b"]) else "—"] for i in range(2)]
    text += common.markdown_table(["point", "b (solved)", "x (solved)", "b (from the diagram)", "|difference|"], rows)
    text += f"\nDiagram grid spacing {b['grid_spacing']:.2g}; at most {b['max_attractors']} attractors.\n\n"
    text += (f"## The wall of E = (σ(x_{STEPS}) − {TARGET})², x_0 = {X0}\n\nAt w = {w['w0']:g}: wall at b = 0.5 − wσ(0.5) = {w['wall_b']:.6f} "
             f"(gradient crest at {w['crest_b']:.6f}), width λ^−{STEPS} = {w['wall_width']:.2e} (λ = {w['multiplier']:.4f}); "
             f"largest ‖∇E‖ across it {w['grad_norm_at_wall']:.4g}. Start {tuple(round(v, 8) for v in w['start'])}: "
             f"‖∇E‖ = {w['grad_norm_at_start']:.4g}; learning rate {w['learning_rate']:g}, threshold {w['threshold']:g}.\n\n")
    rows = [[OPTIMIZERS[n][0], o["first_step"], o["max_step"], f"({o['final_w_b'][0]:.3f}, {o['final_w_b'][1]:.3f})", o["final_error"],
             o["lowest_error"]] for n, o in w["steps"].items()]
    text += common.markdown_table(["descent", "first step length", "longest step", "final (w, b)", "final E", "lowest E on the path"], rows)
    sd = s["seeds"]
    text += f"\nOver {sd['n']} random starts on the wall's near face, {w['n_steps']} updates each (mean ± std):\n\n"
    rows = [[OPTIMIZERS[n][0], f"{sd[n]['start_grad_norm']['mean']:.4g} ± {sd[n]['start_grad_norm']['std']:.3g}",
             f"{sd[n]['first_step']['mean']:.4g} ± {sd[n]['first_step']['std']:.3g}",
             f"{sd[n]['distance']['mean']:.4g} ± {sd[n]['distance']['std']:.3g}",
             f"{sd[n]['final_error']['mean']:.4g} ± {sd[n]['final_error']['std']:.3g}", f"{sd[n]['final_error_median']:.3g}",
             f"{sd[n]['final_error_below_1e-3']['rate']:.2f} [{sd[n]['final_error_below_1e-3']['low']:.2f}, {sd[n]['final_error_below_1e-3']['high']:.2f}]"]
            for n in OPTIMIZERS]
    text += common.markdown_table(["descent", "‖∇E‖ at start", "first step length", "distance travelled", "final E", "median final E",
                                   "final E < 1e-3 [95% CI]"], rows)
    text += (f"\nRatio of the first unclipped to the first clipped step: median {sd['first_step_ratio_median']:.4g}, "
             f"smallest {sd['first_step_ratio_min']:.4g}.\n")
    return text


def _plots(out_dir, bif, surface, wall) -> None:
    plt = common.pyplot()
    if plt is None:
        return
    d = np.load(os.path.join(out_dir, bif["file"]))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = np.linspace(-6, 6, 2001)
    bx, stable = fixed_point_curve(xs, bif["w"])
    inside = (bx >= B_RANGE[0]) & (bx <= B_RANGE[1])
    ax.plot(np.where(stable & inside, bx, np.nan), xs, "k-", lw=2, label="attractors (solved: 5σ'(x) < 1)")
    ax.plot(np.where(~stable & inside, bx, np.nan), xs, "k--", lw=1, label="unstable (basin boundary)")
    bs, ends = d["b"], d["end_points"]
    stride = max(1, len(bs) // 400)
    ax.plot(np.repeat(bs[::stride], ends.shape[1]), ends[::stride].ravel(), ".", color="tab:orange", ms=1.5, label="iterated end points")
    for i, p in enumerate(bif["solved"]):
        ax.axvline(p["b"], color="tab:blue", lw=0.8, ls=":", label="saddle-node (solved)" if i == 0 else None)
        ax.plot(p["b"], p["x"], "o", mfc="none", color="tab:blue")
    for i, p in enumerate(bif["from_diagram"]):
        ax.axvline(p["b"], color="tab:red", lw=0.8, ls="-.", label="count changes (diagram)" if i == 0 else None)
    ax.set_xlim(*B_RANGE)
    ax.set_ylim(-4, 4)
    ax.set_xlabel("b")
    ax.set_ylabel("$x_\\infty$")
    ax.set_title(f"Bifurcation diagram of x = {bif['w']:g}σ(x) + b")
    ax.legend(fontsize=7, loc="upper left")
    common.save_figure(fig, out_dir, "bifurcation.png")

    s = np.load(os.path.join(out_dir, surface["file"]))
    fig = plt.figure(figsize=(13, 5))
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    ax3.plot_surface(s["w"], s["b"], s["error"], cmap="viridis", linewidth=0, antialiased=False, alpha=0.9)
    ax3.set_xlabel("w")
    ax3.set_ylabel("b")
    ax3.set_zlabel("E")
    ax3.view_init(elev=35, azim=-60)
    ax = fig.add_subplot(1, 2, 2)
    c = ax.contourf(s["w"], s["b"], s["error"], 40, cmap="viridis")
    fig.colorbar(c, ax=ax, label="E")
    ws = np.linspace(4.26, SURFACE_RANGE[0][1], 50)
    ax.plot(ws, wall_b(ws), "w:", lw=1, label="b = 0.5 − wσ(0.5)")
    _draw_paths(ax, wall)
    ax.set_xlim(*SURFACE_RANGE[0])
    ax.set_ylim(*SURFACE_RANGE[1])
    ax.set_xlabel("w")
    ax.set_ylabel("b")
    ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"E = (σ(x_{STEPS}) − {TARGET})², x_t = wσ(x_(t−1)) + b, x_0 = {X0}")
    common.save_figure(fig, out_dir, "error_surface.png")

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.5), gridspec_kw=dict(wspace=0.45))
    sec = wall["section"]
    offset = np.asarray(sec["b"], np.float64) - wall["wall_b"]
    ax1.semilogy(offset, sec["grad_norm"], "k-", lw=1)
    ax1.axvline(wall["start"][1] - wall["wall_b"], color="tab:green", ls=":", label="start")
    ax1.set_xlabel(f"b − b_wall at w = {wall['w0']:g}")
    ax1.set_ylabel("‖∇E‖")
    ax1b = ax1.twinx()
    ax1b.plot(offset, sec["error"], "tab:purple", lw=1)
    ax1b.set_ylabel("E", color="tab:purple")
    ax1.set_title("Across the wall")
    ax1.legend(fontsize=7)
    c = ax2.contourf(s["w"], s["b"], s["error"], 40, cmap="viridis")
    _draw_paths(ax2, wall)
    w0, b0 = wall["start"]
    ax2.set_xlim(w0 - 1.0, w0 + 1.0)
    ax2.set_ylim(b0 - 1.0, b0 + 1.0)
    ax2.set_title("Near the start (zoom)")
    ax2.set_xlabel("w")
    ax2.set_ylabel("b")
    for name, style in (("unclipped", "r-o"), ("clipped", "g-o")):
        ax3.semilogy(np.arange(1, len(wall[name]["step_length"]) + 1), [v if v else np.nan for v in wall[name]["step_length"]], style, ms=3,
                     label=OPTIMIZERS[name][0])
    ax3.axhline(wall["learning_rate"] * wall["threshold"], color="k", ls=":", lw=0.8, label="η · threshold")
    ax3.set_xlabel("update")
    ax3.set_ylabel("step length ‖Δ(w, b)‖")
    ax3.set_title("Step lengths")
    ax3.legend(fontsize=7)
    common.save_figure(fig, out_dir, "wall_steps.png")


def _draw_paths(ax, wall) -> None:
    for name, colour in (("unclipped", "tab:red"), ("clipped", "tab:green")):
        path = np.array([[np.nan, np.nan] if p is None or None in p else p for p in wall[name]["path"]], np.float64)
        ax.plot(path[:, 0], path[:, 1], "-o", color=colour, ms=1.5, lw=0.6, label=f"{OPTIMIZERS[name][0]} ({len(path) - 1} steps)")
        far = path[1]
        if np.all(np.isfinite(far)):
            ax.annotate(f"first step → ({far[0]:.3g}, {far[1]:.3g})", xy=path[0], xytext=(10, 10 if name == "clipped" else -20),
                        textcoords="offset points", fontsize=7, color=colour)
    ax.plot(*wall["start"], "w*", ms=10)
