"""Reading a model file's text: TOML or JSON, with the line of each layer and top-level key.

What :mod:`stablecnn.nn.modelfile` checks needs positions that neither reader gives: ``tomllib``
gives none (the ``[[layers]]`` headers and the top-level keys are found by scanning the text) and
``json`` gives none either, and silently keeps the last of two equal keys. :func:`parse_json`
walks the text once more to find each value's line and refuses a key given twice, as TOML does.
A key given twice is reported alike in both formats: the file, the line and column of the second
key, the layer (index and type, a block's layer by its path) and where the key was first given.
``tomllib`` says only where it stopped (just after the second key's value):
:func:`stablecnn.tomlkeys.key_given_twice`, shared with recipes, finds that key and its table.
The file is read no further than :data:`MAX_FILE_BYTES` and nesting is bounded by
:data:`MAX_DEPTH`, so neither a huge file nor a deeply nested one costs memory or a
``RecursionError``. Every problem is a :class:`~stablecnn.errors.ModelFileError` naming the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from stablecnn.errors import ConfigError, ModelFileError
from stablecnn.nn.layers import repeat_count
from stablecnn.tomlkeys import (
    MAX_TEXT_BYTES,
    TOML_POSITION,
    describe_twice,
    key_given_twice,
    line_of,
    tomllib,
    value_at,
)

MAX_FILE_BYTES = MAX_TEXT_BYTES  # a model file is at most 1 MiB (md2's is about 2 KB)
MAX_DEPTH = 16  # containers nest at most this deep (a model file needs 4)
# an array-of-tables header: [[layers]], or [[layers.body]] for a layer of the last block
_TOML_HEADER = re.compile(
    r"^[ \t]*\[\[[ \t]*([A-Za-z0-9_-]+(?:[ \t]*\.[ \t]*[A-Za-z0-9_-]+)*)[ \t]*\]\][ \t]*(?:#.*)?$",
    re.MULTILINE,
)
_TOML_TABLE = re.compile(r"^[ \t]*\[", re.MULTILINE)
_TOML_KEY = re.compile(r"^[ \t]*([A-Za-z0-9_-]+)[ \t]*=", re.MULTILINE)
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def printable_kind(kind) -> bool:
    """Whether a layer's ``type`` value can be shown in a one-line message as it is."""
    return isinstance(kind, str) and kind.isprintable() and 0 < len(kind) <= 64


def read_text(path: Path) -> str:
    """The file's text, read no further than :data:`MAX_FILE_BYTES` (a FIFO or a huge file costs
    no memory)."""
    chunks, size = [], 0
    try:
        with open(path, "rb") as file:
            while size <= MAX_FILE_BYTES and (chunk := file.read(1 << 16)):
                chunks.append(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the model file: {exc.strerror or exc}") from None
    data = b"".join(chunks)
    if len(data) > MAX_FILE_BYTES:
        raise ModelFileError(
            f"{path}: larger than the {MAX_FILE_BYTES:,} bytes a model file may "
            f"have (md2's is about 2 KB); is it a model file?"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileError(
            f"{path}: cannot read the model file: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def parse_toml(text: str, path: Path) -> tuple[dict, dict]:
    if tomllib is None:
        raise ModelFileError(
            f"{path}: reading TOML needs Python 3.11+ or the 'tomli' package; "
            f"a .json model file works everywhere"
        )
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(text, path, str(exc)) from None
    except RecursionError:
        raise ModelFileError(f"{path}: nested too deeply (a model file needs 4 levels)") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ModelFileError(f"{path}: not valid TOML: {exc}") from None
    _check_depth(config, path)
    position = line_of(text)
    lines = {}
    lines.update(_header_lines(text, config, position))
    first_table = _TOML_TABLE.search(text)
    for m in _TOML_KEY.finditer(text, 0, first_table.start() if first_table else len(text)):
        lines.setdefault((m[1],), position(m.start())[0])  # top-level keys come before any table
    return config, lines


def _toml_error(text: str, path: Path, message: str) -> ModelFileError:
    """The error for ``tomllib``'s ``message``: a key given twice as :func:`_given_twice` says,
    anything else as ``tomllib`` says it, at its line and column."""
    twice = key_given_twice(text, message)
    if twice is not None:
        config, key_path, second, first = twice
        why = "a TOML table holds each key once"
        return _given_twice(path, text, config, key_path, (second, first), why)
    at = TOML_POSITION.search(message)
    if at is None or at[1] is None:
        return ModelFileError(f"{path}: not valid TOML: {message}")
    return ModelFileError(
        f"{path}, line {at[1]}, column {at[2]}: not valid TOML: {message[: at.start()]}"
    )


def _header_lines(text: str, config: dict, position) -> dict[tuple, int]:
    """The line of each ``[[layers]]`` table by its path, ``("layers", 3)``, and of each table
    of a block's list, ``[[layers.body]]`` after the fourth ``[[layers]]``, by
    ``("layers", 3, "body", 0)``: a header appends to the list of the last table of its
    parent, as TOML reads it. Paths that do not lead to a table of ``config`` are left out (a
    header inside a string, a key quoted in a way the scan does not read)."""
    lines, count = {}, {}
    for m in _TOML_HEADER.finditer(text):
        keys = tuple(k.strip() for k in m[1].split("."))
        path = ()
        for n in range(1, len(keys)):  # the parent lists' current tables
            path += (keys[n - 1], count.get(keys[:n], 0) - 1)
        count[keys] = count.get(keys, 0) + 1
        for other in [k for k in count if k[: len(keys)] == keys and len(k) > len(keys)]:
            del count[other]  # a new table: the lists inside the previous one are done
        path += (keys[-1], count[keys] - 1)
        if _table_at(config, path):
            lines[path] = position(m.start())[0]
    return lines


def _table_at(config, path: tuple) -> bool:
    return isinstance(value_at(config, path), dict)


def parse_json(text: str, path: Path) -> tuple[dict, dict]:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(
            f"{path}, line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}"
        ) from None
    except RecursionError:
        raise ModelFileError(f"{path}: nested too deeply (a model file needs 4 levels)") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ModelFileError(f"{path}: not valid JSON: {exc}") from None
    _check_depth(config, path)
    try:
        offsets = _json_offsets(text)
    except _DuplicateKey as dup:
        raise _given_twice(
            path,
            text,
            config,
            dup.path,
            (dup.offset, dup.first),
            "JSON readers keep only the last, so the file is refused (TOML refuses it too)",
        ) from None
    position = line_of(text)
    return config, {key: position(offset)[0] for key, offset in offsets.items()}


def _given_twice(
    path: Path, text: str, config, key_path: tuple, at: tuple, why: str
) -> ModelFileError:
    """The error for the key at ``key_path`` given twice, ``at`` the offsets of its second and
    first occurrences (the first None when not known): the line and column of the second, the
    layer it is in, as :func:`stablecnn.nn.modelfile.validate` names it, and the key below it."""
    (line, column), where = line_of(text)(at[0]), ""
    layers = config.get("layers") if isinstance(config, dict) else None
    if len(key_path) > 2 and key_path[0] == "layers" and isinstance(layers, list):
        label, key_path = _layer_label(layers, key_path[1:])
        where = f", {label}"
    return ModelFileError(
        f"{path}, line {line}, column {column}{where}: {describe_twice(text, key_path, at[1])}; "
        f"{why}"
    )


def layer_name(key: str | None, index: int, layer) -> str:
    """A layer's name in messages: ``layer 5 (Residual)``, or ``body.2 (Conv2d)`` for the layer
    of a block's list ``key`` (the type left out when not printable)."""
    kind = layer.get("type") if isinstance(layer, dict) else None
    name = f"layer {index}" if key is None else f"{key}.{index}"
    return name + (f" ({kind})" if printable_kind(kind) else "")


def _layer_label(layers: list, path: tuple) -> tuple[str, tuple]:
    """The label of the layer ``path`` leads to from ``layers`` (``(3, "body", 1, "kernel_size")``
    gives ``"layer 5 (Residual), body.1 (Conv2d)"``: the model's indices, repeats written out)
    and the rest of the path (``("kernel_size",)``)."""
    names, key = [], None
    while path and isinstance(path[0], int) and path[0] < len(layers):
        layer = layers[path[0]]
        names.append(layer_name(key, sum(map(_copies, layers[: path[0]])), layer))
        path = path[1:]
        inner = layer.get(path[0]) if path and isinstance(layer, dict) else None
        if not (isinstance(inner, list) and len(path) > 1 and isinstance(path[1], int)):
            break
        key, layers, path = path[0], inner, path[1:]
    return ", ".join(names), path


def _copies(layer) -> int:
    """How many layers of the model an entry of a layer list stands for (see ``repeat``)."""
    try:
        return repeat_count(layer)
    except ConfigError:  # refused later, by validate
        return 1


class _DuplicateKey(Exception):
    def __init__(self, path: tuple, offset: int, first: int):
        super().__init__(path)
        self.path, self.offset, self.first = path, offset, first


def _json_offsets(text: str) -> dict[tuple, int]:
    """The offset of every value of the valid JSON ``text`` by its path of keys and indices
    (``("layers", 2)`` is the third layer's ``{``). Raises :class:`_DuplicateKey` at the second
    of two equal keys in one object, which ``json.loads`` silently merges. Recursive: call it
    only on text nested at most :data:`MAX_DEPTH` deep."""
    decoder, offsets = json.JSONDecoder(), {}

    def skip(pos):
        return _JSON_SPACE.match(text, pos).end()

    def value(pos, path):
        pos = skip(pos)
        offsets[path] = pos
        if text[pos] == "{":
            seen, pos = {}, skip(pos + 1)
            while text[pos] != "}":
                key, end = json.decoder.scanstring(text, pos + 1)
                if key in seen:
                    raise _DuplicateKey((*path, key), pos, seen[key])
                seen[key] = pos
                pos = skip(value(skip(end) + 1, (*path, key)))  # past the ':', then the value
                pos = skip(pos + 1) if text[pos] == "," else pos
            return pos + 1
        if text[pos] == "[":
            pos, index = skip(pos + 1), 0
            while text[pos] != "]":
                pos = skip(value(pos, (*path, index)))
                pos = skip(pos + 1) if text[pos] == "," else pos
                index += 1
            return pos + 1
        return decoder.raw_decode(text, pos)[1]

    value(0, ())
    return offsets


def _check_depth(config, path) -> None:
    """Refuse containers nested more than :data:`MAX_DEPTH` deep (without recursing)."""
    stack = [(config, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise ModelFileError(
                    f"{path}: nested more than {MAX_DEPTH} levels deep (a model file needs 4)"
                )
            stack.extend(
                (v, depth + 1) for v in (value.values() if isinstance(value, dict) else value)
            )
