"""The deeper-model layers (AvgPool2d, GlobalAvgPool2d, BatchNorm1d/2d, Dropout, LeakyReLU) against
their definitions in :mod:`stablecnn.reference` and float64 finite differences; buffers in state
dicts and checkpoints."""

import numpy as np
import pytest
from support.gradcheck import numerical_grad, rel_error

from stablecnn import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    GlobalAvgPool2d,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    ShapeError,
    reference,
)
from stablecnn.nn.layers import LAYERS, from_config
from stablecnn.training import checkpoint


def gradcheck_layer(layer, x, dout, params=(), prepare=lambda: None):
    """Analytic vs centered-difference gradients of ``sum(forward(x) * dout)``."""

    def f():
        prepare()
        return float(np.sum(layer.forward(x) * dout))

    prepare()
    layer.forward(x)
    analytic = {"x": layer.backward(dout)}
    analytic.update({name: layer.grads[name].copy() for name in params})
    numeric = {"x": numerical_grad(f, x)}
    numeric.update({name: numerical_grad(f, layer.params[name]) for name in params})
    for name in analytic:
        err = rel_error(analytic[name], numeric[name])
        assert err < 1e-7, f"{layer!r} d{name}: relative error {err:.3g}"


# -- AvgPool2d ----------------------------------------------------------------------------------
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


# -- LeakyReLU ----------------------------------------------------------------------------------
@pytest.mark.parametrize("slope", [0.01, 0.2, -0.5])
def test_leaky_relu_values_and_gradient(slope):
    rng = np.random.default_rng(3)
    layer = LeakyReLU(slope)
    x = rng.standard_normal((3, 2, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # no entry within the step h of the kink
    out = layer.forward(x)
    np.testing.assert_array_equal(out, reference.leaky_relu_forward(x, slope))
    dout = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(
        layer.backward(dout), reference.leaky_relu_backward(dout, x, slope)
    )
    gradcheck_layer(layer, x, dout)


def test_leaky_relu_takes_the_slope_at_zero_like_torch():
    layer = LeakyReLU(0.1)
    layer.forward(np.array([[-1.0, 0.0, 2.0]]))
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.1, 0.1, 1.0]])


# -- Dropout ------------------------------------------------------------------------------------
def test_dropout_gradient_matches_finite_differences_with_a_fixed_mask():
    rng = np.random.default_rng(4)
    drop = Dropout(0.3, rng=rng)
    x = rng.standard_normal((4, 3, 5))

    def same_mask():  # the mask is a function of (seed, counter): rewinding the counter fixes it
        drop.buffers["counter"][...] = 7

    gradcheck_layer(drop, x, rng.standard_normal(x.shape), prepare=same_mask)


def test_dropout_is_inverted_and_off_at_evaluation():
    drop = Dropout(0.25, rng=np.random.default_rng(5))
    x = np.random.default_rng(6).uniform(1, 2, (50, 40, 30)).astype(np.float32)
    out = drop.forward(x)
    assert out.dtype == np.float32
    kept = out != 0
    np.testing.assert_array_equal(out[kept], x[kept] * np.float32(1 / 0.75))
    # 60,000 Bernoulli(0.75) draws: the kept fraction is within 5 standard deviations of 0.75
    assert abs(kept.mean() - 0.75) < 5 * np.sqrt(0.75 * 0.25 / kept.size)
    dout = np.ones_like(x)
    np.testing.assert_array_equal(drop.backward(dout), kept * np.float32(1 / 0.75))
    assert drop.forward(x, training=False) is x
    p0 = Dropout(0.0, rng=np.random.default_rng(0))
    assert p0.forward(x) is x and p0.backward(dout) is dout


def test_dropout_masks_are_a_function_of_seed_and_counter():
    a, b = Dropout(0.5, rng=np.random.default_rng(7)), Dropout(0.5, rng=np.random.default_rng(7))
    x = np.ones((8, 16))
    first, second = a.forward(x), a.forward(x)
    assert not np.array_equal(first, second)  # a new mask per call
    assert int(a.buffers["counter"]) == 2
    np.testing.assert_array_equal(b.forward(x), first)  # same seed, same stream
    b.buffers["counter"][...] = 5
    a.buffers["counter"][...] = 5
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    a.forward(x, training=False)  # evaluation draws nothing
    assert int(a.buffers["counter"]) == 6
    # float32 and float64 models drop the same units
    m32 = Dropout(0.5, rng=np.random.default_rng(7)).forward(np.ones((8, 16), np.float32))
    np.testing.assert_array_equal(m32 != 0, first != 0)


# -- BatchNorm ----------------------------------------------------------------------------------
BN_CASES = [
    (BatchNorm2d, (3, 4, 5, 2)),  # non-square maps
    (BatchNorm2d, (1, 2, 3, 4)),  # batch of one: statistics over H, W
    (BatchNorm1d, (5, 3)),
    (BatchNorm1d, (2, 3, 4)),  # (N, C, L)
    (BatchNorm1d, (2, 3)),  # the smallest batch that has a variance
]


def _bn(cls, c, rng, dtype=np.float64):
    bn = cls(c, dtype=dtype)
    bn.params["weight"][...] = rng.uniform(0.5, 1.5, c)  # not ones/zeros: a missing term shows
    bn.params["bias"][...] = rng.standard_normal(c)
    return bn


@pytest.mark.parametrize("cls,shape", BN_CASES)
def test_batchnorm_gradients_match_finite_differences(cls, shape):
    rng = np.random.default_rng(8)
    bn = _bn(cls, shape[1], rng)
    x = rng.standard_normal(shape) * 2 + 1
    gradcheck_layer(bn, x, rng.standard_normal(shape), params=("weight", "bias"))


@pytest.mark.parametrize("cls,shape", BN_CASES)
def test_batchnorm_matches_the_reference_and_keeps_running_statistics(cls, shape):
    rng = np.random.default_rng(9)
    bn = _bn(cls, shape[1], rng)
    gamma, beta = bn.params["weight"], bn.params["bias"]
    run_mean, run_var = np.zeros(shape[1]), np.ones(shape[1])
    for step in range(3):
        x = rng.standard_normal(shape) * (step + 1) + step
        np.testing.assert_allclose(
            bn.forward(x), reference.batchnorm_forward(x, gamma, beta, 1e-5), rtol=1e-12, atol=1e-12
        )
        dout = rng.standard_normal(shape)
        for got, want, name in zip(
            (bn.backward(dout), bn.grads["weight"], bn.grads["bias"]),
            reference.batchnorm_backward(dout, x, gamma, 1e-5),
            ("dx", "dgamma", "dbeta"),
        ):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
        run_mean, run_var = reference.batchnorm_running_stats(x, run_mean, run_var, 0.1)
        np.testing.assert_allclose(bn.buffers["running_mean"], run_mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(bn.buffers["running_var"], run_var, rtol=1e-12)
    assert (
        bn.buffers["num_batches_tracked"] == 3
        and bn.buffers["num_batches_tracked"].dtype == np.int64
    )
    x = rng.standard_normal((1, *shape[1:]))  # evaluation works for any batch, even one value
    expected = reference.batchnorm_eval_forward(x, gamma, beta, run_mean, run_var, 1e-5)
    np.testing.assert_allclose(bn.forward(x, training=False), expected, rtol=1e-12, atol=1e-12)
    assert bn.buffers["num_batches_tracked"] == 3  # evaluation leaves the statistics alone


def test_batchnorm_training_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 4\)"):
        BatchNorm1d(4).forward(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm2d(2).forward(np.zeros((1, 2, 1, 1), np.float32))
    BatchNorm1d(4).forward(np.zeros((1, 4), np.float32), training=False)  # fine at evaluation


def test_batchnorm_float32_is_stable_far_from_zero():
    # values ~1e4 with unit spread: E[x^2] - E[x]^2 would lose every digit in float32
    rng = np.random.default_rng(10)
    x32 = (1e4 + rng.standard_normal((64, 3, 8, 8))).astype(np.float32)
    y32 = BatchNorm2d(3).forward(x32)
    y64 = BatchNorm2d(3, dtype=np.float64).forward(x32.astype(np.float64))
    assert y32.dtype == np.float32
    assert np.max(np.abs(y32 - y64)) < 2e-3, np.max(np.abs(y32 - y64))


def test_batchnorm_dx_sums_to_zero_per_channel():
    # a constant shift of a channel's input changes nothing: dx must be orthogonal to it
    rng = np.random.default_rng(11)
    bn = _bn(BatchNorm2d, 3, rng)
    bn.forward(rng.standard_normal((4, 3, 5, 6)))
    dx = bn.backward(rng.standard_normal((4, 3, 5, 6)))
    np.testing.assert_allclose(dx.sum(axis=(0, 2, 3)), 0, atol=1e-12)


# -- all new layers: dtypes, shapes, configs, errors, reprs ---------------------------------------
def _new_layers(dtype, rng):
    return [
        (AvgPool2d(3, 2, 1), (2, 3, 7, 6)),
        (GlobalAvgPool2d(), (2, 3, 7, 6)),
        (BatchNorm2d(3, dtype=dtype), (2, 3, 7, 6)),
        (BatchNorm1d(5, dtype=dtype), (4, 5)),
        (Dropout(0.4, rng=rng), (2, 3, 7, 6)),
        (LeakyReLU(0.1), (2, 3, 7, 6)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_new_layers_keep_the_dtype_and_their_output_shape(dtype):
    rng = np.random.default_rng(12)
    for layer, shape in _new_layers(dtype, rng):
        x = rng.standard_normal(shape).astype(dtype)
        out = layer.forward(x)
        assert out.dtype == dtype, repr(layer)
        assert out.shape == (shape[0], *layer.output_shape(shape[1:])), repr(layer)
        assert layer.backward(np.ones_like(out)).dtype == dtype, repr(layer)
        assert all(g.dtype == dtype for g in layer.grads.values()), repr(layer)
        grads = {name: g.copy() for name, g in layer.grads.items()}
        if isinstance(layer, Dropout):
            layer.buffers["counter"][...] -= 1  # the same mask again
        layer.forward(x)
        assert layer.backward(np.ones_like(out), need_input_grad=False) is None
        for name, g in grads.items():  # skipping dx leaves the parameter gradients as they were
            np.testing.assert_array_equal(layer.grads[name], g, err_msg=f"{layer!r} {name}")
        with pytest.raises(RuntimeError, match="backward needs a forward"):
            layer.forward(x, training=False)
            layer.backward(np.ones_like(out))


def test_new_layers_rebuild_from_their_config():
    rng = np.random.default_rng(13)
    for layer, _ in _new_layers(np.float64, rng):
        assert type(layer).__name__ in LAYERS
        again = from_config(layer.config(), rng=rng, dtype=np.float64)
        assert type(again) is type(layer) and again.config() == layer.config()
        assert repr(again) == repr(layer)
        assert again.dtype == layer.dtype


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: AvgPool2d(0), "kernel_size"),
        (lambda: AvgPool2d(2, stride=(1, 0)), "stride"),
        (lambda: AvgPool2d(2, padding=-1), "padding"),
        (lambda: AvgPool2d(3, padding=2), "at most half.*2"),
        (lambda: BatchNorm2d(0), "num_features.*0"),
        (lambda: BatchNorm1d(3.5), "num_features.*3.5"),
        (lambda: BatchNorm2d(3, eps=0), "eps.*0"),
        (lambda: BatchNorm2d(3, momentum=1.5), "momentum.*1.5"),
        (lambda: Dropout(1.0), "p must.*1.0"),
        (lambda: Dropout(-0.1), "p must.*-0.1"),
        (lambda: Dropout("0.5"), "p must.*'0.5'"),
        (lambda: LeakyReLU(float("nan")), "negative_slope.*nan"),
        (lambda: LeakyReLU(True), "negative_slope.*True"),
    ],
)
def test_constructors_reject_bad_arguments_by_name(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_shape_errors_name_the_layer_and_the_shapes():
    with pytest.raises(ShapeError, match=r"BatchNorm2d\(3.*C = 3.*\(N, 4, 5, 5\)"):
        BatchNorm2d(3).forward(np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(3"):
        BatchNorm1d(3).forward(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(ShapeError, match=r"AvgPool2d.*2x2"):
        AvgPool2d(3).forward(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ShapeError, match=r"GlobalAvgPool2d"):
        GlobalAvgPool2d().forward(np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="float32.*float64"):
        BatchNorm2d(3).forward(np.zeros((2, 3, 4, 4), np.float64))


def test_reprs_read_like_pytorch():
    assert repr(AvgPool2d(2)) == "AvgPool2d(kernel_size=(2, 2), stride=(2, 2))"
    assert (
        repr(AvgPool2d((3, 2), 1, (1, 0)))
        == "AvgPool2d(kernel_size=(3, 2), stride=(1, 1), padding=(1, 0))"
    )
    assert repr(GlobalAvgPool2d()) == "GlobalAvgPool2d()"
    assert repr(BatchNorm2d(16)) == "BatchNorm2d(16, eps=1e-05, momentum=0.1)"
    assert (
        repr(BatchNorm1d(8, eps=1e-3, momentum=0.01)) == "BatchNorm1d(8, eps=0.001, momentum=0.01)"
    )
    assert repr(Dropout()) == "Dropout(p=0.5)"
    assert repr(LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"


# -- a deeper model: whole-model gradient, buffers, checkpoints -----------------------------------
def _deep_model(rng, dtype=np.float64):
    return Sequential(
        Conv2d(1, 3, 3, padding=1, rng=rng, dtype=dtype),
        BatchNorm2d(3, dtype=dtype),
        LeakyReLU(0.1),
        AvgPool2d(2),
        Conv2d(3, 4, (2, 3), rng=rng, dtype=dtype),
        BatchNorm2d(4, dtype=dtype),
        ReLU(),
        MaxPool2d(2, 1),
        Dropout(0.3, rng=rng),
        GlobalAvgPool2d(),
        Linear(4, 5, rng=rng, dtype=dtype),
        BatchNorm1d(5, dtype=dtype),
        Dropout(0.2, rng=rng),
        Linear(5, 3, rng=rng, dtype=dtype),
        input_shape=(1, 9, 10),
    )


def test_deep_model_gradient_check_float64():
    rng = np.random.default_rng(14)
    model = _deep_model(rng)
    x = rng.standard_normal((4, 1, 9, 10))
    dout = rng.standard_normal((4, 3))
    drops = [layer for layer in model.layers if isinstance(layer, Dropout)]

    def f():
        for d in drops:
            d.buffers["counter"][...] = 0
        return float(np.sum(model.forward(x) * dout))

    f()
    dx = model.backward(dout)
    # kinks (ReLU at 0, max-pool ties) are far from the step h for this seed
    assert rel_error(dx, numerical_grad(f, x)) < 1e-7
    for name, param, grad in model.parameters():
        grad, numeric = grad.copy(), numerical_grad(f, param)
        if name in ("0.bias", "4.bias", "10.bias"):
            # a bias right before a BatchNorm is subtracted out again with the batch mean
            assert np.max(np.abs(grad)) < 1e-12 and np.max(np.abs(numeric)) < 1e-8, name
        else:
            assert rel_error(grad, numeric) < 1e-7, name


def test_state_dict_holds_buffers_and_parameters_do_not():
    model = _deep_model(np.random.default_rng(15), dtype=np.float32)
    state = model.state_dict()
    names = [name for name, _, _ in model.parameters()]
    assert "1.running_mean" not in names and "8.counter" not in names
    assert list(state)[:8] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "4.weight",
    ]
    assert {"8.seed", "8.counter", "11.running_var", "12.seed"} <= set(state)
    assert state["1.running_mean"] is model.layers[1].buffers["running_mean"]
    assert state["1.num_batches_tracked"].dtype == np.int64 and state["8.counter"].dtype == np.int64

    other = _deep_model(np.random.default_rng(16), dtype=np.float32)
    model.forward(np.random.default_rng(0).standard_normal((3, 1, 9, 10)))
    kept = {name: arr for name, arr in other.state_dict().items()}
    other.load_state_dict({k: v.copy() for k, v in model.state_dict().items()})
    for name, arr in other.state_dict().items():
        assert arr is kept[name]  # updated in place
        np.testing.assert_array_equal(arr, model.state_dict()[name], err_msg=name)
    bad = {k: v.copy() for k, v in model.state_dict().items()}
    bad["1.num_batches_tracked"] = np.array(1.5)
    with pytest.raises(TypeError, match=r"buffer '1.num_batches_tracked'.*integer"):
        other.load_state_dict(bad)
    bad["1.num_batches_tracked"] = np.array(1)
    bad["1.running_var"] = np.ones(4, np.float32)
    with pytest.raises(ShapeError, match=r"buffer '1.running_var'"):
        other.load_state_dict(bad)


def test_astype_casts_floating_buffers_and_keeps_counters():
    bn = BatchNorm2d(3).astype(np.float64)
    assert bn.buffers["running_mean"].dtype == bn.buffers["running_var"].dtype == np.float64
    assert bn.params["weight"].dtype == np.float64
    assert bn.buffers["num_batches_tracked"].dtype == np.int64
    assert Dropout(0.5).astype(np.float64).buffers["counter"].dtype == np.int64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checkpoint_round_trip_keeps_running_statistics_and_dropout_stream(tmp_path, dtype):
    rng = np.random.default_rng(17)
    model = _deep_model(rng, dtype=dtype)
    x = rng.standard_normal((5, 1, 9, 10)).astype(dtype)
    for _ in range(3):
        model.forward(x)
    checkpoint.save(tmp_path / "checkpoint.npz", model, meta={})
    ckpt = checkpoint.load(tmp_path / "checkpoint.npz")
    assert ckpt.params["1.num_batches_tracked"] == 3 and ckpt.params["8.counter"] == 3
    back = ckpt.build_model()
    assert repr(back) == repr(model) and back.dtype == dtype
    for name, arr in model.state_dict().items():
        got = back.state_dict()[name]
        assert got.dtype == arr.dtype, name
        np.testing.assert_array_equal(got, arr, err_msg=name)
    # evaluation uses the restored running statistics; training draws the same next masks
    np.testing.assert_array_equal(back.forward(x, training=False), model.forward(x, training=False))
    np.testing.assert_array_equal(back.forward(x), model.forward(x))
