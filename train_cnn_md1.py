"""The original Model 1 interface, over stablecnn.

    python train_cnn_md1.py 1     train the original recipe; writes, in the current directory,
                                  output_cnn_md1.pickle and train_cnn_md1_log.txt
    python train_cnn_md1.py 0     predict the test set with output_cnn_md1.pickle (ours or one
                                  the original code wrote); writes predict_cnn_md1_log.txt

Data: the four MNIST IDX files in the current directory (or --data-dir), raw or .gz, read as they
are, as the original did; when they are not there, stablecnn's verified data sources (cache,
mirrors, offline fallback). Training also keeps a resumable run directory (--run-dir, default
./train_cnn_md1_run: checkpoint.npz, train_log.txt, metrics.csv); after Ctrl-C,
``python train_cnn_md1.py 1 --resume`` continues it.

The pickle is loaded safely: only NumPy arrays and plain data are admitted, nothing in it runs.
Logged losses are the true mean cross-entropy; the original printed them divided by 10.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stablecnn import legacy
from stablecnn.cli import run_command
from stablecnn.cli.argtypes import positive_int
from stablecnn.errors import StableCNNError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_cnn_md1.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("mode", type=int, choices=[0, 1], help="1: train, 0: predict the test set")
    p.add_argument("--epochs", type=positive_int, help="epochs to train (default 5)")
    p.add_argument(
        "--images", type=positive_int, help="train on the first N training images (default 20000)"
    )
    p.add_argument("--seed", type=int, help="seed for the weights and shuffles (default 0)")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="the folder holding the four IDX files (default: the current directory)",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=Path("train_cnn_md1_run"),
        help="where training keeps its checkpoint (default ./train_cnn_md1_run)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the training in --run-dir with the settings it started with "
        "(--epochs may extend it; --images or --seed with another value than "
        "the run's is refused)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="print only a summary line (the log files are written as ever)",
    )
    return p


def load_split(split: str, data_dir: Path | None):
    """The split from the IDX files in ``data_dir`` (default: here), else the data sources."""
    from stablecnn.data import load_dataset

    found = legacy.read_split(data_dir or Path.cwd(), split)
    if found is not None:
        return found
    if data_dir is not None:
        raise StableCNNError(f"--data-dir {data_dir} holds no {split} IDX files")
    return load_dataset("mnist", split)


def main(argv=None) -> int:
    """Run mode 0 or 1; errors, Ctrl-C and a closed pipe end as in ``stablecnn``."""
    return run_command(lambda: _run(build_parser().parse_args(argv)), prog="train_cnn_md1.py")


def _run(args) -> int:
    echo = not args.quiet
    if args.mode == 0:
        result = legacy.predict_mode(load_split("test", args.data_dir), echo=echo)
        if args.quiet:
            print(f"Final Test Set Accuracy: {100 * result.accuracy:.2f}%")
        return 0
    from stablecnn.training.resume import refuse_changes
    from stablecnn.training.trainer import Interrupted, TrainConfig, resume_checkpoint

    checkpoint = None
    if args.resume:
        config, checkpoint = resume_checkpoint(args.run_dir)
        given = {
            field: (f"{option} {value}", value)
            for field, option, value in (
                ("train_size", "--images", args.images),
                ("seed", "--seed", args.seed),
            )
            if value is not None
        }
        refuse_changes(
            args.run_dir, config, given, checkpoint=checkpoint, changeable="--epochs and --quiet"
        )  # before anything is read or written
        if args.epochs is not None:
            config.epochs = args.epochs
    else:
        config = TrainConfig.original_recipe(
            epochs=args.epochs or 5,
            train_size=20_000 if args.images is None else args.images,
            seed=0 if args.seed is None else args.seed,
        )
    train, test = load_split("train", args.data_dir), load_split("test", args.data_dir)
    if config.train_size is not None and config.train_size > len(train[0]):
        raise StableCNNError(
            f"--images {config.train_size}: the training set has only "
            f"{len(train[0])} images; pass --images {len(train[0])} or fewer"
        )
    try:
        last = legacy.train_mode(
            config, train, test, args.run_dir, checkpoint=checkpoint, echo=echo
        )
    except Interrupted:
        print(
            f"\ninterrupted; the checkpoint is in {args.run_dir}. Continue with: "
            f"python train_cnn_md1.py 1 --resume",
            file=sys.stderr,
        )
        return 130
    done = f"; test accuracy {100 * last['test_acc']:.2f}%" if last else ""
    print(f"wrote {legacy.PICKLE_NAME} and {legacy.TRAIN_LOG_NAME}{done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
