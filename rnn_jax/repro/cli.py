"""Command line: ``rnn-jax <command>`` (also ``python -m rnn_jax``).

User errors and bugs. A mistake in what the user typed is reported in one line on
stderr, ``rnn-jax: error: <message>``, with exit status 2; a traceback means a bug
(exit status 1). A user error is:

* whatever argparse refuses: an unknown command, option or ``--profile`` (the choices
  are each experiment's ``PROFILES``), ``--seeds`` or ``--devices`` below 1 (argparse
  prints the usage too);
* an ``--out`` folder that is not a folder or cannot be created, checked before anything
  runs; an ``--device`` platform JAX cannot start;
* an exception of class :class:`rnn_jax._checks.UserError`, which every argument check
  of the library raises (a subclass of ``ValueError`` or ``TypeError``);
* a ``ValueError``/``TypeError`` raised by one of the experiments' checks of what the
  user passed, :data:`USER_FACING_CHECKS` (``common.claim_folder``: the ``--out`` folder
  holds a run with other settings; ``common.seed_list``), identified by the function whose
  ``raise`` statement it came from -- an error raised deeper, in code those functions call,
  is a bug.

Anything else -- an internal ``AttributeError``, an XLA error, a ``ValueError`` from the
training engine -- propagates with its traceback.

Devices. On a CPU host XLA shows one device unless told otherwise; ``rnn-jax`` sets
``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` to ``os.cpu_count()`` before
JAX starts its backend, so a sweep can spread its members over every core. A count
already in ``XLA_FLAGS`` is kept; ``--devices N`` overrides both. Only the command line
does this: importing :mod:`rnn_jax` changes no process flag.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Optional


def _demo(args) -> int:
    """Train a small tanh RNN to count ones, after checking its gradient three ways."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import rnn_jax
    from rnn_jax import bptt

    devices = _start_backend(args)
    jax.config.update("jax_enable_x64", True)
    print(f"rnn_jax {rnn_jax.__version__} on {devices[0].device_kind} ({jax.default_backend()})")

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

    step = rnn_jax.optim.descent_step(optimizer, lambda q, x: rnn_jax.model.loss(cell, q, x, jnp.sum(x, axis=1)))

    @jax.jit
    def train_chunk(params, opt_state, key):
        def one(carry, k):
            carry, (loss, _) = step(carry, jnp.round(jax.random.uniform(k, (32, 10, 1))))
            return carry, loss

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

    from rnn_jax.repro.experiments import EXPERIMENTS

    module = importlib.import_module(EXPERIMENTS[args.command])
    out_dir = args.out or os.path.join("runs", args.command, args.profile)
    _check_out_dir(out_dir)
    devices = _start_backend(args)
    _enable_compilation_cache()
    print(f"rnn-jax {args.command}: profile {args.profile}, output in {out_dir}/ "
          f"({len(devices)} {devices[0].device_kind} device{'s' if len(devices) > 1 else ''}); "
          f"rerun the same command to resume", flush=True)
    start = time.perf_counter()
    extra = {k: getattr(args, k) for k in ("text", "update") if getattr(args, k, None)}
    summary = module.run(out_dir, profile=args.profile, seeds=args.seeds, progress=not args.quiet, **extra)
    print(json.dumps(summary, indent=2, sort_keys=True, default=float))
    table = os.path.join(out_dir, "table.md")
    if os.path.exists(table):
        print(open(table).read())
    print(f"done in {time.perf_counter() - start:.0f} s; results, table and plots in {out_dir}/")
    return 0


def _info(args) -> int:
    """What JAX sees: version, platform and devices (``--devices`` shows the effect of the flag)."""
    import jax

    import rnn_jax

    devices = _start_backend(args)
    print(f"rnn_jax {rnn_jax.__version__}, jax {jax.__version__}, backend {jax.default_backend()}")
    print(f"{len(devices)} devices: {', '.join(str(d) for d in devices)}")
    return 0


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_platform_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "gpu", "tpu"], default=None, help="JAX platform (default: JAX's choice)")
    p.add_argument("--devices", type=positive_int, default=None, metavar="N",
                   help="number of CPU devices XLA shows (default: the number of cores, or the count in XLA_FLAGS)")


# What the usual profiles mean; an experiment may have others (the --profile choices are its PROFILES).
PROFILE_NOTES = {
    "tiny": "seconds (the tests)",
    "quick": "minutes on 2 CPU cores",
    "pilot": "the measured pilot behind the cpu profile",
    "cpu": "the claims on 2 CPU cores, <= 90 minutes",
    "full": "the source's settings (or the largest we could infer), a GPU job",
}


def profiles_of(module_name: str) -> list:
    """The profile names of an experiment module: the keys of its ``PROFILES``."""
    import importlib

    return list(importlib.import_module(module_name).PROFILES)


def build_parser() -> argparse.ArgumentParser:
    from rnn_jax.repro.experiments import EXPERIMENTS

    parser = argparse.ArgumentParser(prog="rnn-jax", description=__doc__.split("\n")[0],
                                     epilog="A mistake in the arguments exits with status 2 and a one-line message.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="gradient check (autodiff vs BPTT vs finite differences) and a short training run")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--chunks", type=positive_int, default=10, help="chunks of 100 updates")
    _add_platform_options(demo)
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="the JAX version, platform and devices rnn-jax commands run on")
    _add_platform_options(info)
    info.set_defaults(func=_info)
    for name, module in EXPERIMENTS.items():
        doc = _first_line(module)
        profiles = profiles_of(module)
        p = sub.add_parser(name, help=doc, description=doc)
        default = "quick" if "quick" in profiles else profiles[0]
        known = "; ".join(f"{k}: {PROFILE_NOTES[k]}" for k in profiles if k in PROFILE_NOTES)
        p.add_argument("--profile", choices=profiles, default=default,
                       help=f"the experiment's settings, one of {', '.join(profiles)} (default {default})"
                            + (f"; {known}" if known else ""))
        p.add_argument("--seeds", type=positive_int, default=None, help="number of seeds (default: the profile's)")
        p.add_argument("--out", default=None, help="output folder (default runs/<experiment>/<profile>)")
        _add_platform_options(p)
        p.add_argument("--quiet", action="store_true", help="no progress lines")
        if "update" in _run_parameters(module):
            p.add_argument("--update", choices=["theano", "sequential"], default=None,
                           help="momentum as the post's Theano code runs it (simultaneous updates: the weights "
                                "move by the previous velocity; the default) or the textbook step")
        if "text" in _run_parameters(module):
            p.add_argument("--text", metavar="FILE", default=None,
                           help="a UTF-8 text file (default: Lady Susan, shipped by music21; required without it)")
        p.set_defaults(func=_experiment)
    return parser


def _run_parameters(module_name: str) -> list:
    """The parameter names of an experiment module's ``run``, read from its source (no import)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return []
    with open(spec.origin) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "run":
            return [a.arg for a in node.args.args + node.args.kwonlyargs]
    return []


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


# ---------------------------------------------------------------- devices

HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def host_device_flags(flags: str, devices: Optional[int], cpu_count: Optional[int]) -> str:
    """``XLA_FLAGS`` with the host platform's device count set: to ``devices`` if given
    (replacing a count already there), else to ``cpu_count`` unless the flags hold a count."""
    pattern = re.compile(re.escape(HOST_DEVICES_FLAG) + r"=\S*")
    if devices is None:
        if pattern.search(flags) or not cpu_count:
            return flags
        devices = cpu_count
    flags = pattern.sub("", flags)
    return " ".join(flags.split() + [f"{HOST_DEVICES_FLAG}={int(devices)}"])


def _backend_started() -> bool:
    """Whether JAX's backends are up in this process (then XLA_FLAGS is read already)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a private API: assume not started
        return False


def configure_host_devices(args) -> None:
    """Set the CPU device count in ``os.environ["XLA_FLAGS"]`` before JAX's backend starts
    (see the module docstring); nothing when another platform is asked for."""
    devices = getattr(args, "devices", None)
    if getattr(args, "device", None) not in (None, "cpu"):
        return
    if _backend_started():
        if devices is not None:
            print(f"rnn-jax: warning: --devices {devices} has no effect, JAX's backend already started in this process",
                  file=sys.stderr)
        return
    flags = host_device_flags(os.environ.get("XLA_FLAGS", ""), devices, os.cpu_count())
    if flags != os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = flags


def _start_backend(args):
    """Select ``--device``'s platform and start it; a platform JAX cannot start is the user's error."""
    import jax

    from rnn_jax._checks import UserValueError

    if getattr(args, "device", None):
        jax.config.update("jax_platform_name", args.device)
    try:
        return jax.devices()
    except RuntimeError as err:
        raise UserValueError(f"--device {args.device}: JAX cannot start this platform here ({err})") from None


def _check_out_dir(out_dir: str) -> None:
    """The output folder must be a folder we can create and write to."""
    from rnn_jax._checks import UserValueError

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserValueError(f"--out {out_dir}: exists and is not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise UserValueError(f"--out {out_dir}: cannot create the folder ({err.strerror or err})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserValueError(f"--out {out_dir}: the folder is not writable")


# ---------------------------------------------------------------- user errors


def user_facing_checks() -> tuple:
    """The code objects of the experiments' functions whose own ``ValueError``/``TypeError`` are
    the user's mistake (they check the command line's ``--out`` and ``--seeds``)."""
    from rnn_jax.repro.experiments import common

    return tuple(getattr(common, name).__code__ for name in USER_FACING_CHECKS if hasattr(common, name))


USER_FACING_CHECKS = ("claim_folder", "seed_list")


def is_user_error(err: BaseException) -> bool:
    """A :class:`~rnn_jax._checks.UserError`, or a ValueError/TypeError raised by a ``raise``
    statement of one of :data:`USER_FACING_CHECKS` (not by code they call)."""
    from rnn_jax._checks import UserError

    if isinstance(err, UserError):
        return True
    if not isinstance(err, (ValueError, TypeError)) or err.__traceback__ is None:
        return False
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code in user_facing_checks()


def main(argv=None) -> int:
    """Run one command; returns the exit status (2 for a user error, see the module docstring)."""
    args = build_parser().parse_args(argv)
    configure_host_devices(args)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        if not is_user_error(err):
            raise
        message = " ".join(str(err).split())
        print(f"rnn-jax: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
