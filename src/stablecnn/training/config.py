"""What defines a training run: :class:`TrainConfig`, kept in every checkpoint of the run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from stablecnn.data.augment import Augment
from stablecnn.errors import ConfigError
from stablecnn.optim import OPTIMIZERS, check_optimizer

NORMALIZATIONS = ("original", "unit")
SCHEDULES = ("constant", "step", "cosine")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in its checkpoints).

    ``train_size`` takes the first N training images (the original recipe used 20,000);
    ``normalization="original"`` subtracts int(mean) and divides by int(std) of those images.
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
    augment: dict | None = None  # Augment.to_dict(), e.g. {"max_shift": 2, "max_degrees": 10.0}

    def __post_init__(self):
        def bad(what, value, rule):
            raise ConfigError(f"{what} must be {rule}, got {value!r}")

        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(name, value, "a positive integer")
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
            Augment.from_dict(self.augment)  # raises ValueError naming the bad value
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
        base = dict(
            model="md1",
            dataset="mnist",
            epochs=5,
            batch_size=100,
            lr=0.01,
            optimizer="adagrad",
            train_size=20_000,
            normalization="original",
        )
        return cls(**{**base, **overrides})

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
