"""Small CIFAR-10 files for the tests: records, tar.gz archives (well-formed or hostile), the
extracted folder, and a spec pinning the digest of a small archive (so the real code path checks
it as it checks the canonical one)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-bin"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
META = ("\n".join(CLASSES) + "\n\n").encode()  # the real file ends with a blank line too
RECORD = 1 + 3 * 32 * 32


def make_records(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random images uint8 (n, 3, 32, 32) and labels uint8 (n,); each class a colour cast,
    so a tiny model has something to learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 100, (n, 3, 32, 32)).astype(np.uint8)
    cast = (60 + 15 * (labels // 3)).astype(np.uint8)  # (n,): at most 105, so no overflow
    images[np.arange(n), labels % 3] += cast[:, None, None]  # class k brightens channel k % 3
    return images, labels


def record_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The binary-version records: label byte, then the R, G and B planes row-major."""
    flat = images.reshape(len(images), -1)
    return np.concatenate([labels[:, None], flat], axis=1).astype(np.uint8).tobytes()


def write_tar(path: Path, entries) -> Path:
    """A tar.gz of ``entries``: ``(name, data)`` for a file, ``(name, None)`` for a folder,
    ``(name, ("symlink" | "hardlink", target))`` for a link, in the order given."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1244073600  # 2009-06-04, as the real archive's
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclasses.dataclass
class TinyCifar:
    """A small CIFAR-10 in every form the sources read (see :func:`write_tiny_cifar`)."""

    train: tuple[np.ndarray, np.ndarray]  # images (N, 3, 32, 32), labels (N,)
    test: tuple[np.ndarray, np.ndarray]
    members: dict[str, bytes]  # basename -> bytes, as in the archive
    data_dir: Path  # holds cifar-10-binary.tar.gz
    archive: Path  # data_dir / cifar-10-binary.tar.gz
    extracted_dir: Path  # holds cifar-10-batches-bin/ (unpacked by hand)
    mirror: Path  # a folder served as a file:// mirror, holding the archive too
    spec: object  # specs.ArchiveSpec pinning this archive (mirror: the file:// folder)

    def entries(self, replace=None, extra=()):
        """The archive's entries, with ``replace`` (basename -> bytes) swapped in and ``extra``
        entries appended."""
        replace = replace or {}
        out = [(FOLDER, None)]
        out += [(f"{FOLDER}/{k}", replace.get(k, v)) for k, v in self.members.items()]
        return out + list(extra)


def write_tiny_cifar(folder: Path, per_batch=(3, 2, 3, 2, 3), test: int = 4) -> TinyCifar:
    """A small CIFAR-10 (``per_batch`` records in data_batch_1..5, ``test`` in test_batch)
    written under ``folder`` as an archive, an extracted folder and a file:// mirror, with a
    spec pinning the archive's digest and its members' sizes."""
    from stablecnn.data import specs

    train = make_records(sum(per_batch), seed=10)
    test_arrays = make_records(test, seed=11)
    members: dict[str, bytes] = {"batches.meta.txt": META}
    start = 0
    for i, n in enumerate(per_batch, 1):
        sl = slice(start, start + n)
        members[f"data_batch_{i}.bin"] = record_bytes(train[0][sl], train[1][sl])
        start += n
    members["readme.html"] = b"<html>the real archive has one</html>\n"
    members["test_batch.bin"] = record_bytes(*test_arrays)
    data_dir, extracted, mirror = folder / "cifar-data", folder / "cifar-extracted", folder / "m"
    for d in (data_dir, extracted / FOLDER, mirror):
        d.mkdir(parents=True)
    tiny = TinyCifar(
        train, test_arrays, members, data_dir, data_dir / "cifar-10-binary.tar.gz",
        extracted, mirror, None,
    )  # fmt: skip
    write_tar(tiny.archive, tiny.entries())
    (mirror / "cifar-10-binary.tar.gz").write_bytes(tiny.archive.read_bytes())
    for name, data in members.items():
        (extracted / FOLDER / name).write_bytes(data)
    counts = [*per_batch, test]
    spec_members = tuple(
        dataclasses.replace(m, count=n, size=n * RECORD)
        for m, n in zip(specs.CIFAR10.members[:6], counts, strict=True)
    ) + (specs.CIFAR10.meta_member,)
    tiny.spec = dataclasses.replace(
        specs.CIFAR10,
        sha256=sha256(tiny.archive),
        size=tiny.archive.stat().st_size,
        members=spec_members,
        mirrors=(mirror.as_uri() + "/",),
    )
    return tiny
