"""Named architectures.

``md1`` is Model 1 of the original code: two overlapping-pool conv stages and a 1024-unit dense
layer, truncated-normal weights (std 0.1, cut at 2 std) and biases 0.1::

    (1, 28, 28) -conv 10x10-> (32, 19, 19) -pool 2x2/1-> (32, 18, 18)
                -conv 5x5->   (16, 14, 14) -pool 2x2/1-> (16, 13, 13) -> 2704 -> 1024 -> 10
"""

from __future__ import annotations

import numpy as np

from stablecnn import init
from stablecnn.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from stablecnn.model import Sequential


def md1(seed=0, dtype=np.float32) -> Sequential:
    """Model 1, exactly as the original trained it."""
    rng = np.random.default_rng(seed)
    w, b = init.TruncatedNormal(std=0.1, cut=2.0), init.Constant(0.1)
    kw = dict(weight_init=w, bias_init=b, rng=rng, dtype=dtype)
    return Sequential(
        Conv2d(1, 32, 10, **kw), ReLU(), MaxPool2d(2, stride=1),
        Conv2d(32, 16, 5, **kw), ReLU(), MaxPool2d(2, stride=1),
        Flatten(),
        Linear(13 * 13 * 16, 1024, **kw), ReLU(),
        Linear(1024, 10, **kw),
        input_shape=(1, 28, 28),
    )


MODELS = {"md1": md1}


def build(name: str, seed: int = 0, dtype=np.float32) -> Sequential:
    """Build the named architecture with weights drawn from ``numpy.random.default_rng(seed)``.

    Example:
        >>> model = build("md1", seed=0)
        >>> model.num_params
        2796218
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return MODELS[name](seed=seed, dtype=dtype)
