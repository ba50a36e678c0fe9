"""The model behind the page, without HTTP: Fashion-MNIST's class names, a colour model's pictures
and pixels, a model without a convolution, checkpoints that cannot be served, and which addresses
count as local."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
from PIL import Image
from support.fakes import colour_model_file, save_small_checkpoint

from stablecnn.data import Normalizer, specs
from stablecnn.data.pictures import load_images
from stablecnn.errors import CheckpointError, ConfigError
from stablecnn.nn.model import Sequential
from stablecnn.nn.modelfile import load_model_file
from stablecnn.serve import Predictor, RequestError, exposure_warning, is_local, make_server
from stablecnn.serve import read_request as read
from stablecnn.training import checkpoint


def test_an_mnist_model_asks_for_a_digit(toy_predictor):
    assert toy_predictor.card["dataset"] == "mnist"
    assert toy_predictor.card["heading"] == "Draw a digit"


def test_fashion_mnist_answers_with_its_class_names(toy_run, digit_pixels):
    model, ckpt = checkpoint.load_model(toy_run)
    meta = {**ckpt.meta, "train": {**ckpt.meta["train"], "dataset": "fashion-mnist"}}
    predictor = Predictor(model, Normalizer.from_dict(ckpt.meta["normalizer"]), meta)
    names = list(specs.FASHION_MNIST.classes)
    assert predictor.card["classes"] == names and names[0] == "T-shirt/top"
    assert predictor.card["test_accuracy"] is None  # no history given
    assert predictor.card["heading"] == "Draw a piece of clothing"
    answer = predictor.predict(digit_pixels)
    assert answer["name"] == names[answer["class"]]


@pytest.fixture
def colour_predictor(tmp_path) -> Predictor:
    model = Sequential.from_config(load_model_file(colour_model_file(tmp_path / "c.toml")))
    normalizer = Normalizer((125.0, 122.0, 113.0), (62.0, 61.0, 66.0))
    path = tmp_path / "checkpoint.npz"
    meta = {"normalizer": normalizer.to_dict(), "train": {"dataset": "cifar10", "model": "c.toml"}}
    checkpoint.save(path, model, meta)
    return Predictor.load(path)


def test_a_colour_model_keeps_pictures_in_colour(colour_predictor, tmp_path):
    predictor = colour_predictor
    card = predictor.card
    assert (card["name"], card["channels"], card["input_shape"]) == ("c", 3, [3, 32, 32])
    assert card["preprocessing"] == "resize" and card["classes"][0] == "airplane"
    assert card["heading"] == "Draw or drop a picture"  # colour photographs: nothing to draw
    picture = np.random.default_rng(0).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "p.png")
    image, maps = read(
        (tmp_path / "p.png").read_bytes(), "image/png", "feature_maps=1", 3, predictor.size
    )
    np.testing.assert_array_equal(image, load_images(tmp_path / "p.png", (32, 32), channels=3)[0])
    answer = predictor.predict(image, feature_maps=maps)
    assert np.array(answer["input"]).shape == (3, 32, 32)
    assert answer["feature_maps"]["shape"] == [4, 30, 30]
    pixels, _ = read(
        f'{{"pixels": {image.tolist()}}}'.encode(), "application/json", "", 3, (32, 32)
    )
    np.testing.assert_array_equal(pixels, image)
    with pytest.raises(RequestError, match=r"expected 3 channels of 32 rows of 32 values 0-255"):
        read(b'{"pixels": [[0, 1], [2, 3]]}', "application/json", "", 3, (32, 32))
    black, _ = read(
        f'{{"pixels": {np.zeros((3, 32, 32), int).tolist()}}}'.encode(),
        "application/json",
        "",
        3,
        (32, 32),
    )
    assert black.max() == 0  # a black colour picture is a picture, not a blank canvas


def test_a_model_without_a_convolution(tmp_path):
    predictor = Predictor.load(save_small_checkpoint(tmp_path / "small.npz"))
    assert predictor.card["feature_maps"] is None and predictor.card["input_shape"] == [1, 2, 2]
    assert (
        predictor.card["dataset"] is None and predictor.card["heading"] == "Draw or drop a picture"
    )
    answer = predictor.predict(np.array([[0, 255], [255, 0]], np.uint8), feature_maps=True)
    assert answer["feature_maps"] is None and len(answer["probabilities"]) == 3
    with pytest.raises(RequestError, match=r"expected 2 rows of 2 values 0-255"):
        read(b'{"pixels": [[1, 2, 3]]}', "application/json", "", 1, predictor.size)


def test_a_checkpoint_that_cannot_be_served(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        Predictor.load(tmp_path / "missing")
    path = tmp_path / "bare.npz"
    model = Sequential.from_config(load_model_file(colour_model_file(tmp_path / "c.toml")))
    checkpoint.save(path, model, {})
    with pytest.raises(CheckpointError, match="has no normalizer record"):
        Predictor.load(path)


@pytest.mark.parametrize(
    "host, local",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.0.2.1", False),  # TEST-NET-1: an address of another machine
        ("no-such-host.invalid", False),
    ],
)
def test_which_addresses_are_local(host, local):
    assert is_local(host) is local
    warning = exposure_warning(host)
    assert (warning is None) is local
    if not local:
        assert "Use --host 127.0.0.1 to keep it local" in warning


def test_a_port_in_use_is_a_clear_error(toy_predictor):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"cannot listen on 127.0.0.1:{port}: Address already in use"
        ):
            make_server(toy_predictor, "127.0.0.1", port)
    with pytest.raises(ConfigError, match="port must be 0-65535"):
        make_server(toy_predictor, "127.0.0.1", 70000)


def test_a_picture_bomb_is_refused_from_its_header(toy_predictor, monkeypatch):
    from stablecnn.data import pictures

    monkeypatch.setattr(pictures, "MAX_IMAGE_PIXELS", 100)
    buffer = io.BytesIO()
    Image.new("L", (20, 20), 255).save(buffer, "PNG")
    with pytest.raises(
        RequestError, match=r"the picture sent: refused, 20 x 20 = 400 pixels"
    ) as info:
        read(buffer.getvalue(), "image/png", "", 1, (28, 28))
    assert info.value.status == 400


def test_the_card_says_its_accuracy_was_measured_with_test_time_augmentation(toy_run):
    model, ckpt = checkpoint.load_model(toy_run)
    normalizer = Normalizer.from_dict(ckpt.meta["normalizer"])
    assert Predictor(model, normalizer, ckpt.meta).card["test_tta"] is None
    meta = {**ckpt.meta, "train": {**ckpt.meta["train"], "tta": "hflip"}}
    assert Predictor(model, normalizer, meta).card["test_tta"] == "hflip"
