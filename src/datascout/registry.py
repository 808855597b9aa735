"""The one registry of query strategies: :data:`STRATEGIES` (name -> builder, one line of help),
:data:`STRATEGY_NAMES` and :func:`make_strategy`, one spelling each.

It sits above every module that defines a strategy (:mod:`datascout.strategies`, and
:mod:`datascout.coverage` / :mod:`datascout.auto`, which build on it), so naming them all needs no
import upwards; the CLI, the loop, the simulation, the Ray scorer and the campaign read it.
"""

from __future__ import annotations

import difflib

from datascout import auto, coverage
from datascout import multilabel as ml
from datascout.exceptions import ValidationError
from datascout.strategies import (
    BALD,
    Entropy,
    Hybrid,
    InformationDensity,
    KCenter,
    LeastConfidence,
    Margin,
    MostLikelyPositive,
    RandomSampling,
    Strategy,
    VoteEntropy,
)

# name -> builder(beta, positive, n_members, hybrid_m), one line of help
STRATEGIES = {
    "random": (lambda o: RandomSampling(), "uniformly random (the baseline)"),
    "entropy": (lambda o: Entropy(), "MaxEnt: entropy of the predicted class distribution"),
    "margin": (lambda o: Margin(), "smallest gap between the two most probable classes"),
    "least-confidence": (lambda o: LeastConfidence(), "1 - the highest class probability"),
    "density": (lambda o: InformationDensity(o["beta"]),
                "information density: entropy x mean cosine to the unlabeled pool ** beta"),
    "most-likely-positive": (lambda o: MostLikelyPositive(o["positive"]),
                             "active search: P(positive class) (rare concepts)"),
    "bald": (lambda o: BALD(o["n_members"]), "mutual information over a bootstrap committee"),
    "committee": (lambda o: VoteEntropy(o["n_members"]), "vote entropy of a bootstrap committee"),
    "kcenter": (lambda o: KCenter(), "core-set diversity (k-center greedy)"),
    "hybrid": (lambda o: Hybrid(Entropy(), o["hybrid_m"]), "top m*b by entropy, then k-center greedy"),
    "hybrid-margin": (lambda o: Hybrid(Margin(), o["hybrid_m"]), "top m*b by margin, then k-center greedy"),
    "hybrid-bald": (lambda o: Hybrid(BALD(o["n_members"]), o["hybrid_m"]),
                    "top m*b by BALD, then k-center greedy"),
    "hybrid-committee": (lambda o: Hybrid(VoteEntropy(o["n_members"]), o["hybrid_m"]),
                         "top m*b by vote entropy, then k-center greedy"),
    # batch-selecting strategies (datascout.coverage, datascout.auto)
    "typiclust": (lambda o: coverage.TypiClust(), "TypiClust: the most typical item of the least-labeled clusters"),
    "probcover": (lambda o: coverage.ProbCover(), "ProbCover: greedy maximum coverage of pure delta-balls"),
    "kcenter-cold": (lambda o: coverage.ColdStartKCenter(),
                     "k-center greedy among the dense items (cold start: the densest first)"),
    "badge": (lambda o: coverage.BADGE(), "BADGE: k-means++ seeding over gradient embeddings"),
    "cluster-margin": (lambda o: coverage.ClusterMargin(o["hybrid_m"]),
                       "smallest m*b margins, round-robin over clusters"),
    "auto": (lambda o: auto.Auto(), "TypiClust until the model is confident or successive models agree, then margin / Cluster-Margin"),
}
STRATEGY_NAMES = tuple(STRATEGIES)


def make_strategy(name: str, *, beta: float = 1.0, positive: int = 1, n_members: int = 5,
                  hybrid_m: int = 10) -> Strategy:
    """Build a strategy from its registry name (:data:`STRATEGY_NAMES`); one spelling each."""
    if name not in STRATEGIES:
        close = difflib.get_close_matches(str(name), STRATEGY_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValidationError(f"unknown strategy {name!r}{hint}: expected one of {', '.join(STRATEGY_NAMES)}")
    build, _ = STRATEGIES[name]
    return build({"beta": beta, "positive": positive, "n_members": n_members, "hybrid_m": hybrid_m})


# --------------------------------------------------------------------------- multi-label

def _multilabel_strategies():
    scored = {
        "mean-entropy": (ml.MeanEntropy, "mean over labels of the binary entropy"),
        "max-entropy": (ml.MaxEntropy, "the largest binary entropy over labels"),
        "min-margin": (ml.MinMargin, "the label closest to its boundary: -min |2p - 1| (Brinker 2006)"),
        "mmc": (ml.MMC, "expected loss of the most confident label set (Yang et al. 2009)"),
        "lci": (ml.LabelCardinalityInconsistency,
                "label cardinality inconsistency: |#predicted - mean labeled cardinality| (Li & Guo 2013)"),
        "adaptive": (ml.Adaptive, "max-margin uncertainty^0.5 x cardinality inconsistency^0.5 "
                                           "(Li & Guo 2013)"),
        "max-loss": (ml.MaxLoss, "largest hinge loss of the predicted label set (Li et al. 2004)"),
        "mean-max-loss": (ml.MeanMaxLoss, "mean hinge loss of the predicted label set (Li et al. 2004)"),
    }
    table = {"random": (lambda o: RandomSampling(), "uniformly random (the baseline)")}
    table.update({name: (lambda o, make=make: make(), text) for name, (make, text) in scored.items()})
    table["kcenter"] = (lambda o: KCenter(), "core-set diversity (k-center greedy)")
    table.update({f"hybrid-{name}": (lambda o, make=make: ml.MultiLabelHybrid(make(), o["hybrid_m"]),
                                     f"top m*b by {name}, then k-center greedy")
                  for name, (make, _) in scored.items()})
    return table


# name -> builder(options), one line of help: the strategies of a multi-label task (label sets)
MULTILABEL_STRATEGIES = _multilabel_strategies()
MULTILABEL_STRATEGY_NAMES = tuple(MULTILABEL_STRATEGIES)


def make_multilabel_strategy(name: str, *, hybrid_m: int = 10) -> Strategy:
    """Build a multi-label strategy from its name (:data:`MULTILABEL_STRATEGY_NAMES`)."""
    if name not in MULTILABEL_STRATEGIES:
        close = difflib.get_close_matches(str(name), MULTILABEL_STRATEGY_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValidationError(f"unknown multi-label strategy {name!r}{hint}: expected one of "
                              f"{', '.join(MULTILABEL_STRATEGY_NAMES)}")
    build, _ = MULTILABEL_STRATEGIES[name]
    return build({"hybrid_m": hybrid_m})
