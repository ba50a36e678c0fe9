"""``stablecnn train``'s options: its parser, the parsers of the option values (``--augment``,
``--elastic``, ...), the checks that refuse options before anything is read or written, and the
options turned into the run's :class:`~stablecnn.training.trainer.TrainConfig` (or, with
``--resume``, into what :func:`~stablecnn.training.resume.refuse_changes` compares). The command
itself is :mod:`stablecnn.cli.train`, which sets it as the parser's ``func``."""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

from stablecnn.cli.argtypes import add_data_options, positive_float, positive_int
from stablecnn.data import DATASETS
from stablecnn.data.augment import MAX_ELASTIC_SIGMA, Augment
from stablecnn.errors import ConfigError
from stablecnn.nn import zoo
from stablecnn.optim import OPTIMIZERS
from stablecnn.training import recipes
from stablecnn.training.resume import CHANGEABLE, augment_part, format_part
from stablecnn.training.trainer import TrainConfig

MPI_TIMEOUT = 300.0  # seconds, --mpi-timeout's default
# the environment variables an MPI launcher sets to the number of processes it started: MPICH's
# and Intel MPI's (PMI_SIZE, MPI_LOCALNRANKS), Open MPI's (OMPI_COMM_WORLD_SIZE), PMIx's
MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
# a value that starts with "-" and a digit (-1,10 or -0.5): argparse takes only -1 and -0.5 for a
# value, and "-1,10" for an unknown option; so --augment -1,10 reaches the option's own check
NEGATIVE_VALUE = re.compile(r"^-\d[\d.,eE+-]*$|^-\.\d")


def add_train_parser(sub) -> argparse.ArgumentParser:
    """Add ``train``'s parser to ``sub`` and return it, without its ``func``: that is
    :func:`stablecnn.cli.train.cmd_train`, set by that module (which imports this one)."""
    p = sub.add_parser(
        "train",
        help="train a model (default: Model 1 on full MNIST)",
        description="Train a model and write a run directory with the checkpoint, "
        "train_log.txt, metrics.csv and plots.",
    )
    p.add_argument(
        "--model",
        help=f"a built-in architecture ({', '.join(zoo.names())}; default md1) or a "
        f".toml/.json model file",
    )
    p.add_argument("--dataset", choices=DATASETS, help="default mnist")
    p.add_argument("--epochs", type=positive_int, help="epochs (default 5)")
    p.add_argument("--batch-size", type=positive_int, help="images per batch (default 100)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default 0.01)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="default adagrad")
    p.add_argument(
        "--momentum", type=float, help="momentum (sgd, rmsprop; default 0; refused by the others)"
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        help="L2 weight decay (decoupled for adamw; default: adamw 0.01, the others 0)",
    )
    p.add_argument(
        "--schedule",
        choices=["constant", "step", "cosine"],
        help="learning rate per step (default constant); step: x0.1 every --step-epochs epochs",
    )
    p.add_argument(
        "--step-epochs",
        type=positive_int,
        help="with --schedule step: epochs between step decays (default 1; refused with the "
        "other schedules)",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        help="linear warm-up steps (default 0), with any schedule; refused unless fewer than "
        "the run's steps (epochs times batches per epoch)",
    )
    p.add_argument(
        "--clip",
        type=positive_float,
        help="clip gradients to this global L2 norm (off when absent)",
    )
    p.add_argument(
        "--train-size", type=positive_int, help="use the first N training images (default: all)"
    )
    p.add_argument(
        "--normalization",
        choices=["original", "unit"],
        help="'original': subtract int(mean), divide by int(std) of the training "
        "images used (default); 'unit': scale to [0, 1]",
    )
    p.add_argument(
        "--augment",
        nargs="?",
        const="2,10",
        type=_augment,
        metavar="SHIFT,DEGREES",
        help="augment the training batches: random shifts up to SHIFT pixels and "
        "rotations up to DEGREES (default when given: 2,10; off when absent)",
    )
    p.add_argument(
        "--max-scale",
        type=_max_scale,
        metavar="M",
        help="random zoom with the shifts and rotations: scale each training image about its "
        "centre by a factor drawn uniformly from [1 - M, 1 + M], M in (0, 1) (0.1: 10%%); off "
        "when absent",
    )
    p.add_argument(
        "--elastic",
        nargs="?",
        const="34,4",
        type=_elastic,
        metavar="ALPHA,SIGMA",
        help="elastic distortion (Simard et al. 2003), alone or in the same resampling as "
        "--augment and --max-scale: move each pixel's source by ALPHA pixels times uniform noise "
        "smoothed by a Gaussian of SIGMA pixels, SIGMA at most 1000 (default when given: 34,4, "
        "the paper's MNIST setting); off when absent",
    )
    p.add_argument(
        "--random-crop",
        type=positive_int,
        metavar="PAD",
        help="random crops with padding: pad PAD zero pixels on every side and take a random "
        "window of the image's size (the CIFAR recipe: 4 for 32x32); PAD at most half the "
        "image's side (14 for 28x28, 16 for 32x32), so every crop keeps at least half of the "
        "image's rows and columns; off when absent",
    )
    p.add_argument(
        "--hflip",
        action="store_true",
        help="mirror each training image left to right with probability 1/2 (for fashion-mnist "
        "and cifar10; refused on mnist, as a mirrored digit is not that digit); off when absent",
    )
    p.add_argument(
        "--random-erasing",
        type=_random_erasing,
        metavar="P",
        help="random erasing (Zhong et al. 2017): with probability P, set one rectangle of "
        "2-33%% of the image, aspect ratio 0.3-3.3, to 0; off when absent. Applied after the "
        "shifts and rotations, crops and flips, in that order",
    )
    p.add_argument(
        "--label-smoothing",
        type=_label_smoothing,
        metavar="EPS",
        help="train on the targets (1 - EPS) one-hot + EPS / classes, EPS in [0, 1) (default "
        "0; 1 would leave the labels unused). The training "
        "loss reported is then the smoothed loss; the test loss stays the plain cross-entropy",
    )
    p.add_argument(
        "--tta",
        choices=["hflip"],
        help="test-time augmentation of the evaluations: 'hflip' averages the class "
        "probabilities of each test image and its mirror image (for fashion-mnist and cifar10, "
        "refused on mnist); off when absent",
    )
    p.add_argument("--seed", type=int, help="seed for the weights and the shuffles (default 0)")
    p.add_argument("--dtype", choices=["float32", "float64"], help="default float32")
    p.add_argument(
        "--recipe",
        metavar="NAME|FILE",
        help=f"start from a recipe's settings, each option given overriding its value: a "
        f"shipped recipe ({', '.join(recipes.names())}; 'original': the original recipe "
        f"exactly, the first 20,000 images, int mean/std, 5 epochs of 100, Adagrad 0.01) or a "
        f"recipe .toml file",
    )
    add_data_options(
        p,
        "a folder holding the dataset: the four IDX files (raw or .gz), or for cifar10 "
        "cifar-10-binary.tar.gz (default: the cache, see stablecnn data)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="run directory (default runs/<model>-<dataset>-<time>); one that already holds a "
        "run (its checkpoint, log, metrics or plots) is refused unless --overwrite, and a file "
        "is refused",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out: its checkpoint, log, metrics and plots are "
        "removed once the new run has passed its checks (other files are left); refused with "
        "--resume",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR (the folder holding its checkpoint.npz; a file is "
        "refused) from its checkpoint with the settings it started with (--epochs may extend "
        "it; any other option given with another value than the run's is refused, and so is "
        "a run that has already trained the epochs asked for)",
    )
    p.add_argument("--no-plots", action="store_true", help="do not draw the plots at the end")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one rank of a data-parallel run over MPI: mpiexec -n K stablecnn train "
        '--distributed ... (needs pip install "stablecnn[mpi]"); the weights are those of '
        "one process with the same --micro-batches, bit for bit. Without it, a train started "
        "by mpiexec with more than one process is refused",
    )
    p.add_argument(
        "--micro-batches",
        type=positive_int,
        metavar="P",
        help="compute each batch's gradient as P micro-batches added in a fixed order (default "
        "1; with --distributed 6, or K if more ranks): a run on up to P ranks gives the same "
        "weights as one process with the same P",
    )
    p.add_argument(
        "--mpi-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="with --distributed (refused without it): stop every rank when a step waits this "
        f"long for another (a stuck or lost rank; default {MPI_TIMEOUT:g})",
    )
    p._negative_number_matcher = NEGATIVE_VALUE  # noqa: SLF001 - see NEGATIVE_VALUE
    return p


# the TrainConfig field each option sets
OPTION_FIELDS = {
    "model": "--model",
    "dataset": "--dataset",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "optimizer": "--optimizer",
    "momentum": "--momentum",
    "weight_decay": "--weight-decay",
    "schedule": "--schedule",
    "step_epochs": "--step-epochs",
    "warmup_steps": "--warmup-steps",
    "clip": "--clip",
    "train_size": "--train-size",
    "normalization": "--normalization",
    "seed": "--seed",
    "dtype": "--dtype",
    "augment": "--augment",  # with the options of AUGMENT_OPTIONS, which set parts of it
    "label_smoothing": "--label-smoothing",
    "tta": "--tta",
    "micro_batches": "--micro-batches",
}
# the options that each set part of TrainConfig.augment (Augment's fields): "augment" is --augment
# SHIFT,DEGREES (max_shift, max_degrees), the others the Augment field of the same name
AUGMENT_OPTIONS = {
    "augment": "--augment",
    "max_scale": "--max-scale",
    "elastic": "--elastic",
    "random_crop": "--random-crop",
    "hflip": "--hflip",
    "random_erasing": "--random-erasing",
}


def _augment_parts(args) -> dict:
    """``{part: value}`` for each augmentation option on the command line (``"augment"``: the
    pair ``(max_shift, max_degrees)``; ``"hflip"`` only when given, as True)."""
    parts = {part: getattr(args, part) for part in AUGMENT_OPTIONS}
    return {part: value for part, value in parts.items() if value not in (None, False)}


def _given(args) -> dict:
    """``{field: value}`` for each TrainConfig option on the command line (the augmentation
    options combined into one ``augment`` description, the steps not named off)."""
    given = {
        field: getattr(args, field)
        for field in OPTION_FIELDS
        if field != "augment" and getattr(args, field) is not None
    }
    parts = _augment_parts(args)
    if parts:  # only the Augment fields given: a recipe's augmentation keeps the others
        if "augment" in parts:
            parts["max_shift"], parts["max_degrees"] = parts.pop("augment")
        given["augment"] = parts
    return given


def _config_from_args(args, **defaults) -> TrainConfig:
    given = {**defaults, **_given(args)}
    if args.recipe is not None:
        return recipes.load(args.recipe).config(**given)
    if "augment" in given:
        given["augment"] = {**Augment().to_dict(), **given["augment"]}
    return TrainConfig(**given)


def _resume_options(args) -> dict:
    """``{field: (option as typed, value)}`` for
    :func:`stablecnn.training.resume.refuse_changes`."""

    def typed(field, value):
        return f"{OPTION_FIELDS[field]} {value}"

    given = {
        field: (typed(field, value), value)
        for field, value in _given(args).items()
        if field != "augment"
    }
    # each augmentation option against its part of the run's augmentation (resume.refuse_changes)
    for part, value in _augment_parts(args).items():
        option = AUGMENT_OPTIONS[part]
        if part != "hflip":  # --hflip takes no value
            option += f" {format_part(value)}"
        given[f"augment.{part}"] = (option, value)
    if args.recipe is not None:  # the recipe's settings, where no option overrides them
        recipe = recipes.load(args.recipe)
        for field, value in recipe.settings.items():
            if field == "augment":
                for part in AUGMENT_OPTIONS:
                    value = augment_part(recipe.config().augment, part)
                    label = f"--recipe {args.recipe} ({AUGMENT_OPTIONS[part]})"
                    given.setdefault(f"augment.{part}", (label, value))
            elif field not in CHANGEABLE:
                label = f"--recipe {args.recipe} ({typed(field, value)})"
                given.setdefault(field, (label, value))
    if args.data_dir is not None:
        given["data_dir"] = (f"--data-dir {args.data_dir}", args.data_dir)
    if args.no_verify:
        given["verify"] = ("--no-verify", False)
    if args.out is not None:
        given["run_dir"] = (f"--out {args.out}", args.out)
    return given


def _augment(text: str) -> tuple[int, float]:
    """``SHIFT,DEGREES`` -> ``(max_shift, max_degrees)``, checked by :class:`Augment`."""
    try:
        aug = Augment.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return aug.max_shift, aug.max_degrees


def _random_erasing(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(
            f"the probability of random erasing must be in (0, 1], got {text!r}"
        )
    return value


def _elastic(text: str) -> tuple[float, float]:
    """``ALPHA,SIGMA`` -> ``(alpha, sigma)``: alpha finite and above 0, sigma in
    (0, MAX_ELASTIC_SIGMA]."""
    parts = text.split(",")
    try:
        alpha, sigma = (float(part) for part in parts) if len(parts) == 2 else (math.nan,) * 2
    except ValueError:
        alpha = sigma = math.nan
    if not (0 < alpha < math.inf and 0 < sigma <= MAX_ELASTIC_SIGMA):
        raise argparse.ArgumentTypeError(
            f"elastic distortion must be ALPHA,SIGMA, two numbers above 0 such as 34,4 (SIGMA "
            f"at most {MAX_ELASTIC_SIGMA:g}), got {text!r}"
        )
    return alpha, sigma


def _max_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"the largest zoom must be in (0, 1), got {text!r}")
    return value


def _label_smoothing(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"label smoothing must be in [0, 1) (1 would make every target uniform and the labels "
            f"unused), got {text!r}"
        )
    return value


def mpi_processes(environ=os.environ) -> int:
    """How many processes the MPI launcher that started this one started (1: none), from
    :data:`MPI_SIZE_VARIABLES`."""
    sizes = [environ.get(name, "") for name in MPI_SIZE_VARIABLES]
    return max([int(size) for size in sizes if size.strip().isdigit()] or [1])


def check_train_options(args) -> None:
    """Refuse, before anything is read or written, what ``train`` would otherwise ignore or
    get wrong: several MPI processes or ``--mpi-timeout`` without ``--distributed`` (each
    process would train a run of its own), a ``--data-dir`` that is not a folder. Then fills in
    ``--mpi-timeout``'s default (:data:`MPI_TIMEOUT`), which the check must see unset.

    Raises:
        ConfigError: naming the option and the value at fault.
    """
    if not args.distributed:
        processes = mpi_processes()
        if processes > 1:
            raise ConfigError(
                f"this train was started by an MPI launcher with {processes} processes, which "
                f"would each train a run of their own: add --distributed (mpiexec -n "
                f"{processes} stablecnn train --distributed ...) for one data-parallel run"
            )
        if args.mpi_timeout is not None:
            raise ConfigError(
                "--mpi-timeout applies to --distributed (mpiexec -n K stablecnn train "
                "--distributed ...): drop it or add --distributed"
            )
    if args.data_dir is not None and not args.data_dir.is_dir():
        what = "is not a folder" if args.data_dir.exists() else "does not exist"
        raise ConfigError(f"--data-dir {args.data_dir} {what}: name the folder of the data")
    if args.mpi_timeout is None:
        args.mpi_timeout = MPI_TIMEOUT


def check_settings(args, config) -> None:
    """Refuse an option that a new run's settings (its options and recipe) would ignore:
    ``--step-epochs`` without the step schedule.

    Raises:
        ConfigError: naming the option and the setting that makes it unused.
    """
    if args.step_epochs is not None and config.schedule != "step":
        raise ConfigError(
            f"--step-epochs applies to --schedule step (this run's schedule is "
            f"{config.schedule}): drop it or add --schedule step"
        )
