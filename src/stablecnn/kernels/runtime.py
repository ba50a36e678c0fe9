"""Process-wide settings that decide how fast NumPy can train: threads and the allocator.

:func:`configure` is what :class:`~stablecnn.training.trainer.Trainer`, the command line and the
benchmark call: :func:`keep_freed_memory` below, and
:func:`stablecnn.kernels.parallel.set_num_threads` with the default thread count unless the program
chose one already.

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

__all__ = ["configure", "keep_freed_memory", "MMAP_THRESHOLD"]

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
    if os.environ.get("STABLECNN_KEEP_FREED_MEMORY", "1").strip() in ("0", "false", "no", "off"):
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
    from stablecnn.kernels import parallel

    keep_freed_memory()
    if threads is not None or not parallel.configured():
        parallel.set_num_threads(parallel.default_num_threads() if threads is None else threads)
