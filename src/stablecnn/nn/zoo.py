"""Named architectures: the model files shipped in ``stablecnn/nn/models/`` (``md1.toml``,
``md1he.toml``, ``md2.toml``), and the one way to turn a name or a model file of your own into a
model (:func:`resolve_model`; :func:`model_config` for its checked config). Files are read and
checked by :mod:`stablecnn.nn.modelfile`, which knows nothing of names.

``md1`` is Model 1 of the original code: two overlapping-pool conv stages and a 1024-unit dense
layer, truncated-normal weights (std 0.1, cut at 2 std) and biases 0.1::

    (1, 28, 28) -conv 10x10-> (32, 19, 19) -pool 2x2/1-> (32, 18, 18)
                -conv 5x5->   (16, 14, 14) -pool 2x2/1-> (16, 13, 13) -> 2704 -> 1024 -> 10
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from stablecnn.errors import ConfigError, ModelFileError
from stablecnn.nn import modelfile
from stablecnn.nn.model import Sequential


def model_files() -> dict[str, Path]:
    """``{name: path}`` of the model files shipped in ``stablecnn/nn/models/``."""
    folder = resources.files("stablecnn.nn") / "models"
    if not folder.is_dir():
        return {}
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".toml")}


def names() -> list[str]:
    """Every built-in architecture name, sorted."""
    return sorted(model_files())


def config(name: str) -> dict:
    """A copy of the named architecture's config (a shipped model file is read and checked)."""
    files = model_files()
    if name not in files:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(names())}")
    return modelfile.load_model_file(files[name])


def build(name: str, seed: int = 0, dtype=np.float32) -> Sequential:
    """Build the named architecture with weights drawn from ``numpy.random.default_rng(seed)``.

    Example:
        >>> model = build("md1", seed=0)
        >>> model.num_params
        2796218
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype}")
    return Sequential.from_config(config(name), seed=seed, dtype=dtype)


def model_config(name_or_path, num_classes: int | None = None) -> dict:
    """The checked config of a built-in model name or of a model file (a path).

    Raises:
        ModelFileError: neither a built-in name nor a readable, valid model file (the message
            names the file, line and layer at fault).
    """
    name = str(name_or_path)
    if not isinstance(name_or_path, Path) and name in names():
        found = config(name)
        if num_classes is not None:
            modelfile.validate(found, source=f"model {name!r}", num_classes=num_classes)
        return found
    if modelfile.is_model_path(name_or_path) or Path(name_or_path).exists():
        return modelfile.load_model_file(name_or_path, num_classes=num_classes)
    raise ModelFileError(
        f"unknown model {name!r}: not a built-in ({', '.join(names())}) "
        f"and not a path to a .toml or .json model file"
    )


def resolve_model(
    name_or_path,
    seed: int = 0,
    dtype=np.float32,
    num_classes: int | None = None,
    weights: bool = True,
) -> Sequential:
    """Build a built-in model or a model file with weights drawn from ``default_rng(seed)``.

    The same seed gives the same weights whether ``md1`` is named or read from ``md1.toml``.
    ``weights=False`` returns the model without weights (its shapes, parameter counts and
    summary; no array allocated: see :meth:`Sequential.from_config`), as ``stablecnn summary``
    uses it.

    Example:
        >>> resolve_model("md2", seed=0).num_params  # doctest: +SKIP
        >>> resolve_model("my_models/wide.toml", seed=1, num_classes=10)  # doctest: +SKIP
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype}")
    return Sequential.from_config(
        model_config(name_or_path, num_classes), seed=seed, dtype=dtype, weights=weights
    )
