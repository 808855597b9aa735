"""Samplers: scores -> a boolean keep mask. :func:`keep_top` (top or bottom fraction),
:func:`keep_class_balanced` (top within each class, with quotas) and :func:`keep_ccs`
(coverage-centric stratified sampling, Zheng et al. 2023)."""

from __future__ import annotations

import math

import numpy as np

from datascout.exceptions import ValidationError


def check_fraction(fraction, name: str = "fraction") -> float:
    """A fraction kept must lie in (0, 1]."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a number in (0, 1] but is {fraction!r}") from None
    if not (0.0 < f <= 1.0) or math.isnan(f):
        raise ValidationError(f"{name} must be in (0, 1] but is {fraction}")
    return f


def n_to_keep(fraction: float, n: int) -> int:
    """``round(fraction * n)``, at least 1, at most ``n``."""
    return int(min(n, max(1, math.floor(fraction * n + 0.5))))


def _rank(scores: np.ndarray, largest: bool, rng) -> np.ndarray:
    """Positions by score (largest first when ``largest``), ties in random order."""
    key = -scores if largest else scores
    return np.lexsort((rng.random(len(scores)), key))


def keep_top(scores, fraction: float, *, largest: bool = True, random_state: int = 0) -> np.ndarray:
    """Keep the ``round(fraction * N)`` highest scores (lowest with ``largest=False``); ties
    broken at random, reproducibly."""
    scores = np.asarray(scores, dtype=np.float64)
    fraction = check_fraction(fraction)
    k = n_to_keep(fraction, len(scores))
    keep = np.zeros(len(scores), dtype=bool)
    keep[_rank(scores, largest, np.random.default_rng(random_state))[:k]] = True
    return keep


def class_quotas(counts, n_keep: int, balance: str = "proportional") -> np.ndarray:
    """Split ``n_keep`` over classes of sizes ``counts``.

    * ``"proportional"``: each class keeps its share ``n_keep * n_c / N``; the rounding is
      settled by largest remainder (ties to the lower class id), so the quotas sum to ``n_keep``.
      A class whose share rounds to 0 still keeps 1 item, taken from the largest quota, as long
      as ``n_keep`` covers one item per class.
    * ``"equal"``: the same number per class (water-filling): a class smaller than its share
      keeps all its items and the rest is spread over the others; leftover units go to the
      largest classes first.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if balance == "proportional":
        exact = n_keep * counts / n
        q = np.floor(exact).astype(np.int64)
        rest = n_keep - int(q.sum())
        if rest:
            q[np.lexsort((np.arange(len(counts)), -(exact - q)))[:rest]] += 1
        if n_keep >= int((counts > 0).sum()):
            for c in np.flatnonzero((counts > 0) & (q == 0)):  # a rare class is not pruned away
                donor = int(np.lexsort((np.arange(len(q)), -(q - exact), -q))[0])
                q[donor] -= 1
                q[c] = 1
        return q
    if balance == "equal":
        q = np.zeros(len(counts), dtype=np.int64)
        open_ = counts > 0
        budget = n_keep
        while budget > 0 and open_.any():
            share = budget // int(open_.sum())
            if share == 0:
                cand = np.flatnonzero(open_ & (q < counts))
                cand = cand[np.lexsort((cand, -(counts[cand] - q[cand])))][:budget]
                q[cand] += 1
                break
            add = np.minimum(share, counts - q) * open_
            q += add
            budget -= int(add.sum())
            open_ &= q < counts
        return q
    raise ValidationError(f"unknown balance {balance!r}: expected 'proportional' or 'equal'")


def keep_class_balanced(scores, labels, fraction: float, *, largest: bool = True,
                        balance: str = "proportional", random_state: int = 0) -> np.ndarray:
    """Keep the top (or bottom) scores within each class, each class keeping its quota from
    :func:`class_quotas` so that pruning cannot empty a class."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    fraction = check_fraction(fraction)
    n = len(scores)
    counts = np.bincount(labels)
    quota = class_quotas(counts, n_to_keep(fraction, n), balance)
    order = _rank(scores, largest, np.random.default_rng(random_state))
    # stable sort of the ranked order by class: within each class, best first
    by_class = order[np.argsort(labels[order], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_in_class = np.arange(n) - starts[labels[by_class]]
    keep = np.zeros(n, dtype=bool)
    keep[by_class[rank_in_class < quota[labels[by_class]]]] = True
    return keep


def ccs_strata(scores, n_strata: int) -> np.ndarray:
    """Stratum of each score: the range [min, max] split into ``n_strata`` equal-width bins
    (the maximum falls in the last)."""
    scores = np.asarray(scores, dtype=np.float64)
    lo, hi = scores.min(), scores.max()
    if hi == lo:
        return np.zeros(len(scores), dtype=np.int64)
    return np.minimum(((scores - lo) / (hi - lo) * n_strata).astype(np.int64), n_strata - 1)


def ccs_budget(stratum_sizes, budget: int) -> np.ndarray:
    """Zheng et al. 2023, Algorithm 1: visit strata from the smallest; each takes
    ``min(size, floor(remaining budget / strata left))``."""
    sizes = np.asarray(stratum_sizes, dtype=np.int64)
    take = np.zeros(len(sizes), dtype=np.int64)
    left = budget
    visit = [s for s in np.lexsort((np.arange(len(sizes)), sizes)) if sizes[s] > 0]
    for i, s in enumerate(visit):
        take[s] = min(sizes[s], left // (len(visit) - i))
        left -= take[s]
    return take


def keep_ccs(scores, fraction: float, *, beta: float = 0.1, n_strata: int = 50,
             random_state: int = 0) -> np.ndarray:
    """Coverage-centric coreset selection (Zheng et al. 2023) on difficulty scores (higher =
    harder): drop the hardest ``beta`` of the items (likely mislabeled), split the remaining
    score range into ``n_strata`` equal-width strata, spread the budget evenly over them with
    :func:`ccs_budget`, and sample uniformly within each stratum. ``beta`` is lowered to
    ``1 - fraction`` when it would leave fewer items than the budget."""
    scores = np.asarray(scores, dtype=np.float64)
    fraction = check_fraction(fraction)
    if not 0.0 <= beta < 1.0:
        raise ValidationError(f"CCS beta must be in [0, 1) but is {beta}")
    if n_strata < 1:
        raise ValidationError(f"CCS n_strata must be >= 1 but is {n_strata}")
    n = len(scores)
    rng = np.random.default_rng(random_state)
    k = n_to_keep(fraction, n)
    n_drop = min(int(math.floor(beta * n)), n - k)
    ranked = _rank(scores, True, rng)  # hardest first
    rest = ranked[n_drop:]
    stratum = ccs_strata(scores[rest], n_strata)
    take = ccs_budget(np.bincount(stratum, minlength=n_strata), k)
    # uniform sample within each stratum: random keys, then the first `take` of each stratum
    order = np.lexsort((rng.random(len(rest)), stratum))
    sizes = np.bincount(stratum, minlength=n_strata)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos_in = np.arange(len(rest)) - starts[stratum[order]]
    keep = np.zeros(n, dtype=bool)
    keep[rest[order[pos_in < take[stratum[order]]]]] = True
    return keep
