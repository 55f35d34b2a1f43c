"""rnn_jax.repro.experiments.verdicts: the exact tests against scipy.stats, and every claim coming out
"shown", "not shown", "contradicted" (and "not tested") on recorded rows, with the printed
p-values recomputed independently with scipy from the same rows."""

import ast
import itertools
import json
import math

import numpy as np
import pytest
import scipy.stats as st

from rnn_jax.repro.experiments import verdicts as V

ALPHA = 0.05
ALTS = ("two-sided", "greater", "less")


# ---------------------------------------------------------------- (a) the statistics against scipy


def test_module_does_not_import_scipy():
    tree = ast.parse(open(V.__file__).read())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m.split(".")[0] == "scipy"]


@pytest.mark.parametrize("p", [0.5, 0.03, 0.2, 0.37, 0.9, 0.999])
def test_binomial_law(p):
    for n in (1, 2, 7, 20, 61, 300, 1500):
        np.testing.assert_allclose(V.binom_pmf(n, p), st.binom.pmf(np.arange(n + 1), n, p), rtol=1e-11, atol=1e-300)
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            assert V.binom_cdf(k, n, p) == pytest.approx(st.binom.cdf(k, n, p), rel=1e-10, abs=1e-300)
            assert V.binom_sf(k, n, p) == pytest.approx(st.binom.sf(k, n, p), rel=1e-9, abs=1e-300)
    assert V.binom_pmf(4, 0.0).tolist() == [1, 0, 0, 0, 0] and V.binom_pmf(4, 1.0).tolist() == [0, 0, 0, 0, 1]


@pytest.mark.parametrize("p", [0.5, 0.1, 0.25, 0.4, 0.9, 0.77])
def test_binom_test_matches_scipy(p):
    cases = [(k, n) for n in range(1, 15) for k in range(n + 1)]
    cases += [(k, n) for n in (60, 137, 400) for k in (0, 3, n // 4, int(p * n), int(p * n) + 1, n // 2, n - 2, n)]
    for k, n in cases:
        for alt in ALTS:
            ref = st.binomtest(k, n, p, alternative=alt).pvalue
            assert V.binom_test(k, n, p, alt) == pytest.approx(ref, rel=1e-9, abs=1e-300), (k, n, p, alt)


def test_sign_and_mcnemar_tests_match_scipy():
    for b in range(0, 13):
        for c in range(0, 13):
            for alt in ALTS:
                ref = st.binomtest(b, b + c, 0.5, alternative=alt).pvalue if b + c else 1.0
                assert V.mcnemar_exact(b, c, alt) == pytest.approx(ref, rel=1e-12)
                assert V.sign_test(b, c, alt) == pytest.approx(ref, rel=1e-12)
            # the two-sided exact McNemar p is min(1, 2 P(X <= min(b, c)))
            expected = min(1.0, 2 * st.binom.cdf(min(b, c), b + c, 0.5)) if b + c else 1.0
            assert V.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)
    assert V.min_attainable_p(5) == 1 / 32


@pytest.mark.parametrize("conf", [0.95, 0.9])
def test_wilson_interval_matches_scipy(conf):
    for n in list(range(1, 13)) + [57, 200, 1000]:
        for k in sorted({0, 1, 2, n // 3, n // 2, n - 1, n} & set(range(n + 1))):
            for alt in ALTS:
                ref = st.binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
                if alt != "two-sided":
                    ref = st.binomtest(k, n, alternative=alt).proportion_ci(confidence_level=conf, method="wilson")
                lo, hi = V.wilson_interval(k, n, conf, alt)
                assert lo == pytest.approx(ref.low, abs=1e-13) and hi == pytest.approx(ref.high, abs=1e-13), \
                    (k, n, conf, alt)


@pytest.mark.parametrize("conf", [0.95, 0.8])
def test_clopper_pearson_interval_matches_scipy(conf):
    cases = [(k, n) for n in range(1, 7) for k in range(n + 1)]
    cases += [(k, n) for n in (20, 33, 100, 250) for k in (1, n // 5, n - 1)]
    for k, n in cases:
        for alt in ALTS:
            ref = st.binomtest(k, n, alternative=alt).proportion_ci(confidence_level=conf, method="exact")
            lo, hi = V.clopper_pearson_interval(k, n, conf, alt)
            # scipy finds the limits with brentq (xtol 2e-12); the bisection here goes to the float
            assert lo == pytest.approx(ref.low, rel=1e-9, abs=1e-11), (k, n, conf, alt)
            assert hi == pytest.approx(ref.high, rel=1e-9, abs=1e-11), (k, n, conf, alt)
            # and both limits through scipy's beta quantiles (the regularised incomplete beta)
            a = (1 - conf) / (2 if alt == "two-sided" else 1)
            if k > 0 and alt != "less":
                assert lo == pytest.approx(st.beta.ppf(a, k, n - k + 1), rel=1e-9)
            if k < n and alt != "greater":
                assert hi == pytest.approx(st.beta.ppf(1 - a, k + 1, n - k), rel=1e-9)
    assert V.clopper_pearson_interval(5, 5, 0.95, "greater")[0] == pytest.approx(0.05 ** (1 / 5), rel=1e-12)


def test_sign_flip_test_matches_scipy_and_enumeration():
    rng = np.random.default_rng(0)
    samples = [[1, 1, 1, 1, 1], [2, 1, 1, -1, 0, 1, 1, 2], [1, -1, 0, 0], [0, 0, 0], [-2, -1, -1, 1, 0, -1, -2],
               list(rng.integers(-2, 3, 10)), list(np.round(rng.normal(size=9), 3)), [0.5, 0.25, -0.125, 1.5]]
    for d in samples:
        d = np.asarray(d, float)
        # brute force: every sign pattern
        signs = np.array(list(itertools.product((-1.0, 1.0), repeat=len(d))))
        null, obs = (signs * d).sum(axis=1), d.sum()
        for alt in ALTS:
            stat, p = V.sign_flip_test(d, alt)
            assert stat == pytest.approx(obs)
            brute = {"greater": np.mean(null >= obs - 1e-9), "less": np.mean(null <= obs + 1e-9),
                     "two-sided": np.mean(np.abs(null) >= abs(obs) - 1e-9)}[alt]
            assert p == pytest.approx(brute, rel=1e-12), (d, alt)
            if np.any(d != 0):
                ref = st.permutation_test((d,), lambda x, axis: np.sum(x, axis=axis), vectorized=True,
                                          permutation_type="samples", n_resamples=np.inf, alternative=alt).pvalue
                assert p == pytest.approx(ref, rel=1e-9), (d, alt)
    # many units: the convolution is exact and fast; all positive gives 2^-m
    assert V.sign_flip_test([1] * 40, "greater")[1] == 2.0 ** -40
    with pytest.raises(ValueError):
        V.sign_flip_test([1.0, float("nan")])


def test_input_checks():
    for bad in [(-1, 3), (4, 3), (1.5, 3)]:
        with pytest.raises(ValueError):
            V.binom_test(*bad)
    with pytest.raises(ValueError):
        V.binom_test(1, 3, alternative="bigger")
    with pytest.raises(ValueError):
        V.binom_pmf(3, 1.5)
    assert V.binom_test(0, 0) == 1.0 and math.isnan(V.wilson_interval(0, 0)[0])


# ---------------------------------------------------------------- recorded rows


def rec(scheme, length, opt, seed, solved):
    return {"scheme": scheme, "length": length, "optimizer": opt, "seed": seed,
            "outcome": "solved" if solved else ("diverged" if opt == "MSGD" else "exhausted"),
            "steps": 1000 if solved else 20_000, "error": 0.0 if solved else 0.6,
            "metrics": {"grad_norm": 1.0, "clipped_fraction": 0.1, "loss": 0.5}}


def solved_lookup(records):
    return {(r["scheme"], r["length"], r["optimizer"], r["seed"]): r["outcome"] == "solved" for r in records}


def check_verdict(v, outcome):
    assert v.outcome == outcome, v.statement
    line = v.line()
    assert outcome.upper() in line and v.claim in line
    d = v.as_dict()
    json.dumps(d, allow_nan=False)
    assert d["outcome"] == outcome and d["statement"] == v.statement
    if outcome != "not tested":
        assert "p = " in v.statement and v.test
        # shown iff p <= alpha; contradicted iff the opposite p <= alpha
        assert (v.p_value <= ALPHA) == (outcome == "shown")
        assert (v.p_against <= ALPHA) == (outcome == "contradicted")


# ---------------------------------------------------------------- clipping matters more as the length grows


SCHEMES2 = ("basic_tanh", "smart_tanh")
UNITS = [(s, seed) for s in SCHEMES2 for seed in range(6)]  # 12 (scheme, seed) units


def clipping_rows(gain_short, gain_long, lengths=(50, 100)):
    """Rows where unit u's clipping gain (C solved − MSGD solved) is gain_short[u] at the short length and
    gain_long[u] at the long one (0: both solve); MSGD-CR rows as noise that must not matter."""
    rows = []
    for i, (s, seed) in enumerate(UNITS):
        for L, g in zip(lengths, (gain_short[i], gain_long[i])):
            c, m = {1: (1, 0), -1: (0, 1), 0: (1, 1)}[g]
            rows += [rec(s, L, "MSGD-C", seed, c), rec(s, L, "MSGD", seed, m), rec(s, L, "MSGD-CR", seed, i % 2)]
    return rows


def independent_clipping_p(rows, long_l, short_l):
    look = solved_lookup(rows)
    d = []
    for s, seed in UNITS:
        gain = {L: int(look[(s, L, "MSGD-C", seed)]) - int(look[(s, L, "MSGD", seed)]) for L in long_l + short_l}
        d.append(len(short_l) * sum(gain[L] for L in long_l) - len(long_l) * sum(gain[L] for L in short_l))
    d = np.asarray(d, float)
    if not np.any(d):
        return 1.0, 1.0
    perm = lambda alt: st.permutation_test((d,), lambda x, axis: np.sum(x, axis=axis), vectorized=True,
                                           permutation_type="samples", n_resamples=np.inf, alternative=alt).pvalue
    return perm("greater"), perm("less")


@pytest.mark.parametrize("case,outcome", [
    # the gain appears at the long length only, in 7 units: shown (p = 2^-7)
    (([0] * 12, [1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0]), "shown"),
    # the gain is at the short length and gone at the long one: contradicted
    (([1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0], [0] * 12), "contradicted"),
    # mixed: 3 units gain more, 2 less
    (([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1], [1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]), "not shown"),
    # magnitudes: MSGD-C worse at the short length (D = 2) in some units, but two units against
    (([-1, -1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0, 0, 0, -1, 0, 0]), "not shown"),
    (([-1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]), "shown"),
])
def test_clipping_vs_length(case, outcome):
    rows = clipping_rows(*case)
    v = V.clipping_grows_with_length(rows)
    check_verdict(v, outcome)
    p_up, p_down = independent_clipping_p(rows, [100], [50])
    assert v.p_value == pytest.approx(p_up, rel=1e-9) and v.p_against == pytest.approx(p_down, rel=1e-9)
    assert f"p = {V._fmt_p(v.p_value)}" in v.statement
    assert v.n_pairs == 12 and v.details["long_lengths"] == [100] and v.details["short_lengths"] == [50]
    # per-length McNemar of C against MSGD, recomputed
    look = solved_lookup(rows)
    for L in (50, 100):
        b = sum(look[(s, L, "MSGD-C", seed)] and not look[(s, L, "MSGD", seed)] for s, seed in UNITS)
        c = sum(look[(s, L, "MSGD", seed)] and not look[(s, L, "MSGD-C", seed)] for s, seed in UNITS)
        got = v.details["per_length"][str(L)]
        assert (got["b"], got["c"]) == (b, c)
        ref = st.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        assert got["p_two_sided"] == pytest.approx(ref, rel=1e-12)
    # shuffled input order does not change anything
    assert V.clipping_grows_with_length(rows[::-1]) == v


def test_clipping_vs_length_groups_of_lengths():
    g_short = [0] * 12
    g_mid = [1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    g_long = [1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0]
    rows = clipping_rows(g_short, g_mid, (50, 100))
    rows += [r for r in clipping_rows(g_short, g_long, (50, 150)) if r["length"] == 150]
    v = V.clipping_grows_with_length(rows, long_lengths=(100, 150), short_lengths=(50,))
    p_up, p_down = independent_clipping_p(rows, [100, 150], [50])
    assert v.p_value == pytest.approx(p_up, rel=1e-9) and v.p_against == pytest.approx(p_down, rel=1e-9)
    check_verdict(v, "shown")
    assert sorted(v.details["per_length"], key=int) == ["50", "100", "150"]
    # default: longest against shortest
    assert V.clipping_grows_with_length(rows).details["long_lengths"] == [150]
    with pytest.raises(ValueError):
        V.clipping_grows_with_length(rows, long_lengths=(100, 150), short_lengths=(100,))


def test_clipping_vs_length_not_tested():
    rows = clipping_rows([0] * 12, [1] * 12)
    one_length = [r for r in rows if r["length"] == 50]
    check_verdict(V.clipping_grows_with_length(one_length), "not tested")
    assert "one length" in V.clipping_grows_with_length(one_length).statement
    no_plain = [r for r in rows if r["optimizer"] != "MSGD"]
    assert "No MSGD records" in V.clipping_grows_with_length(no_plain).statement
    check_verdict(V.clipping_grows_with_length(rows, long_lengths=(200,)), "not tested")
    # a duplicated member makes the pairing ambiguous
    with pytest.raises(ValueError, match="two member records"):
        V.clipping_grows_with_length(rows + rows[:1])


def test_clipping_vs_length_few_units_cannot_reach_alpha():
    rows = [r for r in clipping_rows([0] * 12, [1] * 12) if r["seed"] < 2]  # 4 units
    v = V.clipping_grows_with_length(rows)
    check_verdict(v, "not shown")
    assert v.p_value == 1 / 16 and "only 'not shown' was possible" in v.statement


# ---------------------------------------------------------------- CR >= C


def regulariser_rows(cr_only, c_only, both=3, neither=3):
    """Pairs over (scheme, length, seed): cr_only pairs where only MSGD-CR solved, c_only where only MSGD-C did."""
    outcomes = [(1, 0)] * cr_only + [(0, 1)] * c_only + [(1, 1)] * both + [(0, 0)] * neither
    keys = [(s, L, seed) for s in SCHEMES2 for L in (50, 100) for seed in range(8)]
    assert len(outcomes) <= len(keys)
    rows = []
    for (s, L, seed), (cr, c) in zip(keys, outcomes):
        rows += [rec(s, L, "MSGD-CR", seed, cr), rec(s, L, "MSGD-C", seed, c), rec(s, L, "MSGD", seed, 0)]
    return rows


@pytest.mark.parametrize("cr_only,c_only,outcome", [(6, 0, "shown"), (9, 2, "shown"), (3, 1, "not shown"),
                                                    (5, 5, "not shown"), (0, 6, "contradicted"),
                                                    (1, 8, "contradicted")])
def test_regulariser_helps(cr_only, c_only, outcome):
    rows = regulariser_rows(cr_only, c_only)
    v = V.regulariser_helps(rows)
    check_verdict(v, outcome)
    look = solved_lookup(rows)
    keys = {(r["scheme"], r["length"], r["seed"]) for r in rows}
    b = sum(look[(s, L, "MSGD-CR", seed)] and not look[(s, L, "MSGD-C", seed)] for s, L, seed in keys)
    c = sum(look[(s, L, "MSGD-C", seed)] and not look[(s, L, "MSGD-CR", seed)] for s, L, seed in keys)
    assert (b, c) == (cr_only, c_only) and v.statistic == {"b": b, "c": c}
    assert v.p_value == pytest.approx(st.binomtest(b, b + c, 0.5, alternative="greater").pvalue, rel=1e-12)
    assert v.p_against == pytest.approx(st.binomtest(b, b + c, 0.5, alternative="less").pvalue, rel=1e-12)
    assert f"p = {V._fmt_p(v.p_value)}" in v.statement and v.n_pairs == len(keys)
    for L in (50, 100):
        bl = sum(look[(s, L2, "MSGD-CR", seed)] and not look[(s, L2, "MSGD-C", seed)] for s, L2, seed in keys
                 if L2 == L)
        cl = sum(look[(s, L2, "MSGD-C", seed)] and not look[(s, L2, "MSGD-CR", seed)] for s, L2, seed in keys
                 if L2 == L)
        got = v.details["per_length"][str(L)]
        assert (got["b"], got["c"]) == (bl, cl)
        assert got["p_greater"] == pytest.approx(st.binomtest(bl, bl + cl, 0.5, alternative="greater").pvalue
                                                 if bl + cl else 1.0, rel=1e-12)


def test_regulariser_not_tested_and_unpaired():
    rows = regulariser_rows(6, 0)
    check_verdict(V.regulariser_helps([r for r in rows if r["optimizer"] != "MSGD-CR"]), "not tested")
    # members that do not share a seed are not paired
    shifted = [dict(r, seed=r["seed"] + 100) if r["optimizer"] == "MSGD-C" else r for r in rows]
    v = V.regulariser_helps(shifted)
    check_verdict(v, "not tested")
    assert "share" in v.statement


# ---------------------------------------------------------------- sigmoid fails most


def sigmoid_rows(solved_counts):
    """12 (length, optimizer, seed) keys; scheme s solves the first solved_counts[s] of them."""
    keys = [(L, o, seed) for L in (50, 100) for o in ("MSGD-C", "MSGD-CR") for seed in range(3)]
    return [rec(s, L, o, seed, i < n) for s, n in solved_counts.items() for i, (L, o, seed) in enumerate(keys)]


@pytest.mark.parametrize("counts,outcome", [
    ({"sigmoid": 0, "basic_tanh": 8, "smart_tanh": 10}, "shown"),
    ({"sigmoid": 2, "basic_tanh": 9, "smart_tanh": 12}, "shown"),
    ({"sigmoid": 0, "basic_tanh": 8, "smart_tanh": 2}, "not shown"),  # worse than one tanh scheme only
    ({"sigmoid": 3, "basic_tanh": 3, "smart_tanh": 3}, "not shown"),
    ({"sigmoid": 12, "basic_tanh": 12, "smart_tanh": 4}, "contradicted"),  # better than smart_tanh
    ({"sigmoid": 10, "basic_tanh": 0, "smart_tanh": 1}, "contradicted"),
])
def test_sigmoid_fails_most(counts, outcome):
    rows = sigmoid_rows(counts)
    v = V.sigmoid_fails_most(rows)
    check_verdict(v, outcome)
    look = {(r["scheme"], r["length"], r["optimizer"], r["seed"]): r["outcome"] == "solved" for r in rows}
    keys = {(r["length"], r["optimizer"], r["seed"]) for r in rows}
    p_worse, p_better = [], []
    for s in ("basic_tanh", "smart_tanh"):
        b = sum(look[(s,) + k] and not look[("sigmoid",) + k] for k in keys)
        c = sum(look[("sigmoid",) + k] and not look[(s,) + k] for k in keys)
        assert (v.statistic[f"{s}_b"], v.statistic[f"{s}_c"]) == (b, c)
        p_worse.append(st.binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0)
        p_better.append(st.binomtest(b, b + c, 0.5, alternative="less").pvalue if b + c else 1.0)
    assert v.p_value == pytest.approx(max(p_worse), rel=1e-12)
    assert v.p_against == pytest.approx(min(1.0, 2 * min(p_better)), rel=1e-12)
    assert f"p = {V._fmt_p(v.p_value)}" in v.statement and v.n_pairs == 24


def test_sigmoid_not_tested():
    rows = sigmoid_rows({"sigmoid": 0, "basic_tanh": 8, "smart_tanh": 10})
    check_verdict(V.sigmoid_fails_most([r for r in rows if r["scheme"] != "sigmoid"]), "not tested")
    check_verdict(V.sigmoid_fails_most([r for r in rows if r["scheme"] == "sigmoid"]), "not tested")
    # one tanh scheme only: the test is against that one
    v = V.sigmoid_fails_most([r for r in rows if r["scheme"] != "smart_tanh"])
    check_verdict(v, "shown")
    assert v.p_value == pytest.approx(2.0 ** -8) and v.details["bonferroni_k"] == 1


# ---------------------------------------------------------------- pathological: solves 100 %, CR >= C


def path_rows(task, solved, runs, optimizer=None, extra=True):
    """MSGD-CR members as pathological.run writes them (no "optimizer" field unless given), plus the
    baseline and generalisation lines that share the file."""
    rows = []
    for seed in range(runs):
        r = {"kind": "member", "task": task, "lengths": "50-200", "member": seed, "seed": seed,
             "outcome": "solved" if seed < solved else "exhausted", "steps": 10, "error": 0.0,
             "metrics": {"loss": 0.1}}
        if optimizer is not None:
            r["optimizer"] = optimizer
        rows.append(r)
    if extra:
        rows += [{"kind": "baseline", "task": task, "lengths": "50-200", "error": 0.5},
                 {"kind": "generalisation", "task": task, "lengths": "50-200", "member": 0, "length": 400,
                  "error": 0.0}]
    return rows


@pytest.mark.parametrize("task,solved,runs,outcome", [
    ("adding", 5, 5, "shown"), ("adding", 8, 8, "shown"), ("multiplication", 4, 5, "not shown"),
    ("multiplication", 7, 8, "not shown"), ("noiseless_memorization", 3, 3, "not shown"),
    ("temporal_order_3bit", 1, 5, "contradicted"), ("temporal_order_3bit", 5, 8, "contradicted"),
    ("random_permutation", 2, 5, "not shown"), ("random_permutation", 5, 8, "shown"),
    ("random_permutation", 0, 8, "contradicted"), ("random_permutation", 0, 5, "not shown"),
])
def test_success_rate_claim(task, solved, runs, outcome):
    v = V.success_rate_claim(path_rows(task, solved, runs), task)
    check_verdict(v, outcome)
    k0, n0 = V.PAPER_RATES[task]
    r0 = k0 / n0
    floor, against = r0 / 2, (0.9 if r0 == 1 else r0)
    p_up = st.binomtest(solved, runs, floor, alternative="greater").pvalue
    assert v.p_value == pytest.approx(p_up if solved >= r0 * runs else 1.0, rel=1e-12)
    assert v.p_against == pytest.approx(st.binomtest(solved, runs, against, alternative="less").pvalue, rel=1e-12)
    ci = st.binomtest(solved, runs, alternative="greater").proportion_ci(0.95, method="exact")
    assert v.details["clopper_pearson_low"] == pytest.approx(ci.low, rel=1e-9, abs=1e-11)
    assert f"{ci.low:.2f}" in v.statement and v.statistic == {"solved": solved, "runs": runs}


def test_success_rate_rule_power_as_documented():
    """The docstring's power figures are the exact outcome probabilities (recomputed with scipy's pmf)."""
    def probs(n, r, r0):
        out = {"shown": 0.0, "not shown": 0.0, "contradicted": 0.0}
        for k in range(n + 1):
            out[V.success_rate_decision(k, n, r0)["outcome"]] += st.binom.pmf(k, n, r)
        return out

    doc = V.success_rate_claim.__doc__
    for n, r, outcome, text in [(5, 0.95, "shown", "0.774"), (5, 0.9, "shown", "0.590"), (5, 0.7, "shown", "0.168"),
                                (8, 0.95, "shown", "0.663"), (8, 0.9, "shown", "0.430"), (8, 0.7, "shown", "0.058"),
                                (5, 0.9, "contradicted", "0.0086"), (5, 0.7, "contradicted", "0.163"),
                                (5, 0.5, "contradicted", "0.500"), (5, 0.4, "contradicted", "0.683"),
                                (8, 0.9, "contradicted", "0.038"), (8, 0.7, "contradicted", "0.448"),
                                (8, 0.5, "contradicted", "0.855"), (8, 0.4, "contradicted", "0.950")]:
        p = probs(n, r, 1.0)[outcome]
        assert V.success_rate_outcome_probabilities(n, r)[outcome] == pytest.approx(p, rel=1e-10)
        assert f"{p:.{len(text) - 2}f}" == text and text in doc, (n, r, outcome)
    decide = lambda n, r0=1.0: [V.success_rate_decision(k, n, r0)["outcome"] for k in range(n + 1)]
    assert decide(5) == ["contradicted"] * 3 + ["not shown"] * 2 + ["shown"]
    assert decide(8) == ["contradicted"] * 6 + ["not shown"] * 2 + ["shown"]
    assert [V.success_rate_decision(k, 5, 0.4)["outcome"] for k in range(6)] == ["not shown"] * 4 + ["shown"] * 2
    assert [V.success_rate_decision(k, 8, 0.4)["outcome"] for k in range(9)] == \
        ["contradicted"] + ["not shown"] * 4 + ["shown"] * 4


@pytest.mark.parametrize("cr,c,outcome", [((6, 6), (0, 6), "shown"), ((4, 6), (3, 6), "not shown"),
                                          ((0, 6), (6, 6), "contradicted")])
def test_pathological_regulariser_and_all_verdicts(cr, c, outcome):
    rows = path_rows("adding", *cr) + path_rows("adding", *c, optimizer="MSGD-C", extra=False)
    vs = V.pathological_verdicts(rows)
    assert [v.claim for v in vs] == ["success_rate/adding", "regulariser/adding"]
    v = vs[1]
    check_verdict(v, outcome)
    # MSGD-CR solves seeds < cr[0], MSGD-C seeds < c[0], over the same 6 seeds
    b = sum(s < cr[0] and not s < c[0] for s in range(6))
    cc = sum(s < c[0] and not s < cr[0] for s in range(6))
    assert v.p_value == pytest.approx(st.binomtest(b, b + cc, 0.5, alternative="greater").pvalue if b + cc else 1.0)
    assert v.p_against == pytest.approx(st.binomtest(b, b + cc, 0.5, alternative="less").pvalue if b + cc else 1.0)
    assert v.n_pairs == 6


def test_pathological_verdicts_without_control():
    rows = path_rows("adding", 5, 5) + path_rows("random_permutation", 2, 5)
    vs = V.pathological_verdicts(rows)
    assert [v.outcome for v in vs] == ["shown", "not tested", "not shown", "not tested"]
    assert "No MSGD-C records" in vs[1].statement
    check_verdict(V.success_rate_claim(rows, "multiplication"), "not tested")
    check_verdict(V.success_rate_claim(rows, "unknown_task"), "not tested")


# ---------------------------------------------------------------- a whole temporal-order run, rendering


def test_temporal_order_verdicts_and_rendering():
    rows = clipping_rows([0] * 12, [1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    rows += [rec("sigmoid", L, o, seed, 0) for L in (50, 100) for o in ("MSGD", "MSGD-C", "MSGD-CR")
             for seed in range(6)]
    vs = V.temporal_order_verdicts(rows)
    assert [v.claim for v in vs] == ["clipping_vs_length", "regulariser", "sigmoid_fails_most"]
    text = V.render_markdown(vs)
    assert text.startswith("## Verdicts") and all(v.line() in text for v in vs)
    for v in vs:
        d = json.loads(json.dumps(v.as_dict(), allow_nan=False))
        assert set(d) == {"claim", "outcome", "test", "statistic", "p_value", "p_against", "alpha", "n_pairs",
                          "statement", "details"}
    with pytest.raises(ValueError):
        V.Verdict("x", "maybe", "t", {}, None, None, 0.05, 0, "s")


# ---------------------------------------------------------------- Table 1: lower loss on paired seeds


def _brute_force_sign_flip_p(diffs):
    """P(S* >= S) by listing all 2^n sign patterns (the independent reference)."""
    import itertools

    s = sum(diffs)
    hits = sum(sum(e * d for e, d in zip(signs, diffs)) >= s - 1e-12
               for signs in itertools.product((1, -1), repeat=len(diffs)))
    return hits / 2 ** len(diffs)


@pytest.mark.parametrize("worse, outcome", [
    ([7.3, 7.2, 7.25, 7.4, 7.3], "shown"),             # every seed worse by > 0: p = 1/32
    ([7.1, 7.3, 7.0, 7.4, 7.15], "not shown"),         # mixed signs
    ([6.9, 6.95, 7.0, 6.8, 6.9], "contradicted"),      # every seed better for the 'worse' row
])
def test_lower_loss_outcomes_and_p_against_brute_force(worse, outcome):
    better = [7.1, 7.15, 7.05, 7.2, 7.12]
    v = V.lower_loss(dict(enumerate(better)), dict(enumerate(worse)), "MSGD-C", "MSGD", "clipping")
    assert v.outcome == outcome
    diffs = [w - b for w, b in zip(worse, better)]
    assert v.p_value == pytest.approx(_brute_force_sign_flip_p(diffs))
    assert v.p_against == pytest.approx(_brute_force_sign_flip_p([-d for d in diffs]))
    assert v.n_pairs == 5 and v.statistic["seeds_better"] == sum(d > 0 for d in diffs)


def test_lower_loss_pairs_by_seed_and_drops_nonfinite():
    better = {0: 1.0, 1: 1.0, 2: 1.0, 3: float("nan")}
    worse = {1: 2.0, 2: 2.0, 3: 2.0, 4: 2.0}
    v = V.lower_loss(better, worse, "A", "B", "c")
    assert v.n_pairs == 2 and v.p_value == pytest.approx(0.25) and v.outcome == "not shown"
    assert "smallest attainable p" in v.statement
    assert V.lower_loss({0: 1.0}, {1: 1.0}, "A", "B", "c").outcome == "not tested"
