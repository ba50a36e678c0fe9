"""The original Model 1 interface.

- :mod:`~stablecnn.legacy.pickle`: the original's 18-item pickle, read by a restricted
  unpickler that runs nothing, and converted to and from checkpoints.
- :mod:`~stablecnn.legacy.log`: its log lines (training and test-set prediction).
- :mod:`~stablecnn.legacy.script`: ``train_cnn_md1.py``'s two modes, and the IDX files as the
  original found them.

The ``stablecnn export-pickle | import-pickle`` commands are in :mod:`stablecnn.cli.legacy`.
"""

from stablecnn.legacy.log import OriginalLog, predict_original
from stablecnn.legacy.pickle import (
    ITEMS,
    LOSS_SCALE,
    ORIGINAL_TRAIN_STATS,
    PARAMS,
    PICKLE_NAME,
    PREDICT_LOG_NAME,
    SHAPES,
    TRAIN_LOG_NAME,
    SafeUnpickler,
    check_original,
    checkpoint_from_original,
    exact_dtype,
    from_original,
    load_original,
    model_from_original,
    save_original,
    to_original,
)
from stablecnn.legacy.script import predict_mode, read_split, train_mode

__all__ = [
    "OriginalLog",
    "predict_original",
    "ITEMS",
    "LOSS_SCALE",
    "ORIGINAL_TRAIN_STATS",
    "PARAMS",
    "PICKLE_NAME",
    "PREDICT_LOG_NAME",
    "SHAPES",
    "TRAIN_LOG_NAME",
    "SafeUnpickler",
    "check_original",
    "checkpoint_from_original",
    "exact_dtype",
    "from_original",
    "load_original",
    "model_from_original",
    "save_original",
    "to_original",
    "predict_mode",
    "read_split",
    "train_mode",
]
