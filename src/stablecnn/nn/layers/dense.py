"""Fully connected layer."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from stablecnn import reference
from stablecnn.errors import ShapeError
from stablecnn.kernels import parallel
from stablecnn.nn import init as initializers
from stablecnn.nn.layers.base import Initializer, Layer, positive_int


class Linear(Layer):
    r"""Affine map ``y = x W^T + b``.

    Gradients: ``dW = dout^T x``, ``db = sum_n dout``, ``dx = dout W``. Reference:
    :func:`stablecnn.reference.linear_forward` and :func:`~stablecnn.reference.linear_backward`
    (``kernels = "reference"`` runs them instead of the threaded products).

    Args:
        in_features: size of each input row.
        out_features: size of each output row.
        weight_init: initialiser for the weight, default He normal.
        bias_init: initialiser for the bias, default zeros.
        rng: ``numpy.random.Generator`` for the initial weights.
        dtype: parameter dtype, default float32.

    Shape:
        input (N, in_features) -> output (N, out_features); weight (out_features, in_features),
        bias (out_features,).

    Raises:
        ConfigError: when built, ``in_features`` or ``out_features`` not a positive int.
        ShapeError: ``forward`` of an input that is not (N, ``in_features``) (and
            :meth:`output_shape` of any other shape).
        TypeError: ``forward`` of an input whose dtype is not the parameters'.
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since); ``forward`` of a
            layer made by :meth:`~stablecnn.nn.layers.base.Layer.without_weights`.
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> layer = Linear(2704, 1024, rng=np.random.default_rng(0))
        >>> layer.forward(np.zeros((5, 2704), np.float32)).shape
        (5, 1024)
    """

    _layout = "(N, in_features)"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        weight_init: Initializer | None = None,
        bias_init: Initializer | None = None,
        rng: np.random.Generator | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        rng = rng if rng is not None else np.random.default_rng()
        weight_init = weight_init or initializers.HeNormal()
        bias_init = bias_init or initializers.Constant(0.0)
        shape = (self.out_features, self.in_features)
        self._new_param("weight", shape, weight_init, rng, dtype)
        self._new_param("bias", (self.out_features,), bias_init, rng, dtype)
        self._x = None

    def config(self) -> dict:
        return {
            "type": "Linear",
            "in_features": self.in_features,
            "out_features": self.out_features,
        }

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.in_features,):
            raise ShapeError(
                f"{self!r} expects inputs of shape (N, {self.in_features}), "
                f"got (N, {', '.join(map(str, input_shape))})"
            )
        return (self.out_features,)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        self._check_input(x, 2)
        self._x = x if training else None
        if self.kernels == "reference":
            return reference.linear_forward(x, self.params["weight"], self.params["bias"])
        out = parallel.matmul(x, self.params["weight"].T)  # (N, out)
        out += self.params["bias"]
        return out

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._x is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        x, self._x = self._x, None
        weight, dw = self.params["weight"], self.grads["weight"]
        if self.kernels == "reference":
            dx, dw[...], self.grads["bias"][...] = reference.linear_backward(dout, x, weight)
            return dx if need_input_grad else None
        np.sum(dout, axis=0, out=self.grads["bias"])
        dx = (
            np.empty((dout.shape[0], self.in_features), dtype=dout.dtype)
            if need_input_grad
            else None
        )

        # one hand-off for both products, each cut into a grid of blocks fixed by the shapes (so
        # the results do not depend on the thread count): row blocks of dW (whole rows run ~10%
        # faster than column blocks of it), all packing x, and column blocks of dx, all packing
        # dout; threads take runs of them
        batch = dout.shape[0]
        rows = parallel.product_grid(self.out_features, batch * self.in_features, x.nbytes)
        blocks = [("dw", a, z) for a, z in rows]
        if dx is not None:
            cols = parallel.product_grid(self.in_features, batch * self.out_features, dout.nbytes)
            blocks += [("dx", a, z) for a, z in cols]

        def product(grad, a, z):
            if grad == "dw":
                np.matmul(dout.T[a:z], x, out=dw[a:z])
            else:
                np.matmul(dout, weight[:, a:z], out=dx[:, a:z])

        # sizes in multiply-adds: a row of dW costs batch * in, a column of dx batch * out
        sizes = [
            (z - a) * batch * (self.in_features if grad == "dw" else self.out_features)
            for grad, a, z in blocks
        ]
        parallel.for_each_block(blocks, product, sizes, min_run=parallel.MIN_MACS)
        return dx

    def __repr__(self):
        return f"Linear(in_features={self.in_features}, out_features={self.out_features})"
