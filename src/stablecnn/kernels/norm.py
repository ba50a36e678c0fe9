r"""The fast kernels of batch normalisation, used by :class:`stablecnn.nn.BatchNorm2d` and
:class:`~stablecnn.nn.BatchNorm1d`.

Their definitions are :func:`stablecnn.reference.batchnorm_forward`,
:func:`~stablecnn.reference.batchnorm_backward` and
:func:`~stablecnn.reference.batchnorm_eval_forward`; the tests hold these kernels to them.

**Layout.** Each channel's statistics run over every axis but the channels. An input in any
layout is seen as ``(C, R, L)``: the axes other than the channels, in the input's memory order,
merged into ``R`` runs of ``L`` contiguous values, ``L`` at most :data:`RUN` where the axes allow
(:func:`channel_rows`). The convolutions' outputs, NCHW views of ``(C, H, W, N)`` buffers, are
``R = H`` runs of ``L = W*N`` per channel; a plain NCHW array is ``R = N`` runs of ``L = H*W``; an
(N, C) batch for BatchNorm1d is ``R = N`` runs of one value. A layout that cannot be seen so
without a copy (a strided slice) is copied once. Outputs and input gradients are written
channel-major, NCHW views of ``(C, R, L)`` buffers (for the convolutions' layout, that layout).

**Passes.** The channels are cut into blocks of whole channels (:meth:`Rows.blocks`: a
:func:`~stablecnn.kernels.parallel.grid` fixed by the shape, at most :data:`BLOCK` values each),
and threads take runs of whole blocks (:func:`~stablecnn.kernels.parallel.for_each_block`), so
the passes over a block after the first find it in cache. Training forward, block by block: the
run sums of ``x`` give a first mean ``mu0``; ``d = x - mu0`` is written where ``y`` goes and its
run sums and those of ``d^2`` taken; then, with the per-channel scale and shift, ``y = d * scale +
shift`` in place (and ``max(y, 0)`` when a ReLU follows). Backward: the run sums of ``g`` and of
``g * d`` (``d = x - mu0`` again, written where ``dx`` goes: the input is kept by reference, not an
``x_hat`` array), then ``dx = a g + b d + k`` in place with per-channel ``a, b, k``. When a ReLU
followed, ``g`` is first masked by ``y > 0`` in one pass split across the threads (inside the
blocks, which stay on one thread below :data:`MIN_THREAD_RUN`, it made md3's training slower than
running the ReLU's own backward pass).

**Precision.** The mean and variance are the *corrected two-pass* algorithm (Chan, Golub and
LeVeque, "Algorithms for computing the sample variance", The American Statistician 37 (1983),
eq. 1.7): with ``d = x - mu0``,

.. math::
    c = \frac{1}{M}\sum d, \qquad \mu = \mu_0 + c, \qquad
    \sigma^2 = \frac{1}{M}\sum d^2 - c^2 .

``c`` only corrects the rounding of the first mean (``|c|`` is far below the spread), so nothing
cancels: never ``E[x^2] - mu^2``. Each sum is a product with a vector of ones over runs of at
most :data:`RUN` values (BLAS, in the input's dtype: error ``O(RUN eps)`` relative to the sum of
magnitudes at worst, ``O(sqrt(RUN) eps)`` in practice), the runs' sums added in float64. The first
mean's rounding never reaches the result: ``d`` and its sums are relative to the spread, and the
correction and the shift ``beta - c * scale`` are formed in float64. On data far from zero (mean
1e4, spread 1, 78,400 values a channel) in float32 this gives the variance within 4e-8 of the
float64 result and ``y`` within 6e-7, better than float64 sums of ``x`` whose mean is then rounded
to float32 (``tests/test_kernels_norm.py`` holds it). Per-channel scalars (the scale, the shift,
the gradient's coefficients) are formed in float64 and rounded to the input's dtype.

**Across processes.** ``reduce``, given to :func:`train_forward` and :func:`backward`, makes the
statistics those of a larger batch that this one is a part of (synchronised batch norm, as data
parallel training over MPI needs: :mod:`stablecnn.training.microbatch`). The kernel hands it
float64 vectors of its part's channel sums (``[M, sum x]``, then ``[sum d, sum d^2]`` with ``d =
x - mu0`` for the whole batch's ``mu0``, then backward ``[sum g, sum g d]``) and computes with
the whole batch's sums it returns, in the same formulas; the first two need a pass each (the
second cannot start before every part's first mean is known). ``reduce`` that returns its input
gives this batch's own statistics, the same bits as without it.

**Threads.** Only large batches are split across threads (:data:`MIN_THREAD_RUN`). Each sum is
one BLAS call over a block fixed by the shape, whichever thread runs it, and every other step is
per element or per channel, so the results are bit-identical at any thread count
(``tests/test_kernels_norm.py`` runs 1, 2 and 3 threads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stablecnn.kernels import parallel
from stablecnn.kernels.relu import relu_grad_into, relu_into

BLOCK = 1 << 18  # values of one array that a block of channels covers at most (or one channel)
MIN_BLOCK = 1 << 15  # values a block covers at least, where the batch allows
RUN = 4096  # values per run at most (unless the innermost axis alone is longer): see the doc
# Values per thread below which the blocks stay in one thread. These passes are bound by memory
# and the run sums are BLAS calls: measured on the 2-core machine here, two threads made a batch
# norm of (100, 16, 28, 28) no faster (1.46 ms forward and backward against 1.53 on one) and one
# of (100, 64, 7, 7) slower (0.53 ms against 0.41): a pass over 5 MB ran 80 us on one thread and
# on two, and two concurrent BLAS sums of ones took 0.12 ms where one thread took 0.055.
MIN_THREAD_RUN = 1 << 21


@dataclass
class Rows:
    """How an activation's channels are seen as rows: ``perm`` puts the channels first and the
    other axes in memory order; ``shape`` is ``(C, R, L)``; ``nchw`` is the input's shape."""

    perm: tuple[int, ...]
    shape: tuple[int, int, int]
    nchw: tuple[int, ...]

    def view(self, a: np.ndarray) -> np.ndarray:
        """``a`` (the input's shape) as ``(C, R, L)``: a view when its layout allows, else a
        copy."""
        return a.transpose(self.perm).reshape(self.shape)

    def empty(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        """A new channel-major ``(C, R, L)`` buffer and its view in the input's shape."""
        buf = np.empty(self.shape, dtype)
        permuted = tuple(self.nchw[i] for i in self.perm)
        return buf, buf.reshape(permuted).transpose(np.argsort(self.perm))

    def blocks(self) -> list[tuple[int, int]]:
        """Consecutive blocks of whole channels, a :func:`~stablecnn.kernels.parallel.grid`
        fixed by the shape alone, never by the thread count: at most :data:`BLOCK` values each
        (or one channel), at least :data:`MIN_BLOCK` where there are enough, and 4 or more
        blocks where that allows (equal shares for 2 or 4 threads)."""
        c, r, ln = self.shape
        per_channel = max(r * ln, 1)
        return parallel.grid(
            c,
            min_items=-(-MIN_BLOCK // per_channel),
            max_items=max(1, BLOCK // per_channel),
            parts=4,
        )


def channel_rows(x: np.ndarray) -> Rows:
    """The :class:`Rows` of ``x`` (N, C, ...): the axes other than the channels (1) in order of
    decreasing stride; the innermost of them that are contiguous in memory merged into runs of
    ``L`` values (at most :data:`RUN`, or the innermost axis if it alone is longer), the rest
    into ``R`` runs."""
    others = sorted((i for i in range(x.ndim) if i != 1), key=lambda i: -abs(x.strides[i]))
    perm = (1, *others)
    run, expected = 1, x.itemsize
    for i in reversed(others):
        if x.shape[i] == 1:
            continue
        if x.strides[i] != expected or (run > 1 and run * x.shape[i] > RUN):
            break
        run *= x.shape[i]
        expected *= x.shape[i]
    c = x.shape[1]
    m = x.size // c if c else 0
    return Rows(perm, (c, m // run if run else 0, run), tuple(x.shape))


_ONES: dict[tuple[int, np.dtype], np.ndarray] = {}  # (length, dtype) -> the vector, made once


def _ones(n: int, dtype) -> np.ndarray:
    key = (n, np.dtype(dtype))
    ones = _ONES.get(key)
    if ones is None:
        ones = _ONES[key] = np.ones(n, dtype)
    return ones


def _relu(block: np.ndarray) -> None:
    """``max(block, 0)`` in place (:func:`stablecnn.kernels.relu.relu_into`: against a row of
    zeros, 2-3x faster than against the scalar 0, the same bits, as the tests check)."""
    relu_into(block, block)


def _for_each_block(rows: Rows, fn: Callable[[int, int], object]) -> None:
    """``fn(c0, c1)`` over :meth:`Rows.blocks`, runs of whole blocks split across threads when
    each thread gets :data:`MIN_THREAD_RUN` values or more."""
    per_channel = max(rows.shape[1] * rows.shape[2], 1)
    parallel.for_each_block(rows.blocks(), fn, min_run=MIN_THREAD_RUN / per_channel)


def _channel_sums(parts: np.ndarray) -> np.ndarray:
    """(..., C, R) run sums -> (..., C) float64 channel sums, the runs added in float64."""
    return np.add.reduce(parts.astype(np.float64), axis=-1)


def _columns(dtype, *vectors: np.ndarray) -> list[np.ndarray]:
    """(C,) float64 vectors as (C, 1, 1) columns in ``dtype``, to broadcast over a block."""
    return [v.astype(dtype).reshape(-1, 1, 1) for v in vectors]


@dataclass
class TrainCache:
    """What the training forward pass keeps for the backward pass: the input by reference (as
    rows), the first mean ``mu0`` ((C, 1, 1), input dtype), the correction ``c`` and ``inv_std``
    ((C,) float64), when a ReLU followed, the output rows for its mask, and ``count``, the values
    per channel the statistics are over (``M``; the whole batch's with a ``reduce``) and
    ``reduce`` itself."""

    rows: Rows
    x: np.ndarray
    mu0: np.ndarray
    correction: np.ndarray
    inv_std: np.ndarray
    out: np.ndarray | None
    count: int | float = 0
    reduce: Callable[[np.ndarray], np.ndarray] | None = None


def train_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    relu: bool = False,
    reduce: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, TrainCache]:
    """Training-mode batch norm of ``x`` (N, C, ...): ``y = gamma (x - mu) / sqrt(var + eps) +
    beta`` with the batch's mean and biased variance per channel, then ``max(y, 0)`` if ``relu``.

    Returns ``(y, mean, var, cache)``: ``y`` x's shape and dtype (a channel-major view, see the
    module doc), ``mean`` and ``var`` (C,) float64, and what :func:`backward` needs.
    ``reduce(v)``: the sums ``v`` (float64, 1-D) of this part of a larger batch -> the whole
    batch's; the statistics are then the whole batch's (see the module doc).
    Definition: :func:`stablecnn.reference.batchnorm_forward` (and
    :func:`~stablecnn.reference.relu_forward`).
    """
    rows = channel_rows(x)
    xr = rows.view(x)
    yr, y = rows.empty(x.dtype)
    c, r, ln = rows.shape
    m, dtype, ones = r * ln, x.dtype, _ones(ln, x.dtype)
    parts = np.empty((3, c, r), dtype)  # run sums of x, d and d^2
    mu0 = np.empty((c, 1, 1), dtype)

    def stats(c0: int, c1: int) -> None:  # mu0, then d = x - mu0 where y goes, and its sums
        xb = xr[c0:c1]
        np.matmul(xb, ones, out=parts[0, c0:c1])
        mu0[c0:c1, 0, 0] = _channel_sums(parts[0, c0:c1]) / m
        d = np.subtract(xb, mu0[c0:c1], out=yr[c0:c1])
        np.matmul(d, ones, out=parts[1, c0:c1])
        np.matmul(np.square(d), ones, out=parts[2, c0:c1])

    if reduce is None:
        _for_each_block(rows, stats)
        sums = _channel_sums(parts[1:])
    else:  # the whole batch's first mean before any d: two passes

        def sum_x(c0: int, c1: int) -> None:
            np.matmul(xr[c0:c1], ones, out=parts[0, c0:c1])

        def centred(c0: int, c1: int) -> None:
            d = np.subtract(xr[c0:c1], mu0[c0:c1], out=yr[c0:c1])
            np.matmul(d, ones, out=parts[1, c0:c1])
            np.matmul(np.square(d), ones, out=parts[2, c0:c1])

        _for_each_block(rows, sum_x)
        total = reduce(np.concatenate(([float(m)], _channel_sums(parts[0]))))
        m = total[0]  # the whole batch's values per channel
        mu0[:, 0, 0] = total[1:] / m
        _for_each_block(rows, centred)
        sums = reduce(_channel_sums(parts[1:]).reshape(-1)).reshape(2, c)
    correction = sums[0] / m
    var = np.maximum(sums[1] / m - correction * correction, 0.0)
    inv_std = 1.0 / np.sqrt(var + eps)
    scale = gamma * inv_std  # float64
    scale_c, shift_c = _columns(dtype, scale, beta - correction * scale)

    def normalise(c0: int, c1: int) -> None:  # y = d * scale + shift (= (d - c) * scale + beta)
        yb = np.multiply(yr[c0:c1], scale_c[c0:c1], out=yr[c0:c1])
        np.add(yb, shift_c[c0:c1], out=yb)
        if relu:
            _relu(yb)

    _for_each_block(rows, normalise)
    mean = mu0.reshape(-1).astype(np.float64) + correction
    cache = TrainCache(rows, xr, mu0, correction, inv_std, yr if relu else None, m, reduce)
    return y, mean, var, cache


def backward(
    dout: np.ndarray, cache: TrainCache, gamma: np.ndarray, need_input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`train_forward`: ``(dx, dgamma, dbeta)``, dx x's shape (``None``
    unless ``need_input_grad``), dgamma and dbeta (C,) float64. With ``g`` = ``dout`` (masked by
    ``y > 0`` when the forward pass applied a ReLU), ``x_hat = (d - c) inv_std``:

    ``dbeta = sum g``, ``dgamma = inv_std (sum g d - c dbeta)`` and ``dx = a g + b d + k``,
    where ``a = gamma inv_std``, ``b = -a inv_std dgamma / M`` and ``k = -a dbeta / M - b c``,
    which is ``a (g - dbeta / M - x_hat dgamma / M)`` (the module doc of
    :mod:`stablecnn.nn.layers.norm`). ``dout`` is not changed. After a forward pass with a
    ``reduce``, dx takes the whole batch's sums (through the same ``reduce``), while dgamma and
    dbeta stay this part's share, for the caller to add up with the other parts' as it adds the
    other parameters' gradients. Definition:
    :func:`stablecnn.reference.batchnorm_backward` (after
    :func:`~stablecnn.reference.relu_backward`).
    """
    rows, xr = cache.rows, cache.x
    gr = rows.view(dout)
    c, r, ln = rows.shape
    m, dtype, ones = cache.count or r * ln, xr.dtype, _ones(ln, xr.dtype)
    dxr, dx = rows.empty(dtype)  # holds d = x - mu0 until the last pass
    if cache.out is not None:  # the ReLU's backward pass, as ReLU.backward computes it: on
        # every thread, before the blocks (which stay on one thread below MIN_THREAD_RUN)
        gr = relu_grad_into(gr, cache.out, np.empty(rows.shape, dtype))
    parts = np.empty((2, c, r), dtype)  # run sums of g and g * d

    def sums(c0: int, c1: int) -> None:
        g = gr[c0:c1]
        d = np.subtract(xr[c0:c1], cache.mu0[c0:c1], out=dxr[c0:c1])
        np.matmul(g, ones, out=parts[0, c0:c1])
        np.matmul(np.multiply(g, d), ones, out=parts[1, c0:c1])

    _for_each_block(rows, sums)
    sum_g, sum_gd = _channel_sums(parts)
    inv, corr = cache.inv_std, cache.correction
    dgamma = inv * (sum_gd - corr * sum_g)
    if not need_input_grad:
        return None, dgamma, sum_g
    all_g, all_dgamma = sum_g, dgamma
    if cache.reduce is not None:  # the whole batch's, for dx
        all_g, all_gd = cache.reduce(np.concatenate((sum_g, sum_gd))).reshape(2, c)
        all_dgamma = inv * (all_gd - corr * all_g)
    a = gamma * inv
    b = -a * inv * all_dgamma / m
    a_c, b_c, k_c = _columns(dtype, a, b, -a * all_g / m - b * corr)

    def input_grad(c0: int, c1: int) -> None:  # dx = a g + b d + k, over d
        d = np.multiply(dxr[c0:c1], b_c[c0:c1], out=dxr[c0:c1])
        np.add(d, k_c[c0:c1], out=d)
        np.add(d, np.multiply(gr[c0:c1], a_c[c0:c1]), out=d)

    _for_each_block(rows, input_grad)
    return dx, dgamma, sum_g


def eval_scale(gamma: np.ndarray, running_var: np.ndarray, eps: float, dtype) -> np.ndarray:
    """Evaluation-mode batch norm's per-channel scale, ``gamma / sqrt(running_var + eps)``, as
    every evaluation pass forms it (in ``dtype``; the compiled plan of
    :mod:`stablecnn.nn.inference` folds this same scale into its convolutions)."""
    return gamma * (1 / np.sqrt(running_var + np.dtype(dtype).type(eps)))


def eval_affine(
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float,
    dtype,
    relu: bool = False,
) -> Callable[..., np.ndarray]:
    """The per-channel pass of :func:`eval_forward` as a function ``affine(x, c0, c1, out=x)``:
    ``out = (x - running_mean) * scale + beta`` (then ``max(out, 0)`` if ``relu``) for the
    channels c0..c1 on axis 0 of ``x`` (any trailing axes), the constants formed once in
    ``dtype``. The same operations in the same order wherever it runs, so a convolution can
    apply it to its output while each block of channels is in cache (the evaluation pass of a
    convolution followed by a batch norm, :func:`stablecnn.nn.fuse.run`) and give
    :func:`eval_forward`'s bits."""
    scale = eval_scale(gamma, running_var, eps, dtype)  # (C,)

    def affine(x: np.ndarray, c0: int, c1: int, out: np.ndarray | None = None) -> np.ndarray:
        column = (-1, *(1,) * (x.ndim - 1))
        y = np.subtract(x, running_mean[c0:c1].reshape(column), out=x if out is None else out)
        np.multiply(y, scale[c0:c1].reshape(column), out=y)
        np.add(y, beta[c0:c1].reshape(column), out=y)
        if relu:
            _relu(y)
        return y

    return affine


def eval_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float,
    relu: bool = False,
) -> np.ndarray:
    """Evaluation-mode batch norm: ``y = (x - running_mean) * scale + beta`` with ``scale =
    gamma / sqrt(running_var + eps)`` (in the input's dtype), then ``max(y, 0)`` if ``relu``
    (:func:`eval_affine`, a block of channels at a time). ``x - running_mean`` comes first:
    folding the mean into the shift would cancel when the mean is far above the spread.
    Definition: :func:`stablecnn.reference.batchnorm_eval_forward`."""
    rows = channel_rows(x)
    xr = rows.view(x)
    yr, y = rows.empty(x.dtype)
    affine = eval_affine(gamma, beta, running_mean, running_var, eps, x.dtype, relu)
    _for_each_block(rows, lambda c0, c1: affine(xr[c0:c1], c0, c1, out=yr[c0:c1]))
    return y
