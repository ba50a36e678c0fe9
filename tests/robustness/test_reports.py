"""What evaluate and plot report must not mislead: classes without images, the data they use."""

from __future__ import annotations

import numpy as np
import pytest
from support.fakes import make_data
from support.runs import snapshot

from stablecnn import cli


def test_a_class_without_test_images_is_not_reported_as_wrong(epoch1_template, monkeypatch, capsys):
    import stablecnn.cli.train
    from stablecnn.training.metrics import Evaluation

    images, labels = make_data(40, 3)
    keep = labels != 3  # no image of class 3; class 5 kept, whatever its accuracy
    monkeypatch.setattr(
        stablecnn.cli.train, "load_data", lambda *a, **k: [(images[keep], labels[keep])]
    )
    assert cli.main(["evaluate", str(epoch1_template)]) == 0
    line = next(
        x for x in capsys.readouterr().out.splitlines() if x.startswith("per-class accuracy")
    )
    assert "3: n/a" in line
    assert "n/a" not in line.replace("3: n/a", "")
    confusion = np.zeros((3, 3), np.int64)
    confusion[0, 0], confusion[2, 1] = 4, 2  # class 1: no examples; class 2: all wrong
    per_class = Evaluation(0.5, 1.0, np.zeros(6), confusion).per_class_accuracy
    assert per_class[0] == 1.0 and np.isnan(per_class[1]) and per_class[2] == 0.0


# -- the data a run was trained on is the data evaluate and plot read ------------------------------
@pytest.fixture(scope="module")
def own_data_run(tmp_path_factory):
    """A run trained on IDX files of the user's own (30 training and 50 test images)."""
    from stablecnn.data import write_idx

    root = tmp_path_factory.mktemp("own")
    folder = root / "idx"
    folder.mkdir()
    for stem, (images, labels) in (("train", make_data(30, 0)), ("t10k", make_data(50, 1))):
        write_idx(folder / f"{stem}-images-idx3-ubyte", images)
        write_idx(folder / f"{stem}-labels-idx1-ubyte", labels)
    run = root / "run"
    assert (
        cli.main(
            [
                "train",
                "--data-dir",
                str(folder),
                "--no-verify",
                "--epochs",
                "1",
                "--batch-size",
                "10",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    return run, folder


def _confusions(monkeypatch) -> list[int]:
    """Record how many test images each confusion matrix plot counts."""
    from stablecnn.training import plots

    seen, real = [], plots.plot_confusion
    monkeypatch.setattr(
        plots,
        "plot_confusion",
        lambda confusion, *a, **k: seen.append(int(confusion.sum())) or real(confusion, *a, **k),
    )
    return seen


def test_plot_and_evaluate_read_the_runs_own_data(own_data_run, monkeypatch, capsys):
    run, folder = own_data_run
    seen = _confusions(monkeypatch)
    assert cli.main(["plot", str(run)]) == 0
    assert cli.main(["plot", str(run), "--data-dir", str(folder), "--no-verify"]) == 0
    assert seen == [50, 50]
    assert cli.main(["evaluate", str(run)]) == 0
    assert "test set, 50 images" in capsys.readouterr().out


def test_plot_never_draws_another_datasets_results(own_data_run, monkeypatch, capsys, tmp_path):
    """The issue's case: --data-dir without --no-verify used to warn, fall back to MNIST's
    10,000 test images and overwrite the plots of the user's 50."""
    run, folder = own_data_run
    before = snapshot(run)
    seen = _confusions(monkeypatch)
    assert cli.main(["plot", str(run), "--data-dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SHA-256" in err and "--no-verify" in err
    moved = tmp_path / "moved"
    folder.rename(moved)
    try:
        for command in (["plot", str(run)], ["evaluate", str(run)]):
            assert cli.main(command) == 2
            err = capsys.readouterr().err
            assert f"trained on the IDX files in {folder}" in err and "--data-dir" in err, err
    finally:
        moved.rename(folder)
    assert seen == [] and snapshot(run) == before


def test_no_verify_needs_a_folder(own_data_run, epoch1_template, capsys):
    assert cli.main(["plot", str(epoch1_template), "--no-verify"]) == 2
    assert "--no-verify applies to --data-dir" in capsys.readouterr().err
