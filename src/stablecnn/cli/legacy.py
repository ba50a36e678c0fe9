"""``stablecnn export-pickle | import-pickle``: Model 1 checkpoints to and from the original
scripts' pickle (see :mod:`stablecnn.legacy`).

Both refuse an existing output unless ``--overwrite`` (:func:`stablecnn.cli.interop.check_output`);
``train_cnn_md1.py 1`` rewrites its pickle every run, as the original did."""

from __future__ import annotations

from pathlib import Path

from stablecnn.cli.interop import check_output
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
        "code's pickle layout (18 items, float64), which the original can load. An existing "
        "pickle is refused unless --overwrite; so is a missing folder, before anything is read.",
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
    p.add_argument(
        "--overwrite", action="store_true", help="replace the pickle if it exists (atomically)"
    )
    p.set_defaults(func=cmd_export_pickle)

    p = subparsers.add_parser(
        "import-pickle",
        help="convert an original output_cnn_md1.pickle into a checkpoint",
        description="Read a pickle in the original layout safely (NumPy arrays and plain data "
        "only; nothing in it is executed) and write our checkpoint. An existing OUT.npz is "
        "refused unless --overwrite; so is a missing folder, before anything is read.",
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
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT.npz if it exists (atomically)"
    )
    p.set_defaults(func=cmd_import_pickle)


def cmd_export_pickle(args) -> int:
    check_output(args.out, args.overwrite, "with -o")
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
    check_output(out, args.overwrite, "with -o")
    items = load_original(args.pickle)
    checkpoint_from_original(items, out, where=str(args.pickle), dtype=args.dtype)
    print(f"wrote {out} (md1, {len(items[8])} batches trained)")
    return 0
