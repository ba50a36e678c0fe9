"""Plots of a run: training curves, confusion matrix, first-layer filters, misclassified images.

``plot_run(run_dir)`` reads ``metrics.csv`` and ``checkpoint.npz`` and writes ``curves.png``,
``confusion.png``, ``filters.png`` and ``mistakes.png`` beside them; each plot also has its own
function that takes plain arrays. A colour model's first filters (3 input channels) and a colour
dataset's mistakes (CIFAR-10) are drawn in colour. ``stablecnn plot RUN_DIR`` does the same from the
shell.

Figures are drawn on matplotlib's ``Figure`` with the Agg canvas, never through ``pyplot``: no
backend is chosen and no global state is touched for a program that imports stablecnn, and
nothing needs a display. matplotlib is imported only when a plot is drawn. Each PNG is written
atomically (a temporary file, then a rename), as checkpoints are.

Example:
    >>> paths = plot_run("runs/md1-mnist-20250101-120000")  # doctest: +SKIP
    >>> [p.name for p in paths]  # doctest: +SKIP
    ['curves.png', 'confusion.png', 'filters.png', 'mistakes.png']
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from stablecnn.errors import ConfigError, DataError

DPI = 100
RAW, SMOOTH, TEST = "#9ecae1", "#1f5fa8", "#d1495b"  # light blue, dark blue, red
FEW_POINTS = 30  # a series this short is drawn with a marker at every point (one point is no line)


# -- figures --------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    """A new matplotlib ``Figure`` on its own Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    from stablecnn.files import atomic_write

    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, facecolor="white"))
    return path


# -- metrics --------------------------------------------------------------------------------------
def _num(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_metrics(path) -> list[dict]:
    """The rows of a ``metrics.csv`` as dicts of floats (``None`` for empty cells).

    Rows of an unknown kind or cut short (a crash while writing) are skipped.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"kind", "step"} <= set(reader.fieldnames):
                raise DataError(
                    f"{path}: not a stablecnn metrics file (header {reader.fieldnames})"
                )
            rows = []
            for row in reader:
                if row.get("kind") not in ("step", "epoch") or _num(row.get("step")) is None:
                    continue
                rows.append(
                    {k: (v if k == "kind" else _num(v)) for k, v in row.items() if k is not None}
                )
    except FileNotFoundError:
        raise DataError(f"{path}: no such metrics file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    return rows


def rows_from_history(history: dict) -> list[dict]:
    """``metrics.csv``-shaped rows from a checkpoint's history arrays (when the file is gone)."""

    def series(key):
        return np.asarray(history.get(key, np.zeros(0)), dtype=np.float64)

    rows = [
        {"kind": "step", "epoch": e + 1, "step": s, "loss": loss, "batch_acc": acc}
        for e, s, loss, acc in zip(
            series("step_epoch"),
            series("step_global_step"),
            series("step_loss"),
            series("step_acc"),
        )
    ]
    rows += [
        {"kind": "epoch", "epoch": e + 1, "step": s, "test_acc": acc, "test_loss": loss}
        for e, s, acc, loss in zip(
            series("epoch_epoch"),
            series("epoch_global_step"),
            series("epoch_test_acc"),
            series("epoch_test_loss"),
        )
    ]
    return rows


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average: the mean of the last ``window`` values (fewer at the start)."""
    values = np.asarray(values, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(values)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(end - window, 0)
    return (c[end] - c[start]) / (end - start)


def _series(rows, kind, *keys):
    """Sorted-by-step arrays of ``keys`` from the rows of ``kind`` that have all of them."""
    picked = sorted(
        (float(_num(r.get("step"))), *(_num(r.get(k)) for k in keys))
        for r in rows
        if r.get("kind") == kind and all(_num(r.get(k)) is not None for k in ("step", *keys))
    )
    return (
        [np.array(col, dtype=np.float64) for col in zip(*picked)]
        if picked
        else [np.zeros(0) for _ in range(len(keys) + 1)]
    )


def plot_curves(metrics_rows, path) -> Path:
    """Loss and accuracy per step (raw and smoothed), with the test set's after every epoch.

    Args:
        metrics_rows: dicts as in ``metrics.csv`` (``kind`` "step" with ``step``, ``loss``,
            ``batch_acc``; ``kind`` "epoch" with ``step``, ``test_acc``, ``test_loss``); values
            may be strings or numbers.
        path: the PNG to write.
    """
    return _save(curves_figure(metrics_rows), path)


def curves_figure(metrics_rows):
    """The figure :func:`plot_curves` saves (a matplotlib ``Figure``): panels loss and accuracy.

    A batch series of at most :data:`FEW_POINTS` steps gets a marker at each point, so a run of
    one step still shows its loss and accuracy.
    """
    from matplotlib.ticker import MaxNLocator

    steps, loss, acc = _series(metrics_rows, "step", "loss", "batch_acc")
    ep_steps, ep_num = _series(metrics_rows, "epoch", "epoch")
    t_steps, t_acc = _series(metrics_rows, "epoch", "test_acc")
    l_steps, t_loss = _series(metrics_rows, "epoch", "test_loss")
    window = int(np.clip(round(len(steps) / 50), 1, 500))

    fig = _figure(12, 4.5)
    ax_loss, ax_acc = fig.subplots(1, 2)
    panels = (
        (ax_loss, loss, l_steps, t_loss, "loss", "loss"),
        (ax_acc, 100 * acc, t_steps, 100 * t_acc, "accuracy", "accuracy (%)"),
    )
    for ax, raw, test_x, test_y, what, name in panels:
        if len(steps):
            if window > 1:
                ax.plot(steps, raw, color=RAW, lw=0.7, label=f"batch {what}")
                ax.plot(
                    steps,
                    smooth(raw, window),
                    color=SMOOTH,
                    lw=1.8,
                    label=f"smoothed ({window} steps)",
                )
            else:
                marker = "o" if len(steps) <= FEW_POINTS else None
                ax.plot(
                    steps, raw, color=SMOOTH, lw=1.5, marker=marker, ms=4, label=f"batch {what}"
                )
        if len(test_x):
            ax.plot(test_x, test_y, "o-", color=TEST, lw=1.5, ms=5, label=f"test {what}", zorder=3)
        for x in ep_steps if len(ep_steps) <= 50 else ():
            ax.axvline(x, color="0.85", lw=0.8, zorder=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        if len(steps) or len(test_x):
            ax.legend(loc="best", fontsize=9)
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    values = np.concatenate([loss, t_loss])
    if values.size and values.min() > 0:
        ax_loss.set_yscale("log")
    ax_loss.set_title("Loss")
    # zoom the accuracy axis onto where the curves settle (past the first tenth of training)
    settled = [100 * t_acc]
    if len(steps):
        settled.append(smooth(100 * acc, window)[len(steps) // 10 :])
    settled = np.concatenate(settled)
    if settled.size:
        low = float(settled.min())
        ax_acc.set_ylim(max(0.0, low - 0.1 * (100 - low) - 0.5), 100.5)
    title = "Accuracy"
    if len(t_acc):
        epoch = int(ep_num[-1]) if len(ep_num) else len(t_acc)
        title += f": test {100 * t_acc[-1]:.2f}% after epoch {epoch}"
        ax_acc.annotate(
            f"{100 * t_acc[-1]:.2f}%",
            (t_steps[-1], 100 * t_acc[-1]),
            textcoords="offset points",
            xytext=(-6, -14),
            ha="right",
            color=TEST,
            fontsize=9,
        )
    ax_acc.set_title(title)
    return fig


# -- confusion matrix -----------------------------------------------------------------------------
def plot_confusion(confusion, path, class_names=None, title=None) -> Path:
    """The confusion matrix: counts in the cells, shaded by the fraction of the true class.

    The diagonal (correct) is shaded in blue on [0, 1]; the errors in red on [0, the largest
    error], so that a 0.5% confusion stands out beside a 99% diagonal.

    Args:
        confusion: (K, K) counts, row = true class, column = predicted class.
        path: the PNG to write.
        class_names: K labels for the axes (default the class numbers).
        title: default "Confusion matrix" with the accuracy.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] == 0:
        raise ConfigError(
            f"confusion must be a non-empty (K, K) matrix, got shape {confusion.shape}"
        )
    k = confusion.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    if len(names) != k:
        raise ConfigError(f"{len(names)} class names for {k} classes")
    totals = confusion.sum(axis=1, keepdims=True)
    fraction = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    total = int(confusion.sum())
    accuracy = np.trace(confusion) / total if total else 0.0
    diagonal = np.eye(k, dtype=bool)
    worst = max(float(fraction[~diagonal].max(initial=0.0)), 0.01)

    side = max(5.0, 0.55 * k + 2.5)
    fig = _figure(side + 1.6, side)
    ax = fig.subplots()
    blues, reds = (
        ScalarMappable(Normalize(0, top), colormaps[name])
        for top, name in ((1.0, "Blues"), (worst, "Reds"))
    )
    colours = np.ones((k, k, 4))  # white where nothing was counted
    colours[diagonal] = blues.to_rgba(fraction[diagonal])
    off = ~diagonal & (confusion > 0)
    colours[off] = reds.to_rgba(fraction[off])
    colours[totals[:, 0] == 0] = 1.0
    ax.imshow(colours)
    fontsize = 9 if k <= 12 else 7 if k <= 20 else 5
    for (t, p), count in np.ndenumerate(confusion):
        if count:
            dark = fraction[t, p] > (0.5 if t == p else 0.6 * worst)
            ax.text(
                p,
                t,
                str(count),
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
            )
    long_names = max(len(n) for n in names) > 3
    ax.set_xticks(
        range(k),
        names,
        rotation=45 if long_names else 0,
        ha="right" if long_names else "center",
        rotation_mode="anchor",
    )
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    recall = ax.secondary_yaxis("right")
    recall.set_yticks(
        range(k), [f"{100 * f:.1f}%" if n else "-" for f, n in zip(np.diag(fraction), totals[:, 0])]
    )
    recall.set_ylabel("correct per true class")
    recall.tick_params(length=0, labelsize=8)
    fig.colorbar(
        reds,
        ax=ax,
        shrink=0.7,
        pad=0.01,
        label="errors: fraction of the true class",
        format=lambda x, _: f"{100 * x:.1f}%",
    )
    fig.colorbar(
        blues,
        ax=ax,
        shrink=0.7,
        pad=0.01,
        label="correct: fraction of the true class",
        format=lambda x, _: f"{100 * x:.0f}%",
    )
    ax.set_title(title or f"Confusion matrix: {100 * accuracy:.2f}% of {total:,} correct")
    return _save(fig, path)


# -- grids of small images ------------------------------------------------------------------------
def mosaic(tiles: np.ndarray, cols: int, gap: int, band: int = 0) -> np.ndarray:
    """Tiles (T, h, w[, 3]) laid out row by row into one float image, NaN in the gaps.

    Each cell is the tile with ``gap`` pixels on its right and ``band`` + ``gap`` pixels above it
    (room for a label); one image on one axes draws far faster than an axes per tile.

    Shape:
        (T, h, w[, 3]) -> (rows * (band + gap + h), cols * (w + gap) - gap[, 3])
    """
    t, h, w = tiles.shape[:3]
    rows = math.ceil(t / cols)
    cell_h, cell_w = band + gap + h, w + gap
    out = np.full((rows * cell_h, cols * cell_w - gap, *tiles.shape[3:]), np.nan)
    padded = np.full((rows * cols, *tiles.shape[1:]), np.nan)
    padded[:t] = tiles
    grid = padded.reshape(rows, cols, *tiles.shape[1:])  # (rows, cols, h, w[, 3])
    for r in range(rows):  # a loop over grid rows only: a few dozen at most
        block = np.concatenate(
            [
                np.pad(
                    grid[r, c],
                    [(0, 0), (0, gap)] + [(0, 0)] * (tiles.ndim - 3),
                    constant_values=np.nan,
                )
                for c in range(cols)
            ],
            axis=1,
        )
        out[r * cell_h + band + gap : (r + 1) * cell_h] = block[:, : out.shape[1]]
    return out


def _cell_origin(i: int, cols: int, h: int, w: int, gap: int, band: int) -> tuple[float, float]:
    """(x, y) in image pixels of the top-left corner of tile ``i`` of :func:`mosaic`."""
    r, c = divmod(i, cols)
    return c * (w + gap) - 0.5, r * (band + gap + h) + band + gap - 0.5


# -- filters --------------------------------------------------------------------------------------
def plot_filters(weight, path, title=None) -> Path:
    """A convolution layer's filters as a grid of small images on one symmetric colour scale.

    Args:
        weight: (F, C, kH, kW). One tile per filter, numbered row by row from 0: blue (negative)
            to red (positive) for C = 1, in colour for C = 3 (each filter scaled to [0, 1]),
            otherwise the mean over the C input channels.
        path: the PNG to write.
        title: what the filters are (default "Convolution"); the sizes are appended.
    """
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 4 or 0 in weight.shape:
        raise ConfigError(
            f"weight must be a non-empty (F, C, kH, kW) array, got shape {weight.shape}"
        )
    f, c, kh, kw = weight.shape
    rgb = c == 3
    tiles = weight.transpose(0, 2, 3, 1) if rgb else weight.mean(axis=1)  # (F, kH, kW[, 3])
    if rgb:
        lo = tiles.min(axis=(1, 2, 3), keepdims=True)
        span = tiles.max(axis=(1, 2, 3), keepdims=True) - lo
        tiles = np.divide(tiles - lo, span, out=np.full(tiles.shape, 0.5), where=span > 0)
    cols = min(f, max(1, math.ceil(math.sqrt(f * 2))))  # wider than tall
    rows = math.ceil(f / cols)
    gap = max(1, round(0.2 * max(kh, kw)))
    image = mosaic(tiles, cols, gap)
    tile_inches = min(0.9, 11 / cols) / max(kh, kw)
    width, height = image.shape[1] * tile_inches, image.shape[0] * tile_inches
    fig = _figure(max(4.5, width + (0.3 if rgb else 1.3)), height + 0.8)
    ax = fig.subplots()
    ax.set_axis_off()
    if rgb:
        alpha = np.isfinite(image[..., :1]).astype(float)
        ax.imshow(
            np.concatenate([np.nan_to_num(image, nan=1.0), alpha], axis=-1), interpolation="nearest"
        )
    else:
        from matplotlib import colormaps

        limit = float(np.abs(tiles).max()) or 1.0
        shown = ax.imshow(
            np.ma.masked_invalid(image),
            interpolation="nearest",
            vmin=-limit,
            vmax=limit,
            cmap=colormaps["RdBu_r"].with_extremes(bad="white"),
        )
        fig.colorbar(shown, ax=ax, shrink=0.8, pad=0.02, label="weight")
    notes = ([] if c == 1 or rgb else [f"mean over {c} input channels"]) + (
        ["numbered row by row from 0"] if rows > 1 else []
    )
    fig.suptitle(f"{title or 'Convolution'}: {f} filter{'s' if f > 1 else ''} of {kh} x {kw}")
    if notes:
        fig.supxlabel("; ".join(notes), fontsize=9, color="0.3")
    return _save(fig, path)


# -- mistakes -------------------------------------------------------------------------------------
def plot_mistakes(
    images, labels, predictions, path, max_images=36, class_names=None, confidences=None
) -> Path:
    """A grid of the first ``max_images`` misclassified images with true and predicted classes.

    Args:
        images: uint8 (N, H, W), light on dark as in MNIST, shown in grey; or (N, C, H, W):
            C = 3 shown in colour (RGB, as CIFAR-10 holds them), C = 1 in grey.
        labels, predictions: (N,) true and predicted classes.
        path: the PNG to write.
        max_images: at most this many tiles.
        class_names: names to show instead of the class numbers.
        confidences: optional (N,) probability of each predicted class (NaN: not shown).
    """
    from matplotlib import colormaps

    images, labels, predictions = np.asarray(images), np.asarray(labels), np.asarray(predictions)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]  # (N, H, W): one channel is grey
    rgb = images.ndim == 4 and images.shape[1] == 3
    if not (images.ndim == 3 or rgb) or not len(images) == len(labels) == len(predictions):
        raise ConfigError(
            f"expected images (N, H, W), (N, 1, H, W) or (N, 3, H, W) with N labels and "
            f"predictions, got {images.shape}, {labels.shape}, {predictions.shape}"
        )
    wrong = np.flatnonzero(labels != predictions)
    shown = wrong[:max_images]
    names = (lambda k: str(class_names[k])) if class_names is not None else str
    n = len(shown)
    if n == 0:
        fig = _figure(6, 2.5)
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(
            0.5,
            0.5,
            f"No misclassified images among {len(labels):,}",
            ha="center",
            va="center",
            fontsize=13,
        )
        return _save(fig, path)
    h, w = images.shape[-2:]
    cols = min(n, math.ceil(math.sqrt(n)))
    gap, band = max(2, w // 7), round(0.3 * h)  # the band above each image holds its label
    tiles = images[shown].astype(np.float64)  # (n, H, W) or (n, 3, H, W)
    if rgb:
        tiles = tiles.transpose(0, 2, 3, 1) / 255  # (n, H, W, 3) in [0, 1]
    image = mosaic(tiles, cols, gap, band)
    inches = 1.3 / (w + gap)  # per image pixel: 1.3 inches per column
    fig = _figure(max(6.0, image.shape[1] * inches), image.shape[0] * inches + 0.5)
    ax = fig.subplots()
    ax.set_axis_off()
    if rgb:  # the gaps (NaN) drawn white
        ax.imshow(np.nan_to_num(image, nan=1.0), interpolation="nearest")
    else:
        ax.imshow(
            np.ma.masked_invalid(image),
            cmap=colormaps["gray"].with_extremes(bad="white"),
            vmin=0,
            vmax=255,
            interpolation="nearest",
        )
    for k, i in enumerate(shown):
        x, y = _cell_origin(k, cols, h, w, gap, band)
        label = f"{names(int(labels[i]))} → {names(int(predictions[i]))}"
        if confidences is not None and np.isfinite(confidences[i]):
            label += f"\n{100 * confidences[i]:.0f}% sure"
        ax.text(
            x + w / 2,
            y - 1,
            label,
            ha="center",
            va="bottom",
            color="#a4161a",
            fontsize=8 if len(label) < 30 else 6.5,
            linespacing=1.1,
        )
    share = f"{len(wrong):,} ({100 * len(wrong) / len(labels):.2f}%) of {len(labels):,}"
    fig.suptitle(
        f"Misclassified (true → predicted): the first {n} of {share}"
        if n < len(wrong)
        else f"Misclassified (true → predicted): {share}"
    )
    return _save(fig, path)


# -- a run ----------------------------------------------------------------------------------------
def first_conv_weight(model) -> np.ndarray | None:
    """The weight (F, C, kH, kW) of the model's first convolution, or None."""
    for layer in model.layers:
        weight = layer.params.get("weight")
        if weight is not None and weight.ndim == 4:
            return weight
    return None


def plot_run(run_dir, test_data=None, data_dir=None, no_verify: bool = False) -> list[Path]:
    """Draw every plot of the run in ``run_dir`` into it; returns the paths written.

    Args:
        run_dir: a run directory with ``checkpoint.npz`` and (ideally) ``metrics.csv``; without
            the metrics file the curves come from the checkpoint's history. A run's
            ``checkpoint.npz`` stands for its run directory.
        test_data: ``(images uint8 (N, H, W) or (N, C, H, W), labels (N,))`` for the confusion
            matrix and the mistakes (colour images are shown in colour); default: the test split
            of the data the run was trained on, read from where it came from
            (:func:`stablecnn.training.resume.run_data_source`).
        data_dir, no_verify: another folder of that dataset's IDX files, and whether they are
            the user's own (not checked against the canonical digests).

    Raises:
        DataError: ``run_dir`` is not a directory (nor a run's checkpoint.npz), or the run's
            data cannot be read from its source. Nothing is drawn from another dataset
            instead: the plots already in ``run_dir`` are left as they are.
        CheckpointError: the checkpoint cannot be read or has no normalizer record
            (:func:`~stablecnn.training.checkpoint.load_predictor`).
    """
    from stablecnn.data import load_dataset
    from stablecnn.data.specs import class_names
    from stablecnn.training.checkpoint import load_predictor
    from stablecnn.training.metrics import evaluate
    from stablecnn.training.resume import run_data_source

    run_dir = Path(run_dir)
    if run_dir.name == "checkpoint.npz" and run_dir.is_file():
        run_dir = run_dir.parent  # a run's checkpoint: its run
    if not run_dir.is_dir():
        raise DataError(
            f"{run_dir}: is a file; give the run directory (the folder holding checkpoint.npz)"
            if run_dir.exists()
            else f"{run_dir}: no such run directory"
        )
    model, normalizer, ckpt = load_predictor(run_dir / "checkpoint.npz")
    metrics = run_dir / "metrics.csv"
    rows = read_metrics(metrics) if metrics.exists() else rows_from_history(ckpt.history)
    train = ckpt.meta.get("train") or {}
    if test_data is None:  # read before any plot is drawn: a failure leaves every plot as it was
        dataset, folder, verify = run_data_source(ckpt.meta, None, data_dir, no_verify)
        test_data = load_dataset(dataset, "test", data_dir=folder, quiet=True, verify=verify)
    written = [plot_curves(rows, run_dir / "curves.png")]
    images, labels = test_data
    num_classes = model.shapes(model.input_shape)[-1][0] if model.input_shape else 10
    result = evaluate(
        model,
        images,
        labels,
        normalizer,
        train.get("eval_batch_size", 1000),
        num_classes=num_classes,
    )
    names = class_names(train.get("dataset"), num_classes)
    written.append(plot_confusion(result.confusion, run_dir / "confusion.png", names))

    weight = first_conv_weight(model)
    if weight is not None:
        written.append(plot_filters(weight, run_dir / "filters.png", "First layer"))

    shown = np.flatnonzero(result.predictions != labels)[:36]
    confidences = np.full(len(labels), np.nan)
    if len(shown):
        probs = model.predict_proba(images[shown], normalizer=normalizer)
        confidences[shown] = probs[np.arange(len(shown)), result.predictions[shown]]
    written.append(
        plot_mistakes(
            images, labels, result.predictions, run_dir / "mistakes.png", 36, names, confidences
        )
    )
    return written
