"""Optimization: optimizers (:mod:`~stablecnn.optim.optimizers`), learning-rate schedules
(:mod:`~stablecnn.optim.schedules`) and gradient clipping (:mod:`~stablecnn.optim.clip`)."""

from stablecnn.optim.clip import clip_grad_norm
from stablecnn.optim.optimizers import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Optimizer,
    RMSprop,
    build_optimizer,
    check_optimizer,
)
from stablecnn.optim.schedules import (
    ConstantLR,
    CosineLR,
    Schedule,
    StepLR,
    WarmupLR,
    build_schedule,
)

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "RMSprop",
    "OPTIMIZERS",
    "build_optimizer",
    "check_optimizer",
    "clip_grad_norm",
    "Schedule",
    "ConstantLR",
    "StepLR",
    "CosineLR",
    "WarmupLR",
    "build_schedule",
]
