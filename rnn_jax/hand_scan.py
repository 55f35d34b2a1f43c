"""A scan over a cell whose reverse pass is written by hand (``jax.custom_vjp``).

Autodiff of ``lax.scan`` accumulates the recurrent weight's gradient inside the
reverse loop: every step adds ``m_{t}^T @ dhh_t`` (a small matrix product plus an
``(H, G*H)`` addition) to a carried sum. Here the reverse loop does only what must
be sequential -- the cell's elementwise backward (``jax.vjp`` of
:attr:`Cell.combine`) and ``dhh_t @ w_hh^T`` -- and stacks ``dhh_t``; the weight's
gradient is then one large product, ``M^T @ dHH`` over all ``time * batch`` rows.
An input projection made for all steps before the loop is differentiated by autodiff
outside the ``custom_vjp`` (again large products).

Cells with a :class:`~rnn_jax.cells.ReverseRule` (Elman, LSTM, GRU) keep only their
outputs and what the rule saves (nothing for Elman, whose ``f'(z_t)`` is a function of
``h_t``; the gates and the previous state for the LSTM and the GRU), may project their
inputs inside the step, and write each step's cotangents over that step's saved gates, so
the reverse pass adds no ``(T, B, G*H)`` stack of its own. The loop carries the next step's
saved values, sliced whole, because XLA:CPU neither vectorises column-block reads of a
dynamic slice nor updates a stack in place when a read precedes the update. Pascanu's cell
(no rule) differentiates :attr:`Cell.combine` with ``jax.vjp`` at every reverse step. It is
the CPU default (:data:`rnn_jax.unroll.HAND_BACKWARD_DEFAULT`); the measurements behind
these choices are in ``benchmarks/RESULTS.md`` ("Measurements behind the defaults").
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

from rnn_jax._padding import hold_padded, valid_at, valid_steps
from rnn_jax.cells import Cell

_NOT_IN_COMBINE = ("w_ih", "w_hh", "b")
# The smallest stack a reverse step's cotangent block is written over (else it is stacked
# anew): below a core's L2 cache the copy costs more than the memory saved (RESULTS.md).
IN_PLACE_MIN_BYTES = 2 * 2**20


def _step_indices(stack):
    """``0 .. T-1`` (int32) for a time-major stack. Made inside each function of a
    ``custom_vjp`` rather than closed over: a reverse pass traced after the trace that made
    such an array has ended (under ``lax.cond`` or ``lax.platform_dependent``) would
    otherwise hold a leaked tracer."""
    return jnp.arange(stack.shape[0], dtype=jnp.int32)


def _add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)


def _small(params):
    """The parameters :attr:`Cell.combine` may read (``b_hn``); the rest become ``None``."""
    return params._replace(**{name: None for name in _NOT_IN_COMBINE if name in params._fields})


def hand_scan(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    carry0: Any,
    lengths: Optional[jax.Array],
    *,
    reverse: bool = False,
    unroll: int = 1,
    project_inputs: bool = True,
):
    """``(final_carry, ys)`` of ``cell`` over time-major inputs.

    Args:
      cell: a cell with ``recurrent_input`` and ``combine`` (every built-in cell).
      params: its parameters.
      xs: ``(time, *batch, features)``, zeroed at padded steps.
      carry0: the initial carry, leaves ``(*batch, H)``.
      lengths: ``(*batch,)`` int32 valid lengths or None; at ``t >= length`` the carry
        is kept and the output is zero, as in :func:`rnn_jax.unroll.unroll`.
      reverse, unroll: as in ``lax.scan``.
      project_inputs: compute ``x_t @ w_ih + b`` for all steps before the loop (True) or
        inside each step (False; cells with a :class:`~rnn_jax.cells.ReverseRule` only,
        the others always project ahead). Inside, the ``(time, *batch, G*H)`` projection
        is never stored, and ``w_ih``'s gradient is still one product after the loop.

    Validation is the caller's (:func:`rnn_jax.unroll.unroll` checks everything at
    trace time before it comes here).
    """
    if cell.combine is None or cell.recurrent_input is None:
        raise ValueError(f"{cell.kind} cell: the hand-written reverse pass needs Cell.combine and Cell.recurrent_input")
    if cell.reverse_rule is not None:
        if project_inputs:
            return _rule_scan(cell, params, cell.project(params, xs), carry0, lengths, reverse, unroll, False)
        return _rule_scan(cell, params, xs, carry0, lengths, reverse, unroll, True)
    xp = cell.project(params, xs)

    def step(small, carry, x, hh, t, lengths):
        new, y = cell.combine(small, carry, x, hh)
        return (new, y) if lengths is None else hold_padded(valid_at(t, lengths), new, carry, y)

    # Cells whose combine reads xp and hh only through their sum store z = xp + hh (one
    # (T, *batch, G*H) residual instead of two) and stack one cotangent, d_z = d_xp = d_hh.
    summed = cell.traits.summed

    def forward(params, xp, carry0, lengths):
        small, w_hh = _small(params), params.w_hh
        steps = _step_indices(xp)

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
        steps = _step_indices(d_ys)

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


def _rule_scan(cell: Cell, params: Any, inputs: jax.Array, carry0: Any, lengths, reverse: bool, unroll: int,
               project_inside: bool):
    """:func:`hand_scan` for a cell with a :class:`~rnn_jax.cells.ReverseRule` (Elman, LSTM,
    GRU): keeps the outputs ``h_t`` and the rule's ``saved`` values.

    Reverse step ``t``: the rule's ``backward`` gives ``δz_t`` and the previous carry's
    cotangent; at padded steps ``δz_t = 0`` and the carry's cotangent passes through (the
    carry was held, the output a constant 0). The weights' gradients are products over all
    ``(time, batch)`` rows after the loop (:func:`_recurrent_weight_grad`).

    ``inputs`` are the projected ``xp`` or, with ``project_inside``, the raw inputs, which
    each step projects; ``w_ih`` and ``b`` then get their gradients here, from ``δz``.
    """
    rule = cell.reverse_rule

    def forward(params, inputs, carry0, lengths):
        w_hh = params.w_hh
        steps = _step_indices(inputs)

        def body(carry, inp):
            x, t = inp
            xp = cell.project(params, x) if project_inside else x
            new, y, saved = rule.forward(params, carry, xp, cell.recurrent_input(carry) @ w_hh)
            if lengths is not None:
                new, y = hold_padded(valid_at(t, lengths), new, carry, y)
            return new, (y, saved)

        return jax.lax.scan(body, carry0, (inputs, steps), reverse=reverse, unroll=unroll)

    @jax.custom_vjp
    def run(params, inputs, carry0, lengths):
        final, (ys, _) = forward(params, inputs, carry0, lengths)
        return final, ys

    def run_fwd(params, inputs, carry0, lengths):
        final, (ys, saved) = forward(params, inputs, carry0, lengths)
        return (final, ys), (params, inputs if project_inside else None, ys, saved, carry0, lengths)

    def run_bwd(residuals, cotangents):
        params, xs, ys, saved, carry0, lengths = residuals
        d_final, d_ys = cotangents
        w_hh_t = params.w_hh.T
        steps = _step_indices(d_ys)

        def reverse_step(d_carry, saved_t, y, d_y, t):
            d_prev, d_blocks = rule.backward(saved_t, y, d_carry, d_y, lambda d: d @ w_hh_t)
            # padded step: the held carry's cotangent passes through, the step's own is 0
            return (d_prev, d_blocks) if lengths is None else hold_padded(valid_at(t, lengths), d_prev, d_carry, d_blocks)

        # Block k of the cotangents is written over a stack whose step t is dead once step t
        # has run: saved[k] where it fits, else the outputs' cotangents (Elman's δz), else it
        # is stacked anew. The loop carries the written stacks' values for the step it is
        # about to take, sliced whole from the stacks it has just written: every read of a
        # stack then follows its writes, and XLA updates it in place instead of copying it.
        stacks = tuple(saved) + (d_ys,)  # index len(saved): the outputs' cotangents
        shapes = jax.eval_shape(reverse_step, d_final, tuple(s[0] for s in saved), ys[0], d_ys[0], steps[0])[1]
        target = _overwrite_targets(shapes, stacks, unroll)  # block -> stack
        written = sorted(target.values())
        read = [j for j in range(len(stacks)) if j not in written]
        n_steps = ys.shape[0]
        first, step_by = (0, 1) if reverse else (n_steps - 1, -1)  # the reverse pass's order

        def body(carry, inp):
            d_carry, written_stacks, written_values = carry
            y, read_t, t = inp
            values = _interleave(len(stacks), dict(zip(written, written_values)), read_t)
            d_prev, d_blocks = reverse_step(d_carry, values[:-1], y, values[-1], t)
            by_stack = dict(zip(written, written_stacks))
            for k, j in target.items():
                by_stack[j] = jax.lax.dynamic_update_index_in_dim(by_stack[j], d_blocks[k], t, 0)
            written_stacks = tuple(by_stack[j] for j in written)
            t_next = jnp.clip(t + step_by, 0, n_steps - 1)
            written_values = tuple(jax.lax.dynamic_index_in_dim(a, t_next, keepdims=False) for a in written_stacks)
            return (d_prev, written_stacks, written_values), tuple(b for k, b in enumerate(d_blocks) if k not in target)

        written_stacks = tuple(stacks[j] for j in written)
        (d_carry0, written_stacks, _), rest = jax.lax.scan(
            body,
            (d_final, written_stacks, tuple(a[first] for a in written_stacks)),
            (ys, tuple(stacks[j] for j in read), steps),
            reverse=not reverse, unroll=unroll,
        )
        by_stack = dict(zip(written, written_stacks))
        d_blocks = _interleave(len(shapes), {k: by_stack[j] for k, j in target.items()}, rest)
        d_xps = [d_blocks[k] for k in rule.xp_blocks]
        d_hhs = [d_blocks[k] for k in (rule.xp_blocks if rule.hh_blocks is None else rule.hh_blocks)]
        d_w_hh = _recurrent_weight_grad(cell, ys, d_hhs, carry0, lengths, reverse)
        extra = {} if rule.extra_grads is None else rule.extra_grads(d_blocks)
        if project_inside:
            # per block (gate): products over all (time, batch) rows, joined along the columns
            flat_x = _flat(xs)
            w_ih_blocks = jnp.split(params.w_ih, len(d_xps), axis=-1)
            d_w_ih = _columns([flat_x.T @ _flat(d) for d in d_xps])
            d_b = _columns([_flat(d).sum(axis=0) for d in d_xps])
            d_inputs = sum(d @ w.T for d, w in zip(d_xps, w_ih_blocks))
        else:
            d_w_ih, d_b, d_inputs = jnp.zeros_like(params.w_ih), jnp.zeros_like(params.b), _columns(d_xps)
        d_params = params._replace(
            w_ih=d_w_ih.astype(params.w_ih.dtype), b=d_b.astype(params.b.dtype), w_hh=d_w_hh.astype(params.w_hh.dtype),
            **{name: g.astype(getattr(params, name).dtype) for name, g in extra.items()},
        )
        return d_params, d_inputs, d_carry0, None

    run.defvjp(run_fwd, run_bwd)
    return run(params, inputs, carry0, lengths)


def _overwrite_targets(shapes, stacks, unroll: int) -> dict:
    """``{block k: stack j}``: the stack each cotangent block is written over, where it
    fits. ``stacks`` are the rule's saved values, then the outputs' cotangents; block k
    takes ``saved[k]``, else the outputs' cotangents if still free, else none (stacked
    anew). A stack fits with the block's shape and dtype, at least
    :data:`IN_PLACE_MIN_BYTES`, and only when the scan is not unrolled: unrolled steps read
    the slices sliced for them directly, and XLA copies the written stack every iteration
    (W3 with ``unroll=2``: 152 -> 280 ms)."""

    def fits(j, block):
        stack = stacks[j]
        return (unroll == 1 and stack.shape[1:] == block.shape and stack.dtype == block.dtype
                and stack.nbytes >= IN_PLACE_MIN_BYTES)

    n_saved, target = len(stacks) - 1, {}
    for k, block in enumerate(shapes):
        if k < n_saved and fits(k, block):
            target[k] = k
        elif n_saved not in target.values() and fits(n_saved, block):
            target[k] = n_saved
    return target


def _interleave(n: int, chosen: dict, rest) -> tuple:
    """``n`` items: ``chosen[i]`` where given, else the next of ``rest``, in order."""
    rest = iter(rest)
    return tuple(chosen[i] if i in chosen else next(rest) for i in range(n))


def _flat(a):
    """``(time, *batch, n)`` -> ``(time * batch, n)``, the rows of a product over all steps."""
    return a.reshape(-1, a.shape[-1])


def _columns(blocks):
    """Blocks joined along their last axis (one block: itself)."""
    return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=-1)


def _recurrent_weight_grad(cell: Cell, ys, d_blocks, carry0, lengths, reverse: bool):
    """``dW_hh = Σ_t h_prev(t)ᵀ δz_t`` over all ``(time, batch)`` rows, one product per
    block of ``δz`` (``d_blocks``, one per gate), joined along the columns.

    ``h_prev(t)``, what step ``t`` multiplied by ``w_hh``, is the output of the step before
    it in scan order, or the initial carry's for the first valid step (in a reversed scan
    the padded steps come first and hold the initial carry). One of the two stacks is
    shifted by one step: ``δz`` when it is one block no wider than the outputs (its shifted
    copy is made from the loop's result, after the loop, whereas XLA makes a shifted copy of
    the outputs as soon as they exist and keeps it alive through the loop), else the
    outputs, once for all blocks. Padded outputs and padded ``δz`` are 0, so pairs across
    the padding boundary add nothing.
    """
    m0 = cell.recurrent_input(carry0)
    if len(d_blocks) == 1 and d_blocks[0].shape[-1] <= ys.shape[-1]:
        d_zs = d_blocks[0]
        # Σ_s h_sᵀ δz_next(s) + m0ᵀ δz_first
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
        return _flat(ys).T @ _flat(shifted) + _flat(m0).T @ _flat(d_first)
    # Σ_t h_prev(t)ᵀ δz_t, the outputs shifted; where the previous step was padded, carry0's
    steps = jnp.arange(ys.shape[0], dtype=jnp.int32)
    if reverse:
        prev, ms = steps + 1, jnp.concatenate([ys[1:], m0[None]], axis=0)
    else:
        prev, ms = steps - 1, jnp.concatenate([m0[None], ys[:-1]], axis=0)
    if lengths is not None:
        ms = jnp.where(valid_steps(prev, lengths), ms, m0)
    return _columns([_flat(ms).T @ _flat(d) for d in d_blocks])
