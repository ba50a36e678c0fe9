"""Checkpoints: safe ``.npz`` files written atomically and read without pickle.

A checkpoint holds, as plain arrays:

- ``param/<name>``: every model parameter and buffer under its stable name (``param/0.weight``,
  ``param/1.running_mean``, ...);
- ``optim/<name>.<slot>`` and ``optim/steps``: the optimizer state;
- ``history/<series>``: the training history (per-step and per-epoch series);
- ``meta``: one JSON string with the architecture, dtype, normalisation, training config,
  progress (epoch, step) and the format version.

It is written to a temporary file in the same folder, flushed to disk, then renamed over the old
one, so a crash (even SIGKILL) mid-write leaves the previous checkpoint intact. It is read with
``allow_pickle=False``: a file holding object arrays is refused, never unpickled.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stablecnn.data import Normalizer
from stablecnn.errors import CheckpointError
from stablecnn.files import atomic_write
from stablecnn.nn.model import Sequential

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint file holds, as Python objects."""

    meta: dict
    params: dict[str, np.ndarray]
    optim: dict[str, np.ndarray] = field(default_factory=dict)
    history: dict[str, np.ndarray] = field(default_factory=dict)

    def build_model(self) -> Sequential:
        """The model with these weights (checked against the stored architecture).

        The stored architecture is checked as a model file is (:func:`stablecnn.nn.modelfile.
        validate`: arguments, shapes, size limits) and every parameter's shape against the
        arrays in the file, all before a weight is allocated: a forged architecture cannot ask
        for more memory than the file's own arrays hold.
        """
        from stablecnn.errors import ModelFileError
        from stablecnn.nn import modelfile

        where = self.meta.get("path", "checkpoint")
        dtype = self.meta.get("dtype")
        if dtype not in ("float32", "float64"):
            raise CheckpointError(
                f"{where}: the model dtype {dtype!r} is not 'float32' or 'float64'"
            )
        try:
            plan = modelfile.validate(self.meta.get("model"), source=f"{where} (its architecture)")
        except ModelFileError as exc:
            raise CheckpointError(str(exc)) from None
        shapes = {
            f"{i}.{key}": (i, layer, tuple(shape))
            for i, layer in enumerate(plan.layers)
            for key, shape in layer.param_shapes.items()
        }
        missing = sorted(set(shapes) - set(self.params))
        if missing:
            raise CheckpointError(
                f"{where}: weights do not fit the stored architecture: missing {missing}"
            )
        for name, (i, layer, shape) in shapes.items():
            if self.params[name].shape != shape:
                raise CheckpointError(
                    f"{where}: weights do not fit the stored architecture: "
                    f"parameter {name!r} of layer {i} ({type(layer).__name__}) "
                    f"should be {shape}, is {self.params[name].shape}"
                )
        try:
            model = Sequential.from_config(self.meta["model"], seed=0, dtype=np.dtype(dtype))
            model.load_state_dict(self.params)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{where}: weights do not fit the stored architecture: {exc}"
            ) from None
        except MemoryError:  # a forged architecture asking for huge layers
            raise CheckpointError(
                f"{where}: the stored architecture is too large to build in memory"
            ) from None
        return model


def save(
    path,
    model: Sequential,
    meta: dict,
    optim_state: dict | None = None,
    history: dict | None = None,
) -> None:
    """Write a checkpoint atomically. ``meta`` must be JSON-serialisable.

    For ``stablecnn predict``, ``evaluate`` and ``serve`` (:func:`load_predictor`), ``meta`` needs
    ``"normalizer"``: the :meth:`~stablecnn.data.Normalizer.to_dict` of the normalisation the
    model was trained with; ``{"train": {"dataset": name}}`` names its dataset (default mnist).

    Raises:
        CheckpointError: the file cannot be written (nothing is left half-written).
    """
    meta = {**meta, "format": FORMAT_VERSION, "model": model.config(), "dtype": str(model.dtype)}
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update({f"param/{k}": v for k, v in model.state_dict().items()})
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in (optim_state or {}).items()})
    arrays.update({f"history/{k}": np.asarray(v) for k, v in (history or {}).items()})
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {path}: {exc.strerror or exc}") from exc


def load(path) -> Checkpoint:
    """Read a checkpoint, refusing anything that is not plain numeric/string arrays."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if not head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
            if head.startswith(b"\x80"):  # pickle protocol 2 and later
                raise CheckpointError(
                    f"{path}: refused: a Python pickle, which is never "
                    f"unpickled here (a pickle in the original Model 1 layout "
                    f"converts with `stablecnn import-pickle`)"
                )
            raise CheckpointError(
                f"{path}: not a readable .npz checkpoint ("
                + (f"it starts with {head!r})" if head else "empty, 0 bytes)")
            )
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a bare .npy array
            raise CheckpointError(f"{path}: a single .npy array, not a .npz checkpoint")
        with data:
            arrays = {}
            for key in data.files:
                arrays[key] = data[key]
                if not isinstance(arrays[key], np.ndarray):  # a zip member that is not .npy
                    raise CheckpointError(f"{path}: member {key!r} is not a .npy array")
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint") from None
    except ValueError as exc:
        if "pickle" in str(exc):  # object arrays need pickle: refused, never unpickled
            raise CheckpointError(
                f"{path}: refused, it holds pickled objects; nothing was unpickled ({exc})"
            ) from None
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({exc})") from None
    except (
        OSError,
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        KeyError,
        MemoryError,
        NotImplementedError,
    ) as exc:  # zipfile: an unknown zip version or compression
        raise CheckpointError(
            f"{path}: not a readable .npz checkpoint ({exc or type(exc).__name__})"
        ) from None
    if "meta" not in arrays or arrays["meta"].dtype.kind != "U" or arrays["meta"].ndim != 0:
        raise CheckpointError(f"{path}: not a stablecnn checkpoint (no 'meta' record)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupt 'meta' record ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {meta.get('format')!r}"
            if isinstance(meta, dict)
            else f"{path}: corrupt 'meta' record"
        )
    meta["path"] = str(path)
    if meta.get("dtype") not in ("float32", "float64"):
        raise CheckpointError(
            f"{path}: the model dtype {meta.get('dtype')!r} is not 'float32' or 'float64'"
        )
    groups: dict[str, dict] = {"param": {}, "optim": {}, "history": {}}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in groups or not name:
            raise CheckpointError(f"{path}: unexpected array {key!r}")
        if value.dtype.kind not in "fiub":
            raise CheckpointError(f"{path}: array {key!r} has unsupported dtype {value.dtype}")
        groups[group][name] = value
    ckpt = Checkpoint(
        meta=meta, params=groups["param"], optim=groups["optim"], history=groups["history"]
    )
    for name, value in ckpt.params.items():
        # integer buffers (counters such as BatchNorm's num_batches_tracked) keep their own dtype
        if value.dtype.kind == "f" and value.dtype != np.dtype(meta.get("dtype", "float32")):
            raise CheckpointError(
                f"{path}: parameter {name!r} is {value.dtype}, "
                f"the checkpoint says {meta.get('dtype')}"
            )
    return ckpt


def load_model(path) -> tuple[Sequential, Checkpoint]:
    """The model stored in a checkpoint, and the checkpoint itself."""
    ckpt = load(path)
    return ckpt.build_model(), ckpt


def load_predictor(path) -> tuple[Sequential, Normalizer, Checkpoint]:
    """What predicting needs from a checkpoint: its model, the
    :class:`~stablecnn.data.Normalizer` its inputs were prepared with in training, and the
    checkpoint (``stablecnn predict``, ``evaluate`` and ``serve`` load through this). A checkpoint
    saved from Python needs ``meta={"normalizer": normalizer.to_dict()}`` in :func:`save`.

    Raises:
        CheckpointError: the file cannot be loaded safely (:func:`load`) or has no normalizer
            record.
    """
    model, ckpt = load_model(path)
    if "normalizer" not in ckpt.meta:
        raise CheckpointError(
            f"{ckpt.meta['path']}: has no normalizer record, so its inputs "
            f"cannot be prepared as in training; save it with meta={{'normalizer': "
            f"Normalizer.original(train_images).to_dict()}} (or Normalizer.unit() for pixels "
            f"scaled to [0, 1]), the normalisation the model was trained with"
        )
    return model, Normalizer.from_dict(ckpt.meta["normalizer"]), ckpt
