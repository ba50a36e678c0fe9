"""Datasets for stablecnn: IDX files, CIFAR-10's archive, sources with pinned checksums, batching.

- :mod:`~stablecnn.data.idx`: read and write IDX files (raw or gzip), with strict checks.
- :mod:`~stablecnn.data.cifar`: read CIFAR-10's binary version (a tar.gz of records) without
  pickle or extraction, refusing hostile archives.
- :mod:`~stablecnn.data.specs`: the datasets (MNIST, Fashion-MNIST, CIFAR-10), their pinned
  SHA-256 digests, mirrors and offline fallbacks.
- :mod:`~stablecnn.data.datasets`: :func:`load_dataset` goes through the sources in order
  (``data_dir`` -> cache -> mirrors -> offline fallback), fetching into the cache.
- :mod:`~stablecnn.data.batching`: :class:`Normalizer`, :func:`iterate_batches`, :func:`subset`.
- :mod:`~stablecnn.data.framing`: :func:`frame_mnist`, a picture of a digit framed the way
  MNIST's digits were (for predict and the web page).
- :mod:`~stablecnn.data.pictures`: picture and ``.npy`` files as MNIST-style uint8 images (or
  colour ones for a colour model).

Images are held as uint8: grey datasets as (N, H, W) (MNIST's (N, 28, 28)), colour ones as
(N, C, H, W) (CIFAR-10's (N, 3, 32, 32)); labels as uint8 (N,).

The command ``stablecnn data fetch | info | verify`` is :mod:`stablecnn.cli.data`.

Example:
    >>> from stablecnn.data import load_dataset, Normalizer, iterate_batches
    >>> x, y = load_dataset("mnist", "train")  # doctest: +SKIP
    >>> norm = Normalizer.original(x[:20000])  # doctest: +SKIP
    >>> rng = np.random.default_rng(0)  # doctest: +SKIP
    >>> for xb, yb in iterate_batches(x, y, 64, rng, norm): ...  # doctest: +SKIP
"""

from stablecnn.data.batching import ORIGINAL_SUBSET, Normalizer, iterate_batches, subset
from stablecnn.data.cache import default_cache_dir
from stablecnn.data.datasets import FileStatus, fetch_dataset, load_dataset, verify_dataset
from stablecnn.data.errors import ArchiveError, ChecksumError, IdxError, SourceError
from stablecnn.data.framing import FRAMINGS, NoInkError, frame_mnist
from stablecnn.data.idx import read_idx, read_idx_with_digest, write_idx
from stablecnn.data.specs import SPECS, get_spec

DATASETS = tuple(SPECS)

__all__ = [
    "DATASETS",
    "FRAMINGS",
    "ORIGINAL_SUBSET",
    "ArchiveError",
    "ChecksumError",
    "FileStatus",
    "IdxError",
    "NoInkError",
    "Normalizer",
    "SourceError",
    "default_cache_dir",
    "fetch_dataset",
    "frame_mnist",
    "get_spec",
    "iterate_batches",
    "load_dataset",
    "read_idx",
    "read_idx_with_digest",
    "subset",
    "verify_dataset",
    "write_idx",
]
