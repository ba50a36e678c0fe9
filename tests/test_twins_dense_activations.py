"""PyTorch twins of the dense layer, the activations and Flatten: Linear, ReLU, LeakyReLU and
Flatten, in float32 and float64 (method and tolerances: :mod:`support.twins`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
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
)

from stablecnn import Flatten, LeakyReLU, Linear, ReLU

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- Linear, ReLU, Flatten ----------------------------------------------------------------------
LINEAR_CASES = [
    ("batch1", 1, 5, 3),
    ("small", 3, 7, 10),
    ("md1-fc2", 4, 1024, 10),
    ("md1-fc1", 4, 2704, 1024),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", LINEAR_CASES, ids=ids(LINEAR_CASES))
def test_linear_matches_torch(case, dtype):
    _, n, fin, fout = case
    layer = Linear(fin, fout, rng=np.random.default_rng(1), dtype=dtype)
    layer.params["bias"][...] = normal(fout, dtype, seed=2)
    x = normal((n, fin), dtype, seed=3)
    check_twin(layer, x, normal((n, fout), dtype, seed=4), "linear")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (6, 7)], ids=["4d", "2d"])
def test_relu_matches_torch(shape, dtype):
    # Integers in [-2, 2]: many exact zeros, where both libraries take the derivative as 0.
    x = np.random.default_rng(0).integers(-2, 3, shape).astype(dtype)
    x.flat[::3] = normal(x.size, dtype, seed=1).flat[::3]
    layer = ReLU()
    out = layer.forward(x)
    dout = normal(shape, dtype, seed=2)
    dx = layer.backward(dout)

    xt = tensor(x, True)
    ref = F.relu(xt)
    ref.backward(tensor(dout))
    assert_dtype(out, dtype, "relu output")
    assert_dtype(dx, dtype, "relu dx")
    assert_close(out, ref, "relu output")
    assert_close(dx, xt.grad, "relu dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "conv-output-view"])
def test_flatten_matches_torch(layout, dtype):
    x = normal((3, 4, 5, 2), dtype, seed=0)
    if layout == "conv-output-view":
        # What our Conv2d hands on: an NCHW view of a channel-major buffer.
        x = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    layer = Flatten()
    out = layer.forward(x)
    dout = normal(out.shape, dtype, seed=1)
    dx = layer.backward(dout)

    xt = tensor(x, True)
    ref = torch.nn.Flatten()(xt)
    ref.backward(tensor(dout))
    assert_dtype(out, dtype, "flatten output")
    assert_dtype(dx, dtype, "flatten dx")
    assert_close(out, ref, "flatten output", rtol=0)
    assert_close(dx, xt.grad, "flatten dx", rtol=0)


# -- LeakyReLU ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("slope", [0.01, 0.3], ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (6, 7)], ids=["4d", "2d"])
def test_leaky_relu_matches_torch(shape, slope, dtype):
    # integers in [-2, 2]: many exact zeros, where both libraries take the slope as the derivative
    x = np.random.default_rng(0).integers(-2, 3, shape).astype(dtype)
    x.flat[::3] = normal(x.size, dtype, seed=1).flat[::3]
    layer = LeakyReLU(slope)
    out = layer.forward(x)
    dout = normal(shape, dtype, seed=2)
    dx = layer.backward(dout)

    xt = tensor(x, True)
    ref = F.leaky_relu(xt, slope)
    ref.backward(tensor(dout))
    assert_dtype(out, dtype, "leaky_relu output")
    assert_dtype(dx, dtype, "leaky_relu dx")
    assert_close(out, ref, "leaky_relu output")
    assert_close(dx, xt.grad, "leaky_relu dx")
    assert repr(layer) == repr(torch.nn.LeakyReLU(slope))
