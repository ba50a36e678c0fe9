"""The fusion pass: a model's layers rewritten into the steps its forward pass runs.

Two pairs of layers run as one step, each giving the same output and gradients bit for bit and
saving a pass over the activations (and the ReLU's array):

- A ReLU directly followed by a MaxPool2d computes ``maxpool(relu(x))``. Both functions are
  monotone, so this is ``relu(maxpool(x))``: the max-pool's passes apply the ReLU to their own
  output, which is smaller than the input, and mask the gradient on the way back
  (:class:`~stablecnn.nn.layers.pool.ReLUMaxPool2d`).
- A BatchNorm2d directly followed by a ReLU: the batch norm's last pass writes ``max(y, 0)``
  where it writes ``y`` (one pass fewer forward), and its backward pass starts by masking the
  gradient (:class:`~stablecnn.nn.layers.norm.BNReLU2d`).

Where the two overlap (BatchNorm2d, ReLU, MaxPool2d) the ReLU joins the max-pool, whose output is
the smaller. :func:`fuse` replaces each pair in a list of layers by one step that runs those two
layer objects; every other layer is kept as it is (the same object). Its result is an
*execution plan*, not an architecture: :class:`~stablecnn.nn.model.Sequential` keeps the list it
was built from for parameter names (``"3.weight"``), config, ``repr``, summary and checkpoints,
and runs ``fuse(layers)`` (see :attr:`~stablecnn.nn.model.Sequential.plan`), so a fused model saves,
loads and prints exactly as the unfused one. Pairs on the reference kernels
(``kernels="reference"``) are never fused: that path runs every layer's own definition.

A block that runs its own layers (a residual block's body) gets the same steps from
:func:`fuse`, or from a :class:`PlanCache` that makes them again only when the layers change.

In evaluation, :func:`run` also joins a Conv2d and the batch norm step after it (BatchNorm2d or
BNReLU2d): the convolution applies the batch norm's evaluation pass to each block of its output
channels as soon as the block is summed, while it is in cache
(:meth:`~stablecnn.nn.layers.norm.BatchNorm2d.eval_affine`), instead of a pass of its own over
the whole output; the same operations on the same numbers, so the same bits. Only the fast
kernels of a convolution on the rows kernel gain (see :mod:`stablecnn.kernels.conv`), so only
they are joined. md3's evaluation at batch 500 spent 23 of its 248 ms in batch norm passes;
joined, batch 500 ran at 2,116-2,227 img/s against 2,068-2,155 (md3) and 2,780-2,837 against
2,704-2,764 (md2), 4 alternating fresh processes each.

Example:
    >>> fuse([Conv2d(1, 4, 3), ReLU(), MaxPool2d(2), Flatten()])  # doctest: +SKIP
    [Conv2d(1, 4, kernel_size=(3, 3)), ReLUMaxPool2d(kernel_size=(2, 2), stride=(2, 2)), Flatten()]
    >>> fuse([Conv2d(1, 4, 3, bias=False), BatchNorm2d(4), ReLU()])  # doctest: +SKIP
    [Conv2d(1, 4, kernel_size=(3, 3), bias=False), BNReLU2d(4, eps=1e-05, momentum=0.1)]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stablecnn.kernels.conv import use_rows_kernel
from stablecnn.nn.layers.activations import ReLU
from stablecnn.nn.layers.base import Layer
from stablecnn.nn.layers.conv import Conv2d
from stablecnn.nn.layers.norm import BatchNorm2d, BNReLU2d
from stablecnn.nn.layers.pool import MaxPool2d, ReLUMaxPool2d


def _joinable(layer: Layer, kind: type) -> bool:
    """``layer`` is exactly a ``kind`` (a subclass may compute something else), on the fast
    kernels, and runs its class's own ``forward`` and ``backward``: one replaced on the instance
    (a hook, a profiler's or a test's wrapper) must run, so its layer runs as itself."""
    return (
        type(layer) is kind
        and layer.kernels == "fast"
        and "forward" not in vars(layer)
        and "backward" not in vars(layer)
    )


def relu_pool_pairs(layers: Sequence[Layer]) -> frozenset[int]:
    """The indices ``i`` at which :func:`fuse` joins ``layers[i]`` and ``layers[i + 1]``: a
    :class:`~stablecnn.nn.layers.activations.ReLU` directly followed by a
    :class:`~stablecnn.nn.layers.pool.MaxPool2d`, both on the fast kernels. Only these exact
    classes are joined, and only layers whose ``forward`` and ``backward`` are their class's."""
    return frozenset(
        i
        for i in range(len(layers) - 1)
        if _joinable(layers[i], ReLU) and _joinable(layers[i + 1], MaxPool2d)
    )


def bn_relu_pairs(layers: Sequence[Layer]) -> frozenset[int]:
    """The indices ``i`` at which :func:`fuse` joins ``layers[i]`` and ``layers[i + 1]`` into a
    :class:`~stablecnn.nn.layers.norm.BNReLU2d`: a
    :class:`~stablecnn.nn.layers.norm.BatchNorm2d` directly followed by a
    :class:`~stablecnn.nn.layers.activations.ReLU`, both on the fast kernels, where that ReLU
    does not join a MaxPool2d (:func:`relu_pool_pairs`). Only these exact classes are joined,
    and only layers whose ``forward`` and ``backward`` are their class's."""
    relu_pool = relu_pool_pairs(layers)
    return frozenset(
        i
        for i in range(len(layers) - 1)
        if _joinable(layers[i], BatchNorm2d)
        and _joinable(layers[i + 1], ReLU)
        and i + 1 not in relu_pool
    )


def fuse(layers: Sequence[Layer]) -> list[Layer]:
    """``layers`` with each pair of :func:`relu_pool_pairs` replaced by one
    :class:`~stablecnn.nn.layers.pool.ReLUMaxPool2d` and each pair of :func:`bn_relu_pairs` by
    one :class:`~stablecnn.nn.layers.norm.BNReLU2d`, each running those two layers.

    Running the result one layer after the other computes what running ``layers`` does, the
    same numbers bit for bit, forward and backward. Every other layer is the same object as in
    ``layers``; the input list is not changed. ``fuse`` is idempotent (``fuse(fuse(layers))``
    holds the same objects as ``fuse(layers)``), and a list without such a pair comes back with
    the same objects in the same order.

    Args:
        layers: the layers of a model (or of a block's body), first to last.

    Returns:
        A new list, shorter by one for each pair fused.
    """
    relu_pool, bn_relu = relu_pool_pairs(layers), bn_relu_pairs(layers)
    plan: list[Layer] = []
    i = 0
    while i < len(layers):
        if i in relu_pool:
            plan.append(ReLUMaxPool2d(layers[i], layers[i + 1]))
            i += 2
        elif i in bn_relu:
            plan.append(BNReLU2d(layers[i], layers[i + 1]))
            i += 2
        else:
            plan.append(layers[i])
            i += 1
    return plan


class PlanCache:
    """The fused plan of a list of layers, kept while nothing it was made from changes.

    ``cache(layers)`` returns ``tuple(fuse(layers))`` (or ``tuple(layers)`` with ``enabled``
    false), made again only when the list holds other objects, a layer's kernels changed, a
    layer's ``forward`` or ``backward`` was replaced on the instance, or ``enabled`` changed:
    what :attr:`stablecnn.nn.model.Sequential.plan` does for a model, for a block that runs its
    own layers. The steps hold no state between batches that the layers
    do not hold, so making them again is always safe; keeping them saves making them per batch.

    Example:
        >>> cache = PlanCache()
        >>> body = [Conv2d(3, 3, 3, padding=1, bias=False), BatchNorm2d(3), ReLU()]
        >>> cache(body) is cache(body)  # doctest: +SKIP
        True
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._plan: tuple[Layer, ...] = ()

    def __call__(self, layers: Sequence[Layer], enabled: bool = True) -> tuple[Layer, ...]:
        key = (
            enabled,
            tuple(layers),
            tuple(
                (layer.kernels, "forward" in vars(layer), "backward" in vars(layer))
                for layer in layers
            ),
        )
        if key != self._key:  # layers compare by identity
            self._plan = tuple(fuse(layers) if enabled else layers)
            self._key = key
        return self._plan


def _eval_norm(step: Layer) -> tuple[BatchNorm2d, bool] | None:
    """``(batch norm, relu)`` when ``step`` is a plain BatchNorm2d or a BNReLU2d step of one, on
    the fast kernels and running its class's own ``forward``; else None."""
    if _joinable(step, BatchNorm2d):
        return step, False
    if type(step) is BNReLU2d and "forward" not in vars(step) and _joinable(step.bn, BatchNorm2d):
        return step.bn, True
    return None


def run(steps: Sequence[Layer], x: np.ndarray, training: bool, join: bool = True) -> np.ndarray:
    """``x`` through ``steps`` (an execution plan), first to last: ``step.forward(x, training)``
    each. In evaluation with ``join``, a Conv2d followed by a batch norm step runs as one call,
    the convolution applying the batch norm's pass to its output blocks (see the module doc):
    the same bits as running the two in turn."""
    if training or not join:
        for step in steps:
            x = step.forward(x, training)
        return x
    i = 0
    while i < len(steps):
        step = steps[i]
        norm = _eval_norm(steps[i + 1]) if i + 1 < len(steps) else None
        # joined where the convolution runs the rows kernel (im2col's output is not summed a
        # block of channels at a time) and the channels agree (else the batch norm raises)
        fits = (
            norm is not None
            and _joinable(step, Conv2d)
            and use_rows_kernel(step.in_channels, step.kernel_size, step.stride)
            and step.out_channels == norm[0].num_features
        )
        if fits:
            bn, relu = norm
            x = step.forward(x, False, epilogue=bn.eval_affine(x.dtype, relu))
            i += 2
        else:
            x = step.forward(x, False)
            i += 1
    return x
