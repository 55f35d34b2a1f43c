"""Command line: ``rnn-jax <command>`` (also ``python -m rnn_jax``)."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _demo(args) -> int:
    """Train a small tanh RNN to count ones, after checking its gradient three ways."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import rnn_jax
    from rnn_jax import bptt

    if args.device:
        jax.config.update("jax_platform_name", args.device)
    jax.config.update("jax_enable_x64", True)
    print(f"rnn_jax {rnn_jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")

    # Gradient check in float64: autodiff vs the hand-written BPTT vs central finite differences.
    cell = rnn_jax.elman(8, "tanh")
    key = jax.random.key(args.seed)
    k_p, k_x, k_n = jax.random.split(key, 3)
    params = rnn_jax.model.init(k_p, cell, 1, 1, dtype=jnp.float64)
    params = params._replace(cell=params.cell._replace(b=0.1 * jax.random.normal(k_n, (8,), jnp.float64)))
    xs = jnp.round(jax.random.uniform(k_x, (20, 10, 1), jnp.float64))
    targets = jnp.sum(xs, axis=1)
    lengths = jnp.array([10] * 15 + [7] * 5)
    loss_fn = lambda p: rnn_jax.model.loss(cell, p, xs, targets, lengths=lengths)
    auto = jax.grad(loss_fn)(params)
    hand = bptt.bptt(cell, params, xs, targets, loss="mse", on="last", lengths=lengths).grads
    flat_auto, unravel = jax.flatten_util.ravel_pytree(auto)
    flat_hand, _ = jax.flatten_util.ravel_pytree(hand)
    flat_p, _ = jax.flatten_util.ravel_pytree(params)
    eps = 1e-6
    fd = np.array([
        (loss_fn(unravel(flat_p + eps * e)) - loss_fn(unravel(flat_p - eps * e))) / (2 * eps)
        for e in np.eye(flat_p.size)
    ])
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    print(f"gradient check ({flat_p.size} parameters, float64): "
          f"|autodiff - BPTT|/|BPTT| = {rel(flat_auto, flat_hand):.2e}, "
          f"|finite diff - BPTT|/|BPTT| = {rel(fd, flat_hand):.2e}")

    # Training in float32 with clipped SGD, a fresh minibatch per update.
    jax.config.update("jax_enable_x64", False)
    params32 = rnn_jax.model.init(k_p, cell, 1, 1)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.05, momentum=0.9))
    opt_state = optimizer.init(params32)

    @jax.jit
    def train_chunk(params, opt_state, key):
        def one(carry, k):
            p, s = carry
            x = jnp.round(jax.random.uniform(k, (32, 10, 1)))
            loss, g = jax.value_and_grad(lambda q: rnn_jax.model.loss(cell, q, x, jnp.sum(x, axis=1)))(p)
            updates, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (params, opt_state), losses = jax.lax.scan(one, (params, opt_state), jax.random.split(key, 100))
        return params, opt_state, losses

    start = time.perf_counter()
    for chunk in range(args.chunks):
        key, sub = jax.random.split(key)
        params32, opt_state, losses = train_chunk(params32, opt_state, sub)
        print(f"  updates {(chunk + 1) * 100:5d}: mean squared error {float(jnp.mean(losses)):.4f}")
    print(f"trained {args.chunks * 100} updates in {time.perf_counter() - start:.1f} s")
    return 0


def _enable_compilation_cache() -> None:
    """Keep compiled programs on disk: reruns (after a kill, or of another profile) skip recompiling.

    Set RNN_JAX_CACHE_DIR to choose the folder, or to an empty string to disable it.
    """
    import jax

    folder = os.environ.get("RNN_JAX_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "rnn_jax", "xla"))
    if folder:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _experiment(args) -> int:
    """Run one reproduction's profile into its output folder (resuming what is there)."""
    import importlib
    import json

    import jax

    from rnn_jax.experiments import EXPERIMENTS

    if args.device:
        jax.config.update("jax_platform_name", args.device)
    _enable_compilation_cache()
    module = importlib.import_module(EXPERIMENTS[args.command])
    out_dir = args.out or os.path.join("runs", args.command, args.profile)
    print(f"rnn-jax {args.command}: profile {args.profile}, output in {out_dir}/ "
          f"(device {jax.devices()[0].device_kind}); rerun the same command to resume", flush=True)
    start = time.perf_counter()
    summary = module.run(out_dir, profile=args.profile, seeds=args.seeds, progress=not args.quiet)
    print(json.dumps(summary, indent=2, sort_keys=True, default=float))
    table = os.path.join(out_dir, "table.md")
    if os.path.exists(table):
        print(open(table).read())
    print(f"done in {time.perf_counter() - start:.0f} s; results, table and plots in {out_dir}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rnn_jax.experiments import EXPERIMENTS

    parser = argparse.ArgumentParser(prog="rnn-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="gradient check (autodiff vs BPTT vs finite differences) and a short training run")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--chunks", type=int, default=10, help="chunks of 100 updates")
    demo.add_argument("--device", choices=["cpu", "gpu", "tpu"], default=None, help="JAX platform (default: JAX's choice)")
    demo.set_defaults(func=_demo)
    for name, module in EXPERIMENTS.items():
        doc = _first_line(module)
        p = sub.add_parser(name, help=doc, description=doc)
        p.add_argument("--profile", choices=["tiny", "quick", "full"], default="quick",
                       help="quick: minutes on 2 CPU cores; full: the source's settings, a GPU job; tiny: seconds (tests)")
        p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the profile's)")
        p.add_argument("--out", default=None, help="output folder (default runs/<experiment>/<profile>)")
        p.add_argument("--device", choices=["cpu", "gpu", "tpu"], default=None, help="JAX platform (default: JAX's choice)")
        p.add_argument("--quiet", action="store_true", help="no progress lines")
        p.set_defaults(func=_experiment)
    return parser


def _first_line(module_name: str) -> str:
    """The experiment module's first docstring line, without importing JAX-heavy code twice."""
    import importlib.util

    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return ""
    import ast

    with open(spec.origin) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
