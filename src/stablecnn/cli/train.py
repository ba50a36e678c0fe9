"""``stablecnn train``: prepare the run (a new one or ``--resume``), fit, finish (the result and
the plots). Its parser and option checks are :mod:`stablecnn.cli.train_options`; ``evaluate`` and
``summary`` are :mod:`stablecnn.cli.evaluate`."""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from pathlib import Path

from stablecnn.cli.train_options import (
    _config_from_args,
    _resume_options,
    add_train_parser,
    check_settings,
    check_train_options,
)
from stablecnn.errors import ConfigError
from stablecnn.nn import modelfile, zoo
from stablecnn.training.config import check_warmup
from stablecnn.training.resume import data_record, refuse_changes, refuse_nothing_to_train
from stablecnn.training.rundir import check_new_run_dir, check_resume_dir, clear_run
from stablecnn.training.trainer import (
    Interrupted,
    RunLock,
    Trainer,
    load_data,  # tests replace it here, for evaluate too (stablecnn.cli.evaluate)
    resume_checkpoint,
)


def add_parser(sub) -> None:
    add_train_parser(sub).set_defaults(func=cmd_train)


def _warmup_named(args, config) -> str:
    """How the run's warm-up was set, for :func:`check_warmup`'s message."""
    if args.resume is not None:
        return f"the warm-up of {config.warmup_steps} steps the run in {args.resume} started with"
    if args.warmup_steps is None and args.recipe is not None:
        return f"the warm-up of {config.warmup_steps} steps that --recipe {args.recipe} sets"
    return f"--warmup-steps {config.warmup_steps}"


@contextlib.contextmanager
def quiet_float_warnings():
    """No NumPy floating-point warning (overflow, invalid value, ...) on stderr: a run that
    diverges is stopped and reported by the trainer in one line. ``np.errstate`` does not
    reach the kernels' worker threads, so the warnings are filtered by their message; only
    the command line does this, a library user still sees them."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"(overflow|underflow|invalid value|divide by zero) encountered",
            category=RuntimeWarning,
        )
        yield


def cmd_train(args) -> int:
    """Train, or resume; every refusal (options, model file, data, a resume that cannot honour
    its options or has nothing to train, an ``--out`` that is a file or already holds a run
    without ``--overwrite``, a batch too small for a layer, a warm-up as long as the run) comes
    before the run directory is created or changed."""
    check_train_options(args)
    if getattr(args, "distributed", False):
        from stablecnn.cli.distributed import cmd_train_distributed

        return cmd_train_distributed(args, prepare_run, run_fit)
    config, ckpt, run_dir, data_dir, verify = prepare_run(args)
    train, test = load_data(config.dataset, data_dir=data_dir, verify=verify)
    num_train = min(len(train[0]), config.train_size or len(train[0]))
    check_warmup(config, num_train, named=_warmup_named(args, config))
    trainer = Trainer(
        config,
        run_dir,
        train,
        test,
        checkpoint=ckpt,
        data_source=data_record(config.dataset, data_dir, verify),
    )
    return run_fit(args, trainer, run_dir)


def run_fit(args, trainer, run_dir, log_lines=()) -> int:
    """Create ``run_dir`` (only now: everything before may refuse the run), hold its lock, remove
    the run there before with ``--overwrite`` (:func:`~stablecnn.training.rundir.clear_run`),
    write ``log_lines`` to the run's log, train, and end the run (:func:`finish_run`); 130 when
    interrupted (the checkpoint saved), else 0. The one-process and the distributed commands
    (rank 0) both end here."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        print(f"run directory: {run_dir}")
        if args.overwrite:  # the new run passed its checks and holds the lock: the old one goes
            removed = clear_run(run_dir)
            if removed:
                print(f"--overwrite: removed the previous run's {', '.join(removed)}")
        for line in log_lines:
            trainer.callbacks[0].write(line)  # the TextLog
        t0 = time.perf_counter()
        try:
            with quiet_float_warnings():
                last = trainer.fit()
        except Interrupted as exc:
            print(f"\n{exc}", file=sys.stderr)
            return 130
        finish_run(args, trainer, run_dir, last, time.perf_counter() - t0)
    return 0


def prepare_run(args, **defaults):
    """``(config, checkpoint or None, run_dir, data_dir, verify)`` of the run the options ask
    for: a new one (``defaults``: TrainConfig values the options may override) or the one
    ``--resume`` names (a directory: :func:`~stablecnn.training.rundir.check_resume_dir`), its
    options checked (:func:`refuse_changes`, :func:`refuse_nothing_to_train`). A new run's
    directory is checked too (:func:`~stablecnn.training.rundir.check_new_run_dir`: not a file,
    and not holding a run unless ``--overwrite``). Raises before any data is read or anything
    is written."""
    data_dir, verify = args.data_dir, not args.no_verify
    if args.resume is not None:
        if args.overwrite:
            raise ConfigError(
                "--overwrite replaces the run in --out with a new one and --resume continues "
                "a run: give one or the other"
            )
        check_resume_dir(args.resume)
        config, ckpt = resume_checkpoint(args.resume)
        refuse_changes(args.resume, config, _resume_options(args), checkpoint=ckpt)
        if args.epochs is not None:
            config.epochs = args.epochs
        progress = ckpt.meta["progress"]
        refuse_nothing_to_train(args.resume, progress, config.epochs, args.epochs is not None)
        stored = ckpt.meta.get("data")
        if isinstance(stored, dict):  # the run's own data source (None: stablecnn's sources)
            data_dir, verify = stored.get("data_dir"), bool(stored.get("verify", True))
        run_dir = args.resume
    else:
        config, ckpt = _config_from_args(args, **defaults), None
        zoo.model_config(config.model, num_classes=10)  # a bad model file fails here
        name = Path(config.model).stem if modelfile.is_model_path(config.model) else config.model
        run_dir = (
            args.out or Path("runs") / f"{name}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        check_settings(args, config)  # a resume's own values are its settings: not refused
        check_new_run_dir(run_dir, overwrite=args.overwrite)
    if not verify and data_dir is None:
        raise ConfigError("--no-verify applies to --data-dir: name the folder of your data")
    return config, ckpt, run_dir, data_dir, verify


def finish_run(args, trainer, run_dir, last, seconds) -> None:
    """Print the result and draw the plots (unless ``--no-plots``)."""
    print(
        f"test accuracy {100 * last['test_acc']:.2f}%, test loss {last['test_loss']:.4f} "
        f"({seconds:.1f} s this session); checkpoint {trainer.checkpoint_path}"
    )
    if not args.no_plots:
        from stablecnn.training import plots

        paths = plots.plot_run(run_dir, (trainer.test_images, trainer.test_labels))
        print("plots: " + ", ".join(str(p) for p in paths))
