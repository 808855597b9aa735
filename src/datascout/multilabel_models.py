"""Multi-label classifier wrappers: probabilities ``P(y_l = 1 | x)``, one column per task label.

* :class:`BinaryRelevance` (the default): one binary classifier per label, any scikit-learn
  classifier (default: :func:`datascout.models.default_model`, balanced logistic regression).
  With logistic regression the fitted weights are stacked into one (d, L) float32 matrix, so
  scoring a chunk of the pool is one ``sigmoid(X @ W + b)``, as the single-label fast path.
* Any estimator that takes an (n, L) indicator ``Y`` itself: scikit-learn's ``ClassifierChain``
  (Read et al. 2011), or the natively multi-label ``MLPClassifier``, ``RandomForestClassifier``,
  ``KNeighborsClassifier`` (which return one (n, 2) array per label, handled too).

A label the labeled set has seen only negative (or only positive) gets no classifier: its column
is the constant 0 (or 1), the one honest prediction from one value, and never a crash (the same
rule :class:`datascout.models.FittedModel` applies to an unseen class).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from datascout.exceptions import ValidationError
from datascout.models import SMALL_FIT_ELEMENTS, default_model


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` in place, in the dtype of ``z``. Where ``exp(-z)`` overflows (z below
    about -88 in float32) the result is 0, the nearest float32 anyway; elsewhere the relative
    error is a few ulps on both sides (``1 + e`` only rounds where ``e`` is tiny or huge)."""
    with np.errstate(over="ignore"):
        np.negative(z, out=z)
        np.exp(z, out=z)
    z += 1.0
    return np.reciprocal(z, out=z)


class BinaryRelevance(BaseEstimator):
    """One copy of ``estimator`` per label (binary relevance, Boutell et al. 2004).
    ``estimator``: any scikit-learn classifier with ``predict_proba``; default balanced logistic
    regression. ``fit(X, Y)`` with an (n, L) indicator; ``predict_proba(X)`` is (n, L)."""

    def __init__(self, estimator=None, random_state=None):
        self.estimator = estimator
        self.random_state = random_state

    def base(self):
        return self.estimator if self.estimator is not None else default_model(self.random_state)

    def fit(self, X, Y) -> "BinaryRelevance":
        Y = np.asarray(Y)
        self.fitted_ = FittedMultiLabel(self, Y.shape[1] if Y.ndim == 2 else 0).fit(X, Y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self.fitted_.predict_proba(X)


def _chain(random_state=None):
    from sklearn.multioutput import ClassifierChain

    return ClassifierChain(default_model(random_state), order="random", random_state=random_state)


def _mlp(random_state=None):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(128,), max_iter=300, random_state=random_state)


def _random_forest(random_state=None):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=200, class_weight="balanced", n_jobs=-1,
                                  random_state=random_state)


# the one table of multi-label models: name -> (unfitted model from a random_state, help)
MULTILABEL_MODELS = {
    "logreg": (lambda rs: BinaryRelevance(random_state=rs),
               "binary relevance: one balanced logistic regression per label (the default)"),
    "chain": (_chain, "classifier chain of balanced logistic regressions, in a random label order"),
    "mlp": (_mlp, "one multi-label MLP (128 ReLU units, a sigmoid output per label)"),
    "random-forest": (_random_forest, "200 trees, natively multi-label, balanced class weights"),
}
MULTILABEL_MODEL_NAMES = tuple(MULTILABEL_MODELS)


def make_multilabel_model(name: str, random_state=None):
    if name not in MULTILABEL_MODELS:
        raise ValidationError(
            f"unknown multi-label model {name!r}: expected one of {', '.join(MULTILABEL_MODEL_NAMES)}")
    return MULTILABEL_MODELS[name][0](random_state)


def _fit(est, X, y):
    if X.size <= SMALL_FIT_ELEMENTS:  # small labeled sets: one BLAS thread (see models.py)
        with threadpool_limits(limits=1, user_api="blas"):
            return est.fit(X, y)
    return est.fit(X, y)


class FittedMultiLabel:
    """A fitted multi-label model whose probabilities have one column per task label.

    ``model``: a :class:`BinaryRelevance` (fitted label by label) or any scikit-learn estimator
    that accepts an (n, L) indicator target (fitted once on the labels that vary).
    """

    def __init__(self, model, n_labels: int):
        self.model = model
        self.n_labels = int(n_labels)

    def fit(self, X, Y) -> "FittedMultiLabel":
        Y = np.asarray(Y)
        if Y.ndim != 2 or Y.shape[1] != self.n_labels:
            raise ValidationError(f"label sets must have shape (n, {self.n_labels}) but have shape {Y.shape}")
        if Y.shape[0] == 0:
            raise ValidationError("cannot fit a model on 0 labeled items")
        Y = Y.astype(bool)
        X = np.asarray(X, dtype=np.float32)
        n_pos = Y.sum(axis=0)
        self.varying_ = np.flatnonzero((n_pos > 0) & (n_pos < Y.shape[0]))
        self.constant_ = (n_pos == Y.shape[0]).astype(np.float32)  # the value of a constant label
        self._linear = None
        self.estimators_ = []
        self.estimator_ = None
        if len(self.varying_) == 0:
            return self
        if isinstance(self.model, BinaryRelevance):
            base = self.model.base()
            for j in self.varying_:
                self.estimators_.append(_fit(clone(base), X, Y[:, j].astype(np.int64)))
            if all(isinstance(e, LogisticRegression) for e in self.estimators_):
                w = np.concatenate([e.coef_ for e in self.estimators_], axis=0)  # (k, d)
                b = np.concatenate([e.intercept_ for e in self.estimators_])
                self._linear = (np.ascontiguousarray(w.T, dtype=np.float32), b.astype(np.float32))
        else:
            target = Y[:, self.varying_].astype(np.int64)
            if len(self.varying_) == 1:  # a multi-output estimator still wants 2-D targets
                target = target.reshape(-1, 1)
            self.estimator_ = _fit(clone(self.model), X, target)
        return self

    def predict_proba(self, X, project=None) -> np.ndarray:
        """``P(y_l = 1 | x)``, shape (n, n_labels), float32. (``project`` is not supported: no
        multi-label strategy reads a density term.)"""
        if project is not None:
            raise ValidationError("multi-label models do not compute a density projection")
        X = np.asarray(X, dtype=np.float32)
        if self._linear is not None:
            w, b = self._linear
            logits = X @ w
            logits += b
            probs = sigmoid(logits)
            if len(self.varying_) == self.n_labels:
                return probs
        out = np.empty((X.shape[0], self.n_labels), dtype=np.float32)
        out[:] = self.constant_
        if len(self.varying_) == 0:
            return out
        if self._linear is not None:
            out[:, self.varying_] = probs
        elif self.estimators_:
            for j, e in zip(self.varying_, self.estimators_):
                out[:, j] = _positive_column(e.predict_proba(X), e.classes_)
        else:
            out[:, self.varying_] = _label_columns(self.estimator_, X, len(self.varying_))
        return out


def _positive_column(p: np.ndarray, classes) -> np.ndarray:
    """The column of class 1 of a binary ``predict_proba``."""
    return p[:, int(np.flatnonzero(np.asarray(classes) == 1)[0])]


def _label_columns(est, X, k: int) -> np.ndarray:
    """(n, k) positive probabilities from a multi-label estimator: an (n, k) array (chains, MLP),
    or a list of k per-label (n, 2) arrays (forests, kNN)."""
    p = est.predict_proba(X)
    if isinstance(p, list):
        return np.stack([_positive_column(pj, cj) for pj, cj in zip(p, est.classes_)], axis=1)
    p = np.asarray(p)
    if p.shape != (X.shape[0], k):
        raise ValidationError(f"{type(est).__name__}.predict_proba gave shape {p.shape}: expected "
                              f"({X.shape[0]}, {k}), one probability per label")
    return p
