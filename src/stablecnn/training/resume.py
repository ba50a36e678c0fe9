"""What a resumed run may change, and the refusal of everything else.

A run's checkpoint stores everything fixed when it started: the model (its architecture), the
dataset and where it came from, the training-set size, batch size, optimizer and its settings,
schedule, clipping, normalisation, augmentation (each of its steps), label smoothing, seed and dtype
(:class:`~stablecnn.training.trainer. TrainConfig`, plus the checkpoint's ``data`` record). A
resumed run goes on with exactly those; an option given with another value cannot be honoured, so
:func:`refuse_changes` refuses the resume before anything runs (nothing is read beyond the
checkpoint, nothing is written), naming every option that differs and the value the run has. An
option given with the run's own value is accepted. What may change on resume: ``--epochs`` (to
extend or shorten the run) and where plots go (``--no-plots``); a resume with nothing left to
train (the run has already trained the epochs asked for) is refused too
(:func:`refuse_nothing_to_train`). Later commands read the data of a run from where it came from
(:func:`run_data_source`).
"""

from __future__ import annotations

from pathlib import Path

from stablecnn.data.augment import Augment
from stablecnn.errors import ConfigError, ResumeMismatch
from stablecnn.training.config import count

CHANGEABLE = frozenset({"epochs"})  # config fields a resume may change


def _same(field: str, given, stored) -> bool:
    if (
        field in ("lr", "momentum", "weight_decay", "clip", "label_smoothing")
        and given is not None
        and stored is not None
    ):
        return float(given) == float(stored)
    if field == "augment" and given is not None and stored is not None:
        return Augment.from_dict(given) == Augment.from_dict(stored)  # older ones: steps off
    return given == stored


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):  # augmentation
        return ",".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()
        )
    return f"{value:g}" if isinstance(value, float) else str(value)


def augment_part(augment: dict | None, part: str):
    """The value of one augmentation option in a run's ``augment`` description (None: no
    augmentation, every step off): ``"augment"`` -> ``(max_shift, max_degrees)``, else the
    :class:`~stablecnn.data.augment.Augment` field ``part`` (``max_scale``, ``elastic``,
    ``random_crop``, ``hflip``, ``random_erasing``)."""
    aug = Augment.from_dict(augment) if augment else Augment()
    if part == "augment":
        return aug.max_shift, aug.max_degrees
    return getattr(aug, part)


def format_part(value) -> str:
    """An augmentation option's value as it is typed: a pair as ``A,B``, a float with ``:g``,
    an int as it is (``(2, 10.0)`` -> ``2,10``, ``0.1`` -> ``0.1``, ``4`` -> ``4``)."""
    if isinstance(value, tuple):
        return ",".join(format_part(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shown_part(part: str, value) -> str:
    if not value or value == (0, 0.0):  # a step off (a pair of zeros too: 0 == 0.0)
        return "none"
    if part == "hflip":
        return "--hflip"
    return format_part(value)


def same_model(given: str, stored: str, checkpoint) -> bool:
    """Whether the model ``given`` (a built-in name or a model file) is the run's model ``stored``.

    The same if it has the checkpoint's architecture and, when ``stored`` can still be read, the
    same weight initialisers (``md1he`` is md1's architecture with He initialisation: another
    model); a name or a path spelt differently for the same model is the same.

    Raises :class:`~stablecnn.errors.ModelFileError` for a model file that cannot be read.
    """
    from stablecnn.errors import ModelFileError
    from stablecnn.nn import zoo
    from stablecnn.nn.model import Sequential

    config = zoo.model_config(given)
    if Sequential.from_config(config, weights=False).config() != checkpoint.meta.get("model"):
        return False
    if given == stored:
        return True
    try:
        original = zoo.model_config(stored)
    except (ModelFileError, OSError):  # moved or deleted since: the architecture is all we know
        return True
    return _unnamed(config) == _unnamed(original)


def _unnamed(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "name"}  # a model file's name is a label


def data_record(dataset: str, data_dir, verify: bool) -> dict:
    """Where a run's data come from, as its checkpoints keep it (``data_dir`` made absolute)."""
    return {
        "dataset": dataset,
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
        "verify": bool(verify),
    }


def run_data_source(
    meta: dict, dataset: str | None = None, data_dir=None, no_verify: bool = False
) -> tuple[str, str | None, bool]:
    """The ``(dataset, data_dir, verify)`` a later command (evaluate, plot) reads a run's data from.

    A run keeps where its data came from (:func:`data_record`, the checkpoint's ``data``
    record). Without ``--data-dir`` the command reads that same source; with one, the folder
    named (checked against the canonical digests unless ``--no-verify``). No command falls back
    to another source: a recorded folder that is gone is an error.

    Args:
        meta: the checkpoint's ``meta`` (older checkpoints have no ``data`` record: their data
            came from stablecnn's verified sources).
        dataset: ``--dataset`` when given, else the run's.
        data_dir, no_verify: ``--data-dir`` and ``--no-verify`` as given.

    Raises:
        DataError: ``--no-verify`` without a folder to apply it to, or the recorded folder of a
            run's own IDX files no longer exists.
    """
    from stablecnn.errors import DataError

    record = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    train = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    dataset = dataset or record.get("dataset") or train.get("dataset") or "mnist"
    if data_dir is not None:
        return dataset, str(data_dir), not no_verify
    recorded = record.get("data_dir")
    if recorded is None:
        if no_verify:
            raise DataError("--no-verify applies to --data-dir: name the folder of your IDX files")
        return dataset, None, True
    verify = bool(record.get("verify", True)) and not no_verify
    if not Path(recorded).is_dir():
        raise DataError(
            f"this run was trained on the IDX files in {recorded}"
            f"{'' if verify else ' (not verified)'}, which is no longer there; "
            f"pass --data-dir with the folder where they are now"
        )
    return dataset, recorded, verify


def refuse_changes(
    run_dir, stored, given: dict, checkpoint=None, changeable: str = "--epochs and --no-plots"
) -> None:
    """Raise :class:`ResumeMismatch` if an option given on resume differs from the run's value.

    Args:
        run_dir: the run being resumed (named in the message).
        stored: the run's :class:`~stablecnn.training.trainer.TrainConfig`.
        given: ``{field: (option as typed, value)}`` for each option the user gave (fields of
            ``TrainConfig``; ``"model"`` is compared by architecture, ``"data_dir"`` and
            ``"verify"`` with the checkpoint's ``data`` record when it has one, ``"run_dir"``
            (``--out``) with ``run_dir``, ``"augment.<part>"`` with that part of the run's
            augmentation, :func:`augment_part`).
        checkpoint: the loaded checkpoint (for the architecture and the data record).
        changeable: the options that may change, for the message.
    """
    data = (checkpoint.meta.get("data") if checkpoint is not None else None) or {}
    differ = []
    for field, (option, value) in given.items():
        if field in CHANGEABLE:
            continue
        if field == "model":
            if not same_model(value, stored.model, checkpoint):
                differ.append(f"{option} (the run has {stored.model})")
        elif field == "data_dir":
            if data and data_record("", value, True)["data_dir"] != data.get("data_dir"):
                differ.append(
                    f"{option} (the run has "
                    + (
                        f"--data-dir {data['data_dir']})"
                        if data.get("data_dir")
                        else "its data from stablecnn's data sources, no --data-dir)"
                    )
                )
        elif field == "run_dir":
            if Path(value).resolve() != Path(run_dir).resolve():
                differ.append(f"{option} (the run is in {run_dir}, where a resumed run goes on)")
        elif field == "verify":
            if data and bool(value) != bool(data.get("verify", True)):
                differ.append(
                    f"{option} (the run "
                    + (
                        "checked its data against the canonical digests)"
                        if data.get("verify", True)
                        else "used --no-verify)"
                    )
                )
        elif field.startswith("augment."):
            part = field.split(".", 1)[1]
            has = augment_part(stored.augment, part)
            if value != has:
                differ.append(f"{option} (the run has {_shown_part(part, has)})")
        elif not _same(field, value, getattr(stored, field)):
            differ.append(f"{option} (the run has {_shown(getattr(stored, field))})")
    if differ:
        raise ResumeMismatch(
            f"cannot resume {run_dir} with other settings than it started with: "
            f"{'; '.join(differ)}. A resumed run keeps them (only {changeable} may "
            f"change): drop these options to resume it, or start a new run with them; nothing "
            f"was changed"
        )


def refuse_nothing_to_train(run_dir, progress: dict, epochs: int, asked: bool) -> None:
    """Raise :class:`~stablecnn.errors.ConfigError` if the run has nothing left to train.

    A resume trains epochs ``progress["epoch"] + 1`` to ``epochs``; when the run has already
    trained ``epochs`` (or more), it would train nothing, so it is refused before anything is read
    or written.

    Args:
        run_dir: the run being resumed (named in the message).
        progress: the checkpoint's ``progress`` record (``epoch``: the epochs completed, ``step``:
            the steps of the next one).
        epochs: the epochs the resumed run is to reach (``--epochs``, else the run's own).
        asked: whether ``--epochs`` was given.
    """
    done, steps = progress["epoch"], progress["step"]
    if epochs > done:
        return
    partial = f" (and {count(steps, 'step')} of epoch {done + 1})" if steps else ""
    target = f" and --epochs {epochs} asks for {epochs}" if asked else ", all it was started for"
    raise ConfigError(
        f"nothing to train: {run_dir} has already trained {count(done, 'epoch')}"
        f"{partial}{target}; to train it further, ask for more with --epochs N, N above {done}; "
        f"nothing was changed"
    )
