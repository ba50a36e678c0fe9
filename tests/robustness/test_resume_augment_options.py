"""The augmentation options (--augment, --max-scale, --elastic, --random-crop, --hflip,
--random-erasing) and --label-smoothing on the command line: what a run stores, and a resume that
refuses a value other than the run's, naming it, before anything runs (as test_resume_options
does for every option)."""

from __future__ import annotations

import pytest

from stablecnn import cli
from stablecnn.training import checkpoint

RECIPE = [
    "--dataset",
    "fashion-mnist",
    "--augment",
    "1,5",
    "--max-scale",
    "0.1",
    "--elastic",
    "30,5",
    "--random-crop",
    "4",
    "--hflip",
    "--random-erasing",
    "0.5",
    "--label-smoothing",
    "0.1",
]


def state(folder):
    """Every file's bytes and modification time (ns) under ``folder``."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def recipe_run(tmp_path, toy_cli, capsys):
    """One epoch of the recipe's toy run with every augmentation step and label smoothing."""
    run = tmp_path / "recipe"
    args = ["train", *RECIPE, "--batch-size", "10", "--epochs", "1", "--out", str(run)]
    assert cli.main([*args, "--no-plots"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return run


def test_the_options_are_stored_in_the_runs_config(recipe_run):
    first, settings = (recipe_run / "train_log.txt").read_text().splitlines()[:2]
    assert ": 30 images, 1 epoch, batch 10, " in first  # the toy data's 30 images
    assert settings == (
        "settings: --schedule constant --normalization original --augment 1,5 --max-scale 0.1 "
        "--elastic 30,5 --random-crop 4 --hflip --random-erasing 0.5 --label-smoothing 0.1"
    )
    config = checkpoint.load(recipe_run).meta["train"]
    assert config["label_smoothing"] == 0.1
    assert config["augment"] == {
        "max_shift": 1,
        "max_degrees": 5.0,
        "random_crop": 4,
        "hflip": True,
        "random_erasing": 0.5,
        "erasing_scale": [0.02, 0.33],
        "erasing_ratio": [0.3, 3.3],
        "max_scale": 0.1,
        "elastic": [30.0, 5.0],
    }


CASES = [  # option and value typed, what the message says the run has
    (["--augment", "2,10"], "1,5"),
    (["--max-scale", "0.2"], "0.1"),
    (["--elastic", "34,4"], "30,5"),
    (["--random-crop", "2"], "4"),
    (["--random-erasing", "0.25"], "0.5"),
    (["--label-smoothing", "0.2"], "0.1"),
]


@pytest.mark.parametrize("given, stored", CASES, ids=[c[0][0] for c in CASES])
def test_a_changed_augmentation_or_smoothing_is_refused(given, stored, recipe_run, capsys):
    before = state(recipe_run)
    assert cli.main(["train", "--resume", str(recipe_run), *given, "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"stablecnn: error: cannot resume {recipe_run} with other settings than it started "
        f"with: {' '.join(given)} (the run has {stored}). "
    ), err
    assert state(recipe_run) == before


@pytest.mark.parametrize(
    "given",
    [
        ["--hflip"],
        ["--max-scale", "0.1"],
        ["--elastic", "34,4"],
        ["--random-crop", "3"],
        ["--random-erasing", "0.5"],
        ["--label-smoothing", "0.1"],
    ],
)
def test_options_a_run_without_them_never_had_are_refused(given, epoch1_run, capsys):
    before = state(epoch1_run)
    assert cli.main(["train", "--resume", str(epoch1_run), *given, "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    has = "0" if given[0] == "--label-smoothing" else "none"
    assert f"with: {' '.join(given)} (the run has {has}). " in err, err
    assert state(epoch1_run) == before


def test_the_runs_own_values_are_accepted_one_or_all(recipe_run, capsys):
    args = ["train", "--resume", str(recipe_run), "--hflip", "--epochs", "2", "--no-plots"]
    assert cli.main(args) == 0
    assert checkpoint.load(recipe_run).meta["progress"]["epoch"] == 2
    args = ["train", "--resume", str(recipe_run), *RECIPE, "--epochs", "3", "--no-plots"]
    assert cli.main(args) == 0, capsys.readouterr().err
    ckpt = checkpoint.load(recipe_run)
    assert ckpt.meta["progress"]["epoch"] == 3
    assert ckpt.meta["train"]["augment"]["random_crop"] == 4  # kept, not reset by the resume


def test_bad_values_and_flips_on_digits_are_refused_before_a_run_starts(tmp_path, capsys, toy_cli):
    for args, message in (
        (["--random-erasing", "0"], "probability of random erasing must be in (0, 1]"),
        (["--random-erasing", "x"], "probability of random erasing must be in (0, 1]"),
        (
            ["--label-smoothing", "1"],
            "label smoothing must be in [0, 1) (1 would make every target uniform and the labels "
            "unused), got '1'",
        ),
        (["--random-crop", "-1"], "expected a positive integer"),
        (["--max-scale", "1"], "largest zoom must be in (0, 1)"),
        (["--max-scale", "0"], "largest zoom must be in (0, 1)"),
        (["--max-scale", "ten"], "largest zoom must be in (0, 1)"),
        (["--elastic", "34"], "elastic distortion must be ALPHA,SIGMA"),
        (["--elastic", "0,4"], "elastic distortion must be ALPHA,SIGMA"),
        (["--elastic", "34,-1"], "elastic distortion must be ALPHA,SIGMA"),
        (["--elastic", "34,inf"], "elastic distortion must be ALPHA,SIGMA"),
        (["--elastic", "a,b"], "elastic distortion must be ALPHA,SIGMA"),
        (["--elastic", "34,1e9"], "(SIGMA at most 1000)"),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(["train", *args, "--out", str(tmp_path / "never")])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    assert cli.main(["train", "--hflip", "--out", str(tmp_path / "never")]) == 2
    assert "horizontal flips (hflip) are not for mnist" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
