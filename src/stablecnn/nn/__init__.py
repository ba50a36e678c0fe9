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

from stablecnn.nn import init, layers, zoo
from stablecnn.nn.layers import *  # noqa: F403  (every class of layers.LAYERS)
from stablecnn.nn.layers import Layer
from stablecnn.nn.losses import SoftmaxCrossEntropy, log_softmax, softmax
from stablecnn.nn.model import Sequential

# a layer added to layers.LAYERS is part of this API (and stablecnn's) without another edit
__all__ = [
    "Sequential",
    "Layer",
    *layers.LAYERS,
    "SoftmaxCrossEntropy",
    "softmax",
    "log_softmax",
    "init",
    "zoo",
]
