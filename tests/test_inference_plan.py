"""Small-batch inference (stablecnn.nn.inference): the compiled evaluation pass computes what the
layers' own evaluation forward computes, for every layer type and every shipped model; it
follows the weights, never writes the caller's input, steps aside for hooks, reference kernels,
a pending backward and a second thread."""

import threading

import numpy as np
import pytest
from support.models import random_statistics

from stablecnn import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
)
from stablecnn.kernels import parallel
from stablecnn.nn import inference, zoo
from stablecnn.nn.inference import InferencePlan
from stablecnn.nn.layers import Residual


def _layer_by_layer(layers, x):
    """The definition: each layer's own evaluation forward in turn."""
    for layer in layers:
        x = layer.forward(x, training=False)
    return x


def _every_kind(dtype):
    """A network with every layer the plan compiles and one it leaves to the layer."""
    return Sequential(
        Conv2d(2, 6, 3, padding=1, bias=False, dtype=dtype),
        BatchNorm2d(6, dtype=dtype),
        ReLU(),
        Residual(
            [Conv2d(6, 6, 3, padding=1, dtype=dtype), BatchNorm2d(6, dtype=dtype), ReLU()],
            activation="ReLU",
        ),  # identity shortcut
        Residual(
            [ReLU(), Conv2d(6, 8, 3, stride=2, padding=1, dtype=dtype)],
            shortcut=[Conv2d(6, 8, 1, stride=2, bias=False, dtype=dtype)],
        ),  # body starting with an activation of the block's input; no activation after
        LeakyReLU(0.2),
        BatchNorm2d(8, dtype=dtype),  # alone
        Conv2d(8, 8, (3, 2), padding="same", dtype=dtype),  # uneven padding
        LeakyReLU(0.1),
        MaxPool2d(2, stride=1),  # overlapping windows
        AvgPool2d(2),
        AvgPool2d(3, stride=1, padding=1),  # padded: the layer's own forward
        Conv2d(8, 4, 2, dtype=dtype),
        Flatten(),
        Linear(4 * 2 * 2, 12, dtype=dtype),
        BatchNorm1d(12, dtype=dtype),
        ReLU(),
        Dropout(0.5),
        Linear(12, 5, dtype=dtype),
        input_shape=(2, 13, 13),
    )


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_every_layer_kind_computes_the_layers_evaluation_pass(dtype, tol, batch):
    model = random_statistics(_every_kind(dtype))
    x = np.random.default_rng(1).standard_normal((batch, 2, 13, 13)).astype(dtype)
    want = _layer_by_layer(model.layers, x)
    plan = InferencePlan(model.layers, x.shape, dtype)
    got = plan(x)
    assert not plan.compiled  # the padded average pooling ran as itself
    assert got.dtype == dtype and got.shape == want.shape == (batch, 5)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("name", ["md1", "md2", "md3", "md3cifar"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_every_shipped_model_compiles_whole_and_agrees(name, dtype, tol):
    model = random_statistics(zoo.build(name, dtype=dtype))
    x = np.random.default_rng(2).standard_normal((2, *model.input_shape)).astype(dtype)
    want = _layer_by_layer(model.layers, x)
    plan = InferencePlan(model.layers, x.shape, dtype)
    got = plan(x)
    assert plan.compiled  # every layer of the zoo has a compiled step
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())
    assert (got.argmax(1) == want.argmax(1)).all()


def test_a_small_batch_takes_the_plan_and_a_larger_one_the_layers(monkeypatch):
    model = random_statistics(zoo.build("md3"))
    calls = []
    monkeypatch.setattr(InferencePlan, "__call__", lambda self, x: calls.append(len(x)))
    rng = np.random.default_rng(3)
    for n in (1, inference.SMALL_BATCH, inference.SMALL_BATCH + 1):
        model.forward(rng.standard_normal((n, 1, 28, 28)).astype(np.float32), training=False)
    assert calls == [1, inference.SMALL_BATCH]  # the plan said None: the layers ran instead


def test_the_plan_follows_the_weights_and_statistics_between_calls():
    model = zoo.build("md2")
    x = np.random.default_rng(4).standard_normal((1, 1, 28, 28)).astype(np.float32)
    first = model.forward(x, training=False)
    random_statistics(model, seed=5)  # in place, as an optimizer step or load_state_dict does
    second = model.forward(x, training=False)
    want = _layer_by_layer(model.layers, x)
    assert np.abs(second - first).max() > 1e-3
    np.testing.assert_allclose(second, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_outputs_are_new_arrays_and_the_input_is_never_written():
    model = random_statistics(_every_kind(np.float64))
    x = np.random.default_rng(6).standard_normal((1, 2, 13, 13))
    kept = x.copy()
    first = model.forward(x, training=False)
    first_copy = first.copy()
    second = model.forward(-x, training=False)
    assert np.array_equal(x, kept)
    assert np.array_equal(first, first_copy)  # the second call wrote elsewhere
    assert not np.shares_memory(first, second)


def test_a_model_that_begins_with_an_activation_leaves_the_input_alone():
    model = Sequential(ReLU(), Flatten(), Linear(8, 2), input_shape=(2, 2, 2))
    x = np.random.default_rng(7).standard_normal((1, 2, 2, 2)).astype(np.float32)
    kept = x.copy()
    model.forward(x, training=False)
    assert np.array_equal(x, kept)


def test_a_hooked_layer_runs_as_itself():
    model = zoo.build("md3")
    seen = []
    conv = model.layers[0]
    original = conv.forward

    def hook(x, training=True):
        seen.append(x.shape)
        return original(x, training)

    conv.forward = hook
    x = np.random.default_rng(8).standard_normal((1, 1, 28, 28)).astype(np.float32)
    got = model.forward(x, training=False)
    assert seen == [(1, 1, 28, 28)]
    del conv.forward
    want = _layer_by_layer(model.layers, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_reference_kernels_run_their_definitions(monkeypatch):
    model = zoo.build("md2")
    model.kernels = "reference"
    monkeypatch.setattr(InferencePlan, "__init__", lambda *a: pytest.fail("plan made"))
    x = np.random.default_rng(9).standard_normal((1, 1, 28, 28)).astype(np.float32)
    model.forward(x, training=False)


@pytest.mark.parametrize("batch", [1, 4])  # the plan, the layers
def test_an_evaluation_forward_forbids_the_pending_backward(batch):
    model = zoo.build("md2")
    x = np.random.default_rng(10).standard_normal((4, 1, 28, 28)).astype(np.float32)
    model.forward(x)  # training: the layers keep what backward needs
    model.forward(x[:batch], training=False)
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        model.backward(np.ones((4, 10), np.float32))
    model.forward(x)
    model.backward(np.ones((4, 10), np.float32))  # the pair still works after


def test_a_busy_plan_sends_a_second_thread_to_the_layers():
    model = random_statistics(zoo.build("md3"))
    x = np.random.default_rng(11).standard_normal((1, 1, 28, 28)).astype(np.float32)
    want = model.forward(x, training=False)
    plan = model._inference[1]
    assert plan(x) is not None
    with plan._lock:  # as while another thread runs it
        assert plan(x) is None
        got = model.forward(x, training=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_threads_sharing_a_model_get_their_own_answers():
    model = random_statistics(zoo.build("md3"))
    rng = np.random.default_rng(12)
    images = rng.standard_normal((8, 1, 1, 28, 28)).astype(np.float32)
    want = [_layer_by_layer(model.layers, x) for x in images]
    got = [None] * len(images)

    def worker(i):
        for _ in range(5):
            got[i] = model.forward(images[i], training=False)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * np.abs(w).max())


def test_a_dense_model_compiles_too():
    model = random_statistics(
        Sequential(Linear(6, 5), BatchNorm1d(5), LeakyReLU(), Dropout(), Linear(5, 3))
    )
    x = np.random.default_rng(13).standard_normal((2, 6)).astype(np.float32)
    plan = InferencePlan(model.layers, x.shape, np.float32)
    want = _layer_by_layer(model.layers, x)
    np.testing.assert_allclose(plan(x), want, rtol=0, atol=1e-5 * np.abs(want).max())
    assert plan.compiled


def test_global_average_pooling_ends_a_compiled_pass():
    model = Sequential(Conv2d(1, 3, 3, dtype=np.float64), ReLU(), GlobalAvgPool2d())
    x = np.random.default_rng(14).standard_normal((2, 1, 5, 5))
    want = _layer_by_layer(model.layers, x)
    got = InferencePlan(model.layers, x.shape, np.float64)(x)
    assert got.shape == (2, 3) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["md2", "md3"])
def test_the_same_bits_at_any_thread_count_and_from_any_thread(name):
    """As every kernel: a product is one single-threaded BLAS call whichever thread runs it."""
    model = random_statistics(zoo.build(name))
    x = np.random.default_rng(15).standard_normal((2, 1, 28, 28)).astype(np.float32)
    before = parallel.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            parallel.set_num_threads(n)
            outs.append(model.forward(x, training=False))
            thread = threading.Thread(target=lambda: outs.append(model.forward(x, False)))
            thread.start()
            thread.join(timeout=60)
    finally:
        parallel.set_num_threads(before)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def _conv_net(conv, dtype):
    """``conv``, then a batch norm folded into it and a ReLU applied on its product, then a
    second convolution reading the first one's output: a wide product's thrown-away columns
    must reach neither."""
    f = conv.out_channels
    return Sequential(
        conv,
        BatchNorm2d(f, dtype=dtype),
        ReLU(),
        Conv2d(f, 3, 3, padding=1, dtype=dtype),
        input_shape=(conv.in_channels, 16, 15),
    )


WIDE_CASES = [  # (Conv2d arguments, whether it takes the wide rows at 16 x 15)
    (dict(in_channels=3, out_channels=5, kernel_size=3, padding=1), True),
    (dict(in_channels=3, out_channels=5, kernel_size=3), False),  # valid: Wo 13 < 7 * 2
    (dict(in_channels=1, out_channels=4, kernel_size=(3, 2), padding="same"), True),  # uneven pads
    (dict(in_channels=2, out_channels=4, kernel_size=(2, 5), padding=(0, 2)), False),
    (dict(in_channels=4, out_channels=6, kernel_size=1), True),  # nothing wasted: always wide
    (dict(in_channels=3, out_channels=5, kernel_size=3, stride=2, padding=1), False),
    (dict(in_channels=3, out_channels=5, kernel_size=3, stride=(1, 2), padding=1), False),
    (dict(in_channels=3, out_channels=5, kernel_size=5, padding=2), False),  # 4 wasted in 19
    # weights larger than the output (32*9 > 16*15 values an image): the product takes the scale
    (dict(in_channels=32, out_channels=8, kernel_size=3, padding=1), True),
    (dict(in_channels=32, out_channels=8, kernel_size=3, stride=2, padding=1), False),
]


@pytest.mark.parametrize("case, wide", WIDE_CASES)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("batch", [1, 2])
def test_wide_and_narrow_rows_compute_the_layers_evaluation_pass(
    case, wide, dtype, tol, batch, monkeypatch
):
    model = random_statistics(_conv_net(Conv2d(**case, dtype=dtype), dtype), seed=16)
    x = np.random.default_rng(17).standard_normal((batch, case["in_channels"], 16, 15))
    x = x.astype(dtype)
    want = _layer_by_layer(model.layers, x)
    plan = InferencePlan(model.layers, x.shape, dtype)
    assert plan.steps[0].wide is wide  # the rule of inference.wide_rows
    (_, _, ho, wo), (kh, kw) = plan.steps[0].out_shape, model.layers[0].kernel_size
    assert plan.steps[0].scale_product is (batch * ho * wo < case["in_channels"] * kh * kw)
    outs = {}
    conv = model.layers[0]
    for least in (0, 10**6):  # every stride-1 convolution wide, then only those of one column
        monkeypatch.setattr(inference, "WIDE_ROWS_MIN", least)
        plan = InferencePlan(model.layers, x.shape, dtype)
        expected = conv.stride == (1, 1) and (least == 0 or conv.kernel_size[1] == 1)
        assert plan.steps[0].wide is expected
        outs[least] = plan(x)
        np.testing.assert_allclose(outs[least], want, rtol=0, atol=tol * np.abs(want).max())
    assert outs[0].shape == want.shape and outs[0].flags.c_contiguous


def _conv_steps(steps):
    """The compiled convolutions among ``steps``, residual blocks' included, in order."""
    convs = []
    for step in steps:
        if isinstance(step, inference._Conv):
            convs.append(step)
        elif isinstance(step, inference._Residual):
            convs += _conv_steps(step.body) + _conv_steps(step.shortcut)
    return convs


def test_the_wide_rows_take_mds_stride_1_convolutions_on_maps_of_14_and_more():
    """md2 and md3: the 3x3 stride-1 convolutions at 28x28 and 14x14 take the wide rows (2
    columns in 30 or 16 thrown away), those at 7x7 (2 in 9) and the stride-2 ones do not."""
    for name in ("md2", "md3"):
        model = zoo.build(name)
        plan = InferencePlan(model.layers, (1, *model.input_shape), np.float32)
        convs = _conv_steps(plan.steps)
        assert len(convs) == {"md2": 6, "md3": 21}[name]
        for step in convs:
            f, n, ho, wo = step.out_shape
            expected = step.conv.stride == (1, 1) and wo >= 14
            assert step.wide is expected, (name, step.conv, wo)
