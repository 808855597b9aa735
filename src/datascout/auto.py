"""``auto``: coverage until successive models agree on the pool, then uncertainty.

The rule, per query:

* **Binary tasks** (rare-concept search): MaxEnt (entropy) from the first labeled round, as
  before; for two classes it ranks items as margin does.
* **Multiclass, no label yet**: the ``coverage`` strategy (TypiClust by default): it needs no
  model.
* **Multiclass**: fit the model, predict every candidate, and compare with the predictions the
  previous query's model made on the same candidates. While fewer than ``agreement`` (95%) of
  them keep their predicted class, the model is still learning what the classes are and its
  uncertainty is not yet worth following: coverage. From the first query where at least 95%
  agree, Cluster-Margin for good (the switch is not undone; ``uncertainty="margin"`` for plain
  margin). Citovsky et al. designed Cluster-Margin for batches of thousands; at batches of 100
  it measured level with margin on Satellite and clearly better on Letter, where margin stays
  below random (its batches pile into a few confusable letters; the round-robin over clusters
  spreads them), so it is the default at every batch size.

Why agreement, and why 95%: logistic regression fitted on growing random samples (batches of
100) first reached 95% agreement between successive models at 1,200 labels on Letter (26
classes, 46 per class) and at 500 on Satellite (6 classes, 83 per class); on fortunes MiniLM
(43 classes) not by 2,000 labels (0.936 at 1,900). Over those budgets margin was below random on
Letter at 18 of 19 budgets and on fortunes at 15 of 19, and above it on Satellite from the first
batch; TypiClust was above random on Letter and fortunes at every budget and level with it on
Satellite. Agreement hands over once the model's view of the pool has settled, without a number
of rounds or labels tuned to one data set. Its known cost: where margin pays from the first
batch, the coverage rounds are labels spent for little (Fashion-MNIST PCA-64: the switch came
after 900 labels and auto needed 79% of random's 2,000 labels where margin needed 48%). Figures: ``docs/benchmarks.md``, "Reading coverage
and auto".
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
COVERAGE = ("typiclust", "probcover")
UNCERTAINTY = ("cluster-margin", "margin")


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
    """Coverage (``coverage``: ``"typiclust"`` or ``"probcover"``) until two successive models
    agree on at least ``agreement`` of the candidates' predicted classes, then ``uncertainty``
    (``"cluster-margin"`` or ``"margin"``); entropy for binary tasks.
    ``last_query_["auto"]`` names the strategy each query used and ``last_query_["agreement"]``
    the agreement it measured."""

    name = "auto"

    def __init__(self, agreement: float = DEFAULT_AGREEMENT, coverage: str = "typiclust",
                 uncertainty: str = "cluster-margin"):
        if not 0.0 < agreement <= 1.0:
            raise ValidationError(f"agreement must be in (0, 1] but is {agreement}")
        if coverage not in COVERAGE:
            raise ValidationError(f"coverage must be one of {', '.join(COVERAGE)} but is {coverage!r}")
        if uncertainty not in UNCERTAINTY:
            raise ValidationError(f"uncertainty must be one of {', '.join(UNCERTAINTY)} but is {uncertainty!r}")
        self.agreement = float(agreement)
        self.coverage = coverage
        self.uncertainty = uncertainty

    def phase(self, n_labeled: int, n_classes: int, agreement: float | None,
              switched: bool = False) -> str:
        """The strategy the rule picks after ``n_labeled`` labels, given the agreement just
        measured (``None``: none yet) and whether an earlier query switched."""
        if n_classes == 2 and n_labeled > 0:
            return "entropy"
        if n_labeled == 0:
            return self.coverage
        if switched or (agreement is not None and agreement >= self.agreement):
            return self.uncertainty
        return self.coverage

    def choose(self, inputs: SelectInputs, b: int) -> np.ndarray:
        n_labeled = len(inputs.labeled_positions)
        avail = inputs.available
        switched = bool(inputs.cache.get("auto-switched", False))
        probs, agreement = None, None
        if n_labeled > 0 and inputs.n_classes > 2 and not switched:
            probs = inputs.probs(avail)
            pos = avail if inputs.positions is None else np.asarray(inputs.positions)[avail]
            order = np.argsort(pos, kind="stable")
            current = (pos[order], probs.argmax(axis=1)[order])
            previous = inputs.cache.get("auto-predictions")
            if previous is not None:
                agreement = prediction_agreement(previous, current)
            inputs.cache["auto-predictions"] = current
            inputs.info["agreement"] = agreement
        phase = self.phase(n_labeled, inputs.n_classes, agreement, switched)
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
                f"uncertainty={self.uncertainty!r})")
