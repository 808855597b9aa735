"""Classifier wrappers: any scikit-learn estimator with ``fit`` / ``predict_proba`` is a model.

Two things the loop needs that plain scikit-learn does not give:

* probabilities with one column per class of the *task*, also for classes the labeled set has
  not seen yet (a rare-concept round with no positive yet must not crash scoring);
* a fast path for linear models: ``softmax(X @ W.T + b)`` in float32 over chunks, instead of
  scikit-learn's float64 upcast of a pool-sized array.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from datascout.exceptions import ValidationError
from datascout.pool import softmax


SMALL_FIT_ELEMENTS = 1 << 22  # labeled-set size (items x dims) below which fits use one BLAS thread


def default_model(random_state=None) -> LogisticRegression:
    """Logistic regression with balanced class weights, the field's default on frozen embeddings."""
    return LogisticRegression(class_weight="balanced", max_iter=1000, random_state=random_state)


def _mlp(random_state=None):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(128,), max_iter=300, random_state=random_state)


def _random_forest(random_state=None):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=200, class_weight="balanced", n_jobs=-1, random_state=random_state)


def _scaled_logreg(random_state=None):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, random_state=random_state))


def _scaled_mlp(random_state=None):
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,), max_iter=60,
                                                         early_stopping=True, random_state=random_state))


# the one table of named classifiers: name -> (unfitted estimator from a random_state, help).
# mlp and random-forest are for embeddings or features a linear model underfits (raw tabular data);
# the two "scaled-" ones are the pruning literature's evaluation protocol (prune.evaluate_pruning).
MODELS = {
    "logreg": (default_model, "logistic regression with balanced class weights (the default)"),
    "mlp": (_mlp, "one hidden layer of 128 ReLU units (Adam)"),
    "random-forest": (_random_forest, "200 trees with balanced class weights"),
    "scaled-logreg": (_scaled_logreg, "logistic regression on standardised features, unweighted (pruning evaluation)"),
    "scaled-mlp": (_scaled_mlp, "standardised features, 128 ReLU units, early stopping (pruning evaluation)"),
}
MODEL_NAMES = tuple(MODELS)


def make_model(name: str, random_state=None):
    """A named unfitted classifier of :data:`MODELS`."""
    if name not in MODELS:
        raise ValidationError(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}")
    return MODELS[name][0](random_state)


class FittedModel:
    """A fitted estimator whose probabilities are aligned to ``n_classes`` task classes.

    If the labeled set holds a single class, no estimator is fitted and every item gets
    probability 1 for that class (the only honest prediction from one class).
    """

    def __init__(self, estimator, n_classes: int):
        self.estimator = estimator
        self.n_classes = n_classes

    def fit(self, X, y) -> "FittedModel":
        y = np.asarray(y, dtype=np.int64)
        seen = np.unique(y)
        if len(seen) == 0:
            raise ValidationError("cannot fit a model on 0 labeled items")
        if seen.max() >= self.n_classes or seen.min() < 0:
            raise ValidationError(
                f"labels must be class ids in 0..{self.n_classes - 1} but contain {int(seen.max())}"
            )
        self.seen_classes_ = seen
        if len(seen) == 1:
            self.estimator_ = None
        else:
            est = clone(self.estimator)
            X = np.asarray(X, dtype=np.float32)
            if X.size <= SMALL_FIT_ELEMENTS:
                # small labeled sets: multi-threaded BLAS only adds wake-up overhead (on a busy
                # 2-core machine a 30-item fit took 0.5 s with 2 BLAS threads, 0.02 s with 1)
                with threadpool_limits(limits=1, user_api="blas"):
                    est.fit(X, y)
            else:
                est.fit(X, y)
            self.estimator_ = est
            self.columns_ = np.asarray(est.classes_, dtype=np.int64)
            self._linear = None
            self._all_columns = np.array_equal(self.columns_, np.arange(self.n_classes))
            if isinstance(est, LogisticRegression):
                w = np.ascontiguousarray(est.coef_.T, dtype=np.float32)
                b = np.asarray(est.intercept_, dtype=np.float32)
                self._linear = (w, b)
        return self

    def predict_proba(self, X, project=None):
        """Probabilities, shape (n, n_classes), float32; columns of unseen classes are 0.

        With ``project`` (a (d,) vector) also returns ``X @ project``: for a linear model both come
        out of one matrix product (one pass over X instead of two)."""
        if project is not None:
            project = np.asarray(project, dtype=np.float32).reshape(-1, 1)
            if self.estimator_ is None or getattr(self, "_linear", None) is None:
                return self.predict_proba(X), (np.asarray(X, dtype=np.float32) @ project)[:, 0]
        n = X.shape[0]
        if self.estimator_ is None:
            out = np.zeros((n, self.n_classes), dtype=np.float32)
            out[:, self.seen_classes_[0]] = 1.0
            return out
        if self._linear is not None:
            w, b = self._linear
            if project is not None:
                both = np.asarray(X, dtype=np.float32) @ np.hstack([w, project])
                probs = self._probs_from_logits(both[:, :-1] + b)
                return probs, both[:, -1].copy()
            logits = np.asarray(X, dtype=np.float32) @ w
            logits += b
            return self._probs_from_logits(logits)
        out = np.zeros((n, self.n_classes), dtype=np.float32)
        out[:, self.columns_] = self.estimator_.predict_proba(X)
        return out

    def _probs_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """Softmax (or the sigmoid of one logit) in place, spread over every class's column."""
        n = logits.shape[0]
        w, _ = self._linear
        if w.shape[1] == 1:  # binary logistic regression: sigmoid of one logit
            # e = exp(-|z|) never overflows; 1 / (1 + e) is the likelier side's probability and
            # e / (1 + e) the other's, each to full relative precision (1 - p would round the
            # smaller one to 0 once p is within float32's epsilon of 1)
            z = logits[:, 0]
            positive = z >= 0
            e = np.abs(z)
            np.negative(e, out=e)
            np.exp(e, out=e)
            likely = e + 1.0
            np.reciprocal(likely, out=likely)
            e *= likely  # now the unlikely side
            out = np.zeros((n, self.n_classes), dtype=np.float32)
            out[:, self.columns_[1]] = np.where(positive, likely, e)
            out[:, self.columns_[0]] = np.where(positive, e, likely)
            return out
        softmax(logits, out=logits)
        if self._all_columns:
            return logits
        out = np.zeros((n, self.n_classes), dtype=np.float32)
        out[:, self.columns_] = logits
        return out


def fit_model(estimator, X, y, n_classes: int) -> FittedModel:
    return FittedModel(estimator, n_classes).fit(X, y)


class BootstrapCommittee:
    """``n_members`` copies of an estimator, each fitted on a bootstrap resample of the labeled set.

    Every resample keeps at least one item of each class seen, so each member sees every class.
    """

    def __init__(self, estimator, n_classes: int, n_members: int = 5, random_state=None):
        self.estimator = estimator
        self.n_classes = n_classes
        self.n_members = n_members
        self.random_state = random_state

    def fit(self, X, y) -> "BootstrapCommittee":
        if self.n_members < 2:
            raise ValidationError(f"a committee needs at least 2 members, got {self.n_members}")
        rng = np.random.default_rng(self.random_state)
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        firsts = np.unique(y, return_index=True)[1]
        self.members_ = []
        for _ in range(self.n_members):
            idx = rng.integers(0, len(y), size=len(y))
            idx[: len(firsts)] = firsts  # every class stays present in every member
            self.members_.append(fit_model(self.estimator, X[idx], y[idx], self.n_classes))
        return self

    def predict_proba_members(self, X) -> np.ndarray:
        """Shape (n_members, n, n_classes)."""
        return np.stack([m.predict_proba(X) for m in self.members_])
