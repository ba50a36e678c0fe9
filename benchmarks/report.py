"""The benchmark's markdown report: the machine, one table of every model idle and busy, the
ratios under load against the target, the peak memory, and issue 16's targets.

Every ratio reads "higher is better for stablecnn": images per second ours / PyTorch's for
training and inference, and milliseconds PyTorch's / ours for latency.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys

import numpy as np
import workers

import stablecnn

BUSY_TARGET = 0.9  # busy ratio / idle ratio, for Model 1 and md2 (issue 16)
SPEED_TARGET = 1.0  # every ratio, idle (issue 16)
ENV_VARS = (  # what chooses either engine's threads or instruction set
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "STABLECNN_NUM_THREADS",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
)
MEASURES = ("train", "infer", "latency median", "latency p95")
PATH_NAMES = {"stablecnn-cli": "CLI path", "stablecnn-library": "library path"}


def version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_summary() -> str:
    from threadpoolctl import threadpool_info

    libs = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not libs:
        return "unknown (threadpoolctl found no BLAS)"
    lib = libs[0]
    return (
        f"{lib['internal_api']} {lib.get('version')} ({lib.get('architecture', '?')} kernels, "
        f"{lib.get('threading_layer', '?')})"
    )


def openblas_own_choice() -> str | None:
    """The kernels NumPy's OpenBLAS picks by its own CPU detection, read in a child process
    started without ``OPENBLAS_CORETYPE`` (None when that variable is unset, or on failure)."""
    if not os.environ.get("OPENBLAS_CORETYPE"):
        return None
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = (
        "import numpy, threadpoolctl; print(next((lib.get('architecture') for lib in "
        "threadpoolctl.threadpool_info() if lib['user_api'] == 'blas'), ''))"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def kernels_line(results) -> str:
    """Which instruction sets the two engines' products ran on: numpy's OpenBLAS kernels (and,
    when ``OPENBLAS_CORETYPE`` chose them, what OpenBLAS would pick by itself) and PyTorch's CPU
    capability as its worker read it."""
    torch_isa = next(
        (
            r["torch_cpu_capability"]
            for per_kind in (r.get("idle", {}) for r in results.values())
            for kind, r in per_kind.items()
            if "torch_cpu_capability" in r
        ),
        None,
    )
    chosen = os.environ.get("OPENBLAS_CORETYPE")
    own = openblas_own_choice()
    text = f"- kernels: numpy's BLAS {blas_summary()}"
    if chosen:
        text += f", as OPENBLAS_CORETYPE={chosen!r} in the environment asks"
        if own:
            text += f" (without it, OpenBLAS picks its {own} kernels on this CPU)"
    if torch_isa:
        text += f"; PyTorch's CPU capability: {torch_isa}"
    return text


def value(result: dict | None, measure: str) -> float | None:
    """The median images per second (train, infer) or the latency in ms (median or p95)."""
    if not result:
        return None
    if measure in ("train", "infer"):
        return statistics.median(result[measure]) if result.get(measure) else None
    calls = result.get("latency")
    if not calls:
        return None
    return 1e3 * float(np.percentile(calls, 95 if measure.endswith("p95") else 50))


def ratio(ours: dict | None, theirs: dict | None, measure: str) -> float | None:
    """stablecnn / PyTorch for rates, PyTorch / stablecnn for latencies (higher: ours faster)."""
    a, b = value(ours, measure), value(theirs, measure)
    if not a or not b:
        return None
    return a / b if measure in ("train", "infer") else b / a


def fmt(v, spec="{:,.0f}") -> str:
    return spec.format(v) if v else "n/a"


def fmt_ratio(r) -> str:
    return f"{r:.2f}x" if r else "n/a"


def measure_label(measure: str, args) -> str:
    return {
        "train": f"training, batch {args.train_batch} (img/s)",
        "infer": f"inference, batch {args.infer_batch} (img/s)",
        "latency median": "latency, 1 image, median (ms)",
        "latency p95": "latency, 1 image, 95th pct (ms)",
    }[measure]


def environment_line() -> str:
    """The variables of :data:`ENV_VARS` as the workers inherit them: each engine's threads,
    OpenBLAS's kernels, and the instruction-set caps of PyTorch's ATen, oneDNN and MKL (set to
    compare the two engines on the same instructions; see benchmarks/README.md)."""
    env = ", ".join(f"{k}={os.environ[k]!r}" if k in os.environ else f"{k} unset" for k in ENV_VARS)
    return f"- environment (passed to the workers unchanged): {env}"


def header(args, results, models, flops, machine_load) -> list[str]:
    out = [
        f"## stablecnn vs PyTorch, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "",
    ]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    out.append(
        f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs ({usable} usable), "
        f"{platform.system()} {platform.release()}"
    )
    out.append(
        f"- python {platform.python_version()}, numpy {np.__version__}, "
        f"stablecnn {stablecnn.__version__}, torch {version('torch')}, "
        f"threadpoolctl {version('threadpoolctl')}"
    )
    threads = {}
    for per_kind in (r.get("idle", {}) for r in results.values()):
        for kind, r in per_kind.items():
            threads.setdefault(kind, {k: v for k, v in r.items() if k.endswith("threads")})
    out.append(
        f"- threads: {args.threads} for the CLI path (runtime.configure) and PyTorch; the "
        f"library path makes no setup call. What the workers ran with: "
        + "; ".join(f"{kind} {json.dumps(t)}" for kind, t in threads.items())
    )
    out.append(kernels_line(results))
    out.append(environment_line())
    busy, avg = machine_load
    busy_text = f"{100 * busy:.0f}% busy" if busy is not None else "unknown"
    warn = busy is not None and busy > 0.25
    out.append(
        f"- CPUs in the second before the run: {busy_text}; load average (1 min, lags): {avg:.2f}"
        + (" - WARNING: other processes were using the CPUs" if warn else "")
    )
    if args.busy:
        where = "not pinned" if args.busy_cpu is None else f"pinned to CPU {args.busy_cpu}"
        out.append(
            f"- busy: a competing process (a NumPy loop, np.sin over 128 KiB, {where}) keeps one "
            f"core busy while the busy workers run; started before and killed after each round's "
            f"busy workers"
        )
    out.append(
        f"- timing: {args.rounds} round(s) of fresh workers per model, idle then busy, stablecnn "
        f"and PyTorch alternating; in each, {args.warmup} warm-up batches, then {args.repeats} "
        f"timed runs of {args.batches} batches (the median of all runs), and {args.latency_calls} "
        f"single-image calls (median and 95th percentile of all calls); synthetic data, seed "
        f"{args.seed}; float32"
    )
    for name, model in models.items():
        fwd, train = flops[name]
        out.append(
            f"- {name}: {model.num_params:,} parameters, trained with {workers.recipe_text(name)}"
            f" (the same in PyTorch); forward {fwd / 1e6:.2f} MFLOP, training {train / 1e6:.2f}"
            f" MFLOP per image (2 FLOPs per multiply-add)"
        )
    out.append(
        "- ratios: higher is better for stablecnn (img/s ours / PyTorch's; ms PyTorch's / ours)"
    )
    return out


def report(args, results, models, flops, machine_load) -> tuple[str, dict]:
    """The markdown report and a summary: ``{"train_ratio": {model: idle CLI ratio},
    "busy_over_idle": {(model, measure, kind): value}}``."""
    out = header(args, results, models, flops, machine_load)
    kinds = [
        k
        for k in ("stablecnn-cli", "stablecnn-library")
        if any(k in per_kind for r in results.values() for per_kind in r.values())
    ]
    out.append("")
    out.append(
        "| model | load | measurement | PyTorch | "
        + " | ".join(f"stablecnn, {PATH_NAMES[k]} | ratio" for k in kinds)
        + " |"
    )
    out.append("|:---|:---|:---|---:|" + "---:|---:|" * len(kinds))
    for name, per_condition in results.items():
        for condition, per_kind in per_condition.items():
            torch = per_kind.get("torch")
            for measure in MEASURES:
                spec = "{:,.0f}" if measure in ("train", "infer") else "{:.2f}"
                cells = [fmt(value(torch, measure), spec)]
                for k in kinds:
                    ours = per_kind.get(k)
                    cells += [
                        fmt(value(ours, measure), spec),
                        fmt_ratio(ratio(ours, torch, measure)),
                    ]
                out.append(
                    f"| {name} | {condition} | {measure_label(measure, args)} | "
                    + " | ".join(cells)
                    + " |"
                )
    out.append("")
    out.append(
        "Other processes' CPU during each worker's measurements (cores, one figure per worker; "
        "busy: the competitor's share included): "
        + "; ".join(
            f"{name} {condition} "
            + "/".join(
                "n/a" if c is None else f"{c:.2f}"
                for r in per_kind.values()
                for c in r.get("others_cores", [])
            )
            for name, per_condition in results.items()
            for condition, per_kind in per_condition.items()
        )
    )
    summary = {"train_ratio": {}, "busy_over_idle": {}}
    for name, per_condition in results.items():
        idle = per_condition["idle"]
        summary["train_ratio"][name] = ratio(idle.get("stablecnn-cli"), idle.get("torch"), "train")
    if args.busy and args.have_torch:
        out += ["", f"Under load: busy ratio / idle ratio (target >= {BUSY_TARGET}, issue 16):", ""]
        out.append(
            "| model | measurement | path | idle ratio | busy ratio | busy / idle | target "
            "| stablecnn busy / idle speed | PyTorch busy / idle speed |"
        )
        out.append("|:---|:---|:---|---:|---:|---:|:---|---:|---:|")
        for name, per_condition in results.items():
            idle, busy = per_condition["idle"], per_condition["busy"]
            for measure in ("train", "infer", "latency median"):
                for k in kinds:
                    r_idle = ratio(idle.get(k), idle.get("torch"), measure)
                    r_busy = ratio(busy.get(k), busy.get("torch"), measure)
                    q = r_busy / r_idle if r_idle and r_busy else None
                    summary["busy_over_idle"][(name, measure, k)] = q
                    verdict = "n/a" if q is None else ("met" if q >= BUSY_TARGET else "not met")
                    ours_kept = ratio(busy.get(k), idle.get(k), measure)  # speed kept under load
                    torch_kept = ratio(busy.get("torch"), idle.get("torch"), measure)
                    out.append(
                        f"| {name} | {measure_label(measure, args)} | {PATH_NAMES[k]} | "
                        f"{fmt_ratio(r_idle)} | {fmt_ratio(r_busy)} | {fmt(q, '{:.2f}')} | "
                        f"{verdict} | {fmt(ours_kept, '{:.2f}')} | {fmt(torch_kept, '{:.2f}')} |"
                    )
    out += memory(args, results, kinds)
    out += targets(args, results)
    return "\n".join(out), summary


def memory(args, results, kinds) -> list[str]:
    if not args.train_batch:
        return []
    out = ["", f"Peak memory of a training process at batch {args.train_batch}, idle (MiB):", ""]
    out.append(
        "| model | PyTorch | "
        + " | ".join(f"stablecnn, {PATH_NAMES[k]} | ratio" for k in kinds)
        + " | stablecnn before training | PyTorch before training |"
    )
    out.append("|:---|---:|" + "---:|---:|" * len(kinds) + "---:|---:|")
    for name, per_condition in results.items():
        idle = per_condition["idle"]
        t = idle.get("torch", {}).get("peak_rss_train_mb")
        cells = [fmt(t)]
        for k in kinds:
            s = idle.get(k, {}).get("peak_rss_train_mb")
            cells += [fmt(s), fmt_ratio(s / t if s and t else None)]
        before = idle.get(kinds[0], {}).get("rss_before_train_mb") if kinds else None
        cells += [fmt(before), fmt(idle.get("torch", {}).get("rss_before_train_mb"))]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("")
    out.append(
        "Peak RSS is the whole process (interpreter, imports, model, data, optimizer state), "
        "read after training and before inference; PyTorch's import alone is about 300 MiB."
    )
    return out


def targets(args, results) -> list[str]:
    if not args.have_torch:
        return [
            "",
            "PyTorch skipped (--no-torch): stablecnn figures only."
            if args.no_torch
            else "PyTorch is not installed (pip install torch==2.13.0): stablecnn figures only.",
        ]
    out = ["", f"Targets (issue 16), idle, CLI path (>= {SPEED_TARGET}x; memory below PyTorch's):"]
    for name, per_condition in results.items():
        idle = per_condition["idle"]
        ours, torch = idle.get("stablecnn-cli"), idle.get("torch")
        if ours is None:
            continue
        measures = ("train", "infer") if name.startswith("md1") else MEASURES[:3]
        parts = []
        for measure in measures:
            r = ratio(ours, torch, measure)
            if r is not None:
                parts.append(f"{measure} {r:.2f}x ({'met' if r >= SPEED_TARGET else 'not met'})")
        s, t = ours.get("peak_rss_train_mb"), (torch or {}).get("peak_rss_train_mb")
        if args.train_batch and s and t:
            parts.append(f"memory {s / t:.2f}x ({'met' if s < t else 'not met'})")
        out.append(f"- {name}: " + "; ".join(parts))
    return out
