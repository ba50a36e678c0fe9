"""The products alone: how fast one training step would be if it were nothing but its im2col
matrix products, on this machine's BLAS.

A convolution written as im2col is three matrix products a training step: the forward pass
``(F, C*kH*kW) @ (C*kH*kW, N*Ho*Wo)``, the weight gradient ``(F, N*Ho*Wo) @ (N*Ho*Wo,
C*kH*kW)`` and the input gradient ``(C*kH*kW, F) @ (F, N*Ho*Wo)`` (a linear layer the same with
``N`` columns). This script builds a model of the zoo, finds every convolution and linear layer
(inside residual blocks too) and the shape each one sees at batch ``--batch``, and times those
three products with NumPy's BLAS on ``--threads`` threads, on random float32 operands: no
copies, no batch norm, no activations, no optimizer. The sum is what a step's multiply-adds
cost as plain im2col products on this BLAS, to set beside the training steps that
``benchmarks/bench.py`` measures: an engine that adds copies and passes to those products is
slower than it, one that regroups them into wider products (stablecnn's rows kernel, see
``stablecnn.kernels.conv``) or does fewer multiplications can be faster.

Usage::

    python benchmarks/gemm_floor.py --model md2,md3            # batch 100, 2 threads
    python benchmarks/gemm_floor.py --model md3 --per-layer    # each product shape's rate
    python benchmarks/gemm_floor.py --winograd 2,4             # and Winograd's products

``--winograd M`` also times, for every 3x3 stride-1 convolution (of more than one input
channel), the products of Winograd's minimal filtering F(M x M, 3 x 3) (Lavin & Gray 2016,
"Fast Algorithms for Convolutional Neural Networks"): with ``a = M + 2``, the a*a independent
products ``(F, C) @ (C, T)`` over the ``T = N * ceil(Ho / M) * ceil(Wo / M)`` tiles, and their two
gradients, against the same convolutions' im2col products. Only the products: the input,
filter and output transforms, which Winograd adds, are not timed, so the difference is the most
Winograd could save.

The report goes to stdout: per model, the multiply-adds of a step, the products' time (the
fastest of ``--repeats`` timings of each product, summed) and the images a second that time
allows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from stablecnn.nn import zoo
from stablecnn.nn.layers import Conv2d, Linear, Residual


def layers_with_outputs(model):
    """``(layer, output shape)`` for every layer of ``model`` in forward order, a residual
    block's children (body, then shortcut) in its place (``Sequential.shapes`` and
    ``Residual.child_shapes`` give the shapes)."""
    shape = tuple(model.input_shape)
    for layer, out in zip(model.layers, model.shapes(shape)):
        if isinstance(layer, Residual):
            yield from ((child, child_out) for _, child, child_out in layer.child_shapes(shape))
        else:
            yield layer, tuple(out)
        shape = tuple(out)


def product_shapes(model, batch: int) -> list[tuple[str, int, int, int]]:
    """``(layer, F, K, columns)`` for every convolution and linear layer of ``model`` in forward
    order: its products are ``(F, K) @ (K, columns)`` and the two gradients of the same size."""
    shapes = []
    for layer, out in layers_with_outputs(model):
        if isinstance(layer, Conv2d):
            f, c, kh, kw = layer.params["weight"].shape
            shapes.append((repr(layer), f, c * kh * kw, batch * out[1] * out[2]))
        elif isinstance(layer, Linear):
            f, k = layer.params["weight"].shape
            shapes.append((repr(layer), f, k, batch))
    return shapes


def fastest(fn, repeats: int) -> float:
    fn()  # warm: the BLAS threads awake, the output allocated
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def time_products(f: int, k: int, cols: int, repeats: int, first: bool) -> float:
    """Seconds of the forward, weight-gradient and (unless ``first``: training never needs the
    first layer's) input-gradient products of one layer."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((f, k), dtype=np.float32)
    x = rng.standard_normal((k, cols), dtype=np.float32)
    d = rng.standard_normal((f, cols), dtype=np.float32)
    seconds = fastest(lambda: w @ x, repeats) + fastest(lambda: d @ x.T, repeats)
    if not first:
        seconds += fastest(lambda: w.T @ d, repeats)
    return seconds


def winograd_shapes(model, batch: int, m: int) -> list[tuple[int, int, int, int]]:
    """``(F, C, T, im2col columns)`` of every 3x3 stride-1 convolution of more than one input
    channel: its Winograd F(m x m, 3x3) products are (m+2)**2 of ``(F, C) @ (C, T)``."""
    out = []
    for layer, shape in layers_with_outputs(model):
        if (
            isinstance(layer, Conv2d)
            and layer.kernel_size == (3, 3)
            and layer.stride == (1, 1)
            and layer.in_channels > 1
        ):
            _, ho, wo = shape
            tiles = batch * -(-ho // m) * -(-wo // m)
            out.append((layer.out_channels, layer.in_channels, tiles, batch * ho * wo))
    return out


def time_winograd(f: int, c: int, tiles: int, m: int, repeats: int) -> float:
    """Seconds of the forward, weight-gradient and input-gradient products of F(m x m, 3x3)."""
    a2 = (m + 2) ** 2
    rng = np.random.default_rng(0)
    u = rng.standard_normal((a2, f, c), dtype=np.float32)
    v = rng.standard_normal((a2, c, tiles), dtype=np.float32)
    d = rng.standard_normal((a2, f, tiles), dtype=np.float32)
    return (
        fastest(lambda: np.matmul(u, v), repeats)
        + fastest(lambda: np.matmul(d, v.transpose(0, 2, 1)), repeats)
        + fastest(lambda: np.matmul(u.transpose(0, 2, 1), d), repeats)
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="md2,md3", help="comma-separated zoo models (md2,md3)")
    p.add_argument("--batch", type=int, default=100, help="training batch size (100)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="BLAS threads")
    p.add_argument("--repeats", type=int, default=5, help="timings of each product (5)")
    p.add_argument("--per-layer", action="store_true", help="print each layer's products")
    p.add_argument(
        "--winograd",
        default="",
        metavar="M[,M]",
        help="also time the products of Winograd F(M x M, 3x3) for the 3x3 convolutions",
    )
    args = p.parse_args(argv)
    if args.batch < 1 or args.threads < 1 or args.repeats < 1:
        p.error("--batch, --threads and --repeats must be at least 1")
    try:
        args.winograd = [int(v) for v in args.winograd.split(",") if v.strip()]
    except ValueError:
        args.winograd = [0]
    if any(not 1 <= m <= 6 for m in args.winograd):
        p.error("--winograd takes tile sizes from 1 to 6, such as 2,4")
    for name in args.model.split(","):
        if name not in zoo.names():
            p.error(f"unknown model {name!r}; the zoo has {', '.join(zoo.names())}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"matrix products of one training step, batch {args.batch}, float32, "
          f"{args.threads} BLAS threads, fastest of {args.repeats}")  # fmt: skip
    with threadpool_limits(args.threads):
        for name in args.model.split(","):
            shapes = product_shapes(zoo.build(name, seed=0), args.batch)
            total, macs = 0.0, 0
            for i, (layer, f, k, cols) in enumerate(shapes):
                seconds = time_products(f, k, cols, args.repeats, first=i == 0)
                n_macs = (2 if i == 0 else 3) * f * k * cols
                total, macs = total + seconds, macs + n_macs
                if args.per_layer:
                    print(f"  {layer}: ({f}, {k}) @ ({k}, {cols}): {seconds * 1e3:.2f} ms, "
                          f"{2 * n_macs / seconds / 1e9:.0f} GFLOP/s")  # fmt: skip
            print(f"{name}: {macs / 1e9:.2f} G multiply-adds a step, products {total * 1e3:.1f} ms "
                  f"({2 * macs / total / 1e9:.0f} GFLOP/s): at most {args.batch / total:,.0f} "
                  f"img/s")  # fmt: skip
            for m in args.winograd:
                convs = winograd_shapes(zoo.build(name, seed=0), args.batch, m)
                im2col = sum(
                    time_products(f, 9 * c, cols, args.repeats, first=False)
                    for f, c, _, cols in convs
                )
                wino = sum(time_winograd(f, c, t, m, args.repeats) for f, c, t, _ in convs)
                print(f"  its {len(convs)} 3x3 stride-1 convolutions: im2col products "
                      f"{im2col * 1e3:.1f} ms, Winograd F({m}x{m},3x3) products "
                      f"{wino * 1e3:.1f} ms (transforms not counted)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
