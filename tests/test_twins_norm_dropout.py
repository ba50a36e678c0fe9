"""PyTorch twins of BatchNorm1d/2d and Dropout, in float32 and float64.

Method and tolerances: :mod:`support.twins`. BatchNorm also compares the running statistics after
several training calls and the evaluation output. Dropout cannot share masks (the generators
differ), so its twin checks what must agree: p = 0 and evaluation are the identity, kept values
are scaled by ``1 / (1 - p)`` exactly as PyTorch scales them, the kept fraction is 1 - p within
sampling error, and the gradient uses the forward's mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.twins import (
    DTYPE_IDS,
    DTYPES,
    RTOL,
    F,
    assert_close,
    assert_dtype,
    ids,
    normal,
    tensor,
    to_numpy,
    torch_layer,
)

from stablecnn import BatchNorm1d, BatchNorm2d, Dropout, ReLU
from stablecnn.nn.layers.norm import BNReLU2d

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- BatchNorm ----------------------------------------------------------------------------------
# (id, class, input shape)
BN_CASES = [
    ("2d-nonsquare", BatchNorm2d, (4, 3, 7, 5)),
    ("2d-batch1", BatchNorm2d, (1, 2, 6, 3)),
    ("2d-1x1-maps", BatchNorm2d, (5, 4, 1, 1)),
    ("2d-wide", BatchNorm2d, (8, 16, 9, 11)),
    ("1d-features", BatchNorm1d, (6, 5)),
    ("1d-batch2", BatchNorm1d, (2, 3)),
    ("1d-sequences", BatchNorm1d, (3, 4, 7)),
]


def _twins(cls, c, dtype, momentum=0.1, eps=1e-5):
    ours = cls(c, eps=eps, momentum=momentum, dtype=dtype)
    ours.params["weight"][...] = np.random.default_rng(5).uniform(0.5, 1.5, c)
    ours.params["bias"][...] = normal(c, dtype, seed=6)
    return ours, torch_layer(ours)


def _dx_slack(x, dout, gamma, eps):
    """Room for rounding in ``dx = gamma / std * (g - mean g - x_hat mean(g x_hat))``: the size of
    the terms, not of their difference, sets the rounding error (with N = 2, x_hat = +-1 and the
    terms cancel to ~0, so only this slack makes a float32 comparison meaningful)."""
    rtol = RTOL[np.dtype(dout.dtype)]
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x, g = x.astype(np.float64), dout.astype(np.float64)
    inv_std = 1 / np.sqrt(x.var(axes, keepdims=True) + eps)
    x_hat = (x - x.mean(axes, keepdims=True)) * inv_std
    terms = (
        np.abs(g)
        + np.abs(g.mean(axes, keepdims=True))
        + np.abs(x_hat) * np.abs((g * x_hat).mean(axes, keepdims=True))
    )
    return rtol * np.abs(gamma.astype(np.float64)).reshape(shape) * inv_std * terms


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", BN_CASES, ids=ids(BN_CASES))
def test_batchnorm_matches_torch(case, dtype):
    _, cls, shape = case
    ours, ref = _twins(cls, shape[1], dtype)
    assert repr(ref).startswith(repr(ours)[:-1] + ","), (
        repr(ours),
        repr(ref),
    )  # ours omits the flags

    # three training calls on shifted, scaled data: outputs, all gradients, running statistics
    for step in range(3):
        x = normal(shape, dtype, seed=10 + step, scale=step + 1.0) + dtype(step)
        out = ours.forward(x)
        dout = normal(shape, dtype, seed=20 + step)
        dx = ours.backward(dout)
        ref.zero_grad()
        xt = tensor(x, True)
        ref_out = ref(xt)
        ref_out.backward(tensor(dout))
        tag = f"{cls.__name__} step {step}"
        for a, what in (
            (out, "output"),
            (dx, "dx"),
            (ours.grads["weight"], "dweight"),
            (ours.grads["bias"], "dbias"),
        ):
            assert_dtype(a, dtype, f"{tag} {what}")
        assert_close(out, ref_out, f"{tag} output")
        assert_close(
            dx, xt.grad, f"{tag} dx", slack=_dx_slack(x, dout, ours.params["weight"], ours.eps)
        )
        assert_close(ours.grads["weight"], ref.weight.grad, f"{tag} dweight")
        assert_close(ours.grads["bias"], ref.bias.grad, f"{tag} dbias")
        assert_close(ours.buffers["running_mean"], ref.running_mean, f"{tag} running_mean")
        assert_close(ours.buffers["running_var"], ref.running_var, f"{tag} running_var")
        assert int(ours.buffers["num_batches_tracked"]) == int(ref.num_batches_tracked)

    # evaluation: the running statistics, any batch size (here one example too)
    ref.eval()
    for n in (shape[0], 1):
        x = normal((n, *shape[1:]), dtype, seed=30 + n, scale=2.0)
        with torch.no_grad():
            assert_close(
                ours.forward(x, training=False), ref(tensor(x)), f"{cls.__name__} eval (N={n})"
            )


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_batchnorm_other_momentum_and_eps_match_torch(dtype):
    ours, ref = _twins(BatchNorm2d, 3, dtype, momentum=0.3, eps=1e-2)
    for step in range(2):
        x = normal((2, 3, 4, 6), dtype, seed=40 + step, scale=0.2)  # small variance: eps matters
        assert_close(ours.forward(x), ref(tensor(x)), f"step {step} output")
    assert_close(ours.buffers["running_var"], ref.running_var, "running_var")
    ref.eval()
    with torch.no_grad():
        assert_close(ours.forward(x, training=False), ref(tensor(x)), "eval output")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_fused_bnrelu2d_on_the_convolutions_layout_matches_torch(dtype):
    """BNReLU2d (a BatchNorm2d and its ReLU as one step) on an NCHW view of a (C, H, W, N)
    buffer, as the convolutions hand it over, against torch's BatchNorm2d then ReLU: output, dx,
    both parameter gradients and the running statistics, in training and evaluation."""
    ours, ref = _twins(BatchNorm2d, 6, dtype)
    ours.params["weight"][:3] *= -1  # negative scales: the ReLU masks both ways
    with torch.no_grad():
        ref.weight.copy_(tensor(ours.params["weight"]))
    step = BNReLU2d(ours, ReLU())
    for k in range(2):
        x = normal((6, 9, 7, 5), dtype, seed=50 + k, scale=2.0).transpose(3, 0, 1, 2)
        x = x + dtype(k)  # (5, 6, 9, 7), still the (C, H, W, N) layout
        dout = normal(x.shape, dtype, seed=60 + k)
        out = step.forward(x)
        dx = step.backward(dout)
        xt = tensor(np.ascontiguousarray(x), True)
        ref.zero_grad()
        ref_out = torch.relu(ref(xt))
        ref_out.backward(tensor(dout))
        tag = f"BNReLU2d step {k}"
        assert_dtype(out, dtype, f"{tag} output")
        assert_dtype(dx, dtype, f"{tag} dx")
        assert_close(out, ref_out, f"{tag} output")
        masked = dout * (out > 0)
        slack = _dx_slack(x, masked, ours.params["weight"], ours.eps)
        assert_close(dx, xt.grad, f"{tag} dx", slack=slack)
        assert_close(ours.grads["weight"], ref.weight.grad, f"{tag} dweight")
        assert_close(ours.grads["bias"], ref.bias.grad, f"{tag} dbias")
        assert_close(ours.buffers["running_var"], ref.running_var, f"{tag} running_var")
    ref.eval()
    with torch.no_grad():
        assert_close(step.forward(x, training=False), torch.relu(ref(tensor(x))), "eval output")


def test_batchnorm1d_refuses_a_batch_of_one_in_training_like_torch():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm1d(3)(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm1d(3).forward(np.zeros((1, 3), np.float32))


# -- Dropout ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dropout_with_p0_and_at_evaluation_is_the_identity_like_torch(dtype):
    x = normal((3, 4, 5, 2), dtype, seed=7)
    dout = normal(x.shape, dtype, seed=8)
    for p, training in ((0.0, True), (0.5, False)):
        layer = Dropout(p, rng=np.random.default_rng(0))
        out = layer.forward(x, training=training)
        xt = tensor(x, True)
        ref = F.dropout(xt, p, training=training)
        assert_close(out, ref, f"dropout p={p} training={training} output")
        if training:
            ref.backward(tensor(dout))
            assert_close(layer.backward(dout), xt.grad, f"dropout p={p} dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8], ids=str)
def test_dropout_scaling_and_mask_statistics_match_torch(p, dtype):
    shape = (64, 8, 12, 10)  # 61,440 units
    x = np.random.default_rng(9).uniform(0.5, 2.0, shape).astype(dtype)  # no zeros to confuse
    dout = normal(shape, dtype, seed=10)
    layer = Dropout(p, rng=np.random.default_rng(1))
    out = layer.forward(x)
    dx = layer.backward(dout)
    torch.manual_seed(0)
    xt = tensor(x, True)
    ref = F.dropout(xt, p, training=True)
    ref.backward(tensor(dout))

    sigma = np.sqrt(p * (1 - p) / x.size)
    for name, result, grad in (("ours", out, dx), ("torch", to_numpy(ref), to_numpy(xt.grad))):
        kept = result != 0
        assert abs(kept.mean() - (1 - p)) < 5 * sigma, f"{name}: kept {kept.mean():.4f}, p={p}"
        # the gradient flows through exactly the kept units, with the same scale
        np.testing.assert_array_equal(grad != 0, kept, err_msg=f"{name}: gradient mask")
        assert_close(grad[kept], dout[kept] * (result[kept] / x[kept]), f"{name} dx scale")
    # kept values: x / (1 - p), scaled as PyTorch scales them
    ours_scale = out[out != 0] / x[out != 0]
    ref_scale = to_numpy(ref)[to_numpy(ref) != 0] / x[to_numpy(ref) != 0]
    assert_close(ours_scale, np.full_like(ours_scale, 1 / (1 - p)), "our scale vs 1/(1-p)")
    assert_close(
        ours_scale[: ref_scale.size].mean(keepdims=True),
        ref_scale.mean(keepdims=True),
        "our scale vs torch's",
    )
    assert_dtype(out, dtype, "dropout output")
    assert_dtype(dx, dtype, "dropout dx")
