"""The model's cross-validated quality on the labels a campaign holds."""

from __future__ import annotations

import numpy as np


def cv_quality(X, y, n_classes: int, *, positive: int | None = None, random_state: int = 0,
               max_folds: int = 5) -> dict:
    """Stratified k-fold estimates (accuracy, macro-F1, and average precision of the positive
    class for a rare-concept campaign) of the default model on ``(X, y)``. ``cv`` is ``None``
    while some labeled class has fewer than 2 items or only one class is labeled."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    from datascout.models import FittedModel, default_model

    n = 0 if y is None else len(y)
    out = {"n_labels": int(n), "cv": None}
    if n == 0:
        return out
    counts = np.bincount(y, minlength=n_classes)
    out["class_counts"] = counts.tolist()
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < 2:
        return out
    folds = int(min(max_folds, present.min()))
    proba = np.zeros((n, n_classes), dtype=np.float64)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=random_state).split(X, y):
        m = FittedModel(default_model(random_state), n_classes).fit(X[train], y[train])
        proba[test] = m.predict_proba(X[test])
    pred = proba.argmax(axis=1)
    cv = {"folds": folds, "accuracy": float(accuracy_score(y, pred)),
          "macro_f1": float(f1_score(y, pred, labels=np.flatnonzero(counts), average="macro"))}
    if positive is not None:
        cv["average_precision"] = float(average_precision_score(y == positive, proba[:, positive]))
    out["cv"] = cv
    return out
