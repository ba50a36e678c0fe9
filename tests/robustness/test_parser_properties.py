"""Matrix, Property rows: arbitrary input to each parser gives the project's error or a valid
result, never another exception (hypothesis).

- the IDX reader: arbitrary bytes, raw or gzip-wrapped, and plausible headers over arbitrary
  payloads;
- the checkpoint loaders: arbitrary bytes, arbitrary zip members, arbitrary ``meta`` records
  (``checkpoint.load_model``), and arbitrary bytes to the original-pickle loader;
- the model-file parser (``Sequential.from_config``, what checkpoints and model files feed):
  arbitrary JSON-like data; and the model-file reader (``modelfile.load_model_file``) on
  arbitrary and near-valid TOML/JSON text.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stablecnn import legacy
from stablecnn.data import read_idx
from stablecnn.errors import DataError, StableCNNError
from stablecnn.nn.layers import LAYERS
from stablecnn.nn.model import Sequential
from stablecnn.training import checkpoint

# no example database and no "explain" phase: a failing search must not leave patch files behind
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def write(path, data: bytes):
    path.write_bytes(data)
    return path


# -- the IDX reader --------------------------------------------------------------------------------
@FUZZ
@given(
    data=st.binary(max_size=400),
    gz=st.booleans(),
    header=st.sampled_from([b"", b"\x00\x00\x08\x01", b"\x00\x00\x08\x03", b"\x00\x00\x08\x02"]),
    dims=st.lists(st.integers(0, 30), max_size=3),
)
def test_property_idx_reader(tmp_path, data, gz, header, dims):
    raw = header + (struct.pack(f">{len(dims)}I", *dims) if header else b"") + data
    path = write(tmp_path / "fuzz", gzip.compress(raw) if gz else raw)
    try:
        array = read_idx(path, image_shape=None)
    except DataError as exc:
        assert str(exc).startswith(str(path))
        return
    assert array.dtype == np.uint8 and array.ndim in (1, 3)
    assert array.size == len(raw) - 4 - 4 * array.ndim  # exactly the payload, nothing more


# -- the checkpoint loaders ------------------------------------------------------------------------
def _valid_arrays() -> dict[str, np.ndarray]:
    """The arrays of a valid checkpoint of a tiny model, as ``checkpoint.save`` lays them out."""
    from stablecnn.nn.layers import Flatten, Linear

    model = Sequential(Flatten(), Linear(4, 3), input_shape=(1, 2, 2))
    meta = {"format": checkpoint.FORMAT_VERSION, "model": model.config(), "dtype": "float32"}
    return {
        "meta": np.array(json.dumps(meta)),
        **{f"param/{k}": v for k, v in model.state_dict().items()},
    }


VALID = _valid_arrays()


def _npz_bytes(arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD_NPZ = _npz_bytes(VALID)


def _load_or_refuse(path):
    try:
        model, ckpt = checkpoint.load_model(path)
    except StableCNNError as exc:
        assert str(exc).startswith(str(path)), str(exc)
        return None
    assert isinstance(model, Sequential)
    return model


@FUZZ
@given(
    data=st.binary(max_size=600),
    flips=st.lists(st.tuples(st.integers(0, len(GOOD_NPZ) - 1), st.integers(1, 255)), max_size=6),
    cut=st.integers(0, len(GOOD_NPZ)),
    mode=st.sampled_from(["random", "mutated", "cut"]),
)
def test_property_checkpoint_loader_arbitrary_bytes(tmp_path, data, flips, cut, mode):
    if mode == "random":
        blob = data
    elif mode == "cut":
        blob = GOOD_NPZ[:cut]
    else:
        blob = bytearray(GOOD_NPZ)
        for where, xor in flips:
            blob[where] ^= xor
        blob = bytes(blob)
    _load_or_refuse(write(tmp_path / "fuzz.npz", blob))
    try:
        legacy.load_original(tmp_path / "fuzz.npz")
    except StableCNNError as exc:
        assert str(exc).startswith(str(tmp_path / "fuzz.npz"))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 50)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["float32", "float64", "int8", "Linear", "Flatten", "ReLU", "layers"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "layers",
                    "input_shape",
                    "in_features",
                    "out_features",
                    "format",
                    "model",
                    "dtype",
                    "weight_init",
                    "std",
                ]
            )
            | st.text(max_size=4),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@FUZZ
@given(
    meta=JSON,
    member=st.sampled_from(["meta.npy", "param/1.weight.npy", "param/x.npy", "other", "meta"]),
    payload=st.binary(max_size=200),
    replace_meta=st.booleans(),
)
def test_property_checkpoint_loader_arbitrary_records(
    tmp_path, meta, member, payload, replace_meta
):
    arrays = dict(VALID)
    if replace_meta:
        merged = {**json.loads(str(VALID["meta"])), **meta} if isinstance(meta, dict) else meta
        arrays["meta"] = np.array(json.dumps(merged))
    buf = io.BytesIO(_npz_bytes(arrays))
    with zipfile.ZipFile(buf, "a") as zf:  # one arbitrary member added or shadowing another
        zf.writestr(member + ".extra" if member.endswith(".npy") else member, payload)
    _load_or_refuse(write(tmp_path / "fuzz.npz", buf.getvalue()))


# -- the model-file parser -------------------------------------------------------------------------
LAYER = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(LAYERS))},
    optional={
        k: JSON | st.integers(1, 6)
        for k in (
            "in_channels",
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "in_features",
            "out_features",
            "num_features",
            "p",
            "eps",
            "momentum",
            "negative_slope",
            "weight_init",
            "bias_init",
        )
    },
)
CONFIG = (
    st.fixed_dictionaries(
        {"layers": st.lists(LAYER | JSON, max_size=3)},
        optional={"input_shape": JSON | st.lists(st.integers(1, 6), max_size=4)},
    )
    | JSON
)


def unexpected_exceptions(search, *given_args, **given_kwargs) -> list[str]:
    """Run ``search`` over the examples and list the exceptions it let through, once per kind.

    A test asserts the list is empty instead of failing inside hypothesis, so a defect reports
    one example of each kind of exception in the assertion and hypothesis writes no patch files.
    """
    found: dict[str, str] = {}

    @FUZZ
    @given(*given_args, **given_kwargs)
    def run(*args, **kwargs):
        try:
            search(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - collecting what escapes is the point
            found.setdefault(type(exc).__name__, f"{type(exc).__name__}: {exc} <- {args or kwargs}")

    run()
    return sorted(found.values())


def test_property_model_file_parser():
    def parse(config):
        try:
            model = Sequential.from_config(config)
        except (ValueError, TypeError, StableCNNError):
            return
        assert isinstance(model, Sequential)

    assert unexpected_exceptions(parse, config=CONFIG) == []


PROGRESS = (
    st.fixed_dictionaries(
        {},
        optional={
            "epoch": JSON | st.integers(-2, 5),
            "step": JSON | st.integers(-2, 5),
            "global_step": JSON | st.integers(-2, 20),
        },
    )
    | JSON
)


def test_property_resume_record(tmp_path):
    def resume(train, progress):
        from stablecnn.training.trainer import TrainConfig, resume_checkpoint

        path = tmp_path / "checkpoint.npz"
        train_record = (
            {**TrainConfig(epochs=2, batch_size=10).to_dict(), **train}
            if isinstance(train, dict)
            else train
        )
        arrays = dict(VALID)
        meta = {
            **json.loads(str(VALID["meta"])),
            "train": train_record,
            "progress": progress,
            "normalizer": {"kind": "unit", "mean": 0.0, "std": 255.0},
        }
        arrays["meta"] = np.array(json.dumps(meta))
        write(path, _npz_bytes(arrays))
        try:
            config, ckpt = resume_checkpoint(tmp_path)
        except StableCNNError:
            return
        p = ckpt.meta["progress"]
        assert all(type(p[k]) is int and p[k] >= 0 for k in ("epoch", "step", "global_step"))
        assert p["global_step"] >= p["step"]

    assert unexpected_exceptions(resume, train=JSON, progress=PROGRESS) == []


TOML_PIECES = st.sampled_from(
    [
        "[[layers]]\n",
        'type = "Conv2d"\n',
        'type = "Linear"\n',
        'type = "Nope"\n',
        "in_channels = 1\n",
        "out_channels = 4\n",
        "kernel_size = 3\n",
        "in_features = 10\n",
        "out_features = 2\n",
        "input_shape = [1, 8, 8]\n",
        'input_shape = "x"\n',
        "stride = 0\n",
        'padding = "same"\n',
        'weight_init = { type = "HeNormal" }\n',
        "= broken\n",
        "[x\n",
        'type = "Flatten"\n',
        'type = "ReLU"\n',
        "kernel_size = [3, 2]\n",
        "name = 7\n",
    ]
)


@FUZZ
@given(
    pieces=st.lists(TOML_PIECES, max_size=14),
    noise=st.binary(max_size=40),
    suffix=st.sampled_from([".toml", ".json"]),
)
def test_property_model_file_reader(tmp_path, pieces, noise, suffix):
    """The model-file reader itself (TOML or JSON text, then the layer configs): arbitrary and
    near-valid files give ModelFileError (a StableCNNError) or a config that builds."""
    from stablecnn.nn.modelfile import load_model_file

    path = write(tmp_path / f"model{suffix}", "".join(pieces).encode() + noise)
    try:
        config = load_model_file(path)
    except StableCNNError:
        return
    assert isinstance(Sequential.from_config(config), Sequential)
