"""Recipes: training settings, shipped or in a file, that reproduce a measured run with one command.

A recipe is a TOML file of :class:`~stablecnn.training.config.TrainConfig` values::

    description = "MNIST with md3 (ResNet-20), crops and rotations, Adam, cosine schedule"
    measured = "99.71% test accuracy, 41 min on 2 cores (README, 'Recipes')"

    [train]
    model = "md3"            # a built-in model, or a model file beside the recipe
    dataset = "mnist"
    epochs = 20
    optimizer = "adam"
    lr = 0.002

    [train.augment]          # the Augment fields: max_shift, max_degrees, max_scale, elastic,
    max_shift = 2            # random_crop, hflip, random_erasing
    max_degrees = 10.0

``stablecnn train --recipe NAME`` starts from a shipped recipe (:func:`names`: the files in
``stablecnn/training/recipes/``, and ``original``, :meth:`TrainConfig.original_recipe`), and
``--recipe path/to/file.toml`` from a file of one's own; every option given on the command line
overrides the recipe's value for it (augmentation option by option). A recipe holds settings
only: it is read as data (TOML), never run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from stablecnn import tomlkeys
from stablecnn.data.augment import Augment
from stablecnn.errors import ConfigError
from stablecnn.nn import modelfile
from stablecnn.training.config import ORIGINAL_RECIPE, TrainConfig

SHIPPED = Path(__file__).parent / "recipes"
MAX_BYTES = tomlkeys.MAX_TEXT_BYTES  # a recipe is a few lines; anything larger is not one
TOP_LEVEL = {"description", "measured", "train"}
FIELDS = {field.name for field in dataclasses.fields(TrainConfig)} - {"micro_batches"}
AUGMENT_FIELDS = {field.name for field in dataclasses.fields(Augment)}


@dataclass(frozen=True)
class Recipe:
    """A recipe read and checked: its ``name`` (the file's stem), what it is, what it reached,
    and ``settings``, TrainConfig keyword arguments (``augment`` as Augment's fields)."""

    name: str
    description: str
    measured: str
    settings: dict
    path: Path | None = None

    def config(self, **overrides) -> TrainConfig:
        """The run's TrainConfig: the recipe's settings, then ``overrides`` (``augment``
        merged field by field)."""
        settings = {**self.settings, **overrides}
        if "augment" in self.settings and "augment" in overrides:
            settings["augment"] = {**self.settings["augment"], **overrides["augment"]}
        return TrainConfig(**settings)


def names() -> list[str]:
    """The shipped recipes' names, ``original`` first."""
    return ["original", *sorted(path.stem for path in SHIPPED.glob("*.toml"))]


def load(name_or_path: str | Path) -> Recipe:
    """The recipe ``name_or_path``: a shipped recipe's name, or a ``.toml`` file.

    Raises:
        ConfigError: no such recipe or file (naming it and the shipped recipes), a file too
            large or not TOML (with the parser's line and column; a key given twice named with
            its line and column and where it was first given), a key that is not a recipe's
            or not a TrainConfig field (naming the key, the file and the keys allowed), or a
            value TrainConfig refuses (its message, after the file's name).
    """
    text = str(name_or_path)
    if text == "original":
        return Recipe(
            "original",
            "Model 1's original recipe: the first 20,000 MNIST images, 5 epochs of 100, "
            "Adagrad 0.01",
            "93.58% in about 8.6 hours in the original code; about 95% here",
            dict(ORIGINAL_RECIPE),
        )
    if text in names():
        path = SHIPPED / f"{text}.toml"
    elif text.endswith(".toml"):
        path = Path(text)
    else:
        raise ConfigError(
            f"--recipe {text}: no such recipe; shipped recipes: {', '.join(names())}, or "
            f"give a recipe file (.toml)"
        )
    return _read(path)


def _read(path: Path) -> Recipe:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is too large for a recipe")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"recipe file {path} does not exist; shipped recipes: {', '.join(names())}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe file {path} cannot be read: {exc}") from None
    try:
        data = tomlkeys.tomllib.loads(text)
    except tomlkeys.tomllib.TOMLDecodeError as exc:
        raise _not_toml(path, text, str(exc)) from None
    _only(data, TOP_LEVEL, path, "a recipe")
    train = data.get("train")
    if not isinstance(train, dict) or not train:
        raise ConfigError(f"{path}: a recipe needs a [train] table of training settings")
    _only(train, FIELDS, path, "[train]")
    settings = dict(train)
    if "augment" in settings:
        if not isinstance(settings["augment"], dict):
            raise ConfigError(
                f"{path}: augment must be a table ([train.augment]) of Augment fields"
            )
        _only(settings["augment"], AUGMENT_FIELDS, path, "[train.augment]")
        settings["augment"] = {**Augment().to_dict(), **settings["augment"]}  # the rest off
    model = settings.get("model")
    if isinstance(model, str) and modelfile.is_model_path(model) and not Path(model).is_absolute():
        settings["model"] = str(path.parent / model)  # a model file beside the recipe
    recipe = Recipe(
        path.stem,
        str(data.get("description", "")),
        str(data.get("measured", "")),
        settings,
        path,
    )
    try:
        recipe.config()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return recipe


def _not_toml(path: Path, text: str, message: str) -> ConfigError:
    """The error for ``tomllib``'s ``message``: a key given twice named with its line and
    column and where it was first given, anything else in ``tomllib``'s words."""
    twice = tomlkeys.key_given_twice(text, message)
    if twice is None:
        return ConfigError(f"recipe file {path} is not valid TOML: {message}")
    _, key_path, second, first = twice
    line, column = tomlkeys.line_of(text)(second)
    return ConfigError(
        f"recipe file {path}, line {line}, column {column}: "
        f"{tomlkeys.describe_twice(text, key_path, first)}; a TOML table holds each key once"
    )


def _only(table: dict, allowed: set[str], path: Path, where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{path}: {where} has unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}"
        )
