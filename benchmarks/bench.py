"""What every framework module returns: a :class:`Bench`, and helpers for the JAX ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional


class NotApplicable(Exception):
    """The framework has nothing to run for this workload (e.g. no Elman cell in equinox.nn)."""


@dataclass
class Bench:
    """One measurable computation.

    step: run one forward plus backward pass (W5: one training step of every
      member) and return something to wait on.
    sync: wait for ``step``'s result (``jax.block_until_ready``; a no-op for PyTorch on CPU).
    loss_of: the loss (a float) in what the first ``step`` returned, i.e. at the
      shared weights, computed by the very code that is timed (W5: the mean over
      members of the loss before their update).
    lower: JAX only: the jitted function lowered for its arguments (``jax.stages.Lowered``),
      for compile timings and XLA's memory analysis; ``args`` are what the
      compiled executable takes.
    """

    step: Callable[[], Any]
    sync: Callable[[Any], Any]
    loss_of: Callable[[Any], float]
    lower: Optional[Callable[[], Any]] = None
    args: tuple = ()
    info: dict = field(default_factory=dict)


def jax_value_and_grad_bench(loss_fn: Callable, params: Any, *args: Any, info: Optional[dict] = None) -> Bench:
    """``jit(value_and_grad(loss_fn))(params, *args)``: gradients for every leaf of ``params``."""
    import jax

    fn = jax.jit(jax.value_and_grad(loss_fn))
    return Bench(
        step=lambda: fn(params, *args),
        sync=jax.block_until_ready,
        loss_of=lambda out: float(out[0]),
        lower=lambda: fn.lower(params, *args),
        args=(params,) + tuple(args),
        info=dict(info or {}),
    )


def sgd_train_step(loss_fn: Callable, learning_rate: float, value_and_grad: Optional[Callable] = None) -> Callable:
    """``(params, *args) -> (params - lr * grad, loss)``, not jitted.

    ``value_and_grad(params, *args) -> (loss, grads)`` replaces ``jax.value_and_grad(loss_fn)``
    when given (rnn_jax's engine computes Elman gradients by hand, :mod:`rnn_jax.repro.fused`)."""
    import jax

    grad_fn = value_and_grad or jax.value_and_grad(loss_fn)

    def train_step(params, *args):
        loss, grads = grad_fn(params, *args)
        return jax.tree_util.tree_map(lambda p, g: p - learning_rate * g, params, grads), loss

    return train_step


def jax_seeds_bench(
    loss_fn: Callable, learning_rate: float, member_params: list, member_args: list, variant: str,
    value_and_grad: Optional[Callable] = None,
) -> Bench:
    """W5 in JAX: ``vmap`` -- one jitted, vmapped train step over stacked members;
    ``loop`` -- a Python loop over the same train step jitted on one member.
    ``value_and_grad``: see :func:`sgd_train_step`."""
    import jax
    import jax.numpy as jnp

    train_step = sgd_train_step(loss_fn, learning_rate, value_and_grad)
    if variant == "vmap":
        stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *member_params)
        args = [jnp.stack(a) for a in zip(*member_args)]
        fn = jax.jit(jax.vmap(train_step))
        return Bench(
            step=lambda: fn(stacked, *args),
            sync=jax.block_until_ready,
            loss_of=lambda out: float(jnp.mean(out[1])),
            lower=lambda: fn.lower(stacked, *args),
            args=(stacked,) + tuple(args),
            info={"members": len(member_params)},
        )
    if variant == "loop":
        fn = jax.jit(train_step)

        def step():
            return [fn(p, *a) for p, a in zip(member_params, member_args)]

        return Bench(
            step=step,
            sync=jax.block_until_ready,
            loss_of=lambda outs: float(sum(float(out[1]) for out in outs) / len(outs)),
            info={"members": len(member_params)},
        )
    raise ValueError(f"unknown W5 variant {variant!r}; expected 'vmap' or 'loop'")
