"""``train_cnn_md1.py``'s two modes over stablecnn, and the data as the original found it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from stablecnn.errors import DataError
from stablecnn.legacy.log import OriginalLog, predict_original
from stablecnn.legacy.pickle import (
    PICKLE_NAME,
    PREDICT_LOG_NAME,
    TRAIN_LOG_NAME,
    load_original,
    model_from_original,
    save_original,
    to_original,
)


def read_split(folder, split: str):
    """The split's two IDX files (raw or .gz) from ``folder``, read as they are, as the original
    did; ``None`` when neither is there.

    Raises:
        DataError: one file of the pair is there and the other is not, or a file is malformed.
    """
    from stablecnn.data.idx import check_pair, read_idx
    from stablecnn.data.sources import locate
    from stablecnn.data.specs import MNIST

    files = MNIST.split_files(split)
    paths = [locate(folder, f) for f in files]
    if all(p is None for p in paths):
        return None
    if any(p is None for p in paths):
        missing = next(f for f, p in zip(files, paths) if p is None)
        raise DataError(
            f"{folder} has {next(p for p in paths if p).name} but no "
            f"{missing.raw_name} or {missing.gz_name}"
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    check_pair(images, labels, str(paths[0]), str(paths[1]))
    return images, labels


def train_mode(
    config,
    train,
    test,
    run_dir,
    log_path=TRAIN_LOG_NAME,
    pickle_path=PICKLE_NAME,
    checkpoint=None,
    echo: bool = True,
):
    """``train_cnn_md1.py 1``: train in ``run_dir`` with the original log, then write the pickle.

    Returns the last epoch's record. Raises :class:`~stablecnn.training.trainer.Interrupted` on
    Ctrl-C.
    """
    from stablecnn.training.trainer import RunLock, Trainer

    trainer = Trainer(
        config,
        run_dir,
        train,
        test,
        checkpoint=checkpoint,
        echo=False,
        progress=False,
        callbacks=[OriginalLog(log_path, echo=echo)],
    )
    Path(run_dir).mkdir(parents=True, exist_ok=True)  # only now: the Trainer's checks passed
    with RunLock(run_dir):
        last = trainer.fit()
        save_original(
            pickle_path, to_original(trainer.model, trainer.optimizer.state_dict(), trainer.history)
        )
    return last


def predict_mode(test, pickle_path=PICKLE_NAME, log_path=PREDICT_LOG_NAME, echo: bool = True):
    """``train_cnn_md1.py 0``: load the pickle safely, predict ``test``, write the original log."""
    images, labels = test
    model = model_from_original(load_original(pickle_path), str(pickle_path))[0]
    t0 = time.perf_counter()
    result = predict_original(
        model, images, labels, log_path, model_file=str(pickle_path), echo=echo
    )
    if echo:
        print(f"({len(labels)} images in {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return result
