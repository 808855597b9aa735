"""The library's own exceptions.

Every error caused by what a user passed in derives from :class:`DatascoutError`, itself a
``ValueError``, so a caller (and the CLI) can tell a user's mistake from a bug: the CLI prints
the one-line message of a ``DatascoutError`` and exits with status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class DatascoutError(ValueError):
    """A user's mistake: bad input, a bad argument, a missing file or package."""


class ValidationError(DatascoutError):
    """Input data (embeddings, ids, labels) is malformed or inconsistent."""


class LabelingError(DatascoutError):
    """A ``teach`` call that cannot be applied (unknown or repeated ids, unknown classes)."""


class MissingDependencyError(DatascoutError):
    """An optional package or a data file is not installed; the message says what to install."""


class IndexMismatchError(DatascoutError):
    """A similarity index or kNN graph does not match the embeddings it is used with."""
