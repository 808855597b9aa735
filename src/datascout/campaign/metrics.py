"""The model's cross-validated quality on the labels a campaign holds."""

from __future__ import annotations

import numpy as np

from datascout.stopping import Z95, wilson_interval  # noqa: F401 (their home moved; callers use either)


def cv_quality(X, y, n_classes: int, *, positive: int | None = None, random_state: int = 0,
               max_folds: int = 5) -> dict:
    """Stratified k-fold estimates (accuracy, macro-F1, and average precision of the positive
    class for a rare-concept campaign) of the default model on ``(X, y)``, over the classes
    with at least 2 labels (those with one are listed in ``left_out_classes``). ``cv`` is
    ``None`` while fewer than 2 classes have 2 labels."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    from datascout.models import FittedModel, default_model

    n = 0 if y is None else len(y)
    out = {"n_labels": int(n), "cv": None}
    if n == 0:
        return out
    counts = np.bincount(y, minlength=n_classes)
    out["class_counts"] = counts.tolist()
    # a class with a single label cannot be split into folds: leave its items out of the
    # estimate (and say so) rather than give no estimate at all
    kept = np.flatnonzero(counts >= 2)
    if len(kept) < 2:
        return out
    single = np.flatnonzero(counts == 1)
    if len(single):
        keep = np.isin(y, kept)
        X, y = X[keep], y[keep]
        n = len(y)
        counts = np.bincount(y, minlength=n_classes)
        out["left_out_classes"] = single.tolist()  # one label each: not in the estimate
    present = counts[counts > 0]
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


def _macro_f1_counts(tp, fp, fn):
    """Macro-F1 over the classes that occur (in truth or prediction) from per-class counts;
    works on stacked rows (bootstrap replicates)."""
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    occurs = denom > 0
    return (f1 * occurs).sum(axis=-1) / np.maximum(occurs.sum(axis=-1), 1)


def audit_quality(y_true, proba, n_classes: int, *, positive: int | None = None, n_unlabeled: int = 0,
                  n_boot: int = 1000, random_state: int = 0) -> dict:
    """The model's quality on the audit sample: items drawn uniformly at random from the
    unlabeled pool and never trained on, so unlike the cross-validated figure on actively chosen
    items it estimates the quality on the pool. Each figure has a 95% interval: Wilson for
    proportions, a percentile bootstrap (``n_boot`` resamples) for macro-F1 and average
    precision. Multiclass: accuracy (the headline: its Wilson interval held the truth in 94-96%
    of checks on real campaigns, docs/benchmarks.md) and macro-F1 (its bootstrap interval is too
    narrow while the audit sample holds few items per class: 67% on 26 classes). Rare concept (``positive``):
    average precision (the headline), precision at the 0.5 threshold, the prevalence and the
    positives estimated to remain among ``n_unlabeled`` unlabeled items."""
    y_true = np.asarray(y_true, dtype=np.int64)
    n = len(y_true)
    out = {"labels": int(n), "metric": "average_precision" if positive is not None else "accuracy",
           "value": None, "ci": None}
    if n == 0:
        return out
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(axis=1)
    rng = np.random.default_rng(random_state)
    boot = rng.integers(0, n, size=(n_boot, n))
    if positive is None:
        correct = int((pred == y_true).sum())
        out["accuracy"] = {"value": correct / n, "ci": wilson_interval(correct, n)}
        C = n_classes
        onehot_t = np.eye(C, dtype=np.int64)[y_true]
        onehot_p = np.eye(C, dtype=np.int64)[pred]
        hit = onehot_t * onehot_p
        tp, fp, fn = hit.sum(0), (onehot_p - hit).sum(0), (onehot_t - hit).sum(0)
        value = float(_macro_f1_counts(tp, fp, fn))
        # per-replicate counts: sums of the resampled rows, all replicates at once
        btp = hit[boot].sum(axis=1)
        bfp = (onehot_p - hit)[boot].sum(axis=1)
        bfn = (onehot_t - hit)[boot].sum(axis=1)
        reps = _macro_f1_counts(btp, bfp, bfn)
        enough = n >= max(10, 2 * n_classes)  # below that a resampled macro-F1 says nothing about its spread
        out["macro_f1"] = {"value": value, "ci": [float(np.quantile(reps, 0.025)), float(np.quantile(reps, 0.975))]
                           if enough else None}
        out["value"], out["ci"] = out["accuracy"]["value"], out["accuracy"]["ci"]
        return out
    from sklearn.metrics import average_precision_score

    is_pos = y_true == positive
    score = proba[:, positive]
    k = int(is_pos.sum())
    out["prevalence"] = {"value": k / n, "ci": wilson_interval(k, n)}
    lo, hi = out["prevalence"]["ci"]
    out["positives_remaining"] = {"value": float(k / n * n_unlabeled),
                                  "ci": [float(lo * n_unlabeled), float(hi * n_unlabeled)]}
    flagged = score >= 0.5
    tp = int((flagged & is_pos).sum())
    out["precision_at_0.5"] = {"value": tp / int(flagged.sum()) if flagged.any() else None,
                               "ci": wilson_interval(tp, int(flagged.sum())) if flagged.any() else None,
                               "flagged": int(flagged.sum())}
    if 0 < k < n:
        value = float(average_precision_score(is_pos, score))
        reps = [average_precision_score(is_pos[b], score[b]) for b in boot[: min(n_boot, 300)]
                if 0 < is_pos[b].sum() < n]
        out["average_precision"] = {"value": value, "ci": [float(np.quantile(reps, 0.025)),
                                                           float(np.quantile(reps, 0.975))]
                                    if reps and n >= 10 else None}
        out["value"], out["ci"] = value, out["average_precision"]["ci"]
    return out
