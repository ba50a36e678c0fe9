"""Training with the ResNet recipe's augmentation (crops, flips, random erasing, with shifts and
rotations) and label smoothing: bit-exact resume, the loss each figure reports, the config checks.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.fakes import colour_model_file, make_colour_data, make_data
from support.runs import interrupt_at, params_of

from stablecnn.errors import ConfigError
from stablecnn.nn.losses import SoftmaxCrossEntropy
from stablecnn.training import checkpoint
from stablecnn.training.metrics import evaluate
from stablecnn.training.trainer import Interrupted, TrainConfig, Trainer, resume_checkpoint

RECIPE = {  # every step on; fashion-mnist, since flips are refused on digits
    "dataset": "fashion-mnist",
    "augment": {
        "max_shift": 1,
        "max_degrees": 5.0,
        "random_crop": 3,
        "hflip": True,
        "random_erasing": 0.5,
    },
    "label_smoothing": 0.1,
}


@pytest.fixture(scope="module")
def data():
    return make_data(120, 0), make_data(40, 1)


def config(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 20, **RECIPE, **kw})


def trainer(run_dir, data, cfg, **kw):
    train, test = data
    return Trainer(cfg, run_dir, train, test, echo=False, progress=False, **kw)


def test_a_run_with_the_recipe_resumes_bit_identically_mid_epoch(tmp_path, data):
    trainer(tmp_path / "full", data, config()).fit()
    with pytest.raises(Interrupted):
        trainer(tmp_path / "cut", data, config(), callbacks=[interrupt_at(8)]).fit()
    cfg, ckpt = resume_checkpoint(tmp_path / "cut")
    assert ckpt.meta["progress"]["step"] == 2  # mid-epoch: step 8 of 6 per epoch
    assert cfg.augment == config().augment and cfg.label_smoothing == 0.1  # from the checkpoint
    trainer(tmp_path / "cut", data, cfg, checkpoint=ckpt).fit()
    full, cut = params_of(tmp_path / "full"), params_of(tmp_path / "cut")
    for name in full:
        np.testing.assert_array_equal(full[name], cut[name], err_msg=name)
    h_full = checkpoint.load(tmp_path / "full").history
    h_cut = checkpoint.load(tmp_path / "cut").history
    np.testing.assert_array_equal(h_full["step_loss"], h_cut["step_loss"])
    # not vacuous: each of the new settings changes the run
    trainer(tmp_path / "epoch1", data, config(epochs=1)).fit()
    recipe = params_of(tmp_path / "epoch1")["0.weight"]
    for k, other in enumerate(
        (
            {"label_smoothing": 0.0},
            {"augment": {**RECIPE["augment"], "hflip": False}},
            {"augment": {**RECIPE["augment"], "random_crop": 0}},
            {"augment": {**RECIPE["augment"], "random_erasing": 0.0}},
        )
    ):
        trainer(tmp_path / f"other{k}", data, config(epochs=1, **other)).fit()
        assert not np.array_equal(params_of(tmp_path / f"other{k}")["0.weight"], recipe), other


def test_the_cifar_recipe_on_colour_images_resumes_bit_identically(tmp_path):
    model = colour_model_file(tmp_path / "colour.toml", size=16)
    data = make_colour_data(60, 0), make_colour_data(20, 1)
    augment = {"max_shift": 0, "max_degrees": 0, "random_crop": 2, "hflip": True}
    cfg = dict(model=str(model), dataset="cifar10", normalization="unit", lr=0.05)
    cfg = dict(cfg, augment={**augment, "random_erasing": 0.5}, label_smoothing=0.1)
    trainer(tmp_path / "full", data, config(**cfg)).fit()
    with pytest.raises(Interrupted):
        trainer(tmp_path / "cut", data, config(**cfg), callbacks=[interrupt_at(4)]).fit()
    resumed, ckpt = resume_checkpoint(tmp_path / "cut")
    trainer(tmp_path / "cut", data, resumed, checkpoint=ckpt).fit()
    full, cut = params_of(tmp_path / "full"), params_of(tmp_path / "cut")
    for name in full:
        np.testing.assert_array_equal(full[name], cut[name], err_msg=name)


def test_the_training_loss_is_the_smoothed_one_and_the_test_loss_the_plain_one(tmp_path, data):
    run = trainer(tmp_path, data, config(epochs=1))
    x, y = next(iter(run.epoch_batches(0)))
    logits = run.model.forward(x, training=True)
    smoothed = float(SoftmaxCrossEntropy(label_smoothing=0.1).forward(logits, y))
    plain = float(SoftmaxCrossEntropy().forward(logits, y))
    last = run.fit()
    history = checkpoint.load(tmp_path).history
    assert history["step_loss"][0] == pytest.approx(smoothed, rel=1e-6)
    assert abs(smoothed - plain) > 1e-3  # the two differ enough to tell apart
    test_images, test_labels = data[1]
    result = evaluate(run.model, test_images, test_labels, run.normalizer)
    assert last["test_loss"] == result.loss  # metrics.evaluate: -mean log softmax(z)[y]
    logits = run.model.forward(run.normalizer(test_images, dtype=run.model.dtype), training=False)
    assert result.loss == pytest.approx(float(SoftmaxCrossEntropy().forward(logits, test_labels)))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), True, "0.1"])
def test_label_smoothing_out_of_range_is_refused_by_name(bad):
    with pytest.raises(ConfigError, match=r"label_smoothing must be a number in \[0, 1\)"):
        TrainConfig(label_smoothing=bad)


def test_flips_are_refused_on_digits_and_never_on_by_default():
    with pytest.raises(ConfigError, match="horizontal flips .* not for mnist: a mirrored 2"):
        TrainConfig(dataset="mnist", augment={"max_shift": 0, "max_degrees": 0, "hflip": True})
    assert TrainConfig().augment is None
    assert TrainConfig(augment={"max_shift": 2, "max_degrees": 10}).augment["hflip"] is False
    flips = {"max_shift": 0, "max_degrees": 0, "hflip": True}
    assert TrainConfig(dataset="fashion-mnist", augment=flips).augment["hflip"] is True
    with pytest.raises(ConfigError, match="hflip must be true or false, got 1"):
        TrainConfig(dataset="fashion-mnist", augment={**flips, "hflip": 1})


def test_an_older_checkpoints_config_reads_with_the_new_settings_off():
    old = TrainConfig().to_dict()
    del old["label_smoothing"]
    old["augment"] = {"max_shift": 2, "max_degrees": 10.0}  # as stored before the new steps
    cfg = TrainConfig.from_dict(old)
    assert cfg.label_smoothing == 0.0
    assert cfg.augment == {
        "max_shift": 2,
        "max_degrees": 10.0,
        "random_crop": 0,
        "hflip": False,
        "random_erasing": 0.0,
        "erasing_scale": [0.02, 0.33],
        "erasing_ratio": [0.3, 3.3],
        "max_scale": 0.0,
        "elastic": [0.0, 0.0],
    }
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # the round trip a checkpoint makes
