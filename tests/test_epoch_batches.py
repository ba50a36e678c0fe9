"""One batching path: data.iterate_batches (start, augment) and the trainer's epochs built on it."""

import numpy as np
import pytest

from stablecnn.data import Normalizer, iterate_batches
from stablecnn.data.augment import Augment
from stablecnn.errors import DataError
from stablecnn.training.config import TrainConfig
from stablecnn.training.trainer import Trainer

AUGMENT = {"max_shift": 2, "max_degrees": 10.0}


def split(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for i, ((x, y), (x_ref, y_ref)) in enumerate(zip(got, expected, strict=True)):
        assert x.dtype == x_ref.dtype and y.dtype == y_ref.dtype, f"batch {i}"
        np.testing.assert_array_equal(x, x_ref, err_msg=f"batch {i}")
        np.testing.assert_array_equal(y, y_ref, err_msg=f"batch {i}")


def test_start_skips_batches_and_keeps_the_epochs_order():
    images, labels = split(47, 0)
    norm = Normalizer.unit()
    whole = list(iterate_batches(images, labels, 10, np.random.default_rng(5), norm))
    tail = list(iterate_batches(images, labels, 10, np.random.default_rng(5), norm, start=3))
    assert [len(y) for _, y in whole] == [10, 10, 10, 10, 7]
    assert_same_batches(tail, whole[3:])
    assert list(iterate_batches(images, labels, 10, None, norm, start=5)) == []


def test_augment_gets_each_uint8_batch_and_its_number_before_normalisation():
    images, labels = split(25, 1)
    norm, seen = Normalizer.original(images), []

    def invert(batch, s):
        seen.append((batch.dtype, len(batch), s))
        return 255 - batch

    order = np.random.default_rng(9).permutation(25)
    got = list(
        iterate_batches(images, labels, 8, np.random.default_rng(9), norm, augment=invert, start=1)
    )
    assert seen == [(np.uint8, 8, 1), (np.uint8, 8, 2), (np.uint8, 1, 3)]
    for s, (x, y) in enumerate(got, start=1):
        idx = order[s * 8 : (s + 1) * 8]
        np.testing.assert_array_equal(x, norm(255 - images[idx]))
        np.testing.assert_array_equal(y, labels[idx])


def test_a_negative_start_is_refused():
    images, labels = split(5, 2)
    with pytest.raises(DataError, match="start"):
        next(iterate_batches(images, labels, 2, None, Normalizer.unit(), start=-1))


def recipe(trainer, epoch):
    """The documented order, written out without iterate_batches: the permutation of
    default_rng([seed, epoch]), slices of batch_size, batch s augmented with
    default_rng([seed, epoch, s, 1]), then normalised to the model's dtype."""
    c = trainer.config
    order = np.random.default_rng([c.seed, epoch]).permutation(trainer.num_train)
    batches = []
    for s in range(trainer.steps_per_epoch):
        idx = order[s * c.batch_size : (s + 1) * c.batch_size]
        images = Augment.from_dict(c.augment)(
            trainer.images[idx], np.random.default_rng([c.seed, epoch, s, 1])
        )
        batches.append((trainer.normalizer(images, dtype=trainer.model.dtype), trainer.labels[idx]))
    return batches


def test_the_trainer_trains_on_iterate_batches_in_the_documented_order(tmp_path, monkeypatch):
    config = TrainConfig(epochs=2, batch_size=16, train_size=40, seed=7, augment=AUGMENT)
    trainer = Trainer(
        config, tmp_path / "run", split(60, 3), split(12, 4), echo=False, progress=False
    )
    trained, calls = [], []
    real = iterate_batches

    def recording(*args, **kwargs):
        calls.append(kwargs.get("start"))
        return real(*args, **kwargs)

    def no_step(x, y):  # what the step was given; no update (the batches are the subject)
        trained.append((x, y))
        return 1.0, 0.5

    monkeypatch.setattr("stablecnn.training.trainer.iterate_batches", recording)
    monkeypatch.setattr(trainer, "train_step", no_step)
    trainer.fit()
    assert calls == [0, 0]  # one iterate_batches per epoch
    assert len(trained) == 2 * 3  # 40 images in batches of 16, 16 and 8
    for epoch in range(2):
        got = trained[3 * epoch : 3 * (epoch + 1)]
        expected = recipe(trainer, epoch)
        assert_same_batches(
            [(x, y.astype(np.int64)) for x, y in got],
            [(x, y.astype(np.int64)) for x, y in expected],
        )


def test_a_resumed_epoch_replays_its_remaining_batches(tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, train_size=30, seed=1, augment=AUGMENT)
    trainer = Trainer(
        config, tmp_path / "run", split(30, 5), split(10, 6), echo=False, progress=False
    )
    whole = list(trainer.epoch_batches(1))
    assert len(whole) == trainer.steps_per_epoch == 4
    assert_same_batches(list(trainer.epoch_batches(1, start=2)), whole[2:])
    other_epoch = list(trainer.epoch_batches(0))
    assert not np.array_equal(other_epoch[0][1], whole[0][1])  # a new order each epoch
