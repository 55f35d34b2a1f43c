"""Hostile inputs against every public entry point: each is refused with a clear message, or
handled as documented -- never a silent wrong result nor an internal error.

Two tables (tests/test_validation.py has 35 more cases of the same kind, not repeated here):

* ``RAISES``: (case, thunk, exception type, regex its message must match). The library's own
  checks raise :class:`rnn_jax._checks.UserError` subclasses (``UserValueError``,
  ``UserTypeError``: also ``ValueError`` / ``TypeError``), which the table asks for by
  name, so an internal ``AttributeError``, a JAX broadcasting or lowering error or an XLA
  runtime error fails the case. Thunks run under ``jax.jit`` where the call is traceable
  (:func:`jitted`), to show the error comes at trace time.
* ``BEHAVES``: (case, thunk) where the thunk asserts the documented behaviour: what cannot
  be checked when traced (labels, lengths, per-member hyperparameters), and neighbours
  accepting the same inputs the same way.

Issue #19, defect 3: ``xent`` labels outside ``[0, C)`` -- the first block of each table.
"""

from __future__ import annotations

import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax import bptt, diagnostics, layers, long, losses, model, optim
from rnn_jax.repro import regularizer, tasks
from rnn_jax._checks import UserError, UserTypeError, UserValueError
from rnn_jax.interop import flax as rflax
from rnn_jax.interop import torch as rtorch
from rnn_jax.linear import linear_recurrence

H, I, O, B, T = 4, 3, 5, 2, 5
F32 = jnp.float32
ELMAN = rnn_jax.elman(H)
LSTM = rnn_jax.lstm(H)
PE = ELMAN.init(jax.random.key(0), I)
MP = model.init(jax.random.key(0), ELMAN, I, O)  # float32 elman, readout to O classes
XS = jnp.linspace(-1.0, 1.0, B * T * I, dtype=F32).reshape(B, T, I)
Y_MSE = jnp.zeros((B, O), F32)
LABELS = jnp.array([0, 3])
EVERY = jnp.zeros((B, T), jnp.int32)
# made outside jit: constants of the trace (made inside a jitted function they would be traced)
BAD_4, BAD_5, MINUS_1 = jnp.array([0, 7]), jnp.array([5, 0]), EVERY - 1
TORDER = tasks.get("temporal_order", min_length=10, max_length=12)
ADDING = tasks.get("adding", min_length=10, max_length=12)


def ones(*shape, dtype=F32):
    return jnp.ones(shape, dtype)


def jitted(f, *args):
    """Call ``f(*args)`` under ``jax.jit``: only a trace-time error can surface before compiling."""
    return lambda: jax.jit(f)(*args)


def xent(labels, **kw):
    """model.loss with cross-entropy, xs traced and ``labels`` a trace-time constant."""
    return jitted(lambda x: model.loss(ELMAN, MP, x, labels, loss="xent", **kw), XS)


def run_experiment(name, **kw):
    import importlib

    module = importlib.import_module(f"rnn_jax.repro.experiments.{name}")
    return lambda: module.run(tempfile.mkdtemp(prefix="rnn_jax_hostile_"), progress=False, **kw)


LABEL_RANGE = r"class labels must lie in \[0, 5\)"

RAISES = [
    # -- issue #19 defect 3: labels outside [0, C), at trace time wherever the labels are concrete
    ("model.loss: label = C", xent(jnp.array([0, 5])), UserValueError, LABEL_RANGE + r".*got 5 at 1 valid"),
    ("model.loss: label -1", xent(jnp.array([-1, 0])), UserValueError, LABEL_RANGE + r".*got -1"),
    ("model.loss on every: bad label at a valid step", xent(EVERY.at[1, 4].set(9), on="every", lengths=np.array([3, 5])),
     UserValueError, LABEL_RANGE + r".*got 9"),
    ("losses.softmax_cross_entropy: label 7",
     jitted(lambda z: losses.softmax_cross_entropy(z, BAD_4), ones(2, 4)), UserValueError,
     r"labels: class labels must lie in \[0, 4\).*got 7"),
    ("losses.softmax_cross_entropy: bad label where the mask is 1",
     lambda: losses.softmax_cross_entropy(ones(2, 4), jnp.array([0, 4]), jnp.array([1.0, 1.0])), UserValueError, r"got 4"),
    ("long.model_loss_every: label -1", jitted(lambda x: long.model_loss_every(ELMAN, MP, x, MINUS_1, loss="xent"), XS),
     UserValueError, LABEL_RANGE + r".*got -1 at 10 valid"),
    ("diagnostics.state_gradients: label = C",
     jitted(lambda x: diagnostics.state_gradients(ELMAN, MP, x, BAD_5, loss="xent").loss, XS),
     UserValueError, LABEL_RANGE),
    ("regularizer.omega: label = C", jitted(lambda x: regularizer.omega(ELMAN, MP, x, BAD_5, loss="xent")[0], XS),
     UserValueError, LABEL_RANGE),
    ("bptt: label -1 (the reference, same message)", lambda: bptt.bptt(ELMAN, MP, XS, jnp.array([-1, 0]), loss="xent"),
     UserValueError, LABEL_RANGE + r".*got -1"),
    # -- cells
    ("step: carry of another hidden size", jitted(lambda x: ELMAN.step(PE, rnn_jax.RNNState(ones(2, 7)), x), ones(2, I)),
     UserValueError, r"elman carry.hidden: expected shape \(2, 4\), got \(2, 7\)"),
    ("step: carry batch differs from x's", jitted(lambda x: ELMAN.step(PE, ELMAN.initial_carry((3,)), x), ones(2, I)),
     UserValueError, r"carry.hidden: expected shape \(2, 4\), got \(3, 4\)"),
    ("step: no carry", jitted(lambda x: ELMAN.step(PE, None, x), ones(2, I)), UserTypeError,
     r"expected a carry of type RNNState .* got NoneType"),
    ("step: carry of another cell", jitted(lambda x: ELMAN.step(PE, LSTM.initial_carry((2,)), x), ones(2, I)),
     UserTypeError, r"expected a carry of type RNNState .* got LSTMState"),
    ("step: x float64, params float32", lambda: ELMAN.step(PE, ELMAN.initial_carry((2,)), jnp.ones((2, I), jnp.float64)),
     UserTypeError, r"step input x: expected dtype float32 to match the parameters, got float64"),
    ("initial_carry: batch shape as a string", lambda: ELMAN.initial_carry("2"), UserTypeError,
     r"initial_carry batch_shape: expected a tuple of non-negative sizes .* got str '2'"),
    ("initial_carry: integer dtype", lambda: ELMAN.initial_carry((2,), jnp.int32), UserTypeError,
     r"initial_carry dtype: expected a floating dtype, got int32"),
    ("init: unknown dtype name", lambda: ELMAN.init(jax.random.key(0), I, "float33"), UserTypeError,
     r"elman.init dtype: expected a floating dtype such as jnp.float32, got 'float33'"),
    ("lstm: forget_bias as a string", lambda: rnn_jax.lstm(4, forget_bias="1"), UserTypeError,
     r"lstm forget_bias: expected a real number, got str '1'"),
    ("lstm: forget_bias NaN", lambda: rnn_jax.lstm(4, forget_bias=float("nan")), UserValueError,
     r"lstm forget_bias: expected a finite number"),
    ("lstm: forget_bias of the wrong shape", lambda: rnn_jax.lstm(4, forget_bias=np.ones(3)), UserValueError,
     r"expected a number or shape \(4,\), got array of shape \(3,\)"),
    ("make: an option of another cell", lambda: rnn_jax.make("lstm", 4, activation="relu"), UserTypeError,
     r"make\('lstm', ...\): got an unexpected keyword argument 'activation'; a lstm cell takes forget_bias"),
    # -- unroll, python_unroll
    ("unroll: cell given by name", jitted(lambda x: rnn_jax.unroll("elman", PE, x), XS), UserTypeError,
     r"cell: expected an rnn_jax Cell such as rnn_jax.lstm\(64\), got str 'elman'"),
    ("python_unroll: a layer instead of a cell", lambda: rnn_jax.python_unroll(layers.stacked([ELMAN]), PE, XS),
     UserTypeError, r"cell: expected an rnn_jax Cell .* got Stacked"),
    ("unroll: time_major='yes'", jitted(lambda x: rnn_jax.unroll(ELMAN, PE, x, time_major="yes"), XS), UserTypeError,
     r"time_major: expected True or False, got str 'yes'"),
    ("unroll: reverse=1", jitted(lambda x: rnn_jax.unroll(ELMAN, PE, x, reverse=1), XS), UserTypeError,
     r"reverse: expected True or False, got int 1"),
    ("unroll: project_inputs='no'", jitted(lambda x: rnn_jax.unroll(ELMAN, PE, x, project_inputs="no"), XS),
     UserTypeError, r"project_inputs: expected True or False"),
    ("unroll: boolean lengths", jitted(lambda x: rnn_jax.unroll(ELMAN, PE, x, lengths=np.array([True, False])), XS),
     UserTypeError, r"lengths: expected an integer array, got dtype bool"),
    ("unroll: lengths as a string", lambda: rnn_jax.unroll(ELMAN, PE, XS, lengths="3"), UserTypeError,
     r"lengths: expected an array, got str '3'"),
    # -- model and readout
    ("model.loss: the cell's parameters instead of ModelParams",
     jitted(lambda x: model.loss(ELMAN, PE, x, Y_MSE), XS), UserTypeError,
     r"params: expected rnn_jax.model.ModelParams\(cell=..., readout=...\) .* got ElmanParams\(w_ih=float32\[3, 4\]"),
    ("model.predict: the cell's parameters", jitted(lambda x: model.predict(ELMAN, PE, x), XS), UserTypeError,
     r"params: expected rnn_jax.model.ModelParams"),
    ("model.init: cell given by name", lambda: model.init(jax.random.key(0), "lstm", I, O), UserTypeError,
     r"cell: expected an rnn_jax Cell"),
    ("model.init: an int as key", lambda: model.init(0, ELMAN, I, O), UserTypeError, r"model.init key: expected a PRNG key"),
    ("model.loss: readout of another hidden size",
     jitted(lambda x: model.loss(ELMAN, MP._replace(readout=rnn_jax.readout_init(jax.random.key(0), 7, O)), x, Y_MSE), XS),
     UserValueError, r"params.readout: expected w of shape \(H=4, output_size\) .* got w \(7, 5\)"),
    ("model.loss: float64 readout, float32 cell",
     jitted(lambda x: model.loss(ELMAN, MP._replace(readout=rnn_jax.readout_init(jax.random.key(0), H, O, dtype=jnp.float64)),
                                 x, Y_MSE), XS),
     UserTypeError, r"params.readout.w: expected dtype float32 like the cell's parameters, got float64"),
    ("readout: bias of the wrong size", jitted(lambda h: rnn_jax.readout(rnn_jax.ReadoutParams(ones(4, 5), ones(3)), h), ones(2, 4)),
     UserValueError, r"readout params: expected w of shape .* got w \(4, 5\) and b \(3,\)"),
    ("readout: a plain tuple of weights", lambda: rnn_jax.readout((ones(4, 5), ones(5)), ones(2, 4)), UserTypeError,
     r"readout params: expected rnn_jax.ReadoutParams\(w, b\)"),
    ("readout: input dtype differs", jitted(lambda h: rnn_jax.readout(MP.readout, h), jnp.ones((2, 4), jnp.float64)),
     UserTypeError, r"readout input: expected dtype float32 like the readout's weights, got float64"),
    ("readout_init: integer dtype", lambda: rnn_jax.readout_init(jax.random.key(0), 4, 2, dtype=jnp.int32), UserTypeError,
     r"readout_init dtype: expected a floating dtype, got int32"),
    # -- losses
    ("mask with a negative weight", lambda: losses.mean_squared_error(ones(2, 3), ones(2, 3), jnp.array([-1.0, 1.0])),
     UserValueError, r"mask: expected 1 at valid positions and 0 elsewhere, got values \[-1.0\]"),
    ("mask of 0.5", lambda: losses.softmax_cross_entropy(ones(2, 4), jnp.array([0, 1]), jnp.array([0.5, 1.0])),
     UserValueError, r"mask: expected 1 at valid positions"),
    ("mask of strings", lambda: losses.mean_squared_error(ones(2, 3), ones(2, 3), np.array(["1", "0"])), UserTypeError,
     r"mask: expected a bool, integer or floating array"),
    ("xent of scalar logits", jitted(lambda z: losses.softmax_cross_entropy(z, jnp.zeros((), jnp.int32)), ones()),
     UserValueError, r"logits: expected shape \(..., classes\) with at least one class, got \(\)"),
    ("last_outputs: lengths beyond the steps", lambda: losses.last_outputs(ones(2, 5, 3), jnp.array([9, 1])),
     UserValueError, r"lengths: expected values in \[0, 5\] .* got values in \[1, 9\]"),
    ("last_outputs: float lengths", jitted(lambda y: losses.last_outputs(y, jnp.array([1.0, 2.0])), ones(2, 5, 3)),
     UserTypeError, r"lengths: expected an integer array, got dtype float"),
    ("sequence_mask: negative time", lambda: losses.sequence_mask(jnp.array([1, 2]), -1), UserValueError,
     r"time: expected a non-negative integer .* got int -1"),
    # -- long
    ("long: chunk longer than the sequence", jitted(lambda x: long.chunked_loss(ELMAN, PE, x, lambda y, t: jnp.sum(y), chunk=6), XS),
     UserValueError, r"chunk: expected at most 5 \(the number of steps\), got 6"),
    ("long: step_loss not callable", jitted(lambda x: long.chunked_loss(ELMAN, PE, x, 3.0), XS), UserTypeError,
     r"step_loss: expected a callable step_loss\(y_t, t\), got float 3.0"),
    ("long: model_loss_every with cell parameters", jitted(lambda x: long.model_loss_every(ELMAN, PE, x), XS), UserTypeError,
     r"params: expected rnn_jax.model.ModelParams"),
    ("long: time_major='no'", jitted(lambda x: long.chunked_loss(ELMAN, PE, x, lambda y, t: jnp.sum(y), time_major="no"), XS),
     UserTypeError, r"time_major: expected True or False"),
    ("long: xent without targets", jitted(lambda x: long.model_loss_every(ELMAN, MP, x, loss="xent"), XS), UserValueError,
     r"targets: required for loss 'xent'"),
    # -- bptt (the reference)
    ("bptt: cell given by name", lambda: bptt.bptt("elman", MP, XS, Y_MSE), UserTypeError, r"cell: expected an rnn_jax Cell"),
    ("bptt: readout as a plain tuple", lambda: bptt.bptt(ELMAN, MP._replace(readout=tuple(MP.readout)), XS, Y_MSE),
     UserTypeError, r"params.readout: expected rnn_jax.ReadoutParams"),
    ("bptt.forward: reverse='yes'", lambda: bptt.forward(ELMAN, PE, XS, reverse="yes"), UserTypeError,
     r"reverse: expected a bool, got str 'yes'"),
    # -- diagnostics
    ("closed_form_step_jacobians: cell by name", lambda: diagnostics.closed_form_step_jacobians("elman", PE, XS),
     UserTypeError, r"cell: expected an rnn_jax Cell"),
    ("zero_perturbations: cell by name", lambda: diagnostics.zero_perturbations("elman", XS), UserTypeError,
     r"cell: expected an rnn_jax Cell"),
    ("state_gradients: the cell's parameters", jitted(lambda x: diagnostics.state_gradients(ELMAN, PE, x, Y_MSE).loss, XS),
     UserTypeError, r"params: expected rnn_jax.model.ModelParams"),
    ("jacobian_product: start after end", jitted(lambda j: diagnostics.jacobian_product(j, 3, 1), ones(5, 4, 4)),
     UserValueError, r"expected 0 <= start <= end <= 5 .* got start=3, end=1"),
    ("jacobian_product: float index", jitted(lambda j: diagnostics.jacobian_product(j, 1.0, 3), ones(5, 4, 4)),
     UserTypeError, r"start: expected a Python int .* got 1.0"),
    ("spectral_radius: integer matrix", lambda: diagnostics.spectral_radius(jnp.ones((2, 2), jnp.int32)), UserTypeError,
     r"spectral_radius w: expected a floating-point array, got dtype int32"),
    ("vanishing_condition: non-square w_hh", jitted(lambda w: diagnostics.vanishing_condition("tanh", w).ratio, ones(4, 3)),
     UserValueError, r"vanishing_condition w_hh: expected a square matrix \(H, H\), got array of shape \(4, 3\)"),
    ("perturbed_loss: perturbations of another hidden size",
     jitted(lambda x: diagnostics.perturbed_loss(ELMAN, MP, x, Y_MSE, rnn_jax.RNNState(ones(2, 5, 3)))[0], XS),
     UserValueError, r"perturbations.hidden: expected shape \(2, 5, 4\)"),
    # -- regularizer
    ("omega: an LSTM", lambda: regularizer.omega(LSTM, model.init(jax.random.key(0), LSTM, I, O), XS, Y_MSE),
     UserValueError, r"Ω is defined for Elman-type cells .* got a 'lstm' cell"),
    ("omega: bound 0 (0/0 for a zero δ)", jitted(lambda x: regularizer.omega(ELMAN, MP, x, Y_MSE, bound=0.0)[0], XS),
     UserValueError, r"bound: expected a finite number in \(0, inf\), got 0.0"),
    ("omega: bound as a string", lambda: regularizer.omega(ELMAN, MP, XS, Y_MSE, bound="1e-20"), UserTypeError,
     r"bound: expected a real number, got str"),
    ("loss_and_grad_with_omega: negative alpha",
     jitted(lambda x: regularizer.loss_and_grad_with_omega(ELMAN, MP, x, Y_MSE, -4.0)[1], XS), UserValueError,
     r"alpha: expected a finite number in \[0, inf\), got -4.0"),
    ("loss_and_grad_with_omega: NaN alpha", lambda: regularizer.loss_and_grad_with_omega(ELMAN, MP, XS, Y_MSE, np.nan),
     UserValueError, r"alpha: expected a finite number"),
    # -- optimizers
    ("sgd: learning rate as a string", lambda: optim.sgd("0.1"), UserTypeError,
     r"learning_rate must be a number or an array of numbers, got str '0.1'"),
    ("sgd: learning rate True", lambda: optim.sgd(True), UserTypeError, r"learning_rate must be a number"),
    ("sgd: NaN learning rate", lambda: optim.sgd(float("nan")), UserValueError, r"learning_rate must lie in \(0.0, inf\), got nan"),
    ("msgd_c: per-member thresholds with a zero", lambda: optim.msgd_c(0.01, np.array([1.0, 0.0])), UserValueError,
     r"threshold must lie in \(0.0, inf\]"),
    ("irprop_minus: min step above max", lambda: optim.irprop_minus(min_step_size=10.0, max_step_size=1.0), UserValueError,
     r"min_step_size \(10.0\) must not exceed max_step_size \(1.0\)"),
    ("skip_nonfinite: not a transformation", lambda: optim.skip_nonfinite(3), UserTypeError,
     r"skip_nonfinite inner: expected an optax GradientTransformation \(or None\), got int 3"),
    ("switchover_momentum: float switchover", lambda: optim.switchover_momentum(switchover=2.0), UserValueError,
     r"switchover must be a non-negative integer"),
    # -- layers
    ("stacked.init: an int as key", lambda: layers.stacked([ELMAN, ELMAN]).init(0, I), UserTypeError,
     r"stacked.init key: expected a PRNG key"),
    ("stacked.apply: float lengths name the layer and direction",
     jitted(lambda x: layers.stacked([layers.bidirectional(ELMAN, ELMAN)]).apply(
         (layers.BidirectionalParams(PE, PE),), x, lengths=jnp.array([1.0, 2.0])), XS),
     UserTypeError, r"stacked layer 0 of 1: bidirectional layer, forward direction: lengths: expected an integer array"),
    ("bidirectional: cell by name", lambda: layers.bidirectional("lstm", ELMAN), UserTypeError,
     r"bidirectional: expected the forward cell to be an rnn_jax Cell, got str 'lstm'"),
    ("stacked.initial_carry: integer dtype", lambda: layers.stacked([ELMAN]).initial_carry((2,), jnp.int32), UserTypeError,
     r"initial_carry dtype: expected a floating dtype, got int32"),
    # -- linear_recurrence
    ("linear_recurrence: reverse='yes'", jitted(lambda x: linear_recurrence(0.5, x, reverse="yes"), ones(5, 2)),
     UserTypeError, r"reverse: expected True or False, got str 'yes'"),
    # -- interop (NumPy arrays: no PyTorch or Flax import needed)
    ("from_torch_state_dict: integer dtype", lambda: rtorch.from_torch_state_dict(
        {"weight_ih": np.ones((4, 3), np.float32), "weight_hh": np.ones((4, 4), np.float32)}, "rnn", dtype=jnp.int32),
     UserTypeError, r"dtype: expected a floating dtype, got int32"),
    ("carries_from_torch: h of another hidden size", lambda: rtorch.carries_from_torch(ELMAN, np.zeros((2, 5), np.float32)),
     UserValueError, r"carries_from_torch: h has shape \(2, 5\); expected \(..., 4\)"),
    ("carries_to_torch: model by name", lambda: rtorch.carries_to_torch("elman", None), UserTypeError,
     r"carries_to_torch: expected an rnn_jax Cell, Bidirectional or Stacked layer, got str 'elman'"),
    ("params_from_flax: integer kernels", lambda: rflax.params_from_flax(
        {"i": {"kernel": np.ones((3, 4), np.int32), "bias": np.ones(4, np.int32)}, "h": {"kernel": np.ones((4, 4), np.int32)}}),
     UserTypeError, r"Flax parameters: i.bias: expected a floating-point array, got dtype int32"),
    ("carry_from_flax: h of another hidden size", lambda: rflax.carry_from_flax(ELMAN, np.zeros((2, 5), np.float32)),
     UserValueError, r"carry_from_flax: h has shape \(2, 5\); expected \(..., 4\)"),
    ("carry_to_flax: cell by name", lambda: rflax.carry_to_flax("lstm", None), UserTypeError, r"cell: expected an rnn_jax Cell"),
    # -- tasks
    ("tasks.get: an option the task does not have", lambda: tasks.get("adding", length=100), UserTypeError,
     r"task 'adding': got an unexpected keyword argument 'length'; it takes min_length, max_length, dtype"),
    ("tasks.get: teacher_student without its key", lambda: tasks.get("teacher_student"), UserTypeError,
     r"task 'teacher_student': missing a required argument: 'key'"),
    ("task.error: 3 logits for a 4-class task", jitted(lambda p: TORDER.error(p, TORDER.sample(jax.random.key(0), 2)), ones(2, 3)),
     UserValueError, r"temporal_order.error: predictions of shape \(2, 3\) do not have the task's 4 logits"),
    ("task.error: a tuple instead of a Batch", lambda: TORDER.error(ones(2, 4), (LABELS, ones(2, 11))), UserTypeError,
     r"temporal_order.error batch: expected a tasks.Batch"),
    ("task.sample: traced batch size", jitted(lambda n: TORDER.sample(jax.random.key(0), n), 2), UserValueError,
     r"batch_size must be a positive integer known at trace time \(a static argument\), got a traced value"),
    # -- the experiments' run() arguments (checked before any compile)
    ("experiment run: unknown profile", run_experiment("temporal_order", profile="huge"), UserValueError,
     r"unknown profile 'huge'; expected one of .*'tiny'"),
    ("experiment run: zero seeds", run_experiment("temporal_order", profile="tiny", seeds=0), ValueError,
     r"seeds: expected a positive number of seeds, got 0"),
    ("experiment run: repeated seeds", run_experiment("pathological", profile="tiny", seeds=[1, 1]), ValueError,
     r"seeds: expected a non-empty list of distinct seeds"),
]


@pytest.mark.parametrize("case,thunk,exc,pattern", RAISES, ids=[c[0] for c in RAISES])
def test_hostile_input_is_refused_with_a_clear_message(case, thunk, exc, pattern):
    with pytest.raises(exc, match=pattern) as info:
        thunk()
    if issubclass(exc, UserError):  # the library's own check, not an error from deeper down
        assert isinstance(info.value, UserError)


# ---------------------------------------------------------------- documented behaviour


def _all_nan(tree):
    return all(bool(jnp.all(jnp.isnan(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def _all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def traced_label_out_of_range_is_nan_loss_and_nan_gradients():
    """Traced labels cannot be checked: one outside [0, C) at a valid position makes the loss
    and every gradient NaN (before the fix: label C gave a NaN loss with finite gradients,
    label -1 silently counted as the last class)."""
    step = jax.jit(jax.value_and_grad(lambda p, y: model.loss(ELMAN, p, XS, y, loss="xent")))
    for bad in ([0, O], [-1, 0], [0, 2**40]):
        value, grads = step(MP, jnp.array(bad, jnp.int64))
        assert np.isnan(value) and _all_nan(grads), bad
    value, grads = step(MP, LABELS)
    assert np.isfinite(value) and _all_finite(grads)


def traced_out_of_range_labels_at_padded_steps_are_not_read():
    """A padded step's label is arbitrary (-1 padding included), traced or concrete, in
    model.loss, long.model_loss_every and the reference bptt alike."""
    labels = EVERY.at[0, 3:].set(-1)
    lengths = jnp.array([3, 5])
    fn = lambda p, y, n: model.loss(ELMAN, p, XS, y, loss="xent", on="every", lengths=n)
    value, grads = jax.jit(jax.value_and_grad(fn))(MP, labels, lengths)
    assert np.isfinite(value) and _all_finite(grads)
    np.testing.assert_allclose(fn(MP, labels, lengths), value, rtol=1e-6)
    np.testing.assert_allclose(long.model_loss_every(ELMAN, MP, XS, labels, loss="xent", lengths=lengths), value, rtol=1e-5)
    reference = bptt.bptt(ELMAN, MP, XS, labels, loss="xent", on="every", lengths=lengths)
    np.testing.assert_allclose(reference.loss, value, rtol=1e-5)


def traced_label_out_of_range_in_long_is_nan():
    fn = lambda p, y: long.model_loss_every(ELMAN, p, XS, y, loss="xent")
    value, grads = jax.jit(jax.value_and_grad(fn))(MP, EVERY.at[1, 2].set(O))
    assert np.isnan(value) and _all_nan(grads)


def lengths_as_a_list_everywhere():
    """What unroll accepts for lengths (a list, a NumPy array, a number), its neighbours accept."""
    as_array = jnp.array([3, 5])
    want = model.loss(ELMAN, MP, XS, Y_MSE, lengths=as_array)
    for given in ([3, 5], (3, 5), np.array([3, 5])):
        np.testing.assert_array_equal(model.loss(ELMAN, MP, XS, Y_MSE, lengths=given), want)
        np.testing.assert_array_equal(model.predict(ELMAN, MP, XS, lengths=given), model.predict(ELMAN, MP, XS, lengths=as_array))
        np.testing.assert_array_equal(diagnostics.state_gradients(ELMAN, MP, XS, Y_MSE, lengths=given).loss, want)
    np.testing.assert_allclose(bptt.bptt(ELMAN, MP, XS, Y_MSE, lengths=[3, 5]).loss, want, rtol=1e-6)
    one = model.loss(ELMAN, MP, XS[0], Y_MSE[0], lengths=3)
    np.testing.assert_allclose(one, model.loss(ELMAN, MP, XS[:1, :3], Y_MSE[:1]), rtol=1e-6)


def traced_lengths_beyond_the_steps_are_clipped():
    """Traced lengths cannot be checked: above T they count as T, below 0 as 0 (documented)."""
    fn = jax.jit(lambda n: model.loss(ELMAN, MP, XS, Y_MSE, lengths=n))
    np.testing.assert_allclose(fn(jnp.array([9, 5])), fn(jnp.array([5, 5])), rtol=1e-6)
    np.testing.assert_allclose(fn(jnp.array([-2, 5])), fn(jnp.array([0, 5])), rtol=1e-6)


def float64_targets_for_a_float32_model():
    """Targets of another floating dtype are compared in the model's dtype (no promotion error)."""
    value = model.loss(ELMAN, MP, XS, jnp.zeros((B, O), jnp.float64))
    assert value.dtype == jnp.float32
    np.testing.assert_array_equal(value, model.loss(ELMAN, MP, XS, Y_MSE))


def nan_at_a_masked_position_stays_out():
    """A NaN target where the mask is 0 (NaN padding) reaches neither the loss nor its gradient,
    in model.loss, long and the reference bptt alike."""
    mask = jnp.array([1.0, 0.0])
    targets = jnp.array([[1.0, 2.0], [jnp.nan, 0.0]], F32)
    value, grad = jax.value_and_grad(lambda p: losses.mean_squared_error(p, targets, mask))(ones(2, 2))
    assert value == 1.0 and _all_finite(grad)
    padded = jnp.zeros((B, T, O), F32).at[0, 3:].set(jnp.nan)
    fn = lambda p: model.loss(ELMAN, p, XS, padded, on="every", lengths=np.array([3, 5]))
    value, grads = jax.value_and_grad(fn)(MP)
    assert np.isfinite(value) and _all_finite(grads)
    np.testing.assert_allclose(long.model_loss_every(ELMAN, MP, XS, padded, lengths=[3, 5]), value, rtol=1e-5)
    np.testing.assert_allclose(bptt.bptt(ELMAN, MP, XS, padded, on="every", lengths=[3, 5]).loss, value, rtol=1e-5)


def int_batch_shape_means_one_axis():
    assert ELMAN.initial_carry(3).hidden.shape == (3, H)


def traced_hyperparameters_are_not_checked():
    """A per-member learning rate traced under vmap cannot be inspected; it is used as given."""
    params = jnp.ones(2, F32)

    def update(lr):
        tx = optim.sgd(lr)
        return tx.update(params, tx.init(params))[0]

    np.testing.assert_allclose(jax.vmap(update)(jnp.array([0.1, -0.1], F32)), [[-0.1, -0.1], [0.1, 0.1]], rtol=1e-6)


def regression_error_with_float64_predictions():
    batch = ADDING.sample(jax.random.key(0), 2)
    errors = ADDING.error(batch.targets.astype(jnp.float64), batch)
    np.testing.assert_array_equal(errors, [0.0, 0.0])


BEHAVES = [
    ("traced label out of range: NaN loss and NaN gradients", traced_label_out_of_range_is_nan_loss_and_nan_gradients),
    ("out-of-range labels at padded steps are not read", traced_out_of_range_labels_at_padded_steps_are_not_read),
    ("long: traced label out of range: NaN", traced_label_out_of_range_in_long_is_nan),
    ("lengths as a list, tuple, NumPy array or number everywhere", lengths_as_a_list_everywhere),
    ("traced lengths are clipped into [0, T]", traced_lengths_beyond_the_steps_are_clipped),
    ("float64 targets for a float32 model", float64_targets_for_a_float32_model),
    ("NaN at a masked position stays out", nan_at_a_masked_position_stays_out),
    ("initial_carry(3) is initial_carry((3,))", int_batch_shape_means_one_axis),
    ("traced hyperparameters are used as given", traced_hyperparameters_are_not_checked),
    ("regression error of float64 predictions", regression_error_with_float64_predictions),
]


@pytest.mark.parametrize("case,thunk", BEHAVES, ids=[c[0] for c in BEHAVES])
def test_hostile_input_behaves_as_documented(case, thunk):
    thunk()


def test_the_suite_is_large_enough():
    """Issue #19 asks for at least 60 hostile cases beyond tests/test_validation.py."""
    assert len(RAISES) + len(BEHAVES) >= 60
    assert len({c[0] for c in RAISES + BEHAVES}) == len(RAISES) + len(BEHAVES)
