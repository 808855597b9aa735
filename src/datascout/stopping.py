"""When labeling more stops paying: stopping rules for active learning, as pure functions.

Each round yields a few measurements (one number each, ``None`` where it cannot be measured
yet); a rule reads their history and fires at the first round where its measurement, averaged
over its last ``window`` rounds, passes its threshold. :func:`round_signals` computes the
measurements from arrays, :func:`stopping_rounds` applies the rules (:data:`RULES`).

* ``stabilizing-predictions`` (Bloodgood & Vijay-Shanker, CoNLL 2009): Cohen's kappa between the
  predictions of successive models on a fixed *stop set* of pool items, drawn once at random;
  fires when the mean of the last 3 kappas is at least 0.99.
* ``overall-uncertainty`` (Zhu, Wang & Hovy 2008): the mean normalised entropy
  (entropy / log K, in [0, 1]) of the model's probabilities on the stop set's unlabeled items.
* ``max-uncertainty`` (Zhu et al. 2008): the largest normalised entropy among the items the
  round selected (the most informative item the model can still find).
* ``classification-change`` (Zhu et al. 2008): the share of the stop set's items whose predicted
  class changed since the previous model; the original stops at no change at all.
* ``selected-accuracy`` (Zhu et al. 2008): the accuracy of the previous model on the batch just
  labeled, before it learns from it.
* ``recall`` (rare concepts): the lower end of the 95% interval of the estimated recall of
  positives, ``found / (found + remaining)`` (the interval, not the point estimate: an audit
  sample without a positive yet puts the remaining positives at 0, the recall at 1), with the positives
  remaining among the unlabeled items estimated from a uniform random audit sample where one
  exists (Wilson interval of its prevalence), else from the model's calibrated scores on the stop
  set's unlabeled items (their sum after Platt scaling on the labeled items' out-of-fold
  probabilities, :func:`datascout.labels.calibrated_positive_probs`; docs/benchmarks.md).
* ``gain``: the estimated gain of the next round: the least-squares slope of the (audit) quality
  over the labels of the last 4 rounds, times the batch size (in a campaign only once the audit
  interval is at most 0.1 wide).
* ``budget``: the labels used reach the budget.

Scores follow the library's convention: every measurement is a plain float; a threshold is
compared with ``>=`` (kappa, accuracy, recall, labels) or ``<=`` (uncertainty, change, gain).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datascout.exceptions import ValidationError

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(k: float, n: int, z: float = Z95) -> list:
    """The Wilson score interval of a proportion k / n ([0, 1] when n is 0)."""
    if n <= 0:
        return [0.0, 1.0]
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


@dataclass(frozen=True)
class StoppingRule:
    """``signal`` (a key of :func:`round_signals`), averaged over the last ``window`` rounds,
    compared with ``threshold`` by ``op`` (``">="`` or ``"<="``)."""

    name: str
    signal: str
    op: str
    threshold: float
    window: int = 1
    help: str = ""

    def passes(self, value: float) -> bool:
        return value >= self.threshold if self.op == ">=" else value <= self.threshold


RULES = {
    r.name: r for r in (
        StoppingRule("stabilizing-predictions", "kappa", ">=", 0.99, 3,
                     "mean Cohen's kappa of successive models on the stop set over the last 3 rounds >= 0.99"),
        StoppingRule("overall-uncertainty", "uncertainty", "<=", 0.05, 1,
                     "mean normalised entropy on the stop set's unlabeled items <= 0.05"),
        StoppingRule("max-uncertainty", "max_uncertainty", "<=", 0.2, 1,
                     "largest normalised entropy among the selected items <= 0.2"),
        StoppingRule("classification-change", "changed", "<=", 0.0, 1,
                     "no stop-set item changed its predicted class since the previous model"),
        StoppingRule("selected-accuracy", "selected_accuracy", ">=", 0.9, 1,
                     "the previous model was right on >= 90% of the batch just labeled"),
        StoppingRule("recall", "recall_lower", ">=", 0.75, 1,
                     "lower end of the 95% interval of the estimated recall of positives >= 0.75 (rare concepts)"),
        StoppingRule("gain", "gain", "<=", 0.002, 1,
                     "estimated gain of the next round (slope of the last 4 rounds x batch) <= 0.002"),
    )
}
BUDGET = "budget"
RULE_NAMES = (*RULES, BUDGET)


def normalized_entropy(probs) -> np.ndarray:
    """Entropy of each row of ``probs`` divided by log(K): 0 = certain, 1 = uniform."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValidationError(f"probs must be a 2-d array of at least 2 classes but has shape {p.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return h / np.log(p.shape[1])


def kappa(previous, current, n_classes: int) -> float:
    """Cohen's kappa between two label vectors (1.0 when they are identical, also when only one
    class occurs, where the formula is 0/0)."""
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(previous), np.asarray(current)
    if a.shape != b.shape:
        raise ValidationError(f"the two predictions have {len(a)} and {len(b)} items: expected the same stop set")
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b, labels=list(range(n_classes))))


def recall_estimate(found: int, remaining: float, remaining_ci) -> dict:
    """Estimated recall of positives ``found / (found + remaining)`` and its interval from the
    interval of the positives remaining (more remaining = lower recall)."""
    lo, hi = (float(remaining_ci[0]), float(remaining_ci[1])) if remaining_ci is not None else (remaining, remaining)

    def r(rem):
        return float(found / (found + rem)) if found + rem > 0 else 0.0

    return {"value": r(remaining), "ci": [r(hi), r(lo)], "found": int(found), "remaining": float(remaining)}


def remaining_from_sample(positives_in_sample: float, sample_size: int, n_unlabeled: int) -> tuple:
    """Positives estimated among ``n_unlabeled`` items from a uniform sample of them holding
    ``positives_in_sample`` (a count, or the sum of calibrated probabilities), with the Wilson
    interval of the prevalence scaled up."""
    if sample_size <= 0:
        return None, None
    prev = positives_in_sample / sample_size
    lo, hi = wilson_interval(positives_in_sample, sample_size)
    return float(prev * n_unlabeled), [float(lo * n_unlabeled), float(hi * n_unlabeled)]


def next_round_gain(labeled, values, *, window: int = 4, step: float | None = None) -> float | None:
    """The quality the next round is expected to add: the least-squares slope of ``values``
    over ``labeled`` across the last ``window`` points, times ``step`` (default: the last
    batch, ``labeled[-1] - labeled[-2]``). ``None`` with fewer than ``window`` points."""
    x = np.asarray(labeled, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if window < 2:
        raise ValidationError(f"window must be >= 2 but is {window}")
    if len(x) < window or not np.isfinite(v[-window:]).all():
        return None
    x, v = x[-window:], v[-window:]
    if np.ptp(x) == 0:
        return None
    slope = np.polyfit(x, v, 1)[0]
    step = float(x[-1] - x[-2]) if step is None else float(step)
    return float(slope * step)


def add_gain(history: list, metric: str, *, labeled_key: str = "labeled", window: int = 4,
             ci_key: str | None = None, max_width: float = 0.1) -> list:
    """Set ``gain`` (:func:`next_round_gain` over the rounds so far) in each per-round dict of
    ``history`` (in place; also returned). With ``ci_key`` (each round's 95% interval of the
    metric, e.g. an audit sample's), a round whose interval is wider than ``max_width`` gets no
    gain: a slope read off estimates that loose says nothing."""
    labeled = [h[labeled_key] for h in history]
    values = [np.nan if h.get(metric) is None else h[metric] for h in history]
    for i, h in enumerate(history):
        ci = h.get(ci_key) if ci_key else None
        loose = ci_key is not None and (ci is None or ci[1] - ci[0] > max_width)
        h["gain"] = None if loose else next_round_gain(labeled[:i + 1], values[:i + 1], window=window)
    return history


def round_signals(*, stop_probs=None, previous_stop_pred=None, unlabeled_mask=None, selected_probs=None,
                  selected_pred=None, selected_labels=None, n_classes: int | None = None) -> dict:
    """The measurements of one round (keys of :data:`RULES`' signals; ``None`` where the input
    is missing). ``stop_probs``: the new model's probabilities on the stop set;
    ``previous_stop_pred``: the previous model's predicted classes there; ``unlabeled_mask``:
    which stop-set items are still unlabeled (all when omitted); ``selected_probs``: the
    probabilities, before labeling, of the items this round selected; ``selected_pred`` and
    ``selected_labels``: the previous model's guesses on the batch just labeled and the labels
    it got."""
    out = {"kappa": None, "changed": None, "uncertainty": None, "max_uncertainty": None,
           "selected_accuracy": None}
    if stop_probs is not None:
        sp = np.asarray(stop_probs, dtype=np.float64)
        K = n_classes or sp.shape[1]
        pred = sp.argmax(axis=1)
        mask = np.ones(len(sp), dtype=bool) if unlabeled_mask is None else np.asarray(unlabeled_mask, dtype=bool)
        if mask.any():
            out["uncertainty"] = float(normalized_entropy(sp[mask]).mean())
        if previous_stop_pred is not None:
            prev = np.asarray(previous_stop_pred)
            out["kappa"] = kappa(prev, pred, K)
            out["changed"] = float(np.mean(prev != pred))
    if selected_probs is not None and len(selected_probs):
        out["max_uncertainty"] = float(normalized_entropy(selected_probs).max())
    if selected_pred is not None and selected_labels is not None and len(selected_labels):
        out["selected_accuracy"] = float(np.mean(np.asarray(selected_pred) == np.asarray(selected_labels)))
    return out


def rule_round(history: list, rule: StoppingRule) -> int | None:
    """Index in ``history`` (a list of per-round signal dicts) of the first round at which
    ``rule`` fires: its signal known for each of the last ``window`` rounds and their mean
    passing the threshold. ``None`` if it never does."""
    vals = [h.get(rule.signal) for h in history]
    for i in range(rule.window - 1, len(vals)):
        last = vals[i - rule.window + 1: i + 1]
        if all(v is not None and np.isfinite(v) for v in last) and rule.passes(float(np.mean(last))):
            return i
    return None


def budget_round(labeled, budget: int | None) -> int | None:
    """Index of the first round whose labels reach ``budget`` (``None``: no budget or not reached)."""
    if budget is None:
        return None
    if budget <= 0:
        raise ValidationError(f"the label budget must be > 0 but is {budget}")
    hit = np.flatnonzero(np.asarray(labeled) >= budget)
    return int(hit[0]) if len(hit) else None


def check_rules(rules) -> dict:
    """``rules``: ``None`` (every rule of :data:`RULES`) or ``{name: threshold}`` overriding
    thresholds; returns ``{name: StoppingRule}``."""
    if rules is None:
        return dict(RULES)
    unknown = [n for n in rules if n not in RULES]
    if unknown:
        raise ValidationError(f"unknown stopping rule {unknown[0]!r}: expected one of {', '.join(RULES)}")
    from dataclasses import replace

    return {n: replace(RULES[n], threshold=float(t)) for n, t in rules.items()}


def stopping_rounds(history: list, *, rules=None, budget: int | None = None, labeled_key: str = "labeled") -> dict:
    """``{rule name: index of the round where it first fires, or None}`` for every rule (and
    ``budget`` when one is given) over ``history``, a list of per-round dicts holding the
    signals and the labels used (``labeled_key``)."""
    out = {name: rule_round(history, rule) for name, rule in check_rules(rules).items()}
    if budget is not None:
        out[BUDGET] = budget_round([h[labeled_key] for h in history], budget)
    return out


def stopping_report(history: list, fired: dict, *, metric: str, labeled_key: str = "labeled",
                    round_key: str = "round", rules=None) -> dict:
    """Per rule: the round it fired at, the labels used then, the metric then and at the last
    round, the labels saved (share of the final labels) and the measurement that fired it."""
    table = check_rules(rules)
    last = history[-1]
    out = {}
    for name, i in fired.items():
        rule = table.get(name)
        entry = {"round": None, "threshold": None if rule is None else rule.threshold,
                 "signal": None if rule is None else rule.signal}
        if i is not None:
            h = history[i]
            entry.update({
                "round": h[round_key], "labeled": h[labeled_key], "metric": h.get(metric),
                "final_metric": last.get(metric), "final_labeled": last[labeled_key],
                "labels_saved": (1 - h[labeled_key] / last[labeled_key]) if last[labeled_key] else 0.0,
                "metric_lost": (None if h.get(metric) is None or last.get(metric) is None
                                else float(last[metric] - h[metric])),
                "value": None if rule is None else h.get(rule.signal),
            })
        out[name] = entry
    return out
