"""The reference definitions (:mod:`stablecnn.reference`) proven on their own, and the switch that
trains on them.

- every backward against float64 centered finite differences (relative error < 1e-7);
- forward and backward against PyTorch on non-square inputs and kernels,
  stride > 1, padding, and max-pool windows full of ties;
- float32 in, float32 out, for every function;
- ``kernels="reference"``: each layer, a model with every layer type and Model 1 for two Adagrad
  steps give the fast kernels' numbers, with the fast kernels out of reach.

The fast kernels are held to these definitions over the layer tests' own tables of shapes
(``test_layers_conv.py``, ``test_layers_pool.py``, ``test_layers_dense_activations.py``,
``test_layers_norm_dropout.py``, ``test_loss.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from support.gradcheck import numerical_grad, rel_error

from stablecnn import (
    Adagrad,
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
    SoftmaxCrossEntropy,
    reference,
)
from stablecnn.nn import zoo
from stablecnn.nn.model import relu_pool_pairs

R = reference


def normal(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_same(ours, ref, what, rtol=1e-12):
    """``ours`` equals ``ref`` in shape and dtype, and in value to ``rtol`` of ``max |ref|``;
    the message shows both sides."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    head = f"{what}: ours {ours.shape} {ours.dtype} vs reference {ref.shape} {ref.dtype}"
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, head
    scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-300)
    err = float(np.max(np.abs(ours.astype(np.float64) - ref), initial=0.0))
    assert err <= rtol * scale, f"{head}: max |diff| {err:.3g} > {rtol:g} * max|ref| {scale:.3g}"


def check_gradients(forward, backward_grads, inputs, dout):
    """``backward_grads`` (a dict name -> analytic gradient) against centered differences of
    ``sum(forward() * dout)`` with respect to each array in ``inputs`` (name -> array)."""

    def f():
        return float(np.sum(forward() * dout))

    for name, array in inputs.items():
        err = rel_error(backward_grads[name], numerical_grad(f, array))
        assert err < 1e-7, f"d{name}: relative error {err:.3g}"


# -- finite differences, float64 -------------------------------------------------------------------
CONV_CASES = [
    # (N, C, H, W), F, (kH, kW), (sH, sW), padding
    ((2, 2, 7, 5), 3, (3, 2), (1, 1), (0, 0)),  # non-square input and kernel
    ((1, 3, 8, 6), 2, (2, 3), (2, 1), (1, 1)),  # stride per axis, padding
    ((2, 2, 9, 7), 2, (3, 3), (2, 2), ((1, 2), (0, 1))),  # asymmetric padding ("same"-like)
    ((1, 2, 7, 8), 2, (2, 2), (3, 2), (0, 0)),  # stride > kernel: cells no window reads
]


@pytest.mark.parametrize("shape,f,kernel,stride,padding", CONV_CASES)
def test_conv2d_backward_matches_finite_differences(shape, f, kernel, stride, padding):
    x, w, b = normal(shape, 0), normal((f, shape[1], *kernel), 1), normal(f, 2)
    out = R.conv2d_forward(x, w, b, stride, padding)
    dout = normal(out.shape, 3)
    dx, dw, db = R.conv2d_backward(dout, x, w, stride, padding)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    check_gradients(
        lambda: R.conv2d_forward(x, w, b, stride, padding),
        {"x": dx, "w": dw, "b": db},
        {"x": x, "w": w, "b": b},
        dout,
    )


POOL_CASES = [
    # (N, C, H, W), kernel, stride
    ((2, 2, 6, 5), (2, 2), (1, 1)),  # overlapping, non-square
    ((1, 2, 9, 8), (3, 2), (2, 1)),
    ((2, 1, 7, 8), (2, 2), (3, 2)),  # stride > kernel
]


@pytest.mark.parametrize("shape,kernel,stride", POOL_CASES)
def test_maxpool2d_backward_matches_finite_differences(shape, kernel, stride):
    # distinct values 0.1 apart: no window's maximum is within the step h of another value
    x = np.random.default_rng(4).permutation(np.prod(shape)).reshape(shape) * 0.1
    dout = normal(R.maxpool2d_forward(x, kernel, stride).shape, 5)
    check_gradients(
        lambda: R.maxpool2d_forward(x, kernel, stride),
        {"x": R.maxpool2d_backward(dout, x, kernel, stride)},
        {"x": x},
        dout,
    )


@pytest.mark.parametrize(
    "shape,kernel,stride,padding",
    [
        ((2, 2, 6, 5), (2, 2), (1, 1), (0, 0)),
        ((1, 2, 9, 8), (3, 2), (2, 1), (1, 1)),
        ((2, 1, 7, 6), (3, 3), (2, 2), (1, 0)),
    ],
)
def test_avgpool2d_backward_matches_finite_differences(shape, kernel, stride, padding):
    x = normal(shape, 6)
    dout = normal(R.avgpool2d_forward(x, kernel, stride, padding).shape, 7)
    dx = R.avgpool2d_backward(dout, x.shape, kernel, stride, padding)
    check_gradients(
        lambda: R.avgpool2d_forward(x, kernel, stride, padding), {"x": dx}, {"x": x}, dout
    )


def test_global_avgpool2d_and_flatten_backward_match_finite_differences():
    x = normal((3, 4, 5, 2), 8)
    dout = normal((3, 4), 9)
    check_gradients(
        lambda: R.global_avgpool2d_forward(x),
        {"x": R.global_avgpool2d_backward(dout, x.shape)},
        {"x": x},
        dout,
    )
    dout = normal((3, 40), 10)
    check_gradients(
        lambda: R.flatten_forward(x), {"x": R.flatten_backward(dout, x.shape)}, {"x": x}, dout
    )


def test_linear_backward_matches_finite_differences():
    x, w, b = normal((4, 7), 11), normal((5, 7), 12), normal(5, 13)
    dout = normal((4, 5), 14)
    dx, dw, db = R.linear_backward(dout, x, w)
    check_gradients(
        lambda: R.linear_forward(x, w, b),
        {"x": dx, "w": dw, "b": db},
        {"x": x, "w": w, "b": b},
        dout,
    )


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4), (3, 4, 5, 2), (1, 2, 3, 4)])
def test_batchnorm_backward_matches_finite_differences(shape):
    x = normal(shape, 15) * 2 + 1
    gamma = np.random.default_rng(16).uniform(0.5, 1.5, shape[1])
    beta = normal(shape[1], 17)
    dout = normal(shape, 18)
    dx, dgamma, dbeta = R.batchnorm_backward(dout, x, gamma, 1e-5)
    check_gradients(
        lambda: R.batchnorm_forward(x, gamma, beta, 1e-5),
        {"x": dx, "gamma": dgamma, "beta": dbeta},
        {"x": x, "gamma": gamma, "beta": beta},
        dout,
    )


def test_activations_and_dropout_backward_match_finite_differences():
    x = normal((3, 2, 4, 5), 19)
    x[np.abs(x) < 1e-3] = 0.5  # no entry within the step h of the kink at 0
    dout = normal(x.shape, 20)
    check_gradients(lambda: R.relu_forward(x), {"x": R.relu_backward(dout, x)}, {"x": x}, dout)
    check_gradients(
        lambda: R.leaky_relu_forward(x, 0.2),
        {"x": R.leaky_relu_backward(dout, x, 0.2)},
        {"x": x},
        dout,
    )
    mask = (np.random.default_rng(21).random(x.shape) >= 0.3) / 0.7
    check_gradients(
        lambda: R.dropout_forward(x, mask), {"x": R.dropout_backward(dout, mask)}, {"x": x}, dout
    )


def test_softmax_cross_entropy_backward_matches_finite_differences():
    logits, labels = normal((5, 7), 22) * 3, np.random.default_rng(23).integers(0, 7, 5)
    check_gradients(
        lambda: R.softmax_cross_entropy_forward(logits, labels),
        {"z": R.softmax_cross_entropy_backward(logits, labels)},
        {"z": logits},
        np.float64(1.0),
    )


# -- what the definitions promise -----------------------------------------------------------------
def test_output_size_is_floor_of_padded_size_minus_kernel_over_stride_plus_one():
    x = np.zeros((2, 3, 11, 8))
    # Ho = floor((11 + 1 + 2 - 3) / 2) + 1 = 6, Wo = floor((8 + 0 + 1 - 2) / 3) + 1 = 3
    assert R.conv2d_forward(
        x, np.zeros((4, 3, 3, 2)), np.zeros(4), (2, 3), ((1, 2), (0, 1))
    ).shape == (2, 4, 6, 3)
    assert R.maxpool2d_forward(x, (3, 2), (2, 3)).shape == (2, 3, 5, 3)
    assert R.avgpool2d_forward(x, (3, 2), (2, 3), (1, 1)).shape == (2, 3, 6, 3)


def test_maxpool_ties_go_to_the_first_maximum_in_row_major_order():
    x = np.array([[[[1.0, 5.0, 5.0], [5.0, 5.0, 2.0]]]])
    # two 2x2 windows, stride 1, each holding three 5s: in both the first in row-major order is
    # x[0, 1] (top row before bottom row, left column before right), which gets both shares
    dx = R.maxpool2d_backward(np.array([[[[1.0, 10.0]]]]), x, (2, 2), (1, 1))
    np.testing.assert_array_equal(dx, [[[[0, 11, 0], [0, 0, 0]]]])
    dx = R.maxpool2d_backward(np.ones((1, 1, 1, 1)), np.full((1, 1, 3, 2), -1.5), (3, 2), (1, 1))
    np.testing.assert_array_equal(dx, [[[[1, 0], [0, 0], [0, 0]]]])


def test_the_loss_is_stable_at_extreme_logits():
    logits = np.array([[1e4, -1e4, 0.0], [0.0, 1.0, -1e4]], np.float32)
    labels = np.array([1, 2])
    value = R.softmax_cross_entropy_forward(logits, labels)
    assert value.dtype == np.float32
    assert value == pytest.approx((2e4 + 1e4 + 1 + np.log1p(np.exp(-1))) / 2)
    grad = R.softmax_cross_entropy_backward(logits, labels)
    assert np.all(np.isfinite(grad)) and grad.dtype == np.float32


def _calls():
    """(name, function, arguments) for every reference function, on small float32 inputs."""
    x, w, b = normal((2, 3, 7, 6), 0), normal((4, 3, 3, 2), 1), normal(4, 2)
    g = np.random.default_rng(3).uniform(0.5, 1.5, 3)
    z, y = normal((4, 5), 4), np.array([0, 4, 2, 1])
    mask = (np.random.default_rng(5).random(x.shape) > 0.5) * 2.0
    return [
        ("conv2d_forward", R.conv2d_forward, (x, w, b, (2, 1), (1, 1))),
        ("conv2d_backward", R.conv2d_backward, (normal((2, 4, 4, 7), 6), x, w, (2, 1), (1, 1))),
        ("maxpool2d_forward", R.maxpool2d_forward, (x, (3, 2), (2, 1))),
        ("maxpool2d_backward", R.maxpool2d_backward, (normal((2, 3, 3, 5), 7), x, (3, 2), (2, 1))),
        ("avgpool2d_forward", R.avgpool2d_forward, (x, (2, 2), (2, 2), (1, 0))),
        ("global_avgpool2d_forward", R.global_avgpool2d_forward, (x,)),
        ("global_avgpool2d_backward", R.global_avgpool2d_backward, (normal((2, 3), 8), x.shape)),
        ("linear_forward", R.linear_forward, (x[:, 0, 0], normal((2, 6), 9), normal(2, 10))),
        ("linear_backward", R.linear_backward, (normal((2, 2), 11), x[:, 0, 0], normal((2, 6), 9))),
        ("batchnorm_forward", R.batchnorm_forward, (x, g, g, 1e-5)),
        ("batchnorm_backward", R.batchnorm_backward, (normal(x.shape, 12), x, g, 1e-5)),
        ("batchnorm_running_stats", R.batchnorm_running_stats, (x, g, g, 0.1)),
        ("batchnorm_eval_forward", R.batchnorm_eval_forward, (x, g, g, g, g, 1e-5)),
        ("relu_forward", R.relu_forward, (x,)),
        ("relu_backward", R.relu_backward, (x, x)),
        ("leaky_relu_forward", R.leaky_relu_forward, (x, 0.1)),
        ("leaky_relu_backward", R.leaky_relu_backward, (x, x, 0.1)),
        ("dropout_forward", R.dropout_forward, (x, mask)),
        ("dropout_backward", R.dropout_backward, (x, mask)),
        ("flatten_forward", R.flatten_forward, (x,)),
        ("log_softmax", R.log_softmax, (z,)),
        ("softmax_cross_entropy_forward", R.softmax_cross_entropy_forward, (z, y)),
        ("softmax_cross_entropy_backward", R.softmax_cross_entropy_backward, (z, y)),
    ]


@pytest.mark.parametrize("index", range(len(_calls())), ids=[c[0] for c in _calls()])
def test_float32_in_float32_out(index):
    name, fn, args = _calls()[index]
    args32 = [
        a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
        for a in args
    ]
    results = fn(*args32)
    for out in results if isinstance(results, tuple) else (results,):
        assert np.asarray(out).dtype == np.float32, f"{name}: {np.asarray(out).dtype}"
    # and the same numbers as in float64, to float32's precision
    for got, want in zip(
        results if isinstance(results, tuple) else (results,),
        fn(*args) if isinstance(results, tuple) else (fn(*args),),
    ):
        assert_same(np.asarray(got).astype(np.float64), want, name, rtol=1e-5)


# -- against PyTorch (float64) ---------------------------------------------------------------------
@pytest.fixture
def F(one_torch_thread):
    """``torch.nn.functional``, on one torch thread."""
    import torch

    return torch.nn.functional


def torch_run(fn, arrays, dout):
    """``fn(*tensors)``, its output and the gradient of ``sum(output * dout)`` for each array."""
    import torch

    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(torch.tensor(np.asarray(dout, np.float64)))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


TORCH_CONV = [
    ((2, 3, 9, 7), 4, (3, 2), (2, 1), (1, 2)),
    ((1, 2, 8, 11), 3, (2, 4), (3, 2), (0, 1)),
    ((2, 1, 28, 28), 4, (10, 10), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("shape,f,kernel,stride,padding", TORCH_CONV)
def test_conv2d_matches_torch(F, shape, f, kernel, stride, padding):
    x, w, b = normal(shape, 30), normal((f, shape[1], *kernel), 31), normal(f, 32)
    out = R.conv2d_forward(x, w, b, stride, padding)
    dout = normal(out.shape, 33)
    ref, grads = torch_run(lambda x, w, b: F.conv2d(x, w, b, stride, padding), (x, w, b), dout)
    assert_same(out, ref, "conv output")
    for ours, theirs, name in zip(
        R.conv2d_backward(dout, x, w, stride, padding), grads, ("dx", "dw", "db")
    ):
        assert_same(ours, theirs, f"conv {name}")


@pytest.mark.parametrize("kind", ["random", "ties", "constant"])
@pytest.mark.parametrize("shape,kernel,stride", POOL_CASES + [((2, 2, 10, 9), (3, 3), (2, 2))])
def test_maxpool2d_matches_torch_ties_included(F, shape, kernel, stride, kind):
    rng = np.random.default_rng(34)
    x = {
        "random": rng.standard_normal(shape),
        "ties": rng.integers(0, 3, shape) * 1.0,
        "constant": np.full(shape, -1.5),
    }[kind]
    out = R.maxpool2d_forward(x, kernel, stride)
    dout = normal(out.shape, 35)  # distinct: a gradient routed to the wrong cell shows
    ref, (dx,) = torch_run(lambda x: F.max_pool2d(x, kernel, stride), (x,), dout)
    assert_same(out, ref, f"max-pool output ({kind})")
    assert_same(R.maxpool2d_backward(dout, x, kernel, stride), dx, f"max-pool dx ({kind})")


@pytest.mark.parametrize(
    "shape,kernel,stride,padding",
    [((2, 2, 7, 5), (2, 2), (1, 1), (0, 0)), ((1, 2, 9, 8), (3, 2), (2, 1), (1, 1))],
)
def test_avgpool2d_matches_torch(F, shape, kernel, stride, padding):
    x = normal(shape, 36)
    out = R.avgpool2d_forward(x, kernel, stride, padding)
    dout = normal(out.shape, 37)
    ref, (dx,) = torch_run(lambda x: F.avg_pool2d(x, kernel, stride, padding), (x,), dout)
    assert_same(out, ref, "avg-pool output")
    assert_same(R.avgpool2d_backward(dout, shape, kernel, stride, padding), dx, "avg-pool dx")


def test_global_avgpool_linear_and_activations_match_torch(F):
    x = normal((3, 4, 5, 2), 38)
    dout = normal((3, 4), 39)
    ref, (dx,) = torch_run(lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1), (x,), dout)
    assert_same(R.global_avgpool2d_forward(x), ref, "global avg-pool output")
    assert_same(R.global_avgpool2d_backward(dout, x.shape), dx, "global avg-pool dx")

    x, w, b, dout = normal((4, 7), 40), normal((5, 7), 41), normal(5, 42), normal((4, 5), 43)
    ref, grads = torch_run(F.linear, (x, w, b), dout)
    assert_same(R.linear_forward(x, w, b), ref, "linear output")
    for ours, theirs, name in zip(R.linear_backward(dout, x, w), grads, ("dx", "dw", "db")):
        assert_same(ours, theirs, f"linear {name}")

    x = np.random.default_rng(44).integers(-2, 3, (3, 8)) * 1.0  # exact zeros: the kink
    x[:, ::2] = normal((3, 4), 45)
    dout = normal(x.shape, 46)
    for name, ours, ours_back, fn in (
        ("relu", R.relu_forward(x), R.relu_backward(dout, x), F.relu),
        (
            "leaky relu",
            R.leaky_relu_forward(x, 0.2),
            R.leaky_relu_backward(dout, x, 0.2),
            lambda x: F.leaky_relu(x, 0.2),
        ),
    ):
        ref, (dx,) = torch_run(fn, (x,), dout)
        assert_same(ours, ref, f"{name} output", rtol=0)
        assert_same(ours_back, dx, f"{name} dx", rtol=0)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 4), (3, 4, 5, 2)])
def test_batchnorm_matches_torch_in_training_and_evaluation(F, shape):
    import torch

    x = normal(shape, 47) * 3 + 2
    gamma, beta = np.random.default_rng(48).uniform(0.5, 1.5, shape[1]), normal(shape[1], 49)
    mean, var = normal(shape[1], 50), np.random.default_rng(51).uniform(0.5, 2, shape[1])
    dout = normal(shape, 52)
    running = [torch.tensor(mean), torch.tensor(var)]  # torch updates them in place
    ref, grads = torch_run(
        lambda x, g, b: F.batch_norm(x, *running, g, b, True, 0.3, 1e-4), (x, gamma, beta), dout
    )
    assert_same(R.batchnorm_forward(x, gamma, beta, 1e-4), ref, "batch norm output", 1e-10)
    for ours, theirs, name in zip(
        R.batchnorm_backward(dout, x, gamma, 1e-4), grads, ("dx", "dgamma", "dbeta")
    ):
        assert_same(ours, theirs, f"batch norm {name}", 1e-10)
    for ours, theirs, name in zip(
        R.batchnorm_running_stats(x, mean, var, 0.3), running, ("running mean", "running var")
    ):
        assert_same(ours, theirs.numpy(), name)
    ref = F.batch_norm(
        torch.tensor(x),
        torch.tensor(mean),
        torch.tensor(var),
        torch.tensor(gamma),
        torch.tensor(beta),
        False,
        0.3,
        1e-4,
    )
    assert_same(
        R.batchnorm_eval_forward(x, gamma, beta, mean, var, 1e-4),
        ref.numpy(),
        "batch norm evaluation output",
    )


def test_softmax_cross_entropy_matches_torch(F):
    import torch

    logits = np.concatenate([normal((4, 6), 53), np.array([[1e4, -1e4, 0, 0, 0, 0.0]])])
    labels = np.array([0, 5, 2, 2, 1])
    ref, (dz,) = torch_run(lambda z: F.cross_entropy(z, torch.tensor(labels)), (logits,), 1.0)
    assert_same(R.softmax_cross_entropy_forward(logits, labels), ref, "loss")
    assert_same(R.softmax_cross_entropy_backward(logits, labels), dz, "loss gradient")


# -- training on the reference path ---------------------------------------------------------------
F64 = np.float64
SWITCH_CASES = {
    # name: (make(rng) -> layer, input shape, integer inputs: ties in the pools)
    "conv im2col, stride, padding": (
        lambda rng: Conv2d(3, 4, (3, 2), (2, 1), 1, rng=rng, dtype=F64),
        (2, 3, 9, 7),
        False,
    ),
    "conv rows, same": (
        lambda rng: Conv2d(32, 3, 3, padding="same", rng=rng, dtype=F64),
        (2, 32, 6, 5),
        False,
    ),
    "max-pool flat 2x2/1": (lambda rng: MaxPool2d(2, 1), (2, 3, 7, 6), True),
    "max-pool 2x2/2": (lambda rng: MaxPool2d(2), (2, 3, 8, 7), True),
    "max-pool 3x2/(2,1)": (lambda rng: MaxPool2d((3, 2), (2, 1)), (2, 3, 9, 7), True),
    "avg-pool": (lambda rng: AvgPool2d(3, 2, 1), (2, 3, 7, 6), False),
    "global avg-pool": (lambda rng: GlobalAvgPool2d(), (2, 3, 7, 6), False),
    "linear": (lambda rng: Linear(7, 5, rng=rng, dtype=F64), (4, 7), False),
    "relu": (lambda rng: ReLU(), (2, 3, 4, 5), True),
    "leaky relu": (lambda rng: LeakyReLU(0.1), (2, 3, 4, 5), True),
    "batch norm 2d": (lambda rng: BatchNorm2d(3, dtype=F64), (3, 3, 4, 5), False),
    "batch norm 1d": (lambda rng: BatchNorm1d(5, dtype=F64), (6, 5), False),
    "dropout": (lambda rng: Dropout(0.3, rng=rng), (4, 6), False),
    "flatten": (lambda rng: Flatten(), (2, 3, 4, 5), False),
}


def _twins(make):
    """The same layer twice (same seed, parameters made non-trivial), the second on the
    reference kernels."""
    fast, ref = make(np.random.default_rng(60)), make(np.random.default_rng(60))
    for name, value in fast.params.items():
        value[...] = normal(value.shape, 61) * 0.5 + (1 if name == "weight" else 0)
        ref.params[name][...] = value
    ref.kernels = "reference"
    assert (fast.kernels, ref.kernels) == ("fast", "reference")
    return fast, ref


@pytest.mark.parametrize(
    "case,relu",
    [(case, False) for case in SWITCH_CASES]
    + [(case, True) for case in SWITCH_CASES if case.startswith("max-pool")],
)  # ReLU fused in
def test_each_layer_on_the_reference_kernels_gives_the_fast_numbers(case, relu):
    make, shape, ties = SWITCH_CASES[case]
    fast, ref = _twins(make)
    rng = np.random.default_rng(62)
    x = rng.integers(-2, 3, shape) * 1.0 if ties else rng.standard_normal(shape)
    kwargs = {"relu": True} if relu else {}
    for step in range(2):  # twice: running statistics and dropout masks move on alike
        out = ref.forward(x, **kwargs)
        assert_same(out, fast.forward(x, **kwargs), f"{case} output, step {step}")
        dout = normal(out.shape, 63 + step)
        assert_same(ref.backward(dout), fast.backward(dout), f"{case} dx, step {step}")
        for name in fast.grads:
            assert_same(ref.grads[name], fast.grads[name], f"{case} d{name}, step {step}")
        for name in fast.buffers:
            assert_same(ref.buffers[name], fast.buffers[name], f"{case} {name}, step {step}")
    assert_same(
        ref.forward(x, training=False, **kwargs),
        fast.forward(x, training=False, **kwargs),
        f"{case} evaluation output",
    )
    ref.forward(x, **kwargs)
    assert ref.backward(normal(out.shape, 65), need_input_grad=False) is None


def _every_layer_model(kernels=None):
    rng = np.random.default_rng(66)
    return Sequential(
        Conv2d(1, 3, 3, padding=1, rng=rng, dtype=F64),
        BatchNorm2d(3, dtype=F64),
        LeakyReLU(0.1),
        AvgPool2d(2),
        Conv2d(3, 4, (2, 3), stride=(1, 2), rng=rng, dtype=F64),
        ReLU(),
        MaxPool2d(2, 1),
        Dropout(0.3, rng=rng),
        Conv2d(4, 4, 1, rng=rng, dtype=F64),
        ReLU(),
        GlobalAvgPool2d(),
        Linear(4, 5, rng=rng, dtype=F64),
        BatchNorm1d(5, dtype=F64),
        ReLU(),
        Flatten(),
        Linear(5, 3, rng=rng, dtype=F64),
        input_shape=(1, 9, 12),
        kernels=kernels,
    )


def test_the_reference_path_runs_no_fast_kernel(monkeypatch):
    """With every fast kernel (and stablecnn's threads) made to raise, a model of every layer
    type still trains and evaluates on the reference kernels, to the fast model's numbers."""
    from stablecnn.kernels import parallel
    from stablecnn.nn.layers import avgpool, conv, norm, pool

    x = normal((4, 1, 9, 12), 67)
    fast, ref = _every_layer_model(), _every_layer_model(kernels="reference")
    want = [fast.forward(x), fast.backward(normal((4, 3), 68)), fast.forward(x, training=False)]

    def boom(*args, **kwargs):
        raise AssertionError("a fast kernel ran on the reference path")

    for module, names in (
        (conv, ["conv2d_forward", "conv2d_backward"]),
        (
            pool,
            [
                "maxpool2d_forward",
                "maxpool2x2_forward",
                "maxpool2x2_flat_forward",
                "maxpool2d_backward",
                "maxpool2x2_backward",
                "maxpool2x2_flat_backward",
            ],
        ),
        (avgpool, ["avgpool2d_forward", "avgpool2d_backward"]),
        (norm, ["batchnorm_forward", "batchnorm_backward"]),
        (parallel, ["split", "matmul", "run", "for_each_span"]),
    ):
        for name in names:
            monkeypatch.setattr(module, name, boom)
    with pytest.raises(AssertionError, match="a fast kernel ran"):
        _every_layer_model().forward(x)  # the trap works
    got = [ref.forward(x), ref.backward(normal((4, 3), 68)), ref.forward(x, training=False)]
    for g, w, what in zip(got, want, ("training output", "dx", "evaluation output")):
        assert_same(g, w, what)
    for (name, _, g), (_, _, w) in zip(ref.parameters(), fast.parameters()):
        if name in ("0.bias", "11.bias"):  # a bias before a BatchNorm: its gradient is 0
            assert np.max(np.abs(g)) < 1e-14 and np.max(np.abs(w)) < 1e-14, name
        else:
            assert_same(g, w, f"d{name}")


def test_model_1_trains_on_the_reference_kernels_to_the_fast_numbers():
    """Model 1, float64, two Adagrad steps on a batch of 8: the same losses, gradients and
    weights on either kernels (to 1e-10 of each array's largest value)."""
    x = np.random.default_rng(69).random((8, 1, 28, 28))
    y = np.random.default_rng(70).integers(0, 10, 8)
    runs = {}
    for kernels in ("fast", "reference"):
        model = zoo.build("md1", seed=0, dtype=np.float64)
        model.kernels = kernels
        assert model.kernels == kernels
        opt, loss, losses = Adagrad(model.parameters(), lr=0.01), SoftmaxCrossEntropy(), []
        for _ in range(2):
            losses.append(loss.forward(model.forward(x), y))
            model.backward(loss.backward(), need_input_grad=False)
            opt.step()
        grads = {name: g.copy() for name, _, g in model.parameters()}
        runs[kernels] = losses, grads, model.state_dict()
    assert relu_pool_pairs(model.layers) == frozenset()  # the reference model runs every layer
    (fast_losses, fast_grads, fast_state), (ref_losses, ref_grads, ref_state) = runs.values()
    np.testing.assert_allclose(ref_losses, fast_losses, rtol=1e-12)
    for name in fast_grads:
        assert_same(ref_grads[name], fast_grads[name], f"d{name}", rtol=1e-10)
    for name in fast_state:
        assert_same(ref_state[name], fast_state[name], name, rtol=1e-10)


def test_the_switch_takes_only_fast_or_reference():
    model = _every_layer_model()
    assert model.kernels == "fast" and relu_pool_pairs(model.layers) == {5}
    model.kernels = "reference"
    assert all(layer.kernels == "reference" for layer in model.layers)
    assert relu_pool_pairs(model.layers) == frozenset()
    model.layers[0].kernels = "fast"
    assert model.kernels == "mixed"
    with pytest.raises(ValueError, match="kernels must be 'fast' or 'reference', got 'slow'"):
        model.kernels = "slow"
    with pytest.raises(ValueError, match="got 'Reference'"):
        Sequential(ReLU(), kernels="Reference")
    assert [layer.kernels for layer in model.layers[:2]] == ["fast", "reference"]
    layers = [ReLU(), MaxPool2d(2)]
    layers[1].kernels = "reference"
    assert Sequential(*layers).kernels == "mixed"  # kernels=None leaves the layers as they are
