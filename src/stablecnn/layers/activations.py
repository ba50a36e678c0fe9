"""Activations."""

from __future__ import annotations

import numpy as np

from stablecnn.layers.base import Layer


class ReLU(Layer):
    r"""``relu(x) = max(x, 0)``; the gradient passes where the output is positive.

    At exactly 0 the derivative is taken as 0, as in PyTorch.

    Shape: any; output has the input's shape and dtype.
    """

    def __init__(self):
        super().__init__()
        self._out = None

    def forward(self, x, training=True):
        out = np.maximum(x, 0)
        self._out = out if training else None
        return out

    def backward(self, dout, need_input_grad=True):
        if self._out is None:
            raise RuntimeError("ReLU: backward needs a forward(x, training=True) first")
        out, self._out = self._out, None
        if not need_input_grad:
            return None
        return np.multiply(dout, out > 0, dtype=dout.dtype)

    def __repr__(self):
        return "ReLU()"
