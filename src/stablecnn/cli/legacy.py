"""``stablecnn export-pickle | import-pickle``: Model 1 checkpoints to and from the original
scripts' pickle (see :mod:`stablecnn.legacy`)."""

from __future__ import annotations

from pathlib import Path

from stablecnn.errors import CheckpointError
from stablecnn.legacy.pickle import (
    PICKLE_NAME,
    checkpoint_from_original,
    load_original,
    save_original,
    to_original,
)
from stablecnn.training import checkpoint as ckpt_io


def add_parser(subparsers) -> None:
    """Register ``export-pickle`` and ``import-pickle`` on the ``stablecnn`` command line."""
    p = subparsers.add_parser(
        "export-pickle",
        help="write a Model 1 checkpoint as the original's output_cnn_md1.pickle",
        description="Convert a Model 1 checkpoint (.npz or run directory) into the original "
        "code's pickle layout (18 items, float64), which the original can load.",
    )
    p.add_argument(
        "checkpoint", type=Path, metavar="CKPT", help="a checkpoint .npz or a run directory"
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path(PICKLE_NAME),
        help=f"the pickle to write (default ./{PICKLE_NAME})",
    )
    p.set_defaults(func=cmd_export_pickle)

    p = subparsers.add_parser(
        "import-pickle",
        help="convert an original output_cnn_md1.pickle into a checkpoint",
        description="Read a pickle in the original layout safely (NumPy arrays and plain data "
        "only; nothing in it is executed) and write our checkpoint.",
    )
    p.add_argument("pickle", type=Path, metavar="PICKLE", help="the original's model file")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        metavar="OUT.npz",
        help="the checkpoint to write (default: PICKLE with the suffix .npz)",
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help="default: float32 when it holds every value exactly, else float64",
    )
    p.set_defaults(func=cmd_import_pickle)


def cmd_export_pickle(args) -> int:
    model, ckpt = ckpt_io.load_model(args.checkpoint)
    try:
        items = to_original(model, ckpt.optim, ckpt.history)
    except CheckpointError as exc:  # name the checkpoint that is not a Model 1
        raise CheckpointError(f"{ckpt.meta['path']}: {exc}") from None
    save_original(args.out, items)
    print(f"wrote {args.out} (original layout, {len(items[8])} batches of history)")
    return 0


def cmd_import_pickle(args) -> int:
    out = args.out or args.pickle.with_suffix(".npz")
    items = load_original(args.pickle)
    checkpoint_from_original(items, out, where=str(args.pickle), dtype=args.dtype)
    print(f"wrote {out} (md1, {len(items[8])} batches trained)")
    return 0
