"""ONNX export and import: models leave stablecnn for any runtime, and come in from other tools.

- :func:`export_onnx` (``stablecnn export-onnx``): a model or checkpoint to an ONNX file that
  takes pixels in [0, 255] and gives logits or probabilities (:mod:`~.onnx_export`).
- :func:`import_onnx` (``stablecnn import-onnx``): the supported subset of ONNX back into a
  stablecnn checkpoint, anything else refused by node, op and attribute (:mod:`~.onnx_import`,
  reading files safely with :mod:`~.onnx_read`); PyTorch models come in this way, through
  ``torch.onnx.export``.
- :func:`compare_onnxruntime`: an exported file run by onnxruntime against stablecnn itself
  (:mod:`~.verify`).

The ``onnx`` package is optional (``pip install "stablecnn[onnx]"``): it is imported only when
one of these runs, and its absence is a one-line error saying how to install it.
"""

from stablecnn.interop.onnx_export import Exported, build_onnx, export_onnx
from stablecnn.interop.onnx_import import Imported, import_onnx
from stablecnn.interop.verify import Agreement, compare_onnxruntime

__all__ = [
    "Agreement",
    "Exported",
    "Imported",
    "build_onnx",
    "compare_onnxruntime",
    "export_onnx",
    "import_onnx",
]
