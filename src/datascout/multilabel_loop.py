"""The active-learning loop for label sets: :class:`MultiLabelLearner`.

The same loop as :class:`datascout.loop.ActiveLearner` (query -> teach, SEALS candidates, held-out
items, one checked state), where each item's label is a set of task labels. ``labels_`` keeps its
meaning for the rest of the loop and for SEALS (``-1`` unlabeled, ``-2`` held out, ``>= 0``
labeled: here the size of the item's set), so the candidate pool is the neighbours of every
labeled item whatever its labels, an empty set included. The sets themselves live only here,
in teaching order beside ``labeled_order_``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datascout.exceptions import LabelingError, ValidationError
from datascout.loop import ActiveLearner
from datascout.multilabel import MultiLabelScoreInputs, check_label_sets, sets_to_indicator
from datascout.multilabel_models import BinaryRelevance, FittedMultiLabel
from datascout.pool import UNLABELED, Pool
from datascout.registry import make_multilabel_strategy


class MultiLabelLearner(ActiveLearner):
    """Pool-based active learning where each item carries a set of labels.

    Parameters
    ----------
    pool : Pool or array of shape (N, d)
        Its own labels, if any, are single-label and refused: teach the label sets.
    classes : int or sequence of str
        The number of task labels (ids ``0..L-1``) or their names.
    strategy : str or Strategy
        A name of :data:`datascout.registry.MULTILABEL_STRATEGY_NAMES` or a strategy object.
    model : optional
        :class:`~datascout.multilabel_models.BinaryRelevance` (the default, over balanced logistic
        regression) or any scikit-learn estimator fitted on an (n, L) indicator (a
        ``ClassifierChain``, ``MLPClassifier``, ...).
    allow_empty : bool
        Whether an item may be taught the empty set (no label applies).
    candidates, holdout, random_state :
        As for :class:`~datascout.loop.ActiveLearner`.
    """

    multi_label = True

    def __init__(self, pool, classes: int | Sequence[str], strategy="mean-entropy", *, model=None,
                 candidates=None, holdout=None, allow_empty: bool = True, random_state=None):
        if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
            self.classes = None
            n_labels = int(classes)
        else:
            self.classes = [str(c) for c in classes]
            n_labels = len(self.classes)
            if len(set(self.classes)) != n_labels:
                raise ValidationError(f"class names must be unique but are {self.classes}")
        if n_labels < 2:
            raise ValidationError(f"a multi-label task needs at least 2 labels but has {n_labels}")
        if isinstance(strategy, str):
            strategy = make_multilabel_strategy(strategy)
        self.allow_empty = bool(allow_empty)
        self._set_chunks: list[np.ndarray] = []  # (n_i, L) bool, aligned with labeled_order_
        self._cardinality_sum = 0
        pool = pool if isinstance(pool, Pool) else Pool(pool)
        if (pool.labels != UNLABELED).any():
            raise ValidationError("the pool holds single-label class ids: a multi-label learner is taught "
                                  "label sets (teach(ids, sets))")
        super().__init__(pool, n_labels, strategy,
                         model=model if model is not None else BinaryRelevance(random_state=random_state),
                         candidates=candidates, holdout=holdout, random_state=random_state)
        if self.strategy.needs_committee:
            raise ValidationError(f"strategy {self.strategy.name!r} needs a committee, which multi-label "
                                  "learners do not fit")

    @property
    def n_labels(self) -> int:
        return self.n_classes

    @property
    def label_cardinality(self) -> float:
        """The mean number of labels of the labeled items (0 before any label)."""
        return self._cardinality_sum / self.n_labeled_ if self.n_labeled_ else 0.0

    def teach(self, ids, labels) -> None:
        """Record label sets for ``ids``: an (n, L) 0/1 indicator (a numpy array or a scipy
        sparse matrix), or a sequence of n sets (lists, tuples, sets) of class names or label ids.
        Rejects what :meth:`ActiveLearner.teach` rejects, unknown classes, wrong shapes and, unless
        ``allow_empty``, empty sets; on any error nothing is recorded."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise LabelingError(f"ids must be 1-D, got shape {ids.shape}")
        Y = self._label_rows(labels)
        positions = self._new_positions(ids, Y.shape[0])
        self._teach_positions(positions, Y)

    def _label_rows(self, labels) -> np.ndarray:
        try:
            if isinstance(labels, np.ndarray) or (hasattr(labels, "toarray") and hasattr(labels, "nnz")):
                return check_label_sets(labels, self.n_labels, allow_empty=self.allow_empty)
            sets = list(labels)
            names = self.classes if self.classes is not None else list(range(self.n_labels))
            Y = sets_to_indicator(sets, names)
            return check_label_sets(Y, self.n_labels, allow_empty=self.allow_empty)
        except ValidationError as exc:
            raise LabelingError(str(exc)) from None
        except TypeError:
            raise LabelingError(f"labels must be an (n, {self.n_labels}) 0/1 array or a sequence of label sets, "
                                f"got {type(labels).__name__}") from None

    def _teach_positions(self, positions, labels) -> None:
        Y = np.asarray(labels, dtype=bool)
        card = Y.sum(axis=1).astype(np.int64)
        self._set_chunks.append(Y)
        self._cardinality_sum += int(card.sum())
        super()._teach_positions(positions, card)

    def label_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, Y)``: the labeled items' pool positions, sorted, and their (n, L) sets."""
        if not self._set_chunks:
            return np.empty(0, np.int64), np.zeros((0, self.n_labels), dtype=bool)
        pos = self.labeled_positions
        Y = np.concatenate(self._set_chunks)
        order = np.argsort(pos, kind="stable")
        return pos[order], Y[order]

    def fit(self) -> "MultiLabelLearner":
        pos, Y = self.label_sets()
        if len(pos) == 0:
            raise ValidationError("no labeled items yet: teach a seed set before fitting")
        X = np.asarray(self.pool.embeddings[pos], dtype=np.float32)
        self.model_ = FittedMultiLabel(self.model, self.n_labels).fit(X, Y)
        self._stale = False
        return self

    def _score_inputs(self, rows):
        return MultiLabelScoreInputs(embeddings=rows, cardinality=self.label_cardinality)

    def predict_sets(self, X, threshold: float = 0.5) -> np.ndarray:
        """The predicted label sets of rows ``X``: ``P(y_l = 1 | x) > threshold``, (n, L) bool."""
        return self.predict_proba(X) > threshold
