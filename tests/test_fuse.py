"""The fusion pass (stablecnn.nn.fuse) and the fused layers: a ReLU followed by a MaxPool2d runs as
one ReLUMaxPool2d, a BatchNorm2d followed by a ReLU as one BNReLU2d, in a Sequential's plan (or a
block's, through PlanCache), with the numbers, names and files of the two layers."""

import numpy as np
import pytest
from support.models import random_statistics

from stablecnn import (
    Adagrad,
    Adam,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
)
from stablecnn.nn import zoo
from stablecnn.nn.fuse import PlanCache, bn_relu_pairs, fuse, relu_pool_pairs
from stablecnn.nn.layers import Residual
from stablecnn.nn.layers.norm import BNReLU2d
from stablecnn.nn.layers.pool import ReLUMaxPool2d
from stablecnn.training import checkpoint


def _train_step(model, x, y, need_input_grad=True):
    loss = SoftmaxCrossEntropy()
    value = loss.forward(model.forward(x), y)
    dx = model.backward(loss.backward(), need_input_grad=need_input_grad)
    return value, dx, {name: g.copy() for name, _, g in model.parameters()}


def _kinds(layers):
    return [type(layer).__name__ for layer in layers]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_relu_pool_pairs_give_the_unfused_results_exactly(dtype):
    """Each ReLU -> MaxPool2d pair runs as one ReLUMaxPool2d: the loss, the input gradient
    and every parameter gradient are those of the layers run one by one, for the flat 2x2
    stride-1 kernel, the 2x2 stride-2 kernel and a pair first in the model."""

    def build(fuse):
        rng = np.random.default_rng(6)
        return Sequential(
            ReLU(),
            MaxPool2d(2, stride=1),  # a pair first: its input gradient
            Conv2d(1, 4, 3, rng=rng, dtype=dtype),
            ReLU(),
            MaxPool2d(2, stride=1),
            Conv2d(4, 3, 3, rng=rng, dtype=dtype),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Linear(3 * 2 * 2, 5, rng=rng, dtype=dtype),
            fuse=fuse,
        )

    fused, plain = build(True), build(False)
    assert relu_pool_pairs(fused.layers) == {0, 3, 6}
    assert _kinds(fused.plan) == [
        "ReLUMaxPool2d",
        "Conv2d",
        "ReLUMaxPool2d",
        "Conv2d",
        "ReLUMaxPool2d",
        "Flatten",
        "Linear",
    ]
    assert plain.plan == tuple(plain.layers)
    rng = np.random.default_rng(7)
    x = np.round(rng.standard_normal((6, 1, 11, 11)), 1).astype(dtype)  # ties and zeros
    y = np.arange(6) % 5
    for need in (True, False):
        got, want = _train_step(fused, x, y, need), _train_step(plain, x, y, need)
        assert got[0] == want[0]
        if need:
            assert got[1].dtype == dtype
            np.testing.assert_array_equal(got[1], want[1])
        else:
            assert got[1] is None and want[1] is None
        for name in want[2]:
            np.testing.assert_array_equal(got[2][name], want[2][name], err_msg=name)
    np.testing.assert_array_equal(fused.predict_proba(x), plain.predict_proba(x))


def test_fused_and_unfused_model_1_train_bit_identically():
    """Model 1 (float32) three Adagrad steps either way: the same outputs, gradients and
    updated weights, bit for bit, and then the same predictions."""
    rng = np.random.default_rng(11)
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    runs = []
    for fused in (True, False):
        model = zoo.build("md1", seed=2)
        model.fuse = fused
        opt, loss, record = Adagrad(model.parameters(), lr=0.01), SoftmaxCrossEntropy(), []
        for _ in range(3):
            out = model.forward(x)
            record.append(out)
            loss.forward(out, y)
            model.backward(loss.backward(), need_input_grad=False)
            record += [g.copy() for _, _, g in model.parameters()]
            opt.step()
            record += [p.copy() for _, p, _ in model.parameters()]
        record.append(model.forward(x, training=False))
        runs.append((model, record))
    (fused, got), (plain, want) = runs
    assert _kinds(fused.plan) == [
        "Conv2d",
        "ReLUMaxPool2d",
        "Conv2d",
        "ReLUMaxPool2d",
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
    ]
    assert len(plain.plan) == 10
    assert len(got) == len(want) == 3 * 17 + 1
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype == np.float32
        np.testing.assert_array_equal(g, w, err_msg=f"array {k}")


def test_fusing_changes_no_name_config_repr_summary_or_checkpoint(tmp_path):
    """A fused Model 1 is named, described and saved exactly as the unfused one: the names
    keep the unfused layer indices ("7.weight", not "5.weight") and its checkpoint loads into
    a model that predicts the same."""
    fused, plain = zoo.build("md1", seed=5), zoo.build("md1", seed=5)
    plain.fuse = False
    x = np.random.default_rng(12).random((4, 1, 28, 28), dtype=np.float32)
    out = fused.forward(x)  # the plan is made and run
    assert any(isinstance(step, ReLUMaxPool2d) for step in fused.plan)
    assert (
        [n for n, _, _ in fused.parameters()]
        == [n for n, _, _ in plain.parameters()]
        == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias"]
    )
    assert fused.config() == plain.config()
    assert repr(fused) == repr(plain) and "ReLUMaxPool2d" not in repr(fused)
    assert fused.summary((1, 28, 28)) == plain.summary((1, 28, 28))
    assert _kinds(fused.layers) == _kinds(plain.layers) and len(fused.layers) == 10
    checkpoint.save(tmp_path / "fused.npz", fused, {})
    checkpoint.save(tmp_path / "plain.npz", plain, {})
    a, b = checkpoint.load(tmp_path / "fused.npz"), checkpoint.load(tmp_path / "plain.npz")
    assert a.meta["model"] == b.meta["model"] and sorted(a.params) == sorted(b.params)
    for name in b.params:
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)
    loaded, _ = checkpoint.load_model(tmp_path / "fused.npz")
    plain.load_state_dict(fused.state_dict())
    np.testing.assert_array_equal(loaded.forward(x), out)
    np.testing.assert_array_equal(plain.forward(x), out)


def test_fuse_is_idempotent_and_leaves_other_layers_as_they_are():
    relu, pool, conv, flat = ReLU(), MaxPool2d(2), Conv2d(1, 2, 3), Flatten()
    layers = [conv, relu, pool, flat]
    once = fuse(layers)
    assert layers == [conv, relu, pool, flat]  # the input list is not changed
    assert _kinds(once) == ["Conv2d", "ReLUMaxPool2d", "Flatten"]
    assert once[0] is conv and once[2] is flat
    assert once[1].relu is relu and once[1].pool is pool
    twice = fuse(once)
    assert len(twice) == len(once) and all(a is b for a, b in zip(twice, once))
    # chains: only a ReLU directly followed by a MaxPool2d is joined, once
    r1, r2, p1, p2 = ReLU(), ReLU(), MaxPool2d(2), MaxPool2d(2)
    assert _kinds(fuse([r1, r2, p1, p2])) == ["ReLU", "ReLUMaxPool2d", "MaxPool2d"]
    assert _kinds(fuse(fuse([r1, r2, p1, p2]))) == ["ReLU", "ReLUMaxPool2d", "MaxPool2d"]
    # nothing to fuse: the same objects in the same order, and the model's plan is its layers
    for plain in ([conv, pool, relu, flat], [relu], [pool, relu], [conv, flat]):
        got = fuse(plain)
        assert len(got) == len(plain) and all(a is b for a, b in zip(got, plain))
    model = Sequential(conv, pool, relu)
    assert model.plan == (conv, pool, relu)
    fused = Sequential(conv, relu, pool)
    assert fused.plan is fused.plan  # made once, kept while nothing changes


def test_the_plan_follows_the_layers_their_kernels_and_the_fuse_switch():
    """Sequential makes its plan again when the layer list is edited, a layer changes kernels
    (the reference kernels are never fused) or ``fuse`` is turned off."""
    rng = np.random.default_rng(0)
    model = Sequential(Conv2d(1, 2, 3, rng=rng), ReLU(), MaxPool2d(2), Flatten())
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    want = model.forward(x)
    assert _kinds(model.plan) == ["Conv2d", "ReLUMaxPool2d", "Flatten"]
    model.layers[2].kernels = "reference"
    assert model.plan == tuple(model.layers)
    model.kernels = "fast"
    model.fuse = False
    assert model.plan == tuple(model.layers)
    np.testing.assert_array_equal(model.forward(x), want)
    model.fuse = True
    model.layers[1:3] = [model.layers[2], ReLU()]  # now pool -> ReLU: nothing to fuse
    assert model.plan == tuple(model.layers)
    out = model.forward(x)
    assert out.min() >= 0
    assert model.backward(np.ones_like(out)).shape == x.shape


def test_backward_runs_the_steps_the_last_forward_ran():
    """The plan changing between a forward and its backward (fuse turned off) does not mix the
    two: backward goes back through the steps forward went through."""
    rng = np.random.default_rng(1)
    model = Sequential(Conv2d(1, 2, 3, rng=rng), ReLU(), MaxPool2d(2, stride=1), Flatten())
    x = rng.standard_normal((3, 1, 9, 9)).astype(np.float32)
    out = model.forward(x)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    want = model.backward(dout)
    model.forward(x)
    model.fuse = False
    np.testing.assert_array_equal(model.backward(dout), want)
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        Sequential(ReLU(), MaxPool2d(2)).backward(dout)


def test_relu_maxpool2d_is_the_pair_as_one_layer():
    """ReLUMaxPool2d on its own: the pair's values and gradient (ties, zeros, all-negative
    windows), its shape, repr, no parameters, the pool's kernels, and no config of its own."""
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 3, (2, 3, 7, 6)).astype(np.float64)
    x[0, 0] = -1
    relu, pool = ReLU(), MaxPool2d(3, stride=2)
    fused = ReLUMaxPool2d(ReLU(), MaxPool2d(3, stride=2))
    want = pool.forward(relu.forward(x))
    np.testing.assert_array_equal(fused.forward(x), want)
    dout = rng.standard_normal(want.shape)
    np.testing.assert_array_equal(fused.backward(dout), relu.backward(pool.backward(dout)))
    fused.forward(x)
    assert fused.backward(dout, need_input_grad=False) is None
    assert fused.output_shape((3, 7, 6)) == want.shape[1:] == (3, 3, 2)
    assert repr(fused) == "ReLUMaxPool2d(kernel_size=(3, 3), stride=(2, 2))"
    assert fused.params == {} and fused.num_params == 0 and fused.dtype is None
    fused.kernels = "reference"
    assert fused.relu.kernels == fused.pool.kernels == fused.kernels == "reference"
    np.testing.assert_array_equal(fused.forward(x), want)
    with pytest.raises(TypeError, match="execution plan.*save the ReLU and the MaxPool2d"):
        fused.config()
    with pytest.raises(TypeError, match="takes a ReLU and a MaxPool2d, got MaxPool2d and ReLU"):
        ReLUMaxPool2d(MaxPool2d(2), ReLU())


# -- BatchNorm2d -> ReLU -------------------------------------------------------------------------
def test_fuse_joins_batch_norm_and_relu_and_leaves_relu_pool_to_the_pool():
    conv, bn, relu, pool = Conv2d(1, 4, 3, bias=False), BatchNorm2d(4), ReLU(), MaxPool2d(2)
    bn2, relu2 = BatchNorm2d(4), ReLU()
    layers = [conv, bn, relu, pool, bn2, relu2, Flatten()]
    assert bn_relu_pairs(layers) == {4}  # the first ReLU goes with the pool
    plan = fuse(layers)
    assert [type(s).__name__ for s in plan] == [
        "Conv2d",
        "BatchNorm2d",
        "ReLUMaxPool2d",
        "BNReLU2d",
        "Flatten",
    ]
    assert plan[1] is bn and plan[3].bn is bn2 and plan[3].relu is relu2
    assert all(a is b for a, b in zip(fuse(plan), plan))  # idempotent
    bn2.kernels = "reference"
    assert bn_relu_pairs(layers) == frozenset()  # reference kernels are never fused
    assert not bn_relu_pairs([BatchNorm1d(4), ReLU()]) and not bn_relu_pairs([bn, ReLU])


def test_plan_cache_keeps_the_plan_while_nothing_changes():
    body = [Conv2d(3, 3, 3, padding=1, bias=False), BatchNorm2d(3), ReLU(), BatchNorm2d(3)]
    cache = PlanCache()
    plan = cache(body)
    assert [type(s).__name__ for s in plan] == ["Conv2d", "BNReLU2d", "BatchNorm2d"]
    assert cache(body) is plan and cache(list(body)) is plan
    body[1].kernels = "reference"
    assert cache(body) == tuple(body)
    body[1].kernels = "fast"
    assert cache(body, enabled=False) == tuple(body)
    assert type(cache(body)[1]) is BNReLU2d


def test_a_layer_whose_forward_was_replaced_runs_as_itself():
    """A hook or wrapper set on a layer instance (a profiler, a fault injected by a test) must
    run: such a layer is never joined, and a PlanCache notices the replacement."""
    bn, relu, pool = BatchNorm2d(2), ReLU(), MaxPool2d(2)
    layers = [bn, relu, BatchNorm2d(2), ReLU(), pool]
    cache = PlanCache()
    assert [type(s).__name__ for s in cache(layers)] == ["BNReLU2d", "BatchNorm2d", "ReLUMaxPool2d"]
    calls = []
    real = relu.forward
    relu.forward = lambda x, training=True: calls.append(1) or real(x, training)
    pool.backward = pool.backward  # an instance attribute all the same
    assert bn_relu_pairs(layers) == {2} and relu_pool_pairs(layers) == frozenset()
    plan = cache(layers)
    assert [type(s).__name__ for s in plan] == ["BatchNorm2d", "ReLU", "BNReLU2d", "MaxPool2d"]
    assert plan[0] is bn and plan[1] is relu and plan[3] is pool
    x = np.random.default_rng(11).standard_normal((2, 2, 4, 4)).astype(np.float32)
    for step in plan:
        x = step.forward(x)
    assert calls == [1]


def _md2_like(fuse_on, dtype):
    rng = np.random.default_rng(9)
    layers = []
    for cin, cout in ((1, 4), (4, 4)):
        layers += [
            Conv2d(cin, cout, 3, padding=1, rng=rng, dtype=dtype),
            BatchNorm2d(cout, dtype=dtype),
            ReLU(),
        ]
    layers += [MaxPool2d(2), Conv2d(4, 6, 3, padding=1, rng=rng, dtype=dtype)]
    layers += [BatchNorm2d(6, dtype=dtype), ReLU(), MaxPool2d(2)]
    layers += [
        Conv2d(6, 6, 3, padding=1, rng=rng, dtype=dtype),
        BatchNorm2d(6, dtype=dtype),
        ReLU(),
    ]
    layers += [GlobalAvgPool2d(), Linear(6, 5, rng=rng, dtype=dtype)]
    return Sequential(*layers, fuse=fuse_on)


def _adam_record(model, x, y):
    """Three Adam steps: each loss, input gradient and parameter gradient, then the weights, the
    buffers and an evaluation output, as arrays to compare bit for bit."""
    opt, loss, record = Adam(model.parameters(), lr=0.01), SoftmaxCrossEntropy(), []
    for _ in range(3):
        record.append(np.asarray(loss.forward(model.forward(x), y)))
        record.append(model.backward(loss.backward()))
        record += [g.copy() for _, _, g in model.parameters()]
        opt.step()
    record += [p.copy() for _, p, _ in model.parameters()]
    record += [b.copy() for layer in model.layers for b in layer.buffers.values()]
    record.append(model.forward(x, training=False))
    return record


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_model_with_fused_batch_norms_trains_bit_identically(dtype):
    """Three Adam steps of a small md2-like model fused and unfused: the same losses, gradients,
    weights, running statistics and evaluation outputs, bit for bit."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 1, 12, 12)).astype(dtype)
    y = np.arange(6) % 5
    runs = []
    for fused in (True, False):
        model = _md2_like(fused, dtype)
        runs.append((model, _adam_record(model, x, y)))
    (fused, got), (plain, want) = runs
    kinds = [type(s).__name__ for s in fused.plan]
    assert kinds.count("BNReLU2d") == 2 and kinds.count("ReLUMaxPool2d") == 2
    assert sum(isinstance(s, ReLUMaxPool2d) for s in fused.plan) == 2
    assert len(plain.plan) == len(plain.layers)
    assert [n for n, _, _ in fused.parameters()] == [n for n, _, _ in plain.parameters()]
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, b, err_msg=f"array {k}")


def _small_resnet(dtype):
    """md3's shape in small: a stem, an identity block and a projection block with stride 2."""
    rng = np.random.default_rng(3)

    def conv(c, f, k=3, stride=1):
        return Conv2d(c, f, k, stride=stride, padding=k // 2, bias=False, rng=rng, dtype=dtype)

    def block(c, f, stride=1):
        body = [conv(c, f, stride=stride), BatchNorm2d(f, dtype=dtype), ReLU()]
        body += [conv(f, f), BatchNorm2d(f, dtype=dtype)]
        shortcut = [conv(c, f, 1, stride), BatchNorm2d(f, dtype=dtype)] if stride > 1 else []
        return Residual(body, shortcut, activation="ReLU")

    return Sequential(
        conv(3, 4),
        BatchNorm2d(4, dtype=dtype),
        ReLU(),
        block(4, 4),
        block(4, 6, stride=2),
        GlobalAvgPool2d(),
        Linear(6, 4, rng=rng, dtype=dtype),
        input_shape=(3, 10, 10),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_residual_network_trains_bit_identically_with_its_blocks_fused(dtype):
    """md3-like blocks run each branch's fused plan (the body's BatchNorm2d and ReLU as one
    BNReLU2d): three Adam steps fused and unfused give the same losses, input gradients,
    parameter gradients, weights, running statistics and evaluation outputs, bit for bit; the
    blocks keep their layers, names and config; Sequential.fuse = False reaches the blocks."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((5, 3, 10, 10)).astype(dtype)
    y = np.arange(5) % 4
    runs = []
    for fused in (True, False):
        model = _small_resnet(dtype)
        model.fuse = fused
        runs.append((model, _adam_record(model, x, y)))
    (fused, got), (plain, want) = runs
    blocks = [layer for layer in fused.layers if type(layer).__name__ == "Residual"]
    for block in blocks:
        body, shortcut = block.plan
        assert _kinds(body) == ["Conv2d", "BNReLU2d", "Conv2d", "BatchNorm2d"]
        assert shortcut == tuple(block.shortcut)  # nothing to fuse there
        assert _kinds(block.body) == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    for block in (layer for layer in plain.layers if type(layer).__name__ == "Residual"):
        assert block.fuse is False and block.plan[0] == tuple(block.body)
    assert fused.config() == plain.config()
    assert [n for n, _, _ in fused.parameters()] == [n for n, _, _ in plain.parameters()]
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b, err_msg=f"array {k}")


def test_a_blocks_backward_runs_the_steps_its_last_forward_ran():
    """A block whose fuse switch changes between forward and backward goes back through the
    steps its forward went through (the fused BNReLU2d holds what backward needs)."""
    rng = np.random.default_rng(4)
    block = Residual(
        [Conv2d(3, 3, 3, padding=1, bias=False, rng=rng), BatchNorm2d(3), ReLU()],
        activation="ReLU",
    )
    x = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    dout = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    block.forward(x)
    want = block.backward(dout)
    block.forward(x)
    block.fuse = False
    np.testing.assert_array_equal(block.backward(dout), want)


def test_the_fuse_switch_reaches_blocks_nested_in_blocks():
    """Sequential.fuse = False runs every layer one by one, in nested blocks too, and True
    fuses them again; the outputs agree bit for bit."""
    rng = np.random.default_rng(5)
    inner = Residual([Conv2d(2, 2, 3, padding=1, bias=False, rng=rng), BatchNorm2d(2), ReLU()])
    outer = Residual([inner, BatchNorm2d(2), ReLU()], activation="ReLU")
    model = Sequential(outer)
    x = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    fused_out = model.forward(x)
    assert _kinds(inner.plan[0]) == ["Conv2d", "BNReLU2d"]
    assert _kinds(outer.plan[0]) == ["Residual", "BNReLU2d"]
    model.fuse = False
    assert not outer.fuse and not inner.fuse
    assert inner.plan[0] == tuple(inner.body) and outer.plan[0] == tuple(outer.body)
    np.testing.assert_array_equal(model.forward(x), fused_out)
    model.fuse = True
    assert outer.fuse and inner.fuse and _kinds(inner.plan[0]) == ["Conv2d", "BNReLU2d"]


@pytest.mark.parametrize("name", ["md2", "md3"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [7, 40])
def test_evaluation_joins_each_convolution_and_its_batch_norm_bit_for_bit(
    name, dtype, batch, monkeypatch
):
    """In evaluation (batches above the compiled plan's), fuse.run has each rows-kernel
    convolution apply the batch norm after it to its own output: the same bits as the two run
    one after the other (fuse off), and the batch norm's own pass never runs for those pairs."""
    model = random_statistics(zoo.build(name, dtype=dtype), seed=21)
    x = np.random.default_rng(22).standard_normal((batch, *model.input_shape)).astype(dtype)
    model.fuse = False
    want = model.forward(x, training=False)
    model.fuse = True
    calls = []
    forward = BatchNorm2d.forward

    def counted(self, x, training=True, relu=False):
        calls.append(self.num_features)
        return forward(self, x, training, relu)

    monkeypatch.setattr(BatchNorm2d, "forward", counted)
    got = model.forward(x, training=False)
    np.testing.assert_array_equal(got, want)
    # the batch norms left to their own pass: those after an im2col convolution (a stem of one
    # input channel, md3's stride-2 and 1x1 convolutions)
    left = {"md2": [32], "md3": [16, 32, 32, 64, 64]}[name]
    assert sorted(calls) == left


def test_a_joined_batch_norm_with_other_channels_raises_its_own_shape_error():
    """fuse.run joins only where the channels agree: otherwise the batch norm's own pass runs
    and names the shapes."""
    from stablecnn.errors import ShapeError
    from stablecnn.nn.fuse import run

    steps = [Conv2d(8, 6, 3, padding=1), BatchNorm2d(5)]
    x = np.random.default_rng(23).random((4, 8, 6, 6), dtype=np.float32)
    with pytest.raises(ShapeError, match="BatchNorm2d"):
        run(steps, x, training=False)


def test_a_hooked_batch_norm_runs_as_itself_in_evaluation():
    from stablecnn.nn.fuse import run

    rng = np.random.default_rng(24)
    conv, bn = Conv2d(8, 8, 3, padding=1, rng=rng), BatchNorm2d(8)
    seen = []
    own = bn.forward
    bn.forward = lambda x, training=True: seen.append(x.shape) or own(x, training)
    x = rng.random((3, 8, 5, 5), dtype=np.float32)
    out = run([conv, bn], x, training=False)
    assert seen == [(3, 8, 5, 5)]
    np.testing.assert_array_equal(out, own(conv.forward(x, False), False))


def test_an_epilogue_is_for_evaluation_only():
    from stablecnn.kernels.conv import conv2d_forward

    conv = Conv2d(8, 8, 3, padding=1)
    x = np.zeros((2, 8, 5, 5), np.float32)
    with pytest.raises(ValueError, match="evaluation only"):
        conv.forward(x, training=True, epilogue=lambda y, a, z: None)
    with pytest.raises(ValueError, match="inference only"):
        conv2d_forward(x, conv.params["weight"], conv._bias(), epilogue=lambda y, a, z: None)


@pytest.mark.parametrize("rows", [False, True])
def test_an_epilogue_sees_every_output_channel_once_in_either_kernel(rows):
    """conv2d_forward's epilogue: applied to each block of filters (the rows kernel) or in a pass
    of its own (im2col), every output value once, with the block's channel range."""
    from stablecnn.kernels.conv import conv2d_forward

    rng = np.random.default_rng(25)
    x = rng.standard_normal((5, 9, 8, 7)).astype(np.float32)
    w = rng.standard_normal((12, 9, 3, 3)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    pad = ((1, 1), (1, 1))
    plain, _ = conv2d_forward(x, w, b, padding=pad, rows=rows, keep=False)
    shift = np.arange(12, dtype=np.float32) * 10

    def add_channel(y, a, z):  # y: filters a..z on axis 0
        y += shift[a:z].reshape(-1, *(1,) * (y.ndim - 1))

    got, _ = conv2d_forward(x, w, b, padding=pad, rows=rows, keep=False, epilogue=add_channel)
    np.testing.assert_array_equal(got, plain + shift.reshape(1, -1, 1, 1))
