"""SimilarityIndex: exact search against a numpy reference, recall floors of every approximate
backend against Flat on seeded clustered data, add / save / load, and input errors."""

import json

import numpy as np
import pytest

from datascout.exceptions import DatascoutError, IndexMismatchError, ValidationError
from datascout.index import SimilarityIndex, check_factory, recall_at_k
from datascout.pool import normalize_rows


def clustered(n=4000, d=32, n_clusters=30, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, d))
    return (centers[rng.integers(0, n_clusters, n)] + noise * rng.normal(size=(n, d))).astype(np.float32)


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def pq(data):
    return SimilarityIndex("IVF64,PQ16x4", nprobe=8).build(data[0])


@pytest.fixture(scope="module")
def data():
    X = clustered()
    Q = X[:300]
    _, exact = SimilarityIndex("Flat").build(X).search(Q, 10)
    return X, Q, exact


def test_flat_matches_numpy_cosine_ranking(data):
    X, Q, _ = data
    sims, pos = SimilarityIndex("Flat").build(X).search(Q[:20], 5)
    Xn, Qn = normalize_rows(X), normalize_rows(Q[:20])
    ref = Qn @ Xn.T
    ref_pos = np.argsort(-ref, axis=1)[:, :5]
    np.testing.assert_array_equal(pos, ref_pos)
    np.testing.assert_allclose(sims, np.take_along_axis(ref, ref_pos, axis=1), atol=1e-5)
    assert (pos[:, 0] == np.arange(20)).all()  # every query's nearest item is itself


@pytest.mark.parametrize("factory,floor", [
    ("HNSW32", 0.95),
    ("HNSW16", 0.95),
    ("IVF64,Flat", 0.95),
    ("IVF64,PQ16x4", 0.9),  # codes re-ranked exactly over refine*k candidates
    ("IVF64_HNSW32,Flat", 0.95),  # an HNSW coarse quantizer (billion-scale nlist)
    ("IVF64_HNSW32,PQ16x4", 0.9),
    ("LSH", 0.5),           # random-hyperplane LSH (d bits), as in the SEALS lecture
])
def test_recall_floor_against_flat(data, pq, factory, floor):
    X, Q, exact = data
    idx = pq if factory == "IVF64,PQ16x4" else SimilarityIndex(factory).build(X)
    sims, pos = idx.search(Q, 10, exact_embeddings=X)
    r = recall_at_k(pos, exact)
    assert r >= floor, f"{factory} recall@10 = {r:.3f} below {floor}"
    # returned similarities are exact cosines, best first
    Xn, Qn = normalize_rows(X), normalize_rows(Q)
    ref = np.einsum("qkd,qd->qk", Xn[pos], Qn)
    np.testing.assert_allclose(sims, ref, atol=1e-4)
    assert (np.diff(sims, axis=1) <= 1e-6).all()


def test_lossy_search_without_rerank_is_worse(data, pq):
    X, Q, exact = data
    idx = pq
    _, raw = idx.search(Q, 10)
    _, refined = idx.search(Q, 10, exact_embeddings=X)
    assert recall_at_k(refined, exact) > recall_at_k(raw, exact)


def test_recall_at_k_by_hand():
    approx = np.array([[1, 2, 3], [4, 5, -1]])
    exact = np.array([[3, 2, 9], [6, 5, 4]])
    assert recall_at_k(approx, exact) == pytest.approx((2 + 2) / 6)
    assert recall_at_k(exact, exact) == 1.0
    with pytest.raises(ValidationError, match="shape"):
        recall_at_k(approx[:, :2], exact)


def test_add_gives_next_positions_and_is_searchable():
    X = clustered(n=1200)
    idx = SimilarityIndex("HNSW32").build(X[:1000])
    new = idx.add(X[1000:])
    np.testing.assert_array_equal(new, np.arange(1000, 1200))
    assert idx.ntotal_ == 1200
    _, pos = idx.search(X[1000:1050], 1)
    np.testing.assert_array_equal(pos[:, 0], np.arange(1000, 1050))


def test_save_load_round_trip(tmp_path, data, pq):
    X, Q, _ = data
    for factory in ("HNSW32", "IVF64,PQ16x4"):
        idx = pq if factory == "IVF64,PQ16x4" else SimilarityIndex(factory, nprobe=8).build(X)
        path = tmp_path / f"{factory.replace(',', '-')}.faiss"
        idx.save(path)
        back = SimilarityIndex.load(path)
        assert (back.factory, back.dim_, back.ntotal_, back.nprobe) == (factory, 32, len(X), 8)
        s1, p1 = idx.search(Q[:50], 10, exact_embeddings=X)
        s2, p2 = back.search(Q[:50], 10, exact_embeddings=X)
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_allclose(s1, s2)
    with pytest.raises(ValidationError, match="expected an index file"):
        SimilarityIndex.load(tmp_path / "missing.faiss")


def test_dimension_mismatch_errors(data):
    X, _, _ = data
    idx = SimilarityIndex("Flat").build(X)
    with pytest.raises(IndexMismatchError, match="16 columns but the index was built with 32"):
        idx.search(np.zeros((2, 16), np.float32), 3)
    with pytest.raises(IndexMismatchError, match="16 columns but the index was built with 32"):
        idx.add(np.zeros((2, 16), np.float32))
    assert issubclass(IndexMismatchError, DatascoutError)


def test_bad_inputs():
    with pytest.raises(ValidationError, match="unsupported index 'HNSW'"):
        check_factory("HNSW")
    with pytest.raises(ValidationError, match="not built"):
        SimilarityIndex("Flat").search(np.zeros((1, 4), np.float32), 1)
    with pytest.raises(ValidationError, match="needs at least 64 training rows but the pool has 10"):
        SimilarityIndex("IVF64,Flat").build(np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32))
    small = np.random.default_rng(0).normal(size=(100, 64)).astype(np.float32)
    for factory, message in (("PQ8", "'PQ8' cannot be trained on 100 rows: Number of training points"),
                             ("IVF16,PQ7", "cannot index 64-dimensional vectors: .* multiple of"),
                             ("IVF0,Flat", "IVF0 must have IVF >= 1"), ("HNSW1", "HNSW1 must have HNSW >= 2")):
        with pytest.raises(ValidationError, match=message):
            SimilarityIndex(factory).build(small)
    for bad in ({"nprobe": 0}, {"ef_search": -5}, {"ef_construction": 0}, {"refine": 0}):
        with pytest.raises(ValidationError, match=f"{next(iter(bad))} must be an integer >= 1"):
            SimilarityIndex("HNSW32", **bad)
    idx = SimilarityIndex("Flat").build(np.eye(3, dtype=np.float32))
    with pytest.raises(ValidationError, match="k must be >= 1"):
        idx.search(np.eye(3, dtype=np.float32), 0)
    sims, pos = idx.search(np.eye(3, dtype=np.float32)[:1], 5)  # k above the pool: padded
    assert pos.tolist() == [[0, pos[0, 1], pos[0, 2], -1, -1]]
    assert np.isneginf(sims[0, 3:]).all()


def test_normalize_rows_keeps_zero_rows():
    X = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(normalize_rows(X), [[0.6, 0.8], [0.0, 0.0]])


def _sidecar_variants(meta: dict) -> dict:
    """Ten ways an index description can be damaged."""
    def without(key):
        return {k: v for k, v in meta.items() if k != key}

    return {
        "not json": "{not json",
        "truncated": json.dumps(meta)[:40],
        "a list": "[1, 2]",
        "no factory": json.dumps(without("factory")),
        "no dim": json.dumps(without("dim")),
        "dim is text": json.dumps({**meta, "dim": "32"}),
        "nprobe is null": json.dumps({**meta, "nprobe": None}),
        "refine is 0": json.dumps({**meta, "refine": 0}),
        "unknown factory": json.dumps({**meta, "factory": "HNSW"}),
        "not utf-8": b"\xff\xfe{}",
    }


def test_load_refuses_a_damaged_description_with_one_line(tmp_path, data):
    X, _, _ = data
    path = tmp_path / "i.faiss"
    SimilarityIndex("Flat").build(X[:200]).save(path)
    meta = json.loads((tmp_path / "i.faiss.json").read_text())
    for name, text in _sidecar_variants(meta).items():
        raw = text if isinstance(text, bytes) else text.encode()
        (tmp_path / "i.faiss.json").write_bytes(raw)
        with pytest.raises(ValidationError) as info:
            SimilarityIndex.load(path)
        msg = str(info.value)
        assert "i.faiss.json" in msg and "\n" not in msg, (name, msg)


def test_load_refuses_an_index_that_does_not_match_its_description(tmp_path, data):
    """An interrupted save (new index file, old description) or a damaged index file is caught."""
    X, _, _ = data
    a, b = tmp_path / "a.faiss", tmp_path / "b.faiss"
    SimilarityIndex("Flat").build(X[:200]).save(a)
    SimilarityIndex("Flat").build(X[:300]).save(b)
    a.write_bytes(b.read_bytes())  # the index of another save under a's description
    with pytest.raises(ValidationError, match="do not match its description"):
        SimilarityIndex.load(a)
    b.write_bytes(b.read_bytes()[:-10])
    with pytest.raises(ValidationError, match="do not match its description"):
        SimilarityIndex.load(b)
    assert not list(tmp_path.glob("*.tmp*"))  # every write went through a temporary and a rename


def test_lsh_similarities_are_cosines_or_the_search_is_refused(data):
    """LSH ranks by Hamming distance: searched with the pool its similarities are exact cosines,
    and without it the search says so instead of returning negative distances."""
    X, Q, _ = data
    idx = SimilarityIndex("LSH").build(X)
    with pytest.raises(ValidationError, match="Hamming distance, not cosine: search it with exact_embeddings"):
        idx.search(Q[:5], 10)
    sims, pos = idx.search(Q[:5], 10, exact_embeddings=X)
    ref = np.einsum("qkd,qd->qk", normalize_rows(X)[pos], normalize_rows(Q[:5]))
    np.testing.assert_allclose(sims, ref, atol=1e-5)
    assert (sims <= 1.0 + 1e-5).all() and (sims[:, 0] > 0.99).all()  # each query finds itself


def test_train_makes_an_empty_trained_index_and_from_faiss_adopts_one(data):
    X, Q, _ = data
    trained = SimilarityIndex("IVF16,Flat", nprobe=16).train(X)
    assert trained.ntotal_ == 0 and trained.dim_ == 32 and trained.index_.is_trained
    full = SimilarityIndex("IVF16,Flat", nprobe=16).build(X)
    trained.add(X)
    np.testing.assert_array_equal(trained.search(Q[:20], 5)[1], full.search(Q[:20], 5)[1])
    other = SimilarityIndex("IVF16,Flat", nprobe=16).from_faiss(full.index_)
    assert (other.dim_, other.ntotal_) == (32, len(X))
    import pickle

    back = pickle.loads(pickle.dumps(full))  # travels to a Ray task whole, options included
    assert (back.factory, back.nprobe, back.refine, back.ntotal_) == ("IVF16,Flat", 16, 4, len(X))
    np.testing.assert_array_equal(back.search(Q[:20], 5)[1], full.search(Q[:20], 5)[1])


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_a_save_interrupted_at_any_step_leaves_the_old_index_or_the_new(tmp_path, data, monkeypatch, crash_at):
    """Each rename of a save may be the last thing the process does: a later load gives the
    previous index (interrupted before the description moved into place) or the new one (after),
    never a refused, torn pair."""
    import os

    X, _, _ = data
    path = tmp_path / "i.faiss"
    SimilarityIndex("Flat").build(X[:200]).save(path)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == crash_at:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        SimilarityIndex("Flat").build(X[:300]).save(path)
    monkeypatch.setattr(os, "replace", real_replace)
    committed = any(str(d).endswith(".json") for d in calls[:-1])  # the description moved into place
    loaded = SimilarityIndex.load(path)
    assert loaded.ntotal_ == (300 if committed else 200)
    assert SimilarityIndex.load(path).ntotal_ == loaded.ntotal_  # and stays so
    assert not (tmp_path / "i.faiss.pending").exists()
