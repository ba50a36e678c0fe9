"""The original scripts' log lines: ``train_cnn_md1_log.txt`` while training, and
``predict_cnn_md1_log.txt`` when predicting the test set (losses in the original's convention:
the mean cross-entropy / 10, see :mod:`stablecnn.legacy.pickle`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stablecnn.errors import DataError
from stablecnn.legacy.pickle import PICKLE_NAME
from stablecnn.training.callbacks import Callback


def _short(x: float) -> str:
    """A percentage as the original printed it, without float noise: 0.5, 15.0, 97.39."""
    return str(round(float(x), 2))


def _hms(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


class OriginalLog(Callback):
    """``train_cnn_md1_log.txt`` as the original wrote it, two lines a batch::

        Learning Rate:0.01, Batch Size:100
        Epoch:0.5% Of 1/5, Loss:2.301042, Batch Acc:12.0%, Epoch Acc:12.0%
        Time Remaining: 0:41:37

    The percentage is the progress through the epoch (batch 1 of 200 = 0.5%), ``Loss`` the batch's
    mean cross-entropy (the original printed it divided by 10), ``Epoch Acc`` the mean of this
    epoch's batch accuracies so far, the time remaining the trainer's estimate. A fresh run
    starts the file anew; a resumed one appends.
    """

    def __init__(self, path, echo: bool = False):
        self.path, self.echo = Path(path), echo
        self._epoch, self._acc_sum, self._count = None, 0.0, 0

    def _write(self, *lines: str, mode: str = "a") -> None:
        with open(self.path, mode, encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
        if self.echo:
            print("\n".join(lines), flush=True)

    def on_train_begin(self, trainer):
        c = trainer.config
        self._write(
            f"Learning Rate:{c.lr}, Batch Size:{c.batch_size}",
            mode="a" if trainer.global_step else "w",
        )
        h = trainer.history  # on resume, this epoch's batches so far
        this_epoch = [a for e, a in zip(h["step_epoch"], h["step_acc"]) if e == trainer.epoch]
        self._epoch, self._count = trainer.epoch, len(this_epoch)
        self._acc_sum = float(sum(this_epoch))

    def on_step(self, trainer, step):
        if step["epoch"] != self._epoch:
            self._epoch, self._acc_sum, self._count = step["epoch"], 0.0, 0
        self._acc_sum += step["acc"]
        self._count += 1
        self._write(
            f"Epoch:{_short(100 * step['step'] / trainer.steps_per_epoch)}% Of "
            f"{step['epoch'] + 1}/{trainer.config.epochs}, Loss:{step['loss']:.6f}, "
            f"Batch Acc:{_short(100 * step['acc'])}%, "
            f"Epoch Acc:{_short(100 * self._acc_sum / self._count)}%",
            f"Time Remaining: {_hms(trainer.eta_seconds())}",
        )


def predict_original(
    model,
    images,
    labels,
    log_path,
    normalizer=None,
    model_file=PICKLE_NAME,
    echo: bool = False,
    batch_size: int = 500,
):
    """Predict ``images`` and write the original's ``predict_cnn_md1_log.txt``::

        predicting for test dataset with trained model file:output_cnn_md1.pickle
        Computing accuracy over test set:
        5.0% Completed
        Test Set Accuracy: 97.2% Test Set Loss: 0.093518
        ...
        Final Test Set Accuracy: 97.81% Test Set Loss: 0.071232

    Every 5% of the images (``int(0.05 * N)``, at least 1) it reports the accuracy and the mean
    cross-entropy over the images so far (the original divided that loss by 10).

    Args:
        model: the network; images are normalised to its dtype one batch at a time.
        images, labels: uint8 (N, 28, 28) and (N,).
        log_path: the log file (overwritten).
        normalizer: default ``Normalizer.original(images)``: the int mean and std of these very
            images, as the original normalised its test set.

    Returns:
        :class:`~stablecnn.training.metrics.Evaluation` over all the images.
    """
    from stablecnn.data import Normalizer
    from stablecnn.nn.losses import log_softmax
    from stablecnn.training.metrics import Evaluation, confusion_matrix

    n = len(images)
    if n == 0 or len(labels) != n:
        raise DataError(
            f"predict needs images and labels of one positive length, got {n} "
            f"images and {len(labels)} labels"
        )
    normalizer = normalizer or Normalizer.original(images)
    every = max(1, int(0.05 * n))
    predictions = np.empty(n, dtype=np.int64)
    losses = np.empty(n, dtype=np.float64)
    y_all = np.asarray(labels).astype(np.intp)
    log = OriginalLog(log_path, echo=echo)
    log._write(
        f"predicting for test dataset with trained model file:{model_file}",
        "Computing accuracy over test set:",
        mode="w",
    )
    reported = 0
    for start, logits in model.forward_batches(images, batch_size, normalizer):
        stop = start + len(logits)
        logp = log_softmax(logits)
        y = y_all[start:stop]
        predictions[start:stop] = logp.argmax(axis=1)
        losses[start:stop] = -logp[np.arange(len(y)), y]
        while reported + every <= stop:
            reported += every
            acc = np.mean(predictions[:reported] == y_all[:reported])
            log._write(
                f"{_short(100 * reported / n)}% Completed",
                f"Test Set Accuracy: {_short(100 * acc)}% Test Set Loss: "
                f"{losses[:reported].mean():.6f}",
            )
    result = Evaluation(
        accuracy=float(np.mean(predictions == y_all)),
        loss=float(losses.mean()),
        predictions=predictions,
        confusion=confusion_matrix(y_all, predictions, 10),
    )
    log._write(
        f"Final Test Set Accuracy: {_short(100 * result.accuracy)}% Test Set Loss: "
        f"{result.loss:.6f}"
    )
    return result
