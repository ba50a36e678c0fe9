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

The fast kernels are in :mod:`stablecnn.kernels.norm`: a few passes over blocks of whole
channels, each channel seen as contiguous runs in memory (for the convolutions' (C, H, W, N)
outputs, H runs of W*N values), no ``x_hat`` array kept (the input is, by reference), large
batches split across threads, bit-identical at any thread count.

Precision: the mean and variance are the corrected two-pass algorithm (Chan, Golub and LeVeque,
1983): a first mean ``mu0``, then the sums of ``d = x - mu0`` and ``d^2`` give
``mu = mu0 + mean(d)`` and ``var = mean(d^2) - mean(d)^2``, where ``mean(d)`` only corrects the
rounding of ``mu0`` and cancels nothing: never ``E[x^2] - mu^2``, which cancels catastrophically
in float32 for data far from zero. Sums run in the input's dtype over runs of at most 4096 values
and are added across runs in float64 (see :mod:`stablecnn.kernels.norm` for the bounds and the
test that holds them).

Synchronised statistics: a layer whose :attr:`_BatchNorm.reducer` is set computes, while
training, the mean and variance (and the backward pass's sums) of a larger batch that its input is
a part of: the kernel hands the reducer its part's float64 channel sums and uses the whole
batch's it returns (:mod:`stablecnn.kernels.norm`). No communication happens in the layer: the
reducer is a function given to it, by :mod:`stablecnn.training.microbatch` for data-parallel
training (where it adds the micro-batches' sums in a fixed order, across MPI ranks or in one
process). ``None`` (the default) is the batch's own statistics.

:class:`BNReLU2d` is a BatchNorm2d and the ReLU that follows it run as one step (the ReLU applied
in the batch norm's last pass, its mask applied in the backward pass's first): a step of a
model's execution plan that :func:`stablecnn.nn.fuse.fuse` makes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from stablecnn import reference
from stablecnn.errors import ConfigError, ShapeError
from stablecnn.kernels.norm import backward as batchnorm_backward
from stablecnn.kernels.norm import eval_affine as batchnorm_eval_affine
from stablecnn.kernels.norm import eval_forward as batchnorm_eval_forward
from stablecnn.kernels.norm import train_forward as batchnorm_forward
from stablecnn.nn import init as initializers
from stablecnn.nn.layers.activations import ReLU
from stablecnn.nn.layers.base import Layer

# (the fast kernels are imported under the names the layers call them by: tests/test_reference.py
# replaces these names to prove that the reference path runs none of them)


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
        # sums of this batch (float64, 1-D) -> those of the whole batch it is part of; see the
        # module doc. Not part of the config: set by whoever splits the batch, for a step.
        self.reducer = None

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

    def eval_affine(self, dtype, relu: bool = False):
        """The evaluation pass as a function another kernel applies to its own output in place,
        ``affine(y, c0, c1)`` for the channels c0..c1 on axis 0 of ``y`` (the same operations as
        :meth:`forward` with ``training=False``, so the same bits: see
        :func:`stablecnn.kernels.norm.eval_affine`); like that pass, drops a pending training
        cache. For the fast kernels only (:func:`stablecnn.nn.fuse.run` checks)."""
        self._cache = self._pending = None
        gamma, beta = self.params["weight"], self.params["bias"]
        run_mean, run_var = self.buffers["running_mean"], self.buffers["running_var"]
        return batchnorm_eval_affine(gamma, beta, run_mean, run_var, self.eps, dtype, relu)

    def forward(self, x: np.ndarray, training: bool = True, relu: bool = False) -> np.ndarray:
        """Normalise ``x`` (see the class doc); ``relu=True`` also applies ``max(y, 0)`` in the
        same pass and masks the gradient in :meth:`backward` (the :class:`BNReLU2d` step)."""
        self._check_input(x, x.ndim if x.ndim in self._ndims else self._ndims[0])
        gamma, beta = self.params["weight"], self.params["bias"]
        run_mean, run_var = self.buffers["running_mean"], self.buffers["running_var"]
        if not training:
            self._cache = None
            if self.kernels == "reference":
                y = reference.batchnorm_eval_forward(x, gamma, beta, run_mean, run_var, self.eps)
                return reference.relu_forward(y) if relu else y
            return batchnorm_eval_forward(x, gamma, beta, run_mean, run_var, self.eps, relu)
        m = x.size // self.num_features
        if m < 2 and self.reducer is None:
            raise ConfigError(
                f"{self!r}: training needs more than 1 value per channel to take a "
                f"batch variance, got input shape {x.shape}"
            )
        if self.kernels == "reference":
            if self.reducer is not None:
                raise ConfigError(
                    f"{self!r}: synchronised statistics (a reducer) run on the fast kernels only"
                )
            run_mean[...], run_var[...] = reference.batchnorm_running_stats(
                x, run_mean, run_var, self.momentum
            )
            self.buffers["num_batches_tracked"] += 1
            y = reference.batchnorm_forward(x, gamma, beta, self.eps)
            y = reference.relu_forward(y) if relu else y
            self._cache = ("reference", x, y if relu else None)
            return y
        if self.reducer is None:
            y, mean, var, cache = batchnorm_forward(x, gamma, beta, self.eps, relu)
        else:
            y, mean, var, cache = batchnorm_forward(
                x, gamma, beta, self.eps, relu, reduce=self.reducer
            )
            m = int(cache.count)  # the whole batch's values per channel
            if m < 2:
                raise ConfigError(
                    f"{self!r}: training needs more than 1 value per channel to take a "
                    f"batch variance, got {m:g} in the whole batch"
                )
        mom = x.dtype.type(self.momentum)
        run_mean *= 1 - mom
        run_mean += mom * mean.astype(x.dtype)
        run_var *= 1 - mom
        run_var += (mom * m / (m - 1)) * var.astype(x.dtype)  # unbiased, as PyTorch keeps it
        self.buffers["num_batches_tracked"] += 1
        self._cache = ("fast", cache)
        return y

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward needs a forward(x, training=True) first")
        cache, self._cache = self._cache, None
        if cache[0] == "reference":
            _, x, out = cache
            g = dout if out is None else reference.relu_backward(dout, out)
            dx, dgamma, dbeta = reference.batchnorm_backward(g, x, self.params["weight"], self.eps)
            dx = dx if need_input_grad else None
        else:
            dx, dgamma, dbeta = batchnorm_backward(
                dout, cache[1], self.params["weight"], need_input_grad
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
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

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
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> bn = BatchNorm1d(10)
        >>> bn.forward(np.zeros((8, 10), np.float32)).shape
        (8, 10)
    """

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BNReLU2d(Layer):
    r"""A BatchNorm2d and the ReLU that follows it, run as one layer: ``relu(bn(x))``.

    The batch norm's last pass writes ``max(y, 0)`` where it writes ``y``, and its backward pass
    starts by masking the gradient by ``y > 0``, so the pair's output and gradients are those of
    the two layers run one after the other, bit for bit, with one pass less forward and without
    the ReLU's array (PyTorch's fused module of the same name is
    ``torch.ao.nn.intrinsic.BNReLU2d``). Reference: :func:`stablecnn.reference.batchnorm_forward`
    then :func:`~stablecnn.reference.relu_forward`, and their backward functions in reverse.

    It is a step of a model's execution plan, not of its architecture:
    :func:`stablecnn.nn.fuse.fuse` makes one for each ReLU that a BatchNorm2d is followed by, and
    :class:`~stablecnn.nn.model.Sequential` runs it while its ``layers``, parameter names, config
    and checkpoints keep the two layers. It runs ``bn`` itself (``bn.forward(x, training,
    relu=True)``) and shares its ``params``, ``grads`` and ``buffers`` (the same dicts), so
    training the step trains ``bn`` and moves its running statistics; it has no :meth:`config`
    of its own.

    Args:
        bn: the :class:`BatchNorm2d`.
        relu: the :class:`~stablecnn.nn.layers.activations.ReLU` that follows it.

    Shape:
        input (N, C, H, W) -> output (N, C, H, W), as ``bn``.

    Raises:
        TypeError: when built, ``bn`` is not a BatchNorm2d or ``relu`` not a ReLU; and
            :meth:`config` always (a step of a plan is not saved; its two layers are).
        ConfigError, ShapeError, RuntimeError: as ``bn``'s ``forward`` and ``backward``.
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> step = BNReLU2d(BatchNorm2d(1), ReLU())
        >>> step.forward(np.array([[[[-1.0, 1.0]]]], np.float32)).tolist()
        [[[[0.0, 0.9999949932098389]]]]
    """

    _layout = "(N, C, H, W)"

    def __init__(self, bn: BatchNorm2d, relu: ReLU) -> None:
        super().__init__()
        if type(bn) is not BatchNorm2d or type(relu) is not ReLU:
            raise TypeError(
                f"BNReLU2d takes a BatchNorm2d and a ReLU, got "
                f"{type(bn).__name__} and {type(relu).__name__}"
            )
        self.bn, self.relu = bn, relu
        self.params, self.grads, self.buffers = bn.params, bn.grads, bn.buffers
        self.param_shapes, self.has_weights = bn.param_shapes, bn.has_weights

    @property
    def kernels(self) -> str:
        """The batch norm's kernels (it runs the ReLU); setting it sets both layers'."""
        return self.bn.kernels

    @kernels.setter
    def kernels(self, value: str) -> None:
        self.bn.kernels = value
        self.relu.kernels = value

    @property
    def dtype(self) -> np.dtype | None:
        return self.bn.dtype

    def astype(self, dtype: DTypeLike) -> BNReLU2d:
        """Cast the batch norm's parameters and buffers (see :meth:`Layer.astype`)."""
        self.bn.astype(dtype)
        return self

    def config(self) -> dict:
        raise TypeError(
            "BNReLU2d is a step of a model's execution plan made by stablecnn.nn.fuse.fuse, "
            "not a layer of an architecture: save the BatchNorm2d and the ReLU it runs "
            "(Sequential.config does)"
        )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.bn.output_shape(input_shape)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        return self.bn.forward(x, training, relu=True)

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return self.bn.backward(dout, need_input_grad)

    def __repr__(self):
        bn = self.bn
        return f"BNReLU2d({bn.num_features}, eps={bn.eps}, momentum={bn.momentum})"
