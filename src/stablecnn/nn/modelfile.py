"""Model files: a :class:`~stablecnn.nn.model.Sequential` architecture written as TOML (or JSON).

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

What is checked, all of it before any array is allocated: the syntax (a key given twice is
refused in both formats, as TOML requires; JSON's own reader would keep the last silently;
either way the message names the line and column, the layer and where the key was first given),
the top-level keys, every layer's type and arguments (types, ranges, and every number finite,
initialiser values included), that each initialiser can fill its parameter, that the shapes fit
from ``input_shape`` to the last layer, and the sizes below.
Every problem is a :class:`~stablecnn.errors.ModelFileError` naming the file, the line and the
layer (index and type). Layers are made by :meth:`~stablecnn.nn.layers.base.Layer.without_weights`
(arguments checked, shapes known, no arrays), so ``stablecnn summary`` describes a model of any
size with the memory of its config. The line of a layer is that of its ``[[layers]]`` header
(JSON: of its opening brace); ``tomllib`` gives no positions, so the headers (and the top-level
keys) are found by scanning the text.

Limits (a model file is data from anywhere; these keep what it asks for within what a 2-core,
24 GiB machine can train, and refuse a typo such as ``out_features = 1_000_000_000_000`` before
it becomes an allocation):

- :data:`MAX_FILE_BYTES`: a model file is at most 1 MiB (md2's is 2 KB).
- :data:`MAX_LAYER_PARAMS`: at most 2**27 = 134,217,728 parameters in one layer (VGG-16's largest
  layer has 102.8 million), and :data:`MAX_PARAMS`: 2**28 = 268,435,456 in the model. Training
  holds each parameter about 5 times (weights, gradient, Adam's two moments, scratch): a model
  at both limits, built and stepped once by Adam on a batch of 8, peaked at 5.0 GiB resident in
  float32 and 10.0 GiB in float64 (its build alone at 2.5 and 4.0 GiB).
- :data:`MAX_ACTIVATION`: at most 2**23 = 8,388,608 values per example in ``input_shape``, in any
  layer's output and in any layer's padded input (32 MiB per example in float32; a batch of 100
  through such a layer, kept for backward, is 3.4 GB).
- :data:`MAX_LAYER_MACS`: at most 2**31 = 2,147,483,648 multiply-adds per example in one layer
  (a Conv2d's ``F*C*kH*kW*Ho*Wo``, which also bounds its work arrays; VGG-16's largest conv at
  224x224 does 1.85e9).
- Containers nest at most :data:`MAX_DEPTH` = 16 deep (a model file needs 4).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np

from stablecnn.errors import ConfigError, ModelFileError, ShapeError
from stablecnn.nn import init as initializers
from stablecnn.nn.layers import CONTAINERS, LAYERS, Conv2d, repeat_count
from stablecnn.nn.layers import from_config as layer_from_config
from stablecnn.nn.model import Sequential
from stablecnn.nn.modelfile_text import (  # the two reading limits are documented here too
    MAX_DEPTH,
    MAX_FILE_BYTES,
    layer_name,
    parse_json,
    parse_toml,
    read_text,
)

__all__ = [
    "MAX_ACTIVATION",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_LAYER_MACS",
    "MAX_LAYER_PARAMS",
    "MAX_PARAMS",
    "SUFFIXES",
    "TOP_LEVEL_KEYS",
    "is_model_path",
    "load_model_file",
    "validate",
]

SUFFIXES = (".toml", ".json")
TOP_LEVEL_KEYS = ("name", "description", "input_shape", "layers")
MAX_LAYER_PARAMS = 1 << 27
MAX_PARAMS = 1 << 28
MAX_ACTIVATION = 1 << 23
MAX_LAYER_MACS = 1 << 31
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
            model from being built or from fitting its input, and for sizes beyond the limits in
            the module docstring. Nothing is allocated before the whole file has passed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ModelFileError(f"{path}: a model file ends in .toml or .json, got {path.name!r}")
    text = read_text(path)
    config, lines = parse_toml(text, path) if suffix == ".toml" else parse_json(text, path)
    validate(config, source=str(path), lines=lines, num_classes=num_classes)
    return config


def _bad_number(config: dict) -> str | None:
    """What is wrong with the first number in ``config`` that is not finite (a float) or does
    not fit in 64 bits (an integer: TOML's range, which JSON does not bound), or None."""
    stack = [((), config)]
    while stack:
        path, value = stack.pop()
        where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)[1:]
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where} is {value}: every number in a model file must be finite"
        if isinstance(value, int) and not -(1 << 63) <= value < 1 << 63:
            return (
                f"{where} is an integer of {value.bit_length()} bits: integers in a model file "
                f"must fit in 64 bits (as TOML requires)"
            )
        if isinstance(value, (dict, list)):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend(((*path, k), v) for k, v in reversed(list(items)))
    return None


def _shapes(shapes: dict) -> str:
    return ", ".join(f"{name} {shape}" for name, shape in shapes.items())


def validate(
    config: dict,
    source: str = "model config",
    lines: dict | list | None = None,
    num_classes: int | None = None,
) -> Sequential:
    """Check ``config`` completely without allocating any weight; return the model without weights.

    Checks the top-level keys, each layer's type and arguments (every number finite), its
    initialisers, the shapes from ``config["input_shape"]`` on, and the limits of the module
    docstring. ``lines`` maps a path (``("layers", i)``, ``("input_shape",)``) to its line in
    ``source`` (a list is taken as the lines of the layers).

    Returns:
        The :class:`Sequential` of layers made by
        :meth:`~stablecnn.nn.layers.base.Layer.without_weights`: shapes, parameter counts and
        summary, no arrays.

    Raises:
        ModelFileError: naming ``source``, the line where known and the layer (index and type).
    """
    if not isinstance(config, dict):
        raise ModelFileError(
            f"{source}: a model is a table with input_shape and layers, got {type(config).__name__}"
        )
    layers = config.get("layers")
    if isinstance(lines, list):
        ok = isinstance(layers, list) and len(lines) == len(layers)
        lines = {("layers", i): line for i, line in enumerate(lines)} if ok else {}
    lines = lines or {}

    def fail(message, at=None, key=None):
        """Raise naming the source, the line and, when ``at`` is given, the layer: ``at`` is an
        :class:`_At` (a layer, or a block's layer inside it)."""
        line = lines.get(("layers", *at.file_path)) if at is not None else lines.get((key,))
        if line is None and at is not None:  # a layer inside an inline table: its block's line
            line = next(
                (
                    lines[("layers", *at.file_path[:n])]
                    for n in range(len(at.file_path) - 1, 0, -1)
                    if ("layers", *at.file_path[:n]) in lines
                ),
                None,
            )
        where = source if line is None else f"{source}, line {line}"
        if at is not None:
            where += f", {at.label}"
        raise ModelFileError(f"{where}: {message}")

    unknown = sorted(set(config) - set(TOP_LEVEL_KEYS))
    if unknown:
        fail(
            f"unknown top-level key(s) {unknown}; a model file has {list(TOP_LEVEL_KEYS)}",
            key=unknown[0],
        )

    for key in ("name", "description"):
        if key in config and not isinstance(config[key], str):
            fail(f"{key} must be a string, got {config[key]!r:.80}", key=key)
    if "input_shape" not in config:
        fail("no input_shape (the shape of one example, e.g. input_shape = [1, 28, 28])")
    shape = config["input_shape"]
    if _bad_number({"input_shape": shape}):
        fail(_bad_number({"input_shape": shape}), key="input_shape")
    if not (
        isinstance(shape, list)
        and shape
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        fail(
            f"input_shape must be a list of positive ints such as [1, 28, 28], got {shape!r:.80}",
            key="input_shape",
        )
    if math.prod(shape) > MAX_ACTIVATION:
        fail(
            f"input_shape {tuple(shape)} holds {math.prod(shape):,} values per example, more "
            f"than the {MAX_ACTIVATION:,} a model file allows",
            key="input_shape",
        )
    if not isinstance(layers, list) or not layers:
        fail(
            "no layers (each layer is a [[layers]] table with a type and its arguments)",
            key="layers",
        )

    rng = np.random.default_rng(0)  # Dropout draws its seed: nothing else is drawn
    count = {"params": 0}  # parameters so far, blocks' layers included
    built, shape = [], tuple(shape)
    for at, layer in _expand(layers, _At(), fail):
        made, shape = _check_layer(layer, shape, at, rng, count, config, fail)
        built.append(made)
    if num_classes is not None and shape != (num_classes,):
        fail(
            f"the model ends in shape {shape} per example, but {num_classes} class scores are "
            f"needed (end with Linear(..., {num_classes}))",
            at,
        )
    return Sequential(*built, input_shape=tuple(config["input_shape"]))


class _At:
    """Where a layer is: its label for messages (``"layer 5 (Residual), body.2 (Conv2d)"``, by
    the model's indices, repeats written out) and its path in the file (``(3, "body", 2)``, by
    the file's entries), which finds its line."""

    def __init__(self, label: str = "", file_path: tuple = (), model_path: tuple = ()):
        self.label, self.file_path, self.model_path = label, file_path, model_path

    def child(self, key, file_index: int, model_index: int, layer) -> _At:
        name = layer_name(key, model_index, layer)
        file_path = (*self.file_path, *(() if key is None else (key,)), file_index)
        return _At(f"{self.label}, {name}" if self.label else name, file_path)


def _expand(layers: list, at: _At, fail, key=None) -> list[tuple[_At, object]]:
    """Each entry of ``layers`` with where it is, ``{"repeat": k, ...}`` written out as ``k``
    copies (see :func:`stablecnn.nn.layers.expand_repeats`)."""
    out = []
    for i, layer in enumerate(layers):
        try:
            count = repeat_count(layer)
        except ConfigError as exc:
            fail(str(exc), at.child(key, i, len(out), layer))
        if isinstance(layer, dict):
            layer = {k: v for k, v in layer.items() if k != "repeat"}
        out += [(at.child(key, i, len(out) + r, layer), layer) for r in range(count)]
    return out


def _check_layer(layer, shape: tuple, at: _At, rng, count: dict, config: dict, fail):
    """Check one layer (a block: its layers first, each by this function) against the shape it
    gets; return the layer made without weights and its output shape."""
    layer = _check_arguments(layer, lambda message: fail(message, at))
    kind = layer["type"]
    for key in CONTAINERS.get(LAYERS[kind], ()):  # a block: each path's layers, in order
        if key not in layer:
            continue
        if not isinstance(layer[key], list):
            fail(f"{key} must be a list of layers, got {layer[key]!r:.80}", at)
        inner, children = shape, _expand(layer[key], at, fail, key)
        for child_at, child in children:
            _, inner = _check_layer(child, inner, child_at, rng, count, config, fail)
        layer = {**layer, key: [child for _, child in children]}
    try:
        made = layer_from_config(layer, rng=rng, dtype=np.float32, weights=False)
    except (ValueError, TypeError, ArithmeticError) as exc:
        message = str(exc)
        fail(message[len(kind) + 2 :] if message.startswith(f"{kind}: ") else message, at)
    for key, param in (("weight_init", "weight"), ("bias_init", "bias")):
        if key in layer and param in made.param_shapes:
            try:
                initializers.check_shape(
                    initializers.from_config(layer[key]), made.param_shapes[param]
                )
            except ValueError as exc:
                fail(f"{key} {layer[key]['type']} cannot fill the {param}: {exc}", at)
    if LAYERS[kind] not in CONTAINERS:  # a block's layers were counted one by one
        if made.num_params > MAX_LAYER_PARAMS:
            fail(
                f"{made.num_params:,} parameters ({_shapes(made.param_shapes)}), more than the "
                f"{MAX_LAYER_PARAMS:,} a layer of a model file may have",
                at,
            )
        count["params"] += made.num_params
        if count["params"] > MAX_PARAMS:
            fail(
                f"the model reaches {count['params']:,} parameters at this layer, more than the "
                f"{MAX_PARAMS:,} a model file may have in all",
                at,
            )
    try:
        out = tuple(made.output_shape(shape))
    except (ShapeError, ValueError) as exc:
        fail(
            f"does not fit its input {shape} (from input_shape {tuple(config['input_shape'])}"
            f"): {exc}",
            at,
        )
    for what, size in (("its input padded to", made.padded_shape(shape)), ("its output", out)):
        if math.prod(size) > MAX_ACTIVATION:
            fail(
                f"{what} {size} holds {math.prod(size):,} values per example, more than the "
                f"{MAX_ACTIVATION:,} a model file allows at any layer",
                at,
            )
    if isinstance(made, Conv2d):
        macs = math.prod(made.param_shapes["weight"]) * out[1] * out[2]
        if macs > MAX_LAYER_MACS:
            fail(
                f"{macs:,} multiply-adds per example, more than the {MAX_LAYER_MACS:,} a "
                f"layer of a model file may do",
                at,
            )
    return made, out


def _check_arguments(layer, fail) -> dict:
    """Check one layer's table before it is made: its type, its argument names, that every
    number in it is finite, and its initialisers. Returns the table."""
    if not isinstance(layer, dict):
        fail(f"a layer is a table of arguments, got {layer!r:.80}")
    kind = layer.get("type")
    if kind is None:
        fail(f"no type; known types: {', '.join(sorted(LAYERS))}")
    if not isinstance(kind, str) or kind not in LAYERS:
        fail(f"unknown layer type {kind!r:.80}; known: {', '.join(sorted(LAYERS))}")
    params = inspect.signature(LAYERS[kind].__init__).parameters
    accepted = [name for name in params if name not in ("self", *_INJECTED)]
    missing = [
        name
        for name in accepted
        if params[name].default is params[name].empty and name not in layer
    ]
    unknown = sorted(set(layer) - {"type", *accepted, *_INJECTED})
    if unknown:  # first: a misspelt argument also shows up as a missing one
        fail(
            f"unknown argument(s) {unknown}; {kind} takes {accepted}"
            + (f" (missing: {missing})" if missing else "")
        )
    if missing:
        fail(f"missing argument(s) {missing}")
    injected = sorted(set(layer) & set(_INJECTED))
    if injected:
        fail(
            f"{injected} cannot be set in a model file (the seed and dtype are chosen when "
            f"the model is built)"
        )
    bad = _bad_number(layer)
    if bad is not None:
        fail(bad)
    for key in _INITS:
        if key not in layer:
            continue
        if not isinstance(layer[key], dict):
            fail(
                f'{key} must be an initialiser table such as {{type = "HeNormal"}}, '
                f"got {layer[key]!r:.80}"
            )
        try:
            initializers.from_config(layer[key])
        except ValueError as exc:
            fail(f"{key}: {exc}")
    return layer
