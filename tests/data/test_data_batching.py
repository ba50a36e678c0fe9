"""Normalisation and batching: NumPy-equal statistics, dtypes, shapes, seeded shuffles, memory."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from stablecnn.data import ORIGINAL_SUBSET, Normalizer, batching, iterate_batches, subset
from stablecnn.errors import DataError

RNG = np.random.default_rng(7)
IMAGES = RNG.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
LABELS = RNG.integers(0, 10, size=50).astype(np.uint8)


# --- Normalizer.original equals what NumPy gave the original ---------------------------------


def numpy_stats(images):
    return int(images.mean()), int(images.std())


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=3, max_side=12)))
def test_original_stats_equal_numpy(images):
    if int(images.std()) == 0:
        with pytest.raises(DataError) as info:
            Normalizer.original(images)
        constant = bool((images == images.flat[0]).all())
        assert ("the images are constant" in str(info.value)) == constant
        assert ("below 1" in str(info.value)) == (not constant)
        return
    norm = Normalizer.original(images)
    assert (norm.mean, norm.std) == numpy_stats(images)
    assert norm.kind == "original"
    assert isinstance(norm.mean, float) and isinstance(norm.std, float)


@pytest.mark.parametrize("low, high", [(0, 256), (0, 4), (100, 140), (250, 256)])
def test_original_stats_over_many_chunks(monkeypatch, low, high):
    monkeypatch.setattr(batching, "_STATS_CHUNK", 1000)
    images = np.random.default_rng(low).integers(low, high, size=(300, 28, 28), dtype=np.uint8)
    assert (lambda n: (n.mean, n.std))(Normalizer.original(images)) == numpy_stats(images)


def test_original_stats_on_mnist_like_data_without_a_float_copy():
    # Mostly zeros with bright strokes, like MNIST (mean 33, std 78 there).
    rng = np.random.default_rng(3)
    images = np.where(rng.random((4000, 28, 28)) < 0.19, rng.integers(1, 256, (4000, 28, 28)), 0)
    images = images.astype(np.uint8)
    expected = numpy_stats(images)
    tracemalloc.start()
    norm = Normalizer.original(images)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (norm.mean, norm.std) == expected
    assert peak < images.nbytes  # a float64 copy would be 8x the uint8 images


def test_original_stats_of_a_non_contiguous_subset():
    images = IMAGES[::2, 3:20]
    assert (lambda n: (n.mean, n.std))(Normalizer.original(images)) == numpy_stats(images)


def test_binary_images_are_refused_for_their_deviation_not_as_constant():
    """0/1 pixels: std 0.33, which int(std) rounds to 0; the message says so and the way out."""
    rng = np.random.default_rng(5)
    images = (rng.random((50, 28, 28)) < 0.125).astype(np.uint8)
    std = float(images.std())
    assert 0.32 < std < 0.34
    with pytest.raises(DataError) as info:
        Normalizer.original(images)
    assert str(info.value) == (
        f"the standard deviation of the images' pixels is {std:.2f} (values 0 to 1), below 1, so "
        f"the original integer normalisation (divide by int(std) = 0) cannot be used; use the "
        f"unit normalisation instead: --normalization unit (x / 255)"
    )
    assert "constant" not in str(info.value)
    x = Normalizer.unit()(images)  # the way out works: 0 and 1/255
    assert set(np.unique(x).tolist()) == {0.0, np.float32(1 / 255)}


@pytest.mark.parametrize(
    "images, shown",
    [
        (np.array([0] * 999_999 + [1], np.uint8), "0.001"),  # one ink pixel in a million
        (np.array([0, 1] * 50, np.uint8), "0.5"),
        (np.array([3, 4] * 49 + [5, 3], np.uint8), "0.52"),
        (np.array([0] * 10 + [2], np.uint8), "0.57"),
        (np.array([0, 2] * 2000 + [1], np.uint8), "0.9999"),  # two digits would print 1
    ],
)
def test_a_deviation_below_one_is_shown_as_measured_and_never_as_1(images, shown):
    assert 0 < images.std() < 1
    with pytest.raises(DataError) as info:
        Normalizer.original(images)
    assert f"pixels is {shown} (values {images.min()} to {images.max()}), below 1" in str(
        info.value
    )


@pytest.mark.parametrize("value", [0, 7, 255])
def test_constant_images_are_still_called_constant(value):
    with pytest.raises(DataError) as info:
        Normalizer.original(np.full((4, 28, 28), value, np.uint8))
    assert str(info.value).startswith(
        f"the images are constant: every pixel is {value} (standard deviation 0)"
    )
    assert "--normalization unit" not in str(info.value)


def test_original_rejects_bad_input():
    with pytest.raises(DataError, match="uint8"):
        Normalizer.original(IMAGES.astype(np.float32))
    with pytest.raises(DataError, match="at least one"):
        Normalizer.original(IMAGES[:0])


# --- applying a Normalizer --------------------------------------------------------------------


def test_original_normalisation_of_a_batch():
    norm = Normalizer.original(IMAGES)
    x = norm(IMAGES[:8])
    assert x.dtype == np.float32 and x.shape == (8, 1, 28, 28)
    expected = (IMAGES[:8, None].astype(np.float64) - norm.mean) / norm.std
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    x64 = norm(IMAGES[:8], dtype=np.float64)
    assert x64.dtype == np.float64
    np.testing.assert_array_equal(x64, expected)


def test_unit_scaling():
    norm = Normalizer.unit()
    x = norm(IMAGES[:, None])  # (B, 1, H, W) accepted as well
    assert x.dtype == np.float32 and x.shape == (50, 1, 28, 28)
    assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_allclose(x[:, 0], IMAGES / 255.0, rtol=1e-6)


def test_normalizer_round_trips_through_plain_values():
    norm = Normalizer.original(IMAGES)
    data = norm.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert Normalizer.from_dict(data) == norm
    as_loaded = {k: np.asarray(v) for k, v in data.items()}  # as read back from a .npz
    assert Normalizer.from_dict(as_loaded) == norm
    assert Normalizer.from_dict(Normalizer.unit().to_dict()) == Normalizer.unit()


@pytest.mark.parametrize(
    "kwargs, fault",
    [
        (dict(mean=0.0, std=0.0), "positive finite std, got mean=0.0, std=0.0"),
        (dict(mean=0.0, std=float("inf")), "positive finite std, got mean=0.0, std=inf"),
        (dict(mean=float("nan"), std=1.0), "finite mean"),
        (dict(mean=0.0, std="78"), "std='78'"),
        (dict(mean=True, std=78.0), "mean=True"),
        (dict(mean=0.0, std=1.0, kind="zscore"), "kind"),
    ],
)
def test_invalid_normalizers(kwargs, fault):
    with pytest.raises(DataError, match=fault):
        Normalizer(**kwargs)


def test_invalid_batches_and_descriptions():
    with pytest.raises(DataError, match="batch"):
        Normalizer.unit()(IMAGES[0])
    with pytest.raises(DataError, match="float dtype"):
        Normalizer.unit()(IMAGES, dtype=np.int32)
    with pytest.raises(DataError, match="not a normalizer"):
        Normalizer.from_dict({"mean": 1.0})


# --- batches ----------------------------------------------------------------------------------


def collect(*args, **kwargs):
    return list(iterate_batches(*args, **kwargs))


def test_batches_cover_the_epoch_once_with_the_right_types():
    batches = collect(IMAGES, LABELS, 16, np.random.default_rng(0), Normalizer.unit())
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    for x, y in batches:
        assert x.dtype == np.float32 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == np.int64
    xs = np.concatenate([x for x, _ in batches])
    ys = np.concatenate([y for _, y in batches])
    # Same multiset of (image, label) pairs: every image once, still matched with its label.
    order = np.lexsort((ys, xs.reshape(len(xs), -1).sum(1)))
    ref = np.lexsort((LABELS, IMAGES.reshape(50, -1).sum(1).astype(np.float64) / 255))
    np.testing.assert_allclose(xs[order, 0], IMAGES[ref] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ys[order], LABELS[ref])


def test_drop_last_and_no_shuffle():
    batches = collect(IMAGES, LABELS, 16, None, Normalizer.unit(), drop_last=True)
    assert [len(y) for _, y in batches] == [16, 16, 16]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), LABELS[:48])


def test_seeded_shuffle_is_reproducible_and_changes_each_epoch():
    def epoch_labels(rng):
        return np.concatenate(
            [
                y
                for _, y in iterate_batches(
                    np.arange(50, dtype=np.uint8).reshape(50, 1, 1).repeat(28, 1).repeat(28, 2),
                    np.arange(50),
                    8,
                    rng,
                    Normalizer.unit(),
                )
            ]
        )

    a, b = np.random.default_rng(42), np.random.default_rng(42)
    first_a, first_b = epoch_labels(a), epoch_labels(b)
    np.testing.assert_array_equal(first_a, first_b)
    assert sorted(first_a) == list(range(50))
    second_a = epoch_labels(a)
    assert not np.array_equal(first_a, second_a)  # a new order each epoch
    np.testing.assert_array_equal(second_a, epoch_labels(b))
    expected = np.random.default_rng(42).permutation(50)  # documented: rng.permutation(N)
    np.testing.assert_array_equal(first_a, expected)


def test_float64_only_when_asked():
    norm = Normalizer.original(IMAGES)
    x, _ = next(iterate_batches(IMAGES, LABELS, 10, None, norm))
    assert x.dtype == np.float32
    x, _ = next(iterate_batches(IMAGES, LABELS, 10, None, norm, dtype=np.float64))
    assert x.dtype == np.float64


def test_an_epoch_holds_only_one_batch_of_floats():
    images = np.random.default_rng(0).integers(0, 256, (6000, 28, 28), dtype=np.uint8)
    labels = np.zeros(6000, np.uint8)
    norm = Normalizer.original(images)
    tracemalloc.start()
    for _x, _y in iterate_batches(images, labels, 100, np.random.default_rng(0), norm):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    one_batch = 100 * 28 * 28 * 4
    assert peak < 4 * one_batch + 6000 * 8 * 2  # a few batches plus the permutation


def test_batch_argument_errors():
    with pytest.raises(DataError, match="batch_size"):
        collect(IMAGES, LABELS, 0, None, Normalizer.unit())
    with pytest.raises(DataError, match="50 images but 49 labels"):
        collect(IMAGES, LABELS[:49], 8, None, Normalizer.unit())


def test_subset_takes_the_first_n_as_views():
    x, y = subset(IMAGES, LABELS, 20)
    assert np.shares_memory(x, IMAGES) and np.shares_memory(y, LABELS)
    np.testing.assert_array_equal(x, IMAGES[:20])
    np.testing.assert_array_equal(y, LABELS[:20])
    assert subset(IMAGES, LABELS, None)[0] is IMAGES
    assert ORIGINAL_SUBSET == 20_000
    for n in (0, 51):
        with pytest.raises(DataError, match="subset size"):
            subset(IMAGES, LABELS, n)


# --- through the command line -----------------------------------------------------------------


def test_train_on_binary_idx_files_exits_2_naming_the_deviation_and_the_way_out(
    tmp_path, capsys, cache_root
):
    from stablecnn.cli import main
    from stablecnn.data import write_idx

    rng = np.random.default_rng(11)
    folder = tmp_path / "binary"
    folder.mkdir()
    images = {}
    for stem, n in (("train", 40), ("t10k", 10)):  # pixels 0 or 1, as some exports store them
        images[stem] = (rng.random((n, 28, 28)) < 0.125).astype(np.uint8)
        write_idx(folder / f"{stem}-images-idx3-ubyte", images[stem])
        write_idx(folder / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    std = float(images["train"].std())
    assert f"{std:.2f}" == "0.33"
    args = ["train", "--data-dir", str(folder), "--no-verify", "--epochs", "1", "--no-plots"]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"stablecnn: error: the standard deviation of the images' pixels is "
        f"{std:.2f} (values 0 to 1), below 1, so the original integer "
        f"normalisation"
    ), err
    assert "--normalization unit" in err and "constant" not in err and "Traceback" not in err
    assert not (tmp_path / "refused").exists()  # refused before the run directory is made
    # the way the message names works on the same files
    assert main([*args, "--normalization", "unit", "--out", str(tmp_path / "unit")]) == 0
    assert (tmp_path / "unit" / "checkpoint.npz").exists()
