"""Which files make a folder a run directory, and a new run's claim on one.

A run writes into its directory ``checkpoint.npz``, ``train_log.txt`` (appended to),
``metrics.csv`` and the plots (``curves.png``, ``confusion.png``, ``filters.png``,
``mistakes.png``): :data:`RUN_FILES`. A new run would append to or replace each of them, so
``stablecnn train --out DIR`` refuses a ``DIR`` holding any (:func:`check_new_run_dir`), before
any data is read or anything written, unless told to replace the run there (``--overwrite``).
The old run's files are then removed (:func:`clear_run`) only once the new run has passed its
checks and holds the directory's lock, so a refused command loses nothing and no file of the
old run is left to be taken for the new run's. Other files in the directory are not the run's
and are left alone: an empty directory, or one without run files, takes a new run as it is.
``stablecnn train --resume DIR`` takes a run directory too, never a file (:func:`check_resume_dir`).
"""

from __future__ import annotations

from pathlib import Path

from stablecnn.errors import ConfigError
from stablecnn.files import TMP_SUFFIX
from stablecnn.training.runlock import RunLock

CHECKPOINT = "checkpoint.npz"  # what a run resumes from
RUN_FILES = (
    CHECKPOINT,
    "train_log.txt",
    "metrics.csv",
    "curves.png",
    "confusion.png",
    "filters.png",
    "mistakes.png",
)


def run_files(run_dir) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``run_dir`` (none when it does not exist)."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def check_new_run_dir(run_dir, overwrite: bool = False) -> None:
    """Refuse a directory a new run cannot be written into; checks only, writes nothing.

    Raises:
        ConfigError: ``run_dir`` (or a folder above it) is a file, or ``run_dir`` holds a run's
            files (:data:`RUN_FILES`) and ``overwrite`` is false (without a checkpoint, the
            message offers only ``--overwrite`` or another ``--out``: there is nothing to resume).
        TrainingError: another live process holds the directory's lock (as
            :class:`~stablecnn.training.runlock.RunLock` refuses it).
    """
    run_dir = Path(run_dir)
    existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if existing == run_dir and not run_dir.is_dir():
        raise ConfigError(
            f"--out {run_dir} is a file, not a directory: name a folder for the run; "
            f"nothing was written"
        )
    if existing is not None and not existing.is_dir():
        raise ConfigError(
            f"cannot make run directory {run_dir}: {existing} is a file, not a directory; "
            f"nothing was written"
        )
    RunLock(run_dir).check_free()  # a run in progress there: the lock's refusal says so
    found = run_files(run_dir)
    if not found or overwrite:
        return
    if CHECKPOINT not in found:  # a run that failed before saving one
        raise ConfigError(
            f"{run_dir} holds the files of a run that saved no checkpoint ({', '.join(found)}), "
            f"so there is nothing to resume: replace them with --overwrite, or name another "
            f"--out; nothing was changed"
        )
    raise ConfigError(
        f"{run_dir} already holds a run ({', '.join(found)}): continue it with --resume "
        f"{run_dir}, or replace it with --overwrite (or name another --out); nothing was changed"
    )


def check_resume_dir(run_dir) -> None:
    """Refuse a ``--resume`` path that is not a directory, naming what it is; checks only.

    Raises:
        ConfigError: ``run_dir`` does not exist, or is a file (a run's ``checkpoint.npz``
            included: the message names its folder, the run directory to give).
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError(
            f"--resume {run_dir}: no such directory; give the run directory a training wrote "
            f"(it holds checkpoint.npz)"
        )
    if not run_dir.is_dir():
        hint = f"; give its folder: --resume {run_dir.parent}" if run_dir.name == CHECKPOINT else ""
        raise ConfigError(
            f"--resume {run_dir}: a file, not a run directory (a run directory holds "
            f"checkpoint.npz){hint}"
        )


def clear_run(run_dir) -> list[str]:
    """Remove the run's files (:data:`RUN_FILES`, and temporary files of their writes cut short)
    from ``run_dir``; returns the names of the run files removed. Call it holding the lock."""
    run_dir = Path(run_dir)
    removed = run_files(run_dir)
    for name in removed:
        (run_dir / name).unlink(missing_ok=True)
    for name in RUN_FILES:
        for stale in run_dir.glob(f".{name}.*{TMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
    return removed
