"""Max pooling layers: :class:`MaxPool2d`, and :class:`ReLUMaxPool2d` (a ReLU and the pool after
it as one step of a model's execution plan, made by :func:`stablecnn.nn.fuse.fuse`).

The math and its readable definition: :func:`stablecnn.reference.maxpool2d_forward` and
:func:`~stablecnn.reference.maxpool2d_backward` (ties: the first maximum in row-major window
order); the fast kernels, and why ReLU then max-pool is one pass: :mod:`stablecnn.kernels.pool`.
"""

from __future__ import annotations

import numpy as np

from stablecnn import reference
from stablecnn.errors import ConfigError, ShapeError
from stablecnn.kernels.pool import (
    contiguous_order,
    maxpool2d_backward,
    maxpool2d_forward,
    maxpool2x2_backward,
    maxpool2x2_flat_backward,
    maxpool2x2_flat_forward,
    maxpool2x2_forward,
)
from stablecnn.nn.layers.activations import ReLU
from stablecnn.nn.layers.base import Layer, pair


class MaxPool2d(Layer):
    r"""2-D max pooling over an NCHW batch.

    Reference: :func:`stablecnn.reference.maxpool2d_forward` and
    :func:`stablecnn.reference.maxpool2d_backward` (``kernels = "reference"`` runs them).

    Args:
        kernel_size: int or (kH, kW).
        stride: int or (sH, sW); default the kernel size, as in PyTorch. Stride 1 gives the
            overlapping windows Model 1 uses.

    Shape:
        input (N, C, H, W) -> output (N, C, Ho, Wo), ``Ho = floor((H - kH) / sH) + 1``.

    Raises:
        ConfigError: when built, ``kernel_size`` or ``stride`` not a positive int or pair of
            them, or a window of more than 255 cells (the argmax is kept as uint8).
        ShapeError: ``forward`` of an input that is not 4-D or is smaller than the window (and
            :meth:`output_shape` of such a shape).
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since); ``forward`` of a
            layer made by :meth:`~stablecnn.nn.layers.base.Layer.without_weights`.
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> MaxPool2d(2, stride=1).forward(np.zeros((1, 32, 19, 19), np.float32)).shape
        (1, 32, 18, 18)
    """

    _layout = "(N, C, H, W)"

    def __init__(
        self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        if self.kernel_size[0] * self.kernel_size[1] > 255:
            raise ConfigError(f"kernel_size {self.kernel_size} is too large (at most 255 cells)")
        self._cache = None

    def config(self) -> dict:
        return {
            "type": "MaxPool2d",
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
        }

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r} expects (N, C, H, W) inputs, got (N, {input_shape})")
        c, h, w = input_shape
        if h < self.kernel_size[0] or w < self.kernel_size[1]:
            raise ShapeError(f"{self!r}: input {h}x{w} is smaller than the window")
        return (
            c,
            (h - self.kernel_size[0]) // self.stride[0] + 1,
            (w - self.kernel_size[1]) // self.stride[1] + 1,
        )

    def forward(self, x: np.ndarray, training: bool = True, relu: bool = False) -> np.ndarray:
        """Pool ``x``. ``relu=True`` computes ``maxpool(relu(x))`` (as ``relu(maxpool(x))``, see
        the module doc) and :meth:`backward` then returns the gradient with respect to the
        ReLU's input: :class:`ReLUMaxPool2d` runs a ReLU followed by a max-pool this way, one
        pass fewer each way than the two layers."""
        self._check_input(x, 4)
        if self.kernels == "reference":
            self._cache = ("reference", relu, x, None) if training else None
            x = reference.relu_forward(x) if relu else x
            return reference.maxpool2d_forward(x, self.kernel_size, self.stride)
        flat = self.kernel_size == (2, 2) and self.stride == (1, 1)
        order = contiguous_order(x) if flat else None
        if order is not None:
            kind = "flat"
            out, choice = maxpool2x2_flat_forward(x, order, with_choice=training, relu=relu)
        elif self.kernel_size == (2, 2):
            kind = "2x2"
            out, choice = maxpool2x2_forward(x, self.stride, with_choice=training, relu=relu)
        else:
            kind = "any"
            out, choice = maxpool2d_forward(
                x, self.kernel_size, self.stride, with_argmax=training, relu=relu
            )
        # x is the previous layer's output; after a ReLU, out masks the gradient (the flat
        # kernel folds that mask into its choices)
        mask = out if relu and kind != "flat" else None
        self._cache = (kind, choice, x, mask) if training else None
        return out

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        kind, choice, x, out = self._cache
        self._cache = None
        if not need_input_grad:
            return None
        if kind == "reference":
            relu = choice
            y = reference.relu_forward(x) if relu else x  # what was pooled
            dy = reference.maxpool2d_backward(dout, y, self.kernel_size, self.stride)
            return reference.relu_backward(dy, x) if relu else dy
        if kind == "flat":
            return maxpool2x2_flat_backward(dout, choice)  # choice holds any ReLU's mask
        if kind == "2x2":
            return maxpool2x2_backward(dout, choice, x, self.stride, out)
        return maxpool2d_backward(dout, choice, x, self.kernel_size, self.stride, out)

    def __repr__(self):
        k, s = self.kernel_size, self.stride
        return f"MaxPool2d(kernel_size={k}, stride={s})"


class ReLUMaxPool2d(Layer):
    r"""A ReLU and the MaxPool2d that follows it, run as one layer: ``maxpool(relu(x))``.

    Both are monotone, so ``maxpool(relu(x)) = relu(maxpool(x))``: the pool's own passes apply
    the ReLU to their output, a quarter of the input's size or less, and mask the gradient by
    ``out > 0`` before routing it (see the module doc). The output, and the gradient with
    respect to the ReLU's input, are those of the two layers run one after the other, bit for
    bit, ties and all-negative windows included; one pass over the activations is saved each
    way. Reference: :func:`stablecnn.reference.relu_forward` then
    :func:`~stablecnn.reference.maxpool2d_forward`, and their backward functions in reverse.

    It is a step of a model's execution plan, not of its architecture:
    :func:`stablecnn.nn.fuse.fuse` makes one for each ReLU that a MaxPool2d follows, and
    :class:`~stablecnn.nn.model.Sequential` runs it while its ``layers``, parameter names, config
    and checkpoints keep the two layers. It runs ``pool`` itself (``pool.forward(x, training,
    relu=True)``), so it has the pool's window, stride and kernels and no parameters; it has
    no :meth:`config` of its own.

    Args:
        relu: the :class:`~stablecnn.nn.layers.activations.ReLU`.
        pool: the :class:`MaxPool2d` that follows it.

    Shape:
        input (N, C, H, W) -> output (N, C, Ho, Wo), as ``pool``.

    Raises:
        TypeError: when built, ``relu`` is not a ReLU or ``pool`` not a MaxPool2d; and
            :meth:`config` always (a step of a plan is not saved; its two layers are).
        ShapeError, RuntimeError: as ``pool``'s :meth:`MaxPool2d.forward` and
            :meth:`MaxPool2d.backward`.
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> fused = ReLUMaxPool2d(ReLU(), MaxPool2d(2))
        >>> fused.forward(np.array([[[[-1.0, -2.0], [-3.0, -4.0]]]])).tolist()
        [[[[0.0]]]]
    """

    _layout = "(N, C, H, W)"

    def __init__(self, relu: ReLU, pool: MaxPool2d) -> None:
        super().__init__()
        if type(relu) is not ReLU or type(pool) is not MaxPool2d:
            raise TypeError(
                f"ReLUMaxPool2d takes a ReLU and a MaxPool2d, got "
                f"{type(relu).__name__} and {type(pool).__name__}"
            )
        self.relu, self.pool = relu, pool

    @property
    def kernels(self) -> str:
        """The pool's kernels (it runs the ReLU); setting it sets both layers'."""
        return self.pool.kernels

    @kernels.setter
    def kernels(self, value: str) -> None:
        self.relu.kernels = value
        self.pool.kernels = value

    def config(self) -> dict:
        raise TypeError(
            "ReLUMaxPool2d is a step of a model's execution plan made by "
            "stablecnn.nn.fuse.fuse, not a layer of an architecture: save the ReLU "
            "and the MaxPool2d it runs (Sequential.config does)"
        )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.pool.output_shape(input_shape)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        return self.pool.forward(x, training, relu=True)

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return self.pool.backward(dout, need_input_grad)

    def __repr__(self):
        return f"ReLUMaxPool2d(kernel_size={self.pool.kernel_size}, stride={self.pool.stride})"
