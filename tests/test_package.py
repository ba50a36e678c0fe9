"""The package's shape: no import cycles, every module importable on its own, the public API and
the modules of the earlier flat layout still where users find them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import stablecnn

SRC = Path(stablecnn.__file__).parent


def modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module in the package."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The stablecnn modules ``name`` imports, at load time or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def test_no_module_imports_itself_back():
    """Following the imports of any module, even those inside functions, never leads back to
    it: each concern depends on the ones below it only (the package ``__init__`` files, which
    only gather names, are left out)."""
    table = modules()
    known = set(table)
    graph = {
        name: {m for m in imports(path, name, known) if table[m].name != "__init__.py"}
        for name, path in table.items()
        if path.name != "__init__.py"
    }

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return trail + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# What each folder of the package may import (besides itself): one direction, from the engine's
# kernels up to the commands. Top-level modules count as folders of their own.
ALLOWED = {
    "errors": set(),
    "files": set(),
    "reference": set(),
    "tomlkeys": set(),
    "kernels": {"errors"},
    "data": {"errors", "files"},
    "nn": {"errors", "kernels", "reference", "tomlkeys"},
    "optim": {"errors", "kernels"},
    "training": {"errors", "files", "kernels", "nn", "optim", "data", "tomlkeys"},
    "legacy": {"errors", "files", "nn", "optim", "data", "training"},
    "serve": {"errors", "files", "kernels", "nn", "optim", "data", "training"},
    "interop": {"errors", "files", "nn", "data", "training"},
    "cli": {
        "errors",
        "files",
        "kernels",
        "nn",
        "optim",
        "data",
        "training",
        "legacy",
        "serve",
        "interop",
    },
}


def test_each_folder_imports_only_the_folders_below_it():
    """A change belongs in one folder, and what it may use is the folders below (README, Layout)."""
    table = modules()
    known = set(table)

    def folder(name: str) -> str:
        parts = name.split(".")
        return parts[1] if len(parts) > 1 else "stablecnn"

    wrong = sorted(
        f"{name} imports {other}"
        for name, path in table.items()
        if folder(name) in ALLOWED
        for other in imports(path, name, known)
        if folder(other) != folder(name) and folder(other) not in ALLOWED[folder(name)]
    )
    assert not wrong, "\n".join(wrong)


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Whichever module a program imports first, it loads (no order-dependent cycle)."""
    names = sorted(n for n in modules() if n != "stablecnn.__main__")
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'stablecnn']:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print('ok', len(sys.modules) > 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr


def test_the_public_api_is_where_users_find_it():
    from stablecnn import (
        Linear,  # noqa: F401
    )

    assert stablecnn.zoo.build("md1", seed=0).num_params == 2_796_218
    assert isinstance(stablecnn.zoo.build("md1"), stablecnn.Sequential)


@pytest.mark.parametrize("old, new", sorted(stablecnn.MOVED.items()))
def test_the_modules_of_the_flat_layout_still_import(old, new):
    """``import stablecnn.model`` gives the very module that took its place (not a copy)."""
    import importlib

    assert importlib.import_module(old) is importlib.import_module(new)


def test_a_submodule_of_a_moved_package_is_not_loaded_twice():
    import stablecnn.layers.conv as old  # the flat layout's path
    import stablecnn.nn.layers.conv as new

    assert old is new and old.Conv2d is stablecnn.Conv2d


def test_the_top_level_names_are_the_package_s_own():
    """``dir(stablecnn)`` offers the public API and stablecnn's own modules, not the standard
    library modules the package happens to import."""
    import types

    foreign = [
        name
        for name, value in vars(stablecnn).items()
        if not name.startswith("_")
        and isinstance(value, types.ModuleType)
        and not value.__name__.startswith("stablecnn")
    ]
    assert foreign == []
