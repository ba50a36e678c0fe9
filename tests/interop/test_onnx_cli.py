"""``stablecnn export-onnx`` and ``import-onnx``: what they write and print, what they refuse
to replace or cannot write, and what a user without the onnx package is told."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from support.interop import GREY, images_for, shipped

from stablecnn import cli
from stablecnn.interop import Agreement, export_onnx
from stablecnn.training import checkpoint


@pytest.fixture
def exported(tmp_path, checkpoint_of):
    """A checkpoint of md3 on Fashion-MNIST and its export."""
    model, _ = shipped("md3")
    ckpt = checkpoint_of(model, GREY, dataset="fashion-mnist")
    export_onnx(ckpt, tmp_path / "md3.onnx")
    return ckpt, tmp_path / "md3.onnx", model


def test_export_onnx_writes_a_checked_file_and_says_what_it_takes(tmp_path, exported, capsys):
    ckpt, _, _ = exported
    out = tmp_path / "cli.onnx"
    assert cli.main(["export-onnx", str(ckpt), str(out), "--opset", "13", "--softmax"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (opset 13," in printed
    assert "input 'pixels' float32 (N, 1, 28, 28) in [0, 255]" in printed
    assert "normalised in the graph by (x - 33) / 78; output 'probabilities' (N, 10)" in printed
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 13 and proto.graph.node[-1].op_type == "Softmax"


def test_export_onnx_refuses_a_bad_opset(tmp_path, exported, capsys):
    ckpt, _, _ = exported
    assert cli.main(["export-onnx", str(ckpt), str(tmp_path / "x.onnx"), "--opset", "12"]) == 2
    assert "opset must be an int from 13" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_export_onnx_replaces_an_existing_file_only_with_overwrite(tmp_path, exported, capsys):
    ckpt, path, _ = exported
    out = tmp_path / "other.onnx"
    export_onnx(shipped("md1")[0], out)  # another model's export
    before = out.read_bytes()
    assert cli.main(["export-onnx", str(ckpt), str(out)]) == 2
    assert capsys.readouterr().err == (
        f"stablecnn: error: {out} exists; name another MODEL.onnx or add --overwrite\n"
    )
    assert out.read_bytes() == before
    assert cli.main(["export-onnx", str(ckpt), str(out), "--overwrite"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.read_bytes() == path.read_bytes()  # the md3 checkpoint's export, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz", "md3.onnx", "other.onnx"]


@pytest.mark.parametrize(
    ("out", "problem"),
    [
        ("missing/x.onnx", "the folder {tmp}/missing does not exist"),
        ("ckpt.npz/x.onnx", "{tmp}/ckpt.npz is not a folder"),
        (".", "it is a directory"),
    ],
)
def test_export_onnx_names_an_output_it_cannot_write(tmp_path, exported, capsys, out, problem):
    ckpt, _, _ = exported
    out = tmp_path / out
    listing = sorted(tmp_path.iterdir())
    assert cli.main(["export-onnx", str(ckpt), str(out), "--overwrite"]) == 2
    problem = problem.format(tmp=tmp_path)
    assert capsys.readouterr().err == f"stablecnn: error: cannot write {out}: {problem}\n"
    assert sorted(tmp_path.iterdir()) == listing


def test_export_onnx_names_the_file_when_the_write_fails(tmp_path, exported, capsys, monkeypatch):
    import tempfile

    ckpt, _, _ = exported

    def refused(prefix, suffix, dir):
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}abc123{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", refused)  # a folder the user may not write in
    assert cli.main(["export-onnx", str(ckpt), str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err == (
        f"stablecnn: error: {tmp_path / 'x.onnx'}: Permission denied\n"
    )


def test_verify_compares_with_onnxruntime_on_the_runs_test_set(
    tmp_path, exported, capsys, monkeypatch
):
    import stablecnn.data

    ckpt, _, model = exported
    images = images_for(model, 30)
    asked = []

    def test_set(name, split, **kwargs):
        asked.append((name, split))
        return images, np.zeros(len(images), np.uint8)

    monkeypatch.setattr(stablecnn.data, "load_dataset", test_set)
    assert cli.main(["export-onnx", str(ckpt), str(tmp_path / "v.onnx"), "--verify"]) == 0
    printed = capsys.readouterr().out
    assert asked == [("fashion-mnist", "test")]
    assert "onnxruntime agrees with stablecnn on the fashion-mnist test set, 30 images" in printed
    assert "the same class on 30 of 30" in printed

    bad = Agreement(30, 2e-3, 0.5, 29, [7], 7)
    monkeypatch.setattr("stablecnn.interop.compare_onnxruntime", lambda *a, **k: bad)
    args = ["export-onnx", str(ckpt), str(tmp_path / "v.onnx"), "--verify", "--overwrite"]
    assert cli.main(args) == 1
    printed = capsys.readouterr().out
    assert "onnxruntime DISAGREES" in printed and "images whose class differs: [7]" in printed


def test_import_onnx_writes_a_model_file_and_checkpoint_that_the_commands_read(
    tmp_path, exported, capsys, monkeypatch
):
    _, path, model = exported
    monkeypatch.chdir(tmp_path)
    assert cli.main(["import-onnx", str(path)]) == 0
    out = tmp_path / "md3-imported"
    printed = capsys.readouterr().out
    layers = len(model.layers)
    assert f"imported {path}: {layers} layers, {model.num_params:,} parameters (float32)" in printed
    assert "wrote md3-imported/model.json and md3-imported/checkpoint.npz" in printed
    assert json.loads((out / "model.json").read_text())["layers"] == model.config()["layers"]
    loaded, _ = checkpoint.load_model(out)
    np.testing.assert_array_equal(loaded.state_dict()["0.weight"], model.state_dict()["0.weight"])

    assert cli.main(["summary", str(out / "model.json")]) == 0  # a model file like any other
    np.save(tmp_path / "digits.npy", images_for(model, 2))
    capsys.readouterr()
    assert cli.main(["predict", str(out), str(tmp_path / "digits.npy"), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ours = model.predict(images_for(model, 2), normalizer=GREY)
    assert [line["class"] for line in lines] == ours.tolist()
    assert lines[0]["name"] in ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip

    before = (out / "checkpoint.npz").read_bytes()
    assert cli.main(["import-onnx", str(path)]) == 2  # nothing overwritten unasked
    assert "exists; name another OUT or add --overwrite" in capsys.readouterr().err
    assert (out / "checkpoint.npz").read_bytes() == before
    assert cli.main(["import-onnx", str(path), str(out), "--overwrite"]) == 0


def test_import_onnx_refuses_a_model_file_it_would_replace(tmp_path, exported, capsys):
    _, path, model = exported
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.json").write_text('{"name": "the user\'s own"}\n')
    assert cli.main(["import-onnx", str(path), str(mine)]) == 2
    assert capsys.readouterr().err == (
        f"stablecnn: error: {mine / 'model.json'} exists; name another OUT or add --overwrite\n"
    )
    assert (mine / "model.json").read_text() == '{"name": "the user\'s own"}\n'
    assert sorted(p.name for p in mine.iterdir()) == ["model.json"]
    assert cli.main(["import-onnx", str(path), str(mine), "--overwrite"]) == 0
    assert json.loads((mine / "model.json").read_text())["layers"] == model.config()["layers"]


@pytest.mark.parametrize(
    ("out", "problem"),
    [
        ("md3.onnx/o", "{tmp}/md3.onnx is not a folder"),  # OUT is made, but not under a file
        ("o", "it is a directory"),
    ],
)
def test_import_onnx_names_an_output_it_cannot_write(tmp_path, exported, capsys, out, problem):
    _, path, _ = exported
    (tmp_path / "o" / "checkpoint.npz").mkdir(parents=True)
    listing = sorted(tmp_path.rglob("*"))
    out = tmp_path / out
    assert cli.main(["import-onnx", str(path), str(out), "--overwrite"]) == 2
    problem = problem.format(tmp=tmp_path)
    assert capsys.readouterr().err == (
        f"stablecnn: error: cannot write {out / 'checkpoint.npz'}: {problem}\n"
    )
    assert sorted(tmp_path.rglob("*")) == listing


def test_import_onnx_takes_a_mean_and_std_for_a_graph_that_has_none(tmp_path, capsys):
    from stablecnn.nn.layers import Flatten, Linear
    from stablecnn.nn.model import Sequential

    bare = tmp_path / "bare.onnx"
    export_onnx(Sequential(Flatten(), Linear(16, 3), input_shape=(1, 4, 4)), bare)
    out = tmp_path / "b"
    assert cli.main(["import-onnx", str(bare), str(out)]) == 0
    assert "note: the graph does not normalise its input" in capsys.readouterr().out
    args = ["import-onnx", str(bare), str(out), "--overwrite", "--mean", "33.3", "--std", "78.6"]
    assert cli.main(args) == 0
    assert checkpoint.load(out).meta["normalizer"] == {
        "kind": "original",
        "mean": 33.3,
        "std": 78.6,
    }
    assert cli.main(["import-onnx", str(bare), str(out), "--mean", "33"]) == 2
    assert "--mean and --std go together" in capsys.readouterr().err
    assert cli.main(["import-onnx", str(bare), str(out), "--mean", "a", "--std", "1"]) == 2
    assert "--mean takes numbers separated by commas, got 'a'" in capsys.readouterr().err


def test_import_onnx_names_a_file_it_refuses(tmp_path, capsys):
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    assert cli.main(["import-onnx", str(tmp_path / "junk.onnx"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"stablecnn: error: {tmp_path / 'junk.onnx'}: not a readable ONNX")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["export-onnx", "import-onnx"])
def test_without_the_onnx_package_the_commands_say_how_to_install_it(
    tmp_path, exported, capsys, monkeypatch, command
):
    ckpt, path, _ = exported
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    args = [str(ckpt), str(tmp_path / "y.onnx")] if command == "export-onnx" else [str(path)]
    assert cli.main([command, *args]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "stablecnn: error: ONNX export and import need the onnx package, which is not "
        'installed: pip install "stablecnn[onnx]"'
    )
    assert not (tmp_path / "y.onnx").exists()


def test_verify_without_onnxruntime_says_how_to_install_it(tmp_path, exported, capsys, monkeypatch):
    import stablecnn.data

    ckpt, _, model = exported
    monkeypatch.setattr(
        stablecnn.data, "load_dataset", lambda *a, **k: (images_for(model, 2), None)
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert cli.main(["export-onnx", str(ckpt), str(tmp_path / "v.onnx"), "--verify"]) == 2
    assert "needs onnxruntime, which is not installed: pip install onnxruntime" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "v.onnx").exists()  # checked before anything is written
    _, old, _ = exported
    before = old.read_bytes()
    assert cli.main(["export-onnx", str(ckpt), str(old), "--verify", "--overwrite"]) == 2
    assert "needs onnxruntime" in capsys.readouterr().err
    assert old.read_bytes() == before


def test_verify_refuses_a_checkpoint_without_normalizer_before_writing(
    tmp_path, checkpoint_of, capsys
):
    from stablecnn.nn.layers import Flatten, Linear
    from stablecnn.nn.model import Sequential
    from stablecnn.training import checkpoint as ckpt_io

    bare = tmp_path / "bare.npz"
    ckpt_io.save(bare, Sequential(Flatten(), Linear(16, 3), input_shape=(1, 4, 4)), {})
    assert cli.main(["export-onnx", str(bare), str(tmp_path / "v.onnx"), "--verify"]) == 2
    assert "--verify needs the checkpoint's normalizer, and it has none" in capsys.readouterr().err
    assert not (tmp_path / "v.onnx").exists()


def test_verify_of_a_float64_export_is_refused_before_anything_is_read(tmp_path, exported, capsys):
    """onnxruntime's CPU provider has no float64 Conv: --verify could only fail after writing."""
    import onnxruntime
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as NotInOnnxruntime

    from stablecnn.nn.layers import Conv2d, Flatten
    from stablecnn.nn.model import Sequential

    conv = Conv2d(1, 2, 3, dtype=np.float64)
    export_onnx(
        Sequential(conv, Flatten(), input_shape=(1, 4, 4)), tmp_path / "f64.onnx", dtype="float64"
    )
    with pytest.raises(NotInOnnxruntime, match="Conv"):  # the reason for the refusal holds
        onnxruntime.InferenceSession(str(tmp_path / "f64.onnx"), providers=["CPUExecutionProvider"])
    ckpt, old, _ = exported
    before = old.read_bytes()
    for source, out in ((ckpt, old), (tmp_path / "none.npz", tmp_path / "v.onnx")):
        args = ["export-onnx", str(source), str(out), "--float64", "--verify", "--overwrite"]
        assert cli.main(args) == 2
        assert capsys.readouterr().err == (
            "stablecnn: error: --verify runs the export in onnxruntime, whose CPU provider has "
            "no float64 Conv: verify a float32 export (without --float64), or export in float64 "
            "without --verify; nothing was written\n"
        )
    assert old.read_bytes() == before and not (tmp_path / "v.onnx").exists()


def test_float64_of_a_float32_checkpoint_is_refused_before_writing(tmp_path, exported, capsys):
    """--float64 keeps float64 weights as they are; on float32 weights it would only widen
    them (a model twice the size, computing nothing more exactly)."""
    ckpt, _, _ = exported
    out = tmp_path / "wide.onnx"
    assert cli.main(["export-onnx", str(ckpt), str(out), "--float64"]) == 2
    assert capsys.readouterr().err == (
        f"stablecnn: error: --float64 keeps a float64 model's weights in float64, and {ckpt} "
        f"holds float32 weights, which it would only widen: export without --float64; nothing "
        f"was written\n"
    )
    assert not out.exists()
