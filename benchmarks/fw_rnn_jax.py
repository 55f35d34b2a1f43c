"""rnn_jax: ``rnn_jax.model`` (cell + readout + loss) over ``rnn_jax.unroll``.

Variants name ``unroll``'s options: ``default`` (its defaults), ``backward=hand|autodiff``
(the reverse pass), ``proj=0|1`` and ``unroll=N`` (``project_inputs`` and ``lax.scan``'s
unroll factor), ``remat`` (``remat=True``).
"""

from __future__ import annotations

from benchmarks.bench import Bench, jax_seeds_bench, jax_value_and_grad_bench
from benchmarks.workloads import SeqConfig

SWEEP = [(p, u) for p in (False, True) for u in (1, 2, 4)]


def variants(cfg: SeqConfig) -> list:
    """``default`` first, then each reverse pass with every (project_inputs, unroll) that
    differs from the default (the hand pass projects Pascanu's inputs ahead always, so
    only ``proj=1`` there)."""
    import jax

    import rnn_jax
    from rnn_jax.unroll import resolve_project_inputs

    cell, backend = _cell(cfg), jax.default_backend()
    backward = rnn_jax.default_backward(cell, backend)
    default = (backward, resolve_project_inputs(cell, backward, backend=backend), 1)
    hand_sweep = SWEEP if cell.reverse_rule is not None else [(True, u) for u in (1, 2, 4)]
    sweep = [("hand", p, u) for p, u in hand_sweep] + [("autodiff", p, u) for p, u in SWEEP]
    return ["default"] + [f"backward={b},proj={int(p)},unroll={u}" for b, p, u in sweep if (b, p, u) != default]


def unroll_kwargs(variant: str) -> dict:
    if variant == "default":
        return {}
    if variant == "remat":
        return {"remat": True}
    kwargs = {}
    for item in variant.split(","):
        key, value = item.split("=")
        if key == "proj":
            kwargs["project_inputs"] = bool(int(value))
        elif key == "unroll":
            kwargs["unroll"] = int(value)
        elif key == "remat":
            kwargs["remat"] = bool(int(value))
        elif key == "backward":
            kwargs["backward"] = value
        else:
            raise ValueError(f"unknown rnn_jax variant option {key!r} in {variant!r}")
    return kwargs


def _cell(cfg: SeqConfig):
    import rnn_jax

    if cfg.cell == "rnn":
        return rnn_jax.elman(cfg.hidden_size, "tanh")
    return rnn_jax.make(cfg.cell, cfg.hidden_size)


def _params(cfg: SeqConfig, cell, w: dict):
    import jax.numpy as jnp

    import rnn_jax

    names = cell.params_type._fields  # (w_ih, w_hh, b[, b_hn])
    return rnn_jax.ModelParams(
        cell.params_type(*[jnp.asarray(w[n]) for n in names]),
        rnn_jax.ReadoutParams(jnp.asarray(w["w_out"]), jnp.asarray(w["b_out"])),
    )


def _loss_fn(cfg: SeqConfig, cell, kwargs: dict):
    import jax.numpy as jnp

    from rnn_jax import model

    if cfg.loss == "xent_last":
        return lambda params, xs, labels: model.loss(cell, params, xs, labels, loss="xent", on="last", **kwargs)

    def loss(params, xs):
        ys = model.predict(cell, params, xs, on="every", **kwargs)
        return jnp.mean(jnp.sum(ys * ys, axis=-1))

    return loss


def _args(cfg: SeqConfig, d: dict) -> tuple:
    import jax.numpy as jnp

    return (jnp.asarray(d["xs"]),) + ((jnp.asarray(d["labels"]),) if cfg.loss == "xent_last" else ())


def build(cfg: SeqConfig, w: dict, d: dict, variant: str) -> Bench:
    from rnn_jax.unroll import resolve_backward, resolve_project_inputs

    cell = _cell(cfg)
    kwargs = unroll_kwargs(variant)
    backward = resolve_backward(cell, kwargs.get("backward"), remat=kwargs.get("remat", False))
    resolved = {
        "backward": backward,
        "project_inputs": resolve_project_inputs(cell, backward, kwargs.get("project_inputs")),
        "unroll": kwargs.get("unroll", 1),
        "remat": kwargs.get("remat", False),
    }
    return jax_value_and_grad_bench(_loss_fn(cfg, cell, kwargs), _params(cfg, cell, w), *_args(cfg, d), info=resolved)


def _engine_value_and_grad(cfg: SeqConfig, cell):
    """The training engine's gradient of W5's loss (rnn_jax.repro.fused: hand-written BPTT whose
    ``vmap`` runs member-batched), as ``(params, xs, labels) -> (loss, grads)``."""
    import jax.numpy as jnp
    from rnn_jax.repro import fused

    fn = fused.engine_loss_and_grads(cell, "xent", "last", False)

    def value_and_grad(params, xs, labels):
        lengths = jnp.full(xs.shape[:1], xs.shape[1], jnp.int32)
        loss, _, grads = fn(params, xs, labels, lengths, jnp.zeros((), xs.dtype))
        return loss, grads

    return value_and_grad


def build_seeds(cfg: SeqConfig, ws: list, ds: list, variant: str) -> Bench:
    """W5 variants: ``vmap`` and ``loop`` step with the engine's gradient (what
    ``rnn_jax.repro.train`` runs); ``vmap-autodiff`` and ``loop-autodiff`` with ``jax.value_and_grad``
    of ``model.loss`` (the engine before its fused path; plain JAX's way)."""
    cell = _cell(cfg)
    base, _, how = variant.partition("-")
    if how not in ("", "autodiff") or cfg.loss != "xent_last":
        raise ValueError(f"unknown W5 variant {variant!r}; expected vmap, loop, vmap-autodiff or loop-autodiff")
    return jax_seeds_bench(
        _loss_fn(cfg, cell, {}),
        cfg.learning_rate,
        [_params(cfg, cell, w) for w in ws],
        [_args(cfg, d) for d in ds],
        base,
        value_and_grad=None if how else _engine_value_and_grad(cfg, cell),
    )
