"""benchmarks/bench.py: its arithmetic and its report (no timings are asserted here)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model1_flops(bench):
    from stablecnn.nn import zoo

    model = zoo.build("md1", seed=0)
    per_layer = bench.forward_flops(model)
    assert per_layer[0] == 2 * 32 * 19 * 19 * 1 * 10 * 10  # conv 1
    assert per_layer[3] == 2 * 16 * 14 * 14 * 32 * 5 * 5  # conv 2
    assert per_layer[7] == 2 * 2704 * 1024  # the dense layer
    assert bench.training_flops(model) == 3 * sum(per_layer) - per_layer[0]


def test_rounds_pool_every_repetition_and_keep_the_largest_peak(bench):
    runs = [
        {
            "framework": "stablecnn",
            "train": [1.0, 2.0],
            "infer": {"100": [5.0]},
            "peak_rss_train_mb": 120.0,
            "rss_before_train_mb": 90.0,
        },
        {
            "framework": "stablecnn",
            "train": [3.0],
            "infer": {"100": [6.0, 7.0]},
            "peak_rss_train_mb": 110.0,
            "rss_before_train_mb": 95.0,
        },
    ]
    merged = bench.merge_rounds(runs)
    assert merged["train"] == [1.0, 2.0, 3.0]
    assert merged["infer"] == {"100": [5.0, 6.0, 7.0]}
    assert merged["peak_rss_train_mb"] == 120.0 and merged["rss_before_train_mb"] == 95.0


def test_a_tiny_run_prints_the_table_and_the_targets():
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--no-torch",
            "--batch-sizes",
            "2",
            "--infer-batch",
            "3",
            "--batches",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--rounds",
            "2",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| 2 | train |" in out and "| 3 | infer |" in out
    assert "2 round(s) of fresh workers" in out
    assert "CPUs in the second before the run:" in out
    assert "PyTorch skipped (--no-torch): stablecnn figures only." in out


def test_bad_arguments_are_refused():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--rounds", "0"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "--rounds must be at least 1" in proc.stderr


def test_the_pytorch_worker_times_the_tests_twin_of_the_model():
    """The PyTorch side is :func:`support.twins.torch_twin` (the twin the tests hold to ours, in
    test_twins_loss_model.py), not a copy of its own; a worker trains and infers on it (no timing
    is asserted)."""
    source = BENCH.read_text()
    assert "from support.twins import torch_twin" in source
    assert "torch.nn.Conv2d" not in source and "torch.nn.Linear" not in source
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--worker", "torch", "--train-batch", "2"]
        + ["--infer-batches", "3", "--batches", "1", "--repeats", "1", "--warmup", "0"]
        + ["--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["framework"] == "torch" and result["torch_threads"] == 1
    assert len(result["train"]) == 1 and list(result["infer"]) == ["3"]
