"""Every hyperparameter of every optimizer refuses a value that makes its update meaningless.

The table below is built from the optimizers' own signatures, so a hyperparameter added later
without a case here fails :func:`test_the_table_covers_every_hyperparameter`. Each refusal must
be a ValueError whose message names the optimizer, the hyperparameter and the value received
("SGD: invalid momentum value: 1.5 ..."), when the optimizer is built directly, through
:func:`build_optimizer`, through :func:`check_optimizer`, and from the command line.
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest

from stablecnn import OPTIMIZERS, SGD, Adagrad, Adam, AdamW, RMSprop, build_optimizer
from stablecnn.optim import check_optimizer

NAN, INF = float("nan"), float("inf")
# not numbers, although float() takes several of them
NOT_NUMBERS = [True, np.True_, "0.1", None, [0.1], np.array([0.1, 0.2]), 1j]
NON_FINITE = [NAN, INF, -INF]
# hyperparameter -> (how the message names it, values outside its range)
RANGES = {
    "lr": ("learning rate (lr)", [0.0, -0.1]),
    "momentum": ("momentum", [-0.1, 1.0, 1.5]),
    "dampening": ("dampening", [-0.1, 1.0, 2.0]),
    "weight_decay": ("weight_decay", [-1e-4, -1.0]),
    "eps": ("eps", [0.0, -1e-8]),
    "alpha": ("alpha", [-0.1, 1.0, 1.5]),
}
FLAGS = ("nesterov", "centered")
NOT_FLAGS = ["yes", "False", 1, 0, 1.0, None]
NOT_PAIRS = [0.9, (0.9,), (0.9, 0.99, 0.999), "ab", None, {0.9, 0.99}]


def hyperparameters(cls) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]


def cases():
    """(id, optimizer class, bad keyword arguments, name in the message, value in the message)."""
    for key, cls in OPTIMIZERS.items():
        for hp in hyperparameters(cls):
            if hp in FLAGS:
                table = [({hp: v}, hp, v) for v in NOT_FLAGS]
            elif hp == "betas":
                table = [({hp: v}, "betas", v) for v in NOT_PAIRS]
                for i in (0, 1):
                    for v in [-0.1, 1.0, 1.5, *NON_FINITE, *NOT_NUMBERS]:
                        betas = [0.9, 0.999]
                        betas[i] = v
                        table.append(({hp: tuple(betas)}, f"beta{i + 1} (betas[{i}])", v))
            else:
                label, bad = RANGES[hp]
                table = [({hp: v}, label, v) for v in [*bad, *NON_FINITE, *NOT_NUMBERS]]
            for n, (kwargs, label, value) in enumerate(table):
                yield pytest.param(cls, kwargs, label, value, id=f"{key}-{hp}-{n}-{value!r}")


CASES = list(cases())


def shown(value) -> str:
    """How the message must show the value: numbers as printed, anything else as its repr."""
    if isinstance(value, (bool, np.bool_, str, list, tuple, set, complex, type(None))):
        return repr(value)
    return str(value)


def params(dtype=np.float32):
    return [("w", np.zeros(3, dtype), np.zeros(3, dtype))]


def test_the_table_covers_every_hyperparameter():
    covered = {hp for p in CASES for hp in p.values[1]}
    every = {hp for cls in OPTIMIZERS.values() for hp in hyperparameters(cls)}
    assert covered == every
    assert len(CASES) > 200  # 5 optimizers x their hyperparameters x ~12 bad values


@pytest.mark.parametrize("cls, kwargs, label, value", CASES)
def test_a_bad_hyperparameter_is_refused_naming_optimizer_name_and_value(cls, kwargs, label, value):
    with pytest.raises(ValueError) as info:
        cls(params(), **{"lr": 0.1, **kwargs})
    assert f"{cls.__name__}: invalid {label} value: {shown(value)} (" in str(info.value)


@pytest.mark.parametrize(
    "cls, kwargs, label, value", [c for c in CASES if c.values[3] is not None]
)  # None: "not given"
def test_build_optimizer_and_check_optimizer_refuse_it_too(cls, kwargs, label, value):
    key = next(k for k, c in OPTIMIZERS.items() if c is cls)
    expected = f"{cls.__name__}: invalid {label} value: {shown(value)} ("
    lr = kwargs.get("lr", 0.1)
    others = {k: v for k, v in kwargs.items() if k != "lr"}
    with pytest.raises(ValueError) as info:
        build_optimizer(key, params(), lr, **others)
    assert expected in str(info.value)
    with pytest.raises(ValueError) as info:
        check_optimizer(key, lr, **others)
    assert expected in str(info.value)


def test_messages_read_as_pytorch_with_the_optimizer_named():
    def message(make):
        with pytest.raises(ValueError) as info:
            make()
        return str(info.value)

    assert (
        message(lambda: SGD(params(), lr=0.1, momentum=1.5))
        == "SGD: invalid momentum value: 1.5 (must be a finite number in [0, 1))"
    )
    assert (
        message(lambda: Adam(params(), eps="small"))
        == "Adam: invalid eps value: 'small' (must be a real number in (0, inf), not str)"
    )
    assert (
        message(lambda: RMSprop(params(), centered="no"))
        == "RMSprop: invalid centered value: 'no' (must be True or False, not str)"
    )
    assert (
        message(lambda: AdamW(params(), betas=(0.9, NAN)))
        == "AdamW: invalid beta2 (betas[1]) value: nan (must be a finite number in [0, 1))"
    )
    assert (
        message(lambda: Adagrad(params(), lr=-0.01))
        == "Adagrad: invalid learning rate (lr) value: -0.01 (must be a finite number in (0, inf))"
    )


@pytest.mark.parametrize(
    "kwargs, fault",
    [
        (
            dict(nesterov=True),
            "SGD: Nesterov momentum needs momentum > 0 and dampening 0, got "
            "momentum=0.0, dampening=0.0",
        ),
        (dict(momentum=0.9, dampening=0.1, nesterov=True), "dampening=0.1"),
    ],
)
def test_nesterov_needs_momentum_without_dampening(kwargs, fault):
    with pytest.raises(ValueError, match=fault):
        SGD(params(), lr=0.1, **kwargs)


def test_the_edges_of_every_range_and_every_kind_of_real_number_are_accepted():
    edges = [
        SGD(params(), lr=1, momentum=0, dampening=0, weight_decay=0),
        SGD(
            params(),
            lr=np.float32(0.1),
            momentum=np.float64(0.99),
            dampening=0.99,
            nesterov=np.False_,
        ),
        Adam(params(), lr=np.array(0.5), betas=(0, 0), eps=1e-30, weight_decay=0),
        Adam(params(), betas=np.array([0.9, 0.999])),
        AdamW(params(), lr=0.5, weight_decay=1.99),  # lr * weight_decay = 0.995 < 1
        RMSprop(params(), alpha=0, eps=1e-30, momentum=0.999, centered=np.True_),
        Adagrad(params(), eps=1e-30, weight_decay=0),
    ]
    for opt in edges:  # every value kept is a plain Python number, ready for JSON
        config = opt.config()
        assert json.loads(json.dumps(config)) == config, config
        again = build_optimizer(params=params(), **config)
        assert repr(again) == repr(opt)
    assert edges[1].nesterov is False and edges[5].centered is True


@pytest.mark.parametrize(
    "make, fault",
    [
        (lambda p: Adam(p, eps=1e-50), "eps value: 1e-50 (it rounds to 0 in float32"),
        (lambda p: Adagrad(p, eps=1e-50), "eps value: 1e-50 (it rounds to 0 in float32"),
        (lambda p: RMSprop(p, eps=1e-50), "eps value: 1e-50 (it rounds to 0 in float32"),
        (
            lambda p: SGD(p, lr=0.1, momentum=0.99999999),
            "momentum value: 0.99999999 (it rounds to 1 in float32",
        ),
        (
            lambda p: Adam(p, betas=(0.9, 0.999999999)),
            "beta2 (betas[1]) value: 0.999999999 (it rounds to 1 in float32",
        ),
        (
            lambda p: SGD(p, lr=0.1, weight_decay=1e300),
            "weight_decay value: 1e+300 (it rounds to inf in float32",
        ),
        (lambda p: SGD(p, lr=1e-60), "learning rate (lr) value: 1e-60 (it rounds to 0 in float32"),
    ],
)
def test_a_value_lost_in_the_parameters_dtype_is_refused(make, fault):
    """The updates use each hyperparameter in the parameters' dtype: Adam's eps of 1e-50 is 0 in
    float32 and a never-updated entry would get 0 / 0. The same values are fine in float64."""
    with pytest.raises(ValueError) as info:
        make(params(np.float32))
    assert fault in str(info.value)
    make(params(np.float64))
    with pytest.raises(ValueError, match="rounds to 0 in float32"):
        check_optimizer("adam", 1e-3, eps=1e-50)
    assert check_optimizer("adam", 1e-3, eps=1e-50, dtype=np.float64)["eps"] == 1e-50


def test_an_eps_of_zero_would_make_a_never_updated_entry_nan():
    """Why eps must be > 0 (Adagrad's, inside the root, as well): a dead unit's gradient is 0."""
    p, g = np.ones(2), np.array([0.5, 0.0])
    for opt in (Adagrad([("w", p, g)], eps=1e-10), Adam([("w", p, g)], eps=1e-10)):
        opt.step()
        assert np.isfinite(p).all() and p[1] == 1.0
    with np.errstate(invalid="ignore"):
        assert np.isnan(0.0 / np.sqrt(0.0 + 0.0))  # what eps = 0 would compute for p[1]


def test_the_learning_rate_set_between_steps_is_checked_too():
    opt = SGD(params(), lr=0.1)
    opt.lr = 0.0  # a schedule may end at 0
    for bad in (-0.1, NAN, INF, "fast", True, None):
        with pytest.raises(ValueError) as info:
            opt.lr = bad
        assert f"SGD: invalid learning rate (lr) value: {shown(bad)}" in str(info.value)
    assert opt.lr == 0.0


def test_adamw_refuses_a_decay_that_would_zero_or_flip_the_weights():
    """AdamW multiplies every parameter by 1 - lr * weight_decay each step."""
    for lr, wd in ((1.0, 1.0), (0.1, 20.0)):
        with pytest.raises(ValueError) as info:
            AdamW(params(), lr=lr, weight_decay=wd)
        assert (
            f"AdamW: invalid weight_decay value: {wd} with learning rate {lr} (each step "
            f"multiplies the parameters by 1 - lr * weight_decay = {1 - lr * wd:g}"
        ) in str(info.value)
    opt = AdamW(params(), lr=0.5, weight_decay=1.0)
    with pytest.raises(ValueError, match="lr \\* weight_decay must be < 1"):
        opt.lr = 1.0  # between steps, as a schedule would
    assert opt.lr == 0.5
    Adam(params(), lr=1.0, weight_decay=1.0)  # coupled L2: no such product


def test_check_optimizer_returns_the_full_configuration():
    assert check_optimizer("sgd", 0.1, momentum=0.9, weight_decay=None) == {
        "name": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "dampening": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
    }
    assert check_optimizer("AdamW")["weight_decay"] == 0.01
    with pytest.raises(ValueError, match="'adagrad' does not take momentum"):
        check_optimizer("adagrad", 0.01, momentum=0.9)
    assert math.isclose(check_optimizer("rmsprop", 0.01)["alpha"], 0.99)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--optimizer", "sgd", "--momentum", "1.5"],
            "SGD: invalid momentum value: 1.5 (must be a finite number in [0, 1))",
        ),
        (["--optimizer", "rmsprop", "--momentum", "nan"], "RMSprop: invalid momentum value: nan"),
        (["--optimizer", "sgd", "--weight-decay", "inf"], "weight_decay"),
        (["--optimizer", "sgd", "--weight-decay", "1e300"], "rounds to inf in float32"),
    ],
)
def test_the_command_line_refuses_them_with_exit_2(tmp_path, capsys, flags, message):
    from stablecnn.cli import main
    from stablecnn.data import write_idx

    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    for stem, n in (("train", 20), ("t10k", 10)):
        write_idx(folder / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(folder / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    code = main(
        [
            "train",
            "--data-dir",
            str(folder),
            "--no-verify",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--no-plots",
            *flags,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made
