"""Conv2d against its definition in :mod:`stablecnn.reference` and float64 finite differences,
over a table of shapes (non-square inputs and kernels, strides, padding, "same"); its two kernels
(im2col and rows), inference in blocks of rows and its memory, cache blocks; its arguments."""

import numpy as np
import pytest
from support.gradcheck import numerical_grad, rel_error

from stablecnn import (
    Conv2d,
    reference,
)
from stablecnn.kernels.conv import resolve_padding

CONV_CASES = [
    # (N, C, H, W), F, kernel, stride, padding
    ((2, 1, 7, 7), 3, 3, 1, 0),
    ((2, 2, 7, 9), 3, (3, 2), 1, 0),  # non-square input and kernel
    ((1, 3, 8, 6), 2, (2, 3), (2, 1), 1),  # stride per axis, padding
    ((2, 2, 9, 7), 2, 3, 2, (1, 2)),
    ((2, 2, 6, 5), 2, (4, 3), 1, "same"),  # even kernel: asymmetric "same"
    ((1, 1, 5, 5), 1, 5, 1, "valid"),  # 1x1 output
]


def _params(layer):
    return layer.params["weight"], layer.params["bias"]


@pytest.mark.parametrize("shape,f,kernel,stride,padding", CONV_CASES)
def test_conv_matches_the_reference(shape, f, kernel, stride, padding):
    rng = np.random.default_rng(0)
    conv = Conv2d(shape[1], f, kernel, stride, padding, rng=rng, dtype=np.float64)
    x = rng.standard_normal(shape)
    w, b = _params(conv)
    b[...] = rng.standard_normal(f)  # a zero bias would hide a missing add
    expected = reference.conv2d_forward(x, w, b, conv.stride, conv.padding)
    out = conv.forward(x)
    assert out.shape == expected.shape == (shape[0], *conv.output_shape(shape[1:]))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx = conv.backward(dout)
    want = reference.conv2d_backward(dout, x, w, conv.stride, conv.padding)
    for got, ref, name in zip(
        (dx, conv.grads["weight"], conv.grads["bias"]), want, ("dx", "dw", "db")
    ):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("shape,f,kernel,stride,padding", CONV_CASES)
def test_conv_gradients_match_finite_differences(shape, f, kernel, stride, padding):
    rng = np.random.default_rng(1)
    conv = Conv2d(shape[1], f, kernel, stride, padding, rng=rng, dtype=np.float64)
    conv.params["bias"][...] = rng.standard_normal(f)
    x = rng.standard_normal(shape)
    out_shape = conv.forward(x).shape
    dout = rng.standard_normal(out_shape)

    def f_loss():
        return float(np.sum(conv.forward(x) * dout))

    conv.forward(x)
    dx = conv.backward(dout)
    analytic = {"x": dx, "weight": conv.grads["weight"].copy(), "bias": conv.grads["bias"].copy()}
    numeric = {"x": numerical_grad(f_loss, x)}
    for name in ("weight", "bias"):
        numeric[name] = numerical_grad(f_loss, conv.params[name])
    for name in analytic:
        assert rel_error(analytic[name], numeric[name]) < 1e-7, name


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_channels=0, out_channels=2, kernel_size=3), "in_channels"),
        (dict(in_channels=1, out_channels=2, kernel_size=(3, 0)), "kernel_size"),
        (dict(in_channels=1, out_channels=2, kernel_size=3, stride=0), "stride"),
        (dict(in_channels=1, out_channels=2, kernel_size=3, padding=-1), "padding"),
        (dict(in_channels=1, out_channels=2, kernel_size=3, padding="full"), "padding"),
        (dict(in_channels=1, out_channels=2, kernel_size=3, stride=2, padding="same"), "stride 1"),
    ],
)
def test_conv_constructor_rejects_bad_arguments_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Conv2d(**kwargs)


def test_same_padding_keeps_the_size_for_odd_and_even_kernels():
    assert resolve_padding("same", (3, 4), (1, 1)) == ((1, 1), (1, 2))
    conv = Conv2d(1, 1, (3, 4), padding="same")
    assert conv.output_shape((1, 7, 6)) == (1, 7, 6)


ROWS_CASES = [
    # stride 1 in height (the rows kernel's condition), other things varied
    ((2, 16, 7, 9), 3, (3, 4), (1, 2), 1),
    ((2, 8, 6, 6), 2, (2, 3), 1, "same"),
    ((1, 32, 9, 8), 4, 5, 1, 0),
]


@pytest.mark.parametrize(
    "shape,f,kernel,stride,padding",
    ROWS_CASES
    + [c for c in CONV_CASES if (c[3] if isinstance(c[3], tuple) else (c[3], c[3]))[0] == 1],
)
def test_rows_and_im2col_kernels_agree_with_the_reference(shape, f, kernel, stride, padding):
    from stablecnn.kernels.conv import conv2d_backward, conv2d_forward

    rng = np.random.default_rng(8)
    conv = Conv2d(shape[1], f, kernel, stride, padding, rng=rng, dtype=np.float64)
    w, b = conv.params["weight"], rng.standard_normal(f)
    x = rng.standard_normal(shape)
    expected = reference.conv2d_forward(x, w, b, conv.stride, conv.padding)
    results = {}
    for rows in (False, True):
        out, cache = conv2d_forward(x, w, b, conv.stride, conv.padding, rows=rows)
        assert cache[0] == ("rows" if rows else "im2col")
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        dout = np.random.default_rng(9).standard_normal(out.shape)
        results[rows] = conv2d_backward(dout, cache, x.shape, w, conv.stride, conv.padding)
    want = reference.conv2d_backward(dout, x, w, conv.stride, conv.padding)
    for rows in (False, True):
        for got, ref, name in zip(results[rows], want, ("dx", "dw", "db")):
            np.testing.assert_allclose(
                got, ref, rtol=1e-12, atol=1e-12, err_msg=f"{name}, rows={rows}"
            )


@pytest.mark.parametrize("shape,f,kernel,stride,padding", CONV_CASES)
@pytest.mark.parametrize("block", [1, 3000, 1 << 30])  # a row of one image, a few, or all
def test_inference_in_row_blocks_matches_the_reference(
    monkeypatch, shape, f, kernel, stride, padding, block
):
    """Without keep (inference) the kernels hold a block of rows at a time (im2col) or a band
    of rows of a chunk of images (rows: one row of one image at the smallest); same outputs."""
    from stablecnn.kernels import conv as conv_module

    monkeypatch.setattr(conv_module, "INFERENCE_BLOCK", block)
    monkeypatch.setattr(conv_module, "INFERENCE_BAND", block)
    rng = np.random.default_rng(10)
    conv = Conv2d(shape[1], f, kernel, stride, padding, rng=rng, dtype=np.float64)
    w, b = conv.params["weight"], rng.standard_normal(f)
    x = rng.standard_normal(shape)
    expected = reference.conv2d_forward(x, w, b, conv.stride, conv.padding)
    kernels = (False, True) if conv.stride[0] == 1 else (False,)
    for rows in kernels:
        out, cache = conv_module.conv2d_forward(
            x, w, b, conv.stride, conv.padding, rows=rows, keep=False
        )
        assert cache is None
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_inference_memory_does_not_grow_with_the_batch(threads):
    """The rows kernel's work arrays in inference are one band of rows (of a chunk of images),
    not the whole batch, on one thread as on two."""
    import tracemalloc

    from stablecnn.kernels import conv as conv_module
    from stablecnn.kernels import parallel

    conv = Conv2d(32, 32, 3, padding="same", rng=np.random.default_rng(0))
    x = np.random.default_rng(1).random((1000, 32, 28, 28), dtype=np.float32)  # 100 MB
    before = parallel.get_num_threads()
    parallel.set_num_threads(threads)
    try:
        conv.forward(x[:2], training=False)
        tracemalloc.start()
        out = conv.forward(x, training=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        parallel.set_num_threads(before)
    # the padded input copy and the output are 100-115 MB each; whole-batch taps and partial
    # products would add 3 x 100 MB each
    # a band's partial products, and each thread's cache block of taps (one row here)
    taps_row = 32 * 3 * 28 * 1000 * 4
    work = conv_module.INFERENCE_BAND + threads * taps_row
    assert peak < out.nbytes * 2.2 + work, (peak, work)


def test_the_layer_picks_the_rows_kernel_for_deep_stride_1_convolutions():
    from stablecnn.kernels.conv import use_rows_kernel

    assert use_rows_kernel(32, (5, 5), (1, 1))  # Model 1's second conv
    assert not use_rows_kernel(1, (10, 10), (1, 1))  # its first: too thin, im2col is faster
    assert use_rows_kernel(16, (3, 3), (1, 1))  # md3's first stage: the backward is faster
    assert not use_rows_kernel(3, (3, 3), (1, 1))  # a colour stem
    assert not use_rows_kernel(32, (5, 5), (2, 1))


@pytest.mark.parametrize("block", [1 << 12, 1 << 16])
def test_conv_backward_is_the_same_in_any_block_size(monkeypatch, block):
    """The rows kernel's backward works its input rows a cache block at a time: blocks of one
    row, of a few, or all rows at once give the same gradients (float64)."""
    from stablecnn.kernels import conv

    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 24, 12, 11))
    layer = Conv2d(24, 4, (4, 3), padding=(2, 1), rng=rng, dtype=np.float64)
    assert conv.use_rows_kernel(24, layer.kernel_size, layer.stride)
    dout = rng.standard_normal(layer.forward(x).shape)
    monkeypatch.setattr(conv, "CACHE_BLOCK", 1 << 30)
    layer.forward(x)
    whole = [layer.backward(dout), layer.grads["weight"].copy(), layer.grads["bias"].copy()]
    monkeypatch.setattr(conv, "CACHE_BLOCK", block)
    layer.forward(x)
    blocked = [layer.backward(dout), layer.grads["weight"], layer.grads["bias"]]
    for got, want in zip(blocked, whole):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
