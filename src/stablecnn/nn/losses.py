"""Softmax cross-entropy in log-sum-exp form.

For logits ``z`` (N, K) and integer labels ``y`` (N,):

    log p[n, k] = z[n, k] - m[n] - log(sum_j exp(z[n, j] - m[n])),   m[n] = max_j z[n, j]
    loss = -(1/N) sum_n log p[n, y[n]]
    dloss/dz = (softmax(z) - onehot(y)) / N

Subtracting the row maximum makes every exponent <= 0, so ``exp`` cannot overflow, and the sum
inside the log is >= 1 (the maximum contributes exp(0)), so the log never sees 0: no epsilon is
needed and none is used. The naive ``-log(exp(z_y) / sum exp(z))`` overflows to inf/NaN at
logits around 89 in float32 and 710 in float64.

The loss is finite whenever it is representable: a logit gap so wide that the true loss exceeds
the dtype's largest value (about 3.4e38 in float32) has no finite answer to give.
"""

from __future__ import annotations

import numpy as np

from stablecnn.errors import DataError, ShapeError


def _check_logits(logits: np.ndarray) -> None:
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ShapeError(f"logits must be (N, K) with K >= 1, got shape {logits.shape}")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    r"""Row-wise log-softmax, stable for any finite logits.

    .. math::
        \log p[n, k] = z[n, k] - m[n] - \log \sum_j e^{z[n, j] - m[n]}, \qquad
        m[n] = \max_j z[n, j]

    Reference: :func:`stablecnn.reference.log_softmax`.

    Shape:
        (N, K) float -> (N, K), the logits' dtype.

    Raises:
        ShapeError: ``logits`` not 2-D, or with no classes (K = 0).
    """
    _check_logits(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)  # every entry <= 0
    shifted -= np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # the sum is in [1, K]
    return shifted


def softmax(logits: np.ndarray) -> np.ndarray:
    r"""Row-wise softmax: ``p[n, k] = exp(z[n, k] - m[n]) / sum_j exp(z[n, j] - m[n])`` with
    ``m[n] = max_j z[n, j]``; rows sum to 1, no overflow for finite logits.

    Shape:
        (N, K) float -> (N, K), the logits' dtype.

    Raises:
        ShapeError: ``logits`` not 2-D, or with no classes (K = 0).
    """
    _check_logits(logits)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def _check_labels(labels, n: int, k: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ShapeError(f"labels must have shape ({n},) to match the logits, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= k):
        bad = labels[(labels < 0) | (labels >= k)][0]
        raise DataError(f"label {bad} is outside [0, {k}) for logits with {k} classes")
    return labels.astype(np.intp, copy=False)


class SoftmaxCrossEntropy:
    r"""Mean softmax cross-entropy over a batch, from integer class labels.

    .. math::
        L = -\frac{1}{N} \sum_n \log \mathrm{softmax}(z)[n, y_n], \qquad
        \frac{\partial L}{\partial z} = \frac{\mathrm{softmax}(z) - \mathrm{onehot}(y)}{N}

    in log-sum-exp form (see the module doc). Reference:
    :func:`stablecnn.reference.softmax_cross_entropy_forward` and
    :func:`~stablecnn.reference.softmax_cross_entropy_backward` (this class adds the label
    checks, and flushes subnormal gradient entries to 0).

    Shape:
        logits (N, K) float, labels (N,) int in [0, K) -> a scalar of the logits' dtype;
        ``backward()`` returns dL/dlogits (N, K) in the logits' dtype.

    Raises:
        ShapeError: ``forward`` of logits that are not 2-D (or have no classes), of an empty
            batch (N = 0: the mean is undefined), or of labels that are not (N,).
        TypeError: ``forward`` of labels that are not integers.
        DataError: ``forward`` of a label outside [0, K) (the message names it).
        RuntimeError: ``backward`` before any ``forward``.

    Example:
        >>> loss = SoftmaxCrossEntropy()
        >>> value = loss.forward(np.array([[1e4, -1e4]], np.float32), np.array([1]))
        >>> float(value), loss.backward().tolist()
        (20000.0, [[1.0, -1.0]])
    """

    def __init__(self):
        self._cache = None

    def forward(self, logits: np.ndarray, labels: np.ndarray):
        _check_logits(logits)
        n, k = logits.shape
        if n == 0:
            raise ShapeError("the batch is empty: the mean loss of 0 examples is undefined")
        labels = _check_labels(labels, n, k)
        logp = log_softmax(logits)
        self._cache = (logp, labels)
        picked = logp[np.arange(n), labels]
        return -picked.mean(dtype=logits.dtype)

    __call__ = forward

    def backward(self) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward needs a forward first")
        logp, labels = self._cache
        n = logp.shape[0]
        grad = np.exp(logp)  # softmax; each entry in [0, 1]
        grad[np.arange(n), labels] -= 1
        grad /= n
        # Flush subnormal entries (|g| < 1.2e-38 in float32) to zero: they change nothing a float
        # can hold, but every matrix product they flow through runs 10-30x slower on x86.
        grad[np.abs(grad) < np.finfo(grad.dtype).tiny] = 0
        return grad

    def __repr__(self):
        return "SoftmaxCrossEntropy()"
