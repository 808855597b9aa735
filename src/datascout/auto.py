"""``auto``: coverage while the model is weak and unsettled, then uncertainty.

The rule, per query:

* **Binary tasks** (rare-concept search): MaxEnt (entropy) from the first labeled round, as
  before; for two classes it ranks items as margin does.
* **Multiclass, no label yet**: the ``coverage`` strategy (TypiClust by default): it needs no
  model.
* **Multiclass**: fit the model and predict every candidate. Leave coverage, for good, at the
  first query where either

  - the model's **own expected accuracy**, the mean over the candidates of its top class
    probability, is at least ``confidence`` (0.75), or
  - **two successive models agree** on at least ``agreement`` (95%) of the candidates'
    predicted classes.

  After that, each query takes margin while the mean top probability is at least
  ``confidence`` and Cluster-Margin below it (``uncertainty="by-confidence"``, the default;
  ``"margin"`` or ``"cluster-margin"`` fix one of them).

Why these two signals. Uncertainty sampling pays when the model it follows is nearly right:
Mussmann & Liang (ICML 2018) show that its data efficiency falls as the error the model
converges to grows, and that it can do worse than random sampling when that error is high; the
low-budget regime of Hacohen et al. (2022) is where the model is still learning what the classes
are. A model's mean top probability is its own estimate of its accuracy, available from the
first labeled round and without held-out labels. Agreement between successive models says its
view of the pool has settled even when its probabilities stay low (an under-confident model).
Neither is a number of rounds or labels per class.

What was measured (balanced logistic regression on growing random samples, seed 0): the mean
top probability at 100 / 1,000 / 2,000 labels was 0.82 / 0.85 / 0.85 on Satellite, 0.79 / 0.84 /
0.83 on Fashion-MNIST PCA-64 (where margin beat random from the first batch in the benchmark),
0.45 / 0.62 / 0.65 on Letter and 0.05 / 0.11 / 0.17 on fortunes MiniLM (where margin stayed below
random to 2,000 labels); 0.75 lies between the two groups, but close to Fashion-MNIST
PCA-64's seed models (0.75 - 0.80 over the benchmark's three seeds). Agreement first
reached 95% at 1,200 labels on Letter and not by 2,000 on fortunes (0.936 at 1,900). After the
switch: Cluster-Margin from the first batch fell below random on Fashion-MNIST PCA-64 (0.795
against 0.808 at 2,000 labels, seed 0) where margin gains (0.821), while on Letter, whose model
stays unsure, margin's batches pile into a few confusable letters and stay below random and
Cluster-Margin's round-robin over clusters stays above it: hence margin for a confident model,
Cluster-Margin for one that is only settled. Figures: ``docs/benchmarks.md``, "Reading auto,
second pass".
"""

from __future__ import annotations

import numpy as np

from datascout.coverage import (
    SelectingStrategy,
    SelectInputs,
    cluster_margin_select,
    probcover_select,
    typiclust_select,
)
from datascout.exceptions import ValidationError
from datascout.strategies import entropy, margin, top_b

DEFAULT_AGREEMENT = 0.95
DEFAULT_CONFIDENCE = 0.75
COVERAGE = ("typiclust", "probcover")
UNCERTAINTY = ("by-confidence", "cluster-margin", "margin")


def prediction_agreement(previous, current) -> float | None:
    """Share of the items in both ``(positions, predicted classes)`` pairs whose predicted class
    is the same; ``None`` when they have no item in common."""
    p_pos, p_pred = previous
    c_pos, c_pred = current
    common, pi, ci = np.intersect1d(p_pos, c_pos, assume_unique=True, return_indices=True)
    if len(common) == 0:
        return None
    return float(np.mean(p_pred[pi] == c_pred[ci]))


class Auto(SelectingStrategy):
    """Coverage (``coverage``: ``"typiclust"`` or ``"probcover"``) until the model's mean top
    probability over the candidates reaches ``confidence`` or two successive models agree on at
    least ``agreement`` of the candidates' predicted classes, then ``uncertainty``
    (``"cluster-margin"`` or ``"margin"``); entropy for binary tasks. ``confidence=1`` leaves the
    agreement alone to decide. ``last_query_["auto"]`` names the strategy each query used,
    ``last_query_["agreement"]`` and ``last_query_["confidence"]`` what it measured."""

    name = "auto"

    def __init__(self, agreement: float = DEFAULT_AGREEMENT, coverage: str = "typiclust",
                 uncertainty: str = "by-confidence", confidence: float = DEFAULT_CONFIDENCE):
        if not 0.0 < agreement <= 1.0:
            raise ValidationError(f"agreement must be in (0, 1] but is {agreement}")
        if not 0.0 < confidence <= 1.0:
            raise ValidationError(f"confidence must be in (0, 1] but is {confidence}")
        if coverage not in COVERAGE:
            raise ValidationError(f"coverage must be one of {', '.join(COVERAGE)} but is {coverage!r}")
        if uncertainty not in UNCERTAINTY:
            raise ValidationError(f"uncertainty must be one of {', '.join(UNCERTAINTY)} but is {uncertainty!r}")
        self.agreement = float(agreement)
        self.coverage = coverage
        self.uncertainty = uncertainty
        self.confidence = float(confidence)

    def phase(self, n_labeled: int, n_classes: int, agreement: float | None,
              switched: bool = False, confidence: float | None = None) -> str:
        """The strategy the rule picks after ``n_labeled`` labels, given the agreement and the
        mean top probability just measured (``None``: none yet) and whether an earlier query
        switched."""
        if n_classes == 2 and n_labeled > 0:
            return "entropy"
        if n_labeled == 0:
            return self.coverage
        confident = confidence is not None and self.confidence < 1.0 and confidence >= self.confidence
        if not (switched or confident or (agreement is not None and agreement >= self.agreement)):
            return self.coverage
        if self.uncertainty == "by-confidence":
            return "margin" if confident else "cluster-margin"
        return self.uncertainty

    def choose(self, inputs: SelectInputs, b: int) -> np.ndarray:
        n_labeled = len(inputs.labeled_positions)
        avail = inputs.available
        switched = bool(inputs.cache.get("auto-switched", False))
        probs, agreement, confidence = None, None, None
        if n_labeled > 0 and inputs.n_classes > 2:
            probs = inputs.probs(avail)
            if not switched:
                pos = avail if inputs.positions is None else np.asarray(inputs.positions)[avail]
                order = np.argsort(pos, kind="stable")
                current = (pos[order], probs.argmax(axis=1)[order])
                previous = inputs.cache.get("auto-predictions")
                if previous is not None:
                    agreement = prediction_agreement(previous, current)
                inputs.cache["auto-predictions"] = current
            if len(probs) and len(np.unique(inputs.labeled_classes)) >= 2:  # one class: p = 1, no estimate
                confidence = float(probs.max(axis=1).mean())
            inputs.info["agreement"] = agreement
            inputs.info["confidence"] = confidence
        phase = self.phase(n_labeled, inputs.n_classes, agreement, switched, confidence)
        inputs.info["auto"] = phase
        if phase in ("margin", "cluster-margin"):
            inputs.cache["auto-switched"] = True
            inputs.cache.pop("auto-predictions", None)
        if phase == "typiclust":
            return typiclust_select(inputs, b)
        if phase == "probcover":
            return probcover_select(inputs, b)
        if phase == "cluster-margin":
            return cluster_margin_select(inputs, b)
        p = inputs.probs(avail) if probs is None else probs
        s = entropy(p) if phase == "entropy" else margin(p)
        return avail[top_b(s, b, inputs.rng)]

    def __repr__(self):
        return (f"Auto(agreement={self.agreement}, coverage={self.coverage!r}, "
                f"uncertainty={self.uncertainty!r}, confidence={self.confidence})")
