"""Shared fixtures: small slices of real data (digits, Fashion-MNIST pixels), cached per session."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits: (1797, 64) float32 scaled to [0, 1], labels 0..9."""
    from datascout.datasets import load

    ds = load("digits")
    return ds.data / 16.0, ds.labels


@pytest.fixture(scope="session")
def fashion_ds():
    """All of Fashion-MNIST (Debian ``dataset-fashion-mnist``); skips when it is not installed."""
    from datascout.datasets import load_fashion_mnist
    from datascout.exceptions import MissingDependencyError

    try:
        return load_fashion_mnist()
    except MissingDependencyError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def fashion_slice(fashion_ds):
    """The first 3,000 Fashion-MNIST images as PCA-32 embeddings of their pixels (fitted on the
    slice), labels 0..9."""
    from sklearn.decomposition import PCA

    ds = fashion_ds
    X = ds.data[:3000].reshape(3000, -1).astype(np.float32) / 255.0
    emb = PCA(n_components=32, random_state=0).fit_transform(X).astype(np.float32)
    return emb, ds.labels[:3000].copy()


@pytest.fixture()
def blobs():
    """Three well separated 2-D clusters of 20 points (labels 0, 1, 2), plus a little noise."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = np.repeat(np.arange(3), 20)
    X = (centers[y] + rng.normal(scale=0.5, size=(60, 2))).astype(np.float32)
    return X, y


@pytest.fixture()
def digits_files(tmp_path, digits):
    """digits written as E.npy / Y.npy for the CLI."""
    X, y = digits
    e, lab = tmp_path / "E.npy", tmp_path / "Y.npy"
    np.save(e, X.astype(np.float32))
    np.save(lab, y)
    return e, lab


@pytest.fixture(scope="module")
def one_faiss_thread():
    """Small indexes build faster on one thread than on contended OpenMP threads."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
