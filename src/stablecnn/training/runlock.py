"""An exclusive lock on a run directory, so two processes never write one run at once.

``.lock`` in the run directory holds the holder's process id, created with ``O_EXCL``; a lock
whose process is gone (killed, crashed) is taken over, one whose process lives is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from stablecnn.errors import TrainingError


class RunLock:
    """An exclusive lock on a run directory: a second run on the same directory is refused."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._clear_stale()  # raises while a live process holds the lock
                continue
            except OSError as exc:  # read-only, full disk, --out that is a file, ...
                raise TrainingError(
                    f"cannot write in run directory {self.path.parent}: {exc.strerror or exc}"
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            # a checkpoint write killed mid-way (SIGKILL) leaves its temporary file; the lock
            # holder is the only writer, so what is there now is garbage
            for stale in self.path.parent.glob(".checkpoint.npz.*.tmp"):
                stale.unlink(missing_ok=True)
            return
        raise TrainingError(f"could not lock run directory {self.path.parent}")

    def _clear_stale(self) -> None:
        self.check_free()
        self.path.unlink(missing_ok=True)  # a stale lock from a dead run

    def check_free(self) -> None:
        """Raise :class:`TrainingError` if another live process holds the lock; takes nothing."""
        try:
            pid = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and _alive(pid) and pid != os.getpid():
            raise TrainingError(
                f"run directory {self.path.parent} is in use by process "
                f"{pid}; use another --out directory"
            )

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
