r"""The readable definitions: what every layer and the loss compute, forward and backward.

Each function is a few plain NumPy lines (an ``einsum`` over the windows
``sliding_window_view`` gives, or a loop over the kH*kW kernel offsets), with its math in the
docstring. They are slow on purpose: the fast kernels in :mod:`stablecnn.nn.layers` compute the
same numbers (within float rounding) with cache blocks, threads and fused passes, and every one
of them names its definition here. The tests hold the fast kernels to these functions, and
``tests/test_reference.py`` holds these functions to centered finite differences and to PyTorch.

Conventions, as in PyTorch:

- Activations are NCHW: ``x`` is (N, C, H, W). Conv weights are (F, C, kH, kW) (F filters, the
  output channels), dense weights (out_features, in_features).
- A window of kernel size (kH, kW) and stride (sH, sW) over a map of height H padded by pT
  rows on top and pB below gives ``Ho = floor((H + pT + pB - kH) / sH) + 1`` rows (for
  symmetric padding p: ``floor((H + 2p - kH) / sH) + 1``); columns likewise. Windows never hang
  over the padded edge (PyTorch's ``ceil_mode=False``).
- ``padding`` is ``(pH, pW)`` (both sides) or ``((top, bottom), (left, right))``, the form
  :class:`~stablecnn.nn.layers.Conv2d` resolves ``"same"`` to.
- A backward function takes the upstream gradient ``dout`` (dL/d output, the output's shape)
  and what the forward read, and returns dL/d input first, then dL/d each parameter.
- Everything follows the input's dtype: float64 (for gradient checks) and float32 both work.

Training on this code: ``Sequential(..., kernels="reference")``, ``model.kernels =
"reference"`` or ``layer.kernels = "reference"`` runs each layer's forward and backward through
these functions instead of the fast kernels. It is slow (a Model 1 step of 100 float32 images
takes some 20 to 25 times as long as on the fast kernels; the README's "Reading the code" has a
measurement) but gives the same numbers within float rounding, which
``tests/test_reference.py`` checks on Model 1 for two Adagrad steps.

Functions, and the fast code each one defines:

- ``conv2d_forward``, ``conv2d_backward``: :mod:`stablecnn.nn.layers.conv` (im2col and rows kernels)
- ``maxpool2d_forward``, ``maxpool2d_backward``: :mod:`stablecnn.nn.layers.pool` (all three kernels)
- ``avgpool2d_forward``, ``avgpool2d_backward``, ``global_avgpool2d_forward``,
  ``global_avgpool2d_backward``: :mod:`stablecnn.nn.layers.avgpool`
- ``linear_forward``, ``linear_backward``: :class:`~stablecnn.nn.layers.Linear`
- ``batchnorm_forward``, ``batchnorm_backward``, ``batchnorm_running_stats``,
  ``batchnorm_eval_forward``: :mod:`stablecnn.nn.layers.norm`
- ``relu_forward``, ``relu_backward``, ``leaky_relu_forward``, ``leaky_relu_backward``:
  :mod:`stablecnn.nn.layers.activations`
- ``dropout_forward``, ``dropout_backward`` (given the mask): :class:`~stablecnn.nn.layers.Dropout`
- ``flatten_forward``, ``flatten_backward``: :class:`~stablecnn.nn.layers.Flatten`
- ``log_softmax``, ``smoothed_targets``, ``softmax_cross_entropy_forward``,
  ``softmax_cross_entropy_backward``: :mod:`stablecnn.nn.losses`

This module imports nothing but NumPy.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# (pH, pW) zeros on both sides, or ((top, bottom), (left, right))
PaddingArg = tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]


# -- windows --------------------------------------------------------------------------------------
def _pairs(padding: PaddingArg) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(pH, pW)`` or ``((top, bottom), (left, right))`` as the second form."""
    return tuple((p, p) if np.isscalar(p) else tuple(p) for p in padding)


def _pad(x: np.ndarray, padding: PaddingArg) -> np.ndarray:
    """``x`` (N, C, H, W) with ``padding`` zeros around each map:
    (N, C, H + pT + pB, W + pL + pR)."""
    return np.pad(x, ((0, 0), (0, 0), *_pairs(padding)))


def _windows(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """The (N, C, Ho, Wo, kH, kW) view whose ``[n, c, i, j]`` is the window
    ``xp[n, c, i*sH : i*sH + kH, j*sW : j*sW + kW]``: no copy."""
    return sliding_window_view(xp, tuple(kernel), axis=(2, 3))[:, :, :: stride[0], :: stride[1]]


def _at_offset(
    a: np.ndarray, p: int, q: int, stride: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """The (N, C, Ho, Wo) view of ``a`` whose ``[n, c, i, j]`` is ``a[n, c, i*sH + p, j*sW + q]``:
    the cell at offset (p, q) of every window. Backward passes add into it."""
    (sh, sw), (ho, wo) = stride, out_hw
    return a[:, :, p : p + sh * (ho - 1) + 1 : sh, q : q + sw * (wo - 1) + 1 : sw]


def _crop(xp: np.ndarray, padding: PaddingArg, x_shape: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`_pad`: the (N, C, H, W) middle of a padded array."""
    (top, _), (left, _) = _pairs(padding)
    return xp[:, :, top : top + x_shape[2], left : left + x_shape[3]]


# -- Conv2d ---------------------------------------------------------------------------------------
def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    padding: PaddingArg = ((0, 0), (0, 0)),
) -> np.ndarray:
    r"""2-D convolution (cross-correlation, as in every deep-learning library).

    .. math::
        out[n, f, i, j] = b[f] + \sum_{c, p, q} w[f, c, p, q] \, x_{pad}[n, c, i s_H + p, j s_W + q]

    Args:
        x: (N, C, H, W). w: (F, C, kH, kW). b: (F,).
        stride: (sH, sW). padding: (pH, pW) or ((top, bottom), (left, right)) zeros.

    Returns:
        out (N, F, Ho, Wo), ``Ho = floor((H + pT + pB - kH) / sH) + 1`` (Wo likewise).

    Example:
        >>> x = np.arange(12.0).reshape(1, 1, 3, 4)  # one 3x4 map
        >>> conv2d_forward(x, np.ones((1, 1, 2, 2)), np.zeros(1), stride=(1, 2), padding=(0, 0))
        array([[[[10., 18.],
                 [26., 34.]]]])
    """
    win = _windows(_pad(x, padding), w.shape[2:], stride)  # (N, C, Ho, Wo, kH, kW)
    return np.einsum("nchwpq,fcpq->nfhw", win, w) + b[:, None, None]


def conv2d_backward(
    dout: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    padding: PaddingArg = ((0, 0), (0, 0)),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Gradients of :func:`conv2d_forward`. Returns ``(dx, dw, db)``.

    .. math::
        db[f] = \sum_{n, i, j} dout[n, f, i, j], \qquad
        dw[f, c, p, q] = \sum_{n, i, j} dout[n, f, i, j] \, x_{pad}[n, c, i s_H + p, j s_W + q]

        dx_{pad}[n, c, i s_H + p, j s_W + q] \mathrel{+}= \sum_f dout[n, f, i, j] \, w[f, c, p, q]

    and ``dx`` is ``dx_pad`` without its padding: a cell that several windows read (stride < kernel)
    adds the share of each. Shapes: dout (N, F, Ho, Wo) -> dx (N, C, H, W), dw (F, C, kH, kW),
    db (F,).
    """
    kh, kw = w.shape[2:]
    xp = _pad(x, padding)  # (N, C, Hp, Wp)
    db = dout.sum(axis=(0, 2, 3))
    dw = np.einsum("nchwpq,nfhw->fcpq", _windows(xp, (kh, kw), stride), dout)
    dxp = np.zeros_like(xp)
    for p in range(kh):
        for q in range(kw):  # the input cells that kernel offset (p, q) read, one per output
            _at_offset(dxp, p, q, stride, dout.shape[2:])[...] += np.einsum(
                "nfhw,fc->nchw", dout, w[:, :, p, q]
            )
    return _crop(dxp, padding, x.shape), dw, db


# -- pooling --------------------------------------------------------------------------------------
def maxpool2d_forward(
    x: np.ndarray, kernel: tuple[int, int] = (2, 2), stride: tuple[int, int] = (2, 2)
) -> np.ndarray:
    r"""2-D max pooling: ``out[n, c, i, j] = max_{p < kH, q < kW} x[n, c, i sH + p, j sW + q]``.

    Shapes: x (N, C, H, W) -> out (N, C, Ho, Wo), ``Ho = floor((H - kH) / sH) + 1`` (no padding:
    :class:`~stablecnn.nn.layers.MaxPool2d` has none).
    """
    return _windows(x, kernel, stride).max(axis=(4, 5))


def maxpool2d_backward(
    dout: np.ndarray,
    x: np.ndarray,
    kernel: tuple[int, int] = (2, 2),
    stride: tuple[int, int] = (2, 2),
) -> np.ndarray:
    r"""Gradient of :func:`maxpool2d_forward`: each ``dout[n, c, i, j]`` goes to the cell that
    holds its window's maximum; overlapping windows (stride < kernel) add at a shared cell.

    Ties: when a window holds equal maxima, the whole gradient goes to the *first* of them in
    row-major window order (smallest row p, then smallest column q), as PyTorch's CPU kernel
    does and every fast kernel does. ``argmax`` returns exactly that first one.

    Shapes: dout (N, C, Ho, Wo), x (N, C, H, W) -> dx (N, C, H, W).

    Example:
        >>> maxpool2d_backward(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 3, 4)), (2, 2), (1, 2))
        array([[[[1., 0., 1., 0.],
                 [1., 0., 1., 0.],
                 [0., 0., 0., 0.]]]])

    (all-zero windows: each gives its gradient to its top-left cell; the middle row's cells are
    the first maximum of the lower windows.)
    """
    kh, kw = kernel
    win = _windows(x, kernel, stride)  # (N, C, Ho, Wo, kH, kW)
    first = win.reshape(*win.shape[:4], kh * kw).argmax(axis=4)  # (N, C, Ho, Wo): p * kW + q
    dx = np.zeros_like(x)
    for p in range(kh):
        for q in range(kw):
            _at_offset(dx, p, q, stride, dout.shape[2:])[...] += dout * (first == p * kw + q)
    return dx


def avgpool2d_forward(
    x: np.ndarray,
    kernel: tuple[int, int] = (2, 2),
    stride: tuple[int, int] = (2, 2),
    padding: tuple[int, int] = (0, 0),
) -> np.ndarray:
    r"""2-D average pooling, the padding zeros counted (PyTorch's ``count_include_pad=True``):

    .. math::
        out[n, c, i, j] = \frac{1}{k_H k_W}
                          \sum_{p < k_H, q < k_W} x_{pad}[n, c, i s_H + p, j s_W + q]

    Shapes: x (N, C, H, W) -> out (N, C, Ho, Wo), ``Ho = floor((H + 2 pH - kH) / sH) + 1``.
    """
    return _windows(_pad(x, padding), kernel, stride).mean(axis=(4, 5))


def avgpool2d_backward(
    dout: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int] = (2, 2),
    stride: tuple[int, int] = (2, 2),
    padding: tuple[int, int] = (0, 0),
) -> np.ndarray:
    r"""Gradient of :func:`avgpool2d_forward`: every cell of window (i, j) gets
    ``dout[n, c, i, j] / (kH kW)``; overlapping windows add; the padding's share is dropped.

    Shapes: dout (N, C, Ho, Wo), ``x_shape`` = (N, C, H, W) -> dx (N, C, H, W).
    """
    kh, kw = kernel
    dxp = _pad(np.zeros(x_shape, dtype=dout.dtype), padding)
    for p in range(kh):
        for q in range(kw):
            _at_offset(dxp, p, q, stride, dout.shape[2:])[...] += dout / (kh * kw)
    return _crop(dxp, padding, x_shape)


def global_avgpool2d_forward(x: np.ndarray) -> np.ndarray:
    r"""Each channel's mean over its whole map: ``out[n, c] = (1 / HW) sum_{i, j} x[n, c, i, j]``.

    Shapes: x (N, C, H, W) -> out (N, C).
    """
    return x.mean(axis=(2, 3))


def global_avgpool2d_backward(dout: np.ndarray, x_shape: tuple[int, int, int, int]) -> np.ndarray:
    r"""Gradient of :func:`global_avgpool2d_forward`: ``dx[n, c, i, j] = dout[n, c] / (H W)``.

    Shapes: dout (N, C), ``x_shape`` = (N, C, H, W) -> dx (N, C, H, W).
    """
    h, w = x_shape[2:]
    return np.broadcast_to(dout[:, :, None, None] / (h * w), x_shape).copy()


# -- Linear ---------------------------------------------------------------------------------------
def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    r"""Affine map ``out = x w^T + b``: ``out[n, o] = b[o] + sum_i x[n, i] w[o, i]``.

    Shapes: x (N, in_features), w (out_features, in_features), b (out_features,) ->
    out (N, out_features).
    """
    return x @ w.T + b


def linear_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Gradients of :func:`linear_forward`. Returns ``(dx, dw, db)``:
    ``dx = dout w``, ``dw = dout^T x``, ``db = sum_n dout[n]``.

    Shapes: dout (N, out), x (N, in), w (out, in) -> dx (N, in), dw (out, in), db (out,).
    """
    return dout @ w, dout.T @ x, dout.sum(axis=0)


# -- BatchNorm ------------------------------------------------------------------------------------
def _channel_axes(x: np.ndarray) -> tuple[int, ...]:
    """Every axis but the channels (axis 1): the values one channel's statistics are taken over."""
    return (0, *range(2, x.ndim))


def _per_channel(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A (C,) vector shaped to broadcast against ``x`` along axis 1: (1, C, 1, ...)."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5
) -> np.ndarray:
    r"""Batch normalisation in training mode, with the batch's own statistics.

    Per channel c, over the M values it holds in the batch (M = N, N*L or N*H*W):

    .. math::
        \mu = \frac{1}{M} \sum x, \quad \sigma^2 = \frac{1}{M} \sum (x - \mu)^2, \quad
        \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad y = \gamma \hat x + \beta

    (the *biased* variance, as PyTorch normalises with). Shapes: x (N, C), (N, C, L) or
    (N, C, H, W); gamma, beta (C,) -> y, x's shape. See :func:`batchnorm_running_stats` for the
    statistics kept for evaluation.
    """
    axes = _channel_axes(x)
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)  # mean((x - mu)^2)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return _per_channel(gamma, x) * x_hat + _per_channel(beta, x)


def batchnorm_backward(
    dout: np.ndarray, x: np.ndarray, gamma: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Gradients of :func:`batchnorm_forward`. Returns ``(dx, dgamma, dbeta)``.

    Per channel, sums over its M values, with ``g = dout``:

    .. math::
        d\beta = \sum g, \qquad d\gamma = \sum g \hat x, \qquad
        dx = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}}
             \Big(g - \frac{d\beta}{M} - \hat x \frac{d\gamma}{M}\Big)

    ``x`` reaches ``y`` directly and through ``mu`` and ``sigma^2``: ``d mu`` gives the mean term,
    ``d sigma^2`` the ``x_hat`` term (``d sigma^2 / d mu`` vanishes since ``sum (x - mu) = 0``).
    Shapes: dout and x alike -> dx, x's shape; dgamma, dbeta (C,).
    """
    axes = _channel_axes(x)
    m = x.size // x.shape[1]
    mu = x.mean(axis=axes, keepdims=True)
    std = np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    x_hat = (x - mu) / std
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * x_hat).sum(axis=axes)
    dx = (
        _per_channel(gamma, x)
        / std
        * (dout - _per_channel(dbeta, x) / m - x_hat * _per_channel(dgamma, x) / m)
    )
    return dx, dgamma, dbeta


def batchnorm_running_stats(
    x: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray, momentum: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    r"""The running statistics after one training batch, as PyTorch keeps them:

    .. math::
        r_\mu \leftarrow (1 - m) r_\mu + m \mu, \qquad
        r_{\sigma^2} \leftarrow (1 - m) r_{\sigma^2} + m \frac{M}{M - 1} \sigma^2

    (``m`` the momentum; the variance kept is the *unbiased* one). Returns the new
    ``(running_mean, running_var)``, each (C,); the arguments are not changed.
    """
    axes = _channel_axes(x)
    mean, var_unbiased = x.mean(axis=axes), x.var(axis=axes, ddof=1)
    return (
        (1 - momentum) * running_mean + momentum * mean,
        (1 - momentum) * running_var + momentum * var_unbiased,
    )


def batchnorm_eval_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float = 1e-5,
) -> np.ndarray:
    r"""Batch normalisation in evaluation mode, with the running statistics:
    ``y = gamma (x - running_mean) / sqrt(running_var + eps) + beta``, per channel.

    Shapes: x (N, C, ...); the four vectors (C,) -> y, x's shape.
    """
    x_hat = (x - _per_channel(running_mean, x)) / np.sqrt(_per_channel(running_var, x) + eps)
    return _per_channel(gamma, x) * x_hat + _per_channel(beta, x)


# -- activations, dropout, flatten ----------------------------------------------------------------
def relu_forward(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``, elementwise. Any shape."""
    return np.maximum(x, 0)


def relu_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``dout`` where ``x > 0``, else 0 (at exactly 0 too, as in PyTorch). ``x`` may also be the
    forward's output: it is positive exactly where ``x`` is."""
    return dout * (x > 0)


def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    """``x`` where ``x > 0``, else ``negative_slope * x``. Any shape."""
    return np.where(x > 0, x, negative_slope * x)


def leaky_relu_backward(
    dout: np.ndarray, x: np.ndarray, negative_slope: float = 0.01
) -> np.ndarray:
    """``dout`` where ``x > 0``, else ``negative_slope * dout`` (at exactly 0 too, as PyTorch)."""
    return np.where(x > 0, dout, negative_slope * dout)


def dropout_forward(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    r"""Inverted dropout with a given mask: ``out = x * mask``, where ``mask`` is ``1 / (1 - p)``
    for a kept unit and 0 for a dropped one (the layer draws it with
    :func:`stablecnn.nn.layers.dropout.dropout_mask`), so ``E[out] = x``. Evaluation is the
    identity. Shapes: x and mask alike."""
    return x * mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradient of :func:`dropout_forward`: ``dx = dout * mask``."""
    return dout * mask


def flatten_forward(x: np.ndarray) -> np.ndarray:
    """(N, d1, d2, ...) -> (N, d1*d2*...), in C order (channels, then rows, then columns)."""
    return x.reshape(x.shape[0], -1)


def flatten_backward(dout: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """Gradient of :func:`flatten_forward`: ``dout`` reshaped back to ``x_shape``."""
    return dout.reshape(x_shape)


# -- the loss -------------------------------------------------------------------------------------
def log_softmax(logits: np.ndarray) -> np.ndarray:
    r"""Row-wise ``log softmax(z)[n, k] = z[n, k] - m[n] - log sum_j exp(z[n, j] - m[n])`` with
    ``m[n] = max_j z[n, j]``: every exponent is at most 0 (no overflow) and the sum is at least 1
    (the log never sees 0), for any finite logits. Shapes: (N, K) -> (N, K)."""
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


def smoothed_targets(
    labels: np.ndarray, num_classes: int, label_smoothing: float = 0.0, dtype=np.float64
) -> np.ndarray:
    r"""The target distribution of label smoothing (Szegedy et al. 2016, "Rethinking the Inception
    Architecture for Computer Vision", section 7; PyTorch's ``label_smoothing``):
    ``q[n, k] = (1 - eps) [k = y_n] + eps / K``. ``eps = 0`` is the one-hot label, ``eps = 1``
    the uniform distribution. Shapes: labels (N,) integers in [0, K) -> (N, K), rows summing to 1.
    """
    n, k, eps = len(labels), num_classes, label_smoothing
    q = np.zeros((n, k), dtype=dtype)
    for i in range(n):
        for j in range(k):
            q[i, j] = (1 - eps) * (j == labels[i]) + eps / k
    return q


def softmax_cross_entropy_forward(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0
) -> np.floating:
    r"""Mean softmax cross-entropy against the (smoothed) targets ``q`` of
    :func:`smoothed_targets`: ``L = -(1/N) sum_n sum_k q[n, k] log softmax(z)[n, k]``; with
    ``label_smoothing = 0`` this is ``-(1/N) sum_n log softmax(z)[n, y_n]``.

    Shapes: logits (N, K), labels (N,) integers in [0, K) -> a scalar of the logits' dtype.
    """
    q = smoothed_targets(labels, logits.shape[1], label_smoothing, logits.dtype)
    return -(q * log_softmax(logits)).sum(axis=1).mean()


def softmax_cross_entropy_backward(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0
) -> np.ndarray:
    r"""Gradient of :func:`softmax_cross_entropy_forward`:
    ``dL/dz[n, k] = (softmax(z)[n, k] - q[n, k]) / N`` (the rows of ``q`` sum to 1). Shapes: as
    the forward's -> (N, K)."""
    n = logits.shape[0]
    q = smoothed_targets(labels, logits.shape[1], label_smoothing, logits.dtype)
    return (np.exp(log_softmax(logits)) - q) / n
