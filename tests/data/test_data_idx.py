"""The IDX reader and writer: round trips, every reported fault, and fuzzing with hypothesis."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stablecnn.data import IdxError, read_idx, read_idx_with_digest, write_idx
from stablecnn.data.cache import atomic_writer
from stablecnn.data.idx import IMAGE_MAGIC, LABEL_MAGIC, check_pair, idx_header
from stablecnn.errors import DataError

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
LABELS = np.array([0, 9, 4], dtype=np.uint8)


def write_bytes(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def image_file_bytes(n=3, rows=28, cols=28, payload=None) -> bytes:
    header = struct.pack(">IIII", IMAGE_MAGIC, n, rows, cols)
    return header + (bytes(n * rows * cols) if payload is None else payload)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_images_round_trip(tmp_path, name):
    write_idx(tmp_path / name, IMAGES)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and back.shape == (3, 28, 28)
    np.testing.assert_array_equal(back, IMAGES)
    assert back.flags.writeable


@pytest.mark.parametrize("name", ["labels-idx1-ubyte", "labels-idx1-ubyte.gz"])
def test_labels_round_trip(tmp_path, name):
    write_idx(tmp_path / name, LABELS)
    np.testing.assert_array_equal(read_idx(tmp_path / name), LABELS)


def test_header_layout_is_big_endian_magic_then_dims(tmp_path):
    write_idx(tmp_path / "x", IMAGES)
    data = (tmp_path / "x").read_bytes()
    assert data[:16] == bytes.fromhex("00000803000000030000001c0000001c")
    assert data[16:] == IMAGES.tobytes()
    assert idx_header(LABELS) == bytes.fromhex("0000080100000003")


def test_gzip_output_is_deterministic_and_sniffed_by_content(tmp_path):
    write_idx(tmp_path / "a.gz", IMAGES)
    write_idx(tmp_path / "b.gz", IMAGES)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    os.rename(tmp_path / "a.gz", tmp_path / "no-suffix")  # gzip found by its magic bytes
    array, digest = read_idx_with_digest(tmp_path / "no-suffix")
    np.testing.assert_array_equal(array, IMAGES)
    import hashlib

    assert digest == hashlib.sha256(idx_header(IMAGES) + IMAGES.tobytes()).hexdigest()


def test_other_image_sizes_only_when_asked(tmp_path):
    path = write_bytes(tmp_path / "f", image_file_bytes(2, 5, 7))
    with pytest.raises(IdxError, match=r"images are 5x7, expected 28x28"):
        read_idx(path)
    assert read_idx(path, image_shape=None).shape == (2, 5, 7)
    assert read_idx(path, image_shape=(5, 7)).shape == (2, 5, 7)


def test_empty_files_of_zero_items_are_valid(tmp_path):
    write_idx(tmp_path / "l", np.zeros(0, np.uint8))
    assert read_idx(tmp_path / "l").shape == (0,)


# --- every fault, named ----------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_wrong_magic(tmp_path, gz):
    path = write_bytes(tmp_path / "bad", b"\x00\x00\x08\x02" + bytes(12), gz)
    with pytest.raises(IdxError, match="wrong magic number 0x00000802") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_wrong_magic_for_text(tmp_path):
    path = write_bytes(tmp_path / "bad.txt", b"hello world, not an IDX file")
    with pytest.raises(IdxError, match="wrong magic"):
        read_idx(path)


@pytest.mark.parametrize("data", [b"", b"\x00\x00", b"\x00\x00\x08\x03\x00\x00\x00\x01\x00"])
def test_truncated_header(tmp_path, data):
    path = write_bytes(tmp_path / "short", data)
    with pytest.raises(IdxError, match="truncated header"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path, gz):
    data = image_file_bytes(3)[:-100]
    path = write_bytes(tmp_path / "cut", data, gz)
    with pytest.raises(IdxError, match=r"truncated payload: .* promises 2352 bytes .* holds 2252"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_bytes(tmp_path, gz):
    path = write_bytes(tmp_path / "long", image_file_bytes(3) + b"\x01" * 5, gz)
    with pytest.raises(IdxError, match="5 trailing byte"):
        read_idx(path)


def test_label_above_nine(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.array([1, 2, 12, 3, 200], np.uint8))
    with pytest.raises(IdxError, match=r"label 12 at index 2 is above 9") as err:
        read_idx(path)
    assert str(path) in str(err.value)
    assert read_idx(path, num_classes=None).max() == 200


def test_image_and_label_counts_differ():
    with pytest.raises(IdxError, match="a holds 3 images but b holds 2 labels"):
        check_pair(IMAGES, LABELS[:2], "a", "b")
    with pytest.raises(IdxError, match="expected a label file"):
        check_pair(IMAGES, IMAGES, "a", "b")
    with pytest.raises(IdxError, match="expected an image file"):
        check_pair(LABELS, LABELS, "a", "b")


def test_corrupt_gzip(tmp_path):
    data = gzip.compress(image_file_bytes(3))
    path = write_bytes(tmp_path / "cut.gz", data[: len(data) // 2])
    with pytest.raises(IdxError, match="gzip data is truncated or corrupt"):
        read_idx(path)
    path = write_bytes(tmp_path / "bad.gz", data[:10] + b"\xff" * 40)
    with pytest.raises(IdxError, match="gzip"):
        read_idx(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="cannot"):
        read_idx(tmp_path)


def test_forged_huge_header_costs_no_memory(tmp_path):
    # 4e9 x 28 x 28 images promised, 10 bytes given: must fail at once, without allocating.
    header = struct.pack(">IIII", IMAGE_MAGIC, 2**32 - 1, 28, 28)
    path = write_bytes(tmp_path / "forged", header + bytes(10))
    with pytest.raises(IdxError, match="truncated payload"):
        read_idx(path)
    path = write_bytes(
        tmp_path / "forged2",
        struct.pack(">III", IMAGE_MAGIC, 2**32 - 1, 2**32 - 1) + struct.pack(">I", 2**32 - 1),
    )
    with pytest.raises(IdxError):
        read_idx(path, image_shape=None)


def test_zero_images_of_a_size_numpy_cannot_hold_are_an_idx_error(tmp_path):
    # found by the parser property test: 0 images of 2801795072 x 3291950982 promise an empty
    # payload, but NumPy cannot shape even an empty array so (its product overflows)
    header = struct.pack(">IIII", IMAGE_MAGIC, 0, 2801795072, 3291950982)
    path = write_bytes(tmp_path / "zero-huge", header)
    with pytest.raises(IdxError, match="0 x 2801795072 x 3291950982 describe no array"):
        read_idx(path, image_shape=None)


def test_writer_rejects_what_idx_cannot_hold(tmp_path):
    with pytest.raises(DataError, match="uint8"):
        write_idx(tmp_path / "f", IMAGES.astype(np.float32))
    with pytest.raises(DataError, match="shape"):
        write_idx(tmp_path / "f", IMAGES[0])
    assert not (tmp_path / "f").exists()


def test_writer_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "labels"
    write_idx(path, LABELS)
    before = path.read_bytes()

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_writer(path) as f:
            f.write(b"half a file")
            raise Boom
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["labels"]  # no temporary file left behind


# --- fuzzing: only DataError or a valid result -----------------------------------------------


def _check_any(path: Path) -> None:
    try:
        array = read_idx(path)
    except DataError:
        return
    assert array.dtype == np.uint8 and array.ndim in (1, 3)


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(data=st.binary(max_size=300), gz=st.booleans())
def test_fuzz_arbitrary_bytes(tmp_path, data, gz):
    _check_any(write_bytes(tmp_path / "fuzz", data, gz))


@FUZZ
@given(
    magic=st.sampled_from([IMAGE_MAGIC, LABEL_MAGIC, 0x0803, 0x0802, 0x0903, 0x08030000]),
    dims=st.lists(st.integers(0, 40), min_size=0, max_size=4),
    payload=st.binary(max_size=2000),
    gz=st.booleans(),
)
def test_fuzz_plausible_headers(tmp_path, magic, dims, payload, gz):
    data = struct.pack(f">I{len(dims)}I", magic, *dims) + payload
    _check_any(write_bytes(tmp_path / "fuzz", data, gz))


@FUZZ
@given(n=st.integers(0, 4), extra=st.integers(-30, 30), labels=st.binary(max_size=8))
def test_fuzz_lengths_around_the_exact_one(tmp_path, n, extra, labels):
    data = struct.pack(">II", LABEL_MAGIC, n) + (labels * 10)[: max(0, n + extra)]
    _check_any(write_bytes(tmp_path / "fuzz", data))
