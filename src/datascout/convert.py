"""Pool rows as float32: float16 converted in four vectorised passes (3-4x numpy's cast), only
the rows that are scored, and a float32 copy kept across rounds when a memory budget allows it.

Scoring runs in float32 (the BLAS has no half-precision product). numpy's own float16 -> float32
cast converts one element at a time (~0.35-0.5 G elements/s on this project's machines), which
made a full-pool round on a float16 memory map cost ~14x its matrix product.
:func:`float16_to_float32` does the same conversion, exactly, in four vectorised integer/float
passes over cache-sized blocks (~1.5 G elements/s, 3-4x numpy's cast):

* widen the 16 bits to int32 with sign extension (numpy's int16 -> int32 cast is vectorised);
* shift left by 13: the 15 exponent + mantissa bits land on float32's bits 27..13;
* mask with ``0x8FFFE000``: keep the sign (bit 31) and those 15 bits;
* multiply, as float32, by 2**112: this re-biases the exponent (15 -> 127), and turns float16's
  subnormals, which arrive as float32 subnormals, into the right normal numbers; +-0 stay +-0.

Only float16's infinities and NaNs (exponent 31) come out wrong (as finite values >= 65536);
they are detected and converted by numpy's cast unless the caller knows the rows are finite (a
:class:`~datascout.pool.Pool` checks that once, when it is made).

:class:`Float32Rows` reads a pool's rows in chunks for a round: rows the round does not score
(held-out test rows, labeled rows) are never read nor converted, and with a float32 budget
(:func:`set_float32_budget`, or the environment variable ``DATASCOUT_FLOAT32_BUDGET``, e.g.
``2GiB``; default 0) the converted rows are kept, so later rounds cost what a float32 pool costs.
The default keeps peak memory near the embeddings' own size: a float32 copy of a float16 pool is
twice the file.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterator

import numpy as np

from datascout.exceptions import ValidationError

BUDGET_ENV = "DATASCOUT_FLOAT32_BUDGET"
BLOCK_ELEMENTS = 1 << 18  # conversion block: 1 MiB of float32 output, stays in L2
CHUNK_BYTES = 4 << 20  # float32 bytes of one chunk handed to the scorer
VIEW_ROWS = 65536  # rows of one chunk that needs no conversion (a float32 pool, the copy)
MAX_RUNS = 8  # a chunk's scored rows in fewer contiguous runs are converted run by run
_MASK = np.int32(np.uint32(0x8FFFE000).view(np.int32))  # sign bit + float16's 15 value bits << 13
_REBIAS = np.float32(2.0**112)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

_budget: int | None = None  # set_float32_budget; None = the environment variable, else 0


def parse_size(value, name: str = "float32 budget") -> int:
    """A byte count from an int (>= 0) or a string such as ``"0"``, ``"512MiB"``, ``"1.5GB"``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise ValidationError(f"{name} must be >= 0 bytes but is {int(value)}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", value) if isinstance(value, str) else None
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValidationError(f"{name} must be a size such as 0, 512MiB or 2GiB but is {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def set_float32_budget(value) -> None:
    """Bytes a float32 copy of a non-float32 pool's scored rows may take (``None``: back to the
    environment variable ``DATASCOUT_FLOAT32_BUDGET``, default 0 = never keep a copy)."""
    global _budget
    _budget = None if value is None else parse_size(value)


def float32_budget() -> int:
    """The budget in force: :func:`set_float32_budget`'s value, else the environment's, else 0."""
    if _budget is not None:
        return _budget
    env = os.environ.get(BUDGET_ENV)
    return 0 if env is None or env.strip() == "" else parse_size(env, f"{BUDGET_ENV}")


def float16_to_float32(src, out=None, *, finite: bool = False) -> np.ndarray:
    """``src`` (float16, any shape) as float32, value for value what ``src.astype(np.float32)``
    gives, written to ``out`` (same shape, float32, C-contiguous) when given.

    ``finite=True``: the caller guarantees no inf/NaN (skips the check for them)."""
    src = np.asarray(src)
    if src.dtype != np.float16 or src.dtype.byteorder not in "=|":
        raise ValidationError(f"float16_to_float32 needs native float16 input but got {src.dtype}")
    if out is None:
        out = np.empty(src.shape, dtype=np.float32)
    elif out.shape != src.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValidationError(
            f"out must be a C-contiguous float32 array of shape {src.shape} but is {out.dtype} {out.shape}")
    s = np.ascontiguousarray(src).reshape(-1).view(np.int16)
    o = out.reshape(-1)
    oi = o.view(np.int32)
    for start in range(0, s.size, BLOCK_ELEMENTS):
        stop = min(start + BLOCK_ELEMENTS, s.size)
        b = oi[start:stop]
        np.copyto(b, s[start:stop])  # sign-extending widen
        np.left_shift(b, 13, out=b)
        np.bitwise_and(b, _MASK, out=b)
        f = o[start:stop]
        np.multiply(f, _REBIAS, out=f)
        if not finite and (s[start:stop] & 0x7FFF).max() >= 0x7C00:  # exponent 31: inf or NaN
            bad = (s[start:stop] & 0x7C00) == 0x7C00
            f[bad] = s[start:stop].view(np.float16)[bad]
    return out


def as_float32(rows, out=None, *, finite: bool = False) -> np.ndarray:
    """``rows`` (any float array, e.g. a chunk read from a memory map) as float32: float32 input
    is returned as it is (no copy) unless ``out`` is given; float16 goes through
    :func:`float16_to_float32`; other dtypes through numpy's cast."""
    rows = np.asarray(rows)
    if rows.dtype == np.float16 and rows.dtype.byteorder in "=|":
        return float16_to_float32(rows, out, finite=finite)
    if out is None:
        return rows if rows.dtype == np.float32 else rows.astype(np.float32)
    np.copyto(out, rows)
    return out


def _runs_to_slice(positions: np.ndarray):
    """``positions`` (sorted, unique) as a slice when they are one contiguous run, else as they are."""
    if len(positions) and positions[-1] - positions[0] == len(positions) - 1:
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


class Float32Rows:
    """The rows of an (N, d) pool (an array or a memory map) as float32 chunks for a round.

    ``chunks(skip)`` yields ``(where, X)`` pairs: ``where`` (a slice or an array of pool
    positions, ascending) and the float32 rows at those positions. Rows with ``skip`` set are not
    read nor converted; a float32 pool is handed out as it is (nothing to convert, so nothing is
    gathered either: its skipped rows may appear, and the caller masks them as before).

    With a budget (``budget`` bytes; ``None`` = :func:`float32_budget` at the first round) that
    holds the scored rows in float32, the first round keeps them: later rounds read the copy.
    The copy is of the rows scored when it was made; rows skipped later (newly labeled) may then
    appear in a chunk (already converted, at no cost; the caller masks them). A round that scores
    a row the copy lacks makes a new copy.

    ``converted_rows_`` counts the rows converted so far (what a round cost in conversions).
    """

    def __init__(self, embeddings, budget=None, finite: bool = False):
        self.embeddings = embeddings
        self.budget = budget
        self.finite = finite
        self.converted_rows_ = 0
        self.copy_ = None  # float32 copy of the rows at copy_positions_
        self.copy_positions_ = None
        self._in_copy = None  # (N,) bool: the rows the copy holds

    def _budget_bytes(self) -> int:
        return float32_budget() if self.budget is None else parse_size(self.budget)

    def chunk_rows(self) -> int:
        return max(256, CHUNK_BYTES // (4 * max(self.embeddings.shape[1], 1)))

    def chunks(self, skip=None) -> Iterator[tuple[slice | np.ndarray, np.ndarray]]:
        X = self.embeddings
        n, d = X.shape
        step = self.chunk_rows()
        if skip is not None:
            skip = np.asarray(skip, dtype=bool)
            if skip.shape != (n,):
                raise ValidationError(f"skip has {skip.shape[0] if skip.ndim else 0} entries but the pool has {n} rows")
        if X.dtype == np.float32:
            for start in range(0, n, VIEW_ROWS):
                rows = slice(start, min(start + VIEW_ROWS, n))
                if skip is None or not skip[rows].all():
                    yield rows, X[rows]
            return
        if self.copy_ is not None:
            if self._copy_covers(skip):
                yield from self._from_copy(skip, VIEW_ROWS)
                return
            self.copy_, self.copy_positions_, self._in_copy = None, None, None  # a row it lacks: anew
        scored = np.arange(n, dtype=np.int64) if skip is None else np.flatnonzero(~skip)
        keep = len(scored) * d * 4 <= self._budget_bytes() and len(scored) > 0
        copy = np.empty((len(scored), d), dtype=np.float32) if keep else None
        buf = None if keep else np.empty((min(step, max(len(scored), 1)), d), dtype=np.float32)
        for start in range(0, len(scored), step):
            pos = scored[start:start + step]
            out = copy[start:start + len(pos)] if keep else buf[: len(pos)]
            self._convert(pos, out)
            yield _runs_to_slice(pos), out
        if keep:
            self.copy_, self.copy_positions_ = copy, scored
            self._in_copy = np.zeros(n, dtype=bool)
            self._in_copy[scored] = True

    def _copy_covers(self, skip) -> bool:
        """Whether the copy holds every row that ``skip`` leaves to score."""
        if skip is None:
            return len(self.copy_positions_) == self.embeddings.shape[0]
        return not (~skip & ~self._in_copy).any()

    def held(self, skip=None):
        """``(rows, positions)``: the float32 copy of the scored rows (``skip`` unset) and their
        pool positions, made now if the budget holds it; ``None`` for a float32 pool (read it as
        it is) or when the copy does not fit. For selections that pass over the rows many times
        (k-center greedy: one pass per pick)."""
        if self.embeddings.dtype == np.float32:
            return None
        skip = None if skip is None else np.asarray(skip, dtype=bool)
        if self.copy_ is None or not self._copy_covers(skip):
            n, d = self.embeddings.shape
            if (n if skip is None else int((~skip).sum())) * d * 4 > self._budget_bytes():
                return None  # no copy: the caller streams the rows (nothing converted here)
            deque(self.chunks(skip), maxlen=0)  # reading every chunk once makes the copy
        return None if self.copy_ is None else (self.copy_, self.copy_positions_)

    def _convert(self, pos: np.ndarray, out: np.ndarray) -> None:
        """Convert the rows at ``pos`` (sorted) into ``out``: a few contiguous runs (a chunk with a
        handful of labeled rows) run by run, else the rows are gathered first (half the bytes of
        the float32 they become)."""
        X = self.embeddings
        breaks = np.flatnonzero(np.diff(pos) != 1) + 1
        if len(breaks) < MAX_RUNS:
            for a, b in zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(pos)].tolist()):
                as_float32(X[int(pos[a]):int(pos[b - 1]) + 1], out=out[a:b], finite=self.finite)
        else:
            as_float32(X[pos], out=out, finite=self.finite)
        self.converted_rows_ += len(pos)

    def _from_copy(self, skip, step):
        pos_all = self.copy_positions_
        whole = len(pos_all) == self.embeddings.shape[0]
        for start in range(0, len(pos_all), step):
            pos = pos_all[start:start + step]
            if skip is not None and skip[pos].all():
                continue
            where = slice(start, start + len(pos)) if whole else pos
            yield where, self.copy_[start:start + len(pos)]
