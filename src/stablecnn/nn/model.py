"""Sequential: a stack of layers run one after the other."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from stablecnn.errors import ConfigError, ShapeError
from stablecnn.nn.fuse import PlanCache, relu_pool_pairs, run  # noqa: F401 (relu_pool_pairs: public here too)
from stablecnn.nn.inference import SMALL_BATCH, InferencePlan
from stablecnn.nn.layers.base import Layer, check_gradient
from stablecnn.nn.layers.residual import Residual
from stablecnn.nn.losses import softmax


class Sequential:
    """A model that applies its layers in order.

    Parameters are named ``"<layer index>.<param>"`` (``"0.weight"``, ``"0.bias"``, ...), as in
    PyTorch's ``nn.Sequential``. Inputs are cast to the model's dtype, so a float64 model never
    computes in float32.

    Two lists of layers: :attr:`layers`, the architecture as built, from which parameter
    names, :meth:`config`, ``repr``, :meth:`summary`, :meth:`state_dict` and so checkpoints
    come; and :attr:`plan`, the steps :meth:`forward` runs one after the other and
    :meth:`backward` runs back. With ``fuse`` on (the default) the plan is
    :func:`stablecnn.nn.fuse.fuse` of the layers: each ReLU that a MaxPool2d follows runs inside
    the pool's passes, as one :class:`~stablecnn.nn.layers.pool.ReLUMaxPool2d`, the same numbers bit
    for bit and one pass over the activations fewer each way. Keeping the architecture apart
    from the plan is what keeps a fused model's names and files those of the unfused one: the
    fused plan is shorter, and indexing names by it would shift every later layer's
    (``"7.weight"`` would become ``"5.weight"`` in Model 1). The model makes its plan itself,
    so every path that runs it (the Trainer, evaluation, prediction, the benchmark) runs the
    fused steps without calling anything; layers on the reference kernels are never fused.

    Args:
        *layers: the layers, first to last.
        input_shape: optional shape of one example, e.g. ``(1, 28, 28)``; when given, the layers
            are checked to fit it at once and :meth:`summary` needs no argument.
        fuse: run the plan :func:`stablecnn.nn.fuse.fuse` makes of the layers (default True), or
            the layers one by one (False). The results are the same either way; ``model.fuse``
            may be changed between steps.
        kernels: ``"reference"`` runs every layer on the readable definitions of
            :mod:`stablecnn.reference` (slow; the same numbers within float rounding),
            ``"fast"`` on the fast kernels; default ``None`` leaves each layer's own
            :attr:`~stablecnn.nn.layers.base.Layer.kernels` as it is. See :attr:`kernels`.

    Shape:
        input (N, *input_shape) -> output (N, *shape of the last layer's output), e.g. (N, 10)
        for Model 1's (N, 1, 28, 28); see :meth:`shapes`.

    Raises:
        TypeError: a layer that is not a stablecnn :class:`~stablecnn.nn.layers.base.Layer`, or
            layers holding parameters of different dtypes.
        ConfigError: no layers, or ``kernels`` other than ``"fast"``, ``"reference"`` or
            ``None``.
        ShapeError: ``input_shape`` given and a layer does not fit the shape it would get (the
            message names the layer).

    Example:
        >>> model = Sequential(Conv2d(1, 4, 3), ReLU(), Flatten(), Linear(4 * 26 * 26, 10),
        ...                    input_shape=(1, 28, 28))
        >>> model.forward(np.zeros((2, 1, 28, 28), np.float32)).shape
        (2, 10)
    """

    _pending: tuple | None = None  # the pending training output's (shape, dtype)

    def __init__(
        self,
        *layers: Layer,
        input_shape: tuple[int, ...] | None = None,
        fuse: bool = True,
        kernels: str | None = None,
    ):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} must be a stablecnn Layer, got {type(layer).__name__}")
        if not layers:
            raise ConfigError("Sequential needs at least one layer")
        self.layers = list(layers)
        dtypes = {layer.dtype for layer in self.layers if layer.dtype is not None}
        if len(dtypes) > 1:
            raise TypeError(f"all layers must share one dtype, got {sorted(map(str, dtypes))}")
        self.dtype = np.dtype(dtypes.pop() if dtypes else np.float32)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.fuse = fuse
        self._plan = PlanCache()  # the fused steps, made again when what they come from changes
        self._last_plan: tuple[Layer, ...] | None = None  # the steps the last forward ran
        self._evaluated = False  # a plan ran the last evaluation: the layers did not drop
        # what an earlier training forward kept, so backward must refuse it
        self._inference: tuple[tuple, InferencePlan] | None = None  # key, small-batch plan
        if kernels is not None:
            self.kernels = kernels
        if self.input_shape is not None:
            self.shapes(self.input_shape)

    @property
    def kernels(self) -> str:
        """``"fast"`` or ``"reference"`` when every layer runs on those kernels, else
        ``"mixed"``. Setting it sets every layer's (see
        :attr:`~stablecnn.nn.layers.base.Layer.kernels`): ``model.kernels = "reference"`` trains
        the same model on :mod:`stablecnn.reference`'s definitions from the next step on."""
        kinds = {layer.kernels for layer in self.layers}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @kernels.setter
    def kernels(self, value: str) -> None:
        for layer in self.layers:
            layer.kernels = value  # the layer refuses any value but "fast" and "reference"

    @property
    def fuse(self) -> bool:
        """Whether :meth:`forward` runs the fused plan (see the class doc). Setting it sets
        :attr:`~stablecnn.nn.layers.residual.Residual.fuse` of every residual block among the
        layers too, so ``False`` runs every layer one by one, inside blocks as well."""
        return self._fuse

    @fuse.setter
    def fuse(self, value: bool) -> None:
        self._fuse = bool(value)
        for layer in self.layers:
            if isinstance(layer, Residual):
                layer.fuse = self._fuse

    @property
    def plan(self) -> tuple[Layer, ...]:
        """The steps :meth:`forward` runs, first to last: :attr:`layers` as they are, or with
        :attr:`fuse` on, ``stablecnn.nn.fuse.fuse(layers)``. Made again whenever ``layers`` (the
        list may be edited), a layer's kernels, a layer's replaced ``forward`` or ``backward`` or
        ``fuse`` change (:class:`stablecnn.nn.fuse.PlanCache`), so it always follows them; pairs
        on the reference kernels are never fused."""
        return self._plan(self.layers, enabled=self.fuse)

    # -- shapes ---------------------------------------------------------------------------------
    def shapes(self, input_shape) -> list[tuple[int, ...]]:
        """Output shape (without the batch axis) after each layer, for one example's shape.

        Raises:
            ShapeError: a layer does not fit the shape it gets; the message names the layer,
                its index and that shape.
        """
        shapes, shape = [], tuple(input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except ShapeError as exc:
                raise ShapeError(
                    f"model input {tuple(input_shape)}: layer {i} ({layer!r}) does not fit its "
                    f"input {shape}: {exc}"
                ) from None
            shapes.append(shape)
        return shapes

    # -- the passes -----------------------------------------------------------------------------
    def forward(self, x, training: bool = True) -> np.ndarray:
        """Run ``x`` (N, *input_shape) through each step of :attr:`plan` in turn (every layer,
        a ReLU and its max-pool as one step when fused; in evaluation a convolution and the
        batch norm after it as one call, :func:`stablecnn.nn.fuse.run`); ``training`` keeps what
        backward needs.
        ``x`` is cast to the model's dtype first. In evaluation a batch of at most
        :data:`~stablecnn.nn.inference.SMALL_BATCH` examples runs the same function compiled
        for its shape (:class:`~stablecnn.nn.inference.InferencePlan`, equal to rounding).

        Raises:
            TypeError: ``x`` is not an array of numbers (nor a list NumPy makes one of).
            ShapeError: ``x`` is not a batch (fewer than 2 dimensions) or is an empty one
                (N = 0), or a layer does not fit the shape it would get (naming the layer),
                before any work is done.
            RuntimeError: the model was built without weights
                (``from_config(..., weights=False)``).
        """
        x = self._as_batch(x)
        shape = x.shape[1:]
        if shape != getattr(self, "_checked_shape", None):
            self.shapes(shape)  # raise a ShapeError naming the layer before any work is done
            self._checked_shape = shape
        self._pending = None
        if not training and len(x) <= SMALL_BATCH:
            out = self._small_batch(x)
            if out is not None:
                self._evaluated = True
                return out
        plan = self._last_plan = self.plan  # backward runs these same steps back
        self._evaluated = False  # the layers' own passes keep or drop what backward needs
        out = run(plan, x, training, join=self.fuse)
        self._pending = (out.shape, out.dtype) if training else None
        return out

    def _as_batch(self, x) -> np.ndarray:
        """``x`` as an array of the model's dtype with a batch axis, or raise as
        :meth:`forward` says."""
        try:
            array = np.asarray(x)
        except ValueError:  # a ragged list
            array = None
        if array is None or array.dtype.kind not in "biuf":
            raise TypeError(
                f"Sequential.forward takes a NumPy array (N, ...) of numbers (cast to the "
                f"model's {self.dtype}), got {type(x).__name__} {x!r:.40}"
            )
        if array.dtype != self.dtype:
            array = array.astype(self.dtype)
        if array.ndim < 2:
            raise ShapeError(f"the model expects a batch (N, ...), got shape {array.shape}")
        if not len(array):
            raise ShapeError(f"Sequential.forward: the batch is empty (input shape {array.shape})")
        return array

    def _small_batch(self, x: np.ndarray) -> np.ndarray | None:
        """The evaluation pass of a batch of at most :data:`~stablecnn.nn.inference.SMALL_BATCH`
        through an :class:`~stablecnn.nn.inference.InferencePlan` for its shape, made again
        when the shape, the layers, their kernels or their hooks change; ``None`` when the
        layers are not on the fast kernels or another thread is running the plan."""
        key = (
            x.shape,
            x.dtype,
            tuple(self.layers),
            tuple((layer.kernels, "forward" in vars(layer)) for layer in self.layers),
        )
        if self._inference is None or self._inference[0] != key:
            if self.kernels != "fast":
                return None
            self._inference = (key, InferencePlan(self.layers, x.shape, x.dtype))
        return self._inference[1](x)

    __call__ = forward

    def backward(self, dout: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Back-propagate dL/doutput through the steps the last :meth:`forward` ran, last to
        first; fills every layer's ``grads`` and returns dL/dinput.

        ``need_input_grad=False`` skips the first layer's input gradient, which training never
        reads (for Model 1 that saves the first conv's whole input gradient), and returns ``None``.

        ``dout`` of another floating dtype is cast to the model's, as :meth:`forward` casts
        its input.

        Raises:
            ShapeError: ``dout``'s shape is not the pending forward output's (naming both).
            TypeError: ``dout`` is not a NumPy array of floating values.
            RuntimeError: no ``forward(x, training=True)`` is pending: none yet, its backward
                already run, or an evaluation forward since (raised by the layer, from the
                last, that finds nothing kept; by the model after a small batch's evaluation,
                which runs a compiled plan instead of the layers).
        """
        if self._evaluated:  # the layers may still hold an older batch's arrays
            raise RuntimeError(
                "Sequential: backward needs a forward(x, training=True) first (an evaluation "
                "forward ran since)"
            )
        pending = self._pending
        if pending is not None:  # a refused gradient leaves the forward pending
            if isinstance(dout, np.ndarray) and dout.dtype.kind == "f" and dout.dtype != self.dtype:
                dout = dout.astype(self.dtype)  # as forward casts its input
            check_gradient("Sequential.backward", dout, *pending)
            self._pending = None
        plan = self._last_plan or self.plan  # before any forward, the layers say what is missing
        for layer in reversed(plan[1:]):
            dout = layer.backward(dout)
        return plan[0].backward(dout, need_input_grad=need_input_grad)

    # -- architecture as data ---------------------------------------------------------------------
    def config(self) -> dict:
        """The architecture as plain data (JSON-ready): input shape and each layer's config."""
        return {
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "layers": [layer.config() for layer in self.layers],
        }

    @classmethod
    def from_config(
        cls, config: dict, seed: int | None = 0, dtype=np.float32, weights: bool = True
    ) -> Sequential:
        """Build a model from :meth:`config`'s output, drawing initial weights from ``seed``.

        ``weights=False`` builds every layer by :meth:`Layer.without_weights`: the shapes,
        parameter counts, :meth:`summary` and ``repr`` of the model, with no parameter array
        allocated (``forward`` raises ``RuntimeError``).

        Raises:
            ConfigError: ``config`` is not a mapping with a ``"layers"`` list; a bad ``repeat``
                count (a layer config ``{"repeat": k, ...}`` stands for ``k`` copies of it, see
                :func:`stablecnn.nn.layers.expand_repeats`); a layer of an unknown type, with an
                argument it does not take or lacks, or with a value its constructor refuses (the
                message starts ``"layer <index>: "``); an
                ``input_shape`` that is not a list of positive ints.
            ShapeError: the layers do not fit ``input_shape`` (naming the layer).
        """
        from stablecnn.nn.layers import expand_repeats
        from stablecnn.nn.layers import from_config as layer_from_config

        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ConfigError(f"a model config needs a 'layers' list, got {str(config)[:80]}")
        rng = np.random.default_rng(seed)
        layers = []
        for i, layer_config in enumerate(expand_repeats(config["layers"])):
            try:
                layers.append(
                    layer_from_config(layer_config, rng=rng, dtype=dtype, weights=weights)
                )
            except ValueError as exc:
                raise type(exc)(f"layer {i}: {exc}") from None
        shape = config.get("input_shape")
        if shape is not None and not (
            isinstance(shape, (list, tuple)) and all(isinstance(v, int) and v > 0 for v in shape)
        ):
            raise ConfigError(f"input_shape must be a list of positive ints, got {shape!r}")
        return cls(*layers, input_shape=tuple(shape) if shape else None)

    # -- parameters -----------------------------------------------------------------------------
    def parameters(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(name, param, grad)`` triples; the arrays are the layers' own, updated in place.

        Names are ``"<layer index>.<param>"``; a block's parameters carry its own dotted names
        after the index (``"3.body.0.weight"``), as in PyTorch."""
        triples = []
        for i, layer in enumerate(self.layers):
            params, grads = layer.params, layer.grads  # a block gathers these from its children
            triples += [(f"{i}.{key}", param, grads[key]) for key, param in params.items()]
        return triples

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{name: array}`` for every parameter and buffer (the arrays themselves, not copies).

        Buffers (non-trainable state such as BatchNorm's ``running_mean``) are named like
        parameters, ``"<layer index>.<buffer>"``, and follow their layer's parameters.
        """
        state = {}
        for i, layer in enumerate(self.layers):
            state.update({f"{i}.{key}": value for key, value in layer.params.items()})
            state.update({f"{i}.{key}": value for key, value in layer.buffers.items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters and buffers in place, checking names, shapes and dtypes.

        Parameters and floating buffers take floating values; integer buffers (counters) take
        integer values.

        Raises:
            ConfigError: a name of the model missing from ``state``, or one ``state`` has that
                the model does not (both lists in the message); nothing is copied then.
            ShapeError: an array's shape is not the parameter's or buffer's.
            TypeError: integer values for a floating array, or the other way round.

            A shape or dtype error leaves the arrays before it (in :meth:`state_dict` order)
            already copied.
        """
        own = self.state_dict()
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or extra:
            raise ConfigError(
                f"state does not match the model: missing {missing}, unexpected {extra}"
            )
        params = {name for name, _, _ in self.parameters()}
        for name, target in own.items():
            what = "parameter" if name in params else "buffer"
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ShapeError(
                    f"{what} {name!r}: expected shape {target.shape}, got {value.shape}"
                )
            if np.issubdtype(target.dtype, np.floating):
                if not np.issubdtype(value.dtype, np.floating):
                    raise TypeError(f"{what} {name!r}: expected floating values, got {value.dtype}")
            elif not np.issubdtype(value.dtype, np.integer):
                raise TypeError(f"{what} {name!r}: expected integer values, got {value.dtype}")
            target[...] = value

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)

    # -- inference ------------------------------------------------------------------------------
    def forward_batches(
        self, x, batch_size: int = 1000, normalizer=None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Evaluation-mode forward passes over ``x``, ``batch_size`` examples at a time.

        The one batched-inference loop: :meth:`predict_proba`, :meth:`predict`,
        :func:`stablecnn.training.metrics.evaluate` (and so the trainer's evaluation and the
        plots), the ``predict`` command and the original predict log all run it. Only one batch
        is normalised (and run) at a time, so uint8 images never become a float copy of the
        whole set.

        Args:
            x: examples (N, ...): inputs for the model, or raw ones for ``normalizer``.
            batch_size: examples per forward pass (the last pass may hold fewer), >= 1.
            normalizer: ``normalizer(batch, dtype=...)``, applied to each slice ``x[a:z]``
                with the model's dtype before the forward pass (a
                :class:`stablecnn.data.Normalizer` turns uint8 images (B, H, W) into
                (B, 1, H, W) floats); ``None`` passes the slices as they are.

        Yields:
            ``(start, logits)``: the logits (B, K) of examples ``start .. start + B - 1``.

        Raises:
            ConfigError: ``batch_size`` is not an int >= 1 (when called, before any work).
            ShapeError: a batch does not fit the model (see :meth:`forward`).

        Example:
            >>> for start, logits in model.forward_batches(images, 500, norm):  # doctest: +SKIP
            ...     predicted[start : start + len(logits)] = logits.argmax(axis=1)
        """
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool):
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")

        def batches():
            for start in range(0, len(x), batch_size):
                batch = x[start : start + batch_size]
                if normalizer is not None:
                    batch = normalizer(batch, dtype=self.dtype)
                yield start, self.forward(batch, training=False)

        return batches()

    def predict_proba(self, x, batch_size: int = 1000, normalizer=None) -> np.ndarray:
        """Class probabilities (N, K), the softmax of the logits, in the model's dtype, from
        :meth:`forward_batches` (``batch_size`` and ``normalizer`` as there).

        Raises:
            ConfigError: ``batch_size`` is not an int >= 1.
            ShapeError: the examples do not fit the model (see :meth:`forward`).
        """
        x = np.asarray(x)
        out = [softmax(logits) for _, logits in self.forward_batches(x, batch_size, normalizer)]
        return np.concatenate(out) if out else np.zeros((0, 0), self.dtype)

    def predict(self, x, batch_size: int = 1000, normalizer=None) -> np.ndarray:
        """Predicted class indices (N,): the argmax of the logits, from :meth:`forward_batches`
        (``batch_size`` and ``normalizer`` as there).

        Raises:
            ConfigError: ``batch_size`` is not an int >= 1.
            ShapeError: the examples do not fit the model (see :meth:`forward`).
        """
        x = np.asarray(x)
        out = [
            logits.argmax(axis=1) for _, logits in self.forward_batches(x, batch_size, normalizer)
        ]
        return np.concatenate(out) if out else np.zeros(0, np.intp)

    # -- description ----------------------------------------------------------------------------
    def summary(self, input_shape=None) -> str:
        """A table of each layer, its output shape and its parameter count; a block's row is
        followed by one row for each of its layers (``3.body.0``), whose counts its row sums.

        Raises:
            ConfigError: no ``input_shape`` given and none given when the model was built.
            ShapeError: a layer does not fit the shape it gets (see :meth:`shapes`).
        """
        input_shape = input_shape or self.input_shape
        if input_shape is None:
            raise ConfigError("summary needs an input_shape (the model was built without one)")
        shapes = self.shapes(input_shape)
        rows = [
            ("#", "layer", "output shape", "params"),
            ("", "input", str(tuple(input_shape)), ""),
        ]
        before = [tuple(input_shape), *shapes[:-1]]
        for i, (layer, shape) in enumerate(zip(self.layers, shapes)):
            describe = getattr(layer, "describe", None)  # a block: one line, then its layers
            rows.append(
                (
                    str(i),
                    describe() if describe else repr(layer),
                    str(shape),
                    f"{layer.num_params:,}",
                )
            )
            if hasattr(layer, "child_shapes"):
                rows += [
                    (f"{i}.{name}", f"  {child!r}", str(out), f"{child.num_params:,}")
                    for name, child, out in layer.child_shapes(before[i])
                ]
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = [
            "  ".join(
                cell.ljust(w) if c < 3 else cell.rjust(w)
                for c, (cell, w) in enumerate(zip(r, widths))
            )
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"total parameters: {self.num_params:,} ({self.dtype})")
        return "\n".join(lines)

    def __repr__(self):
        body = "\n".join(
            f"  ({i}): " + repr(layer).replace("\n", "\n  ") for i, layer in enumerate(self.layers)
        )
        return f"Sequential(\n{body}\n)"
