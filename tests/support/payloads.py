"""Hostile pickles: files we load are data, never code, and these prove it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path


class Payload:
    """Unpickling this calls ``func(*args)``: the classic malicious ``__reduce__``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker: Path):
    """Payloads that each create ``marker`` when unpickled: a directory made, a file written by
    ``exec``, and (on POSIX) a shell command."""
    yield Payload(os.mkdir, str(marker))
    yield Payload(exec, f"open({str(marker)!r}, 'w').close()")
    if os.name == "posix":
        yield Payload(os.system, f"touch '{marker}'")


def evil_pickle(marker: Path, protocol: int = 4) -> bytes:
    """A pickle that creates the directory ``marker`` when unpickled."""
    return pickle.dumps(Payload(os.mkdir, str(marker)), protocol=protocol)
