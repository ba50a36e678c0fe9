"""A model with every layer type and non-trainable state (BatchNorm's running statistics, Dropout's
mask stream): its whole-model gradient check, its state dict, casts and checkpoints."""

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
)
from stablecnn.training import checkpoint


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
