"""Matrix, Images-for-predict rows: a file that is not an image, a decompression bomb, 16-bit,
RGBA, a directory, a blank or uniform picture (no ink to frame).

``stablecnn predict`` reports each bad file on stderr as ``stablecnn: error: <file>: <why>``,
still predicts the other files, and exits with status 1 when any file failed (2 when the
checkpoint itself is bad). 16-bit and RGBA images are not faults: they give the same answer as
the 8-bit grey image they depict.
"""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stablecnn import cli
from stablecnn.data.pictures import load_image
from stablecnn.errors import DataError
from stablecnn.nn.layers import Flatten, Linear
from stablecnn.nn.model import Sequential


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from stablecnn.training import checkpoint

    path = tmp_path_factory.mktemp("predict") / "checkpoint.npz"
    model = Sequential.from_config(
        Sequential(Flatten(), Linear(784, 10), input_shape=(1, 28, 28)).config(), seed=3
    )
    checkpoint.save(path, model, {"normalizer": {"kind": "unit", "mean": 0.0, "std": 255.0}})
    return path


def digit(mode="L", size=(56, 56)):
    """A dark stroke on white paper, as a user draws it."""
    img = Image.new("L", size, 255)
    ImageDraw.Draw(img).line([(size[0] * 0.45, 8), (size[0] * 0.55, size[1] - 8)], fill=0, width=6)
    return img


def predict(ckpt, capsys, *files):
    code = cli.main(["predict", str(ckpt), *map(str, files), "--json"])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def assert_bad_file_reported(ckpt, capsys, tmp_path, bad, why):
    good = tmp_path / "good.png"
    digit().save(good)
    code, lines, err = predict(ckpt, capsys, bad, good)
    assert code == 1
    assert f"stablecnn: error: {bad}: {why}" in err and "Traceback" not in err, err
    assert "1 of 2 files could not be predicted" in err
    assert len(lines) == 2 and str(good) in lines[1] and '"class"' in lines[1]  # still predicted


def test_predict_not_an_image(ckpt, capsys, tmp_path):
    for name, data in (
        ("notes.png", b"just some text\n"),
        ("noise.jpg", bytes(range(256)) * 4),
        ("empty.png", b""),
    ):
        bad = tmp_path / name
        bad.write_bytes(data)
        assert_bad_file_reported(
            ckpt, capsys, tmp_path, bad, "not an image or .npy array (Pillow cannot identify it)"
        )
    cut = tmp_path / "cut.png"
    digit(size=(300, 300)).save(cut)
    cut.write_bytes(cut.read_bytes()[:120])
    assert_bad_file_reported(ckpt, capsys, tmp_path, cut, "a damaged or truncated PNG (")


def png_declaring(width, height) -> bytes:
    """A valid PNG header declaring ``width x height`` pixels, with a few bytes of data."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_predict_huge_image_decompression_bomb(ckpt, capsys, tmp_path):
    # 60,000 x 60,000 grey = 3.6 GB once decoded, from a file of ~100 bytes
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(60_000, 60_000))
    assert bomb.stat().st_size < 200
    t0 = time.perf_counter()
    assert_bad_file_reported(
        ckpt,
        capsys,
        tmp_path,
        bomb,  # Pillow's own limit, at open
        "refused as a possible decompression bomb (Image size (3600000000 pixels) exceeds limit",
    )
    header_only = tmp_path / "big.png"  # 8,000 x 8,000: under Pillow's limit, over ours
    header_only.write_bytes(png_declaring(8_000, 8_000))
    assert_bad_file_reported(
        ckpt,
        capsys,
        tmp_path,
        header_only,
        "refused, 8000 x 8000 = 64,000,000 pixels is more than the limit "
        "of 50,000,000 (a possible decompression bomb)",
    )
    assert time.perf_counter() - t0 < 10  # refused from the header, nothing decoded
    # a real (tiny) deflate bomb: 8,000 x 8,000 zeros compress to a few kB
    real = tmp_path / "zeros.png"
    Image.new("1", (8_000, 8_000)).save(real)  # 1-bit: 8 MB decoded, a few kB on disk
    assert real.stat().st_size < 100_000
    assert_bad_file_reported(ckpt, capsys, tmp_path, real, "refused, 8000 x 8000 = 64,000,000")


def test_predict_16_bit_image(ckpt, capsys, tmp_path):
    grey8 = np.asarray(digit(), dtype=np.uint16)
    path16 = tmp_path / "digit16.png"
    Image.fromarray((grey8 * 257).astype(np.uint16)).save(path16)  # 0..65535, the same picture
    path8 = tmp_path / "digit8.png"
    digit().save(path8)
    with Image.open(path16) as img:
        assert img.mode in ("I;16", "I")  # really stored as 16-bit
    np.testing.assert_array_equal(load_image(path16), load_image(path8))
    code, lines, err = predict(ckpt, capsys, path16, path8)
    assert code == 0, err
    assert lines[0].replace(str(path16), "X") == lines[1].replace(str(path8), "X")


def test_predict_rgba_image(ckpt, capsys, tmp_path):
    grey = np.asarray(digit())
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    opaque = tmp_path / "opaque.png"
    Image.fromarray(rgba, mode="RGBA").save(opaque)
    ink_only = rgba.copy()
    ink_only[..., 3] = 255 - grey  # transparent paper, opaque ink
    transparent = tmp_path / "transparent.png"
    Image.fromarray(ink_only, mode="RGBA").save(transparent)
    plain = tmp_path / "plain.png"
    digit().save(plain)
    np.testing.assert_array_equal(load_image(opaque), load_image(plain))
    np.testing.assert_array_equal(load_image(transparent), load_image(plain))
    code, lines, err = predict(ckpt, capsys, opaque, transparent, plain)
    assert code == 0, err
    assert len({line.split('"class"')[1] for line in lines}) == 1  # one answer for all three


def test_predict_a_directory(ckpt, capsys, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    digit().save(folder / "inside.png")
    assert_bad_file_reported(
        ckpt, capsys, tmp_path, folder, "is a directory, not an image (pass the files inside it)"
    )
    with pytest.raises(DataError, match="is a directory"):
        load_image(folder)


def test_predict_blank_or_uniform_picture(ckpt, capsys, tmp_path):
    # nothing to frame: refused by name, not predicted (issue 12)
    for name, img in (
        ("white.png", Image.new("L", (300, 200), 255)),
        ("black.jpg", Image.new("L", (64, 64), 0)),
        ("grey.png", Image.new("RGB", (50, 80), (120, 120, 120))),
        ("clear.png", Image.new("RGBA", (90, 90), (0, 0, 0, 0))),
    ):
        bad = tmp_path / name
        img.save(bad)
        assert_bad_file_reported(
            ckpt, capsys, tmp_path, bad, "no ink found: the picture is uniform (every pixel "
        )
    # the same picture is predicted when the framing is off (it is then taken as it is)
    code = cli.main(["predict", str(ckpt), str(tmp_path / "white.png"), "--framing", "none"])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith(f"{tmp_path / 'white.png'}: "), err
