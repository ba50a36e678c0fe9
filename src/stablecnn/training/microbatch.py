r"""A batch's gradient as a fixed-order sum of micro-batch gradients: what makes a run on K MPI
ranks bit-identical to a run in one process.

Floating-point addition is not associative, so a gradient summed over a batch in another order
(another split of the batch across processes, another blocking inside BLAS) differs in its last
bits, and a run's weights drift apart. Here the arithmetic of a step does not depend on how many
processes share it:

1. The batch of ``B`` examples is cut into ``P`` contiguous micro-batches, ``P`` fixed by the run
   (``TrainConfig.micro_batches``), micro-batch ``i`` the examples ``[i B // P, (i + 1) B // P)``
   (:func:`micro_bounds`). Rank ``r`` of ``K`` takes the whole micro-batches
   ``[r P // K, (r + 1) P // K)`` (:func:`rank_range`); ``K <= P``.
2. Each micro-batch's gradient is an ordinary forward and backward pass over it alone, with the
   loss's gradient divided by ``B`` (the mean over the whole batch), so its arithmetic is the same
   whichever process runs it.
3. The gradients are added over a binary tree fixed by ``P`` alone (:func:`tree_sum`: a node
   ``[lo, hi)`` is the sum of its halves ``[lo, mid) + [mid, hi)``, ``mid = (lo + hi) // 2``).
   Each rank adds the largest nodes that lie inside its micro-batches (:func:`tree_nodes`); where
   a node's halves lie on two ranks, the right half's rank sends it to the left half's, which
   adds them; rank 0 ends with the root and broadcasts it (:meth:`MicroBatchStep._combine`). Every
   rank holds the same gradient, bit for bit, and it is the gradient one process computes with
   the same ``P``. A rank receives at most one node per level of the tree and the broadcast, so
   the bytes a rank receives do not grow with the number of ranks.
4. Batch normalisation takes the statistics of the whole batch: its layers call a reducer
   (:attr:`stablecnn.nn.layers.norm.BatchNorm2d.reducer`) with their micro-batch's float64
   channel sums, combined by the same tree, twice in the forward pass and once in the backward
   pass. Dropout draws the whole batch's mask and takes the micro-batch's rows of it
   (:attr:`stablecnn.nn.layers.dropout.Dropout.batch_rows`), so a mask follows the example, not
   the rank. Data augmentation draws for the whole batch too (every rank builds the batch and
   takes its rows), so its draws follow the example.

A rank holding several micro-batches keeps one copy of the model per micro-batch (a *replica*:
the same parameter arrays, its own gradients, buffers and activations). Without batch norm they
run one after the other. With it, a micro-batch's forward pass cannot go past a batch norm before
every micro-batch has reached it, so each runs in a thread of its own, one at a time, handing on
at every reducer call (:class:`_Relay`): there is never more than one running, so the kernels'
own threads are used as in a plain step and nothing depends on timing.

What it costs: smaller products are less efficient (``python benchmarks/mpi_scaling.py``, one
process on 2 threads, batch 100: Model 1 3,739 images/s whole, 2,215 as 6 micro-batches; md2 830
and 498), and every rank gathers, augments and normalises the whole batch (a few milliseconds for
MNIST). ``P = 1`` is the plain
step, the same bits as :meth:`stablecnn.training.trainer.Trainer.forward_backward`.

The guarantee holds for the same hardware and BLAS on every rank: a rank on another CPU whose
BLAS kernel rounds a product otherwise would compute another micro-batch gradient.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterator

import numpy as np

from stablecnn.errors import ConfigError
from stablecnn.nn.layers.dropout import Dropout
from stablecnn.nn.layers.norm import _BatchNorm
from stablecnn.nn.losses import SoftmaxCrossEntropy
from stablecnn.training.comm import LocalComm

Node = tuple[int, int]  # micro-batches [lo, hi) of the fixed tree


def micro_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of the ``parts`` micro-batches of a batch of ``n``: micro-batch ``i``
    is ``[i n // parts, (i + 1) n // parts)``, sizes differing by one at most."""
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


def rank_range(parts: int, size: int, rank: int) -> range:
    """The micro-batches of rank ``rank`` of ``size``: ``[rank P // K, (rank + 1) P // K)``."""
    return range(rank * parts // size, (rank + 1) * parts // size)


def tree_nodes(lo: int, hi: int, start: int, stop: int) -> list[Node]:
    """The largest nodes of the tree over ``[lo, hi)`` that lie inside ``[start, stop)``, in
    order (at most two per level)."""
    if start <= lo and hi <= stop:
        return [(lo, hi)]
    if hi <= start or stop <= lo:
        return []
    mid = (lo + hi) // 2
    return tree_nodes(lo, mid, start, stop) + tree_nodes(mid, hi, start, stop)


def tree_sum(lo: int, hi: int, known: dict[Node, object], add: Callable) -> object:
    """The value of node ``[lo, hi)``: ``known[(lo, hi)]`` if known, else ``add(value of [lo,
    mid), value of [mid, hi))`` with ``mid = (lo + hi) // 2``. The leaves ``(i, i + 1)`` (or
    larger nodes) must be in ``known``."""
    if (lo, hi) in known:
        return known[(lo, hi)]
    if hi - lo < 2:
        raise KeyError(f"micro-batch {lo} is missing from the sum")
    mid = (lo + hi) // 2
    return add(tree_sum(lo, mid, known, add), tree_sum(mid, hi, known, add))


def _add_in_place(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
    for u, v in zip(a, b, strict=True):
        np.add(u, v, out=u)
    return a


def _walk(layers) -> Iterator:
    for layer in layers:
        yield layer
        if hasattr(layer, "children"):
            yield from _walk(layer.children())


class MicroBatchStep:
    """The forward and backward pass of one batch as ``P`` micro-batches (see the module doc),
    this rank's share of them, leaving the whole batch's gradient in the model's ``grads``.

    Args:
        model: the :class:`~stablecnn.nn.model.Sequential` (its parameters are shared by the
            replicas; build the step again after changing its layers).
        micro_batches: P.
        comm: :class:`~stablecnn.training.comm.LocalComm` (one process, the default) or
            :class:`~stablecnn.training.comm.MPIComm`.
        label_smoothing: the loss's.

    Raises:
        ConfigError: more ranks than micro-batches.
    """

    def __init__(self, model, micro_batches: int, comm=None, label_smoothing: float = 0.0):
        comm = comm or LocalComm()
        if comm.size > micro_batches:
            raise ConfigError(
                f"{comm.size} ranks but {micro_batches} micro-batches: each rank needs a whole "
                f"micro-batch; train with --micro-batches {comm.size} or more (a run's "
                f"micro-batches fix its arithmetic: the same number gives the same weights on "
                f"any number of ranks up to it)"
            )
        self.model, self.parts, self.comm = model, micro_batches, comm
        self.mine = rank_range(micro_batches, comm.size, comm.rank)
        self.nodes = tree_nodes(0, micro_batches, self.mine.start, self.mine.stop)
        self.owner = [  # the rank of each micro-batch
            k for k in range(comm.size) for _ in rank_range(micro_batches, comm.size, k)
        ]
        self.losses = [SoftmaxCrossEntropy(label_smoothing) for _ in self.mine]
        params = model.parameters()
        shared = {id(p): p for _, p, _ in params}  # the replicas' parameters are the model's
        self.replicas = [model] + [copy.deepcopy(model, dict(shared)) for _ in self.mine[1:]]
        self.synced = [
            [layer for layer in _walk(r.layers) if isinstance(layer, _BatchNorm)]
            for r in self.replicas
        ]
        self.dropouts = [
            [layer for layer in _walk(r.layers) if isinstance(layer, Dropout)]
            for r in self.replicas
        ]
        self._buffers = [
            [b for layer in r.layers for b in layer.buffers.values()] for r in self.replicas
        ]
        self._grads = [[g for _, _, g in r.parameters()] for r in self.replicas]
        self.grad_bytes = sum(g.nbytes for g in self._grads[0])

    # -- the step -------------------------------------------------------------------------------
    def __call__(
        self, x: np.ndarray, y: np.ndarray, flag: bool = False
    ) -> tuple[float, float, bool]:
        """Forward and backward over the micro-batches of this rank of the batch ``x`` (B, ...),
        labels ``y`` (B,) (the whole batch, on every rank); the whole batch's gradient ends in
        the model's ``grads`` on every rank.

        ``flag``: this rank's stop request (Ctrl-C), exchanged with the gradients.

        Returns:
            ``(loss, accuracy, any_flag)``: the batch's mean loss (the micro-batches' mean losses
            weighted by their sizes, added over the tree in float64; with ``P = 1`` the plain
            mean), the fraction of the batch predicted right, and whether any rank asked to stop.

        Raises:
            ConfigError: a micro-batch would be empty (a batch of fewer than P examples).
        """
        n = len(x)
        bounds = micro_bounds(n, self.parts)
        if n < self.parts:
            raise ConfigError(
                f"a batch of {n} examples cannot be cut into {self.parts} micro-batches"
            )
        master = self._buffers[0]
        for buffers in self._buffers[1:]:  # every replica starts from the model's buffers
            for b, m in zip(buffers, master, strict=True):
                b[...] = m
        stats: dict[int, np.ndarray] = {}

        def task(j: int) -> None:  # the j-th micro-batch of this rank
            i = self.mine[j]
            a, b = bounds[i]
            replica, loss_fn = self.replicas[j], self.losses[j]
            for drop in self.dropouts[j]:
                drop.batch_rows = (a, b, n)
            with np.errstate(over="ignore", invalid="ignore"):  # a NaN shows in the loss
                logits = replica.forward(x[a:b], training=True)
                loss = loss_fn.forward(logits, y[a:b])
                correct = np.count_nonzero(logits.argmax(axis=1) == y[a:b])
                replica.backward(loss_fn.backward(batch_size=n), need_input_grad=False)
            stats[i] = np.array([float(loss) * (b - a), correct, float(flag)], np.float64)

        relay = _Relay(len(self.mine), self._reduce)
        for j, layers in enumerate(self.synced):
            for layer in layers:
                layer.reducer = relay.reducer(j)
        try:
            if any(self.synced) and len(self.mine) > 1:
                relay.run([lambda j=j: task(j) for j in range(len(self.mine))])
            else:  # nothing to wait for: one after the other, in this thread
                for j in range(len(self.mine)):
                    task(j)
        finally:
            for layers in self.synced:
                for layer in layers:
                    layer.reducer = None
            for drops in self.dropouts:
                for drop in drops:
                    drop.batch_rows = None
        # (the replicas' buffers now equal the model's: each took the whole batch's statistics)
        leaves = {(i, i + 1): [*self._grads[j], stats[i]] for j, i in enumerate(self.mine)}
        total = self._combine(leaves, "the gradients")
        for g, t in zip(self._grads[0], total[:-1], strict=True):
            if g is not t:
                g[...] = t
        loss_sum, correct, flags = total[-1]
        return loss_sum / n, correct / n, bool(flags)

    # -- the sums -------------------------------------------------------------------------------
    def _combine(self, leaves: dict[Node, list[np.ndarray]], what: str) -> list[np.ndarray]:
        """The root of the tree, the whole batch's sum, on every rank, from this rank's
        ``leaves`` (``{(i, i + 1): value}``, a value a list of arrays, added in place).

        In one process, the tree is added here. Over ranks, each adds the largest nodes inside
        its share; then, walking down from the root (:meth:`_part`), the rank holding a node's
        right child sends it to the rank holding its left child, which adds the two, so a node
        is always its left child plus its right child, whoever computes it; rank 0 ends with the
        root and broadcasts it. A rank receives at most one node per level of the tree, and the
        broadcast: bytes that do not grow with the number of ranks.
        """
        local = {node: tree_sum(*node, leaves, _add_in_place) for node in self.nodes}
        if self.comm.size == 1:
            return local[(0, self.parts)]
        first = next(iter(local.values()))
        layout = [(a.shape, a.dtype) for a in first]
        size = sum(a.nbytes for a in first)
        root = self._part(0, self.parts, local, layout, size, what)
        buf = _pack(root) if self.comm.rank == 0 else np.empty(size, np.uint8)
        self.comm.bcast(buf, root=0, what=what)
        return root if self.comm.rank == 0 else _unpack(buf, layout)

    def _part(self, lo: int, hi: int, local: dict, layout: list, size: int, what: str):
        """This rank's part in node ``[lo, hi)``: the node's value when this rank holds
        micro-batch ``lo`` (receiving the right child from its holder), else None (after
        sending the right child to the left child's holder when this rank holds it)."""
        share = self.mine
        if hi <= share.start or share.stop <= lo:
            return None
        if (lo, hi) in local:
            return local[(lo, hi)]
        mid = (lo + hi) // 2
        left = self._part(lo, mid, local, layout, size, what)
        right = self._part(mid, hi, local, layout, size, what)
        rank, lead, second = self.comm.rank, self.owner[lo], self.owner[mid]
        if lead == rank:
            if second != rank:
                right = _unpack(self.comm.recv(size, second, what), layout)
            return _add_in_place(left, right)
        if second == rank:
            self.comm.send(_pack(right), lead, what)
        return None

    def _reduce(self, partials: list[np.ndarray]) -> np.ndarray:
        """The whole batch's sums from this rank's micro-batches' ``partials`` (float64 vectors,
        in order), over the tree and the ranks: a batch norm's reducer."""
        leaves = {(i, i + 1): [p] for i, p in zip(self.mine, partials, strict=True)}
        return self._combine(leaves, "a batch norm's sums")[0]


def _pack(value: list[np.ndarray]) -> np.ndarray:
    """A node's arrays as one byte buffer."""
    return np.concatenate([np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in value])


def _unpack(buf: np.ndarray, layout: list) -> list[np.ndarray]:
    """Views of ``buf`` as arrays of ``layout`` (``[(shape, dtype)]``)."""
    out, offset = [], 0
    for shape, dtype in layout:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        out.append(buf[offset : offset + nbytes].view(dtype).reshape(shape))
        offset += nbytes
    return out


class _Cancelled(BaseException):
    """Raised in a micro-batch's thread when another one failed."""


class _Relay:
    """Runs ``n`` micro-batch tasks in threads, one at a time: task ``j`` runs until it calls its
    reducer (then task ``j + 1`` runs; the last one's call combines every task's sums with
    ``combine`` and hands back to task 0) or ends (then the next one resumes)."""

    def __init__(self, n: int, combine: Callable[[list[np.ndarray]], np.ndarray]):
        self.n, self.combine = n, combine
        self.cond = threading.Condition()
        self.turn = 0  # the task that may run; n: all done
        self.partials: list[np.ndarray | None] = [None] * n
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None

    def reducer(self, j: int) -> Callable[[np.ndarray], np.ndarray]:
        if self.n == 1:
            return lambda partial: self.combine([partial])
        return lambda partial: self._reduce(j, partial)

    def _wait_turn(self, j: int) -> None:
        while self.turn != j and self.error is None:
            self.cond.wait()
        if self.error is not None:
            raise _Cancelled

    def _reduce(self, j: int, partial: np.ndarray) -> np.ndarray:
        with self.cond:
            self.partials[j] = partial
            if j == self.n - 1:  # every task's sums are in
                self.result = self.combine(self.partials)
                self.turn = 0
            else:
                self.turn = j + 1
            self.cond.notify_all()
            self._wait_turn(j)
            return self.result

    def run(self, tasks: list[Callable[[], None]]) -> None:
        def body(j: int) -> None:
            try:
                with self.cond:
                    self._wait_turn(j)
                tasks[j]()
                with self.cond:
                    self.turn = j + 1
                    self.cond.notify_all()
            except _Cancelled:
                pass
            except BaseException as exc:  # noqa: BLE001 (handed to the caller)
                with self.cond:
                    if self.error is None:
                        self.error = exc
                    self.cond.notify_all()

        threads = [
            threading.Thread(target=body, args=(j,), name=f"stablecnn-micro-batch-{j}")
            for j in range(len(tasks))
        ]
        for t in threads:
            t.start()
        try:
            with self.cond:
                while self.turn < self.n and self.error is None:
                    self.cond.wait()
        except BaseException as exc:  # Ctrl-C twice: stop the tasks at their next hand-over
            with self.cond:
                self.error = self.error or exc
                self.cond.notify_all()
            raise
        finally:
            for t in threads:
                t.join()
        if self.error is not None:
            raise self.error
