"""The 2-D convolution layer: parameters, shapes and the choice of kernel.

The math and its readable definition: :func:`stablecnn.reference.conv2d_forward` and
:func:`~stablecnn.reference.conv2d_backward`; the fast kernels: :mod:`stablecnn.kernels.conv`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from stablecnn import reference
from stablecnn.errors import ConfigError, ShapeError
from stablecnn.kernels.conv import (
    conv2d_backward,
    conv2d_forward,
    conv_output_size,
    resolve_padding,
)
from stablecnn.nn import init as initializers
from stablecnn.nn.layers.base import Initializer, Layer, pair, positive_int


class Conv2d(Layer):
    r"""2-D convolution over an NCHW batch.

    .. math:: \text{out}[n, f] = b[f] + \sum_c w[f, c] \star x[n, c]

    Reference: :func:`stablecnn.reference.conv2d_forward` and
    :func:`~stablecnn.reference.conv2d_backward` (``kernels = "reference"`` runs them).

    Args:
        in_channels: channels C of the input.
        out_channels: filters F.
        kernel_size: int or (kH, kW).
        stride: int or (sH, sW), default 1.
        padding: int, (pH, pW), ``"valid"`` (no padding) or ``"same"`` (stride 1 only).
        weight_init: initialiser for the weight, default He normal.
        bias: learn a bias (default True, PyTorch's ``bias``); ``False`` for a convolution
            followed by batch norm, whose shift makes a bias redundant: no ``"bias"``
            parameter then, and ``b = 0`` in the math.
        bias_init: initialiser for the bias, default zeros (only with ``bias=True``).
        rng: ``numpy.random.Generator`` for the initial weights (default: a fresh unseeded one).
        dtype: parameter dtype, default float32.

    Shape:
        input (N, C, H, W) -> output (N, F, Ho, Wo) with
        ``Ho = floor((H + pad_top + pad_bottom - kH) / sH) + 1`` (Wo likewise).
        weight (F, C, kH, kW), bias (F,) (none with ``bias=False``).

    Raises:
        ConfigError: when built, ``in_channels`` or ``out_channels`` not a positive int,
            ``kernel_size`` or ``stride`` not a positive int or pair of them, ``padding`` not a
            non-negative int or pair, ``"valid"`` or ``"same"`` (or ``"same"`` with a stride
            other than 1), or ``bias_init`` with ``bias=False``.
        ShapeError: ``forward`` of an input that is not 4-D, whose channels are not
            ``in_channels``, or whose padded map is smaller than the kernel
            (:meth:`output_shape` raises the same for a shape).
        TypeError: ``forward`` of an input whose dtype is not the parameters' (a
            :class:`~stablecnn.nn.model.Sequential` casts its inputs).
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since); ``forward`` of a
            layer made by :meth:`~stablecnn.nn.layers.base.Layer.without_weights`.
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> conv = Conv2d(1, 32, 10, rng=np.random.default_rng(0))
        >>> conv.forward(np.zeros((2, 1, 28, 28), np.float32)).shape
        (2, 32, 19, 19)
    """

    _layout = "(N, C, H, W)"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        *,
        bias: bool = True,
        weight_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        rng: np.random.Generator | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding_arg = padding
        self.padding = resolve_padding(padding, self.kernel_size, self.stride)
        if not isinstance(bias, (bool, np.bool_)):
            raise ConfigError(f"bias must be true or false, got {bias!r}")
        if not bias and bias_init is not None:
            raise ConfigError("bias_init is given but bias=False (the layer has no bias)")
        self.bias = bool(bias)
        rng = rng if rng is not None else np.random.default_rng()
        weight_init = weight_init or initializers.HeNormal()
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self._new_param("weight", shape, weight_init, rng, dtype)
        if self.bias:
            bias_init = bias_init or initializers.Constant(0.0)
            self._new_param("bias", (self.out_channels,), bias_init, rng, dtype)
        self._cache = None

    def config(self) -> dict:
        padding = self.padding_arg
        return {
            "type": "Conv2d",
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(padding) if isinstance(padding, (tuple, list)) else padding,
            **({} if self.bias else {"bias": False}),  # the default is left out, as before
        }

    def _bias(self) -> np.ndarray:
        """The bias, or zeros for a layer without one (the kernels add a bias; adding 0 changes
        no value)."""
        if self.bias:
            return self.params["bias"]
        return np.zeros(self.out_channels, self.params["weight"].dtype)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
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

    def padded_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = input_shape
        return (c, h + sum(self.padding[0]), w + sum(self.padding[1]))

    def forward(self, x: np.ndarray, training: bool = True, epilogue=None) -> np.ndarray:
        """The convolution of ``x``; in evaluation, ``epilogue(y, f0, f1)`` is applied in place
        to each block of output channels f0..f1 as it is finished (a batch norm's evaluation
        pass, :func:`stablecnn.nn.fuse.run`). Raises ValueError for an epilogue in training."""
        self._check_input(x, 4)
        if epilogue is not None and training:
            raise ValueError(f"{self!r}: an epilogue runs in evaluation only (training=False)")
        if self.kernels == "reference":
            self._cache = (("reference", x), x.shape) if training else None
            y = reference.conv2d_forward(
                x, self.params["weight"], self._bias(), self.stride, self.padding
            )
            if epilogue is not None:
                epilogue(y.transpose(1, 0, 2, 3), 0, self.out_channels)
            return y
        # inference keeps no window matrix and, like every layer, drops a pending training
        # cache: a backward after it would pair the gradient of this output with an older
        # batch's input, so it raises instead (inference's work arrays are never self.scratch)
        out, cache = conv2d_forward(
            x,
            self.params["weight"],
            self._bias(),
            self.stride,
            self.padding,
            scratch=self.scratch,
            keep=training,
            epilogue=epilogue,
        )
        self._cache = (cache, x.shape) if training else None
        return out

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        cache, x_shape = self._cache
        if cache[0] == "reference":
            dx, dw, db = reference.conv2d_backward(
                dout, cache[1], self.params["weight"], self.stride, self.padding
            )
            dx = dx if need_input_grad else None
        else:
            dx, dw, db = conv2d_backward(
                dout,
                cache,
                x_shape,
                self.params["weight"],
                self.stride,
                self.padding,
                need_input_grad,
            )
        self.grads["weight"][...] = dw
        if self.bias:
            self.grads["bias"][...] = db
        self._cache = None
        return dx

    def __repr__(self):
        extra = ""
        if self.stride != (1, 1):
            extra += f", stride={self.stride}"
        if self.padding != ((0, 0), (0, 0)):
            extra += f", padding={self.padding_arg!r}"
        if not self.bias:
            extra += ", bias=False"
        k = self.kernel_size
        return f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={k}{extra})"
