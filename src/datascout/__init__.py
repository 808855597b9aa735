"""datascout: decide which data to label next, and which data to keep.

The layers, bottom to top (a module imports only from layers below it)::

    cli                          thin: parse, call the library, print
    loop / simulate              ActiveLearner (query -> ids, teach), simulation harness
    registry                     STRATEGIES: every strategy by name
    auto / coverage              batch-selecting strategies (TypiClust, ProbCover, BADGE, ...)
    strategies / seals           pure scoring and selection functions on arrays
    index / models               faiss similarity search, classifier wrappers
    pool / io / datasets         ids + embeddings (memory-mapped) + labels; loaders
"""

from datascout.exceptions import (
    DatascoutError,
    IndexMismatchError,
    LabelingError,
    MissingDependencyError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "DatascoutError",
    "IndexMismatchError",
    "LabelingError",
    "MissingDependencyError",
    "ValidationError",
    "__version__",
]
