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

import importlib
import importlib.abc
import importlib.util
import sys

from stablecnn import nn, optim
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

# old module path -> the module that took its place
MOVED = {
    "stablecnn.layers": "stablecnn.nn.layers",
    "stablecnn.losses": "stablecnn.nn.losses",
    "stablecnn.init": "stablecnn.nn.init",
    "stablecnn.model": "stablecnn.nn.model",
    "stablecnn.fuse": "stablecnn.nn.fuse",
    "stablecnn.modelfile": "stablecnn.nn.modelfile",
    "stablecnn.zoo": "stablecnn.nn.zoo",
    "stablecnn.parallel": "stablecnn.kernels.parallel",
    "stablecnn.runtime": "stablecnn.kernels.runtime",
    "stablecnn.schedules": "stablecnn.optim.schedules",
    "stablecnn.callbacks": "stablecnn.training.callbacks",
    "stablecnn.checkpoint": "stablecnn.training.checkpoint",
    "stablecnn.metrics": "stablecnn.training.metrics",
    "stablecnn.train": "stablecnn.training.trainer",
    "stablecnn.plots": "stablecnn.training.plots",
    "stablecnn.commands": "stablecnn.cli.train",
    "stablecnn.predict": "stablecnn.cli.predict",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path (and its submodules) as the module that took its place."""

    @staticmethod
    def _target(fullname: str) -> str | None:
        for old, new in MOVED.items():
            if fullname == old or fullname.startswith(old + "."):
                return new + fullname[len(old) :]
        return None

    def find_spec(self, fullname, path=None, target=None):
        new = self._target(fullname)
        return importlib.util.spec_from_loader(fullname, self) if new else None

    def create_module(self, spec):
        return importlib.import_module(self._target(spec.name))  # the same module object

    def exec_module(self, module):
        pass  # already executed under its own name


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())  # before the path finders, which would load a copy
