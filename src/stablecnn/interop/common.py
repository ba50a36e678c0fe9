"""What export and import share: the optional packages, the metadata keys, float32 attributes.

ONNX support is optional (the ``onnx`` extra): :func:`require_onnx` imports the ``onnx`` package
when a command needs it and otherwise raises a :class:`~stablecnn.errors.ConfigError` that says
how to install it, so ``stablecnn`` itself never needs it. onnxruntime is only needed to check an
export against it (:mod:`stablecnn.interop.verify`).
"""

from __future__ import annotations

import importlib
import importlib.metadata

import numpy as np

from stablecnn.errors import ConfigError

INSTALL_ONNX = 'pip install "stablecnn[onnx]"'
INSTALL_ONNXRUNTIME = "pip install onnxruntime"

# the graph's input and output names
INPUT_NAME = "pixels"
LOGITS_NAME = "logits"
PROBABILITIES_NAME = "probabilities"

# metadata_props keys: the first four are for people and other tools (Netron shows them); the
# "stablecnn." records let an import restore what inference does not need but training does
# (Dropout layers, batch norm's momentum, the spelling of a padding), and the exact normaliser
KEY_DATASET = "dataset"
KEY_CLASS_NAMES = "class_names"  # a JSON list of strings, one per output
KEY_INPUT = "input"
KEY_OUTPUT = "output"
KEY_ACCURACY = "test_accuracy"
KEY_VERSION = "stablecnn.version"
KEY_ARCHITECTURE = "stablecnn.architecture"  # JSON: Sequential.config() and the model's name
KEY_NORMALIZER = "stablecnn.normalizer"  # JSON: Normalizer.to_dict()

DEFAULT_OPSET = 17  # PyTorch's long-time default: onnxruntime >= 1.14, onnxruntime-web, TensorRT
MIN_EXPORT_OPSET = 13  # Softmax over one axis, Split/Squeeze with inputs: what the graphs use
MIN_IMPORT_OPSET = 9  # BatchNormalization without 'spatial'


def require_onnx():
    """The ``onnx`` module.

    Raises:
        ConfigError: it is not installed; the message gives the command that installs it.
    """
    try:
        return importlib.import_module("onnx")
    except ImportError:
        raise ConfigError(
            f"ONNX export and import need the onnx package, which is not installed: {INSTALL_ONNX}"
        ) from None


def require_onnxruntime():
    """The ``onnxruntime`` module.

    Raises:
        ConfigError: it is not installed; the message gives the command that installs it.
    """
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise ConfigError(
            f"checking an export needs onnxruntime, which is not installed: {INSTALL_ONNXRUNTIME}"
        ) from None


def max_opset() -> int:
    """The newest opset of the default domain that the installed ``onnx`` knows."""
    return int(require_onnx().defs.onnx_opset_version())


def float32_decimal(value: float) -> float:
    """The shortest decimal that rounds to ``float32(value)``, as a Python float.

    ONNX stores float attributes (epsilon, alpha, momentum) in float32: ``1e-5`` comes back as
    ``9.99999974738e-06``. The shortest decimal that rounds to the same float32 is the number
    that was written (``1e-05``) for any value written with at most 6 significant digits, so a
    layer's settings survive a trip through a file (:func:`numpy.format_float_positional`'s
    ``unique`` digits, Steele and White's shortest round trip).

    Example:
        >>> float32_decimal(np.float32(1e-5)), float32_decimal(np.float32(0.01))
        (1e-05, 0.01)
    """
    return float(np.format_float_scientific(np.float32(value), unique=True))


def installed_version() -> str:
    """The installed distribution's version (pyproject's, as ``stablecnn.__version__``);
    ``"unknown"`` run from a source tree that is not installed."""
    try:
        return importlib.metadata.version("stablecnn")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
