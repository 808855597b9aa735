"""Dataset pruning: score labeled data, keep the part that trains as well as the whole.

* :mod:`~datascout.prune.scores`: one score per item (higher = harder = more worth keeping unless
  a function says otherwise): the prototype metric (Sorscher et al. 2022), EL2N (Paul et al.
  2021), forgetting events (Toneva et al. 2019), the random baseline; faiss :func:`kmeans`.
* :mod:`~datascout.prune.semdedup`: SemDeDup (Abbas et al. 2023), near-duplicates within k-means
  clusters.
* :mod:`~datascout.prune.samplers`: scores -> keep mask (:func:`keep_top`,
  :func:`keep_class_balanced`, :func:`keep_ccs`, Zheng et al. 2023).
* :mod:`~datascout.prune.proxy`: :class:`SoftmaxRegression`, the proxy model of EL2N and forgetting.
* :mod:`~datascout.prune.api`: :func:`prune`, one scorer of :data:`SCORERS` and one sampler of
  :data:`SAMPLERS` (an unknown name is an error), returning a :class:`PruneResult`.
* :mod:`~datascout.prune.evaluate`: accuracy vs fraction kept (:func:`evaluate_pruning`), its plot.
"""

from datascout.prune.api import (
    DIRECTIONS,
    LABEL_METHODS,
    METHODS,
    SAMPLER_NAMES,
    SAMPLERS,
    SCORERS,
    PruneConfig,
    PruneResult,
    check_labels,
    compute_scores,
    prune,
    resolve_sampler,
    select,
    validate_config,
)
from datascout.prune.evaluate import evaluate_pruning, plot_accuracy_vs_fraction
from datascout.prune.proxy import SoftmaxRegression
from datascout.prune.samplers import (
    ccs_budget,
    ccs_strata,
    check_fraction,
    class_quotas,
    keep_ccs,
    keep_class_balanced,
    keep_top,
    n_to_keep,
)
from datascout.prune.scores import (
    el2n,
    el2n_scores,
    forgetting_events,
    forgetting_scores,
    kmeans,
    prototype_keep_hard,
    prototype_scores,
    random_scores,
)
from datascout.prune.semdedup import SemDeDupResult, semdedup

__all__ = [
    "DIRECTIONS", "LABEL_METHODS", "METHODS", "SAMPLERS", "SAMPLER_NAMES", "SCORERS", "PruneConfig",
    "PruneResult", "SemDeDupResult", "SoftmaxRegression", "ccs_budget", "ccs_strata", "check_fraction",
    "check_labels", "class_quotas", "compute_scores", "el2n", "el2n_scores",
    "evaluate_pruning", "forgetting_events", "forgetting_scores", "keep_ccs", "keep_class_balanced",
    "keep_top", "kmeans", "n_to_keep", "plot_accuracy_vs_fraction", "prototype_keep_hard",
    "prototype_scores", "prune", "random_scores", "resolve_sampler", "select", "semdedup",
    "validate_config",
]
