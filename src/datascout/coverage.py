"""Coverage and batch-aware strategies: pure, vectorised selection over embeddings and the kNN graph.

Uncertainty picks outliers and near-duplicates of the decision boundary while the model does not
yet know the classes (many classes, tens of labels per class). The strategies here choose a
batch as a whole, from the structure of the pool:

* :func:`typiclust_select` (Hacohen et al. 2022, TypiClust): cluster the pool (labeled items
  included) into ``|L| + b`` clusters; from the clusters with the fewest labels, largest first,
  take the most *typical* item, ``typicality(x) = 1 / mean distance to its K nearest neighbours
  inside the cluster`` (k-means on at most 64 principal components: :func:`reduce_dims`).
* :func:`probcover_select` (Yehuda et al. 2022, ProbCover): greedy maximum coverage of δ-balls.
  A ball is an item's graph neighbours with cosine similarity above ``1 - δ^2 / 2`` (unit
  vectors: ``|x - x'| < δ``), truncated to the graph's k. δ comes from the data as the paper
  chooses it: the largest δ whose balls are *pure* (hold a single k-means cluster, k = number
  of classes) for at least ``alpha`` = 95% of the items (:func:`purity_threshold`).
* :func:`coldstart_kcenter_select`: k-center greedy (Sener & Savarese 2018) restricted to the
  items whose graph density (mean similarity to their neighbours) is above a quantile, started
  at the densest item when nothing is labeled: farthest-first without its habit of picking
  outliers first.
* :func:`badge_select` (Ash et al. 2020, BADGE): k-means++ seeding over the gradient embeddings
  ``g(x) = (p(x) - e_yhat) ⊗ [x, 1]`` of a softmax layer on the embeddings. Their squared
  distances have the closed form ``|a|^2 |h|^2 + |a'|^2 |h'|^2 - 2 (a.a')(h.h')``, so each pick
  costs O(n (C + d)) and the (n, C (d + 1)) matrix is never built.
* :func:`cluster_margin_select` (Citovsky et al. 2021, Cluster-Margin): the ``m * b`` smallest
  margins, grouped by a clustering computed once per learner, then round-robin over those
  clusters, smallest cluster first, one random item per cluster per pass.

Every function takes a :class:`SelectInputs` (the candidate rows, which of them may be chosen,
the labeled items, the graph if any) and returns row indices of the candidate view, best first.
With a SEALS candidate pool the nodes are C plus the labeled items and the graph is restricted
to them. With no graph, a whole-pool view builds one kNN graph once per learner (``Flat`` up to
50,000 rows, ``HNSW32`` above; kept in the learner's cache), and a candidate view that comes
from an on-the-fly index gets an exact kNN graph of at most ``max_rows`` of its rows
(a uniform sample beyond that), so no step is ever dense N x N.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from datascout.exceptions import ValidationError
from datascout.pool import iter_row_chunks
from datascout.strategies import Strategy, kcenter_greedy, margin, top_b

TYPICLUST_MAX_CLUSTERS = 500  # the TypiClust paper's cap on |L| + b clusters
TYPICLUST_MIN_CLUSTER = 5  # clusters smaller than this are not sampled (outlier groups)
TYPICLUST_KNN = 20  # neighbours in the typicality estimate
PROBCOVER_ALPHA = 0.95  # purity the ProbCover paper asks of the δ-balls
FALLBACK_K = 50  # neighbours of a graph built here when the learner has none
FALLBACK_MAX_ROWS = 20_000  # rows of an on-the-fly candidate view given an exact kNN graph
WHOLE_POOL_FLAT_ROWS = 50_000  # above this a whole-pool graph built here is HNSW32, not Flat
MAX_GRAPH_NODES = 200_000  # available rows a coverage step reads from a graph (a sample beyond)
TYPICLUST_MAX_ROWS = 50_000  # available rows TypiClust clusters (a uniform sample beyond)


@dataclass
class SelectInputs:
    """What a batch-selecting strategy may read (built by the loop, one per query).

    ``X``: the candidate view's rows (the whole pool, possibly a memory map, or the SEALS
    buffer); ``positions``: their pool positions (``None``: row i is pool position i);
    ``exclude``: rows that may not be chosen (labeled, held out; ``None``: none);
    ``labeled_positions`` / ``labeled_embeddings`` / ``labeled_classes``: the labeled items;
    ``graph``: a :class:`~datascout.seals.KNNGraph` over the pool, or ``None``;
    ``probs``: a callable giving the model's probabilities of rows of ``X`` (fits when stale);
    ``cache``: the learner's dict for structures computed once per learner (a clustering, δ);
    ``info``: what the strategy reports about its choice (the loop copies it into
    ``last_query_``).
    """

    X: object
    positions: np.ndarray | None
    exclude: np.ndarray | None
    labeled_positions: np.ndarray
    labeled_embeddings: np.ndarray
    labeled_classes: np.ndarray
    n_classes: int
    rng: np.random.Generator
    graph: object = None
    probs: Callable | None = None
    cache: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def available(self) -> np.ndarray:
        """Row indices of ``X`` that may be chosen."""
        n = self.X.shape[0]
        return np.arange(n) if self.exclude is None else np.flatnonzero(~self.exclude)


# --------------------------------------------------------------------------- helpers


def _rows(X, idx: np.ndarray) -> np.ndarray:
    """``X[idx]`` as float32, read in sorted order (sequential on a memory map)."""
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return np.empty((0, X.shape[1]), dtype=np.float32)
    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), X.shape[1]), dtype=np.float32)
    out[order] = np.asarray(X[idx[order]], dtype=np.float32)
    return out


def _unit(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A, dtype=np.float32)
    return A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)


def _random_rows(avail: np.ndarray, b: int, rng: np.random.Generator, taken=()) -> np.ndarray:
    rest = np.setdiff1d(avail, np.asarray(taken, dtype=np.int64), assume_unique=False)
    return rng.choice(rest, size=min(b, len(rest)), replace=False).astype(np.int64)


def _check_batch(b: int, n_avail: int) -> None:
    if not 0 < b <= n_avail:
        raise ValidationError(f"batch size must be in 1..{n_avail} but is {b}")


def _nearest_center(A: np.ndarray, C: np.ndarray, chunk_rows: int = 8192):
    """(index, squared distance) of the nearest row of ``C`` for each row of ``A``."""
    cn = np.einsum("ij,ij->i", C, C)
    idx = np.empty(len(A), dtype=np.int64)
    d2 = np.empty(len(A), dtype=np.float64)
    for rows in iter_row_chunks(len(A), chunk_rows):
        Q = A[rows]
        d = cn[None, :] - 2.0 * (Q @ C.T)
        j = np.argmin(d, axis=1)
        idx[rows] = j
        d2[rows] = np.maximum(d[np.arange(len(j)), j] + np.einsum("ij,ij->i", Q, Q), 0.0)
    return idx, d2


def kmeans_labels(A: np.ndarray, n_clusters: int, rng: np.random.Generator, n_iter: int = 15):
    """(labels, centers) of k-means on the rows of ``A``: k-means++ seeding (D^2 sampling),
    then up to ``n_iter`` Lloyd iterations (stopping when no label changes). Plain numpy on
    BLAS: O(n K d) per iteration, no thread pool of its own (scikit-learn's K-means, with
    hundreds of clusters, cost seconds per round on the shared 2-core machine)."""
    A = np.asarray(A, dtype=np.float32)
    n = len(A)
    K = int(min(max(n_clusters, 1), n))
    mu = A.mean(axis=0)
    A = A - mu  # distances do not change; float32 cancellation does (see strategies._origin)
    an = np.einsum("ij,ij->i", A, A).astype(np.float64)
    first = int(rng.integers(n))
    centers = [first]
    D = np.maximum(an + an[first] - 2.0 * (A @ A[first]), 0.0)
    for _ in range(K - 1):
        total = D.sum()
        j = int(rng.choice(n, p=D / total)) if total > 0 else int(rng.integers(n))
        centers.append(j)
        np.minimum(D, np.maximum(an + an[j] - 2.0 * (A @ A[j]), 0.0), out=D)
    from scipy import sparse

    C = A[np.asarray(centers)].copy()
    labels, _ = _nearest_center(A, C)
    ones = np.ones(n, dtype=np.float32)
    for _ in range(n_iter):
        counts = np.bincount(labels, minlength=K)
        sums = sparse.csr_matrix((ones, (labels, np.arange(n))), shape=(K, n)) @ A  # per-cluster sums
        live = counts > 0
        C[live] = (sums[live] / counts[live, None]).astype(np.float32)
        new, _ = _nearest_center(A, C)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels, C + mu


CLUSTER_DIMS = 64  # k-means on wider embeddings runs on their first 64 principal components


def reduce_dims(A: np.ndarray, cache: dict, dims: int = CLUSTER_DIMS) -> np.ndarray:
    """``A`` projected on its first ``dims`` principal components when it has more columns.
    k-means with hundreds of clusters costs O(n K d) per iteration: 300 clusters of 12,000
    fortunes took 5.8 s on the 384-d rows and 2.8 s on the projection (shared 2-core machine).
    The basis is computed once, from the first rows it sees, and kept in ``cache``."""
    A = np.asarray(A, dtype=np.float32)
    if A.shape[1] <= dims:
        return A
    key = ("pca-basis", A.shape[1], dims)
    if key not in cache:
        mu = A.mean(axis=0, dtype=np.float64)
        Z = A - mu.astype(np.float32)
        cov = (Z.T.astype(np.float64) @ Z) / max(len(Z) - 1, 1)
        w, V = np.linalg.eigh(cov)
        cache[key] = (mu.astype(np.float32), V[:, np.argsort(w)[::-1][:dims]].astype(np.float32))
    mu, V = cache[key]
    return (A - mu) @ V


@dataclass
class LocalGraph:
    """The kNN graph restricted to the nodes of one query: the available rows first
    (``rows``, indices into the view), then the labeled items. ``neighbors`` holds local node
    indices (-1: a neighbour outside the nodes), ``similarities`` their cosines, best first."""

    rows: np.ndarray
    n_labeled: int
    neighbors: np.ndarray
    similarities: np.ndarray
    embeddings: np.ndarray | None = None  # node embeddings when the graph was built here

    @property
    def n_nodes(self) -> int:
        return self.neighbors.shape[0]


def _restrict(graph, node_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``graph`` at ``node_pos``, neighbours mapped to indices into ``node_pos``."""
    order = np.argsort(node_pos, kind="stable")
    sorted_pos = node_pos[order]
    nb = np.empty((len(node_pos), graph.k), dtype=np.int64)
    sims = np.empty((len(node_pos), graph.k), dtype=np.float32)
    nb[order] = np.asarray(graph.neighbors[sorted_pos], dtype=np.int64)  # sorted reads of a memory map
    sims[order] = np.asarray(graph.similarities[sorted_pos], dtype=np.float32)
    at = np.clip(np.searchsorted(sorted_pos, nb), 0, len(sorted_pos) - 1)
    hit = (nb >= 0) & (sorted_pos[at] == nb)
    local = np.where(hit, order[at], -1)
    return local, np.where(hit, sims, -np.inf).astype(np.float32)


def local_graph(inp: SelectInputs, *, k: int = FALLBACK_K, max_rows: int = FALLBACK_MAX_ROWS,
                max_nodes: int = MAX_GRAPH_NODES) -> LocalGraph:
    """The kNN graph over the available rows and the labeled items (see the module docstring
    for where it comes from when the learner has no graph). Beyond ``max_nodes`` available
    rows (``max_rows`` for a graph built here) a uniform sample of them stands for the rest."""
    from datascout.seals import KNNGraph

    avail = inp.available
    labeled = np.asarray(inp.labeled_positions, dtype=np.int64)
    graph = inp.graph
    if graph is None and inp.positions is None:
        key = ("knn-graph", k)
        graph = inp.cache.get(key)
        if graph is None:
            n = inp.X.shape[0]
            factory = "Flat" if n <= WHOLE_POOL_FLAT_ROWS else "HNSW32"
            graph = KNNGraph.build(inp.X, k=min(k, n - 1), index=factory)
            inp.cache[key] = graph
    if graph is not None:
        if len(avail) > max_nodes:  # bounded memory: (nodes x k) edges
            avail = np.sort(inp.rng.choice(avail, size=max_nodes, replace=False))
        pos = avail if inp.positions is None else np.asarray(inp.positions)[avail]
        nb, sims = _restrict(graph, np.concatenate([pos.astype(np.int64), labeled]))
        return LocalGraph(avail, len(labeled), nb, sims)
    # an on-the-fly candidate view: an exact graph of (a sample of) its rows, built now
    if len(avail) > max_rows:
        avail = np.sort(inp.rng.choice(avail, size=max_rows, replace=False))
    E = np.vstack([_rows(inp.X, avail), np.asarray(inp.labeled_embeddings, dtype=np.float32)])
    if len(E) < 2:
        return LocalGraph(avail, len(labeled), np.full((len(E), 1), -1), np.full((len(E), 1), -np.inf, np.float32), E)
    g = KNNGraph.build(E, k=min(k, len(E) - 1), index="Flat")
    nb = np.asarray(g.neighbors, dtype=np.int64)
    return LocalGraph(avail, len(labeled), nb, np.where(nb >= 0, g.similarities, -np.inf).astype(np.float32), E)


def _node_embeddings(inp: SelectInputs, lg: LocalGraph) -> np.ndarray:
    if lg.embeddings is not None:
        return lg.embeddings
    return np.vstack([_rows(inp.X, lg.rows), np.asarray(inp.labeled_embeddings, dtype=np.float32)])


# --------------------------------------------------------------------------- TypiClust


def typicality(A: np.ndarray, knn: int = TYPICLUST_KNN, max_ref: int = 2000,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """``1 / mean Euclidean distance to the knn nearest other rows`` of each row of ``A`` among
    ``A`` (TypiClust's typicality, within one cluster). The rows of a cluster larger than
    ``max_ref`` are compared with ``max_ref`` reference rows (a uniform sample): bounded cost."""
    n = len(A)
    if n < 2:
        return np.ones(n)
    ref = np.arange(n)
    if n > max_ref:
        ref = np.sort((rng or np.random.default_rng(0)).choice(n, size=max_ref, replace=False))
    R = A[ref]
    k = min(knn, len(ref) - 1)
    out = np.empty(n)
    rn = np.einsum("ij,ij->i", R, R)
    for rows in iter_row_chunks(n, 2048):
        Q = A[rows]
        d2 = np.einsum("ij,ij->i", Q, Q)[:, None] - 2.0 * Q @ R.T + rn[None, :]
        self_ = np.flatnonzero(np.isin(np.arange(rows.start, rows.stop), ref))
        if len(self_):  # a row is not its own neighbour
            d2[self_, np.searchsorted(ref, np.arange(rows.start, rows.stop)[self_])] = np.inf
        near = np.partition(d2, k - 1, axis=1)[:, :k] if k < d2.shape[1] else d2
        out[rows] = 1.0 / (np.sqrt(np.maximum(near, 0.0)).mean(axis=1) + 1e-12)
    return out


def typiclust_select(inp: SelectInputs, b: int, *, max_clusters: int = TYPICLUST_MAX_CLUSTERS,
                     min_cluster: int = TYPICLUST_MIN_CLUSTER, knn: int = TYPICLUST_KNN,
                     max_rows: int = TYPICLUST_MAX_ROWS) -> np.ndarray:
    """TypiClust: ``min(|L| + b, max_clusters)`` k-means clusters of the available rows and the
    labeled items; ``b`` times, take the cluster with the fewest labels (then the largest, then
    at random) among those of at least ``min_cluster`` items with an unchosen row, and from it
    the most typical unchosen row. Beyond ``max_rows`` available rows a uniform sample of them is
    clustered (O(max_rows K d) per round). Returns row indices of ``inp.X``."""
    avail = inp.available
    _check_batch(b, len(avail))
    if len(avail) > max(max_rows, b):
        avail = np.sort(inp.rng.choice(avail, size=max(max_rows, b), replace=False))
    L = np.asarray(inp.labeled_embeddings, dtype=np.float32)
    A = np.vstack([_rows(inp.X, avail), L])
    n_av = len(avail)
    K = int(min(len(L) + b, max_clusters, len(A)))
    lab, _ = kmeans_labels(reduce_dims(A, inp.cache), K, inp.rng)
    size = np.bincount(lab, minlength=K)
    labeled_count = np.bincount(lab[n_av:], minlength=K).astype(np.float64)
    free = np.bincount(lab[:n_av], minlength=K)  # unchosen available rows per cluster
    tie = inp.rng.random(K)
    typ: dict[int, np.ndarray] = {}
    taken = np.zeros(n_av, dtype=bool)
    picks = []
    for _ in range(b):
        ok = free > 0
        if (ok & (size >= min_cluster)).any():
            ok &= size >= min_cluster
        # fewest labels first, then the largest cluster, then at random
        c = int(np.lexsort((tie, -size, labeled_count, ~ok))[0])
        members = np.flatnonzero(lab == c)
        if c not in typ:
            typ[c] = typicality(A[members], knn=knn, rng=inp.rng)
        t = np.where((members < n_av) & ~taken[np.minimum(members, n_av - 1)], typ[c], -np.inf)
        j = int(members[int(np.argmax(t))])
        taken[j] = True
        picks.append(j)
        labeled_count[c] += 1
        free[c] -= 1
    inp.info.update({"clusters": K})
    return avail[np.asarray(picks, dtype=np.int64)]


# --------------------------------------------------------------------------- ProbCover


def purity_threshold(neighbors: np.ndarray, similarities: np.ndarray, cluster: np.ndarray,
                     alpha: float = PROBCOVER_ALPHA) -> float:
    """The ball threshold t (balls are ``{j : sim(i, j) > t}``) of the largest δ at which at
    least ``alpha`` of the balls are pure, ProbCover's choice of δ, exact on the graph.

    The ball of item i is pure while it excludes i's most similar neighbour of another cluster,
    whose similarity is ``s_i`` (``-inf`` when the graph holds none): pure iff ``s_i <= t``.
    The share of pure balls at t is the share of ``s_i <= t``, so the smallest t reaching
    ``alpha`` is the ``ceil(alpha n)``-th smallest ``s_i``."""
    n = neighbors.shape[0]
    valid = neighbors >= 0
    other = valid & (cluster[np.maximum(neighbors, 0)] != cluster[:, None])
    s = np.where(other, similarities, -np.inf).max(axis=1)
    return float(np.sort(s)[max(int(np.ceil(alpha * n)) - 1, 0)])


def threshold_to_delta(t: float) -> float:
    """The Euclidean radius δ between unit vectors at cosine t: ``sqrt(2 - 2 t)``."""
    return float(np.sqrt(max(2.0 - 2.0 * min(t, 1.0), 0.0))) if np.isfinite(t) else 2.0


def max_coverage_greedy(neighbors: np.ndarray, similarities: np.ndarray, threshold: float,
                        chooseable: np.ndarray, covered: np.ndarray, b: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Greedy maximum coverage of balls ``{i} + {j in kNN(i) : sim > threshold}``.

    ``covered``: nodes already covered (by labeled items); ``chooseable``: nodes that may be
    picked. Each pick is the chooseable node whose ball holds the most uncovered nodes (ties at
    random); its ball is then covered and the counts of the balls that held those nodes drop.
    When nothing uncovered is left, the rest of the batch is uniformly random. Returns node
    indices in pick order."""
    n = neighbors.shape[0]
    covered = covered.copy()
    edge = (neighbors >= 0) & (similarities > threshold)
    src = np.concatenate([np.repeat(np.arange(n), edge.sum(axis=1)), np.arange(n)])
    dst = np.concatenate([neighbors[edge], np.arange(n)])  # every ball holds its centre
    degree = np.bincount(src[~covered[dst]], minlength=n).astype(np.float64)
    by_dst = np.argsort(dst, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=n))])
    out_ptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))])
    by_src = np.argsort(src, kind="stable")
    key = degree + 0.5 * rng.random(n)  # integer counts: the fraction only breaks ties
    key[~chooseable] = -np.inf
    picks = []
    for _ in range(b):
        i = int(np.argmax(key))
        if not np.isfinite(key[i]):
            break
        if degree[i] <= 0:  # all covered: the rest at random (as the paper does)
            rest = np.flatnonzero(np.isfinite(key))
            rest = rest[rest != i]
            extra = rng.choice(rest, size=min(b - len(picks) - 1, len(rest)), replace=False)
            picks.extend([i, *extra.tolist()])
            break
        picks.append(i)
        ball = dst[by_src[out_ptr[i]:out_ptr[i + 1]]]
        new = ball[~covered[ball]]
        covered[new] = True
        if len(new):
            holders = src[np.concatenate([by_dst[indptr[j]:indptr[j + 1]] for j in new.tolist()])]
            dec = np.bincount(holders, minlength=n)
            degree -= dec
            key -= dec
        key[i] = -np.inf
    return np.asarray(picks[:b], dtype=np.int64)


def probcover_select(inp: SelectInputs, b: int, *, alpha: float = PROBCOVER_ALPHA) -> np.ndarray:
    """ProbCover on the graph restricted to the available rows and the labeled items; the
    labeled items' balls start covered. δ is chosen once per learner (:func:`purity_threshold`
    over k-means with as many clusters as classes, on unit vectors) and kept in the cache."""
    avail = inp.available
    _check_batch(b, len(avail))
    lg = local_graph(inp)
    key = ("probcover-threshold", alpha)
    t = inp.cache.get(key)
    if t is None:
        E = _unit(_node_embeddings(inp, lg))
        cluster, _ = kmeans_labels(E, inp.n_classes, inp.rng)
        t = purity_threshold(lg.neighbors, lg.similarities, cluster, alpha)
        inp.cache[key] = t
    n_av = len(lg.rows)
    covered = np.zeros(lg.n_nodes, dtype=bool)
    lab_nodes = np.arange(n_av, lg.n_nodes)
    covered[lab_nodes] = True
    nb = lg.neighbors[lab_nodes]
    covered[nb[(nb >= 0) & (lg.similarities[lab_nodes] > t)]] = True
    chooseable = np.zeros(lg.n_nodes, dtype=bool)
    chooseable[:n_av] = True
    picks = max_coverage_greedy(lg.neighbors, lg.similarities, t, chooseable, covered, b, inp.rng)
    out = lg.rows[picks]
    if len(out) < b:  # the graph was a sample of the view: complete the batch at random
        out = np.concatenate([out, _random_rows(avail, b - len(out), inp.rng, taken=out)])
    inp.info.update({"delta": round(threshold_to_delta(t), 4), "covered_before": float(covered.mean())})
    return out


# --------------------------------------------------------------------------- cold-start k-center


def coldstart_kcenter_select(inp: SelectInputs, b: int, *, quantile: float = 0.5) -> np.ndarray:
    """k-center greedy over the rows whose graph density (mean cosine to their neighbours in
    the graph) is at least the ``quantile`` of the available rows' densities, with the labeled
    items as initial centres, or, with none, the densest row as the first pick."""
    avail = inp.available
    _check_batch(b, len(avail))
    lg = local_graph(inp)
    sims = lg.similarities[: len(lg.rows)]
    ok = np.isfinite(sims)
    density = np.where(ok.any(axis=1), np.where(ok, sims, 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1), -1.0)
    cut = np.quantile(density, quantile) if len(density) else 0.0
    dense = lg.rows[density >= cut]
    if len(dense) < b:  # too few dense rows: the densest b
        dense = lg.rows[np.argsort(-density, kind="stable")[:b]]
    exclude = np.ones(inp.X.shape[0], dtype=bool)
    exclude[dense] = False
    centers = np.asarray(inp.labeled_embeddings, dtype=np.float32)
    first = np.empty(0, dtype=np.int64)
    if len(centers) == 0:
        first = np.asarray([lg.rows[int(np.argmax(density))]], dtype=np.int64)
        centers = _rows(inp.X, first)
        exclude[first] = True
        if b == 1:
            return first
    rest = kcenter_greedy(inp.X, centers, b - len(first), inp.rng, exclude=exclude)
    return np.concatenate([first, rest])


# --------------------------------------------------------------------------- BADGE


def gradient_factor(probs: np.ndarray) -> np.ndarray:
    """``a = p - e_yhat`` per row (yhat = argmax p): the gradient of the cross-entropy at the
    predicted label with respect to the logits. A softmax layer's gradient embedding is
    ``a ⊗ h`` with ``h`` its input."""
    a = np.array(probs, dtype=np.float64)
    a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
    return a


def gradient_sq_distances(a: np.ndarray, H: np.ndarray, j: int, an=None, hn=None) -> np.ndarray:
    """``|g_i - g_j|^2`` for every row i, with ``g = a ⊗ h``, in closed form:
    ``|a_i|^2 |h_i|^2 + |a_j|^2 |h_j|^2 - 2 (a_i . a_j)(h_i . h_j)`` (O(n (C + d)), no
    (n, C d) matrix). ``an`` / ``hn``: the rows' squared norms if already known."""
    an = np.einsum("ij,ij->i", a, a) if an is None else an
    hn = np.einsum("ij,ij->i", H, H) if hn is None else hn
    d = an * hn + an[j] * hn[j] - 2.0 * (a @ a[j]) * (H @ H[j])
    return np.maximum(d, 0.0)


def badge_select(X, probs: np.ndarray, b: int, rng: np.random.Generator,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """BADGE on rows ``rows`` of ``X`` (default all) with the model's probabilities ``probs``
    of those rows: k-means++ (D^2) seeding over the gradient embeddings
    ``g = (p - e_argmax p) ⊗ [x, 1]``, measured from the origin (the zero gradient of a
    confident item) for the first pick. Returns indices into ``rows``."""
    P = np.asarray(probs, dtype=np.float64)
    n = P.shape[0]
    _check_batch(b, n)
    idx = np.arange(n) if rows is None else np.asarray(rows)
    H = _rows(X, idx).astype(np.float64)
    H = np.hstack([H, np.ones((n, 1))])  # the bias column of a linear layer
    a = gradient_factor(P)
    an = np.einsum("ij,ij->i", a, a)
    hn = np.einsum("ij,ij->i", H, H)
    D = an * hn  # squared distance to the origin
    picks = []
    for _ in range(b):
        total = D.sum()
        if total <= 0 or not np.isfinite(total):  # every gradient is zero: random among the rest
            rest = np.setdiff1d(np.arange(n), picks)
            picks.extend(rng.choice(rest, size=b - len(picks), replace=False).tolist())
            break
        j = int(rng.choice(n, p=D / total))
        picks.append(j)
        np.minimum(D, gradient_sq_distances(a, H, j, an, hn), out=D)
        D[j] = 0.0
    return np.asarray(picks, dtype=np.int64)


# --------------------------------------------------------------------------- Cluster-Margin


def round_robin(cluster: np.ndarray, b: int, rng: np.random.Generator) -> np.ndarray:
    """Positions into ``cluster`` (a cluster id per item), round-robin over the clusters,
    smallest first (ties at random): pass r takes one random not-yet-taken item of every
    cluster that has more than r items. Returns the first ``b`` in that order."""
    cluster = np.asarray(cluster)
    ids, inv, counts = np.unique(cluster, return_inverse=True, return_counts=True)
    # rank of each item inside its cluster, at random
    order = np.lexsort((rng.random(len(cluster)), inv))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(cluster), dtype=np.int64)
    rank[order] = np.arange(len(cluster)) - start[inv[order]]
    cluster_key = np.lexsort((rng.random(len(ids)), counts))  # smallest cluster first
    pos_of = np.empty(len(ids), dtype=np.int64)
    pos_of[cluster_key] = np.arange(len(ids))
    seq = np.lexsort((pos_of[inv], rank))
    return seq[:b]


def cluster_margin_select(inp: SelectInputs, b: int, *, m: float = 10.0,
                          n_clusters: int | None = None) -> np.ndarray:
    """Cluster-Margin: the ``m * b`` available rows of smallest margin, grouped by a clustering
    computed once per learner (k-means centroids on up to 20,000 rows of the first view,
    ``ceil(sqrt(n))`` clusters by default, at most 1,000; the paper's average-linkage HAC is
    O(n^2)), then :func:`round_robin` over their clusters."""
    avail = inp.available
    _check_batch(b, len(avail))
    key = ("cluster-margin-centers", n_clusters)
    C = inp.cache.get(key)
    if C is None:
        sample = avail if len(avail) <= 20000 else np.sort(inp.rng.choice(avail, size=20000, replace=False))
        K = n_clusters or int(min(1000, np.ceil(np.sqrt(len(avail)))))
        _, C = kmeans_labels(_rows(inp.X, sample), K, inp.rng)
        inp.cache[key] = C
    scores = np.full(inp.X.shape[0], -np.inf)
    P = inp.probs(avail)
    scores[avail] = margin(P)
    M = top_b(scores, int(min(len(avail), max(b, np.ceil(m * b)))), inp.rng)
    E = _rows(inp.X, M)
    # nearest centroid of each of the m*b rows: (m b) x K distances
    cn = np.einsum("ij,ij->i", C, C)
    nearest = np.argmin(cn[None, :] - 2.0 * E @ C.T, axis=1)
    pick = round_robin(nearest, b, inp.rng)
    inp.info.update({"clusters_in_batch": int(len(np.unique(nearest[pick])))})
    return M[pick]


# --------------------------------------------------------------------------- strategy objects


class SelectingStrategy(Strategy, metaclass=ABCMeta):
    """A strategy that chooses the whole batch from the structure of the pool: it has no per-item
    score and reads a :class:`SelectInputs` (``needs_inputs``), which the loop passes to
    :meth:`~datascout.strategies.Strategy.select` beside the view; :meth:`choose` picks from it."""

    needs_inputs = True
    selects_by_score = False

    def select(self, view, b, rng, *, scores, centers, inputs: SelectInputs) -> np.ndarray:
        return self.choose(inputs, b)

    @abstractmethod
    def choose(self, inputs: SelectInputs, b: int) -> np.ndarray:
        """Positions in ``inputs``' rows of the ``b`` items to label next (each subclass's method);
        a subclass without it cannot be constructed."""


class TypiClust(SelectingStrategy):
    name = "typiclust"

    def choose(self, inputs, b):
        return typiclust_select(inputs, b)


class ProbCover(SelectingStrategy):
    name = "probcover"

    def __init__(self, alpha: float = PROBCOVER_ALPHA):
        if not 0.0 < alpha <= 1.0:
            raise ValidationError(f"alpha must be in (0, 1] but is {alpha}")
        self.alpha = float(alpha)

    def choose(self, inputs, b):
        return probcover_select(inputs, b, alpha=self.alpha)

    def __repr__(self):
        return f"ProbCover(alpha={self.alpha})"


class ColdStartKCenter(SelectingStrategy):
    name = "kcenter-cold"

    def __init__(self, quantile: float = 0.5):
        if not 0.0 <= quantile < 1.0:
            raise ValidationError(f"quantile must be in [0, 1) but is {quantile}")
        self.quantile = float(quantile)

    def choose(self, inputs, b):
        return coldstart_kcenter_select(inputs, b, quantile=self.quantile)

    def __repr__(self):
        return f"ColdStartKCenter(quantile={self.quantile})"


class BADGE(SelectingStrategy):
    name = "badge"
    needs_probs = True

    def choose(self, inputs, b):
        avail = inputs.available
        return avail[badge_select(inputs.X, inputs.probs(avail), b, inputs.rng, rows=avail)]


class ClusterMargin(SelectingStrategy):
    name = "cluster-margin"
    needs_probs = True

    def __init__(self, m: float = 10.0, n_clusters: int | None = None):
        if not m >= 1.0:
            raise ValidationError(f"m must be >= 1 but is {m}")
        if n_clusters is not None and n_clusters < 1:
            raise ValidationError(f"n_clusters must be >= 1 but is {n_clusters}")
        self.m, self.n_clusters = float(m), n_clusters

    def choose(self, inputs, b):
        return cluster_margin_select(inputs, b, m=self.m, n_clusters=self.n_clusters)

    def __repr__(self):
        return f"ClusterMargin(m={self.m}, n_clusters={self.n_clusters})"
