"""The fast kernels of 2-D convolution (cross-correlation), used by :class:`stablecnn.nn.Conv2d`.

Their definition is :func:`stablecnn.reference.conv2d_forward` and
:func:`~stablecnn.reference.conv2d_backward`; the tests hold these kernels to it.

Two forward kernels compute the same thing; the layer picks the faster one for its shape.

- **im2col** (any stride): the input windows are copied once into a matrix ``cols`` of shape
  ``(C*kH*kW + 1, Ho*Wo*N)`` and the convolution is one product with the ``(F, C*kH*kW + 1)``
  weights; the last row of ones and column of biases fold the bias into the product (and the
  bias gradient into the weight gradient's).
- **rows** (row stride 1, deep enough windows): only the kW horizontal taps are copied, into
  ``taps`` of shape ``(C*kW, Hp*Wo*N)``, a block of Wo*N columns per padded input row. Kernel
  row ``i`` applied to input row ``r`` gives output row ``r - i``: the middle input rows serve
  all kH kernel rows, so they are multiplied by the ``(kH*F, C*kW)`` stacked kernel rows in one
  product (kH times wider than F, which BLAS runs near its peak where F alone, 16 for Model 1's
  second conv, would starve it); the top and bottom kH-1 rows by the kernel rows that reach
  them. Output row h is then the sum of kernel row i's products on input row h + i. The copy is
  kH times smaller than im2col's (16 MB instead of 63 MB for Model 1's second conv) and no
  product is wasted. The backward pass places ``dout`` kH times, shifted, and gets the weight
  gradient and the taps' gradient from the same runs of rows.

Both copy their window matrix a cache block (:data:`CACHE_BLOCK`) at a time and multiply it at
once; training keeps no window matrix for the backward pass, which copies the windows again
from the input (kept by reference, like every layer's): writing 14-16 MB a pass to memory and
reading it back cost more than copying again from an input kH*kW (or kW) times smaller.

Activations are kept as (C, H, W, N), the batch innermost: both kernels return an NCHW *view*
of an ``(F, Ho, Wo, N)`` buffer, whose columns are the products' columns, and take inputs and
gradients in any layout. Every shift a convolution makes (a kernel row, a kernel column) is
then a whole contiguous block of N numbers or more, so the window copies, the placing of dout
and the adjoint adds run over long contiguous stretches instead of rows of Wo. A batch is split
across threads by output rows (im2col), input rows (rows) or filters: every product belongs to a
:func:`~stablecnn.kernels.parallel.grid` of blocks fixed by the shapes alone, and threads take runs
of whole blocks, so the results are the same at any thread count; see
:mod:`stablecnn.kernels.parallel`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stablecnn.errors import ConfigError
from stablecnn.kernels import parallel
from stablecnn.kernels.scratch import fresh

Padding = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))
ConvCache = tuple[str, np.ndarray]  # ("im2col", windows) or ("rows", taps): for the backward pass


def conv_output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    """``floor((size + pad_before + pad_after - kernel) / stride) + 1``."""
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def resolve_padding(
    padding: int | tuple[int, int] | str, kernel_size: tuple[int, int], stride: tuple[int, int]
) -> Padding:
    """Turn an int, a pair, ``"valid"`` or ``"same"`` into ``((top, bottom), (left, right))``.

    ``"same"`` (stride 1 only, as in PyTorch) pads ``k - 1`` in all, the odd one at the end.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if stride != (1, 1):
                raise ConfigError(f"padding='same' needs stride 1, got stride={stride}")
            (kh, kw) = kernel_size
            return (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
        raise ConfigError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) and padding >= 0:
        return ((int(padding),) * 2, (int(padding),) * 2)
    if (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(
            isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 0 for p in padding
        )
    ):
        return ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
    raise ConfigError(
        f"padding must be a non-negative int, a pair, 'valid' or 'same', got {padding!r}"
    )


def padded_chwn(x: np.ndarray, padding: Padding) -> np.ndarray:
    """The NCHW batch ``x`` as a (C, Hp, Wp, N) array, zero-padded, batch innermost.

    A view when there is no padding and ``x`` already keeps its images innermost (every
    activation the kernels make); else one copy.
    """
    xc = x.transpose(1, 2, 3, 0)
    if padding == ((0, 0), (0, 0)) and (x.shape[0] == 1 or x.strides[0] == x.itemsize):
        return xc
    (pt, pb), (pl, pr) = padding
    c, h, w, n = xc.shape
    xp = np.empty((c, h + pt + pb, w + pl + pr, n), dtype=x.dtype)
    xp[:, :pt], xp[:, pt + h :], xp[:, pt : pt + h, :pl], xp[:, pt : pt + h, pl + w :] = 0, 0, 0, 0
    xp[:, pt : pt + h, pl : pl + w] = xc
    return xp


def window_view(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """The windows of the padded input ``xp`` (C, Hp, Wp, N) as a (C, kH, kW, Ho, Wo, N) view."""
    windows = sliding_window_view(xp, kernel, axis=(1, 2))[:, :: stride[0], :: stride[1]]
    return windows.transpose(0, 4, 5, 1, 2, 3)  # from (C, Ho, Wo, N, kH, kW)


def row_view(xp: np.ndarray, kw: int, sw: int) -> np.ndarray:
    """The kW horizontal taps of every row of ``xp`` (C, Hp, Wp, N) as a (C, kW, Hp, Wo, N) view."""
    taps = sliding_window_view(xp, kw, axis=2)[:, :, ::sw]  # (C, Hp, Wo, N, kW)
    return taps.transpose(0, 4, 1, 2, 3)


def row_windows_adjoint(dtaps: np.ndarray, dxp: np.ndarray, sw: int) -> None:
    """Add ``dtaps`` (C, kW, Hp, Wo, N), a gradient of the :func:`row_view` taps, into the
    padded input gradient ``dxp`` (C, Hp, Wp, N): tap j of column w read column ``w*sW + j``.
    With the batch innermost each add runs over Wo*N contiguous numbers."""
    kw, wo = dtaps.shape[1], dtaps.shape[3]
    for j in range(kw):
        dxp[:, :, j : j + sw * (wo - 1) + 1 : sw] += dtaps[:, j]


def row_groups(h0: int, h1: int, kh: int) -> list[tuple[int, int, int, int]]:
    """Runs ``(r0, r1, lo, hi)`` of padded input rows that the same kernel rows ``lo..hi`` use
    for output rows ``h0..h1-1`` (input rows ``h0 .. h1+kH-2``).

    Kernel row i reads input row r for output row r - i, which must lie in [h0, h1): the middle
    rows serve every kernel row, the top and bottom kH - 1 rows fewer. Computing each run with
    only its kernel rows is what makes the rows kernel exact (no wasted products).
    """
    groups: list[list[int]] = []
    for r in range(h0, h1 + kh - 1):
        lo, hi = max(0, r - h1 + 1), min(kh - 1, r - h0)
        if groups and groups[-1][2:] == [lo, hi]:
            groups[-1][1] = r + 1
        else:
            groups.append([r, r + 1, lo, hi])
    return [tuple(g) for g in groups]


def _runs(
    groups: list[tuple[int, int, int, int]], a: int, z: int
) -> Iterator[tuple[int, int, int, int]]:
    """The parts of ``groups`` inside rows [a, z)."""
    for r0, r1, lo, hi in groups:
        if r0 < z and r1 > a:
            yield max(r0, a), min(r1, z), lo, hi


def conv2d_input_grad(
    dmat: np.ndarray,
    w: np.ndarray,
    x_shape: tuple[int, int, int, int],
    stride: tuple[int, int],
    padding: Padding,
) -> np.ndarray:
    """dL/dx from ``dmat`` = dL/dout as (F, Ho*Wo*N): the adjoint of im2col, one offset at a time.
    Reference: the ``dx`` of :func:`stablecnn.reference.conv2d_backward`.

    For each kernel offset (i, j), ``w[:, :, i, j].T @ dmat`` (C, Ho*Wo*N) is the gradient of the
    input pixels that offset touched; it is added onto that strided window of the input (kept
    as (C, Hp, Wp, N), batch innermost, like every activation the kernels make). The padded
    input's rows are cut into a :func:`~stablecnn.kernels.parallel.grid` of bands fixed by the
    shapes (:func:`_cache_grid`); each band is computed whole by one thread, every offset's
    product over just the output rows that reach the band, so the band stays in cache while its
    kH*kW products are added in, in the same (i, j) order for every pixel.
    """
    n, c, h, w_ = x_shape
    (pt, pb), (pl, pr) = padding
    f, _, kh, kw = w.shape
    sh, sw = stride
    hp, wp = h + pt + pb, w_ + pl + pr
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    per = wo * n  # columns of dmat per output row
    w_offsets = w.transpose(2, 3, 1, 0)  # (kH, kW, C, F): w_offsets[i, j] is (C, F)
    dxp = np.empty((c, hp, wp, n), dtype=dmat.dtype)

    def band(r0, r1):  # padded input rows r0..r1
        dxp_band = dxp[:, r0:r1]
        dxp_band[...] = 0
        for i in range(kh):
            h0, h1 = max(0, -(-(r0 - i) // sh)), min(ho, -(-(r1 - i) // sh))  # reach rows r0..r1
            if h0 >= h1:
                continue
            first = h0 * sh + i - r0  # the band's row that output row h0 reaches
            rows = slice(first, first + sh * (h1 - h0 - 1) + 1, sh)
            for j in range(kw):
                window = dxp_band[:, rows, j : j + sw * (wo - 1) + 1 : sw]
                window += (w_offsets[i, j] @ dmat[:, h0 * per : h1 * per]).reshape(
                    c, h1 - h0, wo, n
                )

    _for_each_row_block(_cache_grid(hp, c * wp * n * 2, dmat.itemsize), band, c * wp * n)
    return dxp[:, pt : pt + h, pl : pl + w_].transpose(3, 0, 1, 2)


# C*kW below this makes the rows kernel's products too thin to pay off. Measured on 2 threads,
# batch 100, a 3x3 stride-1 convolution (fwd / fwd + bwd, ms): C = 8 at 28x28, im2col 1.34 / 4.28,
# rows 1.24 / 3.57; C = 16 at 28x28, im2col 3.30 / 11.24, rows 3.49 / 9.32 (the rows kernel's
# backward wins from C*kW = 24 on); Model 1's first conv (C*kW = 10) stays on im2col.
ROWS_MIN_DEPTH = 24


def use_rows_kernel(
    in_channels: int, kernel_size: tuple[int, int], stride: tuple[int, int]
) -> bool:
    """Whether the rows kernel (see the module docstring) is the faster choice for this shape."""
    return stride[0] == 1 and in_channels * kernel_size[1] >= ROWS_MIN_DEPTH


def stacked_rows(w: np.ndarray) -> np.ndarray:
    """The weights (F, C, kH, kW) as (kH*F, C*kW): block i is kernel row i, laid out like taps."""
    f, c, kh, kw = w.shape
    return w.transpose(2, 0, 1, 3).reshape(kh * f, c * kw)


CACHE_BLOCK = 1 << 20  # bytes of window matrix worked at a time: about one core's L2 cache
WEIGHT_GRAD_CHUNK = 2048  # columns (windows) per partial product of an im2col weight gradient


def window_rows(
    windows: np.ndarray, h0: int, h1: int, n0: int = 0, n1: int | None = None
) -> np.ndarray:
    """The window matrix of output rows h0..h1 (images n0..n1): ``(C*kH*kW + 1, rows*Wo*n)``,
    a copy of the :func:`window_view` ``windows`` with a last row of ones (the bias's)."""
    c, kh, kw, _, wo, n = windows.shape
    n1 = n if n1 is None else n1
    depth = c * kh * kw
    cols = np.empty((depth + 1, h1 - h0, wo, n1 - n0), dtype=windows.dtype)
    cols[:depth].reshape(c, kh, kw, h1 - h0, wo, n1 - n0)[...] = windows[:, :, :, h0:h1, :, n0:n1]
    cols[depth] = 1
    return cols.reshape(depth + 1, -1)


# Blocks a cache grid aims at. Model 1's second conv, forward + backward on 2 threads: at batch
# 8, 1.11 ms in 6 blocks against 1.80 ms in the 2 the cache needs; at batch 32, 3.12 ms in 6
# against 3.28 ms in 12 (smaller blocks stay in cache; fewer, larger products run faster).
CACHE_GRID = 6


def _cache_grid(
    total: int, per_item: int, itemsize: int, parts: int = CACHE_GRID
) -> list[tuple[int, int]]:
    """Rows ``range(total)`` as a :func:`~stablecnn.kernels.parallel.grid` fixed by the shapes:
    about ``parts`` blocks, more where a block would hold over :data:`CACHE_BLOCK` bytes of
    window matrix (``per_item`` elements a row), each at least 1/8 of :func:`_min_items` rows
    (a call's worth). Each block is copied and multiplied at once; threads take runs of whole
    blocks (:func:`_for_each_row_block`)."""
    least, most = -(-_min_items(per_item) // 8), max(1, CACHE_BLOCK // (per_item * itemsize))
    return parallel.grid(total, least, most, parts=parts)


def _for_each_row_block(blocks, fn, per_item: int) -> None:
    """``fn(a, z)`` for every block of rows, each thread a run of at least :func:`_min_items`
    rows (less is not worth a hand-off)."""
    parallel.for_each_block(blocks, fn, min_run=_min_items(per_item))


def taps_rows(
    taps_view: np.ndarray, r0: int, r1: int, n0: int = 0, n1: int | None = None
) -> np.ndarray:
    """A copy of the :func:`row_view` taps of input rows r0..r1 (images n0..n1) as a
    ``(C*kW, rows*Wo*n)`` matrix."""
    c, kw, _, wo, n = taps_view.shape
    n1 = n if n1 is None else n1
    taps = np.empty((c, kw, r1 - r0, wo, n1 - n0), dtype=taps_view.dtype)
    np.copyto(taps, taps_view[:, :, r0:r1, :, n0:n1])
    return taps.reshape(c * kw, -1)


def _stacked_products(
    stacked, taps2d, partial, runs, f: int, cols: int, taps_row0: int = 0, partial_row0: int = 0
):
    """For each run ``(r0, r1, lo, hi)`` of input rows, the product of kernel rows lo..hi of
    ``stacked`` with those rows' taps, into the same rows and columns of ``partial`` (``cols``
    columns per row; column 0 of ``taps2d`` is input row ``taps_row0``, of ``partial``
    ``partial_row0``)."""
    for r0, r1, lo, hi in runs:
        rows = slice(lo * f, (hi + 1) * f)
        np.matmul(
            stacked[rows],
            taps2d[:, (r0 - taps_row0) * cols : (r1 - taps_row0) * cols],
            out=partial[rows, (r0 - partial_row0) * cols : (r1 - partial_row0) * cols],
        )


def _add_kernel_rows(partial, b, out) -> None:
    """``out[:, h] = b + sum_i partial[i, :, h + i]``: output row h sums kernel row i's products
    on input row h + i. ``partial`` (kH, F, rows, ...), ``out`` (F, rows - kH + 1, ...)."""
    h = out.shape[1]
    np.add(partial[0, :, :h], b.reshape(-1, *(1,) * (out.ndim - 1)), out=out)
    for i in range(1, partial.shape[0]):
        out += partial[i, :, i : i + h]


def _min_items(per_item: int) -> int:
    """Items (images, rows, filters) per thread below which a span is not worth a thread, for
    ``per_item`` elements of work each."""
    return max(1, parallel.MIN_SPAN // max(per_item, 1))


def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    padding: Padding = ((0, 0), (0, 0)),
    rows: bool | None = None,
    scratch: Callable[[str, tuple[int, ...], np.dtype], np.ndarray] = fresh,
    keep: bool = True,
    epilogue: Callable[[np.ndarray, int, int], object] | None = None,
) -> tuple[np.ndarray, ConvCache | None]:
    """Convolution of ``x`` (N, C, H, W) with ``w`` (F, C, kH, kW) plus ``b`` (F,).

    ``out[n, f, i, j] = b[f] + sum_{c,p,q} w[f, c, p, q] * xpad[n, c, i*sH + p, j*sW + q]``
    (reference: :func:`stablecnn.reference.conv2d_forward`).

    ``rows`` picks the kernel (default: :func:`use_rows_kernel`). Returns ``(out, cache)``: out
    (N, F, Ho, Wo) and what :func:`conv2d_backward` needs (None unless ``keep``). ``scratch``
    (a :class:`~stablecnn.kernels.scratch.Scratch`) supplies the work arrays. The rows are cut into
    a grid of cache blocks fixed by the shapes (:func:`_cache_grid`), each copied and multiplied
    at once, and each thread takes a run of whole blocks: every column of the window matrix
    belongs to one row, so the blocks never meet. Without ``keep`` (inference) nothing is kept
    for a backward pass: the rows kernel runs the same steps a band of output rows at a time,
    whose partial products take at most about :data:`INFERENCE_BAND` bytes, and im2col a block
    of output rows per thread (:data:`INFERENCE_BLOCK`), so memory stays flat at any batch size.
    ``epilogue(y, f0, f1)`` (inference only) is applied in place to the output of filters f0..f1,
    ``y`` with the filters on axis 0: by the rows kernel to each block as soon as its rows are
    summed (while in cache), by im2col in a pass of its own after the product.
    """
    if epilogue is not None and keep:
        raise ValueError("an epilogue runs in inference only (keep=False)")
    n = x.shape[0]
    f, c, kh, kw = w.shape
    xp = padded_chwn(x, padding)  # (C, Hp, Wp, N)
    hp = xp.shape[1]
    ho = (hp - kh) // stride[0] + 1
    wo = (xp.shape[2] - kw) // stride[1] + 1
    if rows is None:
        rows = use_rows_kernel(c, (kh, kw), stride)
    if not rows:
        # the window matrix gets a last row of ones and the weights a last column of biases:
        # the product adds the bias, and the backward product sums the bias gradient
        windows = window_view(xp, (kh, kw), stride)  # (C, kH, kW, Ho, Wo, N)
        per = wo * n  # columns per output row
        depth = c * kh * kw
        w2d = np.concatenate([w.reshape(f, depth), b[:, None]], axis=1)
        if not keep:
            out = _im2col_inference(windows, w2d)
            if epilogue is not None:  # a pass of its own, filters split across the threads
                by_filter = out.transpose(1, 2, 3, 0)
                parallel.for_each_span(
                    f, lambda a, z: epilogue(by_filter[a:z], a, z), _min_items(ho * per)
                )
            return out, None
        out = np.empty((f, ho * per), dtype=x.dtype)

        def output_rows(a, z):  # the window matrix exists only a cache block at a time
            np.matmul(w2d, window_rows(windows, a, z), out=out[:, a * per : z * per])

        _for_each_row_block(_cache_grid(ho, depth * per, x.itemsize), output_rows, depth * per)
        # backward copies the windows again, from the (small) input rather than keeping the
        # window matrix, kH*kW times larger (Model 1's first conv: 14 MB at batch 100)
        return out.reshape(f, ho, wo, n).transpose(3, 0, 1, 2), ("im2col", windows)
    # rows: the taps of every padded row, a block of Wo*N columns each: (C*kW, Hp*Wo*N). For
    # each run of input rows one product with the kernel rows that read it (kH*F rows in the
    # middle keep the product wide), and output row h sums kernel row i's products on input
    # row h + i.
    taps_view = row_view(xp, kw, stride[1])  # (C, kW, Hp, Wo, N)
    stacked = stacked_rows(w)
    out = np.empty((f, ho, wo, n), dtype=x.dtype)
    if keep:
        partial = scratch("partial", (kh * f, hp * wo * n), x.dtype)
        _rows_forward(taps_view, stacked, b, out, partial)
        # backward copies the taps again from the input, kW times smaller than they are
        return out.transpose(3, 0, 1, 2), ("rows", taps_view)
    # inference keeps nothing: the partial products of a band of output rows at a time (with
    # the kH - 1 input rows more it reads), of a chunk of images where even one row of the
    # whole batch would not fit, so memory stays flat at any batch size
    row_bytes = kh * f * wo * x.itemsize  # partial products of one input row of one image
    images = parallel.grid(n, 1, max(1, INFERENCE_BAND // (kh * row_bytes)), parts=1)
    for n0, n1 in images:
        fit = max(1, INFERENCE_BAND // (row_bytes * (n1 - n0)) - (kh - 1))
        bands = parallel.grid(ho, 1, fit, parts=1)
        tallest = max(h1 - h0 for h0, h1 in bands)
        partial = np.empty((kh * f, (tallest + kh - 1) * wo * (n1 - n0)), dtype=x.dtype)
        for h0, h1 in bands:  # the fewest cache blocks (a small batch: a few wide products)
            band = partial[:, : (h1 - h0 + kh - 1) * wo * (n1 - n0)]
            _rows_forward(taps_view, stacked, b, out, band, h0, h1, n0, n1, 1, epilogue)
    return out.transpose(3, 0, 1, 2), None


def _rows_forward(
    taps_view,
    stacked,
    b,
    out,
    partial,
    h0: int = 0,
    h1: int | None = None,
    n0: int = 0,
    n1: int | None = None,
    parts: int = CACHE_GRID,
    epilogue: Callable[[np.ndarray, int, int], object] | None = None,
) -> None:
    """The rows kernel's forward pass for output rows h0..h1 of images n0..n1 into ``out`` (F, Ho,
    Wo, N): the taps of each cache block of the input rows they read (h0 .. h1+kH-2; ``parts``
    blocks or more, see :func:`_cache_grid`) copied and multiplied at once (threads take runs of
    whole blocks, a grid fixed by the shapes) into ``partial`` (kH*F, rows*Wo*n), then output row
    h = b + the sum over kernel rows i of their products on input row h + i, split by filters,
    each block of filters then given to ``epilogue`` (see :func:`conv2d_forward`)."""
    c, kw, _, wo, n = taps_view.shape
    f, ho = out.shape[:2]
    h1, n1 = ho if h1 is None else h1, n if n1 is None else n1
    kh, per = stacked.shape[0] // f, wo * (n1 - n0)  # per: columns per row
    rows = h1 - h0 + kh - 1
    groups = row_groups(h0, h1, kh)

    def input_rows(a, z):  # the taps exist only a cache block at a time
        taps2d = taps_rows(taps_view, h0 + a, h0 + z, n0, n1)
        runs = _runs(groups, h0 + a, h0 + z)
        _stacked_products(stacked, taps2d, partial, runs, f, per, h0 + a, h0)

    blocks = _cache_grid(rows, c * kw * per, partial.itemsize, parts)
    _for_each_row_block(blocks, input_rows, c * kw * per)
    rows_of = partial.reshape(kh, f, rows, wo, n1 - n0)

    def filters(a, z):
        block = out[a:z, h0:h1, :, n0:n1]
        _add_kernel_rows(rows_of[:, a:z], b[a:z], block)
        if epilogue is not None:
            epilogue(block, a, z)

    parallel.for_each_span(f, filters, _min_items((h1 - h0) * per))


INFERENCE_BLOCK = 1 << 24  # bytes of window matrix per thread in im2col inference
# Bytes of partial products of a band of output rows in rows-kernel inference. Each band also
# copies the kH - 1 input rows below it again: at batch 500 a smaller budget meant bands of one
# or two rows. Measured, batch 500, img/s (3 fresh processes each), 16 / 24 / 32 MiB: md2
# 2,111-2,132 / 2,489-2,553 / 2,762-2,843; md3 1,913-1,942 / 2,021-2,137 / 2,046-2,092.
INFERENCE_BAND = 1 << 25


def _im2col_inference(windows, w2d) -> np.ndarray:
    """The im2col kernel a band of output rows at a time (a product's width does not depend
    on how many rows it holds); nothing is kept."""
    c, kh, kw, ho, wo, n = windows.shape
    f, depth = w2d.shape[0], c * kh * kw
    out = np.empty((f, ho, wo * n), dtype=w2d.dtype)
    row_items = (depth + 1) * wo * n  # one output row of every image
    row_bytes = row_items * w2d.itemsize
    if row_bytes <= INFERENCE_BLOCK:  # a grid of whole rows, fixed by the shapes
        rows = parallel.grid(ho, _min_items(row_items), INFERENCE_BLOCK // row_bytes)
        blocks = [(h0, h1, 0, n) for h0, h1 in rows]
    else:  # one row of a block of images at a time
        images = max(1, n * INFERENCE_BLOCK // row_bytes)
        blocks = [
            (h0, h0 + 1, n0, min(n0 + images, n)) for h0 in range(ho) for n0 in range(0, n, images)
        ]

    def one_block(h0, h1, n0, n1):
        cols2d = window_rows(windows, h0, h1, n0, n1)
        if n1 - n0 == n:  # whole rows: the product writes straight into the output
            np.matmul(w2d, cols2d, out=out[:, h0:h1].reshape(f, -1))
        else:
            out.reshape(f, ho, wo, n)[:, h0:h1, :, n0:n1] = (w2d @ cols2d).reshape(
                f, h1 - h0, wo, n1 - n0
            )

    sizes = [(h1 - h0) * (n1 - n0) for h0, h1, n0, n1 in blocks]  # rows of one image
    parallel.for_each_block(blocks, one_block, sizes, min_run=_min_items(row_items // n))
    return out.reshape(f, ho, wo, n).transpose(3, 0, 1, 2)


def _im2col_weight_grad(windows, dmat) -> np.ndarray:
    """``cols @ dmat.T`` (C*kH*kW + 1, F), cols being the window matrix of ``windows``, in
    chunks of about :data:`WEIGHT_GRAD_CHUNK` columns (whole output rows), each chunk's windows
    copied just before its product (see :func:`parallel.sum_in_order`): ~25% faster than
    splitting the product's rows for Model 1's first conv, and no window matrix is kept."""
    ho, per = windows.shape[3], windows.shape[4] * windows.shape[5]
    chunks = parallel.blocks(0, ho, per, WEIGHT_GRAD_CHUNK)  # whole output rows each

    def part(i, out):
        a, z = chunks[i]
        np.matmul(window_rows(windows, a, z), dmat[:, a * per : z * per].T, out=out)

    depth = windows.shape[0] * windows.shape[1] * windows.shape[2]
    return parallel.sum_in_order(len(chunks), part, (depth + 1, dmat.shape[0]), dmat.dtype)


def conv2d_backward(
    dout: np.ndarray,
    cache: ConvCache,
    x_shape: tuple[int, int, int, int],
    w: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    padding: Padding = ((0, 0), (0, 0)),
    need_input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d_forward`. Returns ``(dx, dw, db)``; dx is None if not needed.
    Reference: :func:`stablecnn.reference.conv2d_backward`.

    With ``D = dout`` as (F, Ho*Wo*N): ``db = D.sum(1)``. im2col: ``dw = D @ cols.T`` and the
    input gradient is the adjoint of the window copy applied to ``w.T @ D`` (see
    :func:`conv2d_input_grad`). rows: ``S`` (kH*F, Hp*Wo*N) stacks D shifted down by 0..kH-1
    rows; ``dw = S @ taps.T`` and ``dtaps = stacked.T @ S``, each over the runs of rows of
    :func:`row_groups` (see :func:`row_windows_adjoint`). The input rows are cut into the grid
    of cache blocks of the forward pass (:func:`_cache_grid`, fixed by the shapes), each block
    worked at once by one thread: dout placed, each row's share of the weight gradient (added
    up in row order at the end, so the sum does not depend on the thread count), the taps'
    gradient and its adjoint, all while the block is in cache.
    """
    kind, saved = cache
    f, c, kh, kw = w.shape
    n, ho, wo = dout.shape[0], dout.shape[2], dout.shape[3]
    dmat = dout.transpose(1, 2, 3, 0).reshape(f, -1)  # (F, Ho*Wo*N); free for our own outputs
    if kind == "im2col":
        # (F, C*kH*kW + 1), the ones row giving db; computed transposed, cols @ dmat.T, which
        # BLAS runs ~20% faster for Model 1's first conv (F = 32 against K = 36,100), a chunk
        # of output rows at a time, the window matrix copied again from the input
        dw_b = _im2col_weight_grad(saved, dmat).T
        dx = conv2d_input_grad(dmat, w, x_shape, stride, padding) if need_input_grad else None
        return dx, dw_b[:, :-1].reshape(w.shape), dw_b[:, -1]
    db = dmat.sum(axis=1)
    (pt, pb), (pl, pr) = padding
    hp, wp = x_shape[2] + pt + pb, x_shape[3] + pl + pr
    per = wo * n
    groups = row_groups(0, ho, kh)
    drows = dmat.reshape(f, ho, per)
    # the weight gradient of each input row on its own, added up in row order after: the same
    # sum whatever rows each thread took
    dw_parts = np.empty((hp, kh * f, c * kw), dtype=dout.dtype)
    if need_input_grad:
        stacked_t = stacked_rows(w).T
        dxp = np.empty((c, hp, wp, n), dtype=dout.dtype)

    def input_rows(b0, b1):  # all the work of the cache block of input rows b0..b1
        # shifted[i] is dout placed i rows down (rows b0..b1 of it): the entries each run
        # reads are written, the rest is never read, so nothing needs zeroing
        shifted = np.empty((kh, f, b1 - b0, per), dtype=dout.dtype)
        for i in range(kh):  # output row h of kernel row i sits on input row h + i
            lo, hi = max(b0 - i, 0), min(b1 - i, ho)
            if lo < hi:
                shifted[i, :, lo + i - b0 : hi + i - b0] = drows[:, lo:hi]
        shifted2d = shifted.reshape(kh * f, -1)
        taps2d = taps_rows(saved, b0, b1)  # copied again from the input
        for r0, r1, lo, hi in _runs(groups, b0, b1):
            kernel_rows = slice(lo * f, (hi + 1) * f)
            for r in range(r0, r1):
                columns = slice((r - b0) * per, (r - b0 + 1) * per)
                np.matmul(
                    shifted2d[kernel_rows, columns],
                    taps2d[:, columns].T,
                    out=dw_parts[r, kernel_rows],
                )
        if not need_input_grad:
            return
        # the taps' gradient of these rows, then at once (from cache) its adjoint
        dtaps = np.empty((c, kw, b1 - b0, wo, n), dtype=dout.dtype)
        dtaps2d = dtaps.reshape(c * kw, -1)
        for r0, r1, lo, hi in _runs(groups, b0, b1):
            np.matmul(
                stacked_t[:, lo * f : (hi + 1) * f],
                shifted2d[lo * f : (hi + 1) * f, (r0 - b0) * per : (r1 - b0) * per],
                out=dtaps2d[:, (r0 - b0) * per : (r1 - b0) * per],
            )
        dxp[:, b0:b1] = 0  # a tap moves along its row only, so these rows are complete
        row_windows_adjoint(dtaps, dxp[:, b0:b1], stride[1])

    _for_each_row_block(_cache_grid(hp, c * kw * per, dout.itemsize), input_rows, c * kw * per)
    dw_rows = np.zeros((kh * f, c * kw), dtype=dout.dtype)
    for r0, r1, lo, hi in groups:
        for r in range(r0, r1):
            dw_rows[lo * f : (hi + 1) * f] += dw_parts[r, lo * f : (hi + 1) * f]
    dw = dw_rows.reshape(kh, f, c, kw).transpose(1, 2, 0, 3)
    if not need_input_grad:
        return None, dw, db
    dx = dxp[:, pt : pt + x_shape[2], pl : pl + x_shape[3]]  # (C, H, W, N)
    return dx.transpose(3, 0, 1, 2), dw, db
