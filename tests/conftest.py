import sys
from pathlib import Path

import pytest

# tests import their helpers (gradcheck.py, the twin helpers) as plain modules
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_torch_thread():
    """The PyTorch twins are small: one torch thread is as fast and does not fight stablecnn's
    threads for the cores. Twin modules use it with ``pytestmark``."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
