"""The one batched-inference loop, Sequential.forward_batches, and everything that runs it."""

import numpy as np
import pytest

from stablecnn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from stablecnn.cli.predict import predict_images
from stablecnn.data import Normalizer
from stablecnn.errors import ConfigError
from stablecnn.legacy import predict_original
from stablecnn.nn.losses import log_softmax, softmax
from stablecnn.training.metrics import evaluate

N, SIZE = 23, 8  # 23 images: batches of 5 leave a last batch of 3


def small_model(dtype=np.float32) -> Sequential:
    rng = np.random.default_rng(0)
    return Sequential(
        Conv2d(1, 3, 3, rng=rng, dtype=dtype),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(3 * 3 * 3, 4, rng=rng, dtype=dtype),
        input_shape=(1, SIZE, SIZE),
    )


def images_and_labels():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (N, SIZE, SIZE), dtype=np.uint8), rng.integers(0, 4, N)


def by_hand(model, images, norm, batch_size):
    """The logits of each slice, run one by one without the loop under test."""
    return [
        model.forward(norm(images[a : a + batch_size], dtype=model.dtype), training=False)
        for a in range(0, len(images), batch_size)
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_batches_yields_the_logits_of_each_slice_bit_for_bit(dtype):
    model, (images, _) = small_model(dtype), images_and_labels()
    norm = Normalizer.original(images)
    got = list(model.forward_batches(images, 5, norm))
    assert [start for start, _ in got] == [0, 5, 10, 15, 20]
    assert [len(logits) for _, logits in got] == [5, 5, 5, 5, 3]
    for (_, logits), expected in zip(got, by_hand(model, images, norm, 5), strict=True):
        assert logits.dtype == dtype
        np.testing.assert_array_equal(logits, expected)


def test_forward_batches_normalises_one_batch_at_a_time_in_the_model_dtype():
    model, (images, _) = small_model(np.float64), images_and_labels()
    norm, calls = Normalizer.unit(), []

    def recording(batch, dtype):
        calls.append((len(batch), np.dtype(dtype)))
        return norm(batch, dtype=dtype)

    batches = model.forward_batches(images, 10, recording)
    assert calls == []  # nothing runs before the first batch is asked for
    next(batches)
    assert calls == [(10, np.float64)]
    list(batches)
    assert calls == [(10, np.float64), (10, np.float64), (3, np.float64)]


def test_forward_batches_without_a_normalizer_passes_the_slices_as_they_are():
    model = small_model()
    x = np.random.default_rng(2).standard_normal((7, 1, SIZE, SIZE)).astype(np.float32)
    got = np.concatenate([logits for _, logits in model.forward_batches(x, 3)])
    np.testing.assert_array_equal(got[3:6], model.forward(x[3:6], training=False))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8", None])
def test_a_bad_batch_size_is_refused_when_called_before_any_work(bad, monkeypatch):
    model, (images, labels) = small_model(), images_and_labels()
    norm = Normalizer.unit()

    def no_forward(*args, **kwargs):
        raise AssertionError("forward ran despite a bad batch_size")

    monkeypatch.setattr(model, "forward", no_forward)
    with pytest.raises(ConfigError, match="batch_size"):
        model.forward_batches(images, bad, norm)
    for call in (
        lambda: model.predict_proba(images, bad, norm),
        lambda: model.predict(images, bad, norm),
        lambda: evaluate(model, images, labels, norm, bad),
    ):
        with pytest.raises(ConfigError, match="batch_size"):
            call()


def test_every_batched_inference_runs_the_one_loop(tmp_path, monkeypatch):
    """predict_proba, predict, evaluate, predict_images and the original predict log all get
    their logits from forward_batches, and compute from them what they say."""
    model, (images, labels) = small_model(), images_and_labels()
    norm = Normalizer.original(images)
    logits = np.concatenate(by_hand(model, images, norm, 6))
    calls = []
    loop = Sequential.forward_batches

    def recording(self, x, batch_size=1000, normalizer=None):
        calls.append(batch_size)
        return loop(self, x, batch_size, normalizer)

    monkeypatch.setattr(Sequential, "forward_batches", recording)

    np.testing.assert_array_equal(model.predict_proba(images, 6, norm), softmax(logits))
    np.testing.assert_array_equal(model.predict(images, 6, norm), logits.argmax(axis=1))
    probs = predict_images(model, norm, images, batch_size=6)
    assert probs.dtype == np.float64
    np.testing.assert_array_equal(probs, softmax(logits).astype(np.float64))
    logp = log_softmax(logits)
    losses = -logp[np.arange(N), labels].astype(np.float64)
    result = evaluate(model, images, labels, norm, batch_size=6, num_classes=4)
    np.testing.assert_array_equal(result.predictions, logits.argmax(axis=1))
    assert result.loss == pytest.approx(losses.mean(), rel=1e-12)
    assert result.accuracy == np.mean(logits.argmax(axis=1) == labels)
    original = predict_original(model, images, labels, tmp_path / "log.txt", norm, batch_size=6)
    np.testing.assert_array_equal(original.predictions, result.predictions)
    assert original.loss == pytest.approx(result.loss, rel=1e-12)
    assert calls == [6] * 5


def test_predict_images_of_nothing_is_an_empty_float64_array():
    model = small_model()
    probs = predict_images(model, Normalizer.unit(), np.zeros((0, SIZE, SIZE), np.uint8))
    assert probs.shape == (0, 0) and probs.dtype == np.float64
