"""benchmarks/bench.py: its arithmetic, its report and its competing process (no timings are
asserted here)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
BENCH = BENCHMARKS / "bench.py"
TINY = ["--batches", "1", "--repeats", "1", "--warmup", "0", "--threads", "1"]
TINY += ["--train-batch", "2", "--infer-batch", "3", "--latency-calls", "2"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts benchmarks/ on sys.path: load, report, workers
    return module


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_model1_flops(bench):
    from stablecnn.nn import zoo

    model = zoo.build("md1", seed=0)
    per_layer = bench.forward_flops(model)
    assert per_layer[0] == 2 * 32 * 19 * 19 * 1 * 10 * 10  # conv 1
    assert per_layer[3] == 2 * 16 * 14 * 14 * 32 * 5 * 5  # conv 2
    assert per_layer[7] == 2 * 2704 * 1024  # the dense layer
    assert bench.training_flops(model) == 3 * sum(per_layer) - per_layer[0]


def test_md3_flops_count_the_layers_inside_residual_blocks(bench):
    """ResNet-20 for 28x28: the stem, 6 convs 16->16 at 28x28, a stride-2 conv 16->32 and five
    32->32 at 14x14 with a 1x1 projection, the same again to 64 channels at 7x7, the head."""
    from stablecnn.nn import zoo

    model = zoo.build("md3", seed=0)
    macs = (
        16 * 1 * 9 * 28 * 28
        + 6 * 16 * 16 * 9 * 28 * 28
        + (32 * 16 * 9 + 5 * 32 * 32 * 9 + 32 * 16) * 14 * 14
        + (64 * 32 * 9 + 5 * 64 * 64 * 9 + 64 * 32) * 7 * 7
        + 64 * 10
    )
    assert macs == 31_021_952
    per_layer = bench.forward_flops(model)
    assert len(per_layer) == len(model.layers) and sum(per_layer) == 2 * macs
    assert per_layer[3] == 2 * 2 * 16 * 16 * 9 * 28 * 28  # one basic block of stage 1
    assert per_layer[6] == 2 * (32 * 16 * 9 + 32 * 32 * 9 + 32 * 16) * 14 * 14  # with projection


def test_rounds_pool_every_repetition_and_latency_and_keep_the_largest_peak(bench):
    runs = [
        {"train": [1.0, 2.0], "infer": [5.0], "latency": [0.1], "peak_rss_train_mb": 120.0},
        {"train": [3.0], "infer": [6.0, 7.0], "latency": [0.2, 0.3], "peak_rss_train_mb": 110.0},
    ]
    merged = bench.merge_rounds(runs)
    assert merged["train"] == [1.0, 2.0, 3.0] and merged["infer"] == [5.0, 6.0, 7.0]
    assert merged["latency"] == [0.1, 0.2, 0.3] and merged["peak_rss_train_mb"] == 120.0


def test_ratios_read_higher_is_better_for_rates_and_latencies(bench):
    import report

    ours = {"train": [200.0, 100.0, 300.0], "latency": [0.002] * 19 + [0.010]}
    theirs = {"train": [100.0], "latency": [0.004] * 20}
    assert report.value(ours, "train") == 200.0
    assert report.ratio(ours, theirs, "train") == 2.0
    assert report.value(ours, "latency median") == pytest.approx(2.0)  # ms
    assert report.value(ours, "latency p95") == pytest.approx(2.4)  # numpy's linear percentile
    assert report.ratio(ours, theirs, "latency median") == pytest.approx(2.0)  # 4 ms / 2 ms
    assert report.ratio(ours, None, "train") is None and report.ratio({}, theirs, "infer") is None


def test_the_report_gives_busy_over_idle_for_each_model_and_path(bench):
    import report

    def answer(train, infer, latency_s):
        return {"train": [train], "infer": [infer], "latency": [latency_s], "peak_rss_train_mb": 1}

    results = {
        "md1": {
            "idle": {
                "stablecnn-cli": answer(100, 400, 0.001),
                "stablecnn-library": answer(80, 400, 0.001),
                "torch": answer(100, 200, 0.001),
            },
            "busy": {
                "stablecnn-cli": answer(45, 200, 0.002),
                "stablecnn-library": answer(20, 100, 0.004),
                "torch": answer(50, 100, 0.002),
            },
        }
    }
    args = SimpleNamespace(
        busy=True, have_torch=True, no_torch=False, train_batch=100, infer_batch=500,
        busy_cpu=1, rounds=1, warmup=0, repeats=1, batches=1, latency_calls=1, seed=0, threads=2,
    )  # fmt: skip
    from stablecnn.nn import zoo

    models = {"md1": zoo.build("md1", seed=0)}
    text, summary = report.report(args, results, models, {"md1": (1, 3)}, (0.0, 0.0))
    q = summary["busy_over_idle"]
    assert q[("md1", "train", "stablecnn-cli")] == pytest.approx(0.9)  # 0.9x busy / 1.0x idle
    assert q[("md1", "train", "stablecnn-library")] == pytest.approx(0.5)  # 0.4x / 0.8x
    assert q[("md1", "latency median", "stablecnn-library")] == pytest.approx(0.5)
    assert summary["train_ratio"] == {"md1": 1.0}
    assert "| md1 | busy | training, batch 100 (img/s) | 50 | 45 | 0.90x | 20 | 0.40x |" in text
    assert "| 1.00x | 0.90x | 0.90 | met | 0.45 | 0.50 |" in text  # CLI training
    assert "| 0.80x | 0.40x | 0.50 | not met |" in text  # library training
    assert "Adagrad(lr=0.01, eps=1e-06)" in text and "pinned to CPU 1" in text


def test_a_tiny_run_prints_every_model_and_both_paths():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--no-torch", "--model", "md1,md3", "--rounds", "2", *TINY],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for model in ("md1", "md3"):
        assert f"| {model} | idle | training, batch 2 (img/s) |" in out
        assert f"| {model} | idle | latency, 1 image, 95th pct (ms) |" in out
    assert "stablecnn, CLI path | ratio | stablecnn, library path | ratio |" in out
    assert "2 round(s) of fresh workers" in out and "Adam(lr=0.001)" in out
    assert "CPUs in the second before the run:" in out
    assert "PyTorch skipped (--no-torch): stablecnn figures only." in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--paths", "cli,gui"], "--paths must name cli and/or library"),
        (["--model", "md1,md9"], "unknown model(s) ['md9']"),
        (["--busy-cpu", "x"], "--busy-cpu must be a CPU number or 'none'"),
        (["--latency-calls", "-1"], "--latency-calls must be >= 0"),
    ],
)
def test_bad_arguments_are_refused(argv, message):
    proc = subprocess.run([sys.executable, str(BENCH), *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr


def test_the_pytorch_worker_times_the_tests_twin_of_the_model():
    """The PyTorch side is :func:`support.twins.torch_twin` (the twin the tests hold to ours), not
    a copy of its own; a worker trains, infers and answers single images on it (no timing is
    asserted)."""
    source = (BENCHMARKS / "workers.py").read_text()
    assert "from support.twins import torch_twin" in source
    assert "torch.nn.Conv2d" not in source and "torch.nn.Linear" not in source
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--worker", "torch", "--model", "md2", *TINY],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["worker"] == "torch" and result["torch_threads"] == 1
    assert len(result["train"]) == 1 and len(result["infer"]) == 1 and len(result["latency"]) == 2
    import torch

    assert result["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_the_kernels_line_names_a_forced_openblas_core_and_openblas_own_choice(bench, monkeypatch):
    """The header says which kernels numpy's OpenBLAS runs, that OPENBLAS_CORETYPE chose them
    and what OpenBLAS picks without it (read in a child process), and PyTorch's ISA."""
    report = sys.modules["report"]
    from threadpoolctl import threadpool_info

    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not blas or blas[0]["internal_api"] != "openblas":
        pytest.skip("numpy's BLAS is not OpenBLAS")
    results = {"md2": {"idle": {"torch": {"torch_cpu_capability": "AVX512"}}}}
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")  # the child must not see it
    own = report.openblas_own_choice()
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = "import numpy, threadpoolctl; print(threadpoolctl.threadpool_info()[0]['architecture'])"
    expected = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert own == expected and own != "Prescott"
    line = report.kernels_line(results)
    assert "as OPENBLAS_CORETYPE='Prescott' in the environment asks" in line
    assert f"(without it, OpenBLAS picks its {own} kernels on this CPU)" in line
    assert line.endswith("PyTorch's CPU capability: AVX512")
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert report.openblas_own_choice() is None
    assert "OPENBLAS_CORETYPE" not in report.kernels_line(results)


def test_the_environment_line_names_the_instruction_set_caps_of_both_engines(bench, monkeypatch):
    """A run with PyTorch held to AVX2 says so, beside OpenBLAS's forced kernels."""
    report = sys.modules["report"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    line = report.environment_line()
    assert "ONEDNN_MAX_CPU_ISA='AVX2'" in line and "OPENBLAS_CORETYPE='Haswell'" in line
    assert "ATEN_CPU_CAPABILITY unset" in line and "MKL_ENABLE_INSTRUCTIONS" in line


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_the_competing_process_runs_pinned_and_dies_with_the_block(bench):
    import load

    cpu = load.default_cpu()
    with pytest.raises(KeyboardInterrupt):
        with load.competing_load(cpu) as proc:
            pid = proc.pid
            assert alive(pid)
            assert os.sched_getaffinity(pid) == {cpu}
            raise KeyboardInterrupt  # Ctrl-C in the middle of a measurement
    assert not alive(pid) and proc.returncode is not None
    with load.competing_load(cpu, enabled=False) as nothing:
        assert nothing is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_competing_process_dies_when_the_benchmark_is_killed_outright():
    """SIGKILL runs no code in the benchmark: the competitor notices on its own."""
    parent = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(BENCHMARKS)!r})
        import load
        with load.competing_load(None) as proc:
            print(proc.pid, flush=True)
            time.sleep(60)
    """)
    driver = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(driver.stdout.readline())
        assert alive(pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the competing process outlived a killed benchmark"
    finally:
        driver.kill()
        driver.wait()
        driver.stdout.close()


@pytest.fixture(scope="module")
def gemm_floor():
    spec = importlib.util.spec_from_file_location("gemm_floor", BENCHMARKS / "gemm_floor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["md1", "md2", "md3"])
def test_gemm_floor_times_the_products_of_every_training_flop(gemm_floor, bench, name):
    """benchmarks/gemm_floor.py: its product shapes hold exactly the multiply-adds that bench.py
    counts for a training step (the first layer without its input gradient), residual blocks'
    convolutions and projections included."""
    from stablecnn.nn import zoo

    model = zoo.build(name, seed=0)
    shapes = gemm_floor.product_shapes(model, batch=7)
    macs = sum((2 if i == 0 else 3) * f * k * cols for i, (_, f, k, cols) in enumerate(shapes))
    assert 2 * macs == 7 * bench.training_flops(model)
    assert all(cols % 7 == 0 for *_, cols in shapes)


def test_gemm_floor_prints_a_line_per_model_and_refuses_bad_arguments(gemm_floor, capsys):
    argv = ["--model", "md1,md2", "--batch", "2", "--threads", "1", "--repeats", "1"]
    assert gemm_floor.main([*argv, "--per-layer"]) == 0
    out = capsys.readouterr().out
    assert out.count("G multiply-adds a step") == 2 and "img/s" in out
    assert "Conv2d" in out and "GFLOP/s" in out
    for bad, message in (
        (["--model", "md9"], "unknown model 'md9'"),
        (["--batch", "0"], "at least 1"),
    ):
        with pytest.raises(SystemExit):
            gemm_floor.main(bad)
        assert message in capsys.readouterr().err


def test_gemm_floor_winograd_shapes_cover_the_3x3_stride_1_convolutions(gemm_floor):
    """md3 on 28x28: six 16-channel convolutions at 28x28 and five each of 32 and 64 channels
    at 14x14 and 7x7 (the stem, the stride-2 and the 1x1 convolutions are not Winograd's);
    F(2x2, 3x3) covers a map with ceil(H / 2) * ceil(W / 2) tiles an image."""
    from stablecnn.nn import zoo

    shapes = gemm_floor.winograd_shapes(zoo.build("md3", seed=0), batch=3, m=2)
    assert [(f, c) for f, c, _, _ in shapes] == [(16, 16)] * 6 + [(32, 32)] * 5 + [(64, 64)] * 5
    assert [t for _, _, t, _ in shapes] == [3 * 14 * 14] * 6 + [3 * 7 * 7] * 5 + [3 * 4 * 4] * 5
    assert [cols for *_, cols in shapes] == [3 * 784] * 6 + [3 * 196] * 5 + [3 * 49] * 5
    assert gemm_floor.parse_args(["--winograd", "2,4"]).winograd == [2, 4]
    for bad in ("0", "x", "2,9"):
        with pytest.raises(SystemExit):
            gemm_floor.parse_args(["--winograd", bad])
