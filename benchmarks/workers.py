"""The benchmark's workers: one framework on one path, one model, in a fresh process.

``bench.py --worker KIND`` runs one of them and prints its measurements as one JSON line:

- ``stablecnn-cli``: what the command line and ``Trainer`` do: ``runtime.configure(threads)``
  (stablecnn's own pool of ``threads``, BLAS on one thread per block, freed memory kept), then
  the model, the loss and the optimizer;
- ``stablecnn-library``: a user of the library who calls no setup function: ``zoo.build`` (a
  ``Sequential``), the loss and the optimizer, stepped as they are; whatever stablecnn does by
  itself at import or on first use is what this worker measures;
- ``torch``: PyTorch on the tests' twin of the same model (``support.twins.torch_twin``, same
  layers and initial weights), ``torch.set_num_threads(threads)`` and threadpoolctl limiting any
  other BLAS or OpenMP pool to ``threads``.

Each worker trains at ``--train-batch`` (forward, loss, backward without the first layer's input
gradient, optimizer step; batch norm and dropout in training mode), then infers at
``--infer-batch`` (evaluation mode), then times ``--latency-calls`` single-image inferences one
call at a time. Synthetic data (fixed seed) is made before any clock starts; warm-up calls are
not timed. What each worker ran with (threads, BLAS threads) is read after the timing, so that
reading it cannot change what is measured.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time

import numpy as np

NUM_CLASSES = 10

# The training recipe of each model: Model 1 keeps the original scripts' Adagrad; the deeper
# models train with Adam at lr 1e-3 (issue 16). Both frameworks get the same arguments; PyTorch's
# Adagrad adds eps outside the square root (ours inside), which costs the same.
RECIPES = {
    "md1": ("Adagrad", {"lr": 0.01, "eps": 1e-6}),
    "md1he": ("Adagrad", {"lr": 0.01, "eps": 1e-6}),
}
DEFAULT_RECIPE = ("Adam", {"lr": 1e-3})


def recipe(model_name: str) -> tuple[str, dict]:
    """``(optimizer name, keyword arguments)`` the benchmark trains ``model_name`` with."""
    return RECIPES.get(model_name, DEFAULT_RECIPE)


def recipe_text(model_name: str) -> str:
    name, kwargs = recipe(model_name)
    return f"{name}({', '.join(f'{k}={v:g}' for k, v in kwargs.items())})"


def synthetic_batches(batch: int, count: int, seed: int, input_shape: tuple[int, ...]):
    """``count`` distinct (images, labels) pairs: uniform [0, 1) float32 pixels, random labels."""
    rng = np.random.default_rng(seed)
    return [
        (rng.random((batch, *input_shape), dtype=np.float32), rng.integers(0, NUM_CLASSES, batch))
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


def latencies(step, data, warmup: int, calls: int) -> list[float]:
    """Seconds of each of ``calls`` single calls ``step(x, y)``, after ``warmup`` untimed ones."""
    for i in range(warmup):
        step(*data[i % len(data)])
    seconds = []
    for i in range(calls):
        x, y = data[i % len(data)]
        t0 = time.perf_counter()
        step(x, y)
        seconds.append(time.perf_counter() - t0)
    return seconds


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def cpu_seconds() -> tuple[float, float, float] | None:
    """(wall clock, CPU seconds all processes spent busy, CPU seconds this process spent), or
    None without /proc/stat: their differences over a timed section tell how much of the
    machine other processes took meanwhile (the competitor of ``--busy``, or anyone else)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    busy = (sum(fields) - fields[3] - fields[4]) / hz  # all but idle and iowait
    return time.perf_counter(), busy, usage.ru_utime + usage.ru_stime


def others_cores(start, end) -> float | None:
    """Cores other processes kept busy on average between two :func:`cpu_seconds`."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))


def blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def stablecnn_worker(args) -> dict:
    import stablecnn
    from stablecnn.kernels import parallel, runtime
    from stablecnn.nn import zoo

    keep_freed = None
    if args.worker == "stablecnn-cli":
        runtime.configure(threads=args.threads)  # what Trainer and the CLI call
        keep_freed = runtime.keep_freed_memory()
    model = zoo.build(args.model, seed=args.seed)
    name, kwargs = recipe(args.model)
    loss = stablecnn.SoftmaxCrossEntropy()
    opt = getattr(stablecnn, name)(model.parameters(), **kwargs)

    def train_step(x, y):
        loss.forward(model.forward(x), y)
        model.backward(loss.backward(), need_input_grad=False)
        opt.step()

    def infer_step(x, y):
        model.forward(x, training=False)

    result = run_worker(args, model.input_shape, train_step, infer_step)
    result.update(
        stablecnn_threads=parallel.get_num_threads(),
        blas_threads=blas_threads(),
        keep_freed_memory=runtime.keep_freed_memory() if keep_freed is None else keep_freed,
    )
    return result


def torch_worker(args) -> dict:
    import torch
    from support.twins import torch_twin  # the twin the tests hold to our model
    from threadpoolctl import threadpool_limits

    from stablecnn.nn import zoo

    threadpool_limits(limits=args.threads)  # numpy's BLAS and any OpenMP pool torch brought
    torch.set_num_threads(args.threads)
    keep_freed = False
    if args.torch_keep_freed_memory:  # the same allocator setting as stablecnn, for comparison
        from stablecnn.kernels import runtime

        keep_freed = runtime.keep_freed_memory()
    model = zoo.build(args.model, seed=args.seed)
    input_shape = model.input_shape
    net = torch_twin(model)
    del model
    gc.collect()  # our model's arrays are freed here, before any peak is recorded
    name, kwargs = recipe(args.model)
    opt = getattr(torch.optim, name)(net.parameters(), **kwargs)
    cross_entropy = torch.nn.functional.cross_entropy

    def convert(data):
        return [(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))) for x, y in data]

    def train_step(x, y):
        opt.zero_grad(set_to_none=True)
        cross_entropy(net(x), y).backward()
        opt.step()

    def infer_step(x, y):
        with torch.inference_mode():
            net(x)

    def mode(training: bool):
        net.train(training)

    result = run_worker(args, input_shape, train_step, infer_step, convert, mode)
    result.update(
        torch_threads=torch.get_num_threads(),
        blas_threads=blas_threads(),
        keep_freed_memory=keep_freed,
        torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),  # oneDNN's and ATen's ISA
    )
    return result


def run_worker(
    args, input_shape, train_step, infer_step, convert=lambda data: data, mode=lambda t: None
) -> dict:
    """Train at ``args.train_batch`` (then read the peak memory), infer at ``args.infer_batch``,
    then time ``args.latency_calls`` single-image inferences; a size of 0 skips that part."""
    result = {"worker": args.worker, "model": args.model, "train": [], "infer": [], "latency": []}
    result["rss_before_train_mb"] = peak_rss_mb()
    start = cpu_seconds()
    if args.train_batch:
        data = convert(synthetic_batches(args.train_batch, 4, args.seed, input_shape))
        mode(True)
        result["train"] = timed(train_step, data, args.warmup, args.batches, args.repeats)
        del data
    result["peak_rss_train_mb"] = peak_rss_mb()  # before inference can raise it
    mode(False)
    if args.infer_batch:
        data = convert(synthetic_batches(args.infer_batch, 2, args.seed + 1, input_shape))
        result["infer"] = timed(infer_step, data, args.warmup, args.batches, args.repeats)
        del data
    if args.latency_calls:
        data = convert(synthetic_batches(1, 8, args.seed + 2, input_shape))
        result["latency"] = latencies(infer_step, data, max(args.warmup, 3), args.latency_calls)
    result["others_cores"] = others_cores(start, cpu_seconds())
    return result


def run(args) -> dict:
    """The measurements of the worker ``args.worker`` names."""
    return torch_worker(args) if args.worker == "torch" else stablecnn_worker(args)
