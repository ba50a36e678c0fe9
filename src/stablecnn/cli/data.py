"""``stablecnn data fetch | info | verify [mnist|fashion-mnist|cifar10]``.

- fetch: put the canonical files in the cache, showing progress and which source served each.
- info: sizes, class counts and where the files are (nothing is fetched); exit status 1 if a
  dataset named is not fetched or one present cannot be read (without a name, a dataset not
  fetched is reported so and does not fail).
- verify: re-check the SHA-256 of every file; exit status 1 if any fails (or is in the cache only
  as ``.gz``, which loading does not read there).

Without a dataset name each action covers every dataset. CIFAR-10 is one archive
(``cifar-10-binary.tar.gz``), cached and verified as a whole; see :mod:`stablecnn.data.cifar`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from stablecnn.data.cache import dataset_cache_dir
from stablecnn.data.datasets import fetch_dataset, load_dataset, verify_dataset
from stablecnn.data.sources import locate, read_verified
from stablecnn.data.specs import SPECS, SPLITS, ArchiveSpec, get_spec
from stablecnn.errors import ConfigError, DataError

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``data`` command and its actions on the CLI's ``subparsers``."""
    parser = subparsers.add_parser(
        "data",
        help="fetch, describe and verify the datasets",
        description="Get MNIST, Fashion-MNIST and CIFAR-10 from several sources, all checked "
        "byte for byte against pinned SHA-256 digests. CIFAR-10 cannot be fetched without "
        "internet: download cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/"
        "cifar.html and pass --data-dir with the folder holding it.",
    )
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION")
    actions.required = True
    for name, func, text in (
        (
            "fetch",
            cmd_fetch,
            "put the canonical files in the cache, from the first source that works (when none"
            " does, the error lists each failure and says which files to put in which folder)",
        ),
        (
            "info",
            cmd_info,
            "print sizes, class counts and where the files are; exit status 1 when a dataset "
            "named is not fetched or one present cannot be read (without a name, a dataset not "
            "fetched is reported so and does not fail)",
        ),
        (
            "verify",
            cmd_verify,
            "re-check the SHA-256 digest of every file, where loading reads it (a .gz in the "
            "cache fails: the cache is read uncompressed)",
        ),
    ):
        sub = actions.add_parser(name, help=text, description=text)
        sub.add_argument("dataset", nargs="?", choices=list(SPECS), help="default: every dataset")
        sub.add_argument(
            "--data-dir",
            type=Path,
            help="a folder holding the four IDX files (raw or .gz), or cifar-10-binary.tar.gz",
        )
        sub.add_argument(
            "--cache-dir", help="the cache root (default: $STABLECNN_DATA, else ~/.cache/stablecnn)"
        )
        if name == "fetch":
            sub.add_argument("--quiet", "-q", action="store_true", help="no progress output")
        sub.set_defaults(func=func)
    return parser


def _names(args) -> list[str]:
    return [args.dataset] if args.dataset else list(SPECS)


def cmd_fetch(args) -> int:
    """``stablecnn data fetch``: returns 0 when every dataset asked for is in the cache."""
    status = EXIT_OK
    for name in _names(args):
        start = time.perf_counter()
        try:
            served = fetch_dataset(name, args.data_dir, args.cache_dir, quiet=args.quiet)
        except DataError as exc:
            print(f"stablecnn: error: {exc}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        folder = dataset_cache_dir(name, args.cache_dir)
        print(f"{name}: {folder}")
        for raw_name, source in served.items():
            size = (folder / raw_name).stat().st_size
            print(f"  {raw_name:<26} {size:>10,d} bytes  sha256 ok  <- {source}")
        print(f"{name}: done in {time.perf_counter() - start:.1f} s")
    return status


NOT_FETCHED, UNREADABLE = "not fetched", "not readable"


def cmd_info(args) -> int:
    """``stablecnn data info``: describes each dataset asked for; returns 1, saying why on
    stderr, when a dataset named is not fetched or one present cannot be read.

    Without a dataset name, as with ``verify``, a dataset not fetched is reported so and does not
    fail: ``info`` describes what is there, and an unused dataset (CIFAR-10 cannot be fetched
    without internet) is not an error. A ``--data-dir`` is described the same way.

    Raises:
        ConfigError: ``--data-dir`` is not a folder.
    """
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise ConfigError(
            f"--data-dir {args.data_dir} is not a folder: name the folder of the data"
        )
    failed = []
    for name in _names(args):
        problem = _info_dataset(name, args)
        if problem == UNREADABLE or (problem == NOT_FETCHED and args.dataset):
            failed.append(f"{name} is {problem}")
    if failed:
        print(f"stablecnn: data info: {'; '.join(failed)} (see above)", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _info_dataset(name: str, args) -> str | None:
    """Print ``info`` for one dataset; :data:`NOT_FETCHED` or :data:`UNREADABLE` when it is not
    wholly there, else None."""
    spec = get_spec(name)
    folder = args.data_dir or dataset_cache_dir(name, args.cache_dir)
    print(f"{name}: {spec.description}")
    print(f"  files in: {folder}")
    if isinstance(spec, ArchiveSpec):
        return _info_archive(spec, folder, args.data_dir, args.cache_dir)
    problems = []
    for split in SPLITS:
        im_spec, lb_spec = spec.split_files(split)
        im_path, lb_path = locate(folder, im_spec), locate(folder, lb_spec)
        if im_path is None or lb_path is None:
            hint = f"not in {folder}" if args.data_dir else f"run: stablecnn data fetch {name}"
            print(f"  {split}: not fetched ({hint})")
            problems.append(NOT_FETCHED)
            continue
        try:
            labels = read_verified(lb_path, lb_spec, spec)
        except DataError as exc:
            print(f"  {split}: {exc}")
            problems.append(UNREADABLE)
            continue
        rows, cols = spec.image_shape
        im_size, lb_size = im_path.stat().st_size, lb_path.stat().st_size
        print(f"  {split}: {labels.size} images {rows}x{cols}, uint8")
        print(f"    {im_path.name} ({im_size:,d} bytes), {lb_path.name} ({lb_size:,d} bytes)")
        counts = np.bincount(labels, minlength=len(spec.classes))
        per_class = ", ".join(f"{c}: {n}" for c, n in zip(spec.classes, counts, strict=False))
        print(f"    classes: {per_class}")
    if problems == [NOT_FETCHED] * len(SPLITS):
        return NOT_FETCHED
    return UNREADABLE if problems else None  # a split missing beside one present: incomplete


def _info_archive(spec: ArchiveSpec, folder, data_dir, cache_dir) -> str | None:
    """``info`` for an archive dataset: reads the archive (or, in ``data_dir``, its unpacked
    folder) and prints each split's size and class counts; :data:`NOT_FETCHED` or
    :data:`UNREADABLE` when it cannot be read."""
    print(f"  {spec.archive_name}: {spec.size:,d} bytes, SHA-256 {spec.sha256}")
    if spec.md5:
        print(f"    (MD5 {spec.md5} as {spec.homepage} publishes it)")
    # the cache holds the archive; a --data-dir (which ``folder`` then is) the archive or the
    # folder it unpacks to
    unpacked = data_dir is not None and (folder / spec.folder).is_dir()
    if not ((folder / spec.archive_name).is_file() or unpacked):
        where = (
            f"run: stablecnn data fetch {spec.name} --data-dir FOLDER"
            if data_dir is None
            else f"not in {data_dir}: neither {spec.archive_name} nor {spec.folder}/"
        )
        print(f"  not fetched ({where})")
        return NOT_FETCHED
    for split in SPLITS:
        try:
            _, labels = load_dataset(spec.name, split, data_dir, cache_dir, quiet=True)
        except DataError as exc:
            print(f"  {split}: {exc}")
            return UNREADABLE
        c, h, w = spec.image_shape
        print(f"  {split}: {labels.size} images {c}x{h}x{w}, uint8")
        counts = np.bincount(labels, minlength=len(spec.classes))
        per_class = zip(spec.classes, counts, strict=True)
        print("    classes: " + ", ".join(f"{k}: {n}" for k, n in per_class))
    return None


def cmd_verify(args) -> int:
    """``stablecnn data verify``: 1 when a file fails its digest or a named dataset is missing
    (a file the cache holds only as ``.gz`` is missing: loading reads the cache uncompressed).

    Without a dataset name, datasets of which no file is present are reported as not fetched and
    do not fail the check.
    """
    status = EXIT_OK
    for name in _names(args):
        results = verify_dataset(name, args.data_dir, args.cache_dir)
        where = args.data_dir or dataset_cache_dir(name, args.cache_dir)
        if not args.dataset and all(r.detail == "missing" for r in results):
            print(f"{name}: not fetched ({where})")
            continue
        print(f"{name}: {where}")
        for r in results:
            print(f"  {r.raw_name:<26} {'ok' if r.ok else 'FAILED: ' + r.detail}")
            if not r.ok:
                status = EXIT_FAILED
    print(
        "all files match their pinned SHA-256 digests"
        if status == EXIT_OK
        else "some files are missing or do not match their pinned SHA-256 digests"
    )
    return status
