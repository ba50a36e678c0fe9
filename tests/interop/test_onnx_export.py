"""Export to ONNX, checked by onnx's own checker and onnxruntime's own outputs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from support.interop import (
    COLOUR,
    GREY,
    every_layer_model,
    images_for,
    pixels_of,
    run_onnxruntime,
    shipped,
)

import stablecnn
from stablecnn.data import Normalizer
from stablecnn.errors import CheckpointError, ConfigError
from stablecnn.interop import build_onnx, compare_onnxruntime, export_onnx
from stablecnn.interop.common import max_opset
from stablecnn.nn.layers import Conv2d, Flatten, Linear, ReLU
from stablecnn.nn.model import Sequential

TOLERANCE = 1e-5  # relative, per image: the bar


def props(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def ops(path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def assert_agrees(model, normalizer, path, images, softmax=False):
    """onnxruntime's outputs within TOLERANCE of stablecnn's on every image, the same classes."""
    agreement = compare_onnxruntime(model, normalizer, path, images, softmax=softmax)
    assert agreement.images == len(images)
    assert agreement.same_class == len(images), agreement
    assert agreement.max_relative <= TOLERANCE, agreement
    return agreement


def test_every_layer_exports_and_onnxruntime_agrees(tmp_path):
    model = every_layer_model()
    path = tmp_path / "every.onnx"
    done = export_onnx(model, path, normalizer=COLOUR)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert done.path == path and done.nbytes == path.stat().st_size
    assert done.input_shape == (None, 3, 15, 13) and done.output_shape == (None, 5)
    assert sorted(set(ops(path))) == sorted(
        {
            "Sub",
            "Div",
            "Conv",
            "BatchNormalization",
            "LeakyRelu",
            "Relu",
            "MaxPool",
            "Add",
            "AveragePool",
            "GlobalAveragePool",
            "Flatten",
            "Gemm",
        }
    )
    assert "Dropout" not in ops(path)  # the identity at inference
    agreement = assert_agrees(model, COLOUR, path, images_for(model, 40))
    assert agreement.max_absolute > 0  # two different engines: the comparison is not vacuous


@pytest.mark.parametrize("name", ["md1", "md2", "md3", "md3cifar"])
def test_shipped_models_agree_with_onnxruntime(tmp_path, name):
    model, normalizer = shipped(name)
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path, normalizer=normalizer)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert_agrees(model, normalizer, path, images_for(model, 48, seed=2))


def test_softmax_outputs_the_probabilities(tmp_path):
    model, normalizer = shipped("md3")
    path = tmp_path / "p.onnx"
    done = export_onnx(model, path, normalizer=normalizer, softmax=True)
    assert done.output_name == "probabilities" and ops(path)[-1] == "Softmax"
    images = images_for(model, 16)
    probs = run_onnxruntime(path, pixels_of(images))
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(probs, model.predict_proba(images, normalizer=normalizer), atol=1e-6)
    assert_agrees(model, normalizer, path, images, softmax=True)


def test_the_batch_axis_is_dynamic(tmp_path):
    model, normalizer = shipped("md2")
    path = tmp_path / "m.onnx"
    export_onnx(model, path, normalizer=normalizer)
    graph = onnx.load(str(path)).graph
    assert graph.input[0].name == "pixels" and graph.output[0].name == "logits"
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    images = images_for(model, 7)
    whole = run_onnxruntime(path, pixels_of(images))
    for n in (1, 3):
        np.testing.assert_allclose(run_onnxruntime(path, pixels_of(images[:n])), whole[:n], 1e-6)


def test_the_normalisation_is_folded_in_per_channel(tmp_path):
    model, _ = shipped("md3cifar")
    path = tmp_path / "c.onnx"
    export_onnx(model, path, normalizer=COLOUR)
    proto = onnx.load(str(path))
    first, second = proto.graph.node[:2]
    assert (first.op_type, second.op_type) == ("Sub", "Div") and first.input[0] == "pixels"
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(consts[first.input[1]].ravel(), COLOUR.mean)
    np.testing.assert_array_equal(consts[second.input[1]].ravel(), COLOUR.std)
    assert consts[first.input[1]].shape == (1, 3, 1, 1)
    # the graph's normalised input is stablecnn's Normalizer's, bit for bit
    images = images_for(model, 4)
    cut = onnx.utils.Extractor(proto).extract_model(["pixels"], [second.output[0]])
    onnx.save(cut, str(tmp_path / "cut.onnx"))
    np.testing.assert_array_equal(
        run_onnxruntime(tmp_path / "cut.onnx", pixels_of(images)), COLOUR(images)
    )


def test_unit_normalisation_is_one_division(tmp_path):
    model, _ = shipped("md1")
    path = tmp_path / "u.onnx"
    export_onnx(model, path, normalizer=Normalizer.unit())
    assert ops(path)[0] == "Div"  # mean 0: no Sub, as the Normalizer does none
    assert_agrees(model, Normalizer.unit(), path, images_for(model, 8))


def test_a_bare_model_without_normaliser_takes_its_input_as_it_is(tmp_path):
    model = Sequential(Flatten(), Linear(12, 3), input_shape=(1, 3, 4))
    path = tmp_path / "bare.onnx"
    done = export_onnx(model, path)
    assert done.normalizer is None and ops(path) == ["Flatten", "Gemm"]
    x = np.random.default_rng(0).normal(size=(5, 1, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(run_onnxruntime(path, x), model.forward(x, False), rtol=1e-6)


def test_metadata_names_the_classes_dataset_accuracy_and_version(tmp_path, checkpoint_of):
    model, _ = shipped("md2")
    ckpt = checkpoint_of(model, GREY, dataset="fashion-mnist", accuracy=0.9123)
    path = tmp_path / "f.onnx"
    export_onnx(ckpt, path)
    found = props(path)
    assert found["dataset"] == "fashion-mnist"
    assert json.loads(found["class_names"])[:2] == ["T-shirt/top", "Trouser"]
    assert float(found["test_accuracy"]) == pytest.approx(0.9123)
    assert found["stablecnn.version"] == stablecnn.__version__
    assert json.loads(found["stablecnn.normalizer"]) == GREY.to_dict()
    assert json.loads(found["stablecnn.architecture"])["layers"] == model.config()["layers"]
    assert "(x - 33) / 78" in found["input"]
    proto = onnx.load(str(path))
    assert proto.producer_name == "stablecnn" and proto.graph.name == "m"
    names = {t.name for t in proto.graph.initializer}  # the checkpoint's names
    assert {"0.weight", "1.running_var", "22.bias"} <= names


def test_a_checkpoint_path_or_run_directory_exports_with_its_normaliser(tmp_path, checkpoint_of):
    model, _ = shipped("md1")
    ckpt = checkpoint_of(model, Normalizer(40.0, 90.0), name="checkpoint.npz")
    done = export_onnx(tmp_path, tmp_path / "run.onnx")  # the run directory
    assert done.normalizer == {"kind": "original", "mean": 40.0, "std": 90.0}
    assert_agrees(model, Normalizer(40.0, 90.0), tmp_path / "run.onnx", images_for(model, 8))
    assert export_onnx(ckpt, tmp_path / "same.onnx").nbytes == done.nbytes


@pytest.mark.parametrize("opset", [13, 17, "newest"])
def test_opsets_from_13_to_the_newest_pass_the_checker(tmp_path, opset):
    opset = max_opset() if opset == "newest" else opset
    model, normalizer = shipped("md3")
    proto, _ = build_onnx(model, opset, softmax=True, normalizer=normalizer)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == opset
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(list(proto.opset_import))


@pytest.mark.parametrize("opset", [12, 0, 10_000, "17"])
def test_an_opset_out_of_range_is_refused(opset):
    with pytest.raises(ConfigError, match="opset must be an int from 13"):
        build_onnx(shipped("md3")[0], opset)


def test_bad_sources_and_arguments_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no input_shape"):
        build_onnx(Sequential(Conv2d(1, 2, 3), ReLU()))
    with pytest.raises(ConfigError, match="statistics of 3 channels but the model takes 1"):
        build_onnx(shipped("md3")[0], normalizer=COLOUR)
    with pytest.raises(ConfigError, match="dtype must be one of"):
        build_onnx(shipped("md3")[0], dtype="float16")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        export_onnx(tmp_path / "none.npz", tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="got list"):
        build_onnx([Conv2d(1, 2, 3)])
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_float64_model_exports_in_float32_or_exactly_in_float64(tmp_path):
    model = every_layer_model(np.float64)
    export_onnx(model, tmp_path / "f32.onnx", normalizer=COLOUR)
    export_onnx(model, tmp_path / "f64.onnx", normalizer=COLOUR, dtype="float64")
    weights = {
        kind: {
            t.name: onnx.numpy_helper.to_array(t)
            for t in onnx.load(str(tmp_path / f"{kind}.onnx")).graph.initializer
        }
        for kind in ("f32", "f64")
    }
    assert weights["f32"]["0.weight"].dtype == np.float32
    np.testing.assert_array_equal(weights["f64"]["0.weight"], model.state_dict()["0.weight"])
    assert_agrees(model, COLOUR, tmp_path / "f32.onnx", images_for(model, 8))
    onnx.checker.check_model(onnx.load(str(tmp_path / "f64.onnx")), full_check=True)
