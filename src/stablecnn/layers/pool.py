"""Max pooling.

The kernels loop over the kH*kW offsets of the window (4 for Model 1's 2x2 pools), each step one
vectorised comparison over the whole batch: no loop over images, channels or pixels.

Ties: when a window holds equal maxima, the whole gradient goes to the *first* of them in
row-major window order (smallest row, then smallest column), as PyTorch's CPU kernel does.
"""

from __future__ import annotations

import numpy as np

from stablecnn import parallel
from stablecnn.errors import ShapeError
from stablecnn.layers.base import Layer, pair


def _window(x, i, j, stride, out_hw):
    """The (N, C, Ho, Wo) view of ``x`` at kernel offset (i, j)."""
    (sh, sw), (ho, wo) = stride, out_hw
    return x[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def batch_or_channel(x) -> int:
    """Axis 0 or 1, whichever is outermost in memory (and longer than 1): the axis to split
    across threads, since windows never cross it."""
    return max((0, 1), key=lambda i: (x.shape[i] > 1, abs(x.strides[i])))


def maxpool2d_forward(x, kernel=(2, 2), stride=(2, 2), with_argmax=True):
    """``out[n, c, i, j] = max_{p<kH, q<kW} x[n, c, i*sH + p, j*sW + q]``.

    Returns ``(out, argmax)``: out (N, C, Ho, Wo) and, per output, the row-major index
    ``p * kW + q`` of the first maximum in its window (uint8), which backward needs (None when
    not ``with_argmax``). Both keep the input's memory layout, so every pass below walks memory
    in order; spans of the outermost of the batch and channel axes run on separate threads.
    """
    kh, kw = kernel
    ho = (x.shape[2] - kh) // stride[0] + 1
    wo = (x.shape[3] - kw) // stride[1] + 1
    out = np.empty_like(_window(x, 0, 0, stride, (ho, wo)), order="K")
    argmax = np.empty_like(out, dtype=np.uint8) if with_argmax else None

    def pool(x, out, argmax):
        out[...] = _window(x, 0, 0, stride, (ho, wo))
        if argmax is None:
            for k in range(1, kh * kw):
                np.maximum(out, _window(x, k // kw, k % kw, stride, (ho, wo)), out=out)
            return
        argmax[...] = 0
        better = np.empty_like(out, dtype=bool)
        index = np.empty_like(argmax)
        for k in range(1, kh * kw):
            candidate = _window(x, k // kw, k % kw, stride, (ho, wo))
            np.greater(candidate, out, out=better)  # strict: a later equal value never wins
            np.maximum(out, candidate, out=out)
            # offsets come in increasing order, so "k where better, else keep" is a running max
            np.multiply(better, np.uint8(k), out=index)
            np.maximum(argmax, index, out=argmax)

    parallel.split(pool, x, out, argmax, axis=batch_or_channel(out))
    return out, argmax


def maxpool2d_backward(dout, argmax, x_like, kernel=(2, 2), stride=(2, 2)):
    """Route each output gradient to the input position that held its window's maximum.

    ``x_like`` is the forward input (only its shape, dtype and layout are used). Overlapping
    windows (stride < kernel) can route several gradients to one input: they add.
    """
    kh, kw = kernel
    ho, wo = dout.shape[2:]
    dx = np.empty_like(x_like, dtype=dout.dtype)

    def route(dout, argmax, dx):
        dx[...] = 0
        chosen = np.empty_like(argmax, dtype=bool)
        routed = np.empty_like(dout)
        for k in range(kh * kw):
            np.equal(argmax, k, out=chosen)
            np.multiply(dout, chosen, out=routed)
            _window(dx, k // kw, k % kw, stride, (ho, wo))[...] += routed

    parallel.split(route, dout, argmax, dx, axis=batch_or_channel(dx))
    return dx


class MaxPool2d(Layer):
    r"""2-D max pooling over an NCHW batch.

    Args:
        kernel_size: int or (kH, kW).
        stride: int or (sH, sW); default the kernel size, as in PyTorch. Stride 1 gives the
            overlapping windows Model 1 uses.

    Shape:
        input (N, C, H, W) -> output (N, C, Ho, Wo), ``Ho = floor((H - kH) / sH) + 1``.

    Example:
        >>> MaxPool2d(2, stride=1).forward(np.zeros((1, 32, 19, 19), np.float32)).shape
        (1, 32, 18, 18)
    """

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        if self.kernel_size[0] * self.kernel_size[1] > 255:
            raise ValueError(f"kernel_size {self.kernel_size} is too large (at most 255 cells)")
        self._cache = None

    def config(self):
        return {"type": "MaxPool2d", "kernel_size": list(self.kernel_size), "stride": list(self.stride)}

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r} expects (N, C, H, W) inputs, got (N, {input_shape})")
        c, h, w = input_shape
        if h < self.kernel_size[0] or w < self.kernel_size[1]:
            raise ShapeError(f"{self!r}: input {h}x{w} is smaller than the window")
        return (c, (h - self.kernel_size[0]) // self.stride[0] + 1,
                (w - self.kernel_size[1]) // self.stride[1] + 1)

    def forward(self, x, training=True):
        self._check_input(x, 4)
        out, argmax = maxpool2d_forward(x, self.kernel_size, self.stride, with_argmax=training)
        self._cache = (argmax, x) if training else None  # x is the previous layer's output
        return out

    def backward(self, dout, need_input_grad=True):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        argmax, x = self._cache
        self._cache = None
        if not need_input_grad:
            return None
        return maxpool2d_backward(dout, argmax, x, self.kernel_size, self.stride)

    def __repr__(self):
        k, s = self.kernel_size, self.stride
        return f"MaxPool2d(kernel_size={k}, stride={s})"
