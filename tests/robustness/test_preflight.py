"""Issue 12.4 (first part) and 13.1 (the run directory): what the sizes predict is refused before
step 1, and a refused run leaves no run directory.

A BatchNorm layer in training mode needs at least two values per channel: with 21 images in
batches of 10, step 3 of every epoch holds one image, which a BatchNorm1d cannot train on. The
run is refused when the trainer is built (see :mod:`stablecnn.training.preflight` for why it is
refused rather than dropped), naming the step, its size and the layer, and suggesting values that
work.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.fakes import make_data, toy_loader
from support.runs import TEST, TRAIN, make_config, make_trainer

from stablecnn import cli
from stablecnn.errors import DataError, ShapeError
from stablecnn.training import preflight
from stablecnn.training.callbacks import Callback


def linear(n_in, n_out):
    return f"[[layers]]\ntype = 'Linear'\nin_features = {n_in}\nout_features = {n_out}\n"


def layer(kind, **fields):
    return f"[[layers]]\ntype = '{kind}'\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())


def model_file(folder, *layers: str, name="model.toml") -> str:
    path = folder / name
    path.write_text("input_shape = [1, 28, 28]\n" + "".join(layers))
    return str(path)


def bn1d(folder):
    """(784,) -> Linear -> (8,) -> BatchNorm1d: one value per channel per image."""
    return model_file(
        folder,
        layer("Flatten"),
        linear(784, 8),
        layer("BatchNorm1d", num_features=8),
        layer("ReLU"),
        linear(8, 10),
        name="bn1d.toml",
    )


def bn2d(folder, kernel):
    """A conv to (2, 29 - kernel, 29 - kernel), then BatchNorm2d."""
    side = 29 - kernel
    return model_file(
        folder,
        layer("Conv2d", in_channels=1, out_channels=2, kernel_size=kernel),
        layer("BatchNorm2d", num_features=2),
        layer("ReLU"),
        layer("Flatten"),
        linear(2 * side * side, 10),
        name="bn2d.toml",
    )


class CountSteps(Callback):
    def __init__(self):
        self.steps = 0

    def on_step(self, trainer, step):
        self.steps += 1


def test_a_last_batch_of_one_is_refused_before_step_1_naming_the_batch_and_the_layer(tmp_path):
    model = bn1d(tmp_path)
    data = (make_data(21, 0), TEST)
    count = CountSteps()
    run = tmp_path / "run"
    with pytest.raises(ShapeError) as info:
        make_trainer(run, make_config(model=model), data=data, callbacks=[count])
    assert str(info.value) == (
        "the last batch of every epoch (step 3 of 3: 21 = 2 x 10 + 1) holds 1 image, too few "
        "for layer 2 (BatchNorm1d(8, eps=1e-05, momentum=0.1)): training takes each channel's "
        "batch variance, which needs at least 2 values, and its input (8,) gives 1 per image; "
        "use --train-size 20 or --batch-size 9 or 11 (refused before step 1)"
    )
    assert count.steps == 0 and not run.exists()
    # the refusal is real: that batch fails in the layer itself
    from stablecnn.nn.zoo import resolve_model

    with pytest.raises(ValueError, match="more than 1 value per channel"):
        resolve_model(model).forward(np.zeros((1, 1, 28, 28), np.float32), training=True)
    # and every value it suggests trains through its epoch
    for fix in (dict(train_size=20), dict(batch_size=9), dict(batch_size=11)):
        last = make_trainer(
            tmp_path / str(fix), make_config(model=model, epochs=1, **fix), data=data
        ).fit()
        assert np.isfinite(last["test_loss"]), fix


def test_a_batch_size_of_one_with_batchnorm1d_is_refused_at_step_1(tmp_path):
    with pytest.raises(
        ShapeError,
        match=r"^every batch \(step 1 of 30\) holds 1 image, too few "
        r"for layer 2 \(BatchNorm1d.*use --batch-size 2",
    ):
        make_trainer(tmp_path / "run", make_config(model=bn1d(tmp_path), batch_size=1))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kernel, refused", [(5, False), (28, True)])
def test_batchnorm2d_needs_n_h_w_above_1(tmp_path, kernel, refused):
    """One image of 24x24 gives 576 values per channel; one image of 1x1 gives 1."""
    model = bn2d(tmp_path, kernel)
    cfg = make_config(model=model, epochs=1)
    data = (make_data(21, 0), TEST)
    if refused:
        with pytest.raises(
            ShapeError,
            match=r"step 3 of 3.*layer 1 \(BatchNorm2d.*its input "
            r"\(2, 1, 1\) gives 1 per image",
        ):
            make_trainer(tmp_path / "run", cfg, data=data)
    else:  # the last batch of one image trains
        last = make_trainer(tmp_path / "run", cfg, data=data).fit()
        assert np.isfinite(last["test_loss"])


def test_every_refused_size_is_one_that_fails_and_every_suggestion_works():
    """Over every (images, batch size) up to 40: refused exactly when a batch holds one image,
    and each suggested --train-size and --batch-size leaves no batch of one."""
    import re

    from stablecnn.nn.layers import BatchNorm1d, Flatten, Linear
    from stablecnn.nn.model import Sequential

    model = Sequential(Flatten(), Linear(4, 3), BatchNorm1d(3), input_shape=(1, 2, 2))
    for n in range(1, 41):
        for b in range(1, n + 2):
            has_one = min(preflight.batch_sizes(n, b).values()) < 2
            try:
                preflight.check_batches(model, (1, 2, 2), n, b)
            except ShapeError as exc:
                assert has_one, (n, b)
                text = str(exc)
                sizes = [int(v) for v in re.findall(r"(?:--batch-size |or )(\d+)", text)]
                train = [int(v) for v in re.findall(r"--train-size (\d+)", text)]
                assert sizes or train or n == 1, text
                for b2 in sizes:
                    assert min(preflight.batch_sizes(n, b2).values()) >= 2, (n, b, b2)
                for n2 in train:
                    assert min(preflight.batch_sizes(n2, b).values()) >= 2, (n, b, n2)
            else:
                assert not has_one, (n, b)


def test_labels_beyond_the_models_classes_are_refused_before_step_1(tmp_path):
    model = model_file(tmp_path, layer("Flatten"), linear(784, 5))
    images, labels = TRAIN
    with pytest.raises(DataError) as info:
        make_trainer(tmp_path / "run", make_config(model=model))
    bad = int(np.flatnonzero(labels >= 5)[0])
    assert str(info.value) == (
        f"training label {labels[bad]} at index {bad} is outside [0, 5): "
        f"the model gives 5 class scores"
    )
    assert not (tmp_path / "run").exists()


# -- 13.1: a refused run leaves no directory -------------------------------------------------------
def refusals(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("input_shape = [1, 28, 28]\n" + layer("Nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    return {
        "bad model file": ["--model", str(bad)],
        "model file missing": ["--model", str(tmp_path / "missing.toml")],
        "an option the optimizer does not take": ["--optimizer", "adam", "--momentum", "0.9"],
        "--no-verify without --data-dir": ["--no-verify"],
        "missing data": ["--data-dir", str(empty), "--no-verify"],
        "a last batch too small for a layer": ["--model", bn1d(tmp_path), "--train-size", "21"],
        "train size above the data": ["--train-size", "31"],
    }


@pytest.mark.parametrize(
    "case",
    [
        "bad model file",
        "model file missing",
        "an option the optimizer does not take",
        "--no-verify without --data-dir",
        "missing data",
        "a last batch too small for a layer",
        "train size above the data",
    ],
)
@pytest.mark.parametrize("where", ["--out", "default"])
def test_a_refused_run_leaves_no_run_directory(
    case, where, tmp_path, monkeypatch, capsys, cache_root
):
    import stablecnn.cli.train

    args = refusals(tmp_path)[case]
    if case != "missing data":  # the toy data; "missing data" reads the (empty) folder for real
        monkeypatch.setattr(stablecnn.cli.train, "load_data", toy_loader(TRAIN, TEST))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = ["--out", str(work / "run")] if where == "--out" else []
    code = cli.main(["train", "--batch-size", "10", "--epochs", "1", *args, *out])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("stablecnn: error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in work.iterdir()) == []  # neither run/ nor runs/<...>
