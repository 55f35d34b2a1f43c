"""Plain JAX: the cells written out by hand over ``lax.scan``, no library.

Variants: ``inside`` -- ``x_t @ w_ih + b`` computed inside each step (the textbook
loop); ``hoisted`` -- computed for all steps at once before the scan.
"""

from __future__ import annotations

from benchmarks.bench import Bench, jax_value_and_grad_bench
from benchmarks.workloads import SeqConfig

VARIANTS = ("inside", "hoisted")


def variants(cfg: SeqConfig) -> list:
    return list(VARIANTS)


def _step(cfg: SeqConfig):
    """``step(p, carry, xp) -> (carry, h)`` with ``xp = x @ w_ih + b`` (PyTorch's equations)."""
    import jax
    import jax.numpy as jnp

    h = cfg.hidden_size
    if cfg.cell == "rnn":
        def step(p, carry, xp):
            new = jnp.tanh(xp + carry @ p["w_hh"])
            return new, new
    elif cfg.cell == "lstm":
        def step(p, carry, xp):
            hid, c = carry
            z = xp + hid @ p["w_hh"]
            i, f, g, o = (z[:, k * h:(k + 1) * h] for k in range(4))
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            hid = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (hid, c), hid
    else:
        def step(p, carry, xp):
            hh = carry @ p["w_hh"]
            r = jax.nn.sigmoid(xp[:, :h] + hh[:, :h])
            z = jax.nn.sigmoid(xp[:, h:2 * h] + hh[:, h:2 * h])
            n = jnp.tanh(xp[:, 2 * h:] + r * (hh[:, 2 * h:] + p["b_hn"]))
            new = (1 - z) * n + z * carry
            return new, new
    return step


def loss_fn(cfg: SeqConfig, variant: str):
    import jax
    import jax.numpy as jnp

    step = _step(cfg)
    if variant not in VARIANTS:
        raise ValueError(f"unknown jax variant {variant!r}; expected one of {VARIANTS}")

    def outputs(p, xs):
        xs_t = jnp.swapaxes(xs, 0, 1)  # (T, B, I)
        b = xs.shape[0]
        zeros = jnp.zeros((b, cfg.hidden_size), xs.dtype)
        carry = (zeros, zeros) if cfg.cell == "lstm" else zeros
        if variant == "hoisted":
            body = lambda c, xp: step(p, c, xp)
            _, hs = jax.lax.scan(body, carry, xs_t @ p["w_ih"] + p["b"])
        else:
            body = lambda c, x: step(p, c, x @ p["w_ih"] + p["b"])
            _, hs = jax.lax.scan(body, carry, xs_t)
        return hs  # (T, B, H)

    if cfg.loss == "xent_last":
        def loss(p, xs, labels):
            logits = outputs(p, xs)[-1] @ p["w_out"] + p["b_out"]
            logp = jax.nn.log_softmax(logits, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))
    else:
        def loss(p, xs):
            ys = outputs(p, xs) @ p["w_out"] + p["b_out"]
            return jnp.mean(jnp.sum(ys * ys, axis=-1))
    return loss


def _args(cfg: SeqConfig, d: dict) -> tuple:
    import jax.numpy as jnp

    return (jnp.asarray(d["xs"]),) + ((jnp.asarray(d["labels"]),) if cfg.loss == "xent_last" else ())


def build(cfg: SeqConfig, w: dict, d: dict, variant: str) -> Bench:
    import jax.numpy as jnp

    params = {k: jnp.asarray(v) for k, v in w.items()}
    return jax_value_and_grad_bench(loss_fn(cfg, variant), params, *_args(cfg, d), info={"variant": variant})
