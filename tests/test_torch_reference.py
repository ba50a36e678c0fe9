"""Reference twins: every layer, the loss, Model 1 and Adagrad against PyTorch.

Each test builds our layer, copies its parameters into the PyTorch twin, runs both on the same
input and the same upstream gradient, and compares the output and every gradient (input, weight,
bias). PyTorch computes the gradients with autograd, so this checks our hand-written backward
passes against an independent implementation.

Tolerance: elementwise ``|ours - ref| <= atol + rtol * |ref|`` with ``atol = rtol * max|ref|``,
i.e. each entry must be right to ``rtol`` relative to the array's own magnitude. ``rtol`` is
1e-5 in float32 (about 80 float32 epsilons: room for a different summation order over up to
~3000 products) and 1e-10 in float64. A layout bug (height/width mix-up, wrong tie routing, a
missing bias) makes errors of the order of the values themselves, far above either tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is the reference for these tests; pip install torch==2.13.0"
)
F = torch.nn.functional

from stablecnn import (  # noqa: E402  (after the importorskip on purpose)
    Adagrad,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
    zoo,
)

DTYPES = [np.float32, np.float64]
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- helpers ------------------------------------------------------------------------------------
def to_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def tensor(a: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    """A torch copy of ``a`` with the same dtype (no memory shared, so nobody aliases anybody)."""
    t = torch.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(requires_grad)


def assert_close(ours, ref, what: str, rtol: float | None = None, slack=0.0) -> None:
    """Assert ``ours`` (NumPy) matches ``ref`` (torch or NumPy) in shape, dtype and value.

    Elementwise ``|ours - ref| <= atol + slack + rtol * |ref|`` with ``atol = rtol * max|ref|``;
    ``slack`` (a scalar or an array of ``ref``'s shape, default 0) is extra room a caller derives
    from the conditioning of what it compares. On failure the message names the quantity, the
    shapes and dtypes, how many entries are off, and the worst entry (index, ours, reference).
    """
    ours_np, ref_np = np.asarray(ours), to_numpy(ref)
    head = (
        f"{what}: ours {ours_np.shape} {ours_np.dtype} vs reference {ref_np.shape} {ref_np.dtype}"
    )
    assert ours_np.shape == ref_np.shape, f"{head}: shapes differ"
    assert ours_np.dtype == ref_np.dtype, f"{head}: dtypes differ"
    rtol = RTOL[ref_np.dtype] if rtol is None else rtol
    o, r = ours_np.astype(np.float64), ref_np.astype(np.float64)
    finite = np.isfinite(o) == np.isfinite(r)
    assert finite.all(), (
        f"{head}: non-finite values differ at {int((~finite).sum())} entries, "
        f"first at {tuple(map(int, np.argwhere(~finite)[0]))}"
    )
    scale = float(np.max(np.abs(r), initial=0.0))
    atol = rtol * scale
    err = np.abs(o - r)
    allowed = atol + slack + rtol * np.abs(r)
    bad = err > allowed
    if bad.any():
        worst = np.unravel_index(np.argmax(err - allowed), err.shape) if err.ndim else ()
        raise AssertionError(
            f"{head}: {int(bad.sum())} of {bad.size} entries differ beyond rtol={rtol:g}, "
            f"atol={atol:.3g} (rtol * max|ref|, max|ref| = {scale:.3g}); worst at index "
            f"{tuple(map(int, worst))}: ours={o[worst]:.9g} ref={r[worst]:.9g} "
            f"|diff|={err[worst]:.3g} "
            f"allowed {np.broadcast_to(allowed, err.shape)[worst]:.3g}; "
            f"max |diff| {err.max():.3g}, relative to max|ref| {err.max() / max(scale, 1e-300):.3g}"
        )


def assert_dtype(a, dtype, what: str) -> None:
    assert np.asarray(a).dtype == np.dtype(dtype), (
        f"{what}: dtype {np.asarray(a).dtype}, expected {np.dtype(dtype)}"
    )


def normal(shape, dtype, seed=0, scale=1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def ids(cases):
    return [c[0] for c in cases]


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


def torch_padding(padding):
    if isinstance(padding, (str, int)):
        return padding
    return tuple(padding)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONV_CASES, ids=ids(CONV_CASES))
def test_conv2d_matches_torch(case, dtype):
    _, n, c, h, w, f, kernel, stride, padding = case
    layer = Conv2d(c, f, kernel, stride, padding, rng=np.random.default_rng(1), dtype=dtype)
    layer.params["bias"][...] = normal(f, dtype, seed=2)  # a zero bias would hide a missing add
    x = normal((n, c, h, w), dtype, seed=3)

    out = layer.forward(x)
    dout = normal(out.shape, dtype, seed=4)
    dx = layer.backward(dout)

    xt = tensor(x, True)
    wt = tensor(layer.params["weight"], True)
    bt = tensor(layer.params["bias"], True)
    ref = F.conv2d(xt, wt, bt, stride=stride, padding=torch_padding(padding))
    ref.backward(tensor(dout))

    for a, what in (
        (out, "output"),
        (dx, "dx"),
        (layer.grads["weight"], "dweight"),
        (layer.grads["bias"], "dbias"),
    ):
        assert_dtype(a, dtype, f"conv {what}")
    assert_close(out, ref, "conv output")
    assert_close(dx, xt.grad, "conv dx")
    assert_close(layer.grads["weight"], wt.grad, "conv dweight")
    assert_close(layer.grads["bias"], bt.grad, "conv dbias")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_conv2d_skipping_input_grad_keeps_param_grads(dtype):
    layer = Conv2d(2, 3, (3, 2), (2, 1), 1, rng=np.random.default_rng(0), dtype=dtype)
    x = normal((2, 2, 7, 6), dtype, seed=1)
    dout = normal(layer.forward(x).shape, dtype, seed=2)
    full = layer.backward(dout)
    dw, db = layer.grads["weight"].copy(), layer.grads["bias"].copy()
    layer.forward(x)
    assert layer.backward(dout, need_input_grad=False) is None
    assert full is not None
    np.testing.assert_array_equal(layer.grads["weight"], dw)
    np.testing.assert_array_equal(layer.grads["bias"], db)


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


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
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


# -- Linear, ReLU, Flatten ----------------------------------------------------------------------
LINEAR_CASES = [
    ("batch1", 1, 5, 3),
    ("small", 3, 7, 10),
    ("md1-fc2", 4, 1024, 10),
    ("md1-fc1", 4, 2704, 1024),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", LINEAR_CASES, ids=ids(LINEAR_CASES))
def test_linear_matches_torch(case, dtype):
    _, n, fin, fout = case
    layer = Linear(fin, fout, rng=np.random.default_rng(1), dtype=dtype)
    layer.params["bias"][...] = normal(fout, dtype, seed=2)
    x = normal((n, fin), dtype, seed=3)
    out = layer.forward(x)
    dout = normal(out.shape, dtype, seed=4)
    dx = layer.backward(dout)

    xt = tensor(x, True)
    wt, bt = tensor(layer.params["weight"], True), tensor(layer.params["bias"], True)
    ref = F.linear(xt, wt, bt)
    ref.backward(tensor(dout))

    for a, what in (
        (out, "output"),
        (dx, "dx"),
        (layer.grads["weight"], "dweight"),
        (layer.grads["bias"], "dbias"),
    ):
        assert_dtype(a, dtype, f"linear {what}")
    assert_close(out, ref, "linear output")
    assert_close(dx, xt.grad, "linear dx")
    assert_close(layer.grads["weight"], wt.grad, "linear dweight")
    assert_close(layer.grads["bias"], bt.grad, "linear dbias")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
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


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
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


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
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


# -- Model 1 end to end -------------------------------------------------------------------------
def torch_md1(model: Sequential) -> torch.nn.Sequential:
    """The PyTorch twin of ``zoo.build("md1")`` holding copies of ``model``'s parameters."""
    dtype = TORCH_DTYPE[model.dtype]
    net = torch.nn.Sequential(
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
    ).to(dtype)
    ours = model.state_dict()
    theirs = dict(net.named_parameters())
    assert sorted(ours) == sorted(theirs), (
        f"parameter names differ: {sorted(ours)} vs {sorted(theirs)}"
    )
    with torch.no_grad():
        for name, p in theirs.items():
            assert tuple(p.shape) == ours[name].shape, (
                f"{name}: {tuple(p.shape)} vs {ours[name].shape}"
            )
            p.copy_(torch.from_numpy(ours[name]))
    return net


def md1_batch(n, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)).astype(dtype), rng.integers(0, 10, n)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
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


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
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
