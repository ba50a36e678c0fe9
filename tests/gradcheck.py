"""Centered finite differences, for gradient checks in float64."""

import numpy as np


def numerical_grad_at(f, x, indices, h=1e-6):
    """d f() / d x at the flat ``indices`` of ``x`` by centered differences (x changed in place,
    then restored)."""
    if not x.flags.c_contiguous:
        raise ValueError("numerical_grad_at perturbs x through a flat view: x must be C-contiguous")
    flat = x.reshape(-1)
    grad = np.empty(len(indices))
    for k, i in enumerate(indices):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        grad[k] = (fp - fm) / (2 * h)
    return grad


def numerical_grad(f, x, h=1e-6):
    """d f() / d x for every entry of ``x``."""
    return numerical_grad_at(f, x, range(x.size), h).reshape(x.shape)


def rel_error(a, b):
    """max |a - b| / max(|a| + |b|), with a floor so exact zeros compare cleanly."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-12))
