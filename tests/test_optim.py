"""Optimizers, gradient clipping and learning-rate schedules, without PyTorch.

The rules are checked by hand on tiny arrays, the checkpoints by an interrupted run that must end
bit-identical to an uninterrupted one, and every hyperparameter by the error it raises. The
twins against ``torch.optim`` are in ``test_twins_optim.py``.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from stablecnn import (
    OPTIMIZERS,
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
    build_optimizer,
    clip_grad_norm,
)
from stablecnn.optim.schedules import (
    ConstantLR,
    CosineLR,
    StepLR,
    WarmupLR,
    build_schedule,
    from_config,
)

# (id, optimizer, kwargs): every state slot and every branch of every rule
CONFIGS = [
    ("adagrad", Adagrad, dict(lr=0.05)),
    ("adagrad-wd", Adagrad, dict(lr=0.05, weight_decay=0.1)),
    ("sgd", SGD, dict(lr=0.1)),
    (
        "sgd-momentum-dampening-wd",
        SGD,
        dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
    ),
    ("sgd-nesterov", SGD, dict(lr=0.1, momentum=0.8, nesterov=True)),
    ("adam", Adam, dict(lr=0.01)),
    ("adam-wd", Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05)),
    ("adamw", AdamW, dict(lr=0.01)),
    ("rmsprop", RMSprop, dict(lr=0.01)),
    (
        "rmsprop-centered-momentum-wd",
        RMSprop,
        dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.02),
    ),
]


def small_model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2d(1, 3, (3, 2), rng=rng, dtype=dtype),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(3 * 3 * 3, 4, rng=rng, dtype=dtype),
    )


def batch(step, dtype):
    rng = np.random.default_rng(100 + step)
    return rng.standard_normal((5, 1, 8, 7)).astype(dtype), rng.integers(0, 4, 5)


def train(model, opt, steps, start=0, schedule=None, base_lr=None):
    loss = SoftmaxCrossEntropy()
    for step in range(start, start + steps):
        x, y = batch(step, model.dtype)
        loss.forward(model.forward(x), y)
        model.backward(loss.backward(), need_input_grad=False)
        if schedule is not None:
            schedule.apply(opt, base_lr)
        opt.step()


def through_npz(flat):
    """What a checkpoint does to the state: an ``.npz`` round trip, loaded without pickle."""
    buf = io.BytesIO()
    np.savez(buf, **flat)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# -- checkpoints --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case,cls,kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_resuming_from_the_state_dict_is_bit_identical(case, cls, kwargs, dtype):
    schedule = WarmupLR(CosineLR(5), warmup_steps=2)
    whole = small_model(dtype)
    opt = cls(whole.parameters(), **kwargs)
    train(whole, opt, 7, schedule=schedule, base_lr=kwargs["lr"])

    first = small_model(dtype)
    opt1 = cls(first.parameters(), **kwargs)
    train(first, opt1, 3, schedule=schedule, base_lr=kwargs["lr"])
    weights, state = through_npz(first.state_dict()), through_npz(opt1.state_dict())
    assert set(state) == {
        f"{n}.{k}" for n, _, _ in first.parameters() for k in opt1._state_keys()
    } | {"steps"}

    resumed = small_model(dtype, seed=1)  # other initial weights: all must come from the files
    resumed.load_state_dict(weights)
    opt2 = cls(resumed.parameters(), **kwargs)
    opt2.load_state_dict(state)
    assert opt2.steps == 3
    train(resumed, opt2, 4, start=3, schedule=schedule, base_lr=kwargs["lr"])
    for (name, p, _), (_, q, _) in zip(whole.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(q, p, err_msg=f"{case} {name}")
        assert q.dtype == dtype
        for slot, value in opt.state[name].items():
            np.testing.assert_array_equal(opt2.state[name][slot], value, err_msg=f"{name}.{slot}")
            assert value.dtype == dtype


@pytest.mark.parametrize("case,cls,kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_steps_never_write_the_gradients_and_reuse_their_scratch(case, cls, kwargs):
    model = small_model(np.float32)
    opt = cls(model.parameters(), **kwargs)
    loss = SoftmaxCrossEntropy()
    x, y = batch(0, np.float32)
    loss.forward(model.forward(x), y)
    model.backward(loss.backward(), need_input_grad=False)
    grads = [g.copy() for _, _, g in model.parameters()]
    opt.step()
    scratch = dict(opt._workspace)
    opt.step()
    for (name, _, g), before in zip(model.parameters(), grads):
        np.testing.assert_array_equal(g, before, err_msg=f"{case}: the step changed grad {name}")
    assert opt._workspace.keys() == scratch.keys()
    assert all(opt._workspace[k] is v for k, v in scratch.items())


def test_a_state_for_other_slots_is_refused():
    p, g = np.zeros(3), np.ones(3)
    adam_state = Adam([("w", p, g)]).state_dict()
    with pytest.raises(ValueError, match=r"missing \['w.momentum_buffer'\].*unexpected"):
        SGD([("w", p, g)], lr=0.1, momentum=0.9).load_state_dict(adam_state)
    with pytest.raises(ValueError, match="shape"):
        RMSprop([("w", p, g)]).load_state_dict({"w.square_avg": np.zeros(2), "steps": np.array(0)})


# -- the rules by hand --------------------------------------------------------------------------
GRADS = [np.array([0.5, -1.0, 0.0]), np.array([0.25, 2.0, -0.5]), np.array([-1.0, 0.5, 0.125])]


def run_rule(opt_cls, **kwargs):
    p, g = np.array([1.0, -2.0, 3.0]), np.zeros(3)
    opt = opt_cls([("w", p, g)], **kwargs)
    out = []
    for grad in GRADS:
        g[...] = grad
        opt.step()
        out.append(p.copy())
    return out, opt


def test_sgd_momentum_buffer_starts_as_the_first_gradient():
    lr, mu, tau, wd = 0.1, 0.9, 0.3, 0.01
    got, opt = run_rule(SGD, lr=lr, momentum=mu, dampening=tau, weight_decay=wd)
    p, buf = np.array([1.0, -2.0, 3.0]), None
    for grad, ours in zip(GRADS, got):
        d = grad + wd * p
        buf = d.copy() if buf is None else mu * buf + (1 - tau) * d
        p = p - lr * buf
        np.testing.assert_allclose(ours, p, rtol=1e-15)
    np.testing.assert_allclose(opt.state["w"]["momentum_buffer"], buf, rtol=1e-15)


def test_sgd_nesterov_and_plain():
    got, _ = run_rule(SGD, lr=0.1, momentum=0.5, nesterov=True)
    p, buf = np.array([1.0, -2.0, 3.0]), None
    for grad, ours in zip(GRADS, got):
        buf = grad.copy() if buf is None else 0.5 * buf + grad
        p = p - 0.1 * (grad + 0.5 * buf)
        np.testing.assert_allclose(ours, p, rtol=1e-15)
    got, opt = run_rule(SGD, lr=0.1)
    np.testing.assert_allclose(got[-1], np.array([1.0, -2.0, 3.0]) - 0.1 * sum(GRADS), rtol=1e-15)
    assert opt.state_dict().keys() == {"steps"}


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_adam_and_adamw_with_bias_correction(cls):
    lr, (b1, b2), eps, wd = 0.01, (0.8, 0.9), 1e-8, 0.1
    got, opt = run_rule(cls, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    p, m, v = np.array([1.0, -2.0, 3.0]), np.zeros(3), np.zeros(3)
    for t, (grad, ours) in enumerate(zip(GRADS, got), start=1):
        if cls is AdamW:
            p, d = p * (1 - lr * wd), grad
        else:
            d = grad + wd * p
        m, v = b1 * m + (1 - b1) * d, b2 * v + (1 - b2) * d * d
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        np.testing.assert_allclose(ours, p, rtol=1e-14)
    np.testing.assert_allclose(opt.state["w"]["exp_avg_sq"], v, rtol=1e-14)


def test_rmsprop_centered_with_momentum():
    lr, a, eps, mu = 0.01, 0.9, 1e-8, 0.5
    got, _ = run_rule(RMSprop, lr=lr, alpha=a, eps=eps, momentum=mu, centered=True)
    p, s, gbar, buf = np.array([1.0, -2.0, 3.0]), np.zeros(3), np.zeros(3), np.zeros(3)
    for grad, ours in zip(GRADS, got):
        s, gbar = a * s + (1 - a) * grad**2, a * gbar + (1 - a) * grad
        buf = mu * buf + grad / (np.sqrt(s - gbar**2) + eps)
        p = p - lr * buf
        np.testing.assert_allclose(ours, p, rtol=1e-13)


def test_rmsprop_centered_variance_is_clamped_at_zero():
    # the same gradient every step: s - gbar^2 -> 0, where rounding may go below 0
    p, g = np.zeros(1000, np.float32), np.full(1000, 0.1, np.float32)
    opt = RMSprop([("w", p, g)], lr=1e-3, alpha=0.5, centered=True)
    for _ in range(60):
        opt.step()
    assert np.isfinite(p).all()


def test_adagrad_default_is_the_original_rule_and_weight_decay_is_l2():
    got, _ = run_rule(Adagrad, lr=0.5)
    G, p = np.zeros(3), np.array([1.0, -2.0, 3.0])
    for grad, ours in zip(GRADS, got):
        G += grad**2
        p = p - 0.5 * grad / np.sqrt(G + 1e-6)
        np.testing.assert_allclose(ours, p, rtol=1e-15)
    got, _ = run_rule(Adagrad, lr=0.5, weight_decay=0.2)
    G, p = np.zeros(3), np.array([1.0, -2.0, 3.0])
    for grad, ours in zip(GRADS, got):
        d = grad + 0.2 * p
        G += d**2
        p = p - 0.5 * d / np.sqrt(G + 1e-6)
        np.testing.assert_allclose(ours, p, rtol=1e-15)


def test_the_learning_rate_can_change_between_steps():
    p, g = np.zeros(2), np.ones(2)
    opt = SGD([("w", p, g)], lr=0.1)
    opt.step()
    opt.lr = 0.0  # a schedule may end at 0
    opt.step()
    opt.lr = 0.25
    opt.step()
    np.testing.assert_allclose(p, [-0.35, -0.35])
    for bad in (-0.1, float("nan"), float("inf"), "fast"):
        with pytest.raises(ValueError, match="learning rate"):
            opt.lr = bad
    assert opt.lr == 0.25


def test_adagrad_rule_and_state():
    p = np.array([1.0, -2.0, 3.0])
    g = np.zeros_like(p)
    opt = Adagrad([("w", p, g)], lr=0.5, eps=1e-6)
    G = np.zeros_like(p)
    ref = p.copy()
    for grad in ([0.1, -0.2, 0.0], [0.3, 0.1, -0.5]):
        g[...] = grad
        opt.step()
        G += np.square(grad)
        ref -= 0.5 * np.asarray(grad) / np.sqrt(G + 1e-6)
        np.testing.assert_allclose(p, ref, rtol=1e-15)
    state = opt.state_dict()
    np.testing.assert_allclose(state["w.sum_sq"], G)
    assert int(state["steps"]) == 2
    other = Adagrad([("w", p.copy(), g)], lr=0.5)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.state["w"]["sum_sq"], G)
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({"steps": np.array(1)})


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_optimizer_rejects_a_bad_learning_rate(lr):
    with pytest.raises(ValueError, match="learning rate"):
        Adagrad([("w", np.zeros(2), np.zeros(2))], lr=lr)


def test_adagrad_keeps_the_parameter_dtype():
    p, g = np.ones(3, np.float32), np.full(3, 0.5, np.float32)
    opt = Adagrad([("w", p, g)])
    opt.step()
    assert p.dtype == np.float32 and opt.state["w"]["sum_sq"].dtype == np.float32


# -- validation, registry, repr -----------------------------------------------------------------
# every hyperparameter's refusals: test_optim_validation.py


def test_build_optimizer_and_config_round_trip():
    params = [("w", np.zeros(2), np.zeros(2))]
    opt = build_optimizer("SGD", params, 0.1, momentum=0.9, nesterov=True, eps=None)
    assert repr(opt) == "SGD(lr=0.1, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.0)"
    assert (
        type(build_optimizer("adam", params, None)) is Adam
        and build_optimizer("adam", params, None).lr == 1e-3
    )
    assert build_optimizer("adamw", params, 0.01).weight_decay == 0.01
    for name, cls in OPTIMIZERS.items():
        opt = build_optimizer(name, params, 0.05)
        config = opt.config()
        assert config["name"] == name
        again = build_optimizer(params=params, **config)
        assert type(again) is cls and repr(again) == repr(opt)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'; known: adagrad, sgd"):
        build_optimizer("lbfgs", params, 0.1)
    with pytest.raises(
        ValueError, match="'adagrad' does not take momentum; it takes lr, eps, weight_decay"
    ):
        build_optimizer("adagrad", params, 0.1, momentum=0.9)
    with pytest.raises(ValueError, match="needs a learning rate"):
        build_optimizer("sgd", params, None)


def test_adagrad_keeps_its_defaults():
    opt = Adagrad([("w", np.zeros(2), np.zeros(2))])
    assert (opt.lr, opt.eps, opt.weight_decay) == (0.01, 1e-6, 0.0)
    assert repr(opt) == "Adagrad(lr=0.01, eps=1e-06, weight_decay=0.0)"


# -- clipping -----------------------------------------------------------------------------------
def test_clip_grad_norm_scales_only_above_the_limit():
    a, b = np.array([3.0, 0.0]), np.array([[0.0], [4.0]])
    assert clip_grad_norm([("a", None, a), ("b", None, b)], 10.0) == 5.0
    np.testing.assert_array_equal(a, [3.0, 0.0])
    assert clip_grad_norm([a, b], 1.0) == 5.0
    np.testing.assert_allclose(np.sqrt(np.sum(a**2) + np.sum(b**2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(a, [0.6 * 5 / (5 + 1e-6), 0.0], rtol=1e-15)
    assert clip_grad_norm([], 1.0) == 0.0


@pytest.mark.parametrize(
    "dtype,value",
    [(np.float32, 1e30), (np.float32, 1e-30), (np.float64, 1e200), (np.float64, 1e-200)],
)
def test_clip_grad_norm_neither_overflows_nor_underflows(dtype, value):
    big = np.full((300, 7), value, dtype)  # norm = value * sqrt(2100 + 4)
    small = np.full(4, value, dtype)
    norm = clip_grad_norm([big, small], 1.0)
    assert norm == pytest.approx(
        value * math.sqrt(2104), rel=1e-6 if dtype == np.float32 else 1e-12
    )
    if value > 1:
        total = math.sqrt(
            np.sum(big.astype(np.float64) ** 2) + np.sum(small.astype(np.float64) ** 2)
        )
        assert total == pytest.approx(1.0, rel=1e-5) and big.dtype == dtype
    else:
        np.testing.assert_array_equal(small, np.full(4, value, dtype))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_grad_norm_returns_a_non_finite_norm_without_scaling(bad):
    g = np.array([1.0, bad, 2.0], np.float32)
    h = np.array([5.0], np.float32)
    norm = clip_grad_norm([g, h], 1.0)
    assert math.isnan(norm) if np.isnan(bad) else norm == math.inf
    np.testing.assert_array_equal(h, [5.0])
    for max_norm in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_norm"):
            clip_grad_norm([h], max_norm)


def test_clip_grad_norm_large_gradient_in_blocks():
    g = np.random.default_rng(0).standard_normal(200_003).astype(np.float32)  # > 3 blocks
    expected = np.linalg.norm(g.astype(np.float64))
    assert clip_grad_norm([g], 1e9) == pytest.approx(expected, rel=1e-12)


# -- schedules ----------------------------------------------------------------------------------
def test_schedule_values():
    assert [StepLR(3, 0.5).lr_at(s, 0.8) for s in range(7)] == [0.8] * 3 + [0.4] * 3 + [0.2]
    assert ConstantLR().lr_at(10**6, 0.3) == 0.3
    cos = CosineLR(4, min_lr=0.1)
    np.testing.assert_allclose(
        [cos.lr_at(s, 1.1) for s in range(7)],
        [
            1.1,
            0.1 + 0.5 * (1 + math.cos(math.pi / 4)),
            0.6,
            0.1 + 0.5 * (1 - math.cos(math.pi / 4)),
            0.1,
            0.1,
            0.1,
        ],
        rtol=1e-15,
    )
    warm = WarmupLR(CosineLR(10), warmup_steps=4)
    lrs = [warm.lr_at(s, 1.0) for s in range(16)]
    np.testing.assert_allclose(lrs[:5], [0.2, 0.4, 0.6, 0.8, 1.0], rtol=1e-15)  # continuous
    assert lrs[14] == 0.0 and lrs[15] == 0.0 and all(np.diff(lrs[4:]) <= 0)
    assert WarmupLR(ConstantLR(), 0).lr_at(0, 0.5) == 0.5


def test_schedule_config_round_trip_and_repr():
    for schedule in (
        ConstantLR(),
        StepLR(5, 0.5),
        CosineLR(100, 1e-4),
        WarmupLR(StepLR(2, 0.9), 10),
        WarmupLR(WarmupLR(CosineLR(3), 1), 2),
    ):
        config = schedule.config()
        assert config == through_npz_json(config)
        again = from_config(config)
        assert again == schedule and repr(again) == repr(schedule)
        assert [again.lr_at(s, 0.1) for s in range(20)] == [
            schedule.lr_at(s, 0.1) for s in range(20)
        ]
    assert (
        repr(WarmupLR(CosineLR(9), 1))
        == "WarmupLR(inner=CosineLR(total_steps=9, min_lr=0.0), warmup_steps=1)"
    )
    with pytest.raises(ValueError, match="unknown schedule 'OneCycle'"):
        from_config({"type": "OneCycle"})
    with pytest.raises(ValueError, match="StepLR"):
        from_config({"type": "StepLR", "step_size": 2, "gama": 0.5})


def through_npz_json(config):
    import json

    return json.loads(json.dumps(config))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: StepLR(0), "step_size"),
        (lambda: StepLR(2.5), "step_size"),
        (lambda: StepLR(2, 0.0), "gamma"),
        (lambda: StepLR(2, 1.5), "gamma"),
        (lambda: CosineLR(0), "total_steps"),
        (lambda: CosineLR(10, -1.0), "min_lr"),
        (lambda: WarmupLR(CosineLR(10), -1), "warmup_steps"),
        (lambda: WarmupLR(0.1, 3), "inner"),
        (lambda: build_schedule("cosine"), "total_steps"),
        (lambda: build_schedule("step"), "step_size"),
        (lambda: build_schedule("cosine", total_steps=5, warmup_steps=5), "exceed"),
        (lambda: build_schedule("linear"), "unknown schedule 'linear'"),
        # float() takes these, but they are not numbers
        (lambda: StepLR(2, "0.5"), r"StepLR: invalid gamma value: '0.5' \(must be a real number"),
        (lambda: CosineLR(10, np.True_), r"CosineLR: invalid min_lr value: (np\.)?True"),
        (lambda: StepLR(True), "StepLR: invalid step_size value: True"),
        (
            lambda: CosineLR(10, float("nan")),
            r"CosineLR: invalid min_lr value: nan \(must be a finite",
        ),
        (lambda: WarmupLR(ConstantLR(), "3"), "WarmupLR: invalid warmup_steps value: '3'"),
    ],
)
def test_bad_schedules_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_schedules_take_numpy_numbers():
    assert StepLR(np.int64(3), np.float32(0.5)) == StepLR(3, 0.5)
    assert CosineLR(np.int32(4), np.float64(0.1)).config() == {
        "type": "CosineLR",
        "total_steps": 4,
        "min_lr": 0.1,
    }


def test_build_schedule_and_apply():
    assert build_schedule() == ConstantLR()
    assert build_schedule("step", step_size=4, gamma=0.5) == StepLR(4, 0.5)
    schedule = build_schedule("cosine", total_steps=10, warmup_steps=3, min_lr=0.01)
    assert schedule == WarmupLR(CosineLR(7, 0.01), 3)
    assert schedule.lr_at(9, 1.0) < schedule.lr_at(8, 1.0) and schedule.lr_at(10, 1.0) == 0.01
    opt = SGD([("w", np.zeros(1), np.ones(1))], lr=1.0)
    seen = []
    for _ in range(11):
        seen.append(schedule.apply(opt, 1.0))
        opt.step()
    assert seen == [schedule.lr_at(s, 1.0) for s in range(11)] and opt.lr == seen[-1]
