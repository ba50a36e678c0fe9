"""Helpers of the ONNX tests (tests/interop/): models with every layer, the shipped models with
batch-norm statistics that matter, images, and onnxruntime's output for a file."""

from __future__ import annotations

import numpy as np

from stablecnn.data import Normalizer
from stablecnn.nn import zoo
from stablecnn.nn.layers import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Residual,
)
from stablecnn.nn.model import Sequential

GREY = Normalizer(33.0, 78.0)  # MNIST's integer mean and std, as Normalizer.original gives
COLOUR = Normalizer((125.0, 122.0, 113.0), (63.0, 62.0, 66.0))


def with_statistics(model: Sequential, seed: int = 0) -> Sequential:
    """``model`` with random batch-norm running statistics, scales and shifts, so that an export
    that mixed them up, or left them out, could not pass."""
    rng = np.random.default_rng(seed)
    for name, array in model.state_dict().items():
        if name.endswith("running_mean"):
            array[...] = rng.normal(0, 0.5, array.shape)
        elif name.endswith("running_var"):
            array[...] = rng.uniform(0.5, 2.0, array.shape)
        elif array.ndim == 1 and array.dtype.kind == "f":  # biases, gammas and betas
            array[...] += rng.normal(0, 0.1, array.shape)
    return model


def every_layer_model(dtype=np.float32) -> Sequential:
    """A small model with every layer stablecnn has and the awkward cases of each: stride and
    padding, no bias, an even kernel padded "same" (asymmetric pads), overlapping max pooling,
    padded average pooling, batch norm in 2-D and 1-D, both activations, dropout, residual
    blocks with a projection shortcut and with the identity and no activation, both ways of
    ending the feature maps (Flatten in the body, GlobalAvgPool2d in the head)."""
    rng = np.random.default_rng(3)
    kw = {"rng": rng, "dtype": dtype}
    layers = [
        Conv2d(3, 6, (3, 2), stride=(2, 1), padding=1, bias=False, **kw),  # (6, 8, 14)
        BatchNorm2d(6, eps=1e-3, momentum=0.2, dtype=dtype),
        LeakyReLU(0.1),
        Conv2d(6, 6, 2, padding="same", **kw),  # even kernel: pads (0, 1) on each axis
        ReLU(),
        MaxPool2d(2, stride=1),  # (6, 7, 13), overlapping windows
        Residual(
            [
                Conv2d(6, 8, 3, stride=2, padding=1, bias=False, **kw),
                BatchNorm2d(8, dtype=dtype),
                ReLU(),
                Conv2d(8, 8, 3, padding=1, bias=False, **kw),
                BatchNorm2d(8, dtype=dtype),
            ],
            shortcut=[Conv2d(6, 8, 1, stride=2, bias=False, **kw), BatchNorm2d(8, dtype=dtype)],
            activation="ReLU",
        ),  # (8, 4, 7)
        Residual([Conv2d(8, 8, 3, padding=1, **kw), Dropout(0.25, rng=rng)]),
        AvgPool2d(3, stride=1, padding=1),  # (8, 4, 7)
        Residual(
            [GlobalAvgPool2d(), Linear(8, 8, **kw), BatchNorm1d(8, dtype=dtype)],
            shortcut=[Flatten(), Linear(8 * 4 * 7, 8, **kw)],
            activation="ReLU",
        ),
        Dropout(0.5, rng=rng),
        Linear(8, 5, **kw),
    ]
    return with_statistics(Sequential(*layers, input_shape=(3, 15, 13)), seed=4)


def images_for(model: Sequential, n: int, seed: int = 0) -> np.ndarray:
    """``n`` random uint8 images of the model's input shape ((n, H, W) for a grey model)."""
    c, h, w = model.input_shape
    shape = (n, h, w) if c == 1 else (n, c, h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def shipped(name: str, seed: int = 1) -> tuple[Sequential, Normalizer]:
    """A shipped model with random weights and batch-norm statistics, and its normaliser."""
    model = with_statistics(zoo.build(name, seed=seed), seed=seed)
    return model, COLOUR if model.input_shape[0] == 3 else GREY


def run_onnxruntime(path, pixels: np.ndarray) -> np.ndarray:
    """The file's output for float32 ``pixels`` (N, C, H, W), from onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: pixels.astype(np.float32)})[0]


def pixels_of(images: np.ndarray) -> np.ndarray:
    """uint8 images as the float32 (N, C, H, W) pixels an exported graph takes."""
    return (images[:, None] if images.ndim == 3 else images).astype(np.float32)
