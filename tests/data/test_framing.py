"""Tests of stablecnn.data.framing: the MNIST framing, step by step and as a whole.

The right values come from issue 12 and from MNIST itself: after framing, the ink's centre of
mass lies within 1.5 px of the middle (13.5, 13.5) and its bounding box's longer side is 19-21 px
(MNIST's own: 20 for 99.9% of its test digits); a grey-paper photograph's background ends at most
10 of 255; a blank or uniform picture is refused with "no ink found".
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from stablecnn.data.framing import (
    FRAMINGS,
    NoInkError,
    border,
    centre_of_mass,
    fit_unframed,
    frame_mnist,
    ink_bounding_box,
    light_on_dark,
    stretch_contrast,
    to_mnist,
)
from stablecnn.errors import DataError


# -- pictures as people make them ----------------------------------------------------------------
def paper(size=(280, 280)) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", size, 255)
    return img, ImageDraw.Draw(img)


def thick_one(size=280) -> np.ndarray:
    """A thick '1' in the upper left of white paper: bool ink mask ``(size, size)``."""
    img, draw = paper((size, size))
    draw.line([(0.21 * size, 0.07 * size), (0.25 * size, 0.46 * size)], fill=0, width=size // 17)
    return np.asarray(img) < 128


def seven(size=280) -> np.ndarray:
    """A '7' in the middle of white paper: bool ink mask."""
    img, draw = paper((size, size))
    s = size / 280
    draw.line([(95 * s, 70 * s), (185 * s, 70 * s)], fill=0, width=round(14 * s))
    draw.line([(185 * s, 70 * s), (125 * s, 215 * s)], fill=0, width=round(14 * s))
    return np.asarray(img) < 128


def zero_small_in_corner(size=200) -> np.ndarray:
    """A small ring ('0', 30 x 40 px) in the lower right corner: bool ink mask."""
    img, draw = paper((size, size))
    draw.ellipse([size - 40, size - 48, size - 10, size - 8], outline=0, width=5)
    return np.asarray(img) < 128


def tight(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def on_paper(mask, ink=0.0, paper_level=1.0) -> np.ndarray:
    """Grey floats: ``ink`` where the mask is set, ``paper_level`` elsewhere."""
    return np.where(mask, ink, paper_level).astype(np.float32)


DRAWINGS = {
    "off-centre thick 1": thick_one(),
    "7 in the middle": seven(),
    "small 0 in a corner": zero_small_in_corner(),
    "1 cropped tight": tight(thick_one()),
    "7 cropped tight": tight(seven()),
}


def assert_framed_like_mnist(image: np.ndarray, size=(28, 28)) -> None:
    h, w = size
    assert image.shape == size and image.dtype == np.uint8
    row, col = centre_of_mass(image.astype(np.float64))
    assert np.hypot(row - (h - 1) / 2, col - (w - 1) / 2) <= 1.5, (row, col)
    top, bottom, left, right = ink_bounding_box(image / 255)
    box = round(20 / 28 * max(h, w))
    assert box - 1 <= max(bottom - top, right - left) <= box + 1, (top, bottom, left, right)
    assert image.max() == 255, "the brightest ink is white"


# -- the whole framing --------------------------------------------------------------------------
@pytest.mark.parametrize("name", DRAWINGS)
@pytest.mark.parametrize("polarity", ["dark on white", "light on black", "photo 60 on 180"])
def test_drawings_are_framed_like_mnist(name, polarity):
    mask = DRAWINGS[name]
    ink, paper_level = {
        "dark on white": (0, 1),
        "light on black": (1, 0),
        "photo 60 on 180": (60 / 255, 180 / 255),
    }[polarity]
    framed = frame_mnist(on_paper(mask, ink, paper_level))
    assert_framed_like_mnist(framed)
    # the polarity and the paper's grey do not change the result
    np.testing.assert_array_equal(framed, frame_mnist(on_paper(mask)))


def test_off_centre_one_values():
    framed = frame_mnist(on_paper(thick_one()))
    top, bottom, left, right = ink_bounding_box(framed / 255)
    assert (bottom - top, right - left) == (20, 5)  # a narrow stroke stays narrow: aspect kept
    assert framed[:top].max() == framed[bottom:].max() == 0, "outside the box is black"
    # centre of mass moved to (14, 14) by whole pixels, a half rounded up; MNIST's lie in
    # [13.5, 14.5] (mean (13.99, 14.01) over its test set)
    row, col = centre_of_mass(framed.astype(np.float64))
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5


def test_grey_paper_photo_background_at_most_10():
    rng = np.random.default_rng(0)
    mask = seven(112)
    clean = frame_mnist(on_paper(mask))
    near_ink = np.asarray(Image.fromarray(clean).filter(ImageFilter.MaxFilter(5))) > 0
    for noise in (0, 2, 4):  # standard deviation, grey levels of 255
        photo = np.where(mask, 60.0, 180.0) + rng.normal(0, noise, mask.shape)
        framed = frame_mnist(np.clip(np.rint(photo), 0, 255) / 255)
        assert framed[~near_ink].max() <= 10, noise  # the paper (75 once inverted) is black
        assert_framed_like_mnist(framed)
    # the old way (invert, no stretch) left the paper at 75
    assert np.median(fit_unframed(on_paper(mask, 60 / 255, 180 / 255))) == 75


def test_thin_stroke_on_a_large_picture_keeps_full_ink():
    img, draw = paper((600, 600))  # a 2 px pen line, reduced about 20 times
    draw.line([(150, 100), (450, 100), (250, 520)], fill=0, width=2)
    framed = frame_mnist(np.asarray(img, np.float32) / 255)
    assert_framed_like_mnist(framed)


@pytest.mark.parametrize("size", [(32, 32), (56, 56), (20, 40), (40, 20)])
def test_other_input_sizes_keep_mnists_proportions(size):
    framed = frame_mnist(on_paper(seven()), size)
    h, w = size
    box_h, box_w = round(20 * h / 28), round(20 * w / 28)
    top, bottom, left, right = ink_bounding_box(framed / 255)
    assert bottom - top <= box_h and right - left <= box_w
    assert (bottom - top >= box_h - 1) or (right - left >= box_w - 1), "fills the box one way"
    row, col = centre_of_mass(framed.astype(np.float64))
    assert abs(row - h / 2) <= 0.5 and abs(col - w / 2) <= 0.5


def test_mnist_like_digit_is_almost_unchanged():
    # a digit already framed (20 px tall, centre of mass at (14, 14)) is not resampled nor moved
    image = np.zeros((28, 28), np.float32)
    image[4:24, 13:16] = 1.0
    image[23, 16:19] = 1.0
    row, col = centre_of_mass(image)
    assert abs(row - 14) < 0.5 and abs(col - 14) < 0.5
    np.testing.assert_array_equal(frame_mnist(image), np.rint(image * 255).astype(np.uint8))


def test_heavy_top_is_not_pushed_out_of_the_frame():
    # a big blob on a long thin tail: its centre of mass is near the top of its box, so centring
    # it would push the tail out; it is moved only as far as the frame allows
    grey = np.zeros((200, 40), np.float32)
    grey[:40, :] = 1.0
    grey[40:, 18:22] = 1.0
    framed = frame_mnist(grey)
    top, bottom, _, _ = ink_bounding_box(framed / 255, threshold=0)  # the faint tail too
    assert (top, bottom) == (8, 28)
    assert centre_of_mass(framed.astype(np.float64))[0] < 13.5  # as far as it could go


# -- no ink ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", [0.0, 1.0, 0.5, 37 / 255])
def test_uniform_picture_is_refused(level):
    with pytest.raises(
        NoInkError,
        match=r"^no ink found: the picture is uniform \(every pixel "
        rf"{round(255 * level)} of 255\)",
    ):
        frame_mnist(np.full((40, 30), level, np.float32))


def test_blank_paper_with_faint_marks_or_noise_is_refused():
    faint = np.full((64, 64), 250 / 255, np.float32)
    faint[30:34, 10:50] = 235 / 255  # 15 grey levels: below the 26 a stroke needs
    with pytest.raises(
        NoInkError, match="no ink found: nothing stands out of the paper by 26 of 255 or more"
    ):
        frame_mnist(faint)
    noisy = np.random.default_rng(1).normal(180, 4, (120, 120)) / 255
    with pytest.raises(NoInkError, match="no ink found"):
        frame_mnist(np.clip(noisy, 0, 1))
    assert issubclass(NoInkError, DataError)


def test_faint_but_real_ink_is_found():
    pencil = on_paper(seven(), ink=200 / 255, paper_level=245 / 255)  # 45 levels of contrast
    assert_framed_like_mnist(frame_mnist(pencil))


# -- the steps -------------------------------------------------------------------------------------
def test_border_is_each_outer_pixel_once():
    grey = np.arange(20, dtype=np.float32).reshape(4, 5)
    assert sorted(border(grey)) == [0, 1, 2, 3, 4, 5, 9, 10, 14, 15, 16, 17, 18, 19]
    assert sorted(border(grey[:2])) == list(range(10))


@pytest.mark.parametrize(
    "paper_level, ink, inverted",
    [
        (1.0, 0.0, True),  # dark on white
        (0.0, 1.0, False),  # MNIST's own
        (
            100 / 255,
            20 / 255,
            True,
        ),  # black ink on dark grey paper: still paper (a fixed 127 fails)
        (150 / 255, 230 / 255, False),  # light ink on mid-grey
    ],
)
def test_light_on_dark(paper_level, ink, inverted):
    grey = on_paper(seven(56), ink, paper_level)
    expected = 1 - grey if inverted else grey
    np.testing.assert_array_equal(light_on_dark(grey), expected)


def test_polarity_of_a_tight_crop_of_a_thin_stroke():
    # light stroke cropped tight: its border is mostly the stroke's faint edges, yet its
    # polarity is kept (the border's median is nearer the dark end than the bright one)
    stroke = np.zeros((20, 5), np.float32)
    stroke[:, 0] = stroke[:, 4] = 0.1
    stroke[:, 1] = stroke[:, 3] = 0.5
    stroke[:, 2] = 1.0
    np.testing.assert_array_equal(light_on_dark(stroke), stroke)
    np.testing.assert_allclose(light_on_dark(1 - stroke), stroke, atol=1e-6)


def test_stretch_contrast_values():
    grey = np.full((10, 10), 75 / 255, np.float32)
    grey[3:7, 4:6] = 195 / 255
    grey[5, 5] = 135 / 255
    out = stretch_contrast(grey)
    assert out.dtype == np.float32
    assert out[0, 0] == 0 and out[3, 4] == 1 and out[5, 5] == pytest.approx(0.5, abs=1e-6)


def test_ink_bounding_box_and_centre_of_mass():
    grey = np.zeros((6, 8), np.float32)
    grey[1, 2] = 1.0
    grey[4, 6] = 0.2  # below the threshold: not ink, but it has mass
    grey[3, 5] = 0.5
    assert ink_bounding_box(grey) == (1, 4, 2, 6)
    assert ink_bounding_box(grey, threshold=0.1) == (1, 5, 2, 7)
    rows, cols = np.indices(grey.shape)
    expected = ((grey * rows).sum() / grey.sum(), (grey * cols).sum() / grey.sum())
    assert centre_of_mass(grey) == pytest.approx(expected)
    assert centre_of_mass(np.zeros((28, 28))) == (13.5, 13.5)
    with pytest.raises(NoInkError, match="no ink found"):
        ink_bounding_box(np.full((4, 4), 0.25, np.float32))


# -- choices and bad input -------------------------------------------------------------------------
def test_to_mnist_chooses_the_framing():
    grey = on_paper(thick_one(56))
    assert FRAMINGS == ("mnist", "none")
    np.testing.assert_array_equal(to_mnist(grey), frame_mnist(grey))
    np.testing.assert_array_equal(to_mnist(grey, framing="none"), fit_unframed(grey))
    with pytest.raises(ValueError, match="framing must be one of mnist, none, got 'center'"):
        to_mnist(grey, framing="center")


def test_fit_unframed_keeps_a_28x28_picture_exactly():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (28, 28)).astype(np.uint8)
    image[0] = image[-1] = image[:, 0] = image[:, -1] = 0  # a dark border: no inversion
    np.testing.assert_array_equal(fit_unframed(image / np.float32(255)), image)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((3, 4, 5)), r"expected a non-empty \(H, W\) picture, got shape \(3, 4, 5\)"),
        (np.zeros((0, 4)), r"got shape \(0, 4\)"),
        (np.full((4, 4), np.nan), "NaN or infinite"),
        (np.array([["a", "b"]]), "dtype <U1"),
    ],
)
def test_bad_pictures_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        frame_mnist(bad)


@pytest.mark.parametrize("size", [(1, 28), (28,), None, (28, 28, 1), ("a", 28)])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError, match="size must be"):
        frame_mnist(on_paper(seven(56)), size)
