"""Seed sets: which items to label before the first round. All return pool positions."""

from __future__ import annotations

import numpy as np

from datascout.exceptions import ValidationError


def random_seed(n_items: int, size: int, rng: np.random.Generator) -> np.ndarray:
    if not 0 < size <= n_items:
        raise ValidationError(f"seed size must be in 1..{n_items} but is {size}")
    return np.sort(rng.choice(n_items, size=size, replace=False))


def stratified_seed(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` items with every class present in proportion to its frequency (at least one
    per class while ``size`` allows)."""
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < size <= n:
        raise ValidationError(f"seed size must be in 1..{n} but is {size}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(size * counts / n).astype(int)
    if size >= len(classes):
        quota = np.maximum(quota, 1)
    quota = np.minimum(quota, counts)
    # hand out what is left (or take back the excess) to/from the largest classes
    order = np.argsort(-counts, kind="stable")
    i = 0
    while quota.sum() != size:
        c = order[i % len(order)]
        if quota.sum() < size and quota[c] < counts[c]:
            quota[c] += 1
        elif quota.sum() > size and quota[c] > 1:
            quota[c] -= 1
        i += 1
    picks = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
             for c, q in zip(classes, quota) if q]
    return np.sort(np.concatenate(picks))


def positives_negatives_seed(binary_labels: np.ndarray, n_positives: int, n_negatives: int,
                             rng: np.random.Generator) -> np.ndarray:
    """``n_positives`` items of class 1 and ``n_negatives`` of class 0 (rare-concept seed)."""
    y = np.asarray(binary_labels)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if n_positives < 0 or n_negatives < 0 or n_positives + n_negatives == 0:
        raise ValidationError(
            f"a seed needs >= 0 positives and negatives, not both 0; got {n_positives} and {n_negatives}"
        )
    if n_positives > len(pos):
        raise ValidationError(f"asked for {n_positives} seed positives but the pool has {len(pos)}")
    if n_negatives > len(neg):
        raise ValidationError(f"asked for {n_negatives} seed negatives but the pool has {len(neg)}")
    return np.sort(np.concatenate([rng.choice(pos, n_positives, replace=False),
                                   rng.choice(neg, n_negatives, replace=False)]))
