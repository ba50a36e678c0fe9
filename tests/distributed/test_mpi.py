"""Runs under ``mpiexec -n 2`` and ``-n 3`` compared bit for bit with one process, resuming
across rank counts, and the faults: Ctrl-C, a killed rank, an error on one rank, a stuck rank.

Each run is tests/distributed/rank_script.py (random 28x28 digits, md1 and md2, 2 epochs of 4
batches of 12, 6 micro-batches) or the ``stablecnn train --distributed`` command; the digests it
writes cover every parameter, buffer and optimizer state array. Where mpi4py or ``mpiexec`` is
missing (``pip install "stablecnn[mpi]"`` installs both) they skip with the reason, and fail in CI
(``CI`` set), whose install step installs them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("rank_script.py")


def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")  # the mpich wheel's, in this environment
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
try:
    import mpi4py.MPI  # noqa: F401

    MISSING = None if MPIEXEC else "no mpiexec on PATH"
except (ImportError, RuntimeError, OSError) as exc:
    MISSING = f"mpi4py or its MPI library is missing ({exc})"


@pytest.fixture(autouse=True)
def mpi_runtime():
    require_mpi()


def require_mpi() -> None:
    """A skip with the reason where MPI is missing; a failure in CI, which installs it."""
    if MISSING is not None:
        message = f'{MISSING}: pip install "stablecnn[mpi]"'
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{message}; the README's test command installs it, so CI's install failed")
        pytest.skip(message)


EPOCHS = ("--epochs", "2")
COMMON = ("--models", "md1,md2", "--augment")


def run(k: int | None, out: Path, *args: str, threads: int = 1, timeout: float = 120, **popen):
    """rank_script.py on ``k`` ranks (``None``: one process, no MPI); the finished process."""
    env = {**os.environ, "STABLECNN_NUM_THREADS": str(threads)}
    command = [sys.executable, str(SCRIPT), "--out", str(out), *args]
    if k is None:
        command.append("--local")
    else:
        command = [MPIEXEC, "-n", str(k), *command]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, **popen
    )


def digests(out: Path, model: str) -> set[str]:
    return {p.read_text() for p in (out / model).glob("digest-*.txt")}


def checkpoint_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint but the wall-clock seconds and the meta record (which holds
    the options, identical, and nothing else)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if "seconds" not in k and k != "meta"}


def assert_same_run(a: Path, b: Path) -> None:
    one, two = checkpoint_arrays(a), checkpoint_arrays(b)
    assert one.keys() == two.keys()
    differ = [k for k in one if not np.array_equal(one[k], two[k], equal_nan=True)]
    assert not differ, f"{a} and {b} differ in {differ}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The single-process run: 2 epochs, 6 micro-batches, md1 and md2."""
    require_mpi()  # (a module's fixture runs before the autouse one)
    out = tmp_path_factory.mktemp("one-process")
    done = run(None, out, *COMMON, *EPOCHS)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("k, threads", [(2, 2), (3, 1)])
def test_ranks_train_the_weights_of_one_process_bit_for_bit(reference, tmp_path, k, threads):
    """md1 and md2 (batch norm, dropout) with augmentation: every rank ends with the weights,
    buffers and optimizer state of the single-process run, and rank 0's checkpoint (history,
    test accuracy and loss from the split evaluation) is that run's; 2 threads a rank on 2 ranks
    changes nothing either."""
    done = run(k, tmp_path, *COMMON, *EPOCHS, threads=threads)
    assert done.returncode == 0, done.stderr
    for model in ("md1", "md2"):
        assert len(list((tmp_path / model).glob("digest-*.txt"))) == k
        assert digests(tmp_path, model) == digests(reference, model), model
        assert_same_run(reference / model / "checkpoint.npz", tmp_path / model / "checkpoint.npz")
        assert not (tmp_path / model / "train_log.txt").read_text().count("rank 1")


def test_a_run_started_on_two_ranks_resumes_on_three_and_on_one(reference, tmp_path):
    first = tmp_path / "two"
    done = run(2, first, "--models", "md2", "--augment", "--epochs", "1")
    assert done.returncode == 0, done.stderr
    for k, name in ((3, "three"), (None, "one")):
        shutil.copytree(first, tmp_path / name, ignore=shutil.ignore_patterns("digest-*"))
        done = run(k, tmp_path / name, "--models", "md2", "--resume", *EPOCHS)
        assert done.returncode == 0, done.stderr
        assert digests(tmp_path / name, "md2") == digests(reference, "md2"), name
        assert_same_run(
            reference / "md2" / "checkpoint.npz", tmp_path / name / "md2" / "checkpoint.npz"
        )


def test_ctrl_c_stops_every_rank_after_the_same_step_and_the_run_resumes(reference, tmp_path):
    env = {**os.environ, "STABLECNN_NUM_THREADS": "1"}
    command = [MPIEXEC, "-n", "2", sys.executable, str(SCRIPT), "--out", str(tmp_path)]
    command += ["--models", "md2", "--augment", *EPOCHS, "--pause", "0.4"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker = tmp_path / "md2" / "started"
    end = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # as the terminal's Ctrl-C reaches mpiexec
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert err.decode().count("interrupted at epoch") == 1  # rank 0 reports it, once
    progress = _progress(tmp_path / "md2" / "checkpoint.npz")
    assert 0 < progress["global_step"] < 8  # saved where both ranks stopped
    done = run(None, tmp_path, "--models", "md2", "--resume", *EPOCHS)
    assert done.returncode == 0, done.stderr
    assert digests(tmp_path, "md2") == digests(reference, "md2")


def test_a_killed_rank_stops_the_run_and_the_last_checkpoint_resumes(reference, tmp_path):
    t = time.monotonic()
    done = run(3, tmp_path, "--models", "md2", "--augment", *EPOCHS, "--fail", "kill",
               "--fail-step", "6")  # fmt: skip
    assert done.returncode != 0
    assert time.monotonic() - t < 30
    assert _progress(tmp_path / "md2" / "checkpoint.npz") == {
        "epoch": 1,
        "step": 0,
        "global_step": 4,
    }  # the end of epoch 1, intact
    done = run(2, tmp_path, "--models", "md2", "--resume", *EPOCHS)
    assert done.returncode == 0, done.stderr
    assert digests(tmp_path, "md2") == digests(reference, "md2")


def test_an_error_on_one_rank_stops_every_rank_naming_the_rank_and_the_error(tmp_path):
    t = time.monotonic()
    done = run(2, tmp_path, "--models", "md2", *EPOCHS, "--fail", "raise", "--fail-step", "2")
    seconds = time.monotonic() - t
    assert done.returncode == 70  # MPI_Abort's status (comm.ABORT_CODE)
    assert "rank 1 of 2" in done.stderr
    assert "RuntimeError: injected failure at step 2" in done.stderr
    assert "stopping every rank" in done.stderr
    assert seconds < 30


def test_a_stuck_rank_is_stopped_by_the_watchdog(tmp_path):
    done = run(2, tmp_path, "--models", "md2", *EPOCHS, "--fail", "hang", "--fail-step", "2",
               "--timeout", "2")  # fmt: skip
    assert done.returncode == 70
    assert "rank 0 of 2" in done.stderr and "waited 2 s for the other ranks" in done.stderr


def _progress(path: Path) -> dict:
    from stablecnn.training import checkpoint

    return checkpoint.load(path).meta["progress"]


def test_the_train_command_on_two_ranks_is_one_process_with_its_micro_batches(tmp_path):
    """``mpiexec -n 2 stablecnn train --distributed`` (default 6 micro-batches) and
    ``stablecnn train --micro-batches 6`` write the same checkpoint; rank 0 alone prints and
    writes, and its log names every rank's process."""
    from support.fakes import make_data

    from stablecnn.data import specs
    from stablecnn.data.idx import write_idx

    data = tmp_path / "idx"
    data.mkdir()
    (train_x, train_y), (test_x, test_y) = make_data(40, 1), make_data(20, 2)
    arrays = {"train-images": train_x, "train-labels": train_y}
    arrays |= {"t10k-images": test_x, "t10k-labels": test_y}
    for key, fspec in specs.MNIST.files.items():
        write_idx(data / fspec.raw_name, arrays[key])
    options = ["--model", "md2", "--epochs", "1", "--batch-size", "10", "--no-plots"]
    options += ["--data-dir", str(data), "--no-verify", "--optimizer", "adam", "--lr", "0.001"]
    env = {**os.environ, "STABLECNN_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "stablecnn", "train", *options]
    one = subprocess.run(
        [*command, "--micro-batches", "6", "--out", str(tmp_path / "one")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [MPIEXEC, "-n", "2", *command, "--distributed", "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert_same_run(tmp_path / "one" / "checkpoint.npz", tmp_path / "two" / "checkpoint.npz")
    for line in ("run directory:", "test accuracy", "epoch 1/1"):  # printed once, by rank 0
        assert two.stdout.count(line) == one.stdout.count(line) > 0, line
    log = (tmp_path / "two" / "train_log.txt").read_text()
    assert "distributed: 2 ranks, 6 micro-batches of each batch of 10" in log
    assert "rank 0: " in log and "rank 1: " in log
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )


def test_more_ranks_than_micro_batches_are_refused_once_before_anything_is_written(tmp_path):
    command = [MPIEXEC, "-n", "3", sys.executable, "-m", "stablecnn", "train", "--distributed"]
    command += ["--micro-batches", "2", "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("3 ranks but the run has 2 micro-batches") == 1  # rank 0 says it
    assert "--micro-batches 3 or more" in done.stderr
    assert not (tmp_path / "run").exists()
