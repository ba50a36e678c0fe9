"""Every exception stablecnn raises on purpose, in one place.

An error that derives from :class:`StableCNNError` reports a problem with what the user gave (an
argument, a setting, a file, data) or with the machine (a full disk is an ``OSError``): the
command line prints its message in one line and exits 2. Any other exception is a bug in
stablecnn and keeps its traceback (``stablecnn --debug`` shows the traceback of every error).

Errors of bad values derive from ``ValueError`` too, so ``except ValueError`` keeps working for
code written against NumPy-style APIs.

::

    StableCNNError
    ├── ConfigError (ValueError)           a bad argument, option, setting or configuration
    │   ├── ResumeMismatch                 --resume with options the run cannot honour
    │   └── ShapeError                     an array's shape does not fit a layer or the model
    ├── DataError (ValueError)             a data file or source cannot serve the data
    │   ├── IdxError                       a malformed IDX file
    │   ├── ArchiveError                   a malformed or hostile dataset archive (CIFAR-10's)
    │   ├── ChecksumError                  bytes that are not the canonical ones
    │   ├── SourceError                    a source (folder, mirror, fallback) cannot serve
    │   ├── ImageError                     a file given to predict is not a usable picture/array
    │   └── NoInkError                     a picture with nothing drawn on it
    ├── CheckpointError (ValueError)       a checkpoint or pickle cannot be loaded safely
    ├── ModelFileError (ValueError)        a model file (TOML/JSON) is not a valid model
    └── TrainingError                      training cannot go on
        ├── Diverged                       the loss or gradient norm became NaN or infinite
        └── Interrupted                    Ctrl-C, after a resumable checkpoint was saved
"""

from __future__ import annotations

__all__ = [
    "StableCNNError",
    "ConfigError",
    "ResumeMismatch",
    "ShapeError",
    "DataError",
    "IdxError",
    "ArchiveError",
    "ChecksumError",
    "SourceError",
    "ImageError",
    "NoInkError",
    "CheckpointError",
    "ModelFileError",
    "TrainingError",
    "Diverged",
    "Interrupted",
]


class StableCNNError(Exception):
    """Base class of every error stablecnn reports on purpose."""


# -- arguments and settings -----------------------------------------------------------------------
class ConfigError(StableCNNError, ValueError):
    """A bad argument, option, setting or configuration; the message names the value received."""


class ResumeMismatch(ConfigError):
    """``--resume`` with an option whose value differs from the one the run started with."""


class ShapeError(ConfigError):
    """An array's shape does not fit a layer or the model."""


# -- data ------------------------------------------------------------------------------------------
class DataError(StableCNNError, ValueError):
    """A data file or dataset source is missing, malformed or fails its checksum."""


class IdxError(DataError):
    """An IDX file is malformed; the message names the file and the fault."""


class ArchiveError(DataError):
    """A dataset archive (a tar of fixed-size records) is malformed, truncated or hostile (links,
    absolute or ``..`` paths, members of the wrong size); the message names the file and member."""


class ChecksumError(DataError):
    """A file's bytes do not match their pinned SHA-256 digest."""


class SourceError(DataError):
    """A dataset source cannot serve the requested files; the message says why."""


class ImageError(DataError):
    """A file given to predict cannot be turned into images; the message names the file."""


class NoInkError(DataError):
    """The picture holds nothing to frame: it is blank or uniform (or its contrast is too low)."""


# -- files of models ------------------------------------------------------------------------------
class CheckpointError(StableCNNError, ValueError):
    """A checkpoint or model file cannot be loaded safely or does not fit the model."""


class ModelFileError(StableCNNError, ValueError):
    """A model file (TOML or JSON architecture) cannot be read or does not describe a valid model.

    The message names the file and, where it applies, the layer (index and type) and the line.
    """


# -- training -------------------------------------------------------------------------------------
class TrainingError(StableCNNError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class Diverged(TrainingError):
    """The loss or the gradient norm became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(TrainingError):
    """Training stopped on Ctrl-C after saving a resumable checkpoint."""
