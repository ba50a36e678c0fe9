"""Hostile and malformed ONNX files: a clear ModelFileError, no huge allocation, and no read of
anything outside the folder of the file the user named."""

from __future__ import annotations

import json
import os
import sys
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from support.interop import GREY, images_for

from stablecnn.errors import ModelFileError
from stablecnn.interop import export_onnx, import_onnx
from stablecnn.nn.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from stablecnn.nn.model import Sequential

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# every file opened in this process while a test records them (os.open and open both raise the
# "open" audit event); an audit hook cannot be removed, so it only looks at a flag when idle
_opened: list[str] | None = None


def _audit(event, args):
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@contextmanager
def recording_opens():
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


def small_model() -> Sequential:
    rng = np.random.default_rng(0)
    return Sequential(
        Conv2d(1, 3, 3, rng=rng),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(3 * 4 * 4, 4, rng=rng),
        input_shape=(1, 10, 10),
    )


@pytest.fixture
def model_file(tmp_path):
    """A valid exported file in its own folder, and its model."""
    folder = tmp_path / "models"
    folder.mkdir()
    model = small_model()
    export_onnx(model, folder / "m.onnx", normalizer=GREY)
    return folder / "m.onnx", model


def outputs(model, normalizer, seed=0):
    return model.predict_proba(images_for(model, 5, seed), normalizer=normalizer)


def test_every_truncation_is_refused_or_is_a_whole_model(model_file, tmp_path):
    """Cut anywhere: a ModelFileError, or (a cut between the trailing metadata records) the
    same graph and so the same outputs."""
    path, model = model_file
    data = path.read_bytes()
    cut = tmp_path / "cut.onnx"
    refused = 0
    for n in range(len(data)):  # every length: a few thousand imports, half a second
        cut.write_bytes(data[:n])
        try:
            back = import_onnx(cut)
        except ModelFileError as exc:
            assert str(exc).startswith(f"{cut}: "), exc
            refused += 1
            continue
        np.testing.assert_array_equal(outputs(back.model, back.normalizer), outputs(model, GREY))
    assert refused > 0.95 * len(data)


@FUZZ
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=6)
)
def test_property_corrupt_bytes_are_refused_or_imported_never_a_crash(model_file, tmp_path, flips):
    path, _ = model_file
    data = bytearray(path.read_bytes())
    for at, mask in flips:
        data[at % len(data)] ^= mask
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(bytes(data))
    try:
        import_onnx(bad)
    except ModelFileError as exc:
        assert str(exc).startswith(f"{bad}: ")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty, 0 bytes"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a readable ONNX model"),
        (b"ir_version: 8\ngraph {}\n", "not a readable ONNX model"),
        (b"\x08\x08", r"not an ONNX model \(no graph"),  # ir_version 8 and nothing else
    ],
)
def test_files_that_are_not_onnx_are_refused(tmp_path, content, message):
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        import_onnx(path)


def test_a_directory_a_fifo_a_device_and_a_missing_file_are_refused(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        import_onnx(tmp_path)
    with pytest.raises(ModelFileError, match="no such ONNX file"):
        import_onnx(tmp_path / "none.onnx")
    os.mkfifo(tmp_path / "fifo.onnx")  # nobody writes to it: a read would block forever
    with pytest.raises(ModelFileError, match="not a regular file"):
        import_onnx(tmp_path / "fifo.onnx")
    with pytest.raises(ModelFileError, match="not a regular file"):
        import_onnx("/dev/zero")


def edit_weight(path, edit):
    """Rewrite the file at ``path`` with ``edit(tensor)`` applied to the first conv's weight."""
    proto = onnx.load(str(path))
    tensor = next(t for t in proto.graph.initializer if t.name == "0.weight")
    edit(tensor)
    path.write_bytes(proto.SerializeToString())


@pytest.mark.parametrize(
    "dims, message",
    [
        ([1 << 40], r"declares shape \(1099511627776,\), 1,099,511,627,776 values, more than"),
        ([1 << 27], r"float32 \(536,870,912 bytes\) but holds 108 bytes"),
        ([3, 1, 3, 4], r"declares shape \(3, 1, 3, 4\) of float32 \(144 bytes\) but holds 108"),
        ([3, -1, 3, 3], "declares a negative dimension"),
    ],
)
def test_huge_or_false_declared_tensors_are_refused_before_any_allocation(
    model_file, dims, message
):
    path, _ = model_file
    edit_weight(path, lambda t: (t.ClearField("dims"), t.dims.extend(dims)))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match=message) as info:
            import_onnx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "tensor '0.weight'" in str(info.value)
    assert peak < 50 << 20  # nothing of the declared size was allocated


def test_typed_values_that_do_not_fill_the_shape_and_nan_weights_are_refused(model_file):
    path, _ = model_file

    def typed(t):
        values = numpy_helper.to_array(t).ravel()[:-1]
        t.ClearField("raw_data")
        t.float_data.extend(values.tolist())

    edit_weight(path, typed)
    with pytest.raises(ModelFileError, match=r"declares shape \(3, 1, 3, 3\) \(27 values\) but"):
        import_onnx(path)
    edit_weight(path, lambda t: (t.ClearField("float_data"), t.raw_data.__class__))
    nan = np.full((3, 1, 3, 3), np.nan, np.float32)
    edit_weight(path, lambda t: t.CopyFrom(numpy_helper.from_array(nan, "0.weight")))
    with pytest.raises(ModelFileError, match="tensor '0.weight': holds NaN or infinite values"):
        import_onnx(path)


def test_a_model_beyond_a_model_files_limits_is_refused(tmp_path):
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(
            [
                onnx.helper.make_node("Relu", ["x"], ["r"]),
                onnx.helper.make_node("Flatten", ["r"], ["y"]),
            ],
            "big",
            [onnx.helper.make_tensor_value_info("x", 1, ["N", 1, 4096, 4096])],
            [onnx.helper.make_tensor_value_info("y", 1, None)],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    onnx.save(proto, str(tmp_path / "big.onnx"))
    with pytest.raises(ModelFileError, match="16,777,216 values per example, more than"):
        import_onnx(tmp_path / "big.onnx")


def test_a_forged_architecture_record_is_ignored_not_built(model_file):
    path, model = model_file
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == "stablecnn.architecture":
            record = json.loads(prop.value)
            record["layers"][-1]["out_features"] = 10**12  # a terabyte-sized layer
            prop.value = json.dumps(record)
    proto.metadata_props.add(key="class_names", value="[" * 100_000)  # deeply nested JSON
    path.write_bytes(proto.SerializeToString())
    back = import_onnx(path)
    assert any("architecture record was ignored" in n for n in back.notes)
    np.testing.assert_array_equal(outputs(back.model, back.normalizer), outputs(model, GREY))


# -- external data ------------------------------------------------------------------------------
def with_external(path, location: str, offset: int = 0, length: int | None = None) -> bytes:
    """Move the first conv's weight out of the file at ``path`` into external data named
    ``location``; returns the weight's bytes (for the test to place where it likes)."""
    proto = onnx.load(str(path))
    tensor = next(t for t in proto.graph.initializer if t.name == "0.weight")
    raw = tensor.raw_data
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    entries["length"] = str(len(raw) if length is None else length)
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    path.write_bytes(proto.SerializeToString())
    return raw


def test_external_data_inside_the_folder_is_read(model_file):
    path, model = model_file
    raw = with_external(path, "weights/conv.bin", offset=5)
    (path.parent / "weights").mkdir()
    (path.parent / "weights" / "conv.bin").write_bytes(b"head!" + raw + b"tail")
    back = import_onnx(path)
    np.testing.assert_array_equal(
        back.model.state_dict()["0.weight"], model.state_dict()["0.weight"]
    )


def test_external_data_from_onnx_own_writer_is_read(model_file):
    path, model = model_file
    proto = onnx.load(str(path))
    onnx.save_model(
        proto, str(path), save_as_external_data=True, location="m.data", size_threshold=0
    )
    assert (path.parent / "m.data").stat().st_size > 0
    back = import_onnx(path)
    np.testing.assert_array_equal(outputs(back.model, back.normalizer), outputs(model, GREY))


def hostile_cases(folder: Path, outside: Path):
    """(location, message) pairs, each set up so that only the rule stops the read: the file
    the location leads to exists and holds the right bytes."""
    (folder / "link.bin").symlink_to(outside)
    (folder / "linked").symlink_to(outside.parent, target_is_directory=True)
    (folder / "short.bin").write_bytes(b"\0" * 10)
    (folder / "adir").mkdir()
    return [
        (f"../{outside.parent.name}/{outside.name}", "leads out of the model's folder"),
        ("sub/../../outside/secret.bin", "leads out of the model's folder"),
        (str(outside), "is an absolute path"),
        ("C:\\secret.bin", "is an absolute path"),
        ("link.bin", "is a symbolic link"),
        (f"linked/{outside.name}", "is a symbolic link"),
        ("short.bin", "needs bytes 0 to 108 but the file holds 10"),
        ("adir", "is not a regular file"),
        ("missing.bin", "no such file"),
        ("", "no usable file name"),
    ]


def test_external_data_outside_the_folder_is_never_read(model_file, tmp_path):
    path, _ = model_file
    outside = tmp_path / "outside" / "secret.bin"
    outside.parent.mkdir()
    pristine = path.read_bytes()
    raw = None
    for location, message in hostile_cases(path.parent, outside):
        path.write_bytes(pristine)
        raw = with_external(path, location)
        outside.write_bytes(raw)  # the right bytes: only the rule can stop the read
        with recording_opens() as opened:
            with pytest.raises(ModelFileError, match=message) as info:
                import_onnx(path)
        assert "tensor '0.weight': external data" in str(info.value), location
        assert not [p for p in opened if Path(p).resolve() == outside.resolve()], location
    assert raw is not None


def test_a_length_or_offset_that_disagrees_with_the_shape_is_refused(model_file):
    path, _ = model_file
    pristine = path.read_bytes()
    for kwargs in ({"length": 1 << 40}, {"offset": -1}):
        path.write_bytes(pristine)
        raw = with_external(path, "w.bin", **kwargs)
        (path.parent / "w.bin").write_bytes(raw)
        with pytest.raises(ModelFileError, match="do not describe the 108 bytes"):
            import_onnx(path)
