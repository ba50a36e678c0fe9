"""argparse value types shared by the command-line entry points."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def positive_int(text: str) -> int:
    """An int >= 1, or an argparse error naming the text received."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0, or an argparse error naming the text received."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


# where a trained run's data is read from again (evaluate, plot)
RUN_DATA_DIR_HELP = (
    "a folder holding the dataset's IDX files or archive (default: where the run's came from)"
)


def add_data_options(parser: argparse.ArgumentParser, data_dir_help: str) -> None:
    """``--data-dir DIR`` (``data_dir_help`` says what it holds and its default) and
    ``--no-verify``, the pair every command that reads a dataset takes."""
    parser.add_argument("--data-dir", type=Path, help=data_dir_help)
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="with --data-dir: use your own data there (structure checked, "
        "not the canonical SHA-256 digests)",
    )
