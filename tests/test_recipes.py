"""Recipes (stablecnn.training.recipes and ``stablecnn train --recipe``): shipped and own recipe
files are read as data and checked, give the run's TrainConfig, and yield to the options given."""

import dataclasses

import pytest

from stablecnn import cli
from stablecnn.errors import ConfigError
from stablecnn.training import recipes
from stablecnn.training.config import TrainConfig


def _config(argv):
    args = cli.build_parser().parse_args(["train", *argv])
    from stablecnn.cli.train_options import _config_from_args

    return _config_from_args(args)


@pytest.mark.parametrize("name", recipes.names())
def test_every_shipped_recipe_reads_and_says_what_it_is(name):
    recipe = recipes.load(name)
    config = recipe.config()
    assert isinstance(config, TrainConfig) and recipe.name == name
    assert recipe.description and recipe.measured


def test_the_original_recipe_is_the_original_config():
    assert recipes.load("original").config() == TrainConfig.original_recipe()
    assert _config(["--recipe", "original"]) == TrainConfig.original_recipe()


def test_options_given_override_the_recipe_augmentation_field_by_field():
    recipe = recipes.load("md1-best")
    config = _config(["--recipe", "md1-best", "--lr", "0.5", "--random-erasing", "0.25"])
    assert config.lr == 0.5 and config.epochs == recipe.settings["epochs"]
    assert config.augment["random_erasing"] == 0.25
    assert config.augment["max_shift"] == recipe.settings["augment"]["max_shift"]  # kept
    config = _config(["--recipe", "md1-best", "--augment", "1,0"])
    assert (config.augment["max_shift"], config.augment["max_degrees"]) == (1, 0.0)


def test_without_a_recipe_augmentation_options_start_from_nothing():
    config = _config(["--random-crop", "2"])
    assert config.augment["random_crop"] == 2 and config.augment["max_shift"] == 0
    assert _config([]).augment is None


def test_a_recipe_file_of_ones_own_with_a_model_file_beside_it(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.toml").write_text(
        'input_shape = [1, 28, 28]\n[[layers]]\ntype = "Flatten"\n'
        '[[layers]]\ntype = "Linear"\nin_features = 784\nout_features = 10\n'
    )
    path = tmp_path / "mine.toml"
    path.write_text(
        'description = "mine"\n[train]\nmodel = "models/tiny.toml"\nepochs = 2\nlr = 0.1\n'
        "[train.augment]\nrandom_crop = 2\n"
    )
    config = _config(["--recipe", str(path), "--epochs", "3"])
    assert config.model == str(tmp_path / "models" / "tiny.toml")
    assert (config.epochs, config.lr, config.augment["random_crop"]) == (3, 0.1, 2)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train\nlr = 1", r"mine.toml is not valid TOML.*line 1"),
        ('title = "x"\n[train]\nlr = 0.1\n', r"unknown key\(s\) \['title'\]"),
        ("description = 'no settings'\n", r"needs a \[train\] table"),
        ("[train]\nlearning_rate = 0.1\n", r"\[train\] has unknown key\(s\) \['learning_rate'\]"),
        ("[train]\nlr = -1\n", r"mine.toml: lr must be a positive finite number, got -1"),
        ("[train]\naugment = 3\n", r"augment must be a table"),
        ("[train.augment]\nshift = 2\n", r"\[train.augment\] has unknown key\(s\) \['shift'\]"),
        ("[train.augment]\nhflip = true\n", r"mine.toml: horizontal flips .* not for mnist"),
        ("[train]\nmicro_batches = 2\n", r"unknown key\(s\) \['micro_batches'\]"),
        ('[train.augment]\nelastic = "x"\n', r"mine.toml: elastic must be two numbers .*'x'"),
        ("[train.augment]\nelastic = 20.0\n", r"mine.toml: elastic must be two numbers"),
        ('[train.augment]\nelastic = ["20", "3"]\n', r"mine.toml: elastic must be two numbers"),
        ("[train.augment]\nelastic = [true, 3]\n", r"mine.toml: elastic must be two numbers"),
        ("[train.augment]\nelastic = [20, 1e9]\n", r"mine.toml: elastic .* sigma in \(0, 1000\]"),
    ],
)
def test_a_bad_recipe_file_is_refused_naming_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        recipes.load(path)


@pytest.mark.parametrize(
    "text, line, column, key, first",
    [
        ("[train]\nepochs = 2\nlr = 0.1\nepochs = 3\n", 4, 1, "train.epochs", 2),
        ('description = "a"\n\ndescription = "b"\n[train]\nlr = 0.1\n', 3, 1, "description", 1),
        ("[train.augment]\nmax_shift = 1\n  max_shift = 2\n", 3, 3, "train.augment.max_shift", 2),
        ("[train]\naugment = { hflip = 0.5, hflip = 0 }\n", 2, 26, "train.augment.hflip", 2),
    ],
)
def test_a_key_given_twice_is_named_with_its_line_as_in_a_model_file(
    tmp_path, text, line, column, key, first
):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        recipes.load(path)
    assert str(info.value) == (
        f"recipe file {path}, line {line}, column {column}: the key {key!r} is given twice "
        f"(first on line {first}); a TOML table holds each key once"
    )


def test_no_such_recipe_lists_the_shipped_ones(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"no such recipe; shipped recipes: original, "):
        recipes.load("mnist-best-ever")
    with pytest.raises(ConfigError, match=r"does not exist; shipped recipes: original"):
        recipes.load(tmp_path / "missing.toml")
    assert cli.main(["train", "--recipe", "nope"]) == 2
    assert "no such recipe" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_huge_file_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "MAX_BYTES", 100)
    path = tmp_path / "big.toml"
    path.write_text("[train]\n" + "# padding\n" * 20)
    with pytest.raises(ConfigError, match=r"too large for a recipe"):
        recipes.load(path)


def test_a_recipe_holds_every_trainconfig_field_but_the_arithmetic_of_ranks():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert recipes.FIELDS == fields - {"micro_batches"}
