"""stablecnn's own threads: element-wise kernels and matrix products split across cores.

A NumPy ufunc or copy runs on one core, and in a training step of Model 1 a third of the time is
such memory-bound passes (max-pool, the window copies of the convolutions, the optimizer
update). NumPy releases the GIL inside those loops and inside BLAS, so splitting an array into
one span per thread and running the spans on a small pool uses every core for them too.

Multi-threaded BLAS does not mix with that: its idle workers spin between products and take the
cores our spans need (a max-pool span ran at half speed beside them). So stablecnn sets BLAS to
one thread and splits each large product into column (or row) blocks itself, handed out to its
own threads: measured on 2 cores, as fast as two BLAS threads on every Model 1 product.

Importing stablecnn changes nothing. :class:`~stablecnn.training.trainer.Trainer`, the command
line and the benchmark call ``set_num_threads(default_num_threads())``; the default is the CPUs
this process may use, or ``STABLECNN_NUM_THREADS``. A program that calls neither gets
:func:`stablecnn.kernels.runtime.apply_defaults` the first time a kernel splits work here (the
first :func:`spans` or :func:`for_each_block`): the same threads as the command line's unless
the user set BLAS's threads themselves (see :mod:`stablecnn.kernels.runtime`).

Work is handed out in more pieces than threads, and each thread claims the next piece when it
finishes one: on a machine where another process takes a core, the thread that shares that core
does fewer pieces instead of holding the others up. Where each piece falls is fixed by the
shapes (the blocks of a product, :func:`grid`) or does not matter (element-wise spans), so
which thread claims which piece never changes a result.

Results are bit-identical for any thread count (once :func:`set_num_threads` has put BLAS on one
thread), for two reasons:

- Element-wise work (copies, ufuncs, the optimizer's update) gives each element the same
  operations wherever a span ends, so it is split into one span per thread (:func:`split`).
- A product is *not* split where the threads fall. A BLAS kernel does not promise that a column
  (or row) block of a product equals the same block of the whole product. OpenBLAS 0.3.31's
  float32 kernel on an AMD EPYC ('Haswell' kernels) rounds an element differently depending on
  where it falls in the whole call: with ``a`` and ``b`` (64, 64), the last 8 columns of
  ``a @ b[:, :32]`` differ in the last bits from the same columns of ``a @ b``, and so do
  blocks of Model 1's products; float64, and the kernel of the machine this was first written
  on, happened to agree. The one property relied on is that the same call (same operands, same
  shapes, one BLAS thread) gives the same result. So every product is cut by a :func:`grid` of
  blocks fixed by its shapes and constants alone, the same grid on one thread as on many, and
  :func:`for_each_block` hands each thread a run of whole blocks. The grid has a multiple of
  :data:`GRID` blocks where the work allows (equal shares for 1, 2, 3, 4, 6 or 12 threads),
  else a power of two.

Reductions (a bias gradient's sum) are not split, except by :func:`sum_in_order`, whose parts
are fixed and added in a fixed order whatever the thread count.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from stablecnn.errors import ConfigError

__all__ = [
    "default_num_threads",
    "get_num_threads",
    "set_num_threads",
    "spans",
    "run",
    "for_each_span",
    "split",
    "outer_axis",
    "matmul",
    "sum_in_order",
    "blocks",
    "grid",
    "for_each_block",
    "product_grid",
    "MIN_SPAN",
    "MIN_BLOCK",
    "MIN_MACS",
    "GRID",
    "ALIGN",
    "MAX_REPACK",
]

# Handing a span to the pool and waiting for it costs 80-130 us here, about what one
# element-wise pass over 2**17 elements takes: smaller work stays in the calling thread.
MIN_SPAN = 1 << 17  # elements per thread
MIN_MACS = 1 << 23  # multiply-adds per thread of a product (~0.1 ms on one core)

_state = threading.local()  # .busy: this thread is running a span, so nested calls run inline
_lock = threading.Lock()
_threads = 1
_configured = False  # set_num_threads was called
_defaults_applied = False  # runtime.apply_defaults ran (on first use) or was not needed
_pool: ThreadPoolExecutor | None = None
# Called once, the first time a kernel splits work, if the program set no threads: stablecnn's
# runtime module puts its apply_defaults here when it is imported (stablecnn's __init__ imports
# it), so that this module, which runtime builds on, does not import it back.
on_first_use: Callable[[], object] | None = None
PIECES = 4  # element-wise work: pieces per thread, claimed in turn (see the module doc)


def default_num_threads(environ=None) -> int:
    """``STABLECNN_NUM_THREADS`` if set (in ``environ``, default ``os.environ``), else the number
    of CPUs this process may run on.

    Raises:
        ConfigError: ``STABLECNN_NUM_THREADS`` is not a positive integer.
    """
    environ = os.environ if environ is None else environ
    value = environ.get("STABLECNN_NUM_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"STABLECNN_NUM_THREADS must be a positive integer, got {value!r}")
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def get_num_threads() -> int:
    """The number of threads stablecnn runs on (1 until :func:`set_num_threads`, or until the
    first kernel applies the defaults of :func:`stablecnn.kernels.runtime.apply_defaults`)."""
    return _threads


def set_num_threads(n: int) -> None:
    """Run stablecnn on exactly ``n`` threads: NumPy's BLAS is set to one thread (through
    threadpoolctl, for the whole process) and stablecnn splits products and element-wise work
    across its own ``n`` (see the module doc)."""
    global _configured
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"the number of threads must be a positive int, got {n!r}")
    _set_pool(n)
    _configured = True
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _set_pool(n: int) -> None:
    """Run stablecnn's own work on ``n`` threads; BLAS untouched."""
    global _threads, _pool
    with _lock:
        _threads = n
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None


def configured() -> bool:
    """Whether :func:`set_num_threads` has been called in this process."""
    return _configured


def _first_use() -> None:
    """Call :data:`on_first_use` (:func:`stablecnn.kernels.runtime.apply_defaults`) once, the
    first time a kernel splits work, unless the program set the threads itself."""
    global _defaults_applied
    with _lock:
        if _defaults_applied:
            return
        _defaults_applied = True
    if not _configured and on_first_use is not None:
        on_first_use()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(get_num_threads() - 1, 1), thread_name_prefix="stablecnn"
            )
        return _pool


def spans(total: int, min_span: int = MIN_SPAN) -> list[tuple[int, int]]:
    """Split ``range(total)`` into at most :func:`get_num_threads` near-equal ``(start, stop)``
    spans of at least ``min_span`` items each (one span when the work is small)."""
    if not _defaults_applied:
        _first_use()
    parts = max(1, min(get_num_threads(), total // max(min_span, 1)))
    if getattr(_state, "busy", False):
        parts = 1
    bounds = [total * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def _guarded(task: Callable[[], object]):
    _state.busy = True
    try:
        return task()
    finally:
        _state.busy = False


def run(tasks: list[Callable[[], object]]) -> list:
    """Call every task (the first in this thread, the rest on the pool); return their results.

    All tasks finish before this returns, even if one raises; the first exception is re-raised.
    """
    if len(tasks) <= 1 or getattr(_state, "busy", False):
        return [task() for task in tasks]
    futures = [_executor().submit(_guarded, task) for task in tasks[1:]]
    error = None
    try:
        first = [_guarded(tasks[0])]
    except BaseException as exc:  # still wait for the others: they write into shared arrays
        error, first = exc, []
    results = []
    for future in futures:
        try:
            results.append(future.result())
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error
    return first + results


def blocks(start: int, stop: int, item_bytes: int, block_bytes: int) -> list[tuple[int, int]]:
    """``range(start, stop)`` as consecutive ``(a, z)`` blocks of about ``block_bytes`` each,
    ``item_bytes`` per item (at least one item a block): a thread works its span a block at a
    time so that several passes over a block find it in cache."""
    step = max(1, block_bytes // max(item_bytes, 1))
    return [(a, min(a + step, stop)) for a in range(start, stop, step)]


def for_each_span(total: int, fn: Callable[[int, int], object], min_span: int = MIN_SPAN) -> None:
    """``fn(start, stop)`` over consecutive pieces of ``range(total)``, in parallel: as many
    threads as :func:`spans` gives, each claiming the next of :data:`PIECES` pieces per thread
    (of at least ``min_span // PIECES`` items) as it finishes one. For work whose result does not
    depend on where the pieces fall."""
    parts = len(spans(total, min_span))
    if parts <= 1 or getattr(_state, "busy", False):
        fn(0, total)
        return
    count = min(parts * PIECES, total // max(1, min_span // PIECES))
    bounds = [total * i // count for i in range(count + 1)]
    _claim(count, lambda i: fn(bounds[i], bounds[i + 1]), parts)


def _claim(count: int, call: Callable[[int], object], parts: int) -> None:
    """``call(i)`` for i in ``range(count)``, each once, on ``parts`` threads that claim the next
    ``i`` in turn as they finish one; after an exception no new ``i`` is claimed."""
    lock = threading.Lock()
    state = {"next": 0, "failed": False}

    def worker():
        while True:
            with lock:
                i = state["next"]
                if i >= count or state["failed"]:
                    return
                state["next"] = i + 1
            try:
                call(i)
            except BaseException:
                state["failed"] = True
                raise

    run([worker] * parts)


def outer_axis(x: np.ndarray) -> int:
    """The axis with the largest stride among those longer than 1: spans along it are the most
    contiguous blocks of memory (0 for a 0-d or 1-element array)."""
    axes = [i for i in range(x.ndim) if x.shape[i] > 1]
    return max(axes, key=lambda i: abs(x.strides[i])) if axes else 0


def split(fn: Callable[..., object], *arrays: np.ndarray | None, axis: int | None = None) -> None:
    """``fn(*blocks)`` over spans of same-shaped ``arrays`` along ``axis`` (default: the
    :func:`outer_axis` of the first), one span per thread. ``None`` entries pass through.

    For element-wise work only: ``fn`` must compute each block from the same blocks of the
    inputs, so the result does not depend on where the spans fall.
    """
    first = arrays[0]
    if first.ndim == 0:
        fn(*arrays)
        return
    axis = outer_axis(first) if axis is None else axis
    per_item = first.size // max(first.shape[axis], 1)

    def on_span(a, b):
        index = (slice(None),) * axis + (slice(a, b),)
        fn(*(None if arr is None else arr[index] for arr in arrays))

    for_each_span(first.shape[axis], on_span, min_span=max(1, MIN_SPAN // max(per_item, 1)))


MIN_BLOCK = 32  # rows or columns of a product per block, below which it is not split
GRID = 12  # the block count a grid aims at where the work allows: equal shares for 1, 2, 3, 4, 6
# or 12 threads
ALIGN = 16  # a product's blocks start on multiples of this many rows or columns (64 bytes)
# Each block of a product is one BLAS call, which packs (copies) the whole operand the blocks
# share: a product's blocks copy it at most about this many bytes in all. Measured for
# (1000, 2704) @ (2704, 1024) on one core: 12 column blocks took 12% longer than 2, 4 blocks 3%.
MAX_REPACK = 1 << 26


def _even_counts(limit: int) -> list[int]:
    """Block counts that 2 threads share equally (and 3, 4 or 6 where they divide): 1, 2, 4, 6,
    8 and the multiples of 12, up to at least ``limit``."""
    counts = [1, 2, 4, 6, 8]
    while counts[-1] < limit:
        counts.append(12 * (len(counts) - 4))
    return counts


def grid(
    total: int, min_items: int = 1, max_items: int | None = None, align: int = 1, parts: int = GRID
) -> list[tuple[int, int]]:
    """``range(total)`` as consecutive ``(a, z)`` blocks that depend on the arguments only, never
    on the thread count: the blocks of a product, each one BLAS call (see the module doc).

    Blocks are near-equal, at most ``max_items`` long (none if None) and, as far as that allows,
    at least ``min_items`` long (work below that is not worth a call). Their count is the
    smallest of 1, 2, 4, 6, 8, 12, 24, 36, ... that is at least ``parts`` and at least what
    ``max_items`` needs, else the largest of them that ``min_items`` allows, else what
    ``max_items`` needs. Every block starts on a multiple of ``align`` (use
    ``min_items >= 2 * align``).
    """
    if total <= 0:
        return []
    least = 1 if max_items is None else -(-total // max(max_items, 1))
    most = max(1, total // max(min_items, 1))
    counts = _even_counts(max(least, parts))
    count = min(c for c in counts if c >= max(least, parts))
    if count > most:
        count = max(least, max(c for c in counts if c <= most))
    count = min(count, total)
    bounds = [total * i // count // align * align for i in range(count)] + [total]
    return [(bounds[i], bounds[i + 1]) for i in range(count) if bounds[i] < bounds[i + 1]]


def for_each_block(
    blocks: list[tuple],
    fn: Callable[..., object],
    sizes: list[float] | None = None,
    min_run: float = 0,
) -> None:
    """``fn(*block)`` for every block, in parallel: on as many threads as the work allows (at
    least ``min_run`` of the total ``sizes`` each, default ``z - a`` of each ``(a, z)``: a
    hand-off costs 80-130 us), each claiming the next block in order as it finishes one, so a
    thread slowed by another process does fewer blocks. Every block is computed whole by one
    call whichever thread takes it, so a :func:`grid` of blocks gives the same results at any
    thread count."""
    if not _defaults_applied:
        _first_use()
    if sizes is None:
        sizes = [block[1] - block[0] for block in blocks]
    parts = min(get_num_threads(), len(blocks))
    if min_run > 0:
        parts = min(parts, int(sum(sizes) // min_run))
    if parts <= 1 or getattr(_state, "busy", False):
        for block in blocks:
            fn(*block)
        return
    _claim(len(blocks), lambda i: fn(*blocks[i]), parts)


def product_grid(lines: int, macs_per_line: int, shared_bytes: int) -> list[tuple[int, int]]:
    """The :func:`grid` of a product cut into ``lines`` rows or columns, each costing
    ``macs_per_line`` multiply-adds, every block's call packing the ``shared_bytes`` operand
    they all read: blocks of at least :data:`MIN_BLOCK` lines and :data:`MIN_MACS`
    multiply-adds, and few enough to pack the shared operand :data:`MAX_REPACK` bytes in all."""
    least = max(
        MIN_BLOCK, -(-MIN_MACS // max(macs_per_line, 1)), -(-lines * shared_bytes // MAX_REPACK)
    )
    return grid(lines, least, align=ALIGN)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` for 2-D arrays, in a :func:`product_grid` of column blocks of ``b`` (or row
    blocks of ``a`` when ``a`` has more rows than ``b`` has columns), each block one
    single-threaded BLAS call, the same blocks at any thread count."""
    m, n = a.shape[0], b.shape[1]
    if out is None:
        out = np.empty((m, n), dtype=np.result_type(a, b))
    if n >= m:
        blocks = product_grid(n, m * a.shape[1], a.nbytes)
        for_each_block(blocks, lambda s, e: np.matmul(a, b[:, s:e], out=out[:, s:e]))
    else:
        blocks = product_grid(m, n * a.shape[1], b.nbytes)
        for_each_block(blocks, lambda s, e: np.matmul(a[s:e], b, out=out[s:e]))
    return out


def sum_in_order(count: int, part: Callable[[int, np.ndarray], object], shape, dtype) -> np.ndarray:
    """``sum(part_0 .. part_{count-1})``, where ``part(i, out)`` writes part i into ``out``:
    the parts computed in parallel, then added in index order, so the sum is the same for any
    thread count. For reductions too large to leave unsplit: a weight gradient summed over
    every window of a batch, one product per chunk of windows small enough to stay in cache.
    """
    parts = np.empty((count, *shape), dtype=dtype)

    def some(first, stop):
        for i in range(first, stop):
            part(i, parts[i])

    for_each_span(count, some, 1)
    return np.add.reduce(parts, axis=0)
