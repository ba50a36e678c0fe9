"""Data-parallel training over MPI: ``mpiexec -n K stablecnn train --distributed ...``.

Every rank runs the same :class:`DistributedTrainer`: it reads the whole dataset, builds every
batch of the single-process run (the same order and augmentation draws), computes the gradients
of its micro-batches and takes the whole batch's gradient from the all-gather of
:class:`~stablecnn.training.microbatch.MicroBatchStep`, so every rank takes the same optimizer step
and holds the same weights, bit for bit those of one process training with the same
``micro_batches`` (see :mod:`stablecnn.training.microbatch` for why and how).

One run, one set of files: rank 0 fetches and verifies the data while the others wait, then they
read its cache (:func:`load_data_in_turn`); rank 0 alone writes the checkpoint, the log, the
metrics file and the plots and shows the progress bar. The evaluation after each epoch is split
across the ranks by whole evaluation batches and gathered, with the single-process result
(:meth:`DistributedTrainer.evaluate_test`). A checkpoint holds no trace of K: a run started on 2
ranks resumes on 1 (``--distributed`` or not) or 3, bit-exact.

Faults:

- Ctrl-C (``mpiexec`` passes SIGINT to every rank): each rank's request rides with the next
  gradient all-gather, so all stop after the same step; rank 0 saves the checkpoint; a second
  Ctrl-C stops at once.
- An error raised on every rank alike (a diverged loss, bad data, a refused setting): the ranks
  agree on it (:meth:`~stablecnn.training.comm.MPIComm.agree_on_error`, within
  :data:`ERROR_GRACE` seconds), rank 0 saves the checkpoint of the last completed step and
  reports it, as one process would.
- An error on one rank only (out of memory, a bug, a file it cannot read): the others are waiting
  in a collective, so the agreement times out; the rank prints its number, host, process id and
  the error and stops every rank with ``MPI_Abort`` (:func:`guard`). The last checkpoint is
  intact (rank 0, when it is the one failing, first saves the last completed step).
- A rank that dies (killed, out of memory): ``mpiexec`` stops the others at once and names the
  process id; the ranks' ids are in the log (:func:`rank_table`). A rank that hangs: the watchdog
  of :class:`~stablecnn.training.comm.MPIComm` stops the run after ``--mpi-timeout`` seconds.

Every case leaves a checkpoint that ``--resume`` continues from.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from stablecnn.errors import ConfigError, Interrupted, StableCNNError
from stablecnn.kernels import parallel, runtime
from stablecnn.training.comm import LocalComm, MPIComm
from stablecnn.training.metrics import Evaluation, confusion_matrix, log_probabilities
from stablecnn.training.microbatch import MicroBatchStep, rank_range
from stablecnn.training.trainer import Trainer

DEFAULT_MICRO_BATCHES = 6  # 1, 2, 3 and 6 ranks share it evenly
ERROR_GRACE = 5.0  # seconds the ranks have to agree that an error is everyone's


def default_micro_batches(size: int) -> int:
    """The micro-batches of a new distributed run on ``size`` ranks that names none:
    :data:`DEFAULT_MICRO_BATCHES`, or ``size`` when more ranks than that."""
    return max(DEFAULT_MICRO_BATCHES, size)


def threads_per_rank(comm) -> int:
    """stablecnn's threads on each rank: ``STABLECNN_NUM_THREADS`` if set, else this machine's
    CPUs shared by its ranks (at least one). The results do not depend on it (the kernels' sums
    are cut by the shapes, not the threads: :mod:`stablecnn.kernels.parallel`)."""
    if os.environ.get("STABLECNN_NUM_THREADS", "").strip():
        return parallel.default_num_threads()
    return max(1, parallel.default_num_threads() // max(comm.local_size, 1))


class DistributedTrainer(Trainer):
    """A :class:`~stablecnn.training.trainer.Trainer` that is one rank of a data-parallel run.

    Args:
        config, run_dir, train_data, test_data, callbacks, checkpoint, data_source: as the
            Trainer's (``callbacks`` run on rank 0 only).
        comm: :class:`~stablecnn.training.comm.MPIComm` (or
            :class:`~stablecnn.training.comm.LocalComm`: one process).
        echo, progress: the log on stdout and the progress bar, on rank 0 only.

    Raises:
        ConfigError: more ranks than ``config.micro_batches``; and what the Trainer raises.
    """

    def __init__(
        self,
        config,
        run_dir,
        train_data,
        test_data,
        comm=None,
        callbacks=(),
        checkpoint=None,
        echo: bool = True,
        progress: bool = True,
        data_source: dict | None = None,
    ):
        self.comm = comm = comm or LocalComm()
        runtime.configure(threads_per_rank(comm))
        lead = comm.rank == 0
        super().__init__(
            config,
            run_dir,
            train_data,
            test_data,
            callbacks=callbacks if lead else (),
            checkpoint=checkpoint,
            echo=echo and lead,
            progress=progress and lead,
            data_source=data_source,
        )
        if not lead:
            self.callbacks = []  # no log, metrics file or bar: rank 0 writes them
        self._sigint = False  # this rank's Ctrl-C, sent with the next gradients

    def _micro_batch_step(self) -> MicroBatchStep:
        c = self.config
        return MicroBatchStep(self.model, c.micro_batches, self.comm, c.label_smoothing)

    def fit(self) -> dict:
        """:meth:`Trainer.fit <stablecnn.training.trainer.Trainer.fit>` on every rank; an error
        that only this rank met stops every rank (:func:`guard`)."""
        try:
            return super().fit()
        except BaseException as exc:
            guard(self.comm, exc)
            raise

    # -- one rank's part ------------------------------------------------------------------------
    def forward_backward(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        loss, acc, stop = self.micro_step(x, y, self._sigint)
        self._interrupt = stop  # every rank's, so all stop after this same step
        self._check_loss(loss)
        return loss, acc

    def _on_sigint(self, signum, frame):
        if self._sigint:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._sigint = True

    def save_checkpoint(self) -> None:
        if self.comm.rank == 0:
            super().save_checkpoint()

    def evaluate_test(self) -> Evaluation:
        """:func:`~stablecnn.training.metrics.evaluate` split across the ranks: rank ``r`` runs
        its share of the whole evaluation batches, and the predictions and each batch's loss sum
        are gathered and added in batch order, the single-process result bit for bit."""
        images, labels, size = self.test_images, self.test_labels, self.config.eval_batch_size
        n, comm = len(images), self.comm
        batches = -(-n // size)
        ranges = [rank_range(batches, comm.size, k) for k in range(comm.size)]
        spans = [(r.start * size, min(r.stop * size, n)) for r in ranges]
        lo, hi = spans[comm.rank]
        predictions = np.empty(hi - lo, np.int64)
        sums = np.empty(len(ranges[comm.rank]), np.float64)
        if hi > lo:
            for i, (start, logp) in enumerate(
                log_probabilities(self.model, images[lo:hi], self.normalizer, size, self.config.tta)
            ):
                y = labels[lo + start : lo + start + len(logp)].astype(np.intp)
                predictions[start : start + len(y)] = logp.argmax(axis=1)
                sums[i] = float(logp[np.arange(len(y)), y].sum(dtype=np.float64))
        what = "the evaluation's all-gather"
        predictions = comm.allgather(
            predictions.view(np.uint8), [8 * (b - a) for a, b in spans], what
        ).view(np.int64)
        sums = comm.allgather(sums.view(np.uint8), [8 * len(r) for r in ranges], what)
        total_loss = 0.0
        for s in sums.view(np.float64):  # in batch order, as evaluate() adds them
            total_loss -= float(s)
        return Evaluation(
            accuracy=float(np.mean(predictions == labels)),
            loss=total_loss / n,
            predictions=predictions,
            confusion=confusion_matrix(labels, predictions, self.num_classes),
        )

    def _stop_on_error(self, exc, what, restore):
        """As the Trainer's when every rank met the error (they agree within
        :data:`ERROR_GRACE` s); else this rank's own: rank 0 still saves the last completed step,
        and the error is marked for :func:`guard` to stop every rank."""
        agreed = self.comm.agree_on_error(ERROR_GRACE)
        if not agreed and self.comm.rank != 0:
            kept = self.checkpoint_path if self.checkpoint_path.exists() else None
            exc.stablecnn_agreed = False
            if hasattr(exc, "add_note"):
                exc.add_note(
                    f"stablecnn: training failed {what} on this rank only; every rank stops. "
                    + (
                        f"The last checkpoint, {kept}, is intact. Resume with: stablecnn train "
                        f"--resume {self.run_dir}"
                        if kept
                        else "No checkpoint had been written yet."
                    )
                )
            raise exc
        try:
            super()._stop_on_error(exc, what, restore)
        except BaseException as raised:
            raised.stablecnn_agreed = agreed
            raise


def guard(comm, exc: BaseException) -> None:
    """What a rank does with an error that ends its run (call it from ``except``, then
    re-raise): nothing when every rank met it (they agree within :data:`ERROR_GRACE` s, or did
    already in the step); else print this rank, its host and process id and the error, and stop
    every rank (``MPI_Abort``)."""
    if comm.size == 1:
        return
    agreed = getattr(exc, "stablecnn_agreed", None)
    if agreed is None:
        agreed = comm.agree_on_error(ERROR_GRACE)
        try:
            exc.stablecnn_agreed = agreed
        except AttributeError:  # an exception type without a __dict__
            pass
    if agreed:
        return
    detail = str(exc) if isinstance(exc, StableCNNError) else f"{type(exc).__name__}: {exc}"
    notes = "".join(f"\n{note}" for note in getattr(exc, "__notes__", ()))
    if not isinstance(exc, (StableCNNError, OSError, KeyboardInterrupt)):  # a bug: where
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        notes = ""  # printed with it
    print(
        f"stablecnn: {comm.describe()} failed: {detail}{notes}\n"
        f"stablecnn: stopping every rank of the run (MPI_Abort)",
        file=sys.stderr,
        flush=True,
    )
    comm.abort()


def exit_status(exc: BaseException) -> int:
    """The status the command line gives ``exc`` (:mod:`stablecnn.cli`)."""
    if isinstance(exc, (Interrupted, KeyboardInterrupt)):
        return 130
    if isinstance(exc, (StableCNNError, OSError)):
        return 2
    if isinstance(exc, SystemExit):
        return int(exc.code or 0)
    return 1


def load_data_in_turn(comm, load):
    """``load()`` on rank 0 first (it fetches and verifies the data into the cache), then on
    the others, which read the cache. The wait is not watched: a download may take minutes."""
    if comm.rank == 0:
        data = load()
    comm.barrier(watch=False)
    if comm.rank != 0:
        data = load()
    return data


def share_text(comm, text: str) -> str:
    """Rank 0's ``text`` on every rank (a run directory named after the time, for one)."""
    raw = np.frombuffer(text.encode(), np.uint8) if comm.rank == 0 else np.zeros(0, np.uint8)
    size = comm.bcast(np.array([raw.size], np.int64))
    buf = raw.copy() if comm.rank == 0 else np.empty(int(size[0]), np.uint8)
    return comm.bcast(buf).tobytes().decode()


def rank_table(comm) -> list[str]:
    """One line per rank: its host and process id (so ``mpiexec``'s report of a dead process id
    names the rank)."""
    me = f"{os.uname().nodename} pid {os.getpid()}".encode()[:96].ljust(96)
    everyone = comm.allgather(np.frombuffer(me, np.uint8), [96] * comm.size, "the rank table")
    return [
        f"rank {k}: {everyone[96 * k : 96 * (k + 1)].tobytes().decode().strip()}"
        for k in range(comm.size)
    ]


def describe_run(comm, config) -> str:
    """The run's layout in one line, for rank 0 to print."""
    parts = config.micro_batches
    shares = sorted({len(rank_range(parts, comm.size, k)) for k in range(comm.size)})
    uneven = (
        f"; {parts} micro-batches do not share evenly over {comm.size} ranks ({shares[0]} or "
        f"{shares[-1]} each): the ranks with fewer wait for the others"
        if len(shares) > 1
        else ""
    )
    return (
        f"distributed: {comm.size} rank{'s' * (comm.size > 1)}, {parts} micro-batches of each "
        f"batch of {config.batch_size}, {parallel.get_num_threads()} thread"
        f"{'s' * (parallel.get_num_threads() > 1)} a rank{uneven}"
    )


def check_ranks(comm, config) -> None:
    """Refuse a run with more ranks than micro-batches before anything is read.

    Raises:
        ConfigError: ``comm.size > config.micro_batches``.
    """
    if comm.size > config.micro_batches:
        raise ConfigError(
            f"{comm.size} ranks but the run has {config.micro_batches} micro-batches: each rank "
            f"needs a whole one; start it with --micro-batches {comm.size} or more (resuming, "
            f"use {config.micro_batches} ranks or fewer)"
        )


__all__ = [
    "DistributedTrainer",
    "MPIComm",
    "LocalComm",
    "guard",
    "exit_status",
    "load_data_in_turn",
    "share_text",
    "rank_table",
    "describe_run",
    "check_ranks",
    "default_micro_batches",
    "threads_per_rank",
    "DEFAULT_MICRO_BATCHES",
    "ERROR_GRACE",
]
