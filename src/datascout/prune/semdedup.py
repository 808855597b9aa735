"""SemDeDup (Abbas et al. 2023): near-duplicates within k-means clusters of unit embeddings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from datascout.pool import as_float32, normalize_rows
from datascout.prune.scores import kmeans


@dataclass
class SemDeDupResult:
    """``score``: 1 - the highest cosine similarity to an item earlier in the same cluster
    (2 for the first item of a cluster); an item is a near-duplicate at ``eps`` when
    ``score < eps``. ``duplicate_of``: that most similar earlier item (pool position; -1 for the
    first of a cluster). ``cluster``: the k-means cluster."""

    score: np.ndarray
    duplicate_of: np.ndarray
    cluster: np.ndarray
    seconds: dict = field(default_factory=dict)

    def keep(self, eps: float) -> np.ndarray:
        return self.score >= eps


def semdedup(X, n_clusters: int = 100, *, n_iter: int = 20, random_state: int = 0,
             block_elems: int = 1 << 24) -> SemDeDupResult:
    """SemDeDup (Abbas et al. 2023) on L2-normalised embeddings.

    1. Spherical k-means (faiss) into ``n_clusters`` clusters.
    2. Within a cluster, order the items by cosine similarity to the centroid, lowest first
       (ties by position): the paper keeps the least prototypical item of a group.
    3. An item is a near-duplicate when its cosine similarity to some item *earlier in that
       order* exceeds ``1 - eps``; it is dropped, the earlier one is kept. So from every group of
       near-duplicates the first in the order is kept (a chain a~b~c with a, c not similar
       keeps a only, as in the paper). The score ``1 - max earlier similarity`` does not depend
       on ``eps``: thresholding it at any ``eps`` gives that ``eps``'s result.

    Cost: one (m x m) similarity per cluster of m items, computed in row blocks of at most
    ``block_elems`` entries.
    """
    t0 = time.perf_counter()
    Xn = normalize_rows(as_float32(X))
    n = Xn.shape[0]
    centroids, assign, _ = kmeans(Xn, n_clusters, spherical=True, n_iter=n_iter,
                                  random_state=random_state)
    cnorm = normalize_rows(centroids)
    sim_c = np.einsum("ij,ij->i", Xn, cnorm[assign])
    t1 = time.perf_counter()
    order = np.lexsort((np.arange(n), sim_c, assign))  # by cluster, then similarity ascending
    bounds = np.searchsorted(assign[order], np.arange(n_clusters + 1))
    max_sim = np.full(n, -1.0, dtype=np.float64)
    dup_of = np.full(n, -1, dtype=np.int64)
    for c in range(n_clusters):
        members = order[bounds[c]:bounds[c + 1]]
        m = len(members)
        if m < 2:
            continue
        E = Xn[members]
        step = max(1, block_elems // m)
        for a in range(1, m, step):
            b = min(m, a + step)
            S = E[a:b] @ E[:b].T  # rows a..b-1 against items 0..b-1
            S[np.arange(b - a)[:, None] <= (np.arange(b)[None, :] - a)] = -np.inf  # only earlier items
            j = S.argmax(axis=1)
            max_sim[members[a:b]] = S[np.arange(b - a), j]
            dup_of[members[a:b]] = members[j]
    seconds = {"kmeans": t1 - t0, "within_clusters": time.perf_counter() - t1}
    return SemDeDupResult(score=1.0 - max_sim, duplicate_of=dup_of, cluster=assign, seconds=seconds)
