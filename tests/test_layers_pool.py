"""The pooling layers against their definitions in :mod:`stablecnn.reference` and float64 finite
differences: MaxPool2d (ties go to the first maximum in row-major order) and its fast kernels
(general, separable 2x2, flat 2x2 stride 1 in every memory layout, ReLU fused in, blocks),
AvgPool2d and GlobalAvgPool2d."""

import numpy as np
import pytest
from support.gradcheck import gradcheck_layer, numerical_grad, rel_error

from stablecnn import (
    AvgPool2d,
    GlobalAvgPool2d,
    MaxPool2d,
    ReLU,
    reference,
)

# -- MaxPool2d and its kernels -------------------------------------------------------------------
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


@pytest.mark.parametrize("hw", [(8, 6), (11, 9), (7, 10), (2, 3)])
@pytest.mark.parametrize("layout", ["nchw", "batch-innermost"])
@pytest.mark.parametrize("relu", [False, True])
def test_separable_2x2_stride_2_backward_is_the_general_kernels_bit_for_bit(hw, layout, relu):
    """With stride 2 the windows do not overlap: the separable kernel writes dx's four
    interleaved quarters directly. It equals the general kernel's routing exactly (no sums to
    reorder), zeros in an odd last row or column, the ReLU's mask included, in either layout of
    the input and of the incoming gradient."""
    from stablecnn.kernels.pool import (
        maxpool2d_backward,
        maxpool2d_forward,
        maxpool2x2_backward,
        maxpool2x2_forward,
    )

    rng = np.random.default_rng(9)
    x = rng.integers(-2, 3, (3, 4, *hw)).astype(np.float32)  # ties, zeros, negative windows
    dout_layout = x
    if layout == "batch-innermost":
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    out, argmax = maxpool2d_forward(x, (2, 2), (2, 2), relu=relu)
    out2, choice = maxpool2x2_forward(x, (2, 2), relu=relu)
    np.testing.assert_array_equal(out2, out)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    if layout == "batch-innermost":  # the gradient in the other layout than the input's
        dout = np.ascontiguousarray(dout)
    else:
        dout = np.ascontiguousarray(dout.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    mask = out if relu else None
    want = maxpool2d_backward(dout, argmax, x, (2, 2), (2, 2), out=mask)
    got = maxpool2x2_backward(dout, choice, x, (2, 2), out=mask)
    assert got.strides == want.strides and dout_layout.shape == got.shape
    np.testing.assert_array_equal(got, want)
    g = dout * (out > 0) if relu else dout
    np.testing.assert_array_equal(got, reference.maxpool2d_backward(g, x, (2, 2), (2, 2)))


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


# -- AvgPool2d, GlobalAvgPool2d ------------------------------------------------------------------
AVG_CASES = [
    # (N, C, H, W), kernel, stride, padding
    ((2, 3, 6, 6), 2, None, 0),
    ((2, 2, 7, 5), 2, 1, 0),  # overlapping, non-square
    ((1, 2, 9, 8), (3, 2), (2, 1), (1, 1)),  # non-square kernel and stride, padding
    ((2, 1, 7, 6), 3, 2, 1),  # overlap with leftover rows
    ((2, 2, 8, 7), 2, 3, 0),  # stride > kernel
    ((1, 1, 3, 4), (3, 4), 1, (1, 2)),  # padding on one axis only reaching half the kernel
]


@pytest.mark.parametrize("shape,kernel,stride,padding", AVG_CASES)
def test_avgpool_matches_the_reference(shape, kernel, stride, padding):
    rng = np.random.default_rng(0)
    pool = AvgPool2d(kernel, stride, padding)
    x = rng.standard_normal(shape)
    out = pool.forward(x)
    expected = reference.avgpool2d_forward(x, pool.kernel_size, pool.stride, pool.padding)
    assert out.shape == expected.shape == (shape[0], *pool.output_shape(shape[1:]))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(
        pool.backward(dout),
        reference.avgpool2d_backward(dout, shape, pool.kernel_size, pool.stride, pool.padding),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("shape,kernel,stride,padding", AVG_CASES)
def test_avgpool_gradient_matches_finite_differences(shape, kernel, stride, padding):
    rng = np.random.default_rng(1)
    pool = AvgPool2d(kernel, stride, padding)
    x = rng.standard_normal(shape)
    gradcheck_layer(pool, x, rng.standard_normal(pool.forward(x).shape))


def test_global_avgpool_matches_definition_and_finite_differences():
    rng = np.random.default_rng(2)
    pool = GlobalAvgPool2d()
    x = rng.standard_normal((3, 4, 5, 2))
    out = pool.forward(x)
    assert out.shape == (3, 4) == (3, *pool.output_shape((4, 5, 2)))
    np.testing.assert_allclose(out, reference.global_avgpool2d_forward(x), rtol=1e-12)
    dout = rng.standard_normal((3, 4))
    dx = pool.backward(dout)
    np.testing.assert_allclose(dx, reference.global_avgpool2d_backward(dout, x.shape), rtol=1e-12)
    gradcheck_layer(pool, x, dout)
