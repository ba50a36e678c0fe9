"""Reshaping layers."""

from __future__ import annotations

import math

import numpy as np

from stablecnn.nn.layers.base import Layer


class Flatten(Layer):
    """Flatten every axis but the batch, in C order (channels, then rows, then columns).

    This is PyTorch's ``nn.Flatten()`` order, so a dense layer's weights transfer as they are.
    Reference: :func:`stablecnn.reference.flatten_forward` and
    :func:`~stablecnn.reference.flatten_backward`, which this code is.

    Shape: (N, *dims) -> (N, prod(dims)).

    Raises:
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since).
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(input_shape),)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        self._shape = x.shape if training else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._shape is None:
            raise RuntimeError("Flatten: backward needs a forward(x, training=True) first")
        shape, self._shape = self._shape, None
        return dout.reshape(shape) if need_input_grad else None

    def __repr__(self):
        return "Flatten()"
