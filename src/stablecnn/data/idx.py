"""Reading and writing IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a big-endian header followed by the raw array::

    bytes 0-3    magic: 0x00 0x00 <type code> <ndim>   (type 0x08 = unsigned byte)
    bytes 4-...  ndim dimensions, each a big-endian uint32
    then         prod(dims) bytes of payload, row-major (C order)

Only the two unsigned-byte kinds the datasets use are accepted: images, magic 0x00000803 with dims
(N, rows, cols), and labels, magic 0x00000801 with dims (N,). Files may be raw or gzip-compressed;
the reader tells them apart by content (gzip starts with 0x1f 0x8b, an IDX file with 0x00 0x00),
the writer by the name (``.gz``).

The reader never trusts the header: it streams the payload in chunks and stops one byte past what
the header promises, so a forged header with huge dimensions costs no memory, and every fault is
reported as :class:`IdxError` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from stablecnn.data.cache import atomic_writer
from stablecnn.data.errors import IdxError
from stablecnn.errors import DataError

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
_NDIM = {IMAGE_MAGIC: 3, LABEL_MAGIC: 1}
_MAGIC_BY_NDIM = {3: IMAGE_MAGIC, 1: LABEL_MAGIC}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # bytes read per call while streaming a payload


def _open(path: Path):
    """Open ``path`` for reading, through gzip when its first bytes say so."""
    raw = open(path, "rb")
    try:
        head = raw.read(2)
        raw.seek(0)
    except OSError:
        raw.close()
        raise
    if head == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def _read_up_to(stream, buf: bytearray, want: int) -> None:
    """Append bytes from ``stream`` to ``buf`` until it holds ``want`` bytes or the stream ends."""
    while len(buf) < want:
        chunk = stream.read(min(_CHUNK, want - len(buf)))
        if not chunk:
            return
        buf += chunk


def _count_rest(stream) -> int:
    """Number of bytes left in ``stream`` (read and dropped chunk by chunk)."""
    total = 0
    while chunk := stream.read(_CHUNK):
        total += len(chunk)
    return total


def _describe_magic(magic: int) -> str:
    return (
        f"wrong magic number 0x{magic:08x}: expected 0x{IMAGE_MAGIC:08x} (images) "
        f"or 0x{LABEL_MAGIC:08x} (labels)"
    )


def read_idx_with_digest(
    path: str | os.PathLike,
    *,
    image_shape: tuple[int, int] | None = (28, 28),
    num_classes: int | None = 10,
) -> tuple[np.ndarray, str]:
    """Read an IDX file and return its array and the SHA-256 of its uncompressed bytes.

    Args:
        path: the file, raw or gzip-compressed.
        image_shape: the (rows, cols) every image must have; ``None`` accepts any.
        num_classes: labels must lie in ``[0, num_classes)``; ``None`` accepts any byte.

    Returns:
        ``(array, sha256_hex)``: a writable uint8 array, shape ``(N, rows, cols)`` for images or
        ``(N,)`` for labels, and the digest of header + payload as they are after decompression.

    Raises:
        IdxError: for any malformed content (the message names the file and the fault).
        DataError: when the file cannot be opened or read.
    """
    path = Path(path)
    try:
        stream, raw = _open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        with raw, stream:
            return _parse_stream(stream, path, image_shape, num_classes)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise IdxError(f"{path}: gzip data is truncated or corrupt ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse_stream(stream, path: Path, image_shape, num_classes) -> tuple[np.ndarray, str]:
    buf = bytearray()
    _read_up_to(stream, buf, 4)
    if len(buf) < 4:
        raise IdxError(f"{path}: truncated header: {len(buf)} byte(s), no room for a magic number")
    (magic,) = struct.unpack(">I", buf[:4])
    if magic not in _NDIM:
        raise IdxError(f"{path}: {_describe_magic(magic)}")
    ndim = _NDIM[magic]
    header_len = 4 + 4 * ndim
    _read_up_to(stream, buf, header_len)
    if len(buf) < header_len:
        raise IdxError(
            f"{path}: truncated header: {len(buf)} bytes, {header_len} needed for "
            f"{ndim} dimension(s)"
        )
    dims = struct.unpack(f">{ndim}I", buf[4:header_len])
    kind = "images" if ndim == 3 else "labels"
    if ndim == 3 and image_shape is not None and tuple(dims[1:]) != tuple(image_shape):
        raise IdxError(
            f"{path}: images are {dims[1]}x{dims[2]}, expected {image_shape[0]}x{image_shape[1]}"
        )
    if math.prod(max(d, 1) for d in dims) > np.iinfo(np.intp).max:  # even with a zero count
        shape = " x ".join(str(d) for d in dims)
        raise IdxError(f"{path}: the header's dimensions {shape} describe no array NumPy can hold")
    expected = 1
    for d in dims:
        expected *= d
    # Read at most one byte past the promised payload: enough to tell "trailing bytes".
    _read_up_to(stream, buf, header_len + expected + 1)
    payload_len = len(buf) - header_len
    if payload_len < expected:
        shape = " x ".join(str(d) for d in dims)
        raise IdxError(
            f"{path}: truncated payload: the header promises {expected} bytes ({kind} {shape}), "
            f"the file holds {payload_len}"
        )
    if payload_len > expected:
        extra = payload_len - expected + _count_rest(stream)
        raise IdxError(f"{path}: {extra} trailing byte(s) after the {expected}-byte payload")
    digest = hashlib.sha256(buf).hexdigest()
    array = np.frombuffer(buf, dtype=np.uint8, offset=header_len).reshape(dims)  # view, no copy
    if ndim == 1 and num_classes is not None and array.size and array.max() >= num_classes:
        where = int(np.argmax(array >= num_classes))  # the first one
        raise IdxError(f"{path}: label {array[where]} at index {where} is above {num_classes - 1}")
    return array, digest


def read_idx(
    path: str | os.PathLike,
    *,
    image_shape: tuple[int, int] | None = (28, 28),
    num_classes: int | None = 10,
) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a uint8 array.

    Args:
        path: the file.
        image_shape: the (rows, cols) every image must have; ``None`` accepts any.
        num_classes: labels must lie in ``[0, num_classes)``; ``None`` accepts any byte.

    Returns:
        uint8 array, ``(N, rows, cols)`` for an image file, ``(N,)`` for a label file.

    Raises:
        IdxError: wrong magic, bad dimensions, truncated payload, trailing bytes, a label too large.
        DataError: the file cannot be opened or read.

    Example:
        >>> images = read_idx("train-images-idx3-ubyte.gz")  # doctest: +SKIP
        >>> images.shape, images.dtype  # doctest: +SKIP
        ((60000, 28, 28), dtype('uint8'))
    """
    return read_idx_with_digest(path, image_shape=image_shape, num_classes=num_classes)[0]


def idx_header(array: np.ndarray) -> bytes:
    """The IDX header for a uint8 array of shape ``(N,)`` or ``(N, rows, cols)``."""
    if array.dtype != np.uint8:
        raise DataError(f"IDX writer takes uint8 arrays, got {array.dtype}")
    if array.ndim not in _MAGIC_BY_NDIM:
        raise DataError(
            f"IDX writer takes labels (N,) or images (N, rows, cols), got shape {array.shape}"
        )
    if any(d >= 2**32 for d in array.shape):
        raise DataError(f"IDX dimensions must fit in 32 bits, got shape {array.shape}")
    return struct.pack(f">I{array.ndim}I", _MAGIC_BY_NDIM[array.ndim], *array.shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, atomically; gzip-compressed when the name ends in .gz.

    Args:
        path: destination; its folder must exist.
        array: uint8, shape ``(N,)`` (labels) or ``(N, rows, cols)`` (images).

    The gzip output carries no name and a zero timestamp, so equal arrays give equal bytes.
    """
    path = Path(path)
    array = np.ascontiguousarray(array)
    header = idx_header(array)
    with atomic_writer(path) as f:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as gz:
                gz.write(header)
                gz.write(array.data)
        else:
            f.write(header)
            f.write(array.data)


def check_pair(images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str) -> None:
    """Check that an image array and a label array belong together.

    Raises:
        IdxError: when the shapes are not (N, rows, cols) and (N,) with the same N.
    """
    if images.ndim != 3:
        raise IdxError(f"{images_name}: expected an image file (N, rows, cols), got {images.shape}")
    if labels.ndim != 1:
        raise IdxError(f"{labels_name}: expected a label file (N,), got {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise IdxError(
            f"{images_name} holds {images.shape[0]} images but {labels_name} holds "
            f"{labels.shape[0]} labels"
        )
