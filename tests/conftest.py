"""Fixtures for every test. The shared helpers are modules of the support package (tests/support/),
which this file puts on the path; no test imports a conftest."""

import sys
from pathlib import Path

import pytest

# tests import their helpers from the support package (tests/support/) as a top-level package
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_torch_thread():
    """The PyTorch twins are small: one torch thread is as fast and does not fight stablecnn's
    threads for the cores. Twin modules use it with ``pytestmark``.

    PyTorch is a test requirement (the ``test`` extra): without it the twins fail, never skip.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def threads():
    """``threads(n)`` runs stablecnn on ``n`` threads for the test; the end leaves 1 thread.

    Not NumPy's BLAS default: once stablecnn's threads are set, BLAS stays at one thread (see
    :mod:`stablecnn.kernels.parallel`), and a later test's run in this process must see that same
    state, or its products would use a multi-threaded BLAS that rounds otherwise than a new process.
    """
    from stablecnn.kernels import parallel

    yield parallel.set_num_threads
    parallel.set_num_threads(1)


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    """An empty data cache root, also set as ``$STABLECNN_DATA``."""
    root = tmp_path / "cache"
    monkeypatch.setenv("STABLECNN_DATA", str(root))
    return root
