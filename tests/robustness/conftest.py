"""Shared pieces of the robustness matrix (issue 7): toy data, a reference run, fault injection.

The tests reach these helpers through the ``kit`` fixture (this module itself), so no test
imports a conftest by name; subprocesses load this file by its path (see :data:`CLI_SCRIPT`).

Every training in the matrix uses the same tiny recipe (:data:`CONFIG` on :data:`TRAIN` /
:data:`TEST`: md1, 2 epochs of 3 steps of 10 images), so one uninterrupted reference run proves
that a run resumed after any fault ends with bit-identical weights and optimizer state.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for its helpers when loaded by path
from support import default_sigint  # noqa: E402


# -- toy data and the recipe -----------------------------------------------------------------------
def make_data(n: int, seed: int, size: int = 28):
    """Learnable toy digits: class k lights up row block k of an otherwise noisy uint8 image."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for k in range(10):
        images[labels == k, 2 + 2 * k : 4 + 2 * k, 4 : size - 4] = 255
    return images, labels


TRAIN, TEST = make_data(30, 0), make_data(10, 1)
EPOCHS, BATCH = 2, 10  # 3 steps per epoch


def config(**overrides):
    from stablecnn.training.trainer import TrainConfig

    return TrainConfig(**{"epochs": EPOCHS, "batch_size": BATCH, **overrides})


def trainer(run_dir, cfg=None, data=None, **kwargs):
    from stablecnn.training.trainer import Trainer

    train, test = data or (TRAIN, TEST)
    return Trainer(cfg or config(), run_dir, train, test, echo=False, progress=False, **kwargs)


def serve_toy_data() -> None:
    """Make the CLI (in this process) train on the toy data instead of the real datasets."""
    import stablecnn.cli.train

    def load_data(dataset, data_dir=None, splits=("train", "test"), quiet=False, verify=True):
        return [TRAIN if split == "train" else TEST for split in splits]

    stablecnn.cli.train.load_data = load_data


# -- run directories -------------------------------------------------------------------------------
def state_of(run_dir) -> dict[str, np.ndarray]:
    """Every weight and optimizer array of the run's checkpoint, by name."""
    from stablecnn.training import checkpoint

    ckpt = checkpoint.load(Path(run_dir) / "checkpoint.npz")
    return {
        **{f"param/{k}": v for k, v in ckpt.params.items()},
        **{f"optim/{k}": v for k, v in ckpt.optim.items()},
    }


def resume_to_end(run_dir) -> dict[str, np.ndarray]:
    """Resume the run in ``run_dir`` (as ``stablecnn train --resume`` does) to its last epoch."""
    from stablecnn.training.trainer import resume_checkpoint

    cfg, ckpt = resume_checkpoint(run_dir)
    cfg.epochs = EPOCHS
    trainer(run_dir, cfg, checkpoint=ckpt).fit()
    return state_of(run_dir)


def assert_bit_exact(got: dict, reference: dict) -> None:
    assert sorted(got) == sorted(reference)
    for name, value in reference.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def snapshot(folder) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``folder`` (to prove nothing changed)."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def temp_files(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).glob(".*.tmp"))


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> dict[str, np.ndarray]:
    """The final state of the uninterrupted run: what every resumed run must end with."""
    run = tmp_path_factory.mktemp("reference")
    trainer(run).fit()
    return state_of(run)


@pytest.fixture(scope="session")
def epoch1_template(tmp_path_factory) -> Path:
    """A run directory holding the good checkpoint written at the end of epoch 1."""
    run = tmp_path_factory.mktemp("epoch1")
    trainer(run, config(epochs=1)).fit()
    return run


@pytest.fixture
def epoch1_run(tmp_path, epoch1_template) -> Path:
    """A fresh copy of :func:`epoch1_template` to damage."""
    run = tmp_path / "run"
    shutil.copytree(epoch1_template, run)
    return run


_THIS_MODULE = sys.modules.get(__name__)  # taken now: other folders' conftest.py share the name


@pytest.fixture(scope="session")
def kit():
    """This module: the helpers above, for the tests."""
    return _THIS_MODULE


@pytest.fixture
def toy_cli(monkeypatch):
    """The CLI, in this process, on the toy data."""
    import stablecnn.cli.train

    monkeypatch.setattr(
        stablecnn.cli.train,
        "load_data",
        lambda dataset, data_dir=None, splits=("train", "test"), quiet=False, verify=True: [
            TRAIN if s == "train" else TEST for s in splits
        ],
    )


# -- the CLI in a real process ---------------------------------------------------------------------
CLI_SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("robustness_kit", {kit!r})
kit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kit)
kit.serve_toy_data()
{setup}
from stablecnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_process(*args, setup: str = "", **popen) -> subprocess.Popen:
    """``stablecnn ARGS`` in a new process on the toy data, after running ``setup`` (Python)."""
    script = CLI_SCRIPT.format(kit=str(HERE), setup=setup)
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
        **popen,
    )


def wait_for_line(stream, marker: str, limit: int = 10_000) -> list[str]:
    """Read ``stream`` line by line until one contains ``marker``; return the lines read."""
    lines = []
    for _ in range(limit):
        line = stream.readline()
        if not line:
            raise AssertionError(
                f"the process ended before printing {marker!r}:\n" + "".join(lines)
            )
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} in {limit} lines")


# -- hostile files ---------------------------------------------------------------------------------
class Payload:
    """Unpickling this calls ``func(*args)``: the classic malicious ``__reduce__``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def evil_pickle(marker: Path, protocol: int = 4) -> bytes:
    """A pickle that creates ``marker`` when unpickled (checked to work with plain pickle)."""
    return pickle.dumps(Payload(os.mkdir, str(marker)), protocol=protocol)


def save_small_checkpoint(path, model=None, meta_extra=None) -> Path:
    """A valid checkpoint of a tiny model (fast to build), with a normalizer and progress."""
    from stablecnn.nn.layers import Flatten, Linear
    from stablecnn.nn.model import Sequential
    from stablecnn.training import checkpoint

    model = model or Sequential(Flatten(), Linear(4, 3), input_shape=(1, 2, 2))
    meta = {"normalizer": {"kind": "unit", "mean": 0.0, "std": 255.0}, **(meta_extra or {})}
    checkpoint.save(path, model, meta)
    return Path(path)


def rewrite_npz(src, dst, change) -> Path:
    """Copy the arrays of ``src`` into ``dst`` after ``change(arrays)`` (a dict) edits them."""
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)
    return Path(dst)


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("STABLECNN_DATA", str(root))
    return root
