"""Verdicts that can fail: the reproductions' claims decided by exact tests on paired seeds.

Every claim a reproduction table prints against the paper (Pascanu, Mikolov &
Bengio 2013) is decided here by a stated statistical test, and printed with its
statistic and p-value. "shown", "not shown" and "contradicted" are all possible
outcomes; "not tested" says why the data cannot decide (one length only, one
optimizer absent...). Pure Python and NumPy; every test is written from its
definition (``tests/test_verdicts.py`` checks them against ``scipy.stats``).

Decision rule of a directional claim ("A is better than B"): two one-sided exact
tests at level α, one in the claimed direction and one in the opposite direction.
``shown`` when the first rejects (p ≤ α), ``contradicted`` when the second
rejects, ``not shown`` otherwise (the two cannot both reject: for these discrete
tests the two one-sided p-values sum to more than 1). Under "no difference" each of
"shown" and "contradicted" comes out with probability at most α.

Pairing. Members trained with the same seed share their initial weights (for a
given initialisation) and their minibatches, so the comparisons pair them: two
optimizers on the same (scheme, length, seed), two initialisations on the same
(length, optimizer, seed). A pair counts once; only discordant pairs (one solved,
the other not) carry information (McNemar). A member succeeds when its record's
``outcome`` is ``"solved"``; ``"exhausted"`` (out of budget) and ``"diverged"`` are
failures. Two records with the same pairing key are an error (ValueError).

The exact statistics:

* :func:`binom_pmf`, :func:`binom_cdf`, :func:`binom_sf` -- the binomial law.
* :func:`binom_test` -- exact binomial test, two-sided ("minlike": the total
  probability of the outcomes no more likely than the one observed) or one-sided.
* :func:`sign_test` -- the binomial test of ``n_plus`` among ``n_plus + n_minus``
  non-zero signs at 1/2.
* :func:`mcnemar_exact` -- exact McNemar test on paired binary outcomes: ``b``
  pairs where only the first solved, ``c`` where only the second did;
  ``b ~ Binomial(b + c, 1/2)`` under the null.
* :func:`sign_flip_test` -- exact paired sign-flip permutation test of the sum of
  paired differences (the exact null distribution by convolution, not by sampling).
* :func:`wilson_interval`, :func:`clopper_pearson_interval` -- intervals for a rate
  (Clopper–Pearson by bisection on the binomial tail, i.e. the inverse of the
  regularised incomplete beta function).

The claims (each returns a :class:`Verdict`):

* :func:`clipping_grows_with_length` -- temporal order, "clipping matters more as
  the length grows".
* :func:`regulariser_helps` -- "CR ≥ C": MSGD-CR solves more than MSGD-C (temporal
  order pooled, per length, or a pathological task).
* :func:`sigmoid_fails_most` -- temporal order, "sigmoid units fail most".
* :func:`success_rate_claim` -- pathological, "MSGD-CR solves 100 %" per task (the
  paper's 2 of 5 for random permutation).
* :func:`temporal_order_verdicts`, :func:`pathological_verdicts` -- all of them for
  one run's raw member records.

A :class:`Verdict` renders as one markdown line (:meth:`Verdict.line`) for
``table.md`` and as a dict (:meth:`Verdict.as_dict`) for ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from fractions import Fraction
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

ALPHA = 0.05
OUTCOMES = ("shown", "not shown", "contradicted", "not tested")
ALTERNATIVES = ("two-sided", "greater", "less")
TANH_SCHEMES = ("basic_tanh", "smart_tanh")

# The paper's success rates of MSGD-CR on the pathological problems (5 runs each, lengths up to 200).
PAPER_RATES: Dict[str, Tuple[int, int]] = {
    "adding": (5, 5),
    "multiplication": (5, 5),
    "temporal_order_3bit": (5, 5),
    "random_permutation": (2, 5),
    "noiseless_memorization": (5, 5),
}
# "solves 100 %" is read as "the success rate is at least 0.9" when testing for a contradiction: a
# finite budget can leave one run of many unsolved without contradicting the paper's 5 of 5.
CONTRADICTION_RATE_FOR_100 = 0.9


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative: expected one of {ALTERNATIVES}, got {alternative!r}")


def _check_count(k: int, n: int) -> Tuple[int, int]:
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise ValueError(f"expected integer counts, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"expected 0 <= k <= n, got k={k}, n={n}")
    return k, n


# ---------------------------------------------------------------- the binomial law


@functools.lru_cache(maxsize=256)
def _log_comb(n: int) -> np.ndarray:
    """log C(n, k) for k = 0..n (math.log of the exact integer: correctly rounded at any n)."""
    return np.array([math.log(math.comb(n, k)) for k in range(n + 1)], np.float64)


def binom_pmf(n: int, p: float) -> np.ndarray:
    """P(X = k) for k = 0..n, X ~ Binomial(n, p) (a float64 array of n + 1 values)."""
    _check_count(0, n)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")
    out = np.zeros(n + 1)
    if p == 0.0:
        out[0] = 1.0
        return out
    if p == 1.0:
        out[n] = 1.0
        return out
    k = np.arange(n + 1, dtype=np.float64)
    return np.exp(_log_comb(int(n)) + k * math.log(p) + (n - k) * math.log1p(-p))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k), X ~ Binomial(n, p); 0 for k < 0, 1 for k ≥ n."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return float(min(1.0, math.fsum(binom_pmf(n, p)[: int(k) + 1])))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X > k), X ~ Binomial(n, p) (scipy's ``binom.sf``); 1 for k < 0, 0 for k ≥ n."""
    if k < 0:
        return 1.0
    if k >= n:
        return 0.0
    return float(min(1.0, math.fsum(binom_pmf(n, p)[int(k) + 1:])))


def binom_test(k: int, n: int, p: float = 0.5, alternative: str = "two-sided") -> float:
    """Exact binomial test of H0: success probability = ``p``, given ``k`` successes in ``n`` trials.

    ``greater`` (H1: probability > p): P(X ≥ k); ``less``: P(X ≤ k); ``two-sided``:
    the sum of P(X = i) over every i with P(X = i) ≤ P(X = k) (relative tolerance
    1e-7 for ties, as scipy's ``binomtest``), capped at 1. ``n = 0`` gives 1.
    """
    k, n = _check_count(k, n)
    _check_alternative(alternative)
    if n == 0:
        return 1.0
    if alternative == "greater":
        return binom_sf(k - 1, n, p)
    if alternative == "less":
        return binom_cdf(k, n, p)
    pmf = binom_pmf(n, p)
    if k == p * n:
        return 1.0
    return float(min(1.0, math.fsum(pmf[pmf <= pmf[k] * (1 + 1e-7)])))


def sign_test(n_plus: int, n_minus: int, alternative: str = "two-sided") -> float:
    """Exact sign test: ``n_plus`` positive among ``n_plus + n_minus`` non-zero differences, H0 P(+) = 1/2.

    ``greater``: H1 positive differences are more likely (P(X ≥ n_plus)). Zeros are
    dropped before (the caller counts only non-zero differences). No pairs: p = 1.
    """
    return binom_test(n_plus, n_plus + n_minus, 0.5, alternative)


def mcnemar_exact(b: int, c: int, alternative: str = "two-sided") -> float:
    """Exact McNemar test on paired binary outcomes.

    ``b``: pairs where only the first member succeeded; ``c``: pairs where only the
    second did (concordant pairs carry no information). Under H0 (both equally
    likely to succeed) ``b ~ Binomial(b + c, 1/2)``. ``greater``: H1 the first
    succeeds more often, p = P(X ≥ b); ``less``: p = P(X ≤ b); ``two-sided``: the
    exact binomial two-sided p (= min(1, 2 P(X ≤ min(b, c)))). ``b + c = 0``: p = 1.
    """
    return binom_test(b, b + c, 0.5, alternative)


def min_attainable_p(n: int) -> float:
    """The smallest one-sided p-value a sign / McNemar test on ``n`` non-zero pairs can give: 2^-n."""
    return 0.5 ** n


# ---------------------------------------------------------------- intervals for a rate


def _z(confidence: float, alternative: str) -> float:
    level = 0.5 + 0.5 * confidence if alternative == "two-sided" else confidence
    return statistics.NormalDist().inv_cdf(level)


def wilson_interval(k: int, n: int, confidence: float = 0.95, alternative: str = "two-sided") -> Tuple[float, float]:
    """Wilson score interval for a rate ``k / n`` (no continuity correction).

    ``alternative`` as scipy's ``proportion_ci``: ``two-sided`` (z at (1 + c)/2),
    ``greater`` ([low, 1], z at c), ``less`` ([0, high]). ``n = 0``: (nan, nan).
    """
    k, n = _check_count(k, n)
    _check_alternative(alternative)
    if n == 0:
        return float("nan"), float("nan")
    z = _z(confidence, alternative)
    p = k / n
    denom = 2 * (n + z * z)
    centre = (2 * n * p + z * z) / denom
    delta = z / denom * math.sqrt(4 * n * p * (1 - p) + z * z)
    low = 0.0 if alternative == "less" or k == 0 else centre - delta
    high = 1.0 if alternative == "greater" or k == n else centre + delta
    return float(low), float(high)


def _bisect_increasing(f, target: float) -> float:
    """The p in [0, 1] where the increasing function ``f`` crosses ``target`` (bisection to the float)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95,
                             alternative: str = "two-sided") -> Tuple[float, float]:
    """Clopper–Pearson exact interval for a rate ``k / n``.

    The lower limit solves P(X ≥ k | n, p) = a, the upper P(X ≤ k | n, p) = a, with
    a = (1 - confidence) / 2 two-sided and 1 - confidence one-sided (``greater``:
    [low, 1]; ``less``: [0, high]); 0 when k = 0, 1 when k = n. Each limit is the
    inverse of the regularised incomplete beta function, found by bisection on
    the binomial tail (monotone in p). For k = n the one-sided lower limit is
    (1 - confidence)^(1/n).
    """
    k, n = _check_count(k, n)
    _check_alternative(alternative)
    if n == 0:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2 if alternative == "two-sided" else 1 - confidence
    low, high = 0.0, 1.0
    if k > 0 and alternative != "less":
        low = _bisect_increasing(lambda p: binom_sf(k - 1, n, p), a)
    if k < n and alternative != "greater":
        high = _bisect_increasing(lambda p: -binom_cdf(k, n, p), -a)
    return float(low), float(high)


# ---------------------------------------------------------------- paired sign-flip permutation test


def _exact_number(x) -> Any:
    """``x`` as an exact number: an int, or the float's exact fraction (finite values only)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"sign_flip_test: expected finite differences, got {x}")
    return int(x) if x.is_integer() else Fraction(x)


def sign_flip_distribution(diffs: Sequence[float]) -> Dict[Any, int]:
    """The exact null distribution of Σ ±d_i: {sum: number of the 2^m sign patterns} (m non-zero d_i).

    Built by convolution, one difference at a time, with exact arithmetic
    (integers, or the floats' exact fractions), so equal sums are never split by
    rounding; the cost grows with the number of distinct sums, not with 2^m.
    """
    dist: Dict[Any, int] = {0: 1}
    for d in diffs:
        d = _exact_number(d)
        if d == 0:
            continue
        new: Dict[Any, int] = {}
        for s, c in dist.items():
            new[s + d] = new.get(s + d, 0) + c
            new[s - d] = new.get(s - d, 0) + c
        dist = new
    return dist


def sign_flip_test(diffs: Sequence[float], alternative: str = "two-sided") -> Tuple[float, float]:
    """Exact paired sign-flip permutation test of S = Σ d_i; returns (S, p).

    H0: each paired difference is symmetric about 0, so every one of the 2^m sign
    patterns of the m non-zero differences is equally likely. ``greater``:
    p = P(S* ≥ S); ``less``: p = P(S* ≤ S); ``two-sided``: P(|S*| ≥ |S|) (the null
    is symmetric: = min(1, 2 min(P(S* ≥ S), P(S* ≤ S)))). No non-zero difference: p = 1.
    """
    _check_alternative(alternative)
    values = [_exact_number(d) for d in diffs]
    stat = sum(values, 0)
    dist = sign_flip_distribution(values)
    total = sum(dist.values())
    if alternative == "greater":
        hits = sum(c for s, c in dist.items() if s >= stat)
    elif alternative == "less":
        hits = sum(c for s, c in dist.items() if s <= stat)
    else:
        hits = sum(c for s, c in dist.items() if abs(s) >= abs(stat))
    return float(stat), float(Fraction(hits, total))


# ---------------------------------------------------------------- the Verdict record


def _fmt_p(p: Optional[float]) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p < 1e-3 else f"{p:.3g}"


def _finite(tree):
    if isinstance(tree, dict):
        return {str(k): _finite(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_finite(v) for v in tree]
    if isinstance(tree, (bool, np.bool_)):
        return bool(tree)
    if isinstance(tree, (int, np.integer)):
        return int(tree)
    if isinstance(tree, (float, np.floating)):
        return float(tree) if math.isfinite(tree) else None
    return tree


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One claim decided by one stated test.

    Attributes:
      claim: the claim's key (``"clipping_vs_length"``, ``"regulariser"``, ``"sigmoid_fails_most"``,
        ``"success_rate/adding"``...).
      outcome: ``"shown"``, ``"not shown"``, ``"contradicted"`` or ``"not tested"``.
      test: the test's name (e.g. "exact McNemar test, one-sided").
      statistic: the test's statistic(s), by name (counts of discordant pairs, the sum of differences...).
      p_value: p of the test in the claim's direction (``shown`` iff ≤ alpha); None when not tested.
      p_against: p of the test in the opposite direction (``contradicted`` iff ≤ alpha); None when not tested.
      alpha: the level.
      n_pairs: paired units (or runs, for a rate) that entered the test.
      statement: one line for a human: what was compared, the test, the numbers, the outcome.
      details: secondary numbers (per-length tests, per-scheme tests, intervals).
    """

    claim: str
    outcome: str
    test: str
    statistic: Dict[str, Any]
    p_value: Optional[float]
    p_against: Optional[float]
    alpha: float
    n_pairs: int
    statement: str
    details: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome: expected one of {OUTCOMES}, got {self.outcome!r}")

    def line(self) -> str:
        """One markdown line for table.md: ``- **claim**: OUTCOME -- statement``."""
        return render_line(self)

    def as_dict(self) -> dict:
        """A JSON-ready dict for summary.json (non-finite floats as None)."""
        return render_dict(self)


def render_line(v: Verdict) -> str:
    """``v`` as one markdown list item: the claim, the outcome in capitals, the statement (test, statistic, p)."""
    return f"- **{v.claim}**: {v.outcome.upper()} — {v.statement}"


def render_dict(v: Verdict) -> dict:
    """``v`` as a JSON-ready dict (every field; non-finite floats as None)."""
    return _finite(dataclasses.asdict(v))


def render_markdown(verdicts: Iterable[Verdict], title: str = "## Verdicts") -> str:
    """A markdown section: a title line, the level's rule, then one line per verdict."""
    verdicts = list(verdicts)
    alpha = verdicts[0].alpha if verdicts else ALPHA
    head = (f"{title}\n\nEach claim is decided by the exact test named in its line, on paired seeds, at "
            f"α = {alpha:g}: SHOWN when the test in the claim's direction rejects, CONTRADICTED when the test "
            f"in the opposite direction rejects, NOT SHOWN otherwise; NOT TESTED says what data are missing.\n")
    return head + "\n".join(v.line() for v in verdicts) + "\n"


def _not_tested(claim: str, test: str, reason: str, alpha: float, n_pairs: int = 0, **details) -> Verdict:
    return Verdict(claim=claim, outcome="not tested", test=test, statistic={}, p_value=None, p_against=None,
                   alpha=alpha, n_pairs=n_pairs, statement=f"{reason[0].upper()}{reason[1:]}.", details=dict(details))


def _decide(p_value: float, p_against: float, alpha: float) -> str:
    if p_value <= alpha:
        return "shown"
    if p_against <= alpha:
        return "contradicted"
    return "not shown"


def _outcome_words(outcome: str, p_value: float, p_against: float, alpha: float) -> str:
    if outcome == "shown":
        return f"p = {_fmt_p(p_value)} ≤ α = {alpha:g} → shown"
    if outcome == "contradicted":
        return (f"p = {_fmt_p(p_value)}; in the opposite direction p = {_fmt_p(p_against)} ≤ α = {alpha:g} "
                f"→ contradicted")
    return (f"p = {_fmt_p(p_value)} (opposite direction p = {_fmt_p(p_against)}), neither ≤ α = {alpha:g} "
            f"→ not shown")


def _power_note(n_informative: int, alpha: float, what: str) -> str:
    floor = min_attainable_p(n_informative)
    if floor > alpha:
        return (f" With {n_informative} {what} the smallest attainable p is {_fmt_p(floor)} > α: only "
                f"'not shown' was possible.")
    return ""


# ---------------------------------------------------------------- records and pairing


def _solved(record: Mapping) -> int:
    return int(record.get("outcome") == "solved")


def _members(records: Iterable[Mapping]) -> List[Mapping]:
    """Member records only (the pathological results also hold baseline and generalisation lines)."""
    return [r for r in records if r.get("kind", "member") == "member"]


def _optimizer(record: Mapping, default: Optional[str]) -> Optional[str]:
    return record.get("optimizer", default)


def _index(records: Iterable[Mapping], fields: Sequence[str], default_optimizer: Optional[str] = None
           ) -> Dict[tuple, int]:
    """{(record[f] for f in fields): solved (0/1)}; a key seen twice is an error (the pairing would be ambiguous)."""
    out: Dict[tuple, int] = {}
    for r in records:
        key = tuple(_optimizer(r, default_optimizer) if f == "optimizer" else r.get(f) for f in fields)
        if key in out:
            raise ValueError(f"two member records for {dict(zip(fields, key))}: pairing by seed needs one each")
        out[key] = _solved(r)
    return out


def paired_outcomes(records: Iterable[Mapping], field: str, first: Any, second: Any, pair_on: Sequence[str],
                    default_optimizer: Optional[str] = None) -> Dict[tuple, Tuple[int, int]]:
    """Pairs of (first solved, second solved), keyed by the ``pair_on`` fields, where ``record[field]`` is
    ``first`` for one member and ``second`` for the other; keys with only one of them are dropped."""
    fields = tuple(pair_on) + (field,)
    idx = _index(records, fields, default_optimizer)
    pairs = {}
    for key in {k[:-1] for k in idx}:
        a, b = idx.get(key + (first,)), idx.get(key + (second,))
        if a is not None and b is not None:
            pairs[key] = (a, b)
    return dict(sorted(pairs.items(), key=lambda kv: tuple(str(x) for x in kv[0])))


def _discordant(pairs: Iterable[Tuple[int, int]]) -> Tuple[int, int]:
    pairs = list(pairs)
    return sum(a and not b for a, b in pairs), sum(b and not a for a, b in pairs)


def mcnemar_summary(pairs: Iterable[Tuple[int, int]]) -> Dict[str, Any]:
    """Counts and exact McNemar p-values of (first solved, second solved) pairs.

    ``b``: only the first solved; ``c``: only the second; ``p_greater``: one-sided,
    first better; ``p_less``: one-sided, second better; ``p_two_sided``.
    """
    pairs = list(pairs)
    b, c = _discordant(pairs)
    return {"n_pairs": len(pairs), "first_solved": sum(a for a, _ in pairs),
            "second_solved": sum(s for _, s in pairs), "b": b, "c": c,
            "p_greater": mcnemar_exact(b, c, "greater"), "p_less": mcnemar_exact(b, c, "less"),
            "p_two_sided": mcnemar_exact(b, c, "two-sided")}


def _mcnemar_verdict(claim: str, pairs: Dict[tuple, Tuple[int, int]], better: str, worse: str, unit: str,
                     alpha: float, details: dict) -> Verdict:
    """Shown iff the one-sided exact McNemar test says ``better`` solves more than ``worse``."""
    test = "exact McNemar test (b ~ Binomial(b + c, 1/2)), one-sided"
    s = mcnemar_summary(pairs.values())
    b, c, n = s["b"], s["c"], s["n_pairs"]
    outcome = _decide(s["p_greater"], s["p_less"], alpha)
    statement = (f"{better} solved {s['first_solved']} and {worse} {s['second_solved']} of {n} pairs with the "
                 f"same {unit}; discordant pairs: {b} where only {better} solved, {c} where only {worse} did; "
                 f"{test} of '{better} solves more': " + _outcome_words(outcome, s["p_greater"], s["p_less"], alpha)
                 + "." + _power_note(b + c, alpha, "discordant pairs"))
    return Verdict(claim=claim, outcome=outcome, test=test, statistic={"b": b, "c": c},
                   p_value=s["p_greater"], p_against=s["p_less"], alpha=alpha, n_pairs=n, statement=statement,
                   details=dict(details, pooled=s))


# ---------------------------------------------------------------- temporal order claims


def clipping_grows_with_length(records: Iterable[Mapping], alpha: float = ALPHA,
                               long_lengths: Optional[Sequence[int]] = None,
                               short_lengths: Optional[Sequence[int]] = None,
                               clipped: str = "MSGD-C", plain: str = "MSGD",
                               claim: str = "clipping_vs_length") -> Verdict:
    """Temporal order, "clipping matters more as the length grows" (paper, figure 7).

    For each unit u = (scheme, seed) and length L, the paired gain of clipping is
    d(u, L) = solved(MSGD-C) - solved(MSGD) ∈ {-1, 0, +1} (same scheme, length and
    seed: same initial weights and minibatches). The claim: the gain at the long
    lengths exceeds the gain at the short ones. Per unit the contrast

        D(u) = |S| Σ_{L in long} d(u, L) - |G| Σ_{L in short} d(u, L)

    (|G|, |S|: the numbers of long and short lengths; D is |G||S| times the
    difference of the mean gains, an integer). Test: the exact paired sign-flip
    permutation test of Σ_u D(u) (H0: the gain does not depend on the length, so
    each D(u) is symmetric about 0), one-sided in each direction at α: shown when
    the gain grows (P(S* ≥ S) ≤ α), contradicted when it shrinks (P(S* ≤ S) ≤ α).
    A unit enters when it has both optimizers' records at every length of the two
    groups; the others are left out and counted.

    Default groups: the longest length against the shortest; pass ``long_lengths``
    (e.g. the lengths where MSGD's gradients explode) and ``short_lengths`` to
    compare groups. ``details["per_length"]``: the exact McNemar test of MSGD-C
    against MSGD at every length (b: only MSGD-C solved, c: only MSGD).
    """
    test = "exact paired sign-flip permutation test of Σ D(u), one-sided"
    records = _members(records)
    recs = [r for r in records if r.get("optimizer") in (clipped, plain)]
    lengths = sorted({r["length"] for r in recs})
    have = {o: {r["length"] for r in recs if r.get("optimizer") == o} for o in (clipped, plain)}
    if not have[clipped] or not have[plain]:
        missing = clipped if not have[clipped] else plain
        return _not_tested(claim, test, f"no {missing} records", alpha)
    both = sorted(have[clipped] & have[plain])
    per_length = {}
    for L in both:
        pairs = paired_outcomes([r for r in recs if r["length"] == L], "optimizer", clipped, plain,
                                ("scheme", "seed"))
        per_length[str(L)] = mcnemar_summary(pairs.values())
    if len(both) < 2:
        return _not_tested(claim, test, f"{clipped} and {plain} were both run at one length only "
                                        f"({', '.join(map(str, both)) or 'none'})", alpha, per_length=per_length)
    long_g = sorted(long_lengths) if long_lengths is not None else [both[-1]]
    short_g = sorted(short_lengths) if short_lengths is not None else [both[0]]
    if not long_g or not short_g:
        raise ValueError("long_lengths and short_lengths must not be empty")
    if set(long_g) & set(short_g):
        raise ValueError(f"long_lengths {long_g} and short_lengths {short_g} overlap")
    absent = [L for L in long_g + short_g if L not in both]
    if absent:
        return _not_tested(claim, test, f"no paired {clipped}/{plain} records at length(s) "
                                        f"{', '.join(map(str, absent))} (lengths run: {', '.join(map(str, lengths))})",
                           alpha, per_length=per_length)
    idx = _index(recs, ("scheme", "seed", "length", "optimizer"))
    units = sorted({k[:2] for k in idx}, key=lambda u: (str(u[0]), str(u[1])))
    gains: Dict[tuple, Dict[int, int]] = {}
    dropped = 0
    for u in units:
        g = {}
        for L in long_g + short_g:
            a, b = idx.get(u + (L, clipped)), idx.get(u + (L, plain))
            if a is None or b is None:
                break
            g[L] = a - b
        else:
            gains[u] = g
            continue
        dropped += 1
    if not gains:
        return _not_tested(claim, test, "no (scheme, seed) has paired records at both length groups", alpha,
                           per_length=per_length)
    n_long, n_short = len(long_g), len(short_g)
    diffs = [n_short * sum(g[L] for L in long_g) - n_long * sum(g[L] for L in short_g) for g in gains.values()]
    stat, p_up = sign_flip_test(diffs, "greater")
    _, p_down = sign_flip_test(diffs, "less")
    outcome = _decide(p_up, p_down, alpha)
    m = len(gains)
    mean_long = float(np.mean([sum(g[L] for L in long_g) / n_long for g in gains.values()]))
    mean_short = float(np.mean([sum(g[L] for L in short_g) / n_short for g in gains.values()]))
    nonzero = sum(d != 0 for d in diffs)
    n_up, n_down = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    lg, sg = "T=" + "/".join(map(str, long_g)), "T=" + "/".join(map(str, short_g))
    per = "; ".join(f"T={L}: {s['b']} only {clipped}, {s['c']} only {plain}, two-sided McNemar p = "
                    f"{_fmt_p(s['p_two_sided'])}" for L, s in per_length.items())
    statement = (f"Paired gain of {clipped} over {plain} (solved, same scheme and seed) {mean_long:+.2f} at {lg} "
                 f"against {mean_short:+.2f} at {sg}, mean over {m} (scheme, seed) units; Σ D = {stat:+g} "
                 f"({n_up} units gain more at the long lengths, {n_down} less); {test}: "
                 + _outcome_words(outcome, p_up, p_down, alpha) + f". Per length, exact McNemar: {per}."
                 + _power_note(nonzero, alpha, "units with a non-zero contrast")
                 + (f" {dropped} unit(s) without every record left out." if dropped else ""))
    return Verdict(claim=claim, outcome=outcome, test=test,
                   statistic={"sum_D": stat, "units_up": n_up, "units_down": n_down, "units_zero": m - nonzero,
                              "mean_gain_long": mean_long, "mean_gain_short": mean_short},
                   p_value=p_up, p_against=p_down, alpha=alpha, n_pairs=m, statement=statement,
                   details={"long_lengths": list(map(int, long_g)), "short_lengths": list(map(int, short_g)),
                            "D": {f"{u[0]}/seed{u[1]}": int(d) for u, d in zip(gains, diffs)},
                            "units_left_out": dropped, "per_length": per_length})


def regulariser_helps(records: Iterable[Mapping], alpha: float = ALPHA, better: str = "MSGD-CR",
                      worse: str = "MSGD-C", pair_on: Sequence[str] = ("scheme", "length", "seed"),
                      per: Optional[str] = "length", default_optimizer: Optional[str] = None,
                      claim: str = "regulariser") -> Verdict:
    """"CR ≥ C": the regulariser helps -- MSGD-CR solves more runs than MSGD-C on paired seeds.

    Pairs: the two optimizers on the same ``pair_on`` fields (temporal order: the
    same (scheme, length, seed), pooled over schemes and lengths). Test: the exact
    McNemar test (b: only MSGD-CR solved, c: only MSGD-C; b ~ Binomial(b + c, 1/2)
    under H0), one-sided each way at α: shown when P(X ≥ b) ≤ α, contradicted when
    P(X ≤ b) ≤ α. ``details["per_<per>"]``: the same test for every value of the
    ``per`` field (default: per length). ``default_optimizer``: the optimizer of a
    record without one (the pathological runs' members are MSGD-CR).
    """
    test = "exact McNemar test (b ~ Binomial(b + c, 1/2)), one-sided"
    records = _members(records)
    opts = {_optimizer(r, default_optimizer) for r in records}
    for o in (better, worse):
        if o not in opts:
            return _not_tested(claim, test, f"no {o} records", alpha)
    pairs = paired_outcomes(records, "optimizer", better, worse, pair_on, default_optimizer)
    if not pairs:
        return _not_tested(claim, test, f"no {better} and {worse} members share ({', '.join(pair_on)})", alpha)
    details = {}
    if per is not None and per in pair_on:
        i = list(pair_on).index(per)
        values = sorted({k[i] for k in pairs}, key=str)
        details[f"per_{per}"] = {str(v): mcnemar_summary(p for k, p in pairs.items() if k[i] == v) for v in values}
    return _mcnemar_verdict(claim, pairs, better, worse, "(" + ", ".join(pair_on) + ")", alpha, details)


def lower_loss(better_losses: Mapping[Any, float], worse_losses: Mapping[Any, float], better: str, worse: str,
               claim: str, unit: str = "test loss", alpha: float = ALPHA) -> Verdict:
    """"``better`` reaches a lower loss than ``worse``" on paired seeds (Table 1's comparisons).

    ``better_losses`` / ``worse_losses``: seed -> loss (the same seed: the same initial
    weights and minibatch order). Test: the exact paired sign-flip permutation test of
    S = Σ (loss_worse − loss_better) over the seeds both have (finite losses only),
    one-sided each way: shown when P(S* ≥ S) ≤ α, contradicted when P(S* ≤ S) ≤ α.
    """
    test = "exact paired sign-flip permutation test of Σ (worse − better), one-sided"
    seeds = sorted(set(better_losses) & set(worse_losses), key=str)
    seeds = [s for s in seeds if math.isfinite(better_losses[s]) and math.isfinite(worse_losses[s])]
    if not seeds:
        return _not_tested(claim, test, f"no seed with a finite {unit} for both {better} and {worse}", alpha)
    diffs = [float(worse_losses[s]) - float(better_losses[s]) for s in seeds]
    stat, p_up = sign_flip_test(diffs, "greater")
    _, p_down = sign_flip_test(diffs, "less")
    outcome = _decide(p_up, p_down, alpha)
    n_better = sum(d > 0 for d in diffs)
    nonzero = sum(d != 0 for d in diffs)
    statement = (f"{better} against {worse} on {len(seeds)} paired seeds: {unit} lower for {better} on "
                 f"{n_better}, higher on {nonzero - n_better}; mean difference ({worse} − {better}) "
                 f"{statistics.fmean(diffs):+.4g}; {test}: {_outcome_words(outcome, p_up, p_down, alpha)}."
                 + _power_note(nonzero, alpha, "non-zero differences"))
    return Verdict(claim=claim, outcome=outcome, test=test,
                   statistic={"sum_diff": stat, "seeds_better": n_better, "seeds_worse": nonzero - n_better},
                   p_value=p_up, p_against=p_down, alpha=alpha, n_pairs=len(seeds), statement=statement,
                   details={"diff": {str(s): d for s, d in zip(seeds, diffs)}})


def sigmoid_fails_most(records: Iterable[Mapping], alpha: float = ALPHA, sigmoid: str = "sigmoid",
                       tanh_schemes: Optional[Sequence[str]] = None, claim: str = "sigmoid_fails_most") -> Verdict:
    """Temporal order, "sigmoid units fail most": sigmoid against each tanh initialisation.

    Pairs: sigmoid and tanh scheme s on the same (length, optimizer, seed). Per s,
    the exact McNemar test (b_s: only s solved, c_s: only sigmoid). Shown when
    sigmoid is significantly worse than EVERY tanh scheme, each one-sided at α (an
    intersection-union test: its p is the largest of the per-scheme p's, no
    correction needed). Contradicted when sigmoid is significantly better than ANY
    tanh scheme, one-sided with Bonferroni's correction over the K schemes (p
    against = min(1, K · the smallest per-scheme p in that direction) ≤ α). Not
    shown otherwise. A tanh scheme with no pair is left out (reported); none: not
    tested.
    """
    test = "exact McNemar test per tanh scheme, one-sided (intersection-union; Bonferroni for the opposite)"
    records = _members(records)
    schemes = sorted({r.get("scheme") for r in records}, key=str)
    tanh = [s for s in (tanh_schemes if tanh_schemes is not None else schemes) if s != sigmoid and s in schemes]
    if sigmoid not in schemes:
        return _not_tested(claim, test, f"no {sigmoid} records", alpha)
    if not tanh:
        return _not_tested(claim, test, "no tanh initialisation to compare with", alpha)
    per_scheme, left_out = {}, []
    for s in tanh:
        pairs = paired_outcomes(records, "scheme", s, sigmoid, ("length", "optimizer", "seed"))
        if pairs:
            per_scheme[s] = mcnemar_summary(pairs.values())
        else:
            left_out.append(s)
    if not per_scheme:
        return _not_tested(claim, test, f"no tanh member shares (length, optimizer, seed) with a {sigmoid} member",
                           alpha, left_out=left_out)
    k = len(per_scheme)
    p_value = max(s["p_greater"] for s in per_scheme.values())
    p_against = min(1.0, k * min(s["p_less"] for s in per_scheme.values()))
    outcome = _decide(p_value, p_against, alpha)
    parts = "; ".join(f"{s}: {v['first_solved']} / {v['n_pairs']} solved against {v['second_solved']} for {sigmoid}, "
                      f"{v['b']} pairs only {s} solved, {v['c']} only {sigmoid}, p = {_fmt_p(v['p_greater'])}"
                      for s, v in per_scheme.items())
    statement = (f"{sigmoid} against each tanh initialisation, paired by (length, optimizer, seed) — {parts}; "
                 f"{test}: " + _outcome_words(outcome, p_value, p_against, alpha) + "."
                 + _power_note(min(v["b"] + v["c"] for v in per_scheme.values()), alpha,
                               "discordant pairs for one scheme")
                 + (f" Left out (no pairs): {', '.join(left_out)}." if left_out else ""))
    return Verdict(claim=claim, outcome=outcome, test=test,
                   statistic={f"{s}_{x}": v[x] for s, v in per_scheme.items() for x in ("b", "c")},
                   p_value=p_value, p_against=p_against, alpha=alpha,
                   n_pairs=sum(v["n_pairs"] for v in per_scheme.values()), statement=statement,
                   details={"per_scheme": per_scheme, "left_out": left_out, "bonferroni_k": k})


# ---------------------------------------------------------------- pathological claims


def success_rate_decision(k: int, n: int, claimed_rate: float = 1.0, alpha: float = ALPHA) -> Dict[str, Any]:
    """The rule of :func:`success_rate_claim` on ``k`` solved of ``n`` runs: outcome and p-values."""
    k, n = _check_count(k, n)
    if not 0 < claimed_rate <= 1:
        raise ValueError(f"claimed_rate: expected a rate in (0, 1], got {claimed_rate}")
    floor = claimed_rate / 2
    against_rate = CONTRADICTION_RATE_FOR_100 if claimed_rate == 1 else claimed_rate
    reaches = k >= claimed_rate * n - 1e-12
    p_above_floor = binom_test(k, n, floor, "greater")
    # The test of "shown" rejects only when the runs reach the claim: its p is 1 when they do not.
    p_value = p_above_floor if reaches else 1.0
    p_against = binom_test(k, n, against_rate, "less")
    if n and p_value <= alpha:
        outcome = "shown"
    elif n and p_against <= alpha:
        outcome = "contradicted"
    else:
        outcome = "not shown"
    return {"outcome": outcome, "k": k, "n": n, "p_value": p_value, "p_against": p_against, "floor": floor,
            "p_above_floor": p_above_floor, "against_rate": against_rate, "reaches_claim": bool(reaches)}


def success_rate_outcome_probabilities(n: int, true_rate: float, claimed_rate: float = 1.0,
                                       alpha: float = ALPHA) -> Dict[str, float]:
    """P(each outcome of :func:`success_rate_claim`) with ``n`` runs whose true success rate is ``true_rate``."""
    pmf = binom_pmf(n, true_rate)
    out = {"shown": 0.0, "not shown": 0.0, "contradicted": 0.0}
    for k in range(n + 1):
        out[success_rate_decision(k, n, claimed_rate, alpha)["outcome"]] += float(pmf[k])
    return out


def success_rate_claim(records: Iterable[Mapping], task: str, claimed: Optional[Tuple[int, int]] = None,
                       alpha: float = ALPHA, optimizer: str = "MSGD-CR", default_optimizer: str = "MSGD-CR",
                       claim: Optional[str] = None) -> Verdict:
    """Pathological problems, "MSGD-CR solves 100 %" (random permutation: 2 of 5) on one task.

    ``claimed`` = (k0, n0), the paper's solved runs (default :data:`PAPER_RATES`),
    r0 = k0 / n0. With k of the n seeds' MSGD-CR runs solved (X ~ Binomial(n, r)):

    * shown: k / n ≥ r0 (for 100 %: every run solved) AND the exact one-sided
      binomial test rejects "r ≤ r0 / 2" at α (p = P(X ≥ k | n, r0/2); for 100 %:
      p = 2^-n, so at least 5 runs are needed); the verdict's ``p_value`` is that
      p, or 1 when k / n < r0 (the test never rejects then);
    * contradicted: the exact one-sided binomial test rejects "r ≥ r_c" at α
      (p = P(X ≤ k | n, r_c)), r_c = 0.9 for a 100 % claim (a finite budget may
      leave one run in ten unsolved without contradicting the paper's 5 of 5),
      r_c = r0 otherwise;
    * not shown otherwise. The statement also gives the one-sided 95 %
      Clopper–Pearson lower bound of r (for k = n: α^(1/n), 0.55 at n = 5, 0.69 at n = 8).

    What the rule can say (exact, :func:`success_rate_outcome_probabilities`):

    * 100 % claims. n = 5: shown iff 5/5, contradicted iff k ≤ 2, not shown
      for 3 or 4. n = 8: shown iff 8/8, contradicted iff k ≤ 5, not shown for 6 or
      7. P(shown) at a true rate r is r^n: n = 5: 0.774 (r = 0.95), 0.590 (0.9),
      0.168 (0.7); n = 8: 0.663, 0.430, 0.058. P(contradicted): n = 5: 0.0086
      (r = 0.9, the level under r_c), 0.163 (0.7), 0.500 (0.5), 0.683 (0.4);
      n = 8: 0.038 (0.9), 0.448 (0.7), 0.855 (0.5), 0.950 (0.4).
    * random permutation (2 of 5, r0 = 0.4, floor 0.2, r_c = 0.4). n = 5: shown iff
      k ≥ 4 (P(X ≥ 4 | 5, 0.2) = 0.0067); contradicted never (P(X = 0 | 5, 0.4) =
      0.078 > α): only "shown" or "not shown" can come out. n = 8: shown iff
      k ≥ 5, contradicted iff k = 0 (0.6^8 = 0.017). The paper's own 2 of 5 would
      be "not shown": five runs cannot separate 40 % from 20 %.
    """
    name = claim or f"success_rate/{task}"
    claimed = PAPER_RATES.get(task) if claimed is None else claimed
    test = "exact one-sided binomial tests of the success rate"
    if claimed is None:
        return _not_tested(name, test, f"no claimed success rate for task {task!r}", alpha)
    k0, n0 = claimed
    r0 = k0 / n0
    runs = [r for r in _members(records) if r.get("task") == task and _optimizer(r, default_optimizer) == optimizer]
    _index(runs, ("task", "lengths", "seed"))  # one record per seed
    if not runs:
        return _not_tested(name, test, f"no {optimizer} runs of {task}", alpha)
    k, n = sum(_solved(r) for r in runs), len(runs)
    d = success_rate_decision(k, n, r0, alpha)
    cp_low = clopper_pearson_interval(k, n, 1 - alpha, "greater")[0]
    wl, wh = wilson_interval(k, n, 1 - alpha)
    paper = f"{100 * r0:g} %"
    target = "every run solved" if r0 == 1 else f"rate ≥ {r0:g}"
    test = (f"exact one-sided binomial tests: shown if {target} and P(X ≥ k | n, {d['floor']:g}) ≤ α; "
            f"contradicted if P(X ≤ k | n, {d['against_rate']:g}) ≤ α")
    above = f"p = P(X ≥ {k} | {n}, {d['floor']:g}) = {_fmt_p(d['p_above_floor'])}"
    below = f"p against = P(X ≤ {k} | {n}, {d['against_rate']:g}) = {_fmt_p(d['p_against'])}"
    first = (f"{target}, {above}" if d["reaches_claim"] else
             ("not every run solved" if r0 == 1 else f"rate {k / n:.2f} < {r0:g}") + ", so p = 1")
    words = (f"{first} {'≤' if d['outcome'] == 'shown' else '>'} α; "
             f"{below} {'≤' if d['outcome'] == 'contradicted' else '>'} α → {d['outcome']}")
    level = f"{100 * (1 - alpha):g} %"
    statement = (f"{optimizer} solved {k} of {n} runs of {task} (paper: {paper}, {k0} of {n0}); Wilson {level} "
                 f"[{wl:.2f}, {wh:.2f}], one-sided {level} Clopper–Pearson lower bound {cp_low:.2f}; {test}: "
                 f"{words}, α = {alpha:g}.")
    return Verdict(claim=name, outcome=d["outcome"], test=test, statistic={"solved": k, "runs": n},
                   p_value=d["p_value"], p_against=d["p_against"], alpha=alpha, n_pairs=n, statement=statement,
                   details={"claimed": [k0, n0], "floor": d["floor"], "against_rate": d["against_rate"],
                            "p_above_floor": d["p_above_floor"], "reaches_claim": d["reaches_claim"],
                            "clopper_pearson_low": cp_low, "wilson": [wl, wh]})


# ---------------------------------------------------------------- a whole run


def temporal_order_verdicts(records: Iterable[Mapping], alpha: float = ALPHA,
                            long_lengths: Optional[Sequence[int]] = None,
                            short_lengths: Optional[Sequence[int]] = None) -> List[Verdict]:
    """The temporal-order claims on a run's raw member records (``results.jsonl`` of
    :func:`rnn_jax.repro.experiments.temporal_order.run`): clipping vs length, CR ≥ C, sigmoid fails most."""
    records = list(records)
    return [clipping_grows_with_length(records, alpha, long_lengths, short_lengths),
            regulariser_helps(records, alpha),
            sigmoid_fails_most(records, alpha)]


def pathological_verdicts(records: Iterable[Mapping], alpha: float = ALPHA,
                          claimed: Optional[Mapping[str, Tuple[int, int]]] = None,
                          tasks: Optional[Sequence[str]] = None) -> List[Verdict]:
    """The pathological claims on a run's raw records (``results.jsonl`` of
    :func:`rnn_jax.repro.experiments.pathological.run`): per task, the success-rate claim and,
    where MSGD-C control members exist, CR ≥ C (records without ``optimizer`` are MSGD-CR)."""
    records = _members(records)
    claimed = dict(PAPER_RATES if claimed is None else claimed)
    names = list(tasks) if tasks is not None else list(dict.fromkeys(r.get("task") for r in records))
    out = []
    for t in names:
        recs = [r for r in records if r.get("task") == t]
        out.append(success_rate_claim(recs, t, claimed.get(t), alpha))
        out.append(regulariser_helps(recs, alpha, pair_on=("task", "lengths", "seed"), per=None,
                                     default_optimizer="MSGD-CR", claim=f"regulariser/{t}"))
    return out
