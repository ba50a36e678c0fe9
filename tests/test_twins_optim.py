"""Reference twins for the optimizers, gradient clipping and schedules against PyTorch.

Each optimizer twin isolates the update rule: our model computes the gradients, the same
gradients are copied into the ``.grad`` of PyTorch parameters that started as copies of ours, and
both optimizers step. After every one of 6 steps the parameters and every state slot (momentum
buffers, moments, square averages, step count) must agree to ``assert_close``'s tolerance
(:mod:`support.twins`: ``rtol`` 1e-5 in float32, 1e-10 in float64, relative to the array's largest
entry). Both sides see identical gradients, so the only differences are rounding inside the rules
(torch's fused ``addcmul``/``lerp`` against our separate multiplies), a few float32 epsilons per
step; a wrong rule (missing bias correction, decay applied to the wrong term, a buffer started at
0 instead of the first gradient) is off by orders of magnitude more.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support.twins import DTYPES, assert_close, assert_dtype, tensor

from stablecnn import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    RMSprop,
    Sequential,
    SoftmaxCrossEntropy,
    clip_grad_norm,
)
from stablecnn.optim.schedules import ConstantLR, CosineLR, StepLR, WarmupLR

STEPS = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_model(dtype):
    rng = np.random.default_rng(0)
    return Sequential(
        Conv2d(2, 4, (3, 2), padding=1, rng=rng, dtype=dtype),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(4 * 3 * 4, 5, rng=rng, dtype=dtype),
        ReLU(),
        Linear(5, 3, rng=rng, dtype=dtype),
    )


def our_gradients(model, step):
    """Run our forward and backward on batch ``step``; the model's grads now hold the gradient."""
    rng = np.random.default_rng(50 + step)
    x, y = rng.standard_normal((6, 2, 7, 8)).astype(model.dtype), rng.integers(0, 3, 6)
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x), y)
    model.backward(loss.backward(), need_input_grad=False)


def torch_twins(model):
    """Torch parameters that start as copies of ours, by our names."""
    return {name: torch.nn.Parameter(tensor(p)) for name, p, _ in model.parameters()}


# (id, ours, torch's, kwargs): both take the same keyword arguments
CASES = [
    ("sgd", SGD, torch.optim.SGD, dict(lr=0.1)),
    ("sgd-momentum", SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    (
        "sgd-momentum-dampening-wd",
        SGD,
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.01),
    ),
    (
        "sgd-nesterov-wd",
        SGD,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    ),
    ("adam", Adam, torch.optim.Adam, dict(lr=1e-2)),
    (
        "adam-betas-eps-wd",
        Adam,
        torch.optim.Adam,
        dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.05),
    ),
    ("adamw", AdamW, torch.optim.AdamW, dict(lr=1e-2)),
    ("adamw-wd", AdamW, torch.optim.AdamW, dict(lr=1e-2, betas=(0.85, 0.99), weight_decay=0.3)),
    ("rmsprop", RMSprop, torch.optim.RMSprop, dict(lr=1e-2)),
    (
        "rmsprop-momentum-wd",
        RMSprop,
        torch.optim.RMSprop,
        dict(lr=1e-3, momentum=0.9, weight_decay=0.01),
    ),
    ("rmsprop-centered", RMSprop, torch.optim.RMSprop, dict(lr=1e-3, alpha=0.9, centered=True)),
    (
        "rmsprop-centered-momentum-wd",
        RMSprop,
        torch.optim.RMSprop,
        dict(lr=1e-3, alpha=0.95, eps=1e-6, momentum=0.5, centered=True, weight_decay=0.02),
    ),
]
SCHEDULES = {"constant-lr": None, "warmup-then-step-lr": WarmupLR(StepLR(2, 0.5), warmup_steps=2)}


@pytest.mark.parametrize("schedule", list(SCHEDULES), ids=list(SCHEDULES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,ours_cls,torch_cls,kwargs", CASES, ids=[c[0] for c in CASES])
def test_optimizer_matches_torch_over_several_steps(
    case, ours_cls, torch_cls, kwargs, dtype, schedule
):
    schedule = SCHEDULES[schedule]
    model = small_model(dtype)
    twins = torch_twins(model)
    opt = ours_cls(model.parameters(), **kwargs)
    ref = torch_cls(list(twins.values()), foreach=False, **kwargs)
    for step in range(STEPS):
        if schedule is not None:  # the rate changes between steps on both sides
            lr = schedule.apply(opt, kwargs["lr"])
            for group in ref.param_groups:
                group["lr"] = lr
        our_gradients(model, step)
        for name, _, g in model.parameters():
            twins[name].grad = tensor(g)
        opt.step()
        ref.step()
        for name, p, _ in model.parameters():
            what = f"{case} step {step + 1} {name}"
            assert_dtype(p, dtype, what)
            assert_close(p, twins[name], what)
            torch_state = ref.state[twins[name]]
            for slot, value in opt.state[name].items():
                assert_dtype(value, dtype, f"{what} {slot}")
                assert_close(value, torch_state[slot], f"{what} {slot}")
            if "step" in torch_state:
                assert opt.steps == int(torch_state["step"])
    assert set(opt.state[name]) == set(torch_state) - {"step"}, "the same state slots as torch"


@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad_with_weight_decay_matches_torch_rule(dtype):
    """Adagrad's L2 term as ``torch.optim.Adagrad`` adds it (``grad.add(param, alpha=wd)``).

    The reference is written in torch ops rather than ``torch.optim.Adagrad`` because our
    epsilon sits inside the square root (the original Model 1 rule; see
    ``test_twins_loss_model.py``).
    """
    lr, eps, wd = 0.05, 1e-6, 0.1
    model = small_model(dtype)
    twins = torch_twins(model)
    sums = {name: torch.zeros_like(p) for name, p in twins.items()}
    opt = Adagrad(model.parameters(), lr=lr, eps=eps, weight_decay=wd)
    for step in range(STEPS):
        our_gradients(model, step)
        opt.step()
        with torch.no_grad():
            for name, _, g in model.parameters():
                p = twins[name]
                d = tensor(g).add(p, alpha=wd)
                sums[name].addcmul_(d, d)
                p.sub_(lr * d / torch.sqrt(sums[name] + eps))
        for name, p, _ in model.parameters():
            assert_close(opt.state[name]["sum_sq"], sums[name], f"step {step + 1} {name} sum_sq")
            assert_close(p, twins[name], f"step {step + 1} {name}")


# -- clipping -----------------------------------------------------------------------------------
def grads_like(dtype, scale, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (scale * rng.standard_normal(shape)).astype(dtype)
        for shape in ((4, 2, 3, 2), (4,), (5, 64), (5,))
    ]


def torch_clip(grads, max_norm, dtype=None):
    params = []
    for g in grads:
        g = tensor(g.astype(dtype) if dtype else g)
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g
        params.append(p)
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
    return float(norm), [p.grad for p in params]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor", [0.3, 0.999, 3.0], ids=["clipped", "just-clipped", "untouched"])
def test_clip_grad_norm_matches_torch(dtype, factor):
    ours = grads_like(dtype, 0.7)
    true_norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in ours))
    max_norm = factor * true_norm
    ref_norm, ref_grads = torch_clip(ours, max_norm)
    norm = clip_grad_norm([(f"g{i}", None, g) for i, g in enumerate(ours)], max_norm)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    assert norm == pytest.approx(ref_norm, rel=rtol)
    for i, (g, r) in enumerate(zip(ours, ref_grads)):
        assert_close(g, r, f"clipped gradient {i}")


@pytest.mark.parametrize("scale", [1e25, 1e-25])
def test_clip_grad_norm_float32_extremes_match_torch_in_float64(scale):
    """A float32 gradient of norm ~1e26 (or ~1e-24): ours matches torch run in float64.

    Intended difference: torch sums float32 squares in float32, so at this size its norm is inf
    and ``clip_grad_norm_`` multiplies every gradient by 0 (max_norm / inf); we accumulate in
    float64 and clip to the right direction.
    """
    ours = grads_like(np.float32, scale, seed=3)
    ref_norm, ref_grads = torch_clip(ours, 1.0, dtype=np.float64)
    norm = clip_grad_norm(ours, 1.0)
    assert math.isfinite(norm) and norm == pytest.approx(ref_norm, rel=1e-6)
    for i, (g, r) in enumerate(zip(ours, ref_grads)):
        assert_dtype(g, np.float32, f"gradient {i}")
        assert_close(g, r.to(torch.float32), f"clipped gradient {i}")
    if scale > 1:
        assert np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in ours)) == pytest.approx(
            1.0, rel=1e-5
        )


# -- schedules ----------------------------------------------------------------------------------
def torch_lrs(make_scheduler, base_lr, steps):
    """The rate torch uses at each of ``steps`` steps (read before ``optimizer.step()``)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def test_step_lr_matches_torch():
    ours = StepLR(3, 0.5)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 0.2, 20)
    np.testing.assert_allclose([ours.lr_at(s, 0.2) for s in range(20)], ref, rtol=1e-14)


def test_cosine_lr_matches_torch_over_its_length():
    """CosineAnnealingLR over steps 0..T; beyond T torch rises again, ours stays at min_lr."""
    ours = CosineLR(total_steps=10, min_lr=0.01)
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01), 0.3, 15
    )
    got = [ours.lr_at(s, 0.3) for s in range(15)]
    np.testing.assert_allclose(got[:11], ref[:11], rtol=1e-12, atol=1e-15)
    assert got[11:] == [0.01] * 4 and ref[11] > 0.01


def test_warmup_matches_torch_linear_then_the_inner_schedule():
    """The ramp is torch's LinearLR(start_factor=1/(W+1), total_iters=W); then the inner schedule
    runs from its own step 0 (here torch's CosineAnnealingLR started at the end of the warm-up)."""
    W, base = 4, 0.1
    ours = WarmupLR(CosineLR(8), warmup_steps=W)
    ramp = torch_lrs(
        lambda o: torch.optim.lr_scheduler.LinearLR(
            o, start_factor=1 / (W + 1), end_factor=1.0, total_iters=W
        ),
        base,
        W + 1,
    )
    after = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8), base, 9)
    got = [ours.lr_at(s, base) for s in range(W + 9)]
    np.testing.assert_allclose(got[: W + 1], ramp, rtol=1e-12)
    np.testing.assert_allclose(got[W:], after, rtol=1e-12, atol=1e-15)
    assert WarmupLR(ConstantLR(), W).lr_at(W, base) == base
