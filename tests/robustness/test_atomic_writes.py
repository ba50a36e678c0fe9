"""Every file stablecnn writes appears whole or not at all, with the mode the umask gives."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager

import pytest
from support.runs import TEST, make_config, make_trainer

from stablecnn.files import atomic_write, atomic_writer, default_file_mode


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    "mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640), (0o002, 0o664)]
)
def test_files_take_the_umask_like_open(tmp_path, mask, expected):
    with umask(mask):
        assert default_file_mode() == expected
        atomic_write(tmp_path / "atomic", lambda f: f.write(b"x"))
        with open(tmp_path / "plain", "wb") as f:
            f.write(b"x")
        assert os.umask(mask) == mask  # reading the umask put it back
    assert mode(tmp_path / "atomic") == mode(tmp_path / "plain") == expected


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(path) as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.parametrize("where", ["missing folder", "directory"])
def test_a_path_that_cannot_be_written_is_named_not_the_temporary(tmp_path, where):
    """The error names the file asked for: a user never heard of ``.name.xyz.tmp``."""
    path = tmp_path / "missing" / "out.npz" if where == "missing folder" else tmp_path / "out.npz"
    if where == "directory":
        path.mkdir()
    with pytest.raises(OSError) as caught:
        atomic_write(path, lambda f: f.write(b"x"))
    assert caught.value.filename == str(path)
    assert ".tmp" not in str(caught.value)
    expected = ["out.npz"] if where == "directory" else []
    assert [p.name for p in tmp_path.iterdir()] == expected  # no temporary file left behind


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_file_of_a_run_has_one_mode(tmp_path, mask):
    """Checkpoint, plots, metrics and log: one documented choice, the umask's."""
    from stablecnn.training import plots

    run = tmp_path / "run"
    with umask(mask):
        make_trainer(run, make_config(epochs=1)).fit()
        plots.plot_run(run, TEST)
    files = [p for p in run.iterdir() if p.is_file()]
    names = {p.name for p in files}
    assert {"checkpoint.npz", "metrics.csv", "train_log.txt", "curves.png"} <= names, names
    assert {p.name: mode(p) for p in files} == {p.name: 0o666 & ~mask for p in files}
