"""The synthetic tasks: generator statistics, hand-written perfect solvers, jit/vmap, teacher/student, bad input.

The references here are independent of the generators: numpy readers that solve
each task the way a perfect model would (and must score zero error), a numpy
transcription of the original memorization layout, and a numpy forward pass of
the teacher.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax
from rnn_jax.repro import tasks

PATHOLOGICAL = [
    "temporal_order", "temporal_order_3bit", "adding", "multiplication", "random_permutation", "noiseless_memorization",
]
ALL = PATHOLOGICAL + ["counting_ones", "teacher_student"]


@pytest.fixture(autouse=True)
def _rank_promotion_raises(request):
    """Silent broadcasting between arrays of different ranks is an error in the generators and error measures.

    Not in the tests that run the model (their names say "model" or "teacher"): the
    cells add their bias to a batch by rank promotion.
    """
    node = request.node.name
    mode = "allow" if ("model" in node or "teacher" in node) else "raise"
    with jax.numpy_rank_promotion(mode):
        yield


def make(name, **kwargs):
    if name == "teacher_student":
        kwargs = {"key": jax.random.key(7), "largest_singular_value": 10.0, **kwargs}
    return tasks.get(name, **kwargs)


def batched_sampler(task):
    """``sampler(keys, batch_size, length)``: one minibatch per key, under ``jit`` of ``vmap`` (the training engine's use)."""
    return jax.jit(lambda keys, batch_size, length: jax.vmap(lambda k: task.sample(k, batch_size, length))(keys),
                   static_argnums=(1, 2))


def flatten(batch):
    """(minibatch, batch, ...) arrays to one numpy Batch of sequences."""
    return tasks.Batch(*[np.asarray(a).reshape((-1,) + a.shape[2:]) for a in batch])


# Draws shared by several tests: every distinct shape costs an XLA compilation (seconds), so keep them few.
N_MINIBATCHES, MINIBATCH = 300, 8
FIXED_BATCH = {"temporal_order": 10_000, "temporal_order_3bit": 10_000, "adding": 10_000, "multiplication": 10_000}


@functools.lru_cache(maxsize=None)
def variable_draw(name):
    """T drawn in [20, 30): 300 minibatches of 8 sequences (keys split from key(0)), float32.

    Returns ``(task, sampler, batch)``: the batched sampler that drew it, for the jit/vmap tests.
    """
    task = make(name, min_length=20, max_length=30)
    sampler = batched_sampler(task)
    keys = jax.random.split(jax.random.key(0), N_MINIBATCHES)
    return task, sampler, flatten(sampler(keys, MINIBATCH, task.max_steps))


def variable(name):
    task, _, batch = variable_draw(name)
    return task, batch


@functools.lru_cache(maxsize=None)
def fixed(name):
    """One minibatch of nominal length T = 100, float64, in arrays 3 steps longer than needed."""
    task = make(name, min_length=100, max_length=100, dtype=jnp.float64)
    batch = task.sample(jax.random.PRNGKey(1), FIXED_BATCH.get(name, 50), task.max_steps + 3)  # a raw uint32 key
    return task, tasks.Batch(*map(np.asarray, batch))


def valid_lengths(batch):
    return batch.mask.sum(-1).astype(int)


def assert_balanced(counts, sigmas=10.0):
    """Counts of equiprobable outcomes: chi-square within ``sigmas`` standard deviations of its mean."""
    counts = np.asarray(counts, float)
    k = counts.size
    expected = counts.sum() / k
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < (k - 1) + sigmas * np.sqrt(2 * (k - 1)), (chi2, counts)


def assert_one_hot_on_valid_steps(batch):
    sums = batch.inputs.sum(-1)
    np.testing.assert_array_equal(sums, batch.mask)  # one 1 per valid step, zeros on padding
    assert set(np.unique(batch.inputs)) <= {0.0, 1.0}


# ---------------------------------------------------------------- hand-written solvers (numpy)


def order_label(batch, n_bits, reverse=False):
    symbols = batch.inputs.argmax(-1)
    relevant = (symbols < 2) & (batch.mask > 0)
    assert (relevant.sum(-1) == n_bits).all()
    rows, cols = np.nonzero(relevant)  # row-major: each row's positions in increasing order
    bits = symbols[rows, cols].reshape(-1, n_bits)
    if reverse:
        bits = bits[:, ::-1]
    return (bits * 2 ** np.arange(n_bits)).sum(-1), cols.reshape(-1, n_bits)


def one_hot_logits(labels, classes):
    return np.eye(classes)[labels] * 5.0


def solve(name, task, batch, wrong=False):
    """A perfect reader's predictions, shaped as ``rnn_jax.model.predict(..., on=task.on)`` returns them."""
    if name in ("temporal_order", "temporal_order_3bit"):
        label, _ = order_label(batch, {"temporal_order": 2, "temporal_order_3bit": 3}[name], reverse=wrong)
        return one_hot_logits(label, task.output_size)
    if name in ("adding", "multiplication"):
        marked = batch.inputs[..., 1][batch.inputs[..., 0] == 1].reshape(-1, 2)
        value = marked.mean(-1) if name == "adding" else marked.prod(-1)
        return value[:, None] + (0.3 if wrong else 0.0)
    if name == "random_permutation":
        first = batch.inputs[:, 0].argmax(-1)
        return one_hot_logits(1 - first if wrong else first, task.output_size)
    if name == "noiseless_memorization":
        n_values = task.input_size - 2
        n_positions = int(batch.inputs[0, :, n_values].argmax())  # the first "wait" step
        pattern = batch.inputs[:, :n_positions, :n_values].argmax(-1)
        go = batch.inputs[..., n_values + 1].argmax(-1)[:, None] + (1 if wrong else 0)
        recall = np.arange(batch.inputs.shape[1])[None, :] - go
        labels = np.where(recall < 0, n_values, pattern[np.arange(len(pattern))[:, None], np.clip(recall, 0, n_positions - 1)])
        labels = np.where(batch.mask > 0, labels, 0)  # garbage on padded steps: must not count
        return one_hot_logits(labels, task.output_size)
    if name == "counting_ones":
        return batch.inputs[..., 0].sum(-1, keepdims=True) + (0.5 if wrong else 0.0)
    raise ValueError(f"no reader for {name} (the teacher's is numpy_teacher below)")


@pytest.mark.parametrize("name", PATHOLOGICAL + ["counting_ones"])
def test_a_perfect_reader_scores_zero_and_a_wrong_one_does_not(name):
    task, batch = variable(name)
    errors = np.asarray(task.error(jnp.asarray(solve(name, task, batch)), batch))
    assert errors.shape == (N_MINIBATCHES * MINIBATCH,)
    np.testing.assert_array_equal(errors, 0.0)
    wrong = np.asarray(task.error(jnp.asarray(solve(name, task, batch, wrong=True)), batch))
    assert wrong.mean() >= task.success_threshold and wrong.min() >= 0


def test_regression_error_threshold_is_0_04():
    task, batch = variable("adding")
    exact = solve("adding", task, batch)
    np.testing.assert_array_equal(task.error(jnp.asarray(exact + 0.19), batch), 0.0)  # 0.0361 <= 0.04
    np.testing.assert_array_equal(task.error(jnp.asarray(exact - 0.21), batch), 1.0)  # 0.0441 > 0.04


def test_memorization_error_is_per_sequence_any_valid_step():
    task, batch = variable("noiseless_memorization")
    logits = solve("noiseless_memorization", task, batch)
    n = valid_lengths(batch)
    padded = 2 + int(np.argmax(n[2:] < batch.mask.shape[1]))  # a sequence with padding
    assert n[padded] < batch.mask.shape[1]
    spoiled = logits.copy()
    spoiled[0, 0] = np.roll(spoiled[0, 0], 1)  # one wrong step in sequence 0
    spoiled[1, n[1] - 1] = np.roll(spoiled[1, n[1] - 1], 1)  # the last valid step of sequence 1
    spoiled[padded, n[padded]] = np.roll(spoiled[padded, n[padded]], 1)  # a padded step: not an error
    errors = np.asarray(task.error(jnp.asarray(spoiled), batch))
    np.testing.assert_array_equal(np.nonzero(errors)[0], [0, 1])


@pytest.mark.parametrize("name", ["temporal_order", "adding", "noiseless_memorization"])
def test_error_rejects_predictions_of_the_wrong_shape(name):
    task, batch = variable(name)
    with pytest.raises(ValueError, match="predictions of shape"):
        task.error(jnp.zeros((3, 5, 2, 9)), batch)
    with pytest.raises(TypeError, match="floating"):
        task.error(jnp.zeros(batch.targets.shape + ((task.output_size,) if task.loss == "xent" else ()), jnp.int32), batch)


# ---------------------------------------------------------------- generator statistics


@pytest.mark.parametrize(
    "name, n_bits, windows", [("temporal_order", 2, (1, 5)), ("temporal_order_3bit", 3, (1, 3, 6))]
)
def test_temporal_order_statistics(name, n_bits, windows):
    _, batch = variable(name)
    assert_one_hot_on_valid_steps(batch)
    t = valid_lengths(batch)
    label, positions = order_label(batch, n_bits)
    np.testing.assert_array_equal(label, batch.targets)
    for i, start in enumerate(windows):  # each relevant symbol in its window [start T/10, start T/10 + T/10)
        assert ((positions[:, i] >= start * t // 10) & (positions[:, i] < start * t // 10 + t // 10)).all()
    assert_balanced(np.bincount(batch.targets, minlength=2**n_bits))
    symbols = batch.inputs.argmax(-1)[batch.mask > 0]
    assert_balanced(np.bincount(symbols[symbols >= 2])[2:])  # distractors uniform over 2..5

    _, batch = fixed(name)
    assert (valid_lengths(batch) == 100).all()
    label, positions = order_label(batch, n_bits)
    np.testing.assert_array_equal(label, batch.targets)
    assert_balanced(np.bincount(batch.targets, minlength=2**n_bits))
    for i, start in enumerate(windows):  # every position of the window occurs, evenly
        assert positions[:, i].min() == start * 10 and positions[:, i].max() == start * 10 + 9
        assert_balanced(np.bincount(positions[:, i] - start * 10, minlength=10))


@pytest.mark.parametrize("name", ["adding", "multiplication"])
def test_adding_and_multiplication_statistics(name):
    for task, batch in (variable(name), fixed(name)):
        t = valid_lengths(batch)
        markers, values = batch.inputs[..., 0], batch.inputs[..., 1]
        assert set(np.unique(markers)) == {0.0, 1.0} and (markers.sum(-1) == 2).all()
        assert ((values >= 0) & (values < 1)).all() and abs(values[batch.mask > 0].mean() - 0.5) < 0.01
        np.testing.assert_array_equal(batch.inputs * (1 - batch.mask)[..., None], 0.0)  # zero padding
        cols = np.nonzero(markers)[1]
        p0, p1 = cols[0::2], cols[1::2]
        assert ((p0 >= 0) & (p0 < t // 10)).all()
        assert ((p1 >= t // 10) & (p1 < t // 10 + 4 * t // 10)).all()
        v0, v1 = values[np.arange(len(t)), p0], values[np.arange(len(t)), p1]
        expected = (v0 + v1) / 2 if name == "adding" else v0 * v1
        np.testing.assert_allclose(batch.targets[:, 0], expected, rtol=1e-6)
    # T' = T + randint(T // 10) = 100 + randint(10), one per minibatch; p0, p1 cover their windows.
    assert set(t) <= set(range(100, 110)) and len(set(t)) == 1
    assert set(p0) == set(range(t[0] // 10)) and set(p1) == set(range(t[0] // 10, t[0] // 10 + 4 * t[0] // 10))
    assert_balanced(np.bincount(p0))
    assert_balanced(np.bincount(p1)[t[0] // 10 :])
    _, several = variable(name)
    extra = valid_lengths(several).reshape(N_MINIBATCHES, MINIBATCH)[:, 0]
    assert set(np.unique(extra)) == set(range(20, 31))  # T in 20..29, + randint(2)


def test_random_permutation_statistics():
    _, batch = variable("random_permutation")
    assert_one_hot_on_valid_steps(batch)
    symbols = batch.inputs.argmax(-1)
    np.testing.assert_array_equal(symbols[:, 0], batch.targets)
    assert set(np.unique(batch.targets)) == {0, 1}
    assert_balanced(np.bincount(batch.targets))
    later = symbols[:, 1:][batch.mask[:, 1:] > 0]
    assert later.min() == 2 and later.max() == 99
    assert_balanced(np.bincount(later)[2:])


def transcribed_memorization(pattern, t, n_values, n_positions):
    """The original ``MemTask.generate`` for one sequence, transcribed to numpy (time-major)."""
    steps = t + 2 * n_positions
    inputs = np.zeros((steps, n_values + 2))
    targets = np.zeros((steps, n_values + 1))
    targets[:-n_positions, -1] = 1
    inputs[n_positions:, -2] = 1
    inputs[t + n_positions, -2] = 0
    inputs[t + n_positions, -1] = 1
    data = np.eye(n_values + 2)[pattern]
    inputs[:n_positions] = data
    targets[-n_positions:] = data[:, :-1]
    return inputs, targets.argmax(-1)


@pytest.mark.parametrize("n_values, n_positions", [(5, 10), (3, 2)])
def test_memorization_layout_is_the_original_code(n_values, n_positions):
    if (n_values, n_positions) == (5, 10):
        task, batch = variable("noiseless_memorization")
    else:
        task = tasks.noiseless_memorization(n_values, n_positions, 20, 30)
        batch = tasks.Batch(*map(np.asarray, task.sample(jax.random.key(2), 200)))  # one length
    assert (task.input_size, task.output_size) == (n_values + 2, n_values + 1)
    total = valid_lengths(batch)
    pattern = batch.inputs[:, :n_positions, :n_values].argmax(-1)
    for b in range(0, len(total), 7):
        inputs, targets = transcribed_memorization(pattern[b], total[b] - 2 * n_positions, n_values, n_positions)
        np.testing.assert_array_equal(batch.inputs[b, : total[b]], inputs)
        np.testing.assert_array_equal(batch.targets[b, : total[b]], targets)
        np.testing.assert_array_equal(batch.inputs[b, total[b] :], 0.0)
    assert_balanced(np.bincount(pattern.ravel(), minlength=n_values))


@pytest.mark.parametrize("name", ALL)
def test_lengths_are_drawn_per_minibatch_in_range_and_vary(name):
    task, batch = variable(name)
    t = valid_lengths(batch).reshape(N_MINIBATCHES, MINIBATCH)
    assert (t == t[:, :1]).all()  # one length per minibatch
    added = 2 * 10 if name == "noiseless_memorization" else 0  # + 2 n_positions
    extra = 1 if name in ("adding", "multiplication") else 0  # T' = T + randint(T // 10), T // 10 = 2 here
    assert set(t[:, 0]) == set(range(20 + added, 30 + added + extra))
    assert task.max_steps == 29 + added + extra == batch.inputs.shape[1]
    np.testing.assert_array_equal(batch.mask, np.arange(batch.mask.shape[1])[None, :] < valid_lengths(batch)[:, None])
    np.testing.assert_array_equal(batch.inputs * (1 - batch.mask)[..., None], 0.0)
    np.testing.assert_array_equal(tasks.lengths(tasks.Batch(*map(jnp.asarray, batch))), valid_lengths(batch))


# ---------------------------------------------------------------- jit, vmap, determinism, dtypes


@pytest.mark.parametrize("name", ALL)
def test_sample_is_deterministic_jittable_and_vmappable_with_fixed_shapes(name):
    task, sampler, batch = variable_draw(name)  # drawn by jit(vmap(sample)) over 300 keys
    keys = jax.random.split(jax.random.key(0), N_MINIBATCHES)
    again = flatten(sampler(keys, MINIBATCH, task.max_steps))
    for x, y in zip(batch, again):  # deterministic for fixed keys
        np.testing.assert_array_equal(x, y)
    other = flatten(sampler(jax.random.split(jax.random.key(9), N_MINIBATCHES), MINIBATCH, task.max_steps))
    for x, y in zip(batch, other):  # other keys: other values (and lengths), the same shapes and dtypes
        assert x.shape == y.shape and x.dtype == y.dtype and not np.array_equal(x, y)
    assert sampler._cache_size() == 1  # ... and no recompilation
    assert len(set(valid_lengths(batch))) > 1
    # Members of a vmapped batch are independent: each minibatch differs from the next.
    first, second = (batch.inputs[i * MINIBATCH : (i + 1) * MINIBATCH] for i in (0, 1))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("name", ALL)
def test_float64_and_a_fixed_length(name):
    task, batch = fixed(name)
    n, steps = len(batch.mask), task.max_steps + 3
    assert batch.inputs.shape == (n, steps, task.input_size) and batch.inputs.dtype == np.float64
    assert batch.mask.shape == (n, steps) and batch.mask.dtype == np.float64
    if task.loss == "xent":
        assert batch.targets.dtype == np.int32
        assert batch.targets.shape == ((n,) if task.on == "last" else (n, steps))
        assert 0 <= batch.targets.min() and batch.targets.max() < task.output_size
    else:
        assert batch.targets.dtype == np.float64 and batch.targets.shape == (n, task.output_size)
    # min_length == max_length: a fixed length (adding: T' = 100 + randint(10), one per minibatch;
    # memorization: + 2 n_positions).
    t = valid_lengths(batch)
    if name in ("adding", "multiplication"):
        assert len(set(t)) == 1 and 100 <= t[0] < 110 and task.max_steps == 109
    else:
        added = 20 if name == "noiseless_memorization" else 0
        assert (t == 100 + added).all() and task.max_steps == 100 + added
    np.testing.assert_array_equal(batch.inputs * (1 - batch.mask)[..., None], 0.0)


@pytest.mark.parametrize("name", ["temporal_order", "adding", "noiseless_memorization"])  # each (loss, on)
def test_batches_feed_the_model(name):
    """Encodings agree with ``rnn_jax.model``: the loss is finite and the error has one entry per sequence."""
    task, batch = variable(name)
    batch = tasks.Batch(*(jnp.asarray(a[:MINIBATCH]) for a in batch))
    cell = rnn_jax.elman(8, "tanh")
    params = rnn_jax.model.init(jax.random.key(1), cell, task.input_size, task.output_size)

    @jax.jit
    def evaluate(params, batch):
        lengths = tasks.lengths(batch)
        loss = rnn_jax.model.loss(cell, params, batch.inputs, batch.targets, loss=task.loss, on=task.on, lengths=lengths)
        return loss, task.error(rnn_jax.model.predict(cell, params, batch.inputs, on=task.on, lengths=lengths), batch)

    loss, errors = evaluate(params, batch)
    assert loss.shape == () and np.isfinite(loss)
    assert errors.shape == (MINIBATCH,) and (np.asarray(errors) >= 0).all()


# ---------------------------------------------------------------- counting ones


def test_counting_ones_targets_are_row_sums_and_the_w_equal_one_model_has_zero_loss():
    task = tasks.counting_ones()
    assert (task.input_size, task.output_size, task.loss, task.on, task.max_steps) == (1, 1, "mse", "last", 10)
    sampled = task.sample(jax.random.key(0), 1000)
    bits = np.asarray(sampled.inputs[..., 0])
    assert sampled.inputs.shape == (1000, 10, 1) and set(np.unique(bits)) == {0.0, 1.0}
    np.testing.assert_array_equal(sampled.targets[:, 0], bits.sum(-1))
    assert abs(bits.mean() - 0.5) < 0.02

    data = tasks.Batch(*(jnp.concatenate(pair) for pair in zip(sampled, tasks.counting_ones_dataset())))
    cell = rnn_jax.elman(1, "identity")  # s_k = s_{k-1} w_rec + x_k w_x, output s_n

    @jax.jit
    def evaluate(w_x, w_rec):
        one, zero = jnp.ones((1, 1), jnp.float32), jnp.zeros(1, jnp.float32)
        params = rnn_jax.ModelParams(rnn_jax.ElmanParams(w_ih=w_x * one, w_hh=w_rec * one, b=zero),
                                     rnn_jax.ReadoutParams(one, zero))
        loss = rnn_jax.model.loss(cell, params, data.inputs, data.targets, loss=task.loss, on=task.on,
                                  lengths=tasks.lengths(data))
        return loss, task.error(rnn_jax.model.predict(cell, params, data.inputs, on=task.on), data)

    loss, errors = evaluate(1.0, 1.0)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(errors, 0.0)
    loss, errors = evaluate(1.0, 1.1)
    assert float(loss) > 0.1 and float(errors.mean()) == pytest.approx(float(loss), rel=1e-6)


def test_counting_ones_dataset_is_the_tutorials():
    data = tasks.counting_ones_dataset()
    np.random.seed(1)  # the tutorial's own loop, verbatim
    x = np.zeros((20, 10))
    for row in range(20):
        x[row, :] = np.around(np.random.rand(10)).astype(int)
    np.testing.assert_array_equal(data.inputs[..., 0], x)
    np.testing.assert_array_equal(data.targets[:, 0], x.sum(1))
    np.testing.assert_array_equal(data.mask, 1.0)


# ---------------------------------------------------------------- teacher/student


def test_teacher_largest_singular_value_is_set_and_the_others_kept():
    key = jax.random.key(11)
    drawn = tasks.make_teacher(key, None, dtype=jnp.float64)
    s_drawn = np.linalg.svd(np.asarray(drawn.cell.w_hh), compute_uv=False)
    for value in ((s_drawn[0] + s_drawn[1]) / 2, 2.0 * s_drawn[0], 10.0):
        teacher = tasks.make_teacher(key, value, dtype=jnp.float64)
        s = np.linalg.svd(np.asarray(teacher.cell.w_hh), compute_uv=False)
        np.testing.assert_allclose(s, [value, s_drawn[1]], rtol=1e-12)
        # Only W_hh changes; and its singular vectors are kept (same U, V up to the new s[0]).
        for name in ("w_ih", "b"):
            np.testing.assert_array_equal(getattr(teacher.cell, name), getattr(drawn.cell, name))
        np.testing.assert_array_equal(teacher.readout.w, drawn.readout.w)
        u, _, vt = np.linalg.svd(np.asarray(drawn.cell.w_hh))
        np.testing.assert_allclose(teacher.cell.w_hh, (u * [value, s_drawn[1]]) @ vt, atol=1e-12)
    big = tasks.make_teacher(key, 10.0, hidden_size=5, input_size=4, dtype=jnp.float64)
    s_big = np.linalg.svd(np.asarray(big.cell.w_hh), compute_uv=False)
    s_ref = np.linalg.svd(np.asarray(tasks.make_teacher(key, None, hidden_size=5, input_size=4, dtype=jnp.float64).cell.w_hh), compute_uv=False)
    np.testing.assert_allclose(s_big, np.r_[10.0, s_ref[1:]], rtol=1e-12)


def numpy_teacher(teacher, inputs, lengths):
    """The document's forward pass in its column-vector form, one sequence at a time."""
    w_hh, w_hi, b_hh = (np.asarray(a, np.float64) for a in (teacher.cell.w_hh.T, teacher.cell.w_ih.T, teacher.cell.b))
    w_yh, b_yh = np.asarray(teacher.readout.w.T, np.float64), np.asarray(teacher.readout.b, np.float64)
    outputs = []
    for u, t in zip(inputs, lengths):
        h = np.zeros(len(b_hh))
        for step in range(t):
            h = 1.0 / (1.0 + np.exp(-(w_hh @ h + w_hi @ u[step] + b_hh)))
        outputs.append(w_yh @ h + b_yh)
    return np.array(outputs)


@pytest.mark.parametrize("draw, tol", [(variable, 2e-5), (fixed, 1e-12)], ids=["float32-T20to30", "float64-T100"])
def test_teacher_targets_equal_a_numpy_forward(draw, tol):
    task, batch = draw("teacher_student")  # teacher: key(7), largest singular value 10 (exploding regime)
    teacher = tasks.make_teacher(jax.random.key(7), 10.0, dtype=batch.inputs.dtype)
    batch = tasks.Batch(*(a[::7] for a in batch))
    t = valid_lengths(batch)
    reference = numpy_teacher(teacher, batch.inputs, t)
    np.testing.assert_allclose(batch.targets, reference, rtol=tol, atol=tol)
    assert (task.input_size, task.output_size, task.loss, task.on) == (3, 1, "mse", "last")
    np.testing.assert_allclose(task.error(jnp.asarray(reference, batch.inputs.dtype), batch), 0.0, atol=tol)
    assert float(task.error(jnp.asarray(reference + 0.1, batch.inputs.dtype), batch).mean()) == pytest.approx(0.01, rel=1e-3)
    inputs = batch.inputs[batch.mask > 0]
    assert abs(inputs.mean()) < 0.1 and abs(inputs.std() - 1.0) < 0.1  # N(0, 1) inputs


def test_teacher_rejects_a_value_that_would_not_be_the_largest():
    key = jax.random.key(11)
    s = np.linalg.svd(np.asarray(tasks.make_teacher(key, None, dtype=jnp.float64).cell.w_hh), compute_uv=False)
    with pytest.raises(ValueError, match="second singular value"):
        tasks.make_teacher(key, 0.5 * s[1])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            tasks.teacher_student(key, bad)


# ---------------------------------------------------------------- bad input


def test_get_knows_every_task_and_the_original_names():
    assert sorted(tasks.TASKS) == sorted(ALL)
    for alias, name in tasks.ALIASES.items():
        assert tasks.get(alias).name == name
    with pytest.raises(ValueError, match="unknown task 'tempOrder'.*'temporal_order'"):
        tasks.get("tempOrder")
    with pytest.raises(ValueError, match="unknown task"):
        tasks.get(None)


@pytest.mark.parametrize("name", ALL)
def test_bad_lengths_and_sizes_raise(name):
    with pytest.raises(ValueError, match="min_length must be a positive integer"):
        make(name, min_length=0, max_length=10)
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        make(name, min_length=10, max_length=-5)
    with pytest.raises(ValueError, match="min_length must be a positive integer"):
        make(name, min_length=12.5, max_length=20)
    with pytest.raises(ValueError, match=r"min_length \(30\) must not exceed max_length \(20\)"):
        make(name, min_length=30, max_length=20)
    with pytest.raises(TypeError, match="floating dtype"):
        make(name, dtype=jnp.int32)
    task = make(name, min_length=20, max_length=30)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        task.sample(jax.random.key(0), 0)
    with pytest.raises(ValueError, match=f"cannot hold the longest sequence.*length >= {task.max_steps}"):
        task.sample(jax.random.key(0), 2, task.max_steps - 1)
    with pytest.raises(TypeError, match="PRNG key"):
        task.sample(0, 2)


@pytest.mark.parametrize("name", ["temporal_order", "temporal_order_3bit", "adding", "multiplication"])
def test_windowed_tasks_need_length_at_least_10(name):
    with pytest.raises(ValueError, match="min_length must be at least 10"):
        make(name, min_length=9, max_length=50)
    assert make(name, min_length=10, max_length=10).max_steps == 10  # adding: T' = 10 + randint(1) = 10


def test_memorization_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_values must be a positive integer"):
        tasks.noiseless_memorization(n_values=0)
    with pytest.raises(ValueError, match="n_positions must be a positive integer"):
        tasks.noiseless_memorization(n_positions=-1)
