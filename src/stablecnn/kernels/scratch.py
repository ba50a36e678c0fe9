"""Work arrays that kernels reuse from one batch to the next (or allocate afresh)."""

from __future__ import annotations

import numpy as np


class Scratch:
    """Work arrays a layer keeps from one batch to the next, by name.

    ``scratch(name, shape, dtype)`` returns the array kept under ``name`` if it has that shape
    and dtype, else a new uninitialised one that replaces it. A layer uses it only for arrays
    that never leave the layer (window matrices, partial products), so reusing them is safe;
    it saves allocating, and page-faulting, tens of MB a step (allocations above glibc's
    32 MiB mmap threshold are unmapped on free whatever :mod:`stablecnn.kernels.runtime` sets).
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None or array.shape != tuple(shape) or array.dtype != dtype:
            array = self._arrays[name] = np.empty(shape, dtype)
        return array


def fresh(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A :class:`Scratch` stand-in that always allocates (for the functional kernels)."""
    return np.empty(shape, dtype)
