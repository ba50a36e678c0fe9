"""Centered finite differences, for gradient checks in float64."""

import numpy as np


def numerical_grad(f, x, h=1e-6):
    """d f() / d x by centered differences, perturbing ``x`` in place one entry at a time."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = x[idx]
        x[idx] = old + h
        fp = f()
        x[idx] = old - h
        fm = f()
        x[idx] = old
        grad[idx] = (fp - fm) / (2 * h)
    return grad


def rel_error(a, b):
    """max |a - b| / max(|a| + |b|), with a floor so exact zeros compare cleanly."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-12))
