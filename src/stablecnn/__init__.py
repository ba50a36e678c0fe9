"""stablecnn: a numerically stable deep CNN library written from scratch in NumPy."""

from stablecnn import init, zoo
from stablecnn.errors import CheckpointError, DataError, ShapeError, StableCNNError, TrainingError
from stablecnn.layers import Conv2d, Flatten, Layer, Linear, MaxPool2d, ReLU
from stablecnn.losses import SoftmaxCrossEntropy, log_softmax, softmax
from stablecnn.model import Sequential
from stablecnn.optim import Adagrad, Optimizer

__version__ = "0.1.0"

__all__ = [
    "Sequential", "Layer", "Conv2d", "MaxPool2d", "Linear", "ReLU", "Flatten",
    "SoftmaxCrossEntropy", "softmax", "log_softmax", "Adagrad", "Optimizer", "init", "zoo",
    "StableCNNError", "DataError", "ShapeError", "CheckpointError", "TrainingError",
]
