"""Reading a model file's text: TOML or JSON, with the line of each layer and top-level key.

What :mod:`stablecnn.nn.modelfile` checks needs positions that neither reader gives: ``tomllib``
gives none (the ``[[layers]]`` headers and the top-level keys are found by scanning the text) and
``json`` gives none either, and silently keeps the last of two equal keys. :func:`parse_json`
walks the text once more to find each value's line and refuses a key given twice, as TOML does.
The file is read no further than :data:`MAX_FILE_BYTES` and nesting is bounded by
:data:`MAX_DEPTH`, so neither a huge file nor a deeply nested one costs memory or a
``RecursionError``. Every problem is a :class:`~stablecnn.errors.ModelFileError` naming the file.
"""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path

from stablecnn.errors import ModelFileError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport has the same interface
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

MAX_FILE_BYTES = 1 << 20  # a model file is at most 1 MiB (md2's is about 2 KB)
MAX_DEPTH = 16  # containers nest at most this deep (a model file needs 4)
# an array-of-tables header: [[layers]], or [[layers.body]] for a layer of the last block
_TOML_HEADER = re.compile(
    r"^[ \t]*\[\[[ \t]*([A-Za-z0-9_-]+(?:[ \t]*\.[ \t]*[A-Za-z0-9_-]+)*)[ \t]*\]\][ \t]*(?:#.*)?$",
    re.MULTILINE,
)
_TOML_TABLE = re.compile(r"^[ \t]*\[", re.MULTILINE)
_TOML_KEY = re.compile(r"^[ \t]*([A-Za-z0-9_-]+)[ \t]*=", re.MULTILINE)
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
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


def _line_of(text: str):
    """A function from an offset in ``text`` to its ``(line, column)``, both from 1."""
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_of(pos: int) -> tuple[int, int]:
        line = bisect.bisect_left(newlines, pos)  # newlines before pos
        return line + 1, pos - (newlines[line - 1] if line else -1)

    return line_of


def parse_toml(text: str, path: Path) -> tuple[dict, dict]:
    if tomllib is None:
        raise ModelFileError(
            f"{path}: reading TOML needs Python 3.11+ or the 'tomli' package; "
            f"a .json model file works everywhere"
        )
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = _TOML_POSITION.search(message)
        if at is None:
            raise ModelFileError(f"{path}: not valid TOML: {message}") from None
        raise ModelFileError(
            f"{path}, line {at[1]}, column {at[2]}: not valid TOML: {message[: at.start()]}"
        ) from None
    except RecursionError:
        raise ModelFileError(f"{path}: nested too deeply (a model file needs 4 levels)") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ModelFileError(f"{path}: not valid TOML: {exc}") from None
    _check_depth(config, path)
    line_of = _line_of(text)
    lines = {}
    lines.update(_header_lines(text, config, line_of))
    first_table = _TOML_TABLE.search(text)
    for m in _TOML_KEY.finditer(text, 0, first_table.start() if first_table else len(text)):
        lines.setdefault((m[1],), line_of(m.start())[0])  # top-level keys come before any table
    return config, lines


def _header_lines(text: str, config: dict, line_of) -> dict[tuple, int]:
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
            lines[path] = line_of(m.start())[0]
    return lines


def _table_at(config, path: tuple) -> bool:
    value = config
    for key in path:
        if isinstance(key, int):
            if not (isinstance(value, list) and 0 <= key < len(value)):
                return False
        elif not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return isinstance(value, dict)


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
    line_of = _line_of(text)
    try:
        offsets = _json_offsets(text)
    except _DuplicateKey as dup:
        (line, column), (first, _) = line_of(dup.offset), line_of(dup.first)
        key, where = dup.path[-1], ""
        layers = config.get("layers") if isinstance(config, dict) else None
        if len(dup.path) > 2 and dup.path[0] == "layers" and isinstance(layers, list):
            index = dup.path[1]
            kind = layers[index].get("type") if isinstance(layers[index], dict) else None
            where = f", layer {index}" + (f" ({kind})" if printable_kind(kind) else "")
            key = ".".join(map(str, dup.path[2:]))
        raise ModelFileError(
            f"{path}, line {line}, column {column}{where}: the key {key!r} is given twice (first "
            f"on line {first}); JSON readers keep only the last, so the file is refused (TOML "
            f"refuses it too)"
        ) from None
    return config, {key: line_of(offset)[0] for key, offset in offsets.items()}


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
