"""Training callbacks: the human log, the metrics file, the progress bar, the collapse warning.

The training loop calls ``on_train_begin(trainer)``, ``on_step(trainer, step)`` after every
optimizer step, ``on_epoch_end(trainer, epoch)`` after the epoch's evaluation and checkpoint, and
``on_train_end(trainer)``. ``step`` and ``epoch`` are the dicts the loop appends to its history.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

from stablecnn.data.augment import Augment
from stablecnn.training.resume import format_part


def option(field: str, value=True) -> str:
    """A setting as ``stablecnn train``'s option: ``("step_epochs", 2)`` -> ``--step-epochs 2``
    (a float with ``:g``, a pair as ``A,B``, ``True`` as the bare flag)."""
    name = "--" + field.replace("_", "-")
    return name if value is True else f"{name} {format_part(value)}"


# the Augment fields as options, in the order they are applied; max_shift and max_degrees are
# --augment SHIFT,DEGREES
AUGMENT_FIELDS = ("max_scale", "elastic", "random_crop", "hflip", "random_erasing")


def augment_options(augment: Augment | None) -> list[str]:
    """The options that ask for ``augment``'s steps, those on (none when it is None)."""
    if augment is None:
        return []
    values = {"augment": (augment.max_shift, augment.max_degrees)}
    values.update((field, getattr(augment, field)) for field in AUGMENT_FIELDS)
    on = {k: v for k, v in values.items() if (any(v) if isinstance(v, tuple) else v)}
    return [option(field, value) for field, value in on.items()]


def settings_line(config, augment: Augment | None) -> str:
    """The run's settings beyond the first line's, as the log's second line, in the words of
    ``stablecnn train``'s options: the schedule (and its step, warm-up), the optimizer's
    momentum and weight decay, clipping, the normalization, the micro-batches, the augmentation
    (``augment``, the trainer's: its steps on), label smoothing and test-time augmentation, so a
    log says how its run was trained; e.g. ``settings: --schedule step --step-epochs 2
    --momentum 0.9 --normalization unit --augment 2,10 --hflip``."""
    c = config
    parts = [option("schedule", c.schedule)]
    if c.schedule == "step":
        parts.append(option("step_epochs", c.step_epochs))
    if c.warmup_steps:
        parts.append(option("warmup_steps", c.warmup_steps))
    if c.momentum is not None:
        parts.append(option("momentum", float(c.momentum)))
    if c.weight_decay:
        parts.append(option("weight_decay", float(c.weight_decay)))
    if c.clip:
        parts.append(option("clip", float(c.clip)))
    parts.append(option("normalization", c.normalization))
    if c.micro_batches != 1:
        parts.append(option("micro_batches", c.micro_batches))
    parts += augment_options(augment) or ["(no augmentation)"]
    if c.label_smoothing:
        parts.append(option("label_smoothing", float(c.label_smoothing)))
    if c.tta:
        parts.append(option("tta", c.tta))
    return "settings: " + " ".join(parts)


class Callback:
    def on_train_begin(self, trainer) -> None: ...
    def on_step(self, trainer, step: dict) -> None: ...
    def on_epoch_end(self, trainer, epoch: dict) -> None: ...
    def on_train_end(self, trainer) -> None: ...


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class TextLog(Callback):
    """Appends readable lines to ``train_log.txt`` (and, when ``echo``, to stdout).

    Per-step lines are written ``lines_per_epoch`` times an epoch; every epoch gets a summary.
    ``echo_steps=False`` keeps the per-step lines out of stdout (a progress bar shows them).
    """

    def __init__(
        self, path: Path, echo: bool = False, lines_per_epoch: int = 10, echo_steps: bool = True
    ):
        self.path, self.echo, self.lines_per_epoch = Path(path), echo, lines_per_epoch
        self.echo_steps = echo_steps

    def write(self, line: str, echo: bool = True) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if self.echo and echo:
            print(line, flush=True)

    def on_train_begin(self, trainer):
        c = trainer.config
        what = "resuming" if trainer.global_step else "training"
        self.write(
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} {what} {c.model} on {c.dataset}: "
            f"{trainer.num_train} images, {c.epochs} epoch{'s' if c.epochs != 1 else ''}, "
            f"batch {c.batch_size}, {c.optimizer} lr {c.lr}, seed {c.seed}, {c.dtype}"
        )
        self.write(settings_line(c, trainer.augment))

    def on_step(self, trainer, step):
        every = max(1, trainer.steps_per_epoch // self.lines_per_epoch)
        if step["step"] % every == 0 or step["step"] == trainer.steps_per_epoch:
            self.write(
                f"epoch {step['epoch'] + 1}/{trainer.config.epochs} "
                f"step {step['step']}/{trainer.steps_per_epoch}: loss {step['loss']:.4f}, "
                f"batch acc {100 * step['acc']:.1f}%, "
                f"eta {format_seconds(trainer.eta_seconds())}",
                echo=self.echo_steps,
            )

    def on_epoch_end(self, trainer, epoch):
        self.write(
            f"epoch {epoch['epoch'] + 1}/{trainer.config.epochs} done in "
            f"{format_seconds(epoch['seconds'])}: test accuracy "
            f"{100 * epoch['test_acc']:.2f}%, test loss {epoch['test_loss']:.4f}"
        )


# A collapse: the loss exploded, then the model ended an epoch no better than a constant guess.
EXPLODED_FACTOR = 100.0  # a step's loss above this many times max(ln K, the first step's loss)
CHANCE_MARGIN = 0.5  # test accuracy within this many times 1/K of a constant guess's accuracy


def exploded_step(losses, num_classes: int) -> int | None:
    """The index of the first loss above ``EXPLODED_FACTOR * max(ln K, losses[0])``, or None.

    A model that has learnt nothing predicts about 1/K for every class, a cross-entropy of ln K
    (2.30 for K = 10), and the first step's loss is the initial weights' own; a healthy run stays
    within a few times the larger of the two. Two orders of magnitude above means an update threw
    the weights far off. Measured on 2,000 MNIST images, one epoch (``stablecnn train
    --train-size 2000 --epochs 1`` and the options named): md1's original recipe (Adagrad 0.01)
    peaks at 9.3 times its first loss of 41.3 (step 2), with Adam 0.001 at 1.5, RMSprop 0.001 at
    9.6, SGD 0.01 with momentum 0.9 at 3.3, ``--normalization unit`` at 7.8; md1he at 42 times
    its first loss of 4.43, md2 at 1.0; ``--optimizer sgd --lr 4`` jumps to 8.6e10 at step 2,
    2e9 times. The warning also needs the epoch to end at chance, which none of those healthy
    runs did.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.size == 0:
        return None
    limit = EXPLODED_FACTOR * max(math.log(num_classes), float(losses[0]))
    above = np.flatnonzero(~(losses <= limit))  # NaN counts as above
    return int(above[0]) if above.size else None


def chance_accuracy(labels, num_classes: int) -> float:
    """What a constant guess scores on ``labels``: the largest class's share (1/K if balanced)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return float(counts.max() / max(counts.sum(), 1))


def at_chance(test_acc: float, labels, num_classes: int) -> bool:
    """``test_acc <= chance_accuracy + CHANCE_MARGIN / K`` (0.1135 + 0.05 on the MNIST test set)."""
    return test_acc <= chance_accuracy(labels, num_classes) + CHANCE_MARGIN / num_classes


class CollapseWarning(Callback):
    """Warns, in the log and on stderr, when an epoch ends at chance level after the loss exploded.

    Both conditions are needed (see :func:`exploded_step` and :func:`at_chance`): a huge step
    alone may recover, and chance-level accuracy alone is a slow start. Such a run is not
    stopped (its weights are finite, so the NaN guard does not fire, and the user may want to
    see it through); the warning names the step where the loss jumped and suggests a lower
    learning rate.
    """

    def __init__(self, log: TextLog, stream=None):
        self.log, self.stream = log, stream

    def on_epoch_end(self, trainer, epoch):
        k = trainer.num_classes
        jump = exploded_step(trainer.history["step_loss"], k)
        if jump is None or not at_chance(epoch["test_acc"], trainer.test_labels, k):
            return
        h, c = trainer.history, trainer.config
        line = (
            f"warning: epoch {epoch['epoch'] + 1} ended at chance level (test accuracy "
            f"{100 * epoch['test_acc']:.2f}%; a constant guess scores "
            f"{100 * chance_accuracy(trainer.test_labels, k):.2f}%) after the training loss "
            f"exploded at global step {h['step_global_step'][jump]} (epoch "
            f"{h['step_epoch'][jump] + 1}, step {h['step_step'][jump]}: loss "
            f"{h['step_loss'][jump]:.3g}, over {EXPLODED_FACTOR:g} x "
            f"{max(math.log(k), h['step_loss'][0]):.3g}); the model has likely collapsed. "
            f"Try a lower learning rate (this run has {c.optimizer} lr {c.lr:g}; e.g. --lr "
            f"{c.lr / 10:g})"
        )
        self.log.write(line, echo=False)
        print(line, file=self.stream or sys.stderr, flush=True)


class MetricsCSV(Callback):
    """``metrics.csv``: one row per step and one per epoch, rebuilt from the history on resume."""

    FIELDS = [
        "kind",
        "epoch",
        "step",
        "loss",
        "batch_acc",
        "lr",
        "seconds",
        "test_acc",
        "test_loss",
    ]

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_begin(self, trainer):
        # rewrite what the checkpoint knows, so rows after it (lost at a crash) are not repeated
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(self.FIELDS)
            for step in trainer.history_steps():
                writer.writerow(self._step_row(step))
            for epoch in trainer.history_epochs():
                writer.writerow(self._epoch_row(epoch))

    @staticmethod
    def _step_row(s):
        return [
            "step",
            s["epoch"] + 1,
            s["global_step"],
            f"{s['loss']:.6g}",
            f"{s['acc']:.4f}",
            f"{s['lr']:.6g}",
            f"{s['seconds']:.4f}",
            "",
            "",
        ]

    @staticmethod
    def _epoch_row(e):
        return [
            "epoch",
            e["epoch"] + 1,
            e["global_step"],
            "",
            "",
            "",
            f"{e['seconds']:.2f}",
            f"{e['test_acc']:.4f}",
            f"{e['test_loss']:.6g}",
        ]

    def _append(self, row):
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(row)

    def on_step(self, trainer, step):
        self._append(self._step_row(step))

    def on_epoch_end(self, trainer, epoch):
        self._append(self._epoch_row(epoch))


class Progress(Callback):
    """A tqdm bar per epoch with loss, batch accuracy and time left; nothing when not a terminal
    (the text log's lines stand in for it there)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None

    @property
    def active(self) -> bool:
        return hasattr(self.stream, "isatty") and self.stream.isatty()

    def _open(self, trainer, epoch):
        from tqdm import tqdm

        self.bar = tqdm(
            total=trainer.steps_per_epoch,
            initial=trainer.step_in_epoch - 1,
            desc=f"epoch {epoch + 1}/{trainer.config.epochs}",
            unit="batch",
            file=self.stream,
            dynamic_ncols=True,
            leave=True,
        )

    def on_step(self, trainer, step):
        if not self.active:
            return
        if self.bar is None:
            self._open(trainer, step["epoch"])
        self.bar.set_postfix(
            loss=f"{step['loss']:.4f}", acc=f"{100 * step['acc']:.1f}%", refresh=False
        )
        self.bar.update(1)
        if step["step"] == trainer.steps_per_epoch:  # close before the evaluation's log line
            self.on_train_end(trainer)

    def on_train_end(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
