"""Named architectures, each a plain config that :meth:`Sequential.from_config` builds.

``md1`` is written here in Python (the original interface and the pickle layout depend on it, and
it needs no TOML reader); every other built-in is a model file shipped in ``stablecnn/models/``
(``md2.toml``, ...), read by :mod:`stablecnn.modelfile`. ``models/md1.toml`` is md1 as a file, a
starting point for your own; a test keeps the two equal.

``md1`` is Model 1 of the original code: two overlapping-pool conv stages and a 1024-unit dense
layer, truncated-normal weights (std 0.1, cut at 2 std) and biases 0.1::

    (1, 28, 28) -conv 10x10-> (32, 19, 19) -pool 2x2/1-> (32, 18, 18)
                -conv 5x5->   (16, 14, 14) -pool 2x2/1-> (16, 13, 13) -> 2704 -> 1024 -> 10
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import numpy as np

from stablecnn import modelfile
from stablecnn.model import Sequential
from stablecnn.errors import ConfigError

_W = {"weight_init": {"type": "TruncatedNormal", "std": 0.1, "mean": 0.0, "cut": 2.0},
      "bias_init": {"type": "Constant", "value": 0.1}}

MD1 = {
    "input_shape": [1, 28, 28],
    "layers": [
        {"type": "Conv2d", "in_channels": 1, "out_channels": 32, "kernel_size": 10, **_W},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2, "stride": 1},
        {"type": "Conv2d", "in_channels": 32, "out_channels": 16, "kernel_size": 5, **_W},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2, "stride": 1},
        {"type": "Flatten"},
        {"type": "Linear", "in_features": 13 * 13 * 16, "out_features": 1024, **_W},
        {"type": "ReLU"},
        {"type": "Linear", "in_features": 1024, "out_features": 10, **_W},
    ],
}

MODELS: dict[str, dict] = {"md1": MD1}  # built in Python; the rest are files (see model_files)


def model_files() -> dict[str, Path]:
    """``{name: path}`` of the model files shipped in ``stablecnn/models/``."""
    folder = resources.files("stablecnn") / "models"
    if not folder.is_dir():
        return {}
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".toml")}


def names() -> list[str]:
    """Every built-in architecture name, sorted."""
    return sorted(set(MODELS) | set(model_files()))


def config(name: str) -> dict:
    """A copy of the named architecture's config (a shipped model file is read and checked)."""
    if name in MODELS:
        return copy.deepcopy(MODELS[name])
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
