"""``stablecnn train | evaluate | summary``: the commands over the training loop."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from stablecnn.cli.argtypes import positive_float, positive_int
from stablecnn.data import DATASETS
from stablecnn.data.augment import MAX_ELASTIC_SIGMA, Augment
from stablecnn.errors import ConfigError, ModelFileError
from stablecnn.nn import modelfile, zoo
from stablecnn.optim import OPTIMIZERS
from stablecnn.training import checkpoint as ckpt_io
from stablecnn.training import recipes
from stablecnn.training.config import check_tta, check_warmup
from stablecnn.training.resume import (
    CHANGEABLE,
    augment_part,
    data_record,
    format_part,
    refuse_changes,
    refuse_nothing_to_train,
    run_data_source,
)
from stablecnn.training.rundir import check_new_run_dir, check_resume_dir, clear_run
from stablecnn.training.trainer import (
    Interrupted,
    RunLock,
    TrainConfig,
    Trainer,
    load_data,
    resume_checkpoint,
)

MPI_TIMEOUT = 300.0  # seconds, --mpi-timeout's default
# the environment variables an MPI launcher sets to the number of processes it started: MPICH's
# and Intel MPI's (PMI_SIZE, MPI_LOCALNRANKS), Open MPI's (OMPI_COMM_WORLD_SIZE), PMIx's
MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
# a value that starts with "-" and a digit (-1,10 or -0.5): argparse takes only -1 and -0.5 for a
# value, and "-1,10" for an unknown option; so --augment -1,10 reaches the option's own check
NEGATIVE_VALUE = re.compile(r"^-\d[\d.,eE+-]*$|^-\.\d")


def add_parsers(sub) -> None:
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
    p.add_argument(
        "--data-dir",
        type=Path,
        help="a folder holding the dataset: the four IDX files (raw or .gz), or for "
        "cifar10 cifar-10-binary.tar.gz (default: the cache, see stablecnn data)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="with --data-dir: use your own data there (structure checked, "
        "not the canonical SHA-256 digests)",
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
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="test accuracy, loss, per-class accuracy, confusion matrix",
        description="Evaluate a checkpoint on the test set of the data it was "
        "trained on (the same dataset and, for a run on your own IDX "
        "files, the same folder), unless told otherwise.",
    )
    p.add_argument("checkpoint", type=Path, help="a checkpoint .npz or a run directory")
    p.add_argument(
        "--dataset",
        choices=DATASETS,
        help="default: the dataset the checkpoint was trained on",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="a folder holding the dataset's IDX files or archive (default: where the run's "
        "came from)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="with --data-dir: use your own data there (structure checked, "
        "not the canonical SHA-256 digests)",
    )
    p.add_argument(
        "--tta",
        choices=["hflip", "none"],
        help="test-time augmentation: 'hflip' averages the class probabilities of each image "
        "and its mirror image (twice the forward passes; for fashion-mnist and cifar10, "
        "refused on mnist), 'none' evaluates without (default: the run's own --tta, as its "
        "reported accuracy was measured)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "summary",
        help="print a model's layers, shapes and parameter counts",
        description="Print a model's layers, output shapes and parameter counts: a built-in "
        "architecture or a model file (no weight is allocated), or the model of a checkpoint "
        "or of a run directory's checkpoint.npz.",
    )
    p.add_argument(
        "model", help="a built-in architecture name, a .toml/.json model file, or a checkpoint"
    )
    p.set_defaults(func=cmd_summary)


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
    process would train a run of its own), a ``--data-dir`` that is not a folder.

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


def _warmup_named(args, config) -> str:
    """How the run's warm-up was set, for :func:`check_warmup`'s message."""
    if args.resume is not None:
        return f"the warm-up of {config.warmup_steps} steps the run in {args.resume} started with"
    if args.warmup_steps is None and args.recipe is not None:
        return f"the warm-up of {config.warmup_steps} steps that --recipe {args.recipe} sets"
    return f"--warmup-steps {config.warmup_steps}"


@contextlib.contextmanager
def quiet_float_warnings():
    """No NumPy floating-point warning (overflow, invalid value, ...) on stderr: a run that
    diverges is stopped and reported by the trainer in one line. ``np.errstate`` does not
    reach the kernels' worker threads, so the warnings are filtered by their message; only
    the command line does this, a library user still sees them."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"(overflow|underflow|invalid value|divide by zero) encountered",
            category=RuntimeWarning,
        )
        yield


def cmd_train(args) -> int:
    """Train, or resume; every refusal (options, model file, data, a resume that cannot honour
    its options or has nothing to train, an ``--out`` that is a file or already holds a run
    without ``--overwrite``, a batch too small for a layer, a warm-up as long as the run) comes
    before the run directory is created or changed."""
    check_train_options(args)
    if getattr(args, "distributed", False):
        from stablecnn.cli.distributed import cmd_train_distributed

        return cmd_train_distributed(args, prepare_run, run_fit)
    config, ckpt, run_dir, data_dir, verify = prepare_run(args)
    train, test = load_data(config.dataset, data_dir=data_dir, verify=verify)
    num_train = min(len(train[0]), config.train_size or len(train[0]))
    check_warmup(config, num_train, named=_warmup_named(args, config))
    trainer = Trainer(
        config,
        run_dir,
        train,
        test,
        checkpoint=ckpt,
        data_source=data_record(config.dataset, data_dir, verify),
    )
    return run_fit(args, trainer, run_dir)


def run_fit(args, trainer, run_dir, log_lines=()) -> int:
    """Create ``run_dir`` (only now: everything before may refuse the run), hold its lock, remove
    the run there before with ``--overwrite`` (:func:`~stablecnn.training.rundir.clear_run`),
    write ``log_lines`` to the run's log, train, and end the run (:func:`finish_run`); 130 when
    interrupted (the checkpoint saved), else 0. The one-process and the distributed commands
    (rank 0) both end here."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        print(f"run directory: {run_dir}")
        if args.overwrite:  # the new run passed its checks and holds the lock: the old one goes
            removed = clear_run(run_dir)
            if removed:
                print(f"--overwrite: removed the previous run's {', '.join(removed)}")
        for line in log_lines:
            trainer.callbacks[0].write(line)  # the TextLog
        t0 = time.perf_counter()
        try:
            with quiet_float_warnings():
                last = trainer.fit()
        except Interrupted as exc:
            print(f"\n{exc}", file=sys.stderr)
            return 130
        finish_run(args, trainer, run_dir, last, time.perf_counter() - t0)
    return 0


def prepare_run(args, **defaults):
    """``(config, checkpoint or None, run_dir, data_dir, verify)`` of the run the options ask
    for: a new one (``defaults``: TrainConfig values the options may override) or the one
    ``--resume`` names (a directory: :func:`~stablecnn.training.rundir.check_resume_dir`), its
    options checked (:func:`refuse_changes`, :func:`refuse_nothing_to_train`). A new run's
    directory is checked too (:func:`~stablecnn.training.rundir.check_new_run_dir`: not a file,
    and not holding a run unless ``--overwrite``). Raises before any data is read or anything
    is written."""
    data_dir, verify = args.data_dir, not args.no_verify
    if args.resume is not None:
        if args.overwrite:
            raise ConfigError(
                "--overwrite replaces the run in --out with a new one and --resume continues "
                "a run: give one or the other"
            )
        check_resume_dir(args.resume)
        config, ckpt = resume_checkpoint(args.resume)
        refuse_changes(args.resume, config, _resume_options(args), checkpoint=ckpt)
        if args.epochs is not None:
            config.epochs = args.epochs
        progress = ckpt.meta["progress"]
        refuse_nothing_to_train(args.resume, progress, config.epochs, args.epochs is not None)
        stored = ckpt.meta.get("data")
        if isinstance(stored, dict):  # the run's own data source (None: stablecnn's sources)
            data_dir, verify = stored.get("data_dir"), bool(stored.get("verify", True))
        run_dir = args.resume
    else:
        config, ckpt = _config_from_args(args, **defaults), None
        zoo.model_config(config.model, num_classes=10)  # a bad model file fails here
        name = Path(config.model).stem if modelfile.is_model_path(config.model) else config.model
        run_dir = (
            args.out or Path("runs") / f"{name}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        check_settings(args, config)  # a resume's own values are its settings: not refused
        check_new_run_dir(run_dir, overwrite=args.overwrite)
    if not verify and data_dir is None:
        raise ConfigError("--no-verify applies to --data-dir: name the folder of your data")
    return config, ckpt, run_dir, data_dir, verify


def finish_run(args, trainer, run_dir, last, seconds) -> None:
    """Print the result and draw the plots (unless ``--no-plots``)."""
    print(
        f"test accuracy {100 * last['test_acc']:.2f}%, test loss {last['test_loss']:.4f} "
        f"({seconds:.1f} s this session); checkpoint {trainer.checkpoint_path}"
    )
    if not args.no_plots:
        from stablecnn.training import plots

        paths = plots.plot_run(run_dir, (trainer.test_images, trainer.test_labels))
        print("plots: " + ", ".join(str(p) for p in paths))


def cmd_evaluate(args) -> int:
    """Evaluate a checkpoint on the test set of its run's data, prepared with its normalizer and
    with the run's test-time augmentation unless ``--tta`` says otherwise (:func:`_evaluate_tta`).

    Raises:
        CheckpointError: the checkpoint cannot be read, or has no normalizer record (as for
            ``predict``: :func:`stablecnn.training.checkpoint.load_predictor`).
        ConfigError: test-time flips on a dataset whose classes a mirror does not keep.
        DataError: the run's data cannot be read from its source.
    """
    from stablecnn.data.specs import class_names
    from stablecnn.training.metrics import evaluate

    model, normalizer, ckpt = ckpt_io.load_predictor(args.checkpoint)
    dataset, data_dir, verify = run_data_source(
        ckpt.meta, args.dataset, args.data_dir, args.no_verify
    )
    tta, how = _evaluate_tta(args.tta, ckpt.meta, dataset)
    images, labels = load_data(dataset, data_dir=data_dir, splits=("test",), verify=verify)[0]
    result = evaluate(model, images, labels, normalizer, tta=tta)
    print(
        f"{dataset} test set, {len(labels)} images: accuracy {100 * result.accuracy:.2f}%, "
        f"loss {result.loss:.4f}{how}"
    )
    names = class_names(dataset, result.confusion.shape[0])
    labels_of = [str(k) if name == str(k) else f"{k} {name}" for k, name in enumerate(names)]
    print(
        "per-class accuracy: "
        + ", ".join(
            f"{label}: {'n/a' if np.isnan(a) else f'{100 * a:.1f}%'}"  # n/a: no test image
            for label, a in zip(labels_of, result.per_class_accuracy)
        )
    )
    print("confusion matrix (rows: true class, columns: predicted, by class number):")
    first = max(4, *(len(label) for label in labels_of))
    width = max(4, len(str(result.confusion.max())) + 1)
    print(" " * first + "".join(f"{k:>{width}}" for k in range(result.confusion.shape[1])))
    for label, row in zip(labels_of, result.confusion):
        print(f"{label:>{first}}" + "".join(f"{v:>{width}}" for v in row))
    return 0


def _evaluate_tta(option: str | None, meta: dict, dataset: str) -> tuple[str | None, str]:
    """``(tta, words)``: the test-time augmentation ``evaluate`` applies and how its result line
    says so. ``--tta hflip`` or ``--tta none`` as given; without ``--tta``, the run's own
    (``meta["train"]["tta"]``), so the figure is the one the run reported.

    Raises:
        ConfigError: test-time flips on a dataset of
            :data:`~stablecnn.training.config.NO_HFLIP` (the run's own: with how to go without).
    """
    train = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    if option is None and train.get("tta"):
        tta = train["tta"]
        try:
            check_tta(tta, dataset, named=f"the run's test-time augmentation ({tta}) is")
        except ConfigError as exc:
            raise ConfigError(f"{exc}; --tta none evaluates without it") from None
        return (
            tta,
            f", with test-time augmentation {tta}, as the run was trained (--tta none for without)",
        )
    tta = None if option in (None, "none") else option
    check_tta(tta, dataset, named="--tta hflip is")
    return tta, f" (test-time augmentation: {tta})" if tta else ""


def cmd_summary(args) -> int:
    """Print the model's layers and summary.

    Raises:
        ModelFileError: ``args.model`` is no built-in name, model file, checkpoint or run
            directory (the message lists what is taken), or a model file is invalid.
        CheckpointError: a checkpoint (or a run directory's) cannot be read.
    """
    path = Path(args.model)
    if args.model not in zoo.names() and not (
        modelfile.is_model_path(path) or path.exists() or path.suffix == ".npz"
    ):
        raise ModelFileError(
            f"unknown model {args.model!r}: not a built-in ({', '.join(zoo.names())}), and no "
            f"such .toml or .json model file, checkpoint .npz or run directory"
        )
    if modelfile.is_model_path(path) or not (path.exists() or path.suffix == ".npz"):
        # a model file or a built-in name: shapes and counts only, no weight is allocated
        model = zoo.resolve_model(args.model, weights=False)
    else:
        model, _ = ckpt_io.load_model(args.model)
    print(repr(model))
    print(model.summary(model.input_shape))
    return 0
