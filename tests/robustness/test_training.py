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
from support.fakes import make_data, save_small_checkpoint
from support.runs import TEST, TRAIN, assert_bit_exact, make_config, make_trainer, resume_to_end

from stablecnn import cli
from stablecnn.data.pictures import load_images
from stablecnn.errors import DataError, ShapeError, StableCNNError, TrainingError
from stablecnn.training.trainer import TrainConfig


@pytest.mark.parametrize(
    "option, value, field, message",
    [
        ("--lr", "-0.1", "lr", "lr must be a positive finite number, got -0.1"),
        ("--lr", "nan", "lr", "lr must be a positive finite number, got nan"),
        ("--batch-size", "0", "batch_size", "batch_size must be a positive integer, got 0"),
        ("--epochs", "-1", "epochs", "epochs must be a positive integer, got -1"),
    ],
)
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


def test_input_size_does_not_fit_the_model(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32)).astype(np.uint8)
    labels = np.arange(20, dtype=np.uint8) % 10
    with pytest.raises(ShapeError) as info:
        make_trainer(tmp_path, data=((images, labels), TEST)).fit()
    text = str(info.value)
    assert text.startswith(
        "training images: model input (1, 32, 32): layer 7 (Linear("
        "in_features=2704, out_features=1024)) does not fit its input (4624,)"
    ), text
    assert not (tmp_path / "checkpoint.npz").exists()


def test_input_size_does_not_fit_the_model_test_split_refused_before_training(tmp_path):
    test = make_data(10, 1, size=32)
    steps = []
    from stablecnn.training.callbacks import Callback

    class Count(Callback):
        def on_step(self, trainer, step):
            steps.append(step)

    with pytest.raises(ShapeError, match=r"test images: .*\(1, 32, 32\)"):
        make_trainer(tmp_path, data=(TRAIN, test), callbacks=[Count()]).fit()
    assert steps == []  # refused before the first step


def test_nan_or_inf_in_the_input_predict(tmp_path, capsys):
    from stablecnn.nn.layers import Flatten, Linear
    from stablecnn.nn.model import Sequential
    from stablecnn.training import checkpoint

    ckpt = save_small_checkpoint(
        tmp_path / "checkpoint.npz", Sequential(Flatten(), Linear(784, 10), input_shape=(1, 28, 28))
    )
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


def test_nan_or_inf_in_the_input_training(tmp_path):
    images = TRAIN[0].astype(np.float32)
    images[7, 3, 3] = np.nan
    with pytest.raises(StableCNNError) as info:
        make_trainer(tmp_path, make_config(normalization="unit"), data=((images, TRAIN[1]), TEST))
    text = str(info.value)
    assert "training images" in text and ("uint8" in text or "NaN" in text), text
    assert not isinstance(info.value, TrainingError) or "learning rate" not in text


@pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)
def test_learning_rate_so_large_the_loss_diverges(epoch1_run, reference, tmp_path, capsys, toy_cli):
    from stablecnn.training.trainer import resume_checkpoint

    good = (epoch1_run / "checkpoint.npz").read_bytes()
    cfg, ckpt = resume_checkpoint(epoch1_run)
    cfg.epochs, cfg.lr = 2, 1e30  # epoch 2 with a learning rate that blows the weights up
    with pytest.raises(TrainingError) as info:
        make_trainer(epoch1_run, cfg, checkpoint=ckpt).fit()
    assert str(info.value) == (
        f"loss became nan at epoch 2, step 2 (global step 5); training stopped. The last good "
        f"checkpoint is {epoch1_run / 'checkpoint.npz'}; try a lower learning rate"
    )
    assert (epoch1_run / "checkpoint.npz").read_bytes() == good  # kept, byte for byte
    assert_bit_exact(resume_to_end(epoch1_run), reference)  # and it resumes exactly
    # the CLI: exit 2, one line naming the step
    run = tmp_path / "cli"
    assert (
        cli.main(
            [
                "train",
                "--lr",
                "1e30",
                "--epochs",
                "2",
                "--batch-size",
                "10",
                "--out",
                str(run),
                "--no-plots",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "stablecnn: error: loss became nan at epoch 1, step 2 (global step 2)" in err, err
    assert (
        f"training stopped. No checkpoint was saved, so there is nothing to resume: start "
        f"again with a lower --lr, adding --overwrite to reuse --out {run}\n"
    ) in err
    assert not (run / "checkpoint.npz").exists() and not (run / ".lock").exists()
    # the directory holds the failed run's log and metrics: a new run there is offered
    # --overwrite, not a --resume that cannot work
    capsys.readouterr()
    assert cli.main(["train", "--epochs", "1", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "saved no checkpoint" in err and "--overwrite" in err and "--resume" not in err


# -- issue 12.7: a run that collapses to chance is warned about ------------------------------------
def test_the_collapse_rule():
    """Exploded: a loss above 100 x max(ln K, first loss). Chance: test accuracy at most the
    largest class's share plus half of 1/K."""
    from stablecnn.training.callbacks import at_chance, chance_accuracy, exploded_step

    ln10 = np.log(10)
    assert exploded_step([2.2, 2.1, 100 * ln10 * 1.001, 2.3], 10) == 2
    assert exploded_step([2.2, 2.1, 100 * ln10 * 0.999, 2.3], 10) is None  # ln K rules: 2.2 < ln 10
    assert exploded_step([41.3, 384.2, 2.0], 10) is None  # the original recipe's step 2 on MNIST
    assert exploded_step([41.3, 4131.0], 10) == 1
    assert exploded_step([2.3, float("nan")], 10) == 1 and exploded_step([], 10) is None
    balanced = np.repeat(np.arange(10), 10)
    assert chance_accuracy(balanced, 10) == 0.1
    assert at_chance(0.15, balanced, 10) and not at_chance(0.1501, balanced, 10)
    skewed = np.array([3] * 30 + list(range(10)) * 7)  # class 3: 37 of 100
    assert chance_accuracy(skewed, 10) == 0.37
    assert at_chance(0.42, skewed, 10) and not at_chance(0.4201, skewed, 10)


COLLAPSE = (
    r"warning: epoch {epoch} ended at chance level \(test accuracy \d+\.\d\d%; a constant "
    r"guess scores 20\.00%\) after the training loss exploded at global step {step} "
    r"\(epoch 1, step {step}: loss {loss}, over 100 x {first}\); the model has likely "
    r"collapsed\. Try a lower learning rate \(this run has sgd lr 4; e\.g\. --lr 0\.4\)"
)


@pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)
def test_a_run_that_collapses_to_chance_is_warned_about(tmp_path, capsys, toy_cli):
    """``--optimizer sgd --lr 4``: the loss jumps at step 2 and the model ends at chance; the run
    goes on (exit 0) with a warning per such epoch, in the log and on stderr."""
    import csv
    import re
    import warnings

    run = tmp_path / "run"
    with warnings.catch_warnings():  # the warning is ours: no NumPy overflow chatter besides
        warnings.simplefilter("error", RuntimeWarning)
        assert (
            cli.main(
                [
                    "train",
                    "--optimizer",
                    "sgd",
                    "--lr",
                    "4",
                    "--epochs",
                    "2",
                    "--batch-size",
                    "10",
                    "--out",
                    str(run),
                    "--no-plots",
                ]
            )
            == 0
        )
    err = capsys.readouterr().err
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    losses = [float(r["loss"]) for r in rows if r["kind"] == "step"]
    jump = next(i for i, v in enumerate(losses) if v > 100 * max(np.log(10), losses[0]))
    assert jump == 1  # step 2, as in the issue; the model then sits at chance
    assert all(float(r["test_acc"]) <= 0.25 for r in rows if r["kind"] == "epoch")
    log = (run / "train_log.txt").read_text()
    for epoch in (1, 2):
        pattern = COLLAPSE.format(
            epoch=epoch,
            step=2,
            loss=f"{losses[1]:.3g}".replace("+", r"\+"),
            first=f"{losses[0]:.3g}",
        )
        assert len(re.findall(pattern, err)) == 1, err
        assert len(re.findall(pattern, log)) == 1, log


def test_a_healthy_run_gets_no_collapse_warning(tmp_path, capsys, toy_cli):
    """The recipe (support.runs, Adagrad 0.01) ends epoch 1 at chance without an explosion: no
    warning."""
    from stablecnn.training import checkpoint

    run = tmp_path / "run"
    assert (
        cli.main(["train", "--epochs", "2", "--batch-size", "10", "--out", str(run), "--no-plots"])
        == 0
    )
    history = checkpoint.load(run).history
    assert history["epoch_test_acc"][0] <= 0.25  # chance alone is a slow start, not a collapse
    assert max(history["step_loss"]) > 5 * history["step_loss"][0]  # and a spike is no explosion
    assert "warning" not in capsys.readouterr().err
    assert "warning" not in (run / "train_log.txt").read_text()
