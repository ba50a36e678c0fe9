"""Issue 12.3: ``train --resume`` honours every option fixed when the run started, or refuses it.

A resume with an option whose value differs from the run's is refused before anything runs: exit
2, one line naming each such option and the run's value, the run directory (checkpoint first)
byte- and mtime-identical, no data read. The run's own values are accepted, and ``--epochs``
extends the run.
"""

from __future__ import annotations

import pytest
from support.fakes import rewrite_npz
from support.runs import TEST, TRAIN, assert_bit_exact, state_of

from stablecnn import cli
from stablecnn.training.resume import data_record

OTHER_MODEL = """
input_shape = [1, 28, 28]
[[layers]]
type = "Flatten"
[[layers]]
type = "Linear"
in_features = 784
out_features = 10
"""


def with_data_record(run, record):
    """Rewrite the run's checkpoint so it records ``record`` as its data source."""
    import json

    import numpy as np

    def change(arrays):
        meta = json.loads(str(arrays["meta"]))
        meta["data"] = record
        arrays["meta"] = np.array(json.dumps(meta))

    rewrite_npz(run / "checkpoint.npz", run / "checkpoint.npz", change)
    return run


@pytest.fixture
def run(epoch1_run):
    """The recipe (support.runs) after epoch 1, its checkpoint recording stablecnn's data
    sources."""
    return with_data_record(epoch1_run, data_record("mnist", None, True))


def state(folder):
    """Every file's bytes and modification time (ns) under ``folder``."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def other_model(tmp_path):
    path = tmp_path / "other.toml"
    path.write_text(OTHER_MODEL)
    return path


CASES = [  # option, value typed, what the message says the run has
    ("--model", "md1he", "md1"),  # md1's architecture, another initialisation
    ("--dataset", "fashion-mnist", "mnist"),
    ("--train-size", "20", "none"),
    ("--batch-size", "7", "10"),
    ("--lr", "0.5", "0.01"),
    ("--optimizer", "adam", "adagrad"),
    ("--momentum", "0.9", "none"),
    ("--weight-decay", "0.1", "0"),
    ("--schedule", "cosine", "constant"),
    ("--step-epochs", "3", "1"),
    ("--warmup-steps", "2", "0"),
    ("--clip", "1.5", "none"),
    ("--normalization", "unit", "original"),
    ("--augment", "1,5", "none"),
    ("--seed", "3", "0"),
    ("--dtype", "float64", "float32"),
]


@pytest.mark.parametrize("option, value, stored", CASES, ids=[c[0] for c in CASES])
def test_each_option_the_run_cannot_honour_is_refused(
    option, value, stored, run, capsys, no_data_read
):
    before = state(run)
    code = cli.main(["train", "--resume", str(run), option, value, "--epochs", "2"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(
        f"stablecnn: error: cannot resume {run} with other settings than it "
        f"started with: {option} {value} (the run has {stored}). "
    ), err
    assert err.count("\n") == 1
    assert state(run) == before  # the checkpoint and every other file: same bytes, same mtime


def test_every_differing_option_is_named_at_once(run, tmp_path, capsys, no_data_read):
    """The issue's own command: each differing option and its stored value, in one refusal."""
    before = state(run)
    model = other_model(tmp_path)
    code = cli.main(
        [
            "train",
            "--resume",
            str(run),
            "--model",
            str(model),
            "--optimizer",
            "adam",
            "--lr",
            "0.5",
            "--batch-size",
            "7",
            "--dataset",
            "fashion-mnist",
            "--epochs",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    for part in (
        f"--model {model} (the run has md1)",
        "--optimizer adam (the run has adagrad)",
        "--lr 0.5 (the run has 0.01)",
        "--batch-size 7 (the run has 10)",
        "--dataset fashion-mnist (the run has mnist)",
    ):
        assert part in err, (part, err)
    assert "--epochs" not in err.split("(only")[0]  # --epochs may change: not a difference
    assert state(run) == before


def test_the_recipe_the_data_source_and_the_run_directory_are_compared_too(
    run, tmp_path, capsys, no_data_read
):
    before = state(run)
    assert cli.main(["train", "--resume", str(run), "--recipe", "original"]) == 2
    err = capsys.readouterr().err
    assert "--recipe original (--batch-size 100) (the run has 10)" in err, err
    assert "--recipe original (--train-size 20000) (the run has none)" in err, err
    assert "--recipe original (--lr" not in err  # the recipe's lr is the run's: no difference
    folder = tmp_path / "idx"
    folder.mkdir()
    assert cli.main(["train", "--resume", str(run), "--data-dir", str(folder), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert (
        f"--data-dir {folder} (the run has its data from stablecnn's data sources, no --data-dir)"
    ) in err, err
    assert "--no-verify (the run checked its data against the canonical digests)" in err, err
    assert cli.main(["train", "--resume", str(run), "--out", str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err
    assert (
        f"--out {tmp_path / 'elsewhere'} (the run is in {run}, where a resumed run goes on)" in err
    ), err
    assert not (tmp_path / "elsewhere").exists()
    assert state(run) == before


def test_a_bad_model_file_on_resume_is_refused_naming_the_file(run, tmp_path, capsys, no_data_read):
    before = state(run)
    bad = tmp_path / "bad.toml"
    bad.write_text("input_shape = [1, 28, 28]\n[[layers]]\ntype = 'Nope'\n")
    assert cli.main(["train", "--resume", str(run), "--model", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert state(run) == before


def test_the_runs_own_values_are_accepted_and_epochs_extends(
    run, reference, capsys, monkeypatch, toy_cli
):
    from stablecnn.nn import zoo
    from stablecnn.training import checkpoint

    same = [
        "--model",
        "md1",
        "--dataset",
        "mnist",
        "--batch-size",
        "10",
        "--lr",
        "0.01",
        "--optimizer",
        "adagrad",
        "--weight-decay",
        "0",
        "--schedule",
        "constant",
        "--step-epochs",
        "1",
        "--warmup-steps",
        "0",
        "--normalization",
        "original",
        "--seed",
        "0",
        "--dtype",
        "float32",
    ]
    assert (
        cli.main(
            ["train", "--resume", str(run), *same, "--out", str(run), "--epochs", "2", "--no-plots"]
        )
        == 0
    )
    assert checkpoint.load(run).meta["progress"]["epoch"] == 2
    assert_bit_exact(state_of(run), reference)  # the run went on exactly as it was
    capsys.readouterr()
    # the same architecture spelt as a model file is the same model
    md1_file = zoo.model_files()["md1"]
    assert (
        cli.main(
            ["train", "--resume", str(run), "--model", str(md1_file), "--epochs", "3", "--no-plots"]
        )
        == 0
    )
    assert checkpoint.load(run).meta["progress"]["epoch"] == 3


def test_a_resumed_run_reads_its_own_data_source(run, tmp_path, monkeypatch, capsys):
    """A run trained on --data-dir DIR --no-verify resumes from DIR unverified without them."""
    import stablecnn.cli.train
    from stablecnn.training import checkpoint

    folder = tmp_path / "idx"
    folder.mkdir()

    with_data_record(run, data_record("mnist", folder, False))
    calls = []

    def load_data(dataset, data_dir=None, splits=("train", "test"), quiet=False, verify=True):
        calls.append((dataset, data_dir, verify))
        return [TRAIN if s == "train" else TEST for s in splits]

    monkeypatch.setattr(stablecnn.cli.train, "load_data", load_data)
    assert cli.main(["train", "--resume", str(run), "--epochs", "2", "--no-plots"]) == 0
    assert calls == [("mnist", str(folder.resolve()), False)]
    assert checkpoint.load(run).meta["data"] == data_record("mnist", folder, False)
    # the same source named again is accepted
    assert (
        cli.main(
            [
                "train",
                "--resume",
                str(run),
                "--data-dir",
                str(folder),
                "--no-verify",
                "--epochs",
                "3",
                "--no-plots",
            ]
        )
        == 0
    )
