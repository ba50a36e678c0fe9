"""The engine a learner reads: layers, the loss, initialisers, :class:`Sequential`, the fusion
pass, model files and the zoo of named architectures.

- :mod:`~stablecnn.nn.layers`: one module per layer family, each layer's math in its docstring and
  its readable definition in :mod:`stablecnn.reference`.
- :mod:`~stablecnn.nn.losses`: softmax cross-entropy, finite for any finite logits.
- :mod:`~stablecnn.nn.init`: weight initialisers.
- :mod:`~stablecnn.nn.model`: :class:`Sequential`; :mod:`~stablecnn.nn.fuse`: the ReLU + max-pool
  fusion of its execution plan.
- :mod:`~stablecnn.nn.modelfile`: TOML/JSON model files, checked before anything is allocated;
  :mod:`~stablecnn.nn.zoo`: the named architectures (``nn/models/*.toml``).
"""

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
    "init",
    "zoo",
]
