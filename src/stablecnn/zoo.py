"""Named architectures, each a plain config that :meth:`Sequential.from_config` builds.

``md1`` is Model 1 of the original code: two overlapping-pool conv stages and a 1024-unit dense
layer, truncated-normal weights (std 0.1, cut at 2 std) and biases 0.1::

    (1, 28, 28) -conv 10x10-> (32, 19, 19) -pool 2x2/1-> (32, 18, 18)
                -conv 5x5->   (16, 14, 14) -pool 2x2/1-> (16, 13, 13) -> 2704 -> 1024 -> 10
"""

from __future__ import annotations

import copy

import numpy as np

from stablecnn.model import Sequential

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

MODELS: dict[str, dict] = {"md1": MD1}


def config(name: str) -> dict:
    """A copy of the named architecture's config."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return copy.deepcopy(MODELS[name])


def build(name: str, seed: int = 0, dtype=np.float32) -> Sequential:
    """Build the named architecture with weights drawn from ``numpy.random.default_rng(seed)``.

    Example:
        >>> model = build("md1", seed=0)
        >>> model.num_params
        2796218
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return Sequential.from_config(config(name), seed=seed, dtype=dtype)
