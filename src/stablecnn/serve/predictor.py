"""The model behind the page: loaded once from a checkpoint, described, and run one picture at a
time for any number of request threads.

A :class:`Predictor` answers as ``stablecnn predict`` does, with the same library functions:
the checkpoint's model and normalizer (:func:`stablecnn.training.checkpoint.load_model`), the
dataset's class names (:func:`stablecnn.data.specs.class_names`) and
:meth:`~stablecnn.nn.model.Sequential.predict_proba` widened to float64, so the page, the API and
``stablecnn predict --json`` give the same probabilities for the same picture.

Threads: a layer keeps work arrays from one call to the next (:class:`stablecnn.kernels.scratch.
Scratch`) and the model remembers the steps of its last forward pass, so two forward passes over
one model at once would share them. The forward passes therefore run one at a time under a lock,
and everything a request keeps is copied out before the lock is released; decoding, framing and
the JSON of each request run outside it, in parallel. One forward pass already uses every core
through stablecnn's own threads (:mod:`stablecnn.kernels.parallel`), so a second model copy per
thread would add memory, not speed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from stablecnn.data import Normalizer
from stablecnn.data.specs import class_names
from stablecnn.nn.layers import Conv2d

DEFAULT_INPUT_SHAPE = (1, 28, 28)  # a model built without an input shape is taken to be MNIST's
# the page's heading (its title and h1) for datasets whose pictures one draws; others get neutral
HEADINGS = {"mnist": "Draw a digit", "fashion-mnist": "Draw a piece of clothing"}
NEUTRAL_HEADING = "Draw or drop a picture"


class Predictor:
    """A trained model ready to answer requests.

    Args:
        model: a :class:`~stablecnn.nn.model.Sequential`.
        normalizer: the checkpoint's :class:`~stablecnn.data.Normalizer`.
        meta: the checkpoint's ``meta`` record (its ``train`` config names the model and the
            dataset; ``path`` the file).
        history: the checkpoint's training history (``epoch_test_acc`` gives the test accuracy).

    Attributes:
        channels: 1 for a grey model (pictures framed as MNIST's), 3 for a colour one (resized).
        size: ``(H, W)`` of the model's input.
        names: the class names, one per output (digits when the dataset has none).
        card: :meth:`describe`'s model card, computed once.
    """

    def __init__(self, model, normalizer: Normalizer, meta: dict, history: dict | None = None):
        self.model, self.normalizer = model, normalizer
        shape = tuple(model.input_shape or DEFAULT_INPUT_SHAPE)
        self.input_shape = shape
        self.channels = shape[0] if len(shape) == 3 else 1
        self.size = (int(shape[-2]), int(shape[-1]))
        self._shapes = model.shapes(shape)
        train = meta.get("train") or {}
        self.dataset = train.get("dataset")
        self.names = class_names(self.dataset, int(self._shapes[-1][-1]))
        # the first convolution of the top level (its feature maps are shown), if any
        self.first_conv = next(
            (i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2d)), None
        )
        self._lock = threading.Lock()
        self.card = self.describe(meta, history or {})

    @classmethod
    def load(cls, path) -> Predictor:
        """The model of a checkpoint ``.npz`` or of a run directory (its ``checkpoint.npz``).

        Raises:
            CheckpointError: the file cannot be loaded safely (see
                :func:`stablecnn.training.checkpoint.load`) or has no normalizer record.
        """
        from stablecnn.training.checkpoint import load_predictor

        model, normalizer, ckpt = load_predictor(path)
        return cls(model, normalizer, ckpt.meta, ckpt.history)

    # -- the model card -------------------------------------------------------------------------
    def describe(self, meta: dict, history: dict) -> dict:
        """The model card: what ``GET /api/model`` returns (JSON-ready).

        Keys: ``name`` (the model's name or model file's stem), ``dataset``, ``heading`` (the
        page's title: :data:`HEADINGS` of the dataset, else :data:`NEUTRAL_HEADING`), ``classes``,
        ``input_shape`` (C, H, W), ``channels``, ``dtype``, ``parameters``, ``layers`` (one row per
        layer: ``index``, ``layer``, ``output_shape``, ``parameters``), ``summary`` (the text of
        ``stablecnn summary``), ``test_accuracy`` and ``test_loss`` (the last evaluation in the
        history, a fraction; ``None`` when the checkpoint holds none), ``test_tta`` (the
        test-time augmentation those were measured with, e.g. ``"hflip"``, which serving does not
        apply; ``None`` for none), ``epochs`` (completed),
        ``normalization``, ``preprocessing`` (``"mnist-framing"`` for a grey model,
        ``"resize"`` for a colour one), ``checkpoint`` (the file's name and its folder's, not the
        full path) and ``feature_maps`` (the first convolution's ``layer`` index, ``description``
        and output ``shape`` (C, H, W), or ``None`` without a top-level convolution).
        """
        train = meta.get("train") or {}
        model_name = str(train.get("model") or "model")
        if model_name.endswith((".toml", ".json")):
            model_name = Path(model_name).stem
        path = Path(str(meta.get("path", "checkpoint.npz")))
        before = [self.input_shape, *self._shapes[:-1]]
        layers = [
            {
                "index": i,
                "layer": repr(layer),
                "output_shape": list(out),
                "parameters": int(layer.num_params),
            }
            for i, (layer, out) in enumerate(zip(self.model.layers, self._shapes))
        ]
        maps = None
        if self.first_conv is not None:
            conv = self.model.layers[self.first_conv]
            maps = {
                "layer": self.first_conv,
                "description": repr(conv),
                "shape": list(self._shapes[self.first_conv]),
                "input_shape": list(before[self.first_conv]),
            }
        return {
            "name": model_name,
            "dataset": self.dataset,
            "heading": HEADINGS.get(self.dataset, NEUTRAL_HEADING),
            "classes": list(self.names),
            "input_shape": list(self.input_shape),
            "channels": self.channels,
            "dtype": str(self.model.dtype),
            "parameters": int(self.model.num_params),
            "layers": layers,
            "summary": self.model.summary(self.input_shape),
            "test_accuracy": _last(history, "epoch_test_acc"),
            "test_loss": _last(history, "epoch_test_loss"),
            "test_tta": train.get("tta") or None,
            "epochs": (meta.get("progress") or {}).get("epoch"),
            "normalization": self.normalizer.kind,
            "preprocessing": "mnist-framing" if self.channels == 1 else "resize",
            "checkpoint": f"{path.parent.name}/{path.name}" if path.parent.name else path.name,
            "feature_maps": maps,
        }

    # -- predicting -----------------------------------------------------------------------------
    def predict(self, image: np.ndarray, feature_maps: bool = False) -> dict:
        """The answer for one uint8 image in the model's convention (JSON-ready).

        Args:
            image: uint8 ``(H, W)`` for a grey model (already framed, light on dark), or
                ``(3, H, W)`` for a colour one, of the model's input size.
            feature_maps: also return the first convolution's output for this image.

        Returns:
            ``{"class": k, "name": names[k], "probabilities": [p_0, ..., p_{K-1}], "input":
            image as nested lists}`` where ``p = softmax(logits)`` (float64) and ``k = argmax p``;
            with ``feature_maps``, also ``"feature_maps": {"layer", "shape": [C, H', W'],
            "values": C x H' x W' numbers}``: the convolution's output before its activation,
            rounded to 4 decimals (``None`` when the model has no top-level convolution).

        Raises:
            ShapeError: ``image`` does not fit the model.
        """
        batch = image[None]  # (1, H, W) or (1, 3, H, W)
        with self._lock:  # see the module doc: one forward pass over the model at a time
            probabilities = self.model.predict_proba(batch, 1, self.normalizer)[0]
            maps = self._first_conv_output(batch) if feature_maps else None
        probabilities = probabilities.astype(np.float64)
        label = int(probabilities.argmax())
        answer = {
            "class": label,
            "name": self.names[label],
            "probabilities": probabilities.tolist(),
            "input": image.tolist(),
        }
        if feature_maps:
            answer["feature_maps"] = None
            if maps is not None:
                answer["feature_maps"] = {
                    "layer": self.first_conv,
                    "shape": list(maps.shape),
                    "values": np.round(maps.astype(np.float64), 4).tolist(),
                }
        return answer

    def _first_conv_output(self, batch: np.ndarray) -> np.ndarray | None:
        """The first convolution's output ``(C, H', W')`` for one raw image, copied (the layers
        may reuse their arrays for the next call). Called under the lock."""
        if self.first_conv is None:
            return None
        x = self.normalizer(batch, dtype=self.model.dtype)
        for layer in self.model.layers[: self.first_conv + 1]:
            x = layer.forward(x, training=False)
        return np.array(x[0], copy=True)


def _last(history: dict, key: str) -> float | None:
    values = history.get(key)
    return float(values[-1]) if values is not None and len(values) else None
