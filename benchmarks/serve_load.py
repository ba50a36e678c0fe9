"""Latency and throughput of ``stablecnn serve``: what a person drawing on the page waits for, and
how many predictions a second the server gives several clients at once.

For each model (``--model md1,md2``) the script saves a checkpoint of the architecture (weights
drawn from seed 0: a trained model of the same architecture costs the same), starts ``stablecnn
serve`` on it in its own process (on 127.0.0.1 and a free port, with the command line's threads),
and measures from this process over HTTP:

- single-request latency, one client on one kept-alive connection, ``--requests`` requests after
  ``--warmup``: the median and the 95th percentile, for two bodies: ``pixels`` (a 28 x 28 image
  already framed, JSON) and ``page`` (what the page sends as you draw: a 280 x 280 PNG of a drawn
  digit as a data URL, framed by the server, with the first convolution's feature maps);
- throughput: ``--clients`` clients (8), each on its own connection sending ``--per-client``
  requests (50) of the page's body one after the other; requests per second over the wall time,
  and every answer's status (any but 200 is counted and reported as an error).

Everything is bounded: the number of requests is fixed, every socket has a timeout, and the whole
load phase stops at ``--time-limit`` seconds (the unfinished requests are then reported).

Usage::

    python benchmarks/serve_load.py                    # md1 and md2, the README's figures
    python benchmarks/serve_load.py --model md2 --requests 100

The report goes to stdout as markdown; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if (REPO / "src" / "stablecnn").is_dir():
    sys.path.insert(0, str(REPO / "src"))  # benchmark the working tree, not an installed copy

import numpy as np
from PIL import Image, ImageDraw

from stablecnn.data import Normalizer
from stablecnn.nn import zoo
from stablecnn.training import checkpoint

SOCKET_TIMEOUT = 30.0  # seconds a request may take before it counts as failed


def save_checkpoint(name: str, folder: Path) -> Path:
    """A checkpoint of zoo model ``name`` (seed 0 weights) as ``stablecnn serve`` reads it."""
    path = folder / f"{name}.npz"
    meta = {
        "normalizer": Normalizer.unit().to_dict(),
        "train": {"model": name, "dataset": "mnist"},
        "progress": {"epoch": 0, "step": 0, "global_step": 0},
    }
    checkpoint.save(path, zoo.build(name, seed=0), meta)
    return path


def bodies() -> dict[str, bytes]:
    """The two request bodies: a framed 28 x 28 ``pixels`` image, and the page's drawing."""
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 12:16] = 255
    drawing = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(drawing).ellipse([85, 40, 195, 240], outline=0, width=20)  # a drawn zero
    png = io.BytesIO()
    drawing.save(png, "PNG")
    url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    return {
        "pixels": json.dumps({"pixels": pixels.tolist()}).encode(),
        "page": json.dumps({"image": url, "feature_maps": True}).encode(),
    }


class Server:
    """``stablecnn serve CKPT --port 0`` in its own process; ``host``, ``port`` once it listens."""

    def __init__(self, ckpt: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stablecnn", "serve", str(ckpt), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )
        line = self.process.stdout.readline()
        if " at http://" not in line:
            self.process.kill()
            raise RuntimeError(f"stablecnn serve did not start: {line}{self.process.stderr.read()}")
        url = line.split(" at http://")[1].split("/")[0]
        self.host, port = url.rsplit(":", 1)
        self.port = int(port)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, float]:
    """``(status, seconds)`` of one ``POST /api/predict`` on a kept-alive connection."""
    start = time.perf_counter()
    conn.request("POST", "/api/predict", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status, time.perf_counter() - start


def latency(server: Server, body: bytes, requests: int, warmup: int) -> dict:
    """Median and 95th percentile (ms) of ``requests`` single requests, one after the other."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=SOCKET_TIMEOUT)
    try:
        for _ in range(warmup):
            post(conn, body)
        times, errors = [], 0
        for _ in range(requests):
            status, seconds = post(conn, body)
            errors += status != 200
            times.append(seconds)
    finally:
        conn.close()
    return {
        "median_ms": 1e3 * statistics.median(times),
        "p95_ms": 1e3 * float(np.percentile(times, 95)),
        "errors": errors,
    }


def throughput(server: Server, body: bytes, clients: int, per_client: int, limit: float) -> dict:
    """Requests per second of ``clients`` concurrent clients sending ``per_client`` each."""

    def client(_: int) -> list[int]:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=SOCKET_TIMEOUT)
        statuses = []
        try:
            for _ in range(per_client):
                if time.perf_counter() > deadline:
                    break
                try:
                    statuses.append(post(conn, body)[0])
                except (OSError, http.client.HTTPException):
                    statuses.append(-1)
                    conn.close()  # a new connection for the next request
        finally:
            conn.close()
        return statuses

    start = time.perf_counter()
    deadline = start + limit
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, k) for k in range(clients)]
        wait(futures, timeout=limit + SOCKET_TIMEOUT)
        seconds = time.perf_counter() - start
        statuses = [s for f in futures if f.done() for s in f.result()]
    done = sum(s == 200 for s in statuses)
    return {
        "requests_per_s": done / seconds,
        "seconds": seconds,
        "ok": done,
        "errors": len(statuses) - done,
        "unfinished": clients * per_client - len(statuses),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="md1,md2", help="zoo models, comma-separated")
    parser.add_argument("--requests", type=int, default=200, help="latency requests per body")
    parser.add_argument("--warmup", type=int, default=20, help="requests before timing")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--per-client", type=int, default=50, help="requests per client")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds for the load")
    args = parser.parse_args(argv)
    payloads = bodies()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.model.split(","):
            print(f"{name}: starting stablecnn serve", file=sys.stderr)
            server = Server(save_checkpoint(name, Path(folder)))
            try:
                row = {"model": name}
                for kind, body in payloads.items():
                    print(f"{name}: latency, {kind}", file=sys.stderr)
                    row[kind] = latency(server, body, args.requests, args.warmup)
                print(f"{name}: {args.clients} clients x {args.per_client}", file=sys.stderr)
                row["load"] = throughput(
                    server, payloads["page"], args.clients, args.per_client, args.time_limit
                )
            finally:
                server.stop()
            rows.append(row)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"`stablecnn serve`, {platform.processor() or platform.machine()}, {cpus} CPUs, ", end="")
    print(f"Python {platform.python_version()}, NumPy {np.__version__}, ", end="")
    print(f"load average {load_before:.1f} before the run (other processes' work)\n")
    print(
        f"| model | latency, pixels: median / p95 | latency, page's drawing + feature maps: "
        f"median / p95 | {args.clients} clients x {args.per_client}: requests/s | errors |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        px, page, load = row["pixels"], row["page"], row["load"]
        errors = px["errors"] + page["errors"] + load["errors"] + load["unfinished"]
        print(
            f"| {row['model']} | {px['median_ms']:.1f} / {px['p95_ms']:.1f} ms "
            f"| {page['median_ms']:.1f} / {page['p95_ms']:.1f} ms "
            f"| {load['requests_per_s']:.0f} ({load['ok']} in {load['seconds']:.1f} s) "
            f"| {errors} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
