"""Side-by-side speed and memory of stablecnn and PyTorch on the same networks and data.

For each model (``--model md1,md2,md3``) the script measures, in stablecnn and in PyTorch with
the same number of threads: training at batch 100 (forward, backward, optimizer step; Model 1
with Adagrad, the others with Adam at lr 1e-3, batch norm in training mode), inference at batch
500, and single-image latency (batch 1, the median and the 95th percentile of many calls). It
prints one markdown report: the figures and the stablecnn/PyTorch ratios, idle and (``--busy``)
with a competing process keeping one core busy, "busy ratio / idle ratio" against the target
0.9, and the peak memory of each framework.

stablecnn is measured on two paths (``--paths cli,library``): the command line's
(``runtime.configure``, what ``Trainer`` calls) and the plain library's (a ``Sequential`` and an
optimizer stepped with no setup call). See ``workers.py`` for the workers, ``load.py`` for the
competing process.

Every measurement runs in a fresh subprocess of this script (``--worker KIND``): the peak
resident set size then belongs to one framework and one model, and neither framework's thread
pools or allocator state affect the other. A run spawns ``--rounds`` rounds per model; in each,
the workers of every path and PyTorch alternate, idle then busy, and the report takes the median
of all their repetitions pooled: a change in the machine's load during the run falls on all.

Usage::

    python benchmarks/bench.py --quick                      # a minute or two
    python benchmarks/bench.py --busy                       # the README's table
    python benchmarks/bench.py --model md2 --busy --paths library --rounds 5

The report goes to stdout as markdown (paste it into a README); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if (REPO / "src" / "stablecnn").is_dir():
    sys.path.insert(0, str(REPO / "src"))  # benchmark the working tree, not an installed copy
sys.path.insert(0, str(REPO / "tests"))  # the support package: PyTorch's twin of our model
sys.path.insert(0, str(HERE))

import load  # noqa: E402
import report  # noqa: E402
import workers  # noqa: E402

from stablecnn import Conv2d, Linear, Residual  # noqa: E402
from stablecnn.nn import zoo  # noqa: E402

PATHS = {"cli": "stablecnn-cli", "library": "stablecnn-library"}


# -- FLOP counting ------------------------------------------------------------------------------
def layer_flops(layer, input_shape: tuple[int, ...]) -> int:
    """Multiply-add FLOPs of one example through ``layer`` (2 per multiply-add).

    Conv2d: ``2 * F * Ho * Wo * C * kH * kW``; Linear: ``2 * in * out``; a Residual block: the
    sum over the layers of its body and shortcut. Bias adds, batch norm, ReLU, pooling, the
    block's sum, the loss and the optimizer are O(activations + parameters) and are not counted
    (nor by the usual conventions).
    """
    if isinstance(layer, Residual):
        return sum(
            layer_flops(child, shape)
            for child, shape in zip(
                (child for _, child in layer.named_children()), _child_inputs(layer, input_shape)
            )
        )
    if isinstance(layer, Conv2d):
        f, ho, wo = layer.output_shape(input_shape)
        kh, kw = layer.kernel_size
        return 2 * f * ho * wo * layer.in_channels * kh * kw
    if isinstance(layer, Linear):
        return 2 * layer.in_features * layer.out_features
    return 0


def _child_inputs(block, input_shape) -> list[tuple[int, ...]]:
    """The input shape of each of ``block.named_children()``, in order."""
    inputs, previous = [], {"body": tuple(input_shape), "shortcut": tuple(input_shape)}
    for name, _, out_shape in block.child_shapes(input_shape):
        branch = name.split(".")[0]
        inputs.append(previous[branch])
        previous[branch] = tuple(out_shape)
    return inputs


def forward_flops(model, input_shape=None) -> list[int]:
    """FLOPs of one example's forward pass, one entry per layer of the model (see
    :func:`layer_flops`; a residual block's entry counts the layers inside it)."""
    shape = tuple(input_shape or model.input_shape)
    flops = []
    for layer, out_shape in zip(model.layers, model.shapes(shape)):
        flops.append(layer_flops(layer, shape))
        shape = tuple(out_shape)
    return flops


def training_flops(model, input_shape=None) -> int:
    """FLOPs of one example's training step: ``3 * forward - forward(first layer)``.

    The backward pass of a conv or dense layer costs two products the size of its forward one:
    the weight gradient and the input gradient. The first layer's input gradient is skipped
    (nobody reads it, in either framework), hence ``forward + 2 * forward - first``. For Model 1:
    3 * 12.89 - 2.31 = 36.36 MFLOP per image.
    """
    per_layer = forward_flops(model, input_shape)
    return 3 * sum(per_layer) - per_layer[0]


# -- the driver ---------------------------------------------------------------------------------
def merge_rounds(runs: list[dict]) -> dict:
    """One worker answer from several rounds: every timed repetition and latency call pooled
    (the report takes their median), the largest peak memory."""
    merged = dict(runs[0])
    for key in ("train", "infer", "latency"):
        merged[key] = [value for r in runs for value in r.get(key, [])]
    merged["others_cores"] = [r.get("others_cores") for r in runs]
    for key in ("peak_rss_train_mb", "rss_before_train_mb"):
        if key in runs[0]:
            merged[key] = max(r[key] for r in runs)
    return merged


def worker_command(kind: str, model: str, args) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        *("--worker", kind, "--model", model, "--threads", str(args.threads)),
        *("--batches", str(args.batches), "--repeats", str(args.repeats)),
        *("--warmup", str(args.warmup), "--seed", str(args.seed)),
        *("--train-batch", str(args.train_batch), "--infer-batch", str(args.infer_batch)),
        *("--latency-calls", str(args.latency_calls)),
        *(["--torch-keep-freed-memory"] if args.torch_keep_freed_memory else []),
    ]


def spawn(kind: str, model: str, args, condition: str) -> dict:
    """Run one worker in a fresh interpreter with this process's environment, unchanged."""
    print(f"  {model} {condition:4s} {kind} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(worker_command(kind, model, args), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} on {model} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(args) -> dict:
    """``{model: {condition: {worker kind: merged answer}}}``, condition "idle" or "busy"."""
    kinds = [PATHS[p] for p in args.paths] + (["torch"] if args.have_torch else [])
    conditions = ["idle", "busy"] if args.busy else ["idle"]
    results = {}
    for model in args.model:
        runs = {c: {k: [] for k in kinds} for c in conditions}
        for _ in range(args.rounds):
            for condition in conditions:  # idle, then busy, in every round
                with load.competing_load(args.busy_cpu, enabled=condition == "busy"):
                    for kind in kinds:
                        runs[condition][kind].append(spawn(kind, model, args, condition))
        results[model] = {
            c: {k: merge_rounds(r) for k, r in per_kind.items()} for c, per_kind in runs.items()
        }
    return results


def cpu_busy(seconds: float = 1.0) -> float | None:
    """The fraction of all CPUs' time spent busy over the next ``seconds`` (/proc/stat), or None.

    The load average lags by a minute: right after a previous run it still reports that run.
    """

    def sample():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        default="md1,md2,md3",
        help=f"comma-separated models of the zoo ({', '.join(zoo.names())}; default md1,md2,md3)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="--batches 2 --repeats 2 --warmup 1 --rounds 1 --latency-calls 30",
    )
    p.add_argument(
        "--busy",
        action="store_true",
        help="also measure with a competing process keeping one CPU busy (see load.py)",
    )
    p.add_argument(
        "--busy-cpu",
        default=None,
        help="the CPU the competing process is pinned to (default: the last one this process "
        "may use; 'none': not pinned)",
    )
    p.add_argument(
        "--paths",
        default="cli,library",
        help="stablecnn's paths to measure: cli (runtime.configure, as Trainer) and/or library "
        "(no setup call); default cli,library",
    )
    p.add_argument("--batches", type=int, help="timed batches per repetition (default 4)")
    p.add_argument(
        "--repeats", type=int, help="timed repetitions; the median is reported (default 3)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        help="rounds of fresh workers per model, all repetitions pooled (default 3; --quick: 1)",
    )
    p.add_argument("--warmup", type=int, help="untimed batches first (default 2)")
    p.add_argument(
        "--latency-calls",
        type=int,
        help="single-image inference calls timed one by one (default 200; 0 skips latency)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="threads for the CLI path and for PyTorch (default: os.cpu_count())",
    )
    p.add_argument(
        "--train-batch", type=int, default=100, help="training batch size (default 100; 0 skips)"
    )
    p.add_argument(
        "--infer-batch", type=int, default=500, help="inference batch size (default 500; 0 skips)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="measure stablecnn only")
    p.add_argument("--json", metavar="PATH", help="also write the raw measurements to PATH")
    p.add_argument(
        "--min-ratio",
        type=float,
        metavar="R",
        help="exit with status 1 if any model's idle training ratio (CLI path) is below R",
    )
    p.add_argument(
        "--torch-keep-freed-memory",
        action="store_true",
        help="give the PyTorch worker stablecnn's allocator setting too (default: "
        "PyTorch as users run it)",
    )
    # internal: one measurement in a fresh process
    p.add_argument("--worker", choices=[*PATHS.values(), "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = dict(batches=2, repeats=2, warmup=1, rounds=1, latency_calls=30)
    full = dict(batches=4, repeats=3, warmup=2, rounds=3, latency_calls=200)
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.model = [m.strip() for m in args.model.split(",") if m.strip()]
    unknown = [m for m in args.model if m not in zoo.names()]
    if unknown or not args.model:
        p.error(f"--model: unknown model(s) {unknown}; choose from {', '.join(zoo.names())}")
    if args.worker and len(args.model) != 1:
        p.error("a worker measures one model")
    args.paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    if not args.paths or any(s not in PATHS for s in args.paths):
        p.error(f"--paths must name cli and/or library, got {','.join(args.paths)!r}")
    if args.busy_cpu is None:
        args.busy_cpu = load.default_cpu()
    elif args.busy_cpu == "none":
        args.busy_cpu = None
    elif not args.busy_cpu.isdigit():
        p.error(f"--busy-cpu must be a CPU number or 'none', got {args.busy_cpu!r}")
    else:
        args.busy_cpu = int(args.busy_cpu)
    for name in ("batches", "repeats", "threads", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("warmup", "latency_calls", "train_batch", "infer_batch"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        args.model = args.model[0]
        print(json.dumps(workers.run(args)))
        return 0
    load.raise_on_sigterm()  # a kill of the benchmark still stops the competing process
    args.have_torch = not args.no_torch and report.version("torch") != "not installed"
    machine_load = (cpu_busy(), os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    print(
        f"benchmarking {', '.join(args.model)} ({'idle and busy' if args.busy else 'idle'}; "
        f"paths {', '.join(args.paths)}; {args.threads} threads) ...",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    results = measure(args)
    models = {name: zoo.build(name, seed=args.seed) for name in args.model}
    flops = {name: (sum(forward_flops(m)), training_flops(m)) for name, m in models.items()}
    text, summary = report.report(args, results, models, flops, machine_load)
    print(text)
    print(f"\n(run took {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.json:
        raw = {k: v for k, v in vars(args).items()}
        Path(args.json).write_text(json.dumps({"args": raw, "results": results}, indent=1))
    low = {m: r for m, r in summary["train_ratio"].items() if r is not None}
    if args.min_ratio is not None and any(r < args.min_ratio for r in low.values()):
        print(f"training ratios {low} below --min-ratio {args.min_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
