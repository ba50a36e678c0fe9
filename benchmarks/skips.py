"""Why the skips matter: a plain stack and the same layers with skip connections, trained alike.

Builds md3 (ResNet-20: a 3x3 stem, three stages of basic blocks, 16/32/64 channels) with ``n``
blocks per stage (depth ``6n + 2``: n = 3 is md3 itself, n = 9 gives 56 layers), and its plain
counterpart: the very same layers in the same order with every shortcut removed (He et al.,
"Deep Residual Learning for Image Recognition", CVPR 2016, section 4.1's "plain" networks; the
1x1 projections go with their shortcuts, so the plain stack has two 1x1 convolutions fewer).
Both are trained on MNIST from the same seed, on the same batches in the same order, with the
same optimizer and schedule, and the script prints, every ``--every`` steps, the mean training
loss and the mean norm of the first convolution's weight gradient over those steps, then each
network's test accuracy::

    python benchmarks/skips.py                  # depth 20, one epoch (about 7 minutes here)
    python benchmarks/skips.py --blocks 9       # depth 56
    python benchmarks/skips.py --steps 100 --every 20 --test-images 1000    # a quick look

The output is a markdown table; the figures in the README come from its runs.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time

import numpy as np

from stablecnn.data import Normalizer, iterate_batches, load_dataset
from stablecnn.kernels import runtime
from stablecnn.nn import zoo
from stablecnn.nn.losses import SoftmaxCrossEntropy
from stablecnn.nn.model import Sequential
from stablecnn.optim import build_optimizer


def residual_config(blocks: int) -> dict:
    """md3's config with ``blocks`` basic blocks per stage (depth ``6 * blocks + 2``)."""
    config = copy.deepcopy(zoo.config("md3"))
    stage = 0
    for layer in config["layers"]:
        if layer["type"] != "Residual":
            continue
        if "shortcut" in layer:  # the first block of stages 2 and 3
            stage += 1
        else:
            layer["repeat"] = blocks if stage == 0 else blocks - 1
    # with one block per stage, stages 2 and 3 keep only their first block
    config["layers"] = [layer for layer in config["layers"] if layer.get("repeat", 1) > 0]
    return config


def plain_config(config: dict) -> dict:
    """The same layers with the skips taken out: each block's body, then its activation."""
    layers = []
    for layer in config["layers"]:
        if layer["type"] != "Residual":
            layers.append(layer)
            continue
        body = layer["body"] + ([{"type": layer["activation"]}] if "activation" in layer else [])
        layers += body * layer.get("repeat", 1)
    return {"input_shape": config["input_shape"], "layers": layers}


def train(config, args, train_set, test_set, norm) -> dict:
    """One run: per-window mean loss and first-conv gradient norm, then the test accuracy."""
    model = Sequential.from_config(config, seed=args.seed)
    loss_fn = SoftmaxCrossEntropy()
    optimizer = build_optimizer(args.optimizer, model.parameters(), lr=args.lr)
    first = next(grad for name, _, grad in model.parameters() if name.endswith("weight"))
    images, labels = train_set
    batches = iterate_batches(
        images, labels, args.batch_size, np.random.default_rng([args.seed, 0]), norm
    )
    windows, losses, norms, start = [], [], [], time.perf_counter()
    for step, (x, y) in enumerate(batches, 1):
        losses.append(float(loss_fn.forward(model.forward(x), y)))
        model.backward(loss_fn.backward(), need_input_grad=False)
        norms.append(float(np.linalg.norm(first)))
        optimizer.step()
        if step % args.every == 0:
            windows.append((step, np.mean(losses), np.mean(norms)))
            losses, norms = [], []
        if step == args.steps:
            break
    seconds = time.perf_counter() - start
    x_test, y_test = test_set
    predicted = model.predict(x_test, batch_size=500, normalizer=norm)
    accuracy = float(np.mean(predicted == y_test))
    # the same weights with batch norm on each test batch's own statistics (500 images), not
    # the running averages: tells a weak model from weak running statistics
    batch_stats = np.concatenate(
        [
            model.forward(norm(x_test[i : i + 500]), training=True).argmax(axis=1)
            for i in range(0, len(x_test), 500)
        ]
    )
    return {
        "windows": windows,
        "accuracy": accuracy,
        "batch_stats_accuracy": float(np.mean(batch_stats == y_test)),
        "seconds": seconds,
        "layers": sum(1 for _, param, _ in model.parameters() if param.ndim >= 2),
        "params": model.num_params,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--blocks", type=int, default=3, help="blocks per stage (3: ResNet-20)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: 1 epoch)")
    p.add_argument("--every", type=int, default=50, help="steps per row of the table")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--optimizer", default="sgd", help="sgd (no momentum), adam, ...")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-images", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    runtime.configure(args.threads)
    train_set = load_dataset("mnist", "train")
    x_test, y_test = load_dataset("mnist", "test")
    test_set = (x_test[: args.test_images], y_test[: args.test_images])
    norm = Normalizer.original(train_set[0])
    residual = residual_config(args.blocks)
    runs = {}
    for name, config in (("residual", residual), ("plain", plain_config(residual))):
        runs[name] = train(config, args, train_set, test_set, norm)
        print(f"{name}: done in {runs[name]['seconds']:.0f} s", file=sys.stderr)
    depth = 6 * args.blocks + 2
    print(
        f"## {depth} layers, plain against residual: MNIST, {args.optimizer} lr {args.lr}, "
        f"batch {args.batch_size}, seed {args.seed}\n"
    )
    print("| steps | loss, plain | loss, residual | first-conv grad norm, plain | residual |")
    print("|---:|---:|---:|---:|---:|")
    for (step, lp, gp), (_, lr_, gr) in zip(runs["plain"]["windows"], runs["residual"]["windows"]):
        print(f"| {step - args.every + 1}-{step} | {lp:.4f} | {lr_:.4f} | {gp:.4g} | {gr:.4g} |")
    print()
    for name, run in runs.items():
        print(
            f"- {name}: {run['layers']} convolutions and linear layers, "
            f"{run['params']:,} parameters, "
            f"test accuracy {100 * run['accuracy']:.2f}% on {len(y_test[: args.test_images])} "
            f"images ({100 * run['batch_stats_accuracy']:.2f}% with batch norm on each test "
            f"batch's statistics), {run['seconds']:.0f} s of training"
        )
    return 0 if all(math.isfinite(r["accuracy"]) for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
