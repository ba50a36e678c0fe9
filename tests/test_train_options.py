"""``stablecnn train``'s options: what is refused before any data is read or any run directory
made, and how the run's log states its settings."""

from __future__ import annotations

import warnings

import pytest
from support.fakes import make_data, toy_loader

from stablecnn import __version__
from stablecnn.cli import main
from stablecnn.data.augment import Augment
from stablecnn.errors import ConfigError
from stablecnn.training.callbacks import settings_line
from stablecnn.training.config import check_warmup, max_random_crop
from stablecnn.training.trainer import TrainConfig, Trainer

SHORT = ["--epochs", "1", "--batch-size", "60", "--no-plots"]  # 4 steps on the toy data


@pytest.fixture(scope="module")
def data():
    return make_data(240, 0), make_data(100, 1)


@pytest.fixture
def loads(monkeypatch, data):
    """Serve the toy data to the CLI and count the loads: a refusal must come before any."""
    calls = []

    def load(*args, **kwargs):
        calls.append(args)
        return toy_loader(*data)(*args, **kwargs)

    monkeypatch.setattr("stablecnn.cli.train.load_data", load)
    return calls


def refused(capsys, tmp_path, loads, *options) -> str:
    """The one-line error of ``train *options``, checked to come before any data or run dir."""
    run = tmp_path / "run"
    assert main(["train", *options, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stablecnn: error: ") and err.count("\n") == 1, err
    assert not run.exists() and loads == []
    return err


# -- bounds ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "largest"),
    [
        (["--random-crop", "1000"], "at most 14"),
        (["--dataset", "cifar10", "--random-crop", "17"], "at most 16"),
    ],
)
def test_random_crop_beyond_half_the_side_is_refused(capsys, tmp_path, loads, options, largest):
    err = refused(capsys, tmp_path, loads, *options)
    assert "random crops with padding of" in err and "--random-crop" in err and largest in err


def test_random_crop_up_to_half_the_side_is_accepted():
    assert max_random_crop("mnist") == 14 and max_random_crop("cifar10") == 16
    crop = {**Augment().to_dict(), "random_crop": 14}
    assert TrainConfig(augment=crop).augment["random_crop"] == 14
    with pytest.raises(ConfigError, match="random_crop"):
        TrainConfig(augment={**crop, "random_crop": 15})


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--augment", "-1,10", "max_shift must be an int >= 0, got -1"),
        ("--elastic", "-1,4", "got '-1,4'"),
    ],
)
def test_a_negative_value_is_the_options_error_not_an_unknown_argument(
    option, value, message, capsys
):
    with pytest.raises(SystemExit):
        main(["train", option, value])
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and message in err
    assert "unrecognized arguments" not in err


# -- options a run would ignore --------------------------------------------------------------------
@pytest.mark.parametrize("schedule", [[], ["--schedule", "cosine"], ["--schedule", "constant"]])
def test_step_epochs_without_the_step_schedule_is_refused(capsys, tmp_path, loads, schedule):
    err = refused(capsys, tmp_path, loads, *schedule, "--step-epochs", "2")
    assert "--step-epochs applies to --schedule step" in err


def test_mpi_timeout_without_distributed_is_refused(capsys, tmp_path, loads):
    err = refused(capsys, tmp_path, loads, "--mpi-timeout", "10")
    assert "--mpi-timeout applies to --distributed" in err


@pytest.mark.parametrize(
    "variable", ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"]
)
def test_several_mpi_processes_without_distributed_are_refused(
    variable, capsys, tmp_path, loads, monkeypatch
):
    monkeypatch.setenv(variable, "2")
    err = refused(capsys, tmp_path, loads)
    assert "MPI launcher with 2 processes" in err and "add --distributed" in err


def test_one_mpi_process_trains(capsys, tmp_path, loads, monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "1")
    assert main(["train", *SHORT, "--out", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_data_dir_that_is_not_a_folder_is_named(kind, capsys, tmp_path, loads):
    folder = tmp_path / "nonexist"
    if kind == "file":
        folder.write_text("")
    err = refused(capsys, tmp_path, loads, "--data-dir", str(folder))
    said = "does not exist" if kind == "missing" else "is not a folder"
    assert f"--data-dir {folder} {said}" in err


# -- warm-up ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_a_warmup_as_long_as_the_run_is_refused_on_every_schedule(
    schedule, capsys, tmp_path, loads
):
    run = tmp_path / "run"
    args = ["train", *SHORT, "--schedule", schedule, "--warmup-steps", "4", "--out", str(run)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--warmup-steps 4 is not shorter than the run's 4 steps (1 epoch of 4 batches)" in err
    assert "give --warmup-steps N below 4" in err and not run.exists()
    assert main([*args[:-3], "3", "--out", str(run)]) == 0  # 3 < 4 steps: accepted


def test_a_recipes_warmup_too_long_for_a_trial_run_says_so(capsys, tmp_path, loads):
    run = tmp_path / "run"
    assert main(["train", "--recipe", "md1-best", *SHORT, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "the warm-up of 300 steps that --recipe md1-best sets" in err
    assert "give --warmup-steps N below 4" in err and not run.exists()


def test_the_library_refuses_a_warmup_as_long_as_the_run(tmp_path, data):
    config = TrainConfig(epochs=1, batch_size=60, warmup_steps=4)
    with pytest.raises(ConfigError, match=r"warmup_steps 4 is not shorter than the run's 4 steps"):
        Trainer(config, tmp_path / "run", *data, echo=False, progress=False)
    check_warmup(TrainConfig(epochs=2, batch_size=60, warmup_steps=7), 240)  # 7 < 8


# -- the log's settings line -----------------------------------------------------------------------
def test_the_log_states_every_setting_in_the_options_words(capsys, tmp_path, loads):
    run = tmp_path / "run"
    options = [
        *["--dataset", "fashion-mnist", "--optimizer", "sgd", "--momentum", "0.9"],
        *["--schedule", "step", "--step-epochs", "2", "--warmup-steps", "1", "--clip", "5"],
        *["--normalization", "unit", "--augment", "--random-crop", "3", "--hflip"],
    ]
    assert main(["train", *SHORT, *options, "--out", str(run)]) == 0
    settings = (run / "train_log.txt").read_text().splitlines()[1]
    assert settings == (
        "settings: --schedule step --step-epochs 2 --warmup-steps 1 --momentum 0.9 --clip 5 "
        "--normalization unit --augment 2,10 --random-crop 3 --hflip"
    )


def test_the_settings_line_of_a_run_without_augmentation():
    line = settings_line(TrainConfig(optimizer="adamw", micro_batches=2), None)
    assert line == (
        "settings: --schedule constant --weight-decay 0.01 --normalization original "
        "--micro-batches 2 (no augmentation)"
    )


# -- messages --------------------------------------------------------------------------------------
def test_a_diverging_run_reports_one_line_without_numpy_warnings(capsys, tmp_path, loads):
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["train", *SHORT, "--optimizer", "sgd", "--lr", "1e30", "--out", str(run)])
    assert code == 2
    assert "loss became nan" in capsys.readouterr().err
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"stablecnn {__version__}\n"


@pytest.mark.parametrize(
    "option",
    ["--momentum", "--weight-decay", "--step-epochs", "--clip", "--data-dir", "--mpi-timeout"],
)
def test_the_help_gives_each_options_default(option, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {option} "))
    later = (i for i in range(start + 1, len(lines)) if lines[i].startswith("  -"))
    end = next(later, len(lines))
    text = " ".join(" ".join(lines[start:end]).split())
    assert "default" in text or "off when absent" in text, text


def test_every_command_runs_from_a_source_tree_not_installed(monkeypatch, capsys):
    """The parser is built for every command: a checkout run with PYTHONPATH=src, where the
    distribution's metadata is missing, still gets its commands (and says the version is
    unknown) instead of a PackageNotFoundError."""
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == "stablecnn unknown\n"
    assert main(["summary", "md1"]) == 0
