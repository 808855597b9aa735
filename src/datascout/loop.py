"""The active-learning loop state: ``ActiveLearner.query(n) -> ids`` and ``teach(ids, labels)``.

The learner holds the one mutable state of a campaign or a simulation: which items are
labeled, with what (``labels_``, the only record of it), and with SEALS its candidate set, which
reads ``labels_`` and never keeps its own copy. Each round the learner takes one read-only
:class:`~datascout.pool.CandidateView` (the whole pool, or the candidate set) and hands it to the
strategy, which chooses the batch itself (:meth:`~datascout.strategies.Strategy.select`); a
strategy that declares ``needs_inputs`` also gets a :class:`~datascout.coverage.SelectInputs`
(:meth:`ActiveLearner.select_inputs`). Strategies stay stateless: what a batch-selecting strategy
computes once per learner (a clustering, a graph) lives in the learner's ``cache_``.
"""

from __future__ import annotations

import time

import numpy as np

from datascout.convert import Float32Rows, as_float32
from datascout.coverage import SelectInputs
from datascout.exceptions import LabelingError, ValidationError
from datascout.models import BootstrapCommittee, FittedModel, default_model
from datascout.pool import UNLABELED, CandidateView, Pool, iter_row_chunks, row_norms, unit_rows_sum
from datascout.registry import make_strategy
from datascout.seals import CandidatePool
from datascout.strategies import ScoreInputs, Strategy, cosine_to_direction

HELD_OUT = -2
# the one table of density references: name -> what Information Density measures similarity to
DENSITY_REFERENCES = {
    "pool": "the exact mean cosine to the whole unlabeled pool",
    "candidates": "the mean cosine to the SEALS candidate set C",
    "neighbors": "the mean cosine to the item's unlabeled kNN-graph neighbours",
}


class ActiveLearner:
    """Pool-based active learning over embeddings.

    Parameters
    ----------
    pool : Pool or array of shape (N, d)
    n_classes : int
        Number of task classes (labels are ``0..n_classes-1``).
    strategy : str or Strategy
        Default ``"auto"`` (:class:`datascout.auto.Auto`): TypiClust until the model is confident
        or settled, then margin or Cluster-Margin; entropy (MaxEnt) for two classes.
    model : scikit-learn classifier, optional
        Default: ``LogisticRegression(class_weight="balanced")``.
    candidates : CandidatePool, optional
        SEALS candidate pool; without it every unlabeled item is a candidate.
    density_reference : {"pool", "candidates", "neighbors"}
        What Information Density measures similarity against inside SEALS: the exact mean
        cosine to the whole unlabeled pool (maintained in O(new labels * d) per round after one
        O(N d) pass), the mean cosine to the candidate set C, or the mean cosine to the item's
        unlabeled graph neighbours. Without SEALS it is always the whole unlabeled pool.
    holdout : array of pool positions, optional
        Items that are not part of the pool to label (e.g. a test split kept in the same
        embeddings file): never queried, never candidates, not in the density reference.
    random_state : int, optional
    """

    def __init__(self, pool, n_classes: int, strategy: str | Strategy = "auto", *, model=None,
                 candidates: CandidatePool | None = None, density_reference: str = "pool",
                 holdout=None, random_state=None):
        self.pool = pool if isinstance(pool, Pool) else Pool(pool)
        if int(n_classes) < 2:
            raise ValidationError(f"n_classes must be >= 2 but is {n_classes}")
        self.n_classes = int(n_classes)
        self.strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
        if not isinstance(self.strategy, Strategy):
            raise ValidationError(f"strategy must be a name or a Strategy, got {type(strategy).__name__}")
        self.model = model if model is not None else default_model(random_state)
        if not (hasattr(self.model, "fit") and hasattr(self.model, "predict_proba")):
            raise ValidationError(f"model must have fit and predict_proba, got {type(self.model).__name__}")
        self.strategy.check(self.n_classes)
        self._check_strategy_kind()
        if candidates is not None and candidates.embeddings.shape != self.pool.embeddings.shape:
            raise ValidationError(
                f"the candidate pool covers {candidates.embeddings.shape[0]} items but the pool has {len(self.pool)}"
            )
        if density_reference not in DENSITY_REFERENCES:
            raise ValidationError(
                f"density_reference must be one of {', '.join(DENSITY_REFERENCES)} but is {density_reference!r}"
            )
        if density_reference == "neighbors" and candidates is not None and candidates.graph is None:
            raise ValidationError(
                "density_reference='neighbors' needs a kNN graph but the candidate pool queries an index on the fly")
        self.candidates = candidates
        self.density_reference = density_reference
        self.rng = np.random.default_rng(random_state)
        self.random_state = random_state
        n = len(self.pool)
        self.labels_ = np.full(n, UNLABELED, dtype=np.int64)
        self.labeled_order_: list[np.ndarray] = []  # positions, in the order they were taught
        self.n_labeled_ = 0
        self.n_holdout_ = 0
        self.model_ = None
        self.committee_ = None
        self._stale = True
        self._unit_sum_all = None
        self._norms_all = None  # every pool row's norm, filled by the first full density pass
        self._pool_rows = None  # the pool's rows as float32 chunks (pool_rows)
        self._unit_sum_labeled = np.zeros(self.pool.dim, dtype=np.float64)  # labeled + held out
        self.last_query_ = {}
        self.cache_ = {}  # structures a batch-selecting strategy computes once per learner
        if holdout is not None:
            holdout = np.unique(np.asarray(holdout, dtype=np.int64))
            if len(holdout) and (holdout[0] < 0 or holdout[-1] >= n):
                bad = int(holdout[0] if holdout[0] < 0 else holdout[-1])
                raise ValidationError(f"holdout positions must be in 0..{n - 1} but include {bad}")
            self.labels_[holdout] = HELD_OUT
            self.n_holdout_ = len(holdout)
            self._unit_sum_labeled += unit_rows_sum(self.pool.embeddings, holdout)
        # the learner's own candidate set: the CandidatePool passed in is never changed
        density = self.strategy.needs_similarity
        self.candidates_ = None if candidates is None else candidates.start(
            self.labels_, norms=density and density_reference != "neighbors",
            unit_sum=density and density_reference == "candidates")
        # the pool's own labels are taught, except on held-out items: those stay out of training
        # (a pool loaded with ground truth for every item, test split included, is common)
        labeled = np.flatnonzero((self.pool.labels != UNLABELED) & (self.labels_ != HELD_OUT))
        if len(labeled):
            self._teach_positions(labeled, self.pool.labels[labeled])

    multi_label = False  # label sets (datascout.multilabel_loop.MultiLabelLearner) or one class each

    def _check_strategy_kind(self) -> None:
        """A strategy that reads a model or the labels is for single-label or multi-label tasks;
        random and k-center work on either."""
        s = self.strategy
        if not (s.needs_probs or s.needs_committee or s.needs_similarity or s.needs_inputs):
            return
        if bool(getattr(s, "multi_label", False)) != self.multi_label:
            task, other = ("multi-label", "single-label") if self.multi_label else ("single-label", "multi-label")
            raise ValidationError(f"strategy {s.name!r} is for {other} tasks but this learner's task is {task}")

    def _score_inputs(self, rows: np.ndarray) -> ScoreInputs:
        """The :class:`ScoreInputs` a chunk of rows starts from (before probabilities)."""
        return ScoreInputs(embeddings=rows)

    # -- state ---------------------------------------------------------------------------

    @property
    def labeled_positions(self) -> np.ndarray:
        return np.concatenate(self.labeled_order_) if self.labeled_order_ else np.empty(0, np.int64)

    @property
    def n_unlabeled(self) -> int:
        return len(self.pool) - self.n_labeled_ - self.n_holdout_

    def teach(self, ids, labels) -> None:
        """Record labels for ``ids``. Rejects size mismatches, duplicate ids, unknown ids, ids
        already labeled and unknown classes; on any error nothing is recorded."""
        ids = np.asarray(ids)
        labels = np.asarray(labels)
        if ids.ndim != 1 or labels.ndim != 1:
            raise LabelingError(f"ids and labels must be 1-D, got shapes {ids.shape} and {labels.shape}")
        positions = self._new_positions(ids, len(labels))
        labels = self._class_ids(labels)
        self._teach_positions(positions, labels)

    def _new_positions(self, ids: np.ndarray, n_labels: int) -> np.ndarray:
        """The pool positions of ``ids`` (1-D) about to be taught ``n_labels`` labels: rejects a
        size mismatch, no id, duplicate, unknown, held-out and already labeled ids."""
        if len(ids) != n_labels:
            raise LabelingError(f"got {len(ids)} ids but {n_labels} labels")
        if len(ids) == 0:
            raise LabelingError("teach needs at least 1 id, got 0")
        positions = self.pool.positions(ids)
        uniq, counts = np.unique(positions, return_counts=True)
        if (counts > 1).any():
            dup = self.pool.ids_at(uniq[counts > 1][:1]).tolist()[0]
            raise LabelingError(f"id {dup!r} occurs {int(counts.max())} times in one teach call")
        held = self.labels_[positions] == HELD_OUT
        if held.any():
            raise LabelingError(f"id {ids[held].tolist()[0]!r} is held out (e.g. in the test split), not in the pool")
        already = self.labels_[positions] != UNLABELED
        if already.any():
            raise LabelingError(f"id {ids[already].tolist()[0]!r} is already labeled")
        return positions

    def relabel(self, ids, labels) -> None:
        """Replace the labels of ``ids``, already labeled (a review changed its mind); the model
        is refitted at the next ``fit``. Rejects what ``teach`` rejects, and unlabeled ids."""
        ids, labels = np.asarray(ids), np.asarray(labels)
        if ids.ndim != 1 or len(ids) != len(labels):
            raise LabelingError(f"got {len(ids)} ids but {len(labels)} labels")
        positions = self.pool.positions(ids)
        if len(np.unique(positions)) != len(positions):
            raise LabelingError("an id occurs more than once in one relabel call")
        unlabeled = self.labels_[positions] < 0
        if unlabeled.any():
            raise LabelingError(f"id {ids[unlabeled].tolist()[0]!r} is not labeled: teach it first")
        self.labels_[positions] = self._class_ids(labels)
        self._stale = True

    def _class_ids(self, labels: np.ndarray) -> np.ndarray:
        if labels.dtype.kind in "iu":
            bad = (labels < 0) | (labels >= self.n_classes)
            if bad.any():
                raise LabelingError(f"unknown class {labels[bad].tolist()[0]!r}: expected a class id in 0..{self.n_classes - 1}")
            return labels.astype(np.int64)
        names = self.pool.classes
        if names is None:
            raise LabelingError(f"labels must be integer class ids but have dtype {labels.dtype}")
        index = {c: i for i, c in enumerate(names)}
        out = np.empty(len(labels), dtype=np.int64)
        for i, v in enumerate(labels.tolist()):
            if v not in index:
                raise LabelingError(f"unknown class {v!r}: expected one of {names}")
            out[i] = index[v]
        return out

    def _teach_positions(self, positions: np.ndarray, labels: np.ndarray) -> None:
        self.labels_[positions] = labels
        self.labeled_order_.append(np.asarray(positions, dtype=np.int64))
        self.n_labeled_ += len(positions)
        ordered = np.sort(positions)  # sequential reads of a memory map
        self._unit_sum_labeled += unit_rows_sum(self.pool.embeddings, ordered)
        if self.candidates_ is not None:
            self.candidates_.add_labeled(ordered)
        self._stale = True

    def _labeled_embeddings(self) -> np.ndarray:
        """The labeled items' embeddings (float32, pool order): k-center's initial centers."""
        return np.asarray(self.pool.embeddings[np.sort(self.labeled_positions)], dtype=np.float32)

    def prepare(self) -> "ActiveLearner":
        """Make now the one-time pass over the pool that later queries would otherwise make in
        their first round: for Information Density against the whole pool, the sum of the pool's
        unit vectors and every row's norm (O(N d), once per learner; later rounds update the sum
        in O(new labels * d)). Nothing to do for the other strategies. Returns ``self``."""
        if self.strategy.needs_similarity:
            self._density_direction()
        return self

    # -- model ---------------------------------------------------------------------------

    def fit(self) -> "ActiveLearner":
        """Fit the model (and the committee, for committee strategies) on the labeled items."""
        pos = np.sort(self.labeled_positions)
        if len(pos) == 0:
            raise ValidationError("no labeled items yet: teach a seed set before fitting")
        X = np.asarray(self.pool.embeddings[pos], dtype=np.float32)
        y = self.labels_[pos]
        self.model_ = FittedModel(self.model, self.n_classes).fit(X, y)
        if self.strategy.needs_committee:
            self.committee_ = BootstrapCommittee(
                self.model, self.n_classes, self.strategy.n_members,
                random_state=int(self.rng.integers(2**31))).fit(X, y)
        self._stale = False
        return self

    def predict_proba(self, X) -> np.ndarray:
        if self.model_ is None or self._stale:
            self.fit()
        return self.model_.predict_proba(X)

    # -- query ---------------------------------------------------------------------------

    def query(self, n: int):
        """The ids of the ``n`` items to label next, best first.

        With SEALS, candidates are the labeled items' neighbours; when fewer than ``n`` exist
        (e.g. before any label) the batch is completed with uniformly random unlabeled items,
        and ``last_query_["padded"]`` says how many. ``last_query_["candidates"]`` counts the
        rows that could be chosen, with the candidate set's random exploration items
        (``"explored"``).
        """
        n = int(n)
        if n <= 0:
            raise ValidationError(f"batch size must be > 0 but is {n}")
        if n > self.n_unlabeled:
            raise ValidationError(f"batch size {n} is larger than the {self.n_unlabeled} unlabeled items")
        t0 = time.perf_counter()
        view = self.view()
        take = min(n, view.n_eligible)
        chosen = np.empty(0, dtype=np.int64)
        info = {}  # what the strategy reports about its choice (SelectInputs.info)
        if take > 0:
            if self.n_labeled_ == 0 and (self.strategy.needs_probs or self.strategy.needs_committee):
                raise ValidationError("no labeled items yet: teach a seed set before a model-based query")
            # a strategy that declares needs_inputs reads the labeled items, the graph, the model
            # and the learner's cache too (datascout.coverage)
            inputs = self.select_inputs(view) if self.strategy.needs_inputs else None
            extra = {} if inputs is None else {"inputs": inputs}
            rows = self.strategy.select(view, take, self.rng, centers=self._labeled_embeddings,
                                        scores=lambda: self.score_rows(
                                            view.embeddings, view.positions, row_norms=view.norms,
                                            skip=view.excluded if view.positions is None else None),
                                        **extra)
            info = {} if inputs is None else inputs.info
            chosen = view.pool_positions(rows)
        padded = n - len(chosen)
        if padded:
            chosen = np.concatenate([chosen, self._random_unlabeled(padded, exclude_positions=chosen)])
        self.last_query_ = {"candidates": view.n_eligible, "explored": view.explored, "padded": int(padded),
                            "seconds": time.perf_counter() - t0, **info}
        return self.pool.ids_at(chosen)

    def view(self) -> CandidateView:
        """This round's rows to choose from: the candidate set (with its exploration items, drawn
        from the learner's generator) or, without SEALS, the whole pool with the labeled and
        held-out items excluded."""
        if self.candidates_ is not None:
            return self.candidates_.view(self.rng)
        excluded = self.labels_ != UNLABELED
        if self.strategy.many_passes:  # k-center: the float32 copy of the scored rows, when the budget holds it
            held = self.pool_rows().held(excluded)
            if held is not None:
                rows, where = held
                return CandidateView.of(rows, where, excluded[where])
        return CandidateView.of(self.pool.embeddings, None, excluded, self._norms_all)

    def select_inputs(self, view: CandidateView) -> SelectInputs:
        """What a strategy with ``needs_inputs`` reads beside ``view``: the labeled items and their
        classes, the SEALS pool's kNN graph (if any), the model's probabilities of rows of the
        view on demand (fitting when stale) and the learner's cache (:attr:`cache_`)."""
        lab = np.sort(self.labeled_positions)
        X = view.embeddings

        def probs(rows):
            if self.model_ is None or self._stale:
                self.fit()
            rows = np.asarray(rows, dtype=np.int64)
            out = np.empty((len(rows), self.n_classes), dtype=np.float64)
            for part in iter_row_chunks(len(rows), 65536):
                out[part] = self.model_.predict_proba(as_float32(X[rows[part]]))
            return out

        return SelectInputs(X=X, positions=view.positions, exclude=view.excluded, labeled_positions=lab,
                            labeled_embeddings=self._labeled_embeddings(), labeled_classes=self.labels_[lab],
                            n_classes=self.n_classes, rng=self.rng,
                            graph=self.candidates.graph if self.candidates is not None else None,
                            probs=probs, cache=self.cache_)

    def score_rows(self, X, positions=None, chunk_rows: int = 65536, row_norms=None, skip=None) -> np.ndarray:
        """Scores of the rows of ``X`` (whose pool positions are ``positions``, or ``None`` when
        ``X`` is the whole pool), computed chunk by chunk. ``row_norms``: the rows' L2 norms if
        already known (the candidate buffer keeps them), for the density term. ``skip`` (whole
        pool only): rows that need no score (labeled, held out); they are not converted to
        float32 and score ``-inf`` (see :class:`datascout.convert.Float32Rows`)."""
        s = self.strategy
        if (s.needs_probs or s.needs_committee) and (self.model_ is None or self._stale):
            self.fit()
        direction = self._density_direction() if s.needs_similarity else None
        if positions is None:  # the whole pool: read through the converter, skipped rows never read
            out = np.full(X.shape[0], -np.inf)
            chunks = self.pool_rows().chunks(skip)
        else:
            out = np.empty(X.shape[0], dtype=np.float64)
            chunks = ((rows, X[rows]) for rows in iter_row_chunks(X.shape[0], chunk_rows))
        for rows, xc in chunks:
            inputs = self._score_inputs(xc)
            if s.needs_similarity and direction is not None and s.needs_probs:
                # one pass over the chunk for both the logits and the projection on the direction
                inputs.probs, dots = self.model_.predict_proba(xc, project=direction)
                norms = (row_norms[rows] if row_norms is not None
                         else self._row_norms(xc, rows if positions is None else positions[rows]))
                inputs.similarity = dots / norms
            elif s.needs_probs:
                inputs.probs = self.model_.predict_proba(xc)
            if s.needs_committee:
                inputs.member_probs = self.committee_.predict_proba_members(xc)
            if s.needs_similarity and inputs.similarity is None:
                if direction is None:
                    inputs.similarity = self.candidates_.neighbor_similarity(positions[rows])
                else:
                    inputs.similarity = cosine_to_direction(xc, direction)
            out[rows] = s.score(inputs)
        return out

    def pool_rows(self) -> Float32Rows:
        """The pool's rows as float32 chunks (kept across rounds: it may hold a float32 copy)."""
        if self._pool_rows is None:
            self._pool_rows = Float32Rows(self.pool.embeddings, finite=True)  # a Pool is finite
        return self._pool_rows

    def _row_norms(self, xc, where) -> np.ndarray:
        """L2 norms (at least 1e-12) of the rows ``xc`` at pool positions ``where``: from the cache
        the density pass fills, else computed."""
        if self._norms_all is not None:
            return self._norms_all[where]
        return row_norms(xc)

    def _density_direction(self):
        """Mean unit vector of the density reference set (``None`` = per-item graph neighbours)."""
        if self.candidates_ is not None and self.density_reference == "candidates":
            return self.candidates_.density_direction()
        if self.candidates_ is not None and self.density_reference == "neighbors":
            return None
        if self._unit_sum_all is None:
            # one pass over the pool: the sum of its unit vectors, and every row's norm (kept: the
            # pool does not change, so later rounds need no norm pass)
            total = np.zeros(self.pool.dim, dtype=np.float64)
            norms = np.empty(len(self.pool), dtype=np.float32)
            for rows in iter_row_chunks(len(self.pool)):
                X = as_float32(self.pool.embeddings[rows], finite=True)
                norms[rows] = row_norms(X)
                total += (X / norms[rows][:, None]).sum(axis=0, dtype=np.float64)
            self._unit_sum_all, self._norms_all = total, norms
        m = max(self.n_unlabeled, 1)
        return ((self._unit_sum_all - self._unit_sum_labeled) / m).astype(np.float32)

    def _random_unlabeled(self, n: int, exclude_positions: np.ndarray) -> np.ndarray:
        """``n`` uniformly random unlabeled positions not in ``exclude_positions`` (rejection
        sampling: O(n) expected while most of the pool is unlabeled)."""
        N = len(self.pool)
        taken = set(exclude_positions.tolist())
        out: list[int] = []
        if self.n_unlabeled - len(taken) < n:
            raise ValidationError(f"only {self.n_unlabeled - len(taken)} unlabeled items remain, asked for {n}")
        if self.n_unlabeled > N // 2:
            while len(out) < n:
                for p in self.rng.integers(0, N, size=2 * (n - len(out))).tolist():
                    if self.labels_[p] == UNLABELED and p not in taken:
                        taken.add(p)
                        out.append(p)
                        if len(out) == n:
                            break
            return np.asarray(out, dtype=np.int64)
        free = np.flatnonzero(self.labels_ == UNLABELED)
        free = free[~np.isin(free, exclude_positions)]
        return self.rng.choice(free, size=n, replace=False)
