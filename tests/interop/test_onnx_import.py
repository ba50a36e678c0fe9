"""Import from ONNX: the round trip is bit-identical; the subset is imported; the rest refused
by node, op and attribute."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.interop import COLOUR, GREY, every_layer_model, images_for, run_onnxruntime, shipped

from stablecnn.data import Normalizer
from stablecnn.errors import ConfigError, ModelFileError
from stablecnn.interop import export_onnx, import_onnx
from stablecnn.nn import modelfile
from stablecnn.training import checkpoint


def assert_same_model(a, b):
    """The same architecture, every parameter and float buffer bit for bit."""
    assert a.config() == b.config()
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for name in sa:
        if sa[name].dtype.kind == "f":
            assert sa[name].dtype == sb[name].dtype, name
            np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)


@pytest.mark.parametrize("name", ["md1", "md2", "md3", "md3cifar", "every"])
def test_round_trip_is_bit_identical(tmp_path, name):
    if name == "every":
        model, normalizer = every_layer_model(), COLOUR
    else:
        model, normalizer = shipped(name)
    export_onnx(model, tmp_path / "m.onnx", normalizer=normalizer)
    back = import_onnx(tmp_path / "m.onnx")
    assert back.notes == []
    assert_same_model(model, back.model)
    assert back.normalizer == normalizer
    images = images_for(model, 12)
    ours = model.predict_proba(images, normalizer=normalizer)
    np.testing.assert_array_equal(
        back.model.predict_proba(images, normalizer=back.normalizer), ours
    )


def test_round_trip_through_the_saved_files(tmp_path):
    model, normalizer = shipped("md2")
    export_onnx(model, tmp_path / "m.onnx", normalizer=normalizer, dataset="fashion-mnist")
    model_path, ckpt_path = import_onnx(tmp_path / "m.onnx").save(tmp_path / "out")
    assert modelfile.load_model_file(model_path)["layers"] == model.config()["layers"]
    loaded, ckpt = checkpoint.load_model(ckpt_path)
    assert_same_model(model, loaded)
    assert ckpt.meta["normalizer"] == normalizer.to_dict()
    assert ckpt.meta["train"]["dataset"] == "fashion-mnist"  # predict names the classes by it
    assert ckpt.meta["imported"]["class_names"][0] == "T-shirt/top"
    with pytest.raises(ConfigError, match="exists"):
        import_onnx(tmp_path / "m.onnx").save(tmp_path / "out")
    ckpt_path.unlink()  # a model file alone is not replaced unasked either
    with pytest.raises(ConfigError, match=f"{model_path} exists"):
        import_onnx(tmp_path / "m.onnx").save(tmp_path / "out")
    assert not ckpt_path.exists()


def test_without_its_records_the_graph_alone_gives_the_same_outputs(tmp_path):
    """A file stripped of stablecnn's metadata (or made elsewhere) is imported from the graph:
    Dropout is gone (the graph has none) and "same" is spelled as numbers; the weights and
    outputs are still the same bits."""
    model, normalizer = shipped("md2")
    export_onnx(model, tmp_path / "m.onnx", normalizer=normalizer)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    back = import_onnx(tmp_path / "bare.onnx")
    kinds = [layer["type"] for layer in back.config["layers"]]
    assert "Dropout" not in kinds and len(kinds) == len(model.layers) - 2
    assert back.config["layers"][0]["padding"] == 1
    images = images_for(model, 12)
    np.testing.assert_array_equal(
        back.model.predict_proba(images, normalizer=back.normalizer),
        model.predict_proba(images, normalizer=normalizer),
    )


def test_a_record_that_contradicts_the_graph_is_ignored(tmp_path):
    model, normalizer = shipped("md3")
    export_onnx(model, tmp_path / "m.onnx", normalizer=normalizer)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    for prop in proto.metadata_props:
        if prop.key == "stablecnn.architecture":
            record = json.loads(prop.value)
            record["layers"][0]["padding"] = 0  # no longer what the graph computes
            prop.value = json.dumps(record)
        if prop.key == "stablecnn.normalizer":
            prop.value = json.dumps({"kind": "unit", "mean": 0.0, "std": 255.0})
    onnx.save(proto, str(tmp_path / "edited.onnx"))
    back = import_onnx(tmp_path / "edited.onnx")
    assert any("does not describe its graph" in note for note in back.notes)
    assert any("normalizer record does not match" in note for note in back.notes)
    assert back.model.config()["layers"][0]["padding"] == 1  # the graph's
    assert back.normalizer == normalizer


# -- graphs made by hand ----------------------------------------------------------------------
def write(tmp_path, nodes, inits=(), shape=(1, 4, 4), output="y", opset=17, name="g.onnx"):
    """A one-input graph of ``nodes`` on input ``x`` (N, *shape), saved to ``name``."""
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.asarray(v, np.float32 if k != "shape" else np.int64), k)
            for k, v in inits
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def conv_node(**attrs):
    return helper.make_node("Conv", ["x", "w"], ["c"], name="conv", **attrs)


W = ("w", np.ones((2, 1, 3, 3)))
TAIL = [helper.make_node("Flatten", ["c"], ["y"], name="flat")]

REFUSED = {
    "group": ([conv_node(group=2)], [W], "node 0 'conv' (Conv): attribute group = 2"),
    "dilations": ([conv_node(dilations=[2, 2])], [W], "attribute dilations = [2, 2]"),
    "pads": ([conv_node(pads=[1, 0, 0, 0])], [W], "attribute pads = [1, 0, 0, 0]"),
    "unknown attribute": ([conv_node(foo=1)], [W], "attribute 'foo' is not supported"),
    "missing weight": (
        [helper.make_node("Conv", ["x", "nowhere"], ["c"])],
        [],
        "its weight 'nowhere' (input 1) is made nowhere; stablecnn takes it only as a constant",
    ),
    "computed weight": (
        [
            helper.make_node("Relu", ["w"], ["r"]),
            helper.make_node("Conv", ["x", "r"], ["c"], name="c"),
        ],
        [W],
        "node 1 'c' (Conv): its weight 'r' (input 1) is computed by the graph",
    ),
    "op": (
        [helper.make_node("Sigmoid", ["x"], ["c"], name="s")],
        [],
        "node 0 's' (Sigmoid): op Sigmoid is not supported",
    ),
    "max pool pads": (
        [helper.make_node("MaxPool", ["x"], ["c"], kernel_shape=[2, 2], pads=[1, 1, 1, 1])],
        [],
        "(MaxPool): attribute pads = [1, 1, 1, 1] is not supported",
    ),
    "ceil mode": (
        [
            helper.make_node(
                "MaxPool", ["x"], ["c"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1
            )
        ],
        [],
        "attribute ceil_mode = 1",
    ),
    "count_include_pad": (
        [helper.make_node("AveragePool", ["x"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        [],
        "attribute count_include_pad = 0",
    ),
    "training batch norm": (
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["c"], training_mode=1)],
        [("s", [1.0]), ("b", [0.0]), ("m", [0.0]), ("v", [1.0])],
        "attribute training_mode = 1",
    ),
    "gemm alpha": (
        [
            helper.make_node("Flatten", ["x"], ["f"]),
            helper.make_node("Gemm", ["f", "g"], ["y"], alpha=2.0, transB=1),
        ],
        [("g", np.ones((3, 16)))],
        "(Gemm): attribute alpha = 2.0",
    ),
    "three readers": (
        [
            helper.make_node("Relu", ["x"], ["r"], name="r"),
            helper.make_node("Relu", ["r"], ["a"]),
            helper.make_node("Relu", ["r"], ["b"]),
            helper.make_node("Relu", ["r"], ["d"]),
        ],
        [],
        "node 0 'r' (Relu): its output 'r' is read by 3 nodes",
    ),
    "concat join": (
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("Relu", ["x"], ["b"]),
            helper.make_node("Concat", ["a", "b"], ["c"], axis=1, name="cat"),
        ],
        [],
        "node 2 'cat' (Concat): joins the two paths from 'x'; stablecnn joins paths only by",
    ),
    "custom domain": (
        [helper.make_node("Fancy", ["x"], ["c"], domain="com.example")],
        [],
        "op 'Fancy' of domain 'com.example' is not supported",
    ),
    "front constant": (
        [helper.make_node("Sub", ["x", "m"], ["c"], name="sub")],
        [("m", [1.0, 2.0, 3.0])],
        "node 0 'sub' (Sub): its constant of shape (3,) (float32) is not one value or one per "
        "channel",
    ),
    "a loop back to the input": (
        [
            helper.make_node("Identity", ["r"], ["x"], name="back"),
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Flatten", ["r"], ["y"]),
        ],
        [],
        "node 0 'back' (Identity): makes the graph's input 'x'",
    ),
    "reshape": (
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [("shape", [-1, 4, 4])],
        "(Reshape): reshapes (N, 1, 4, 4) to [-1, 4, 4]",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_anything_outside_the_subset_is_refused_by_node_op_and_attribute(tmp_path, case):
    nodes, inits, message = REFUSED[case]
    last = nodes[-1].output[0]
    tail = [] if last == "y" else [helper.make_node("Flatten", [last], ["y"])]
    path = write(tmp_path, nodes + tail, inits, shape=(1, 4, 4) if case != "pads" else (1, 5, 5))
    with pytest.raises(ModelFileError, match="g.onnx: ") as info:
        import_onnx(path)
    assert message in str(info.value)


def test_inputs_stablecnn_cannot_take_are_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "h.onnx"))
    with pytest.raises(ModelFileError, match=r"input 'x' has shape \['N', 1, 'H', 28\]"):
        import_onnx(tmp_path / "h.onnx")
    with pytest.raises(ModelFileError, match="opset 8 of ONNX's domain"):
        import_onnx(write(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], opset=8))


def test_what_the_subset_holds_imports_and_computes_as_onnxruntime(tmp_path):
    """The forms other tools write: SAME_UPPER, MatMul + Add, ReduceMean, Reshape to (N, -1),
    Div then Sub then Div at the input, Identity, inference Dropout, a final Softmax."""
    rng = np.random.default_rng(0)
    w, k = rng.normal(size=(4, 1, 2, 2)), rng.normal(size=(4, 3))
    nodes = [
        helper.make_node("Div", ["x", "s255"], ["u"]),
        helper.make_node("Sub", ["u", "m"], ["v"]),
        helper.make_node("Div", ["v", "sd"], ["n"]),
        helper.make_node("Conv", ["n", "w"], ["c"], auto_pad="SAME_UPPER"),
        helper.make_node("Identity", ["c"], ["i"]),
        helper.make_node("LeakyRelu", ["i"], ["r"], alpha=0.2),
        helper.make_node("ReduceMean", ["r", "axes"], ["p"], keepdims=0),
        helper.make_node("Dropout", ["p"], ["d"]),
        helper.make_node("MatMul", ["d", "k"], ["mm"]),
        helper.make_node("Add", ["mm", "kb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    inits = [("s255", 255.0), ("m", 0.1307), ("sd", 0.3081), ("w", w), ("k", k), ("kb", [1, 2, 3])]
    path = write(tmp_path, nodes, inits, shape=(1, 6, 5))
    proto = onnx.load(str(path))
    proto.graph.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    proto.opset_import[0].version = 18
    onnx.save(proto, str(path))
    back = import_onnx(path)
    kinds = [layer["type"] for layer in back.config["layers"]]
    assert kinds == ["Conv2d", "LeakyReLU", "GlobalAvgPool2d", "Dropout", "Linear"]
    assert back.config["layers"][0]["padding"] == "same"
    assert back.config["layers"][1]["negative_slope"] == 0.2
    assert any("Softmax, which was left out" in note for note in back.notes)
    assert any("composed into (x - mean) / std" in note for note in back.notes)
    assert back.normalizer.mean == pytest.approx(0.1307 * 255, rel=1e-6)
    assert back.normalizer.std == pytest.approx(0.3081 * 255, rel=1e-6)
    images = rng.integers(0, 256, (9, 6, 5), dtype=np.uint8)
    theirs = run_onnxruntime(path, images[:, None].astype(np.float32))
    np.testing.assert_allclose(
        back.model.predict_proba(images, normalizer=back.normalizer), theirs, rtol=1e-5
    )


def test_a_graph_without_normalisation_takes_a_given_normaliser(tmp_path):
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "g"], ["y"])]
    path = write(tmp_path, nodes, [("g", np.ones((16, 3)))])  # transB=0: weight is (in, out)
    back = import_onnx(path)
    assert back.normalizer == Normalizer(0.0, 1.0) and "pixels in [0, 255] as" in back.notes[0]
    assert back.model.state_dict()["1.weight"].shape == (3, 16)
    given = import_onnx(path, normalizer=GREY)
    assert given.normalizer == GREY and given.notes == []
    export_onnx(shipped("md3")[0], tmp_path / "n.onnx", normalizer=GREY)
    with pytest.raises(ConfigError, match="normalises its input itself"):
        import_onnx(tmp_path / "n.onnx", normalizer=GREY)


def test_a_residual_join_with_its_relu_becomes_one_block(tmp_path):
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["h"]),
        helper.make_node("Conv", ["h", "w2"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["x", "b"], ["s"]),  # the body on the Add's second input
        helper.make_node("Relu", ["s"], ["o"]),
        helper.make_node("Flatten", ["o"], ["y"]),
    ]
    inits = [("w1", rng.normal(size=(2, 2, 3, 3))), ("w2", rng.normal(size=(2, 2, 3, 3)))]
    path = write(tmp_path, nodes, inits, shape=(2, 4, 4))
    back = import_onnx(path)
    (block, flatten) = back.config["layers"]
    assert block["type"] == "Residual" and block["activation"] == "ReLU"
    assert [layer["type"] for layer in block["body"]] == ["Conv2d", "ReLU", "Conv2d"]
    assert "shortcut" not in block and flatten["type"] == "Flatten"
    x = rng.integers(0, 256, (3, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(back.model.forward(x, False), run_onnxruntime(path, x), rtol=1e-5)
