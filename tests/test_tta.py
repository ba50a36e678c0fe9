"""Test-time augmentation (metrics.evaluate(tta="hflip"), stablecnn evaluate --tta hflip): the
mean of the class probabilities of each image and its mirror image, as its definition says."""

import numpy as np
import pytest
from support.fakes import make_data, toy_loader

from stablecnn import cli
from stablecnn.data import Normalizer
from stablecnn.errors import ConfigError
from stablecnn.nn import zoo
from stablecnn.training.config import TrainConfig
from stablecnn.training.metrics import evaluate


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("shape", [(24, 28, 28), (24, 3, 32, 32)])  # grey, colour
def test_hflip_averages_the_probabilities_of_each_image_and_its_mirror(shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.integers(0, 10, len(images))
    model = zoo.build("md3" if len(shape) == 3 else "md3cifar", dtype=np.float64)
    normalizer = Normalizer.original(images)
    x = normalizer(images, dtype=np.float64)
    p = (
        _softmax(model.forward(x, training=False))
        + _softmax(model.forward(x[..., ::-1], training=False))
    ) / 2
    got = evaluate(model, images, labels, normalizer, batch_size=10, tta="hflip")
    np.testing.assert_array_equal(got.predictions, p.argmax(1))
    want_loss = -np.mean(np.log(p[np.arange(len(labels)), labels]))
    assert got.loss == pytest.approx(want_loss, rel=1e-12)
    plain = evaluate(model, images, labels, normalizer, batch_size=10)
    assert plain.loss != pytest.approx(got.loss, rel=1e-9)  # the mirror images count


def test_the_loss_stays_finite_for_a_confident_wrong_answer():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    model = zoo.build("md1", dtype=np.float64)
    model.layers[-1].params["bias"][...] = [1e4] + [0] * 9  # class 0 by a margin of 1e4
    got = evaluate(model, images, np.full(4, 3), Normalizer.original(images), tta="hflip")
    assert np.isfinite(got.loss) and got.loss > 1e3 and (got.predictions == 0).all()


def test_an_unknown_augmentation_is_named():
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28).astype(np.uint8)
    with pytest.raises(ConfigError, match="tta must be one of \\['hflip'\\]"):
        evaluate(zoo.build("md1"), images, np.zeros(2, int), Normalizer.original(images), tta="x")


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_the_command_mirrors_clothes_and_refuses_to_mirror_digits(
    tmp_path, capsys, monkeypatch, dataset
):
    monkeypatch.setattr(
        "stablecnn.cli.train.load_data", toy_loader(make_data(30, 0), make_data(10, 1))
    )
    run = tmp_path / "run"
    argv = ["train", "--dataset", dataset, "--epochs", "1", "--batch-size", "10"]
    assert cli.main([*argv, "--out", str(run), "--no-plots"]) == 0
    capsys.readouterr()
    code = cli.main(["evaluate", str(run), "--tta", "hflip"])
    out, err = capsys.readouterr()
    if dataset == "mnist":
        assert code == 2 and "--tta hflip is not for mnist" in err
    else:
        assert code == 0 and "(test-time augmentation: hflip)" in out


def trained_with_tta(tmp_path, monkeypatch):
    """A one-epoch Fashion-MNIST-like run trained with ``--tta hflip``: its folder, test set."""
    train, test = make_data(30, 0), make_data(10, 1)
    monkeypatch.setattr("stablecnn.cli.train.load_data", toy_loader(train, test))
    run = tmp_path / "run"
    argv = ["train", "--dataset", "fashion-mnist", "--epochs", "1", "--batch-size", "10"]
    assert cli.main([*argv, "--tta", "hflip", "--out", str(run), "--no-plots"]) == 0
    return run, test


def test_a_run_with_tta_evaluates_with_it_and_refuses_it_on_digits(tmp_path, monkeypatch):
    from stablecnn.training import checkpoint

    run, test = trained_with_tta(tmp_path, monkeypatch)
    model, normalizer, ckpt = checkpoint.load_predictor(run)
    want = evaluate(model, *test, normalizer, tta="hflip")
    assert ckpt.meta["train"]["tta"] == "hflip"
    assert ckpt.history["epoch_test_loss"][-1] == pytest.approx(want.loss, rel=1e-12)
    with pytest.raises(ConfigError, match="tta hflip\\) are not for mnist"):
        TrainConfig(dataset="mnist", tta="hflip")
    with pytest.raises(ConfigError, match="tta must be None or 'hflip', got 'vflip'"):
        TrainConfig(dataset="fashion-mnist", tta="vflip")


def test_evaluate_uses_the_runs_own_tta_unless_told_none(tmp_path, capsys, monkeypatch):
    from stablecnn.training import checkpoint

    run, test = trained_with_tta(tmp_path, monkeypatch)
    model, normalizer, ckpt = checkpoint.load_predictor(run)
    reported = 100 * ckpt.history["epoch_test_acc"][-1]
    plain = evaluate(model, *test, normalizer)
    capsys.readouterr()
    assert cli.main(["evaluate", str(run)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(
        f"accuracy {reported:.2f}%, loss {ckpt.history['epoch_test_loss'][-1]:.4f}, with "
        f"test-time augmentation hflip, as the run was trained (--tta none for without)"
    )
    assert cli.main(["evaluate", str(run), "--tta", "none"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(f"accuracy {100 * plain.accuracy:.2f}%, loss {plain.loss:.4f}")
    assert cli.main(["evaluate", str(run), "--dataset", "mnist"]) == 2  # the run's flips: named
    assert "the run's test-time augmentation (hflip) is not for mnist" in capsys.readouterr().err


def test_evaluate_names_the_classes_of_the_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        "stablecnn.cli.train.load_data", toy_loader(make_data(30, 0), make_data(10, 1))
    )
    run = tmp_path / "run"
    argv = ["train", "--dataset", "fashion-mnist", "--epochs", "1", "--batch-size", "10"]
    assert cli.main([*argv, "--out", str(run), "--no-plots"]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("per-class accuracy: 0 T-shirt/top: ")
    assert "9 Ankle boot: " in lines[1]
    assert lines[-2].split()[:2] == ["8", "Bag"] and lines[-1].split()[:3] == ["9", "Ankle", "boot"]
