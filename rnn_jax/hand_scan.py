"""A scan over a cell whose reverse pass is written by hand (``jax.custom_vjp``).

Autodiff of ``lax.scan`` accumulates the recurrent weight's gradient inside the
reverse loop: every step adds ``m_{t}^T @ dhh_t`` (a small matrix product plus an
``(H, G*H)`` addition) to a carried sum. Here the reverse loop does only what must
be sequential -- the cell's elementwise backward (``jax.vjp`` of
:attr:`Cell.combine`) and ``dhh_t @ w_hh^T`` -- and stacks ``dhh_t``; the weight's
gradient is then one large product, ``M^T @ dHH`` over all ``time * batch`` rows.
The input projection is computed for all steps before the loop and differentiated
by autodiff outside this function (again large products).

The Elman cell (:data:`OUTPUT_RESIDUAL_KINDS`) keeps nothing but its outputs, which are
the scan's result anyway: ``h_t = f(z_t)`` is its carry, ``f'(z_t)`` is a function of
``h_t`` (``1 - h_t²`` for tanh), and the matrix ``w_hh`` multiplied at step ``t`` is the
previous step's output. Cells whose ``combine`` reads ``xp`` and ``hh`` only through their
sum (Pascanu, LSTM: :data:`SUMMED_KINDS`) keep ``z = xp + hh`` and the carries and stack
one cotangent; GRU keeps ``xp`` and ``hh`` apart. What is kept matters beyond its size on
a CPU: XLA:CPU allocates a call's temporaries as one block, and glibc returns a block over
32 MiB to the kernel on every call, so each call page-faults it back in
(``benchmarks/RESULTS.md``).

On a CPU this pays for the Elman cells: the paper's workload (50 units, batch 20,
T = 200) runs its gradient about 1.7x faster than autodiff of the same scan, 32-128
units 1.3-1.4x, 256 units 0-15 %. For LSTM and GRU it is 5-25 % slower (the per-step
``jax.vjp`` recomputes the gates, and more is stored), so
:data:`rnn_jax.unroll.HAND_BACKWARD_DEFAULT` keeps autodiff for them
(``benchmarks/RESULTS.md``).
Forward-mode autodiff (``jax.jvp``, ``jax.jacfwd``) is not defined through a
``custom_vjp``: use ``unroll(..., backward="autodiff")`` for it.

Exactness: the reverse pass is the same arithmetic as autodiff's, reordered; the
tests compare it with ``jax.grad`` of the autodiff scan and with the hand BPTT of
:mod:`rnn_jax.bptt` (padded lengths, reversed sequences, initial carries, vmap).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from rnn_jax import activations
from rnn_jax._padding import hold_padded, valid_at
from rnn_jax.cells import Cell

_NOT_IN_COMBINE = ("w_ih", "w_hh", "b")
# Cell kinds whose ``combine`` reads ``xp`` and ``hh`` only through ``xp + hh`` (not GRU,
# whose reset gate multiplies the recurrent part of the candidate alone; Elman has its own path).
SUMMED_KINDS = frozenset({"pascanu", "lstm"})
# Cell kinds whose reverse pass needs only the outputs: the carry is the output ``f(xp + hh)``
# and ``recurrent_input`` is the carry itself.
OUTPUT_RESIDUAL_KINDS = frozenset({"elman"})


def _add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


def _small(params):
    """The parameters :attr:`Cell.combine` may read (``b_hn``); the rest become ``None``."""
    return params._replace(**{name: None for name in _NOT_IN_COMBINE if name in params._fields})


def hand_scan(
    cell: Cell,
    params: Any,
    xp: jax.Array,
    carry0: Any,
    lengths: Optional[jax.Array],
    *,
    reverse: bool = False,
    unroll: int = 1,
):
    """``(final_carry, ys)`` of ``cell`` over time-major projected inputs.

    Args:
      cell: a cell with ``recurrent_input`` and ``combine`` (every built-in cell).
      params: its parameters (``w_ih`` and ``b`` are not read: ``xp`` holds them).
      xp: ``(time, *batch, G*H)``, ``x_t @ w_ih + b`` for every step, computed from
        inputs already zeroed at padded steps.
      carry0: the initial carry, leaves ``(*batch, H)``.
      lengths: ``(*batch,)`` int32 valid lengths or None; at ``t >= length`` the carry
        is kept and the output is zero, as in :func:`rnn_jax.unroll.unroll`.
      reverse, unroll: as in ``lax.scan``.

    Validation is the caller's (:func:`rnn_jax.unroll.unroll` checks everything at
    trace time before it comes here).
    """
    if cell.combine is None or cell.recurrent_input is None:
        raise ValueError(f"{cell.kind} cell: the hand-written reverse pass needs Cell.combine and Cell.recurrent_input")
    if cell.kind in OUTPUT_RESIDUAL_KINDS:
        return _outputs_only_scan(cell, params, xp, carry0, lengths, reverse, unroll)
    steps = jnp.arange(xp.shape[0], dtype=jnp.int32)

    def step(small, carry, x, hh, t, lengths):
        new, y = cell.combine(small, carry, x, hh)
        return (new, y) if lengths is None else hold_padded(valid_at(t, lengths), new, carry, y)

    # Cells whose combine reads xp and hh only through their sum store z = xp + hh (one
    # (T, *batch, G*H) residual instead of two) and stack one cotangent, d_z = d_xp = d_hh.
    summed = cell.kind in SUMMED_KINDS

    def forward(params, xp, carry0, lengths):
        small, w_hh = _small(params), params.w_hh

        def body(carry, inp):
            x, t = inp
            hh = cell.recurrent_input(carry) @ w_hh
            if summed:
                z = x + hh
                new, y = step(small, carry, z, jnp.zeros((), z.dtype), t, lengths)
                return new, (y, carry, z)
            new, y = step(small, carry, x, hh, t, lengths)
            return new, (y, carry, hh)

        return jax.lax.scan(body, carry0, (xp, steps), reverse=reverse, unroll=unroll)

    @jax.custom_vjp
    def run(params, xp, carry0, lengths):
        final, (ys, _, _) = forward(params, xp, carry0, lengths)
        return final, ys

    def run_fwd(params, xp, carry0, lengths):
        final, (ys, carries, pre) = forward(params, xp, carry0, lengths)
        # summed: pre is z and xp is not kept; else pre is hh, next to xp
        return (final, ys), (params, None if summed else xp, carries, pre, lengths)

    def run_bwd(saved, cotangents):
        params, xp, carries, pre, lengths = saved
        d_final, d_ys = cotangents
        small, w_hh = _small(params), params.w_hh
        w_hh_t = w_hh.T

        def back_through_product(d_prev, carry, d_hh):
            _, input_vjp = jax.vjp(cell.recurrent_input, carry)
            (d_prev_m,) = input_vjp(d_hh @ w_hh_t)
            return _add(d_prev, d_prev_m)

        def body_summed(acc, inp):
            d_carry, d_small = acc
            carry, z, d_y, t = inp
            zero = jnp.zeros((), z.dtype)
            _, step_vjp = jax.vjp(lambda s, c, zz: step(s, c, zz, zero, t, lengths), small, carry, z)
            ds, d_prev, d_z = step_vjp((d_carry, d_y))
            return (back_through_product(d_prev, carry, d_z), _add(d_small, ds)), d_z

        def body(acc, inp):
            d_carry, d_small = acc
            x, carry, hh, d_y, t = inp
            _, step_vjp = jax.vjp(lambda s, c, xx, h2: step(s, c, xx, h2, t, lengths), small, carry, x, hh)
            ds, d_prev, d_x, d_hh = step_vjp((d_carry, d_y))
            return (back_through_product(d_prev, carry, d_hh), _add(d_small, ds)), (d_x, d_hh)

        zero_small = jax.tree_util.tree_map(jnp.zeros_like, small)
        if summed:
            (d_carry0, d_small), d_hhs = jax.lax.scan(
                body_summed, (d_final, zero_small), (carries, pre, d_ys, steps), reverse=not reverse, unroll=unroll
            )
            d_xp = d_hhs
        else:
            (d_carry0, d_small), (d_xp, d_hhs) = jax.lax.scan(
                body, (d_final, zero_small), (xp, carries, pre, d_ys, steps), reverse=not reverse, unroll=unroll
            )
        # the recurrent weight's gradient: one product over all (time, batch) rows
        ms = cell.recurrent_input(carries)
        d_w_hh = ms.reshape(-1, ms.shape[-1]).T @ d_hhs.reshape(-1, d_hhs.shape[-1])
        d_params = params._replace(
            **{name: jnp.zeros_like(getattr(params, name)) for name in ("w_ih", "b")},
            w_hh=d_w_hh.astype(w_hh.dtype),
            **{name: getattr(d_small, name) for name in params._fields if name not in _NOT_IN_COMBINE},
        )
        return d_params, d_xp, d_carry0, None

    run.defvjp(run_fwd, run_bwd)
    return run(params, xp, carry0, lengths)


def _outputs_only_scan(cell: Cell, params: Any, xp: jax.Array, carry0: Any, lengths, reverse: bool, unroll: int):
    """:func:`hand_scan` for the Elman cell, keeping only the outputs ``h_t``.

    Reverse step ``t``: ``δz_t = (δh_t + dy_t) ⊙ f'(z_t)`` with ``f'(z_t)`` from ``h_t``,
    ``δh_prev = δz_t @ w_hhᵀ``; at padded steps ``δz_t = 0`` and ``δh`` passes through (the
    carry was held, the output a constant 0). ``dW_hh = Σ_t h_prev(t)ᵀ δz_t``, one product,
    where ``h_prev(t)`` is the output of the step before ``t`` in scan order, or the initial
    carry for the first valid step (in a reversed scan the padded steps come first and hold
    the initial carry). Padded outputs are 0 and padded ``δz`` too, so the pairs across
    the padding boundary add nothing.
    """
    derivative = activations.get(cell.activation).derivative_from_output
    steps = jnp.arange(xp.shape[0], dtype=jnp.int32)

    def forward(params, xp, carry0, lengths):
        w_hh = params.w_hh

        def body(carry, inp):
            x, t = inp
            new, y = cell.combine(params, carry, x, cell.recurrent_input(carry) @ w_hh)
            if lengths is not None:
                new, y = hold_padded(valid_at(t, lengths), new, carry, y)
            return new, y

        return jax.lax.scan(body, carry0, (xp, steps), reverse=reverse, unroll=unroll)

    @jax.custom_vjp
    def run(params, xp, carry0, lengths):
        return forward(params, xp, carry0, lengths)

    def run_fwd(params, xp, carry0, lengths):
        final, ys = forward(params, xp, carry0, lengths)
        return (final, ys), (params, ys, carry0, lengths)

    def run_bwd(saved, cotangents):
        params, ys, carry0, lengths = saved
        d_final, d_ys = cotangents
        w_hh_t = params.w_hh.T

        def body(d_h, inp):
            y, d_y, t = inp
            d_z = (d_h + d_y) * derivative(y)
            if lengths is None:
                return d_z @ w_hh_t, d_z
            valid = valid_at(t, lengths)
            d_z = jnp.where(valid, d_z, jnp.zeros_like(d_z))
            return jnp.where(valid, d_z @ w_hh_t, d_h), d_z

        d_h0, d_zs = jax.lax.scan(body, d_final.hidden, (ys, d_ys, steps), reverse=not reverse, unroll=unroll)
        # dW_hh = Σ_t h_prev(t)ᵀ δz_t = Σ_s h_sᵀ δz_next(s) + m0ᵀ δz_first: the outputs as they
        # are against δz shifted by one step (made after the loop from its result, where a
        # shifted copy of the outputs would be made, and kept alive, as soon as they exist),
        # plus the initial carry's matrix against the first valid step's δz.
        zero = jnp.zeros_like(d_zs[:1])
        if reverse:
            shifted = jnp.concatenate([zero, d_zs[:-1]], axis=0)
            if lengths is None:
                d_first = d_zs[-1]
            else:
                last = jnp.maximum(lengths - 1, 0).reshape((1,) + lengths.shape + (1,))
                d_first = jnp.take_along_axis(d_zs, last, axis=0)[0]
        else:
            shifted, d_first = jnp.concatenate([d_zs[1:], zero], axis=0), d_zs[0]
        m0 = cell.recurrent_input(carry0)
        d_w_hh = ys.reshape(-1, ys.shape[-1]).T @ shifted.reshape(-1, shifted.shape[-1])
        d_w_hh = d_w_hh + m0.reshape(-1, m0.shape[-1]).T @ d_first.reshape(-1, d_first.shape[-1])
        d_params = params._replace(
            w_ih=jnp.zeros_like(params.w_ih), b=jnp.zeros_like(params.b), w_hh=d_w_hh.astype(params.w_hh.dtype)
        )
        return d_params, d_zs, cell.carry_type(d_h0), None

    run.defvjp(run_fwd, run_bwd)
    return run(params, xp, carry0, lengths)
