"""Training callbacks: the human log, the metrics file, the progress bar.

The training loop calls ``on_train_begin(trainer)``, ``on_step(trainer, step)`` after every
optimizer step, ``on_epoch_end(trainer, epoch)`` after the epoch's evaluation and checkpoint, and
``on_train_end(trainer)``. ``step`` and ``epoch`` are the dicts the loop appends to its history.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path


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

    def __init__(self, path: Path, echo: bool = False, lines_per_epoch: int = 10,
                 echo_steps: bool = True):
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
        self.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {what} {c.model} on {c.dataset}: "
                   f"{trainer.num_train} images, {c.epochs} epochs, batch {c.batch_size}, "
                   f"{c.optimizer} lr {c.lr}, seed {c.seed}, {c.dtype}")

    def on_step(self, trainer, step):
        every = max(1, trainer.steps_per_epoch // self.lines_per_epoch)
        if step["step"] % every == 0 or step["step"] == trainer.steps_per_epoch:
            self.write(f"epoch {step['epoch'] + 1}/{trainer.config.epochs} "
                       f"step {step['step']}/{trainer.steps_per_epoch}: loss {step['loss']:.4f}, "
                       f"batch acc {100 * step['acc']:.1f}%, "
                       f"eta {format_seconds(trainer.eta_seconds())}", echo=self.echo_steps)

    def on_epoch_end(self, trainer, epoch):
        self.write(f"epoch {epoch['epoch'] + 1}/{trainer.config.epochs} done in "
                   f"{format_seconds(epoch['seconds'])}: test accuracy "
                   f"{100 * epoch['test_acc']:.2f}%, test loss {epoch['test_loss']:.4f}")


class MetricsCSV(Callback):
    """``metrics.csv``: one row per step and one per epoch, rebuilt from the history on resume."""

    FIELDS = ["kind", "epoch", "step", "loss", "batch_acc", "lr", "seconds", "test_acc", "test_loss"]

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
        return ["step", s["epoch"] + 1, s["global_step"], f"{s['loss']:.6g}", f"{s['acc']:.4f}",
                f"{s['lr']:.6g}", f"{s['seconds']:.4f}", "", ""]

    @staticmethod
    def _epoch_row(e):
        return ["epoch", e["epoch"] + 1, e["global_step"], "", "", "", f"{e['seconds']:.2f}",
                f"{e['test_acc']:.4f}", f"{e['test_loss']:.6g}"]

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

        self.bar = tqdm(total=trainer.steps_per_epoch, initial=trainer.step_in_epoch - 1,
                        desc=f"epoch {epoch + 1}/{trainer.config.epochs}", unit="batch",
                        file=self.stream, dynamic_ncols=True, leave=True)

    def on_step(self, trainer, step):
        if not self.active:
            return
        if self.bar is None:
            self._open(trainer, step["epoch"])
        self.bar.set_postfix(loss=f"{step['loss']:.4f}", acc=f"{100 * step['acc']:.1f}%",
                             refresh=False)
        self.bar.update(1)
        if step["step"] == trainer.steps_per_epoch:  # close before the evaluation's log line
            self.on_train_end(trainer)

    def on_train_end(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
