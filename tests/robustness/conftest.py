"""Fixtures of the robustness matrix (issue 7): the reference run, run directories to damage, and
the command line on toy data.

The helpers live in the support package (:mod:`support.runs`: the recipe every training here
uses; :mod:`support.fakes`, :mod:`support.payloads`, :mod:`support.processes`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from support.fakes import toy_loader
from support.runs import TEST, TRAIN, make_config, make_trainer, state_of


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> dict[str, np.ndarray]:
    """The final state of the uninterrupted run: what every resumed run must end with."""
    run = tmp_path_factory.mktemp("reference")
    make_trainer(run).fit()
    return state_of(run)


@pytest.fixture(scope="session")
def epoch1_template(tmp_path_factory) -> Path:
    """A run directory holding the good checkpoint written at the end of epoch 1."""
    run = tmp_path_factory.mktemp("epoch1")
    make_trainer(run, make_config(epochs=1)).fit()
    return run


@pytest.fixture
def epoch1_run(tmp_path, epoch1_template) -> Path:
    """A fresh copy of :func:`epoch1_template` to damage."""
    run = tmp_path / "run"
    shutil.copytree(epoch1_template, run)
    return run


@pytest.fixture
def toy_cli(monkeypatch):
    """The CLI, in this process, on the recipe's toy data."""
    import stablecnn.cli.train

    monkeypatch.setattr(stablecnn.cli.train, "load_data", toy_loader(TRAIN, TEST))


@pytest.fixture
def no_data_read(monkeypatch):
    """Fail the test if a command reads any data (a refusal must come first)."""
    import stablecnn.cli.train

    def load_data(*args, **kwargs):
        raise AssertionError("the data were read before the refusal")

    monkeypatch.setattr(stablecnn.cli.train, "load_data", load_data)
