"""The ``stablecnn`` command line: ``stablecnn train | predict | evaluate | data | plot | bench``.

Each command lives in the module that owns its concern and registers itself here through a
``add_parser(subparsers)`` function that sets ``func`` on its parser; this module only wires them
together and turns the project's errors into a one-line message and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import sys

from stablecnn import runtime
from stablecnn.errors import StableCNNError


def build_parser() -> argparse.ArgumentParser:
    from stablecnn import commands, legacy, plots, predict
    from stablecnn.data import cli as data_cli

    parser = argparse.ArgumentParser(
        prog="stablecnn",
        description="A numerically stable CNN library in NumPy: train, predict, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    commands.add_parsers(sub)
    predict.add_parser(sub)
    plots.add_parser(sub)
    legacy.add_parser(sub)
    data_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runtime.configure()  # STABLECNN_NUM_THREADS or every CPU; see stablecnn.runtime
    try:
        return int(args.func(args) or 0)
    except (StableCNNError, ValueError) as exc:
        print(f"stablecnn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk or a read-only folder under the logs, the plots, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"stablecnn: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
