"""Linear recurrences ``h_t = a * h_{t-1} + x_t`` (identity activation, diagonal ``a``).

Sequential ``lax.scan`` against ``lax.associative_scan`` (parallel prefix, depth
O(log T)) over the pairs ``(a, x)`` with ``(a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)``.
Each is timed forward only and forward plus backward (loss ``sum(h**2)``,
gradients for ``a`` and ``x``), and the two are checked to agree to 1e-5
relative (largest difference over the largest value) in float32, on ``h`` and
on the gradient for ``x`` (itself a reversed linear recurrence). The gradient
for ``a`` is a sum over all T steps whose rounding depends on the summation
order; its relative difference is reported, not checked. For the scalar
case rnn_jax's ``unroll`` of an identity Elman cell with H = 1 (``w_hh = a``,
``w_ih = 1``, ``b = 0``) is timed as well. The library function
``rnn_jax.linear_recurrence(a, x, method="auto")`` is timed at every width, next to
the two hand-written scans, with the method it picked on this backend recorded
(``config["auto_method"]``): the check of its per-backend table.
"""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-5


def _data(time: int, width: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 0.999, (width,)).astype(np.float32)
    x = rng.standard_normal((time, width)).astype(np.float32)
    return a, x


def sequential(a, x):
    import jax

    def body(h, x_t):
        h = a * h + x_t
        return h, h

    return jax.lax.scan(body, jax.numpy.zeros_like(x[0]), x)[1]


def parallel(a, x):
    import jax
    import jax.numpy as jnp

    def combine(left, right):
        a_l, b_l = left
        a_r, b_r = right
        return a_l * a_r, a_r * b_l + b_r

    return jax.lax.associative_scan(combine, (jnp.broadcast_to(a, x.shape), x), axis=0)[1]


def rnn_jax_scalar(a, x):
    """rnn_jax's identity Elman cell, H = 1: ``h_t = h_{t-1} w_hh + x_t w_ih + b``."""
    import jax.numpy as jnp

    import rnn_jax

    cell = rnn_jax.elman(1, "identity")
    params = rnn_jax.ElmanParams(jnp.ones((1, 1), x.dtype), jnp.reshape(a, (1, 1)), jnp.zeros((1,), x.dtype))
    return rnn_jax.unroll(cell, params, x)[1]


def rnn_jax_auto(a, x):
    """rnn_jax's linear_recurrence with ``method="auto"``: one of the two scans above, chosen per backend."""
    from rnn_jax.linear import linear_recurrence

    return linear_recurrence(a, x, method="auto")


METHODS = {
    "scan": sequential,
    "associative_scan": parallel,
    "rnn_jax.unroll": rnn_jax_scalar,
    "rnn_jax.linear_recurrence": rnn_jax_auto,
}


def _rel_err(ref, other) -> float:
    ref, other = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    return float(np.max(np.abs(ref - other)) / max(np.max(np.abs(ref)), 1e-30))


def run(times, widths, measure, frameworks=("jax", "rnn_jax")) -> list:
    """Every (T, width, method, pass) as a record; ``measure(step, sync)`` times one."""
    import jax
    import jax.numpy as jnp

    from rnn_jax.linear import default_method

    records = []
    for width in widths:
        for time in times:
            a_np, x_np = _data(time, width)
            a, x = jnp.asarray(a_np), jnp.asarray(x_np)
            reference = {}
            for method, fn in METHODS.items():
                framework = "rnn_jax" if method.startswith("rnn_jax.") else "jax"
                if framework not in frameworks or (method == "rnn_jax.unroll" and width != 1):
                    continue
                forward = jax.jit(fn)
                loss = lambda a, x, fn=fn: jnp.sum(fn(a, x) ** 2)
                backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
                auto = default_method(time) if method == "rnn_jax.linear_recurrence" else None
                h = forward(a, x)
                grads = backward(a, x)
                if method == "scan":
                    reference = {"h": h, "grads": grads}
                rel_h = _rel_err(reference["h"], h) if reference else None
                rel_gx = _rel_err(reference["grads"][1], grads[1]) if reference else None
                rel_ga = _rel_err(reference["grads"][0], grads[0]) if reference else None
                for pass_, fn_jit in (("forward", forward), ("forward+backward", backward)):
                    rec = {
                        "workload": "LIN",
                        "framework": framework,
                        "variant": f"{method} {pass_}" if auto is None else f"{method} (auto: {auto}) {pass_}",
                        "status": "ok",
                        "config": {"time": time, "width": width, "method": method, "pass": pass_},
                        "rel_err_h": rel_h,
                        "rel_err_grad_x": rel_gx,
                        "rel_err_grad_a": rel_ga,
                        "agrees": None if rel_h is None else bool(rel_h <= TOLERANCE and rel_gx <= TOLERANCE),
                        "loss": float(jnp.sum(h * h)),
                    }
                    if auto is not None:
                        rec["config"]["auto_method"] = auto
                    rec.update(measure(lambda f=fn_jit: f(a, x), jax.block_until_ready))
                    rec["ns_per_step"] = rec["median_s"] / time * 1e9
                    records.append(rec)
    return records
