"""The Ray session: import Ray only when asked, connect or start a cluster, and what every
distributed step shares (remote tasks, row blocks of a shard directory, a pool as shards)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from datascout.exceptions import DatascoutError, MissingDependencyError, ValidationError
from datascout.shards import ShardedArray

RAY_HINT = "pip install 'datascout[ray]'"


def require_ray():
    """The ``ray`` module, or a :class:`MissingDependencyError` saying what to install."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(f"running on Ray needs Ray, which is not installed: {RAY_HINT}") from exc
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to the Ray cluster at ``address`` (``"auto"`` or ``"ray://host:10001"``), or start
    a local one with ``num_cpus`` CPUs. An existing session in this process is reused."""
    ray = require_ray()
    if address and address != "auto":
        _probe(address)
    if ray.is_initialized():
        return ray
    if num_cpus is not None and int(num_cpus) < 1:
        raise ValidationError(f"num_cpus must be >= 1 but is {num_cpus}")
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatascoutError(f"cannot connect to {where}: {first}") from exc
    return ray


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at ``host:port`` (Ray itself waits minutes for a GCS)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ValidationError(f"a Ray address must be 'auto', 'host:port' or 'ray://host:port' but is {address!r}")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise DatascoutError(f"cannot connect to the Ray cluster at {address!r}: {exc.strerror or exc}") from exc


@functools.lru_cache(maxsize=None)
def remote(fn):
    """The Ray remote version of a task function (made once per process)."""
    return require_ray().remote(num_cpus=1)(fn)


def as_view(pool) -> ShardedArray:
    if isinstance(pool, ShardedArray):
        return pool
    if isinstance(pool, (str, os.PathLike)):
        return ShardedArray(pool)
    raise ValidationError(
        f"a distributed run needs a shard directory (or ShardedArray) but received {type(pool).__name__}")


def row_blocks(view: ShardedArray, num_tasks: int | None) -> list[tuple[int, int]]:
    """(start, stop) row blocks: one per shard, each shard split further when ``num_tasks``
    asks for more blocks than there are shards (blocks never cross a shard boundary)."""
    n_sh = view.num_shards
    per = 1 if not num_tasks or num_tasks <= n_sh else -(-int(num_tasks) // n_sh)
    blocks = []
    for s in range(n_sh):
        lo, hi = view.shard_range(s)
        edges = np.linspace(lo, hi, min(per, max(1, hi - lo)) + 1).round().astype(np.int64)
        blocks += [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return blocks


def shards_for(path, num_shards: int | None) -> Path:
    """A shard directory for ``path``: itself if it is one, else ``path`` (a ``.npy`` file) split
    into ``num_shards`` shards beside it (``NAME.shards/``, reused when it holds these very
    embeddings in that many shards)."""
    from datascout.io import load_embeddings
    from datascout.seals import fingerprint
    from datascout.shards import is_shard_dir, write_shards

    path = Path(path)
    if is_shard_dir(path):
        return path
    if path.suffix.lower() != ".npy":
        raise ValidationError(
            f"a distributed run needs a shard directory or a .npy file to split but received {str(path)!r}")
    if num_shards is None:
        raise ValidationError(f"{str(path)!r} is a single file: give the number of shards to split it into")
    out = path.with_suffix(".shards")
    X, _ = load_embeddings(path)
    if is_shard_dir(out):
        view = ShardedArray(out)
        if (view.num_shards == num_shards and view.shape == X.shape and view.dtype == X.dtype
                and fingerprint(view) == fingerprint(X)):  # the shards of these very embeddings
            return out
    return write_shards(out, X, num_shards=num_shards, overwrite=True)
