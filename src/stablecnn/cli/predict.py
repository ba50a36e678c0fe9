"""``stablecnn predict CKPT FILE...``: classes and probabilities of images and ``.npy`` arrays.

For a grey model (1 input channel) every file becomes uint8 images in MNIST's convention (light
digit on a dark background, 28 x 28 or whatever the model takes; see :mod:`stablecnn.data.pictures`
for the rules: Pillow's formats, the MNIST framing, ``.npy`` arrays, decompression bombs). For a
colour model (3 input channels, e.g. one trained on CIFAR-10) a picture stays in colour and is
resized as a whole to the model's input size (32 x 32), never framed. Either way the images are
normalised with the checkpoint's own normalizer and go through the model. A file that cannot be read
gets a :class:`~stablecnn.errors.DataError` naming it; the other files are still predicted.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stablecnn.cli.argtypes import positive_int
from stablecnn.data.framing import FRAMINGS
from stablecnn.data.pictures import IMAGE_SIZE, load_images
from stablecnn.data.specs import class_names
from stablecnn.errors import ConfigError, DataError


# -- predicting -----------------------------------------------------------------------------------
@dataclass
class Prediction:
    """The model's answer for one image: the predicted class and every class's probability."""

    label: int
    probabilities: np.ndarray  # (K,) softmax, float64

    def top(self, k: int) -> list[tuple[int, float]]:
        """The ``k`` most probable classes as ``(class, probability)``, most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(c), float(self.probabilities[c])) for c in order]


def predict_images(model, normalizer, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Probabilities ``(N, K)`` (float64) for uint8 images ``(N, H, W)`` or ``(N, C, H, W)``, one
    batch at a time:
    :meth:`~stablecnn.nn.model.Sequential.predict_proba` with ``normalizer``, widened."""
    return model.predict_proba(images, batch_size, normalizer).astype(np.float64)


def predict_files(
    model, normalizer, paths, size: tuple[int, int] | None = None, framing: str = "mnist"
):
    """Predict every file in ``paths``; a bad file does not stop the others.

    Args:
        model: a :class:`~stablecnn.nn.model.Sequential`.
        normalizer: the checkpoint's :class:`~stablecnn.data.Normalizer`.
        paths: image files or ``.npy`` arrays.
        size: ``(H, W)`` of the images (default: the model's input size, else 28 x 28).
        framing: how grey images are framed, ``"mnist"`` or ``"none"`` (see
            :func:`load_images`); ``.npy`` arrays and a colour model's pictures (its
            ``input_shape`` has 3 channels: kept in colour, resized) are never reframed.

    Raises:
        ValueError: ``framing`` is not one of :data:`FRAMINGS` (before any file is read).

    Returns:
        ``[(path, result)]`` in the order given: ``result`` is a list of :class:`Prediction`
        (one per image in the file) or the :class:`~stablecnn.errors.DataError` that file raised.
    """
    if framing not in FRAMINGS:
        raise ConfigError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    shape = getattr(model, "input_shape", None)
    if size is None:
        size = tuple(shape[-2:]) if shape else IMAGE_SIZE
    channels = 3 if shape is not None and len(shape) == 3 and shape[0] == 3 else 1
    loaded = []
    for path in paths:
        try:
            loaded.append((path, load_images(path, size, framing, channels)))
        except DataError as exc:
            loaded.append((path, exc))
    good = [images for _, images in loaded if isinstance(images, np.ndarray)]
    if good:
        probs = predict_images(model, normalizer, np.concatenate(good))
    results, start = [], 0
    for path, images in loaded:
        if isinstance(images, np.ndarray):
            chunk = probs[start : start + len(images)]
            start += len(images)
            images = [Prediction(int(p.argmax()), p) for p in chunk]
        results.append((path, images))
    return results


# -- the command ----------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``predict CKPT FILE... [--top K] [--json]`` on the CLI's ``subparsers``."""
    parser = subparsers.add_parser(
        "predict",
        help="classify image files or .npy arrays with a checkpoint",
        description="Print the predicted class and the most probable classes of each file. "
        "Images (PNG, JPEG, ...; any size, grey or colour, dark ink on light paper or light on "
        "dark) are framed as MNIST's digits were: inverted when the paper is light, the contrast "
        "stretched so the paper is black, cropped to the ink, resized so the ink's longer side is "
        "20 of 28 pixels and centred by its centre of mass (see --framing). A blank or uniform "
        "picture is refused (no ink found). .npy arrays (28, 28), (N, 28, 28) or (N, 1, 28, 28) "
        "hold uint8 or [0, 1] / [0, 255] float pixels, light on dark, already framed: they are "
        "used as they are. A colour model's pictures (3 input channels, e.g. CIFAR-10's) stay in "
        "colour and are resized as a whole to its input size (32 x 32), never framed; its .npy "
        "arrays are (3, H, W) or (N, 3, H, W). "
        "Exit status 1 when any file failed (the others are still predicted).",
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint .npz or a run directory")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="images or .npy arrays")
    parser.add_argument(
        "--top",
        type=positive_int,
        default=3,
        metavar="K",
        help="how many of the most probable classes to show (default 3)",
    )
    parser.add_argument(
        "--framing",
        choices=FRAMINGS,
        default="mnist",
        help="how images are framed for a grey model: 'mnist' (default) crops the ink, fits it "
        "in a 20 x 20 box and centres it by its centre of mass, as MNIST was "
        "made; 'none' only inverts a light background and fits the whole "
        "picture to the model's input size (28 x 28), for pictures already "
        "framed like MNIST. .npy arrays and a colour model's pictures are never reframed",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per image and line on stdout (a failed file gives "
        '{"file": ..., "error": ...})',
    )
    parser.set_defaults(func=cmd_predict)
    return parser


def cmd_predict(args) -> int:
    from stablecnn.training.checkpoint import load_predictor

    model, normalizer, ckpt = load_predictor(args.checkpoint)
    results = predict_files(model, normalizer, args.files, framing=args.framing)
    dataset = (ckpt.meta.get("train") or {}).get("dataset")
    failed = 0
    for path, result in results:
        if isinstance(result, Exception):
            failed += 1
            print(f"stablecnn: error: {result}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": str(path), "error": str(result)}), flush=True)
            continue
        names = class_names(dataset, len(result[0].probabilities))
        for index, pred in enumerate(result):
            print(_format(path, index, len(result), pred, names, args.top, args.json), flush=True)
    if failed:
        print(
            f"stablecnn: {failed} of {len(results)} files could not be predicted", file=sys.stderr
        )
    return 1 if failed else 0


def _format(path, index, count, pred, names, k, as_json) -> str:
    top = pred.top(k)
    if as_json:
        return json.dumps(
            {
                "file": str(path),
                "index": index,
                "class": pred.label,
                "name": names[pred.label],
                "probability": round(float(pred.probabilities[pred.label]), 6),
                "top": [{"class": c, "name": names[c], "probability": round(p, 6)} for c, p in top],
            }
        )
    where = f"{path}[{index}]" if count > 1 else str(path)
    label = names[pred.label]
    name = label if label == str(pred.label) else f"{pred.label} ({label})"
    ranked = ", ".join(f"{names[c]} {_percent(p)}" for c, p in top)
    return f"{where}: {name}, {_percent(pred.probabilities[pred.label])}   top {len(top)}: {ranked}"


def _percent(p: float) -> str:
    return "<0.1%" if p < 0.0005 else ">99.9%" if p > 0.9995 and p < 1 else f"{100 * p:.1f}%"
