"""The earlier flat layout's module paths (``stablecnn.model``, ``stablecnn.layers``, ...), imported
as the modules that took their place: ``import stablecnn.model`` gives :mod:`stablecnn.nn.model`
itself, the same module object, not a copy."""

import importlib
import importlib.abc
import importlib.util
import sys

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


def install_moved_modules() -> None:
    """Put the finder of :data:`MOVED`'s paths on ``sys.meta_path`` (once), before the path
    finders, which would load a second copy of a moved module under its old name."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())
