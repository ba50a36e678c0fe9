r"""Batch normalisation: BatchNorm1d over (N, C) or (N, C, L), BatchNorm2d over (N, C, H, W).

Both normalise each channel ``c`` over the ``M`` values it holds in a batch (``M = N``, ``N * L`` or
``N * H * W``). Training mode, with ``mu`` and ``var`` the batch mean and *biased* variance:

.. math::
    \hat x = (x - \mu) / \sqrt{\mathrm{var} + \epsilon}, \qquad y = \gamma \hat x + \beta

Backward (exact, per channel, sums over the channel's ``M`` values): with ``g = dL/dy``,

.. math::
    d\beta = \sum g, \qquad d\gamma = \sum g \hat x, \qquad
    dx = \frac{\gamma}{\sqrt{\mathrm{var} + \epsilon}}
         \Big(g - \frac{d\beta}{M} - \hat x \frac{d\gamma}{M}\Big)

(``x`` reaches ``y`` directly and through ``mu`` and ``var``; ``d mu`` contributes the mean term,
``d var`` the ``x_hat`` term, and ``d var / d mu`` vanishes because ``sum (x - mu) = 0``.)

Running statistics, as in PyTorch (momentum ``m = 0.1``): ``running_mean = (1 - m) running_mean +
m mu`` and ``running_var = (1 - m) running_var + m var * M / (M - 1)`` (the *unbiased* variance);
evaluation (``training=False``) normalises with them instead of the batch's. They are buffers,
saved in checkpoints with the parameters.

Reference: :func:`stablecnn.reference.batchnorm_forward`,
:func:`~stablecnn.reference.batchnorm_backward`,
:func:`~stablecnn.reference.batchnorm_running_stats` and
:func:`~stablecnn.reference.batchnorm_eval_forward` (``kernels = "reference"`` runs them).

Precision: the per-channel sums are accumulated in float64 (then rounded to the input's dtype),
and the variance is the two-pass ``mean((x - mu)^2)``, never ``E[x^2] - mu^2``, which cancels
catastrophically in float32 for data far from zero.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from stablecnn import reference
from stablecnn.errors import ConfigError, ShapeError
from stablecnn.nn import init as initializers
from stablecnn.nn.layers.base import Layer


def _channel_mean(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Mean over ``axes`` kept as size-1 axes, accumulated in float64, in ``a``'s dtype."""
    return a.mean(axis=axes, dtype=np.float64, keepdims=True).astype(a.dtype, copy=False)


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, axes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training-mode forward. Returns ``(y, x_hat, inv_std, mu, var)``; mu and var (biased) have
    ``x``'s shape with size 1 on ``axes``.
    Reference: :func:`stablecnn.reference.batchnorm_forward`."""
    shape = [1] * x.ndim
    shape[1] = x.shape[1]  # gamma, beta: (C,) -> broadcastable (1, C, 1, ...)
    mu = _channel_mean(x, axes)
    x_hat = x - mu
    var = _channel_mean(np.square(x_hat), axes)
    inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
    x_hat *= inv_std
    y = x_hat * gamma.reshape(shape)
    y += beta.reshape(shape)
    return y, x_hat, inv_std, mu, var


def batchnorm_backward(
    dout: np.ndarray,
    x_hat: np.ndarray,
    inv_std: np.ndarray,
    gamma: np.ndarray,
    axes: tuple[int, ...],
    need_input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Returns ``(dx, dgamma, dbeta)`` by the formula in the module docstring (dx ``None`` when
    ``need_input_grad`` is false). Reference: :func:`stablecnn.reference.batchnorm_backward`."""
    m = x_hat.size // x_hat.shape[1]
    shape = [1] * dout.ndim
    shape[1] = dout.shape[1]
    dbeta = dout.sum(axis=axes, dtype=np.float64)  # (C,)
    n, c = dout.shape[:2]
    dgamma = np.einsum(
        "ncl,ncl->c", dout.reshape(n, c, -1), x_hat.reshape(n, c, -1), dtype=np.float64
    )  # (C,) = sum g * x_hat, without an (N, C, ...) temporary
    if not need_input_grad:
        return None, dgamma.astype(dout.dtype), dbeta.astype(dout.dtype)
    scale = gamma * inv_std.reshape(-1)  # (C,)
    dx = x_hat * (dgamma / m).astype(dout.dtype).reshape(shape)
    np.subtract(dout, dx, out=dx)
    dx -= (dbeta / m).astype(dout.dtype).reshape(shape)
    dx *= scale.reshape(shape)
    return dx, dgamma.astype(dout.dtype), dbeta.astype(dout.dtype)


class _BatchNorm(Layer):
    """Shared by BatchNorm1d and BatchNorm2d; subclasses set the accepted input ranks."""

    _ndims: tuple[int, ...] = ()
    _layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if (
            not isinstance(num_features, (int, np.integer))
            or isinstance(num_features, bool)
            or num_features < 1
        ):
            raise ConfigError(f"{name}: num_features must be a positive int, got {num_features!r}")
        if (
            not isinstance(eps, (int, float, np.integer, np.floating))
            or isinstance(eps, bool)
            or not 0 < eps < np.inf
        ):
            raise ConfigError(f"{name}: eps must be a positive number, got {eps!r}")
        if (
            not isinstance(momentum, (int, float, np.integer, np.floating))
            or isinstance(momentum, bool)
            or not 0 <= momentum <= 1
        ):
            raise ConfigError(f"{name}: momentum must be in [0, 1], got {momentum!r}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        c = self.num_features
        self._new_param("weight", (c,), initializers.Constant(1.0), None, dtype)  # gamma
        self._new_param("bias", (c,), initializers.Constant(0.0), None, dtype)  # beta
        if self.has_weights:  # (C,) buffers too are arrays a layer without weights does not hold
            self.buffers["running_mean"] = np.zeros(c, dtype=dtype)
            self.buffers["running_var"] = np.ones(c, dtype=dtype)
        self.buffers["num_batches_tracked"] = np.array(0, dtype=np.int64)
        self._cache = None

    def config(self) -> dict:
        return {
            "type": type(self).__name__,
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
        }

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) + 1 not in self._ndims or input_shape[0] != self.num_features:
            raise ShapeError(
                f"{self!r} expects {self._layout} inputs with C = "
                f"{self.num_features}, got (N, {', '.join(map(str, input_shape))})"
            )
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        self._check_input(x, x.ndim if x.ndim in self._ndims else self._ndims[0])
        axes = (0, *range(2, x.ndim))  # every axis but the channels
        shape = [1] * x.ndim
        shape[1] = self.num_features
        if not training:
            self._cache = None
            if self.kernels == "reference":
                return reference.batchnorm_eval_forward(
                    x,
                    self.params["weight"],
                    self.params["bias"],
                    self.buffers["running_mean"],
                    self.buffers["running_var"],
                    self.eps,
                )
            inv_std = 1 / np.sqrt(self.buffers["running_var"] + x.dtype.type(self.eps))
            scale = self.params["weight"] * inv_std  # (C,)
            # (x - mean) first: folding the mean into a shift would cancel when mean >> spread
            out = x - self.buffers["running_mean"].reshape(shape)
            out *= scale.reshape(shape)
            out += self.params["bias"].reshape(shape)
            return out
        m = x.size // self.num_features
        if m < 2:
            raise ConfigError(
                f"{self!r}: training needs more than 1 value per channel to take a "
                f"batch variance, got input shape {x.shape}"
            )
        if self.kernels == "reference":
            run_mean, run_var = self.buffers["running_mean"], self.buffers["running_var"]
            run_mean[...], run_var[...] = reference.batchnorm_running_stats(
                x, run_mean, run_var, self.momentum
            )
            self.buffers["num_batches_tracked"] += 1
            self._cache = ("reference", x)
            return reference.batchnorm_forward(
                x, self.params["weight"], self.params["bias"], self.eps
            )
        y, x_hat, inv_std, mu, var = batchnorm_forward(
            x, self.params["weight"], self.params["bias"], self.eps, axes
        )
        mom = x.dtype.type(self.momentum)
        run_mean, run_var = self.buffers["running_mean"], self.buffers["running_var"]
        run_mean *= 1 - mom
        run_mean += mom * mu.reshape(-1)
        run_var *= 1 - mom
        run_var += (mom * m / (m - 1)) * var.reshape(-1)  # unbiased, as PyTorch keeps it
        self.buffers["num_batches_tracked"] += 1
        self._cache = ("fast", x_hat, inv_std, axes)
        return y

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        cache, self._cache = self._cache, None
        if cache[0] == "reference":
            dx, dgamma, dbeta = reference.batchnorm_backward(
                dout, cache[1], self.params["weight"], self.eps
            )
            dx = dx if need_input_grad else None
        else:
            _, x_hat, inv_std, axes = cache
            dx, dgamma, dbeta = batchnorm_backward(
                dout, x_hat, inv_std, self.params["weight"], axes, need_input_grad
            )
        self.grads["weight"][...] = dgamma
        self.grads["bias"][...] = dbeta
        return dx

    def __repr__(self):
        return (
            f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum})"
        )


class BatchNorm2d(_BatchNorm):
    r"""Batch normalisation of an NCHW batch, per channel over (N, H, W).

    ``y = gamma * (x - mu) / sqrt(var + eps) + beta`` with the batch's mean and biased variance
    while training, the running statistics at evaluation; backward and running statistics as in
    :mod:`stablecnn.nn.layers.norm`.

    Args:
        num_features: the number of channels C.
        eps: added to the variance, default 1e-5.
        momentum: weight of the new batch in the running statistics, default 0.1.
        dtype: parameter and buffer dtype, default float32.

    Parameters: ``weight`` (gamma, ones) and ``bias`` (beta, zeros), both (C,).
    Buffers: ``running_mean`` (zeros), ``running_var`` (ones), (C,); ``num_batches_tracked``
    (int64).

    Shape:
        input (N, C, H, W) -> output (N, C, H, W). Training needs ``N * H * W > 1``.

    Raises:
        ConfigError: when built, ``num_features`` not a positive int, ``eps`` not a positive
            finite number, ``momentum`` not in [0, 1]; and ``forward(x, training=True)`` of a
            batch with one value per channel (``N * H * W == 1``: no batch variance).
        ShapeError: ``forward`` of an input that is not (N, ``num_features``, H, W) (and
            :meth:`output_shape` of another shape).
        TypeError: ``forward`` of an input whose dtype is not the parameters'.
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since); ``forward`` of a
            layer made by :meth:`~stablecnn.nn.layers.base.Layer.without_weights`.

    Example:
        >>> bn = BatchNorm2d(3)
        >>> x = np.random.default_rng(0).standard_normal((4, 3, 5, 6)).astype(np.float32)
        >>> y = bn.forward(x)
        >>> bool(np.allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-6))
        True
    """

    _ndims = (4,)
    _layout = "(N, C, H, W)"


class BatchNorm1d(_BatchNorm):
    r"""Batch normalisation of (N, C) features (or (N, C, L) sequences), per channel over N (or
    N, L).

    ``y = gamma * (x - mu) / sqrt(var + eps) + beta`` with the batch's mean and biased variance
    while training, the running statistics at evaluation; backward and running statistics as in
    :mod:`stablecnn.nn.layers.norm`.

    Args:
        num_features: the number of features (channels) C.
        eps: added to the variance, default 1e-5.
        momentum: weight of the new batch in the running statistics, default 0.1.
        dtype: parameter and buffer dtype, default float32.

    Parameters: ``weight`` (gamma, ones) and ``bias`` (beta, zeros), both (C,).
    Buffers: ``running_mean`` (zeros), ``running_var`` (ones), (C,); ``num_batches_tracked``
    (int64).

    Shape:
        input (N, C) or (N, C, L) -> output of the same shape. Training needs ``N * L > 1``: a
        batch of one (N, C) row raises ``ConfigError`` (a ``ValueError``), as PyTorch raises.

    Raises:
        ConfigError: when built, ``num_features`` not a positive int, ``eps`` not a positive
            finite number, ``momentum`` not in [0, 1]; and ``forward(x, training=True)`` of a
            batch with one value per channel (``N * L == 1``, a single (N, C) row).
        ShapeError: ``forward`` of an input that is not (N, C) or (N, C, L) with C =
            ``num_features`` (and :meth:`output_shape` of another shape).
        TypeError: ``forward`` of an input whose dtype is not the parameters'.
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)`` (none yet,
            its ``backward`` already run, or an evaluation ``forward`` since); ``forward`` of a
            layer made by :meth:`~stablecnn.nn.layers.base.Layer.without_weights`.

    Example:
        >>> bn = BatchNorm1d(10)
        >>> bn.forward(np.zeros((8, 10), np.float32)).shape
        (8, 10)
    """

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"
