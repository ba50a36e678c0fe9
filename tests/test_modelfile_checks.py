"""A model file is checked completely before any array is allocated (issue 13, section 2).

Types, ranges, every number finite (initialiser values included), the size limits of
:mod:`stablecnn.nn.modelfile`, keys given twice in JSON as in TOML; every message names the file,
the line and the layer. ``summary`` describes a model from its config alone: tracemalloc (which
NumPy reports its array memory to) proves that no weight is allocated.
"""

from __future__ import annotations

import inspect
import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablecnn import cli
from stablecnn.errors import ModelFileError
from stablecnn.nn import modelfile, modelfile_text, zoo
from stablecnn.nn.layers import LAYERS, BatchNorm2d, Conv2d, Dropout, Linear
from stablecnn.nn.model import Sequential

HUGE = """\
name = "typo"
input_shape = [1, 28, 28]

[[layers]]
type = "Flatten"

[[layers]]
type = "Linear"
in_features = 784
out_features = 1_000_000_000_000
"""

SMALL = """\
input_shape = [1, 8, 8]

[[layers]]
type = "Conv2d"
in_channels = 1
out_channels = 4
kernel_size = 3
weight_init = {type = "TruncatedNormal", std = 0.1}
bias_init = {type = "Constant", value = 0.1}

[[layers]]
type = "BatchNorm2d"
num_features = 4

[[layers]]
type = "LeakyReLU"
negative_slope = 0.1

[[layers]]
type = "Flatten"

[[layers]]
type = "Dropout"
p = 0.5

[[layers]]
type = "Linear"
in_features = 144
out_features = 10
"""
SMALL_LINES = [3, 11, 15, 19, 22, 26]  # the [[layers]] headers above


def write(tmp_path, text, name="model.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error(path, num_classes=None) -> str:
    with pytest.raises(ModelFileError) as info:
        modelfile.load_model_file(path, num_classes=num_classes)
    return str(info.value)


def peak_bytes(run) -> tuple[object, int]:
    """``run()``'s result and the peak of memory traced while it ran (NumPy arrays included)."""
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_tracemalloc_sees_numpy_arrays():
    """The instrument the no-allocation tests rely on: a 4 MiB array shows in the peak."""
    _, peak = peak_bytes(lambda: np.ones(1 << 20, np.float32).sum())
    assert peak >= 4 << 20


# -- the typo: a trillion outputs ------------------------------------------------------------------
def test_a_huge_layer_is_refused_before_any_allocation(tmp_path):
    path = write(tmp_path, HUGE)
    message, peak = peak_bytes(lambda: error(path))
    assert message == (
        f"{path}, line 7, layer 1 (Linear): 785,000,000,000,000 parameters "
        f"(weight (1000000000000, 784), bias (1000000000000,)), more than the "
        f"134,217,728 a layer of a model file may have"
    )
    assert peak < 1 << 20, peak


@pytest.mark.parametrize("command", [["summary"], ["train", "--model"]])
def test_the_cli_refuses_a_huge_layer_in_one_line(tmp_path, capsys, command):
    path = write(tmp_path, HUGE)
    out = tmp_path / "run"
    extra = ["--out", str(out), "--epochs", "1"] if command[0] == "train" else []
    code, peak = peak_bytes(lambda: cli.main([*command, str(path), *extra]))
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err == (
        f"stablecnn: error: {path}, line 7, layer 1 (Linear): "
        f"785,000,000,000,000 parameters (weight (1000000000000, 784), bias "
        f"(1000000000000,)), more than the 134,217,728 a layer of a model "
        f"file may have\n"
    )
    assert peak < 8 << 20, peak  # no weights, no data
    assert not out.exists()


# -- summary: shapes and counts from the config alone ----------------------------------------------
def at_the_limits() -> str:
    """A Linear layer of exactly the per-layer limit, 2**27 parameters, and a model one parameter
    below the model's, 2**28 - 1: 1 GiB of float32 weights, 2 GiB in float64."""
    return json.dumps(
        {
            "input_shape": [8191],
            "layers": [
                {"type": "Linear", "in_features": 8191, "out_features": 16384},
                {"type": "ReLU"},
                {"type": "Linear", "in_features": 16384, "out_features": 8191},
                {"type": "Linear", "in_features": 8191, "out_features": 1},
            ],
        }
    )


def test_a_large_valid_model_is_summarised_without_allocating(tmp_path, capsys):
    layer_limit, model_limit = modelfile.MAX_LAYER_PARAMS, modelfile.MAX_PARAMS
    assert 8191 * 16384 + 16384 == layer_limit and 16384 * 8191 + 8191 + 8192 == layer_limit - 1
    path = write(tmp_path, at_the_limits(), "wide.json")
    model, peak = peak_bytes(lambda: zoo.resolve_model(path, weights=False))
    assert model.num_params == model_limit - 1 == 268_435_455
    assert all(not layer.params and not layer.grads for layer in model.layers)
    assert model.state_dict() == {} and peak < 1 << 20, peak
    assert model.shapes((8191,)) == [(16384,), (16384,), (8191,), (1,)]

    code, peak = peak_bytes(lambda: cli.main(["summary", str(path)]))
    out = capsys.readouterr().out
    assert code == 0 and peak < 2 << 20, peak
    assert "total parameters: 268,435,455 (float32)" in out
    assert "134,217,728" in out and "134,209,535" in out  # the two large layers


def test_one_parameter_over_a_limit_is_refused(tmp_path):
    config = json.loads(at_the_limits())
    config["layers"][0]["out_features"] = 16385  # 8191 * 16385 + 16385 = 2**27 + 8192
    message = error(write(tmp_path, json.dumps(config, indent=1), "over.json"))
    assert "line 6, layer 0 (Linear): 134,225,920 parameters" in message, message
    config = json.loads(at_the_limits())
    config["layers"][3]["out_features"] = 2  # the model: 2**28 + 8191
    message = error(write(tmp_path, json.dumps(config, indent=1), "total.json"))
    assert message.endswith(
        "line 19, layer 3 (Linear): the model reaches 268,443,647 parameters "
        "at this layer, more than the 268,435,456 a model file may have in "
        "all"
    ), message


def test_the_summary_without_weights_is_the_summary_with_them():
    for name in zoo.names():
        config = zoo.config(name)
        full = Sequential.from_config(config, seed=0)
        empty = Sequential.from_config(config, seed=0, weights=False)
        assert empty.summary() == full.summary() and repr(empty) == repr(full)
        assert empty.num_params == full.num_params and empty.dtype == full.dtype
        assert empty.config() == full.config()
        assert not any(layer.params or layer.grads for layer in empty.layers)
        assert all(value.ndim == 0 for value in empty.state_dict().values())  # counters only
        assert zoo.resolve_model(name, weights=False).summary() == full.summary()
    as64 = Sequential.from_config(zoo.config("md2"), dtype=np.float64, weights=False)
    assert as64.summary().endswith("total parameters: 305,130 (float64)")


def test_a_layer_without_weights_refuses_to_run():
    for layer in (
        Linear.without_weights(3, 2),
        Conv2d.without_weights(1, 2, 3),
        BatchNorm2d.without_weights(2),
    ):
        assert (
            layer.has_weights is False
            and not layer.params
            and not layer.buffers.get("running_mean")
        )
        assert (
            layer.num_params
            == type(layer)(
                *{Linear: (3, 2), Conv2d: (1, 2, 3), BatchNorm2d: (2,)}[type(layer)]
            ).num_params
        )
        with pytest.raises(RuntimeError, match="without weights"):
            layer.forward(
                np.zeros(
                    (1, 3)
                    if isinstance(layer, Linear)
                    else (1, 1 + (type(layer) is BatchNorm2d), 5, 5),
                    np.float32,
                )
            )
    assert Linear.without_weights(784, 10**12).num_params == 785 * 10**12  # exact, no overflow
    assert Dropout.without_weights(0.5).buffers["seed"].shape == ()  # scalars are no weights
    assert Linear.without_weights(3, 2).astype(np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="out_features must be a positive int"):
        Linear.without_weights(3, 0)  # the arguments are checked all the same


# -- keys given twice ------------------------------------------------------------------------------
def test_json_keys_given_twice_are_refused_with_their_line(tmp_path):
    text = (
        '{"input_shape": [1, 4, 4],\n'
        ' "layers": [{"type": "Flatten"}, {"type": "Linear", "in_features": 16, '
        '"out_features": 10}],\n'
        ' "layers": [{"type": "Flatten"}, {"type": "Linear", "in_features": 16, '
        '"out_features": 3}]}\n'
    )
    path = write(tmp_path, text, "twice.json")
    assert error(path) == (
        f"{path}, line 3, column 2: the key 'layers' is given twice (first on "
        f"line 2); JSON readers keep only the last, so the file is refused "
        f"(TOML refuses it too)"
    )
    layers = [
        {"type": "Flatten"},
        {"type": "Dropout", "p": 0.1},
        {
            "type": "Linear",
            "in_features": 16,
            "out_features": 10,
            "weight_init": {"type": "HeNormal"},
        },
    ]
    text = json.dumps({"input_shape": [1, 4, 4], "layers": layers}, indent=2)
    repeated = text.replace('"p": 0.1', '"p": 0.1,\n      "p": 0.9')
    first = repeated[: repeated.index('"p": 0.1')].count("\n") + 1
    message = error(write(tmp_path, repeated, "p.json"))
    assert (
        f"p.json, line {first + 1}, column 7, layer 1 (Dropout): the key 'p' is given twice "
        f"(first on line {first})" in message
    ), message
    nested = text.replace('"type": "HeNormal"', '"type": "HeNormal", "type": "HeUniform"')
    message = error(write(tmp_path, nested, "init.json"))
    assert ", layer 2 (Linear): the key 'weight_init.type' is given twice" in message, message


BLOCK = """\
input_shape = [2, 6, 6]

[[layers]]
type = "ReLU"
repeat = 2

[[layers]]
type = "Residual"
body = [
    { type = "Conv2d", in_channels = 2, out_channels = 2, kernel_size = 3, padding = 1 },
    { type = "Conv2d", in_channels = 2, out_channels = 2, kernel_size = 3, padding = 1 },
]
shortcut = [{ type = "Conv2d", in_channels = 2, out_channels = 2, kernel_size = 1 }]

[[layers]]
type = "Flatten"
"""
BLOCK_AS_TABLES = BLOCK.replace(  # the shortcut as a [[layers.shortcut]] table (its line a comment)
    "shortcut = [", "activation = 'ReLU'\n\n[[layers.shortcut]]\ntype = 'ReLU'\n\n# ["
)

TWICE = "a TOML table holds each key once"


@pytest.mark.parametrize(
    "text, old, new, where, first",
    [
        (SMALL, "p = 0.5", "p = 0.5\n^p = 0.9", ", layer 4 (Dropout): the key 'p'", 24),
        (SMALL, "input_shape", "name = 'a'\n^name = 'b'\ninput_shape", ": the key 'name'", 1),
        (SMALL, "[1, 8, 8]", "[1, 8, 8]\n^input_shape = [1, 8, 8]", ": the key 'input_shape'", 1),
        (
            SMALL,
            "std = 0.1}",
            "std = 0.1, ^std = 0.2}",
            ", layer 0 (Conv2d): the key 'weight_init.std'",
            8,
        ),
        (
            SMALL,
            "num_features = 4",
            "num_features = 4\neps = 0.1\n^'num_features' = 4",
            ", layer 1 (BatchNorm2d): the key 'num_features'",
            13,
        ),
        (
            BLOCK,
            "kernel_size = 3, padding = 1 },\n]",
            "kernel_size = 3, padding = 1, ^kernel_size = 5 },\n]",
            ", layer 2 (Residual), body.1 (Conv2d): the key 'kernel_size'",
            11,
        ),
        (
            BLOCK,
            "kernel_size = 1 }",
            "kernel_size = 1, weight_init = {type = 'HeNormal', ^type = 'HeUniform'} }",
            ", layer 2 (Residual), shortcut.0 (Conv2d): the key 'weight_init.type'",
            13,
        ),
        (
            BLOCK,
            '\n\n[[layers]]\ntype = "Flatten"',
            "\n^body = [\n    { type = 'ReLU' },\n]\n\n[[layers]]\ntype = \"Flatten\"",
            ", layer 2 (Residual): the key 'body'",
            9,
        ),
        (
            SMALL,
            "out_features = 10\n",
            "out_features = 10\n^out_features = 10",
            ", layer 5 (Linear): the key 'out_features'",
            29,
        ),
        (
            BLOCK_AS_TABLES,
            "type = 'ReLU'\n",
            "type = 'ReLU'\n^type = 'ReLU'\n",
            ", layer 2 (Residual), shortcut.0 (ReLU): the key 'type'",
            16,
        ),
    ],
    ids=[
        "layer",
        "name",
        "input_shape",
        "initialiser",
        "quoted",
        "block",
        "nested",
        "list",
        "at-the-end",
        "table",
    ],
)
def test_toml_keys_given_twice_name_the_layer_and_the_first(tmp_path, text, old, new, where, first):
    """tomllib says only where it stopped, after the second value; the message names the second
    key (``^`` in ``new``), the layer by its path and the model's index (the ReLU is repeated
    twice, so the block is layer 2), as every other error of a model file, and the first key."""
    assert old in text
    text = text.replace(old, new)
    offset, text = text.index("^"), text.replace("^", "")
    line, column = text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)
    path = write(tmp_path, text)
    assert error(path) == (
        f"{path}, line {line}, column {column}{where} is given twice (first on line {first}); "
        f"{TWICE}"
    )
    modelfile.load_model_file(write(tmp_path, text.replace(new.replace("^", ""), old), "ok.toml"))


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            'weight_init = {type = "TruncatedNormal", std = 0.1}',
            'weight_init = {type = "TruncatedNormal"}\nweight_init.std = 0.1',
            "line 9, column 22: not valid TOML: Cannot mutate immutable namespace",
        ),
        (
            "kernel_size = 3",
            "kernel_size = 3 padding = 1",
            "line 7, column 17: not valid TOML: Expected",
        ),
        (
            '\n\n[[layers]]\ntype = "Flatten"',
            "\n[x]\n[x]",
            "line 19, column 3: not valid TOML: Cannot declare",
        ),
    ],
)
def test_other_toml_errors_keep_tomllib_s_words(tmp_path, old, new, expected):
    """Not a key given twice (a table extended, a missing newline, a table header twice)."""
    path = write(tmp_path, SMALL.replace(old, new))
    assert error(path).startswith(f"{path}, {expected}")


def test_json_names_a_block_s_layer_as_toml_does(tmp_path):
    conv = {"type": "Conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 3, "padding": 1}
    block = {"type": "Residual", "body": [conv, {"type": "ReLU"}, conv]}
    config = {"input_shape": [2, 6, 6], "layers": [{"type": "ReLU", "repeat": 2}, block]}
    text = json.dumps(config)
    text = text[: text.rindex("}]}]}")] + ', "padding": 0}]}]}'
    message = error(write(tmp_path, text, "block.json"))
    assert ", layer 2 (Residual), body.2 (Conv2d): the key 'padding' is given twice" in message


# -- types, ranges and finiteness ------------------------------------------------------------------
@pytest.mark.parametrize(
    "old, new, layer, expected",
    [
        (
            "std = 0.1",
            "std = nan",
            0,
            "weight_init.std is nan: every number in a model file must be finite",
        ),
        ("value = 0.1", "value = -inf", 0, "bias_init.value is -inf"),
        ("num_features = 4", "num_features = 4\neps = nan", 1, "eps is nan"),
        ("negative_slope = 0.1", "negative_slope = inf", 2, "negative_slope is inf"),
        ("p = 0.5", "p = nan", 4, "p is nan"),
        (
            "std = 0.1",
            "std = -0.1",
            0,
            "weight_init: TruncatedNormal: std must be positive, got -0.1",
        ),
        ("std = 0.1", "std = 0.1, cut = 0", 0, "cut must be positive, got 0"),
        ("std = 0.1", 'std = "0.1"', 0, "std must be a number, got '0.1'"),
        ("value = 0.1", "value = 1e39", 0, "value must be finite and within float32's range"),
        ("value = 0.1", "value = true", 0, "value must be a number, got True"),
        (
            'type = "TruncatedNormal", std = 0.1',
            'type = "HeNormal", gain = 0',
            0,
            "HeNormal: gain must be positive, got 0",
        ),
        (
            'type = "Constant", value = 0.1',
            'type = "HeNormal"',
            0,
            "bias_init HeNormal cannot fill the bias: fan-in and fan-out need a weight of at "
            "least 2 dimensions, got (4,)",
        ),
        ("num_features = 4", "num_features = 4\nmomentum = 1.5", 1, "momentum must be in [0, 1]"),
        ("num_features = 4", "num_features = 4\neps = 1e400", 1, "eps is inf"),
        (
            "num_features = 4",
            "num_features = 4\neps = " + "9" * 400,
            1,
            "eps is an integer of 1329 bits: integers in a model file must fit in 64 bits",
        ),
        (
            "negative_slope = 0.1",
            "negative_slope = 9_223_372_036_854_775_808",
            2,
            "negative_slope is an integer of 64 bits",
        ),
        ("p = 0.5", "p = 1", 4, "p must be a probability in [0, 1), got 1"),
        ("kernel_size = 3", "kernel_size = [3, nan]", 0, "kernel_size[1] is nan"),
        ("out_features = 10", "out_features = 10.0", 5, "out_features must be a positive int"),
    ],
)
def test_types_ranges_and_finiteness_name_file_line_and_layer(tmp_path, old, new, layer, expected):
    assert old in SMALL
    path = write(tmp_path, SMALL.replace(old, new, 1))
    kind = ["Conv2d", "BatchNorm2d", "LeakyReLU", "Flatten", "Dropout", "Linear"][layer]
    message = error(path)
    assert message.startswith(f"{path}, line {SMALL_LINES[layer]}, layer {layer} ({kind}): "), (
        message
    )
    assert expected in message, message
    assert "\n" not in message


def test_json_non_finite_literals_are_refused(tmp_path):
    layers = [
        {"type": "Flatten"},
        {
            "type": "Linear",
            "in_features": 16,
            "out_features": 2,
            "bias_init": {"type": "Constant", "value": 0.0},
        },
    ]
    text = json.dumps({"input_shape": [1, 4, 4], "layers": layers}, indent=2)
    line = text[: text.index('"Linear"')].count("\n")  # the line of the layer's brace
    for literal, shown in (("NaN", "nan"), ("Infinity", "inf"), ("-1e999", "-inf")):
        path = write(tmp_path, text.replace('"value": 0.0', f'"value": {literal}'), "nan.json")
        message = error(path)
        assert message.startswith(
            f"{path}, line {line}, layer 1 (Linear): bias_init.value is "
            f"{shown}: every number in a model file must be finite"
        )
    path = write(tmp_path, text.replace('"value": 0.0', f'"value": {10**30}'), "big.json")
    assert "bias_init.value is an integer of 100 bits" in error(path)


def test_a_small_model_file_still_builds_and_trains_its_layers(tmp_path):
    model = zoo.resolve_model(write(tmp_path, SMALL), seed=0, num_classes=10)
    assert model.num_params == 40 + 8 + 1450 and model.layers[0].has_weights
    out = model.forward(np.zeros((2, 1, 8, 8), np.float32))
    assert out.shape == (2, 10) and np.isfinite(out).all()


# -- activation and work limits --------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, where, expected",
    [
        (
            'input_shape = [1, 4096, 4096]\n[[layers]]\ntype = "Flatten"\n',
            ", line 1",
            "input_shape (1, 4096, 4096) holds 16,777,216 values per example, more than the "
            "8,388,608",
        ),
        (
            'input_shape = [1, 512, 512]\n[[layers]]\ntype = "Conv2d"\nin_channels = 1\n'
            'out_channels = 64\nkernel_size = 3\npadding = "same"\n',
            ", line 2, layer 0 (Conv2d)",
            "its output (64, 512, 512) holds 16,777,216 values per example",
        ),
        (
            'input_shape = [1, 28, 28]\n[[layers]]\ntype = "AvgPool2d"\nkernel_size = 200_001\n'
            "padding = 100_000\n",
            ", line 2, layer 0 (AvgPool2d)",
            "its input padded to (1, 200028, 200028) holds 40,011,200,784 values per example",
        ),
        (
            'input_shape = [1, 1, 4194304]\n[[layers]]\ntype = "Conv2d"\nin_channels = 1\n'
            "out_channels = 1\nkernel_size = [1, 2097152]\n",
            ", line 2, layer 0 (Conv2d)",
            "4,398,048,608,256 multiply-adds per example, more than the 2,147,483,648",
        ),
    ],
)
def test_activation_and_work_limits(tmp_path, text, where, expected):
    path = write(tmp_path, text)
    message, peak = peak_bytes(lambda: error(path))
    assert message.startswith(f"{path}{where}: ") and expected in message, message
    assert peak < 1 << 20, peak


def test_file_size_and_nesting_limits(tmp_path):
    big = write(tmp_path, SMALL + "#" * modelfile.MAX_FILE_BYTES)
    assert error(big) == (
        f"{big}: larger than the 1,048,576 bytes a model file may have (md2's "
        f"is about 2 KB); is it a model file?"
    )
    deep = write(tmp_path, '{"input_shape": ' + "[" * 40 + "]" * 40 + "}", "deep.json")
    assert error(deep) == f"{deep}: nested more than 16 levels deep (a model file needs 4)"
    for name, text in (
        ("deeper.json", "[" * 100_000 + "]" * 100_000),
        ("deeper.toml", "a = " + "[" * 100_000 + "]" * 100_000),
    ):
        path = write(tmp_path, text, name)
        assert error(path) == f"{path}: nested too deeply (a model file needs 4 levels)"
    digits = write(tmp_path, '{"input_shape": [' + "9" * 5000 + "]}", "digits.json")
    assert error(digits).startswith(f"{digits}: not valid JSON: ")
    digits = write(tmp_path, "input_shape = [" + "9" * 5000 + "]", "digits.toml")
    assert error(digits).startswith(f"{digits}: not valid TOML: ")
    wide = write(tmp_path, "input_shape = [1, " + "9" * 400 + ', 1]\n[[layers]]\ntype = "ReLU"\n')
    assert error(wide) == (
        f"{wide}, line 1: input_shape[1] is an integer of 1329 bits: integers "
        f"in a model file must fit in 64 bits (as TOML requires)"
    )


# -- the positions the JSON walk finds -------------------------------------------------------------
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


def at(value, path):
    for key in path:
        value = value[key]
    return value


@settings(max_examples=150, deadline=None, database=None)
@given(
    value=VALUES,
    indent=st.sampled_from([None, 0, 1, 4, "\t"]),
    ascii_only=st.booleans(),
    spaces=st.sampled_from([(", ", ": "), (",", ":"), (" ,\r\n", " :\t")]),
)
def test_json_offsets_point_at_every_value(value, indent, ascii_only, spaces):
    """However a JSON text is laid out, the offset found for each path decodes to the value at
    that path, and every value gets one (what the lines in the messages rest on)."""
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only, separators=spaces)
    offsets = modelfile_text._json_offsets(f" \n{text}\n ")
    decoder = json.JSONDecoder()
    for path, offset in offsets.items():
        assert decoder.raw_decode(f" \n{text}\n ", offset)[0] == at(value, path)
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        stack.extend(
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else []
        )
    assert len(offsets) == count


def test_json_offsets_find_the_second_of_two_keys():
    text = '{"a": {"b": 1, "c": [{"d": 2, "d": 3}]}}'
    with pytest.raises(modelfile_text._DuplicateKey) as info:
        modelfile_text._json_offsets(text)
    assert info.value.path == ("a", "c", 0, "d")
    assert (
        text[info.value.first :].startswith('"d": 2') and text[info.value.offset :] == '"d": 3}]}}'
    )


HOSTILE = [
    0,
    -1,
    10**12,
    2**63 - 1,
    2**63,
    10**30,
    1.5,
    float("nan"),
    float("inf"),
    "x",
    [],
    {},
    True,
    None,
    [10**12, 1],
    [1, 2, 3],
    [0, 5],
    {"type": "Constant", "value": 1e30},
    {"type": "TruncatedNormal", "std": float("nan")},
    {"type": "HeNormal", "gain": -1},
]
BASE = {
    "Conv2d": {"in_channels": 3, "out_channels": 4, "kernel_size": 3},
    "Linear": {"in_features": 48, "out_features": 4},
    "MaxPool2d": {"kernel_size": 2},
    "AvgPool2d": {"kernel_size": 2},
    "BatchNorm1d": {"num_features": 48},
    "BatchNorm2d": {"num_features": 3},
}


def test_every_argument_set_to_hostile_values_gives_a_model_file_error_or_a_small_model():
    """Each argument of each layer type, set to each value above: ModelFileError naming the layer,
    or a model within the limits; never another exception, never an allocation (the layers are
    made without weights)."""
    for kind, cls in LAYERS.items():
        names = [n for n in inspect.signature(cls).parameters if n not in ("rng", "dtype")]
        for name in names:
            for value in HOSTILE:
                layer = {"type": kind, **BASE.get(kind, {}), name: value}
                flat = kind in ("Linear", "BatchNorm1d")
                config = {
                    "input_shape": [3, 4, 4],
                    "layers": ([{"type": "Flatten"}] if flat else []) + [layer],
                }
                try:
                    model = modelfile.validate(config, source="hostile")
                except ModelFileError as exc:
                    assert f"layer {int(flat)} ({kind})" in str(exc), (layer, exc)
                    continue
                assert model.num_params <= modelfile.MAX_PARAMS, layer
                assert not any(m.params for m in model.layers)
