"""The communication a data-parallel run needs: one process (:class:`LocalComm`) or MPI ranks
(:class:`MPIComm`).

The training step (:mod:`stablecnn.training.microbatch`) sends byte buffers of sizes both ranks
know from one rank to another and broadcasts one; the distributed trainer
(:mod:`stablecnn.training.distributed`) adds an all-gather (``MPI_Allgatherv``), a barrier and the
agreement on an error. Messages are plain bytes and NumPy arrays, never pickles.

A collective that one rank never joins would wait for ever, so every collective of a step runs
under a watchdog: a thread that, when the collective has not completed after ``timeout`` seconds,
prints which rank waited for what and stops every rank with ``MPI_Abort`` (a killed rank is
noticed sooner: ``mpiexec`` stops the others when one dies). ``MPI_Abort`` from the watchdog's
thread needs MPI's ``MPI_THREAD_MULTIPLE``, which mpi4py asks for by default.

A rank waiting for a step's message or broadcast polls it, sleeping 0.1 ms between polls once
200 polls have failed, where MPI's own wait spins: with more ranks than cores, a spinning rank
takes the core that the rank it waits for needs (``STABLECNN_MPI_SPIN=1`` keeps MPI's wait, for
comparison).

mpi4py and an MPI runtime are optional (``pip install "stablecnn[mpi]"``: mpi4py and MPICH's
wheel); :func:`mpi_world` says so when either is missing.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from stablecnn.errors import ConfigError

INSTALL = 'pip install "stablecnn[mpi]"'
DEFAULT_TIMEOUT = 300.0  # seconds a step's collective may wait before the run is stopped
ABORT_CODE = 70  # the exit status of every rank of a run stopped by MPI_Abort
SPIN_POLLS = 200  # polls of a collective before waiting with sleeps (see MPIComm._wait)
POLL_SLEEP = 1e-4  # seconds between two polls after those
# seconds between a rank's last words and MPI_Abort: mpiexec forwards a rank's stderr through
# its proxy, and an abort at once can tear the job down before the message is forwarded (seen
# under load: exit status 70 and an empty stderr, tests/distributed/test_mpi.py's watchdog test)
ABORT_GRACE = 0.5


class CommStats:
    """What a rank's collectives cost: calls, seconds spent in them (waiting included), bytes
    this rank contributed and bytes it received."""

    def __init__(self) -> None:
        self.calls, self.seconds, self.bytes_sent, self.bytes_received = 0, 0.0, 0, 0

    def reset(self) -> None:
        self.__init__()


class LocalComm:
    """One process: rank 0 of 1, every collective the identity."""

    rank, size = 0, 1
    local_size = 1  # ranks on this machine

    def __init__(self) -> None:
        self.stats = CommStats()

    def allgather(self, send: np.ndarray, counts: list[int], what: str = "") -> np.ndarray:
        """The concatenation, in rank order, of every rank's ``send`` (uint8, ``counts[r]``
        bytes from rank ``r``): here ``send`` itself."""
        return send

    def barrier(self, what: str = "", watch: bool = True) -> None:
        pass

    def bcast(self, array: np.ndarray, root: int = 0, what: str = "") -> np.ndarray:
        return array

    def send(self, data: np.ndarray, dest: int, what: str = "") -> None:
        raise RuntimeError("one process has no other rank to send to")

    def recv(self, nbytes: int, source: int, what: str = "") -> np.ndarray:
        raise RuntimeError("one process has no other rank to receive from")

    def agree_on_error(self, seconds: float) -> bool:
        return True

    def abort(self, code: int = ABORT_CODE) -> None:
        os._exit(code)

    def describe(self) -> str:
        return "1 process"


def mpi_world(timeout: float = DEFAULT_TIMEOUT) -> MPIComm:
    """:class:`MPIComm` over ``MPI_COMM_WORLD``.

    Raises:
        ConfigError: mpi4py is not installed or finds no MPI library, naming the install
            command.
    """
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as exc:
        raise ConfigError(
            f"--distributed needs mpi4py and an MPI runtime ({type(exc).__name__}: {exc}); "
            f"install both with: {INSTALL} (mpi4py and MPICH from PyPI, no compiler needed), "
            f"then start the run with: mpiexec -n K stablecnn train --distributed ..."
        ) from None
    return MPIComm(MPI.COMM_WORLD, timeout)


class MPIComm:
    """MPI ranks of a communicator (``MPI_COMM_WORLD`` for a run), with a watchdog on every
    collective.

    Args:
        comm: an ``mpi4py.MPI.Comm``.
        timeout: seconds a watched collective may wait before the watchdog stops the run.

    Raises:
        ConfigError: ``timeout`` not a positive number.
    """

    def __init__(self, comm, timeout: float = DEFAULT_TIMEOUT) -> None:
        from mpi4py import MPI

        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"the MPI timeout must be a positive number of seconds: {timeout!r}")
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.local_size = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        self._errors = comm.Dup()  # the agreement on an error never meets a step's collective
        self.timeout = float(timeout)
        self.stats = CommStats()
        self._deadline: float | None = None
        self._what = ""
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size} (pid {os.getpid()} on {socket.gethostname()})"

    # -- the watchdog -------------------------------------------------------------------------
    @contextmanager
    def _watch(self, what: str, watch: bool = True):
        if watch and self.size > 1:
            with self._lock:
                self._deadline, self._what = time.monotonic() + self.timeout, what
                if self._watchdog is None:
                    self._watchdog = threading.Thread(
                        target=self._watch_loop, name="stablecnn-mpi-watchdog", daemon=True
                    )
                    self._watchdog.start()
        t = time.perf_counter()
        try:
            yield
        finally:
            self.stats.calls += 1
            self.stats.seconds += time.perf_counter() - t
            with self._lock:
                self._deadline = None

    def _watch_loop(self) -> None:
        tick = min(1.0, self.timeout / 4)
        while True:
            time.sleep(tick)
            with self._lock:
                late = self._deadline is not None and time.monotonic() > self._deadline
                what = self._what
            if late:
                print(
                    f"stablecnn: {self.describe()} waited {self.timeout:g} s for the other ranks "
                    f"in {what}; one of them is stuck or gone. Stopping every rank (MPI_Abort); "
                    f"the last checkpoint is intact. (--mpi-timeout sets this limit)",
                    file=sys.stderr,
                    flush=True,
                )
                self.abort()

    # -- collectives --------------------------------------------------------------------------
    def allgather(self, send: np.ndarray, counts: list[int], what: str = "") -> np.ndarray:
        """The concatenation, in rank order, of every rank's ``send`` (uint8; rank ``r`` sends
        ``counts[r]`` bytes, which every rank must know), by ``MPI_Allgatherv``."""
        MPI = self.MPI
        counts = [int(c) for c in counts]
        if len(send) != counts[self.rank]:
            raise ValueError(f"rank {self.rank} sends {len(send)} bytes, {counts[self.rank]} due")
        recv = np.empty(sum(counts), np.uint8)
        displs = np.concatenate(([0], np.cumsum(counts)[:-1])).tolist()
        with self._watch(what or "a step's all-gather"):
            request = self.comm.Iallgatherv(
                [np.ascontiguousarray(send), MPI.BYTE], [recv, counts, displs, MPI.BYTE]
            )
            self._wait(request)
        self.stats.bytes_sent += len(send)
        self.stats.bytes_received += len(recv) - len(send)
        return recv

    def _wait(self, request) -> None:
        """Wait for ``request``: polled, and after a while with sleeps between the polls, so
        that a rank waiting for a slower one leaves the core to it (MPI's own wait spins, which
        on a machine with more ranks than cores takes the time the others need)."""
        if os.environ.get("STABLECNN_MPI_SPIN"):
            request.Wait()
            return
        for _ in range(SPIN_POLLS):
            if request.Test():
                return
        while not request.Test():
            time.sleep(POLL_SLEEP)

    def barrier(self, what: str = "", watch: bool = True) -> None:
        """Wait for every rank (watched unless ``watch=False``: rank 0 fetching the data may
        take minutes)."""
        with self._watch(what or "a barrier", watch):
            self.comm.Barrier()

    def bcast(self, array: np.ndarray, root: int = 0, what: str = "") -> np.ndarray:
        """``array`` of rank ``root`` on every rank (the same shape and dtype everywhere), in
        place."""
        with self._watch(what or "a broadcast"):
            self._wait(self.comm.Ibcast(array, root=root))
        if self.rank == root:
            self.stats.bytes_sent += array.nbytes
        else:
            self.stats.bytes_received += array.nbytes
        return array

    def send(self, data: np.ndarray, dest: int, what: str = "") -> None:
        """Send the bytes ``data`` (uint8) to rank ``dest``, which receives them with
        :meth:`recv` (messages between two ranks arrive in the order sent)."""
        with self._watch(what or "a send"):
            self._wait(self.comm.Isend([np.ascontiguousarray(data), self.MPI.BYTE], dest=dest))
        self.stats.bytes_sent += data.nbytes

    def recv(self, nbytes: int, source: int, what: str = "") -> np.ndarray:
        """The next ``nbytes`` bytes rank ``source`` sends this one (uint8)."""
        buf = np.empty(nbytes, np.uint8)
        with self._watch(what or "a receive"):
            self._wait(self.comm.Irecv([buf, self.MPI.BYTE], source=source))
        self.stats.bytes_received += nbytes
        return buf

    def agree_on_error(self, seconds: float) -> bool:
        """Whether every rank reaches this call within ``seconds``: True when an error was raised
        on every rank alike (they agree to stop), False when the others are still computing or
        waiting in a collective (the error is this rank's own)."""
        request = self._errors.Ibarrier()
        end = time.monotonic() + seconds
        while not request.Test():
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    def abort(self, code: int = ABORT_CODE) -> None:
        """Stop every rank of the run (``MPI_Abort``), :data:`ABORT_GRACE` seconds after flushing
        this rank's output, so that mpiexec forwards the reason before it stops the job."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE)
        self.comm.Abort(code)
