"""One ONNX node (or a pair that is one layer) as one stablecnn layer: its config and weights.

=====================================  ===================================================
ONNX (inference graphs)                stablecnn
=====================================  ===================================================
Conv (group 1, no dilation)            Conv2d (symmetric pads, or the asymmetric ones of
                                       ``padding="same"``; no bias input: ``bias=False``)
MaxPool (no pads)                      MaxPool2d
AveragePool (symmetric pads)           AvgPool2d (``count_include_pad=1``, or no pads)
GlobalAveragePool + Flatten/Reshape/   GlobalAvgPool2d
Squeeze, ReduceMean over H and W
GlobalAveragePool alone                AvgPool2d over the whole map
Gemm (alpha = beta = 1, no transA)     Linear (a ``transB=0`` weight is transposed)
MatMul by a constant [+ Add bias]      Linear
Relu, LeakyRelu                        ReLU, LeakyReLU
Flatten (axis 1), Reshape to (N, -1)   Flatten
BatchNormalization (inference)         BatchNorm2d on (N, C, H, W), BatchNorm1d on (N, C)
Dropout (inference)                    Dropout
Identity                               nothing
=====================================  ===================================================

``ceil_mode=1`` is taken where it gives the same output size as flooring. Float attributes are
stored in float32 by ONNX; they are read back as the shortest decimal that rounds to them
(:func:`~stablecnn.interop.common.float32_decimal`), so 1e-5 stays 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from stablecnn.errors import ConfigError
from stablecnn.interop.common import float32_decimal
from stablecnn.interop.onnx_graph import Graph
from stablecnn.nn.layers import from_config as layer_from_config


@dataclass
class Step:
    """What a node (or a pair of nodes) became: a layer config (None: nothing), its weights by
    parameter or buffer name, the tensor after it and its shape per example."""

    config: dict | None
    output: str
    shape: tuple
    weights: dict[str, np.ndarray] = field(default_factory=dict)


def convert(g: Graph, i: int, x: str, shape: tuple) -> Step:
    """Node ``i``, which reads tensor ``x`` of per-example ``shape``, as a :class:`Step`.

    Raises:
        ModelFileError: an op outside :data:`OPS`, an attribute or input stablecnn cannot
            import, or a layer that does not fit ``shape`` (each naming the node).
    """
    node = g.nodes[i]
    if node.op_type not in OPS:
        g.fail(
            i,
            f"op {node.op_type} is not supported; stablecnn imports {', '.join(sorted(OPS))} "
            f"(and Add joining two branches, Sub/Div/Mul/Add by constants at the input, "
            f"Softmax at the output)",
        )
    if not node.input or node.input[0] != x:
        g.fail(i, f"reads {list(node.input)}; its first input must be the tensor {x!r}")
    step = OPS[node.op_type](g, i, shape)
    if step.config is not None:
        step.shape = layer_shape(g, i, step.config, shape)
    return step


def layer_shape(g: Graph, i: int, config: dict, shape: tuple) -> tuple:
    """The output shape of the layer ``config`` for ``shape``, or a failure naming node ``i``."""
    try:
        layer = layer_from_config(config, weights=False)
        return tuple(layer.output_shape(shape))
    except (ConfigError, TypeError, ValueError) as exc:
        g.fail(i, f"as a stablecnn {config['type']} on (N, {', '.join(map(str, shape))}): {exc}")


def _image(g: Graph, i: int, shape: tuple) -> tuple[int, int, int]:
    if len(shape) != 3:
        g.fail(i, f"takes (N, C, H, W) inputs here, but gets (N, {', '.join(map(str, shape))})")
    return shape


def _pair(g: Graph, i: int, name: str, value) -> list[int]:
    if not (isinstance(value, list) and len(value) == 2 and all(v >= 1 for v in value)):
        g.refuse(i, name, value, "stablecnn's layers take two positive values (height, width)")
    return value


def _floats(g: Graph, i: int, array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype.kind != "f":
        g.fail(i, f"its {what} holds {array.dtype} values, not floats")
    return array


def _pads(g: Graph, i: int, a: dict, kernel: list[int], stride: list[int]) -> list[int]:
    """``[top, left, bottom, right]`` from ``pads`` or ``auto_pad``."""
    auto = a.get("auto_pad", "NOTSET")
    if auto == "NOTSET":
        pads = a.get("pads") or [0, 0, 0, 0]
        if len(pads) != 4 or min(pads) < 0:
            g.refuse(i, "pads", pads, "expected 4 non-negative values")
        return pads
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if stride != [1, 1]:
            g.refuse(
                i, "auto_pad", auto, f"stablecnn pads 'same' at stride 1 only (strides {stride})"
            )
        totals = [k - 1 for k in kernel]
        small = [t // 2 for t in totals]
        large = [t - s for t, s in zip(totals, small)]
        return [*small, *large] if auto == "SAME_UPPER" else [*large, *small]
    g.refuse(i, "auto_pad", auto, "expected NOTSET, VALID, SAME_UPPER or SAME_LOWER")


def _floor_mode(g: Graph, i: int, a: dict, shape: tuple, kernel, stride, pads) -> None:
    """``ceil_mode=1`` only where it changes nothing: every window ends on the (padded) edge."""
    if a["ceil_mode"] == 0:
        return
    _, h, w = shape
    sizes = (h + pads[0] + pads[2], w + pads[1] + pads[3])
    if any((n - k) % s for n, k, s in zip(sizes, kernel, stride)):
        g.refuse(
            i,
            "ceil_mode",
            1,
            f"on a {h}x{w} map it adds a partial window; stablecnn's pools floor the output size",
        )


def conv(g: Graph, i: int, shape: tuple) -> Step:
    a = g.attrs(
        i,
        {
            "kernel_shape": ("ints", None),
            "strides": ("ints", [1, 1]),
            "pads": ("ints", None),
            "dilations": ("ints", [1, 1]),
            "group": ("int", 1),
            "auto_pad": ("string", "NOTSET"),
        },
    )
    _image(g, i, shape)
    weight = _floats(g, i, g.const(i, 1, "weight", 4), "weight")
    f, c, kh, kw = weight.shape
    if a["group"] != 1:
        g.refuse(i, "group", a["group"], "stablecnn's Conv2d is a full convolution (group 1)")
    if a["kernel_shape"] not in (None, [kh, kw]):
        g.refuse(i, "kernel_shape", a["kernel_shape"], f"the weight's is {[kh, kw]}")
    if a["dilations"] != [1, 1]:
        g.refuse(i, "dilations", a["dilations"], "stablecnn's Conv2d does not dilate")
    stride = _pair(g, i, "strides", a["strides"])
    top, left, bottom, right = _pads(g, i, a, [kh, kw], stride)
    if (top, left) == (bottom, right):
        padding = top if top == left else [top, left]
    elif stride == [1, 1] and ((top, bottom), (left, right)) == (
        ((kh - 1) // 2, kh // 2),
        ((kw - 1) // 2, kw // 2),
    ):
        padding = "same"  # the extra row and column at the end, as stablecnn and PyTorch pad
    else:
        g.refuse(
            i,
            "pads",
            [top, left, bottom, right],
            "stablecnn pads both sides alike, or as padding='same' does at stride 1",
        )
    weights = {"weight": weight}
    bias = g.optional_const(i, 2, "bias", 1)
    if bias is not None:
        if bias.shape != (f,):
            g.fail(i, f"its bias has shape {bias.shape}, expected ({f},)")
        weights["bias"] = _floats(g, i, bias, "bias")
    config = {
        "type": "Conv2d",
        "in_channels": c,
        "out_channels": f,
        "kernel_size": [kh, kw],
        "stride": stride,
        "padding": padding,
        **({} if bias is not None else {"bias": False}),
    }
    return Step(config, g.output(i), shape, weights)


_POOL = {
    "kernel_shape": ("ints", None),
    "strides": ("ints", [1, 1]),
    "pads": ("ints", None),
    "dilations": ("ints", [1, 1]),
    "ceil_mode": ("int", 0),
    "auto_pad": ("string", "NOTSET"),
}


def _pool_window(g: Graph, i: int, a: dict, shape: tuple, layer: str) -> tuple:
    """``(kernel, stride, pads)`` of pooling node ``i`` with attributes ``a``, refusing what
    neither of stablecnn's pools does (no kernel_shape, dilations)."""
    _image(g, i, shape)
    if a["kernel_shape"] is None:
        g.fail(i, "has no kernel_shape")
    kernel = _pair(g, i, "kernel_shape", a["kernel_shape"])
    stride = _pair(g, i, "strides", a["strides"])
    if a["dilations"] != [1, 1]:
        g.refuse(i, "dilations", a["dilations"], f"stablecnn's {layer} does not dilate")
    return kernel, stride, _pads(g, i, a, kernel, stride)


def max_pool(g: Graph, i: int, shape: tuple) -> Step:
    a = g.attrs(i, {**_POOL, "storage_order": ("int", 0)})
    kernel, stride, pads = _pool_window(g, i, a, shape, "MaxPool2d")
    if any(pads):
        g.refuse(i, "pads", pads, "stablecnn's MaxPool2d does not pad")
    _floor_mode(g, i, a, shape, kernel, stride, pads)
    config = {"type": "MaxPool2d", "kernel_size": kernel, "stride": stride}
    return Step(config, g.output(i), shape)


def average_pool(g: Graph, i: int, shape: tuple) -> Step:
    a = g.attrs(i, {**_POOL, "count_include_pad": ("int", 0)})
    kernel, stride, pads = _pool_window(g, i, a, shape, "AvgPool2d")
    if pads[:2] != pads[2:]:
        g.refuse(i, "pads", pads, "stablecnn's AvgPool2d pads both sides alike")
    if any(pads) and a["count_include_pad"] == 0:
        g.refuse(
            i,
            "count_include_pad",
            0,
            "stablecnn's AvgPool2d counts the padding zeros in the average (1)",
        )
    _floor_mode(g, i, a, shape, kernel, stride, pads)
    config = {"type": "AvgPool2d", "kernel_size": kernel, "stride": stride, "padding": pads[:2]}
    return Step(config, g.output(i), shape)


def _flattens(g: Graph, j: int | None, shape: tuple) -> bool:
    """Whether node ``j`` takes (N, *shape) to (N, prod(shape)) and nothing else."""
    if j is None:
        return False
    op, rank = g.nodes[j].op_type, len(shape) + 1
    if op == "Flatten":
        axis = g.attrs(j, {"axis": ("int", 1)})["axis"]
        return axis % rank == 1
    if op == "Reshape":
        allowzero = g.attrs(j, {"allowzero": ("int", 0)})["allowzero"]
        target = g.const(j, 1, "target shape", 1).tolist()
        batch = [b for b in (g.batch, None if allowzero else 0) if b is not None]  # 0: copy N
        size = math.prod(shape)
        return len(target) == 2 and (
            (target[1] == size and target[0] in (-1, *batch))
            or (target[1] == -1 and target[0] in batch)
        )
    if op == "Squeeze" and all(s == 1 for s in shape[1:]):
        if g.opset is not None and g.opset >= 13:
            g.attrs(j, {})
            axes = g.optional_const(j, 1, "axes", 1)
            axes = None if axes is None else axes.tolist()
        else:
            axes = g.attrs(j, {"axes": ("ints", None)})["axes"]
        return axes is None or sorted(a % rank for a in axes) == list(range(2, rank))
    return False


def _global_mean(g: Graph, i: int, shape: tuple, out: str) -> Step:
    """A mean over the whole map whose output is (N, C, 1, 1): GlobalAvgPool2d when a flatten
    follows (both nodes), else an AvgPool2d whose window is the map."""
    c, h, w = _image(g, i, shape)
    j = g.sole_user(out)
    if _flattens(g, j, (c, 1, 1)):
        return Step({"type": "GlobalAvgPool2d"}, g.output(j), shape)
    config = {"type": "AvgPool2d", "kernel_size": [h, w], "stride": [h, w], "padding": [0, 0]}
    return Step(config, out, shape)


def global_average_pool(g: Graph, i: int, shape: tuple) -> Step:
    g.attrs(i, {})
    return _global_mean(g, i, shape, g.output(i))


def reduce_mean(g: Graph, i: int, shape: tuple) -> Step:
    spec = {"keepdims": ("int", 1), "noop_with_empty_axes": ("int", 0)}
    if g.opset is not None and g.opset >= 18:
        a = g.attrs(i, spec)
        axes = g.optional_const(i, 1, "axes", 1)
        axes = None if axes is None else axes.tolist()
    else:
        a = g.attrs(i, {**spec, "axes": ("ints", None)})
        axes = a["axes"]
    _image(g, i, shape)
    if axes is None or sorted(v % 4 for v in axes) != [2, 3]:
        g.refuse(i, "axes", axes, "stablecnn averages over the whole map only (axes 2 and 3)")
    if a["keepdims"] == 0:
        return Step({"type": "GlobalAvgPool2d"}, g.output(i), shape)
    return _global_mean(g, i, shape, g.output(i))


def _linear(g: Graph, i: int, shape: tuple, weight: np.ndarray, bias, out: str) -> Step:
    out_features, in_features = weight.shape
    if len(shape) != 1:
        g.fail(
            i,
            f"multiplies (N, {', '.join(map(str, shape))}); stablecnn's Linear takes (N, "
            f"features): flatten first",
        )
    if bias is None:
        bias = np.zeros(out_features, weight.dtype)
    elif bias.size not in (1, out_features) or bias.squeeze().ndim > 1:
        g.fail(i, f"its bias has shape {bias.shape}, expected ({out_features},)")
    bias = np.ascontiguousarray(np.broadcast_to(bias.reshape(-1), (out_features,)))
    config = {"type": "Linear", "in_features": in_features, "out_features": out_features}
    return Step(config, out, shape, {"weight": np.ascontiguousarray(weight), "bias": bias})


def gemm(g: Graph, i: int, shape: tuple) -> Step:
    a = g.attrs(
        i,
        {
            "alpha": ("float", 1.0),
            "beta": ("float", 1.0),
            "transA": ("int", 0),
            "transB": ("int", 0),
        },
    )
    if a["transA"] != 0:
        g.refuse(i, "transA", a["transA"], "the input is the batch of rows, not transposed")
    if a["alpha"] != 1.0:
        g.refuse(i, "alpha", a["alpha"], "stablecnn's Linear computes x W^T + b (alpha 1)")
    b = _floats(g, i, g.const(i, 1, "weight", 2), "weight")
    weight = b if a["transB"] else b.T
    bias = g.optional_const(i, 2, "bias")
    if bias is not None and a["beta"] != 1.0:
        g.refuse(i, "beta", a["beta"], "stablecnn's Linear adds its bias as it is (beta 1)")
    bias = None if bias is None else _floats(g, i, bias, "bias")
    return _linear(g, i, shape, weight, bias, g.output(i))


def matmul(g: Graph, i: int, shape: tuple) -> Step:
    g.attrs(i, {})
    b = _floats(g, i, g.const(i, 1, "weight", 2), "weight")  # (in, out)
    out, bias = g.output(i), None
    j = g.sole_user(out)
    if j is not None and g.nodes[j].op_type == "Add":  # x W + b: the bias of the same layer
        node = g.nodes[j]
        other = 1 if node.input[0] == out else 0
        if len(node.input) == 2 and g.is_const(node.input[other]):
            g.attrs(j, {})
            bias = _floats(g, j, g.const(j, other, "bias"), "bias")
            out = g.output(j)
    return _linear(g, i, shape, b.T, bias, out)


def relu(g: Graph, i: int, shape: tuple) -> Step:
    g.attrs(i, {})
    return Step({"type": "ReLU"}, g.output(i), shape)


def leaky_relu(g: Graph, i: int, shape: tuple) -> Step:
    alpha = g.attrs(i, {"alpha": ("float", 0.01)})["alpha"]
    return Step({"type": "LeakyReLU", "negative_slope": float32_decimal(alpha)}, g.output(i), shape)


def flatten(g: Graph, i: int, shape: tuple) -> Step:
    axis = g.attrs(i, {"axis": ("int", 1)})["axis"]
    if axis % (len(shape) + 1) != 1:
        g.refuse(i, "axis", axis, "stablecnn's Flatten keeps the batch axis only (axis 1)")
    return Step({"type": "Flatten"}, g.output(i), shape)


def reshape(g: Graph, i: int, shape: tuple) -> Step:
    if not _flattens(g, i, shape):
        target = g.const(i, 1, "target shape", 1).tolist()
        g.fail(
            i,
            f"reshapes (N, {', '.join(map(str, shape))}) to {target}; stablecnn imports a "
            f"Reshape only as a Flatten (to (N, {math.prod(shape)}) or (N, -1))",
        )
    return Step({"type": "Flatten"}, g.output(i), shape)


def identity(g: Graph, i: int, shape: tuple) -> Step:
    g.attrs(i, {})
    return Step(None, g.output(i), shape)


def dropout(g: Graph, i: int, shape: tuple) -> Step:
    if g.opset is not None and g.opset >= 12:
        g.attrs(i, {"seed": ("int", 0)})
        ratio = g.optional_const(i, 1, "ratio", 0)
        ratio = 0.5 if ratio is None else float(ratio)
        training = g.optional_const(i, 2, "training_mode", 0)
        if training is not None and bool(training):
            g.fail(i, "its training_mode input is true: dropout would act at inference")
    else:
        a = g.attrs(i, {"ratio": ("float", 0.5), "seed": ("int", 0), "is_test": ("int", 1)})
        ratio = a["ratio"]
    p = float32_decimal(ratio)
    if not 0 <= p < 1:
        g.fail(i, f"its ratio {p} is not a probability in [0, 1)")
    return Step({"type": "Dropout", "p": p}, g.output(i), shape)


def batch_normalization(g: Graph, i: int, shape: tuple) -> Step:
    a = g.attrs(
        i,
        {
            "epsilon": ("float", 1e-5),
            "momentum": ("float", 0.9),
            "training_mode": ("int", 0),
            "spatial": ("int", 1),
        },
    )
    if a["training_mode"] != 0:
        g.refuse(i, "training_mode", a["training_mode"], "stablecnn imports inference graphs")
    if a["spatial"] != 1:
        g.refuse(i, "spatial", a["spatial"], "stablecnn normalises per channel (spatial 1)")
    if len(shape) not in (1, 2, 3):
        g.fail(i, f"normalises (N, {', '.join(map(str, shape))}); expected (N, C, H, W) or (N, C)")
    c = shape[0]
    weights = {}
    for position, name in enumerate(("weight", "bias", "running_mean", "running_var"), start=1):
        what = ("scale", "B", "mean", "var")[position - 1]
        array = _floats(g, i, g.const(i, position, what, 1), what)
        if array.shape != (c,):
            g.fail(i, f"its {what} has shape {array.shape}, but the input has {c} channels")
        weights[name] = array
    if (weights["running_var"] < 0).any():
        g.fail(i, "its var holds negative variances")
    momentum = Decimal(1) - Decimal(repr(float32_decimal(a["momentum"])))  # ONNX keeps 1 - ours
    config = {
        "type": "BatchNorm2d" if len(shape) == 3 else "BatchNorm1d",
        "num_features": c,
        "eps": float32_decimal(a["epsilon"]),
        "momentum": float(momentum),
    }
    return Step(config, g.output(i), shape, weights)


OPS = {
    "AveragePool": average_pool,
    "BatchNormalization": batch_normalization,
    "Conv": conv,
    "Dropout": dropout,
    "Flatten": flatten,
    "Gemm": gemm,
    "GlobalAveragePool": global_average_pool,
    "Identity": identity,
    "LeakyRelu": leaky_relu,
    "MatMul": matmul,
    "MaxPool": max_pool,
    "ReduceMean": reduce_mean,
    "Relu": relu,
    "Reshape": reshape,
}
