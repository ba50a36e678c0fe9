"""Average pooling: windowed (AvgPool2d) and over the whole map (GlobalAvgPool2d).

Like max pooling, the windowed kernels loop over the kH*kW offsets of the window, each step one
vectorised add over the whole batch: no loop over images, channels or pixels.
"""

from __future__ import annotations

import numpy as np

from stablecnn import reference
from stablecnn.errors import ConfigError, ShapeError
from stablecnn.nn.layers.base import Layer, pair


def _window(
    x: np.ndarray, i: int, j: int, stride: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """The (N, C, Ho, Wo) view of ``x`` at kernel offset (i, j)."""
    (sh, sw), (ho, wo) = stride, out_hw
    return x[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def _pad(x: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    (ph, pw) = padding
    if ph == pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def avgpool2d_forward(
    x: np.ndarray,
    kernel: tuple[int, int] = (2, 2),
    stride: tuple[int, int] = (2, 2),
    padding: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """``out[n, c, i, j] = sum_{p<kH, q<kW} xpad[n, c, i*sH + p, j*sW + q] / (kH * kW)``.

    ``xpad`` is ``x`` with ``padding`` zeros on each side; the zeros count in the divisor
    (PyTorch's ``count_include_pad=True``).
    Reference: :func:`stablecnn.reference.avgpool2d_forward`.
    """
    kh, kw = kernel
    xp = _pad(x, padding)  # (N, C, H + 2pH, W + 2pW)
    ho = (xp.shape[2] - kh) // stride[0] + 1
    wo = (xp.shape[3] - kw) // stride[1] + 1
    out = _window(xp, 0, 0, stride, (ho, wo)).copy()  # (N, C, Ho, Wo)
    for k in range(1, kh * kw):
        out += _window(xp, k // kw, k % kw, stride, (ho, wo))
    out /= kh * kw
    return out


def avgpool2d_backward(
    dout: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int] = (2, 2),
    stride: tuple[int, int] = (2, 2),
    padding: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """``dxpad[n, c, i*sH + p, j*sW + q] += dout[n, c, i, j] / (kH * kW)``, then the padding is cut.

    Overlapping windows (stride < kernel) send several shares to one input: they add.
    Reference: :func:`stablecnn.reference.avgpool2d_backward`.
    """
    kh, kw = kernel
    (ph, pw) = padding
    n, c, h, w = x_shape
    ho, wo = dout.shape[2:]
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dout.dtype)
    share = dout / (kh * kw)  # every cell of a window gets the same share
    for k in range(kh * kw):
        _window(dxp, k // kw, k % kw, stride, (ho, wo))[...] += share
    if ph == pw == 0:
        return dxp
    return np.ascontiguousarray(dxp[:, :, ph : ph + h, pw : pw + w])


class AvgPool2d(Layer):
    r"""2-D average pooling over an NCHW batch.

    Reference: :func:`stablecnn.reference.avgpool2d_forward` and
    :func:`~stablecnn.reference.avgpool2d_backward` (``kernels = "reference"`` runs them).

    .. math::
        out[n, c, i, j] = \frac{1}{k_H k_W} \sum_{p < k_H} \sum_{q < k_W}
                          x_{pad}[n, c, i s_H + p, j s_W + q]

    Padding zeros count in the average (PyTorch's ``count_include_pad=True``); windows never hang
    over the padded input (``ceil_mode=False``). Backward spreads each output gradient evenly over
    its window: ``dx[window] += dout / (kH * kW)``.

    Args:
        kernel_size: int or (kH, kW).
        stride: int or (sH, sW); default the kernel size, as in PyTorch.
        padding: int or (pH, pW) zeros on each side, at most half the kernel (as in PyTorch).

    Shape:
        input (N, C, H, W) -> output (N, C, Ho, Wo), ``Ho = floor((H + 2 pH - kH) / sH) + 1``,
        ``Wo = floor((W + 2 pW - kW) / sW) + 1``.

    Raises:
        ConfigError: when built, ``kernel_size`` or ``stride`` not a positive int or pair of
            them, ``padding`` not a non-negative int or pair, or more than half the kernel.
        ShapeError: ``forward`` of an input that is not 4-D or whose padded map is smaller than
            the window (and :meth:`output_shape` of such a shape).
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since); ``forward`` of a
            layer made by :meth:`~stablecnn.nn.layers.base.Layer.without_weights`.
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> AvgPool2d(3, stride=2, padding=1).forward(np.zeros((2, 8, 7, 6), np.float32)).shape
        (2, 8, 4, 3)
    """

    _layout = "(N, C, H, W)"

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ConfigError(
                f"padding must be at most half the kernel size {self.kernel_size}, got {padding!r}"
            )
        self._x_shape = None

    def config(self) -> dict:
        return {
            "type": "AvgPool2d",
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r} expects (N, C, H, W) inputs, got (N, {input_shape})")
        c, h, w = input_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ShapeError(
                f"{self!r}: input {h}x{w} (padded {h + 2 * ph}x{w + 2 * pw}) is "
                f"smaller than the window"
            )
        return (c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)

    def padded_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = input_shape
        return (c, h + 2 * self.padding[0], w + 2 * self.padding[1])

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        self._check_input(x, 4)
        self._x_shape = x.shape if training else None
        if self.kernels == "reference":
            return reference.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return avgpool2d_forward(x, self.kernel_size, self.stride, self.padding)

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._x_shape is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        x_shape, self._x_shape = self._x_shape, None
        if not need_input_grad:
            return None
        if self.kernels == "reference":
            return reference.avgpool2d_backward(
                dout, x_shape, self.kernel_size, self.stride, self.padding
            )
        return avgpool2d_backward(dout, x_shape, self.kernel_size, self.stride, self.padding)

    def __repr__(self):
        pad = f", padding={self.padding}" if self.padding != (0, 0) else ""
        return f"AvgPool2d(kernel_size={self.kernel_size}, stride={self.stride}{pad})"


class GlobalAvgPool2d(Layer):
    r"""Average each channel over its whole map: ``out[n, c] = mean_{i, j} x[n, c, i, j]``.

    PyTorch's ``adaptive_avg_pool2d(x, 1).flatten(1)``: it replaces Flatten before the classifier
    in all-convolutional networks. Backward: ``dx[n, c, i, j] = dout[n, c] / (H * W)``.
    Reference: :func:`stablecnn.reference.global_avgpool2d_forward` and
    :func:`~stablecnn.reference.global_avgpool2d_backward`, which this code is.

    Shape:
        input (N, C, H, W) -> output (N, C).

    Raises:
        ShapeError: ``forward`` of an input that is not 4-D (and :meth:`output_shape` of a
            shape that is not (C, H, W)).
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since); ``forward`` of a
            layer made by :meth:`~stablecnn.nn.layers.base.Layer.without_weights`.
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> GlobalAvgPool2d().forward(np.ones((2, 16, 7, 5), np.float32)).shape
        (2, 16)
    """

    _layout = "(N, C, H, W)"

    def __init__(self) -> None:
        super().__init__()
        self._x_shape = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r} expects (N, C, H, W) inputs, got (N, {input_shape})")
        return (input_shape[0],)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        self._check_input(x, 4)
        self._x_shape = x.shape if training else None
        return x.mean(axis=(2, 3))  # (N, C), in x's dtype

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._x_shape is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        x_shape, self._x_shape = self._x_shape, None
        if not need_input_grad:
            return None
        dx = np.empty(x_shape, dtype=dout.dtype)  # (N, C, H, W)
        dx[...] = (dout / (x_shape[2] * x_shape[3]))[:, :, None, None]
        return dx

    def __repr__(self):
        return "GlobalAvgPool2d()"
