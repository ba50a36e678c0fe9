"""Import an ONNX model into stablecnn: its graph as layers, its weights, its normalisation.

The graph is walked from its input to its output (:func:`import_onnx`):

1. Elementwise ``Sub``, ``Div``, ``Mul`` and ``Add`` by constants at the very front (one value,
   or one per channel) are the normalisation: they become the checkpoint's
   :class:`~stablecnn.data.Normalizer`, so the imported model, like an exported one, takes
   pixels in [0, 255]. ``Sub`` then ``Div`` (what stablecnn exports, and PyTorch's
   ``(x - mean) / std``) are taken exactly; other chains are composed into one affine map.
2. Each node (or pair, see :mod:`~stablecnn.interop.onnx_ops`) becomes a layer, in order.
3. A tensor read by two nodes opens a residual block: the two paths must meet again in an
   ``Add`` (the earliest node both reach). The path feeding the Add's first input is the body
   (unless it is empty), the other the shortcut (none: the identity); a ``Relu`` that alone
   reads the sum is the block's activation. Blocks nest.
4. A ``Softmax`` or ``LogSoftmax`` whose output is the graph's is left out: stablecnn models
   output logits (``predict`` applies the softmax).

Anything else is refused with the node, its op and the attribute at fault. A file stablecnn
exported also carries its architecture in the metadata: when that record describes the same
computation as the graph, it is used, which restores what inference does not see (Dropout
layers, batch norm's momentum, ``padding="same"``, the model's name), so stablecnn -> ONNX ->
stablecnn gives back the same model file and bit-identical weights and outputs. A record that
does not match the graph is ignored (with a note): the graph is what runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stablecnn.errors import ConfigError, DataError, ModelFileError
from stablecnn.files import atomic_write
from stablecnn.interop import common
from stablecnn.interop.onnx_graph import Graph
from stablecnn.interop.onnx_ops import convert
from stablecnn.interop.onnx_read import Tensors, read_model
from stablecnn.nn import modelfile
from stablecnn.nn.layers import (
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    LeakyReLU,
    Linear,
    MaxPool2d,
)
from stablecnn.nn.layers import from_config as layer_from_config
from stablecnn.nn.model import Sequential

_AFFINE = ("Sub", "Add", "Mul", "Div")
_ELEM_DTYPES = {1: np.dtype(np.float32), 11: np.dtype(np.float64)}


@dataclass
class Imported:
    """An imported model: the model, its model file, its normaliser and the checkpoint record.

    Attributes:
        model: the :class:`~stablecnn.nn.model.Sequential` with the file's weights.
        config: its model file (``name``, ``description``, ``input_shape``, ``layers``).
        normalizer: what turns pixels in [0, 255] into the model's input.
        meta: the checkpoint's ``meta`` record (normaliser, dataset, where it came from).
        notes: what the import decided that a user should know (one sentence each).
    """

    model: Sequential
    config: dict
    normalizer: object
    meta: dict
    notes: list[str] = field(default_factory=list)

    def save(self, folder, overwrite: bool = False) -> tuple[Path, Path]:
        """Write ``model.json`` (the model file) and ``checkpoint.npz`` into ``folder`` (made if
        needed), each atomically; returns their paths.

        Raises:
            ConfigError: ``folder`` already holds a checkpoint or a model file and ``overwrite``
                is false.
            CheckpointError, OSError: a file cannot be written.
        """
        from stablecnn.training import checkpoint

        folder = Path(folder)
        model_path, ckpt_path = folder / "model.json", folder / "checkpoint.npz"
        for path in (ckpt_path, model_path):
            if path.exists() and not overwrite:
                raise ConfigError(f"{path} exists; choose another folder (or overwrite it)")
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.config, indent=2) + "\n"
        atomic_write(model_path, lambda f: f.write(text.encode()))
        checkpoint.save(ckpt_path, self.model, self.meta)
        return model_path, ckpt_path


def import_onnx(path, normalizer=None) -> Imported:
    """Read the ONNX model at ``path`` into stablecnn (see the module doc for the rules).

    Args:
        path: an ``.onnx`` file; external data is read only from its folder
            (:mod:`~stablecnn.interop.onnx_read`).
        normalizer: for a graph that takes its input already normalised (no Sub/Div at its
            front): the :class:`~stablecnn.data.Normalizer` (or its ``to_dict()``) that turns
            pixels in [0, 255] into that input, e.g. ``Normalizer(0.1307 * 255, 0.3081 * 255)``
            for torchvision's MNIST recipe. Default: the graph's own, else pixels as they are.

    Returns:
        :class:`Imported`.

    Raises:
        ModelFileError: the file cannot be read safely, or holds a graph outside the supported
            subset (naming the node, its op and the attribute), or a model beyond the limits
            of a model file (:mod:`stablecnn.nn.modelfile`).
        ConfigError: the onnx package is missing (the message says how to install it); a
            ``normalizer`` given for a graph that already normalises its input.
    """
    from stablecnn.data import Normalizer

    model, folder = read_model(path)
    g = Graph(model, Tensors(path, folder), path)
    if g.opset is None or g.opset < common.MIN_IMPORT_OPSET:
        g.fail(None, f"opset {g.opset} of ONNX's domain: stablecnn imports opset 9 and later")
    x, output, dtype, shape = _ends(g, model)
    g.set_outputs([output])
    notes: list[str] = []
    t, graph_norm = _front(g, x, shape[0], notes)
    items, t, _ = _chain(g, t, shape, None, 0, output, notes)
    if t != output:
        g.fail(None, f"the walk from the input ends at {t!r}, not at the output {output!r}")
    if not items:
        g.fail(None, "the graph has no layer between its input and its output")
    name = model.graph.name or Path(path).stem
    config = {
        "name": name,
        "description": f"imported from {Path(path).name}"
        + (
            f" ({model.producer_name} {model.producer_version})".rstrip()
            if model.producer_name
            else ""
        ),
        "input_shape": list(shape),
        "layers": [item[0] for item in items],
    }
    weights = {f"{i}.{key}": value for i, (_, w) in enumerate(items) for key, value in w.items()}
    _check_dtypes(g, weights, dtype)
    modelfile.validate(config, source=f"{path} (as a stablecnn model)")
    props = {p.key: p.value for p in model.metadata_props}
    config, weights = _restore_architecture(props, config, weights, notes)
    if normalizer is not None and graph_norm is not None:
        raise ConfigError(
            f"{path}: the graph normalises its input itself ({graph_norm.to_dict()}); give no "
            f"normalizer"
        )
    if normalizer is None:
        normalizer = _restore_normalizer(props, graph_norm, notes)
    if isinstance(normalizer, dict):
        normalizer = Normalizer.from_dict(normalizer)
    if normalizer is None:
        normalizer = Normalizer(0.0, 1.0, "original")
        notes.append(
            "the graph does not normalise its input, so stablecnn feeds it pixels in [0, 255] as "
            "they are; if it expects inputs scaled otherwise, give the mean and std that map "
            "pixels to them"
        )
    built = _build(config, weights, dtype)
    meta = _meta(path, model, g, props, built, normalizer, notes)
    return Imported(built, config, normalizer, meta, notes)


def _ends(g: Graph, model):
    """The input and output tensor names, the dtype and the per-example input shape."""
    inputs = [v for v in model.graph.input if v.name not in g.constants]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        g.fail(
            None,
            f"the graph has {len(inputs)} inputs and {len(model.graph.output)} outputs; a "
            f"stablecnn model has one of each",
        )
    value = inputs[0]
    kind = value.type.WhichOneof("value")
    elem = value.type.tensor_type.elem_type if kind == "tensor_type" else None
    if elem not in _ELEM_DTYPES:
        g.fail(None, f"input {value.name!r} is not a float32 or float64 tensor")
    dims = value.type.tensor_type.shape.dim
    if len(dims) != 4 or any(
        d.WhichOneof("value") != "dim_value" or d.dim_value < 1 for d in dims[1:]
    ):
        shown = [
            d.dim_value if d.WhichOneof("value") == "dim_value" else d.dim_param or "?"
            for d in dims
        ]
        g.fail(
            None,
            f"input {value.name!r} has shape {shown}; stablecnn models take images (N, C, H, W) "
            f"with C, H and W fixed",
        )
    if value.name in g.producer:
        g.fail(g.producer[value.name], f"makes the graph's input {value.name!r}")
    if dims[0].WhichOneof("value") == "dim_value":
        g.batch = int(dims[0].dim_value)
    shape = tuple(int(d.dim_value) for d in dims[1:])
    return value.name, model.graph.output[0].name, _ELEM_DTYPES[elem], shape


def _chain(g: Graph, t: str, shape: tuple, stop, depth: int, output: str, notes: list):
    """The layers from tensor ``t`` on, until the tensor that only node ``stop`` reads (the end
    of a branch) or, with ``stop`` None, the graph's output. Returns ``(items, tensor, shape)``:
    items are ``(config, weights)``."""
    items = []
    while True:
        users = g.data_users(t)
        if stop is not None and users == [stop]:
            return items, t, shape
        if stop is None and t == output:
            if users:
                g.fail(users[0], f"reads the graph's output {output!r}; nothing may follow it")
            return items, t, shape
        if not users:
            g.fail(
                g.producer.get(t),
                f"its output {t!r} is read by no node and is not the graph's output",
            )
        if len(users) > 2:
            g.fail(
                g.producer.get(t),
                f"its output {t!r} is read by {len(users)} nodes; stablecnn branches into two "
                f"paths only (a residual block's body and shortcut)",
            )
        if len(users) == 2:
            item, t, shape = _residual(g, t, shape, users, depth, output, notes)
            items.append(item)
            continue
        i = users[0]
        node = g.nodes[i]
        if node.op_type in ("Softmax", "LogSoftmax") and stop is None:
            return items, _final_softmax(g, i, shape, output, notes), shape
        if node.op_type == "Add" and all(name and not g.is_const(name) for name in node.input):
            g.fail(
                i,
                "adds two computed tensors that do not branch from one tensor; stablecnn adds "
                "only the two paths of a residual block",
            )
        step = convert(g, i, t, shape)
        if step.config is not None:
            items.append((step.config, step.weights))
        t, shape = step.output, step.shape


def _residual(g: Graph, t: str, shape: tuple, users: list[int], depth: int, output, notes):
    """The residual block that opens where two nodes read ``t``."""
    if depth >= modelfile.MAX_DEPTH:
        g.fail(users[0], f"opens a residual block nested more than {modelfile.MAX_DEPTH} deep")
    first, second = users
    if first == second:
        g.fail(first, f"reads {t!r} twice; stablecnn adds two different paths")
    common_nodes = g.reachable(first) & g.reachable(second)
    if not common_nodes:
        g.fail(first, f"the two paths from {t!r} never meet; stablecnn models have one output")
    join = min(common_nodes)  # nodes are in topological order: the first both paths reach
    node = g.nodes[join]
    if node.op_type != "Add" or len(node.input) != 2 or any(g.is_const(n) for n in node.input):
        g.fail(
            join,
            f"joins the two paths from {t!r}; stablecnn joins paths only by adding them (Add, "
            f"a residual block)",
        )
    g.attrs(join, {})
    ends = {}
    for user in (first, second):
        if user == join:
            ends[t] = ([], shape)
            continue
        step = convert(g, user, t, shape)
        head = [(step.config, step.weights)] if step.config is not None else []
        rest, end, end_shape = _chain(g, step.output, step.shape, join, depth + 1, output, notes)
        ends[end] = (head + rest, end_shape)
    if set(ends) != set(node.input):
        g.fail(join, f"adds {list(node.input)}, not the ends of the two paths from {t!r}")
    (body, body_shape), (shortcut, short_shape) = ends[node.input[0]], ends[node.input[1]]
    if not body:
        (body, body_shape), (shortcut, short_shape) = (shortcut, short_shape), (body, body_shape)
    if body_shape != short_shape:
        g.fail(join, f"adds (N, {body_shape}) to (N, {short_shape}); they must agree")
    out, activation = g.output(join), None
    relu = g.sole_user(out)
    if relu is not None and g.nodes[relu].op_type == "Relu" and out != output:
        g.attrs(relu, {})
        out, activation = g.output(relu), "ReLU"
    config = {"type": "Residual", "body": [c for c, _ in body]}
    if shortcut:
        config["shortcut"] = [c for c, _ in shortcut]
    if activation:
        config["activation"] = activation
    weights = {
        f"{branch}.{k}.{key}": value
        for branch, layers in (("body", body), ("shortcut", shortcut))
        for k, (_, w) in enumerate(layers)
        for key, value in w.items()
    }
    return (config, weights), out, body_shape


def _final_softmax(g: Graph, i: int, shape: tuple, output: str, notes: list) -> str:
    node = g.nodes[i]
    default = 1 if g.opset < 13 else -1
    axis = g.attrs(i, {"axis": ("int", default)})["axis"]
    out = g.output(i)
    if out != output or len(shape) != 1 or axis % 2 != 1:
        g.fail(
            i,
            f"stablecnn imports a {node.op_type} only as the graph's last node, over the classes "
            f"of (N, K) scores (axis 1)",
        )
    notes.append(
        f"the graph ends in {node.op_type}, which was left out: stablecnn models output the "
        f"logits (predict applies the softmax)"
    )
    return out


def _front(g: Graph, t: str, channels: int, notes: list):
    """The elementwise affine map by constants at the graph's front, as a Normalizer (or None),
    and the tensor after it."""
    from stablecnn.data import Normalizer

    ops, scale, shift = [], np.ones(channels), np.zeros(channels)
    while (j := g.sole_user(t)) is not None:
        node = g.nodes[j]
        if node.op_type not in _AFFINE or len(node.input) != 2 or t not in node.input:
            break
        other = 1 - list(node.input).index(t)
        if not g.is_const(node.input[other]):
            break
        g.attrs(j, {})
        if other == 0 and node.op_type in ("Sub", "Div"):
            g.fail(j, f"computes constant {node.op_type.lower()} input: not a normalisation")
        c = g.const(j, other, "constant")
        if c.dtype.kind != "f" or not _per_channel(c.shape, channels):
            g.fail(
                j,
                f"its constant of shape {c.shape} ({c.dtype}) is not one value or one per "
                f"channel of the (N, {channels}, H, W) input",
            )
        values = np.broadcast_to(c, (1, channels, 1, 1)).reshape(channels)
        exact = [
            float(common.float32_decimal(v)) if c.dtype == np.float32 else float(v) for v in values
        ]
        v = np.asarray(exact)
        if node.op_type == "Sub":
            shift -= v
        elif node.op_type == "Add":
            shift += v
        elif node.op_type == "Mul":
            scale, shift = scale * v, shift * v
        else:
            scale, shift = scale / v, shift / v
        ops.append((node.op_type, exact))
        t = g.output(j)
    if not ops:
        return t, None
    if (scale <= 0).any():
        g.fail(j, "the normalisation at the input scales it by a negative or zero factor")
    kinds = [op for op, _ in ops]
    if kinds in (["Sub", "Div"], ["Div"], ["Sub"]):  # (x - mean) / std, exactly
        mean = ops[0][1] if kinds[0] == "Sub" else [0.0] * channels
        std = ops[-1][1] if kinds[-1] == "Div" else [1.0] * channels
    else:
        mean, std = list(-shift / scale), list(1 / scale)
        notes.append(
            f"the input's {' then '.join(kinds)} were composed into (x - mean) / std; it may "
            f"round differently from the graph in the last bit"
        )
    same = len(set(mean)) == 1 and len(set(std)) == 1
    mean, std = (mean[0], std[0]) if same else (tuple(mean), tuple(std))
    kind = "unit" if same and mean == 0 and std == 255 else "original"
    try:
        return t, Normalizer(mean, std, kind)
    except DataError as exc:
        g.fail(j, f"its normalisation cannot be a stablecnn Normalizer: {exc}")


def _per_channel(shape: tuple, channels: int) -> bool:
    """Whether a constant of ``shape`` holds one value, or one per channel, of (N, C, H, W)."""
    try:
        return np.broadcast_shapes(shape, (1, channels, 1, 1)) == (1, channels, 1, 1)
    except ValueError:  # shapes that do not broadcast at all
        return False


def _check_dtypes(g: Graph, weights: dict, dtype: np.dtype) -> None:
    found = {str(w.dtype) for w in weights.values()}
    if found - {str(dtype)}:
        g.fail(
            None,
            f"the input is {dtype} but the weights are {sorted(found)}; a stablecnn model "
            f"computes in one dtype",
        )


def _build(config: dict, weights: dict, dtype) -> Sequential:
    """The model of ``config`` with ``weights`` (every parameter must have one)."""
    model = Sequential.from_config(config, seed=0, dtype=dtype)
    state = model.state_dict()
    params = {name for name, _, _ in model.parameters()}
    missing = sorted(params - set(weights))
    if missing or set(weights) - set(state):
        raise AssertionError(
            f"import bug: missing {missing}, extra {sorted(set(weights) - set(state))}"
        )
    for name, value in weights.items():
        state[name][...] = value
    return model


# -- the records an export keeps in the metadata ---------------------------------------------------
def _form(layers: list) -> tuple:
    """What the layers compute at inference, in order (Dropout left out), for comparing two
    descriptions of one model."""
    out = []
    for config in layers:
        kind = config["type"]
        if kind == "Dropout":
            continue
        if kind == "Residual":
            body, short = _form(config["body"]), _form(config.get("shortcut", []))
            out.append((kind, body, short, config.get("activation")))
            continue
        layer = layer_from_config(config, weights=False)
        if isinstance(layer, Conv2d):
            form = (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride)
            form += (layer.padding, layer.bias)
        elif isinstance(layer, MaxPool2d):
            form = (layer.kernel_size, layer.stride)
        elif isinstance(layer, AvgPool2d):
            form = (layer.kernel_size, layer.stride, layer.padding)
        elif isinstance(layer, Linear):
            form = (layer.in_features, layer.out_features)
        elif isinstance(layer, (BatchNorm1d, BatchNorm2d)):
            form = (layer.num_features, np.float32(layer.eps))
        elif isinstance(layer, LeakyReLU):
            form = (np.float32(layer.negative_slope),)
        else:
            form = ()
        out.append((kind, *form))
    return tuple(out)


def _leaf_paths(layers: list, prefix: str = "") -> list[str]:
    """The names of the layers that hold weights' places, in order (Dropout left out)."""
    paths = []
    for i, config in enumerate(layers):
        if config["type"] == "Residual":
            paths += _leaf_paths(config["body"], f"{prefix}{i}.body.")
            paths += _leaf_paths(config.get("shortcut", []), f"{prefix}{i}.shortcut.")
        elif config["type"] != "Dropout":
            paths.append(f"{prefix}{i}")
    return paths


def _restore_architecture(props: dict, config: dict, weights: dict, notes: list):
    """The exporter's architecture record in place of the graph's, when both compute the same."""
    text = props.get(common.KEY_ARCHITECTURE)
    if text is None:
        return config, weights
    try:
        record = json.loads(text)
        if not isinstance(record, dict):
            raise ModelFileError("not a table")
        layers = modelfile.validate(record, source="the architecture record").config()["layers"]
    except (ValueError, RecursionError) as exc:  # JSON and ModelFileError are ValueErrors
        notes.append(f"the file's stablecnn architecture record was ignored: {str(exc)[:200]}")
        return config, weights
    if record.get("input_shape") != config["input_shape"] or _form(layers) != _form(
        config["layers"]
    ):
        notes.append(
            "the file's stablecnn architecture record does not describe its graph (edited "
            "after the export?): the model was imported from the graph"
        )
        return config, weights
    moved = dict(zip(_leaf_paths(config["layers"]), _leaf_paths(layers)))
    renamed = {}
    for key, value in weights.items():
        path, _, param = key.rpartition(".")
        renamed[f"{moved[path]}.{param}"] = value
    restored = {**config, "layers": layers}
    if isinstance(record.get("name"), str):
        restored["name"] = record["name"]
    return restored, renamed


def _restore_normalizer(props: dict, graph_norm, notes: list):
    """The exporter's exact normaliser record when it is what the graph computes."""
    from stablecnn.data import Normalizer

    text = props.get(common.KEY_NORMALIZER)
    if text is None:
        return graph_norm
    try:
        record = Normalizer.from_dict(json.loads(text))
    except (ValueError, TypeError, RecursionError) as exc:
        notes.append(f"the file's normalizer record was ignored: {str(exc)[:200]}")
        return graph_norm

    def values(norm):
        return [np.float32(v) for v in np.atleast_1d(norm.mean)], [
            np.float32(v) for v in np.atleast_1d(norm.std)
        ]

    if graph_norm is None or values(record) != values(graph_norm):
        notes.append("the file's normalizer record does not match its graph: the graph's is used")
        return graph_norm
    return record


def _meta(path, model, g: Graph, props: dict, built: Sequential, normalizer, notes) -> dict:
    from stablecnn.data.specs import SPECS

    classes = built.shapes(built.input_shape)[-1]
    names = None
    try:
        names = json.loads(props[common.KEY_CLASS_NAMES])
    except (KeyError, ValueError, RecursionError):
        pass
    if not (
        isinstance(names, list)
        and all(isinstance(n, str) for n in names)
        and (len(names),) == tuple(classes)
    ):
        names = None
    record = {
        "from": str(Path(path).absolute()),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opset": g.opset,
        "notes": list(notes),
    }
    if names is not None:
        record["class_names"] = names
    meta = {"normalizer": normalizer.to_dict(), "imported": record}
    dataset = props.get(common.KEY_DATASET)
    if dataset in SPECS:  # predict, evaluate and plot read the class names and data from it
        meta["train"] = {"dataset": dataset}
        meta["data"] = {"dataset": dataset, "data_dir": None, "verify": True}
    return meta
