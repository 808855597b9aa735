"""The one entry point, :func:`prune`: a score from the table :data:`SCORERS`, a sampler from the
table :data:`SAMPLERS`, and the keep/drop table it returns (:class:`PruneResult`)."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from datascout.exceptions import MissingDependencyError, ValidationError
from datascout.io import atomic_write_bytes, atomic_write_text
from datascout.pool import check_embeddings, check_ids
from datascout.prune.samplers import check_fraction, keep_ccs, keep_class_balanced, keep_top
from datascout.prune.scores import (el2n_scores, forgetting_scores, prototype_keep_hard, prototype_scores,
                                    random_scores)
from datascout.prune.semdedup import semdedup


def check_labels(labels, n: int, *, required: bool = True) -> np.ndarray | None:
    """Integer class ids, one per item, none missing (``-1``)."""
    if labels is None:
        if required:
            raise ValidationError(f"labels are missing: expected one class id for each of the {n} items")
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValidationError(f"labels has shape {labels.shape} but expected ({n},): one per item")
    if labels.dtype.kind not in "iu":
        raise ValidationError(f"labels must be integer class ids but have dtype {labels.dtype}")
    missing = int((labels < 0).sum())
    if missing:
        raise ValidationError(
            f"labels are missing for {missing} of {n} items (label -1): pruning needs every item labeled"
        )
    return labels.astype(np.int64)


@dataclass
class PruneConfig:
    """What :func:`prune` does.

    method : one of :data:`METHODS` (the names of :data:`SCORERS`).
    fraction : fraction kept in (0, 1]; ``None`` only for ``semdedup``, which then keeps every
        item that is not a near-duplicate at ``eps``.
    sampler : one of :data:`SAMPLER_NAMES`: ``auto`` (prototypes: :func:`prototype_keep_hard`;
        others: top), or a name of :data:`SAMPLERS`: ``top`` (highest scores), ``bottom``,
        ``class-balanced`` (top within each class, ``balance`` quotas), ``ccs``.
    """

    method: str = "el2n"
    fraction: float | None = 0.5
    sampler: str = "auto"
    n_clusters: int = 100
    eps: float = 0.05
    n_models: int = 5
    el2n_epochs: int = 2
    forgetting_epochs: int = 10
    ccs_beta: float = 0.1
    ccs_strata: int = 50
    balance: str = "proportional"
    random_state: int = 0


@dataclass
class PruneResult:
    """Keep/drop table (``ids``, ``scores``, ``kept``) and how it was made.

    ``direction`` is one of :data:`DIRECTIONS`: ``"higher kept"`` (the highest scores, overall or
    within each class), ``"lower kept"``, ``"stratified"`` (CCS: spread over the score range) or
    ``"threshold"`` (SemDeDup without a fraction: every item with score >= eps). ``sampler`` is
    the sampler that ran (``auto`` resolved; ``threshold`` for SemDeDup without a fraction); the
    sampler's parameters are in ``config``.
    """

    ids: np.ndarray
    scores: np.ndarray
    kept: np.ndarray
    config: PruneConfig
    direction: str
    labels: np.ndarray | None = None
    sampler: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        n, k = len(self.kept), int(self.kept.sum())
        out = {
            "method": self.config.method, "sampler": self.sampler or self.config.sampler,
            "direction": self.direction,
            "items": n, "kept": k, "dropped": n - k, "fraction_kept": k / n,
            "score_min": float(self.scores.min()), "score_max": float(self.scores.max()),
            "score_mean": float(self.scores.mean()),
            "seconds": round(self.seconds, 3), "config": asdict(self.config),
        }
        if self.labels is not None:
            before = np.bincount(self.labels)
            after = np.bincount(self.labels[self.kept], minlength=len(before))
            out["per_class"] = [{"class": c, "items": int(before[c]), "kept": int(after[c])}
                                for c in range(len(before))]
        out.update(self.extra)
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "score", "kept"])
        w.writerows(zip(self.ids.tolist(), [repr(float(s)) for s in self.scores],
                        self.kept.astype(int).tolist()))
        return buf.getvalue()

    def write(self, path) -> Path:
        """Write the table as ``.csv`` or ``.parquet`` (atomically)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            atomic_write_text(path, self.to_csv())
        elif suffix in (".parquet", ".pq"):
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise MissingDependencyError("writing Parquet needs pyarrow: pip install 'datascout[parquet]'") from exc
            table = pa.table({"id": self.ids, "score": self.scores.astype(np.float64), "kept": self.kept})
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf)
            atomic_write_bytes(path, buf.getvalue().to_pybytes())
        else:
            raise ValidationError(f"the keep/drop table must be .csv or .parquet but is {path.name!r}")
        return path

    def write_summary(self, path) -> Path:
        atomic_write_text(path, json.dumps(self.summary(), indent=2))
        return Path(path)


# -- the two tables: scorers (name -> scores of every item) and samplers (scores -> keep mask)


def _random(X, labels, cfg):
    return random_scores(X.shape[0], cfg.random_state), {}


def _prototypes(X, labels, cfg):
    s, cluster = prototype_scores(X, cfg.n_clusters, random_state=cfg.random_state)
    return s, {"cluster": cluster}


def _el2n(X, labels, cfg):
    return el2n_scores(X, labels, int(labels.max()) + 1, n_models=cfg.n_models, epochs=cfg.el2n_epochs,
                       random_state=cfg.random_state), {}


def _forgetting(X, labels, cfg):
    return forgetting_scores(X, labels, int(labels.max()) + 1, epochs=cfg.forgetting_epochs,
                             random_state=cfg.random_state), {}


def _semdedup(X, labels, cfg):
    res = semdedup(X, cfg.n_clusters, random_state=cfg.random_state)
    return res.score, {"duplicate_of": res.duplicate_of, "cluster": res.cluster}


# name -> (scores(X, labels, cfg) -> (scores, extra), needs labels, uses n_clusters)
SCORERS = {
    "prototypes": (_prototypes, False, True),
    "el2n": (_el2n, True, False),
    "forgetting": (_forgetting, True, False),
    "semdedup": (_semdedup, False, True),
    "random": (_random, False, False),
}
METHODS = tuple(SCORERS)
LABEL_METHODS = tuple(name for name, (_, needs_labels, _) in SCORERS.items() if needs_labels)

DIRECTIONS = ("higher kept", "lower kept", "stratified", "threshold")

# name -> (keep(scores, labels, cfg) -> boolean mask, direction, needs labels)
SAMPLERS = {
    "top": (lambda s, y, c: keep_top(s, c.fraction, largest=True, random_state=c.random_state),
            "higher kept", False),
    "bottom": (lambda s, y, c: keep_top(s, c.fraction, largest=False, random_state=c.random_state),
               "lower kept", False),
    "class-balanced": (lambda s, y, c: keep_class_balanced(s, y, c.fraction, balance=c.balance,
                                                           random_state=c.random_state),
                       "higher kept", True),
    "ccs": (lambda s, y, c: keep_ccs(s, c.fraction, beta=c.ccs_beta, n_strata=c.ccs_strata,
                                     random_state=c.random_state), "stratified", False),
}
SAMPLER_NAMES = ("auto", *SAMPLERS)


def _unknown(what: str, name, names) -> ValidationError:
    return ValidationError(f"unknown {what} {name!r}: expected one of {', '.join(names)}")


def validate_config(cfg: PruneConfig, n: int, labels) -> None:
    if cfg.method not in SCORERS:
        raise _unknown("pruning method", cfg.method, METHODS)
    if cfg.sampler not in SAMPLER_NAMES:
        raise _unknown("sampler", cfg.sampler, SAMPLER_NAMES)
    _, needs_labels, uses_clusters = SCORERS[cfg.method]
    if cfg.fraction is None:
        if cfg.method != "semdedup":
            raise ValidationError(f"a fraction kept in (0, 1] is needed for method {cfg.method!r}")
    else:
        check_fraction(cfg.fraction)
    if uses_clusters:
        if cfg.n_clusters < 1:
            raise ValidationError(f"n_clusters must be >= 1 but is {cfg.n_clusters}")
        if n < cfg.n_clusters:
            raise ValidationError(f"there are {n} items but {cfg.n_clusters} clusters were asked for: "
                                  "expected at least as many items as clusters")
    if cfg.method == "semdedup" and not 0.0 < cfg.eps < 2.0:
        raise ValidationError(f"eps must be in (0, 2) but is {cfg.eps}")
    sampler_needs_labels = cfg.sampler in SAMPLERS and SAMPLERS[cfg.sampler][2]
    if labels is None and (needs_labels or sampler_needs_labels):
        what = f"method {cfg.method!r}" if needs_labels else f"the {cfg.sampler} sampler"
        raise ValidationError(f"labels are missing: {what} needs one class id for each of the {n} items")
    for name in ("n_models", "el2n_epochs", "forgetting_epochs", "ccs_strata"):
        if getattr(cfg, name) < 1:
            raise ValidationError(f"{name} must be >= 1 but is {getattr(cfg, name)}")


def compute_scores(X, labels, cfg: PruneConfig):
    """The score of ``cfg.method`` for every item (validated input). Returns ``(scores, extra)``."""
    if cfg.method not in SCORERS:
        raise _unknown("pruning method", cfg.method, METHODS)
    return SCORERS[cfg.method][0](X, labels, cfg)


def resolve_sampler(cfg: PruneConfig) -> str:
    """The sampler that runs for ``cfg``: ``auto`` resolved (prototypes: top when keeping hard items,
    else bottom; other methods: top), ``threshold`` for SemDeDup without a fraction."""
    if cfg.method == "semdedup" and cfg.fraction is None:
        return "threshold"
    if cfg.sampler == "auto":
        return ("top" if prototype_keep_hard(cfg.fraction) else "bottom") if cfg.method == "prototypes" else "top"
    if cfg.sampler not in SAMPLERS:
        raise _unknown("sampler", cfg.sampler, SAMPLER_NAMES)
    return cfg.sampler


def select(scores, labels, cfg: PruneConfig):
    """Apply the sampler of ``cfg`` to scores. Returns ``(kept, direction)``, ``direction`` one of
    :data:`DIRECTIONS`."""
    name = resolve_sampler(cfg)
    if name == "threshold":
        return scores >= cfg.eps, "threshold"
    keep, direction, _ = SAMPLERS[name]
    return keep(scores, labels, cfg), direction


def prune(embeddings, labels=None, config: PruneConfig | None = None, *, ids=None) -> PruneResult:
    """Score every item with ``config.method`` and keep a fraction with ``config.sampler``.

    ``labels``: integer class ids, none missing; needed by EL2N, forgetting and the
    class-balanced sampler (optional otherwise). ``ids``: item ids for the table (default 0..N-1).
    """
    cfg = config or PruneConfig()
    X = check_embeddings(embeddings)
    n = X.shape[0]
    labels = check_labels(labels, n, required=False)
    ids = check_ids(ids, n)
    validate_config(cfg, n, labels)
    t0 = time.perf_counter()
    scores, extra = compute_scores(X, labels, cfg)
    kept, direction = select(scores, labels, cfg)
    seconds = time.perf_counter() - t0
    summary_extra = {}
    if cfg.method == "semdedup":
        summary_extra["near_duplicates_at_eps"] = int((scores < cfg.eps).sum())
    return PruneResult(ids=np.arange(n) if ids is None else ids, scores=np.asarray(scores, dtype=np.float64),
                       kept=kept, config=cfg, direction=direction, labels=labels, seconds=seconds,
                       extra=summary_extra, sampler=resolve_sampler(cfg))
