"""The fast kernels of max pooling, used by :class:`stablecnn.nn.MaxPool2d`.

Two kernels, both vectorised over the whole batch (no loop over images, channels or pixels):

- 2x2 windows (Model 1's pools, any stride) are separable: the larger of each column pair, then
  the larger of the two rows' winners. Two comparisons and two maxima in all, and two boolean
  choices (right column won; bottom row won) are all the backward pass needs. With stride 1 and
  an input that is one contiguous block in any axis order (the convolutions' (C, H, W, N)
  outputs, or plain NCHW), each of those passes runs over the whole array as one flat vector,
  offset by the distance to the next column or to the next row: windows that straddle an edge
  are computed too and never read, and NumPy's inner loop then runs at memory speed instead of
  18 elements at a time (4x faster here).
- Any other window loops over its kH*kW offsets, one comparison and a running argmax each.

Ties: when a window holds equal maxima, the whole gradient goes to the *first* of them in
row-major window order (smallest row, then smallest column), as PyTorch's CPU kernel does.
Every kernel here computes :func:`stablecnn.reference.maxpool2d_forward` and
:func:`~stablecnn.reference.maxpool2d_backward`, the definitions the tests hold them to.

ReLU then max-pool: ``maxpool(relu(x)) == relu(maxpool(x))`` (both are monotone), so every
kernel takes ``relu=True`` and computes the pair on the pooled output, which is smaller, in the
pool's own passes: the gradient is masked where the pooled output is not positive, then routed.
That is the pair's gradient exactly. Where the window's maximum is positive both pick the same
input; where it is not, the pair's gradient is zero either way.
:class:`~stablecnn.nn.layers.pool.ReLUMaxPool2d` is the pair as one layer;
:func:`stablecnn.nn.fuse.fuse` puts one in a model's execution plan for each ReLU that a MaxPool2d
follows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stablecnn.kernels import parallel

# the flat kernel's choices: (right, below, top or None, axis order); see maxpool2x2_flat_forward
FlatChoice = tuple[np.ndarray, np.ndarray, np.ndarray | None, list[int]]


def _window(
    x: np.ndarray, i: int, j: int, stride: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """The (N, C, Ho, Wo) view of ``x`` at kernel offset (i, j)."""
    (sh, sw), (ho, wo) = stride, out_hw
    return x[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def batch_or_channel(x: np.ndarray) -> int:
    """Axis 0 or 1, whichever is outermost in memory (and longer than 1): the axis to split
    across threads, since windows never cross it."""
    return max((0, 1), key=lambda i: (x.shape[i] > 1, abs(x.strides[i])))


def maxpool2d_forward(
    x: np.ndarray,
    kernel: tuple[int, int] = (2, 2),
    stride: tuple[int, int] = (2, 2),
    with_argmax: bool = True,
    relu: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``out[n, c, i, j] = max_{p<kH, q<kW} x[n, c, i*sH + p, j*sW + q]``, then ``max(out, 0)``
    if ``relu`` (see the module doc). Reference: :func:`stablecnn.reference.maxpool2d_forward`.

    Returns ``(out, argmax)``: out (N, C, Ho, Wo) and, per output, the row-major index
    ``p * kW + q`` of the first maximum in its window (uint8), which backward needs (None when
    not ``with_argmax``). Both keep the input's memory layout, so every pass below walks memory
    in order; spans of the outermost of the batch and channel axes run on separate threads.
    """
    kh, kw = kernel
    ho = (x.shape[2] - kh) // stride[0] + 1
    wo = (x.shape[3] - kw) // stride[1] + 1
    out = np.empty_like(_window(x, 0, 0, stride, (ho, wo)), order="K")
    argmax = np.empty_like(out, dtype=np.uint8) if with_argmax else None

    def running_argmax(x_span, out_span, argmax_span):
        argmax_span[...] = 0
        better = np.empty_like(out_span, dtype=bool)
        index = np.empty_like(argmax_span)
        for k in range(1, kh * kw):
            candidate = _window(x_span, k // kw, k % kw, stride, (ho, wo))
            np.greater(candidate, out_span, out=better)  # strict: a later equal value never wins
            np.maximum(out_span, candidate, out=out_span)
            # offsets come in increasing order, so "k where better, else keep" is a running max
            np.multiply(better, np.uint8(k), out=index)
            np.maximum(argmax_span, index, out=argmax_span)

    def pool(x_span, out_span, argmax_span):  # one thread's span of images or channels
        out_span[...] = _window(x_span, 0, 0, stride, (ho, wo))
        if argmax_span is None:
            for k in range(1, kh * kw):
                candidate = _window(x_span, k // kw, k % kw, stride, (ho, wo))
                np.maximum(out_span, candidate, out=out_span)
        else:
            running_argmax(x_span, out_span, argmax_span)
        if relu:
            np.maximum(out_span, 0, out=out_span)

    parallel.split(pool, x, out, argmax, axis=batch_or_channel(out))
    return out, argmax


def maxpool2x2_forward(
    x: np.ndarray, stride: tuple[int, int] = (2, 2), with_choice: bool = True, relu: bool = False
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """2x2 max-pool in two separable passes; same result and tie rule as :func:`maxpool2d_forward`
    (and the same ``relu``). Reference: :func:`stablecnn.reference.maxpool2d_forward`.

    Returns ``(out, choice)``, ``choice = (right, below)`` (None when not ``with_choice``):
    ``right[n, c, r, j]`` is whether in input row r the window's right column strictly beats its
    left one, ``below[n, c, i, j]`` whether the bottom row's winner strictly beats the top's. The
    first maximum in row-major order is then: top row unless ``below``, left column unless
    ``right``; an equal later value never wins.
    """
    (sh, sw), (h, w) = stride, x.shape[2:]
    ho, wo = (h - 2) // sh + 1, (w - 2) // sw + 1
    hr = sh * (ho - 1) + 2  # input rows any window reads
    out = np.empty_like(_window(x, 0, 0, stride, (ho, wo)), order="K")
    right = np.empty_like(x[:, :, :hr, :wo], dtype=bool, order="K") if with_choice else None
    below = np.empty_like(out, dtype=bool) if with_choice else None

    def pool(x_span, out_span, right_span, below_span):  # a span of images or channels
        left_col = x_span[:, :, :hr, 0 : sw * (wo - 1) + 1 : sw]
        right_col = x_span[:, :, :hr, 1 : sw * (wo - 1) + 2 : sw]
        pairs = np.maximum(left_col, right_col)  # (n, c, hr, Wo): each row's window winner
        top, bottom = (
            pairs[:, :, 0 : sh * (ho - 1) + 1 : sh],
            pairs[:, :, 1 : sh * (ho - 1) + 2 : sh],
        )
        np.maximum(top, bottom, out=out_span)
        if relu:
            np.maximum(out_span, 0, out=out_span)
        if right_span is not None:
            np.greater(right_col, left_col, out=right_span)
            np.greater(bottom, top, out=below_span)

    parallel.split(pool, x, out, right, below, axis=batch_or_channel(out))
    return out, ((right, below) if with_choice else None)


def contiguous_order(x: np.ndarray) -> list[int] | None:
    """The axis order, outermost first, in which ``x`` is one C-contiguous block
    (``[0, 1, 2, 3]`` for NCHW, ``[1, 2, 3, 0]`` for the convolutions' (C, H, W, N) outputs),
    else None."""
    order = sorted(range(4), key=lambda i: -abs(x.strides[i]))
    if sorted(order) != [0, 1, 2, 3] or not x.transpose(order).flags.c_contiguous:
        return None
    return order


FLAT_BLOCK = (
    1 << 20
)  # bytes of input a thread's flat passes work at a time (measured: 256 KB slower)


def _flat_split(fn: Callable[..., object], order: list[int], *arrays: np.ndarray | None) -> None:
    """``fn(*arrays)`` on permuted, C-contiguous arrays, split across threads along their
    outermost axis unless it is H or W (a block boundary would then cut the row or column pairs
    the flat passes read across); each thread works its span :data:`FLAT_BLOCK` bytes at a
    time, so the several passes over a block and their temporaries stay in cache."""
    if order[0] in (2, 3):
        fn(*arrays)
        return

    def in_blocks(*spans):
        for a, z in parallel.blocks(0, spans[0].shape[0], spans[0][:1].nbytes, FLAT_BLOCK):
            fn(*(None if s is None else s[a:z] for s in spans))

    parallel.split(in_blocks, *arrays, axis=0)


def maxpool2x2_flat_forward(
    x: np.ndarray, order: list[int], with_choice: bool = True, relu: bool = False
) -> tuple[np.ndarray, FlatChoice | None]:
    """Stride-1 2x2 max-pool of ``x`` laid out as ``order`` (see :func:`contiguous_order`), on
    flat vectors (``relu`` as in :func:`maxpool2d_forward`). Returns ``(out, choice)``: ``out``
    is a view of the valid part of the full H x W grid the passes fill.
    Reference: :func:`stablecnn.reference.maxpool2d_forward`.

    The choices are boolean masks on the grid: ``right`` where a column's right neighbour
    strictly beats it; ``below`` where a window's bottom row wins (and, after a ReLU, its
    maximum is positive); after a ReLU, ``top`` where the top row wins and the maximum is
    positive (else None: the top row gets what the bottom does not). Kept as 0/1 floats they
    would make the backward products twice as fast but cost four times the bytes to write:
    measured slower in all."""
    n, c, h, w = x.shape
    xt = x.transpose(order)  # C-contiguous
    # elements from one row, and from one column, to the next: W and 1 for NCHW, W*N and N for
    # the convolutions' (C, H, W, N)
    row, col = x.strides[2] // x.itemsize, x.strides[3] // x.itemsize
    full = np.empty(xt.shape, dtype=x.dtype)
    right, below = (np.empty(xt.shape, dtype=bool) if with_choice else None for _ in range(2))
    top = np.empty(xt.shape, dtype=bool) if with_choice and relu else None

    def pool(xt_span, full_span, right_span, below_span, top_span):  # whole channels or images
        xf, size = xt_span.reshape(-1), xt_span.size
        last = size - col - row  # positions < last have a full 2x2 window in the flat vector
        pairs = np.maximum(xf[:-col], xf[col:])  # pairs[k]: max of column k and the next
        pooled = full_span.reshape(-1)[:last]
        np.maximum(pairs[:-row], pairs[row:], out=pooled)
        if relu:
            np.maximum(pooled, 0, out=pooled)
        if right_span is None:
            return
        np.greater(xf[col:], xf[:-col], out=right_span.reshape(-1)[: size - col])
        bottom_wins = np.greater(pairs[row:], pairs[:-row], out=below_span.reshape(-1)[:last])
        if relu:
            positive = pooled > 0
            np.greater(positive, bottom_wins, out=top_span.reshape(-1)[:last])  # True > False
            bottom_wins &= positive

    _flat_split(pool, order, xt, full, right, below, top)
    inverse = list(np.argsort(order))
    out = full.transpose(inverse)[:, :, : h - 1, : w - 1]
    return out, ((right, below, top, order) if with_choice else None)


def maxpool2x2_flat_backward(dout: np.ndarray, choice: FlatChoice) -> np.ndarray:
    """Gradient of :func:`maxpool2x2_flat_forward` (of the ReLU's input too, after
    ``relu=True``); dx has the forward input's layout.
    Reference: :func:`stablecnn.reference.maxpool2d_backward`."""
    right, below, top, order = choice
    inverse = list(np.argsort(order))
    ho, wo = dout.shape[2:]
    row = right.strides[inverse[2]] // right.itemsize
    col = right.strides[inverse[3]] // right.itemsize
    dx = np.empty(right.shape, dtype=dout.dtype)  # the permuted, C-contiguous layout

    def route(dout_span, right_span, below_span, top_span, dx_span):  # the permuted layout
        size = dx_span.size
        last = size - col - row
        grid = np.empty(dx_span.shape, dtype=dx_span.dtype)  # dout on the full grid, 0 on the edges
        view = grid.transpose(inverse)
        view[:, :, :ho, :wo] = dout_span.transpose(inverse)
        view[:, :, ho:] = 0
        view[:, :, :ho, wo:] = 0
        g = grid.reshape(-1)[:last]
        to_bottom = g * below_span.reshape(-1)[:last]  # exact: g * 1 or g * 0
        pairs = np.empty(size - col, dtype=dx_span.dtype)  # the gradient of each column pair's max
        if top_span is None:
            np.subtract(g, to_bottom, out=pairs[:last])  # g - g = 0 exactly
        else:
            np.multiply(g, top_span.reshape(-1)[:last], out=pairs[:last])
        pairs[last:] = 0
        pairs[row:] += to_bottom
        to_right = pairs * right_span.reshape(-1)[: size - col]
        dxf = dx_span.reshape(-1)
        np.subtract(pairs, to_right, out=dxf[: size - col])  # what goes to the left column
        dxf[size - col :] = 0
        dxf[col:] += to_right

    _flat_split(route, order, dout.transpose(order), right, below, top, dx)
    return dx.transpose(inverse)


def maxpool2x2_backward(
    dout: np.ndarray,
    choice: tuple[np.ndarray, np.ndarray],
    x_like: np.ndarray,
    stride: tuple[int, int] = (2, 2),
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Gradient of :func:`maxpool2x2_forward`: each output's gradient goes down to the winning
    row, then across to the winning column; overlapping windows add (with stride 2 none
    overlap, and each quarter of dx is written once). ``out`` as in
    :func:`maxpool2x2_flat_backward`. Reference: :func:`stablecnn.reference.maxpool2d_backward`."""
    right, below = choice
    (sh, sw), (ho, wo) = stride, dout.shape[2:]
    hr = right.shape[2]
    dx = np.empty_like(x_like, dtype=dout.dtype)

    def to_rows(dout_span, below_span, out_span):
        """Each window's gradient (masked by a fused ReLU) split between its top and bottom
        row's winners: ``(to_top, to_bottom)``, exact (g * 1 or g * 0, and g - g = 0)."""
        g = dout_span if out_span is None else dout_span * (out_span > 0)
        to_bottom = g * below_span
        return np.subtract(g, to_bottom, out=np.empty_like(g)), to_bottom

    def route_disjoint(dout_span, right_span, below_span, dx_span, out_span):
        # stride 2: the windows tile the input, so each input gets one window's gradient or 0,
        # written straight into dx's four interleaved quarters (4x faster than adding into a
        # zeroed dx: 1.4 against 5.9 ms for md2's (100, 32, 28, 28) pool, the same bits)
        to_top, to_bottom = to_rows(dout_span, below_span, out_span)
        for row, to_row in ((0, to_top), (1, to_bottom)):
            quarter_right = dx_span[:, :, row : 2 * ho : 2, 1 : 2 * wo : 2]
            np.multiply(to_row, right_span[:, :, row : 2 * ho : 2], out=quarter_right)
            np.subtract(to_row, quarter_right, out=dx_span[:, :, row : 2 * ho : 2, 0 : 2 * wo : 2])
        dx_span[:, :, 2 * ho :] = 0  # an odd last row or column no window reads
        dx_span[:, :, : 2 * ho, 2 * wo :] = 0

    def route(dout_span, right_span, below_span, dx_span, out_span):  # images or channels
        to_top, to_bottom = to_rows(dout_span, below_span, out_span)
        dpairs = np.zeros(right_span.shape, dtype=dx.dtype)  # the gradient each row's winner gets
        dpairs[:, :, 0 : sh * (ho - 1) + 1 : sh] += to_top
        dpairs[:, :, 1 : sh * (ho - 1) + 2 : sh] += to_bottom
        to_right = dpairs * right_span
        np.subtract(dpairs, to_right, out=dpairs)  # what goes to the left column
        dx_span[...] = 0
        dx_span[:, :, :hr, 0 : sw * (wo - 1) + 1 : sw] += dpairs
        dx_span[:, :, :hr, 1 : sw * (wo - 1) + 2 : sw] += to_right

    kernel = route_disjoint if (sh, sw) == (2, 2) else route
    parallel.split(kernel, dout, right, below, dx, out, axis=batch_or_channel(dx))
    return dx


def maxpool2d_backward(
    dout: np.ndarray,
    argmax: np.ndarray,
    x_like: np.ndarray,
    kernel: tuple[int, int] = (2, 2),
    stride: tuple[int, int] = (2, 2),
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Route each output gradient to the input position that held its window's maximum.
    Reference: :func:`stablecnn.reference.maxpool2d_backward`.

    ``x_like`` is the forward input (only its shape, dtype and layout are used). Overlapping
    windows (stride < kernel) can route several gradients to one input: they add. ``out`` as in
    :func:`maxpool2x2_flat_backward`.
    """
    kh, kw = kernel
    ho, wo = dout.shape[2:]
    dx = np.empty_like(x_like, dtype=dout.dtype)

    def route(dout_span, argmax_span, dx_span, out_span):  # a span of images or channels
        g = dout_span if out_span is None else dout_span * (out_span > 0)
        dx_span[...] = 0
        chosen = np.empty_like(argmax_span, dtype=bool)
        routed = np.empty_like(g)
        for k in range(kh * kw):
            np.equal(argmax_span, k, out=chosen)
            np.multiply(g, chosen, out=routed)
            _window(dx_span, k // kw, k % kw, stride, (ho, wo))[...] += routed

    parallel.split(route, dout, argmax, dx, out, axis=batch_or_channel(dx))
    return dx
