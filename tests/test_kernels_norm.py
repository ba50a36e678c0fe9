"""The batch-norm kernels (stablecnn.kernels.norm) and the fused BNReLU2d step: any input layout
against the reference, the same bits at any thread count, float32 far from zero against float64,
and BatchNorm2d -> ReLU run as one step with the two layers' numbers bit for bit (its place in a
model's plan: tests/test_fuse.py)."""

import numpy as np
import pytest

from stablecnn import BatchNorm1d, BatchNorm2d, ReLU, reference
from stablecnn.kernels import norm as kernels
from stablecnn.nn.layers.norm import BNReLU2d


def _chwn(shape, rng, dtype=np.float64, loc=0.0):
    """An NCHW view of a (C, H, W, N) buffer: the layout the convolutions return."""
    n, c, h, w = shape
    return (loc + rng.standard_normal((c, h, w, n))).astype(dtype).transpose(3, 0, 1, 2)


def _layouts(rng):
    """The same kind of (N, C, H, W) input in the layouts a batch norm meets: the convolutions'
    (C, H, W, N), plain NCHW, channels last, a strided slice (copied once), a batch of one."""
    base = rng.standard_normal((6, 5, 8, 7)) * 2 + 1
    return {
        "chwn": _chwn((6, 5, 8, 7), rng),
        "nchw": base,
        "nhwc": np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
        "slice": (rng.standard_normal((6, 5, 16, 7)) + 3)[:, :, ::2, :],
        "batch1": rng.standard_normal((1, 5, 8, 7)),
        "1x1 maps": rng.standard_normal((9, 5, 1, 1)),
    }


def _bn(cls, c, rng, dtype=np.float64):
    bn = cls(c, dtype=dtype)
    bn.params["weight"][...] = rng.uniform(-1.5, 1.5, c)  # negative too: the ReLU masks both ways
    bn.params["bias"][...] = rng.standard_normal(c)
    return bn


@pytest.mark.parametrize("layout", list(_layouts(np.random.default_rng(0))))
def test_every_layout_gives_the_reference_values(layout):
    rng = np.random.default_rng(1)
    x = _layouts(rng)[layout]
    bn = _bn(BatchNorm2d, 5, rng)
    gamma, beta = bn.params["weight"], bn.params["bias"]
    y = bn.forward(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_allclose(
        y, reference.batchnorm_forward(x, gamma, beta), rtol=1e-12, atol=1e-12
    )
    dout = rng.standard_normal(x.shape)
    dx = bn.backward(dout)
    want = reference.batchnorm_backward(dout, x, gamma)
    for got, expected, name in zip((dx, bn.grads["weight"], bn.grads["bias"]), want, "xwb"):
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11, err_msg=f"d{name}")
    # a gradient in another layout than the input's (a copy inside) changes nothing
    bn.forward(x)
    np.testing.assert_allclose(bn.backward(np.asfortranarray(dout)), dx, rtol=1e-13, atol=1e-13)
    want_eval = reference.batchnorm_eval_forward(
        x, gamma, beta, bn.buffers["running_mean"], bn.buffers["running_var"]
    )
    np.testing.assert_allclose(bn.forward(x, training=False), want_eval, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "make", [lambda r: r.standard_normal((7, 4)), lambda r: r.standard_normal((3, 4, 6))]
)
def test_batchnorm1d_runs_on_the_same_kernels(make):
    rng = np.random.default_rng(2)
    x = make(rng) + 5
    bn = _bn(BatchNorm1d, 4, rng)
    gamma = bn.params["weight"]
    np.testing.assert_allclose(
        bn.forward(x), reference.batchnorm_forward(x, gamma, bn.params["bias"]), rtol=1e-12
    )
    dout = rng.standard_normal(x.shape)
    dx = bn.backward(dout)
    np.testing.assert_allclose(
        dx, reference.batchnorm_backward(dout, x, gamma)[0], rtol=1e-11, atol=1e-12
    )


def test_channel_rows_follow_memory_order():
    rng = np.random.default_rng(3)
    chwn = _chwn((100, 16, 28, 28), rng, np.float32)
    rows = kernels.channel_rows(chwn)
    assert rows.shape == (16, 28, 2800)  # runs of W * N values, at most RUN long
    assert np.shares_memory(rows.view(chwn), chwn)  # seen in place, not copied
    nchw = np.zeros((4, 3, 5, 6), np.float32)
    assert kernels.channel_rows(nchw).shape == (3, 4, 30)
    assert kernels.channel_rows(np.zeros((8, 10), np.float32)).shape == (10, 8, 1)
    buf, view = kernels.channel_rows(nchw).empty(np.float32)
    assert view.shape == nchw.shape and np.shares_memory(buf, view)
    blocks = kernels.channel_rows(chwn).blocks()
    assert blocks[0][0] == 0 and blocks[-1][1] == 16
    assert all(a < b == c for (a, b), (c, _) in zip(blocks, blocks[1:]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_results_are_the_same_bits_at_any_thread_count(threads, monkeypatch, dtype, relu):
    """The convolutions' layout and plain NCHW, split across threads: MIN_THREAD_RUN lowered so
    that these small batches go to the threads (every pass offers 4 blocks and enough values for
    3 threads; which thread claims which block varies from run to run, the results do not)."""
    monkeypatch.setattr(kernels, "MIN_THREAD_RUN", 1 << 14)
    offered = []
    real = kernels.parallel.for_each_block

    def spy(blocks, fn, sizes=None, min_run=0):
        offered.append(min(len(blocks), int(sum(b - a for a, b in blocks) // min_run)))
        return real(blocks, fn, sizes, min_run)

    monkeypatch.setattr(kernels.parallel, "for_each_block", spy)
    rng = np.random.default_rng(4)
    inputs = [_chwn((60, 16, 20, 20), rng, dtype), rng.standard_normal((80, 24, 13, 13))]
    for x in inputs:
        x = x.astype(dtype, copy=False)
        gamma, beta = rng.uniform(-1, 1, x.shape[1]), rng.standard_normal(x.shape[1])
        gamma, beta = gamma.astype(dtype), beta.astype(dtype)
        dout = rng.standard_normal(x.shape).astype(dtype)
        results = []
        for n in (1, 2, 3):
            threads(n)
            y, mean, var, cache = kernels.train_forward(x, gamma, beta, 1e-5, relu)
            dx, dgamma, dbeta = kernels.backward(dout, cache, gamma)
            ev = kernels.eval_forward(x, gamma, beta, mean.astype(dtype), var.astype(dtype), 1e-5)
            results.append((y, mean, var, dx, dgamma, dbeta, ev))
        for other in results[1:]:
            for k, (a, b) in enumerate(zip(results[0], other)):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b, err_msg=f"array {k}")
    assert len(offered) == 2 * 3 * 5 and min(offered) >= 3, offered  # 5 passes a run


def test_float32_far_from_zero_is_as_good_as_float64():
    """Mean 1e4, spread 1 (E[x^2] - mu^2 would keep no digit in float32): the float32 layer's
    statistics, output and gradients against the float64 layer's on the same values. float32
    holds 1e4 to within 4.9e-4, so the running mean can be no better; the variance, the output,
    dx and the parameter gradients are held to float32 rounding of sums over 78,400 values
    (measured: variance 4e-8 relative, output 6e-7, dx 1.3e-7 relative, where the float64 sums
    of the previous kernel gave 2.5e-7, 4.7e-4 and 1.9e-6, and dgamma off by 0.1 of ~100)."""
    rng = np.random.default_rng(5)
    x32 = _chwn((100, 4, 28, 28), rng, np.float32, loc=1e4)
    x64 = x32.astype(np.float64)
    dout = rng.standard_normal(x32.shape)
    layers = {}
    for dtype, x in ((np.float32, x32), (np.float64, x64)):
        bn = BatchNorm2d(4, momentum=1.0, dtype=dtype)  # running stats = this batch's
        y = bn.forward(x)
        dx = bn.backward(dout.astype(dtype))
        layers[dtype] = (bn, y, dx)
    (b32, y32, dx32), (b64, y64, dx64) = layers[np.float32], layers[np.float64]
    assert y32.dtype == dx32.dtype == np.float32
    mean_err = np.abs(b32.buffers["running_mean"] - x64.mean(axis=(0, 2, 3)))
    assert mean_err.max() <= 4.9e-4, mean_err
    rel_var = np.abs(b32.buffers["running_var"] / x64.var(axis=(0, 2, 3), ddof=1) - 1)
    assert rel_var.max() < 1e-6, rel_var
    assert np.max(np.abs(y32 - y64)) < 1e-5, np.max(np.abs(y32 - y64))  # y is O(1)
    dx_err = np.max(np.abs(dx32 - dx64)) / np.abs(dx64).max()
    assert dx_err < 1e-6, dx_err
    magnitude = np.abs(dout).sum(axis=(0, 2, 3))  # what a sum of 78,400 terms rounds against
    for name in ("weight", "bias"):
        err = np.abs(b32.grads[name] - b64.grads[name]) / magnitude
        assert err.max() < 1e-7, (name, err)


def test_relu_on_a_row_of_zeros_gives_np_maximum_bits():
    special = np.array([-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-45, 3, -3])
    for dtype in (np.float32, np.float64):
        for length in (1, 7, 100, 2800):
            block = np.resize(special.astype(dtype), 3 * 2 * length).reshape(3, 2, length)
            want = np.maximum(block, 0)
            kernels._relu(block)
            np.testing.assert_array_equal(
                block.view(f"i{block.itemsize}"), want.view(block.view(f"i{block.itemsize}").dtype)
            )


# -- the fused step ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["chwn", "nchw"])
def test_bnrelu2d_is_the_two_layers_bit_for_bit(dtype, layout):
    rng = np.random.default_rng(6)
    shape = (5, 6, 9, 7)
    x = _chwn(shape, rng, dtype) if layout == "chwn" else rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    bn, relu = _bn(BatchNorm2d, 6, np.random.default_rng(7), dtype), ReLU()
    step = BNReLU2d(_bn(BatchNorm2d, 6, np.random.default_rng(7), dtype), ReLU())
    for _ in range(2):  # the running statistics move alike
        want = relu.forward(bn.forward(x))
        got = step.forward(x)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
        assert np.signbit(got).sum() == np.signbit(want).sum() == 0  # no -0.0 either way
        np.testing.assert_array_equal(step.backward(dout), bn.backward(relu.backward(dout)))
        for name in ("weight", "bias"):
            np.testing.assert_array_equal(step.grads[name], bn.grads[name], err_msg=name)
        for name in bn.buffers:
            np.testing.assert_array_equal(step.buffers[name], bn.buffers[name], err_msg=name)
    np.testing.assert_array_equal(
        step.forward(x, training=False), relu.forward(bn.forward(x, training=False), False)
    )
    step.forward(x)
    assert step.backward(dout, need_input_grad=False) is None
    step.forward(x, training=False)
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        step.backward(dout)


def test_bnrelu2d_shares_the_batch_norm_and_is_no_architecture_layer():
    bn, relu = BatchNorm2d(3, eps=1e-3, momentum=0.2), ReLU()
    step = BNReLU2d(bn, relu)
    assert step.params is bn.params and step.grads is bn.grads and step.buffers is bn.buffers
    assert repr(step) == "BNReLU2d(3, eps=0.001, momentum=0.2)" and step.num_params == 6
    assert step.output_shape((3, 5, 4)) == (3, 5, 4) and step.dtype == np.float32
    step.astype(np.float64)
    assert bn.params["weight"].dtype == step.dtype == np.float64
    step.kernels = "reference"
    assert bn.kernels == relu.kernels == step.kernels == "reference"
    x = np.random.default_rng(8).standard_normal((2, 3, 5, 4))
    want = np.maximum(
        reference.batchnorm_forward(x, bn.params["weight"], bn.params["bias"], 1e-3), 0
    )
    np.testing.assert_allclose(step.forward(x), want, rtol=1e-12, atol=1e-12)
    assert step.backward(np.ones_like(x)).shape == x.shape
    with pytest.raises(TypeError, match="execution plan.*save the BatchNorm2d and the ReLU"):
        step.config()
    with pytest.raises(TypeError, match="takes a BatchNorm2d and a ReLU, got ReLU and BatchNorm2d"):
        BNReLU2d(ReLU(), BatchNorm2d(3))
    with pytest.raises(TypeError, match="got BatchNorm1d and ReLU"):
        BNReLU2d(BatchNorm1d(3), ReLU())
