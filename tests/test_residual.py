"""Residual networks through the whole model: names, state, config, model files (blocks written
once and repeated, errors naming the line of the layer inside a block), md3 and md3cifar."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stablecnn.errors import ConfigError, ModelFileError, ShapeError
from stablecnn.nn import modelfile, zoo
from stablecnn.nn.layers import (
    BatchNorm2d,
    Conv2d,
    GlobalAvgPool2d,
    Linear,
    ReLU,
    Residual,
    expand_repeats,
)
from stablecnn.nn.model import Sequential
from stablecnn.optim import Adam

# a small ResNet written with [[layers.body]] tables: each layer of a block has its own line
SMALL = """\
name = "small"
input_shape = [2, 8, 8]

[[layers]]
type = "Conv2d"
in_channels = 2
out_channels = 4
kernel_size = 3
padding = 1
bias = false

[[layers]]
type = "Residual"
repeat = 2
activation = "ReLU"

[[layers.body]]
type = "Conv2d"
in_channels = 4
out_channels = 4
kernel_size = 3
padding = 1
bias = false

[[layers.body]]
type = "BatchNorm2d"
num_features = 4

[[layers]]
type = "Residual"

[[layers.body]]
type = "Conv2d"
in_channels = 4
out_channels = 6
kernel_size = 3
stride = 2
padding = 1

[[layers.shortcut]]
type = "Conv2d"
in_channels = 4
out_channels = 6
kernel_size = 1
stride = 2

[[layers]]
type = "GlobalAvgPool2d"

[[layers]]
type = "Linear"
in_features = 6
out_features = 3
"""
SMALL_LINES = {"block 1": 12, "block 1 body.1": 25, "block 2": 29, "block 2 body.0": 32}


def write(tmp_path, text, name="model.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error(path) -> str:
    with pytest.raises(ModelFileError) as info:
        modelfile.load_model_file(path)
    return str(info.value)


def small_model(tmp_path, seed=0, dtype=np.float32) -> Sequential:
    config = modelfile.load_model_file(write(tmp_path, SMALL))
    return Sequential.from_config(config, seed=seed, dtype=dtype)


# -- names, state and config -------------------------------------------------------------------
def test_a_blocks_parameters_have_stable_dotted_names(tmp_path):
    model = small_model(tmp_path)
    names = [name for name, _, _ in model.parameters()]
    assert names == [
        "0.weight",
        "1.body.0.weight",
        "1.body.1.weight",
        "1.body.1.bias",
        "2.body.0.weight",  # repeat = 2 wrote the block out twice: indices 1 and 2
        "2.body.1.weight",
        "2.body.1.bias",
        "3.body.0.weight",
        "3.body.0.bias",
        "3.shortcut.0.weight",
        "3.shortcut.0.bias",
        "5.weight",
        "5.bias",
    ]
    state = model.state_dict()
    assert {"1.body.1.running_mean", "1.body.1.running_var"} <= set(state)
    block = model.layers[3]
    assert state["3.shortcut.0.weight"] is block.shortcut[0].params["weight"]  # the arrays
    for name, param, grad in model.parameters():
        assert param.shape == grad.shape and param is state[name], name


def test_config_rebuilds_the_same_residual_model_and_its_numbers(tmp_path):
    model = small_model(tmp_path, seed=3)
    config = model.config()
    assert json.loads(json.dumps(config)) == config
    assert "repeat" not in json.dumps(config)  # a model's config has every layer written out
    again = Sequential.from_config(config, seed=99)
    again.load_state_dict(model.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 2, 8, 8)).astype(np.float32)
    for m in (model, again):
        m.forward(x)
        m.backward(np.ones((5, 3), np.float32) / 5, need_input_grad=False)
    np.testing.assert_array_equal(again.forward(x, training=False), model.forward(x, False))
    for (name, _, g1), (_, _, g2) in zip(model.parameters(), again.parameters()):
        np.testing.assert_array_equal(g1, g2, err_msg=name)


def test_an_optimizer_steps_a_residual_model_by_name_and_in_place(tmp_path):
    model = small_model(tmp_path)
    optimizer = Adam(model.parameters(), lr=0.01)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(1).standard_normal((4, 2, 8, 8)).astype(np.float32)
    model.forward(x)
    model.backward(np.ones((4, 3), np.float32))
    optimizer.step()
    state = model.state_dict()
    changed = {k for k in state if not np.array_equal(state[k], before[k])}
    weights = {name for name, _, _ in model.parameters()}
    assert weights <= changed, weights - changed  # every weight moved, blocks' included
    slots = {key.rsplit(".", 1)[0] for key in optimizer.state_dict() if key != "steps"}
    assert slots == weights  # the optimizer's state is keyed by the same dotted names


def test_cast_and_reference_kernels_reach_a_blocks_layers(tmp_path):
    model = small_model(tmp_path, dtype=np.float64)
    assert all(p.dtype == np.float64 for _, p, _ in model.parameters())
    x = np.random.default_rng(2).standard_normal((3, 2, 8, 8))
    fast = model.forward(x, training=False)
    model.kernels = "reference"
    assert model.layers[1].body[0].kernels == "reference" and model.kernels == "reference"
    np.testing.assert_allclose(model.forward(x, training=False), fast, rtol=1e-12, atol=1e-12)


def test_summary_and_repr_show_each_layer_of_a_block(tmp_path):
    model = small_model(tmp_path)
    summary = model.summary()
    assert "3             Residual(shortcut=projection)" in summary
    assert "3.shortcut.0    Conv2d(4, 6, kernel_size=(1, 1), stride=(2, 2))" in summary
    assert f"total parameters: {model.num_params:,}" in summary
    rows = [line.split() for line in summary.splitlines() if line[:1].isdigit()]
    tops = sum(int(r[-1].replace(",", "")) for r in rows if "." not in r[0])
    assert tops == model.num_params
    text = repr(model)
    assert "  (3): Residual(\n    body=[\n      Conv2d(4, 6," in text
    rebuilt = eval(repr(model.layers[3]), {}, {c.__name__: c for c in (Conv2d, Residual)})
    assert rebuilt.config() == model.layers[3].config()


def test_expand_repeats_writes_copies_and_refuses_bad_counts():
    layers = [{"type": "ReLU", "repeat": 3}, {"type": "Flatten"}]
    assert expand_repeats(layers) == [{"type": "ReLU"}] * 3 + [{"type": "Flatten"}]
    for bad in (0, -1, 2.0, True, "3", 1001):
        with pytest.raises(ConfigError, match="layer 0: repeat must be an int from 1 to 1000"):
            expand_repeats([{"type": "ReLU", "repeat": bad}])


# -- model files -------------------------------------------------------------------------------
def test_a_block_in_a_model_file_is_written_once_and_repeated(tmp_path):
    config = modelfile.load_model_file(write(tmp_path, SMALL))  # the file as written
    assert config["layers"][1]["repeat"] == 2
    model = Sequential.from_config(config)
    kinds = [layer["type"] for layer in model.config()["layers"]]
    assert kinds == ["Conv2d", "Residual", "Residual", "Residual", "GlobalAvgPool2d", "Linear"]
    assert model.layers[1].config() == model.layers[2].config()
    assert model.layers[1].body[0] is not model.layers[2].body[0]  # copies, with their own weights
    assert not np.array_equal(
        model.layers[1].params["body.0.weight"], model.layers[2].params["body.0.weight"]
    )
    assert model.shapes((2, 8, 8))[3] == (6, 4, 4)


@pytest.mark.parametrize(
    "where,old,new,message",
    [
        (
            "block 1 body.1",
            "num_features = 4\n",
            "num_features = 5\n",
            "layer 1 (Residual), body.1 (BatchNorm2d): does not fit its input (4, 8, 8)",
        ),
        (
            "block 2 body.0",
            "out_channels = 6\nkernel_size = 3\n",
            "out_channels = 6\nkernel_size = 3\ndilation = 2\n",
            "layer 3 (Residual), body.0 (Conv2d): unknown argument(s) ['dilation']",
        ),
        (
            "block 2",  # the sum does not fit: the block's line
            "out_channels = 6\nkernel_size = 1\nstride = 2\n",
            "out_channels = 6\nkernel_size = 1\nstride = 1\n",
            "layer 3 (Residual): does not fit its input (4, 8, 8) (from input_shape (2, 8, 8)): "
            "the body gives (6, 4, 4) but the shortcut gives (6, 8, 8)",
        ),
    ],
)
def test_errors_inside_a_block_name_the_line_and_the_layer(tmp_path, where, old, new, message):
    assert SMALL.count(old) == 1
    path = write(tmp_path, SMALL.replace(old, new))
    text = error(path)
    assert text.startswith(f"{path}, line {SMALL_LINES[where]}, {message}"), text


def test_a_bad_repeat_count_names_its_line(tmp_path):
    path = write(tmp_path, SMALL.replace("repeat = 2", "repeat = 0"))
    assert error(path).startswith(
        f"{path}, line {SMALL_LINES['block 1']}, layer 1 (Residual): repeat must be an int from 1"
    )


def test_an_identity_shortcut_that_cannot_match_says_what_to_add(tmp_path):
    text = SMALL.replace("[[layers.shortcut]]", "[[layers.unused]]").replace(
        'type = "Conv2d"\nin_channels = 4\nout_channels = 6\nkernel_size = 1\nstride = 2\n', ""
    )
    text = text.replace("[[layers.unused]]\n", "")
    path = write(tmp_path, text)
    assert "the identity shortcut gives (4, 8, 8)" in error(path)
    assert "add a projection shortcut" in error(path)


def test_inline_block_layers_take_the_blocks_line_and_json_their_own(tmp_path):
    block = {
        "type": "Residual",
        "body": [
            {"type": "Conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 3, "padding": 1},
            {"type": "BatchNorm2d", "num_features": 3},
        ],
    }
    toml = (
        'input_shape = [2, 6, 6]\n\n[[layers]]\ntype = "Residual"\nbody = [\n'
        '  { type = "Conv2d", in_channels = 2, out_channels = 2, kernel_size = 3, padding = 1 },\n'
        '  { type = "BatchNorm2d", num_features = 3 },\n]\n'
    )
    expected = "layer 0 (Residual), body.1 (BatchNorm2d): does not fit its input (2, 6, 6)"
    path = write(tmp_path, toml)
    assert error(path).startswith(f"{path}, line 3, {expected}")  # the block's [[layers]]
    text = json.dumps({"input_shape": [2, 6, 6], "layers": [block]}, indent=1)
    path = write(tmp_path, text, "model.json")
    line = next(n for n, t in enumerate(text.splitlines(), 1) if '"BatchNorm2d"' in t) - 1  # its {
    assert error(path).startswith(f"{path}, line {line}, {expected}")


def test_a_blocks_layers_are_held_to_the_limits_one_by_one(tmp_path):
    text = SMALL.replace("out_features = 3", "out_features = 3\n").replace(
        "[[layers.shortcut]]",
        '[[layers.body]]\ntype = "Flatten"\n\n[[layers.body]]\n'
        'type = "Linear"\nin_features = 96\nout_features = 2_000_000_000\n\n[[layers.shortcut]]',
    )
    path = write(tmp_path, text)
    assert error(path).startswith(
        f"{path}, line 43, layer 3 (Residual), body.2 (Linear): 194,000,000,000 parameters"
    )
    many = modelfile.load_model_file(write(tmp_path, SMALL.replace("repeat = 2", "repeat = 1000")))
    assert len(Sequential.from_config(many, weights=False).layers) == 1004  # within every limit


def test_a_block_needs_a_list_of_layers(tmp_path):
    text = 'input_shape = [2, 6, 6]\n\n[[layers]]\ntype = "Residual"\nbody = "Conv2d"\n'
    path = write(tmp_path, text)
    assert error(path).startswith(f"{path}, line 3, layer 0 (Residual): body must be a list")
    path = write(tmp_path, 'input_shape = [2, 6, 6]\n\n[[layers]]\ntype = "Residual"\nbody = []\n')
    assert "at least one layer in its body" in error(path)
    text = text.replace('body = "Conv2d"', 'body = [{ type = "ReLU" }]\nactivation = "GELU"')
    path = write(tmp_path, text)
    assert "activation must be one of ['ReLU']" in error(path)


# -- md3 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,shape,params", [("md3", (1, 28, 28), 272_186), ("md3cifar", (3, 32, 32), 272_474)]
)
def test_md3_is_a_resnet20(name, shape, params):
    model = zoo.build(name, seed=0)
    assert model.input_shape == shape and model.num_params == params
    blocks = [layer for layer in model.layers if isinstance(layer, Residual)]
    assert len(blocks) == 9 and all(b.activation == "ReLU" for b in blocks)
    convs3 = [
        layer
        for block in blocks
        for layer in block.body
        if isinstance(layer, Conv2d) and layer.kernel_size == (3, 3)
    ]
    assert len(convs3) + 1 + 1 == 20  # the stem and the classifier: ResNet-20's 20 layers
    assert [b.shortcut != [] for b in blocks] == [False] * 3 + [True, False, False] * 2
    assert all(not conv.bias for conv in convs3)
    assert isinstance(model.layers[-2], GlobalAvgPool2d) and isinstance(model.layers[-1], Linear)
    assert model.shapes(shape)[-3] == (64, shape[1] // 4, shape[2] // 4)
    x = np.random.default_rng(0).integers(0, 256, (2, *shape)).astype(np.float32) / 255
    assert model.forward(x).shape == (2, 10)


def test_a_residual_model_fits_only_its_input():
    model = zoo.build("md3")
    with pytest.raises(ShapeError, match=r"layer 0 .*Conv2d\(1, 16"):
        model.forward(np.zeros((1, 3, 32, 32), np.float32))
    assert isinstance(Residual([ReLU()]), Residual) and BatchNorm2d(2).num_params == 4


# -- training ----------------------------------------------------------------------------------
RESNET_TOY = """\
input_shape = [1, 28, 28]

[[layers]]
type = "Conv2d"
in_channels = 1
out_channels = 4
kernel_size = 3
stride = 2
padding = 1
bias = false

[[layers]]
type = "BatchNorm2d"
num_features = 4

[[layers]]
type = "Residual"
repeat = 2
activation = "ReLU"
body = [
    { type = "Conv2d", in_channels = 4, out_channels = 4, kernel_size = 3, padding = 1 },
    { type = "BatchNorm2d", num_features = 4 },
    { type = "ReLU" },
    { type = "Dropout", p = 0.2 },
]

[[layers]]
type = "Residual"
body = [
  { type = "Conv2d", in_channels = 4, out_channels = 8, kernel_size = 3, stride = 2, padding = 1 },
]
shortcut = [
    { type = "AvgPool2d", kernel_size = 2 },
    { type = "Conv2d", in_channels = 4, out_channels = 8, kernel_size = 1 },
]

[[layers]]
type = "GlobalAvgPool2d"

[[layers]]
type = "Linear"
in_features = 8
out_features = 10
"""


def test_a_residual_model_with_augmentation_resumes_bit_identically(tmp_path):
    """Blocks with batch norm and dropout inside, crops, erasing and label smoothing: a run cut
    mid-epoch and resumed ends with the uninterrupted run's weights, buffers and optimizer
    state, bit for bit."""
    from support.fakes import make_data
    from support.runs import assert_bit_exact, interrupt_at, make_config, make_trainer, state_of

    from stablecnn.training.trainer import Interrupted, resume_checkpoint

    path = write(tmp_path, RESNET_TOY, "resnet.toml")
    augment = {"max_shift": 0, "max_degrees": 0, "random_crop": 2, "random_erasing": 0.5}
    cfg = dict(model=str(path), optimizer="adam", lr=0.01, augment=augment, label_smoothing=0.1)
    data = make_data(30, 0), make_data(10, 1)
    make_trainer(tmp_path / "full", make_config(**cfg), data).fit()
    with pytest.raises(Interrupted):
        make_trainer(tmp_path / "cut", make_config(**cfg), data, callbacks=[interrupt_at(4)]).fit()
    resumed, ckpt = resume_checkpoint(tmp_path / "cut")
    assert ckpt.meta["progress"]["global_step"] == 4
    make_trainer(tmp_path / "cut", resumed, data, checkpoint=ckpt).fit()
    full = state_of(tmp_path / "full")
    # the blocks' weights, batch norm statistics and dropout state are in the comparison
    assert {"param/2.body.0.weight", "param/2.body.1.running_var", "param/1.running_mean"} <= set(
        full
    )
    assert_bit_exact(state_of(tmp_path / "cut"), full)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_blocks_fused_sum_and_relu_are_the_step_by_step_definition_bit_for_bit(dtype):
    """The fast path adds the paths and applies the ReLU in one threaded pass, and adds the two
    input gradients in place; a block whose activation runs on the reference kernels takes the
    step-by-step path (h + s, then ReLU): the same numbers, forward and backward."""
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(dtype)
    results = []
    for step_by_step in (False, True):
        model = zoo.build("md3", seed=0, dtype=dtype)
        for block in model.layers:
            if isinstance(block, Residual) and step_by_step:
                block.act.kernels = "reference"
        out = model.forward(x)
        dx = model.backward(np.cos(out))
        results.append((out, dx, [grad.copy() for _, _, grad in model.parameters()]))
    (out, dx, grads), (out2, dx2, grads2) = results
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(dx, dx2)
    for a, b in zip(grads, grads2):
        np.testing.assert_array_equal(a, b)
