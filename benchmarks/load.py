"""A competing process that keeps one CPU busy while the benchmark measures (``bench.py --busy``).

The competitor is a NumPy loop, ``np.sin`` over a 128 KiB array again and again: it computes
without pause, stays in its core's cache (so it takes a core, not the memory bus) and never
sleeps, like a user's other number crunching. It is pinned to one CPU (by default the last one
this process may use; ``--busy-cpu none`` leaves it to the scheduler), so exactly one core of the
machine is taken, whichever threads the benchmark's workers run; the workers themselves are not
pinned, and the scheduler shares that core between them and the competitor.

The competitor never outlives the benchmark:

- :func:`competing_load` is a context manager: leaving it by any path (the end of the block,
  an exception, Ctrl-C's ``KeyboardInterrupt``) kills the process and waits for it;
- ``bench.py`` calls :func:`raise_on_sigterm`, which turns SIGTERM into ``SystemExit``, so a
  ``kill`` of the benchmark also runs the context's exit;
- should the benchmark itself die without running any code (SIGKILL), the competitor asks Linux
  to kill it when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) and, on any system,
  exits by itself when it sees its parent gone (its parent pid changes) or after ``max_seconds``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

# The competitor's program: argv[1] the CPU to pin to ("none": not pinned), argv[2] the parent's
# pid, argv[3] the most seconds to live. It prints "ready" once it is pinned and running.
SPIN = textwrap.dedent("""
    import ctypes, os, sys, time
    import numpy as np
    cpu, parent, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    try:  # Linux: die with the parent even if it is killed with SIGKILL
        ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass
    if cpu != "none" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})
    a = np.linspace(0.0, 1.0, 1 << 14)  # 128 KiB of float64: stays in the core's cache
    print("ready", flush=True)
    end = time.monotonic() + limit
    while os.getppid() == parent and time.monotonic() < end:
        for _ in range(100):  # about 20 ms of work between checks
            np.sin(a, out=a)
""")


def default_cpu() -> int | None:
    """The last CPU this process may run on (None where affinity is unknown)."""
    try:
        return max(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return None


def start(cpu: int | None, max_seconds: float = 3600.0) -> subprocess.Popen:
    """Start the competitor pinned to ``cpu`` (None: not pinned) and wait until it runs.

    Raises:
        RuntimeError: the competitor exited before saying it was ready (its stderr quoted).
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", SPIN, "none" if cpu is None else str(cpu), str(os.getpid())]
        + [str(max_seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if line != "ready":
        stop(proc)
        raise RuntimeError(f"the competing process did not start: {proc.stderr.read().strip()}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Kill the competitor (if it still runs) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def competing_load(cpu: int | None, enabled: bool = True, max_seconds: float = 3600.0):
    """``with competing_load(cpu):`` runs the block while the competitor keeps ``cpu`` busy
    (nothing when ``enabled`` is False); the competitor is killed when the block is left, by
    any path. Yields the process (or None)."""
    if not enabled:
        yield None
        return
    proc = start(cpu, max_seconds)
    try:
        yield proc
    finally:
        stop(proc)


def raise_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so ``finally`` blocks (the competitor's kill) run."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
