"""What defines a training run: :class:`TrainConfig`, kept in every checkpoint of the run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from stablecnn.data.augment import Augment
from stablecnn.data.specs import get_spec
from stablecnn.errors import ConfigError
from stablecnn.optim import OPTIMIZERS, check_optimizer

NORMALIZATIONS = ("original", "unit")
SCHEDULES = ("constant", "step", "cosine")
# datasets whose classes a horizontal flip does not keep: a mirrored 2, 3, 4, 5, 6, 7 or 9 is no
# longer that digit, so flipping would train on pictures that are wrong for their labels
NO_HFLIP = frozenset({"mnist"})


def check_tta(
    tta: str | None, dataset: str, named: str = "test-time flips (tta hflip) are"
) -> None:
    """Refuse test-time flips (``tta == "hflip"``) on a dataset of :data:`NO_HFLIP`.

    ``named`` starts the message: how the caller's user asked for them (the command line says
    ``--tta hflip is``).

    Raises:
        ConfigError: ``tta`` is ``"hflip"`` and ``dataset`` is in :data:`NO_HFLIP`.
    """
    if tta == "hflip" and dataset in NO_HFLIP:
        raise ConfigError(
            f"{named} not for {dataset}: a mirrored digit is not that digit, so the mirror "
            f"images' probabilities would be wrong for their labels; use them on datasets whose "
            f"classes a mirror keeps (fashion-mnist, cifar10)"
        )


def max_random_crop(dataset: str) -> int:
    """The largest padding of random crops on ``dataset``'s images: half their shorter side (14
    for 28x28, 16 for 32x32), so every crop keeps at least half of the image's rows and columns.
    More would train on crops that are mostly (and, from the side on, wholly) padding."""
    return min(get_spec(dataset).image_shape[-2:]) // 2


def check_warmup(config: TrainConfig, num_train: int, named: str | None = None) -> None:
    """Refuse a warm-up at least as long as the run, on every schedule: its learning rate would
    never reach ``config.lr``.

    ``num_train`` is the number of training images the run trains on; ``named`` starts the
    message: how the caller's user set the warm-up (default ``warmup_steps W``).

    Raises:
        ConfigError: ``config.warmup_steps`` is at least the run's steps (its epochs times
            ``ceil(num_train / batch_size)``), naming both.
    """
    per_epoch = math.ceil(num_train / config.batch_size)
    steps = config.epochs * per_epoch
    if config.warmup_steps >= steps:
        raise ConfigError(
            f"{named or f'warmup_steps {config.warmup_steps}'} is not shorter than the run's "
            f"{count(steps, 'step')} ({count(config.epochs, 'epoch')} of "
            f"{count(per_epoch, 'batch')}): the learning rate would still be warming up when "
            f"the run ends; give --warmup-steps N below {steps} (0: no warm-up), or train for "
            f"more steps"
        )


def count(n: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``, ``2 batches``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith('h') else 's'}"


# the original Model 1 recipe (stablecnn.training.recipes names it "original")
ORIGINAL_RECIPE = {
    "model": "md1",
    "dataset": "mnist",
    "epochs": 5,
    "batch_size": 100,
    "lr": 0.01,
    "optimizer": "adagrad",
    "train_size": 20_000,
    "normalization": "original",
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in its checkpoints).

    ``train_size`` takes the first N training images (the original recipe used 20,000);
    ``normalization="original"`` subtracts int(mean) and divides by int(std) of those images.

    ``augment`` is :meth:`stablecnn.data.augment.Augment.to_dict` (stored with every field, so a
    description from an older checkpoint that lacks the later steps is read with them off);
    horizontal flips are refused on ``mnist`` (digits are not mirror-symmetric). ``label_smoothing``
    (``eps`` in [0, 1), default 0) trains on the targets ``(1 - eps) one_hot + eps / K``
    (:class:`~stablecnn.nn.losses.SoftmaxCrossEntropy`): the training loss the run reports (its
    log, metrics file and plots) is then the smoothed loss, while the test loss stays the plain
    cross-entropy, so the two are not the same measure.

    ``tta="hflip"`` evaluates the test set (after each epoch and at the end) on the mean of each
    image's and its mirror image's class probabilities
    (:func:`~stablecnn.training.metrics.evaluate`); refused where flips are.

    ``augment``'s ``random_crop`` is at most :func:`max_random_crop` of the dataset (half its
    images' side).

    ``micro_batches`` (P, default 1, at most ``batch_size``) computes each batch's gradient as
    the sum of P contiguous micro-batches' gradients added in a fixed order
    (:mod:`stablecnn.training.microbatch`): P is part of the run's arithmetic, and a run with a
    given P gives bit-identical weights on one process or on any K <= P MPI ranks.

    Raises:
        ConfigError: a value out of its range, naming the field and the value.
    """

    model: str = "md1"
    dataset: str = "mnist"
    epochs: int = 5
    batch_size: int = 100
    lr: float = 0.01
    optimizer: str = "adagrad"
    momentum: float | None = None  # sgd and rmsprop only
    weight_decay: float | None = None  # None: the optimizer's default (adamw 0.01, the others 0)
    schedule: str = (
        "constant"  # learning rate per step: constant, step (x0.1 every step_epochs), cosine
    )
    step_epochs: int = 1
    warmup_steps: int = 0
    clip: float | None = None  # clip gradients to this global L2 norm
    train_size: int | None = None
    normalization: str = "original"
    seed: int = 0
    dtype: str = "float32"
    eval_batch_size: int = 1000
    augment: dict | None = None  # Augment.to_dict(): max_shift, max_degrees, random_crop, ...
    label_smoothing: float = 0.0  # eps of the training loss's targets (1 - eps) one_hot + eps / K
    tta: str | None = None  # test-time augmentation of the evaluations: None or "hflip"
    # micro-batches a batch's gradient is summed from, in a fixed order (1: the whole batch at
    # once); what makes a run on K MPI ranks bit-identical to one process, see
    # stablecnn.training.microbatch
    micro_batches: int = 1

    def __post_init__(self):
        def bad(what, value, rule):
            raise ConfigError(f"{what} must be {rule}, got {value!r}")

        for name in ("epochs", "batch_size", "eval_batch_size", "micro_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(name, value, "a positive integer")
        if self.micro_batches > self.batch_size:
            bad("micro_batches", self.micro_batches, f"at most batch_size ({self.batch_size})")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            bad("lr", self.lr, "a positive finite number")
        if self.train_size is not None and (
            not isinstance(self.train_size, int) or self.train_size < 1
        ):
            bad("train_size", self.train_size, "a positive integer or None")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", self.optimizer, f"one of {sorted(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            bad("schedule", self.schedule, f"one of {list(SCHEDULES)}")
        if self.clip is not None and not (isinstance(self.clip, (int, float)) and self.clip > 0):
            bad("clip", self.clip, "a positive number or None")
        for name in ("step_epochs",):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, getattr(self, name), "a positive integer")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            bad("warmup_steps", self.warmup_steps, "a non-negative integer")
        if self.normalization not in NORMALIZATIONS:
            bad("normalization", self.normalization, f"one of {list(NORMALIZATIONS)}")
        if self.dtype not in ("float32", "float64"):
            bad("dtype", self.dtype, "'float32' or 'float64'")
        if not isinstance(self.seed, int) or self.seed < 0:
            bad("seed", self.seed, "a non-negative integer")
        if self.augment is not None:
            augment = Augment.from_dict(self.augment)  # raises ConfigError naming the bad value
            if augment.hflip and self.dataset in NO_HFLIP:
                raise ConfigError(
                    f"horizontal flips (hflip) are not for {self.dataset}: a mirrored 2, 3, 4, "
                    f"5, 6, 7 or 9 is not that digit, so the flipped pictures would be wrong for "
                    f"their labels; use them on datasets whose classes a mirror keeps "
                    f"(fashion-mnist, cifar10)"
                )
            most = max_random_crop(self.dataset)
            if augment.random_crop > most:
                side = "x".join(str(n) for n in get_spec(self.dataset).image_shape[-2:])
                raise ConfigError(
                    f"random crops with padding of {augment.random_crop} pixels (random_crop, "
                    f"--random-crop) are too large for {self.dataset}'s {side} images: at most "
                    f"{most} (half the side), so that every crop keeps at least half of the "
                    f"image's rows and columns"
                )
            self.augment = augment.to_dict()  # stored with every field
        if (
            not isinstance(self.label_smoothing, (int, float))
            or isinstance(self.label_smoothing, bool)
            or not 0 <= self.label_smoothing < 1
        ):
            bad(
                "label_smoothing",
                self.label_smoothing,
                "a number in [0, 1) (1 would make every target uniform and the labels unused)",
            )
        self.label_smoothing = float(self.label_smoothing)
        if self.tta not in (None, "hflip"):
            bad("tta", self.tta, "None or 'hflip'")
        check_tta(self.tta, self.dataset)
        # the optimizer's own checks (momentum, weight decay, ...), before any data is read
        resolved = check_optimizer(
            self.optimizer,
            self.lr,
            dtype=np.dtype(self.dtype),
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
        if self.weight_decay is None:  # stored as the number the run uses
            self.weight_decay = float(resolved["weight_decay"])

    @classmethod
    def original_recipe(cls, **overrides) -> TrainConfig:
        """The original Model 1 recipe: first 20,000 images, int mean/std, 5 x 100, Adagrad 0.01."""
        return cls(**{**ORIGINAL_RECIPE, **overrides})

    # 2: weight_decay holds the decay the run uses. Version 1 stored 0.0 for "the optimizer's
    # default", so its AdamW runs, whatever they stored, trained with AdamW's default 0.01.
    VERSION = 2

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "version": self.VERSION}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if data.get("version", 1) < 2 and values.get("optimizer") == "adamw":
            values["weight_decay"] = None  # what version 1 trained with: the default
        return cls(**values)
