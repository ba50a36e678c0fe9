"""Side-by-side speed and memory of stablecnn and PyTorch on the same network and data.

For each batch size (default 32, 100 and 256) the script trains the network (forward, backward,
Adagrad step) and runs inference, once in stablecnn and once in PyTorch, with the same number of
threads, and prints images per second, the stablecnn/PyTorch ratio, the achieved GFLOP/s and
the peak memory of each. Inference is also timed at batch 1000.

Every measurement runs in a fresh subprocess of this script (``--worker stablecnn`` or
``--worker torch``): the peak resident set size (``ru_maxrss``) then belongs to one framework and
one batch size, and neither framework's thread pools or allocator state affect the other. The
workers time only compute: synthetic data (fixed seed) is made before the clock starts, warm-up
steps are excluded, and each figure is the median of several timed repetitions. A full run
spawns three rounds of worker pairs per batch size, stablecnn and PyTorch alternating, and pools
their repetitions: a change in the machine's load during the run then falls on both.

Usage::

    python benchmarks/bench.py --quick           # under a minute
    python benchmarks/bench.py                   # the full table
    python benchmarks/bench.py --threads 1 --batch-sizes 100 --batches 20 --repeats 7

The report goes to stdout as markdown (paste it into a README); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if (REPO / "src" / "stablecnn").is_dir():
    sys.path.insert(0, str(REPO / "src"))  # benchmark the working tree, not an installed copy
sys.path.insert(0, str(REPO / "tests"))  # the support package: PyTorch's twin of our model

import stablecnn  # noqa: E402
from stablecnn import Adagrad, Conv2d, Linear, SoftmaxCrossEntropy  # noqa: E402
from stablecnn.nn import zoo  # noqa: E402

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
LR, EPS = 0.01, 1e-6
TARGETS = {("train", 100): 1.0, ("infer", 1000): 1.0, ("train", 32): 0.8, ("train", 256): 0.8}
MEMORY_TARGET = 1.5
ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_VERBOSE",
)


# -- FLOP counting ------------------------------------------------------------------------------
def forward_flops(model, input_shape=INPUT_SHAPE) -> list[int]:
    """Multiply-add FLOPs of one example's forward pass, one entry per layer (2 per MAC).

    Conv2d: ``2 * F * Ho * Wo * C * kH * kW``; Linear: ``2 * in * out``. Bias adds, ReLU, pooling,
    the loss and the optimizer are O(activations + parameters), under 1% of Model 1's work, and
    are not counted (nor by the usual conventions).
    """
    flops = []
    for layer, out_shape in zip(model.layers, model.shapes(input_shape)):
        if isinstance(layer, Conv2d):
            f, ho, wo = out_shape
            kh, kw = layer.kernel_size
            flops.append(2 * f * ho * wo * layer.in_channels * kh * kw)
        elif isinstance(layer, Linear):
            flops.append(2 * layer.in_features * layer.out_features)
        else:
            flops.append(0)
    return flops


def training_flops(model, input_shape=INPUT_SHAPE) -> int:
    """FLOPs of one example's training step: ``3 * forward - forward(first layer)``.

    The backward pass of a conv or dense layer costs two products the size of its forward one:
    the weight gradient and the input gradient. The first layer's input gradient is skipped
    (nobody reads it, in either framework), hence ``forward + 2 * forward - first``. For Model 1:
    3 * 12.89 - 2.31 = 36.36 MFLOP per image.
    """
    per_layer = forward_flops(model, input_shape)
    return 3 * sum(per_layer) - per_layer[0]


# -- the workers --------------------------------------------------------------------------------
def synthetic_batches(batch: int, count: int, seed: int):
    """``count`` distinct (images, labels) pairs: uniform [0, 1) float32 pixels, random labels."""
    rng = np.random.default_rng(seed)
    return [
        (rng.random((batch, *INPUT_SHAPE), dtype=np.float32), rng.integers(0, NUM_CLASSES, batch))
        for _ in range(count)
    ]


def timed(step, data, warmup: int, batches: int, repeats: int) -> list[float]:
    """Images per second of ``repeats`` runs of ``batches`` calls ``step(x, y)``, after warm-up."""
    for i in range(warmup):
        step(*data[i % len(data)])
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(batches):
            step(*data[i % len(data)])
        elapsed = time.perf_counter() - t0
        rates.append(batches * len(data[0][1]) / elapsed)
    return rates


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def stablecnn_worker(args) -> dict:
    from threadpoolctl import threadpool_info

    from stablecnn.kernels import parallel, runtime

    runtime.configure(threads=args.threads)  # what Trainer and the CLI do: BLAS on 1 thread,
    keep_freed = runtime.keep_freed_memory()  # stablecnn's own pool of args.threads
    model = zoo.build(args.model, seed=args.seed)
    loss, opt = SoftmaxCrossEntropy(), Adagrad(model.parameters(), lr=LR, eps=EPS)

    def train_step(x, y):
        loss.forward(model.forward(x), y)
        model.backward(loss.backward(), need_input_grad=False)
        opt.step()

    def infer_step(x, y):
        model.forward(x, training=False)

    return run_worker(
        args,
        train_step,
        infer_step,
        {
            "stablecnn_threads": parallel.get_num_threads(),
            "blas_threads": [
                lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"
            ],
            "keep_freed_memory": keep_freed,
        },
    )


def torch_worker(args) -> dict:
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=args.threads)  # numpy's BLAS and any OpenMP pool torch brought
    torch.set_num_threads(args.threads)
    keep_freed = False
    if args.torch_keep_freed_memory:  # the same allocator setting as stablecnn, for comparison
        from stablecnn.kernels import runtime

        keep_freed = runtime.keep_freed_memory()
    # the tests' twin of the model (tests/support/twins.py), which they hold to ours: the same
    # layers and the same initial weights
    from support.twins import torch_twin

    net = torch_twin(zoo.build(args.model, seed=args.seed))
    gc.collect()  # our model's arrays are freed here, before any peak is recorded
    opt = torch.optim.Adagrad(net.parameters(), lr=LR, eps=EPS)
    cross_entropy = torch.nn.functional.cross_entropy

    def to_torch(data):
        return [(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))) for x, y in data]

    def train_step(x, y):
        opt.zero_grad(set_to_none=True)
        cross_entropy(net(x), y).backward()
        opt.step()

    def infer_step(x, y):
        with torch.inference_mode():
            net(x)

    return run_worker(
        args,
        train_step,
        infer_step,
        {
            "torch_threads": torch.get_num_threads(),
            "blas_threads": [
                lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"
            ],
            "keep_freed_memory": keep_freed,
        },
        convert=to_torch,
    )


def run_worker(args, train_step, infer_step, info: dict, convert=lambda data: data) -> dict:
    """Train at ``--train-batch`` (then read the peak memory), then infer at each inference
    batch."""
    result = {"framework": args.worker, "train_batch": args.train_batch, **info}
    if args.train_batch:
        data = convert(synthetic_batches(args.train_batch, 4, args.seed))
        result["rss_before_train_mb"] = peak_rss_mb()
        result["train"] = timed(train_step, data, args.warmup, args.batches, args.repeats)
        result["peak_rss_train_mb"] = peak_rss_mb()  # before inference can raise it
        del data
    result["infer"] = {}
    for batch in args.infer_batches:
        data = convert(synthetic_batches(batch, 2, args.seed + 1))
        result["infer"][str(batch)] = timed(
            infer_step, data, args.warmup, args.batches, args.repeats
        )
        del data
    return result


# -- the driver ---------------------------------------------------------------------------------
def merge_rounds(runs: list[dict]) -> dict:
    """One worker answer from several rounds: every timed repetition pooled (the report takes
    their median), the largest peak memory."""
    merged = dict(runs[0])
    merged["train"] = [rate for r in runs for rate in r.get("train", [])]
    merged["infer"] = {b: [rate for r in runs for rate in r["infer"][b]] for b in runs[0]["infer"]}
    for key in ("peak_rss_train_mb", "rss_before_train_mb"):
        if key in runs[0]:
            merged[key] = max(r[key] for r in runs)
    return merged


def spawn(framework: str, args, train_batch: int, infer_batches: list[int]) -> dict:
    """Run one worker in a fresh interpreter with this process's environment, unchanged."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        framework,
        "--model",
        args.model,
        "--threads",
        str(args.threads),
        "--batches",
        str(args.batches),
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--seed",
        str(args.seed),
        "--train-batch",
        str(train_batch),
        *(["--torch-keep-freed-memory"] if args.torch_keep_freed_memory else []),
        "--infer-batches",
        ",".join(map(str, infer_batches)),
    ]
    print(
        f"  {framework:9s} train@{train_batch} infer@{','.join(map(str, infer_batches))} ...",
        file=sys.stderr,
        flush=True,
    )
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker {framework} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def blas_summary() -> tuple[str, int]:
    from threadpoolctl import threadpool_info

    libs = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not libs:
        return "unknown (threadpoolctl found no BLAS)", 0
    lib = libs[0]
    text = (
        f"{lib['internal_api']} {lib.get('version')} ({lib.get('architecture', '?')} kernels, "
        f"{lib.get('threading_layer', '?')})"
    )
    return text, lib["num_threads"]


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


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def num(v, fmt="{:,.0f}") -> str:
    return fmt.format(v) if v else "n/a"


def fmt_ratio(ours, ref) -> str:
    return f"{ours / ref:.2f}x" if ours and ref else "n/a"


def report(
    args, results: dict, have_torch: bool, blas_default: int, blas_text: str, load: float
) -> tuple[str, float | None]:
    model = zoo.build(args.model, seed=args.seed)
    fwd, train = sum(forward_flops(model)), training_flops(model)
    med = statistics.median
    out = []
    out.append(
        f"## stablecnn vs PyTorch: {args.model} ({model.num_params:,} parameters), "
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    )
    out.append("")
    out.append(
        f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} "
        f"{platform.release()}"
    )
    out.append(
        f"- python {platform.python_version()}, numpy {np.__version__}, "
        f"stablecnn {stablecnn.__version__}, torch {version('torch')}, "
        f"threadpoolctl {version('threadpoolctl')}"
    )
    out.append(f"- numpy BLAS: {blas_text}; its default thread count here: {blas_default}")
    threads = {
        fw: {k: v for k, v in r.items() if k.endswith("threads") or k == "keep_freed_memory"}
        for fw, r in results.get(args.batch_sizes[0], {}).items()
    }
    out.append(
        f"- threads requested: {args.threads}; in the workers (keep_freed_memory: glibc "
        f"keeps freed blocks up to 32 MiB for reuse, see stablecnn.kernels.runtime): "
        + "; ".join(f"{fw} {json.dumps(t)}" for fw, t in threads.items())
    )
    env = ", ".join(
        f"{k}={os.environ[k]!r}" if k in os.environ else f"{k} not set" for k in ENV_VARS
    )
    out.append(f"- environment (passed to the workers unchanged): {env}")
    busy, avg = load
    busy_text = f"{100 * busy:.0f}% busy" if busy is not None else "unknown"
    out.append(
        f"- CPUs in the second before the run: {busy_text}; load average (1 min, lags): "
        f"{avg:.2f}"
        + (
            " - WARNING: other processes were using the CPUs; the figures are not reliable"
            if busy is not None and busy > 0.25
            else ""
        )
    )
    out.append(
        f"- timing: {args.rounds} round(s) of fresh workers per batch size, stablecnn and "
        f"PyTorch alternating; in each, {args.warmup} warm-up batches, then {args.repeats} "
        f"timed runs of {args.batches} batches; the median of all {args.rounds * args.repeats}"
        f" runs is reported; synthetic data, seed {args.seed}; float32"
    )
    out.append(
        f"- training = forward + backward (no input gradient for the first layer) + "
        f"Adagrad (lr {LR}, eps {EPS}); PyTorch uses torch.optim.Adagrad, whose eps sits "
        f"outside the square root (ours: inside) - same cost"
    )
    out.append(
        f"- FLOPs per image: forward {fwd / 1e6:.2f} M, training {train / 1e6:.2f} M "
        f"(3 x forward - first layer's input gradient; 2 FLOPs per multiply-add)"
    )
    out.append("")
    # flatten the workers' answers to {(framework, pass, batch): median images per second}
    rates = {}
    for r in (r for per_batch in results.values() for r in per_batch.values()):
        if r.get("train"):
            rates[(r["framework"], "train", r["train_batch"])] = med(r["train"])
        for batch, samples in r["infer"].items():
            rates[(r["framework"], "infer", int(batch))] = med(samples)
    rows = [(b, kind) for b in args.batch_sizes for kind in ("train", "infer")]
    if args.infer_batch not in args.batch_sizes:
        rows.append((args.infer_batch, "infer"))

    out.append(
        "| batch | pass | stablecnn img/s | PyTorch img/s | stablecnn / PyTorch "
        "| stablecnn GFLOP/s | PyTorch GFLOP/s |"
    )
    out.append("|---:|:---|---:|---:|---:|---:|---:|")
    for batch, kind in rows:
        flops = train if kind == "train" else fwd
        s, t = rates.get(("stablecnn", kind, batch)), rates.get(("torch", kind, batch))
        out.append(
            f"| {batch} | {kind} | {num(s)} | {num(t)} | {fmt_ratio(s, t)} | "
            f"{num(s and s * flops / 1e9, '{:.1f}')} | {num(t and t * flops / 1e9, '{:.1f}')} |"
        )
    out.append("")
    out.append(
        "| batch | stablecnn peak RSS (MiB) | PyTorch peak RSS (MiB) | stablecnn / PyTorch "
        "| stablecnn RSS before training | PyTorch RSS before training |"
    )
    out.append("|---:|---:|---:|---:|---:|---:|")
    for batch in args.batch_sizes:
        s, t = (results.get(batch, {}).get(fw, {}) for fw in ("stablecnn", "torch"))
        sp, tp = s.get("peak_rss_train_mb"), t.get("peak_rss_train_mb")
        out.append(
            f"| {batch} | {num(sp)} | {num(tp)} | {fmt_ratio(sp, tp)} | "
            f"{num(s.get('rss_before_train_mb'))} | {num(t.get('rss_before_train_mb'))} |"
        )
    out.append("")
    out.append(
        "Peak RSS is the whole training process (interpreter, imports, model, data, "
        "optimizer state), read after training and before inference, one process per row "
        'and framework; "before training" is the peak after imports, model and data.'
    )
    if not have_torch:
        out.append("")
        out.append(
            "PyTorch skipped (--no-torch): stablecnn figures only."
            if args.no_torch
            else "PyTorch is not installed (pip install torch==2.13.0): stablecnn figures only."
        )
    train_ratio = None
    if ("torch", "train", 100) in rates and ("stablecnn", "train", 100) in rates:
        train_ratio = rates[("stablecnn", "train", 100)] / rates[("torch", "train", 100)]
    if have_torch:
        out.append("")
        out.append("Targets (issue 5):")
        for (kind, batch), goal in TARGETS.items():
            s, t = rates.get(("stablecnn", kind, batch)), rates.get(("torch", kind, batch))
            if s and t:
                verdict = "met" if s / t >= goal else "not met"
                out.append(
                    f"- {kind} at batch {batch}: {s / t:.2f}x PyTorch (>= {goal}x: {verdict})"
                )
        for batch in args.batch_sizes:
            s, t = (
                results.get(batch, {}).get(fw, {}).get("peak_rss_train_mb")
                for fw in ("stablecnn", "torch")
            )
            if s and t:
                verdict = "met" if s / t < MEMORY_TARGET else "not met"
                out.append(
                    f"- peak memory training at batch {batch}: {s / t:.2f}x PyTorch "
                    f"(< {MEMORY_TARGET}x: {verdict})"
                )
    return "\n".join(out), train_ratio


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a run under a minute: --batches 3 --repeats 3 --warmup 1",
    )
    p.add_argument("--batches", type=int, help="timed batches per repetition (default 10)")
    p.add_argument(
        "--repeats", type=int, help="timed repetitions; the median is reported (default 5)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        help="fresh worker pairs per batch size, alternating "
        "stablecnn and PyTorch, all repetitions pooled (default 3; --quick: 1)",
    )
    p.add_argument("--warmup", type=int, help="untimed batches first (default 2)")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="threads for numpy's BLAS and for PyTorch (default: os.cpu_count())",
    )
    p.add_argument(
        "--batch-sizes",
        default="32,100,256",
        help="comma-separated training/inference batch sizes (default 32,100,256)",
    )
    p.add_argument(
        "--infer-batch", type=int, default=1000, help="an extra inference batch size (default 1000)"
    )
    p.add_argument("--model", default="md1", choices=zoo.names())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="measure stablecnn only")
    p.add_argument("--json", metavar="PATH", help="also write the raw measurements to PATH")
    p.add_argument(
        "--min-ratio",
        type=float,
        metavar="R",
        help="exit with status 1 if training at batch 100 is below R x PyTorch",
    )
    # internal: one measurement in a fresh process
    p.add_argument(
        "--torch-keep-freed-memory",
        action="store_true",
        help="give the PyTorch worker stablecnn's allocator setting too (default: "
        "PyTorch as users run it)",
    )
    p.add_argument("--worker", choices=["stablecnn", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--train-batch", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--infer-batches", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = dict(batches=3, repeats=3, warmup=1, rounds=1)
    full = dict(batches=10, repeats=5, warmup=2, rounds=3)
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b]
    args.infer_batches = [int(b) for b in args.infer_batches.split(",") if b]
    for name in ("batches", "repeats", "threads", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0 or not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error("--warmup must be >= 0 and --batch-sizes positive integers")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker = stablecnn_worker if args.worker == "stablecnn" else torch_worker
        print(json.dumps(worker(args)))
        return 0

    blas_text, blas_default = blas_summary()
    load = (cpu_busy(), os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    have_torch = not args.no_torch and version("torch") != "not installed"
    frameworks = ["stablecnn", "torch"] if have_torch else ["stablecnn"]
    print(
        f"benchmarking {args.model} with {args.threads} threads, batch sizes {args.batch_sizes}"
        f" (+ inference at {args.infer_batch}) ...",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    results: dict[int, dict[str, dict]] = {}
    for i, batch in enumerate(args.batch_sizes):
        infer = [batch]
        if i == len(args.batch_sizes) - 1 and args.infer_batch not in args.batch_sizes:
            infer.append(args.infer_batch)
        rounds = {fw: [] for fw in frameworks}
        for _ in range(args.rounds):
            for fw in frameworks:  # alternate, so a drift in machine load hits both alike
                rounds[fw].append(spawn(fw, args, batch, infer))
        results[batch] = {fw: merge_rounds(runs) for fw, runs in rounds.items()}
    text, train_ratio = report(args, results, have_torch, blas_default, blas_text, load)
    print(text)
    print(f"\n(run took {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"args": {k: v for k, v in vars(args).items()}, "results": results}, indent=1
            )
        )
    if args.min_ratio is not None and train_ratio is not None and train_ratio < args.min_ratio:
        print(
            f"training ratio {train_ratio:.2f}x is below --min-ratio {args.min_ratio}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
