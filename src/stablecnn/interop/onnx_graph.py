"""An ONNX graph indexed for import: who makes and who reads each tensor, its constants, and the
checked attributes of each node.

Every refusal names the file, the node (its index in the graph, its name when it has one) and
its op, and, for an attribute, the attribute and its value: ``model.onnx: node 4 '/conv1/Conv'
(Conv): attribute group = 2 is not supported (...)``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from stablecnn.errors import ModelFileError
from stablecnn.interop.onnx_read import Tensors

# AttributeProto.AttributeType codes of the kinds the supported ops use
_KINDS = {"float": 1, "int": 2, "string": 3, "floats": 6, "ints": 7}
_DOMAINS = ("", "ai.onnx")


class Graph:
    """The nodes of ``model.graph`` and the index the import walks them by.

    Args:
        model: the ``onnx.ModelProto``.
        tensors: the :class:`~stablecnn.interop.onnx_read.Tensors` that reads its weights.
        source: the file, for messages.

    Raises:
        ModelFileError: a tensor made twice, a node of another domain than ONNX's own, or a
            ``Constant`` node that is not a tensor.
    """

    batch: int | None = None  # the input's batch size when the graph fixes it (a traced export)

    def __init__(self, model, tensors: Tensors, source):
        self.source, self.tensors = str(source), tensors
        self.nodes = list(model.graph.node)
        self.opset = next(
            (int(o.version) for o in model.opset_import if o.domain in _DOMAINS), None
        )
        self.constants = {t.name: t for t in model.graph.initializer}  # name -> TensorProto
        self._arrays: dict[str, np.ndarray] = {}
        self.producer: dict[str, int] = {}
        self.users: dict[str, list[tuple[int, int]]] = defaultdict(list)  # -> (node, position)
        for i, node in enumerate(self.nodes):
            if node.domain not in _DOMAINS:
                self.fail(
                    i,
                    f"op {node.op_type!r} of domain {node.domain!r} is not supported: stablecnn "
                    f"imports ops of ONNX's own domain only",
                )
            if node.op_type == "Constant":
                self._constant(i, node)
                continue
            for position, name in enumerate(node.input):
                if name:
                    self.users[name].append((i, position))
            for name in node.output:
                if name in self.producer or name in self.constants:
                    self.fail(i, f"makes tensor {name!r}, which another node or initializer makes")
                if name:
                    self.producer[name] = i

    # -- messages ---------------------------------------------------------------------------------
    def where(self, i: int) -> str:
        node = self.nodes[i]
        name = f" {node.name!r}" if node.name else ""
        return f"node {i}{name} ({node.op_type})"

    def fail(self, i: int | None, message: str):
        where = f"{self.source}: {self.where(i)}" if i is not None else self.source
        raise ModelFileError(f"{where}: {message}")

    # -- constants --------------------------------------------------------------------------------
    def _constant(self, i: int, node) -> None:
        attrs = {a.name: a for a in node.attribute}
        if set(attrs) != {"value"} or attrs["value"].type != 4:  # TENSOR
            names = sorted(attrs)
            self.fail(
                i,
                f"attribute(s) {names} are not supported: stablecnn reads a Constant's 'value' "
                f"tensor only",
            )
        if len(node.output) != 1 or node.output[0] in self.constants:
            self.fail(i, "must make one tensor of a name no other constant has")
        self.constants[node.output[0]] = attrs["value"].t

    def is_const(self, name: str) -> bool:
        return name in self.constants

    def const(self, i: int, position: int, what: str, ndim: int | tuple | None = None):
        """The constant at input ``position`` of node ``i`` as an array (``what`` names it).

        Raises:
            ModelFileError: the input is missing or computed (not a constant), or its rank is
                not ``ndim``.
        """
        node = self.nodes[i]
        name = node.input[position] if position < len(node.input) else ""
        if not name:
            self.fail(i, f"has no {what} (input {position})")
        if name not in self.constants:
            how = "is computed by the graph" if name in self.producer else "is made nowhere"
            self.fail(
                i,
                f"its {what} {name!r} (input {position}) {how}; stablecnn takes it only as a "
                f"constant (an initializer)",
            )
        if name not in self._arrays:
            self._arrays[name] = self.tensors.array(self.constants[name], f"tensor {name!r}")
        array = self._arrays[name]
        ndims = (ndim,) if isinstance(ndim, int) else ndim
        if ndims is not None and array.ndim not in ndims:
            self.fail(i, f"its {what} {name!r} has shape {array.shape}, expected {ndim}-D")
        return array

    def optional_const(self, i: int, position: int, what: str, ndim=None):
        node = self.nodes[i]
        if position >= len(node.input) or not node.input[position]:
            return None
        return self.const(i, position, what, ndim)

    # -- structure --------------------------------------------------------------------------------
    def data_users(self, tensor: str) -> list[int]:
        """The nodes that read ``tensor``, in graph order (one entry per input that reads it)."""
        return [i for i, _ in self.users.get(tensor, [])]

    def sole_user(self, tensor: str) -> int | None:
        """The one node that reads ``tensor``, or None when none or several do."""
        users = self.users.get(tensor, [])
        return users[0][0] if len(users) == 1 else None

    def output(self, i: int) -> str:
        """The one output of node ``i`` that the graph uses (the others must be unused)."""
        node = self.nodes[i]
        if not node.output or not node.output[0]:
            self.fail(i, "has no output")
        extra = [o for o in node.output[1:] if o and (self.users.get(o) or o in self._outputs)]
        if extra:
            self.fail(
                i,
                f"its extra output(s) {extra} are used; stablecnn imports inference graphs, "
                f"where only the first output is",
            )
        return node.output[0]

    _outputs: frozenset = frozenset()

    def set_outputs(self, names) -> None:
        self._outputs = frozenset(names)

    def reachable(self, i: int) -> set[int]:
        """Node ``i`` and every node that reads what it makes, directly or not."""
        seen, stack = {i}, [i]
        while stack:
            for name in self.nodes[stack.pop()].output:
                for j, _ in self.users.get(name, []):
                    if j not in seen:
                        seen.add(j)
                        stack.append(j)
        return seen

    # -- attributes -------------------------------------------------------------------------------
    def attrs(self, i: int, spec: dict[str, tuple[str, object]]) -> dict:
        """Node ``i``'s attributes by ``spec`` (name -> (kind, default)), defaults filled in.

        Raises:
            ModelFileError: an attribute ``spec`` does not name (naming it), or one of another
                kind (an int where a list of ints belongs, a tensor, a graph...).
        """
        node, out = self.nodes[i], {k: default for k, (_, default) in spec.items()}
        for attr in node.attribute:
            if attr.name not in spec:
                self.fail(
                    i,
                    f"attribute {attr.name!r} is not supported (stablecnn reads "
                    f"{sorted(spec) or 'none'} for {node.op_type})",
                )
            kind = spec[attr.name][0]
            if attr.type != _KINDS[kind]:
                self.fail(i, f"attribute {attr.name!r} must be of kind {kind}")
            if kind == "float":
                out[attr.name] = float(attr.f)
            elif kind == "int":
                out[attr.name] = int(attr.i)
            elif kind == "string":
                out[attr.name] = attr.s.decode("utf-8", "replace")
            elif kind == "ints":
                out[attr.name] = [int(v) for v in attr.ints]
            else:
                out[attr.name] = [float(v) for v in attr.floats]
        return out

    def refuse(self, i: int, name: str, value, why: str):
        """Raise for attribute ``name`` of node ``i`` whose ``value`` stablecnn cannot import."""
        self.fail(i, f"attribute {name} = {value!r} is not supported: {why}")
