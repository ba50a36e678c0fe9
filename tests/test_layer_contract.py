"""The layer contract (:mod:`stablecnn.nn.layers.base`), checked on every registered layer.

Every layer of :data:`stablecnn.nn.layers.LAYERS`, and the fused steps (:class:`ReLUMaxPool2d`,
:class:`BNReLU2d`) that :func:`stablecnn.nn.fuse.fuse` puts in a model's plan, must:

- have input and parameter gradients that match float64 centered finite differences (relative
  error < 1e-7, cs231n's gradient check);
- keep the dtype: a float32 input gives float32 outputs and gradients, float64 likewise;
- write its parameter gradients into the same arrays at every backward, and skip the input
  gradient on request (``backward(dout, need_input_grad=False)`` returns None) while still
  writing the same parameter gradients; refuse a backward after an evaluation forward;
- come back from its config: ``from_config(layer.config())`` is the same layer (config, repr,
  dtype) and, given the same weights, computes the same outputs and gradients, bit for bit; the
  config is plain data (JSON);
- have a readable ``repr``: the type and the arguments that differ from the defaults, written so
  that evaluating it builds the same layer (one line; a block's repr shows its layers one to a
  line, as PyTorch prints a module of modules);
- refuse a backward gradient whose shape or dtype is not the pending output's (ShapeError naming
  both shapes, TypeError), and still take the right one after refusing; refuse a forward of what
  is not a NumPy array (TypeError) and of an empty batch (ShapeError);
- have a ``without_weights`` counterpart that knows the parameter shapes, count, dtype, config,
  repr and output shape but holds no array (and refuses to run, when it has parameters).

A new layer is checked by registering it in LAYERS and adding its constructor arguments and an
input shape to :data:`EXAMPLES` (``rng`` and ``dtype`` are added where the constructor takes them;
a block's layers are given as configs and built as :func:`from_config` builds them); the contract
fails for a registered layer without an example.
"""

from __future__ import annotations

import inspect
import json
import re

import numpy as np
import pytest
from support.gradcheck import gradcheck_layer

from stablecnn.errors import ShapeError
from stablecnn.nn.layers import (
    CONTAINERS,
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
    from_config,
)
from stablecnn.nn.layers.norm import BNReLU2d
from stablecnn.nn.layers.pool import ReLUMaxPool2d

# layer name -> examples: (constructor arguments, input shape with the batch axis). Non-square
# inputs and kernels, strides and padding, so that a mixed-up axis shows.
EXAMPLES: dict[str, list[tuple[dict, tuple[int, ...]]]] = {
    "Conv2d": [
        # the im2col kernel: stride and padding per axis
        (
            dict(in_channels=2, out_channels=3, kernel_size=(3, 2), stride=(2, 1), padding=1),
            (2, 2, 7, 6),
        ),
        # the rows kernel (stride 1 in height, C * kW >= 64), padding per axis
        (dict(in_channels=16, out_channels=3, kernel_size=(3, 4), padding=(1, 2)), (2, 16, 5, 4)),
        # no bias (a conv before batch norm), the stride-2 3x3 of a residual network's stages
        (
            dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, bias=False),
            (2, 3, 7, 6),
        ),
    ],
    "MaxPool2d": [
        (dict(kernel_size=(3, 2), stride=(2, 1)), (2, 3, 7, 6)),  # the general kernel
        (dict(kernel_size=2, stride=1), (2, 3, 5, 4)),  # the flat 2x2 stride-1 kernel
        (dict(kernel_size=2), (2, 3, 6, 5)),  # the 2x2 kernel
    ],
    "Linear": [(dict(in_features=7, out_features=5), (4, 7))],
    "ReLU": [({}, (2, 3, 4, 5))],
    "Flatten": [({}, (2, 3, 4, 5))],
    "AvgPool2d": [(dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), (2, 3, 7, 6))],
    "GlobalAvgPool2d": [({}, (2, 3, 5, 4))],
    "BatchNorm1d": [
        (dict(num_features=5, eps=1e-3, momentum=0.2), (6, 5)),
        (dict(num_features=3), (2, 3, 4)),  # (N, C, L)
    ],
    "BatchNorm2d": [(dict(num_features=3, eps=1e-3, momentum=0.2), (3, 3, 4, 5))],
    "Dropout": [(dict(p=0.3), (4, 6))],
    "LeakyReLU": [(dict(negative_slope=0.1), (2, 3, 4, 5))],
    "Residual": [
        # the basic block: identity shortcut, conv-bn-relu-conv-bn, ReLU after the sum
        (
            dict(
                body=[
                    dict(
                        type="Conv2d",
                        in_channels=3,
                        out_channels=3,
                        kernel_size=3,
                        padding=1,
                        bias=False,
                    ),
                    dict(type="BatchNorm2d", num_features=3),
                    dict(type="ReLU"),
                    dict(
                        type="Conv2d",
                        in_channels=3,
                        out_channels=3,
                        kernel_size=3,
                        padding=1,
                        bias=False,
                    ),
                    dict(type="BatchNorm2d", num_features=3),
                ],
                activation="ReLU",
            ),
            (3, 3, 5, 4),
        ),
        # the projection block: stride 2 and more channels on both paths, no activation
        (
            dict(
                body=[
                    dict(
                        type="Conv2d",
                        in_channels=2,
                        out_channels=4,
                        kernel_size=3,
                        stride=2,
                        padding=1,
                        bias=False,
                    ),
                    dict(type="BatchNorm2d", num_features=4),
                ],
                shortcut=[
                    dict(
                        type="Conv2d",
                        in_channels=2,
                        out_channels=4,
                        kernel_size=1,
                        stride=2,
                        bias=False,
                    ),
                    dict(type="BatchNorm2d", num_features=4),
                ],
            ),
            (3, 2, 7, 6),
        ),
        # any layers: a dense residual on (N, F) with a bias
        (dict(body=[dict(type="Linear", in_features=5, out_features=5)]), (4, 5)),
    ],
}

# steps of a model's execution plan that are layers but not architecture layers (no config):
# name -> examples (make(), input shape)
PLAN_STEPS = {
    "ReLUMaxPool2d": [
        (lambda: ReLUMaxPool2d(ReLU(), MaxPool2d(2, 1)), (2, 3, 5, 4)),
        (lambda: ReLUMaxPool2d(ReLU(), MaxPool2d((3, 2), (2, 1))), (2, 3, 7, 6)),
    ],
    "BNReLU2d": [
        (lambda: BNReLU2d(BatchNorm2d(3, eps=1e-3, momentum=0.2), ReLU()), (3, 3, 4, 5)),
        (lambda: BNReLU2d(BatchNorm2d(2), ReLU()), (1, 2, 3, 2)),  # a batch of one
    ],
}

CASES = [
    (name, i)
    for name in [*LAYERS, *PLAN_STEPS]
    for i in range(len(EXAMPLES.get(name) or PLAN_STEPS.get(name) or [None]))
]
LAYER_CASES = [(name, i) for name, i in CASES if name in LAYERS]
CASE_IDS = [f"{name}-{i}" for name, i in CASES]
LAYER_IDS = [f"{name}-{i}" for name, i in LAYER_CASES]


def arguments(name: str, index: int, dtype=np.float64, seed: int = 0, weights: bool = True) -> dict:
    """The constructor arguments of example ``index`` of layer ``name``, with ``rng`` and ``dtype``
    where the constructor takes them (as :func:`stablecnn.nn.layers.from_config` adds them)."""
    examples = EXAMPLES.get(name)
    if not examples:
        pytest.fail(
            f"{name} is registered in LAYERS but has no example in EXAMPLES "
            f"(tests/test_layer_contract.py): add its constructor arguments and an input shape"
        )
    kwargs = dict(examples[index][0])
    rng = np.random.default_rng(seed)
    for key in CONTAINERS.get(LAYERS[name], ()):  # a block's layers, built from their configs
        if key in kwargs:
            kwargs[key] = [
                from_config(c, rng=rng, dtype=dtype, weights=weights) for c in kwargs[key]
            ]
    accepted = inspect.signature(LAYERS[name].__init__).parameters
    if "rng" in accepted:
        kwargs["rng"] = np.random.default_rng(seed)
    if "dtype" in accepted:
        kwargs["dtype"] = dtype
    return kwargs


def build(name: str, index: int, dtype=np.float64, seed: int = 0):
    """Example ``index`` of layer ``name`` with non-trivial parameters, and its input shape."""
    if name in PLAN_STEPS:
        make, shape = PLAN_STEPS[name][index]
        layer = make().astype(dtype)  # a step with parameters holds its layer's, in this dtype
    else:
        layer, shape = LAYERS[name](**arguments(name, index, dtype, seed)), EXAMPLES[name][index][1]
    rng = np.random.default_rng(seed + 100)
    for value in layer.params.values():  # not the ones and zeros of an init: a missing term shows
        value[...] = rng.standard_normal(value.shape) * 0.5
    return layer, shape


def distinct_input(shape, dtype, seed: int = 1) -> np.ndarray:
    """Distinct values, at least ``2 / size`` apart and from 0: no ReLU input and no tie in a
    max-pool window lies within a finite-difference step of a kink."""
    size = int(np.prod(shape))
    ranks = np.random.default_rng(seed).permutation(size) - size / 2 + 0.5
    return (ranks * (4 / size)).reshape(shape).astype(dtype)


def rewinder(layer):
    """A function that puts the layer's buffers back as they are now (Dropout draws the same mask
    again, BatchNorm's running statistics start over)."""
    saved = {name: value.copy() for name, value in layer.buffers.items()}

    def rewind():
        for name, value in saved.items():
            layer.buffers[name][...] = value

    return rewind


def run(layer, x, dout, rewind, **backward):
    """Forward and backward once (after ``rewind()``): the output, dx and a copy of the grads."""
    rewind()
    out = layer.forward(x)
    dx = layer.backward(dout, **backward)
    return out, dx, {name: grad.copy() for name, grad in layer.grads.items()}


def test_every_registered_layer_has_an_example():
    missing = sorted(set(LAYERS) - set(EXAMPLES))
    assert not missing, (
        f"registered layers without an example in EXAMPLES (tests/test_layer_contract.py): "
        f"{missing}; add their constructor arguments and an input shape"
    )
    assert not set(EXAMPLES) - set(LAYERS), "examples of layers that are not registered"


@pytest.mark.parametrize("name,index", CASES, ids=CASE_IDS)
def test_gradients_match_finite_differences(name, index):
    layer, shape = build(name, index)
    x = distinct_input(shape, np.float64)
    dout = np.random.default_rng(2).standard_normal((shape[0], *layer.output_shape(shape[1:])))
    gradcheck_layer(layer, x, dout, prepare=rewinder(layer))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,index", CASES, ids=CASE_IDS)
def test_the_input_dtype_is_kept(name, index, dtype):
    layer, shape = build(name, index, dtype)
    x = distinct_input(shape, dtype)
    out = layer.forward(x)
    assert out.dtype == dtype, f"{layer!r}: output {out.dtype} for a {np.dtype(dtype)} input"
    assert out.shape == (shape[0], *layer.output_shape(shape[1:])), repr(layer)
    dx = layer.backward(np.ones_like(out))
    assert dx.dtype == dtype and dx.shape == x.shape, f"{layer!r}: dx {dx.dtype} {dx.shape}"
    for pname in layer.params:
        for what, array in (("parameter", layer.params[pname]), ("gradient", layer.grads[pname])):
            assert array.dtype == dtype, f"{layer!r}: {what} {pname} is {array.dtype}"
    assert all(np.isfinite(a).all() for a in (out, dx, *layer.grads.values())), repr(layer)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,index", CASES, ids=CASE_IDS)
def test_the_input_gradient_is_skipped_on_request(name, index, dtype):
    layer, shape = build(name, index, dtype)
    x = distinct_input(shape, dtype)
    dout = np.random.default_rng(2).standard_normal((shape[0], *layer.output_shape(shape[1:])))
    dout = dout.astype(dtype)
    rewind = rewinder(layer)
    arrays = dict(layer.grads)
    _, dx, grads = run(layer, x, dout, rewind)
    _, skipped, grads_skipped = run(layer, x, dout, rewind, need_input_grad=False)
    assert dx is not None and skipped is None, f"{layer!r}: need_input_grad=False gave {skipped}"
    assert list(grads_skipped) == list(grads) == list(layer.params), repr(layer)
    for pname, grad in grads.items():  # the parameter gradients are written all the same,
        np.testing.assert_array_equal(grads_skipped[pname], grad, err_msg=f"{layer!r} {pname}")
        assert layer.grads[pname] is arrays[pname], f"{layer!r}: d{pname} is a new array"
        assert np.any(grad != 0), f"{layer!r}: d{pname} is all zeros"  # into the same arrays
    layer.forward(x, training=False)  # evaluation keeps nothing for a backward
    with pytest.raises(RuntimeError, match="backward needs a forward"):
        layer.backward(dout)


@pytest.mark.parametrize("name,index", CASES, ids=CASE_IDS)
def test_backward_leaves_its_gradient_argument_unchanged(name, index):
    # a residual block hands one gradient to both of its paths: a layer that wrote into its
    # dout would change what the other path gets
    layer, shape = build(name, index, np.float32)
    out = layer.forward(distinct_input(shape, np.float32))
    dout = np.random.default_rng(4).standard_normal(out.shape).astype(np.float32)
    before = dout.copy()
    layer.backward(dout)
    np.testing.assert_array_equal(dout, before, err_msg=f"{layer!r} changed its dout")


def misfits(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Gradient shapes that are not ``shape``: another batch, another last axis, the axes
    reversed, one axis fewer and one more (each holds a different number of values or the same
    number in another arrangement: a reshape or a broadcast would take several of them)."""
    wrong = [(shape[0] + 3, *shape[1:]), (*shape[:-1], shape[-1] + 2), shape[:-1], (*shape, 1)]
    if shape[::-1] != shape:
        wrong.append(shape[::-1])
    return wrong


@pytest.mark.parametrize("name,index", CASES, ids=CASE_IDS)
def test_backward_refuses_a_gradient_that_is_not_shaped_as_the_output(name, index):
    layer, shape = build(name, index, np.float32)
    x = distinct_input(shape, np.float32)
    rewind = rewinder(layer)
    out = layer.forward(x)
    dout = np.random.default_rng(5).standard_normal(out.shape).astype(np.float32)
    for wrong in misfits(out.shape):
        message = (
            f"{type(layer).__name__}.backward: the gradient has shape {wrong} but the "
            f"forward's output had {out.shape}"
        )
        with pytest.raises(ShapeError, match=re.escape(message)):
            layer.backward(np.ones(wrong, np.float32))
    with pytest.raises(TypeError, match=r"\.backward: the gradient is float64 .* was float32"):
        layer.backward(dout.astype(np.float64))
    with pytest.raises(TypeError, match=r"\.backward: the gradient must be a NumPy array"):
        layer.backward(dout.tolist())
    dx = layer.backward(dout)  # the forward is still pending: the right gradient is taken
    grads = {key: grad.copy() for key, grad in layer.grads.items()}
    _, expected_dx, expected_grads = run(layer, x, dout, rewind)  # as if none had been refused
    np.testing.assert_array_equal(dx, expected_dx, err_msg=repr(layer))
    for key, grad in expected_grads.items():
        np.testing.assert_array_equal(grads[key], grad, err_msg=f"{layer!r} d{key}")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name,index", CASES, ids=CASE_IDS)
def test_forward_refuses_what_is_not_an_array_and_an_empty_batch(name, index, training):
    layer, shape = build(name, index, np.float32)
    x = distinct_input(shape, np.float32)
    with pytest.raises(TypeError, match=rf"{type(layer).__name__}\.forward takes a NumPy array"):
        layer.forward(x.tolist(), training)
    with pytest.raises(ShapeError, match=r"the batch is empty \(input shape \(0, "):
        layer.forward(x[:0], training)
    assert layer.forward(x, training).shape == (shape[0], *layer.output_shape(shape[1:]))


@pytest.mark.parametrize("name,index", LAYER_CASES, ids=LAYER_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_the_config_rebuilds_the_same_layer(name, index, dtype):
    layer, shape = build(name, index, dtype)
    config = layer.config()
    assert config["type"] == name and json.loads(json.dumps(config)) == config, config
    again = from_config(config, rng=np.random.default_rng(7), dtype=dtype)
    assert type(again) is type(layer) and again.config() == config
    assert repr(again) == repr(layer) and again.dtype == layer.dtype
    assert {k: v.shape for k, v in again.params.items()} == {
        k: v.shape for k, v in layer.params.items()
    }
    for store in ("params", "buffers"):  # the same weights (and Dropout's seed): the same numbers
        for key, value in getattr(layer, store).items():
            getattr(again, store)[key][...] = value
    x = distinct_input(shape, dtype)
    dout = np.random.default_rng(3).standard_normal((shape[0], *layer.output_shape(shape[1:])))
    dout = dout.astype(dtype)
    for a, b, what in zip(
        run(layer, x, dout, lambda: None), run(again, x, dout, lambda: None), ("out", "dx")
    ):
        if isinstance(a, dict):
            for key in a:
                np.testing.assert_array_equal(b[key], a[key], err_msg=f"{name} d{key}")
        else:
            np.testing.assert_array_equal(b, a, err_msg=f"{name} {what}")
    np.testing.assert_array_equal(
        again.forward(x, training=False), layer.forward(x, training=False), err_msg=name
    )


@pytest.mark.parametrize("name,index", CASES, ids=CASE_IDS)
def test_the_repr_names_the_type_and_builds_the_same_layer(name, index):
    layer, _ = build(name, index)
    text = repr(layer)
    block = type(layer) in CONTAINERS  # its layers one to a line, indented
    assert text.startswith(f"{name}(") and text.endswith(")") and ("\n" in text) == block, text
    if name in PLAN_STEPS:  # no config, no constructor of plain values: its layer's arguments
        if hasattr(layer, "pool"):
            pool = layer.pool
            assert f"kernel_size={pool.kernel_size}" in text and f"stride={pool.stride}" in text
        else:  # BNReLU2d: the batch norm's repr, under the step's name
            assert text == repr(layer.bn).replace("BatchNorm2d", name, 1), text
        with pytest.raises(TypeError, match="not a layer of an architecture"):
            layer.config()
        return
    again = eval(text, {"__builtins__": {}}, dict(LAYERS))  # the repr is the constructor call
    assert again.config() == layer.config(), f"{text} builds {again!r}"
    defaults = inspect.signature(LAYERS[name].__init__).parameters
    for key, value in EXAMPLES[name][index][0].items():  # every argument given is shown
        if key in CONTAINERS.get(LAYERS[name], ()):
            assert all(repr(child) in text for child in getattr(layer, key)), (key, text)
        elif value != defaults[key].default:
            shown = str(tuple(value) if isinstance(value, list) else value)
            assert shown in text or str(again.config()[key]) in text, (key, text)


@pytest.mark.parametrize("name,index", LAYER_CASES, ids=LAYER_IDS)
def test_without_weights_knows_everything_but_the_arrays(name, index):
    layer, shape = build(name, index)
    light = LAYERS[name].without_weights(**arguments(name, index, weights=False))
    assert not light.has_weights and light.params == {} and light.grads == {}, repr(light)
    assert light.param_shapes == {k: v.shape for k, v in layer.params.items()}
    assert light.num_params == layer.num_params and light.dtype == layer.dtype
    assert light.config() == layer.config() and repr(light) == repr(layer)
    assert light.output_shape(shape[1:]) == layer.output_shape(shape[1:])
    assert from_config(layer.config(), weights=False).param_shapes == light.param_shapes
    if layer.params:
        with pytest.raises(RuntimeError, match="without weights"):
            light.forward(distinct_input(shape, np.float64))


# -- particular cases: the dtype through a model, errors, reprs -----------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layer_keeps_the_input_dtype(dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 8, 7)).astype(dtype)
    conv, pool, relu, flat = (
        Conv2d(2, 3, 3, rng=rng, dtype=dtype),
        MaxPool2d(2, 1),
        ReLU(),
        Flatten(),
    )
    lin = Linear(3 * 5 * 4, 4, rng=rng, dtype=dtype)
    out = lin.forward(flat.forward(pool.forward(relu.forward(conv.forward(x)))))
    assert out.dtype == dtype
    dx = conv.backward(relu.backward(pool.backward(flat.backward(lin.backward(np.ones_like(out))))))
    assert dx.dtype == dtype
    for layer in (conv, lin):
        assert all(g.dtype == dtype for g in layer.grads.values())


def test_layers_refuse_a_mismatched_dtype_instead_of_computing_in_another():
    conv = Conv2d(1, 2, 3, dtype=np.float64)
    with pytest.raises(TypeError, match="float64.*float32"):
        conv.forward(np.zeros((1, 1, 5, 5), np.float32))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: AvgPool2d(0), "kernel_size"),
        (lambda: AvgPool2d(2, stride=(1, 0)), "stride"),
        (lambda: AvgPool2d(2, padding=-1), "padding"),
        (lambda: AvgPool2d(3, padding=2), "at most half.*2"),
        (lambda: BatchNorm2d(0), "num_features.*0"),
        (lambda: BatchNorm1d(3.5), "num_features.*3.5"),
        (lambda: BatchNorm2d(3, eps=0), "eps.*0"),
        (lambda: BatchNorm2d(3, momentum=1.5), "momentum.*1.5"),
        (lambda: Dropout(1.0), "p must.*1.0"),
        (lambda: Dropout(-0.1), "p must.*-0.1"),
        (lambda: Dropout("0.5"), "p must.*'0.5'"),
        (lambda: LeakyReLU(float("nan")), "negative_slope.*nan"),
        (lambda: LeakyReLU(True), "negative_slope.*True"),
    ],
)
def test_constructors_reject_bad_arguments_by_name(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_shape_errors_name_the_layer_and_the_shapes():
    with pytest.raises(ShapeError, match=r"Conv2d\(1, 2.*3x3.*5x5"):
        Conv2d(1, 2, 5).forward(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ShapeError, match=r"\(N, 3, H, W\).*\(N, 1, 8, 8\)"):
        Conv2d(3, 2, 5).forward(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ShapeError, match=r"\(N, 10\).*\(N, 9\)"):
        Linear(10, 2).forward(np.zeros((1, 9), np.float32))


def test_pool_and_norm_shape_errors_name_the_layer_and_the_shapes():
    with pytest.raises(ShapeError, match=r"BatchNorm2d\(3.*C = 3.*\(N, 4, 5, 5\)"):
        BatchNorm2d(3).forward(np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(3"):
        BatchNorm1d(3).forward(np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(ShapeError, match=r"AvgPool2d.*2x2"):
        AvgPool2d(3).forward(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ShapeError, match=r"GlobalAvgPool2d"):
        GlobalAvgPool2d().forward(np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="float32.*float64"):
        BatchNorm2d(3).forward(np.zeros((2, 3, 4, 4), np.float64))


def test_reprs_read_like_the_architecture():
    assert repr(Conv2d(1, 32, 10)) == "Conv2d(1, 32, kernel_size=(10, 10))"
    assert (
        repr(Conv2d(1, 2, 3, stride=2, padding=1))
        == "Conv2d(1, 2, kernel_size=(3, 3), stride=(2, 2), padding=1)"
    )
    assert repr(MaxPool2d(2, 1)) == "MaxPool2d(kernel_size=(2, 2), stride=(1, 1))"
    assert repr(Linear(3, 4)) == "Linear(in_features=3, out_features=4)"


def test_reprs_read_like_pytorch():
    assert repr(AvgPool2d(2)) == "AvgPool2d(kernel_size=(2, 2), stride=(2, 2))"
    assert (
        repr(AvgPool2d((3, 2), 1, (1, 0)))
        == "AvgPool2d(kernel_size=(3, 2), stride=(1, 1), padding=(1, 0))"
    )
    assert repr(GlobalAvgPool2d()) == "GlobalAvgPool2d()"
    assert repr(BatchNorm2d(16)) == "BatchNorm2d(16, eps=1e-05, momentum=0.1)"
    assert (
        repr(BatchNorm1d(8, eps=1e-3, momentum=0.01)) == "BatchNorm1d(8, eps=0.001, momentum=0.01)"
    )
    assert repr(Dropout()) == "Dropout(p=0.5)"
    assert repr(LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
