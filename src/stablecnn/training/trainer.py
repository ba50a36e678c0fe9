"""The training loop: data -> batches -> forward -> loss -> backward -> step -> callbacks.

A run lives in a run directory: ``checkpoint.npz`` (written atomically at the end of every epoch,
and on Ctrl-C or any other error at the last completed step), ``train_log.txt``, ``metrics.csv``
and the plots. The directory is created only when training starts: whatever the sizes predict
(data, shapes, labels, batches too small for a layer; see :mod:`stablecnn.training.preflight`) is
checked when the :class:`Trainer` is built, before any file is written.

An error during a step leaves a checkpoint at the last completed step, so ``--resume`` goes on
from there: the batch statistics the failed step's forward pass had already folded into the
model's buffers (BatchNorm's running statistics, Dropout's counter) are put back first. Two cases
keep the previous checkpoint instead: a loss or gradient that is NaN or infinite (:class:`Diverged`:
the state it would save is the one that diverged), and an error while the optimizer was updating
the weights (they are half updated).

Resuming is exact: the batches come from :func:`stablecnn.data.batching.iterate_batches` (see
:meth:`Trainer.epoch_batches`), in the order ``default_rng([seed, e]).permutation(n)`` for epoch
``e``, batch ``s`` augmented with ``default_rng([seed, e, s, 1])``: pure functions of the seed,
the epoch and the step, so a run resumed from a checkpoint at (epoch, step) replays the same
batches and ends with weights bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np

from stablecnn.data.augment import Augment
from stablecnn.data.batching import iterate_batches
from stablecnn.errors import ConfigError, Diverged, Interrupted, StableCNNError, TrainingError
from stablecnn.kernels import runtime
from stablecnn.nn.losses import SoftmaxCrossEntropy
from stablecnn.nn.zoo import resolve_model
from stablecnn.optim import build_optimizer, clip_grad_norm
from stablecnn.optim.schedules import build_schedule
from stablecnn.training import checkpoint as ckpt_io
from stablecnn.training import preflight
from stablecnn.training.callbacks import Callback, CollapseWarning, MetricsCSV, Progress, TextLog
from stablecnn.training.config import TrainConfig, check_warmup
from stablecnn.training.metrics import evaluate
from stablecnn.training.microbatch import MicroBatchStep
from stablecnn.training.runlock import RunLock  # noqa: F401  (part of this module's interface)

# errors a step can meet that say something about the data, the settings or the system, not a bug:
# reported in one line (after saving a checkpoint), as the command line reports them
REPORTED_ERRORS = (StableCNNError, ValueError, ArithmeticError, MemoryError, OSError)

STEP_SERIES = ("epoch", "step", "global_step", "loss", "acc", "lr", "seconds")
EPOCH_SERIES = ("epoch", "global_step", "seconds", "test_acc", "test_loss")


class Trainer:
    """Trains a model on uint8 images, checkpointing into ``run_dir``.

    Args:
        config: the run's :class:`TrainConfig`.
        run_dir: the run directory (created by :meth:`fit`, not before).
        train_data, test_data: ``(images uint8 (N, H, W) or (N, C, H, W), labels uint8 (N,))``
            pairs (grey images as MNIST holds them, colour ones as CIFAR-10 does). The
            normalisation "original" takes one mean and std for grey images and one per channel
            for colour ones (:meth:`stablecnn.data.Normalizer.original`).
        callbacks: extra callbacks (the text log, metrics file, progress bar and collapse
            warning are always on).
        checkpoint: a loaded checkpoint to resume from (see :func:`resume_checkpoint`).
        echo: also print the log lines to stdout.
        data_source: where the data came from (``{"dataset", "data_dir", "verify"}``), kept in
            the checkpoints so a resume can refuse another source; a resumed run keeps its own.

    Raises (when built, before any file is written): ``ValueError`` for a config the model or
    optimizer cannot take, :class:`~stablecnn.errors.DataError` and
    :class:`~stablecnn.errors.ShapeError` for data the run cannot train on (see
    :mod:`stablecnn.training.preflight`).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir,
        train_data,
        test_data,
        callbacks=(),
        checkpoint: ckpt_io.Checkpoint | None = None,
        echo: bool = True,
        progress: bool = True,
        data_source: dict | None = None,
    ):
        from stablecnn.data import Normalizer

        runtime.configure()  # threads, and freed memory kept (page faults cost a quarter otherwise)
        self.config = config
        self.run_dir = Path(run_dir)
        images, labels = train_data
        if config.train_size is not None:
            if config.train_size > len(images):
                raise ConfigError(
                    f"train_size {config.train_size} exceeds the {len(images)} "
                    f"training images of {config.dataset}"
                )
            images, labels = images[: config.train_size], labels[: config.train_size]
        self.test_images, self.test_labels = test_data
        for what, x, y in (("training", images, labels), ("test", *test_data)):
            preflight.check_split(what, x, y)  # structure first: the normalizer reads the images
        self.images, self.labels = images, labels
        self.num_train = len(images)
        self.steps_per_epoch = math.ceil(self.num_train / config.batch_size)
        check_warmup(config, self.num_train)  # on every schedule, before anything is built
        self.loss_fn = SoftmaxCrossEntropy(label_smoothing=config.label_smoothing)
        self.history = {
            **{f"step_{k}": [] for k in STEP_SERIES},
            **{f"epoch_{k}": [] for k in EPOCH_SERIES},
        }
        if checkpoint is None:
            self.model = resolve_model(config.model, seed=config.seed, dtype=np.dtype(config.dtype))
            self.normalizer = (
                Normalizer.original(images)
                if config.normalization == "original"
                else Normalizer.unit()
            )
            self.optimizer = self._build_optimizer()
            self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        else:
            self.model = checkpoint.build_model()
            self.normalizer = Normalizer.from_dict(checkpoint.meta["normalizer"])
            self.optimizer = self._build_optimizer()
            try:
                self.optimizer.load_state_dict(checkpoint.optim)
            except ValueError as exc:
                raise ckpt_io.CheckpointError(
                    f"{checkpoint.meta['path']}: optimizer state does "
                    f"not fit {config.optimizer}: {exc}"
                ) from None
            progress_ = checkpoint.meta["progress"]
            self.epoch, self.step_in_epoch = progress_["epoch"], progress_["step"]
            self.global_step = progress_["global_step"]
            for key in self.history:
                self.history[key] = checkpoint.history.get(key, np.zeros(0)).tolist()
            data_source = checkpoint.meta.get("data", data_source)
        self.data_source = data_source
        self.augment = Augment.from_dict(config.augment) if config.augment else None
        preflight.check_run(self.model, (images, labels), test_data, config.batch_size)
        last_batch = self.num_train - (self.steps_per_epoch - 1) * config.batch_size
        if last_batch < config.micro_batches:
            raise ConfigError(
                f"the last batch of each epoch holds {last_batch} of the {self.num_train} "
                f"training images, fewer than the {config.micro_batches} micro-batches it "
                f"would be cut into; choose a train size or batch size that leaves at least "
                f"{config.micro_batches} images in it"
            )
        # a batch as micro-batches (stablecnn.training.microbatch); None: the whole batch at once
        self.micro_step = self._micro_batch_step()
        self.num_classes = preflight.num_classes(self.model, preflight.example_shape(images))
        bar = Progress() if progress else None
        log = TextLog(
            self.run_dir / "train_log.txt",
            echo=echo,
            echo_steps=not (bar is not None and bar.active),
        )  # the bar shows the steps
        self.callbacks: list[Callback] = [log, MetricsCSV(self.run_dir / "metrics.csv")]
        if bar is not None:
            self.callbacks.append(bar)
        self.callbacks.append(CollapseWarning(log))
        self.callbacks.extend(callbacks)
        self._interrupt = False
        self._updating = False  # the optimizer is writing the weights (see train_step)
        self._t0 = time.perf_counter()
        self._steps_this_session = 0

    def _micro_batch_step(self) -> MicroBatchStep | None:
        c = self.config
        if c.micro_batches == 1:
            return None
        return MicroBatchStep(self.model, c.micro_batches, None, c.label_smoothing)

    def _build_optimizer(self):
        c = self.config
        optimizer = build_optimizer(
            c.optimizer,
            self.model.parameters(),
            lr=c.lr,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
        )
        self.schedule = build_schedule(
            c.schedule,
            total_steps=c.epochs * self.steps_per_epoch,
            step_size=c.step_epochs * self.steps_per_epoch,
            warmup_steps=c.warmup_steps,
        )
        return optimizer

    # -- history views --------------------------------------------------------------------------
    def history_steps(self):
        h = self.history
        return [{k: h[f"step_{k}"][i] for k in STEP_SERIES} for i in range(len(h["step_loss"]))]

    def history_epochs(self):
        h = self.history
        return [
            {k: h[f"epoch_{k}"][i] for k in EPOCH_SERIES} for i in range(len(h["epoch_test_acc"]))
        ]

    def eta_seconds(self) -> float:
        if not self._steps_this_session:
            return 0.0
        per_step = (time.perf_counter() - self._t0) / self._steps_this_session
        left = self.config.epochs * self.steps_per_epoch - self.global_step
        return per_step * max(left, 0)

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.npz"

    def save_checkpoint(self) -> None:
        meta = {
            "train": self.config.to_dict(),
            "normalizer": self.normalizer.to_dict(),
            "progress": {
                "epoch": self.epoch,
                "step": self.step_in_epoch,
                "global_step": self.global_step,
            },
        }
        if self.data_source is not None:
            meta["data"] = self.data_source
        history = {
            k: np.asarray(v, dtype=np.int64 if k.endswith(("epoch", "step")) else np.float64)
            for k, v in self.history.items()
        }
        ckpt_io.save(self.checkpoint_path, self.model, meta, self.optimizer.state_dict(), history)

    # -- the loop -------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The training batches ``(x, y)`` of epoch ``epoch`` from batch ``start`` on.

        :func:`~stablecnn.data.batching.iterate_batches` over the order
        ``default_rng([seed, epoch]).permutation(n)``, each batch ``s`` augmented (when the run
        augments) with draws from ``default_rng([seed, epoch, s, 1])``, then normalised to the
        model's dtype: a pure function of (seed, epoch, s), so a resumed run replays it.
        """
        seed, augment = self.config.seed, None
        if self.augment is not None:  # a generator per batch, so a resumed run replays it

            def augment(images: np.ndarray, s: int) -> np.ndarray:
                return self.augment(images, np.random.default_rng([seed, epoch, s, 1]))

        return iterate_batches(
            self.images,
            self.labels,
            self.config.batch_size,
            np.random.default_rng([seed, epoch]),
            self.normalizer,
            dtype=self.model.dtype,
            augment=augment,
            start=start,
        )

    def _check_loss(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise Diverged(
                f"loss became {loss} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1} "
                f"(global step {self.global_step + 1}); training stopped. {self._restart_hint()}"
            )

    def _restart_hint(self) -> str:
        """How to go on after a divergence: from the last good checkpoint, or, when none was
        saved yet, by starting again in place of the run's files."""
        if self.checkpoint_path.exists():
            return f"The last good checkpoint is {self.checkpoint_path}; try a lower learning rate"
        return (
            f"No checkpoint was saved, so there is nothing to resume: start again with a lower "
            f"--lr, adding --overwrite to reuse --out {self.run_dir}"
        )

    def forward_backward(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """The batch's forward and backward pass, its gradient left in the model's ``grads``;
        returns (loss, batch accuracy). With ``config.micro_batches`` > 1, as that many
        micro-batches (:class:`~stablecnn.training.microbatch.MicroBatchStep`)."""
        if self.micro_step is not None:
            loss, acc, _ = self.micro_step(x, y)
            self._check_loss(loss)
            return loss, acc
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported below
            logits = self.model.forward(x, training=True)
            loss = float(self.loss_fn.forward(logits, y))
        self._check_loss(loss)
        acc = float(np.mean(logits.argmax(axis=1) == y))
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow shows in the next loss
            self.model.backward(self.loss_fn.backward(), need_input_grad=False)
        return loss, acc

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """One forward, backward and optimizer step; returns (loss, batch accuracy)."""
        loss, acc = self.forward_backward(x, y)
        if self.config.clip is not None:
            norm = clip_grad_norm(self.model.parameters(), self.config.clip)
            if not math.isfinite(norm):
                raise Diverged(
                    f"gradient norm became {norm} at epoch {self.epoch + 1}, step "
                    f"{self.step_in_epoch + 1} (global step {self.global_step + 1}); training "
                    f"stopped before the update. {self._restart_hint()}"
                )
        self.schedule.apply(self.optimizer, self.config.lr)
        self._updating = True  # an error from here on leaves the weights half updated
        with np.errstate(over="ignore", invalid="ignore"):  # likewise
            self.optimizer.step()
        self._updating = False
        return loss, acc

    def evaluate_test(self):
        """The model on the test set (:func:`~stablecnn.training.metrics.evaluate`)."""
        return evaluate(
            self.model,
            self.test_images,
            self.test_labels,
            self.normalizer,
            self.config.eval_batch_size,
            tta=self.config.tta,
        )

    def _stop_on_error(self, exc: BaseException, what: str, restore) -> NoReturn:
        """Save a checkpoint at the last completed step (see the module doc), then raise.

        ``restore``: ``(buffer, copy)`` pairs taken before the failed step, put back first
        (``None`` when the step had completed and the error came after it). Ctrl-C raises
        :class:`Interrupted`; the project's, data, arithmetic, memory and system errors raise
        :class:`TrainingError` naming the step, the error and the checkpoint; any other error
        (a bug) is raised as it is, with the same facts in a note.
        """
        kept = self.checkpoint_path if self.checkpoint_path.exists() else None
        resume = f"Resume with: stablecnn train --resume {self.run_dir}"
        if self._updating:
            saved = (
                "the error came while the optimizer was updating the weights, so they were "
                "not saved; "
                + (
                    f"the last checkpoint, {kept}, is kept. {resume}"
                    if kept
                    else "no checkpoint had been written yet"
                )
            )
        elif self.global_step == 0:
            saved = "no step had completed, so there is no checkpoint to resume from"
        else:
            for array, copy in restore or ():
                array[...] = copy
            where = (
                f"epoch {self.epoch + 1}, step {self.step_in_epoch}"
                if self.step_in_epoch
                else f"end of epoch {self.epoch}"
            )
            try:
                self.save_checkpoint()
                saved = (
                    f"checkpoint saved to {self.checkpoint_path} at the last completed step, "
                    f"global step {self.global_step} ({where}). {resume}"
                )
            except (StableCNNError, OSError) as save_error:
                saved = f"saving a checkpoint failed as well ({save_error}); " + (
                    f"the last checkpoint, {kept}, is kept. {resume}"
                    if kept
                    else "no checkpoint had been written yet"
                )
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"interrupted {what}; {saved}") from None
        if isinstance(exc, REPORTED_ERRORS):
            detail = (
                str(exc)
                if isinstance(exc, StableCNNError)
                else f"{type(exc).__name__}: {exc}"
                if str(exc)
                else type(exc).__name__
            )
            raise TrainingError(f"training failed {what}: {detail}; {saved}") from exc
        if hasattr(exc, "add_note"):  # Python 3.11+
            exc.add_note(f"stablecnn: training failed {what}; {saved}")
        raise exc

    def _on_sigint(self, signum, frame):
        if self._interrupt:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._interrupt = True

    def fit(self) -> dict:
        """Train to ``config.epochs``; returns the last epoch's record. Raises
        :class:`Interrupted` on Ctrl-C (after saving), :class:`Diverged` on NaN, and
        :class:`TrainingError` (or, for an error that is not the data's or the system's, that
        error with a note) after saving a checkpoint at the last completed step."""
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        old_handler = None
        if _in_main_thread():
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            for cb in self.callbacks:
                cb.on_train_begin(self)
            last = self.history_epochs()[-1] if self.history_epochs() else None
            while self.epoch < config.epochs:
                last = self._run_epoch()
            for cb in self.callbacks:
                cb.on_train_end(self)
            return last
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)

    def _run_epoch(self) -> dict:
        epoch = self.epoch
        t_epoch = time.perf_counter()
        batches = self.epoch_batches(epoch, start=self.step_in_epoch)
        for s in range(self.step_in_epoch, self.steps_per_epoch):
            t = time.perf_counter()
            buffers = [(b, b.copy()) for layer in self.model.layers for b in layer.buffers.values()]
            done = False  # the step's update is in and counted
            try:
                x, y = next(batches)  # batch s; read here so an error in it is the step's
                loss, acc = self.train_step(x, y)
                self.step_in_epoch, self.global_step = s + 1, self.global_step + 1
                self._steps_this_session += 1
                record = {
                    "epoch": epoch,
                    "step": s + 1,
                    "global_step": self.global_step,
                    "loss": loss,
                    "acc": acc,
                    "lr": self.optimizer.lr,
                    "seconds": time.perf_counter() - t,
                }
                for k in STEP_SERIES:
                    self.history[f"step_{k}"].append(record[k])
                done = True
                for cb in self.callbacks:
                    cb.on_step(self, record)
            except Diverged:
                raise
            except BaseException as exc:
                what = (
                    f"after epoch {epoch + 1}, step {s + 1} (global step {self.global_step})"
                    if done
                    else f"at epoch {epoch + 1}, step {s + 1} (global step {self.global_step + 1})"
                )
                self._stop_on_error(exc, what, restore=None if done else buffers)
            if self._interrupt:
                self.save_checkpoint()
                raise Interrupted(
                    f"interrupted at epoch {epoch + 1}, step {s + 1}; checkpoint saved to "
                    f"{self.checkpoint_path}. Resume with: stablecnn train --resume {self.run_dir}"
                )
        try:
            result = self.evaluate_test()
        except BaseException as exc:
            self._stop_on_error(exc, f"in the evaluation after epoch {epoch + 1}", restore=None)
        self.epoch, self.step_in_epoch = epoch + 1, 0
        record = {
            "epoch": epoch,
            "global_step": self.global_step,
            "seconds": time.perf_counter() - t_epoch,
            "test_acc": result.accuracy,
            "test_loss": result.loss,
        }
        for k in EPOCH_SERIES:
            self.history[f"epoch_{k}"].append(record[k])
        self.save_checkpoint()
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)
        return record


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def load_data(dataset: str, data_dir=None, splits=("train", "test"), quiet=False, verify=True):
    """``[(images, labels), ...]`` for each split of ``dataset``, through the data sources.

    ``verify=False`` (with ``data_dir``) reads your own IDX files there, checked for structure
    but not against the canonical digests.
    """
    from stablecnn.data import load_dataset

    return [
        load_dataset(dataset, split, data_dir=data_dir, quiet=quiet, verify=verify)
        for split in splits
    ]


def resume_checkpoint(run_dir) -> tuple[TrainConfig, ckpt_io.Checkpoint]:
    """The config and checkpoint to resume the run in ``run_dir`` from.

    Raises:
        CheckpointError: the checkpoint cannot be read, is not a training run's (no ``train``
            or ``progress`` record: imported, or saved from Python), or its records are invalid.
    """
    from stablecnn.data import Normalizer

    ckpt = ckpt_io.load(Path(run_dir) / "checkpoint.npz")
    if "train" not in ckpt.meta or "progress" not in ckpt.meta:
        imported = ckpt.meta.get("imported")
        origin = (
            f"imported from {imported.get('from')}"
            if isinstance(imported, dict)
            else "saved from Python or imported"
        )
        raise ckpt_io.CheckpointError(
            f"{ckpt.meta['path']}: not a training run's checkpoint ({origin}, it holds no "
            f"training progress), so it cannot be resumed"
        )
    try:
        train, progress = ckpt.meta["train"], ckpt.meta["progress"]
        if not isinstance(train, dict) or not isinstance(progress, dict):
            raise ConfigError("its 'train' and 'progress' records must be mappings")
        config = TrainConfig.from_dict(train)
        counts = [progress.get(k) for k in ("epoch", "step", "global_step")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise ConfigError(f"progress {progress} must hold epoch, step and global_step >= 0")
        if counts[2] < counts[1]:
            raise ConfigError(f"progress {progress}: global_step is below step")
        Normalizer.from_dict(ckpt.meta["normalizer"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ckpt_io.CheckpointError(
            f"{ckpt.meta['path']}: not a resumable training checkpoint ({exc})"
        ) from None
    return config, ckpt
