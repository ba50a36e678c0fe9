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

from stablecnn.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ShapeError,
    StableCNNError,
    TrainingError,
)
from stablecnn.kernels import parallel, runtime
from stablecnn.nn import init, zoo
from stablecnn.nn.layers import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Layer,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
)
from stablecnn.nn.losses import SoftmaxCrossEntropy, log_softmax, softmax
from stablecnn.nn.model import Sequential
from stablecnn.optim import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    AdamW,
    ConstantLR,
    CosineLR,
    Optimizer,
    RMSprop,
    Schedule,
    StepLR,
    WarmupLR,
    build_optimizer,
    build_schedule,
    clip_grad_norm,
    schedules,
)

__version__ = "0.1.0"

__all__ = [
    "Sequential",
    "Layer",
    "Conv2d",
    "MaxPool2d",
    "Linear",
    "ReLU",
    "Flatten",
    "AvgPool2d",
    "GlobalAvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Dropout",
    "LeakyReLU",
    "SoftmaxCrossEntropy",
    "softmax",
    "log_softmax",
    "Adagrad",
    "Optimizer",
    "init",
    "zoo",
    "StableCNNError",
    "ConfigError",
    "DataError",
    "ShapeError",
    "CheckpointError",
    "TrainingError",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "OPTIMIZERS",
    "build_optimizer",
    "clip_grad_norm",
    "schedules",
    "Schedule",
    "ConstantLR",
    "StepLR",
    "CosineLR",
    "WarmupLR",
    "build_schedule",
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
