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


# --------------------------------------------------------------------------- multi-label seeds


def iterative_stratification_seed(label_sets: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` items whose label-set statistics follow the pool's: iterative stratification
    (Sechidis, Tsoumakas & Vlahavas 2011, ECML PKDD, Algorithm 1) with two subsets, the seed
    (fraction ``size / N``) and the rest.

    Labels are served rarest first: each item carrying the label with the fewest items still to
    place goes to the subset that most wants that label (its desired count of the label minus what
    it holds), ties to the subset that wants the most items, then at random. A subset that is
    full takes no more (so the seed holds exactly ``size`` items; Sechidis et al.'s sizes are
    approximate). Items with no label fill what is left. ``label_sets``: an (N, L) 0/1 indicator.
    """
    Y = np.asarray(label_sets, dtype=bool)
    if Y.ndim != 2:
        raise ValidationError(f"label sets must be an (items x labels) indicator but have shape {Y.shape}")
    n = Y.shape[0]
    if not 0 < size <= n:
        raise ValidationError(f"seed size must be in 1..{n} but is {size}")
    r = size / n
    per_label = Y.sum(axis=0).astype(np.float64)
    want = np.stack([per_label * r, per_label * (1 - r)])  # (2, L): seed, rest
    room = [size, n - size]
    in_seed = np.zeros(n, dtype=bool)
    left = Y.copy()  # rows of items not placed yet (placed rows are zeroed)
    counts = per_label.copy()
    while counts.sum() > 0:
        live = np.flatnonzero(counts > 0)
        rarest = live[counts[live] == counts[live].min()]
        label = int(rarest[rng.integers(len(rarest))]) if len(rarest) > 1 else int(rarest[0])
        items = np.flatnonzero(left[:, label])
        items = items[rng.permutation(len(items))]
        w0, w1 = float(want[0, label]), float(want[1, label])
        ties = rng.random(len(items)) < 0.5
        to_seed = np.zeros(len(items), dtype=bool)
        for i in range(len(items)):
            if room[0] == 0 or room[1] == 0:
                seed = room[1] == 0
            elif w0 != w1:
                seed = w0 > w1
            elif room[0] != room[1]:
                seed = room[0] > room[1]
            else:
                seed = bool(ties[i])
            to_seed[i] = seed
            if seed:
                w0 -= 1.0
                room[0] -= 1
            else:
                w1 -= 1.0
                room[1] -= 1
        placed = left[items]
        want[0] -= placed[to_seed].sum(axis=0)
        want[1] -= placed[~to_seed].sum(axis=0)
        counts -= placed.sum(axis=0)
        in_seed[items[to_seed]] = True
        left[items] = False
    unlabeled = np.flatnonzero(~Y.any(axis=1))
    if room[0]:
        in_seed[rng.choice(unlabeled, size=room[0], replace=False)] = True
    return np.flatnonzero(in_seed)


def label_positives_seed(label_sets: np.ndarray, label: int, n_positives: int, n_negatives: int,
                         rng: np.random.Generator) -> np.ndarray:
    """``n_positives`` items whose set holds ``label`` and ``n_negatives`` whose set does not
    (a rare label's seed, as :func:`positives_negatives_seed` for one class)."""
    Y = np.asarray(label_sets, dtype=bool)
    if Y.ndim != 2:
        raise ValidationError(f"label sets must be an (items x labels) indicator but have shape {Y.shape}")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < Y.shape[1]:
        raise ValidationError(f"the seed label must be a label id in 0..{Y.shape[1] - 1} but is {label!r}")
    return positives_negatives_seed(Y[:, int(label)].astype(np.int64), n_positives, n_negatives, rng)
