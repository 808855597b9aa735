"""Loaders for the real data sets that work offline on these machines.

Nothing here downloads. When a file is missing, the error says exactly what to install.

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 x 64, 10 classes).
* ``fashion-mnist``: Debian package ``dataset-fashion-mnist`` (70,000 28x28 images, 10 classes).
* ``fortunes``: Debian package ``fortunes`` (~15k quotes; the file a quote comes from is its
  class, several classes under 1%).
* ``letter``: UCI Letter Recognition (20,000 x 16, 26 classes) from Debian ``r-cran-mlbench``,
  unpacked with ``apt-get download`` + ``dpkg -x`` (no R needed), read with ``rdata``.
* ``debian``: Debian's package descriptions (short + long, from the ``Translation-en`` lists),
  each package with its ``Section`` (the multiclass label) and its debtags ``Tag:`` set (several
  labels per item); see :func:`load_debian_packages`.
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import subprocess
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


APT_LISTS = Path("/var/lib/apt/lists")
DEBIAN_MIN_ITEMS = 50
DEBIAN_DROPPED_SECTIONS = ("oldlibs",)
_APT_UPDATE = "apt-get update -o Acquire::Languages=en"


def parse_deb822(text: str) -> list[dict[str, str]]:
    """The paragraphs of a Debian control-style text (``Packages``, ``Translation-en``) as dicts;
    a continuation line (leading space) is joined to its field with a newline, without the space."""
    records, cur, last = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                records.append(cur)
            cur, last = {}, None
        elif line[0] in " \t":
            if last is None:
                raise ValidationError(f"a continuation line before any field: {line[:60]!r}")
            cur[last] += "\n" + line[1:]
        else:
            key, sep, value = line.partition(":")
            if not sep:
                raise ValidationError(f"expected 'Field: value' but got {line[:60]!r}")
            last = key.strip()
            cur[last] = value.strip()
    if cur:
        records.append(cur)
    return records


def _read_list(path: Path) -> str:
    """An apt list file as text, decompressed by its suffix (``.lz4``/``.zst`` through apt-helper)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    if path.suffix == ".xz":
        with lzma.open(path, "rt", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    if path.suffix in (".lz4", ".zst"):
        helper = Path("/usr/lib/apt/apt-helper")
        if not helper.is_file():
            raise MissingDependencyError(f"reading {path} needs apt's apt-helper ({helper} is missing)")
        out = subprocess.run([str(helper), "cat-file", str(path)], capture_output=True, check=True)
        return out.stdout.decode("utf-8", errors="replace")
    return path.read_text(encoding="utf-8", errors="replace")


def _debian_lists(directory) -> tuple[str, list[str]]:
    """(Packages text, [Translation-en texts]) from ``directory`` (files named ``Packages*`` and
    ``*Translation-en*``), or from this machine's apt (``apt-cache dumpavail`` and the
    ``*Translation-en*`` lists under :data:`APT_LISTS`) when ``directory`` is None."""
    if directory is not None:
        directory = Path(directory)
        packages = sorted(directory.glob("Packages*"))
        translations = sorted(directory.glob("*Translation-en*"))
        if not packages or not translations:
            raise MissingDependencyError(
                f"{directory} must hold a Packages file and a Translation-en file but holds "
                f"{len(packages)} and {len(translations)}")
        return "\n\n".join(_read_list(p) for p in packages), [_read_list(p) for p in translations]
    translations = sorted(APT_LISTS.glob("*_i18n_Translation-en*"))
    if shutil.which("apt-cache") is None or not translations:
        raise MissingDependencyError(
            f"no English package descriptions under {APT_LISTS}: run '{_APT_UPDATE}' "
            "(or set DATASCOUT_DEBIAN to a folder with a Packages and a Translation-en file)")
    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, check=True)
    return dump.stdout.decode("utf-8", errors="replace"), [_read_list(p) for p in translations]


def _description_text(value: str) -> str:
    """A ``Description-en`` value as text: the short line, then the long one (``.`` lines are
    paragraph breaks)."""
    lines = value.split("\n")
    body = ["" if ln.strip() == "." else ln.strip() for ln in lines[1:]]
    return "\n".join([lines[0].strip()] + body).strip()


@dataclass
class DebianPackages:
    """Debian's tagged packages: ``ids`` (package names), ``texts`` (short + long description),
    ``sections`` (one per package, the multiclass label) and ``tags`` (a sorted tuple of debtags
    per package, several labels per item), aligned by position; ``info`` counts what was left out."""

    ids: np.ndarray
    texts: list[str]
    sections: np.ndarray
    tags: list[tuple[str, ...]]
    info: dict = field(default_factory=dict)

    def section_classes(self) -> list[str]:
        return sorted(set(self.sections.tolist()))

    def tag_names(self) -> list[str]:
        return sorted({t for ts in self.tags for t in ts})


def load_debian_packages(directory=None, min_items: int = DEBIAN_MIN_ITEMS,
                         drop_sections=DEBIAN_DROPPED_SECTIONS) -> DebianPackages:
    """Every package that carries a debtags ``Tag:`` field, with its description and section.

    Read from ``directory`` (a ``Packages`` and a ``Translation-en`` file, plain, ``.gz`` or
    ``.xz``), else ``$DATASCOUT_DEBIAN``, else this machine's apt lists (``apt-cache dumpavail``
    and ``/var/lib/apt/lists/*Translation-en*``, present after ``apt-get update -o
    Acquire::Languages=en``). The lists change with the mirror: a pool made from them records
    their checksum.

    * Text: the ``Description-en`` of the package's ``Description-md5`` (short line + long
      description); the short ``Description`` alone when no translation matches.
    * Section: ``contrib/`` / ``non-free/`` / ``non-free-firmware/`` prefixes stripped (the area
      is licence, not topic); ``oldlibs`` dropped (transitional and obsolete libraries: it says
      how old a package is, not what it does); then every section with fewer than ``min_items``
      tagged packages dropped (too few to learn or to measure a class on). On bookworm main this
      keeps ~29.5k packages in 45 sections.
    * Tags: the ``Tag:`` field split on commas (facets such as ``role::``, ``interface::``,
      ``implemented-in::``, ``use::``). Packages without the field are left out: no tags there
      means "not tagged", not "no tag applies".
    * A package name seen twice keeps its first paragraph.
    """
    if min_items < 1:
        raise ValidationError(f"min_items must be >= 1 but is {min_items}")
    if directory is None and os.environ.get("DATASCOUT_DEBIAN"):
        directory = os.environ["DATASCOUT_DEBIAN"]
    packages_text, translation_texts = _debian_lists(directory)
    long = {}
    for text in translation_texts:
        for r in parse_deb822(text):
            if "Package" in r and "Description-en" in r:
                long.setdefault((r["Package"], r.get("Description-md5", "")), r["Description-en"])
    seen, kept = set(), []
    untagged = duplicates = 0
    for r in parse_deb822(packages_text):
        name = r.get("Package")
        if not name:
            continue
        if name in seen:
            duplicates += 1
            continue
        seen.add(name)
        if "Tag" not in r:
            untagged += 1
            continue
        kept.append(r)
    sections = [r.get("Section", "").split("/")[-1] for r in kept]
    counts = {}
    for s in sections:
        counts[s] = counts.get(s, 0) + 1
    dropped = {s: c for s, c in counts.items() if s in drop_sections or c < min_items or not s}
    ids, texts, secs, tags = [], [], [], []
    no_translation = 0
    for r, s in zip(kept, sections):
        if s in dropped:
            continue
        desc = long.get((r["Package"], r.get("Description-md5", "")))
        if desc is None:
            no_translation += 1
            desc = r.get("Description", "")
        ids.append(r["Package"])
        texts.append(_description_text(desc))
        secs.append(s)
        tags.append(tuple(sorted({t.strip() for t in r["Tag"].replace("\n", " ").split(",") if t.strip()})))
    if not kept:
        raise MissingDependencyError(f"no Debian package with a Tag field was found: run '{_APT_UPDATE}'")
    if not ids:
        raise ValidationError(f"no section has at least min_items={min_items} tagged packages "
                              f"(the largest has {max(counts.values())})")
    info = {"untagged": untagged, "duplicates": duplicates, "no_translation": no_translation,
            "dropped_sections": dict(sorted(dropped.items())), "min_items": int(min_items)}
    return DebianPackages(np.asarray(ids), texts, np.asarray(secs), tags, info)


def load_debian(directory=None, min_items: int = DEBIAN_MIN_ITEMS) -> Dataset:
    """:func:`load_debian_packages` as a multiclass text data set: ``labels`` index the sorted
    section names in ``classes``, ``ids`` are the package names, and ``info["tags"]`` holds each
    package's debtags (sorted tuples, aligned with ``ids``) for multi-label use."""
    pk = load_debian_packages(directory, min_items)
    classes = pk.section_classes()
    labels = np.searchsorted(np.asarray(classes), pk.sections).astype(np.int64)
    info = dict(pk.info, tags=pk.tags)
    return Dataset("debian", pk.texts, labels, classes, "text", ids=pk.ids, info=info)


def _debian_installed() -> bool:
    if os.environ.get("DATASCOUT_DEBIAN"):
        return Path(os.environ["DATASCOUT_DEBIAN"]).is_dir()
    return shutil.which("apt-cache") is not None and any(APT_LISTS.glob("*_i18n_Translation-en*"))


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
    "debian": DatasetSpec(load_debian, "text", "all-MiniLM-L6-v2",
                          "~29k packages, 45 sections", f"apt: {_APT_UPDATE}",
                          _debian_installed),
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


