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
from support.processes import cli_process, wait_for_line
from support.runs import (
    assert_bit_exact,
    make_config,
    make_trainer,
    resume_to_end,
    snapshot,
    state_of,
    temp_files,
)

from stablecnn import cli
from stablecnn.errors import CheckpointError
from stablecnn.training import checkpoint
from stablecnn.training.trainer import RunLock, resume_checkpoint

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
from stablecnn.training.trainer import Trainer
real_step = Trainer.train_step
def slow_step(self, x, y):
    result = real_step(self, x, y)
    print(f"STEP {self.global_step + 1}", file=sys.stderr, flush=True)
    time.sleep(0.3)
    return result
Trainer.train_step = slow_step
"""

TRAIN_ARGS = ("train", "--epochs", "2", "--batch-size", "10", "--no-plots")


def test_sigkill_while_writing_a_checkpoint(tmp_path, reference):
    run = tmp_path / "run"
    proc = cli_process(*TRAIN_ARGS, "--out", run, setup=SLOW_SECOND_SAVE)
    try:
        wait_for_line(proc.stderr, "WRITING CHECKPOINT")  # epoch 2's checkpoint, half written
        before = (run / "checkpoint.npz").read_bytes()  # epoch 1's, complete
        assert len(temp_files(run)) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert (run / "checkpoint.npz").read_bytes() == before  # byte-identical
    stray = temp_files(run)  # the half-written file is all that is left of the write
    assert len(stray) == 1 and stray[0].startswith(".checkpoint.npz.")
    ckpt = checkpoint.load(run)  # loads, and ignores the stray file
    assert ckpt.meta["progress"] == {"epoch": 1, "step": 0, "global_step": 3}
    with RunLock(run) as lock:  # the dead run's lock is taken over, not a refusal
        assert lock.held
        assert temp_files(run) == []  # and the new holder clears the dead write's temp file
    assert_bit_exact(resume_to_end(run), reference)


def test_sigint_leaves_a_resumable_checkpoint(tmp_path, reference):
    run = tmp_path / "run"
    proc = cli_process(*TRAIN_ARGS, "--out", run, setup=SLOW_STEPS)
    try:
        wait_for_line(proc.stderr, "STEP 4")  # epoch 2, step 1
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert (
        f"checkpoint saved to {run / 'checkpoint.npz'}. Resume with: stablecnn train --resume "
        f"{run}" in err
    )
    ckpt = checkpoint.load(run)
    progress = ckpt.meta["progress"]
    assert progress["epoch"] == 1 and 1 <= progress["step"] < 3, progress  # mid-epoch
    assert not (run / ".lock").exists() and temp_files(run) == []
    assert_bit_exact(resume_to_end(run), reference)


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
        return (
            isinstance(path, (str, os.PathLike))
            and os.path.dirname(os.path.abspath(os.fspath(path))) == folder
        )

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


def test_output_directory_read_only(epoch1_run, reference, monkeypatch):
    before = snapshot(epoch1_run)
    cfg, ckpt = resume_checkpoint(epoch1_run)
    cfg.epochs = 2
    trainer = make_trainer(epoch1_run, cfg, checkpoint=ckpt)
    restore = _deny_writes_in(monkeypatch, epoch1_run)
    try:
        with pytest.raises(CheckpointError) as info:
            trainer.save_checkpoint()
    finally:
        restore()
    path = epoch1_run / "checkpoint.npz"
    assert str(info.value) == f"could not write checkpoint {path}: Permission denied"
    assert snapshot(epoch1_run) == before and temp_files(epoch1_run) == []
    assert_bit_exact(resume_to_end(epoch1_run), reference)


def test_output_directory_read_only_cli(tmp_path, monkeypatch, capsys, toy_cli):
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
    assert snapshot(run) == {"notes.txt": b"mine\n"}
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


def test_disk_full(tmp_path, reference, monkeypatch, capsys, toy_cli):
    run = tmp_path / "run"
    _fill_disk_after(monkeypatch, good_saves=1)  # epoch 1 saved, epoch 2's checkpoint fails
    code = cli.main([*TRAIN_ARGS, "--out", str(run)])
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert code == 2
    assert err == (
        f"stablecnn: error: could not write checkpoint {run / 'checkpoint.npz'}: "
        f"No space left on device\n"
    )
    ckpt = checkpoint.load(run)  # epoch 1's checkpoint is intact
    assert ckpt.meta["progress"] == {"epoch": 1, "step": 0, "global_step": 3}
    assert temp_files(run) == [] and not (run / ".lock").exists()
    assert_bit_exact(resume_to_end(run), reference)
    # the same through the API, with the full disk showing up at fsync
    good = (run / "checkpoint.npz").read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(
        CheckpointError,
        match=f"^could not write checkpoint {run / 'checkpoint.npz'}: No space left on device$",
    ):
        checkpoint.save(run / "checkpoint.npz", checkpoint.load_model(run)[0], ckpt.meta)
    monkeypatch.undo()
    assert (run / "checkpoint.npz").read_bytes() == good and temp_files(run) == []


def test_two_runs_on_the_same_run_directory(epoch1_run):
    before = snapshot(epoch1_run)
    with RunLock(epoch1_run):
        for args in (
            [*TRAIN_ARGS, "--out", epoch1_run],
            [*TRAIN_ARGS, "--out", epoch1_run, "--overwrite"],  # a run in progress is not replaced
            [*TRAIN_ARGS, "--resume", epoch1_run],
        ):
            proc = cli_process(*args)
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 2, err
            assert err == (
                f"stablecnn: error: run directory {epoch1_run} is in use by process "
                f"{os.getpid()}; use another --out directory\n"
            )
        assert snapshot(epoch1_run) == {**before, ".lock": str(os.getpid()).encode()}
    assert snapshot(epoch1_run) == before  # the lock is gone, every file as it was


# -- issue 12.4: any error during training leaves a checkpoint at the last completed step ----------
def fail_in_layer(trainer, index, step, error):
    """Make layer ``index``'s forward raise ``error`` in global step ``step`` (1-based), after the
    layers before it have run (so a BatchNorm before it has already folded in the batch)."""
    layer = trainer.model.layers[index]
    real = layer.forward

    def forward(x, training=True, **kwargs):
        if training and trainer.global_step + 1 == step:
            raise error
        return real(x, training, **kwargs)

    layer.forward = forward


@pytest.mark.parametrize(
    "error, raised",
    [
        (ValueError("injected"), "TrainingError"),
        (MemoryError(), "TrainingError"),
        (RuntimeError("injected"), "RuntimeError"),
    ],
)
def test_an_error_mid_epoch_leaves_a_checkpoint_at_the_last_completed_step(
    tmp_path, reference, error, raised
):
    run = tmp_path / "run"
    trainer = make_trainer(run)
    fail_in_layer(trainer, 7, step=5, error=error)  # epoch 2, step 2; layer 7 is md1's Linear
    with pytest.raises(Exception) as info:
        trainer.fit()
    assert type(info.value).__name__ == raised
    saved = (
        f"checkpoint saved to {run / 'checkpoint.npz'} at the last completed step, global "
        f"step 4 (epoch 2, step 1). Resume with: stablecnn train --resume {run}"
    )
    if raised == "TrainingError":
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        assert str(info.value) == (
            f"training failed at epoch 2, step 2 (global step 5): {detail}; {saved}"
        )
    else:  # a bug keeps its own type and traceback; the same facts come as a note
        assert info.value is error and info.value.__notes__ == [
            f"stablecnn: training failed at epoch 2, step 2 (global step 5); {saved}"
        ]
    assert checkpoint.load(run).meta["progress"] == {"epoch": 1, "step": 1, "global_step": 4}
    assert not temp_files(run)
    assert_bit_exact(resume_to_end(run), reference)


def test_the_failed_steps_batch_statistics_are_not_kept(tmp_path):
    """BatchNorm's running statistics (and its batch counter) as they were before the failed
    step: the resumed run ends bit-identical to an uninterrupted one."""
    path = tmp_path / "bn.toml"
    path.write_text(
        "input_shape = [1, 28, 28]\n"
        "[[layers]]\ntype = 'Conv2d'\nin_channels = 1\nout_channels = 2\nkernel_size = 5\n"
        "[[layers]]\ntype = 'BatchNorm2d'\nnum_features = 2\n"
        "[[layers]]\ntype = 'ReLU'\n[[layers]]\ntype = 'Flatten'\n"
        "[[layers]]\ntype = 'Linear'\nin_features = 1152\nout_features = 10\n"
    )
    cfg = make_config(model=str(path))
    make_trainer(tmp_path / "full", cfg).fit()
    trainer = make_trainer(tmp_path / "cut", cfg)
    fail_in_layer(trainer, 2, step=5, error=ValueError("injected"))  # after BatchNorm2d ran
    with pytest.raises(Exception, match="global step 4"):
        trainer.fit()
    ckpt = checkpoint.load(tmp_path / "cut")
    assert ckpt.meta["progress"]["global_step"] == 4
    assert int(ckpt.params["1.num_batches_tracked"]) == 4
    assert_bit_exact(resume_to_end(tmp_path / "cut"), state_of(tmp_path / "full"))


def test_an_error_after_a_step_completed_saves_that_step(tmp_path, reference):
    """A callback failing (the log's disk is full) after step 5: the checkpoint holds step 5."""
    from stablecnn.errors import TrainingError
    from stablecnn.training.callbacks import Callback

    class FullDisk(Callback):
        def on_step(self, trainer, step):
            if step["global_step"] == 5:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "train_log.txt")

    run = tmp_path / "run"
    with pytest.raises(
        TrainingError,
        match=r"^training failed after epoch 2, step 2 \(global "
        r"step 5\): OSError: .*No space left on device",
    ):
        make_trainer(run, callbacks=[FullDisk()]).fit()
    assert checkpoint.load(run).meta["progress"] == {"epoch": 1, "step": 2, "global_step": 5}
    assert_bit_exact(resume_to_end(run), reference)


def test_an_error_while_the_weights_are_updated_keeps_the_previous_checkpoint(epoch1_run):
    """Half-updated weights are never saved: the last checkpoint stays byte-identical."""
    from stablecnn.errors import TrainingError

    before = (epoch1_run / "checkpoint.npz").read_bytes()
    cfg, ckpt = resume_checkpoint(epoch1_run)
    cfg.epochs = 2
    trainer = make_trainer(epoch1_run, cfg, checkpoint=ckpt)
    real_step = trainer.optimizer.step

    def half_step():
        trainer.model.parameters()[0][1][...] = 0  # the first parameter written, then a failure
        raise MemoryError()

    trainer.optimizer.step = half_step
    with pytest.raises(TrainingError) as info:
        trainer.fit()
    assert str(info.value) == (
        f"training failed at epoch 2, step 1 (global step 4): MemoryError; the error came "
        f"while the optimizer was updating the weights, so they were not saved; the last "
        f"checkpoint, {epoch1_run / 'checkpoint.npz'}, is kept. Resume with: stablecnn train "
        f"--resume {epoch1_run}"
    )
    assert (epoch1_run / "checkpoint.npz").read_bytes() == before
    trainer.optimizer.step = real_step


def test_a_second_ctrl_c_mid_step_saves_the_last_completed_step(tmp_path, reference):
    from stablecnn.training.trainer import Interrupted

    run = tmp_path / "run"
    trainer = make_trainer(run)
    fail_in_layer(trainer, 7, step=5, error=KeyboardInterrupt())
    with pytest.raises(
        Interrupted,
        match=r"^interrupted at epoch 2, step 2 \(global step 5\); "
        r"checkpoint saved to .* global step 4 ",
    ):
        trainer.fit()
    assert_bit_exact(resume_to_end(run), reference)


def test_an_error_mid_epoch_through_the_cli_then_resume(
    tmp_path, reference, monkeypatch, capsys, toy_cli
):
    from stablecnn.training.trainer import Trainer

    real_step = Trainer.train_step

    def failing_step(self, x, y):
        if self.global_step + 1 == 5:
            raise ValueError("injected failure")
        return real_step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", failing_step)
    run = tmp_path / "run"
    assert cli.main([*TRAIN_ARGS, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"stablecnn: error: training failed at epoch 2, step 2 (global step 5): "
        f"ValueError: injected failure; checkpoint saved to {run / 'checkpoint.npz'} "
        f"at the last completed step, global step 4 (epoch 2, step 1). Resume with: "
        f"stablecnn train --resume {run}\n"
    )
    assert not (run / ".lock").exists()
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert cli.main(["train", "--resume", str(run), "--no-plots"]) == 0
    assert_bit_exact(state_of(run), reference)
