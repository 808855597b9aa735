"""Loaders for the real data sets that work offline on these machines.

Nothing here downloads. When a file is missing, the error says exactly what to install.

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 x 64, 10 classes).
* ``fashion-mnist``: Debian package ``dataset-fashion-mnist`` (70,000 28x28 images, 10 classes).
* ``fortunes``: Debian package ``fortunes`` (~15k quotes; the file a quote comes from is its
  class, several classes under 1%).
* ``letter``: UCI Letter Recognition (20,000 x 16, 26 classes) from Debian ``r-cran-mlbench``,
  unpacked with ``apt-get download`` + ``dpkg -x`` (no R needed), read with ``rdata``.
"""

from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datascout.exceptions import MissingDependencyError, ValidationError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]


def cache_dir() -> Path:
    """Where datascout caches derived data (``$DATASCOUT_CACHE`` or ``~/.cache/datascout``)."""
    return Path(os.environ.get("DATASCOUT_CACHE", Path.home() / ".cache" / "datascout"))


@dataclass
class Dataset:
    """A labeled data set: ``data`` is an (N, d) array, a list of texts, or (N, 28, 28) images."""

    name: str
    data: object
    labels: np.ndarray
    classes: list[str]
    kind: str  # "vectors", "text" or "images"
    ids: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return Dataset("digits", d.data.astype(np.float32), d.target.astype(np.int64),
                   [str(i) for i in range(10)], "vectors")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(directory=FASHION_MNIST_DIR) -> Dataset:
    """All 70,000 images (train then test) as uint8 (N, 28, 28), labels 0..9."""
    directory = Path(directory)
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise MissingDependencyError(
            f"Fashion-MNIST is not installed ({directory / missing[0]} is missing): "
            "run 'apt-get install dataset-fashion-mnist'"
        )
    xtr, ytr, xte, yte = (_read_idx(directory / f) for f in files)
    return Dataset("fashion-mnist", np.concatenate([xtr, xte]),
                   np.concatenate([ytr, yte]).astype(np.int64), list(FASHION_MNIST_CLASSES), "images")


def fashion_mnist_pixel_embeddings(dim: int = 64, random_state: int = 0) -> tuple[np.ndarray, Dataset]:
    """Fashion-MNIST as PCA-``dim`` embeddings of the pixels (unsupervised, fitted on all 70k
    images), cached in :func:`cache_dir`. A no-torch stand-in for pretrained image embeddings."""
    ds = load_fashion_mnist()
    path = cache_dir() / f"fashion-mnist-pca{dim}-rs{random_state}.npy"
    if path.is_file():
        emb = np.load(path)
        if emb.shape == (len(ds.labels), dim):
            return emb, ds
    from sklearn.decomposition import PCA

    X = ds.data.reshape(len(ds.labels), -1).astype(np.float32) / 255.0
    emb = PCA(n_components=dim, random_state=random_state, svd_solver="randomized").fit_transform(X)
    emb = emb.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb, ds


def load_fortunes(directory=FORTUNES_DIR, min_chars: int = 1) -> Dataset:
    """Every quote of the ``fortunes`` package; its class is the file it comes from."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingDependencyError(
            f"the fortunes are not installed ({directory} is missing): run 'apt-get install fortunes'"
        )
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.suffix and not p.is_symlink())
    texts, labels, classes = [], [], []
    for path in files:
        raw = path.read_text(encoding="utf-8", errors="replace")
        quotes = [q.strip() for q in raw.split("\n%\n")]
        quotes = [q.rstrip("%").strip() for q in quotes]
        quotes = [q for q in quotes if len(q) >= min_chars]
        if not quotes:
            continue
        classes.append(path.name)
        texts.extend(quotes)
        labels.extend([len(classes) - 1] * len(quotes))
    if not texts:
        raise MissingDependencyError(f"no fortunes found in {directory}: run 'apt-get install fortunes'")
    ids = np.asarray([f"{classes[c]}:{i}" for i, c in enumerate(labels)])
    return Dataset("fortunes", texts, np.asarray(labels, dtype=np.int64), classes, "text", ids=ids)


MLBENCH_DATA = "usr/lib/R/site-library/mlbench/data"
SYSTEM_MLBENCH = Path("/") / MLBENCH_DATA  # where an installed r-cran-mlbench keeps it


def _mlbench_rda(name: str) -> Path:
    unpacked = Path(os.environ.get("DATASCOUT_MLBENCH", cache_dir() / "mlbench"))
    for c in (unpacked / MLBENCH_DATA, SYSTEM_MLBENCH):
        if (c / name).is_file():
            return c / name
    raise MissingDependencyError(
        f"{name} from Debian r-cran-mlbench is not unpacked: run 'cd /tmp && apt-get download "
        f"r-cran-mlbench && dpkg -x r-cran-mlbench_*.deb {unpacked}' "
        "(or set DATASCOUT_MLBENCH to the folder it was unpacked in) and 'pip install rdata'"
    )


def _read_mlbench(rda: str, frame: str, label: str):
    """(features float32, class codes, class names) of data frame ``frame`` in mlbench's ``rda``."""
    path = _mlbench_rda(rda)
    try:
        import rdata
    except ImportError as exc:
        raise MissingDependencyError(f"reading {rda} needs rdata: pip install rdata") from exc
    with warnings.catch_warnings():  # the .rda files declare no encoding; their strings are ASCII
        warnings.filterwarnings("ignore", message="Unknown encoding", category=UserWarning)
        table = rdata.read_rda(str(path))[frame]
    column = table[label]
    X = table.drop(columns=[label]).to_numpy(dtype=np.float32)
    return X, np.asarray(column.cat.codes, dtype=np.int64), [str(c) for c in column.cat.categories]


def load_letter() -> Dataset:
    """UCI Letter Recognition: 20,000 x 16 integer features, 26 classes (A..Z)."""
    X, y, classes = _read_mlbench("LetterRecognition.rda", "LetterRecognition", "lettr")
    return Dataset("letter", X, y, classes, "vectors")


def load_satellite() -> Dataset:
    """UCI Statlog Landsat Satellite: 6,435 x 36 multispectral pixel values, 6 soil/crop classes."""
    X, y, classes = _read_mlbench("Satellite.rda", "Satellite", "classes")
    return Dataset("satellite", X, y, classes, "vectors")


def load_shuttle() -> Dataset:
    """UCI Statlog Shuttle: 58,000 x 9 numeric features, 7 classes, ~78% of them one class."""
    X, y, classes = _read_mlbench("Shuttle.rda", "Shuttle", "Class")
    return Dataset("shuttle", X, y, classes, "vectors")


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of :data:`DATASETS`: how to load the data set and what its ready pool holds."""

    load: Callable[[], Dataset]
    kind: str  # "vectors", "text" or "images"
    model: str  # the default embedder of its pool ("identity": the feature vectors themselves)
    items: str
    package: str  # how to install it
    installed: Callable[[], bool]


def _mlbench_installed(rda: str) -> Callable[[], bool]:
    def installed() -> bool:
        try:
            return _mlbench_rda(rda).is_file()
        except MissingDependencyError:
            return False
    return installed


_MLBENCH = "apt-get download r-cran-mlbench + dpkg -x; pip: rdata"

# the one table of offline data sets: the loaders, `datascout datasets`, the pools and the docs read it
DATASETS = {
    "fortunes": DatasetSpec(load_fortunes, "text", "all-MiniLM-L6-v2", "~15k quotes, ~43 classes",
                            "apt: fortunes", lambda: FORTUNES_DIR.is_dir()),
    "fashion-mnist": DatasetSpec(load_fashion_mnist, "images", "efficientnet-lite0", "70,000 images, 10 classes",
                                 "apt: dataset-fashion-mnist",
                                 lambda: (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()),
    "letter": DatasetSpec(load_letter, "vectors", "identity", "20,000 x 16, 26 classes", _MLBENCH,
                          _mlbench_installed("LetterRecognition.rda")),
    "satellite": DatasetSpec(load_satellite, "vectors", "identity", "6,435 x 36, 6 classes", _MLBENCH,
                             _mlbench_installed("Satellite.rda")),
    "shuttle": DatasetSpec(load_shuttle, "vectors", "identity", "58,000 x 9, 7 classes", _MLBENCH,
                           _mlbench_installed("Shuttle.rda")),
    "digits": DatasetSpec(load_digits, "vectors", "identity", "1,797 x 64, 10 classes",
                          "scikit-learn (bundled)", lambda: True),
}


def check_dataset(name: str) -> DatasetSpec:
    """The entry of ``name`` in :data:`DATASETS`, or a one-line error listing the names."""
    if name not in DATASETS:
        raise ValidationError(f"unknown data set {name!r}: expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load(name: str) -> Dataset:
    return check_dataset(name).load()


