"""Where datasets are cached, and how files get there without ever being half-written.

Layout: ``<cache>/<dataset>/<standard raw file name>``, uncompressed, e.g.
``~/.cache/stablecnn/mnist/train-images-idx3-ubyte``. The cache root is ``$STABLECNN_DATA`` when
set, else ``~/.cache/stablecnn``.

Every write goes to a temporary file in the destination folder and is renamed over the final name
only once complete and flushed (``os.replace`` is atomic within one file system). Two runs fetching
at once each write their own temporary file and the last rename wins, with identical verified
bytes; a run killed mid-write leaves only a ``.*.tmp`` file, which no reader looks at and a later
fetch sweeps away. The writer is :func:`stablecnn.files.atomic_writer` (modes follow the umask).
A fetch that stores nothing leaves no new folder behind either (:func:`made_folder`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from stablecnn.data.errors import ChecksumError, DataError
from stablecnn.files import TMP_SUFFIX as _TMP_SUFFIX
from stablecnn.files import atomic_writer  # noqa: F401 - data.idx and the tests use it from here

ENV_VAR = "STABLECNN_DATA"
# how the cache root is chosen, for messages that tell the user where to put files
ROOT_RULE = f"${ENV_VAR} if set, else ~/.cache/stablecnn; `stablecnn data` also takes --cache-dir"
STALE_SECONDS = 3600.0  # a temporary file this old belongs to a run that died


def default_cache_dir() -> Path:
    """The cache root: ``$STABLECNN_DATA`` if set and non-empty, else ``~/.cache/stablecnn``.

    Raises:
        DataError: there is no home directory to put the cache in (``HOME`` unset and the user
            not in the password database, as in some containers and services), or
            ``$STABLECNN_DATA`` starts with ``~`` that cannot be expanded. The message says to
            set ``STABLECNN_DATA`` or to pass ``--data-dir``/``--cache-dir``.
    """
    env = os.environ.get(ENV_VAR)
    try:
        if env:
            return Path(env).expanduser()
        return Path.home() / ".cache" / "stablecnn"
    except RuntimeError:  # Path.home(): "Could not determine home directory"
        raise DataError(
            f"no home directory to keep the data cache in{f' ({ENV_VAR}={env!r})' if env else ''}; "
            f"set {ENV_VAR} to a folder (for example {ENV_VAR}=/tmp/stablecnn-data) or pass "
            f"--data-dir with the four IDX files"
        ) from None


def dataset_cache_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of dataset ``name`` under ``cache_dir`` (default: :func:`default_cache_dir`)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / name


@contextlib.contextmanager
def made_folder(folder: Path) -> Iterator[Path]:
    """Create ``folder`` and its missing parents for the block, then remove those of them that
    this call created and that are still empty, so a fetch that stored nothing (it failed, or
    was interrupted) leaves no new empty folder behind. A folder holding anything is kept.

    Raises:
        OSError: ``folder`` cannot be created (a read-only or missing parent, a file in the way).
    """
    # deepest first, up to the first that exists (its parents exist too)
    new = list(itertools.takewhile(lambda f: not f.exists(), (folder, *folder.parents)))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        for f in new:
            with contextlib.suppress(OSError):  # not empty (or gone): kept as it is
                f.rmdir()


def warn(message: str) -> None:
    """Report a recoverable problem on stderr (the run goes on)."""
    print(f"stablecnn: warning: {message}", file=sys.stderr)


def check_digest(parts: Iterable, expected: str, what: str) -> None:
    """Raise :class:`ChecksumError` unless the SHA-256 of the joined ``parts`` is ``expected``.

    Args:
        parts: bytes-like objects (bytes, bytearray, contiguous NumPy arrays), hashed in order.
        expected: the pinned hex digest.
        what: names the data in the message (a path, or "file X from source Y").
    """
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    got = h.hexdigest()
    if got != expected:
        raise ChecksumError(f"{what}: SHA-256 is {got}, expected the pinned {expected}")


def store_verified(path: Path, parts: list, expected: str, what: str) -> None:
    """Check ``parts`` against ``expected``, then write them to ``path`` atomically.

    Nothing is written when the digest does not match, so the cache only ever receives bytes
    already proven canonical.
    """
    check_digest(parts, expected, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as f:
        for part in parts:
            f.write(part)


def remove_stale_temps(folder: Path, max_age: float = STALE_SECONDS) -> None:
    """Delete temporary files left in ``folder`` by runs that died more than ``max_age`` s ago."""
    if not folder.is_dir():
        return
    now = time.time()
    for entry in folder.glob(f".*{_TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - entry.stat().st_mtime > max_age:
                entry.unlink()
