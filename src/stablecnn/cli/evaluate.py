"""``stablecnn evaluate | summary``: a checkpoint's test accuracy, loss, per-class accuracy and
confusion matrix; a model's layers, shapes and parameter counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stablecnn.cli import train as train_command  # its load_data: see cmd_evaluate
from stablecnn.cli.argtypes import RUN_DATA_DIR_HELP, add_data_options
from stablecnn.data import DATASETS
from stablecnn.errors import ConfigError, ModelFileError
from stablecnn.nn import modelfile, zoo
from stablecnn.training import checkpoint as ckpt_io
from stablecnn.training.config import check_tta
from stablecnn.training.resume import run_data_source


def add_parser(sub) -> None:
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
    add_data_options(p, RUN_DATA_DIR_HELP)
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
    # through the train command's module, not stablecnn.training.trainer: tests replace the data
    # loader in that one place (stablecnn.cli.train.load_data) for train and evaluate alike
    images, labels = train_command.load_data(
        dataset, data_dir=data_dir, splits=("test",), verify=verify
    )[0]
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
    checkpoint = not modelfile.is_model_path(path) and (path.exists() or path.suffix == ".npz")
    if args.model not in zoo.names() and not (checkpoint or modelfile.is_model_path(path)):
        raise ModelFileError(
            f"unknown model {args.model!r}: not a built-in ({', '.join(zoo.names())}), and no "
            f"such .toml or .json model file, checkpoint .npz or run directory"
        )
    if checkpoint:
        model, _ = ckpt_io.load_model(args.model)
    else:  # a model file or a built-in name: shapes and counts only, no weight is allocated
        model = zoo.resolve_model(args.model, weights=False)
    print(repr(model))
    print(model.summary(model.input_shape))
    return 0
