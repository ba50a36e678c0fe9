"""``stablecnn plot RUN_DIR``: draw a run's curves, confusion matrix, filters and mistakes
(:func:`stablecnn.training.plots.plot_run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stablecnn.cli.argtypes import RUN_DATA_DIR_HELP, add_data_options
from stablecnn.training.plots import plot_run


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``plot RUN_DIR [--data-dir DIR [--no-verify]]`` on the CLI's ``subparsers``."""
    parser = subparsers.add_parser(
        "plot",
        help="draw a run's curves, confusion matrix, filters and mistakes",
        description="Write curves.png, confusion.png, filters.png and mistakes.png into a run "
        "directory, from its metrics.csv and checkpoint.npz (evaluated on the test set of the "
        "data it was trained on, read from where it came from).",
    )
    parser.add_argument(
        "run_dir",
        type=Path,
        metavar="RUN_DIR",
        help="a run directory (or its checkpoint.npz; another file is refused)",
    )
    add_data_options(parser, RUN_DATA_DIR_HELP)
    parser.set_defaults(func=cmd_plot)
    return parser


def cmd_plot(args) -> int:
    for path in plot_run(args.run_dir, data_dir=args.data_dir, no_verify=args.no_verify):
        print(path)
    return 0
