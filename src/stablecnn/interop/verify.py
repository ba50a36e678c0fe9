"""An exported model run by onnxruntime against the same model run by stablecnn.

The measure (:class:`Agreement`): for each image ``n``, the largest difference between the two
outputs relative to the largest output of stablecnn for that image,

.. math:: r_n = \\max_k |o_{nk} - s_{nk}| \\, / \\, \\max_k |s_{nk}|

(the infinity norm of the difference over the infinity norm of the reference, as
``numpy.testing`` compares arrays by a norm), its largest value over the images, the largest
absolute difference, and how many images get the same class (the argmax) from both. A logit
near zero would make an elementwise ratio meaningless; the image's scale does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stablecnn.interop import common
from stablecnn.nn.losses import softmax as softmax_fn


@dataclass
class Agreement:
    """How onnxruntime's outputs agree with stablecnn's on a set of images.

    Attributes:
        images: how many were compared.
        max_relative: the largest ``max_k |o - s| / max_k |s|`` over the images.
        max_absolute: the largest ``|o - s|``.
        same_class: images whose predicted class (argmax) is the same from both.
        different: indices of the images whose classes differ (at most 20).
        worst: the index of the image of ``max_relative``.
    """

    images: int
    max_relative: float
    max_absolute: float
    same_class: int
    different: list[int] = field(default_factory=list)
    worst: int = 0

    def __str__(self) -> str:
        return (
            f"{self.images:,} images: largest difference {self.max_relative:.3g} relative "
            f"(image {self.worst}), {self.max_absolute:.3g} absolute; the same class on "
            f"{self.same_class:,} of {self.images:,}"
        )


def compare_onnxruntime(
    model,
    normalizer,
    onnx_path,
    images: np.ndarray,
    softmax: bool = False,
    batch_size: int = 500,
    threads: int = 1,
) -> Agreement:
    """Run ``images`` through ``model`` (with ``normalizer``) and through the ONNX file at
    ``onnx_path`` in onnxruntime's CPU provider, and compare the outputs.

    Args:
        model: the stablecnn :class:`~stablecnn.nn.model.Sequential` that was exported.
        normalizer: its :class:`~stablecnn.data.Normalizer` (the exported graph holds it; the
            graph gets the raw pixels as float32).
        onnx_path: the exported file.
        images: uint8 (N, H, W) or (N, C, H, W) pixels.
        softmax: the file outputs probabilities (exported with ``softmax=True``).
        batch_size: images per run of each.
        threads: onnxruntime's intra-op threads.

    Returns:
        :class:`Agreement`.

    Raises:
        ConfigError: onnxruntime is not installed (the message says how to install it).
    """
    ort = common.require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(Path(onnx_path)), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    images = np.asarray(images)
    worst = (0.0, 0)
    max_abs, same, different = 0.0, 0, []
    for start, ours in model.forward_batches(images, batch_size, normalizer):
        if softmax:
            ours = softmax_fn(ours)
        batch = images[start : start + len(ours)]
        pixels = (batch[:, None] if batch.ndim == 3 else batch).astype(np.float32)
        theirs = session.run(None, {name: pixels})[0]
        diff = np.abs(theirs.astype(np.float64) - ours.astype(np.float64))  # (B, K)
        scale = np.abs(ours.astype(np.float64)).max(axis=1)
        relative = diff.max(axis=1) / np.where(scale > 0, scale, 1.0)
        k = int(relative.argmax())
        if relative[k] > worst[0]:
            worst = (float(relative[k]), start + k)
        max_abs = max(max_abs, float(diff.max()))
        agree = theirs.argmax(axis=1) == ours.argmax(axis=1)
        same += int(agree.sum())
        different += [start + int(j) for j in np.flatnonzero(~agree)][: 20 - len(different)]
    return Agreement(len(images), worst[0], max_abs, same, different, worst[1])
