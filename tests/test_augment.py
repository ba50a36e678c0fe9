"""Data augmentation: shifts and small rotations of uint8 batches, seeded and vectorised; the
`Augment` description (round trip, checks, old checkpoints). Crops, flips and erasing:
test_augment_crop_flip_erase.py."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from stablecnn.data.augment import (
    Augment,
    augment_batch,
    elastic_displacements,
    gaussian_smoothing_matrix,
    shift_rotate,
)
from stablecnn.errors import ConfigError, DataError


def batch(b=5, h=9, w=9, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, h, w), dtype=np.uint8)


def naive_shift(image, dy, dx):
    """Move the content down by dy and right by dx, filling with 0 (one image, plain loops)."""
    h, w = image.shape
    out = np.zeros_like(image)
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[y, x] = image[y - dy, x - dx]
    return out


@pytest.mark.parametrize("h, w", [(9, 9), (6, 11)])
def test_shift_moves_pixels_unchanged_with_zero_fill(h, w):
    images = batch(4, h, w)
    shifts = np.array([[0, 0], [1, 2], [-2, 1], [3, -3]])
    out = shift_rotate(images, shifts, np.zeros(4))
    assert out.dtype == np.uint8 and out.shape == images.shape
    for k, (dy, dx) in enumerate(shifts):
        np.testing.assert_array_equal(out[k], naive_shift(images[k], dy, dx))


@pytest.mark.parametrize("size", [7, 8])
def test_quarter_turns_match_rot90(size):
    images = batch(3, size, size)
    for turns in (1, 2, 3, -1):
        out = shift_rotate(images, np.zeros((3, 2)), np.full(3, 90.0 * turns))
        np.testing.assert_array_equal(out, np.rot90(images, turns, axes=(1, 2)))


def test_a_small_rotation_turns_a_bar_about_the_centre():
    image = np.zeros((1, 21, 21), np.uint8)
    image[0, 10, :] = 255  # a horizontal bar through the centre
    out = shift_rotate(image, np.zeros((1, 2)), np.array([10.0]))[0]
    assert out[10, 10] == 255  # the centre stays
    # counter-clockwise: the right end rises (smaller row), the left end drops
    rows = np.arange(21)
    right = (rows * out[:, 18]).sum() / out[:, 18].sum()
    left = (rows * out[:, 2]).sum() / out[:, 2].sum()
    assert right == pytest.approx(10 - 8 * np.tan(np.deg2rad(10)), abs=0.3)
    assert left == pytest.approx(10 + 8 * np.tan(np.deg2rad(10)), abs=0.3)


def test_augment_batch_is_seeded_and_leaves_its_input_alone():
    images = batch(16, 28, 28)
    before = images.copy()
    a = augment_batch(images, np.random.default_rng([0, 1, 2, 1]))
    b = augment_batch(images, np.random.default_rng([0, 1, 2, 1]))
    c = augment_batch(images, np.random.default_rng([0, 1, 3, 1]))
    np.testing.assert_array_equal(images, before)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == images.shape
    # each image gets its own draw: same image, different results
    same = np.repeat(images[:1], 16, axis=0)
    out = augment_batch(same, np.random.default_rng(0))
    assert len({o.tobytes() for o in out}) > 8


def test_augment_batch_draws_within_its_bounds():
    # a single bright pixel at the centre: a shift moves it by at most max_shift, a rotation
    # about the centre does not move it
    images = np.zeros((200, 15, 15), np.uint8)
    images[:, 7, 7] = 255
    out = augment_batch(images, np.random.default_rng(1), max_shift=2, max_degrees=0)
    ys, xs = np.nonzero(out.max(axis=0))
    assert ys.min() == 5 and ys.max() == 9 and xs.min() == 5 and xs.max() == 9
    assert (out.reshape(200, -1).max(axis=1) == 255).all()  # integer shifts: no blur
    unchanged = augment_batch(images, np.random.default_rng(1), max_shift=0, max_degrees=0)
    np.testing.assert_array_equal(unchanged, images)


def test_rotation_keeps_the_ink_roughly():
    images = np.zeros((50, 28, 28), np.uint8)
    images[:, 8:20, 12:16] = 200  # a stroke well inside the frame
    out = augment_batch(images, np.random.default_rng(2), max_shift=2, max_degrees=10)
    ink = out.reshape(50, -1).sum(axis=1) / images.reshape(50, -1).sum(axis=1)
    assert np.all(np.abs(ink - 1) < 0.05)


def test_a_colour_batch_gets_the_same_map_on_every_channel():
    colour = np.random.default_rng(3).integers(0, 256, (6, 3, 10, 13), dtype=np.uint8)
    shifts = np.array([[0, 0], [1, -2], [-3, 1], [2, 2], [0, 1], [1, 0]])
    degrees = np.array([0.0, 7.0, -12.0, 90.0, 33.0, -5.0])
    out = shift_rotate(colour, shifts, degrees)
    assert out.dtype == np.uint8 and out.shape == colour.shape
    for c in range(3):
        np.testing.assert_array_equal(out[:, c], shift_rotate(colour[:, c], shifts, degrees))
    a = augment_batch(colour, np.random.default_rng(4))
    for c in range(3):  # the draws depend on B only: one map for all channels
        np.testing.assert_array_equal(
            a[:, c], augment_batch(colour[:, c], np.random.default_rng(4))
        )


def digest(images):
    return hashlib.sha256(images.tobytes()).hexdigest()


def test_shift_rotate_gives_the_bytes_it_gave_before_colour_and_the_new_steps():
    """Pinned digests of augment_batch's output computed with the module as it was before the
    colour batches and the crop, flip and erasing steps (commit cc9eaf0): a checkpoint's
    augmentation must replay bit for bit, so these may never change."""
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    old = {"max_shift": 2, "max_degrees": 10.0}  # what a checkpoint stored before
    for seed, expected in (
        ([0, 1, 2, 1], "16e86eb70550f3779c1c412c369b4c131e750d15e8f4003d38e4bd774b80b92c"),
        ([3, 0, 5, 1], "4157c6fc63a58d1d0c198f02af5b8c261962770bbfe2df79bb0c169805c4aa28"),
    ):
        assert digest(augment_batch(x, np.random.default_rng(seed), 2, 10.0)) == expected
        assert digest(Augment.from_dict(old)(x, np.random.default_rng(seed))) == expected
    x = np.random.default_rng(1).integers(0, 256, (5, 6, 11), dtype=np.uint8)
    assert (
        digest(augment_batch(x, np.random.default_rng(7), 3, 25.0))
        == "573f3b23683ed01078ad2cb9d240ed85a38fd49281e4eb8b88da29e5d34ec98c"
    )


def test_bad_batches_are_refused():
    with pytest.raises(DataError, match="uint8"):
        augment_batch(np.zeros((2, 4, 4), np.float32), np.random.default_rng(0))
    with pytest.raises(DataError, match=r"\(B, H, W\) or \(B, C, H, W\), got uint8 \(2, 4\)"):
        augment_batch(np.zeros((2, 4), np.uint8), np.random.default_rng(0))
    with pytest.raises(DataError, match="uint8"):
        Augment(hflip=True)(np.zeros((2, 1, 1, 4, 4), np.uint8), np.random.default_rng(0))
    with pytest.raises(DataError, match="shifts"):
        shift_rotate(np.zeros((2, 4, 4), np.uint8), np.zeros((3, 2)), np.zeros(2))


def test_augment_config_round_trips_and_checks_its_values():
    aug = Augment(3, 15)
    assert aug == Augment.from_dict(aug.to_dict())
    assert aug.to_dict() == {
        "max_shift": 3,
        "max_degrees": 15.0,
        "random_crop": 0,
        "hflip": False,
        "random_erasing": 0.0,
        "erasing_scale": [0.02, 0.33],
        "erasing_ratio": [0.3, 3.3],
        "max_scale": 0.0,
        "elastic": [0.0, 0.0],
    }
    # an old checkpoint's description: the new steps off
    assert Augment.from_dict({"max_shift": np.int64(3), "max_degrees": np.float64(15)}) == aug
    assert Augment.parse("3,15") == aug
    full = Augment(1, 5.0, 4, True, 0.25, erasing_ratio=(0.5, 2), max_scale=0.1, elastic=(34, 4))
    loaded = {  # as a .npz's JSON and NumPy scalars give it back
        k: (np.bool_(v) if isinstance(v, bool) else v) for k, v in full.to_dict().items()
    }
    assert Augment.from_dict(loaded) == full
    assert repr(Augment(3, 15)) == "Augment(max_shift=3, max_degrees=15.0)"
    assert eval(repr(full)) == full
    images = batch(4, 10, 10)
    np.testing.assert_array_equal(
        aug(images, np.random.default_rng(5)),
        augment_batch(images, np.random.default_rng(5), 3, 15),
    )
    for bad, name in (
        (dict(max_shift=-1), "max_shift"),
        (dict(max_shift=1.5), "max_shift"),
        (dict(max_degrees=200), "max_degrees"),
        (dict(max_degrees=float("nan")), "max_degrees"),
        (dict(random_crop=-4), "random_crop"),
        (dict(random_crop=True), "random_crop"),
        (dict(hflip=1), "hflip"),
        (dict(random_erasing=1.5), "random_erasing"),
        (dict(random_erasing=float("nan")), "random_erasing"),
        (dict(erasing_scale=(0.5, 0.2)), "erasing_scale"),
        (dict(erasing_scale=(0.0, 0.2)), "erasing_scale"),
        (dict(erasing_scale=(0.1, 1.5)), "erasing_scale"),
        (dict(erasing_scale=0.3), "erasing_scale"),
        (dict(erasing_ratio=(0.3, float("inf"))), "erasing_ratio"),
        (dict(erasing_ratio=("a", 2)), "erasing_ratio"),
        (dict(max_scale=1.0), "max_scale"),
        (dict(max_scale=-0.1), "max_scale"),
        (dict(max_scale=float("nan")), "max_scale"),
        (dict(max_scale="0.1"), "max_scale"),
        (dict(elastic=(34, 0)), "elastic"),
        (dict(elastic=(0, 4)), "elastic"),
        (dict(elastic=(-1, 4)), "elastic"),
        (dict(elastic=(34, float("inf"))), "elastic"),
        (dict(elastic=34), "elastic"),
        (dict(elastic=(34, 4, 1)), "elastic"),
        (dict(elastic=("34", 4)), "elastic"),
        (dict(elastic=(34, 1001)), "elastic"),
    ):
        with pytest.raises(ValueError, match=name):
            Augment(**bad)
    for bad in (
        {"max_shift": 2},
        {"max_shift": 2.5, "max_degrees": 1},
        {"max_shift": 2, "max_degrees": 1, "random_crop": 1.5},
        {"max_shift": 2, "max_degrees": 1, "vflip": True},  # a field this version does not know
    ):
        with pytest.raises(ValueError, match="not an augmentation"):
            Augment.from_dict(bad)
    for text, why in (
        ("2", "(two numbers, separated by a comma)"),
        ("1.5,10", "(SHIFT '1.5' is not a whole number of pixels)"),
        ("2,x", "(DEGREES 'x' is not a number)"),
        ("-1,10", "(max_shift must be an int >= 0, got -1)"),
    ):
        with pytest.raises(ValueError) as caught:
            Augment.parse(text)
        assert str(caught.value) == (
            f"augmentation must be SHIFT,DEGREES such as 2,10, got {text!r} {why}"
        )


def test_all_off_is_the_identity_and_draws_nothing():
    images = batch(4, 7, 7)
    rng = np.random.default_rng(0)
    out = Augment()(images, rng)
    np.testing.assert_array_equal(out, images)
    assert out is not images  # a new array, as every step gives
    assert rng.random() == np.random.default_rng(0).random()  # the generator untouched


def naive_affine(image, dy, dx, degrees, scale, field=None):
    """The definition of shift_rotate for one grey image, pixel by pixel in plain Python: the
    source of output pixel p is R(-theta) (p - c - t) / s + c + e(p), read bilinearly, 0
    outside (``field``: the (2, H, W) displacements e, or None)."""
    h, w = image.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    th = np.deg2rad(degrees)
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            oy, ox = y - cy - dy, x - cx - dx
            sy = (np.cos(th) * oy + np.sin(th) * ox) / scale + cy
            sx = (-np.sin(th) * oy + np.cos(th) * ox) / scale + cx
            if field is not None:
                sy, sx = sy + field[0, y, x], sx + field[1, y, x]
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[y, x] += wy * wx * float(image[yy, xx])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_shift_rotate_scale_matches_its_pixel_by_pixel_definition():
    images = batch(5, 11, 8, seed=6)
    shifts = np.array([[0, 0], [1, -2], [0, 0], [-1, 1], [2, 0]])
    degrees = np.array([0.0, 7.0, 0.0, -12.0, 30.0])
    scales = np.array([1.0, 1.1, 0.8, 0.93, 1.25])
    out = shift_rotate(images, shifts, degrees, scales)
    for k in range(5):
        np.testing.assert_array_equal(
            out[k], naive_affine(images[k], *shifts[k], degrees[k], scales[k])
        )
    # a scale of 1 is the shift and rotation alone, bit for bit
    np.testing.assert_array_equal(
        shift_rotate(images, shifts, degrees, np.ones(5)), shift_rotate(images, shifts, degrees)
    )


def test_a_scale_enlarges_or_shrinks_a_square_about_the_centre():
    image = np.zeros((1, 21, 21), np.uint8)
    image[0, 8:13, 8:13] = 255  # 5 x 5 at the centre (pixel 10)
    big = shift_rotate(image, np.zeros((1, 2)), np.zeros(1), np.array([2.0]))[0]
    small = shift_rotate(image, np.zeros((1, 2)), np.zeros(1), np.array([0.5]))[0]
    assert big[10, 10] == 255 and small[10, 10] == 255  # the centre stays
    # rows 8-12 at scale 2: output row y reads source row (y - 10) / 2 + 10, so rows 6-14 read
    # inside the square, rows 5 and 15 half inside (bilinear edges); at 1/2, rows 9-11
    any_ink = np.nonzero(big.max(axis=1))[0]
    full = np.nonzero(big[:, 10] == 255)[0]
    assert (full.min(), full.max(), any_ink.min(), any_ink.max()) == (6, 14, 5, 15)
    assert big[5, 10] == big[15, 10] == 128
    np.testing.assert_array_equal(np.nonzero(small[:, 10])[0], [9, 10, 11])
    ink = big.sum(dtype=np.int64) / image.sum(dtype=np.int64)
    assert 3 < ink < 4.5  # the area grows by about s**2 = 4


def test_scaling_draws_after_the_angles_and_only_when_on():
    images = batch(16, 28, 28)
    with_scale = Augment(2, 10.0, max_scale=0.2)(images, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    shifts = rng.integers(-2, 3, size=(16, 2))
    degrees = rng.uniform(-10, 10, size=16)
    scales = rng.uniform(0.8, 1.2, size=16)
    np.testing.assert_array_equal(with_scale, shift_rotate(images, shifts, degrees, scales))
    # without scaling, nothing more is drawn: the bytes a run drew before scaling existed
    rng = np.random.default_rng(3)
    Augment(2, 10.0)(images, rng)
    probe = np.random.default_rng(3)
    probe.integers(-2, 3, size=(16, 2)), probe.uniform(-10, 10, size=16)
    assert rng.random() == probe.random()
    # scaling alone (no shift or angle) still draws in the same order
    only = Augment(max_scale=0.2)(images, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    shifts, degrees = rng.integers(0, 1, size=(16, 2)), rng.uniform(0, 0, size=16)
    scales = rng.uniform(0.8, 1.2, size=16)
    assert not shifts.any() and not degrees.any()
    np.testing.assert_array_equal(only, shift_rotate(images, shifts, degrees, scales))
    assert not np.array_equal(only, images)


def test_bad_scales_are_refused():
    images = batch(2, 6, 6)
    for bad in ([1.0, 0.0], [1.0, -1.0], [np.inf, 1.0], [np.nan, 1.0]):
        with pytest.raises(DataError, match="scales must be finite and above 0"):
            shift_rotate(images, np.zeros((2, 2)), np.zeros(2), np.array(bad))
    with pytest.raises(DataError, match="scales"):
        shift_rotate(images, np.zeros((2, 2)), np.zeros(2), np.ones(3))


def naive_smoothing(values, sigma):
    """A Gaussian of std sigma, truncated at radius int(4 sigma + 0.5) and normalised to sum 1,
    convolved with a 1-D signal, 0 outside it: a plain double loop."""
    n, radius = len(values), int(4 * sigma + 0.5)
    weights = [np.exp(-0.5 * (k / sigma) ** 2) for k in range(-radius, radius + 1)]
    total = sum(weights)
    out = np.zeros(n)
    for i in range(n):
        for k in range(-radius, radius + 1):
            if 0 <= i - k < n:
                out[i] += weights[k + radius] / total * values[i - k]
    return out


@pytest.mark.parametrize("n, sigma", [(28, 4.0), (9, 0.7), (5, 3.0)])
def test_the_smoothing_matrix_is_a_truncated_gaussian_with_zero_outside(n, sigma):
    values = np.random.default_rng(2).uniform(-1, 1, n)
    smoothing = gaussian_smoothing_matrix(n, sigma)
    expected = naive_smoothing(values, sigma)
    np.testing.assert_allclose(smoothing @ values, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(smoothing, smoothing.T)  # symmetric kernel
    radius, middle = int(4 * sigma + 0.5), n // 2
    whole = middle - radius >= 0 and middle + radius < n  # the whole kernel inside the signal
    assert smoothing[middle].sum() == pytest.approx(1.0) if whole else smoothing[middle].sum() < 1


def test_elastic_displacements_smooth_the_noise_along_both_axes():
    noise = np.random.default_rng(4).uniform(-1, 1, (2, 2, 7, 10))
    field = elastic_displacements(noise, 5.0, 1.5)
    for b in range(2):
        for axis in range(2):
            rows = np.array([naive_smoothing(row, 1.5) for row in noise[b, axis].T]).T
            both = np.array([naive_smoothing(row, 1.5) for row in rows])
            np.testing.assert_allclose(field[b, axis], 5.0 * both, rtol=0, atol=1e-13)
    # the paper's setting on 28 x 28: smooth moves of about 1.4 pixels
    field = elastic_displacements(np.random.default_rng(5).uniform(-1, 1, (64, 2, 28, 28)), 34, 4)
    centre = field[:, :, 8:20, 8:20]
    assert 1.1 < centre.std() < 1.6
    assert np.abs(np.diff(centre, axis=3)).mean() < 0.2 * np.abs(centre).mean()


def test_elastic_distortion_matches_its_pixel_by_pixel_definition():
    images = batch(4, 10, 9, seed=8)
    shifts = np.array([[0, 0], [1, -1], [0, 2], [-1, 0]])
    degrees = np.array([0.0, 6.0, -9.0, 0.0])
    scales = np.array([1.0, 1.05, 0.9, 1.0])
    field = elastic_displacements(np.random.default_rng(9).uniform(-1, 1, (4, 2, 10, 9)), 8, 1.2)
    out = shift_rotate(images, shifts, degrees, scales, field)
    for k in range(4):
        np.testing.assert_array_equal(
            out[k], naive_affine(images[k], *shifts[k], degrees[k], scales[k], field[k])
        )
    # a constant whole-pixel displacement e moves the content by -e, pixels unchanged
    constant = np.zeros((4, 2, 10, 9))
    constant[:, 0], constant[:, 1] = -1.0, 2.0
    out = shift_rotate(images, np.zeros((4, 2)), np.zeros(4), None, constant)
    for k in range(4):
        np.testing.assert_array_equal(out[k], naive_shift(images[k], 1, -2))


def test_elastic_noise_is_drawn_last_and_only_when_on():
    images = batch(16, 28, 28)
    out = Augment(2, 10.0, max_scale=0.1, elastic=(34, 4))(images, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    shifts = rng.integers(-2, 3, size=(16, 2))
    degrees = rng.uniform(-10, 10, size=16)
    scales = rng.uniform(0.9, 1.1, size=16)
    field = elastic_displacements(rng.uniform(-1, 1, (16, 2, 28, 28)), 34, 4)
    np.testing.assert_array_equal(out, shift_rotate(images, shifts, degrees, scales, field))
    # without zoom: straight after the angles; and elastic alone still draws the empty steps
    out = Augment(elastic=(34, 4))(images, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    shifts, degrees = rng.integers(0, 1, size=(16, 2)), rng.uniform(0, 0, size=16)
    field = elastic_displacements(rng.uniform(-1, 1, (16, 2, 28, 28)), 34, 4)
    np.testing.assert_array_equal(out, shift_rotate(images, shifts, degrees, None, field))
    assert not np.array_equal(out, images)
    # off: nothing drawn beyond the steps that are on
    rng = np.random.default_rng(3)
    Augment(2, 10.0, max_scale=0.1)(images, rng)
    probe = np.random.default_rng(3)
    probe.integers(-2, 3, size=(16, 2)), probe.uniform(-10, 10, 16), probe.uniform(0.9, 1.1, 16)
    assert rng.random() == probe.random()


def test_bad_displacements_and_smoothing_are_refused():
    images = batch(2, 6, 6)
    for bad in (np.zeros((2, 2, 6, 5)), np.zeros((2, 6, 6)), np.full((2, 2, 6, 6), np.nan)):
        with pytest.raises(DataError, match=r"displacements must be finite \(B, 2, H, W\)"):
            shift_rotate(images, np.zeros((2, 2)), np.zeros(2), None, bad)
    with pytest.raises(DataError, match="elastic noise must be"):
        elastic_displacements(np.zeros((2, 6, 6)), 34, 4)
    for sigma in (0, -1, float("nan"), float("inf"), 1e9):
        with pytest.raises(ConfigError, match="elastic sigma"):
            gaussian_smoothing_matrix(6, sigma)
    with pytest.raises(ConfigError, match="elastic alpha"):
        elastic_displacements(np.zeros((1, 2, 6, 6)), -1, 4)


def test_a_bad_elastic_value_in_a_stored_description_is_named_not_converted():
    """from_dict turns NumPy scalars into floats but leaves strings and booleans for the check,
    whose message names the field (not a dump of the whole description)."""
    base = Augment().to_dict()
    loaded = {**base, "elastic": [np.float32(20), np.int64(3)]}  # as a .npz gives them back
    assert Augment.from_dict(loaded).elastic == (20.0, 3.0)
    for bad in (["20", "3"], [True, 3], 20.0, "x", [20.0]):
        with pytest.raises(ConfigError, match=r"^elastic must be two numbers \(alpha, sigma\)"):
            Augment.from_dict({**base, "elastic": bad})
