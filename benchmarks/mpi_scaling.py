"""Data-parallel scaling over MPI on this machine: images per second of a training step for 1, 2
and 3 ranks of one thread each against one process on 2 threads, the time each step spends in
collectives, the bytes each rank sends and receives, and the scaling model's prediction beside
each measured figure.

The step is the trainer's (:class:`stablecnn.training.microbatch.MicroBatchStep` then the
optimizer; Model 1 with Adagrad 0.01, the others with Adam 1e-3) on a fixed random batch of
``--batch`` normalised 28x28 images: the data pipeline is left out (every rank builds the whole
batch; a few milliseconds). Each configuration runs in its own ``mpiexec`` (or plain process),
``--warmup`` steps and then ``--steps`` timed steps; the figures are rank 0's.

The model (the README's "Several processes (MPI)" section)::

    T(K) = ceil(P / K) * t_mb * c(K) + t_opt + t_comm(K)
    t_comm(K) = t_exchange(gradient) + 3 * (batch norm layers) * t_exchange(small)

``t_mb`` is one micro-batch's forward and backward pass, ``t_opt`` the optimizer's update, both
measured on one rank (K = 1); ``c(K)`` is how much slower a process computes when K of them run
at once on this machine (shared caches and memory, and more processes than cores for K = 3),
measured by running K plain processes of ``ceil(P / K)`` micro-batches each at the same time
(``c = 1`` for ranks on separate machines); ``t_exchange`` is the time of the step's exchange
(:meth:`~stablecnn.training.microbatch.MicroBatchStep._combine`) measured alone on K ranks, of
the gradient and of 65 float64 sums, a batch norm's. Between machines, with latency ``alpha``
and bandwidth ``beta`` and ``L = ceil(log2 K)`` levels of the tree that cross ranks, an
exchange of G bytes takes about ``2 L alpha + (L + 2) G / beta`` (the sends up the tree, then
MPICH's broadcast of a large message, a scatter and an all-gather).

Usage::

    python benchmarks/mpi_scaling.py                    # md1 and md2, 1-3 ranks, ~2 minutes
    python benchmarks/mpi_scaling.py --model md2 --steps 20

Run it on a quiet machine: ``uptime``'s load is printed before and after. Needs the ``mpi``
extra (``pip install "stablecnn[mpi]"``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if (REPO / "src" / "stablecnn").is_dir():
    sys.path.insert(0, str(REPO / "src"))  # benchmark the working tree, not an installed copy

import numpy as np  # noqa: E402


# -- one configuration, in its own processes ----------------------------------------------------
def worker(args) -> None:
    from stablecnn.kernels import parallel, runtime
    from stablecnn.nn.layers.norm import _BatchNorm
    from stablecnn.nn.zoo import resolve_model
    from stablecnn.optim import build_optimizer
    from stablecnn.training.comm import LocalComm, mpi_world
    from stablecnn.training.microbatch import MicroBatchStep, _walk

    comm = LocalComm() if args.local else mpi_world()
    runtime.configure(args.threads)
    model = resolve_model(args.model, seed=0)
    md1 = args.model == "md1"
    optimizer = build_optimizer(
        "adagrad" if md1 else "adam", model.parameters(), lr=0.01 if md1 else 1e-3
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    step = MicroBatchStep(model, args.micro, comm)

    def one_step() -> tuple[float, float]:
        t0 = time.perf_counter()
        step(x, y)
        t1 = time.perf_counter()
        optimizer.step()
        return t1 - t0, time.perf_counter() - t1

    for _ in range(args.warmup):
        one_step()
    comm.barrier()
    comm.stats.reset()
    t = time.perf_counter()
    parts = [one_step() for _ in range(args.steps)]
    comm.barrier()
    seconds = (time.perf_counter() - t) / args.steps
    stats = comm.stats
    calls = (stats.calls - (comm.size > 1)) / args.steps  # the closing barrier is not a step's
    result = {
        "ranks": comm.size,
        "threads": parallel.get_num_threads(),
        "micro": args.micro,
        "step_ms": 1e3 * seconds,
        "images_per_s": args.batch / seconds,
        "fb_ms": 1e3 * float(np.median([p[0] for p in parts])),
        "opt_ms": 1e3 * float(np.median([p[1] for p in parts])),
        "comm_ms": 1e3 * stats.seconds / args.steps,
        "collectives": calls,
        "sent": stats.bytes_sent / args.steps,
        "received": stats.bytes_received / args.steps,
        "batch_norms": sum(isinstance(m, _BatchNorm) for m in _walk(model.layers)),
        "grad_bytes": step.grad_bytes,
        "local": args.local,
    }
    if comm.size > 1:  # the exchange alone: a gradient's (and loss), and a batch norm's sums
        grads = [g for _, _, g in model.parameters()]
        for name, value in (("exchange_ms", [*grads, np.zeros(3)]), ("small_ms", [np.zeros(65)])):
            leaves = {(i, i + 1): [a.copy() for a in value] for i in step.mine}  # added in place
            comm.barrier()
            t = time.perf_counter()
            for _ in range(args.steps):
                step._combine(leaves, "")
            result[name] = 1e3 * (time.perf_counter() - t) / args.steps
    if comm.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)


def launch(args, ranks: int | None, threads: int, micro: int) -> dict:
    """One configuration: ``ranks`` under mpiexec (``None``: one plain process)."""
    command = [sys.executable, __file__, "--worker", "--model", args.model]
    command += ["--batch", str(args.batch), "--steps", str(args.steps)]
    command += ["--warmup", str(args.warmup), "--micro", str(micro), "--threads", str(threads)]
    if ranks is None:
        command.append("--local")
    else:
        mpiexec = Path(sys.executable).with_name("mpiexec")
        mpiexec = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec") or "mpiexec"
        command = [mpiexec, "-n", str(ranks), *command]
    env = {**os.environ, "STABLECNN_NUM_THREADS": str(threads)}
    print(f"running: {' '.join(command[-14:])}", file=sys.stderr, flush=True)
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(s for s in out.splitlines() if s.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


# -- the model ----------------------------------------------------------------------------------
def corun(args, k: int) -> float:
    """c(K): the step time of ``k`` plain one-thread processes of ceil(P / k) micro-batches each
    (of the size of the runs' micro-batches), run at the same time, over one alone's."""
    micro = math.ceil(args.micro / k)
    batch = round(args.batch * micro / args.micro)
    command = [sys.executable, __file__, "--worker", "--local", "--model", args.model]
    command += ["--batch", str(batch), "--micro", str(micro), "--threads", "1"]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    env = {**os.environ, "STABLECNN_NUM_THREADS": "1"}

    def times(n: int) -> list[float]:
        procs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(n)
        ]
        outs = [p.communicate()[0] for p in procs]
        lines = [next(s for s in o.splitlines() if s.startswith("RESULT ")) for o in outs]
        return [json.loads(line[len("RESULT ") :])["fb_ms"] for line in lines]

    print(f"running: {k} plain processes at once", file=sys.stderr, flush=True)
    return float(np.mean(times(k)) / np.mean(times(1)))


def predict(base: dict, run: dict) -> float:
    """Step time in ms the README's model predicts for ``run`` from the one-rank figures."""
    k, micro = run["ranks"], run["micro"]
    t_mb = base["fb_ms"] / micro  # one micro-batch, one thread
    compute = math.ceil(micro / k) * t_mb * run.get("corun", 1.0) + base["opt_ms"]
    if k == 1:
        return compute
    return compute + run["exchange_ms"] + 3 * run["batch_norms"] * run["small_ms"]


def table(args, runs: list[tuple[str, dict]]) -> str:
    base = next(r for name, r in runs if name.startswith("1 rank"))
    rows = [
        "| configuration | images/s | step ms | model ms | communicating ms | messages "
        "| sent KB | received KB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in runs:
        model = "" if r["local"] else f"{predict(base, r):.1f}"
        rows.append(
            f"| {name} | {r['images_per_s']:.0f} | {r['step_ms']:.1f} | {model} "
            f"| {r['comm_ms']:.2f} | {r['collectives']:.0f} | {r['sent'] / 1e3:.0f} "
            f"| {r['received'] / 1e3:.0f} |"
        )
    transfers = [
        f"{r['ranks']} ranks: the gradient's {r['exchange_ms']:.2f} ms, a batch norm's sums "
        f"{1e3 * r['small_ms']:.0f} us, c(K) {r['corun']:.2f}"
        for _, r in runs
        if "exchange_ms" in r
    ]
    return "\n".join(
        [
            f"**{args.model}**, batch {args.batch}, {base['micro']} micro-batches, "
            f"{base['batch_norms']} batch norm layers, gradient {base['grad_bytes'] / 1e6:.2f} MB; "
            f"one micro-batch {base['fb_ms'] / base['micro']:.1f} ms, update "
            f"{base['opt_ms']:.1f} ms (1 rank, 1 thread)",
            "",
            *rows,
            "",
            "Exchanges alone: " + "; ".join(transfers) + ".",
        ]
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="md1,md2")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--micro", type=int, default=6, help="micro-batches (default 6)")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--local", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    cores = len(os.sched_getaffinity(0))
    print(f"load before: {os.getloadavg()[0]:.2f} (1-minute average), {cores} CPUs", flush=True)
    for model in args.model.split(","):
        args.model = model
        micro = args.micro
        runs = [
            ("1 process, 2 threads, whole batch", launch(args, None, 2, 1)),
            (f"1 process, 2 threads, {micro} micro-batches", launch(args, None, 2, micro)),
        ]
        runs += [
            (f"{k} rank{'s' * (k > 1)} x 1 thread{' (oversubscribed)' * (k > cores)}",
             launch(args, k, 1, args.micro))
            for k in (1, 2, 3)
        ]  # fmt: skip
        for _, r in runs[3:]:
            if r["ranks"] > 1:
                r["corun"] = corun(args, r["ranks"])
        print()
        print(table(args, runs[2:3] + runs[:2] + runs[3:]))
        print(flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f} (1-minute average)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
