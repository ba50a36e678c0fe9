"""Colour images through the whole chain: per-channel normalisation, preflight, plots, pictures,
and one short CIFAR-10 run from the command line (train, evaluate, plot, predict a colour PNG).

The CIFAR-10 data are a small archive the test writes (support/cifar.py), pinned by its digest.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from support.cifar import write_tiny_cifar
from support.fakes import colour_model_file

from stablecnn.cli import main
from stablecnn.data import Normalizer, iterate_batches, specs
from stablecnn.data.pictures import load_images
from stablecnn.errors import DataError, ImageError, ShapeError
from stablecnn.training import checkpoint, plots

RNG = np.random.default_rng(5)
COLOUR = RNG.integers(0, 256, (20, 3, 8, 6)).astype(np.uint8)  # (N, C, H, W), non-square
COLOUR[:, 1] //= 2  # channels with other statistics
COLOUR[:, 2] = COLOUR[:, 2] // 4 + 100


# --- per-channel normalisation -----------------------------------------------------------------


def test_original_statistics_per_channel_are_numpys_integer_parts():
    norm = Normalizer.original(COLOUR)
    assert norm.channels == 3 and norm.kind == "original"
    for c in range(3):
        channel = COLOUR[:, c].astype(np.float64)
        assert norm.mean[c] == int(channel.mean()) and norm.std[c] == int(channel.std())
    assert len(set(norm.mean)) == 3  # three different channels, three different means


def test_a_colour_batch_is_normalised_channel_by_channel():
    norm = Normalizer.original(COLOUR)
    for dtype in (np.float32, np.float64):
        x = norm(COLOUR[:5], dtype=dtype)
        assert x.dtype == dtype and x.shape == (5, 3, 8, 6)
        mean = np.asarray(norm.mean, dtype).reshape(1, 3, 1, 1)
        std = np.asarray(norm.std, dtype).reshape(1, 3, 1, 1)
        np.testing.assert_array_equal(x, (COLOUR[:5].astype(dtype) - mean) / std)
    unit = Normalizer.unit()(COLOUR[:2])  # one scale for every channel
    np.testing.assert_allclose(unit, COLOUR[:2] / 255.0, rtol=1e-6)


def test_per_channel_statistics_round_trip_through_a_checkpoint(tmp_path):
    norm = Normalizer.original(COLOUR)
    data = norm.to_dict()
    assert data == {"kind": "original", "mean": list(norm.mean), "std": list(norm.std)}
    assert json.loads(json.dumps(data)) == data
    assert Normalizer.from_dict(data) == norm
    assert Normalizer.from_dict({k: np.asarray(v) for k, v in data.items()}) == norm
    path = tmp_path / "c.npz"
    from support.fakes import save_small_checkpoint

    save_small_checkpoint(path, meta_extra={"normalizer": data})
    assert Normalizer.from_dict(checkpoint.load(path).meta["normalizer"]) == norm


def test_a_scalar_normalizer_from_an_old_checkpoint_is_bit_identical():
    """MNIST's checkpoints hold scalars; they load and normalise exactly as before."""
    images = RNG.integers(0, 256, (7, 28, 28)).astype(np.uint8)
    old = {"kind": "original", "mean": 33.0, "std": 78.0}
    norm = Normalizer.from_dict(old)
    assert norm.channels is None and norm.to_dict() == old
    expected = (images[:, None].astype(np.float32) - np.float32(33)) / np.float32(78)
    assert norm(images).tobytes() == expected.tobytes()
    assert norm(images[:, None]).tobytes() == expected.tobytes()
    grey = Normalizer.original(images)
    assert isinstance(grey.mean, float) and grey == Normalizer.original(images[:, None])


def test_per_channel_refusals():
    norm = Normalizer.original(COLOUR)
    with pytest.raises(DataError, match=r"statistics of 3 channels; the batch \(2, 1, 8, 6\)"):
        norm(COLOUR[:2, :1])
    with pytest.raises(DataError, match="statistics of 3 channels"):
        norm(COLOUR[:2, 0])  # a grey (B, H, W) batch
    with pytest.raises(DataError, match="one mean and one std per channel"):
        Normalizer((1.0, 2.0), (3.0,))
    with pytest.raises(DataError, match="one mean and one std per channel"):
        Normalizer((1.0, 2.0), 3.0)
    with pytest.raises(DataError, match="positive finite std"):
        Normalizer((1.0, 2.0), (3.0, 0.0))
    flat = COLOUR.copy()
    flat[:, 1] = 7
    with pytest.raises(DataError, match=r"^channel 1 of the \(N, C, H, W\) images: the images are"):
        Normalizer.original(flat)
    with pytest.raises(DataError, match="not a normalizer"):
        Normalizer.from_dict({"kind": "original", "mean": [[1.0]], "std": [[2.0]]})


def test_colour_batches_keep_their_channels():
    labels = np.arange(20, dtype=np.uint8) % 10
    batches = list(iterate_batches(COLOUR, labels, 8, np.random.default_rng(0), Normalizer.unit()))
    assert [x.shape for x, _ in batches] == [(8, 3, 8, 6), (8, 3, 8, 6), (4, 3, 8, 6)]


# --- preflight ---------------------------------------------------------------------------------


def test_a_grey_model_on_colour_images_is_refused_naming_both_shapes(tmp_path):
    from stablecnn.training.trainer import TrainConfig, Trainer

    colour = (COLOUR[:, :, :4, :4].repeat(7, 2).repeat(7, 3), np.arange(20, dtype=np.uint8) % 10)
    with pytest.raises(ShapeError) as info:
        Trainer(TrainConfig(batch_size=10), tmp_path / "run", colour, colour, progress=False)
    assert str(info.value).startswith(
        "the model takes (1, 28, 28) inputs (C, H, W) and the training images are (3, 28, 28)"
    )
    assert not (tmp_path / "run").exists()


# --- plots ---------------------------------------------------------------------------------------


def shows(png, channel: int) -> bool:
    """Whether a PNG holds pixels of a pure colour: ``channel`` (0 red, 1 green, 2 blue) above
    the other two by more than 100 (the labels' dark red text does not count as blue or green)."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int64)
    others = np.delete(rgb, channel, axis=-1).max(axis=-1)
    return bool((rgb[..., channel] - others > 100).any())


def test_mistakes_and_filters_of_a_colour_model_are_drawn_in_colour(tmp_path):
    images = np.zeros((4, 3, 32, 32), np.uint8)
    images[:, 2] = 230  # blue pictures
    labels, predictions = np.array([0, 1, 2, 3]), np.array([1, 1, 0, 3])
    plots.plot_mistakes(
        images, labels, predictions, tmp_path / "m.png", class_names=specs.CIFAR10.classes
    )
    assert shows(tmp_path / "m.png", 2)
    plots.plot_mistakes(images[:, :1], labels, predictions, tmp_path / "g.png")  # (N, 1, H, W)
    assert not shows(tmp_path / "g.png", 2)
    weight = np.zeros((4, 3, 3, 3))
    weight[:, 1] = 1.0  # green filters
    plots.plot_filters(weight, tmp_path / "f.png")
    assert shows(tmp_path / "f.png", 1)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        plots.plot_mistakes(images[:, :2], labels, predictions, tmp_path / "x.png")


# --- pictures for a colour model ---------------------------------------------------------------


def test_a_colour_picture_stays_in_colour_resized_to_the_model(tmp_path):
    picture = np.zeros((48, 64, 3), np.uint8)
    picture[:, :32] = (200, 30, 10)  # left half red, right half blue
    picture[:, 32:] = (10, 30, 200)
    Image.fromarray(picture).save(tmp_path / "p.png")
    [image] = load_images(tmp_path / "p.png", (32, 32), channels=3)
    assert image.shape == (3, 32, 32) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[:, 10, 2], [200, 30, 10])  # whole picture, no framing
    np.testing.assert_array_equal(image[:, 10, 29], [10, 30, 200])
    rgba = np.zeros((10, 10, 4), np.uint8)  # fully transparent: white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert (load_images(tmp_path / "t.png", (32, 32), channels=3) == 255).all()
    np.save(tmp_path / "a.npy", image)
    np.testing.assert_array_equal(load_images(tmp_path / "a.npy", (32, 32), channels=3), [image])
    with pytest.raises(
        ImageError,
        match=r"shape \(3, 32, 32\); the model takes colour images: "
        r"expected \(3, 28, 28\) or \(N, 3, 28, 28\)",
    ):
        load_images(tmp_path / "a.npy", (28, 28), channels=3)


# --- one short CIFAR-10 run from the command line ------------------------------------------------


@pytest.fixture
def cifar(tmp_path, monkeypatch, cache_root):
    data = write_tiny_cifar(tmp_path, per_batch=(8, 8, 8, 8, 8), test=10)
    monkeypatch.setitem(specs.SPECS, "cifar10", data.spec)
    return data


def test_train_evaluate_plot_and_predict_cifar10_from_the_command_line(
    cifar, tmp_path, capsys, monkeypatch
):
    model = colour_model_file(tmp_path / "tiny.toml", size=32)
    run = tmp_path / "run"
    argv = ["train", "--dataset", "cifar10", "--data-dir", str(cifar.data_dir), "--model"]
    argv += [str(model), "--epochs", "1", "--batch-size", "8", "--lr", "0.05", "--out", str(run)]
    assert main([*argv, "--no-plots"]) == 0
    ckpt = checkpoint.load(run / "checkpoint.npz")
    assert ckpt.meta["train"]["dataset"] == "cifar10"
    assert ckpt.meta["progress"]["global_step"] == 5  # 40 images in batches of 8
    norm = ckpt.meta["normalizer"]
    train_images = cifar.train[0]
    assert norm["mean"] == [int(train_images[:, c].mean()) for c in range(3)]
    capsys.readouterr()

    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "cifar10 test set, 10 images: accuracy" in out

    assert main(["plot", str(run)]) == 0
    capsys.readouterr()
    assert (run / "filters.png").exists() and (run / "mistakes.png").exists()

    picture = np.zeros((40, 50, 3), np.uint8)
    picture[..., 0] = np.linspace(0, 255, 50, dtype=np.uint8)  # a red ramp
    picture[..., 2] = 90
    Image.fromarray(picture).save(tmp_path / "photo.png")
    np.save(tmp_path / "same.npy", load_images(tmp_path / "photo.png", (32, 32), channels=3))
    assert main(["predict", str(run), str(tmp_path / "photo.png"), str(tmp_path / "same.npy")]) == 0
    assert main(["predict", str(run), "--json", str(tmp_path / "photo.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(":", 1)[1] == lines[1].split(":", 1)[1]  # the PNG is read in colour
    answer = json.loads(lines[2])
    assert answer["name"] in specs.CIFAR10.classes and len(answer["top"]) == 3

    # a model for grey digits is refused before anything is written, naming both shapes
    other = tmp_path / "md1-run"
    code = main(
        ["train", "--dataset", "cifar10", "--data-dir", str(cifar.data_dir), "--out", str(other)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert (
        "the model takes (1, 28, 28) inputs (C, H, W) and the training images are (3, 32, 32)"
        in err
    )
    assert not other.exists()
