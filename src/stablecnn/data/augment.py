"""Light data augmentation: each image shifted by a few pixels and rotated by a few degrees.

Works on the uint8 batch, before normalisation, so the rest of the data flow is unchanged::

    images[idx] (B, H, W) uint8 -> augment_batch(..., rng) (B, H, W) uint8 -> Normalizer -> model

One inverse map covers both moves. For an output pixel ``p = (y, x)``, with ``c`` the image
centre ``((H - 1) / 2, (W - 1) / 2)``, shift ``t = (dy, dx)`` and angle ``theta``::

    source = R(-theta) (p - c - t) + c

and the output is the bilinear interpolation of the input at ``source``, with 0 (black) outside
the image, rounded back to uint8. The map of the whole batch is built at once as (B, H, W)
arrays of coordinates and gathered from the flat batch: no Python loop over images or pixels.
With ``theta = 0`` the weights are exactly 0 and 1, so a pure shift moves pixels unchanged.

The result depends only on the images and the generator passed in: the trainer seeds one per
batch (``default_rng([seed, epoch, step, 1])``), so a resumed run sees the same augmented batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stablecnn.errors import ConfigError, DataError


def shift_rotate(images: np.ndarray, shifts: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Shift and rotate each image about its centre (bilinear, zero fill).

    Args:
        images: uint8 (B, H, W).
        shifts: (B, 2) pixels ``(dy, dx)``; positive moves the content down and right.
        degrees: (B,) angles; positive turns the content counter-clockwise as displayed (row 0
            at the top), like ``np.rot90``.

    Returns:
        uint8 (B, H, W), a new array.
    """
    _check_images(images)
    b, h, w = images.shape
    shifts = np.asarray(shifts, dtype=np.float64).reshape(b, 2)
    theta = np.deg2rad(np.asarray(degrees, dtype=np.float64).reshape(b))
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]  # (B, 1, 1)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    oy = np.arange(h, dtype=np.float64)[None, :, None] - cy - shifts[:, 0, None, None]  # (B, H, 1)
    ox = np.arange(w, dtype=np.float64)[None, None, :] - cx - shifts[:, 1, None, None]  # (B, 1, W)
    # R(-theta) in (row, column) coordinates: rows point down, so a counter-clockwise turn on
    # screen is clockwise in (row, column) and its inverse has these signs
    sy = cos * oy + sin * ox + cy  # (B, H, W) source row of each output pixel
    sx = -sin * oy + cos * ox + cx  # (B, H, W) source column
    y0, x0 = np.floor(sy), np.floor(sx)
    fy, fx = sy - y0, sx - x0  # (B, H, W) bilinear weights of the lower neighbours' partners
    y0, x0 = y0.astype(np.intp), x0.astype(np.intp)
    flat = images.reshape(-1)
    base = (np.arange(b, dtype=np.intp) * (h * w))[:, None, None]  # (B, 1, 1) first pixel of each
    out = np.zeros((b, h, w), dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):  # the four neighbours: a loop over offsets, not pixels
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            idx = base + np.clip(yy, 0, h - 1) * w + np.clip(xx, 0, w - 1)
            out += np.where(inside, wy * wx, 0.0) * flat[idx]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def augment_batch(
    images: np.ndarray, rng: np.random.Generator, max_shift: int = 2, max_degrees: float = 10.0
) -> np.ndarray:
    """A random shift (integer, up to ``max_shift`` pixels per axis) and rotation (uniform in
    ``[-max_degrees, max_degrees]``) for each image of a uint8 (B, H, W) batch.

    Draws ``rng.integers(-max_shift, max_shift + 1, (B, 2))`` then ``rng.uniform(..., B)``, always
    in that order, so equal generators give equal batches.

    Example:
        >>> batch = np.zeros((4, 28, 28), np.uint8); batch[:, 10:18, 12:16] = 255
        >>> augment_batch(batch, np.random.default_rng(0)).shape
        (4, 28, 28)
    """
    _check_images(images)
    b = images.shape[0]
    shifts = rng.integers(-max_shift, max_shift + 1, size=(b, 2))
    degrees = rng.uniform(-max_degrees, max_degrees, size=b)
    return shift_rotate(images, shifts, degrees)


def _check_images(images) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"augmentation takes a uint8 batch (B, H, W), got "
            f"{getattr(images, 'dtype', type(images).__name__)} "
            f"{getattr(images, 'shape', '')}"
        )


@dataclass(frozen=True)
class Augment:
    """The augmentation of a training run (stored in its checkpoint).

    Args:
        max_shift: largest shift in pixels along each axis (an int >= 0), default 2.
        max_degrees: largest rotation in degrees (0 to 180), default 10.

    Example:
        >>> aug = Augment(max_shift=2, max_degrees=10)
        >>> Augment.from_dict(aug.to_dict()) == aug
        True
        >>> Augment.parse("3,15")
        Augment(max_shift=3, max_degrees=15.0)
    """

    max_shift: int = 2
    max_degrees: float = 10.0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_shift, (int, np.integer))
            or isinstance(self.max_shift, bool)
            or self.max_shift < 0
        ):
            raise ConfigError(f"max_shift must be an int >= 0, got {self.max_shift!r}")
        if (
            not isinstance(self.max_degrees, (int, float, np.integer, np.floating))
            or isinstance(self.max_degrees, bool)
            or not 0 <= self.max_degrees <= 180
        ):
            raise ConfigError(f"max_degrees must be a number in [0, 180], got {self.max_degrees!r}")
        object.__setattr__(self, "max_shift", int(self.max_shift))
        object.__setattr__(self, "max_degrees", float(self.max_degrees))

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one uint8 (B, H, W) batch with draws from ``rng``."""
        return augment_batch(images, rng, self.max_shift, self.max_degrees)

    def to_dict(self) -> dict:
        """``{"max_shift": int, "max_degrees": float}``, JSON-ready."""
        return {"max_shift": self.max_shift, "max_degrees": self.max_degrees}

    @classmethod
    def from_dict(cls, data: dict) -> Augment:
        """Inverse of :meth:`to_dict` (accepts NumPy scalars as loaded from a ``.npz``)."""
        try:
            shift, degrees = data["max_shift"], data["max_degrees"]
            if float(shift) != math.floor(float(shift)):
                raise ConfigError(f"max_shift {shift!r} is not a whole number")
            return cls(int(shift), float(degrees))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not an augmentation description: {data!r} ({exc})") from None

    @classmethod
    def parse(cls, text: str) -> Augment:
        """``"SHIFT,DEGREES"`` (e.g. ``"2,10"``), as a command line gives it."""
        parts = text.split(",")
        try:
            if len(parts) != 2:
                raise ConfigError("expected two numbers")
            return cls(int(parts[0]), float(parts[1]))
        except ValueError as exc:
            raise ConfigError(
                f"augmentation must be SHIFT,DEGREES such as 2,10, got {text!r} ({exc})"
            ) from None
