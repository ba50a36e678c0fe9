"""Matrix, Faults rows: SIGKILL mid-checkpoint, SIGINT, a read-only output directory, a full disk,
two runs on one run directory.

A checkpoint is written to a temporary file and renamed over the old one, so whatever happens
mid-write the previous checkpoint stays byte-identical and loads; a run resumed from it ends
bit-identical to the uninterrupted reference run (see conftest).
"""

from __future__ import annotations

import errno
import os
import signal

import numpy as np
import pytest

from stablecnn import checkpoint, cli
from stablecnn.errors import CheckpointError
from stablecnn.train import RunLock, resume_checkpoint

# In the subprocess: every checkpoint after the first writes half its bytes, says so, then hangs.
SLOW_SECOND_SAVE = """
import io, sys, time, numpy as np
real_savez, calls = np.savez, []
def slow_savez(f, **arrays):
    calls.append(1)
    if len(calls) == 1:
        return real_savez(f, **arrays)
    buf = io.BytesIO()
    real_savez(buf, **arrays)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    print("WRITING CHECKPOINT", file=sys.stderr, flush=True)
    time.sleep(60)
np.savez = slow_savez
"""

# In the subprocess: each step takes 0.3 s longer and is announced, so a signal lands mid-epoch.
SLOW_STEPS = """
import sys, time
from stablecnn.train import Trainer
real_step = Trainer.train_step
def slow_step(self, x, y):
    result = real_step(self, x, y)
    print(f"STEP {self.global_step + 1}", file=sys.stderr, flush=True)
    time.sleep(0.3)
    return result
Trainer.train_step = slow_step
"""

TRAIN_ARGS = ("train", "--epochs", "2", "--batch-size", "10", "--no-plots")


def test_sigkill_while_writing_a_checkpoint(tmp_path, kit, reference):
    run = tmp_path / "run"
    proc = kit.cli_process(*TRAIN_ARGS, "--out", run, setup=SLOW_SECOND_SAVE)
    try:
        kit.wait_for_line(proc.stderr, "WRITING CHECKPOINT")  # epoch 2's checkpoint, half written
        before = (run / "checkpoint.npz").read_bytes()  # epoch 1's, complete
        assert len(kit.temp_files(run)) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert (run / "checkpoint.npz").read_bytes() == before  # byte-identical
    stray = kit.temp_files(run)  # the half-written file is all that is left of the write
    assert len(stray) == 1 and stray[0].startswith(".checkpoint.npz.")
    ckpt = checkpoint.load(run)  # loads, and ignores the stray file
    assert ckpt.meta["progress"] == {"epoch": 1, "step": 0, "global_step": 3}
    with RunLock(run) as lock:  # the dead run's lock is taken over, not a refusal
        assert lock.held
        assert kit.temp_files(run) == []  # and the new holder clears the dead write's temp file
    kit.assert_bit_exact(kit.resume_to_end(run), reference)


def test_sigint_leaves_a_resumable_checkpoint(tmp_path, kit, reference):
    run = tmp_path / "run"
    proc = kit.cli_process(*TRAIN_ARGS, "--out", run, setup=SLOW_STEPS)
    try:
        kit.wait_for_line(proc.stderr, "STEP 4")  # epoch 2, step 1
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"checkpoint saved to {run / 'checkpoint.npz'}. Resume with: stablecnn train --resume " \
           f"{run}" in err
    ckpt = checkpoint.load(run)
    progress = ckpt.meta["progress"]
    assert progress["epoch"] == 1 and 1 <= progress["step"] < 3, progress  # mid-epoch
    assert not (run / ".lock").exists() and kit.temp_files(run) == []
    kit.assert_bit_exact(kit.resume_to_end(run), reference)


def _deny_writes_in(monkeypatch, folder, code=errno.EACCES):
    """Make creating files in ``folder`` fail as a read-only folder does.

    Tests run as root here, and root ignores permission bits (chmod 0o500 does not stop it) and
    may not mount a read-only filesystem; so the refusal is injected where files are created:
    ``os.open`` (``tempfile.mkstemp`` and the run lock go through it) and ``open``.
    """
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return lambda: folder.chmod(0o700)
    import builtins

    folder = str(folder)
    real_os_open, real_open = os.open, builtins.open

    def inside(path):
        return isinstance(path, (str, os.PathLike)) and \
            os.path.dirname(os.path.abspath(os.fspath(path))) == folder

    def os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if inside(file) and any(c in mode for c in "wax+"):
            raise OSError(code, os.strerror(code), os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    return monkeypatch.undo


def test_output_directory_read_only(epoch1_run, kit, reference, monkeypatch):
    before = kit.snapshot(epoch1_run)
    cfg, ckpt = resume_checkpoint(epoch1_run)
    cfg.epochs = 2
    trainer = kit.trainer(epoch1_run, cfg, checkpoint=ckpt)
    restore = _deny_writes_in(monkeypatch, epoch1_run)
    try:
        with pytest.raises(CheckpointError) as info:
            trainer.save_checkpoint()
    finally:
        restore()
    path = epoch1_run / "checkpoint.npz"
    assert str(info.value) == f"could not write checkpoint {path}: Permission denied"
    assert kit.snapshot(epoch1_run) == before and kit.temp_files(epoch1_run) == []
    kit.assert_bit_exact(kit.resume_to_end(epoch1_run), reference)


def test_output_directory_read_only_cli(tmp_path, kit, monkeypatch, capsys, toy_cli):
    run = tmp_path / "readonly"
    run.mkdir()
    (run / "notes.txt").write_text("mine\n")
    restore = _deny_writes_in(monkeypatch, run)
    try:
        code = cli.main([*TRAIN_ARGS, "--out", str(run)])
    finally:
        restore()
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("stablecnn: error: ") and str(run) in err, err
    assert "Permission denied" in err
    assert kit.snapshot(run) == {"notes.txt": b"mine\n"}
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert cli.main([*TRAIN_ARGS, "--out", str(a_file)]) == 2
    assert str(a_file) in capsys.readouterr().err


def _fill_disk_after(monkeypatch, good_saves: int):
    """``np.savez`` writes part of its bytes and then fails with ENOSPC, after ``good_saves``."""
    real_savez, calls = np.savez, []

    def savez(file, *args, **arrays):
        calls.append(1)
        if len(calls) <= good_saves:
            return real_savez(file, *args, **arrays)
        file.write(b"PK\x03\x04" + bytes(1000))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", savez)
    return calls


def test_disk_full(tmp_path, kit, reference, monkeypatch, capsys, toy_cli):
    run = tmp_path / "run"
    _fill_disk_after(monkeypatch, good_saves=1)  # epoch 1 saved, epoch 2's checkpoint fails
    code = cli.main([*TRAIN_ARGS, "--out", str(run)])
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert code == 2
    assert err == (f"stablecnn: error: could not write checkpoint {run / 'checkpoint.npz'}: "
                   f"No space left on device\n")
    ckpt = checkpoint.load(run)  # epoch 1's checkpoint is intact
    assert ckpt.meta["progress"] == {"epoch": 1, "step": 0, "global_step": 3}
    assert kit.temp_files(run) == [] and not (run / ".lock").exists()
    kit.assert_bit_exact(kit.resume_to_end(run), reference)
    # the same through the API, with the full disk showing up at fsync
    good = (run / "checkpoint.npz").read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(CheckpointError, match=f"^could not write checkpoint {run / 'checkpoint.npz'}"
                                              f": No space left on device$"):
        checkpoint.save(run / "checkpoint.npz", checkpoint.load_model(run)[0], ckpt.meta)
    monkeypatch.undo()
    assert (run / "checkpoint.npz").read_bytes() == good and kit.temp_files(run) == []


def test_two_runs_on_the_same_run_directory(epoch1_run, kit):
    before = kit.snapshot(epoch1_run)
    with RunLock(epoch1_run):
        for args in ([*TRAIN_ARGS, "--out", epoch1_run], [*TRAIN_ARGS, "--resume", epoch1_run]):
            proc = kit.cli_process(*args)
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 2, err
            assert err == (f"stablecnn: error: run directory {epoch1_run} is in use by process "
                           f"{os.getpid()}; use another --out directory\n")
        assert kit.snapshot(epoch1_run) == {**before, ".lock": str(os.getpid()).encode()}
    assert kit.snapshot(epoch1_run) == before  # the lock is gone, every file as it was
