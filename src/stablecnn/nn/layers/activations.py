"""Activations."""

from __future__ import annotations

import numpy as np

from stablecnn import reference
from stablecnn.errors import ConfigError
from stablecnn.kernels import parallel
from stablecnn.kernels.relu import relu_grad_into, relu_into
from stablecnn.nn.layers.base import Layer


class ReLU(Layer):
    r"""``relu(x) = max(x, 0)``; the gradient passes where the output is positive.

    At exactly 0 the derivative is taken as 0, as in PyTorch. Reference:
    :func:`stablecnn.reference.relu_forward` and :func:`~stablecnn.reference.relu_backward`
    (``kernels = "reference"`` runs them instead of the threaded passes).

    Shape: any; output has the input's shape and dtype.

    Raises:
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since).
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._out = None

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        if self.kernels == "reference":
            out = reference.relu_forward(x)
        else:
            out = np.empty_like(x, order="K")
            parallel.split(relu_into, x, out)  # max(x, 0), against a row of zeros
        self._out = out if training else None
        return out

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._out is None:
            raise RuntimeError("ReLU: backward needs a forward(x, training=True) first")
        out, self._out = self._out, None
        if not need_input_grad:
            return None
        if self.kernels == "reference":
            return reference.relu_backward(dout, out)  # out > 0 exactly where x > 0
        dx = np.empty_like(out, dtype=dout.dtype)  # the layout of the forward output
        return relu_grad_into(dout, out, dx)

    def __repr__(self):
        return "ReLU()"


class LeakyReLU(Layer):
    r"""``leaky_relu(x) = x if x > 0 else negative_slope * x``.

    The derivative is 1 where ``x > 0`` and ``negative_slope`` elsewhere (at exactly 0 too, as in
    PyTorch), so ``dx = where(x > 0, dout, negative_slope * dout)``. Reference:
    :func:`stablecnn.reference.leaky_relu_forward` and
    :func:`~stablecnn.reference.leaky_relu_backward`, which this code is.

    Args:
        negative_slope: the slope for ``x <= 0``, default 0.01 (PyTorch's).

    Shape: any; output has the input's shape and dtype.

    Raises:
        ConfigError: when built, ``negative_slope`` not a finite real number.
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since).
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> LeakyReLU(0.1).forward(np.array([-2.0, 0.0, 3.0]))
        array([-0.2,  0. ,  3. ])
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if (
            not isinstance(negative_slope, (int, float, np.integer, np.floating))
            or isinstance(negative_slope, bool)
            or not np.isfinite(negative_slope)
        ):
            raise ConfigError(f"negative_slope must be a finite number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)
        self._positive = None

    def config(self) -> dict:
        return {"type": "LeakyReLU", "negative_slope": self.negative_slope}

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        positive = x > 0
        out = np.where(positive, x, x * x.dtype.type(self.negative_slope))
        self._positive = positive if training else None
        return out

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._positive is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        positive, self._positive = self._positive, None
        if not need_input_grad:
            return None
        return np.where(positive, dout, dout * dout.dtype.type(self.negative_slope))

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope})"
