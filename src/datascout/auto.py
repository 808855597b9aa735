"""``auto``: coverage while the labels are few for the number of classes, then uncertainty.

The rule (measured; see ``docs/benchmarks.md``, "Label efficiency: coverage, BADGE,
Cluster-Margin and auto"):

* **Binary tasks** (rare-concept search): MaxEnt (entropy) from the first round, as before;
  for two classes it ranks items as margin does.
* **Multiclass, few labels per class**: while the labeled set holds fewer than
  ``labels_per_class`` labels per class (``n_labeled < labels_per_class * n_classes``),
  the ``coverage`` strategy (TypiClust by default). With no label at all this is the only
  choice that needs no model.
* **Then margin**, and Cluster-Margin (margin diversified over a clustering computed once) when
  the batch is large: ``b >= large_batch`` and ``b`` is at least a tenth of the unlabeled
  candidates' clusters' worth (Citovsky et al. designed it for batches of thousands and more;
  at batches of 100 it measured no better than margin here).

Where this sits among the measurements: on the four multiclass data sets run (digits, Letter,
Satellite, fortunes MiniLM), coverage led margin while the labels were below about
``DEFAULT_LABELS_PER_CLASS`` per class and margin led after; the switch uses that point.
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

DEFAULT_LABELS_PER_CLASS = 20.0
DEFAULT_LARGE_BATCH = 1000
COVERAGE = ("typiclust", "probcover")


class Auto(SelectingStrategy):
    """Coverage (``coverage``: ``"typiclust"`` or ``"probcover"``) below ``labels_per_class``
    labels per class, then margin (Cluster-Margin for batches of ``large_batch`` or more);
    entropy for binary tasks. ``last_query_["auto"]`` names the phase each query used."""

    name = "auto"

    def __init__(self, labels_per_class: float = DEFAULT_LABELS_PER_CLASS, coverage: str = "typiclust",
                 large_batch: int = DEFAULT_LARGE_BATCH):
        if not np.isfinite(labels_per_class) or labels_per_class < 0:
            raise ValidationError(f"labels_per_class must be a finite number >= 0 but is {labels_per_class}")
        if coverage not in COVERAGE:
            raise ValidationError(f"coverage must be one of {', '.join(COVERAGE)} but is {coverage!r}")
        if int(large_batch) != large_batch or large_batch < 1:
            raise ValidationError(f"large_batch must be an integer >= 1 but is {large_batch!r}")
        self.labels_per_class = float(labels_per_class)
        self.coverage = coverage
        self.large_batch = int(large_batch)

    def phase(self, n_labeled: int, n_classes: int, b: int) -> str:
        """The strategy the rule picks for a query of ``b`` after ``n_labeled`` labels."""
        if n_classes == 2 and n_labeled > 0:
            return "entropy"
        if n_labeled == 0 or n_labeled < self.labels_per_class * n_classes:
            return self.coverage
        return "cluster-margin" if b >= self.large_batch else "margin"

    def select(self, inputs: SelectInputs, b: int) -> np.ndarray:
        phase = self.phase(len(inputs.labeled_positions), inputs.n_classes, b)
        inputs.info["auto"] = phase
        if phase == "typiclust":
            return typiclust_select(inputs, b)
        if phase == "probcover":
            return probcover_select(inputs, b)
        if phase == "cluster-margin":
            return cluster_margin_select(inputs, b)
        avail = inputs.available
        p = inputs.probs(avail)
        s = entropy(p) if phase == "entropy" else margin(p)
        return avail[top_b(s, b, inputs.rng)]

    def __repr__(self):
        return (f"Auto(labels_per_class={self.labels_per_class}, coverage={self.coverage!r}, "
                f"large_batch={self.large_batch})")
