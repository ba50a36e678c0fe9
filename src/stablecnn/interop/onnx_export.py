"""Export a stablecnn model or checkpoint to ONNX, the exchange format runtimes and viewers read.

The graph takes what a camera or an image file gives, float32 pixels in [0, 255] shaped
(N, C, H, W) with a dynamic batch axis N, and does everything stablecnn does to them: the
checkpoint's normalisation first (``Sub`` then ``Div``, per channel for colour: the same float32
operations as :class:`~stablecnn.data.Normalizer`, so the same bits), then one ONNX node per
layer, in order, evaluated as in inference (batch norm on its running statistics, Dropout the
identity and so left out). It outputs the logits (N, K), or the probabilities with
``softmax=True``. Each layer becomes:

=================  =========================================================================
stablecnn          ONNX (the default domain)
=================  =========================================================================
Conv2d             ``Conv`` (strides, pads ``[top, left, bottom, right]``; no bias input when
                   ``bias=False``)
MaxPool2d          ``MaxPool`` (any stride: Model 1's overlapping 2x2 windows of stride 1)
AvgPool2d          ``AveragePool`` (``count_include_pad=1``, as the layer counts padding zeros)
GlobalAvgPool2d    ``GlobalAveragePool`` then ``Flatten`` (the layer outputs (N, C))
Linear             ``Gemm`` with ``transB=1`` (the weight is (out, in), as PyTorch's)
ReLU, LeakyReLU    ``Relu``, ``LeakyRelu`` (``alpha`` = ``negative_slope``)
Flatten            ``Flatten`` with ``axis=1`` (C order: channels, rows, columns)
BatchNorm1d/2d     ``BatchNormalization`` (``scale``, ``B``, running mean and variance;
                   ``momentum`` = 1 - stablecnn's, ONNX's convention)
Dropout            nothing (the identity at inference)
Residual           the body's nodes and the shortcut's (none for the identity), ``Add``, then
                   ``Relu`` when the block has its activation
=================  =========================================================================

Names follow the checkpoint: a layer's node and output are named by its path (``"3.body.0"``),
its weights by their checkpoint names (``"3.body.0.weight"``). The model's metadata holds the
dataset, the class names, the test accuracy and stablecnn's version, and two records an import
reads back: the architecture and the exact normaliser (see :mod:`stablecnn.interop.onnx_import`).
Every file written passes ``onnx.checker.check_model(full_check=True)`` first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stablecnn.errors import ConfigError
from stablecnn.files import atomic_write
from stablecnn.interop import common
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
from stablecnn.nn.model import Sequential

_DTYPES = ("float32", "float64")


@dataclass
class Exported:
    """What :func:`export_onnx` wrote: the file, its opset and size, the graph's input and output
    shapes (``None`` for the batch axis) and the normalisation folded in (``None``: none)."""

    path: Path
    opset: int
    nbytes: int
    input_shape: tuple
    output_name: str
    output_shape: tuple
    normalizer: dict | None


def export_onnx(
    source,
    path,
    opset: int = common.DEFAULT_OPSET,
    softmax: bool = False,
    *,
    normalizer=None,
    dataset: str | None = None,
    class_names: list[str] | None = None,
    dtype: str = "float32",
) -> Exported:
    """Write ``source`` to ``path`` as an ONNX model (atomically: the old file stays whole until
    the new one is complete).

    Args:
        source: a :class:`~stablecnn.nn.model.Sequential`, a
            :class:`~stablecnn.training.checkpoint.Checkpoint`, or the path of a checkpoint
            ``.npz`` or of a run directory holding one.
        path: the ``.onnx`` file to write.
        opset: the ONNX opset of the default domain, from 13 to the newest the installed onnx
            knows; default 17.
        softmax: output the probabilities (``Softmax`` over the classes) instead of the logits.
        normalizer: a :class:`~stablecnn.data.Normalizer` (or its ``to_dict()``) to fold in;
            default the checkpoint's. A bare model without one takes its input as it is.
        dataset, class_names: metadata; default the checkpoint's dataset and its class names.
        dtype: ``"float32"`` (the default: what runtimes run; a float64 model's weights are
            rounded to it) or ``"float64"`` (a float64 model's exact weights; onnxruntime's CPU
            provider has no float64 ``Conv``).

    Returns:
        :class:`Exported`.

    Raises:
        ConfigError: the onnx package is missing (the message says how to install it); an opset
            or dtype out of range; a model without an ``input_shape``; a normaliser whose
            channels are not the model's.
        CheckpointError: ``source`` is a path that is not a readable checkpoint.
        OSError: ``path`` cannot be written (its ``filename`` is ``path``; nothing is left
            behind).
    """
    onnx = common.require_onnx()
    proto, exported = build_onnx(
        source,
        opset,
        softmax,
        normalizer=normalizer,
        dataset=dataset,
        class_names=class_names,
        dtype=dtype,
    )
    data = proto.SerializeToString()
    onnx.checker.check_model(onnx.load_model_from_string(data), full_check=True)
    path = Path(path)
    atomic_write(path, lambda f: f.write(data))  # an OSError names ``path``
    exported.path, exported.nbytes = path, len(data)
    return exported


def build_onnx(
    source,
    opset: int = common.DEFAULT_OPSET,
    softmax: bool = False,
    *,
    normalizer=None,
    dataset: str | None = None,
    class_names: list[str] | None = None,
    dtype: str = "float32",
):
    """The ``onnx.ModelProto`` that :func:`export_onnx` writes, and its :class:`Exported` record
    (``path`` None, ``nbytes`` 0). Arguments and errors as :func:`export_onnx`'s."""
    from stablecnn.data import Normalizer

    onnx = common.require_onnx()
    if not isinstance(opset, int) or not common.MIN_EXPORT_OPSET <= opset <= common.max_opset():
        raise ConfigError(
            f"opset must be an int from {common.MIN_EXPORT_OPSET} to {common.max_opset()} (the "
            f"newest the installed onnx knows), got {opset!r}"
        )
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    model, meta, accuracy = _resolve(source)
    if model.input_shape is None:
        raise ConfigError(
            "the model has no input_shape, so its graph input cannot be declared: build it with "
            "Sequential(..., input_shape=(C, H, W))"
        )
    if normalizer is None and "normalizer" in meta:
        normalizer = meta["normalizer"]
    if isinstance(normalizer, dict):
        normalizer = Normalizer.from_dict(normalizer)
    channels = model.input_shape[0]
    if normalizer is not None and normalizer.channels not in (None, channels):
        raise ConfigError(
            f"the normalizer holds statistics of {normalizer.channels} channels but the model "
            f"takes {channels}"
        )
    train = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    dataset = dataset or data.get("dataset") or train.get("dataset")
    out_shape = model.shapes(model.input_shape)[-1]

    graph = _Graph(onnx, np.dtype(dtype))
    x = common.INPUT_NAME
    if normalizer is not None:
        x = graph.normalize(x, normalizer, channels)
    x = graph.layers(model.layers, x, "")
    output = common.PROBABILITIES_NAME if softmax else common.LOGITS_NAME
    if softmax:
        graph.node("Softmax", [x], output, axis=1)
    else:
        graph.rename(x, output)
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    name = str(train.get("model") or meta.get("name") or "stablecnn")
    proto_graph = onnx.helper.make_graph(
        graph.nodes,
        name,
        [onnx.helper.make_tensor_value_info(common.INPUT_NAME, elem, ["N", *model.input_shape])],
        [onnx.helper.make_tensor_value_info(output, elem, ["N", *out_shape])],
        graph.initializers,
    )
    opsets = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(
        proto_graph,
        opset_imports=opsets,
        producer_name="stablecnn",
        producer_version=common.installed_version(),
        ir_version=onnx.helper.find_min_ir_version_for(opsets),
        doc_string=f"{name}: a stablecnn model, exported for inference",
    )
    names = list(class_names) if class_names is not None else _class_names(dataset, out_shape)
    props = _metadata(model, name, normalizer, dataset, names, accuracy, softmax, dtype)
    onnx.helper.set_model_props(proto, props)
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    exported = Exported(
        path=None,
        opset=opset,
        nbytes=0,
        input_shape=(None, *model.input_shape),
        output_name=output,
        output_shape=(None, *out_shape),
        normalizer=normalizer.to_dict() if normalizer is not None else None,
    )
    return proto, exported


def _resolve(source) -> tuple[Sequential, dict, float | None]:
    """The model, the checkpoint's ``meta`` (empty for a bare model) and its last test accuracy
    (None when it has none)."""
    from stablecnn.training import checkpoint

    if isinstance(source, Sequential):
        return source, {}, None
    if isinstance(source, (str, Path)):
        source = checkpoint.load(source)
    if isinstance(source, checkpoint.Checkpoint):
        acc = source.history.get("epoch_test_acc")
        accuracy = float(np.asarray(acc).ravel()[-1]) if acc is not None and np.size(acc) else None
        return source.build_model(), source.meta, accuracy
    raise ConfigError(
        f"export takes a Sequential, a Checkpoint or the path of a checkpoint, "
        f"got {type(source).__name__}"
    )


def _class_names(dataset, out_shape) -> list[str] | None:
    from stablecnn.data.specs import class_names

    if len(out_shape) != 1:
        return None
    return class_names(dataset, out_shape[0])


def _metadata(model, name, normalizer, dataset, names, accuracy, softmax, dtype) -> dict[str, str]:
    c, h, w = (tuple(model.input_shape) + (None, None, None))[:3]
    if normalizer is None:
        source = "the model's input as it is (no normalisation in the graph)"
    elif normalizer.channels is not None:
        source = (
            f"pixels in [0, 255]; the graph subtracts the mean {list(normalizer.mean)} and "
            f"divides by the std {list(normalizer.std)}, one of each per channel"
        )
    else:
        source = (
            f"pixels in [0, 255]; the graph computes (x - {normalizer.mean:g}) / {normalizer.std:g}"
        )
    props = {
        common.KEY_INPUT: f"{dtype} {source}, shaped (N, {c}, {h}, {w})",
        common.KEY_OUTPUT: "class probabilities (softmax)" if softmax else "class scores (logits)",
        common.KEY_VERSION: common.installed_version(),
        common.KEY_ARCHITECTURE: json.dumps({"name": name, **model.config()}),
    }
    if normalizer is not None:
        props[common.KEY_NORMALIZER] = json.dumps(normalizer.to_dict())
    if dataset:
        props[common.KEY_DATASET] = str(dataset)
    if names is not None:
        props[common.KEY_CLASS_NAMES] = json.dumps([str(n) for n in names])
    if accuracy is not None:
        props[common.KEY_ACCURACY] = f"{accuracy:.6g}"
    return props


class _Graph:
    """The nodes and initializers of the graph being built."""

    def __init__(self, onnx, dtype: np.dtype):
        self.onnx, self.dtype = onnx, dtype
        self.nodes, self.initializers = [], []

    def const(self, name: str, value) -> str:
        array = np.ascontiguousarray(np.asarray(value, dtype=self.dtype))
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def rename(self, old: str, new: str) -> None:
        """Give tensor ``old`` (the last node's output) the name ``new``."""
        for node in self.nodes:
            node.output[:] = [new if o == old else o for o in node.output]
            node.input[:] = [new if i == old else i for i in node.input]

    def normalize(self, x: str, normalizer, channels: int) -> str:
        """``(x - mean) / std`` as stablecnn's Normalizer computes it (no Sub for a zero mean)."""
        if normalizer.channels is not None:
            shape = (1, channels, 1, 1)
            mean = np.asarray(normalizer.mean).reshape(shape)
            std = np.asarray(normalizer.std).reshape(shape)
        else:
            mean, std = np.asarray(normalizer.mean), np.asarray(normalizer.std)
        if normalizer.channels is not None or normalizer.mean:
            x = self.node("Sub", [x, self.const("normalize.mean", mean)], "normalize.sub")
        return self.node("Div", [x, self.const("normalize.std", std)], "normalize.div")

    def layers(self, layers, x: str, prefix: str) -> str:
        for i, layer in enumerate(layers):
            x = self.layer(layer, x, f"{prefix}{i}")
        return x

    def layer(self, layer, x: str, path: str) -> str:
        """Emit ``layer`` (named ``path``) on tensor ``x``; return its output tensor."""
        p = layer.params
        if isinstance(layer, Conv2d):
            (top, bottom), (left, right) = layer.padding
            inputs = [x, self.const(f"{path}.weight", p["weight"])]
            if layer.bias:
                inputs.append(self.const(f"{path}.bias", p["bias"]))
            return self.node(
                "Conv",
                inputs,
                path,
                kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride),
                pads=[top, left, bottom, right],
                dilations=[1, 1],
                group=1,
            )
        if isinstance(layer, MaxPool2d):
            return self.node(
                "MaxPool",
                [x],
                path,
                kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride),
            )
        if isinstance(layer, AvgPool2d):
            ph, pw = layer.padding
            return self.node(
                "AveragePool",
                [x],
                path,
                kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride),
                pads=[ph, pw, ph, pw],
                count_include_pad=1,
            )
        if isinstance(layer, GlobalAvgPool2d):
            pooled = self.node("GlobalAveragePool", [x], f"{path}.pool")  # (N, C, 1, 1)
            return self.node("Flatten", [pooled], path, axis=1)
        if isinstance(layer, Linear):
            weight = self.const(f"{path}.weight", p["weight"])
            bias = self.const(f"{path}.bias", p["bias"])
            return self.node("Gemm", [x, weight, bias], path, transB=1)
        if isinstance(layer, ReLU):
            return self.node("Relu", [x], path)
        if isinstance(layer, LeakyReLU):
            return self.node("LeakyRelu", [x], path, alpha=layer.negative_slope)
        if isinstance(layer, Flatten):
            return self.node("Flatten", [x], path, axis=1)
        if isinstance(layer, (BatchNorm1d, BatchNorm2d)):
            b = layer.buffers
            inputs = [
                x,
                self.const(f"{path}.weight", p["weight"]),
                self.const(f"{path}.bias", p["bias"]),
                self.const(f"{path}.running_mean", b["running_mean"]),
                self.const(f"{path}.running_var", b["running_var"]),
            ]
            return self.node(
                "BatchNormalization",
                inputs,
                path,
                epsilon=layer.eps,
                momentum=1.0 - layer.momentum,
            )
        if isinstance(layer, Dropout):
            return x  # the identity at inference
        if isinstance(layer, Residual):
            h = self.layers(layer.body, x, f"{path}.body.")
            s = self.layers(layer.shortcut, x, f"{path}.shortcut.")
            if layer.activation is None:
                return self.node("Add", [h, s], path)
            total = self.node("Add", [h, s], f"{path}.add")
            return self.node("Relu", [total], path)
        raise ConfigError(f"layer {path} ({type(layer).__name__}) has no ONNX export")
