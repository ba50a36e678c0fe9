"""The original Model 1 scripts' pickle: a safe loader for it, and the conversion both ways.

The original ``train_cnn_md1.py`` saved its model with ``pickle.dump`` as a list of 18 items::

    index  item                       ours                      shape / type
    0, 10  filt1,  gdfilt1            0.weight[i]               dict {0..31: (1, 10, 10) array}
    1, 11  filt2,  gdfilt2            3.weight[i]               dict {0..15: (32, 5, 5) array}
    2, 12  bias1,  gdbias1            0.bias[i]                 dict {0..31: float}
    3, 13  bias2,  gdbias2            3.bias[i]                 dict {0..15: float}
    4, 14  W_fc1,  gdW_fc1            7.weight                  (1024, 2704) array
    5, 15  bias_fc1, gdbias_fc1       7.bias[:, None]           (1024, 1) array
    6, 16  theta3, gdtheta3           9.weight                  (10, 1024) array
    7, 17  bias3,  gdbias3            9.bias[:, None]           (10, 1) array
    8      bloss                      history step_loss / 10    list of floats, one per batch
    9      acc                        history step_acc          list of floats in [0, 1]

The ``gd*`` items are the Adagrad sums of squared gradients (our ``<name>.sum_sq``); the original's
rule ``p -= lr * g / sqrt(1e-6 + G)`` on batch-mean gradients is exactly our :class:`Adagrad`.

Assumptions, checked against the original's code: its convolution is a cross-correlation
(``sum(image[:, i:i+f, j:j+f] * filt)``, no kernel flip), like ours, so filters transfer as they
are; it flattens the (16, 13, 13) pooled map with ``reshape((-1, 1))``, i.e. C order (channel,
row, column), which is our :class:`Flatten`, so ``W_fc1`` is ``7.weight`` unchanged.

The original's ``softmax_entropy`` divided the cross-entropy by the number of classes (10). Our
logs and histories hold the true mean cross-entropy; ``bloss`` keeps the original's convention
(ours / 10), so losses from both kinds of file compare, and :func:`from_original` multiplies back.

Loading is safe: :func:`load_original` unpickles through :class:`SafeUnpickler`, which resolves
only the handful of NumPy helpers that rebuild arrays, dtypes and scalars (under NumPy 1.x and
2.x names); any other global (``os.system``, ``builtins.eval``, a class with a malicious
``__reduce__``) is refused before anything is called. The result is then checked item by item.
We write the NumPy 1.x names (``numpy.core.multiarray``), which every NumPy can read.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path

import numpy as np

from stablecnn.errors import CheckpointError
from stablecnn.training import checkpoint as ckpt_io

PICKLE_NAME = "output_cnn_md1.pickle"
TRAIN_LOG_NAME = "train_cnn_md1_log.txt"
PREDICT_LOG_NAME = "predict_cnn_md1_log.txt"
LOSS_SCALE = 10.0  # the original logged and stored cross-entropy / number of classes
# int(mean), int(std) of the first 20,000 MNIST training images: what the original trained with
# (the pickle does not record it). Imported checkpoints store it as their normalisation.
ORIGINAL_TRAIN_STATS = (33.0, 78.0)

# (item name, our parameter, how it is laid out in the original)
PARAMS = (
    ("filt1", "0.weight", "filters"),
    ("filt2", "3.weight", "filters"),
    ("bias1", "0.bias", "scalars"),
    ("bias2", "3.bias", "scalars"),
    ("W_fc1", "7.weight", "matrix"),
    ("bias_fc1", "7.bias", "column"),
    ("theta3", "9.weight", "matrix"),
    ("bias3", "9.bias", "column"),
)
SHAPES = {
    "0.weight": (32, 1, 10, 10),
    "0.bias": (32,),
    "3.weight": (16, 32, 5, 5),
    "3.bias": (16,),
    "7.weight": (1024, 2704),
    "7.bias": (1024,),
    "9.weight": (10, 1024),
    "9.bias": (10,),
}
ITEMS = (*(p[0] for p in PARAMS), "bloss", "acc", *("gd" + p[0] for p in PARAMS))


# -- the safe loader ------------------------------------------------------------------------------
def _numpy_helpers() -> dict[str, object]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - NumPy 1.x before numpy._core existed
        from numpy.core import multiarray, numeric
    return {
        "_reconstruct": multiarray._reconstruct,
        "scalar": multiarray.scalar,
        "_frombuffer": numeric._frombuffer,
    }


def _latin1_bytes(text, encoding="latin1"):
    """Protocol-2 pickles from Python 3 store bytes as ``_codecs.encode(str, 'latin1')``; this
    stand-in does that one conversion and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refused: _codecs.encode is admitted only as (str, 'latin1')")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    helpers = _numpy_helpers()
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = helpers["_reconstruct"]
        allowed[(f"{prefix}.multiarray", "scalar")] = helpers["scalar"]
        allowed[(f"{prefix}.numeric", "_frombuffer")] = helpers["_frombuffer"]
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only NumPy arrays, dtypes and scalars, lists, dicts, tuples,
    ints, floats, strings and bytes. Every other global is refused in :meth:`find_class`, before
    it could be called, so a pickle cannot run code through it."""

    ALLOWED = _allowed_globals()

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused: it asks for the global {module}.{name}; only NumPy arrays, NumPy "
                f"scalars, lists, dicts, ints and floats are admitted"
            ) from None


def load_original(path) -> list:
    """Read a pickle in the original layout safely and check it (see :func:`check_original`).

    Raises:
        CheckpointError: missing, empty, truncated or not a pickle; asks for any global beyond
            NumPy's array helpers; or does not hold the original's 18 items.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: no such file (run `python train_cnn_md1.py 1` to make "
            f"one, or `stablecnn export-pickle CHECKPOINT`)"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not data:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); not a model file")
    stream = io.BytesIO(data)
    try:
        items = SafeUnpickler(stream, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if text.startswith("refused"):
            raise CheckpointError(f"{path}: {text}; nothing was executed") from None
        raise CheckpointError(f"{path}: not a readable pickle ({text})") from None
    except EOFError:
        raise CheckpointError(
            f"{path}: truncated: the pickle ends early, at {len(data)} bytes"
        ) from None
    except MemoryError:
        raise CheckpointError(
            f"{path}: refused: it asks for an array too large for memory"
        ) from None
    except Exception as exc:  # a malformed stream makes the whitelisted helpers raise anything
        raise CheckpointError(f"{path}: corrupt pickle ({type(exc).__name__}: {exc})") from None
    if stream.tell() != len(data):
        raise CheckpointError(
            f"{path}: {len(data) - stream.tell()} unexpected bytes after the end of the pickle"
        )
    return check_original(items, str(path))


def _is_real_scalar(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, int):
        return abs(value) < 2**1000  # beyond that float() overflows
    if isinstance(value, (float, np.integer, np.floating)):
        return True
    return isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "fiu"


def _kind(value) -> str:
    what = (
        f"{value.dtype} array of shape {value.shape}"
        if isinstance(value, np.ndarray)
        else type(value).__name__
    )
    return ("an " if what[0] in "aeiou" else "a ") + what


def check_original(items, where: str = "pickle") -> list:
    """Check that ``items`` has the original's layout exactly; return them unchanged.

    Raises:
        CheckpointError: naming ``where`` and the item (index and name) at fault.
    """
    if not isinstance(items, (list, tuple)):
        raise CheckpointError(
            f"{where}: holds {_kind(items)}; expected the original's list of "
            f"{len(ITEMS)} items ({', '.join(ITEMS)})"
        )
    if len(items) != len(ITEMS):
        raise CheckpointError(
            f"{where}: holds a list of {len(items)} items; expected "
            f"{len(ITEMS)} ({', '.join(ITEMS)})"
        )
    by_name = dict(zip(ITEMS, items))
    for index, name in enumerate(ITEMS):
        value = by_name[name]

        def bad(problem, _index=index, _name=name):
            raise CheckpointError(f"{where}: item {_index} ({_name}) {problem}")

        if name in ("bloss", "acc"):
            if not isinstance(value, list):
                bad(f"is {_kind(value)}; expected a list of numbers")
            for k, v in enumerate(value):
                if not _is_real_scalar(v):
                    bad(f"entry {k} is {_kind(v)}; expected a number")
            continue
        kind, param = next((k, p) for n, p, k in PARAMS if name in (n, "gd" + n))
        shape = SHAPES[param]
        entries = _entries(value, kind, shape, bad)
        for label, v in entries:
            if kind == "scalars":
                if not _is_real_scalar(v):
                    bad(f"{label}is {_kind(v)}; expected a number")
                v = np.asarray(v, dtype=np.float64)
            else:
                want = {"filters": shape[1:], "matrix": shape}.get(kind, (shape[0], 1))
                if not isinstance(v, np.ndarray) or v.dtype.kind not in "fiu":
                    bad(f"{label}is {_kind(v)}; expected a float array of shape {want}")
                if v.shape != want:
                    bad(f"{label}has shape {v.shape}; expected {want}")
            if not np.all(np.isfinite(v)):
                bad(f"{label}holds NaN or infinite values")
            if name.startswith("gd") and np.any(v < 0):
                bad(f"{label}holds negative values; Adagrad sums of squares are >= 0")
    if len(by_name["bloss"]) != len(by_name["acc"]):
        raise CheckpointError(
            f"{where}: item 8 (bloss) and item 9 (acc) differ in length "
            f"({len(by_name['bloss'])} and {len(by_name['acc'])}); expected one "
            f"entry each per batch"
        )
    return list(items)


def _entries(value, kind, shape, bad) -> list[tuple[str, object]]:
    """``(label, value)`` pairs to check: the dict's entries, or the array itself."""
    if kind in ("matrix", "column"):
        return [("", value)]
    if not isinstance(value, dict):
        bad(f"is {_kind(value)}; expected a dict with keys 0..{shape[0] - 1}")
    keys = list(value)
    if any(
        isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) for k in keys
    ) or sorted(int(k) for k in keys) != list(range(shape[0])):
        shown = sorted(map(repr, keys))
        bad(
            f"has keys {shown[:5] + ['...'] if len(shown) > 5 else shown}; expected the ints "
            f"0..{shape[0] - 1}"
        )
    return [(f"entry {int(k)} ", value[k]) for k in sorted(keys, key=int)]


# -- conversion -----------------------------------------------------------------------------------
def _to_layout(array: np.ndarray, kind: str):
    array = np.asarray(array, dtype=np.float64)
    if kind == "filters":
        return {i: array[i].copy() for i in range(len(array))}
    if kind == "scalars":
        return {i: float(array[i]) for i in range(len(array))}
    return array[:, None].copy() if kind == "column" else array.copy()


def _from_layout(value, kind: str) -> np.ndarray:
    if kind == "filters":
        return np.stack([np.asarray(value[i], dtype=np.float64) for i in range(len(value))])
    if kind == "scalars":
        return np.array([float(np.asarray(value[i]).reshape(())) for i in range(len(value))])
    array = np.asarray(value, dtype=np.float64)
    return array[:, 0].copy() if kind == "column" else array.copy()


def _floats(values) -> list[float]:
    return [float(np.asarray(v).reshape(())) for v in values]


def to_original(model, optimizer_state: dict | None = None, history: dict | None = None) -> list:
    """The original's 18 items from a Model 1 (``md1``) model, its Adagrad state and history.

    Args:
        model: a :class:`~stablecnn.nn.model.Sequential` with md1's parameters.
        optimizer_state: ``Adagrad.state_dict()`` (``"<name>.sum_sq"``); ``None`` or empty gives
            zero sums, as a fresh original run starts with.
        history: a training history with ``step_loss`` (true cross-entropy) and ``step_acc``.

    Returns:
        ``[filt1, ..., bias3, bloss, acc, gdfilt1, ..., gdbias3]``, float64 arrays, Python floats.
    """
    state = model.state_dict()
    for name, shape in SHAPES.items():
        if name not in state or tuple(state[name].shape) != shape:
            got = tuple(state[name].shape) if name in state else "missing"
            raise CheckpointError(
                f"not a Model 1 (md1) network: parameter {name!r} is {got}; "
                f"the original layout needs {shape}"
            )
    optimizer_state = {k: v for k, v in (optimizer_state or {}).items() if k != "steps"}
    sums = {name: optimizer_state.get(f"{name}.sum_sq") for name in SHAPES}
    if optimizer_state and any(v is None for v in sums.values()):
        missing = sorted(f"{n}.sum_sq" for n, v in sums.items() if v is None)
        raise CheckpointError(
            f"the optimizer state has no Adagrad sums {missing}; the original "
            f"layout stores Adagrad's sums of squared gradients"
        )
    history = history or {}
    losses = _floats(history.get("step_loss", []))
    accs = _floats(history.get("step_acc", []))
    weights = [_to_layout(state[param], kind) for _, param, kind in PARAMS]
    gds = [
        _to_layout(np.zeros(SHAPES[param]) if sums[param] is None else sums[param], kind)
        for _, param, kind in PARAMS
    ]
    return [*weights, [v / LOSS_SCALE for v in losses], accs, *gds]


def from_original(items, where: str = "pickle"):
    """Our names from the original's 18 items (checked first).

    Returns:
        ``(state_dict, optimizer_state, bloss, acc)``: float64 parameters by our names, the Adagrad
        state (``"<name>.sum_sq"`` and ``"steps"`` = batches trained), and float64 arrays of the
        per-batch true cross-entropy (the original's ``bloss`` x 10) and batch accuracy.
    """
    items = check_original(items, where)
    by_name = dict(zip(ITEMS, items))
    state, optim = {}, {}
    for name, param, kind in PARAMS:
        state[param] = _from_layout(by_name[name], kind)
        optim[f"{param}.sum_sq"] = _from_layout(by_name["gd" + name], kind)
    bloss = np.array(_floats(by_name["bloss"]), dtype=np.float64) * LOSS_SCALE
    acc = np.array(_floats(by_name["acc"]), dtype=np.float64)
    optim["steps"] = np.asarray(len(bloss), dtype=np.int64)
    return state, optim, bloss, acc


class _Numpy1Pickler(pickle._Pickler):
    """Writes NumPy's array helpers under their NumPy 1.x names (``numpy.core.*``), which NumPy
    1.x and 2.x both read; NumPy 2 would write ``numpy._core.*``, unknown to NumPy < 1.26."""

    OLD_NAMES = {
        id(obj): ("numpy.core." + {"_frombuffer": "numeric"}.get(n, "multiarray"), n)
        for n, obj in _numpy_helpers().items()
    }

    def save_global(self, obj, name=None):
        old = self.OLD_NAMES.get(id(obj))
        if old is None:
            return super().save_global(obj, name)
        if self.proto >= 4:
            self.save(old[0])
            self.save(old[1])
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{old[0]}\n{old[1]}\n".encode("ascii"))
        self.memoize(obj)


def save_original(path, items: list, protocol: int = 4) -> None:
    """Write ``items`` (checked first) as the original's pickle, atomically (temp file + rename)."""
    check_original(items, str(path))
    try:
        ckpt_io.atomic_write(path, lambda f: _Numpy1Pickler(f, protocol=protocol).dump(list(items)))
    except OSError as exc:
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}") from exc


def exact_dtype(arrays) -> np.dtype:
    """float32 when every value survives a round trip through float32 exactly, else float64."""
    with np.errstate(over="ignore"):  # a value beyond float32's range simply means float64
        for a in arrays:
            a = np.asarray(a, dtype=np.float64)
            if not np.array_equal(a.astype(np.float32).astype(np.float64), a):
                return np.dtype(np.float64)
    return np.dtype(np.float32)


def model_from_original(items, where: str = "pickle", dtype=None):
    """Build md1 with the original's weights. ``dtype=None`` picks float32 when that holds every
    weight and Adagrad sum exactly (a file we wrote), else float64 (the original's own files).

    Returns:
        ``(model, optimizer_state, bloss, acc)`` as :func:`from_original`, the state in the model's
        dtype.
    """
    from stablecnn.nn import zoo

    state, optim, bloss, acc = from_original(items, where)
    if dtype is None:
        dtype = exact_dtype([*state.values(), *(v for k, v in optim.items() if k != "steps")])
    model = zoo.build("md1", seed=0, dtype=dtype)
    model.load_state_dict(state)
    optim = {k: v if k == "steps" else v.astype(model.dtype) for k, v in optim.items()}
    return model, optim, bloss, acc


def checkpoint_from_original(items, out, where: str = "pickle", dtype=None) -> Path:
    """Write our checkpoint (``.npz``) for a pickle's items.

    The pickle records neither the normalisation nor the schedule: the checkpoint takes the
    original recipe (:meth:`TrainConfig.original_recipe`, 200 batches an epoch) and its
    training-image statistics :data:`ORIGINAL_TRAIN_STATS`, so ``stablecnn evaluate`` and
    ``stablecnn train --resume`` work on it. Per-step times are unknown (NaN).
    """
    from stablecnn.training.trainer import EPOCH_SERIES, STEP_SERIES, TrainConfig

    model, optim, bloss, acc = model_from_original(items, where, dtype)
    config = TrainConfig.original_recipe(dtype=str(model.dtype))
    per_epoch = math.ceil(config.train_size / config.batch_size)
    n = len(bloss)
    config.epochs = max(config.epochs, math.ceil(n / per_epoch))
    steps = np.arange(n)
    series = {
        "epoch": steps // per_epoch,
        "step": steps % per_epoch + 1,
        "global_step": steps + 1,
        "loss": bloss,
        "acc": acc,
        "lr": np.full(n, config.lr),
        "seconds": np.full(n, np.nan),
    }
    history = {f"step_{k}": series[k] for k in STEP_SERIES}
    history.update({f"epoch_{k}": np.zeros(0) for k in EPOCH_SERIES})
    history = {
        k: np.asarray(v, dtype=np.int64 if k.endswith(("epoch", "step")) else np.float64)
        for k, v in history.items()
    }
    mean, std = ORIGINAL_TRAIN_STATS
    meta = {
        "train": config.to_dict(),
        "normalizer": {"kind": "original", "mean": mean, "std": std},
        "progress": {"epoch": n // per_epoch, "step": n % per_epoch, "global_step": n},
        "imported_from": where,
    }
    ckpt_io.save(out, model, meta, optim, history)
    return Path(out)
