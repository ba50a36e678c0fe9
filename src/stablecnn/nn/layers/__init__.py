"""Layers: one module per family, all following the contract in :mod:`stablecnn.nn.layers.base`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import numpy as np

from stablecnn.errors import ConfigError
from stablecnn.nn import init as initializers
from stablecnn.nn.layers.activations import LeakyReLU, ReLU
from stablecnn.nn.layers.avgpool import AvgPool2d, GlobalAvgPool2d
from stablecnn.nn.layers.base import Layer
from stablecnn.nn.layers.conv import Conv2d
from stablecnn.nn.layers.dense import Linear
from stablecnn.nn.layers.dropout import Dropout
from stablecnn.nn.layers.norm import BatchNorm1d, BatchNorm2d
from stablecnn.nn.layers.pool import MaxPool2d
from stablecnn.nn.layers.reshape import Flatten

LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (
        Conv2d,
        MaxPool2d,
        Linear,
        ReLU,
        Flatten,
        AvgPool2d,
        GlobalAvgPool2d,
        BatchNorm1d,
        BatchNorm2d,
        Dropout,
        LeakyReLU,
    )
}


def from_config(
    config: dict, rng: np.random.Generator | None = None, dtype=np.float32, weights: bool = True
) -> Layer:
    """Build a layer from ``{"type": name, **constructor arguments}``.

    ``weight_init`` and ``bias_init`` may be given as initialiser configs
    (``{"type": "TruncatedNormal", "std": 0.1}``). ``weights=False`` checks the same arguments
    but allocates no parameter (see :meth:`Layer.without_weights`).

    Raises:
        ConfigError: ``config`` is not a mapping; an unknown type, an argument the layer does
            not take or lacks (naming the layer type), or a value its constructor refuses.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"a layer config must be a mapping with a 'type', got {type(config).__name__} "
            f"{str(config)[:80]}"
        )
    config = dict(config)
    name = config.pop("type", None)
    if name not in LAYERS:
        raise ConfigError(f"unknown layer type {name!r}; known: {', '.join(sorted(LAYERS))}")
    cls = LAYERS[name]
    for key in ("weight_init", "bias_init"):
        if isinstance(config.get(key), dict):
            config[key] = initializers.from_config(config[key])
    accepted = inspect.signature(cls.__init__).parameters
    # each only where the constructor takes it: Dropout draws its seed from rng but has no dtype,
    # BatchNorm has a dtype but draws nothing
    if "rng" in accepted:
        config["rng"] = rng
    if "dtype" in accepted:
        config["dtype"] = dtype
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ConfigError(f"{name}: unknown argument(s) {unknown}")
    make = cls if weights else cls.without_weights
    try:
        return make(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None


__all__ = ["Layer", "LAYERS", "from_config", *LAYERS]  # every registered layer, by its name
