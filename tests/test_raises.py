"""What the public layers, optimizers, schedules, Sequential and the loss document they raise:
every docstring has a Raises section, in PyTorch's order, and each documented error is raised."""

import inspect
import re

import numpy as np
import pytest

from stablecnn import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    ConstantLR,
    CosineLR,
    Optimizer,
    RMSprop,
    Schedule,
    Sequential,
    SoftmaxCrossEntropy,
    StepLR,
    WarmupLR,
    build_optimizer,
    build_schedule,
    clip_grad_norm,
    log_softmax,
    softmax,
)
from stablecnn.errors import ConfigError, DataError, ShapeError
from stablecnn.nn.layers import (
    LAYERS,
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
    Residual,
)
from stablecnn.nn.layers.pool import ReLUMaxPool2d
from stablecnn.optim import check_optimizer
from stablecnn.optim.schedules import from_config as schedule_from_config

DOCUMENTED = [
    *LAYERS.values(),
    ReLUMaxPool2d,
    Optimizer,
    SGD,
    Adagrad,
    Adam,
    AdamW,
    RMSprop,
    build_optimizer,
    check_optimizer,
    clip_grad_norm,
    Schedule,
    ConstantLR,
    StepLR,
    CosineLR,
    WarmupLR,
    build_schedule,
    schedule_from_config,
    Sequential,
    Sequential.forward,
    Sequential.backward,
    Sequential.from_config,
    Sequential.load_state_dict,
    Sequential.predict_proba,
    Sequential.predict,
    Sequential.forward_batches,
    Sequential.summary,
    SoftmaxCrossEntropy,
    softmax,
    log_softmax,
]
ORDER = ("Args:", "Shape:", "Raises:", "Example:")  # PyTorch's, after the summary and the math


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda obj: obj.__qualname__)
def test_the_docstring_says_what_is_raised_in_pytorchs_order(obj):
    doc = inspect.getdoc(obj)
    headings = [h for h in re.findall(r"^(\w+:)", doc, re.MULTILINE) if h in ORDER]
    assert "Raises:" in headings, f"{obj.__qualname__} documents no Raises section"
    assert headings == sorted(headings, key=ORDER.index), f"{obj.__qualname__}: {headings}"
    math = doc.find(".. math::")
    assert math == -1 or math < doc.index(headings[0]), "the math comes before the sections"


def x4(*shape, dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def after_eval_forward(layer, x):
    """backward after a training forward was followed by an evaluation one."""
    layer.forward(x, training=True)
    layer.forward(x, training=False)
    return layer.backward(np.ones_like(layer.forward(x, training=False)))


LAYER_ERRORS = {
    "Conv2d: channels": (lambda: Conv2d(0, 2, 3), ConfigError, "in_channels"),
    "Conv2d: kernel": (lambda: Conv2d(1, 2, (3, 0)), ConfigError, "kernel_size"),
    "Conv2d: same with stride": (
        lambda: Conv2d(1, 2, 3, stride=2, padding="same"),
        ConfigError,
        "stride 1",
    ),
    "Conv2d: padding": (lambda: Conv2d(1, 2, 3, padding=-1), ConfigError, "padding"),
    "Conv2d: bias not a bool": (lambda: Conv2d(1, 2, 3, bias="no"), ConfigError, "bias must"),
    "Conv2d: bias_init without a bias": (
        lambda: Conv2d(1, 2, 3, bias=False, bias_init=lambda *a: None),
        ConfigError,
        "bias_init",
    ),
    "Residual: not a layer": (lambda: Residual([ReLU(), "conv"]), TypeError, r"body\[1\]"),
    "Residual: one layer, not a list": (lambda: Residual(ReLU()), TypeError, "list of layers"),
    "Residual: empty body": (lambda: Residual([]), ConfigError, "at least one layer"),
    "Residual: activation": (
        lambda: Residual([ReLU()], activation="tanh"),
        ConfigError,
        "activation.*'tanh'",
    ),
    "Residual: dtypes": (
        lambda: Residual([Linear(2, 2, dtype=np.float64)], [Linear(2, 2)]),
        ConfigError,
        "one dtype",
    ),
    "Residual: shapes": (
        lambda: Residual([Conv2d(2, 4, 3, stride=2, padding=1)]).forward(x4(1, 2, 6, 6)),
        ShapeError,
        r"body gives \(4, 3, 3\).*identity shortcut gives \(2, 6, 6\)",
    ),
    "Residual: backward after eval": (
        lambda: after_eval_forward(Residual([Linear(3, 3)]), x4(2, 3)),
        RuntimeError,
        "backward needs a forward",
    ),
    "Conv2d: 3-D input": (lambda: Conv2d(1, 2, 3).forward(x4(1, 5, 5)), ShapeError, "4-D"),
    "Conv2d: channels in": (lambda: Conv2d(2, 2, 3).forward(x4(1, 1, 5, 5)), ShapeError, "2"),
    "Conv2d: small map": (lambda: Conv2d(1, 2, 3).forward(x4(1, 1, 2, 5)), ShapeError, "kernel"),
    "Conv2d: dtype": (
        lambda: Conv2d(1, 2, 3).forward(x4(1, 1, 5, 5, dtype=np.float64)),
        TypeError,
        "float32",
    ),
    "Conv2d: backward after eval": (
        lambda: after_eval_forward(Conv2d(1, 2, 3), x4(1, 1, 5, 5)),
        RuntimeError,
        "backward needs",
    ),
    "Conv2d: without weights": (
        lambda: Conv2d.without_weights(1, 2, 3).forward(x4(1, 1, 5, 5)),
        RuntimeError,
        "without weights",
    ),
    "Linear: features": (lambda: Linear(3, -1), ConfigError, "out_features"),
    "Linear: input": (lambda: Linear(3, 2).forward(x4(4, 5)), ShapeError, "3"),
    "Linear: dtype": (lambda: Linear(3, 2).forward(x4(4, 3, dtype=np.float64)), TypeError, None),
    "Linear: backward first": (lambda: Linear(3, 2).backward(x4(4, 2)), RuntimeError, None),
    "MaxPool2d: window": (lambda: MaxPool2d(16), ConfigError, "255"),
    "MaxPool2d: stride": (lambda: MaxPool2d(2, stride=0), ConfigError, "stride"),
    "MaxPool2d: small": (lambda: MaxPool2d(3).forward(x4(1, 1, 2, 2)), ShapeError, "window"),
    "MaxPool2d: backward after eval": (
        lambda: after_eval_forward(MaxPool2d(2), x4(1, 1, 4, 4)),
        RuntimeError,
        None,
    ),
    "MaxPool2d: without weights": (
        lambda: MaxPool2d.without_weights(2).forward(x4(1, 1, 4, 4)),
        RuntimeError,
        "without weights",
    ),
    "ReLUMaxPool2d: not a pair": (lambda: ReLUMaxPool2d(ReLU(), ReLU()), TypeError, None),
    "ReLUMaxPool2d: config": (
        lambda: ReLUMaxPool2d(ReLU(), MaxPool2d(2)).config(),
        TypeError,
        "plan",
    ),
    "ReLUMaxPool2d: 3-D input": (
        lambda: ReLUMaxPool2d(ReLU(), MaxPool2d(2)).forward(x4(1, 4, 4)),
        ShapeError,
        None,
    ),
    "ReLUMaxPool2d: backward first": (
        lambda: ReLUMaxPool2d(ReLU(), MaxPool2d(2)).backward(x4(1, 1, 2, 2)),
        RuntimeError,
        None,
    ),
    "AvgPool2d: padding": (lambda: AvgPool2d(2, padding=2), ConfigError, "half"),
    "AvgPool2d: small": (lambda: AvgPool2d(3).forward(x4(1, 1, 2, 2)), ShapeError, "window"),
    "AvgPool2d: backward first": (
        lambda: AvgPool2d(2).backward(x4(1, 1, 1, 1)),
        RuntimeError,
        None,
    ),
    "GlobalAvgPool2d: 2-D input": (lambda: GlobalAvgPool2d().forward(x4(2, 3)), ShapeError, None),
    "GlobalAvgPool2d: backward after eval": (
        lambda: after_eval_forward(GlobalAvgPool2d(), x4(1, 2, 3, 3)),
        RuntimeError,
        None,
    ),
    "BatchNorm2d: features": (lambda: BatchNorm2d(0), ConfigError, "num_features"),
    "BatchNorm2d: eps": (lambda: BatchNorm2d(2, eps=0), ConfigError, "eps"),
    "BatchNorm2d: momentum": (lambda: BatchNorm2d(2, momentum=1.5), ConfigError, "momentum"),
    "BatchNorm2d: channels": (lambda: BatchNorm2d(2).forward(x4(2, 3, 2, 2)), ShapeError, None),
    "BatchNorm2d: one value": (
        lambda: BatchNorm2d(2).forward(x4(1, 2, 1, 1)),
        ConfigError,
        "more than 1 value",
    ),
    "BatchNorm2d: dtype": (
        lambda: BatchNorm2d(2).forward(x4(2, 2, 2, 2, dtype=np.float64)),
        TypeError,
        None,
    ),
    "BatchNorm1d: one row": (lambda: BatchNorm1d(3).forward(x4(1, 3)), ConfigError, "1 value"),
    "BatchNorm1d: 4-D input": (lambda: BatchNorm1d(3).forward(x4(2, 3, 2, 2)), ShapeError, None),
    "BatchNorm1d: backward after eval": (
        lambda: after_eval_forward(BatchNorm1d(3), x4(4, 3)),
        RuntimeError,
        None,
    ),
    "ReLU: backward after eval": (lambda: after_eval_forward(ReLU(), x4(2, 3)), RuntimeError, None),
    "LeakyReLU: slope": (lambda: LeakyReLU(float("nan")), ConfigError, "negative_slope"),
    "LeakyReLU: backward first": (lambda: LeakyReLU().backward(x4(2, 3)), RuntimeError, None),
    "Flatten: backward after eval": (
        lambda: after_eval_forward(Flatten(), x4(2, 3, 2)),
        RuntimeError,
        None,
    ),
    "Dropout: p": (lambda: Dropout(1.0), ConfigError, "probability"),
    "Dropout: backward after eval": (
        lambda: after_eval_forward(Dropout(0.5), x4(2, 3)),
        RuntimeError,
        None,
    ),
    "kernels": (lambda: setattr(ReLU(), "kernels", "slow"), ConfigError, "kernels"),
}


def tiny_model(**kwargs):
    rng = np.random.default_rng(0)
    return Sequential(
        Conv2d(1, 2, 3, rng=rng), ReLU(), Flatten(), Linear(2 * 3 * 3, 4, rng=rng), **kwargs
    )


def tiny_state(**changes):
    state = {k: v.copy() for k, v in tiny_model().state_dict().items()}
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


MODEL_ERRORS = {
    "not a layer": (lambda: Sequential(ReLU(), "Flatten"), TypeError, "layer 1"),
    "two dtypes": (
        lambda: Sequential(Linear(2, 2), Linear(2, 2, dtype=np.float64)),
        TypeError,
        "dtype",
    ),
    "no layers": (lambda: Sequential(), ConfigError, "at least one"),
    "kernels": (lambda: tiny_model(kernels="slow"), ConfigError, "kernels"),
    "input_shape": (lambda: tiny_model(input_shape=(1, 6, 6)), ShapeError, "layer 3"),
    "forward of one example": (lambda: tiny_model().forward(x4(25)), ShapeError, "batch"),
    "forward of a misfit": (lambda: tiny_model().forward(x4(2, 1, 6, 6)), ShapeError, "layer 3"),
    "forward without weights": (
        lambda: Sequential.from_config(tiny_model().config(), weights=False).forward(
            x4(1, 1, 5, 5)
        ),
        RuntimeError,
        "without weights",
    ),
    "forward of an empty batch": (
        lambda: tiny_model().forward(x4(0, 1, 5, 5)),
        ShapeError,
        "the batch is empty",
    ),
    "forward of text": (lambda: tiny_model().forward("digits"), TypeError, "got str 'digits'"),
    "backward first": (lambda: tiny_model().backward(x4(2, 4)), RuntimeError, "backward needs"),
    "backward of a misfit gradient": (
        lambda: (lambda m: (m.forward(x4(2, 1, 5, 5)), m.backward(x4(4, 2))))(tiny_model()),
        ShapeError,
        r"gradient has shape \(4, 2\) but the forward's output had \(2, 4\)",
    ),
    "backward of a list": (
        lambda: (lambda m: (m.forward(x4(2, 1, 5, 5)), m.backward([[0.0] * 4] * 2)))(tiny_model()),
        TypeError,
        "must be a NumPy array, got list",
    ),
    "backward after eval": (
        lambda: (lambda m: (m.forward(x4(2, 1, 5, 5), training=False), m.backward(x4(2, 4))))(
            tiny_model()
        ),
        RuntimeError,
        "backward needs",
    ),
    "from_config: no layers": (lambda: Sequential.from_config({}), ConfigError, "layers"),
    "from_config: layer not a mapping": (
        lambda: Sequential.from_config({"layers": ["ReLU"]}),
        ConfigError,
        "layer 0: a layer config must be a mapping",
    ),
    "from_config: unknown type": (
        lambda: Sequential.from_config({"layers": [{"type": "Conv3d"}]}),
        ConfigError,
        "layer 0: unknown layer type",
    ),
    "from_config: bad value": (
        lambda: Sequential.from_config({"layers": [{"type": "Dropout", "p": 2}]}),
        ConfigError,
        "layer 0: p must be",
    ),
    "from_config: input_shape": (
        lambda: Sequential.from_config({"layers": [{"type": "ReLU"}], "input_shape": [0]}),
        ConfigError,
        "input_shape",
    ),
    "from_config: misfit": (
        lambda: Sequential.from_config({**tiny_model().config(), "input_shape": [1, 6, 6]}),
        ShapeError,
        "layer 3",
    ),
    "load_state_dict: names": (
        lambda: tiny_model().load_state_dict(tiny_state(**{"0.bias": None})),
        ConfigError,
        "missing",
    ),
    "load_state_dict: shape": (
        lambda: tiny_model().load_state_dict(tiny_state(**{"0.bias": np.zeros(3)})),
        ShapeError,
        "0.bias",
    ),
    "load_state_dict: kind": (
        lambda: tiny_model().load_state_dict(tiny_state(**{"0.bias": np.zeros(2, np.int64)})),
        TypeError,
        "floating",
    ),
    "predict_proba: batch_size": (
        lambda: tiny_model().predict_proba(x4(2, 1, 5, 5), batch_size=0),
        ConfigError,
        "batch_size",
    ),
    "predict: misfit": (lambda: tiny_model().predict(x4(2, 1, 6, 6)), ShapeError, "layer 3"),
    "summary: no shape": (lambda: tiny_model().summary(), ConfigError, "input_shape"),
    "summary: misfit": (lambda: tiny_model().summary((1, 6, 6)), ShapeError, "layer 3"),
}


def logits(*shape):
    return x4(*shape)


LOSS_ERRORS = {
    "softmax: 1-D": (lambda: softmax(logits(4)), ShapeError, r"\(N, K\)"),
    "softmax: no classes": (lambda: softmax(logits(3, 0)), ShapeError, "K >= 1"),
    "log_softmax: 3-D": (lambda: log_softmax(logits(2, 3, 4)), ShapeError, r"\(N, K\)"),
    "loss: 1-D logits": (
        lambda: SoftmaxCrossEntropy().forward(logits(4), np.zeros(4, int)),
        ShapeError,
        None,
    ),
    "loss: empty batch": (
        lambda: SoftmaxCrossEntropy().forward(logits(0, 3), np.zeros(0, int)),
        ShapeError,
        "empty",
    ),
    "loss: label shape": (
        lambda: SoftmaxCrossEntropy().forward(logits(2, 3), np.zeros(3, int)),
        ShapeError,
        r"\(2,\)",
    ),
    "loss: float labels": (
        lambda: SoftmaxCrossEntropy().forward(logits(2, 3), np.zeros(2)),
        TypeError,
        "integers",
    ),
    "loss: label range": (
        lambda: SoftmaxCrossEntropy().forward(logits(2, 3), np.array([0, 3])),
        DataError,
        "label 3",
    ),
    "loss: backward first": (lambda: SoftmaxCrossEntropy().backward(), RuntimeError, None),
}


def params():
    return [("w", np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))]


class NoRule(Optimizer):
    pass


OPTIM_ERRORS = {
    "no parameters": (lambda: SGD([], lr=0.1), ConfigError, "no parameters"),
    "a name twice": (lambda: SGD(params() * 2, lr=0.1), ConfigError, "unique"),
    "lr 0": (lambda: Adagrad(params(), lr=0), ConfigError, "lr"),
    "lr set negative": (lambda: setattr(Adagrad(params()), "lr", -1.0), ConfigError, "lr"),
    "no update rule": (lambda: NoRule(params(), lr=0.1).step(), NotImplementedError, None),
    "load_state_dict": (
        lambda: Adagrad(params()).load_state_dict({"steps": np.int64(0)}),
        ConfigError,
        "missing",
    ),
    "SGD momentum": (lambda: SGD(params(), 0.1, momentum=1.0), ConfigError, "momentum"),
    "SGD dampening": (lambda: SGD(params(), 0.1, dampening=-0.1), ConfigError, "dampening"),
    "SGD nesterov flag": (lambda: SGD(params(), 0.1, nesterov="yes"), ConfigError, "nesterov"),
    "SGD nesterov without momentum": (
        lambda: SGD(params(), 0.1, nesterov=True),
        ConfigError,
        "Nesterov",
    ),
    "SGD decay": (lambda: SGD(params(), 0.1, weight_decay=-1), ConfigError, "weight_decay"),
    "Adam betas pair": (lambda: Adam(params(), betas=(0.9,)), ConfigError, "betas"),
    "Adam beta2": (lambda: Adam(params(), betas=(0.9, 1.0)), ConfigError, "beta2"),
    "Adam eps": (lambda: Adam(params(), eps=0), ConfigError, "eps"),
    "Adam eps in float32": (lambda: Adam(params(), eps=1e-50), ConfigError, "float32"),
    "AdamW lr * decay": (lambda: AdamW(params(), lr=10, weight_decay=0.1), ConfigError, "< 1"),
    "AdamW lr set later": (
        lambda: setattr(AdamW(params(), lr=1, weight_decay=0.5), "lr", 2.0),
        ConfigError,
        "< 1",
    ),
    "RMSprop alpha": (lambda: RMSprop(params(), alpha=1), ConfigError, "alpha"),
    "RMSprop centered": (lambda: RMSprop(params(), centered=1), ConfigError, "centered"),
    "Adagrad eps": (lambda: Adagrad(params(), eps=-1), ConfigError, "eps"),
    "build: unknown": (lambda: build_optimizer("lamb", params(), 0.1), ConfigError, "known"),
    "build: argument": (
        lambda: build_optimizer("adagrad", params(), 0.1, momentum=0.9),
        ConfigError,
        "does not take momentum",
    ),
    "build: no lr": (lambda: build_optimizer("sgd", params()), ConfigError, "learning rate"),
    "check": (lambda: check_optimizer("sgd", 0.1, momentum=1.5), ConfigError, "momentum"),
    "clip: max_norm": (lambda: clip_grad_norm(params(), 0), ConfigError, "max_norm"),
    "clip: bool": (lambda: clip_grad_norm(params(), True), ConfigError, "max_norm"),
}


class NoLr(Schedule):
    pass


SCHEDULE_ERRORS = {
    "lr_at undefined": (lambda: NoLr().lr_at(0, 0.1), NotImplementedError, None),
    "apply refused": (
        lambda: StepLR(1, 1.0).apply(AdamW(params(), lr=1, weight_decay=0.5), 5.0),
        ConfigError,
        "< 1",
    ),
    "StepLR step_size": (lambda: StepLR(0), ConfigError, "step_size"),
    "StepLR float step_size": (lambda: StepLR(2.0), ConfigError, "step_size"),
    "StepLR gamma": (lambda: StepLR(1, gamma=0), ConfigError, "gamma"),
    "CosineLR total_steps": (lambda: CosineLR(0), ConfigError, "total_steps"),
    "CosineLR min_lr": (lambda: CosineLR(5, min_lr=-1), ConfigError, "min_lr"),
    "WarmupLR inner": (lambda: WarmupLR("cosine", 5), ConfigError, "inner"),
    "WarmupLR steps": (lambda: WarmupLR(ConstantLR(), -1), ConfigError, "warmup_steps"),
    "from_config type": (lambda: schedule_from_config({"type": "OneCycle"}), ConfigError, None),
    "from_config argument": (
        lambda: schedule_from_config({"type": "StepLR", "steps": 3}),
        ConfigError,
        "StepLR",
    ),
    "build: unknown": (lambda: build_schedule("linear"), ConfigError, "known"),
    "build: step": (lambda: build_schedule("step"), ConfigError, "step_size"),
    "build: cosine": (lambda: build_schedule("cosine"), ConfigError, "total_steps"),
    "build: warm-up too long": (
        lambda: build_schedule("cosine", total_steps=5, warmup_steps=5),
        ConfigError,
        "exceed",
    ),
}

ERRORS = {
    **{f"layer {k}": v for k, v in LAYER_ERRORS.items()},
    **{f"Sequential {k}": v for k, v in MODEL_ERRORS.items()},
    **LOSS_ERRORS,
    **{f"optim {k}": v for k, v in OPTIM_ERRORS.items()},
    **{f"schedule {k}": v for k, v in SCHEDULE_ERRORS.items()},
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_what_is_documented_is_what_is_raised(case):
    call, error, match = ERRORS[case]
    with pytest.raises(error, match=match) as info:
        call()
    if error is ConfigError:  # not one of its subclasses, which the docs would have named
        assert type(info.value) is ConfigError, f"{case}: {type(info.value).__name__}"


def test_the_table_covers_every_registered_layer():
    named = {case.split(":")[0] for case in LAYER_ERRORS}
    assert set(LAYERS) <= named
