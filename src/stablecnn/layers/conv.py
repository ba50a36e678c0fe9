"""2-D convolution (cross-correlation, as in every deep-learning library).

The kernels work in an im2col layout: the input windows are copied once into a matrix
``cols`` of shape ``(C*kH*kW, N*Ho*Wo)`` (a strided view, then one copy whose inner axis is the
input's contiguous width), and the convolution becomes one matrix product with the
``(F, C*kH*kW)`` weight matrix. The product comes out as ``(F, N*Ho*Wo)``; the layer returns it as
an NCHW *view* of that channel-major buffer, so the backward pass gets ``dout`` back in the layout
it needs without a transpose copy.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stablecnn import init as initializers
from stablecnn.errors import ShapeError
from stablecnn.layers.base import Layer, pair

Padding = tuple[tuple[int, int], tuple[int, int]]


def conv_output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    """``floor((size + pad_before + pad_after - kernel) / stride) + 1``."""
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def resolve_padding(padding, kernel_size: tuple[int, int], stride: tuple[int, int]) -> Padding:
    """Turn an int, a pair, ``"valid"`` or ``"same"`` into ``((top, bottom), (left, right))``.

    ``"same"`` (stride 1 only, as in PyTorch) pads ``k - 1`` in all, the odd one at the end.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
            (kh, kw) = kernel_size
            return (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) and padding >= 0:
        return ((int(padding),) * 2, (int(padding),) * 2)
    if (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 0 for p in padding)
    ):
        return ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
    raise ValueError(f"padding must be a non-negative int, a pair, 'valid' or 'same', got {padding!r}")


def _pad(x: np.ndarray, padding: Padding) -> np.ndarray:
    if padding == ((0, 0), (0, 0)):
        return x
    return np.pad(x, ((0, 0), (0, 0), *padding))


def im2col(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Copy the windows of the padded input ``xp`` (N, C, Hp, Wp) into (C*kH*kW, N*Ho*Wo)."""
    n, c = xp.shape[:2]
    windows = sliding_window_view(xp, kernel, axis=(2, 3))[:, :, :: stride[0], :: stride[1]]
    ho, wo = windows.shape[2:4]  # windows: (N, C, Ho, Wo, kH, kW), a view
    return windows.transpose(1, 4, 5, 0, 2, 3).reshape(c * kernel[0] * kernel[1], n * ho * wo)


def conv2d_input_grad(dmat, w, x_shape, stride, padding: Padding) -> np.ndarray:
    """dL/dx from ``dmat`` = dL/dout as (F, N*Ho*Wo): the adjoint of im2col, one offset at a time.

    For each kernel offset (i, j), ``w[:, :, i, j].T @ dmat`` (C, N*Ho*Wo) is the gradient of the
    input pixels that offset touched; it is added onto that strided window of the input. Working
    per offset keeps each product small enough to stay in cache, instead of building the whole
    (C*kH*kW, N*Ho*Wo) matrix of window gradients first.
    """
    n, c, h, w_ = x_shape
    (pt, pb), (pl, pr) = padding
    f, _, kh, kw = w.shape
    sh, sw = stride
    hp, wp = h + pt + pb, w_ + pl + pr
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    w_offsets = w.transpose(2, 3, 1, 0)  # (kH, kW, C, F): w_offsets[i, j] is (C, F)
    dxp = np.zeros((c, n, hp, wp), dtype=dmat.dtype)  # channel-major, like dmat
    for i in range(kh):
        for j in range(kw):
            window = dxp[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
            window += (w_offsets[i, j] @ dmat).reshape(c, n, ho, wo)
    return dxp[:, :, pt : pt + h, pl : pl + w_].transpose(1, 0, 2, 3)


def conv2d_forward(x, w, b, stride=(1, 1), padding: Padding = ((0, 0), (0, 0))):
    """Convolution of ``x`` (N, C, H, W) with ``w`` (F, C, kH, kW) plus ``b`` (F,).

    ``out[n, f, i, j] = b[f] + sum_{c,p,q} w[f, c, p, q] * xpad[n, c, i*sH + p, j*sW + q]``

    Returns ``(out, cols)``: out (N, F, Ho, Wo) and the im2col matrix backward needs.
    """
    n = x.shape[0]
    f, _, kh, kw = w.shape
    cols = im2col(_pad(x, padding), (kh, kw), stride)  # (C*kH*kW, N*Ho*Wo)
    ho = conv_output_size(x.shape[2], kh, stride[0], padding[0])
    wo = conv_output_size(x.shape[3], kw, stride[1], padding[1])
    out = w.reshape(f, -1) @ cols  # (F, N*Ho*Wo)
    out += b[:, None]
    return out.reshape(f, n, ho, wo).transpose(1, 0, 2, 3), cols


def conv2d_backward(dout, cols, x_shape, w, stride=(1, 1), padding: Padding = ((0, 0), (0, 0)),
                    need_input_grad=True):
    """Gradients of :func:`conv2d_forward`. Returns ``(dx, dw, db)``; dx is None if not needed.

    With ``D = dout`` as (F, N*Ho*Wo): ``dw = D @ cols.T``, ``db = D.sum(1)``, and the input
    gradient is the adjoint of im2col applied to ``w.T @ D`` (see :func:`conv2d_input_grad`).
    """
    f = w.shape[0]
    dmat = dout.transpose(1, 0, 2, 3).reshape(f, -1)  # (F, N*Ho*Wo); free for our own outputs
    dw = (dmat @ cols.T).reshape(w.shape)
    db = dmat.sum(axis=1)
    dx = None
    if need_input_grad:
        dx = conv2d_input_grad(dmat, w, x_shape, stride, padding)
    return dx, dw, db


class Conv2d(Layer):
    r"""2-D convolution over an NCHW batch.

    .. math:: \text{out}[n, f] = b[f] + \sum_c w[f, c] \star x[n, c]

    Args:
        in_channels: channels C of the input.
        out_channels: filters F.
        kernel_size: int or (kH, kW).
        stride: int or (sH, sW), default 1.
        padding: int, (pH, pW), ``"valid"`` (no padding) or ``"same"`` (stride 1 only).
        weight_init: initialiser for the weight, default He normal.
        bias_init: initialiser for the bias, default zeros.
        rng: ``numpy.random.Generator`` for the initial weights (default: a fresh unseeded one).
        dtype: parameter dtype, default float32.

    Shape:
        input (N, C, H, W) -> output (N, F, Ho, Wo) with
        ``Ho = floor((H + pad_top + pad_bottom - kH) / sH) + 1`` (Wo likewise).
        weight (F, C, kH, kW), bias (F,).

    Example:
        >>> conv = Conv2d(1, 32, 10, rng=np.random.default_rng(0))
        >>> conv.forward(np.zeros((2, 1, 28, 28), np.float32)).shape
        (2, 32, 19, 19)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *,
                 weight_init=None, bias_init=None, rng=None, dtype=np.float32):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding_arg = padding
        self.padding = resolve_padding(padding, self.kernel_size, self.stride)
        rng = rng if rng is not None else np.random.default_rng()
        weight_init = weight_init or initializers.HeNormal()
        bias_init = bias_init or initializers.Constant(0.0)
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self._add_param("weight", np.asarray(weight_init(shape, rng, dtype), dtype=dtype))
        self._add_param("bias", np.asarray(bias_init((self.out_channels,), rng, dtype), dtype=dtype))
        self._cache = None

    def config(self):
        padding = self.padding_arg
        return {"type": "Conv2d", "in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(padding) if isinstance(padding, (tuple, list)) else padding}

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ShapeError(
                f"{self!r} expects inputs of shape (N, {self.in_channels}, H, W), "
                f"got (N, {', '.join(map(str, input_shape))})"
            )
        c, h, w = input_shape
        ho = conv_output_size(h, self.kernel_size[0], self.stride[0], self.padding[0])
        wo = conv_output_size(w, self.kernel_size[1], self.stride[1], self.padding[1])
        if ho < 1 or wo < 1:
            raise ShapeError(
                f"{self!r}: input {h}x{w} (padded {h + sum(self.padding[0])}x"
                f"{w + sum(self.padding[1])}) is smaller than the {self.kernel_size[0]}x"
                f"{self.kernel_size[1]} kernel"
            )
        return (self.out_channels, ho, wo)

    def forward(self, x, training=True):
        self._check_input(x, 4)
        out, cols = conv2d_forward(x, self.params["weight"], self.params["bias"],
                                   self.stride, self.padding)
        self._cache = (cols, x.shape) if training else None
        return out

    def backward(self, dout, need_input_grad=True):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        cols, x_shape = self._cache
        dx, dw, db = conv2d_backward(dout, cols, x_shape, self.params["weight"], self.stride,
                                     self.padding, need_input_grad)
        self.grads["weight"][...] = dw
        self.grads["bias"][...] = db
        self._cache = None
        return dx

    def __repr__(self):
        extra = ""
        if self.stride != (1, 1):
            extra += f", stride={self.stride}"
        if self.padding != ((0, 0), (0, 0)):
            extra += f", padding={self.padding_arg!r}"
        k = self.kernel_size
        return f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={k}{extra})"
