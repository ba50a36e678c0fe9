"""Model files: a :class:`~stablecnn.model.Sequential` architecture written as TOML (or JSON).

A model file is the config :meth:`Sequential.from_config` takes, written by hand: the shape of one
example and the layers, first to last, each with its constructor arguments::

    name = "tiny"                   # optional, for people
    input_shape = [1, 28, 28]       # one example (C, H, W)

    [[layers]]
    type = "Conv2d"
    in_channels = 1
    out_channels = 8
    kernel_size = 3
    padding = "same"
    weight_init = {type = "HeNormal"}

    [[layers]]
    type = "ReLU"

    [[layers]]
    type = "GlobalAvgPool2d"

    [[layers]]
    type = "Linear"
    in_features = 8
    out_features = 10

The JSON form is ``{"input_shape": [...], "layers": [{"type": "Conv2d", ...}, ...]}``. Arguments
are written out in full (``in_channels`` is not inferred), so a file reads as the model it builds.

Every problem is a :class:`~stablecnn.errors.ModelFileError` naming the file, the line and the
layer (index and type): syntax errors, an unknown layer type, an unknown, missing or ill-typed
argument, shapes that do not fit, a missing ``input_shape``. :func:`load_model_file` finds all of
them by building the layers once and walking the shapes, so a bad file fails before any data is
read or any step is run. The line of a layer is that of its ``[[layers]]`` header (JSON: of its
opening brace); ``tomllib`` gives no positions, so the headers are found by scanning the text.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np

from stablecnn.errors import ModelFileError, ShapeError
from stablecnn.layers import LAYERS
from stablecnn.layers import from_config as layer_from_config
from stablecnn.model import Sequential

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport has the same interface
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

SUFFIXES = (".toml", ".json")
TOP_LEVEL_KEYS = ("name", "description", "input_shape", "layers")
_TOML_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*layers[ \t]*\]\][ \t]*(?:#.*)?$", re.MULTILINE)
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_INITS = ("weight_init", "bias_init")
_INJECTED = ("rng", "dtype")  # arguments from_config supplies itself


def is_model_path(name_or_path) -> bool:
    """True for a path (``str`` or ``Path``) ending in ``.toml`` or ``.json``."""
    return Path(name_or_path).suffix.lower() in SUFFIXES


def load_model_file(path, num_classes: int | None = None) -> dict:
    """Read and check a model file; return its config for :meth:`Sequential.from_config`.

    Args:
        path: a ``.toml`` or ``.json`` file.
        num_classes: when given, the model's output must be ``(num_classes,)`` per example.

    Returns:
        ``{"input_shape": [...], "layers": [...]}`` (and ``"name"``, ``"description"`` when the
        file has them).

    Raises:
        ModelFileError: naming the file, the line and the layer, for anything that would stop the
            model from being built or from fitting its input.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ModelFileError(f"{path}: a model file ends in .toml or .json, got {path.name!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: cannot read the model file: {exc}") from None
    config, lines = _parse_toml(text, path) if suffix == ".toml" else _parse_json(text, path)
    validate(config, source=str(path), lines=lines, num_classes=num_classes)
    return config


def _parse_toml(text: str, path: Path) -> tuple[dict, list[int]]:
    if tomllib is None:
        raise ModelFileError(f"{path}: reading TOML needs Python 3.11+ or the 'tomli' package; "
                             f"a .json model file works everywhere")
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = _TOML_POSITION.search(message)
        if at is None:
            raise ModelFileError(f"{path}: not valid TOML: {message}") from None
        raise ModelFileError(f"{path}, line {at[1]}, column {at[2]}: not valid TOML: "
                             f"{message[:at.start()]}") from None
    lines = [text.count("\n", 0, m.start()) + 1 for m in _TOML_HEADER.finditer(text)]
    return config, lines


def _parse_json(text: str, path: Path) -> tuple[dict, list[int]]:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}, line {exc.lineno}, column {exc.colno}: not valid JSON: "
                             f"{exc.msg}") from None
    return config, _json_layer_lines(text, config)


def _json_layer_lines(text: str, config) -> list[int]:
    """The line of each layer's ``{``: decode the ``"layers"`` array one element at a time."""
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        return []
    decoder = json.JSONDecoder()

    def skip_space(pos):
        return len(text) - len(text[pos:].lstrip())

    for start in re.finditer(r'"layers"\s*:\s*\[', text):  # the one that decodes to the layers
        pos, lines = start.end(), []
        try:
            for layer in config["layers"]:
                pos = skip_space(pos)
                lines.append(text.count("\n", 0, pos) + 1)
                value, pos = decoder.raw_decode(text, pos)
                if value != layer:
                    break
                pos = skip_space(pos)
                pos += text.startswith(",", pos)
            else:
                if text.startswith("]", skip_space(pos)):
                    return lines
        except json.JSONDecodeError:
            continue
    return []


def validate(config: dict, source: str = "model config", lines: list[int] | None = None,
             num_classes: int | None = None) -> None:
    """Check that ``config`` builds a model whose layers fit ``config["input_shape"]``.

    Builds each layer once (float32, seed 0; cheap next to one training step) and walks the
    shapes. ``lines[i]`` is the line of layer ``i`` in ``source``; it is used only when there is
    one line per layer. Raises :class:`ModelFileError`.
    """
    if not isinstance(config, dict):
        raise ModelFileError(f"{source}: a model is a table with input_shape and layers, "
                             f"got {type(config).__name__}")
    layers = config.get("layers")
    if not (lines and isinstance(layers, list) and len(lines) == len(layers)):
        lines = None

    def fail(message, index=None, kind=None):
        where = source if lines is None or index is None else f"{source}, line {lines[index]}"
        if index is not None:
            where += f", layer {index}" + (f" ({kind})" if isinstance(kind, str) else "")
        raise ModelFileError(f"{where}: {message}")

    unknown = sorted(set(config) - set(TOP_LEVEL_KEYS))
    if unknown:
        fail(f"unknown top-level key(s) {unknown}; a model file has {list(TOP_LEVEL_KEYS)}")
    if "name" in config and not isinstance(config["name"], str):
        fail(f"name must be a string, got {config['name']!r}")
    if "input_shape" not in config:
        fail("no input_shape (the shape of one example, e.g. input_shape = [1, 28, 28])")
    shape = config["input_shape"]
    if not (isinstance(shape, list) and shape and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        fail(f"input_shape must be a list of positive ints such as [1, 28, 28], got {shape!r}")
    if not isinstance(layers, list) or not layers:
        fail("no layers (each layer is a [[layers]] table with a type and its arguments)")

    rng = np.random.default_rng(0)
    built = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            fail(f"a layer is a table of arguments, got {layer!r}", i)
        kind = layer.get("type")
        if kind is None:
            fail(f"no type; known types: {', '.join(sorted(LAYERS))}", i)
        if kind not in LAYERS:
            fail(f"unknown layer type {kind!r}; known: {', '.join(sorted(LAYERS))}", i, kind)
        for key in _INITS:
            if key in layer and not isinstance(layer[key], dict):
                fail(f"{key} must be an initialiser table such as {{type = \"HeNormal\"}}, "
                     f"got {layer[key]!r}", i, kind)
        params = inspect.signature(LAYERS[kind].__init__).parameters
        accepted = [name for name in params if name not in ("self", *_INJECTED)]
        missing = [name for name in accepted
                   if params[name].default is params[name].empty and name not in layer]
        unknown = sorted(set(layer) - {"type", *accepted, *_INJECTED})
        if unknown:  # first: a misspelt argument also shows up as a missing one
            fail(f"unknown argument(s) {unknown}; {kind} takes {accepted}"
                 + (f" (missing: {missing})" if missing else ""), i, kind)
        if missing:
            fail(f"missing argument(s) {missing}", i, kind)
        injected = sorted(set(layer) & set(_INJECTED))
        if injected:
            fail(f"{injected} cannot be set in a model file (the seed and dtype are chosen when "
                 f"the model is built)", i, kind)
        try:
            built.append(layer_from_config(layer, rng=rng, dtype=np.float32))
        except (ValueError, TypeError) as exc:
            message = str(exc)
            fail(message[len(kind) + 2:] if message.startswith(f"{kind}: ") else message, i, kind)

    shape = tuple(shape)
    for i, layer in enumerate(built):
        try:
            out = tuple(layer.output_shape(shape))
        except (ShapeError, ValueError) as exc:
            fail(f"does not fit its input {shape} (from input_shape {tuple(config['input_shape'])}"
                 f"): {exc}", i, layers[i]["type"])
        shape = out
    if num_classes is not None and shape != (num_classes,):
        fail(f"the model ends in shape {shape} per example, but {num_classes} class scores are "
             f"needed (end with Linear(..., {num_classes}))", len(built) - 1,
             layers[-1]["type"])


def model_config(name_or_path, num_classes: int | None = None) -> dict:
    """The checked config of a built-in model name (see :mod:`stablecnn.zoo`) or a model file."""
    from stablecnn import zoo

    name = str(name_or_path)
    if not isinstance(name_or_path, Path) and name in zoo.names():
        config = zoo.config(name)
        if num_classes is not None:
            validate(config, source=f"model {name!r}", num_classes=num_classes)
        return config
    if is_model_path(name_or_path) or Path(name_or_path).exists():
        return load_model_file(name_or_path, num_classes=num_classes)
    raise ModelFileError(f"unknown model {name!r}: not a built-in ({', '.join(zoo.names())}) "
                         f"and not a path to a .toml or .json model file")


def resolve_model(name_or_path, seed: int = 0, dtype=np.float32,
                  num_classes: int | None = None) -> Sequential:
    """Build a built-in model or a model file with weights drawn from ``default_rng(seed)``.

    The same seed gives the same weights whether ``md1`` is named or read from ``md1.toml``.

    Example:
        >>> resolve_model("md2", seed=0).num_params  # doctest: +SKIP
        >>> resolve_model("my_models/wide.toml", seed=1, num_classes=10)  # doctest: +SKIP
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return Sequential.from_config(model_config(name_or_path, num_classes), seed=seed, dtype=dtype)
