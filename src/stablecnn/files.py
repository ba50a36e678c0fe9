"""Files written whole or not at all: the one atomic writer behind every file stablecnn writes.

A checkpoint, a plot, a pickle, a cached dataset file: each is written to a temporary file in
its destination folder, flushed to disk, then renamed over the final name (``os.replace`` is
atomic within one file system), and the folder's entry is flushed too. A crash, even SIGKILL,
mid-write leaves the previous file intact and at worst a ``.<name>.*.tmp`` file that no reader
looks at.

Permissions follow the user's umask, as files made by ``open()`` do (``0o666 & ~umask``: 0644
under the usual umask 022, 0600 under 077), so every file of a run directory (checkpoint,
plots, ``metrics.csv``, ``train_log.txt``) is readable by the same people. ``tempfile.mkstemp``
alone would make them owner-only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_writer", "atomic_write", "TMP_SUFFIX", "default_file_mode"]

TMP_SUFFIX = ".tmp"


def default_file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open(path, "w")`` would give a new file now."""
    umask = os.umask(0o022)  # the only way to read the umask portably is to set it...
    os.umask(umask)  # ...and put it back at once
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator:
    """Open a temporary file beside ``path``; on a clean exit, flush it and rename it to ``path``.

    On an exception (``KeyboardInterrupt`` included) the temporary file is removed and ``path``
    is left as it was.

    Yields:
        A binary file object to write to.

    Raises:
        OSError: the folder is missing, read-only or full, or ``path`` is a directory (nothing
            is left behind); its ``filename`` is ``path``, never the temporary file's name.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        os.fchmod(fd, default_file_mode())  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _naming(exc, path) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` as an error about ``path``, the file the user asked for (the temporary file
    beside it is ours)."""
    return type(exc)(exc.errno, exc.strerror, str(path))


def atomic_write(path: str | os.PathLike, write: Callable) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``
    (see :func:`atomic_writer`)."""
    with atomic_writer(path) as f:
        write(f)


def _fsync_dir(folder: Path) -> None:
    """Flush the folder's entry for the renamed file (best effort: not every system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
