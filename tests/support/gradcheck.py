"""Centered finite differences, for gradient checks in float64 (cs231n's ``gradient_check``)."""

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


def gradcheck_layer(layer, x, dout, params=None, prepare=lambda: None, tolerance=1e-7):
    """Assert a layer's analytic gradients match centered differences of ``sum(forward(x) * dout)``.

    Checks the input gradient and the gradient of each parameter in ``params`` (default: every
    parameter of the layer), each to a relative error (:func:`rel_error`) below ``tolerance``.
    ``prepare()`` runs before every forward: a layer with random state (Dropout) rewinds it there
    so that every forward draws the same mask. Use float64 inputs and parameters.
    """
    params = list(layer.params) if params is None else list(params)

    def f():
        prepare()
        return float(np.sum(layer.forward(x) * dout))

    prepare()
    layer.forward(x)
    analytic = {"x": layer.backward(dout)}
    analytic.update({name: layer.grads[name].copy() for name in params})
    numeric = {"x": numerical_grad(f, x)}
    numeric.update({name: numerical_grad(f, layer.params[name]) for name in params})
    for name in analytic:
        err = rel_error(analytic[name], numeric[name])
        assert err < tolerance, f"{layer!r} d{name}: relative error {err:.3g} (>= {tolerance:g})"
