"""What the sizes alone predict about a training run, checked before its first step.

:class:`~stablecnn.training.trainer.Trainer` calls :func:`check_run` before it writes anything, so a
run that
cannot finish is refused at once (and leaves no run directory) instead of failing mid-epoch:

- each split holds uint8 images ``(N, H, W)`` (grey) or ``(N, C, H, W)`` (colour) and integer
  labels ``(N,)`` in ``[0, K)``, where ``K`` is the number of class scores the model ends in
  (:func:`check_split`);
- the images have the channels the model takes (its ``input_shape``): a grey model is refused
  colour images and the other way round, naming both shapes;
- both splits' images fit the model: every layer accepts the shape the previous one gives;
- every batch an epoch holds is large enough for every layer that takes batch statistics while
  training (:func:`check_batches`).

**Batch statistics.** BatchNorm1d and BatchNorm2d normalise each channel by the variance of its
values in the batch, which needs at least two values: a batch of ``n`` images whose input to the
layer is ``(C, *S)`` per image gives ``n * prod(S)`` values per channel (``prod(S) = H * W`` for
BatchNorm2d, 1 for BatchNorm1d on ``(C,)``), so ``n * prod(S) >= 2`` is required (PyTorch raises
"Expected more than 1 value per channel when training" for the same case).

An epoch of ``N`` images in batches of ``B`` holds ``N // B`` full batches and, when
``r = N mod B > 0``, a last batch of ``r``. **A batch that is too small is refused, not dropped**:
the error names the step, its size and the layer, and suggests the nearest ``--train-size`` and
``--batch-size`` values that work. Dropping it (PyTorch's ``drop_last``) would silently train on
other images than the ones asked for and change the number of steps a schedule counts; refusing
costs nothing, since nothing has run yet.
"""

from __future__ import annotations

import math

import numpy as np

from stablecnn.errors import DataError, ShapeError
from stablecnn.nn.layers import BatchNorm1d, BatchNorm2d

BATCH_STATISTICS = (BatchNorm1d, BatchNorm2d)  # layers that need >= 2 values per channel to train


def example_shape(images) -> tuple[int, int, int]:
    """(C, H, W) of one image of a dataset held as (N, H, W) (C = 1) or (N, C, H, W)."""
    shape = tuple(np.shape(images)[1:])
    return (1, *shape) if len(shape) == 2 else shape


def check_split(what: str, images, labels, num_classes: int | None = None) -> None:
    """uint8 images (N, H, W) or (N, C, H, W) and integer labels (N,) in [0, num_classes), or a
    DataError.

    ``num_classes=None`` checks the structure only (dtypes, shapes, lengths), not the labels' range.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(
            f"{what} images must be uint8 (N, H, W) or (N, C, H, W) as the datasets hold them "
            f"(no NaN or Inf possible), got {images.dtype} {images.shape}"
        )
    if (
        labels.ndim != 1
        or not np.issubdtype(labels.dtype, np.integer)
        or len(labels) != len(images)
    ):
        raise DataError(
            f"{what} labels must be {len(images)} integers, got {labels.dtype} {labels.shape}"
        )
    if len(images) == 0:
        raise DataError(f"the {what} set is empty")
    if num_classes is None:
        return
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(
            f"{what} label {labels[bad[0]]} at index {bad[0]} is outside "
            f"[0, {num_classes}): the model gives {num_classes} class scores"
        )


def num_classes(model, image_shape) -> int:
    """K, the class scores the model gives for one image of ``image_shape`` ((C, H, W)).

    Raises :class:`ShapeError` if the image does not fit the model or the output is not (K,).
    """
    out = model.shapes(tuple(image_shape))[-1]
    if len(out) != 1:
        raise ShapeError(
            f"the model ends in shape {out} per image; training needs (K,) class "
            f"scores (end with a Linear layer)"
        )
    return int(out[0])


def min_batch(model, image_shape) -> tuple[int, int | None]:
    """``(m, i)``: the smallest batch every layer can train on, and the layer that sets it.

    ``m = max over batch-statistics layers of ceil(2 / values per image per channel)``; ``(1,
    None)`` when no layer needs more than one image.
    """
    shapes = [tuple(image_shape), *model.shapes(tuple(image_shape))]
    need, which = 1, None
    for i, layer in enumerate(model.layers):
        if isinstance(layer, BATCH_STATISTICS):
            per_image = math.prod(shapes[i][1:])  # values per channel in one image's input
            if math.ceil(2 / per_image) > need:
                need, which = math.ceil(2 / per_image), i
    return need, which


def batch_sizes(num_train: int, batch_size: int) -> dict[int, int]:
    """``{step (1-based): images}`` for each distinct batch size an epoch holds (step 1, last)."""
    steps = math.ceil(num_train / batch_size)
    sizes = {1: min(batch_size, num_train)}
    if steps > 1:
        sizes[steps] = num_train - (steps - 1) * batch_size
    return sizes


def _works(num_train: int, batch_size: int, need: int) -> bool:
    return all(size >= need for size in batch_sizes(num_train, batch_size).values())


def check_batches(model, image_shape, num_train: int, batch_size: int) -> None:
    """Refuse (ShapeError) a run whose epoch holds a batch too small for a layer; see module doc."""
    need, index = min_batch(model, image_shape)
    steps = math.ceil(num_train / batch_size)
    for step, size in batch_sizes(num_train, batch_size).items():
        if size >= need:
            continue
        layer = model.layers[index]
        layer_input = ([tuple(image_shape)] + model.shapes(tuple(image_shape)))[index]
        which = (
            f"the last batch of every epoch (step {step} of {steps}: {num_train} = "
            f"{steps - 1} x {batch_size} + {size})"
            if step == steps and step > 1
            else f"every batch (step {step} of {steps})"
        )
        fixes = []
        if num_train > size and step == steps and step > 1:
            fixes.append(f"--train-size {num_train - size}")
        below = next(
            (b for b in range(batch_size - 1, need - 1, -1) if _works(num_train, b, need)), None
        )
        above = next(
            (b for b in range(batch_size + 1, num_train + 1) if _works(num_train, b, need)), None
        )
        sizes = [str(b) for b in (below, above) if b is not None]
        if sizes:
            fixes.append(f"--batch-size {' or '.join(sizes)}")
        advice = (
            f"; use {' or '.join(fixes)}" if fixes else f"; use at least {need} training images"
        )
        raise ShapeError(
            f"{which} holds {size} image{'s' if size != 1 else ''}, too few for layer {index} "
            f"({layer!r}): training takes each channel's batch variance, which needs at least 2 "
            f"values, and its input {layer_input} gives {math.prod(layer_input[1:])} per image"
            f"{advice} (refused before step 1)"
        )


def check_run(model, train, test, batch_size: int) -> None:
    """Every check of the module doc, in order; raises DataError or ShapeError naming the fault."""
    for what, (images, labels) in (("training", train), ("test", test)):
        check_split(what, images, labels)
        shape = example_shape(images)
        declared = getattr(model, "input_shape", None)
        if declared is not None and len(declared) == 3 and tuple(declared)[0] != shape[0]:
            raise ShapeError(
                f"the model takes {tuple(declared)} inputs (C, H, W) and the {what} images are "
                f"{shape}: {shape[0]} channel{'s' if shape[0] != 1 else ''} where the model "
                f"takes {tuple(declared)[0]} (a model for this dataset has input_shape {shape})"
            )
        try:  # both splits must fit the model before a single step is spent
            classes = num_classes(model, shape)
        except ShapeError as exc:
            into = f"; the model takes {tuple(declared)} (C, H, W)" if declared is not None else ""
            raise ShapeError(f"{what} images: {exc}{into}") from None
        check_split(what, images, labels, classes)
    check_batches(model, example_shape(train[0]), len(train[0]), batch_size)
