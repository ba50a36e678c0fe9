"""Picture preprocessing: the MNIST framing, shared by ``stablecnn predict`` and the web page.

MNIST's digits were made this way (LeCun, Cortes and Burges, "The MNIST database of handwritten
digits", http://yann.lecun.com/exdb/mnist/): NIST's black-and-white digits were size-normalised to
fit a 20 x 20 pixel box with their aspect ratio kept, which left grey levels from the
anti-aliasing of that normalisation; then each was put in a 28 x 28 image, translated so that
its centre of mass lies at the centre of the field. The digits are light ink (up to 255) on a
black (0) background.

A model trained on MNIST has only seen digits framed like that, so a picture must be framed the
same way before it is predicted: a digit drawn small in a corner, or cropped tight to its ink,
looks nothing like MNIST until it is. :func:`frame_mnist` does it (its docstring lists the steps);
:func:`to_mnist` picks between it and :func:`fit_unframed` for pictures already in MNIST's framing.

Sizes other than 28 x 28 (a model may take other inputs) keep MNIST's proportions: the box is
20/28 of the frame's height and width.
"""

from __future__ import annotations

import math

import numpy as np

from stablecnn.errors import ConfigError, DataError, NoInkError

FRAMINGS = ("mnist", "none")  # what :func:`to_mnist` (and ``predict --framing``) accepts
MNIST_SIZE = (28, 28)  # (H, W) of MNIST's frame
BOX_SHARE = 20 / 28  # MNIST's 20 x 20 box in its 28 x 28 frame
INK_THRESHOLD = 0.25  # after the contrast stretch, a pixel brighter than this is ink
MIN_CONTRAST = 0.1  # ink must differ from the paper by 10% of the full range (25.5 of 255)


def to_mnist(
    grey: np.ndarray, size: tuple[int, int] = MNIST_SIZE, framing: str = "mnist"
) -> np.ndarray:
    """A picture's grey floats ``(H, W)`` in [0, 1] as a uint8 image ``size`` in MNIST's framing.

    Args:
        grey: the picture's grey levels, black 0 and white 1, either polarity.
        size: ``(H, W)`` of the result (the model's input size).
        framing: ``"mnist"``: :func:`frame_mnist` (for pictures as people draw or photograph
            them); ``"none"``: :func:`fit_unframed` (for pictures already framed like MNIST).

    Raises:
        ValueError: ``grey`` is not a non-empty finite 2-D array, or ``framing`` is unknown.
        NoInkError: (framing ``"mnist"``) the picture is blank or uniform.
    """
    if framing == "mnist":
        return frame_mnist(grey, size)
    if framing == "none":
        return fit_unframed(grey, size)
    raise ConfigError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")


def frame_mnist(grey: np.ndarray, size: tuple[int, int] = MNIST_SIZE) -> np.ndarray:
    """Frame a picture of a digit the way MNIST's digits were framed.

    With ``(H, W) = size`` (28 x 28 for MNIST) and the box ``(round(20 H / 28), round(20 W / 28))``:

    1. Polarity (:func:`light_on_dark`): a picture on light paper is inverted, so the ink is
       light on a dark background as in MNIST.
    2. Contrast stretch (:func:`stretch_contrast`): the paper (the median of the border pixels,
       raised by three times their noise) goes to 0 and the brightest ink to 1, so grey paper in
       a photograph becomes MNIST's black background. Nothing :data:`MIN_CONTRAST` above the
       paper raises :class:`NoInkError` ("no ink found"): a blank or uniform picture.
    3. The ink: the pixels above :data:`INK_THRESHOLD` (0.25) once stretched. A speck of dirt
       away from the digit counts as ink too.
    4. Crop to the ink's bounding box (:func:`ink_bounding_box`).
    5. Resize so the crop fits the box with its aspect ratio kept: its longer side (relative to
       the box) becomes the box's, ``scale = min(box_h / h, box_w / w)``. Pillow's Lanczos filter
       anti-aliases a reduction (its kernel widens by the reduction factor) and interpolates an
       enlargement; its small overshoot is clipped to [0, 1]. A crop already the box's size is
       not resampled. Then divided by its maximum, so a thin stroke reduced a lot (a pen line on
       a large photograph, faint once averaged) keeps ink at full brightness, as MNIST's has.
    6. Paste into a black ``size`` frame, translated by whole pixels so the centre of mass
       (:func:`centre_of_mass`) of the box lands at ``(H / 2, W / 2)`` in pixel indices, within
       half a pixel. That is where MNIST puts it: over its 10,000 test digits it lies in
       [13.5, 14.5] with mean (13.99, 14.01). A digit whose centre of mass is so far from its
       box's middle that the move would push ink out of the frame is moved only as far as the
       frame allows.
    7. Into uint8: ``round(255 v)``.

    Args:
        grey: the picture's grey levels ``(H0, W0)``, floats with black 0 and white 1.
        size: ``(H, W)`` of the result (the model's input size), each at least 2.

    Returns:
        uint8 ``(H, W)``: light ink on black, framed as MNIST.

    Raises:
        ValueError: ``grey`` is not a non-empty 2-D array of finite values, or ``size`` is bad.
        NoInkError: the picture is blank or uniform; the message starts "no ink found".

    Example:
        >>> paper = np.ones((280, 280), np.float32)
        >>> paper[20:120, 30:45] = 0.0  # a dark "1" in the upper left of white paper
        >>> image = frame_mnist(paper)
        >>> image.shape, image.dtype, int(image[0, 0]), int(image.max())
        ((28, 28), dtype('uint8'), 0, 255)
    """
    out_h, out_w = _check_size(size)
    grey = stretch_contrast(light_on_dark(_checked(grey)))  # steps 1-3
    top, bottom, left, right = ink_bounding_box(grey)
    crop = grey[top:bottom, left:right]  # step 4
    box_h, box_w = max(1, round(BOX_SHARE * out_h)), max(1, round(BOX_SHARE * out_w))
    digit = _resize_to_fit(crop, box_h, box_w)  # step 5, (h, w) <= (box_h, box_w)
    peak = float(digit.max())  # > 0: the crop holds ink, and resampling keeps some of it
    digit = digit / np.float32(peak) if peak > 0 else digit
    h, w = digit.shape
    com_y, com_x = centre_of_mass(digit)  # step 6
    y = min(max(math.floor(out_h / 2 - com_y + 0.5), 0), out_h - h)
    x = min(max(math.floor(out_w / 2 - com_x + 0.5), 0), out_w - w)
    frame = np.zeros((out_h, out_w), np.float32)
    frame[y : y + h, x : x + w] = digit
    return _to_uint8(frame)  # step 7


def fit_unframed(grey: np.ndarray, size: tuple[int, int] = MNIST_SIZE) -> np.ndarray:
    """A picture already in MNIST's framing into uint8 ``size``, without reframing its ink.

    Made light on dark (:func:`light_on_dark`); a picture of another size is resized as a whole
    (Pillow's Lanczos filter) so its longer side fits ``size`` with the aspect ratio kept, and
    padded on both sides with the background (the median of its border pixels). A picture
    already ``size`` is not resampled, so a 28 x 28 MNIST digit comes back exactly.

    Raises:
        ValueError: ``grey`` is not a non-empty 2-D array of finite values, or ``size`` is bad.
    """
    out_h, out_w = _check_size(size)
    grey = light_on_dark(_checked(grey))
    h, w = grey.shape
    if (h, w) != (out_h, out_w):
        scale = min(out_h / h, out_w / w)
        new_h, new_w = max(1, min(out_h, round(h * scale))), max(1, min(out_w, round(w * scale)))
        canvas = np.full((out_h, out_w), np.median(border(grey)), dtype=np.float32)
        top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = _resize(grey, new_h, new_w)
        grey = canvas
    return _to_uint8(grey)


# -- the steps -------------------------------------------------------------------------------------
def border(grey: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels of ``(H, W)``, flat (each pixel once): where the paper shows."""
    if min(grey.shape) <= 2:
        return grey.ravel()
    return np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])


def light_on_dark(grey: np.ndarray) -> np.ndarray:
    """Invert a picture on light paper, so its ink is light on a dark background (MNIST's way).

    The paper is the median ``p`` of the border pixels (:func:`border`). It is light when it lies
    nearer the picture's maximum than its minimum, ``p > (min + max) / 2``; then ``1 - v``.
    Relative, not a fixed 0.5: dark grey paper with black ink is still paper; and a picture
    cropped tight to a thin stroke, whose border is mostly the stroke's faint edges, keeps its
    polarity. A uniform picture is left as it is.

    Shape: ``(H, W)`` -> ``(H, W)``, float32.
    """
    lo, hi = float(grey.min()), float(grey.max())
    paper = float(np.median(border(grey)))
    return (1 - grey) if paper > (lo + hi) / 2 else grey


def stretch_contrast(grey: np.ndarray) -> np.ndarray:
    """Stretch light-on-dark grey levels so the paper is 0 and the brightest ink is 1.

    The paper is read from the border pixels (:func:`border`), where it shows: its level ``p`` is
    their median, and its noise ``s = p - P16`` (their 16th percentile: one standard deviation
    for Gaussian noise, read from the darker half, which the ink does not reach). With ``ink``
    the maximum and the floor ``f = p + min(3 s, (ink - p) / 4)``::

        v' = clip((v - f) / (ink - f), 0, 1)

    so a photographed page (grey paper at 180, ink at 60: 75 and 195 once inverted) gets a black
    background and white ink, as MNIST has, and so does a noisy photograph's paper, all but its
    rare outliers. Clean paper has ``s = 0``: the floor is the paper. The cap keeps three
    quarters of the range for the ink when the border is not paper but the digit's own edges (a
    picture cropped tight to a thin stroke).

    Raises:
        NoInkError: ``ink - p < MIN_CONTRAST`` (0.1 of the full range): the picture is blank,
            uniform, or nothing in it stands out of the paper; the message starts "no ink found".

    Shape: ``(H, W)`` -> ``(H, W)``, float32 in [0, 1].
    """
    ring = border(grey)
    paper, ink = float(np.median(ring)), float(grey.max())
    if ink - paper < MIN_CONTRAST:
        if float(grey.min()) == ink:
            why = f"the picture is uniform (every pixel {round(255 * ink)} of 255)"
        else:
            why = (
                f"nothing stands out of the paper by {round(255 * MIN_CONTRAST)} of 255 or "
                f"more (the most is {round(255 * (ink - paper))})"
            )
        raise NoInkError(f"no ink found: {why}")
    noise = paper - float(np.percentile(ring, 16))
    floor = paper + min(3 * noise, (ink - paper) / 4)
    stretched = (grey - np.float32(floor)) / np.float32(ink - floor)
    return np.clip(stretched, 0, 1, out=stretched).astype(np.float32, copy=False)


def ink_bounding_box(
    grey: np.ndarray, threshold: float = INK_THRESHOLD
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the pixels brighter than ``threshold``, as slice bounds.

    ``grey[top:bottom, left:right]`` is the smallest rectangle holding all of the ink.

    Raises:
        NoInkError: no pixel is brighter than ``threshold``.
    """
    ink = grey > threshold
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise NoInkError(f"no ink found: no pixel above {threshold} after the contrast stretch")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def centre_of_mass(grey: np.ndarray) -> tuple[float, float]:
    """The intensity-weighted mean pixel position ``(row, column)`` of ``(H, W)``, in indices.

    ``row = sum_ij i v_ij / sum_ij v_ij`` and likewise for the column; the middle of a 28 x 28
    image is (13.5, 13.5). An all-zero image has its centre of mass in its middle.
    """
    h, w = grey.shape
    total = float(grey.sum(dtype=np.float64))
    if total <= 0:
        return (h - 1) / 2, (w - 1) / 2
    row = float(grey.sum(axis=1, dtype=np.float64) @ np.arange(h)) / total
    col = float(grey.sum(axis=0, dtype=np.float64) @ np.arange(w)) / total
    return row, col


# -- helpers ---------------------------------------------------------------------------------------
def _checked(grey) -> np.ndarray:
    grey = np.asarray(grey)
    if grey.ndim != 2 or grey.size == 0:
        raise ConfigError(f"expected a non-empty (H, W) picture, got shape {grey.shape}")
    if grey.dtype.kind not in "uif":
        raise ConfigError(f"expected grey levels as numbers, got dtype {grey.dtype}")
    grey = grey.astype(np.float32)
    if not np.isfinite(grey).all():
        raise DataError("the picture holds NaN or infinite values")
    return np.clip(grey, 0, 1)


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be (H, W), got {size!r}") from None
    if h < 2 or w < 2:
        raise ConfigError(f"size must be at least (2, 2), got {size!r}")
    return h, w


def _resize(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow's Lanczos resampling of float32 ``grey`` to ``(height, width)``, clipped to [0, 1]."""
    from PIL import Image

    if grey.shape == (height, width):
        return grey
    picture = Image.fromarray(np.ascontiguousarray(grey, np.float32))  # mode "F"
    resized = picture.resize((width, height), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 1)


def _resize_to_fit(crop: np.ndarray, box_h: int, box_w: int) -> np.ndarray:
    h, w = crop.shape
    scale = min(box_h / h, box_w / w)
    return _resize(crop, min(box_h, max(1, round(h * scale))), min(box_w, max(1, round(w * scale))))


def _to_uint8(grey: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(grey, 0, 1) * 255).astype(np.uint8)
