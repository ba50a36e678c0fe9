"""Fixtures for the ONNX tests (helpers: tests/support/interop.py).

onnx and onnxruntime are test requirements (the ``onnx`` and ``test`` extras, which the README's
test command installs): without them these tests fail, as the PyTorch twins do, rather than
pass as skips. The tests of the message a user without onnx gets hide the package themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.interop import GREY


@pytest.fixture
def checkpoint_of(tmp_path):
    """``checkpoint_of(model, normalizer, dataset=None, accuracy=None)``: a checkpoint file of
    the model, as a training run writes it (the normaliser, the dataset, a test accuracy)."""
    from stablecnn.training import checkpoint

    def make(model, normalizer=GREY, dataset="mnist", accuracy=None, name="ckpt.npz"):
        meta = {"normalizer": normalizer.to_dict(), "train": {"dataset": dataset, "model": "m"}}
        history = {"epoch_test_acc": np.array([0.5, accuracy])} if accuracy is not None else {}
        path = tmp_path / name
        checkpoint.save(path, model, meta, history=history)
        return path

    return make
