r"""The residual block: a layer made of layers, ``out = act(body(x) + shortcut(x))``.

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016), section 3.2:
a block learns the residual ``F(x) = body(x)`` and adds its input back, so a stack of blocks can
be as deep as it likes and still pass its input (and, backward, its gradient) through unchanged.

Forward, with ``act`` the optional activation after the sum (ReLU in the paper's basic block)::

    h = body(x)                          # the body's layers, in order
    s = shortcut(x)                      # x itself (identity), or a projection's layers
    out = act(h + s)

Backward: the sum sends its gradient ``g = dL/d(h + s)`` unchanged down both paths, and ``x``
collects what each path gives back (the chain rule for a value used twice)::

    g  = act'(h + s) * dout               # dL/d(h + s)
    dx = body.backward(g) + shortcut.backward(g)       # shortcut.backward(g) = g for identity

Both are exact: an addition has derivative 1 on each side, so nothing is approximated or scaled.
The definition above is the code: this layer has no fast kernel of its own (its children run
theirs), so ``kernels = "reference"`` only passes the choice to the children.

Each branch runs as an execution plan, as a model does (:mod:`stablecnn.nn.fuse`): with
:attr:`Residual.fuse` on (the default), a BatchNorm2d and the ReLU after it in the body run as one
:class:`~stablecnn.nn.layers.norm.BNReLU2d` step, the same numbers bit for bit with one pass over
the activations fewer forward. ``body`` and ``shortcut`` stay the layers as built, for names,
config and files.

Parameters and buffers are the children's under dotted names: ``"body.0.weight"``,
``"shortcut.1.running_mean"``; in a model, ``"3.body.0.weight"`` (the PyTorch naming). They are
gathered from the children on every access, so they are always the children's own arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import DTypeLike

from stablecnn.errors import ConfigError, ShapeError
from stablecnn.kernels import parallel
from stablecnn.kernels.relu import relu_grad_into, relu_into
from stablecnn.nn.fuse import PlanCache, run
from stablecnn.nn.layers.activations import ReLU
from stablecnn.nn.layers.base import Layer

ACTIVATIONS = {"ReLU": ReLU}  # the activation a block may apply after its sum, by name


class Residual(Layer):
    r"""A residual block: ``act(body(x) + shortcut(x))``.

    .. math:: y = \mathrm{act}\big(\mathrm{body}(x) + \mathrm{shortcut}(x)\big)

    The math, forward and backward: the docstring of :mod:`stablecnn.nn.layers.residual`.

    Args:
        body: the layers of the residual branch, first to last (at least one).
        shortcut: the layers of the shortcut, first to last; empty (the default) for the
            identity. When the body changes the shape (a stride 2, more channels), the shortcut
            must change it the same way: the usual projection is
            ``[Conv2d(C, F, 1, stride=2, bias=False), BatchNorm2d(F)]`` (the paper's option B).
        activation: ``"ReLU"`` to apply a ReLU after the sum (the paper's basic block), or
            ``None`` (the default) for none.

    Shape:
        input (N, *S) -> output (N, *T), where the body takes S to T and the shortcut takes S to
        the same T (the identity needs T = S).

    Raises:
        TypeError: a body or shortcut element that is not a stablecnn Layer.
        ConfigError: an empty body; an unknown ``activation``; children holding parameters of
            different dtypes.
        ShapeError: :meth:`output_shape` (and so ``forward``, or a model's check of its shapes)
            when the body and the shortcut give different shapes, naming both.
        RuntimeError: ``backward`` without a pending ``forward(x, training=True)``.
        ShapeError, TypeError: the checks of every layer (an empty batch, not an array, a
            gradient unlike the output): :mod:`~stablecnn.nn.layers.base`.

    Example:
        >>> block = Residual(
        ...     [Conv2d(8, 8, 3, padding=1, bias=False), BatchNorm2d(8), ReLU(),
        ...      Conv2d(8, 8, 3, padding=1, bias=False), BatchNorm2d(8)],
        ...     activation="ReLU",
        ... )
        >>> block.forward(np.zeros((2, 8, 14, 14), np.float32)).shape
        (2, 8, 14, 14)
        >>> sorted(block.params)[:2]
        ['body.0.weight', 'body.1.bias']
    """

    def __init__(
        self,
        body: Iterable[Layer],
        shortcut: Iterable[Layer] = (),
        activation: str | None = None,
    ) -> None:
        # a block holds no arrays of its own: params, grads, buffers and param_shapes are its
        # children's (properties below), so Layer.__init__, which makes those dicts, is not run
        self.body = self._children(body, "body")
        self.shortcut = self._children(shortcut, "shortcut")
        if not self.body:
            raise ConfigError("a Residual block needs at least one layer in its body")
        if activation is not None and activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation must be one of {sorted(ACTIVATIONS)} or none, got {activation!r}"
            )
        self.activation = activation
        self.act = ACTIVATIONS[activation]() if activation is not None else None
        self._out = None  # the sum after the ReLU, kept for the backward pass
        self._fuse = True
        self._plans = (PlanCache(), PlanCache())  # the body's and the shortcut's steps
        self._ran: tuple[tuple[Layer, ...], tuple[Layer, ...]] | None = None  # the last forward's
        dtypes = {layer.dtype for layer in self.children() if layer.dtype is not None}
        if len(dtypes) > 1:
            raise ConfigError(
                f"a block's layers must share one dtype, got {sorted(map(str, dtypes))}"
            )

    @staticmethod
    def _children(layers: Iterable[Layer], what: str) -> list[Layer]:
        if isinstance(layers, Layer):
            raise TypeError(f"{what} must be a list of layers, got one {type(layers).__name__}")
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"{what}[{i}] must be a stablecnn Layer, got {type(layer).__name__}"
                )
        return layers

    @classmethod
    def without_weights(cls, *args, **kwargs) -> Residual:
        """A block of layers made without weights is itself without weights: nothing to skip."""
        return cls(*args, **kwargs)

    # -- the children and what they hold --------------------------------------------------------
    def children(self) -> list[Layer]:
        """Every layer of the block: the body's, the shortcut's, then the activation's."""
        return [*self.body, *self.shortcut, *([self.act] if self.act is not None else [])]

    def named_children(self) -> list[tuple[str, Layer]]:
        """``("body.0", layer), ..., ("shortcut.0", layer), ...``: the prefixes of the names."""
        return [(f"body.{i}", layer) for i, layer in enumerate(self.body)] + [
            (f"shortcut.{i}", layer) for i, layer in enumerate(self.shortcut)
        ]

    def _gather(self, what: str) -> dict:
        return {
            f"{prefix}.{key}": value
            for prefix, layer in self.named_children()
            for key, value in getattr(layer, what).items()
        }

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self._gather("params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self._gather("grads")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        return self._gather("buffers")

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return self._gather("param_shapes")

    @property
    def has_weights(self) -> bool:
        return all(layer.has_weights for layer in self.children())

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.children())

    @property
    def dtype(self) -> np.dtype | None:
        for layer in self.children():
            if layer.dtype is not None:
                return layer.dtype
        return None

    def astype(self, dtype: DTypeLike) -> Residual:
        for layer in self.children():
            layer.astype(dtype)
        return self

    @property
    def kernels(self) -> str:
        """The children's kernels (``"mixed"`` when they differ); setting it sets every child's."""
        kinds = {layer.kernels for layer in self.children()}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @kernels.setter
    def kernels(self, value: str) -> None:
        for layer in self.children():
            layer.kernels = value

    # -- shapes ---------------------------------------------------------------------------------
    def child_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[str, Layer, tuple]]:
        """``(name, layer, output shape)`` for each child of :meth:`named_children`.

        Raises:
            ShapeError: a child does not fit the shape it gets (naming it).
        """
        rows = []
        for branch, layers in (("body", self.body), ("shortcut", self.shortcut)):
            shape = tuple(input_shape)
            for i, layer in enumerate(layers):
                try:
                    shape = tuple(layer.output_shape(shape))
                except ShapeError as exc:
                    raise ShapeError(
                        f"{branch}.{i} ({layer!r}) does not fit {shape}: {exc}"
                    ) from None
                rows.append((f"{branch}.{i}", layer, shape))
        return rows

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shapes = {"body": tuple(input_shape), "shortcut": tuple(input_shape)}
        for name, _, shape in self.child_shapes(input_shape):
            shapes[name.split(".")[0]] = shape
        if shapes["body"] != shapes["shortcut"]:
            kind = "the shortcut" if self.shortcut else "the identity shortcut"
            raise ShapeError(
                f"the body gives {shapes['body']} but {kind} gives {shapes['shortcut']}; the two "
                f"are added, so they must agree"
                + (
                    ""
                    if self.shortcut
                    else " (add a projection shortcut, e.g. a 1x1 Conv2d with the body's stride)"
                )
            )
        return shapes["body"]

    # -- the passes -----------------------------------------------------------------------------
    @property
    def fuse(self) -> bool:
        """Whether each branch runs its fused plan (default True) or its layers one by one;
        setting it sets every block nested in the branches too. A model's
        :attr:`~stablecnn.nn.model.Sequential.fuse` sets it for its blocks."""
        return self._fuse

    @fuse.setter
    def fuse(self, value: bool) -> None:
        self._fuse = bool(value)
        for layer in self.children():
            if isinstance(layer, Residual):
                layer.fuse = self._fuse

    @property
    def plan(self) -> tuple[tuple[Layer, ...], tuple[Layer, ...]]:
        """The steps of the body and of the shortcut that :meth:`forward` runs: each branch's
        layers as they are, or with :attr:`fuse` on, ``stablecnn.nn.fuse.fuse`` of them (made
        again whenever the layers, their kernels or their hooks change)."""
        body_plan, shortcut_plan = self._plans
        return (
            body_plan(self.body, enabled=self.fuse),
            shortcut_plan(self.shortcut, enabled=self.fuse),
        )

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        body, shortcut = self._ran = self.plan  # backward runs these same steps back
        h = run(body, x, training, join=self.fuse)
        s = run(shortcut, x, training, join=self.fuse)
        if h.shape != s.shape:
            self.output_shape(x.shape[1:])  # raises the ShapeError naming both shapes
        if self._step_by_step():
            out = h + s  # the definition, step by step
            return self.act.forward(out, training) if self.act is not None else out
        # the same numbers in one threaded pass: each span summed, then (with a ReLU) clipped
        # while in cache; a new array, since a child may keep its output for its backward
        out = np.empty_like(h, order="K")
        relu = self.act is not None
        parallel.split(lambda a, b, o: _add(a, b, o, relu), h, s, out)
        self._out = out if training and relu else None  # the ReLU's mask, as ReLU keeps it
        return out

    def _step_by_step(self) -> bool:
        """Whether the sum runs as its definition (``h + s``, then the activation's own layer):
        when the activation (with none, the whole block) is on the reference kernels."""
        return (self.act.kernels if self.act is not None else self.kernels) == "reference"

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if self.act is None:
            g = dout
        elif self._step_by_step():
            g = self.act.backward(dout)
        else:  # dL/d(h + s) = dout where the sum was positive, as ReLU.backward computes it
            # (the activation is a ReLU: ACTIVATIONS holds no other)
            if self._out is None:
                raise RuntimeError("Residual: backward needs a forward(x, training=True) first")
            out, self._out = self._out, None
            g = relu_grad_into(dout, out, np.empty_like(out, dtype=dout.dtype))
        body, shortcut = self._ran or self.plan  # before any forward: what is missing
        dx_body = _back(body, g, need_input_grad)
        dx_short = _back(shortcut, g, need_input_grad) if shortcut else g
        if not need_input_grad:
            return None
        # x was used twice: its gradients add (into the body's, when it is an array of its own)
        fresh = not any(np.may_share_memory(dx_body, a) for a in (g, dout, dx_short))
        dx = dx_body if fresh else np.empty_like(dx_body, order="K")
        parallel.split(lambda a, b, o: np.add(a, b, out=o), dx_body, dx_short, dx)
        return dx

    # -- description ----------------------------------------------------------------------------
    def config(self) -> dict:
        config = {"type": "Residual", "body": [layer.config() for layer in self.body]}
        if self.shortcut:
            config["shortcut"] = [layer.config() for layer in self.shortcut]
        if self.activation is not None:
            config["activation"] = self.activation
        return config

    def __repr__(self):
        def block(layers):
            return "[\n" + "".join(f"    {layer!r},\n" for layer in layers) + "  ]"

        parts = [f"  body={block(self.body)},"]  # evaluating the text builds the same block
        if self.shortcut:  # the identity is the default, left out as PyTorch leaves it out
            parts.append(f"  shortcut={block(self.shortcut)},")
        if self.activation is not None:
            parts.append(f"  activation={self.activation!r},")
        return "Residual(\n" + "\n".join(parts) + "\n)"

    def describe(self) -> str:
        """One line for a summary table: the kind of shortcut and the activation."""
        shortcut = "projection" if self.shortcut else "identity"
        act = f", activation={self.activation!r}" if self.activation else ""
        return f"Residual(shortcut={shortcut}{act})"


def _add(a: np.ndarray, b: np.ndarray, out: np.ndarray, relu: bool) -> None:
    np.add(a, b, out=out)
    if relu:
        relu_into(out, out)


def _back(layers: Sequence[Layer], dout: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
    """Back-propagate ``dout`` through ``layers``, last to first (the first skips its input
    gradient when ``need_input_grad`` is false)."""
    for layer in reversed(layers[1:]):
        dout = layer.backward(dout)
    return layers[0].backward(dout, need_input_grad=need_input_grad)
