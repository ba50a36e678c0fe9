"""Tests of stablecnn.training.plots: every plot is a real PNG, alone and for a whole (tiny) run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stablecnn import cli
from stablecnn.errors import CheckpointError, DataError
from stablecnn.nn import zoo
from stablecnn.training import checkpoint, plots
from stablecnn.training.trainer import TrainConfig, Trainer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def assert_png(path, min_size=(300, 200)):
    """``path`` is a PNG of at least ``min_size`` pixels that is not one flat colour."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 5_000, f"{path} is suspiciously small ({len(data)} bytes)"
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG"
        assert img.width >= min_size[0] and img.height >= min_size[1], img.size
        extrema = img.convert("L").getextrema()
    assert extrema[1] - extrema[0] > 100, "the figure is blank"


def step_rows(n=300, epochs=3, as_text=False):
    rng = np.random.default_rng(0)
    rows = []
    per_epoch = n // epochs
    for g in range(1, n + 1):
        loss = 2.3 * np.exp(-g / 50) + 0.05 + 0.05 * rng.random()
        rows.append(
            {
                "kind": "step",
                "epoch": (g - 1) // per_epoch + 1,
                "step": g,
                "loss": loss,
                "batch_acc": min(1.0, 1 - loss / 2.5),
            }
        )
    for e in range(1, epochs + 1):
        rows.append(
            {
                "kind": "epoch",
                "epoch": e,
                "step": e * per_epoch,
                "test_acc": 0.9 + 0.02 * e,
                "test_loss": 0.3 / e,
            }
        )
    if as_text:
        rows = [{k: str(v) for k, v in row.items()} for row in rows]
    return rows


def random_data(n, seed):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n).astype(np.uint8),
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real run directory from one tiny epoch on random data."""
    folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(epochs=1, batch_size=50, normalization="unit", dataset="fashion-mnist")
    Trainer(
        config, folder, random_data(100, 0), random_data(40, 1), echo=False, progress=False
    ).fit()
    return folder


# -- each plot alone ----------------------------------------------------------------------------
@pytest.mark.parametrize("as_text", [False, True])
def test_plot_curves(tmp_path, as_text):
    path = plots.plot_curves(step_rows(as_text=as_text), tmp_path / "curves.png")
    assert path == tmp_path / "curves.png"
    assert_png(path, (1000, 400))


@pytest.mark.parametrize(
    "rows",
    [
        [],  # a run that has not finished a step
        step_rows(5, 1),  # too few steps to smooth
        [r for r in step_rows() if r["kind"] == "epoch"],  # epochs only
        [{**r, "loss": 0.0} if r["kind"] == "step" else r for r in step_rows()],  # no log scale
    ],
    ids=["empty", "short", "epochs-only", "zero-loss"],
)
def test_plot_curves_sparse_or_odd_metrics(tmp_path, rows):
    assert_png(plots.plot_curves(rows, tmp_path / "curves.png"))


def test_plot_confusion(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    predictions = np.where(rng.random(2000) < 0.1, rng.integers(0, 10, 2000), labels)
    confusion = np.zeros((10, 10), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    assert_png(plots.plot_confusion(confusion, tmp_path / "a.png"), (500, 500))
    confusion[3] = 0  # a class without examples
    assert_png(plots.plot_confusion(confusion, tmp_path / "b.png", FASHION), (500, 500))


@pytest.mark.parametrize(
    "confusion, names",
    [(np.zeros((3, 4)), None), (np.zeros((0, 0)), None), (np.eye(3), ["a", "b"])],
)
def test_plot_confusion_refuses_bad_input(tmp_path, confusion, names):
    with pytest.raises(ValueError):
        plots.plot_confusion(confusion, tmp_path / "x.png", names)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("shape", [(32, 1, 10, 10), (16, 32, 5, 5), (6, 3, 5, 5), (1, 1, 3, 3)])
def test_plot_filters(tmp_path, shape):
    weight = np.random.default_rng(0).normal(0, 0.1, shape).astype(np.float32)
    assert_png(plots.plot_filters(weight, tmp_path / "filters.png"), (150, 100))


def test_plot_filters_refuses_bad_shape(tmp_path):
    with pytest.raises(ValueError, match="kH, kW"):
        plots.plot_filters(np.zeros((3, 5, 5)), tmp_path / "x.png")


def test_plot_mistakes(tmp_path):
    images, labels = random_data(200, 0)
    predictions = labels.copy()
    predictions[::3] = (labels[::3] + 1) % 10
    confidences = np.where(predictions != labels, 0.8, np.nan)
    assert_png(plots.plot_mistakes(images, labels, predictions, tmp_path / "a.png"), (400, 400))
    assert_png(
        plots.plot_mistakes(
            images,
            labels,
            predictions,
            tmp_path / "b.png",
            max_images=5,
            class_names=FASHION,
            confidences=confidences,
        )
    )


def test_plot_mistakes_without_mistakes(tmp_path):
    images, labels = random_data(20, 0)
    path = plots.plot_mistakes(images, labels, labels, tmp_path / "none.png")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 2_000


def test_existing_file_replaced_atomically(tmp_path):
    path = tmp_path / "filters.png"
    path.write_bytes(b"old")
    plots.plot_filters(np.ones((2, 1, 3, 3)), path)
    assert_png(path, (100, 100))
    assert [p.name for p in tmp_path.iterdir()] == ["filters.png"], "no temporary file left"


# -- metrics ------------------------------------------------------------------------------------
def test_smooth_is_a_trailing_mean():
    values = np.random.default_rng(0).random(50)
    naive = [values[max(0, i - 6) : i + 1].mean() for i in range(50)]
    np.testing.assert_allclose(plots.smooth(values, 7), naive)


def test_read_metrics_survives_a_torn_last_row(run_dir, tmp_path):
    text = (run_dir / "metrics.csv").read_text()
    complete = len(text.strip().splitlines()) - 1
    (tmp_path / "metrics.csv").write_text(text + "ste")  # cut mid-write: no kind, skipped
    rows = plots.read_metrics(tmp_path / "metrics.csv")
    assert len(rows) == complete and all(isinstance(r["step"], float) for r in rows)
    (tmp_path / "metrics.csv").write_text(text + "step,2,9,0.5")  # kept, the rest missing
    torn = plots.read_metrics(tmp_path / "metrics.csv")[-1]
    assert torn["loss"] == 0.5 and torn["batch_acc"] is None
    assert_png(plots.plot_curves(plots.read_metrics(tmp_path / "metrics.csv"), tmp_path / "c.png"))


def test_read_metrics_errors(tmp_path):
    with pytest.raises(DataError, match="no such metrics file"):
        plots.read_metrics(tmp_path / "missing.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a stablecnn metrics file"):
        plots.read_metrics(tmp_path / "other.csv")


def test_history_rows_match_the_metrics_file(run_dir):
    from stablecnn.training.checkpoint import load

    from_file = plots.read_metrics(run_dir / "metrics.csv")
    from_history = plots.rows_from_history(load(run_dir / "checkpoint.npz").history)
    assert len(from_file) == len(from_history)
    for a, b in zip(from_file, from_history):
        for key, value in b.items():
            if isinstance(value, str):  # the row's kind ("step" or "epoch")
                assert a[key] == value, key
            else:
                assert a[key] == pytest.approx(value, rel=1e-4), key


# -- a whole run ---------------------------------------------------------------------------------
NAMES = ["curves.png", "confusion.png", "filters.png", "mistakes.png"]


def test_plot_run(run_dir):
    paths = plots.plot_run(run_dir, random_data(40, 1))
    assert [p.name for p in paths] == NAMES
    for path in paths:
        assert path.parent == run_dir
        assert_png(path, (250, 200))


def test_plot_run_loads_the_checkpoints_test_set(run_dir, monkeypatch, tmp_path):
    import shutil

    import stablecnn.data

    calls = []

    def fake_load_dataset(name, split, **kwargs):
        calls.append((name, split))
        return random_data(30, 2)

    monkeypatch.setattr(stablecnn.data, "load_dataset", fake_load_dataset)
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    (folder / "metrics.csv").unlink()  # the curves then come from the checkpoint's history
    assert [p.name for p in plots.plot_run(folder)] == NAMES
    assert calls == [("fashion-mnist", "test")]
    assert_png(folder / "curves.png")


def test_plot_run_errors(tmp_path):
    with pytest.raises(DataError, match="no such run directory"):
        plots.plot_run(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        plots.plot_run(tmp_path)


def test_no_pyplot_and_no_backend_change():
    """Plotting must not import pyplot or switch the backend of a program using stablecnn."""
    code = (
        "import sys, tempfile, pathlib, numpy as np\n"
        "import matplotlib\n"
        "before = dict.__getitem__(matplotlib.rcParams, 'backend')\n"
        "import stablecnn.training.plots as p\n"
        "p.plot_filters(np.ones((2, 1, 3, 3)), pathlib.Path(tempfile.mkdtemp()) / 'f.png')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') == before, 'backend changed'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_importing_the_cli_does_not_import_matplotlib():
    code = (
        "import sys, stablecnn.cli as c\nc.build_parser()\n"
        "assert 'matplotlib' not in sys.modules and 'PIL' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_cli_plot(run_dir, monkeypatch, capsys):
    import stablecnn.data

    monkeypatch.setattr(stablecnn.data, "load_dataset", lambda *a, **k: random_data(30, 3))
    assert cli.main(["plot", str(run_dir)]) == 0
    assert capsys.readouterr().out.split() == [str(run_dir / n) for n in NAMES]
    assert cli.main(["plot", str(run_dir / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_cli_plot_takes_a_runs_checkpoint_as_its_run(run_dir, monkeypatch, capsys):
    import stablecnn.data

    monkeypatch.setattr(stablecnn.data, "load_dataset", lambda *a, **k: random_data(30, 3))
    assert cli.main(["plot", str(run_dir / "checkpoint.npz")]) == 0
    assert capsys.readouterr().out.split() == [str(run_dir / n) for n in NAMES]
    assert cli.main(["plot", str(run_dir / "metrics.csv")]) == 2  # another file: named as one
    assert capsys.readouterr().err == (
        f"stablecnn: error: {run_dir / 'metrics.csv'}: is a file; give the run directory (the "
        f"folder holding checkpoint.npz)\n"
    )


def test_plot_run_refuses_a_checkpoint_without_a_normalizer(tmp_path, monkeypatch):
    import stablecnn.data

    monkeypatch.setattr(stablecnn.data, "load_dataset", lambda *a, **k: random_data(30, 3))
    checkpoint.save(tmp_path / "checkpoint.npz", zoo.build("md1"), meta={})
    with pytest.raises(CheckpointError, match="has no normalizer record.*save it with meta="):
        plots.plot_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]  # nothing drawn


@pytest.mark.parametrize("with_epoch", [False, True])
def test_a_run_of_one_step_shows_its_loss_and_accuracy(with_epoch):
    """A one-point series is no line: each batch value must still be drawn (a marker)."""
    from matplotlib.colors import to_rgb

    rows = [{"kind": "step", "epoch": 0, "step": 1, "loss": 2.1, "batch_acc": 0.3}]
    if with_epoch:
        rows.append({"kind": "epoch", "epoch": 0, "step": 1, "test_acc": 0.2, "test_loss": 2.2})
    fig = plots.curves_figure(rows)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)  # (H, W, 3), top row first
    want = np.array(to_rgb(plots.SMOOTH)) * 255
    loss_ax, acc_ax = fig.axes[:2]
    for ax, value in ((loss_ax, 2.1), (acc_ax, 30.0)):
        x, y = ax.transData.transform((1, value))
        col, row = int(round(x)), pixels.shape[0] - int(round(y))
        patch = pixels[row - 2 : row + 3, col - 2 : col + 3].reshape(-1, 3)
        assert np.abs(patch - want).max(axis=1).min() < 40, (ax.get_title(), patch)
