"""PyTorch twins: our layers and models rebuilt in PyTorch, holding copies of our parameters.

The method (numpy-ml's, tinygrad's): build our layer, copy its parameters into the PyTorch twin,
run both on the same input and the same upstream gradient, and compare the output and every
gradient (input, weight, bias). PyTorch computes its gradients with autograd, so this checks our
hand-written backward passes against an independent implementation.

- :func:`torch_layer`: the PyTorch module computing what one of our layers computes.
- :func:`torch_twin`: the ``torch.nn.Sequential`` of a :class:`~stablecnn.Sequential`, with the
  same parameter names (``"0.weight"``); ``benchmarks/bench.py`` times PyTorch on this twin.
- :func:`check_twin`: one forward and backward of a layer and of its twin, compared.
- :func:`assert_close`: the comparison, with a message showing ours against the reference.

Tolerance: elementwise ``|ours - ref| <= atol + rtol * |ref|`` with ``atol = rtol * max|ref|``,
i.e. each entry must be right to ``rtol`` relative to the array's own magnitude. ``rtol`` is
1e-5 in float32 (about 80 float32 epsilons: room for a different summation order over up to
~3000 products) and 1e-10 in float64. A layout bug (height/width mix-up, wrong tie routing, a
missing bias) makes errors of the order of the values themselves, far above either tolerance.

This module imports numpy, torch and stablecnn only (no pytest), so the benchmark can use it.
"""

from __future__ import annotations

import numpy as np
import torch

from stablecnn.nn.layers import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Residual,
)

F = torch.nn.functional
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]  # pytest ids for DTYPES
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


# -- arrays ---------------------------------------------------------------------------------------
def to_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def tensor(a: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    """A torch copy of ``a`` with the same dtype (no memory shared, so nobody aliases anybody)."""
    t = torch.from_numpy(np.array(a, copy=True))
    return t.requires_grad_(requires_grad)


def normal(shape, dtype, seed=0, scale=1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def ids(cases):
    """pytest ids of a table whose rows start with their name."""
    return [c[0] for c in cases]


# -- comparing ------------------------------------------------------------------------------------
def assert_close(ours, ref, what: str, rtol: float | None = None, slack=0.0) -> None:
    """Assert ``ours`` (NumPy) matches ``ref`` (torch or NumPy) in shape, dtype and value.

    Elementwise ``|ours - ref| <= atol + slack + rtol * |ref|`` with ``atol = rtol * max|ref|``
    and ``rtol`` by dtype (:data:`RTOL`) unless given; ``slack`` (a scalar or an array of
    ``ref``'s shape, default 0) is extra room a caller derives from the conditioning of what it
    compares. On failure the message names the quantity, the shapes and dtypes, how many entries
    are off, and the worst entry (index, ours, reference).
    """
    ours_np, ref_np = np.asarray(ours), to_numpy(ref)
    head = (
        f"{what}: ours {ours_np.shape} {ours_np.dtype} vs reference {ref_np.shape} {ref_np.dtype}"
    )
    assert ours_np.shape == ref_np.shape, f"{head}: shapes differ"
    assert ours_np.dtype == ref_np.dtype, f"{head}: dtypes differ"
    rtol = RTOL[ref_np.dtype] if rtol is None else rtol
    o, r = ours_np.astype(np.float64), ref_np.astype(np.float64)
    finite = np.isfinite(o) == np.isfinite(r)
    assert finite.all(), (
        f"{head}: non-finite values differ at {int((~finite).sum())} entries, "
        f"first at {tuple(map(int, np.argwhere(~finite)[0]))}"
    )
    scale = float(np.max(np.abs(r), initial=0.0))
    atol = rtol * scale
    err = np.abs(o - r)
    allowed = atol + slack + rtol * np.abs(r)
    bad = err > allowed
    if bad.any():
        worst = np.unravel_index(np.argmax(err - allowed), err.shape) if err.ndim else ()
        raise AssertionError(
            f"{head}: {int(bad.sum())} of {bad.size} entries differ beyond rtol={rtol:g}, "
            f"atol={atol:.3g} (rtol * max|ref|, max|ref| = {scale:.3g}); worst at index "
            f"{tuple(map(int, worst))}: ours={o[worst]:.9g} ref={r[worst]:.9g} "
            f"|diff|={err[worst]:.3g} "
            f"allowed {np.broadcast_to(allowed, err.shape)[worst]:.3g}; "
            f"max |diff| {err.max():.3g}, relative to max|ref| {err.max() / max(scale, 1e-300):.3g}"
        )


def assert_dtype(a, dtype, what: str) -> None:
    assert np.asarray(a).dtype == np.dtype(dtype), (
        f"{what}: dtype {np.asarray(a).dtype}, expected {np.dtype(dtype)}"
    )


# -- building the twins ---------------------------------------------------------------------------
def torch_padding(padding):
    """Our Conv2d ``padding`` argument as ``torch.nn.Conv2d`` takes it."""
    if isinstance(padding, (str, int)):
        return padding
    return tuple(padding)


def _module(layer) -> torch.nn.Module:
    """A fresh PyTorch module of the same kind and arguments as ``layer``."""
    if isinstance(layer, Conv2d):
        return torch.nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            torch_padding(layer.padding_arg),
            bias=layer.bias,
        )
    if isinstance(layer, Linear):
        return torch.nn.Linear(layer.in_features, layer.out_features)
    if isinstance(layer, MaxPool2d):
        return torch.nn.MaxPool2d(layer.kernel_size, layer.stride)
    if isinstance(layer, AvgPool2d):
        return torch.nn.AvgPool2d(
            layer.kernel_size, layer.stride, layer.padding, count_include_pad=True
        )
    if isinstance(layer, GlobalAvgPool2d):
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    if isinstance(layer, LeakyReLU):  # before ReLU, in case one ever derives from the other
        return torch.nn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, ReLU):
        return torch.nn.ReLU()
    if isinstance(layer, Flatten):
        return torch.nn.Flatten()
    if isinstance(layer, (BatchNorm1d, BatchNorm2d)):
        cls = torch.nn.BatchNorm1d if isinstance(layer, BatchNorm1d) else torch.nn.BatchNorm2d
        return cls(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, Dropout):
        return torch.nn.Dropout(layer.p)
    if isinstance(layer, Residual):
        return TorchResidual(layer)
    raise NotImplementedError(f"no PyTorch twin for {layer!r}")


class TorchResidual(torch.nn.Module):
    """A residual block written in PyTorch as its users write one (torchvision's BasicBlock):
    ``act(body(x) + shortcut(x))``, autograd doing the backward. Its submodules are named
    ``body`` and ``shortcut``, so its parameters are ours by name (``"body.0.weight"``)."""

    def __init__(self, block: Residual):
        super().__init__()
        self.body = torch.nn.Sequential(*(_module(layer) for layer in block.body))
        self.shortcut = torch.nn.Sequential(*(_module(layer) for layer in block.shortcut))
        self.act = torch.nn.ReLU() if block.activation == "ReLU" else torch.nn.Identity()

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))  # an empty Sequential is the identity


def torch_layer(layer) -> torch.nn.Module:
    """The PyTorch module that computes what ``layer`` computes, holding copies of its parameters
    (and of BatchNorm's running statistics), in the layer's dtype.

    Raises ``NotImplementedError`` for a layer type without a twin. Dropout's twin draws its own
    masks (the generators differ): compare what must agree, not the masks.
    """
    module = _module(layer)
    if layer.dtype is not None:
        module = module.to(TORCH_DTYPE[np.dtype(layer.dtype)])
    theirs = dict(module.named_parameters())
    assert sorted(theirs) == sorted(layer.params), (
        f"{layer!r}: parameter names differ from PyTorch's: {sorted(layer.params)} vs "
        f"{sorted(theirs)}"
    )
    buffers = dict(module.named_buffers())
    with torch.no_grad():
        for name, p in theirs.items():
            ours = layer.params[name]
            assert tuple(p.shape) == ours.shape, (
                f"{layer!r} {name}: {tuple(p.shape)} vs {ours.shape}"
            )
            p.copy_(torch.from_numpy(ours))
        for name, value in layer.buffers.items():
            if name in buffers:  # BatchNorm's running statistics and batch count
                buffers[name].copy_(torch.from_numpy(np.asarray(value)))
    return module


def torch_twin(model) -> torch.nn.Sequential:
    """The ``torch.nn.Sequential`` of ``model`` (a :class:`stablecnn.Sequential`): each layer's
    :func:`torch_layer`, so the parameters have our names (``"0.weight"``) and values."""
    net = torch.nn.Sequential(*(torch_layer(layer) for layer in model.layers))
    ours = [name for name, _, _ in model.parameters()]
    theirs = [name for name, _ in net.named_parameters()]
    assert sorted(ours) == sorted(theirs), f"parameter names differ: {ours} vs {theirs}"
    return net


def check_twin(layer, x: np.ndarray, dout: np.ndarray, what: str, dx_slack=0.0):
    """One training forward and backward of ``layer`` and of its :func:`torch_layer` twin on the
    same ``x`` and upstream gradient ``dout``; assert the output, the input gradient and every
    parameter gradient have ``x``'s dtype and match (:func:`assert_close`, ``dx_slack`` extra
    room on the input gradient). Returns the twin."""
    twin = torch_layer(layer)
    out = layer.forward(x)
    dx = layer.backward(dout)
    xt = tensor(x, True)
    ref = twin(xt)
    ref.backward(tensor(dout))
    theirs = dict(twin.named_parameters())
    assert_dtype(out, x.dtype, f"{what} output")
    assert_dtype(dx, x.dtype, f"{what} dx")
    assert_close(out, ref, f"{what} output")
    assert_close(dx, xt.grad, f"{what} dx", slack=dx_slack)
    for name, grad in layer.grads.items():
        assert_dtype(grad, x.dtype, f"{what} d{name}")
        assert_close(grad, theirs[name].grad, f"{what} d{name}")
    return twin
