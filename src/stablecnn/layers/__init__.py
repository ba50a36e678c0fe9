"""Layers: one module per family, all following the contract in :mod:`stablecnn.layers.base`."""

from stablecnn.layers.activations import ReLU
from stablecnn.layers.base import Layer
from stablecnn.layers.conv import Conv2d
from stablecnn.layers.dense import Linear
from stablecnn.layers.pool import MaxPool2d
from stablecnn.layers.reshape import Flatten

__all__ = ["Layer", "Conv2d", "MaxPool2d", "Linear", "ReLU", "Flatten"]
