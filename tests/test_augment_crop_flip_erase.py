"""Random crops with padding, horizontal flips and random erasing: each vectorised step held to a
readable loop definition, the properties that can fail, and Augment's documented order of draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stablecnn.data.augment import (
    ERASING_ATTEMPTS,
    Augment,
    augment_batch,
    erase,
    erasing_boxes,
    flip_horizontal,
    pad_crop,
    shift_rotate,
)
from stablecnn.errors import ConfigError, DataError


def batch(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# -- readable definitions: one image (C, H, W), plain loops --------------------------------------
def naive_pad_crop(image, padding, oy, ox):
    """Pad with ``padding`` zeros on every side, take the H x W window whose corner is (oy, ox)."""
    c, h, w = image.shape
    padded = np.zeros((c, h + 2 * padding, w + 2 * padding), image.dtype)
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                padded[ch, y + padding, x + padding] = image[ch, y, x]
    out = np.zeros_like(image)
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                out[ch, y, x] = padded[ch, y + oy, x + ox]
    return out


def naive_flip(image):
    """Column x of the output is column W - 1 - x of the input."""
    out = np.zeros_like(image)
    w = image.shape[-1]
    for x in range(w):
        out[..., x] = image[..., w - 1 - x]
    return out


def naive_erase(image, top, left, height, width):
    """Every pixel of the rectangle, in every channel, set to 0."""
    out = image.copy()
    for y in range(top, min(top + height, image.shape[1])):
        for x in range(left, min(left + width, image.shape[2])):
            out[:, y, x] = 0
    return out


def naive_erasing_box(u_erase, scales, log_ratios, u_place, h, w, p):
    """Zhong et al. 2017, Algorithm 1, as torchvision's RandomErasing.get_params, for one image
    from its draws: erase with probability p; try up to 10 (area, aspect ratio) pairs; place the
    first that fits uniformly inside the image."""
    if not u_erase < p:
        return 0, 0, 0, 0
    for s, log_r in zip(scales, log_ratios, strict=True):
        area = h * w * s
        r = math.exp(log_r)
        eh, ew = int(round(math.sqrt(area * r))), int(round(math.sqrt(area / r)))
        if eh < h and ew < w:
            return (
                math.floor(u_place[0] * (h - eh + 1)),
                math.floor(u_place[1] * (w - ew + 1)),
                eh,
                ew,
            )
    return 0, 0, 0, 0


# -- each step against its definition ------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 7, 9), (4, 3, 8, 6)], ids=["gray", "colour"])
@pytest.mark.parametrize("padding", [0, 1, 3])
def test_pad_crop_matches_its_loop_definition(shape, padding):
    images = batch(*shape)
    offsets = np.random.default_rng(1).integers(0, 2 * padding + 1, (shape[0], 2))
    offsets[0] = (0, 2 * padding)  # both extreme corners
    out = pad_crop(images, padding, offsets)
    assert out.dtype == np.uint8 and out.shape == images.shape
    as_chw = images.reshape(shape[0], -1, *shape[-2:])
    for k, (oy, ox) in enumerate(offsets):
        expected = naive_pad_crop(as_chw[k], padding, oy, ox)
        np.testing.assert_array_equal(out[k].reshape(expected.shape), expected, err_msg=str(k))


def test_pad_crop_is_the_identity_without_padding_or_at_the_centre_and_a_shift_otherwise():
    images = batch(6, 2, 9, 7)
    np.testing.assert_array_equal(pad_crop(images, 0, np.zeros((6, 2), int)), images)
    np.testing.assert_array_equal(pad_crop(images, 4, np.full((6, 2), 4)), images)
    offsets = np.random.default_rng(2).integers(0, 9, (6, 2))
    np.testing.assert_array_equal(  # offset (oy, ox) is the shift (P - oy, P - ox), zero filled
        pad_crop(images, 4, offsets), shift_rotate(images, 4 - offsets, np.zeros(6))
    )


@pytest.mark.parametrize("shape", [(6, 5, 8), (6, 3, 4, 7)], ids=["gray", "colour"])
def test_flip_matches_its_loop_definition_and_twice_is_the_identity(shape):
    images = batch(*shape)
    flip = np.array([True, False, True, True, False, False])
    out = flip_horizontal(images, flip)
    assert out.dtype == np.uint8 and out.shape == images.shape
    for k in range(6):
        np.testing.assert_array_equal(out[k], naive_flip(images[k]) if flip[k] else images[k])
    np.testing.assert_array_equal(flip_horizontal(out, flip), images)
    assert not np.shares_memory(out, images)


@pytest.mark.parametrize("shape", [(5, 9, 8), (5, 3, 6, 10)], ids=["gray", "colour"])
def test_erase_matches_its_loop_definition(shape):
    images = batch(*shape)
    h, w = shape[-2:]
    boxes = np.array(
        [[0, 0, 0, 0], [1, 2, 3, 4], [0, 0, h - 1, w - 1], [h - 2, w - 3, 5, 9], [2, 1, 1, 1]]
    )
    out = erase(images, boxes)
    assert out.dtype == np.uint8 and out.shape == images.shape
    as_chw = images.reshape(shape[0], -1, h, w)
    for k, box in enumerate(boxes):  # the fourth box runs past the edge: clipped
        expected = naive_erase(as_chw[k], *box)
        np.testing.assert_array_equal(out[k].reshape(expected.shape), expected, err_msg=str(box))


@pytest.mark.parametrize(
    "h, w, p, scale, ratio",
    [
        (32, 32, 0.5, (0.02, 0.33), (0.3, 3.3)),
        (7, 11, 0.8, (0.02, 0.33), (0.3, 3.3)),
        (4, 4, 1.0, (0.3, 0.9), (0.2, 5.0)),  # large boxes in a small image: many misses
    ],
)
def test_erasing_boxes_match_the_algorithm_written_per_image(h, w, p, scale, ratio):
    b = 300
    boxes = erasing_boxes(np.random.default_rng(5), b, h, w, p, scale, ratio)
    assert boxes.shape == (b, 4) and np.issubdtype(boxes.dtype, np.integer)
    rng = np.random.default_rng(5)  # the documented draws, in the documented order
    u_erase = rng.random(b)
    scales = rng.uniform(scale[0], scale[1], (b, ERASING_ATTEMPTS))
    log_ratios = rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (b, ERASING_ATTEMPTS))
    u_place = rng.random((b, 2))
    expected = [
        naive_erasing_box(u_erase[k], scales[k], log_ratios[k], u_place[k], h, w, p)
        for k in range(b)
    ]
    np.testing.assert_array_equal(boxes, np.array(expected))
    top, left, eh, ew = boxes.T
    assert np.all((top + eh <= h) & (left + ew <= w) & (eh < h) & (ew < w))  # inside the image


def test_the_erased_fraction_follows_p_scale_and_ratio():
    b, h, w, p = 4000, 32, 32, 0.5
    images = np.full((b, h, w), 255, np.uint8)
    boxes = erasing_boxes(np.random.default_rng(8), b, h, w, p)
    out = erase(images, boxes)
    top, left, eh, ew = boxes.T
    zeros = (out == 0).sum(axis=(1, 2))
    np.testing.assert_array_equal(zeros, eh * ew)  # exactly the box, set to 0
    erased = eh * ew > 0
    # each image erased with probability p (4 standard deviations of a binomial)
    assert abs(erased.mean() - p) < 4 * math.sqrt(p * (1 - p) / b)
    # each box is round(sqrt(s A r)) x round(sqrt(s A / r)) for s in [0.02, 0.33] and r in
    # [0.3, 3.3]: bounds on its sides that rounding by at most half a pixel keeps
    eh, ew = eh[erased].astype(float), ew[erased].astype(float)
    assert np.all((eh - 0.5) * (ew - 0.5) <= 0.33 * h * w)
    assert np.all((eh + 0.5) * (ew + 0.5) >= 0.02 * h * w)
    assert np.all((eh - 0.5) / (ew + 0.5) <= 3.3) and np.all((eh + 0.5) / (ew - 0.5) >= 0.3)
    # the area is spread over the range, not stuck at one end
    frac = eh * ew / (h * w)
    assert frac.min() < 0.04 and frac.max() > 0.28
    none = erasing_boxes(np.random.default_rng(8), b, h, w, 0.0)
    assert not none.any()


# -- Augment: order, determinism, colour ---------------------------------------------------------
FULL = Augment(max_shift=2, max_degrees=10, random_crop=3, hflip=True, random_erasing=0.5)


def test_augment_applies_the_steps_in_the_documented_order_with_the_documented_draws():
    images = batch(16, 3, 12, 10)
    b, _, h, w = images.shape
    rng = np.random.default_rng([4, 1, 7, 1])
    x = augment_batch(images, rng, 2, 10.0)  # 1. shift and rotate
    x = pad_crop(x, 3, rng.integers(0, 7, size=(b, 2)))  # 2. random crop
    x = flip_horizontal(x, rng.random(b) < 0.5)  # 3. horizontal flip
    x = erase(x, erasing_boxes(rng, b, h, w, 0.5))  # 4. random erasing
    np.testing.assert_array_equal(FULL(images, np.random.default_rng([4, 1, 7, 1])), x)
    # a step that is off draws nothing: the crop alone is step 2 on a fresh generator
    rng = np.random.default_rng(9)
    alone = pad_crop(images, 3, rng.integers(0, 7, size=(b, 2)))
    np.testing.assert_array_equal(Augment(random_crop=3)(images, np.random.default_rng(9)), alone)
    rng = np.random.default_rng(9)
    alone = flip_horizontal(images, rng.random(b) < 0.5)
    np.testing.assert_array_equal(Augment(hflip=True)(images, np.random.default_rng(9)), alone)


@pytest.mark.parametrize(
    "aug",
    [FULL, Augment(random_crop=4), Augment(hflip=True), Augment(random_erasing=1.0)],
    ids=["all", "crop", "flip", "erase"],
)
def test_augment_is_seeded_keeps_dtype_and_shape_and_leaves_its_input_alone(aug):
    images = batch(32, 3, 16, 16)
    before = images.copy()
    a = aug(images, np.random.default_rng([0, 1, 2, 1]))
    b = aug(images, np.random.default_rng([0, 1, 2, 1]))
    c = aug(images, np.random.default_rng([0, 1, 3, 1]))
    np.testing.assert_array_equal(images, before)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == images.shape
    same = np.repeat(images[:1], 32, axis=0)  # each image gets its own draw
    assert len({o.tobytes() for o in aug(same, np.random.default_rng(0))}) > 1


def test_a_colour_batch_gets_the_same_augmentation_on_every_channel():
    colour = batch(20, 3, 14, 14)
    out = FULL(colour, np.random.default_rng(11))
    for c in range(3):
        one = FULL(colour[:, c], np.random.default_rng(11))  # a gray batch: the same draws
        np.testing.assert_array_equal(out[:, c], one)


def test_a_flip_only_moves_pixels_within_their_row_and_erasing_only_writes_zeros():
    images = batch(40, 9, 9)
    flipped = Augment(hflip=True)(images, np.random.default_rng(1))
    np.testing.assert_array_equal(np.sort(flipped, axis=2), np.sort(images, axis=2))
    assert 5 < sum(not np.array_equal(f, i) for f, i in zip(flipped, images, strict=True)) < 35
    erased = Augment(random_erasing=1.0)(images, np.random.default_rng(1))
    changed = erased != images
    assert changed.any() and (erased[changed] == 0).all()


def test_bad_step_arguments_are_refused_by_name():
    images = batch(2, 5, 5)
    with pytest.raises(DataError, match=r"offsets must be integers in \[0, 2\]"):
        pad_crop(images, 1, np.array([[0, 3], [1, 1]]))
    with pytest.raises(DataError, match="offsets"):
        pad_crop(images, 1, np.zeros((3, 2), int))
    with pytest.raises(ConfigError, match="padding"):
        pad_crop(images, -1, np.zeros((2, 2), int))
    with pytest.raises(DataError, match="booleans"):
        flip_horizontal(images, np.array([1, 0]))
    with pytest.raises(DataError, match="boxes"):
        erase(images, np.array([[0, 0, -1, 2], [0, 0, 1, 1]]))
    with pytest.raises(ConfigError, match="random_erasing"):
        erasing_boxes(np.random.default_rng(0), 2, 5, 5, 2.0)
