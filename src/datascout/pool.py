"""The pool: item ids, their embeddings (possibly memory-mapped) and their labels.

Positions (0..N-1) are the one identity used inside the library: the index, the kNN graph, the
candidate pool and the learner all store pool positions. Ids are what a user sees; a
:class:`Pool` converts between the two.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from datascout.exceptions import ValidationError

UNLABELED = -1
CHUNK_ROWS = 65536


def iter_row_chunks(n_rows: int, chunk_rows: int = CHUNK_ROWS) -> Iterator[slice]:
    """Yield contiguous slices covering ``range(n_rows)``."""
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))


def row_max(a: np.ndarray) -> np.ndarray:
    """Maximum of each row of a 2-D array. With few columns (class probabilities) a loop over the
    columns is several times faster than ``a.max(axis=1)``, whose inner reduction is short."""
    if a.shape[1] > 32 or a.shape[1] == 0:
        return a.max(axis=1)
    m = a[:, 0].copy()
    for j in range(1, a.shape[1]):
        np.maximum(m, a[:, j], out=m)
    return m


def row_sum(a: np.ndarray) -> np.ndarray:
    """Sum of each row of a 2-D array (column loop for few columns, see :func:`row_max`)."""
    if a.shape[1] > 32 or a.shape[1] == 0:
        return a.sum(axis=1)
    m = a[:, 0].copy()
    for j in range(1, a.shape[1]):
        np.add(m, a[:, j], out=m)
    return m


def row_norms(X) -> np.ndarray:
    """L2 norm of each row as float32, at least 1e-12 (a safe divisor: zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float32)
    return np.maximum(np.sqrt(np.einsum("ij,ij->i", X, X)), 1e-12)


def normalize_rows(X) -> np.ndarray:
    """float32 copy of ``X`` with unit-length rows; all-zero rows stay zero (the one rule for
    normalising rows in the library: divide by :func:`row_norms`)."""
    X = np.array(X, dtype=np.float32, copy=True)
    X /= row_norms(X)[:, None]
    return X


def unit_rows_sum(X, positions) -> np.ndarray:
    """Sum (float64) of the unit-normalised rows of ``X`` at ``positions`` (sorted positions read a
    memory map sequentially), read in chunks; zeros for no positions."""
    positions = np.asarray(positions, dtype=np.int64)
    total = np.zeros(X.shape[1], dtype=np.float64)
    for rows in iter_row_chunks(len(positions)):
        total += normalize_rows(X[positions[rows]]).sum(axis=0, dtype=np.float64)
    return total


def softmax(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax of a 2-D array (max-shifted); ``out=logits`` works in place."""
    out = np.subtract(logits, row_max(logits)[:, None], out=out)
    np.exp(out, out=out)
    out *= np.reciprocal(row_sum(out))[:, None]
    return out


def as_float32(X) -> np.ndarray:
    """``X`` as a contiguous in-memory float32 array: itself when it already is one, else a copy
    (a memory map or a shard view is read chunk by chunk)."""
    if type(X) is np.ndarray and X.dtype == np.float32 and X.flags.c_contiguous:
        return X
    from datascout.convert import as_float32 as cast_rows

    out = np.empty(X.shape, dtype=np.float32)
    for rows in iter_row_chunks(X.shape[0]):
        cast_rows(X[rows], out=out[rows])  # float16 at ~3x numpy's cast, exact
    return out


def check_embeddings(embeddings, name: str = "embeddings") -> np.ndarray:
    """Validate an (N, d) float32/float16/float64 array; memory-mapped arrays are scanned in chunks.

    Returns the array itself (never a copy), so a memory map stays a memory map.
    """
    if not hasattr(embeddings, "ndim") or not hasattr(embeddings, "dtype"):
        embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise ValidationError(
            f"{name} must be a 2-D array (items x dimensions) but has {embeddings.ndim} dimension(s)"
            f" with shape {tuple(embeddings.shape)}"
        )
    n, d = embeddings.shape
    if n == 0:
        raise ValidationError(f"{name} is empty: expected at least 1 row, got shape ({n}, {d})")
    if d == 0:
        raise ValidationError(f"{name} has 0 columns: expected at least 1 dimension")
    if embeddings.dtype not in (np.float16, np.float32, np.float64):
        raise ValidationError(
            f"{name} must be float16, float32 or float64 but has dtype {embeddings.dtype}"
        )
    for rows in iter_row_chunks(n):
        chunk = embeddings[rows]
        if not np.isfinite(chunk).all():
            bad = rows.start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise ValidationError(
                f"{name} must be finite but row {bad} contains NaN or inf"
            )
    return embeddings


def int64_ids(values, *, digit_strings: bool = False) -> np.ndarray | None:
    """``values`` as int64 when every one is an integer that fits int64 (with ``digit_strings``,
    also its canonical decimal string: "42", not "042"); else ``None`` (keep them as text)."""
    out = []
    for v in values:
        if digit_strings and isinstance(v, str) and v.lstrip("-").isdigit() and str(int(v)) == v:
            v = int(v)
        if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and -2**63 <= int(v) < 2**63):
            return None
        out.append(int(v))
    return np.asarray(out, dtype=np.int64)


def check_ids(ids, n: int) -> np.ndarray | None:
    """Validate item ids (ints or strings, unique, one per row); ``None`` means ids = positions."""
    if ids is None:
        return None
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValidationError(f"ids must be 1-D but has shape {ids.shape}")
    if len(ids) != n:
        raise ValidationError(f"ids has {len(ids)} entries but embeddings has {n} rows")
    if ids.dtype.kind not in "iuUO":
        raise ValidationError(f"ids must be integers or strings but have dtype {ids.dtype}")
    if ids.dtype.kind == "O":  # Python ints stay integers (a 100 is looked up as 100), else text
        ints = int64_ids(ids.tolist()) if len(ids) else None
        ids = ids.astype(str) if ints is None else ints
    uniq = np.unique(ids)
    if len(uniq) != n:
        counts = np.unique(ids, return_counts=True)
        dup = counts[0][counts[1] > 1].tolist()[0]
        raise ValidationError(f"ids must be unique but {dup!r} occurs {int(counts[1].max())} times")
    return ids


class Pool:
    """N items: ``ids`` (unique ints or strings, or ``None`` for 0..N-1), ``embeddings`` (N x d,
    may be a memory map that is never copied whole), ``labels`` (int class ids, -1 = unlabeled).

    Parameters
    ----------
    embeddings : array-like of shape (N, d)
    ids : array-like of shape (N,), optional
    labels : array-like of shape (N,), optional
        Class ids (``0..n_classes-1``) or ``-1`` for unlabeled.
    classes : sequence of str, optional
        Names of the class ids.
    """

    def __init__(self, embeddings, ids=None, labels=None, classes: Sequence[str] | None = None):
        self.embeddings = check_embeddings(embeddings)
        n = self.embeddings.shape[0]
        self.ids = check_ids(ids, n)
        if labels is None:
            self.labels = np.full(n, UNLABELED, dtype=np.int64)
        else:
            labels = np.asarray(labels)
            if labels.shape != (n,):
                raise ValidationError(
                    f"labels has {labels.shape[0] if labels.ndim else 0} entries but embeddings has {n} rows"
                )
            if labels.dtype.kind not in "iu":
                raise ValidationError(f"labels must be integer class ids but have dtype {labels.dtype}")
            if (labels < UNLABELED).any():
                raise ValidationError(
                    f"labels must be class ids >= 0 or -1 (unlabeled) but contain {int(labels.min())}"
                )
            self.labels = labels.astype(np.int64)
        self.classes = list(classes) if classes is not None else None
        self._position_of: dict | None = None

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def positions(self, ids) -> np.ndarray:
        """Pool positions of ``ids``; raises on an id that is not in the pool."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            ids = ids.reshape(-1)
        if self.ids is None:
            if ids.size and ids.dtype.kind not in "iu":
                raise ValidationError(f"ids must be integer positions but have dtype {ids.dtype}")
            pos = ids.astype(np.int64)
            bad = (pos < 0) | (pos >= len(self))
            if bad.any():
                raise ValidationError(
                    f"unknown id {ids[bad].tolist()[0]!r}: expected ids in 0..{len(self) - 1}"
                )
            return pos
        if self._position_of is None:
            self._position_of = {v: i for i, v in enumerate(self.ids.tolist())}
        out = np.empty(len(ids), dtype=np.int64)
        for i, v in enumerate(ids.tolist()):
            p = self._position_of.get(v)
            if p is None:
                raise ValidationError(f"unknown id {v!r}: it is not in the pool of {len(self)} items")
            out[i] = p
        return out

    def ids_at(self, positions) -> np.ndarray:
        """Ids of the given pool positions."""
        positions = np.asarray(positions, dtype=np.int64)
        return positions.copy() if self.ids is None else self.ids[positions]


def _read_only(a):
    """A read-only view of an array (other array-likes, e.g. a shard view, are returned as they are)."""
    if isinstance(a, np.ndarray):
        a = a.view()
        a.flags.writeable = False
    return a


@dataclass(frozen=True)
class CandidateView:
    """One round's rows to choose from, as a strategy sees them; its arrays are read-only.

    ``embeddings`` (m, d); ``positions`` (m,) their pool positions, or ``None`` when the rows are
    the whole pool in order; ``excluded`` (m,) rows that may not be chosen (labeled, held out);
    ``norms`` (m,) the rows' L2 norms (at least 1e-12) when known, else ``None``; ``explored``:
    how many of the rows are random exploration items (SEALS). A view describes the round it was
    taken for: take a new one after the labels change.
    """

    embeddings: object
    positions: np.ndarray | None
    excluded: np.ndarray
    norms: np.ndarray | None = None
    explored: int = 0

    @classmethod
    def of(cls, embeddings, positions, excluded, norms=None, explored: int = 0) -> "CandidateView":
        return cls(_read_only(embeddings), None if positions is None else _read_only(positions),
                   _read_only(excluded), None if norms is None else _read_only(norms), int(explored))

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @cached_property
    def n_eligible(self) -> int:
        """Rows that may be chosen."""
        return len(self) - int(np.count_nonzero(self.excluded))

    def pool_positions(self, rows) -> np.ndarray:
        """Pool positions of the view's ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        return rows if self.positions is None else self.positions[rows]
