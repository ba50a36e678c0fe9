"""Process-wide settings that decide how fast NumPy can train: threads and the allocator.

:func:`configure` is what :class:`~stablecnn.training.trainer.Trainer`, the command line and the
benchmark call: :func:`keep_freed_memory` below, and
:func:`stablecnn.kernels.parallel.set_num_threads` with the default thread count unless the program
chose one already.

Defaults for a program that calls neither
-----------------------------------------
Importing stablecnn changes nothing. The first time one of its kernels splits work (the first
forward pass, in practice), :func:`apply_defaults` runs once and sets what :func:`decide`
returns for the process's environment and its BLAS's current thread count:

- Nothing set by the user (none of :data:`BLAS_THREAD_VARS`, and BLAS at its own default of one
  thread per CPU): what :func:`configure` does. stablecnn's pool runs on
  :func:`~stablecnn.kernels.parallel.default_num_threads` threads and BLAS on one thread per
  block (through threadpoolctl, for the whole process), and freed memory is kept for reuse.
- The user set BLAS's threads (one of :data:`BLAS_THREAD_VARS` such as
  ``OPENBLAS_NUM_THREADS``, or a count other than one per CPU: threadpoolctl,
  ``openblas_set_num_threads``): BLAS is left as it is. stablecnn's pool takes the default
  threads only if BLAS is at one thread; otherwise it stays at one thread, so BLAS's threads
  have the cores.
- The allocator is left as it is if the user set glibc's malloc thresholds
  (:data:`MALLOC_VARS`, or ``glibc.malloc.`` in ``GLIBC_TUNABLES``) or
  ``STABLECNN_KEEP_FREED_MEMORY=0``.
- A program that calls :func:`configure` or ``parallel.set_num_threads`` before the first
  forward pass gets what it asked for; :func:`apply_defaults` then does nothing.

Why, measured with ``benchmarks/bench.py --busy`` (2 CPUs, one of them taken by a competing
NumPy loop; the figures are each framework's busy speed over its idle speed): on NumPy's
default BLAS (two spinning OpenBLAS threads, stablecnn on one) a library user kept 0.35 of
Model 1's training speed and 0.33-0.42 of md2's (training, inference, latency), and a single
image's 95th-percentile latency rose from 0.49 to 4.6 ms; with these defaults 0.55-0.96
(Model 1 0.72 training and 0.69 inference, md2 0.63, 0.55 and 0.96 latency), as on the command
line's path, and Model 1's p95 latency 0.69 ms busy. Idle, the library path had trained Model 1
at 0.80x PyTorch, the command line's at 0.98x.

The cost: NumPy products the program makes itself run on one BLAS
thread too once a stablecnn model has run; a program that wants its own products threaded sets
``OPENBLAS_NUM_THREADS`` (or ``OMP_NUM_THREADS``) and stablecnn leaves BLAS alone. Under load,
stablecnn's own pool hands out its work in more pieces than threads, claimed in turn, so the
thread that shares its core does fewer (:mod:`stablecnn.kernels.parallel`).

A training step of Model 1 allocates and frees about a hundred arrays of 0.1 to 20 MB. glibc's
``malloc`` serves every block above its mmap threshold (128 KiB at start, raised only by what it
has seen freed) with a fresh ``mmap`` and unmaps it on ``free``, so the next step touches new
pages and the kernel zeroes each 4 KiB page on first touch: about 4,900 page faults and 25-30 ms
of a 80-100 ms step (measured with ``resource.getrusage``; the arithmetic is unchanged).

:func:`keep_freed_memory` asks glibc (``mallopt``) to serve blocks up to 32 MiB from its heap and
to keep freed heap memory for reuse instead of returning it to the kernel. The peak resident set
does not grow (it is set by the largest step, which the process touches anyway); memory freed
after the peak stays with the process until it exits. :class:`~stablecnn.training.trainer.Trainer`
and the command line call it; library users who drive the layers themselves can call it once.

On a C library other than glibc (musl, macOS, Windows) it does nothing and returns False.
Setting the environment variable ``STABLECNN_KEEP_FREED_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass

from stablecnn.kernels import parallel

__all__ = [
    "configure",
    "keep_freed_memory",
    "decide",
    "apply_defaults",
    "Defaults",
    "MMAP_THRESHOLD",
    "BLAS_THREAD_VARS",
    "MALLOC_VARS",
]

# Variables through which a user sets the BLAS's threads (OpenBLAS reads the first three, MKL,
# BLIS and Accelerate theirs): any of them set, stablecnn leaves BLAS alone.
BLAS_THREAD_VARS = (
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
# glibc's own settings of what keep_freed_memory sets: any of them set, the allocator is left alone
MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_OFF = ("0", "false", "no", "off")

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit systems
_TRIM_THRESHOLD = 2**31 - 1  # mallopt's int maximum: keep up to 2 GiB of free heap top

_applied: bool | None = None


def _glibc():
    """The loaded glibc as a ``ctypes.CDLL``, or None on any other C library."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Let glibc reuse freed memory for large arrays instead of unmapping it (see module doc).

    Idempotent. Returns whether the setting is in force.
    """
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get("STABLECNN_KEEP_FREED_MEMORY", "1").strip().lower() in _OFF:
        _applied = False
        return False
    libc = _glibc()
    if libc is None:
        _applied = False
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and ok
    _applied = ok
    return ok


def configure(threads: int | None = None) -> None:
    """Keep freed memory for reuse and run stablecnn on ``threads`` threads (default: the
    number already set by :func:`stablecnn.kernels.parallel.set_num_threads`, else
    :func:`stablecnn.kernels.parallel.default_num_threads`)."""
    keep_freed_memory()
    if threads is not None or not parallel.configured():
        parallel.set_num_threads(parallel.default_num_threads() if threads is None else threads)


@dataclass(frozen=True)
class Defaults:
    """What :func:`apply_defaults` sets: stablecnn's pool of ``threads``, BLAS to one thread
    (``blas_to_one``), freed memory kept (``keep_freed_memory``); ``reason`` says why."""

    threads: int
    blas_to_one: bool
    keep_freed_memory: bool
    reason: str


def decide(environ: Mapping[str, str], blas_threads: list[int], cpus: set[int]) -> Defaults:
    """The defaults for a program that configured nothing (the rules of the module doc).

    Args:
        environ: the process environment (``os.environ``).
        blas_threads: the current thread count of each BLAS loaded (threadpoolctl's
            ``num_threads``), empty when none is found.
        cpus: the counts a BLAS starts with when nobody sets it: the CPUs of the machine and
            those this process may run on.

    Raises:
        ConfigError: ``STABLECNN_NUM_THREADS`` is not a positive integer.
    """
    user_vars = [name for name in BLAS_THREAD_VARS if environ.get(name, "").strip()]
    changed = [n for n in blas_threads if n not in cpus]
    if user_vars:
        blas_to_one, reason = False, f"BLAS threads set by the user ({', '.join(user_vars)})"
    elif changed:
        blas_to_one, reason = False, f"BLAS threads set by the program ({changed[0]})"
    elif not blas_threads:
        blas_to_one, reason = False, "no BLAS found to set"
    else:
        blas_to_one, reason = True, "nothing set: the command line's threads"
    single = blas_to_one or all(n == 1 for n in blas_threads)
    threads = parallel.default_num_threads(environ) if single else 1
    tunables = environ.get("GLIBC_TUNABLES", "")
    keep = not (
        any(environ.get(name, "").strip() for name in MALLOC_VARS)
        or "glibc.malloc." in tunables
        or environ.get("STABLECNN_KEEP_FREED_MEMORY", "1").strip().lower() in _OFF
    )
    return Defaults(threads, blas_to_one, keep, reason)


def apply_defaults() -> Defaults:
    """Set :func:`decide`'s defaults for this process (see the module doc); returns them.

    Called once by :mod:`stablecnn.kernels.parallel` the first time a kernel splits work, when
    the program has not set stablecnn's threads.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    cpus = {os.cpu_count() or 1}
    if hasattr(os, "sched_getaffinity"):
        cpus.add(len(os.sched_getaffinity(0)))
    defaults = decide(os.environ, blas, cpus)
    if defaults.keep_freed_memory:
        keep_freed_memory()
    parallel._set_pool(defaults.threads)
    if defaults.blas_to_one:
        threadpool_limits(limits=1, user_api="blas")
    return defaults


parallel.on_first_use = apply_defaults  # see stablecnn.kernels.parallel._first_use
