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
from stablecnn.nn.layers.residual import Residual

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
        Residual,
    )
}
CONTAINERS: dict[type[Layer], tuple[str, ...]] = {
    Residual: ("body", "shortcut")
}  # a block type -> its arguments that hold layers
MAX_REPEAT = 1000  # a "repeat" count above this is a typo (ResNet-1202 repeats a block 200 times)


def repeat_count(config) -> int:
    """How many copies of the layer ``config`` stands for: its ``"repeat"`` (1 without one).

    Raises:
        ConfigError: ``repeat`` not an int in [1, :data:`MAX_REPEAT`].
    """
    count = config.get("repeat", 1) if isinstance(config, Mapping) else 1
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_REPEAT:
        raise ConfigError(
            f"repeat must be an int from 1 to {MAX_REPEAT} (the number of copies of this "
            f"layer), got {count!r:.40}"
        )
    return count


def expand_repeats(configs: list) -> list:
    """Layer configs with each ``{"repeat": k, ...}`` written out as ``k`` copies (without the
    key), so a model file describes a block once and repeats it. Configs without ``repeat`` are
    kept as they are (the same objects).

    Raises:
        ConfigError: a bad ``repeat`` (:func:`repeat_count`), naming the layer index.
    """
    out = []
    for i, config in enumerate(configs):
        if not (isinstance(config, Mapping) and "repeat" in config):
            out.append(config)
            continue
        try:
            count = repeat_count(config)
        except ConfigError as exc:
            raise ConfigError(f"layer {i}: {exc}") from None
        one = {k: v for k, v in config.items() if k != "repeat"}
        out.extend(dict(one) for _ in range(count))
    return out


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
    for key in CONTAINERS.get(cls, ()):  # a block: its layers first, in order, from rng
        if key in config:
            config[key] = _children(config[key], key, name, rng, dtype, weights)
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
        return make(
            **{
                k: tuple(v) if isinstance(v, list) and k not in CONTAINERS.get(cls, ()) else v
                for k, v in config.items()
            }
        )
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _children(configs, key: str, name: str, rng, dtype, weights: bool) -> list[Layer]:
    """The layers of a block's ``key`` (``"body"``, ``"shortcut"``) from their configs."""
    if not isinstance(configs, list):
        raise ConfigError(f"{name}: {key} must be a list of layers, got {str(configs)[:80]}")
    layers = []
    for i, config in enumerate(expand_repeats(configs)):
        try:
            layers.append(from_config(config, rng=rng, dtype=dtype, weights=weights))
        except ValueError as exc:
            raise type(exc)(f"{name} {key}.{i}: {exc}") from None
    return layers


__all__ = [
    "Layer",
    "LAYERS",
    "expand_repeats",
    "from_config",
    *LAYERS,
]  # every registered layer, by its name
