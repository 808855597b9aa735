"""Scale-out over Ray: the operations of one machine, over the shards of a pool.

Everything here runs on Ray (the ``[ray]`` extra), never on a home-made engine; Ray is imported
only when a function here is called, and without it :func:`require_ray` says what to install.

* :mod:`~datascout.ray.session`: connect or start a cluster; a ``.npy`` pool split into shards.
* :mod:`~datascout.ray.graph`: the index (trained once, filled in parallel, merged) and the kNN
  graph, equal to the single-machine ones.
* :mod:`~datascout.ray.score`: full-pool scoring with an exact global top b; per-row maps.
* :mod:`~datascout.ray.embed`: text and image embedding with Ray Data actor pools.

Tasks read shards through :class:`~datascout.shards.ShardedArray` (which pickles as its path):
on a multi-machine cluster the shard directory and the graph's output folder must be on
storage every worker sees (NFS, a mounted bucket).
"""

from datascout.ray.embed import ImageEmbedActor, TextEmbedActor, embed_images, embed_text
from datascout.ray.graph import build_graph, build_index
from datascout.ray.score import (
    SHARD_STRATEGIES,
    EL2NScore,
    PrototypeDistance,
    ShardScorer,
    map_rows,
    merge_candidates,
    score_top_b,
    shard_candidates,
    unit_mean,
)
from datascout.ray.session import RAY_HINT, init_ray, require_ray, shards_for

__all__ = [
    "EL2NScore", "ImageEmbedActor", "PrototypeDistance", "RAY_HINT", "SHARD_STRATEGIES", "ShardScorer",
    "TextEmbedActor", "build_graph", "build_index", "embed_images", "embed_text", "init_ray", "map_rows",
    "merge_candidates", "require_ray", "score_top_b", "shard_candidates", "shards_for", "unit_mean",
]
