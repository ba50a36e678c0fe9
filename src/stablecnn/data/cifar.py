"""CIFAR-10's binary version: a tar.gz of fixed-size records, read without pickle or extraction.

The format (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009; described
at https://www.cs.toronto.edu/~kriz/cifar.html under "Binary version"): the archive
``cifar-10-binary.tar.gz`` unpacks to the folder ``cifar-10-batches-bin/`` holding
``data_batch_1.bin`` .. ``data_batch_5.bin`` (the training set, 10,000 records each),
``test_batch.bin`` (the test set, 10,000 records) and ``batches.meta.txt`` (the 10 class names, one
per line, line i naming label i). Each record is 3,073 bytes with nothing between records::

    <1 x label (0-9)><1024 x red><1024 x green><1024 x blue>

each colour plane being the 32 x 32 image row-major, so a record's pixels are the image in
(C, H, W) order as they stand. A file of ``n`` records is exactly ``n * 3073`` bytes.

Read here with :mod:`tarfile` and :func:`numpy.frombuffer` only: nothing is unpickled and nothing
is written to disk. The archive is untrusted data, read as a stream member by member, and refused
(:class:`~stablecnn.errors.ArchiveError`, naming the file and the member) when any member is a link
(symbolic or hard), a device or a FIFO, or has an absolute path or a ``..`` component; when a
member appears twice; when a member it needs is not a regular file, is missing or has the wrong
size; when a file of records ends inside a record; or when a label is outside the classes. Other
regular files (the archive's ``readme.html``) are skipped unread.

Two checks of the sizes (``pinned``):

- ``True`` (the canonical data): every file of records has exactly the size its
  :class:`~stablecnn.data.specs.ArchiveMember` pins (10,000 records), checked from the member's
  header before it is read.
- ``False`` (the user's own data in this format, ``--no-verify``): any whole number of records
  from 1 up to the pinned count.

The class names in ``batches.meta.txt`` must be the spec's, in order, either way.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from stablecnn.data.specs import ArchiveMember, ArchiveSpec
from stablecnn.errors import ArchiveError

META_MAX_BYTES = 4096  # batches.meta.txt is 10 short lines; anything bigger is not one


def extracted_folder(folder: str | Path, spec: ArchiveSpec) -> Path | None:
    """The folder holding the extracted files in ``folder``: ``folder/cifar-10-batches-bin``, or
    ``folder`` itself when it holds ``data_batch_1.bin``; ``None`` when neither does."""
    first = spec.members[0].basename
    for candidate in (Path(folder) / spec.folder, Path(folder)):
        if (candidate / first).is_file():
            return candidate
    return None


def _refuse_hostile(path: Path, member: tarfile.TarInfo) -> None:
    """Raise ArchiveError for a member no dataset archive has a reason to hold."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or ".." in name.split("\\"):
        raise ArchiveError(
            f"{path}: refused: member {name!r} has an absolute path or a '..' component "
            f"(nothing is extracted, but a dataset archive has no reason to hold one)"
        )
    if member.issym() or member.islnk():
        kind = "symbolic" if member.issym() else "hard"
        raise ArchiveError(
            f"{path}: refused: member {name!r} is a {kind} link (to {member.linkname!r})"
        )
    if not (member.isreg() or member.isdir()):
        raise ArchiveError(
            f"{path}: refused: member {name!r} is not a regular file or folder (a device, "
            f"FIFO or other special file)"
        )


def _check_size(where: str, member: ArchiveMember, size: int, spec: ArchiveSpec, pinned: bool):
    """Raise ArchiveError unless a member of ``size`` bytes can be ``member`` (see module doc)."""
    record = spec.record_bytes
    if member.split == "meta":
        if size > META_MAX_BYTES:
            raise ArchiveError(
                f"{where}: {size:,d} bytes, too large for a list of class names "
                f"(at most {META_MAX_BYTES:,d})"
            )
        return
    if pinned and size != member.size:
        raise ArchiveError(
            f"{where}: {size:,d} bytes, expected {member.size:,d} ({member.count:,d} records of "
            f"{record:,d} bytes)"
        )
    if size % record:
        raise ArchiveError(
            f"{where}: {size:,d} bytes is {size // record:,d} records of {record:,d} bytes and "
            f"{size % record:,d} bytes of a truncated record"
        )
    if not 0 < size <= member.size:
        raise ArchiveError(
            f"{where}: {size // record:,d} records; expected 1 to {member.count:,d} of "
            f"{record:,d} bytes"
        )


def read_archive(
    path: str | Path, spec: ArchiveSpec, splits=("train", "test"), *, pinned: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read ``splits`` from the tar.gz archive at ``path``, in one pass over its stream.

    Args:
        path: the archive (``cifar-10-binary.tar.gz``); its digest is the caller's business.
        spec: the dataset (member names, sizes, classes, image shape).
        splits: which splits to return ("train", "test").
        pinned: the sizes are the spec's exactly (``True``) or any whole number of records up to
            them (``False``; see the module doc).

    Returns:
        ``{split: (images, labels)}``: images uint8 (N, C, H, W) (N, 3, 32, 32 for CIFAR-10) and
        labels uint8 (N,), the split's files concatenated in the spec's order.

    Raises:
        ArchiveError: the file is not a readable tar.gz, is truncated, holds a hostile member,
            lacks a member, or a member is malformed (see the module doc); the message names
            the file and the member.
    """
    path = Path(path)
    wanted = {m.name: m for m in spec.members if m.split in splits or m.split == "meta"}
    found: dict[str, bytes] = {}
    seen: set[str] = set()
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
            for member in tar:  # headers in stream order; a member is read before the next one
                _refuse_hostile(path, member)
                where = f"{path}: member {member.name}"
                if member.name in seen:
                    raise ArchiveError(f"{where} appears twice (which one is meant?)")
                seen.add(member.name)
                spec_member = wanted.get(member.name)
                if spec_member is None:
                    continue  # the folder entry, readme.html: skipped unread
                if not member.isreg():
                    raise ArchiveError(f"{where} is a folder, expected a file")
                _check_size(where, spec_member, member.size, spec, pinned)
                stream = tar.extractfile(member)
                data = stream.read(member.size) if stream is not None else b""
                if len(data) != member.size:
                    raise ArchiveError(
                        f"{where}: the archive ends after {len(data):,d} of its "
                        f"{member.size:,d} bytes (truncated)"
                    )
                found[member.name] = data
    except ArchiveError:
        raise
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveError(
            f"{path}: not a readable tar.gz archive, or a truncated one "
            f"({type(exc).__name__}: {exc})"
        ) from None
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ArchiveError(f"{path}: has no member {', '.join(missing)}")
    check_class_names(found[spec.meta_member.name], f"{path}: member {spec.meta_member.name}", spec)
    return {
        split: records_to_arrays(
            [(f"{path}: member {m.name}", found.pop(m.name)) for m in spec.split_members(split)],
            spec,
        )
        for split in splits
    }


def read_folder(
    folder: str | Path, spec: ArchiveSpec, split: str, *, pinned: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``split`` from the extracted files in ``folder`` (``cifar-10-batches-bin/``).

    The same checks as :func:`read_archive` on each file (sizes, records, labels, class names);
    there is no digest to check them against (none of the extracted files' is published).

    Returns:
        ``(images, labels)``: uint8 (N, C, H, W) and uint8 (N,).

    Raises:
        ArchiveError: a file is missing, not a regular file, of the wrong size, or malformed.
    """
    folder = Path(folder)
    chunks = []
    for member in (*spec.split_members(split), spec.meta_member):
        path = folder / member.basename
        if not path.is_file():
            raise ArchiveError(f"{folder}: has no {member.basename}")
        _check_size(str(path), member, path.stat().st_size, spec, pinned)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        _check_size(str(path), member, len(data), spec, pinned)  # changed while we looked?
        if member.split == "meta":
            check_class_names(data, str(path), spec)
        else:
            chunks.append((str(path), data))
    return records_to_arrays(chunks, spec)


def check_class_names(data: bytes, where: str, spec: ArchiveSpec) -> None:
    """Raise ArchiveError unless ``data`` (``batches.meta.txt``) names the spec's classes in order.

    The names are the non-blank lines, stripped (the file ends with blank lines).
    """
    try:
        names = tuple(line.strip() for line in data.decode("ascii").splitlines() if line.strip())
    except UnicodeDecodeError:
        raise ArchiveError(f"{where}: not ASCII text, so not a list of class names") from None
    if names != spec.classes:
        raise ArchiveError(
            f"{where}: names the classes {list(names)}, expected {list(spec.classes)}"
        )


def records_to_arrays(chunks: list[tuple[str, bytes]], spec: ArchiveSpec):
    """Records (label byte, then C * H * W pixel bytes) of each ``(where, data)`` chunk, in order,
    as one ``(images uint8 (N, C, H, W), labels uint8 (N,))`` pair.

    Raises:
        ArchiveError: a chunk ends inside a record, or a label is outside the classes (the
            message names the file and the record's index in it).
    """
    record = spec.record_bytes
    for where, data in chunks:
        if len(data) % record:
            raise ArchiveError(
                f"{where}: {len(data):,d} bytes end inside record {len(data) // record:,d} "
                f"(records are {record:,d} bytes)"
            )
    total = sum(len(data) // record for _, data in chunks)
    images = np.empty((total, *spec.image_shape), dtype=np.uint8)  # (N, C, H, W)
    labels = np.empty(total, dtype=np.uint8)  # (N,)
    start = 0
    for where, data in chunks:
        rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)  # (n, 1 + C*H*W), a view
        n = len(rows)
        bad = np.flatnonzero(rows[:, 0] >= len(spec.classes))
        if bad.size:
            raise ArchiveError(
                f"{where}: record {bad[0]:,d} has label {rows[bad[0], 0]}, outside "
                f"0..{len(spec.classes) - 1}"
            )
        labels[start : start + n] = rows[:, 0]
        images[start : start + n] = rows[:, 1:].reshape(n, *spec.image_shape)  # planes R, G, B
        start += n
    return images, labels
