"""Reading an ONNX file as untrusted data: bounded, parsed without side effects, tensors checked.

An ONNX file is a protocol-buffers message: it holds no code, but it can lie. This module reads
one so that a lie is a :class:`~stablecnn.errors.ModelFileError` naming the file and what is
wrong, never a crash, a huge allocation or a read of a file the user did not name:

- The file is read once, at most :data:`MAX_FILE_BYTES` (protocol buffers' own 2 GiB limit);
  a FIFO or a device is refused before any read. It is parsed from memory: the onnx package's
  own loader, which follows external-data paths itself, is never called.
- A tensor's declared shape is checked against the bytes it holds before any array is made: a
  tensor that declares 10^12 values but holds 16 bytes is refused, and so is one above
  :data:`MAX_TENSOR_VALUES` (a layer of a model file is at most that large) whatever it holds.
- External data (a tensor whose bytes are in another file, ``data_location = EXTERNAL``) is read
  only from a regular file inside the model file's folder: an absolute location, a ``..``
  component, a symbolic link anywhere below the folder or an offset and length beyond the file
  are refused before that file is opened (and it is opened with ``O_NOFOLLOW``).
- Values must be finite: a NaN weight is a broken model, refused by name.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from stablecnn.errors import ModelFileError
from stablecnn.interop import common
from stablecnn.nn.modelfile import MAX_LAYER_PARAMS, MAX_PARAMS

MAX_FILE_BYTES = (1 << 31) - 1  # protocol buffers refuse larger messages
MAX_TENSOR_VALUES = MAX_LAYER_PARAMS  # 2**27: the largest layer a model file may have
MAX_TOTAL_VALUES = 2 * MAX_PARAMS  # every tensor of the file together (weights and buffers)

# ONNX TensorProto.DataType codes -> NumPy dtypes (little-endian, as ONNX stores raw data), and
# the typed field each keeps its values in when it has no raw_data
_DTYPES = {
    1: ("<f4", "float_data"),  # FLOAT
    11: ("<f8", "double_data"),  # DOUBLE
    7: ("<i8", "int64_data"),  # INT64
    6: ("<i4", "int32_data"),  # INT32
    9: ("|b1", "int32_data"),  # BOOL
}
_NAMES = {10: "float16", 16: "bfloat16", 2: "uint8", 3: "int8", 8: "string"}


def read_model(path):
    """Read and parse the ONNX file at ``path`` (no external data is read yet).

    Returns:
        ``(model, folder)``: the ``onnx.ModelProto`` and the folder external data may come from
        (the folder of ``path`` as named).

    Raises:
        ModelFileError: missing, not a regular file, larger than :data:`MAX_FILE_BYTES`, not a
            parseable ONNX model (truncated, corrupt or another kind of file), or without a graph.
        ConfigError: the onnx package is not installed.
    """
    onnx = common.require_onnx()
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such ONNX file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not an ONNX file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ModelFileError(f"{path}: is a directory, not an ONNX file")
        if not stat.S_ISREG(info.st_mode):
            raise ModelFileError(f"{path}: not a regular file (a device, FIFO or socket)")
        if info.st_size > MAX_FILE_BYTES:
            raise ModelFileError(
                f"{path}: {info.st_size:,} bytes, more than the {MAX_FILE_BYTES:,} an ONNX file "
                f"can hold (larger models keep their weights as external data)"
            )
        data = _read_exactly(fd, info.st_size, path)
    finally:
        os.close(fd)
    if not data:
        raise ModelFileError(f"{path}: empty, 0 bytes: not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and kin: bad bytes, not a bug
        raise ModelFileError(
            f"{path}: not a readable ONNX model (truncated, corrupt or not ONNX: "
            f"{type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    if not model.HasField("graph") or not model.ir_version:
        raise ModelFileError(
            f"{path}: not an ONNX model (no graph or no IR version: truncated, or another kind "
            f"of file)"
        )
    return model, path.absolute().parent


def _read_exactly(fd: int, size: int, path) -> bytes:
    """``size`` bytes from ``fd``; a file that shrank meanwhile is an error."""
    chunks, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 24))
        if not chunk:
            raise ModelFileError(f"{path}: the file shrank while it was read")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Tensors:
    """Turns the file's ``TensorProto`` messages into NumPy arrays, checking each first.

    Args:
        source: the ONNX file, for messages.
        folder: the only folder external data may be read from.
    """

    def __init__(self, source, folder: Path):
        self.source, self.folder = str(source), Path(folder)
        self.total = 0  # values turned into arrays so far

    def fail(self, what: str, message: str):
        raise ModelFileError(f"{self.source}: {what}: {message}")

    def array(self, tensor, what: str) -> np.ndarray:
        """The values of ``tensor`` (an ``onnx.TensorProto``), named ``what`` in messages.

        Raises:
            ModelFileError: an unsupported element type; a negative or too large shape; data
                whose length is not the shape's; unsafe or short external data; a segment;
                NaN or infinite values.
        """
        if tensor.data_type not in _DTYPES:
            kind = _NAMES.get(tensor.data_type, f"type code {tensor.data_type}")
            self.fail(
                what,
                f"holds {kind} values; stablecnn reads float32 and float64 weights (and int64 "
                f"shapes)",
            )
        if tensor.HasField("segment"):
            self.fail(what, "is split into segments, which stablecnn does not read")
        dims = tuple(int(d) for d in tensor.dims)
        if any(d < 0 for d in dims):
            self.fail(what, f"declares a negative dimension, shape {dims}")
        count = math.prod(dims)
        if count > MAX_TENSOR_VALUES:
            self.fail(
                what,
                f"declares shape {dims}, {count:,} values, more than the {MAX_TENSOR_VALUES:,} "
                f"a layer of a stablecnn model may hold",
            )
        self.total += count
        if self.total > MAX_TOTAL_VALUES:
            self.fail(
                what,
                f"brings the file's tensors to {self.total:,} values, more than the "
                f"{MAX_TOTAL_VALUES:,} stablecnn reads from one model",
            )
        code, field = _DTYPES[tensor.data_type]
        dtype = np.dtype(code)
        nbytes = count * dtype.itemsize
        if tensor.data_location == 1:  # EXTERNAL
            raw = self._external(tensor, what, nbytes)
        elif tensor.HasField("raw_data") or tensor.raw_data:
            raw = tensor.raw_data
        else:
            values = getattr(tensor, field)
            if len(values) != count:
                self.fail(
                    what, f"declares shape {dims} ({count:,} values) but holds {len(values):,}"
                )
            array = np.asarray(values, dtype=dtype.newbyteorder("=")).reshape(dims)
            return self._finite(array, what)
        if len(raw) != nbytes:
            self.fail(
                what,
                f"declares shape {dims} of {dtype.name} ({nbytes:,} bytes) but holds "
                f"{len(raw):,} bytes",
            )
        array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        return self._finite(array.reshape(dims), what)

    def _finite(self, array: np.ndarray, what: str) -> np.ndarray:
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            self.fail(what, "holds NaN or infinite values")
        return array

    def _external(self, tensor, what: str, nbytes: int) -> bytes:
        """The bytes of an external tensor, read only from a regular file inside the folder."""
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        where = f"external data {location!r}"
        if not location or "\0" in location:
            self.fail(what, f"{where}: no usable file name")
        if (
            PurePosixPath(location).is_absolute()
            or PureWindowsPath(location).is_absolute()
            or PureWindowsPath(location).drive
            or location.startswith(("\\", "/"))
        ):
            self.fail(
                what,
                f"{where} is an absolute path; external data must be a file in the model's "
                f"folder {self.folder}",
            )
        parts = PurePosixPath(location.replace("\\", "/")).parts
        if ".." in parts:
            self.fail(
                what,
                f"{where} leads out of the model's folder {self.folder} ('..'); external data "
                f"must be a file inside it",
            )
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries.get("length", str(nbytes)))
        except ValueError:
            self.fail(what, f"{where}: offset and length must be integers, got {entries}")
        if offset < 0 or length != nbytes:
            self.fail(
                what,
                f"{where}: offset {offset} and length {length} do not describe the "
                f"{nbytes:,} bytes the tensor's shape needs",
            )
        path = self.folder
        for part in parts:  # no link anywhere below the folder: it could point anywhere
            path = path / part
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                self.fail(what, f"{where}: no such file in {self.folder}")
            except OSError as exc:
                self.fail(what, f"{where}: {exc.strerror or exc}")
            if stat.S_ISLNK(info.st_mode):
                self.fail(
                    what,
                    f"{where}: {path} is a symbolic link; external data must be a regular file "
                    f"inside the model's folder, not a link that may lead out of it",
                )
        if not stat.S_ISREG(info.st_mode):
            self.fail(what, f"{where}: {path} is not a regular file")
        if offset + nbytes > info.st_size:
            self.fail(
                what,
                f"{where}: needs bytes {offset:,} to {offset + nbytes:,} but the file holds "
                f"{info.st_size:,}",
            )
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            self.fail(what, f"{where}: cannot read: {exc.strerror or exc}")
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
                self.fail(what, f"{where}: the file changed while it was checked")
            os.lseek(fd, offset, os.SEEK_SET)
            return _read_exactly(fd, nbytes, path)
        finally:
            os.close(fd)
