"""PyTorch twins of the loss and of Model 1: softmax cross-entropy (extreme logits included, and
with label smoothing 0, 0.1, 0.5 and 1),
Model 1's forward, loss and every gradient, and three Adagrad steps, in float32 and float64.

Method and tolerances: :mod:`support.twins`. Model 1's twin is :func:`support.twins.torch_twin`,
the network ``benchmarks/bench.py`` times PyTorch on; its layers are checked here against
Model 1 written out in PyTorch by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.twins import (
    DTYPE_IDS,
    DTYPES,
    RTOL,
    TORCH_DTYPE,
    F,
    assert_close,
    assert_dtype,
    tensor,
    to_numpy,
    torch_twin,
)

from stablecnn import Adagrad, SoftmaxCrossEntropy, zoo

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the loss -----------------------------------------------------------------------------------
def loss_cases(dtype):
    rng = np.random.default_rng(0)
    big = 1e4
    extreme = np.array([[big, -big, 0.0], [-big, big, -big], [big, big, -big], [-big, -big, -big]])
    return {
        "random": (rng.standard_normal((5, 10)), rng.integers(0, 10, 5)),
        "batch1": (rng.standard_normal((1, 4)) * 3, np.array([2])),
        # label on the smallest logit: a loss of 2e4; on the largest: a loss of exactly 0
        "extreme-1e4": (extreme, np.array([1, 1, 2, 0])),
        "extreme-1e4-right": (extreme, np.array([0, 1, 0, 2])),
        "wide-random": (rng.uniform(-1e4, 1e4, (6, 10)), rng.integers(0, 10, 6)),
    }


LOSS_IDS = ["random", "batch1", "extreme-1e4", "extreme-1e4-right", "wide-random"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", LOSS_IDS)
def test_softmax_cross_entropy_matches_torch(name, dtype):
    logits, labels = loss_cases(dtype)[name]
    logits = logits.astype(dtype)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, labels)
    grad = loss.backward()

    lt = tensor(logits, True)
    ref = F.cross_entropy(lt, torch.from_numpy(labels.astype(np.int64)))
    ref.backward()

    assert np.isfinite(value), f"loss ({name}) is {value}"
    assert np.all(np.isfinite(grad)), f"loss gradient ({name}) is not finite: {grad}"
    assert_dtype(value, dtype, "loss value")
    assert_dtype(grad, dtype, "loss gradient")
    assert_close(np.asarray(value), ref, f"loss value ({name})")
    assert_close(grad, lt.grad, f"loss gradient ({name})")


SMOOTHING = [0.0, 0.1, 0.5, 1.0]


def smoothing_cases(dtype):
    """Moderate logits, and spreads at the edge of each dtype: 1e4 in float32 (the naive formula
    overflows past ~89), 1e30 in float64 (past ~710)."""
    rng = np.random.default_rng(1)
    big = 1e4 if dtype == np.float32 else 1e30
    extreme = np.array([[big, -big, 0.0], [-big, big, -big], [big, big, -big], [-big, -big, -big]])
    return {
        "random": (rng.standard_normal((6, 10)) * 3, rng.integers(0, 10, 6)),
        "extreme": (extreme, np.array([1, 1, 2, 0])),
        "extreme-right": (extreme, np.array([0, 1, 0, 2])),
        "wide-random": (rng.uniform(-big, big, (5, 7)), rng.integers(0, 7, 5)),
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("eps", SMOOTHING)
@pytest.mark.parametrize("name", ["random", "extreme", "extreme-right", "wide-random"])
def test_label_smoothing_matches_torch(name, eps, dtype):
    logits, labels = smoothing_cases(dtype)[name]
    logits = logits.astype(dtype)
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    value = loss.forward(logits, labels)
    grad = loss.backward()

    lt = tensor(logits, True)
    ref = F.cross_entropy(lt, torch.from_numpy(labels.astype(np.int64)), label_smoothing=eps)
    ref.backward()

    what = f"({name}, label_smoothing={eps})"
    assert np.isfinite(value) and np.isfinite(ref.item()), f"loss {what}: {value}, {ref.item()}"
    assert np.all(np.isfinite(grad)), f"loss gradient {what} is not finite: {grad}"
    assert_dtype(value, dtype, "loss value")
    assert_dtype(grad, dtype, "loss gradient")
    assert_close(np.asarray(value), ref, f"loss value {what}")
    assert_close(grad, lt.grad, f"loss gradient {what}")
    if name.startswith("extreme"):  # the value itself, from the log-probabilities written out
        b, l2, l3 = float(logits[0, 0]), np.log(2.0), np.log(3.0)
        logp = np.array(
            [[0, -2 * b, -b], [-2 * b, 0, -2 * b], [-l2, -l2, -2 * b - l2], [-l3, -l3, -l3]]
        )
        picked = logp[np.arange(4), labels]
        expected = -np.mean((1 - eps) * picked + eps * logp.mean(axis=1))
        assert float(value) == pytest.approx(expected, rel=RTOL[np.dtype(dtype)]), what


# -- Model 1 end to end -------------------------------------------------------------------------
def _arguments(module) -> tuple:
    """A PyTorch module's type and constructor arguments, sizes as pairs (``2`` is ``(2, 2)``)."""
    pair = torch.nn.modules.utils._pair
    sizes = ("kernel_size", "stride", "padding", "dilation")
    other = ("in_channels", "out_channels", "in_features", "out_features", "ceil_mode")
    args = {k: pair(getattr(module, k)) for k in sizes if hasattr(module, k)}
    args.update({k: getattr(module, k) for k in other if hasattr(module, k)})
    return type(module).__name__, sorted(args.items())


def torch_md1(model):
    """The PyTorch twin of ``zoo.build("md1")`` holding copies of ``model``'s parameters:
    :func:`~support.twins.torch_twin`, after checking it is Model 1 as PyTorch users write it."""
    by_hand = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 10),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2, stride=1),
        torch.nn.Conv2d(32, 16, 5),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2, stride=1),
        torch.nn.Flatten(),
        torch.nn.Linear(13 * 13 * 16, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 10),
    )
    net = torch_twin(model)
    assert [_arguments(m) for m in net] == [_arguments(m) for m in by_hand], (
        f"Model 1's twin:\n{net}\nby hand:\n{by_hand}"
    )
    for name, p in net.named_parameters():
        assert p.dtype == TORCH_DTYPE[model.dtype], (name, p.dtype)
        np.testing.assert_array_equal(to_numpy(p), model.state_dict()[name], err_msg=name)
    return net


def md1_batch(n, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)).astype(dtype), rng.integers(0, 10, n)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_md1_forward_loss_and_gradients_match_torch(dtype):
    model = zoo.build("md1", seed=0, dtype=dtype)
    net = torch_md1(model)
    x, y = md1_batch(3, dtype, seed=1)
    loss = SoftmaxCrossEntropy()

    logits = model.forward(x)
    value = loss.forward(logits, y)
    dx = model.backward(loss.backward())

    xt = tensor(x, True)
    ref_logits = net(xt)
    ref_loss = F.cross_entropy(ref_logits, torch.from_numpy(y.astype(np.int64)))
    ref_loss.backward()

    assert_dtype(logits, dtype, "md1 logits")
    assert_close(logits, ref_logits, "md1 logits")
    assert_close(np.asarray(value), ref_loss, "md1 loss")
    assert_close(dx, xt.grad, "md1 dx")
    grads = {name: g.copy() for name, _, g in model.parameters()}
    for name, p in net.named_parameters():
        assert_dtype(grads[name], dtype, f"md1 grad {name}")
        assert_close(grads[name], p.grad, f"md1 grad {name}")

    # Training skips the first layer's input gradient; the parameter gradients must not change.
    loss.forward(model.forward(x), y)
    assert model.backward(loss.backward(), need_input_grad=False) is None
    for name, _, g in model.parameters():
        np.testing.assert_array_equal(g, grads[name], err_msg=f"md1 grad {name} without dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_md1_three_adagrad_steps_match_torch(dtype):
    """Three training steps, compared parameter by parameter after each one.

    The twin applies our rule by hand (``G += g*g; p -= lr * g / sqrt(G + eps)``, eps inside the
    square root), not ``torch.optim.Adagrad``, which adds eps outside it.

    Why parameters get a per-entry slack: the update ``lr * g / sqrt(G_prev + g*g + eps)`` has
    slope ``lr * (G_prev + eps) / (G + eps)**1.5 <= lr / sqrt(G + eps)`` in ``g``, up to
    ``lr / sqrt(eps) = 10`` where the accumulated G is still ~0. So a gradient entry that is right
    to the gradient tolerance (``rtol * max|g|``, checked below at every step) may move its
    parameter 10 times as far. In float32 that is real: a conv2 gradient of -1.3864e-4 (torch:
    -1.3904e-4, a 1e-7 relative difference against max|g| = 4.4) moves the weight by 4e-6,
    above rtol * max|p| = 2e-6. The slack is that bound, summed over the steps, times 2 for the
    second-order effect through G; it is large only where G is tiny, so a wrong rule (eps outside
    the root, a missing square, lr applied twice) still fails by orders of magnitude.
    """
    lr, eps = 0.01, 1e-6
    rtol = RTOL[np.dtype(dtype)]
    model = zoo.build("md1", seed=0, dtype=dtype)
    net = torch_md1(model)
    opt = Adagrad(model.parameters(), lr=lr, eps=eps)
    loss = SoftmaxCrossEntropy()
    tparams = dict(net.named_parameters())
    sum_sq = {name: torch.zeros_like(p) for name, p in tparams.items()}
    slack = {name: np.zeros(p.shape) for name, p in tparams.items()}

    for step in range(1, 4):
        x, y = md1_batch(4, dtype, seed=10 + step)
        value = loss.forward(model.forward(x), y)
        model.backward(loss.backward(), need_input_grad=False)
        grads = {name: g.copy() for name, _, g in model.parameters()}
        opt.step()

        net.zero_grad()
        ref_loss = F.cross_entropy(net(tensor(x)), torch.from_numpy(y.astype(np.int64)))
        ref_loss.backward()
        with torch.no_grad():
            for name, p in tparams.items():
                sum_sq[name] += p.grad * p.grad
                p -= lr * p.grad / torch.sqrt(sum_sq[name] + eps)
                g_tol = rtol * float(p.grad.abs().max())
                slack[name] += (
                    2 * lr / np.sqrt(to_numpy(sum_sq[name]).astype(np.float64) + eps) * g_tol
                )

        assert_close(np.asarray(value), ref_loss, f"step {step} loss")
        for name, p in tparams.items():
            assert_close(grads[name], p.grad, f"step {step} gradient {name}")
            assert_close(opt.state[name]["sum_sq"], sum_sq[name], f"step {step} Adagrad G[{name}]")
            assert_dtype(model.state_dict()[name], dtype, f"step {step} parameter {name}")
            assert_close(
                model.state_dict()[name], p, f"step {step} parameter {name}", slack=slack[name]
            )
