"""Evaluation: accuracy, mean loss, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from stablecnn.errors import ConfigError, DataError
from stablecnn.nn.losses import log_softmax

TTA = (None, "hflip")  # test-time augmentations evaluate() knows


@dataclass
class Evaluation:
    """The result of :func:`evaluate` on a labelled set."""

    accuracy: float  # fraction correct, in [0, 1]
    loss: float  # mean cross-entropy
    predictions: np.ndarray  # (N,) predicted classes
    confusion: np.ndarray  # (K, K): row = true class, column = predicted class

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """(K,) float64: the fraction of each true class predicted right (its recall).

        NaN for a class with no examples in the set: 0/0 is undefined, and 0.0 would read as
        "every example wrong". Reports print it as ``n/a`` (JSON: ``null``).
        """
        totals = self.confusion.sum(axis=1)
        return np.divide(
            np.diag(self.confusion), totals, out=np.full(len(totals), np.nan), where=totals > 0
        )


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: entry [t, p] counts examples of true class t predicted as p."""
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def log_probabilities(
    model, images: np.ndarray, normalizer, batch_size: int = 1000, tta: str | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, log p)`` for each batch of ``images``, ``log p`` (B, K) the log class
    probabilities of examples ``start .. start + B - 1``: ``log_softmax`` of the logits of
    :meth:`~stablecnn.nn.model.Sequential.forward_batches`, or with ``tta="hflip"`` the log of
    the mean of an image's and its mirror image's probabilities (see :func:`evaluate`).

    Raises:
        ConfigError: ``tta`` is not one of :data:`TTA` (when called, before any work).
    """
    if tta not in TTA:
        raise ConfigError(f"tta must be one of {[t for t in TTA if t]} or None, got {tta!r}")
    mirrored = model.forward_batches(images[..., ::-1], batch_size, normalizer) if tta else None

    def batches():
        for start, logits in model.forward_batches(images, batch_size, normalizer):
            logp = log_softmax(logits)
            if mirrored is not None:  # the mean of the two probabilities, in logs
                logp = np.logaddexp(logp, log_softmax(next(mirrored)[1])) - np.log(2)
            yield start, logp

    return batches()


def evaluate(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    normalizer,
    batch_size: int = 1000,
    num_classes: int = 10,
    tta: str | None = None,
) -> Evaluation:
    """Evaluate ``model`` on uint8 ``images`` (N, H, W) or (N, C, H, W), normalising one batch at
    a time.

    The logits come from :meth:`~stablecnn.nn.model.Sequential.forward_batches` (the one
    batched-inference loop); the loss is the mean of ``-log softmax(z)[n, y_n]``, summed in
    float64.

    Args:
        model: a :class:`~stablecnn.nn.model.Sequential`.
        images, labels: uint8 (N, H, W) (grey) or (N, C, H, W) (colour), and integer (N,) in
            [0, ``num_classes``).
        normalizer: the run's :class:`~stablecnn.data.Normalizer`.
        batch_size: images per forward pass.
        num_classes: K, the size of the confusion matrix.
        tta: test-time augmentation. ``"hflip"``: each image and its mirror image (left to
            right) both go through the model, and their class probabilities are averaged,
            ``p = (softmax(z) + softmax(z_mirror)) / 2``; predictions and loss are those of
            ``p`` (``log p = logaddexp(log_softmax(z), log_softmax(z_mirror)) - log 2``, finite
            for any finite logits). Twice the forward passes. For classes a mirror keeps
            (clothes, objects), not digits. ``None``: the model's output alone.

    Raises:
        DataError: no images, or images whose channels the normalizer's statistics do not fit.
        ConfigError: ``batch_size`` below 1.
        ShapeError: the images do not fit the model.
    """
    n = len(images)
    if n == 0:
        raise DataError("cannot evaluate on an empty set")
    predictions = np.empty(n, dtype=np.int64)
    total_loss = 0.0
    for start, logp in log_probabilities(model, images, normalizer, batch_size, tta):
        y = labels[start : start + len(logp)].astype(np.intp)
        predictions[start : start + len(y)] = logp.argmax(axis=1)
        total_loss -= float(logp[np.arange(len(y)), y].sum(dtype=np.float64))
    return Evaluation(
        accuracy=float(np.mean(predictions == labels)),
        loss=total_loss / n,
        predictions=predictions,
        confusion=confusion_matrix(labels, predictions, num_classes),
    )
