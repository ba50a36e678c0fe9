"""The project's exception types.

Every error stablecnn raises on purpose derives from :class:`StableCNNError`, so a caller (or the
CLI) can tell a reported problem in the user's input from a bug.
"""


class StableCNNError(Exception):
    """Base class of every error stablecnn reports on purpose."""


class DataError(StableCNNError, ValueError):
    """A data file or dataset source is missing, malformed or fails its checksum."""


class CheckpointError(StableCNNError, ValueError):
    """A checkpoint or model file cannot be loaded safely or does not fit the model."""


class TrainingError(StableCNNError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class ShapeError(StableCNNError, ValueError):
    """An array's shape does not fit a layer or the model."""


class ModelFileError(StableCNNError, ValueError):
    """A model file (TOML or JSON architecture) cannot be read or does not describe a valid model.

    The message names the file and, where it applies, the layer (index and type) and the line.
    """
