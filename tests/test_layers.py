"""Layers against their definitions in :mod:`stablecnn.reference` and against finite differences
(float64)."""

import numpy as np
import pytest
from support.gradcheck import numerical_grad, rel_error

from stablecnn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, ShapeError, reference
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


def test_conv_backward_can_skip_the_input_gradient():
    rng = np.random.default_rng(2)
    conv = Conv2d(1, 2, 3, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 1, 6, 6))
    dout = rng.standard_normal((2, 2, 4, 4))
    conv.forward(x)
    conv.backward(dout)
    gw = conv.grads["weight"].copy()
    conv.forward(x)
    assert conv.backward(dout, need_input_grad=False) is None
    np.testing.assert_array_equal(conv.grads["weight"], gw)


POOL_CASES = [
    ((2, 3, 6, 6), 2, None),
    ((2, 2, 7, 5), 2, 1),  # overlapping, non-square
    ((2, 3, 7, 8), 2, (1, 2)),  # the separable 2x2 kernel with per-axis strides
    ((2, 2, 9, 6), 2, (3, 1)),
    ((1, 2, 9, 8), (3, 2), (2, 1)),
    ((2, 1, 6, 7), 3, 3),
]


@pytest.mark.parametrize("shape,kernel,stride", POOL_CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool_matches_the_reference_including_ties(shape, kernel, stride, ties):
    rng = np.random.default_rng(3)
    pool = MaxPool2d(kernel, stride)
    x = rng.integers(0, 3, shape).astype(np.float64) if ties else rng.standard_normal(shape)
    out = pool.forward(x)
    np.testing.assert_array_equal(
        out, reference.maxpool2d_forward(x, pool.kernel_size, pool.stride)
    )
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(
        pool.backward(dout),
        reference.maxpool2d_backward(dout, x, pool.kernel_size, pool.stride),
        rtol=1e-12,
        atol=1e-12,
    )


LAYOUTS = {
    "nchw": (0, 1, 2, 3),
    "channel-major": (1, 0, 2, 3),
    "rows outermost": (1, 2, 0, 3),
    "rows first": (2, 1, 0, 3),
    "batch innermost": (1, 2, 3, 0),
    "columns outermost": (3, 1, 2, 0),
    "one image": (0, 1, 2, 3),
    "one channel": (0, 1, 2, 3),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_flat_2x2_pool_equals_the_general_kernel(layout):
    from stablecnn.kernels.pool import (
        contiguous_order,
        maxpool2d_backward,
        maxpool2d_forward,
        maxpool2x2_flat_backward,
        maxpool2x2_flat_forward,
    )

    rng = np.random.default_rng(9)
    shape = {"one image": (1, 6, 7, 9), "one channel": (6, 1, 9, 7)}.get(layout, (5, 4, 11, 10))
    x = rng.integers(0, 3, shape).astype(np.float32)  # ties in most windows
    order = LAYOUTS[layout]  # memory order of the NCHW axes, outermost first
    x = np.ascontiguousarray(x.transpose(order)).transpose(np.argsort(order))
    assert contiguous_order(x) == list(order) or 1 in x.shape[:2]
    order = contiguous_order(x)
    out, argmax = maxpool2d_forward(x, (2, 2), (1, 1))
    out2, choice = maxpool2x2_flat_forward(x, order)
    np.testing.assert_array_equal(out2, out)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx = maxpool2d_backward(dout, argmax, x, (2, 2), (1, 1))
    dx2 = maxpool2x2_flat_backward(dout, choice)
    assert (
        dx2.shape == x.shape and np.argsort(dx2.strides).tolist() == np.argsort(x.strides).tolist()
    )
    np.testing.assert_array_equal(dx2 != 0, dx != 0)  # the same cells get gradient
    np.testing.assert_allclose(dx2, dx, rtol=1e-6, atol=1e-6)  # added in another order


def test_flat_pool_is_not_used_on_strided_inputs():
    from stablecnn.kernels.pool import contiguous_order

    x = np.zeros((4, 3, 10, 12), np.float32)
    assert contiguous_order(x) == [0, 1, 2, 3]
    assert contiguous_order(x.transpose(1, 0, 2, 3)) == [1, 0, 2, 3]
    assert contiguous_order(np.zeros((10, 3, 4, 12)).transpose(2, 1, 0, 3)) == [2, 1, 0, 3]
    assert contiguous_order(x[:, :, :, :6]) is None  # rows not contiguous with each other
    assert contiguous_order(x[:, :, ::2]) is None
    assert contiguous_order(x.transpose(0, 1, 3, 2)) == [0, 1, 3, 2]  # any order of one block
    pool = MaxPool2d(2, 1)  # and the layer still pools them right
    y = np.random.default_rng(0).standard_normal((4, 3, 10, 12))[:, :, :, :6]
    np.testing.assert_array_equal(pool.forward(y), reference.maxpool2d_forward(y, (2, 2), (1, 1)))


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (1, 2), (3, 1)])
@pytest.mark.parametrize("layout", ["nchw", "channel-major"])
def test_separable_2x2_pool_equals_the_general_kernel(stride, layout):
    from stablecnn.kernels.pool import (
        maxpool2d_backward,
        maxpool2d_forward,
        maxpool2x2_backward,
        maxpool2x2_forward,
    )

    rng = np.random.default_rng(8)
    x = rng.integers(0, 3, (5, 4, 11, 10)).astype(np.float32)  # ties in most windows
    if layout == "channel-major":
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    out, argmax = maxpool2d_forward(x, (2, 2), stride)
    out2, choice = maxpool2x2_forward(x, stride)
    np.testing.assert_array_equal(out2, out)
    assert out2.strides == out.strides  # the input's layout is kept
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx = maxpool2d_backward(dout, argmax, x, (2, 2), stride)
    dx2 = maxpool2x2_backward(dout, choice, x, stride)
    np.testing.assert_array_equal(dx2 != 0, dx != 0)  # the same cells get gradient
    # where overlapping windows meet, the two kernels add their shares in another order
    np.testing.assert_allclose(dx2, dx, rtol=1e-6, atol=1e-6)


def test_maxpool_tie_goes_to_first_maximum_in_row_major_order():
    x = np.array([[[[1.0, 5.0], [5.0, 5.0]]]])
    pool = MaxPool2d(2)
    pool.forward(x)
    np.testing.assert_array_equal(pool.backward(np.ones((1, 1, 1, 1))), [[[[0, 1], [0, 0]]]])


@pytest.mark.parametrize("shape,kernel,stride", POOL_CASES)
def test_maxpool_gradient_matches_finite_differences(shape, kernel, stride):
    rng = np.random.default_rng(4)
    # distinct values spaced far apart keep every window's maximum clear of the step h (no kink)
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64) * 0.1
    pool = MaxPool2d(kernel, stride)
    dout = rng.standard_normal(pool.forward(x).shape)
    dx = pool.backward(dout)
    numeric = numerical_grad(lambda: float(np.sum(pool.forward(x) * dout)), x)
    assert rel_error(dx, numeric) < 1e-7


def test_linear_relu_flatten_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    flat, lin, relu = Flatten(), Linear(12, 5, rng=rng, dtype=np.float64), ReLU()
    lin.params["bias"][...] = rng.standard_normal(5)
    x = rng.standard_normal((3, 2, 2, 3))
    dout = rng.standard_normal((3, 5))

    def run():
        return relu.forward(lin.forward(flat.forward(x)))

    # keep the ReLU inputs away from 0 so finite differences never straddle the kink
    pre = lin.forward(flat.forward(x))
    assert np.min(np.abs(pre)) > 1e-4

    run()
    dx = flat.backward(lin.backward(relu.backward(dout)))
    analytic = {"x": dx, "weight": lin.grads["weight"].copy(), "bias": lin.grads["bias"].copy()}
    f = lambda: float(np.sum(run() * dout))  # noqa: E731
    numeric = {
        "x": numerical_grad(f, x),
        "weight": numerical_grad(f, lin.params["weight"]),
        "bias": numerical_grad(f, lin.params["bias"]),
    }
    for name in analytic:
        assert rel_error(analytic[name], numeric[name]) < 1e-7, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layer_keeps_the_input_dtype(dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 8, 7)).astype(dtype)
    conv, pool, relu, flat = (
        Conv2d(2, 3, 3, rng=rng, dtype=dtype),
        MaxPool2d(2, 1),
        ReLU(),
        Flatten(),
    )
    lin = Linear(3 * 5 * 4, 4, rng=rng, dtype=dtype)
    out = lin.forward(flat.forward(pool.forward(relu.forward(conv.forward(x)))))
    assert out.dtype == dtype
    dx = conv.backward(relu.backward(pool.backward(flat.backward(lin.backward(np.ones_like(out))))))
    assert dx.dtype == dtype
    for layer in (conv, lin):
        assert all(g.dtype == dtype for g in layer.grads.values())


def test_layers_refuse_a_mismatched_dtype_instead_of_computing_in_another():
    conv = Conv2d(1, 2, 3, dtype=np.float64)
    with pytest.raises(TypeError, match="float64.*float32"):
        conv.forward(np.zeros((1, 1, 5, 5), np.float32))


def test_gradients_are_written_in_place():
    rng = np.random.default_rng(7)
    conv = Conv2d(1, 2, 3, rng=rng)
    grad = conv.grads["weight"]
    for _ in range(2):
        conv.forward(rng.standard_normal((2, 1, 5, 5)).astype(np.float32))
        conv.backward(np.ones((2, 2, 3, 3), np.float32))
    assert conv.grads["weight"] is grad and np.any(grad != 0)


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


def test_shape_errors_name_the_layer_and_the_shapes():
    with pytest.raises(ShapeError, match=r"Conv2d\(1, 2.*3x3.*5x5"):
        Conv2d(1, 2, 5).forward(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ShapeError, match=r"\(N, 3, H, W\).*\(N, 1, 8, 8\)"):
        Conv2d(3, 2, 5).forward(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ShapeError, match=r"\(N, 10\).*\(N, 9\)"):
        Linear(10, 2).forward(np.zeros((1, 9), np.float32))


def test_same_padding_keeps_the_size_for_odd_and_even_kernels():
    assert resolve_padding("same", (3, 4), (1, 1)) == ((1, 1), (1, 2))
    conv = Conv2d(1, 1, (3, 4), padding="same")
    assert conv.output_shape((1, 7, 6)) == (1, 7, 6)


def test_reprs_read_like_the_architecture():
    assert repr(Conv2d(1, 32, 10)) == "Conv2d(1, 32, kernel_size=(10, 10))"
    assert (
        repr(Conv2d(1, 2, 3, stride=2, padding=1))
        == "Conv2d(1, 2, kernel_size=(3, 3), stride=(2, 2), padding=1)"
    )
    assert repr(MaxPool2d(2, 1)) == "MaxPool2d(kernel_size=(2, 2), stride=(1, 1))"
    assert repr(Linear(3, 4)) == "Linear(in_features=3, out_features=4)"


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
    """Without keep (inference) the kernels hold a block of rows at a time; same outputs."""
    from stablecnn.kernels import conv as conv_module

    monkeypatch.setattr(conv_module, "INFERENCE_BLOCK", block)
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


def test_inference_memory_does_not_grow_with_the_batch():
    """The rows kernel's work arrays in inference are one block of rows, not the whole batch."""
    import tracemalloc

    from stablecnn.kernels import conv as conv_module
    from stablecnn.kernels import parallel

    conv = Conv2d(32, 32, 3, padding="same", rng=np.random.default_rng(0))
    x = np.random.default_rng(1).random((1000, 32, 28, 28), dtype=np.float32)  # 100 MB
    conv.forward(x[:2], training=False)
    tracemalloc.start()
    out = conv.forward(x, training=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # the padded input copy and the output are 100-115 MB each; whole-batch taps and partial
    # products would add 3 x 100 MB each
    assert peak < out.nbytes * 2.2 + 2 * parallel.get_num_threads() * conv_module.INFERENCE_BLOCK, (
        peak
    )


def test_the_layer_picks_the_rows_kernel_for_deep_stride_1_convolutions():
    from stablecnn.kernels.conv import use_rows_kernel

    assert use_rows_kernel(32, (5, 5), (1, 1))  # Model 1's second conv
    assert not use_rows_kernel(1, (10, 10), (1, 1))  # its first: too thin, im2col is faster
    assert not use_rows_kernel(32, (5, 5), (2, 1))


POOLS = {"flat 2x2 stride 1": (2, 1), "2x2 stride 2": (2, 2), "3x3 stride 2": (3, 2)}


@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_innermost", [False, True])
def test_pool_with_relu_equals_relu_then_pool(pool, dtype, batch_innermost):
    """MaxPool2d.forward(x, relu=True) is the pair ReLU -> MaxPool2d, values and gradients
    exactly, ties and all-negative windows included."""
    kernel, stride = POOLS[pool]
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 3, (6, 5, 11, 12)).astype(dtype)  # ties, zeros, negative windows
    x[0, 0] = -1  # a whole channel whose windows are all negative
    if batch_innermost:
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    relu, pair_pool, fused = ReLU(), MaxPool2d(kernel, stride), MaxPool2d(kernel, stride)
    expected = pair_pool.forward(relu.forward(x))
    got = fused.forward(x, relu=True)
    np.testing.assert_array_equal(got, expected)
    dout = rng.standard_normal(expected.shape).astype(dtype)
    dx = relu.backward(pair_pool.backward(dout))
    dx_fused = fused.backward(dout)
    assert dx_fused.shape == x.shape and dx_fused.dtype == dtype
    np.testing.assert_array_equal(dx_fused, dx)
    assert fused.forward(x, training=False, relu=True).tolist() == expected.tolist()


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


@pytest.mark.parametrize("relu", [False, True])
def test_flat_pool_is_the_same_in_any_block_size(monkeypatch, relu):
    """Each thread's flat passes run a block of channels (or images) at a time."""
    from stablecnn.kernels import pool

    rng = np.random.default_rng(8)
    x = rng.integers(-2, 3, (5, 6, 9, 8)).astype(np.float32)
    x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)  # (C, H, W, N)
    dout = rng.standard_normal((5, 6, 8, 7)).astype(np.float32)
    results = []
    for block in (1, 2 * x[:, :1].nbytes, 1 << 30):  # one channel, two, all
        monkeypatch.setattr(pool, "FLAT_BLOCK", block)
        layer = MaxPool2d(2, stride=1)
        out = layer.forward(x, relu=relu)
        results.append((out.copy(), layer.backward(dout)))
    for out, dx in results[:-1]:
        np.testing.assert_array_equal(out, results[-1][0])
        np.testing.assert_array_equal(dx, results[-1][1])
