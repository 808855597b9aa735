"""Pruning scores, one per item (higher = harder = more worth keeping unless a function says
otherwise): the prototype metric (Sorscher et al. 2022), EL2N (Paul et al. 2021), forgetting
events (Toneva et al. 2019) and the random baseline; faiss k-means, which the prototype metric
and SemDeDup share."""

from __future__ import annotations

import numpy as np

from datascout.exceptions import ValidationError
from datascout.pool import as_float32, iter_row_chunks, normalize_rows
from datascout.prune.proxy import SoftmaxRegression


def kmeans(X, n_clusters: int, *, spherical: bool = False, n_iter: int = 20, random_state: int = 0,
           max_points_per_centroid: int = 256):
    """faiss k-means. Returns ``(centroids, assignment, distance)``: the nearest centroid of each
    row and the Euclidean distance to it. faiss trains on at most ``max_points_per_centroid``
    points per centroid (a random sample), then every row is assigned."""
    import faiss

    X = as_float32(X)
    n, d = X.shape
    if n_clusters < 1:
        raise ValidationError(f"n_clusters must be >= 1 but is {n_clusters}")
    if n < n_clusters:
        raise ValidationError(f"there are {n} items but {n_clusters} clusters were asked for: "
                              "expected at least as many items as clusters")
    km = faiss.Kmeans(d, int(n_clusters), niter=int(n_iter), seed=int(random_state) + 1,
                      spherical=spherical, verbose=False,
                      max_points_per_centroid=int(max_points_per_centroid), min_points_per_centroid=1)
    km.train(X)
    assign = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    for rows in iter_row_chunks(n):
        D, I = km.index.search(X[rows], 1)
        assign[rows] = I[:, 0]
        dist[rows] = np.sqrt(np.maximum(D[:, 0], 0))
    return km.centroids.copy(), assign, dist


def random_scores(n: int, random_state: int = 0) -> np.ndarray:
    """Uniform random scores in [0, 1): the baseline."""
    return np.random.default_rng(random_state).random(n)


def prototype_scores(X, n_clusters: int = 100, *, normalize: bool = True, n_iter: int = 20,
                     random_state: int = 0):
    """Self-supervised prototype metric (Sorscher et al. 2022).

    k-means with ``n_clusters`` on the embeddings (L2-normalised first when ``normalize``, as
    the paper does with self-supervised embeddings); the score of an item is the Euclidean
    distance to its nearest centroid. Higher = farther from the prototype = harder.
    Returns ``(scores, cluster)``.
    """
    X = as_float32(X)
    if normalize:
        X = normalize_rows(X)
    _, assign, dist = kmeans(X, n_clusters, n_iter=n_iter, random_state=random_state)
    return dist.astype(np.float64), assign


def prototype_keep_hard(fraction: float, hard_above: float = 0.5) -> bool:
    """The paper's rule of thumb: keep the hard items when data is plentiful, the easy ones when
    it is scarce. "Plentiful" is read here as keeping at least ``hard_above`` of the data
    (default half): at a small fraction kept the kept set is scarce, so keep easy."""
    return fraction >= hard_above


def el2n(probs, labels) -> np.ndarray:
    """EL2N of given predictions: ``|| probs - onehot(labels) ||_2`` per row (higher = harder)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    err = probs.copy()
    err[np.arange(len(labels)), labels] -= 1.0
    return np.sqrt((err * err).sum(axis=1))


def forgetting_events(correct) -> np.ndarray:
    """Forgetting events per item from a (T presentations, N items) boolean history of
    "classified correctly when presented".

    An event is a presentation where the item is wrong after having been right at the
    presentation before (Toneva et al. 2019). Items never classified correctly are the hardest:
    they get ``T`` (more than the ``T // 2`` events any learned item can have).
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2:
        raise ValidationError(f"correct must be a (T, N) history but has shape {correct.shape}")
    events = (correct[:-1] & ~correct[1:]).sum(axis=0).astype(np.float64)
    never = ~correct.any(axis=0)
    events[never] = correct.shape[0]
    return events


def el2n_scores(X, labels, n_classes: int | None = None, *, n_models: int = 5, epochs: int = 2,
                batch_size: int = 128, lr: float = 0.1, random_state: int = 0) -> np.ndarray:
    """EL2N (Paul et al. 2021): mean over ``n_models`` proxy :class:`SoftmaxRegression` models,
    each trained ``epochs`` epochs with its own seed (``random_state + m``), of
    ``|| softmax(f(x)) - onehot(y) ||_2``. Higher = harder."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    total = np.zeros(len(labels))
    for m in range(n_models):
        model = SoftmaxRegression(n_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                                  random_state=random_state + m).fit(X, labels)
        total += el2n(model.predict_proba(X), labels)
    return total / n_models


def forgetting_scores(X, labels, n_classes: int | None = None, *, epochs: int = 10,
                      batch_size: int = 128, lr: float = 0.1, random_state: int = 0) -> np.ndarray:
    """Forgetting events (Toneva et al. 2019) while a proxy :class:`SoftmaxRegression` trains
    for ``epochs`` epochs; see :func:`forgetting_events`. Higher = forgotten more = harder."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    model = SoftmaxRegression(n_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                              random_state=random_state).fit(X, labels)
    return forgetting_events(model.correct_)
