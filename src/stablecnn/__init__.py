"""stablecnn: a numerically stable deep CNN library written from scratch in NumPy.

The package, by concern (see the README's layout):

- :mod:`stablecnn.nn`: the engine a learner reads (layers, loss, init, Sequential, model files,
  the zoo); :mod:`stablecnn.reference`: the readable definition of every layer and the loss.
- :mod:`stablecnn.kernels`: the fast kernels and stablecnn's threads.
- :mod:`stablecnn.optim`: optimizers, schedules, clipping.
- :mod:`stablecnn.data`: datasets, sources with checksums, batching, pictures and their framing.
- :mod:`stablecnn.training`: the loop, callbacks, checkpoints, resuming, metrics, plots.
- :mod:`stablecnn.cli`: every command; :mod:`stablecnn.legacy`: the original scripts' files.
- :mod:`stablecnn.errors`: every exception; :mod:`stablecnn.files`: the atomic file writer.

Modules of the earlier flat layout (``stablecnn.model``, ``stablecnn.layers``, ``stablecnn.train``,
...) still import, as the modules that took their place (:data:`MOVED`).
"""

from stablecnn import nn, optim
from stablecnn._moved import MOVED as MOVED  # the old paths: stablecnn.MOVED
from stablecnn._moved import install_moved_modules
from stablecnn.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ShapeError,
    StableCNNError,
    TrainingError,
)
from stablecnn.kernels import parallel, runtime
from stablecnn.nn import *  # noqa: F403  (nn.__all__: Sequential, the layers, the loss, init, zoo)
from stablecnn.optim import *  # noqa: F403  (optim.__all__: optimizers, schedules, clipping)
from stablecnn.optim import schedules

__version__ = "0.1.0"

__all__ = [
    *nn.__all__,
    *optim.__all__,
    "schedules",
    "StableCNNError",
    "ConfigError",
    "DataError",
    "ShapeError",
    "CheckpointError",
    "TrainingError",
    "parallel",
    "runtime",
]

install_moved_modules()
del install_moved_modules
