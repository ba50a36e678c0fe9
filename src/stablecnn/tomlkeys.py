"""Where a TOML text gives a key twice: the key, its table, and the line of each occurrence.

``tomllib`` refuses a key given twice with a bare "Cannot overwrite a value (at line 7, column
11)" (or another message, whatever the way the key was repeated) and says only where it stopped:
just after the second key's value. :func:`key_given_twice` finds that key and its table by
giving it another name and reading the text again (see :func:`_find_twice`), so that model files
(:mod:`stablecnn.nn.modelfile_text`) and recipes (:mod:`stablecnn.training.recipes`) both name
the key, its line and column, and the line where it was first given.
"""

from __future__ import annotations

import bisect
import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport has the same interface
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

__all__ = [
    "MAX_TEXT_BYTES",
    "TOML_POSITION",
    "key_given_twice",
    "line_of",
    "describe_twice",
    "value_at",
]

MAX_TEXT_BYTES = 1 << 20  # the largest text searched: a model file or a recipe is at most 1 MiB
# where tomllib stopped, at the end of its message
TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")
_TOML_KEY_PART = r"""[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'"""
# a key and its '=' where a pair may start: a line's start, or after an inline table's '{' or ','
_TOML_PAIR = re.compile(
    rf"(?:^|[{{,])[ \t]*((?:{_TOML_KEY_PART})(?:[ \t]*\.[ \t]*(?:{_TOML_KEY_PART}))*)[ \t]*=",
    re.MULTILINE,
)
_RENAMED = "stablecnn-renamed-key"  # a bare key no model file or recipe has


def line_of(text: str):
    """A function from an offset in ``text`` to its ``(line, column)``, both from 1."""
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_of(pos: int) -> tuple[int, int]:
        line = bisect.bisect_left(newlines, pos)  # newlines before pos
        return line + 1, pos - (newlines[line - 1] if line else -1)

    return line_of


def key_given_twice(text: str, message: str) -> tuple[dict, tuple, int, int | None] | None:
    """Whether ``tomllib`` refused ``text`` with ``message`` because a key is given twice:
    ``(config, key_path, second, first)`` as :func:`_find_twice` finds them; None for another
    error."""
    at = TOML_POSITION.search(message)
    if at is None:
        return None
    line_starts = [0, *(m.end() for m in re.finditer("\n", text))]
    end = len(text) if at[1] is None else line_starts[int(at[1]) - 1] + int(at[2]) - 1
    return _find_twice(text, end)


def describe_twice(text: str, key_path: tuple, first: int | None) -> str:
    """The words for the key at ``key_path`` given twice, first at offset ``first`` of ``text``
    (None when not known): ``the key 'train.epochs' is given twice (first on line 5)``."""
    where = "" if first is None else f" (first on line {line_of(text)(first)[0]})"
    return f"the key {'.'.join(map(str, key_path))!r} is given twice{where}"


def _find_twice(text: str, end: int) -> tuple[dict, tuple, int, int | None] | None:
    """Where ``tomllib`` stopped at ``end`` because a key was given twice: ``(config, key_path,
    second, first)``, the config read up to that statement, the full path of the key
    (``("layers", 3, "body", 1, "kernel_size")``) and the offsets of its second and first
    occurrences (``first`` None when not found); None when the error at ``end`` is another.

    ``tomllib`` stops just after the second key's value (for every way of giving a key twice,
    whatever its message), so the nearest key before ``end`` whose pair alone is valid TOML
    ending at ``end`` is that key. Renamed to :data:`_RENAMED`, the text up to the end of its
    statement reads, and the renamed key sits in its table beside the first one."""
    second = _pair_ending_at(text, end)
    if second is None:
        return None
    keys = _key_parts(second[1])  # a key: its pair parsed on its own
    renamed = text[: second.start(1)] + _RENAMED + text[second.end(1) :]
    read = _read_statement(renamed, second.start(1))
    table = _path_to_key(read[0], _RENAMED) if read is not None else None
    if table is None or value_at(read[0], (*table, *keys)) is None:
        return None  # not a key given twice (a key added to a table already closed, say)
    first = _first_key(renamed[: read[1]], second.start(1), keys, table)
    return read[0], (*table, *keys), second.start(1), first


def _first_key(text: str, before: int, keys: tuple, table: tuple) -> int | None:
    """The offset of the key ``keys`` before ``before`` that is in the table at path ``table``:
    renamed in turn, nearest first, each earlier key of that name until one lands there."""
    pairs = [  # the `in` spares reading every key of a large file
        pair
        for pair in _TOML_PAIR.finditer(text, 0, before)
        if keys[-1] in pair[1] and _key_parts(pair[1]) == keys
    ]
    for pair in reversed(pairs[-_probes(text) :]):
        probe = text[: pair.start(1)] + _RENAMED + "-first" + text[pair.end(1) :]
        try:
            if _path_to_key(tomllib.loads(probe), _RENAMED + "-first") == table:
                return pair.start(1)
        except (ValueError, RecursionError):
            continue
    return None


def _probes(text: str) -> int:
    """How many times a search reads ``text`` before it gives up: 64 for a text of up to 16 KB
    (md3's model file is 4 KB), 2 or 3 near :data:`MAX_TEXT_BYTES` (each reading of 1 MiB takes
    up to a second)."""
    return min(64, 2 + MAX_TEXT_BYTES // (len(text) + 1))


def _pair_ending_at(text: str, end: int):
    """The match of :data:`_TOML_PAIR` nearest before ``end`` whose pair, from its key to
    ``end``, is a valid TOML document on its own; None if none of the nearest few is."""
    for pair in reversed(list(_TOML_PAIR.finditer(text, 0, end))[-_probes(text) :]):
        try:
            tomllib.loads(text[pair.start(1) : end])
        except (ValueError, RecursionError):
            continue
        return pair
    return None


def _read_statement(text: str, start: int) -> tuple[dict, int] | None:
    """``text`` read up to the end of the statement holding offset ``start``, and that end: the
    first line end from there at which it is valid TOML; None if none of the next few is."""
    ends = [m.start() for m in re.finditer("\n", text[start:])][: _probes(text)]
    for end in [start + e for e in ends] + [len(text)]:
        try:
            return tomllib.loads(text[:end]), end
        except (ValueError, RecursionError):
            continue
    return None


def _key_parts(key: str) -> tuple[str, ...] | None:
    """The parts of a TOML key as written (``weight_init."type"`` is ``("weight_init", "type")``),
    None if it is not one."""
    try:
        value, parts = tomllib.loads(f"{key} = 0"), ()
    except (ValueError, RecursionError):
        return None
    while isinstance(value, dict):  # one key at each level, down to the 0
        ((part, value),) = value.items()
        parts += (part,)
    return parts


def _path_to_key(config: dict, key: str) -> tuple | None:
    """The path of the table in ``config`` that has ``key``, None if none has."""
    stack = [((), config)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            if key in value:
                return path
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
    return None


def value_at(config, path: tuple):
    """The value at ``path`` (keys and list indices) in ``config``, None if there is none."""
    value = config
    for key in path:
        if isinstance(key, int):
            if not (isinstance(value, list) and 0 <= key < len(value)):
                return None
        elif not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value
