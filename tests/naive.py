"""Readable loop implementations: the definitions the fast kernels are tested against.

Slow on purpose: one Python loop per index, exactly as the formulas read. Used only by tests.
"""

import numpy as np


def conv2d(x, w, b, stride=(1, 1), padding=((0, 0), (0, 0))):
    """out[n, f, i, j] = b[f] + sum_{c, p, q} w[f, c, p, q] * xpad[n, c, i*sh + p, j*sw + q]."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), *padding))
    ho = (xp.shape[2] - kh) // stride[0] + 1
    wo = (xp.shape[3] - kw) // stride[1] + 1
    out = np.zeros((n, f, ho, wo), dtype=x.dtype)
    for ni in range(n):
        for fi in range(f):
            for i in range(ho):
                for j in range(wo):
                    r, s = i * stride[0], j * stride[1]
                    out[ni, fi, i, j] = b[fi] + np.sum(w[fi] * xp[ni, :, r : r + kh, s : s + kw])
    return out


def maxpool2d(x, kernel=(2, 2), stride=(2, 2)):
    """Forward max pool and its input gradient for an all-ones upstream gradient.

    The gradient of each window goes to its first maximum in row-major order.
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    ho, wo = (h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1
    out = np.zeros((n, c, ho, wo), dtype=x.dtype)
    route = np.zeros((n, c, ho, wo, 2), dtype=int)
    for ni in range(n):
        for ci in range(c):
            for i in range(ho):
                for j in range(wo):
                    r, s = i * stride[0], j * stride[1]
                    window = x[ni, ci, r : r + kh, s : s + kw]
                    p, q = np.unravel_index(np.argmax(window), window.shape)  # first maximum
                    out[ni, ci, i, j] = window[p, q]
                    route[ni, ci, i, j] = (r + p, s + q)
    return out, route


def maxpool2d_backward(dout, route, x_shape):
    dx = np.zeros(x_shape, dtype=dout.dtype)
    n, c, ho, wo = dout.shape
    for ni in range(n):
        for ci in range(c):
            for i in range(ho):
                for j in range(wo):
                    r, s = route[ni, ci, i, j]
                    dx[ni, ci, r, s] += dout[ni, ci, i, j]
    return dx
