"""Model files: TOML/JSON architectures, the built-in md1 and md2, and errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stablecnn.errors import ModelFileError, StableCNNError
from stablecnn.nn import modelfile, zoo
from stablecnn.nn.layers import Conv2d
from stablecnn.nn.model import Sequential

MODELS = Path(modelfile.__file__).parent / "models"

# md1's config as zoo.MD1 held it when model files arrived: the weights a seed gives must never
# change (the original interface, its pickles and every saved run depend on them)
_W = {
    "weight_init": {"type": "TruncatedNormal", "std": 0.1, "mean": 0.0, "cut": 2.0},
    "bias_init": {"type": "Constant", "value": 0.1},
}
MD1_FROZEN = {
    "input_shape": [1, 28, 28],
    "layers": [
        {"type": "Conv2d", "in_channels": 1, "out_channels": 32, "kernel_size": 10, **_W},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2, "stride": 1},
        {"type": "Conv2d", "in_channels": 32, "out_channels": 16, "kernel_size": 5, **_W},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2, "stride": 1},
        {"type": "Flatten"},
        {"type": "Linear", "in_features": 13 * 13 * 16, "out_features": 1024, **_W},
        {"type": "ReLU"},
        {"type": "Linear", "in_features": 1024, "out_features": 10, **_W},
    ],
}

TINY = """\
name = "tiny"
input_shape = [1, 12, 12]

[[layers]]
type = "Conv2d"
in_channels = 1
out_channels = 4
kernel_size = 3
padding = "same"
weight_init = { type = "HeNormal" }

[[layers]]   # a comment after the header
type = "ReLU"

[[layers]]
type = "MaxPool2d"
kernel_size = 2

[[layers]]
type = "Flatten"

[[layers]]
type = "Linear"
in_features = 144
out_features = 10
"""
TINY_LINES = [4, 12, 15, 19, 22]  # the line of each [[layers]] header above


def write(tmp_path, text, name="model.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def same_weights(a: Sequential, b: Sequential) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]) for k in sa
    )


def error(path, num_classes=None) -> str:
    with pytest.raises(ModelFileError) as info:
        modelfile.load_model_file(path, num_classes=num_classes)
    return str(info.value)


# -- md1 and md2 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed, dtype", [(0, np.float32), (7, np.float64)])
def test_md1_weights_are_unchanged_from_the_frozen_config(seed, dtype):
    frozen = Sequential.from_config(MD1_FROZEN, seed=seed, dtype=dtype)
    assert same_weights(zoo.build("md1", seed=seed, dtype=dtype), frozen)
    assert same_weights(zoo.resolve_model("md1", seed=seed, dtype=dtype), frozen)


def test_md1_toml_builds_the_same_weights_as_zoo_md1():
    path = MODELS / "md1.toml"
    config = modelfile.load_model_file(path)
    assert config["layers"] == MD1_FROZEN["layers"]
    assert config["input_shape"] == MD1_FROZEN["input_shape"]
    assert same_weights(zoo.resolve_model(path, seed=3), zoo.build("md1", seed=3))
    assert same_weights(zoo.resolve_model(str(path), seed=3), zoo.build("md1", seed=3))


def test_md2_is_a_deeper_cnn_shipped_as_a_model_file():
    assert "md2" in zoo.names() and (MODELS / "md2.toml").is_file()
    model = zoo.build("md2", seed=0)
    kinds = [type(layer).__name__ for layer in model.layers]
    convs = [layer for layer in model.layers if isinstance(layer, Conv2d)]
    assert len(convs) >= 6 and all(c.kernel_size == (3, 3) for c in convs)
    assert kinds.count("BatchNorm2d") == len(convs)
    assert kinds.count("MaxPool2d") == 2 and "Dropout" in kinds and kinds[-1] == "Linear"
    assert model.shapes((1, 28, 28))[-1] == (10,)
    assert model.num_params == 305_130
    assert same_weights(model, zoo.resolve_model(MODELS / "md2.toml", seed=0))
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    for training in (False, True):  # the training pass last, for backward
        out = model.forward(x, training=training)
        assert out.shape == (3, 10) and out.dtype == np.float32 and np.isfinite(out).all()
    assert model.backward(np.ones((3, 10), np.float32)).shape == x.shape


def test_md2_summary_and_the_summary_command(capsys):
    text = zoo.build("md2").summary()
    assert "(128, 7, 7)" in text and "total parameters: 305,130" in text
    from stablecnn.cli import main

    assert main(["summary", "md2"]) == 0
    assert "305,130" in capsys.readouterr().out


def test_summary_command_takes_a_model_file(tmp_path, capsys):
    from stablecnn.cli import main

    assert main(["summary", str(write(tmp_path, TINY))]) == 0
    out = capsys.readouterr().out
    assert "(4, 12, 12)" in out and "(10,)" in out
    assert main(["summary", str(write(tmp_path, TINY.replace("144", "100"), "bad.toml"))]) == 2
    err = capsys.readouterr().err
    assert "bad.toml, line 22, layer 4 (Linear)" in err


def test_unknown_builtin_name():
    with pytest.raises(ValueError, match="md1, md1he, md2"):
        zoo.build("md9")
    with pytest.raises(ModelFileError, match="not a built-in"):
        zoo.resolve_model("md9")


# -- reading files ---------------------------------------------------------------------------------
def test_toml_and_json_build_the_same_model(tmp_path):
    toml = modelfile.load_model_file(write(tmp_path, TINY))
    assert toml["name"] == "tiny" and len(toml["layers"]) == 5
    as_json = json.dumps({"input_shape": toml["input_shape"], "layers": toml["layers"]}, indent=2)
    path = write(tmp_path, as_json, "tiny.json")
    assert modelfile.load_model_file(path)["layers"] == toml["layers"]
    a = zoo.resolve_model(path, seed=1, dtype=np.float64)
    b = zoo.resolve_model(tmp_path / "model.toml", seed=1, dtype=np.float64)
    assert same_weights(a, b) and a.dtype == np.float64
    assert a.forward(np.zeros((2, 1, 12, 12))).shape == (2, 10)


def test_a_model_file_round_trips_through_model_config(tmp_path):
    model = zoo.resolve_model(write(tmp_path, TINY), seed=2)
    path = write(tmp_path, json.dumps(model.config()), "again.json")
    assert same_weights(zoo.resolve_model(path, seed=2), model)


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("gone.toml", None, "no such model file"),
        ("model.yaml", "x: 1", "ends in .toml or .json"),
    ],
)
def test_file_problems(tmp_path, name, text, expected):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    message = error(path)
    assert str(path) in message and expected in message


# -- errors name the file, the line and the layer --------------------------------------------------
@pytest.mark.parametrize(
    "old, new, layer, line, expected",
    [
        ('type = "ReLU"', 'type = "Relu"', "layer 1 (Relu)", 12, "unknown layer type 'Relu'"),
        (
            "kernel_size = 2",
            "kernal_size = 2",
            "layer 2 (MaxPool2d)",
            15,
            "unknown argument(s) ['kernal_size']",
        ),
        ("out_channels = 4\n", "", "layer 0 (Conv2d)", 4, "missing argument(s) ['out_channels']"),
        ('padding = "same"', 'padding = "SAME"', "layer 0 (Conv2d)", 4, "'SAME'"),
        ("in_channels = 1", "in_channels = 1.5", "layer 0 (Conv2d)", 4, "in_channels must be"),
        ("kernel_size = 3", 'kernel_size = "3"', "layer 0 (Conv2d)", 4, "kernel_size must be"),
        (
            'weight_init = { type = "HeNormal" }',
            'weight_init = "HeNormal"',
            "layer 0 (Conv2d)",
            4,
            "weight_init must be an initialiser table",
        ),
        (
            'weight_init = { type = "HeNormal" }',
            'weight_init = { type = "Kaiming" }',
            "layer 0 (Conv2d)",
            4,
            "unknown initialiser 'Kaiming'",
        ),
        (
            'weight_init = { type = "HeNormal" }',
            'weight_init = { type = "HeNormal", std = 1 }',
            "layer 0 (Conv2d)",
            4,
            "std",
        ),
        (
            "in_features = 144",
            "in_features = 100",
            "layer 4 (Linear)",
            22,
            "does not fit its input (144,)",
        ),
        (
            "in_channels = 1",
            "in_channels = 3",
            "layer 0 (Conv2d)",
            4,
            "does not fit its input (1, 12, 12)",
        ),
        ('type = "Flatten"', 'type = "Flatten"\nrng = 3', "layer 3 (Flatten)", 19, "cannot be set"),
    ],
)
def test_layer_errors_name_file_line_and_layer(tmp_path, old, new, layer, line, expected):
    assert old in TINY
    path = write(tmp_path, TINY.replace(old, new, 1))
    message = error(path)
    assert message.startswith(f"{path}, line {line}, {layer}: "), message
    assert expected in message, message


def test_the_lines_follow_the_headers(tmp_path):
    text = TINY.replace('[[layers]]\ntype = "Flatten"', '\n\n[[layers]]\ntype = "Flatten"')
    text = text.replace("in_features = 144", "in_features = 7")
    assert error(write(tmp_path, text)).startswith(f"{tmp_path / 'model.toml'}, line 24, layer 4")


def test_shape_error_deep_inside_md2_names_its_line(tmp_path):
    text = (MODELS / "md2.toml").read_text()
    text = text.replace(
        "in_channels = 64\nout_channels = 128", "in_channels = 64\nout_channels = 96"
    )
    headers = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith("[[layers]]")]
    message = error(write(tmp_path, text))
    assert f"line {headers[15]}, layer 15 (BatchNorm2d)" in message, message
    assert "(96, 7, 7)" in message


def test_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, TINY.replace("out_channels = 4", "out_channels = "))
    assert error(path).startswith(f"{path}, line 7, column 16: not valid TOML: ")
    path = write(tmp_path, '{"input_shape": [1, 4, 4],\n "layers": [}', "bad.json")
    assert error(path).startswith(f"{path}, line 2, column 13: not valid JSON: ")


@pytest.mark.parametrize(
    "old, new, where, expected",
    [
        ("input_shape = [1, 12, 12]\n", "", "", "no input_shape"),
        (
            "input_shape = [1, 12, 12]",
            "input_shape = [1, 0, 12]",
            ", line 2",
            "input_shape must be",
        ),
        ("input_shape = [1, 12, 12]", "input_shape = 28", ", line 2", "input_shape must be"),
        ('name = "tiny"', 'nmae = "tiny"', ", line 1", "unknown top-level key(s) ['nmae']"),
        ('name = "tiny"', "name = 3", ", line 1", "name must be a string"),
        ('name = "tiny"', "description = [1]", ", line 1", "description must be a string"),
    ],
)
def test_model_level_errors_name_the_file_and_line(tmp_path, old, new, where, expected):
    path = write(tmp_path, TINY.replace(old, new))
    message = error(path)
    assert message.startswith(f"{path}{where}: ") and expected in message, message


def test_a_file_without_layers(tmp_path):
    assert "no layers" in error(write(tmp_path, "input_shape = [1, 28, 28]\n"))


def test_a_layer_without_type(tmp_path):
    path = write(tmp_path, TINY.replace('type = "MaxPool2d"\n', ""))
    assert error(path).startswith(f"{path}, line 15, layer 2: no type")


def test_num_classes_is_checked_when_given(tmp_path):
    path = write(tmp_path, TINY)
    assert modelfile.load_model_file(path, num_classes=10)
    assert "line 22, layer 4 (Linear): the model ends in shape (10,)" in error(path, 7)
    with pytest.raises(ModelFileError, match="ends in shape"):
        zoo.resolve_model("md1", num_classes=3)


def test_json_errors_name_the_line_of_the_layer(tmp_path):
    layers = modelfile.load_model_file(write(tmp_path, TINY))["layers"]
    layers[4]["in_features"] = 99
    text = json.dumps({"name": "tiny", "input_shape": [1, 12, 12], "layers": layers}, indent=2)
    line = next(n for n, s in enumerate(text.splitlines(), 1) if '"Linear"' in s) - 1  # its '{'
    path = write(tmp_path, text, "tiny.json")
    assert error(path).startswith(f"{path}, line {line}, layer 4 (Linear): does not fit")


def test_inline_layer_arrays_still_name_the_layer(tmp_path):
    text = (
        'input_shape = [1, 4, 4]\nlayers = [\n  {type = "Flatten"},\n'
        '  {type = "Linear", in_features = 15, out_features = 2},\n]\n'
    )
    path = write(tmp_path, text)
    assert error(path).startswith(f"{path}, layer 1 (Linear): does not fit")


def test_errors_are_stablecnn_value_errors(tmp_path):
    with pytest.raises(StableCNNError):
        modelfile.load_model_file(write(tmp_path, "input_shape = [1, 28, 28]\n"))
    with pytest.raises(ValueError):
        modelfile.load_model_file(write(tmp_path, "input_shape = [1, 28, 28]\n"))


def test_md1he_is_model_1s_architecture_with_he_init():
    md1, md1he = zoo.build("md1"), zoo.build("md1he")
    assert md1.shapes((1, 28, 28)) == md1he.shapes((1, 28, 28))
    assert [repr(a) for a in md1.layers] == [repr(b) for b in md1he.layers]
    w = md1he.state_dict()["7.weight"]  # fan-in 2704: He std sqrt(2/2704) = 0.0272
    assert abs(float(w.std()) - (2 / 2704) ** 0.5) < 0.001
    assert all(not md1he.state_dict()[k].any() for k in md1he.state_dict() if k.endswith("bias"))
