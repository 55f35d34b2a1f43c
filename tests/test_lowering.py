"""Every public compiled entry point lowers for accelerators, and the per-device defaults
follow the platform a program is LOWERED for, not the host's default backend (issue #18).

No accelerator is needed: ``jax.export`` lowers a program for ``cuda`` and ``tpu`` on this
CPU host. Lowering catches, before any device compiler runs: host-only operations and host
callbacks (export refuses custom calls without a compatibility guarantee, and these programs
must have none), float64 creeping into a float32 program (TPUs have no float64), and defaults
chosen from the wrong platform. Whether the device compilers accept and run the programs is
the device check's job (``python -m benchmarks --profile device``).

The defaults are read from the lowered programs themselves: :func:`rnn_jax.unroll` and
:func:`rnn_jax.linear_recurrence` run their resolved choice inside a named scope
(``unroll[backward=...,project_inputs=...]``, ``linear_recurrence[method=...]``) that the
exported module keeps in its operations' locations, and the tests below also check the
program's structure against the explicit choice's, independently of those names.
"""

from __future__ import annotations

import collections
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import layers, long, model
from rnn_jax.repro import tasks, train

ACCELERATORS = ("cuda", "tpu")
KINDS = ("elman", "pascanu", "lstm", "gru")
F32 = jnp.float32
B, T, I, H, O = 3, 5, 2, 4, 2

# What the README documents ("Running on an accelerator"), written out independently of the
# library's tables: per lowering platform, unroll's reverse pass, its input projection per
# (reverse pass, cell kind), and the length from which linear_recurrence's "auto" goes parallel.
README_BACKWARD = {"cpu": "hand", "cuda": "autodiff", "rocm": "autodiff", "tpu": "autodiff"}
_ALL = lambda value: {kind: value for kind in KINDS}  # noqa: E731
README_PROJECT = {
    "cpu": {"hand": {"elman": False, "pascanu": True, "lstm": False, "gru": False}, "autodiff": _ALL(False)},
    **{p: {"hand": _ALL(True), "autodiff": _ALL(True)} for p in ("cuda", "rocm", "tpu")},
}
README_PARALLEL_FROM = {"cpu": None, "cuda": 64, "rocm": 64, "tpu": 64}

# a location's name: ".../case=NAME/.../unroll[...]/..." (under grad also "jvp(unroll[...])" etc.)
_CASE = re.compile(r'case=([\w-]+)[^"]*?(unroll\[[^\]]*\]|linear_recurrence\[[^\]]*\])')


# ---------------------------------------------------------------- helpers


def exported_text(fn, *args, platforms=ACCELERATORS, jit=True) -> str:
    """The StableHLO text (with locations) of ``fn`` exported for ``platforms``."""
    exported = jax.export.export(jax.jit(fn) if jit else fn, platforms=platforms)(*args)
    assert exported.platforms == tuple(platforms)
    return exported.mlir_module()


def check_lowers(fn, *args, jit=True) -> str:
    """Export for cuda and tpu together, with no custom call in the program (a host callback or
    a kernel of one device only); the text, for :func:`no_float64_arrays` and the scopes."""
    text = exported_text(fn, *args, jit=jit)
    assert "custom_call" not in text, "a custom call (host callback or device-only kernel) in the lowered program"
    return text


class Float64Arrays(AssertionError):
    """A float32 program lowered with float64 arrays in it."""


def no_float64_arrays(*texts) -> None:
    """No float64 array in programs whose inputs are float32. These tests run with 64-bit types
    on, where a Python float such as ``jnp.nan`` is a weakly typed float64 scalar converted at
    once: scalars are allowed; arrays are what would put float64 on a TPU, which has none."""
    arrays = sorted({a for text in texts for a in re.findall(r"tensor<(?:[\d?]+x)+f64>", text)})
    if arrays:
        raise Float64Arrays(f"float64 arrays in a float32 program (TPUs have no float64): {arrays}")


def chosen(text: str) -> dict:
    """``{case: {scope, ...}}``: the resolved-choice scopes lowered under each ``case=NAME`` scope."""
    found = collections.defaultdict(set)
    for case, scope in _CASE.findall(text):
        found[case].add(scope)
    return dict(found)


def unroll_scope(backward, project_inputs) -> str:
    return f"unroll[backward={backward},project_inputs={project_inputs}]"


def f32_params(cell, key=0, input_size=I):
    return jax.tree_util.tree_map(lambda a: (0.5 * a).astype(F32), cell.init(jax.random.key(key), input_size, F32))


def inputs(batch=B, time=T, features=I, seed=1):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, time, features)), F32)


LENGTHS = jnp.array([T, 2, 0], jnp.int32)


def _op_counts(text: str) -> collections.Counter:
    """Operations of a lowered module, without the platform choice's own scaffolding: the
    ``case`` ops that select a branch, their returns, constants and broadcasts (the zeros
    a branch returns in place of the other branches' residuals, dead once one branch is kept);
    calls are left out too (whether a small jitted helper such as ``jnp.where`` is lowered
    as a call or inline depends on what was traced before it)."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#loc"))
    counts = collections.Counter(re.findall(r"\b((?:stablehlo|chlo)\.[a-z_]+)", body))
    for scaffolding in ("stablehlo.case", "stablehlo.return", "stablehlo.constant", "stablehlo.broadcast_in_dim"):
        counts.pop(scaffolding, None)
    return counts


def _canonical_hlo(compiled) -> str:
    """A compiled program's HLO with metadata, source tables and instruction names removed
    (names renumbered in order of appearance): equal texts are the same program."""
    text = re.sub(r", metadata=\{[^}]*\}", "", compiled.as_text())
    lines = [line for line in text.splitlines()
             if not re.match(r"^(\d+ |FileNames|FunctionNames|FileLocations|StackFrames)", line)]
    names: dict = {}
    return re.sub(r"%[\w.-]+", lambda m: names.setdefault(m.group(0), f"%v{len(names)}"), "\n".join(lines))


# ---------------------------------------------------------------- unroll


@pytest.mark.parametrize("kind", KINDS)
def test_unroll_forward_and_gradient_lower_for_every_choice(kind):
    """unroll's outputs and its gradient, for each reverse pass and projection (and their
    defaults), with padded lengths, read forwards and backwards: one program for cuda and
    tpu; each call lowers the choice asked for, or the accelerators' default."""
    cell = rnn_jax.make(kind, H)
    params, xs = f32_params(cell), inputs()
    choices = [(b, p) for b in ("hand", "autodiff", None) for p in (True, False, None)]

    def program(params, xs):
        out = []
        for k, (backward, project) in enumerate(choices):
            run = functools.partial(rnn_jax.unroll, cell, lengths=LENGTHS, reverse=bool(k % 2), backward=backward,
                                    project_inputs=project)
            with jax.named_scope(f"case=fwd-{backward}-{project}"):
                out.append(run(params, xs)[1])
            with jax.named_scope(f"case=grad-{backward}-{project}"):
                out.append(jax.grad(lambda p: jnp.sum(run(p, xs)[1] ** 2))(params))
        return out

    text = check_lowers(program, params, xs)
    found = chosen(text)
    for backward, project in choices:
        how = backward or README_BACKWARD["cuda"]
        proj = True if (how == "hand" and kind == "pascanu") else project  # the hand pass projects Pascanu's ahead
        proj = README_PROJECT["cuda"][how][kind] if proj is None else proj
        for what in ("fwd", "grad"):
            assert found[f"{what}-{backward}-{project}"] == {unroll_scope(how, proj)}, (what, backward, project)
    no_float64_arrays(text)


@pytest.mark.parametrize("platform", ["cpu", "cuda", "rocm", "tpu"])
def test_unroll_defaults_follow_the_lowering_platform(platform):
    """Lowered for each platform from this host (whose default backend is the CPU): the
    reverse pass and the projection are the README's for THAT platform, and only the chosen
    branch is in the program (the others were pruned at lowering)."""
    cells = {kind: rnn_jax.make(kind, H) for kind in KINDS}
    params = {kind: f32_params(cell) for kind, cell in cells.items()}
    xs = inputs()

    def program(params, xs):
        grads = []
        for kind, cell in cells.items():
            for backward in (None, "hand", "autodiff"):
                with jax.named_scope(f"case={kind}-{backward}"):
                    loss = lambda p: jnp.sum(rnn_jax.unroll(cell, p, xs, backward=backward)[1] ** 2)  # noqa: E731
                    grads.append(jax.grad(loss)(params[kind]))
        return grads

    found = chosen(exported_text(program, params, xs, platforms=(platform,)))
    for kind in KINDS:
        for backward in (None, "hand", "autodiff"):
            how = backward or README_BACKWARD[platform]
            assert found[f"{kind}-{backward}"] == {unroll_scope(how, README_PROJECT[platform][how][kind])}, (kind, backward)
    # the public per-backend queries agree with what was lowered
    for kind, cell in cells.items():
        assert rnn_jax.default_backward(cell, platform) == README_BACKWARD[platform]
        how = README_BACKWARD[platform]
        assert rnn_jax.default_project_inputs(cell, platform, how) == README_PROJECT[platform][how][kind]


@pytest.mark.parametrize("kind", ["elman", "lstm"])
def test_default_program_is_the_explicit_choice_of_the_platform(kind):
    """Without reading any scope name: lowered for a platform, the default gradient has the
    operations of that platform's explicit choice and not those of the other reverse pass."""
    cell = rnn_jax.make(kind, H)
    params, xs = f32_params(cell), inputs()

    def grad(backward=None, project_inputs=None):
        return jax.grad(lambda p: jnp.sum(rnn_jax.unroll(cell, p, xs, lengths=LENGTHS, backward=backward,
                                                         project_inputs=project_inputs)[1] ** 2))

    for platform in ("cpu", "cuda"):
        ops = lambda fn: _op_counts(exported_text(fn, params, platforms=(platform,)))  # noqa: E731
        how = README_BACKWARD[platform]
        other = "autodiff" if how == "hand" else "hand"
        default = ops(grad())
        assert default == ops(grad(how, README_PROJECT[platform][how][kind])), platform
        assert default != ops(grad(other, README_PROJECT[platform][other][kind])), platform


@pytest.mark.parametrize("kind", ["pascanu", "lstm"])
def test_default_compiles_to_the_host_choice_alone(kind):
    """On the host (a CPU here), staging every platform's choice costs nothing once compiled:
    the default gradient's compiled program is instruction for instruction the one the
    host's explicit choice compiles to (pruning at lowering, then XLA inlines the one-branch
    conditional). Pascanu takes the generic hand pass, the LSTM its reverse rule."""
    backend = jax.default_backend()
    cell = rnn_jax.make(kind, H)
    params, xs = f32_params(cell), inputs()
    how = rnn_jax.default_backward(cell, backend)
    project = rnn_jax.default_project_inputs(cell, backend, how)

    def compiled(**kwargs):
        loss = lambda p: jnp.sum(rnn_jax.unroll(cell, p, xs, lengths=LENGTHS, **kwargs)[1] ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss)).lower(params).compile()

    default, explicit = compiled(), compiled(backward=how, project_inputs=project)
    assert _canonical_hlo(default) == _canonical_hlo(explicit)
    assert default.memory_analysis().temp_size_in_bytes == explicit.memory_analysis().temp_size_in_bytes
    value, grads = default(params)
    value_e, grads_e = explicit(params)
    assert value == value_e
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_e)))


def test_an_export_for_the_host_runs_and_matches_the_jitted_program():
    """The exported CPU program is usable, not only lowered: called here it gives the
    jitted function's values (the platform-dependent choice resolved to the CPU's)."""
    cell = rnn_jax.lstm(H)
    params, xs = f32_params(cell), inputs()
    fn = jax.value_and_grad(lambda p, xs: jnp.sum(rnn_jax.unroll(cell, p, xs, lengths=LENGTHS)[1] ** 2))
    exported = jax.export.export(jax.jit(fn), platforms=("cpu",))(params, xs)
    value, grads = exported.call(params, xs)
    value_j, grads_j = jax.jit(fn)(params, xs)
    np.testing.assert_allclose(value, value_j, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_j)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_the_hand_pass_differentiates_inside_a_conditional():
    """What staging every platform's choice rests on: the hand pass's custom_vjp traced in a
    branch of lax.cond closes over no tracer of that branch (its reverse pass is traced after
    the branch's trace has ended), so its gradient there is the autodiff gradient."""
    cell = rnn_jax.lstm(H)
    params, xs = f32_params(cell), inputs()
    run = lambda how: (lambda p: jnp.sum(rnn_jax.unroll(cell, p, xs, lengths=LENGTHS, backward=how)[1] ** 2))  # noqa: E731
    grad = jax.jit(jax.grad(lambda p, hand: jax.lax.cond(hand, run("hand"), run("autodiff"), p)))
    reference = jax.grad(run("autodiff"))(params)
    for hand in (True, False):
        for a, b in zip(jax.tree_util.tree_leaves(grad(params, hand)), jax.tree_util.tree_leaves(reference)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_forward_mode_through_the_default_needs_autodiff():
    """Every platform's choice is traced, the hand pass among them: forward-mode autodiff
    through unroll's default fails on every device alike (it did on a CPU before), with
    custom_vjp's message; backward="autodiff" takes it."""
    cell = rnn_jax.gru(H)
    params, xs = f32_params(cell), inputs()
    f = lambda backward: (lambda p: rnn_jax.unroll(cell, p, xs, backward=backward)[1])  # noqa: E731
    tangent = jax.tree_util.tree_map(jnp.ones_like, params)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jit(lambda p, t: jax.jvp(f(None), (p,), (t,)))(params, tangent)
    jax.jit(lambda p, t: jax.jvp(f("autodiff"), (p,), (t,)))(params, tangent)


# ---------------------------------------------------------------- model, long, layers


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_model_loss_and_gradient_lower(kind):
    cell = rnn_jax.make(kind, H)
    params = jax.tree_util.tree_map(lambda a: a.astype(F32), model.init(jax.random.key(0), cell, I, O, dtype=F32))
    xs = inputs()
    mse_targets = jnp.zeros((B, O), F32)
    labels = jnp.asarray(np.random.default_rng(2).integers(0, O, (B, T)), jnp.int32)

    def program(params, xs):
        with jax.named_scope("case=mse-last"):
            mse = jax.value_and_grad(lambda p: model.loss(cell, p, xs, mse_targets, lengths=LENGTHS))(params)
        with jax.named_scope("case=xent-every"):
            xent = jax.value_and_grad(lambda p: model.loss(cell, p, xs, labels, loss="xent", on="every"))(params)
        with jax.named_scope("case=predict"):
            predictions = model.predict(cell, params, xs, on="every")
        return mse, xent, predictions

    text = check_lowers(program, params, xs)
    expected = {unroll_scope("autodiff", README_PROJECT["cuda"]["autodiff"][kind])}
    assert chosen(text) == {"mse-last": expected, "xent-every": expected, "predict": expected}
    no_float64_arrays(text)


def test_long_chunked_loss_and_gradient_lower():
    cell = rnn_jax.lstm(H)
    params = model.init(jax.random.key(0), cell, I, O, dtype=F32)
    xs = inputs(time=12)

    def program(params, xs):
        chunked = jax.value_and_grad(
            lambda p: long.chunked_loss(cell, p.cell, xs, lambda y, t: jnp.sum(y**2, axis=-1), chunk=5,
                                        lengths=jnp.array([12, 7, 0], jnp.int32)))(params)
        every = jax.value_and_grad(lambda p: long.model_loss_every(cell, p, xs, time_major=False))(params)
        return chunked, every

    no_float64_arrays(check_lowers(program, params, xs))


def test_stacked_and_bidirectional_layers_lower():
    net = layers.stacked([layers.bidirectional(rnn_jax.lstm(H), rnn_jax.lstm(H)), rnn_jax.gru(H)])
    params = jax.tree_util.tree_map(lambda a: a.astype(F32), net.init(jax.random.key(0), I, F32))
    xs = inputs()

    def program(params, xs):
        with jax.named_scope("case=apply"):
            _, ys = net.apply(params, xs, lengths=LENGTHS)
        with jax.named_scope("case=grad"):
            grads = jax.grad(lambda p: jnp.sum(net.apply(p, xs, lengths=LENGTHS)[1] ** 2))(params)
        return ys, grads

    text = check_lowers(program, params, xs)
    # three unroll calls per pass (forward, backward direction, the GRU layer): all the accelerators' default
    assert chosen(text) == {"apply": {unroll_scope("autodiff", True)}, "grad": {unroll_scope("autodiff", True)}}
    no_float64_arrays(text)


# ---------------------------------------------------------------- the training engine


def _setup(cell, regularize=False):
    task = tasks.get("temporal_order", min_length=10, max_length=11)
    return train.Setup(cell=cell, task=task, batch_size=2, regularize=regularize, eval_size=4, eval_batch_size=4)


def _members(setup, members=2):
    hp = {"learning_rate": jnp.full(members, 0.01, F32), "clip": jnp.full(members, 1.0, F32)}
    if setup.regularize:
        hp["alpha"] = jnp.full(members, 2.0, F32)
    return hp, train.init_members(setup, range(members), hp)


@pytest.mark.parametrize("cell, regularize", [
    pytest.param(rnn_jax.elman(H, "tanh"), False, id="elman"),
    pytest.param(rnn_jax.elman(H, "tanh"), True, id="elman-omega"),
    pytest.param(rnn_jax.lstm(H), False, id="lstm"),  # the task's loss is model.loss's xent
])
def test_training_step_and_chunk_lower(cell, regularize):
    """The vmapped training step and a compiled chunk of the sweep (train_chunk: a scan of
    vmapped steps, its own jit with static arguments), with and without Pascanu's Ω. Elman
    cells take the engine's fused pass, the LSTM model.loss (with unroll's defaults)."""
    setup = _setup(cell, regularize)
    hp, state = _members(setup)
    member_hp = jax.tree_util.tree_map(lambda a: a.astype(F32), hp)
    step = check_lowers(jax.vmap(functools.partial(train.train_step, setup)), member_hp, state)
    chunk = check_lowers(train.train_chunk, setup, hp, state, 3, jit=False)
    if cell.kind == "lstm":
        expected = {unroll_scope("autodiff", README_PROJECT["cuda"]["autodiff"]["lstm"])}
        assert set(re.findall(r"unroll\[[^\]]*\]", step)) == set(re.findall(r"unroll\[[^\]]*\]", chunk)) == expected
    no_float64_arrays(step, chunk)


# ---------------------------------------------------------------- linear recurrences


@pytest.mark.parametrize("method", rnn_jax.linear.METHODS)
def test_linear_recurrence_lowers_with_each_method(method):
    x = jnp.asarray(np.random.default_rng(3).standard_normal((80, 3)), F32)
    a = jnp.full((3,), 0.9, F32)

    def program(a, x):
        h = rnn_jax.linear_recurrence(a, x, method=method)
        h_rev = rnn_jax.linear_recurrence(a, x, jnp.ones(3, F32), reverse=True, method=method)
        grads = jax.grad(lambda a, x: jnp.sum(rnn_jax.linear_recurrence(a, x, method=method) ** 2), argnums=(0, 1))(a, x)
        return h, h_rev, grads

    text = check_lowers(program, a, x)
    no_float64_arrays(text)
    expected = "parallel" if method == "auto" else method  # T = 80: above the accelerators' threshold
    assert set(re.findall(r"linear_recurrence\[[^\]]*\]", text)) == {f"linear_recurrence[method={expected}]"}


@pytest.mark.parametrize("platform", ["cpu", "cuda", "rocm", "tpu"])
def test_linear_recurrence_auto_follows_the_lowering_platform(platform):
    """"auto" at one step below and at the README's threshold: the method named in the
    program, and its structure (the sequential scan is a while loop, the parallel one has none)."""
    threshold = README_PARALLEL_FROM[platform]
    for time in (63, 64):
        x = jnp.ones((time, 2), F32)
        text = exported_text(lambda a, x: rnn_jax.linear_recurrence(a, x), jnp.full((2,), 0.5, F32), x,
                             platforms=(platform,))
        expected = "parallel" if threshold is not None and time >= threshold else "sequential"
        assert set(re.findall(r"linear_recurrence\[method=(\w+)\]", text)) == {expected}, (platform, time)
        assert ("stablehlo.while" in text) == (expected == "sequential"), (platform, time)
        assert rnn_jax.linear.default_method(time, platform) == expected


def test_the_host_is_not_what_decides():
    """The point of the tests above, on this host: its default backend is the CPU, and yet
    the exports for cuda and tpu carry the accelerators' choices (a CPU host is where the
    old code, resolving from jax.default_backend(), gave an accelerator the CPU's)."""
    if jax.default_backend() != "cpu":
        pytest.skip("shown on a CPU host")
    cell = rnn_jax.elman(H, "tanh")
    params, xs = f32_params(cell), inputs()
    fn = jax.grad(lambda p: jnp.sum(rnn_jax.unroll(cell, p, xs)[1] ** 2))
    for platform in ("cuda", "tpu"):
        text = exported_text(fn, params, platforms=(platform,))
        assert unroll_scope("autodiff", True) in text and "backward=hand" not in text, platform
    assert "backward=hand" in exported_text(fn, params, platforms=("cpu",))
