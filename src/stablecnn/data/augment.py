"""Data augmentation of uint8 batches, seeded and vectorised over the batch.

Works on the uint8 batch, before normalisation, so the rest of the data flow is unchanged::

    images[idx] (B, H, W) or (B, C, H, W) uint8 -> Augment(...)(images, rng) (same shape, uint8)
    -> Normalizer -> model

Five augmentations, each a pure function of the images and the parameters drawn for them (no
Python loop over images or pixels), and a colour batch gets the same map on every channel:

- :func:`shift_rotate`: a shift by whole pixels, a rotation and a scaling (zoom) about the centre
  (bilinear, 0 outside the image): torchvision's ``RandomAffine(degrees, scale=(1 - m, 1 + m))``
  with whole-pixel translations, and the zoom of Keras' ``zoom_range``; with an optional
  **elastic distortion** in the same resampling (Simard, Steinkraus & Platt 2003, "Best Practices
  for Convolutional Neural Networks Applied to Visual Document Analysis", section 2): every
  pixel's source moves by ``alpha`` times a field of uniform noise in [-1, 1] smoothed by a
  Gaussian of standard deviation ``sigma`` pixels (:func:`elastic_displacements`).
- :func:`pad_crop`: random crops with padding, the CIFAR recipe (He et al. 2016, "Deep Residual
  Learning for Image Recognition", section 4.2: pad 4 zero pixels on each side, crop a random
  32x32 window; torchvision's ``RandomCrop(32, padding=4)``). A crop at offset ``(oy, ox)`` of
  the padded image is the shift ``(P - oy, P - ox)`` with zero fill: it draws the same
  translations as ``shift_rotate`` with ``max_shift = P`` and no rotation, as its own readable
  step under the field's name.
- :func:`flip_horizontal`: mirror images left to right, each with probability 1/2
  (torchvision's ``RandomHorizontalFlip(p=0.5)``). For datasets whose classes are mirror-symmetric
  (clothes, objects: Fashion-MNIST, CIFAR-10), never for digits: a mirrored 2, 3, 4, 5, 6, 7 or 9
  is no longer that digit (and a mirrored 6 is no 9 either), so flipping teaches the model
  pictures that are wrong for their labels. :class:`~stablecnn.training.config.TrainConfig`
  refuses flips on ``mnist``; they are never on by default.
- :func:`erase`: random erasing (Zhong et al. 2017, "Random Erasing Data Augmentation",
  Algorithm 1; torchvision's ``RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0)``):
  with probability ``p`` an image gets one rectangle of area ``s H W``, ``s ~ U(scale)``, and
  aspect ratio ``r`` (height / width), ``log r ~ U(log ratio)``, set to 0, placed uniformly where
  it fits inside the image (:func:`erasing_boxes`). Cutout (DeVries & Taylor 2017, "Improved
  Regularization of Convolutional Neural Networks with Cutout") is the close cousin with a fixed
  square that may cross the border; this module implements random erasing. The fill is 0
  (black, as the shift's and the crop's fill), on the uint8 image: torchvision erases after
  normalisation, where ``value=0`` is the mean colour instead.

:class:`Augment` composes them in a fixed order, each step drawing from the generator only when it
is on, always in this order (so equal generators give equal batches, and a run stored before the
later steps existed draws exactly what it drew then)::

    1. shift, rotate, scale and elastic            rng.integers(-S, S + 1, (B, 2)),
       distortion (max_shift S, max_degrees D,     rng.uniform(-D, D, B),
       max_scale M, elastic = (alpha, sigma))      then only if M > 0: rng.uniform(1 - M, 1 + M, B),
                                                   then only if alpha > 0:
                                                   rng.uniform(-1, 1, (B, 2, H, W))
    2. random crop (random_crop = P)               rng.integers(0, 2 P + 1, (B, 2))
    3. horizontal flip (hflip)                     rng.random(B) < 0.5
    4. random erasing (random_erasing = p)         the draws of erasing_boxes

Crop, then flip, then erase is torchvision's CIFAR recipe order. The trainer seeds one generator
per batch (``default_rng([seed, epoch, step, 1])``), so a resumed run sees the same augmented
batches.

The shift, rotation, scaling and elastic distortion: for an output pixel ``p = (y, x)``, with
``c`` the image centre ``((H - 1) / 2, (W - 1) / 2)``, shift ``t = (dy, dx)``, angle ``theta``,
scale ``s`` (above 1 enlarges the content) and elastic displacement ``e(p)`` (0 when off)::

    source = R(-theta) (p - c - t) / s + c + e(p)

and the output is the bilinear interpolation of the input at ``source``, with 0 (black) outside
the image, rounded back to uint8. With ``theta = 0``, ``s = 1`` and no elastic
displacement the weights are exactly 0 and 1, so a pure shift moves pixels unchanged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from stablecnn.errors import ConfigError, DataError

ERASING_ATTEMPTS = 10  # tries at a rectangle that fits, as torchvision's RandomErasing
# the widest elastic smoothing, in pixels: its kernel has 8 sigma + 1 taps, and a sigma far
# beyond the image's size smooths the noise into an almost rigid shift anyway
MAX_ELASTIC_SIGMA = 1000.0


def _check_images(images) -> np.ndarray:
    """The batch as (B, C, H, W) (a view; a (B, H, W) batch gets C = 1)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(
            f"augmentation takes a uint8 batch (B, H, W) or (B, C, H, W), got "
            f"{getattr(images, 'dtype', type(images).__name__)} "
            f"{getattr(images, 'shape', '')}"
        )
    return images[:, None] if images.ndim == 3 else images


def _per_image(values, b: int, shape: tuple, what: str, dtype=None) -> np.ndarray:
    values = np.asarray(values, dtype=dtype)
    if values.size != b * math.prod(shape):
        raise DataError(f"{what} must hold {(b, *shape)} values for {b} images, got {values.shape}")
    return values.reshape(b, *shape)


def gaussian_smoothing_matrix(n: int, sigma: float) -> np.ndarray:
    r"""The (n, n) matrix ``S`` of a 1-D Gaussian smoothing with zero outside ``0 .. n - 1``.

    .. math::
        S_{ij} = g(i - j), \qquad
        g(k) = \frac{e^{-k^2 / (2 \sigma^2)}}{\sum_{|m| \le r} e^{-m^2 / (2 \sigma^2)}}
        \ \text{for}\ |k| \le r = \lfloor 4 \sigma + 1/2 \rfloor, \text{ else } 0

    so ``S @ v`` is ``scipy.ndimage.gaussian_filter1d(v, sigma, mode="constant")`` (the kernel
    truncated at 4 standard deviations and summing to 1). ``S_h @ u @ S_w.T`` smooths an
    (H, W) field along both axes.

    Raises:
        ConfigError: ``sigma`` not a number in (0, :data:`MAX_ELASTIC_SIGMA`].
    """
    if not _number(sigma) or not 0 < sigma <= MAX_ELASTIC_SIGMA:
        raise ConfigError(
            f"the elastic sigma must be a number in (0, {MAX_ELASTIC_SIGMA:g}] pixels, "
            f"got {sigma!r}"
        )
    radius = int(4 * sigma + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (k / sigma) ** 2)
    g /= g.sum()
    d = np.arange(n)[:, None] - np.arange(n)[None, :]  # i - j
    return np.where(np.abs(d) <= radius, g[np.clip(d + radius, 0, 2 * radius)], 0.0)


def elastic_displacements(noise: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    r"""Elastic distortion fields (Simard et al. 2003, section 2) from uniform noise.

    .. math::
        e_b = \alpha \, (G_\sigma * u_b)

    for each image ``b`` and each of the two axes: the noise ``u`` (uniform in [-1, 1], one value
    per pixel and axis) smoothed by a Gaussian of standard deviation ``sigma`` pixels with zero
    outside the image (:func:`gaussian_smoothing_matrix` along the rows, then the columns), times
    ``alpha`` pixels. Small ``sigma`` gives a random jitter, large ``sigma`` an almost rigid
    shift; the paper's MNIST setting is ``sigma = 4``, ``alpha = 34``, which moves a pixel by about
    1.3 pixels (the standard deviation of ``e`` on 28 x 28 images), smoothly. Measured on MNIST
    with md2, shifts and rotations, it did not help (99.29% against 99.72% without it; README,
    "Recipes").

    Args:
        noise: (B, 2, H, W) numbers in [-1, 1] (``rng.uniform(-1, 1, (B, 2, H, W))``).
        alpha: the scale, in pixels, >= 0.
        sigma: the smoothing's standard deviation, in pixels, > 0.

    Returns:
        (B, 2, H, W) float64 displacements ``(dy, dx)`` of each output pixel's source, in pixels.

    Raises:
        DataError: ``noise`` not a (B, 2, H, W) array.
        ConfigError: ``alpha`` or ``sigma`` out of range.
    """
    noise = np.asarray(noise, dtype=np.float64)
    if noise.ndim != 4 or noise.shape[1] != 2:
        raise DataError(f"elastic noise must be (B, 2, H, W), got {noise.shape}")
    if not _number(alpha) or not 0 <= alpha < math.inf:
        raise ConfigError(f"the elastic alpha must be a finite number >= 0, got {alpha!r}")
    _, _, h, w = noise.shape
    rows, cols = gaussian_smoothing_matrix(h, sigma), gaussian_smoothing_matrix(w, sigma)
    return alpha * (rows @ noise @ cols.T)


def shift_rotate(
    images: np.ndarray,
    shifts: np.ndarray,
    degrees: np.ndarray,
    scales: np.ndarray | None = None,
    displacements: np.ndarray | None = None,
) -> np.ndarray:
    r"""Shift, rotate and scale each image about its centre, and distort it elastically
    (bilinear, zero fill).

    .. math::
        \mathrm{source}(p) = R(-\theta)\,(p - c - t) / s + c + e(p)

    for output pixel ``p = (y, x)``, centre ``c = ((H - 1) / 2, (W - 1) / 2)``, shift ``t``,
    angle ``theta``, scale ``s`` and displacement ``e(p)``; the output is the bilinear
    interpolation of the input at the source, 0 outside the image, rounded to uint8. Every
    channel of a colour image moves the same way.

    Args:
        images: uint8 (B, H, W) or (B, C, H, W).
        shifts: (B, 2) pixels ``(dy, dx)``; positive moves the content down and right.
        degrees: (B,) angles; positive turns the content counter-clockwise as displayed (row 0
            at the top), like ``np.rot90``.
        scales: (B,) factors > 0 (above 1 enlarges the content about the centre, below 1
            shrinks it); ``None``: 1 for every image.
        displacements: (B, 2, H, W) pixels ``(dy, dx)`` added to each output pixel's source
            (:func:`elastic_displacements`); ``None``: none.

    Shape:
        the input's, uint8; a new array.

    Raises:
        DataError: ``images`` not a uint8 (B, H, W) or (B, C, H, W) array, ``shifts``,
            ``degrees`` or ``scales`` not one per image, a scale not above 0, or
            ``displacements`` not finite (B, 2, H, W).
    """
    x = _check_images(images)
    b, c, h, w = x.shape
    shifts = _per_image(shifts, b, (2,), "shifts", np.float64)
    theta = np.deg2rad(_per_image(degrees, b, (), "degrees", np.float64))
    cos, sin = np.cos(theta)[:, None, None, None], np.sin(theta)[:, None, None, None]  # (B,1,1,1)
    if scales is not None:  # R(-theta) / s: the source moves 1 / s as far from the centre
        s = _per_image(scales, b, (), "scales", np.float64)
        bad = s[~((s > 0) & np.isfinite(s))]
        if bad.size:
            raise DataError(f"scales must be finite and above 0, got {bad[:3].tolist()}")
        cos, sin = cos / s[:, None, None, None], sin / s[:, None, None, None]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    oy = np.arange(h, dtype=np.float64)[None, None, :, None] - cy - shifts[:, 0, None, None, None]
    ox = np.arange(w, dtype=np.float64)[None, None, None, :] - cx - shifts[:, 1, None, None, None]
    # R(-theta) in (row, column) coordinates: rows point down, so a counter-clockwise turn on
    # screen is clockwise in (row, column) and its inverse has these signs
    sy = cos * oy + sin * ox + cy  # (B, 1, H, W) source row of each output pixel
    sx = -sin * oy + cos * ox + cx  # (B, 1, H, W) source column
    if displacements is not None:
        e = np.asarray(displacements, dtype=np.float64)
        if e.shape != (b, 2, h, w) or not np.isfinite(e).all():
            raise DataError(
                f"displacements must be finite (B, 2, H, W) = {(b, 2, h, w)}, got {e.shape}"
            )
        sy, sx = sy + e[:, 0:1], sx + e[:, 1:2]
    y0, x0 = np.floor(sy), np.floor(sx)
    fy, fx = sy - y0, sx - x0  # (B, 1, H, W) bilinear weights of the lower neighbours' partners
    y0, x0 = y0.astype(np.intp), x0.astype(np.intp)
    flat = x.reshape(-1)
    # (B, C, 1, 1) first pixel of each image's channel
    base = (np.arange(b, dtype=np.intp) * (c * h * w))[:, None, None, None] + (
        np.arange(c, dtype=np.intp) * (h * w)
    )[None, :, None, None]
    out = np.zeros((b, c, h, w), dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):  # the four neighbours: a loop over offsets, not pixels
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            idx = base + np.clip(yy, 0, h - 1) * w + np.clip(xx, 0, w - 1)  # (B, C, H, W)
            out += np.where(inside, wy * wx, 0.0) * flat[idx]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(images.shape)


def augment_batch(
    images: np.ndarray,
    rng: np.random.Generator,
    max_shift: int = 2,
    max_degrees: float = 10.0,
    max_scale: float = 0.0,
    elastic: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """A random shift (integer, up to ``max_shift`` pixels per axis), rotation (uniform in
    ``[-max_degrees, max_degrees]``), when ``max_scale > 0`` scaling (uniform in
    ``[1 - max_scale, 1 + max_scale]``) and when ``elastic = (alpha, sigma)`` has ``alpha > 0`` an
    elastic distortion (:func:`elastic_displacements`) for each image of a uint8 batch, in one
    resampling (:func:`shift_rotate`).

    Draws ``rng.integers(-max_shift, max_shift + 1, (B, 2))``, then ``rng.uniform(..., B)`` for
    the angles, then (only when ``max_scale > 0``) ``rng.uniform(..., B)`` for the scales, then
    (only when ``alpha > 0``) ``rng.uniform(-1, 1, (B, 2, H, W))`` for the elastic noise, always
    in that order, so equal generators give equal batches, and a run without scaling or elastic
    distortion draws what it drew before they existed.

    Shape:
        (B, H, W) or (B, C, H, W) uint8 -> the same, a new array.

    Raises:
        DataError: ``images`` not a uint8 (B, H, W) or (B, C, H, W) array.

    Example:
        >>> batch = np.zeros((4, 28, 28), np.uint8); batch[:, 10:18, 12:16] = 255
        >>> augment_batch(batch, np.random.default_rng(0)).shape
        (4, 28, 28)
    """
    b, _, h, w = _check_images(images).shape
    shifts = rng.integers(-max_shift, max_shift + 1, size=(b, 2))
    degrees = rng.uniform(-max_degrees, max_degrees, size=b)
    scales = rng.uniform(1 - max_scale, 1 + max_scale, size=b) if max_scale else None
    alpha, sigma = elastic
    displacements = None
    if alpha:
        noise = rng.uniform(-1.0, 1.0, size=(b, 2, h, w))
        displacements = elastic_displacements(noise, alpha, sigma)
    return shift_rotate(images, shifts, degrees, scales, displacements)


def pad_crop(images: np.ndarray, padding: int, offsets: np.ndarray) -> np.ndarray:
    r"""Pad each image with ``padding`` zero pixels on every side and take the H x W window at
    ``offsets`` (random crops with padding, as the CIFAR recipe).

    .. math::
        \mathrm{out}[b, c, y, x] = \mathrm{padded}[b, c, y + o_y[b], x + o_x[b]], \qquad
        0 \le o_y, o_x \le 2P

    so ``offsets = (P, P)`` (and ``padding = 0``) give the image back unchanged, and offset
    ``(oy, ox)`` moves the content by ``(P - oy, P - ox)`` pixels, down and right, zero filled.

    Args:
        images: uint8 (B, H, W) or (B, C, H, W).
        padding: P, an int >= 0.
        offsets: (B, 2) ints ``(oy, ox)`` in [0, 2P], the window's top-left corner in the padded
            image.

    Shape:
        the input's, uint8; a new array.

    Raises:
        DataError: ``images`` not a uint8 (B, H, W) or (B, C, H, W) array, ``offsets`` not
            (B, 2) integers in [0, 2P].
        ConfigError: ``padding`` not an int >= 0.
    """
    x = _check_images(images)
    b, c, h, w = x.shape
    padding = _nonnegative_int("padding", padding)
    offsets = _per_image(offsets, b, (2,), "offsets")
    if not np.issubdtype(offsets.dtype, np.integer) or (
        offsets.size and (offsets.min() < 0 or offsets.max() > 2 * padding)
    ):
        raise DataError(
            f"crop offsets must be integers in [0, {2 * padding}] for padding {padding}, got "
            f"{offsets.dtype} in [{offsets.min() if offsets.size else ''}, "
            f"{offsets.max() if offsets.size else ''}]"
        )
    p = padding
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))  # (B, C, H + 2P, W + 2P), zeros
    rows = offsets[:, 0, None] + np.arange(h)  # (B, H) rows of the window in the padded image
    cols = offsets[:, 1, None] + np.arange(w)  # (B, W)
    out = padded[
        np.arange(b)[:, None, None, None],
        np.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]  # (B, C, H, W)
    return out.reshape(images.shape)


def flip_horizontal(images: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Mirror the images where ``flip`` is true: ``out[b, ..., x] = images[b, ..., W - 1 - x]``.

    Args:
        images: uint8 (B, H, W) or (B, C, H, W).
        flip: (B,) bools, which images to mirror.

    Shape:
        the input's, uint8; a new array.

    Raises:
        DataError: ``images`` not a uint8 (B, H, W) or (B, C, H, W) array, ``flip`` not (B,)
            bools.
    """
    x = _check_images(images)
    flip = _per_image(flip, x.shape[0], (), "flip")
    if flip.dtype != np.bool_:
        raise DataError(f"flip must be booleans, one per image, got {flip.dtype}")
    return np.where(flip[:, None, None, None], x[..., ::-1], x).reshape(images.shape)


def erasing_boxes(
    rng: np.random.Generator,
    batch: int,
    height: int,
    width: int,
    p: float,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> np.ndarray:
    """The rectangles of random erasing (Zhong et al. 2017, Algorithm 1, as torchvision's
    ``RandomErasing.get_params``), drawn for a whole batch at once.

    Image ``b`` is erased with probability ``p``. Its rectangle: for attempt ``a = 1 .. 10``,
    area ``s H W`` with ``s ~ U(scale)``, aspect ratio ``r`` with ``log r ~ U(log ratio)``,
    height ``round(sqrt(s H W r))``, width ``round(sqrt(s H W / r))``; the first attempt smaller
    than the image in both sides is placed at a uniform position inside the image
    (``top = floor(u H')`` with ``u ~ U[0, 1)`` and ``H' = H - height + 1``, the same for the
    left edge). An image not erased, or with no attempt that fits, gets the empty box
    (0, 0, 0, 0). The draws are always, in this order and whatever the outcome:
    ``rng.random(B)`` (erase or not), ``rng.uniform(*scale, (B, 10))``,
    ``rng.uniform(log ratio, (B, 10))``, ``rng.random((B, 2))``.

    Args:
        rng: the generator to draw from.
        batch, height, width: B, H, W.
        p: probability of erasing an image, in [0, 1].
        scale: (min, max) fraction of the image's area, 0 < min <= max <= 1.
        ratio: (min, max) aspect ratio height / width, 0 < min <= max.

    Returns:
        (B, 4) ints ``(top, left, height, width)``; height and width 0 for an image left alone.

    Raises:
        ConfigError: ``p``, ``scale`` or ``ratio`` out of range.
    """
    p, scale, ratio = _check_erasing(p, scale, ratio)
    b, h, w = batch, height, width
    erased = rng.random(b) < p  # (B,)
    area = (h * w) * rng.uniform(scale[0], scale[1], (b, ERASING_ATTEMPTS))  # (B, 10)
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (b, ERASING_ATTEMPTS)))
    eh = np.rint(np.sqrt(area * aspect)).astype(np.intp)  # (B, 10) heights of the attempts
    ew = np.rint(np.sqrt(area / aspect)).astype(np.intp)
    fits = (eh < h) & (ew < w)
    first = fits.argmax(axis=1)  # (B,) the first attempt that fits (0 when none does)
    keep = erased & fits.any(axis=1)
    rows = np.arange(b)
    eh = np.where(keep, eh[rows, first], 0)
    ew = np.where(keep, ew[rows, first], 0)
    u = rng.random((b, 2))
    top = np.where(keep, np.floor(u[:, 0] * (h - eh + 1)), 0).astype(np.intp)
    left = np.where(keep, np.floor(u[:, 1] * (w - ew + 1)), 0).astype(np.intp)
    return np.stack([top, left, eh, ew], axis=1)


def erase(images: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Set one rectangle of each image to 0 (every channel).

    ``out[b, c, y, x] = 0`` where ``top[b] <= y < top[b] + height[b]`` and
    ``left[b] <= x < left[b] + width[b]``, else ``images[b, c, y, x]``.

    Args:
        images: uint8 (B, H, W) or (B, C, H, W).
        boxes: (B, 4) ints ``(top, left, height, width)`` (:func:`erasing_boxes`); a height or
            width of 0 erases nothing, and a box is clipped to the image.

    Shape:
        the input's, uint8; a new array.

    Raises:
        DataError: ``images`` not a uint8 (B, H, W) or (B, C, H, W) array, ``boxes`` not (B, 4)
            integers with non-negative sizes.
    """
    x = _check_images(images)
    b, _, h, w = x.shape
    boxes = _per_image(boxes, b, (4,), "boxes")
    if not np.issubdtype(boxes.dtype, np.integer) or (boxes.size and boxes[:, 2:].min() < 0):
        raise DataError(f"boxes must be integers with sizes >= 0, got {boxes.dtype} {boxes}")
    top, left, eh, ew = boxes.T  # (B,) each
    ys, xs = np.arange(h), np.arange(w)
    in_rows = (ys >= top[:, None]) & (ys < (top + eh)[:, None])  # (B, H)
    in_cols = (xs >= left[:, None]) & (xs < (left + ew)[:, None])  # (B, W)
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (B, 1, H, W)
    return np.where(mask, np.uint8(0), x).reshape(images.shape)


def _nonnegative_int(what: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{what} must be an int >= 0, got {value!r}")
    return int(value)


def _number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_erasing(p, scale, ratio) -> tuple[float, tuple[float, float], tuple[float, float]]:
    if not _number(p) or not 0 <= p <= 1:
        raise ConfigError(f"random_erasing (a probability) must be in [0, 1], got {p!r}")
    pairs = []
    for what, pair, top in (("erasing_scale", scale, 1.0), ("erasing_ratio", ratio, math.inf)):
        values = tuple(pair) if isinstance(pair, (tuple, list, np.ndarray)) else ()
        if len(values) != 2 or not all(_number(v) for v in values):
            raise ConfigError(f"{what} must be two numbers (min, max), got {pair!r}")
        lo, hi = float(values[0]), float(values[1])
        if not (0 < lo <= hi <= top and math.isfinite(hi)):
            bound = "0 < min <= max <= 1" if top == 1 else "0 < min <= max, finite"
            raise ConfigError(f"{what} must have {bound}, got {pair!r}")
        pairs.append((lo, hi))
    return float(p), pairs[0], pairs[1]


def _check_elastic(elastic) -> tuple[float, float]:
    values = tuple(elastic) if isinstance(elastic, (tuple, list, np.ndarray)) else ()
    if len(values) != 2 or not all(_number(v) for v in values):
        raise ConfigError(f"elastic must be two numbers (alpha, sigma), got {elastic!r}")
    alpha, sigma = float(values[0]), float(values[1])
    if (alpha, sigma) != (0.0, 0.0) and not (
        0 < alpha < math.inf and 0 < sigma <= MAX_ELASTIC_SIGMA
    ):
        raise ConfigError(
            f"elastic (alpha, sigma) must be (0, 0) (off), or alpha finite and above 0 and sigma "
            f"in (0, {MAX_ELASTIC_SIGMA:g}] pixels, got {elastic!r}"
        )
    return alpha, sigma


@dataclass(frozen=True)
class Augment:
    """The augmentation of a training run (stored in its checkpoint), every step off by default.

    Applied in a fixed order, each step drawing from the generator only when on (the module doc
    lists the draws): shift, rotate, scale and elastic distortion, random crop, horizontal flip,
    random erasing.

    Args:
        max_shift: largest shift in pixels along each axis (an int >= 0).
        max_degrees: largest rotation in degrees (0 to 180).
        random_crop: P, the padding of random crops with padding (an int >= 0; 4 is the CIFAR
            recipe for 32x32 images).
        hflip: mirror each image left to right with probability 1/2. Not for digits (the module
            doc says why).
        random_erasing: the probability of erasing a rectangle of an image, in [0, 1].
        erasing_scale: (min, max) fraction of the area erased, default torchvision's
            (0.02, 0.33).
        erasing_ratio: (min, max) aspect ratio of the rectangle, default (0.3, 3.3).
        max_scale: M, random zoom with the shift and rotation: each image scaled about its
            centre by a factor uniform in ``[1 - M, 1 + M]``, M in [0, 1) (0.1 is the usual
            digit recipe's 10%).
        elastic: ``(alpha, sigma)``, elastic distortion with the shift and rotation
            (:func:`elastic_displacements`): displacements of ``alpha`` pixels times uniform
            noise smoothed by a Gaussian of ``sigma`` pixels. ``(0, 0)``: off; on, ``alpha > 0``
            and ``0 < sigma <=`` :data:`MAX_ELASTIC_SIGMA` (Simard et al. 2003 use ``(34, 4)`` on
            MNIST).

    Shape:
        ``aug(images, rng)``: uint8 (B, H, W) or (B, C, H, W) -> the same shape, a new array.

    Raises:
        ConfigError: a value out of its range (the message names it).

    Example:
        >>> aug = Augment(max_shift=2, max_degrees=10, random_crop=4, hflip=True)
        >>> Augment.from_dict(aug.to_dict()) == aug
        True
        >>> Augment.parse("3,15")
        Augment(max_shift=3, max_degrees=15.0)
        >>> aug(np.zeros((8, 3, 32, 32), np.uint8), np.random.default_rng(0)).shape
        (8, 3, 32, 32)
    """

    max_shift: int = 0
    max_degrees: float = 0.0
    random_crop: int = 0
    hflip: bool = False
    random_erasing: float = 0.0
    erasing_scale: tuple[float, float] = (0.02, 0.33)
    erasing_ratio: tuple[float, float] = (0.3, 3.3)
    max_scale: float = 0.0
    elastic: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        max_shift = _nonnegative_int("max_shift", self.max_shift)
        if not _number(self.max_degrees) or not 0 <= self.max_degrees <= 180:
            raise ConfigError(f"max_degrees must be a number in [0, 180], got {self.max_degrees!r}")
        random_crop = _nonnegative_int("random_crop", self.random_crop)
        if not _number(self.max_scale) or not 0 <= self.max_scale < 1:
            raise ConfigError(f"max_scale must be a number in [0, 1), got {self.max_scale!r}")
        if not isinstance(self.hflip, (bool, np.bool_)):
            raise ConfigError(f"hflip must be true or false, got {self.hflip!r}")
        p, scale, ratio = _check_erasing(
            self.random_erasing, self.erasing_scale, self.erasing_ratio
        )
        elastic = _check_elastic(self.elastic)
        for name, value in (
            ("max_shift", max_shift),
            ("max_degrees", float(self.max_degrees)),
            ("random_crop", random_crop),
            ("hflip", bool(self.hflip)),
            ("random_erasing", p),
            ("erasing_scale", scale),
            ("erasing_ratio", ratio),
            ("max_scale", float(self.max_scale)),
            ("elastic", elastic),
        ):
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:  # the fields that differ from the defaults: reads like the call
        shown = [f"max_shift={self.max_shift}", f"max_degrees={self.max_degrees!r}"]
        for name, default in (
            ("random_crop", 0),
            ("hflip", False),
            ("random_erasing", 0.0),
            ("erasing_scale", (0.02, 0.33)),
            ("erasing_ratio", (0.3, 3.3)),
            ("max_scale", 0.0),
            ("elastic", (0.0, 0.0)),
        ):
            if getattr(self, name) != default:
                shown.append(f"{name}={getattr(self, name)!r}")
        return f"Augment({', '.join(shown)})"

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one uint8 (B, H, W) or (B, C, H, W) batch with draws from ``rng``."""
        x = _check_images(images)
        b, _, h, w = x.shape
        out = images
        if self.max_shift or self.max_degrees or self.max_scale or self.elastic[0]:
            out = augment_batch(  # off: the identity, no draw
                out, rng, self.max_shift, self.max_degrees, self.max_scale, self.elastic
            )
        if self.random_crop:
            p = self.random_crop
            out = pad_crop(out, p, rng.integers(0, 2 * p + 1, size=(b, 2)))
        if self.hflip:
            out = flip_horizontal(out, rng.random(b) < 0.5)
        if self.random_erasing:
            boxes = erasing_boxes(
                rng, b, h, w, self.random_erasing, self.erasing_scale, self.erasing_ratio
            )
            out = erase(out, boxes)
        return out.copy() if out is images else out

    def to_dict(self) -> dict:
        """Every field, JSON-ready (the pairs as lists)."""
        return {
            "max_shift": self.max_shift,
            "max_degrees": self.max_degrees,
            "random_crop": self.random_crop,
            "hflip": self.hflip,
            "random_erasing": self.random_erasing,
            "erasing_scale": list(self.erasing_scale),
            "erasing_ratio": list(self.erasing_ratio),
            "max_scale": self.max_scale,
            "elastic": list(self.elastic),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Augment:
        """Inverse of :meth:`to_dict` (accepts NumPy scalars as loaded from a ``.npz``).

        ``max_shift`` and ``max_degrees`` are required; the later fields default to off, so a
        checkpoint written before they existed (``{"max_shift": 2, "max_degrees": 10.0}``)
        augments exactly as it did. An unknown field is refused (a newer stablecnn's option
        this one cannot honour).
        """
        try:
            unknown = set(data) - {f for f in cls.__dataclass_fields__}
            if unknown:
                raise ConfigError(f"unknown fields {sorted(unknown)}")
            shift, degrees = data["max_shift"], data["max_degrees"]
            if float(shift) != math.floor(float(shift)):
                raise ConfigError(f"max_shift {shift!r} is not a whole number")
            rest = {k: v for k, v in data.items() if k not in ("max_shift", "max_degrees")}
            if "random_crop" in rest:
                crop = rest["random_crop"]
                if float(crop) != math.floor(float(crop)):
                    raise ConfigError(f"random_crop {crop!r} is not a whole number")
                rest["random_crop"] = int(crop)
            if "hflip" in rest and isinstance(rest["hflip"], np.bool_):
                rest["hflip"] = bool(rest["hflip"])
            for pair in ("erasing_scale", "erasing_ratio", "elastic"):
                if isinstance(rest.get(pair), (list, tuple, np.ndarray)):  # NumPy scalars to float
                    rest[pair] = tuple(float(v) if _number(v) else v for v in rest[pair])
            shift, degrees = int(shift), float(degrees)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"not an augmentation description: {data!r} ({exc})") from None
        return cls(shift, degrees, **rest)  # a bad value: the field's own message, naming it

    @classmethod
    def parse(cls, text: str) -> Augment:
        """``"SHIFT,DEGREES"`` (e.g. ``"2,10"``), as a command line gives it."""
        form = f"augmentation must be SHIFT,DEGREES such as 2,10, got {text!r}"
        parts = [part.strip() for part in text.split(",")]
        if len(parts) != 2:
            raise ConfigError(f"{form} (two numbers, separated by a comma)")
        if not re.fullmatch(r"[+-]?\d+", parts[0]):
            raise ConfigError(f"{form} (SHIFT {parts[0]!r} is not a whole number of pixels)")
        try:
            degrees = float(parts[1])
        except ValueError:
            raise ConfigError(f"{form} (DEGREES {parts[1]!r} is not a number)") from None
        try:
            return cls(int(parts[0]), degrees)
        except ValueError as exc:  # out of range: the field's own message
            raise ConfigError(f"{form} ({exc})") from None
