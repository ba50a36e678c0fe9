"""Batches for training and evaluation: seeded shuffle, subset, normalisation one batch at a time.

The dataset stays as uint8 (60,000 x 28 x 28 MNIST images are 47 MB, 50,000 x 3 x 32 x 32
CIFAR-10 images 154 MB); only the batch being used is turned into floats, so no float64 (or
float32) copy of the whole dataset is ever built. Grey images are held as (N, H, W), colour ones
as (N, C, H, W); a batch of either comes out as (B, C, H, W) floats.

How the original recipe batches: it trains on the first 20,000 training images (see
:func:`subset`), normalises them with the integer part of their mean and standard deviation (see
:meth:`Normalizer.original`) and reshuffles the training set at the start of every epoch.
Here the shuffle of an epoch is ``rng.permutation(N)`` of a seeded ``numpy.random.Generator``
passed by the caller, so a given seed gives the same batches on every run; calling
:func:`iterate_batches` once per epoch with the same generator gives a new order each epoch.
The trainer batches through :func:`iterate_batches` too, with a generator made from the run's
seed and the epoch (see :meth:`stablecnn.training.trainer.Trainer.epoch_batches`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from stablecnn.errors import DataError

ORIGINAL_SUBSET = 20_000  # training images the original recipe uses
_KINDS = ("original", "unit")
_STATS_CHUNK = 1 << 16  # pixels per step for statistics (bincount makes an intp copy of each)


@dataclass(frozen=True)
class Normalizer:
    """Turns a uint8 image batch into a float batch with a channel axis.

    ``kind="original"``: ``x' = (x - mean) / std`` with the integer mean and std of the training
    images used, as the original computed them; for colour images, one mean and one std per
    channel (``x'[:, c] = (x[:, c] - mean[c]) / std[c]``). ``kind="unit"``: ``x' = x / 255``,
    into [0, 1], whatever the number of channels.

    Attributes:
        mean: subtracted from every pixel (0 for "unit"): a number, or a tuple of C numbers (one
            per channel).
        std: every pixel is divided by it (255 for "unit"): a number, or C numbers.
        kind: "original" or "unit".

    Shape:
        input (B, H, W) or (B, C, H, W) uint8 -> output (B, C, H, W) in ``dtype`` (C = 1 for
        (B, H, W)). A normalizer with per-channel statistics takes only batches of its C.

    Raises:
        DataError: an unknown ``kind``; a mean or std that is not a finite number (std > 0), or
            per-channel tuples that are empty or of different lengths.

    Example:
        >>> norm = Normalizer.original(train_images)  # doctest: +SKIP
        >>> norm(train_images[:64]).shape  # doctest: +SKIP
        (64, 1, 28, 28)
    """

    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]
    kind: str = "original"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise DataError(f"Normalizer kind must be one of {_KINDS}, got {self.kind!r}")
        per_channel = [isinstance(v, (tuple, list)) for v in (self.mean, self.std)]
        if any(per_channel):
            if not all(per_channel) or not 0 < len(self.mean) == len(self.std):
                raise DataError(
                    f"Normalizer needs one mean and one std per channel, got "
                    f"mean={self.mean!r}, std={self.std!r}"
                )
            object.__setattr__(self, "mean", tuple(self.mean))  # lists (from JSON) as tuples
            object.__setattr__(self, "std", tuple(self.std))
        pairs = zip(*(v if any(per_channel) else (v,) for v in (self.mean, self.std)), strict=True)
        for mean, std in pairs:
            numbers_ = all(
                isinstance(v, (int, float, np.integer, np.floating))
                and not isinstance(v, (bool, np.bool_))
                for v in (mean, std)
            )
            if not (numbers_ and math.isfinite(std) and std > 0 and math.isfinite(mean)):
                raise DataError(
                    f"Normalizer needs a finite mean and a positive finite std, got "
                    f"mean={self.mean!r}, std={self.std!r}"
                )

    @property
    def channels(self) -> int | None:
        """C when the statistics are per channel, ``None`` for one mean and std for all pixels."""
        return len(self.mean) if isinstance(self.mean, tuple) else None

    @classmethod
    def original(cls, images: np.ndarray) -> Normalizer:
        """The original's normalisation: ``int(images.mean())`` and ``int(images.std())``.

        Computed exactly from a histogram of pixel values, built chunk by chunk, so no float copy
        of the images is made. With S1 = sum(x), S2 = sum(x^2) over n pixels (exact integers)::

            mean = S1 / n                          (as NumPy: float64 sum, then one division)
            std  = sqrt(n * S2 - S1^2) / n         int(std) = isqrt(n * S2 - S1^2) // n

        ``int(std)`` is thus the exact floor; NumPy's float64 std agrees with it unless the true
        std lies within about 1e-13 of an integer.

        Colour images (N, C, H, W) with C > 1 (CIFAR-10's RGB) get the same two numbers for each
        channel, over that channel's N * H * W pixels: ``mean[c] = int(images[:, c].mean())``
        and ``std[c] = int(images[:, c].std())`` (the per-channel normalisation of colour
        datasets; the original recipe had only grey images). Grey images (N, H, W) or
        (N, 1, H, W) get one mean and one std, as before.

        Args:
            images: uint8 (N, H, W), (N, 1, H, W) or (N, C, H, W), e.g. (N, 28, 28) for MNIST,
                (N, 3, 32, 32) for CIFAR-10.

        Raises:
            DataError: the images are not uint8 or there are none; or ``int(std)`` is 0, so the
                division is undefined. Two causes get two messages, each with the measured
                value: constant images (std 0; every pixel the same, nothing to learn), and a
                std in (0, 1), which the integer part rounds to 0: images stored as 0/1 pixels
                have a std near 0.33. The way out for those is :meth:`unit` (``--normalization
                unit``), which the message names. For colour images the message starts with the
                channel at fault.
        """
        if images.dtype != np.uint8:
            raise DataError(f"Normalizer.original takes uint8 images, got {images.dtype}")
        if images.size == 0:
            raise DataError("Normalizer.original needs at least one image")
        if images.ndim == 4 and images.shape[1] > 1:  # (N, C, H, W) colour: per channel
            stats = []
            for c in range(images.shape[1]):
                try:
                    stats.append(_integer_stats(images[:, c]))
                except DataError as exc:
                    raise DataError(f"channel {c} of the (N, C, H, W) images: {exc}") from None
            means, stds = zip(*stats, strict=True)
            return cls(tuple(means), tuple(stds), "original")
        mean, std = _integer_stats(images)
        return cls(mean, std, "original")

    @classmethod
    def unit(cls) -> Normalizer:
        """Plain scaling into [0, 1]: ``x / 255``."""
        return cls(0.0, 255.0, "unit")

    def __call__(self, batch: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Normalise one batch.

        Args:
            batch: uint8 (B, H, W) or (B, C, H, W).
            dtype: float dtype of the result (float32 by default; float64 only when asked).

        Returns:
            (B, C, H, W) array of ``dtype`` (C = 1 for a (B, H, W) batch).

        Raises:
            DataError: a batch that is not 3-D or 4-D, a C other than the normalizer's
                (per-channel statistics), or a ``dtype`` that is not a float.
        """
        if batch.ndim == 3:
            batch = batch[:, None]  # (B, 1, H, W), a view
        if batch.ndim != 4:
            raise DataError(f"expected a batch (B, H, W) or (B, C, H, W), got {batch.shape}")
        if self.channels is not None and batch.shape[1] != self.channels:
            raise DataError(
                f"this normalizer holds statistics of {self.channels} channels; the batch "
                f"{batch.shape} has {batch.shape[1]} (B, C, H, W)"
            )
        scalar = np.dtype(dtype).type
        if np.dtype(dtype).kind != "f":
            raise DataError(f"normalised batches must have a float dtype, got {np.dtype(dtype)}")
        out = batch.astype(dtype)  # the only copy: (B, C, H, W)
        if self.channels is not None:
            out -= np.asarray(self.mean, dtype=dtype).reshape(1, -1, 1, 1)  # (1, C, 1, 1)
            out /= np.asarray(self.std, dtype=dtype).reshape(1, -1, 1, 1)
            return out
        if self.mean:
            out -= scalar(self.mean)
        out /= scalar(self.std)
        return out

    def to_dict(self) -> dict:
        """Plain values for a checkpoint: ``{"kind": str, "mean": float, "std": float}``, or
        lists of C floats for per-channel statistics."""
        if self.channels is not None:
            return {
                "kind": self.kind,
                "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std],
            }
        return {"kind": self.kind, "mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> Normalizer:
        """Inverse of :meth:`to_dict` (accepts NumPy scalars and arrays as loaded from a ``.npz``).

        Raises:
            DataError: ``data`` is not a normalizer description (a key missing, values that are
                not numbers or lists of numbers, or any fault :class:`Normalizer` refuses).
        """
        try:
            return cls(_plain(data["mean"]), _plain(data["std"]), str(data["kind"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a normalizer description: {data!r} ({exc})") from None


def _plain(value) -> float | tuple[float, ...]:
    """A number, or a 1-D list/array of numbers, as a float or a tuple of floats."""
    array = np.asarray(value)
    if array.ndim == 0:
        return float(array)
    if array.ndim == 1 and array.dtype.kind in "iuf":
        return tuple(float(v) for v in array)
    raise ValueError(f"expected a number or a list of numbers, got {value!r}")


def _integer_stats(images: np.ndarray) -> tuple[float, float]:
    """``(float(int(mean)), float(int(std)))`` of uint8 ``images`` (any shape), exactly; see
    :meth:`Normalizer.original` (whose errors it raises)."""
    flat = images.reshape(-1)  # a view when contiguous
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, flat.size, _STATS_CHUNK):
        counts += np.bincount(flat[start : start + _STATS_CHUNK], minlength=256)
    values = range(256)
    n = int(flat.size)
    s1 = sum(v * int(c) for v, c in zip(values, counts, strict=True))
    s2 = sum(v * v * int(c) for v, c in zip(values, counts, strict=True))
    mean = int(float(s1) / n)  # s1 < 2**53, so float(s1) is exact, as NumPy's float64 sum is
    n2_var = n * s2 - s1 * s1  # n^2 * variance, an exact integer
    std = math.isqrt(n2_var) // n
    if std == 0:
        present = np.flatnonzero(counts)  # the pixel values that occur, ascending
        if n2_var == 0:
            raise DataError(
                f"the images are constant: every pixel is {present[0]} (standard deviation "
                f"0), so there is nothing to learn from them and the original normalisation "
                f"would divide by 0; check that these are the image files you meant"
            )
        raise DataError(
            f"the standard deviation of the images' pixels is "
            f"{_below_one(math.sqrt(n2_var) / n)} (values {present[0]} to {present[-1]}), "
            f"below 1, so the original integer normalisation (divide by int(std) = 0) cannot "
            f"be used; use the unit normalisation instead: --normalization unit (x / 255)"
        )
    return float(mean), float(std)


def _below_one(x: float) -> str:
    """``x`` in (0, 1) with two significant digits, or more where two would print it as 1."""
    for digits in range(2, 18):
        text = f"{x:.{digits}g}"
        if float(text) < 1:
            return text
    return repr(x)


def subset(images: np.ndarray, labels: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` images and labels (views, no copy), as the original takes its 20,000.

    ``n=None`` keeps everything; ``n`` larger than the dataset is an error.
    """
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels")
    if n is None:
        return images, labels
    if not 0 < n <= len(images):
        raise DataError(f"subset size must be in 1..{len(images)}, got {n}")
    return images[:n], labels[:n]


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None,
    normalizer: Normalizer,
    dtype=np.float32,
    drop_last: bool = False,
    *,
    augment: Callable[[np.ndarray, int], np.ndarray] | None = None,
    start: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of normalised batches: the only batching path, the trainer's too.

    The epoch's order is ``order = rng.permutation(N)`` (the file order without ``rng``) and
    batch ``s`` holds the images ``order[s * batch_size : (s + 1) * batch_size]``, augmented
    (uint8, before normalisation) by ``augment(images, s)`` when given, then normalised. The
    trainer passes ``rng = default_rng([seed, epoch])`` and an ``augment`` that seeds each batch
    with ``default_rng([seed, epoch, s, 1])``: every batch is a pure function of (seed, epoch,
    s), which is what lets a run resumed at step ``s`` (``start=s``) replay the same batches.

    Args:
        images: uint8 (N, H, W), or (N, C, H, W) for colour.
        labels: integer (N,).
        batch_size: images per batch (the last one may be smaller unless ``drop_last``).
        rng: shuffles the order with ``rng.permutation(N)``; ``None`` keeps the file order.
        normalizer: turns each uint8 batch into floats.
        dtype: float dtype of the batches.
        drop_last: skip a final batch smaller than ``batch_size``.
        augment: ``augment(images, s)`` -> images: applied to the uint8 (B, H, W) batch number
            ``s`` (counted from 0 within the epoch, whatever ``start`` is), in the images' own
            layout ((B, H, W) or (B, C, H, W)); ``None``: none.
        start: the number of the first batch to yield: the ones before it are skipped without
            being read, in the whole epoch's order.

    Yields:
        ``(x, y)``: x of ``dtype`` (B, C, H, W) (C = 1 for (N, H, W) images), y int64 (B,).

    Raises:
        DataError: ``batch_size`` below 1, ``start`` negative, or a number of labels other
            than the number of images (raised by the first ``next``).

    Example:
        >>> for x, y in iterate_batches(images, labels, 64, rng, norm):  # doctest: +SKIP
        ...     loss.forward(model.forward(x), y)
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    if start < 0:
        raise DataError(f"start must be a batch number >= 0, got {start}")
    n = len(images)
    if len(labels) != n:
        raise DataError(f"{n} images but {len(labels)} labels")
    order = rng.permutation(n) if rng is not None else None  # (N,) indices of this epoch
    count = n // batch_size if drop_last else -(-n // batch_size)  # batches in the epoch
    for s in range(start, count):
        batch = slice(s * batch_size, (s + 1) * batch_size)
        if order is None:
            xb, yb = images[batch], labels[batch]
        else:
            idx = order[batch]  # (B,)
            xb, yb = images[idx], labels[idx]  # uint8 copies of one batch only
        if augment is not None:
            xb = augment(xb, s)
        yield normalizer(xb, dtype=dtype), yb.astype(np.int64)
