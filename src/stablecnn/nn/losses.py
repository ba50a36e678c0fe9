"""Softmax cross-entropy in log-sum-exp form, with optional label smoothing.

For logits ``z`` (N, K), integer labels ``y`` (N,) and label smoothing ``eps`` in [0, 1]:

    log p[n, k] = z[n, k] - m[n] - log(sum_j exp(z[n, j] - m[n])),   m[n] = max_j z[n, j]
    q[n, k] = (1 - eps) [k = y[n]] + eps / K
    loss = -(1/N) sum_n sum_k q[n, k] log p[n, k]
         = -(1/N) sum_n ((1 - eps) log p[n, y[n]] + (eps / K) sum_k log p[n, k])
    dloss/dz = (softmax(z) - q) / N

With ``eps = 0`` (the default) ``q`` is the one-hot label and this is the plain cross-entropy.
Label smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer
Vision", section 7) mixes the uniform distribution into the target, so the loss keeps rewarding
a model for pulling the logits apart only until the label's probability reaches ``1 - eps + eps /
K``; PyTorch's ``cross_entropy(..., label_smoothing=eps)`` is the same definition.

Subtracting the row maximum makes every exponent <= 0, so ``exp`` cannot overflow, and the sum
inside the log is >= 1 (the maximum contributes exp(0)), so the log never sees 0: no epsilon is
needed and none is used. The naive ``-log(exp(z_y) / sum exp(z))`` overflows to inf/NaN at
logits around 89 in float32 and 710 in float64.

The loss is finite whenever it is representable: a logit gap so wide that the true loss exceeds
the dtype's largest value (about 3.4e38 in float32) has no finite answer to give. With smoothing
every class's log-probability enters the loss, so the gap that counts is a row's widest (its
maximum minus its minimum), not only the label's. The gradient's entries are in [-1, 1] / N
whatever the logits.
"""

from __future__ import annotations

import numpy as np

from stablecnn.errors import ConfigError, DataError, ShapeError


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


def _check_label_smoothing(value) -> float:
    if (
        not isinstance(value, (int, float, np.integer, np.floating))
        or isinstance(value, bool)
        or not 0 <= value <= 1
    ):
        raise ConfigError(
            f"label_smoothing must be a number in [0, 1] (1: every target uniform, the labels "
            f"unused, as PyTorch allows), got {value!r}"
        )
    return float(value)


class SoftmaxCrossEntropy:
    r"""Mean softmax cross-entropy over a batch, from integer class labels, with optional label
    smoothing (PyTorch's ``CrossEntropyLoss(label_smoothing=...)``).

    .. math::
        q_{n,k} = (1 - \varepsilon)\,[k = y_n] + \frac{\varepsilon}{K}, \qquad
        L = -\frac{1}{N} \sum_n \sum_k q_{n,k} \log \mathrm{softmax}(z)_{n,k}, \qquad
        \frac{\partial L}{\partial z} = \frac{\mathrm{softmax}(z) - q}{N}

    in log-sum-exp form (see the module doc); ``label_smoothing = 0`` gives the plain
    ``-(1/N) sum_n log softmax(z)[n, y_n]``. Label smoothing: Szegedy et al. 2016, "Rethinking the
    Inception Architecture for Computer Vision", section 7. Reference:
    :func:`stablecnn.reference.softmax_cross_entropy_forward` and
    :func:`~stablecnn.reference.softmax_cross_entropy_backward` (this class adds the label
    checks, and flushes subnormal gradient entries to 0).

    Args:
        label_smoothing: ``eps`` in [0, 1], the weight of the uniform distribution in the target
            (default 0: none; 1: the uniform target, which ignores the labels, as PyTorch
            allows; a training run, :class:`~stablecnn.training.config.TrainConfig` and
            ``stablecnn train --label-smoothing``, refuses 1 for that reason).

    Shape:
        logits (N, K) float, labels (N,) int in [0, K) -> a scalar of the logits' dtype;
        ``backward()`` returns dL/dlogits (N, K) in the logits' dtype.

    Raises:
        ConfigError: ``label_smoothing`` not a number in [0, 1].
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
        >>> smooth = SoftmaxCrossEntropy(label_smoothing=0.1)
        >>> round(float(smooth.forward(np.array([[0.0, 0.0]]), np.array([0]))), 6)  # log 2
        0.693147
    """

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = _check_label_smoothing(label_smoothing)
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
        if not self.label_smoothing:
            return -picked.mean(dtype=logits.dtype)
        eps = logits.dtype.type(self.label_smoothing)
        # -(1 - eps) mean_n log p[n, y_n] - eps mean_n mean_k log p[n, k]: each log p is finite
        smooth = logp.mean(axis=1, dtype=logits.dtype).mean(dtype=logits.dtype)
        return -((1 - eps) * picked.mean(dtype=logits.dtype) + eps * smooth)

    __call__ = forward

    def backward(self, batch_size: int | None = None) -> np.ndarray:
        """dL/dlogits of the last :meth:`forward`, ``(softmax(z) - q) / N``. ``batch_size``: the
        N to divide by when these logits are one micro-batch of a batch of that size (whose mean
        loss is the one to differentiate); default the logits' own N."""
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward needs a forward first")
        logp, labels = self._cache
        n, k = logp.shape
        grad = np.exp(logp)  # softmax; each entry in [0, 1]
        eps = self.label_smoothing
        if eps:
            grad -= grad.dtype.type(eps / k)  # the uniform part of the target
        grad[np.arange(n), labels] -= grad.dtype.type(1 - eps) if eps else 1
        grad /= n if batch_size is None else batch_size
        # Flush subnormal entries (|g| < 1.2e-38 in float32) to zero: they change nothing a float
        # can hold, but every matrix product they flow through runs 10-30x slower on x86.
        grad[np.abs(grad) < np.finfo(grad.dtype).tiny] = 0
        return grad

    def __repr__(self):
        if self.label_smoothing:
            return f"SoftmaxCrossEntropy(label_smoothing={self.label_smoothing!r})"
        return "SoftmaxCrossEntropy()"
