"""End-to-end training on small generated data: checkpoints, resume, Ctrl-C, NaN, the CLI."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from support.fakes import make_data, toy_loader
from support.processes import cli_process
from support.runs import interrupt_at, params_of

from stablecnn.cli import main
from stablecnn.errors import TrainingError
from stablecnn.training import checkpoint
from stablecnn.training.callbacks import Callback
from stablecnn.training.trainer import Interrupted, RunLock, TrainConfig, Trainer, resume_checkpoint


@pytest.fixture(scope="module")
def data():
    return make_data(240, 0), make_data(100, 1)


@pytest.fixture
def toy_data(monkeypatch, data):
    """Serve the toy data to the CLI in place of the real (digest-pinned) datasets."""
    monkeypatch.setattr("stablecnn.cli.train.load_data", toy_loader(*data))


def config(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 40, **kw})


def trainer(run_dir, data, cfg=None, **kw):
    train, test = data
    return Trainer(cfg or config(), run_dir, train, test, echo=False, progress=False, **kw)


def test_training_learns_and_leaves_a_complete_run_directory(tmp_path, data):
    last = trainer(tmp_path, data, config(epochs=3)).fit()
    assert last["test_acc"] > 0.5  # chance is 0.1
    assert {"checkpoint.npz", "train_log.txt", "metrics.csv"} <= set(os.listdir(tmp_path))
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("kind,epoch,step,loss,batch_acc,lr,seconds")
    assert sum(r.startswith("step,") for r in rows) == 3 * 6
    assert sum(r.startswith("epoch,") for r in rows) == 3
    ckpt = checkpoint.load(tmp_path / "checkpoint.npz")
    assert ckpt.meta["progress"] == {"epoch": 3, "step": 0, "global_step": 18}
    assert set(ckpt.params) == {
        "0.weight",
        "0.bias",
        "3.weight",
        "3.bias",
        "7.weight",
        "7.bias",
        "9.weight",
        "9.bias",
    }
    assert set(ckpt.optim) == {f"{p}.sum_sq" for p in ckpt.params} | {"steps"}
    assert len(ckpt.history["step_loss"]) == 18


def test_resume_after_an_epoch_is_bit_identical(tmp_path, data):
    trainer(tmp_path / "full", data).fit()
    trainer(tmp_path / "part", data, config(epochs=1)).fit()
    cfg, ckpt = resume_checkpoint(tmp_path / "part")
    cfg.epochs = 2
    trainer(tmp_path / "part", data, cfg, checkpoint=ckpt).fit()
    full, part = params_of(tmp_path / "full"), params_of(tmp_path / "part")
    for name in full:
        np.testing.assert_array_equal(full[name], part[name], err_msg=name)
    h_full = checkpoint.load(tmp_path / "full").history
    h_part = checkpoint.load(tmp_path / "part").history
    np.testing.assert_array_equal(h_full["step_loss"], h_part["step_loss"])


def test_interrupt_mid_epoch_saves_a_checkpoint_that_resumes_bit_identically(tmp_path, data):
    trainer(tmp_path / "full", data).fit()
    with pytest.raises(Interrupted, match="epoch 2, step 3.*--resume"):
        trainer(tmp_path / "cut", data, callbacks=[interrupt_at(9)]).fit()
    cfg, ckpt = resume_checkpoint(tmp_path / "cut")
    assert ckpt.meta["progress"] == {"epoch": 1, "step": 3, "global_step": 9}
    trainer(tmp_path / "cut", data, cfg, checkpoint=ckpt).fit()
    full, cut = params_of(tmp_path / "full"), params_of(tmp_path / "cut")
    for name in full:
        np.testing.assert_array_equal(full[name], cut[name], err_msg=name)
    metrics = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()
    assert sum(r.startswith("step,") for r in metrics) == 12  # no step logged twice


class PoisonAt(Callback):
    def __init__(self, n):
        self.n = n

    def on_step(self, trainer, step):
        if step["global_step"] == self.n:
            trainer.model.layers[-1].params["weight"][0, 0] = np.nan


def test_nan_loss_stops_training_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, data):
    with pytest.raises(
        TrainingError, match=r"loss became nan at epoch 2, step 2 \(global step 8\)"
    ):
        trainer(tmp_path, data, callbacks=[PoisonAt(7)]).fit()
    ckpt = checkpoint.load(tmp_path / "checkpoint.npz")
    assert ckpt.meta["progress"]["epoch"] == 1
    assert all(np.all(np.isfinite(p)) for p in ckpt.params.values())


def test_a_second_run_on_the_same_directory_is_refused(tmp_path):
    with RunLock(tmp_path):
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "from stablecnn.training.runlock import RunLock; "
                f"RunLock({str(tmp_path)!r}).acquire()",
            ],
            capture_output=True,
            text=True,
        )
        assert other.returncode != 0 and "in use by process" in other.stderr
    assert not (tmp_path / ".lock").exists()


def test_a_stale_lock_from_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text("999999999")
    with RunLock(tmp_path) as lock:
        assert lock.held


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-0.1), "lr must be a positive"),
        (dict(batch_size=0), "batch_size"),
        (dict(epochs=-1), "epochs"),
        (dict(dtype="float16"), "dtype"),
        (dict(optimizer="sgdx"), "optimizer"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_cli_train_evaluate_summary(tmp_path, toy_data, capsys):
    run = tmp_path / "run"
    code = main(["train", "--epochs", "1", "--batch-size", "60", "--out", str(run)])
    assert code == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and (run / "checkpoint.npz").exists()
    assert (run / "curves.png").exists() and (run / "confusion.png").exists()
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out and "per-class accuracy" in out
    assert main(["summary", "md1"]) == 0
    assert "2,796,218" in capsys.readouterr().out
    # resume extends the run by one epoch
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-plots"]) == 0
    assert checkpoint.load(run / "checkpoint.npz").meta["progress"]["epoch"] == 2


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.npz")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--lr", "-1"])
    assert "positive" in capsys.readouterr().err


def test_sigint_in_a_real_process_leaves_a_resumable_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = cli_process(
        "train",
        "--epochs",
        "1",
        "--batch-size",
        "20",
        "--out",
        run,
        "--no-plots",
        train=(4000, 0),
        test=(50, 1),
    )
    metrics = run / "metrics.csv"
    deadline = time.time() + 60
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count("\nstep,") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Resume with: stablecnn train --resume" in err
    ckpt = checkpoint.load(run / "checkpoint.npz")
    assert 0 < ckpt.meta["progress"]["step"] < 200
    assert not (run / ".lock").exists()


@pytest.mark.parametrize(
    "command",
    ["train", "evaluate", "summary", "predict", "plot", "data", "export-pickle", "import-pickle"],
)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: stablecnn " + command in capsys.readouterr().out


def test_other_optimizers_schedules_and_clipping_train_and_resume_bit_identically(tmp_path, data):
    cfg = dict(
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="cosine",
        warmup_steps=3,
        clip=5.0,
        normalization="unit",
    )
    last = trainer(tmp_path / "full", data, config(**cfg)).fit()
    assert np.isfinite(last["test_loss"])
    lrs = checkpoint.load(tmp_path / "full").history["step_lr"]
    assert lrs[0] < lrs[3] and lrs[-1] < lrs[3]  # warm-up, then the cosine decays
    with pytest.raises(Interrupted):
        trainer(tmp_path / "cut", data, config(**cfg), callbacks=[interrupt_at(8)]).fit()
    cfg_r, ckpt = resume_checkpoint(tmp_path / "cut")
    assert cfg_r.optimizer == "sgd" and cfg_r.clip == 5.0
    trainer(tmp_path / "cut", data, cfg_r, checkpoint=ckpt).fit()
    full, cut = params_of(tmp_path / "full"), params_of(tmp_path / "cut")
    for name in full:
        np.testing.assert_array_equal(full[name], cut[name], err_msg=name)


def test_an_optimizer_argument_it_does_not_take_is_refused_by_name(tmp_path, data):
    with pytest.raises(ValueError, match="momentum"):
        trainer(tmp_path, data, config(optimizer="adam", momentum=0.9))


def test_cli_trains_on_your_own_idx_files_with_no_verify(tmp_path, data, capsys):
    from stablecnn.data import write_idx

    (xtr, ytr), (xte, yte) = data
    folder = tmp_path / "idx"
    folder.mkdir()
    for name, arr in (
        ("train-images-idx3-ubyte", xtr),
        ("train-labels-idx1-ubyte", ytr),
        ("t10k-images-idx3-ubyte.gz", xte),
        ("t10k-labels-idx1-ubyte.gz", yte),
    ):
        write_idx(folder / name, arr)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data-dir",
                str(folder),
                "--no-verify",
                "--epochs",
                "1",
                "--batch-size",
                "60",
                "--out",
                str(run),
                "--no-plots",
            ]
        )
        == 0
    )
    assert "240 images" in (run / "train_log.txt").read_text()  # ours, not MNIST's 60,000
    assert main(["evaluate", str(run), "--data-dir", str(folder), "--no-verify"]) == 0
    assert "100 images" in capsys.readouterr().out
    assert main(["train", "--no-verify", "--out", str(tmp_path / "x")]) == 2
    assert "--no-verify applies to --data-dir" in capsys.readouterr().err


def test_weight_decay_is_stored_as_the_number_the_run_uses(tmp_path):
    """An explicit 0 is 0 (it used to become AdamW's default 0.01); None is the default."""
    from stablecnn.training.trainer import TrainConfig, Trainer

    assert TrainConfig(optimizer="adamw").weight_decay == 0.01
    assert TrainConfig(optimizer="adamw", weight_decay=0).weight_decay == 0
    assert TrainConfig(optimizer="adam").weight_decay == 0.0
    images = np.zeros((4, 28, 28), np.uint8)
    labels = np.arange(4, dtype=np.uint8)
    trainer = Trainer(
        TrainConfig(
            optimizer="adamw", weight_decay=0, epochs=1, batch_size=4, normalization="unit"
        ),
        tmp_path / "run",
        (images, labels),
        (images, labels),
        echo=False,
        progress=False,
    )
    assert trainer.optimizer.config()["weight_decay"] == 0
    stored = TrainConfig(optimizer="adamw", weight_decay=0).to_dict()
    assert TrainConfig.from_dict(stored).weight_decay == 0
    # a checkpoint of version 1 stored 0.0 and trained AdamW with its default
    version1 = {k: v for k, v in stored.items() if k != "version"}
    assert TrainConfig.from_dict(version1).weight_decay == 0.01
    assert TrainConfig.from_dict({**version1, "optimizer": "sgd"}).weight_decay == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(optimizer="sgd", momentum=1.5), "SGD: invalid momentum value: 1.5"),
        (dict(optimizer="adam", weight_decay=float("inf")), "invalid weight_decay value: inf"),
        (dict(optimizer="adagrad", momentum=0.9), "does not take momentum"),
    ],
)
def test_optimizer_settings_are_checked_with_the_config(kwargs, message):
    from stablecnn.training.trainer import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("command", ["train", "evaluate", "summary", "plot"])
def test_every_command_has_a_description_line(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    description = capsys.readouterr().out.split("\n\n")[1]
    assert not description.startswith(("positional arguments", "options")), description


def test_summary_names_what_it_takes(tmp_path, toy_data, capsys):
    assert main(["summary", str(tmp_path / "nonexist")]) == 2
    assert capsys.readouterr().err == (
        f"stablecnn: error: unknown model '{tmp_path / 'nonexist'}': not a built-in (md1, md1he, "
        f"md2, md3, md3cifar), and no such .toml or .json model file, checkpoint .npz or run "
        f"directory\n"
    )
    run = tmp_path / "run"
    assert (
        main(["train", "--epochs", "1", "--batch-size", "60", "--out", str(run), "--no-plots"]) == 0
    )
    capsys.readouterr()
    assert main(["summary", str(run)]) == 0  # a run directory: its checkpoint's model
    assert "2,796,218" in capsys.readouterr().out


def test_evaluate_and_predict_refuse_a_checkpoint_without_a_normalizer_alike(
    tmp_path, toy_data, capsys
):
    from PIL import Image

    from stablecnn.nn import zoo

    path = tmp_path / "api.npz"
    checkpoint.save(path, zoo.build("md1"), meta={})
    picture = Image.new("L", (28, 28))
    picture.paste(255, (10, 4, 16, 24))  # a stroke of ink
    picture.save(tmp_path / "x.png")
    assert main(["evaluate", str(path)]) == 2
    refused = capsys.readouterr().err
    assert refused == (
        f"stablecnn: error: {path}: has no normalizer record, so its inputs cannot be prepared "
        f"as in training; save it with meta={{'normalizer': Normalizer.original(train_images)"
        f".to_dict()}} (or Normalizer.unit() for pixels scaled to [0, 1]), the normalisation "
        f"the model was trained with\n"
    )
    assert main(["predict", str(path), str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == refused
    # with the meta the message asks for, both take it
    meta = {"normalizer": {"kind": "original", "mean": 33.0, "std": 78.0}}
    checkpoint.save(path, zoo.build("md1"), meta=meta)
    assert main(["evaluate", str(path)]) == 0
    assert main(["predict", str(path), str(tmp_path / "x.png")]) == 0


def test_resuming_a_checkpoint_that_is_not_a_training_runs_says_so(tmp_path, capsys):
    from stablecnn.nn import zoo

    folder = tmp_path / "imported"
    folder.mkdir()
    meta = {"normalizer": {"kind": "unit", "mean": 0.0, "std": 255.0}}
    checkpoint.save(folder / "checkpoint.npz", zoo.build("md1"), meta=meta)
    assert main(["train", "--resume", str(folder)]) == 2
    assert capsys.readouterr().err == (
        f"stablecnn: error: {folder / 'checkpoint.npz'}: not a training run's checkpoint (saved "
        f"from Python or imported, it holds no training progress), so it cannot be resumed\n"
    )
    meta["imported"] = {"from": "/x/model.onnx"}
    checkpoint.save(folder / "checkpoint.npz", zoo.build("md1"), meta=meta)
    assert main(["train", "--resume", str(folder)]) == 2
    assert "checkpoint (imported from /x/model.onnx, it holds" in capsys.readouterr().err
