"""``stablecnn train``'s run directory: a new run is refused a directory that already holds one
unless ``--overwrite`` (which then leaves none of the old run's files beside the new run's), an
``--out`` that is a file is refused naming it, and so is a ``--resume`` that is a file or
nothing; a resume with nothing left to train is refused.

Every refusal comes before any data is read or any file written: exit 2, one line, the directory
byte-identical (:func:`support.runs.snapshot`).
"""

from __future__ import annotations

import pytest
from support.runs import interrupt_at, make_trainer, snapshot

from stablecnn import cli
from stablecnn.training import checkpoint
from stablecnn.training.rundir import RUN_FILES  # a real run writes each: see the overwrite test
from stablecnn.training.trainer import Interrupted

NEW_RUN = ("train", "--epochs", "1", "--batch-size", "10", "--no-plots")


def test_out_holding_a_run_is_refused_before_anything_is_read_or_written(
    epoch1_run, capsys, no_data_read
):
    before = snapshot(epoch1_run)
    assert cli.main([*NEW_RUN, "--out", str(epoch1_run)]) == 2
    assert capsys.readouterr().err == (
        f"stablecnn: error: {epoch1_run} already holds a run (checkpoint.npz, train_log.txt, "
        f"metrics.csv): continue it with --resume {epoch1_run}, or replace it with --overwrite "
        f"(or name another --out); nothing was changed\n"
    )
    assert snapshot(epoch1_run) == before


@pytest.mark.parametrize("name", RUN_FILES)
def test_any_file_a_run_writes_marks_a_run(name, tmp_path, capsys, no_data_read):
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_bytes(b"old")
    assert cli.main([*NEW_RUN, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    if name == "checkpoint.npz":
        assert f"error: {run} already holds a run ({name}): continue it with --resume" in err
    else:  # no checkpoint: nothing to resume, so --resume is not offered
        assert err == (
            f"stablecnn: error: {run} holds the files of a run that saved no checkpoint ({name}), "
            f"so there is nothing to resume: replace them with --overwrite, or name another "
            f"--out; nothing was changed\n"
        )
    assert snapshot(run) == {name: b"old"}


def test_an_empty_directory_or_one_without_run_files_takes_a_new_run(tmp_path, toy_cli):
    empty, other = tmp_path / "empty", tmp_path / "other"
    empty.mkdir()
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    for run in (empty, other):
        assert cli.main([*NEW_RUN, "--out", str(run)]) == 0
        assert checkpoint.load(run).meta["progress"]["epoch"] == 1
    assert (other / "notes.txt").read_text() == "mine\n"


def test_overwrite_replaces_the_run_and_leaves_none_of_its_files(tmp_path, capsys, toy_cli):
    run = tmp_path / "run"
    assert cli.main(["train", "--epochs", "2", "--batch-size", "10", "--out", str(run)]) == 0
    (run / "notes.txt").write_text("mine\n")  # not the run's: kept
    (run / ".metrics.csv.cut.tmp").write_text("a write cut short")
    old = snapshot(run)
    assert set(RUN_FILES) < set(old)  # the checkpoint, log, metrics and every plot
    capsys.readouterr()
    assert cli.main([*NEW_RUN, "--seed", "1", "--out", str(run), "--overwrite"]) == 0
    assert (
        f"--overwrite: removed the previous run's {', '.join(RUN_FILES)}\n"
        in capsys.readouterr().out
    )
    new = snapshot(run)
    assert set(new) == {"checkpoint.npz", "train_log.txt", "metrics.csv", "notes.txt"}
    assert new["notes.txt"] == old["notes.txt"]
    ckpt = checkpoint.load(run)
    assert ckpt.meta["progress"]["epoch"] == 1 and ckpt.meta["train"]["seed"] == 1
    log = (run / "train_log.txt").read_text().splitlines()
    assert " training md1 on mnist" in log[0] and "seed 1" in log[0]  # not the old log's end
    assert sum(" training md1 " in line for line in log) == 1
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert sum(row.startswith("epoch,") for row in metrics) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--optimizer", "adagrad", "--momentum", "0.9"], "does not take momentum"),
        (["--train-size", "1000"], "train_size 1000 exceeds the 30 training images"),
        (
            ["--resume", "{run}"],
            "--overwrite replaces the run in --out with a new one and --resume",
        ),
    ],
    ids=["a bad option", "a check of the trainer", "--resume"],
)
def test_overwrite_loses_nothing_when_the_new_run_is_refused(
    args, message, epoch1_run, capsys, toy_cli
):
    before = snapshot(epoch1_run)
    args = [a.format(run=epoch1_run) for a in args]
    assert cli.main([*NEW_RUN, *args, "--out", str(epoch1_run), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stablecnn: error: ") and message in err and err.count("\n") == 1, err
    assert snapshot(epoch1_run) == before


def test_out_that_is_a_file_is_refused_naming_it(tmp_path, capsys, no_data_read):
    a_file = tmp_path / "make.py"
    a_file.write_text("print('mine')\n")
    assert cli.main([*NEW_RUN, "--out", str(a_file)]) == 2
    assert capsys.readouterr().err == (
        f"stablecnn: error: --out {a_file} is a file, not a directory: name a folder for the "
        f"run; nothing was written\n"
    )
    assert cli.main([*NEW_RUN, "--out", str(a_file / "run")]) == 2
    assert capsys.readouterr().err == (
        f"stablecnn: error: cannot make run directory {a_file / 'run'}: {a_file} is a file, not "
        f"a directory; nothing was written\n"
    )
    assert snapshot(tmp_path) == {"make.py": b"print('mine')\n"}


def test_resume_of_a_file_or_of_nothing_is_refused_naming_it(
    epoch1_run, tmp_path, capsys, no_data_read
):
    a_file, missing = tmp_path / "notes.txt", tmp_path / "no-run"
    a_file.write_text("mine\n")
    ckpt = epoch1_run / "checkpoint.npz"
    before = snapshot(epoch1_run)
    for path, message in (
        (a_file, "a file, not a run directory (a run directory holds checkpoint.npz)"),
        (
            ckpt,
            f"a file, not a run directory (a run directory holds checkpoint.npz); give its "
            f"folder: --resume {epoch1_run}",
        ),
        (
            missing,
            "no such directory; give the run directory a training wrote (it holds checkpoint.npz)",
        ),
    ):
        assert cli.main(["train", "--resume", str(path)]) == 2
        assert capsys.readouterr().err == f"stablecnn: error: --resume {path}: {message}\n"
    assert snapshot(epoch1_run) == before and not missing.exists()
    assert a_file.read_text() == "mine\n"


def test_a_resume_with_nothing_left_to_train_is_refused(epoch1_run, capsys, no_data_read):
    before = snapshot(epoch1_run)  # a run of 1 epoch, started for 1
    for args, asked in (
        (["--epochs", "1"], " and --epochs 1 asks for 1"),
        ([], ", all it was started for"),
    ):
        assert cli.main(["train", "--resume", str(epoch1_run), *args]) == 2
        assert capsys.readouterr().err == (
            f"stablecnn: error: nothing to train: {epoch1_run} has already trained 1 epoch{asked}; "
            f"to train it further, ask for more with --epochs N, N above 1; nothing was changed\n"
        )
    assert snapshot(epoch1_run) == before


def test_a_run_cut_mid_epoch_has_that_epoch_left_to_train(tmp_path, capsys, toy_cli):
    run = tmp_path / "cut"
    with pytest.raises(Interrupted):
        make_trainer(run, callbacks=[interrupt_at(4)]).fit()  # epoch 1, and step 1 of epoch 2
    before = snapshot(run)
    assert cli.main(["train", "--resume", str(run), "--epochs", "1", "--no-plots"]) == 2
    assert (
        f"{run} has already trained 1 epoch (and 1 step of epoch 2) and --epochs 1 asks for 1; "
        in capsys.readouterr().err
    )
    assert snapshot(run) == before
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--no-plots"]) == 0
    assert checkpoint.load(run).meta["progress"] == {"epoch": 2, "step": 0, "global_step": 6}
