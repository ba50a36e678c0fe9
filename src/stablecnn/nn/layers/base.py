"""The layer contract every stablecnn layer follows.

A layer holds its parameters in ``params`` (name -> array) and the matching gradients in
``grads``, allocated once: ``backward`` overwrites the gradient arrays in place, so the
``(name, param, grad)`` triples a model hands its optimizer stay valid for the whole run.
Non-trainable state (BatchNorm's running statistics, Dropout's mask counter) lives in ``buffers``
(name -> array): saved and restored with the parameters, never seen by an optimizer.
``forward(x, training)`` keeps what ``backward`` needs; ``backward(dout)`` returns the gradient for
the input. Public shapes are PyTorch's: NCHW activations.

Every subclass's ``forward`` and ``backward`` are wrapped once, when the class is made
(:meth:`Layer.__init_subclass__`), by the checks all layers share, so no layer repeats them and
every call of a ``forward`` or ``backward`` makes them (a fused step, a block's children, a hook
that calls the method it replaces; the one pass that runs without its layer's ``forward``, a batch
norm applied inside a convolution in evaluation, drops the record itself:
:meth:`~stablecnn.nn.layers.norm.BatchNorm2d.eval_affine`):
``forward`` refuses what is not a NumPy array (``TypeError``) and an empty batch (``ShapeError``),
and a training ``forward`` notes its output's shape and dtype; ``backward`` refuses a gradient of
another shape (``ShapeError``, naming both) or dtype (``TypeError``) than that output's. The
checks read shapes and dtypes only, never the values.

A layer made by :meth:`Layer.without_weights` checks its arguments and knows its parameter
shapes (``param_shapes``), output shapes and parameter count, but holds no arrays, like a PyTorch
module on the ``meta`` device: :mod:`stablecnn.nn.modelfile` checks a model file's sizes and prints
its summary that way before (or without) allocating any weight.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from numpy.typing import DTypeLike

from stablecnn.errors import ConfigError, ShapeError
from stablecnn.kernels.scratch import Scratch, fresh  # noqa: F401  (fresh: part of this interface)

# an initialiser, ``init(shape, rng, dtype) -> array`` (see :mod:`stablecnn.nn.init`)
Initializer = Callable[[tuple[int, ...], np.random.Generator | None, DTypeLike], np.ndarray]


class Layer:
    """Base class: parameter bookkeeping, shape inference and dtype checks."""

    _layout = "(N, ...)"  # the input a forward takes, for its error messages
    _pending: tuple[tuple[int, ...], np.dtype] | None = None  # the training output's shape, dtype

    def __init_subclass__(cls, **kwargs) -> None:
        """Wrap the ``forward`` and ``backward`` the subclass defines in the shared checks (see
        the module doc)."""
        super().__init_subclass__(**kwargs)
        if "forward" in vars(cls):
            cls.forward = _checked_forward(vars(cls)["forward"])
        if "backward" in vars(cls):
            cls.backward = _checked_backward(vars(cls)["backward"])

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.param_shapes: dict[str, tuple[int, ...]] = {}  # name -> shape, arrays or not
        self.scratch = Scratch()
        # False only when without_weights() made the layer (it sets the flag before __init__ runs)
        self.has_weights: bool = self.__dict__.get("has_weights", True)
        self._param_dtype = None

    @classmethod
    def without_weights(cls, *args, **kwargs) -> Layer:
        """The layer ``cls(*args, **kwargs)`` with its arguments checked, but no parameter arrays.

        ``param_shapes``, :attr:`num_params`, :attr:`dtype`, :meth:`output_shape`, :meth:`config`
        and ``repr`` are those of the full layer; ``params``, ``grads`` and size-dependent
        buffers stay empty, so a layer of a trillion parameters costs nothing to describe.
        ``forward`` of a layer with parameters raises ``RuntimeError``. (PyTorch's modules on
        the ``meta`` device.)

        Example:
            >>> Linear.without_weights(784, 10**12).num_params  # doctest: +SKIP
            785000000000000
        """
        layer = cls.__new__(cls)
        layer.has_weights = False
        layer.__init__(*args, **kwargs)
        return layer

    # -- the contract -------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """The output for the batch ``x`` (N, ...); ``training`` keeps what backward needs.

        Raises (in every layer, before its own checks):
            TypeError: ``x`` is not a NumPy array.
            ShapeError: the batch is empty (N = 0).
        """
        raise NotImplementedError

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Write the parameter gradients into ``grads``; return dL/dx.

        ``need_input_grad=False`` lets the first layer of a model skip the input gradient, which
        nobody reads (PyTorch skips it the same way); it then returns ``None``.

        Raises (in every layer, before any work):
            ShapeError: ``dout``'s shape is not the pending forward output's (naming both).
            TypeError: ``dout`` is not a NumPy array, or its dtype is not the output's (a
                layer never computes in a dtype it was not given; :meth:`Sequential.backward
                <stablecnn.nn.model.Sequential.backward>` casts, as its forward does).
            RuntimeError: no ``forward(x, training=True)`` is pending (the layer's own check).
        """
        raise NotImplementedError

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one example's output (no batch axis) for one example's input shape."""
        return tuple(input_shape)

    def padded_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one example's input as the layer pads it (the input's, for a layer that does
        not pad): the padded copy is an array as large as an activation."""
        return tuple(input_shape)

    def config(self) -> dict:
        """The constructor arguments as plain data: ``{"type": "Conv2d", "in_channels": 1, ...}``.

        Together with the weights this rebuilds the layer (see
        :func:`stablecnn.nn.layers.from_config`).
        """
        return {"type": type(self).__name__}

    def __call__(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """``layer(x)`` is ``layer.forward(x)`` (the subclass's)."""
        return self.forward(x, training)

    # -- helpers ------------------------------------------------------------------------------
    def _add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        self.param_shapes[name] = value.shape

    def _new_param(
        self,
        name: str,
        shape: tuple[int, ...],
        init: Initializer,
        rng: np.random.Generator | None,
        dtype: DTypeLike,
    ) -> None:
        """Declare parameter ``name`` of ``shape`` and, unless the layer was made by
        :meth:`without_weights`, fill it with ``init(shape, rng, dtype)`` (and a zero gradient)."""
        self.param_shapes[name] = tuple(shape)
        self._param_dtype = np.dtype(dtype)
        if self.has_weights:
            self._add_param(name, np.asarray(init(shape, rng, dtype), dtype=dtype))

    _kernels = "fast"

    @property
    def kernels(self) -> str:
        """Which code runs ``forward`` and ``backward``: ``"fast"`` (the vectorised kernels, the
        default) or ``"reference"`` (the readable definitions in :mod:`stablecnn.reference`:
        slow, the same numbers within float rounding). Change it between steps, not between a
        forward and its backward. Layers whose own code is their definition (Flatten, Dropout,
        LeakyReLU, GlobalAvgPool2d) run the same code either way. Setting any other value
        raises :class:`~stablecnn.errors.ConfigError`."""
        return self._kernels

    @kernels.setter
    def kernels(self, value: str) -> None:
        if value not in ("fast", "reference"):
            raise ConfigError(f"kernels must be 'fast' or 'reference', got {value!r}")
        self._kernels = value

    @property
    def dtype(self) -> np.dtype | None:
        """The parameters' dtype (declared, for a layer without weights), or ``None`` for a layer
        without parameters."""
        for p in self.params.values():
            return p.dtype
        return self._param_dtype

    def astype(self, dtype: DTypeLike) -> Layer:
        """Cast parameters (and gradients) to ``dtype`` in place of the old arrays; returns self.

        Floating buffers are cast too; integer buffers (counters) keep their integer dtype.
        """
        if self.param_shapes:  # a layer without weights changes only the dtype it declares
            self._param_dtype = np.dtype(dtype)
        for name in list(self.params):
            self._add_param(name, self.params[name].astype(dtype))
        for name, buf in self.buffers.items():
            if np.issubdtype(buf.dtype, np.floating):
                self.buffers[name] = buf.astype(dtype)
        return self

    def _check_input(self, x: np.ndarray, ndim: int) -> None:
        if x.ndim != ndim:
            raise ShapeError(f"{self!r} expects a {ndim}-D input, got shape {x.shape}")
        if not self.has_weights:
            raise RuntimeError(
                f"{self!r} was made without weights (shapes only, for a summary "
                f"or a size check): build the layer itself to run it"
            )
        dtype = self.dtype
        if dtype is not None and x.dtype != dtype:
            raise TypeError(
                f"{self!r} holds {dtype} parameters but got a {x.dtype} input; "
                f"cast one to the other (Sequential.forward casts inputs to the model's dtype)"
            )
        self.output_shape(x.shape[1:])  # raises ShapeError when the input does not fit

    @property
    def num_params(self) -> int:
        """The number of parameter values (a Python int: exact for any size, arrays or not)."""
        if self.has_weights:
            return sum(p.size for p in self.params.values())
        return sum(math.prod(shape) for shape in self.param_shapes.values())


def _checked_forward(forward: Callable) -> Callable:
    """``forward`` after the input checks; notes a training output for the backward check."""

    @functools.wraps(forward)
    def checked(self: Layer, x, training: bool = True, *args, **kwargs):
        if not isinstance(x, np.ndarray):
            dtype = "floating" if self.dtype is None else self.dtype
            raise TypeError(
                f"{type(self).__name__}.forward takes a NumPy array {self._layout} of {dtype} "
                f"values, got {type(x).__name__} {x!r:.40}"
            )
        if x.ndim and not len(x):
            raise ShapeError(
                f"{type(self).__name__}.forward: the batch is empty (input shape {x.shape})"
            )
        out = forward(self, x, training, *args, **kwargs)
        self._pending = (out.shape, out.dtype) if training else None
        return out

    return checked


def _checked_backward(backward: Callable) -> Callable:
    """``backward`` after checking that ``dout`` is shaped and typed as the pending output (with
    none pending, the layer's own backward raises its RuntimeError)."""

    @functools.wraps(backward)
    def checked(self: Layer, dout, *args, **kwargs):
        pending = self._pending
        if pending is not None:  # a refused gradient leaves the forward pending, for the right one
            check_gradient(f"{type(self).__name__}.backward", dout, *pending)
            self._pending = None
        return backward(self, dout, *args, **kwargs)

    return checked


def check_gradient(where: str, dout, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Raise unless ``dout`` is an array of ``shape`` and ``dtype``, the forward's output's.

    Raises:
        TypeError: ``dout`` is not a NumPy array, or not of ``dtype``.
        ShapeError: ``dout`` is not of ``shape`` (naming both shapes).
    """
    if not isinstance(dout, np.ndarray):
        raise TypeError(f"{where}: the gradient must be a NumPy array, got {type(dout).__name__}")
    if dout.shape != shape:
        raise ShapeError(
            f"{where}: the gradient has shape {dout.shape} but the forward's output had {shape}"
        )
    if dout.dtype != dtype:
        raise TypeError(
            f"{where}: the gradient is {dout.dtype} but the forward's output was {dtype}; "
            f"cast it (dtypes are never mixed silently)"
        )


def positive_int(value: int, name: str) -> int:
    """``value`` as an int >= 1 (a bool is not one), or raise ConfigError naming ``name``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def pair(value: int | tuple[int, int], name: str, minimum: int = 1) -> tuple[int, int]:
    """Turn an int or a pair of ints, each >= ``minimum``, into a pair, or raise ConfigError."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = (int(value), int(value))
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        out = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(out) < minimum:
        rule = "positive" if minimum == 1 else f">= {minimum}"
        raise ConfigError(f"{name} must be {rule}, got {value!r}")
    return out
