"""PyTorch twins of the convolution and the pooling layers: Conv2d, MaxPool2d (ties included),
AvgPool2d and GlobalAvgPool2d, in float32 and float64.

Method and tolerances: :mod:`support.twins` (copy our parameters into the PyTorch twin, run both
on the same input and upstream gradient, compare the output and every gradient). Every table
holds non-square inputs and kernels, strides above 1 and padding: a square case cannot tell a
height from a width.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.twins import (
    DTYPE_IDS,
    DTYPES,
    F,
    assert_close,
    assert_dtype,
    check_twin,
    ids,
    normal,
    tensor,
    to_numpy,
)

from stablecnn import AvgPool2d, Conv2d, GlobalAvgPool2d, MaxPool2d

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- Conv2d -------------------------------------------------------------------------------------
# (id, N, C, H, W, F, kernel, stride, padding). H != W and kH != kW wherever possible: a square
# case cannot tell a height from a width.
CONV_CASES = [
    ("nonsquare-in-and-kernel", 2, 3, 7, 5, 4, (3, 2), 1, 0),
    ("batch1-valid", 1, 1, 9, 6, 2, (2, 3), 1, "valid"),
    ("stride2-pad1", 2, 2, 9, 11, 3, (3, 3), 2, 1),
    ("stride-pair-pad-pair", 2, 3, 10, 7, 5, (3, 2), (2, 1), (1, 2)),
    ("strides-with-leftover", 2, 3, 11, 9, 2, (4, 3), (3, 2), (2, 0)),
    ("stride-gt-kernel", 1, 2, 9, 10, 3, (2, 2), 3, 0),
    ("same-odd-kernel", 2, 2, 8, 6, 3, (3, 5), 1, "same"),
    ("same-even-kernel", 2, 2, 7, 8, 3, (2, 4), 1, "same"),
    ("same-1x1", 2, 4, 5, 3, 2, (1, 1), 1, "same"),
    ("pad-ge-kernel", 1, 1, 4, 3, 2, (2, 2), 1, 2),
    ("kernel-is-input", 2, 3, 5, 4, 6, (5, 4), 1, 0),
    ("md1-conv1", 2, 1, 28, 28, 32, 10, 1, 0),
    ("md1-conv2", 2, 32, 18, 18, 16, 5, 1, 0),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CONV_CASES, ids=ids(CONV_CASES))
def test_conv2d_matches_torch(case, dtype):
    _, n, c, h, w, f, kernel, stride, padding = case
    layer = Conv2d(c, f, kernel, stride, padding, rng=np.random.default_rng(1), dtype=dtype)
    layer.params["bias"][...] = normal(f, dtype, seed=2)  # a zero bias would hide a missing add
    x = normal((n, c, h, w), dtype, seed=3)
    dout = normal((n, *layer.output_shape((c, h, w))), dtype, seed=4)
    check_twin(layer, x, dout, "conv")


# a residual network's convolutions: no bias (batch norm follows), 3x3 stride 2 padding 1 on odd
# and even maps, the 1x1 stride-2 projection; (id, N, C, H, W, F, kernel, stride, padding)
NO_BIAS_CASES = [
    ("3x3-s2-p1-odd", 2, 3, 9, 7, 4, 3, 2, 1),
    ("3x3-s2-p1-even", 2, 4, 8, 8, 6, 3, 2, 1),
    ("3x3-p1-wide", 2, 16, 7, 7, 16, 3, 1, 1),
    ("1x1-s2-projection", 2, 4, 9, 8, 8, 1, 2, 0),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", NO_BIAS_CASES, ids=ids(NO_BIAS_CASES))
def test_conv2d_without_bias_matches_torch(case, dtype):
    _, n, c, h, w, f, kernel, stride, padding = case
    layer = Conv2d(
        c, f, kernel, stride, padding, bias=False, rng=np.random.default_rng(1), dtype=dtype
    )
    assert list(layer.params) == ["weight"] and list(layer.grads) == ["weight"]
    x = normal((n, c, h, w), dtype, seed=3)
    dout = normal((n, *layer.output_shape((c, h, w))), dtype, seed=4)
    twin = check_twin(layer, x, dout, "conv without bias")
    assert twin.bias is None


# -- MaxPool2d ----------------------------------------------------------------------------------
# (id, N, C, H, W, kernel, stride)
POOL_CASES = [
    ("k2-default-stride", 2, 3, 8, 6, 2, None),
    ("k2-s1-overlap", 2, 3, 7, 5, 2, 1),
    ("nonsquare-k-and-s", 1, 2, 9, 7, (3, 2), (2, 1)),
    ("k3-s2-overlap-leftover", 2, 2, 10, 9, 3, 2),
    ("stride-gt-kernel", 2, 2, 7, 8, 2, 3),
    ("k1x3-s1x2", 2, 1, 5, 6, (1, 3), (1, 2)),
    ("k3x2-s1", 1, 2, 6, 5, (3, 2), 1),
    ("md1-pool1", 2, 32, 19, 19, 2, 1),
]
# "random": distinct values. "ties": integers from {0, 1, 2}, so most windows hold equal maxima
# and the gradient routing must pick the same (first, row-major) one as PyTorch's CPU kernel.
# "constant": every value equal, so every window is one big tie.
POOL_DATA = ["random", "ties", "constant"]


def pool_input(shape, dtype, kind):
    rng = np.random.default_rng(5)
    if kind == "random":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "ties":
        return rng.integers(0, 3, shape).astype(dtype)
    return np.full(shape, -1.5, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", POOL_DATA)
@pytest.mark.parametrize("case", POOL_CASES, ids=ids(POOL_CASES))
def test_maxpool2d_matches_torch(case, kind, dtype):
    _, n, c, h, w, kernel, stride = case
    layer = MaxPool2d(kernel, stride)
    x = pool_input((n, c, h, w), dtype, kind)

    out = layer.forward(x)
    # Distinct upstream gradients: a gradient routed to the wrong cell cannot cancel out.
    dout = normal(out.shape, dtype, seed=6)
    dx = layer.backward(dout)

    xt = tensor(x, True)
    ref = F.max_pool2d(xt, kernel, stride)
    ref.backward(tensor(dout))

    assert_dtype(out, dtype, "pool output")
    assert_dtype(dx, dtype, "pool dx")
    assert_close(out, ref, f"pool output ({kind})")
    assert_close(dx, xt.grad, f"pool dx ({kind})")
    if kind != "random":
        # Routing must match exactly: the same set of input cells receives gradient.
        np.testing.assert_array_equal(
            dx != 0,
            to_numpy(xt.grad) != 0,
            err_msg=f"pool ({kind}): gradient routed to different cells",
        )


# -- AvgPool2d ----------------------------------------------------------------------------------
# (id, N, C, H, W, kernel, stride, padding); H != W and kH != kW wherever possible
AVG_CASES = [
    ("k2-default-stride", 2, 3, 8, 6, 2, None, 0),
    ("k2-s1-overlap", 2, 3, 7, 5, 2, 1, 0),
    ("nonsquare-k-and-s", 1, 2, 9, 7, (3, 2), (2, 1), 0),
    ("k3-s2-pad1-leftover", 2, 2, 10, 9, 3, 2, 1),
    ("pad-pair", 2, 2, 7, 8, (2, 4), (1, 3), (1, 2)),
    ("stride-gt-kernel", 2, 2, 7, 8, 2, 3, 0),
    ("batch1-kernel-is-input", 1, 4, 5, 3, (5, 3), 1, 0),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", AVG_CASES, ids=ids(AVG_CASES))
def test_avgpool2d_matches_torch(case, dtype):
    _, n, c, h, w, kernel, stride, padding = case
    layer = AvgPool2d(kernel, stride, padding)
    x = normal((n, c, h, w), dtype, seed=1)
    out = layer.forward(x)
    dout = normal(out.shape, dtype, seed=2)
    dx = layer.backward(dout)

    xt = tensor(x, True)
    ref = F.avg_pool2d(xt, kernel, stride, padding, count_include_pad=True)
    ref.backward(tensor(dout))
    assert_dtype(out, dtype, "avgpool output")
    assert_dtype(dx, dtype, "avgpool dx")
    assert_close(out, ref, "avgpool output")
    assert_close(dx, xt.grad, "avgpool dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 4, 1, 6), (3, 2, 1, 1)], ids=str)
def test_global_avgpool2d_matches_torch(shape, dtype):
    layer = GlobalAvgPool2d()
    x = normal(shape, dtype, seed=3)
    out = layer.forward(x)
    dout = normal(out.shape, dtype, seed=4)
    dx = layer.backward(dout)

    xt = tensor(x, True)
    ref = F.adaptive_avg_pool2d(xt, 1).flatten(1)
    ref.backward(tensor(dout))
    assert_dtype(out, dtype, "global avgpool output")
    assert_dtype(dx, dtype, "global avgpool dx")
    assert_close(out, ref, "global avgpool output")
    assert_close(dx, xt.grad, "global avgpool dx")
