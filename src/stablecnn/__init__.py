"""stablecnn: a numerically stable deep CNN library written from scratch in NumPy."""

from stablecnn import init, parallel, runtime, schedules, zoo
from stablecnn.errors import CheckpointError, DataError, ShapeError, StableCNNError, TrainingError
from stablecnn.layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten,
                              GlobalAvgPool2d, Layer, LeakyReLU, Linear, MaxPool2d, ReLU)
from stablecnn.losses import SoftmaxCrossEntropy, log_softmax, softmax
from stablecnn.model import Sequential
from stablecnn.optim import (OPTIMIZERS, SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop,
                             build_optimizer, clip_grad_norm)
from stablecnn.schedules import ConstantLR, CosineLR, Schedule, StepLR, WarmupLR, build_schedule

__version__ = "0.1.0"

__all__ = [
    "Sequential", "Layer", "Conv2d", "MaxPool2d", "Linear", "ReLU", "Flatten",
    "AvgPool2d", "GlobalAvgPool2d", "BatchNorm1d", "BatchNorm2d", "Dropout", "LeakyReLU",
    "SoftmaxCrossEntropy", "softmax", "log_softmax", "Adagrad", "Optimizer", "init", "zoo",
    "StableCNNError", "DataError", "ShapeError", "CheckpointError", "TrainingError",
    "SGD", "Adam", "AdamW", "RMSprop", "OPTIMIZERS", "build_optimizer", "clip_grad_norm",
    "schedules", "Schedule", "ConstantLR", "StepLR", "CosineLR", "WarmupLR", "build_schedule",
    "parallel", "runtime",
]
