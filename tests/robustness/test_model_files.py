"""Matrix, Model-file rows: damaged, forged and hostile checkpoints and pickles.

A bad model file is a :class:`~stablecnn.errors.CheckpointError` whose message starts with the
file and names the array, shape or dtype at fault; the CLI turns it into one line on stderr and
exit status 2. Nothing in a model file is ever unpickled or run: the hostile payloads below create
a marker folder when they run, and every test proves the marker does not exist.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.fakes import rewrite_npz, save_small_checkpoint
from support.payloads import Payload, evil_pickle

from stablecnn import cli, legacy
from stablecnn.errors import CheckpointError
from stablecnn.nn import zoo
from stablecnn.nn.layers import Flatten, Linear, ReLU
from stablecnn.nn.model import Sequential
from stablecnn.training import checkpoint


@pytest.fixture
def good(tmp_path):
    return save_small_checkpoint(tmp_path / "good.npz")


def refused(path, *fragments, loader=checkpoint.load_model):
    with pytest.raises(CheckpointError) as info:
        loader(path)
    text = str(info.value)
    assert text.startswith(str(path)), text
    for fragment in fragments:
        assert fragment in text, text
    return text


def cli_refuses(path, capsys, *fragments, command=("evaluate",)):
    code = cli.main([*command, str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"stablecnn: error: {path}") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err
    assert err.count("\n") == 1  # one line


def test_npz_missing_array(tmp_path, good, capsys):
    bad = rewrite_npz(good, tmp_path / "missing.npz", lambda a: a.pop("param/1.bias"))
    refused(bad, "weights do not fit the stored architecture", "missing ['1.bias']")
    cli_refuses(bad, capsys, "missing ['1.bias']", command=("summary",))


def test_npz_with_an_unknown_zip_version(tmp_path, good, capsys):
    """zipfile raises NotImplementedError (not BadZipFile) for a member it cannot extract; a
    fuzzed checkpoint found it escaping the loader."""
    blob = bytearray(good.read_bytes())
    central = blob.find(b"PK\x01\x02")  # the first central directory entry
    assert central > 0
    blob[central + 6 : central + 8] = (109).to_bytes(2, "little")  # "version needed": 10.9
    bad = tmp_path / "version.npz"
    bad.write_bytes(bytes(blob))
    refused(bad, "not a readable .npz checkpoint", "zip file version 10.9")
    cli_refuses(bad, capsys, "zip file version 10.9", command=("summary",))


def test_npz_extra_array(tmp_path, good, capsys):
    extra = rewrite_npz(
        good,
        tmp_path / "extra.npz",
        lambda a: a.__setitem__("param/2.weight", np.zeros((3, 3), np.float32)),
    )
    refused(extra, "missing [], unexpected ['2.weight']")
    stray = rewrite_npz(
        good, tmp_path / "stray.npz", lambda a: a.__setitem__("script", np.array("rm -rf ~"))
    )
    refused(stray, "unexpected array 'script'", loader=checkpoint.load)
    cli_refuses(extra, capsys, "unexpected ['2.weight']", command=("summary",))


def test_npz_wrong_shape(tmp_path, good, capsys):
    bad = rewrite_npz(
        good,
        tmp_path / "shape.npz",
        lambda a: a.__setitem__("param/1.weight", np.zeros((3, 5), np.float32)),
    )
    refused(bad, "parameter '1.weight' of layer 1 (Linear) should be (3, 4), is (3, 5)")
    cli_refuses(bad, capsys, "should be (3, 4), is (3, 5)", command=("summary",))


def test_npz_wrong_dtype(tmp_path, good, capsys):
    as64 = rewrite_npz(
        good,
        tmp_path / "f64.npz",
        lambda a: a.__setitem__("param/1.weight", a["param/1.weight"].astype(np.float64)),
    )
    refused(as64, "parameter '1.weight' is float64, the checkpoint says float32")
    as_int = rewrite_npz(
        good, tmp_path / "int.npz", lambda a: a.__setitem__("param/1.bias", np.zeros(3, np.int64))
    )
    refused(as_int, "parameter '1.bias': expected floating values, got int64")
    complex_ = rewrite_npz(
        good,
        tmp_path / "complex.npz",
        lambda a: a.__setitem__("param/1.bias", np.zeros(3, np.complex64)),
    )
    refused(complex_, "array 'param/1.bias' has unsupported dtype complex64")
    int8_model = rewrite_npz(
        good,
        tmp_path / "int8.npz",
        lambda a: a.__setitem__(
            "meta", np.array(str(a["meta"]).replace('"dtype": "float32"', '"dtype": "int8"'))
        ),
    )
    refused(int8_model, "the model dtype 'int8' is not 'float32' or 'float64'")
    cli_refuses(as64, capsys, "is float64", command=("summary",))


def test_npz_object_array_refused_never_unpickled(tmp_path, good, capsys):
    marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = Payload(__import__("os").mkdir, str(marker))
    with np.load(good, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["param/1.bias"] = payload
    evil = tmp_path / "evil.npz"
    np.savez(evil, allow_pickle=True, **arrays)  # numpy pickles the object array inside the zip
    refused(
        evil, "refused, it holds pickled objects; nothing was unpickled", loader=checkpoint.load
    )
    cli_refuses(evil, capsys, "refused", command=("summary",))
    assert not marker.exists()


def with_meta(src, dst, **changes):
    """``src`` with some of its meta record's entries replaced."""

    def change(arrays):
        meta = json.loads(str(arrays["meta"]))
        arrays["meta"] = np.array(json.dumps({**meta, **changes}))

    return rewrite_npz(src, dst, change)


def test_checkpoint_for_another_architecture(tmp_path, good, capsys):
    # the weights of one architecture stored under another's description
    other = Sequential(Flatten(), Linear(4, 5), ReLU(), Linear(5, 3), input_shape=(1, 2, 2))
    forged = with_meta(good, tmp_path / "forged.npz", model=other.config())
    refused(forged, "weights do not fit the stored architecture", "missing ['3.bias', '3.weight']")
    wider = Sequential(Flatten(), Linear(4, 7), input_shape=(1, 2, 2))
    refused(
        with_meta(good, tmp_path / "wider.npz", model=wider.config()),
        "parameter '1.weight' of layer 1 (Linear) should be (7, 4), is (3, 4)",
    )
    # a checkpoint of a small model where Model 1 is needed (the original's pickle layout)
    code = cli.main(["export-pickle", str(good), "-o", str(tmp_path / "out.pickle")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(
        f"stablecnn: error: {good}: not a Model 1 (md1) network: parameter "
        f"'0.weight' is missing; the original layout needs (32, 1, 10, 10)"
    ), err
    assert not (tmp_path / "out.pickle").exists()
    # Model 1's description over the small model's weights
    refused(
        with_meta(good, tmp_path / "md1.npz", model=zoo.config("md1")),
        "missing ['0.bias', '0.weight', '3.bias', '3.weight', '7.bias', '7.weight', "
        "'9.bias', '9.weight']",
    )


def test_pickle_with_malicious_reduce_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "output_cnn_md1.pickle"
    for protocol in (0, 2, 4, 5):
        evil.write_bytes(evil_pickle(marker, protocol))
        refused(
            evil,
            "refused: it asks for the global posix.mkdir",
            "nothing was executed",
            loader=legacy.load_original,
        )
        refused(
            evil,
            "refused: a Python pickle, which is never unpickled"
            if protocol >= 2
            else "not a readable .npz checkpoint (it starts with b'cposix",
            loader=checkpoint.load,
        )
    for command in (
        ["import-pickle", str(evil)],
        ["predict", str(evil), str(evil)],
        ["evaluate", str(evil)],
    ):
        assert cli.main(command) == 2, command
        err = capsys.readouterr().err
        assert err.startswith(f"stablecnn: error: {evil}") and "refused" in err, err
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output_cnn_md1.pickle"]
    # the proof that the payload is live: plain pickle runs it
    import pickle

    pickle.loads(evil_pickle(marker))
    assert marker.is_dir()


def test_zero_byte_model_file(tmp_path, capsys):
    empty = tmp_path / "checkpoint.npz"
    empty.write_bytes(b"")
    refused(empty, "not a readable .npz checkpoint")
    empty_pickle = tmp_path / "output_cnn_md1.pickle"
    empty_pickle.write_bytes(b"")
    refused(empty_pickle, "the file is empty (0 bytes)", loader=legacy.load_original)
    cli_refuses(empty, capsys, "not a readable .npz checkpoint")
    code = cli.main(["predict", str(tmp_path), str(empty)])  # a run directory holding it
    assert code == 2 and "checkpoint.npz: not a readable" in capsys.readouterr().err
    cli_refuses(empty_pickle, capsys, "empty (0 bytes)", command=("import-pickle",))


def test_model_file_of_another_kind(tmp_path, capsys):
    npy = tmp_path / "weights.npy"
    np.save(npy, np.zeros((3, 4), np.float32))
    refused(npy, "a single .npy array, not a .npz checkpoint")
    text = tmp_path / "model.toml"
    text.write_text("[model]\nlayers = []\n")
    refused(text, "not a readable .npz checkpoint")
    cli_refuses(npy, capsys, "not a .npz checkpoint", command=("summary",))


def test_a_forged_architecture_is_checked_before_any_weight_is_allocated(tmp_path, good):
    """A checkpoint whose stored architecture asks for a huge layer (its arrays are small)."""
    import tracemalloc

    huge = {
        "input_shape": [1, 2, 2],
        "layers": [
            {"type": "Flatten"},
            {"type": "Linear", "in_features": 4, "out_features": 10**9},
        ],
    }
    forged = with_meta(good, tmp_path / "huge.npz", model=huge)
    tracemalloc.start()
    try:
        refused(forged, "(its architecture)", "layer 1 (Linear)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**24, peak  # nothing near the 16 GB the layer would take
    fits = {**huge, "layers": [huge["layers"][0], {**huge["layers"][1], "out_features": 2**20}]}
    tracemalloc.start()
    try:
        refused(
            with_meta(good, tmp_path / "big.npz", model=fits),
            "parameter '1.weight' of layer 1 (Linear) should be (1048576, 4), is (3, 4)",
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**22, peak  # the 16 MB weight was never made
