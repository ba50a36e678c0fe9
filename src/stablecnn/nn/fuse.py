"""The fusion pass: a model's layers rewritten into the steps its forward pass runs.

A ReLU directly followed by a MaxPool2d computes ``maxpool(relu(x))``. Both functions are
monotone, so this is ``relu(maxpool(x))``: the max-pool's passes can apply the ReLU to their own
output, which is smaller than the input, and mask the gradient on the way back.
:class:`~stablecnn.nn.layers.pool.ReLUMaxPool2d` is that pair as one layer; it gives the same
output and gradients bit for bit and saves one pass over the activations each way.

:func:`fuse` replaces each such pair in a list of layers by one ``ReLUMaxPool2d`` that runs
those two layer objects; every other layer is kept as it is (the same object). Its result is an
*execution plan*, not an architecture: :class:`~stablecnn.nn.model.Sequential` keeps the list it
was built from for parameter names (``"3.weight"``), config, ``repr``, summary and checkpoints,
and runs ``fuse(layers)`` (see :attr:`~stablecnn.nn.model.Sequential.plan`), so a fused model saves,
loads and prints exactly as the unfused one. Pairs on the reference kernels
(``kernels="reference"``) are never fused: that path runs every layer's own definition.

Example:
    >>> fuse([Conv2d(1, 4, 3), ReLU(), MaxPool2d(2), Flatten()])  # doctest: +SKIP
    [Conv2d(1, 4, kernel_size=(3, 3)), ReLUMaxPool2d(kernel_size=(2, 2), stride=(2, 2)), Flatten()]
"""

from __future__ import annotations

from collections.abc import Sequence

from stablecnn.nn.layers.activations import ReLU
from stablecnn.nn.layers.base import Layer
from stablecnn.nn.layers.pool import MaxPool2d, ReLUMaxPool2d


def relu_pool_pairs(layers: Sequence[Layer]) -> frozenset[int]:
    """The indices ``i`` at which :func:`fuse` joins ``layers[i]`` and ``layers[i + 1]``: a
    :class:`~stablecnn.nn.layers.activations.ReLU` directly followed by a
    :class:`~stablecnn.nn.layers.pool.MaxPool2d`, both on the fast kernels. Only these exact
    classes are joined (a subclass may compute something else)."""
    return frozenset(
        i
        for i in range(len(layers) - 1)
        if type(layers[i]) is ReLU
        and type(layers[i + 1]) is MaxPool2d
        and layers[i].kernels == layers[i + 1].kernels == "fast"
    )


def fuse(layers: Sequence[Layer]) -> list[Layer]:
    """``layers`` with each pair of :func:`relu_pool_pairs` replaced by one
    :class:`~stablecnn.nn.layers.pool.ReLUMaxPool2d` running those two layers.

    Running the result one layer after the other computes what running ``layers`` does, the
    same numbers bit for bit, forward and backward. Every other layer is the same object as in
    ``layers``; the input list is not changed. ``fuse`` is idempotent (``fuse(fuse(layers))``
    holds the same objects as ``fuse(layers)``), and a list without such a pair comes back with
    the same objects in the same order.

    Args:
        layers: the layers of a model, first to last.

    Returns:
        A new list, shorter by one for each pair fused.
    """
    pairs = relu_pool_pairs(layers)
    plan: list[Layer] = []
    i = 0
    while i < len(layers):
        if i in pairs:
            plan.append(ReLUMaxPool2d(layers[i], layers[i + 1]))
            i += 2
        else:
            plan.append(layers[i])
            i += 1
    return plan
