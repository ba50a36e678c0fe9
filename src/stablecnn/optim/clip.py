"""Gradient clipping by the global L2 norm, overflow-safe in float32 and float64."""

from __future__ import annotations

import math

import numpy as np

from stablecnn.optim.optimizers import check_number


def clip_grad_norm(params, max_norm: float) -> float:
    r"""Scale all gradients together so their global L2 norm is at most ``max_norm``.

    .. math::
        \|g\| = \sqrt{\textstyle\sum_i \sum_j g_{ij}^2}, \qquad
        g \leftarrow g \cdot \frac{\text{max\_norm}}{\|g\| + 10^{-6}} \text{ if that factor is } < 1

    as ``torch.nn.utils.clip_grad_norm_``. The sum of squares is accumulated in float64 (float32
    gradients are widened a block at a time; float64 gradients are rescaled by their largest
    entry when the plain sum would overflow or underflow), so a float32 gradient of norm 1e30 is
    clipped correctly where a float32 sum of squares would overflow to inf. A non-finite norm
    (a NaN or inf gradient) is returned without touching the gradients: torch would multiply
    them by 0 or NaN; the trainer stops on it instead.

    Args:
        params: ``(name, param, grad)`` triples (``model.parameters()``) or gradient arrays.
        max_norm: the largest allowed norm, > 0.

    Returns:
        The global norm before clipping, as a Python float.

    Raises:
        ConfigError: ``max_norm`` not a finite real number > 0 (a bool or a string is not one).

    Example:
        >>> norm = clip_grad_norm(model.parameters(), max_norm=1.0)  # doctest: +SKIP
    """
    max_norm = check_number("clip_grad_norm", "max_norm", max_norm, low_open=True)
    grads = [item[2] if isinstance(item, tuple) else item for item in params]
    parts = [_scaled_sum_squares(g) for g in grads]  # (scale, sum of (g / scale)^2)
    top = max((scale for scale, _ in parts), default=1.0)
    total = top * math.sqrt(math.fsum(ssq * (scale / top) ** 2 for scale, ssq in parts))
    if not math.isfinite(total):
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= g.dtype.type(coef)
    return total


_BLOCK = 1 << 16  # float64 widening block: 512 KiB, fits in cache


def _scaled_sum_squares(grad: np.ndarray) -> tuple[float, float]:
    """``(scale, sum((grad / scale)**2))`` in float64, without overflow or a full-size temporary.

    float32 squares always fit in float64 (scale 1, widened a block at a time); float64 ones are
    rescaled by the largest entry only when the plain sum overflows or underflows.
    """
    flat = grad.reshape(-1)
    if flat.dtype == np.float64:
        with np.errstate(over="ignore", under="ignore"):
            s = float(np.dot(flat, flat))
        if (s == math.inf or s < 1e-280) and np.isfinite(flat).all():
            scale = float(np.max(np.abs(flat)))
            if scale > 0:
                return scale, float(np.dot(flat / scale, flat / scale))
        return 1.0, s
    buf = np.empty(min(flat.size, _BLOCK), np.float64)
    s = 0.0
    for i in range(0, flat.size, _BLOCK):
        block = buf[: min(_BLOCK, flat.size - i)]
        block[...] = flat[i : i + _BLOCK]
        s += float(np.dot(block, block))
    return 1.0, s
