"""The stability promise: a 20-layer plain conv stack trains in float32 with every loss finite."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from stablecnn.nn import zoo
from stablecnn.nn.layers import BatchNorm2d, Conv2d, Linear
from stablecnn.training.trainer import TrainConfig, Trainer

PLAIN20 = Path(__file__).parent / "models" / "plain20.toml"


def textures(n, size, seed):
    """uint8 (n, size, size) images of 4 classes: horizontal stripes, vertical stripes, a
    checkerboard, random dots; random phase and noise. Global pooling keeps what tells them
    apart (unlike the position of a blob)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n).astype(np.uint8)
    r, c = np.mgrid[:size, :size]
    phase = rng.integers(0, 2, (n, 1, 1))
    stripes = np.stack([r + phase, c + phase, r + c + phase, 0 * phase + r])  # (4, n, size, size)
    on = stripes[labels, np.arange(n)] % 2 == 0
    on[labels == 3] = rng.random((int((labels == 3).sum()), size, size)) < 0.5
    noise = rng.integers(0, 80, (n, size, size))
    return np.where(on, 255 - noise, noise).astype(np.uint8), labels


def test_plain20_is_a_20_layer_plain_stack():
    model = zoo.resolve_model(PLAIN20, seed=0)
    weighted = [layer for layer in model.layers if layer.params]
    assert len(weighted) == 20
    assert sum(isinstance(layer, Conv2d) for layer in weighted) == 19
    assert isinstance(weighted[-1], Linear)
    assert not any(isinstance(layer, BatchNorm2d) for layer in model.layers)
    assert model.shapes((1, 28, 28))[-1] == (10,) and model.shapes((1, 12, 12))[-1] == (10,)


def test_20_layer_plain_stack_trains_3_epochs_in_float32_with_finite_losses(tmp_path, monkeypatch):
    # the Trainer builds built-in names; register the file as one
    shipped = zoo.model_files()
    monkeypatch.setattr(zoo, "model_files", lambda: {**shipped, "plain20": PLAIN20})
    train, test = textures(400, 12, seed=0), textures(100, 12, seed=1)
    config = TrainConfig(
        model="plain20",
        epochs=3,
        batch_size=25,
        lr=0.01,
        optimizer="adagrad",
        normalization="unit",
        dtype="float32",
        seed=0,
    )
    trainer = Trainer(config, tmp_path / "run", train, test, echo=False, progress=False)
    assert trainer.model.dtype == np.float32
    last = trainer.fit()  # raises TrainingError on the first loss that is not finite

    losses = trainer.history["step_loss"]
    assert len(losses) == 3 * 16
    assert all(math.isfinite(loss) for loss in losses)
    assert all(math.isfinite(loss) for loss in trainer.history["epoch_test_loss"])
    for name, param, grad in trainer.model.parameters():
        assert param.dtype == np.float32 and np.isfinite(param).all(), name
        assert np.isfinite(grad).all(), name
    # the signal reaches the first layer (no vanishing) and the stack learns something
    first = trainer.model.parameters()[0][2]
    assert np.abs(first).max() > 0
    assert np.mean(losses[-16:]) < np.mean(losses[:16]) - 0.3
    assert last["test_acc"] > 0.4  # chance is 0.25


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain20_forward_and_backward_stay_in_range_at_initialisation(dtype):
    model = zoo.resolve_model(PLAIN20, seed=1, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(dtype)
    h = x
    for layer in model.layers:
        h = layer.forward(h, training=True)
        assert h.dtype == dtype and np.isfinite(h).all()
    # He initialisation keeps the logits within a few orders of magnitude of the input
    assert 1e-3 < float(np.abs(h).mean()) < 1e3
    dx = model.backward(np.ones_like(h))
    assert dx.dtype == dtype and np.isfinite(dx).all() and np.abs(dx).max() > 0
