"""Matrix, Training rows: hyperparameters out of range, an input size that does not fit the model,
NaN or Inf in the input, a learning rate so large the loss diverges.

Hyperparameters are refused before anything runs (argparse: exit 2 naming the option and value;
the API: ``ValueError`` naming the field). Inputs are checked where they enter: predict's readers
refuse NaN/Inf naming the file; the trainer must refuse bad arrays before its first step.
A diverging loss stops training at the step where it became NaN/Inf, names that step and leaves
the last good checkpoint untouched.
"""

from __future__ import annotations

import numpy as np
import pytest

from stablecnn import cli
from stablecnn.errors import DataError, ShapeError, StableCNNError, TrainingError
from stablecnn.predict import load_images
from stablecnn.train import TrainConfig


@pytest.mark.parametrize("option, value, field, message", [
    ("--lr", "-0.1", "lr", "lr must be a positive finite number, got -0.1"),
    ("--lr", "nan", "lr", "lr must be a positive finite number, got nan"),
    ("--batch-size", "0", "batch_size", "batch_size must be a positive integer, got 0"),
    ("--epochs", "-1", "epochs", "epochs must be a positive integer, got -1"),
])
def test_hyperparameter_out_of_range(option, value, field, message, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", option, value, "--out", str(out)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: expected a positive" in err and value in err, err
    assert not out.exists()  # refused before anything was created
    with pytest.raises(ValueError) as info:
        TrainConfig(**{field: float(value) if field == "lr" else int(value)})
    assert str(info.value) == message


def test_input_size_does_not_fit_the_model(tmp_path, kit):
    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32)).astype(np.uint8)
    labels = np.arange(20, dtype=np.uint8) % 10
    with pytest.raises(ShapeError) as info:
        kit.trainer(tmp_path, data=((images, labels), kit.TEST)).fit()
    text = str(info.value)
    assert text.startswith("training images: model input (1, 32, 32): layer 7 (Linear("
                           "in_features=2704, out_features=1024)) does not fit its input (4624,)"), text
    assert not (tmp_path / "checkpoint.npz").exists()


def test_input_size_does_not_fit_the_model_test_split_refused_before_training(tmp_path, kit):
    test = kit.make_data(10, 1, size=32)
    steps = []
    from stablecnn.callbacks import Callback

    class Count(Callback):
        def on_step(self, trainer, step):
            steps.append(step)

    with pytest.raises(ShapeError, match=r"test images: .*\(1, 32, 32\)"):
        kit.trainer(tmp_path, data=(kit.TRAIN, test), callbacks=[Count()]).fit()
    assert steps == []  # refused before the first step


def test_nan_or_inf_in_the_input_predict(tmp_path, capsys, kit):
    from stablecnn import checkpoint
    from stablecnn.layers import Flatten, Linear
    from stablecnn.model import Sequential

    ckpt = kit.save_small_checkpoint(
        tmp_path / "checkpoint.npz", Sequential(Flatten(), Linear(784, 10), input_shape=(1, 28, 28)))
    files = []
    for name, bad in (("nan.npy", np.nan), ("inf.npy", np.inf), ("neg-inf.npy", -np.inf)):
        array = np.full((2, 28, 28), 0.5, np.float32)
        array[1, 3, 4] = bad
        np.save(tmp_path / name, array)
        files.append(tmp_path / name)
        with pytest.raises(DataError, match=f"^{tmp_path / name}: array holds NaN or infinite"):
            load_images(tmp_path / name)
    from PIL import Image

    tiff = tmp_path / "nan.tiff"  # a float image (mode F) holding NaN
    pixels = np.full((28, 28), 0.5, np.float32)
    pixels[0, 0] = np.nan
    Image.fromarray(pixels, mode="F").save(tiff)
    files.append(tiff)
    code = cli.main(["predict", str(ckpt), *map(str, files)])
    err = capsys.readouterr().err
    assert code == 1
    for path in files:
        assert f"stablecnn: error: {path}: " in err and "NaN or infinite" in err
    assert f"{len(files)} of {len(files)} files could not be predicted" in err
    # the model itself follows IEEE arithmetic (as NumPy and PyTorch do): NaN in, NaN out; the
    # checks live where inputs enter, not in every forward pass
    model, _ = checkpoint.load_model(ckpt)
    assert np.isnan(model.forward(np.full((1, 1, 28, 28), np.nan, np.float32))).all()


def test_nan_or_inf_in_the_input_training(tmp_path, kit):
    images = kit.TRAIN[0].astype(np.float32)
    images[7, 3, 3] = np.nan
    with pytest.raises(StableCNNError) as info:
        kit.trainer(tmp_path, kit.config(normalization="unit"), data=((images, kit.TRAIN[1]),
                                                                    kit.TEST))
    text = str(info.value)
    assert "training images" in text and ("uint8" in text or "NaN" in text), text
    assert not isinstance(info.value, TrainingError) or "learning rate" not in text


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_learning_rate_so_large_the_loss_diverges(epoch1_run, kit, reference, tmp_path, capsys,
                                                  toy_cli):
    from stablecnn.train import resume_checkpoint

    good = (epoch1_run / "checkpoint.npz").read_bytes()
    cfg, ckpt = resume_checkpoint(epoch1_run)
    cfg.epochs, cfg.lr = 2, 1e30  # epoch 2 with a learning rate that blows the weights up
    with pytest.raises(TrainingError) as info:
        kit.trainer(epoch1_run, cfg, checkpoint=ckpt).fit()
    assert str(info.value) == (
        f"loss became nan at epoch 2, step 2 (global step 5); training stopped. The last good "
        f"checkpoint is {epoch1_run / 'checkpoint.npz'}; try a lower learning rate")
    assert (epoch1_run / "checkpoint.npz").read_bytes() == good  # kept, byte for byte
    kit.assert_bit_exact(kit.resume_to_end(epoch1_run), reference)  # and it resumes exactly
    # the CLI: exit 2, one line naming the step
    run = tmp_path / "cli"
    assert cli.main(["train", "--lr", "1e30", "--epochs", "2", "--batch-size", "10",
                     "--out", str(run), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "stablecnn: error: loss became nan at epoch 1, step 2 (global step 2)" in err, err
    assert "(none yet)" in err and not (run / "checkpoint.npz").exists()
    assert not (run / ".lock").exists()
