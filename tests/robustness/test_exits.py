"""How a command ends when it cannot go on: settings, Ctrl-C, a closed pipe, no home directory.

Every command runs through :func:`stablecnn.cli.run_command` (``train_cnn_md1.py`` too), so the
table in :mod:`stablecnn.cli` holds for all of them: one line and exit 2 for the user's mistake,
``PROG: interrupted`` and 130 for Ctrl-C, silence and 141 when the reader of stdout goes away.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.fakes import save_small_checkpoint
from support.processes import default_sigint, stablecnn_process

from stablecnn import cli

ROOT = Path(__file__).resolve().parents[2]
LEGACY_SCRIPT = ROOT / "train_cnn_md1.py"
DEADLINE = 60.0  # seconds any one process here may take


# -- settings are read where errors are reported ---------------------------------------------------
@pytest.mark.parametrize("value", ["abc", "0", "-1", "4,3,2", "1.5"])
def test_a_bad_thread_count_is_one_line_and_exit_2(value):
    proc = stablecnn_process("summary", "md1", env={"STABLECNN_NUM_THREADS": value})
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 2, err
    assert (
        err == f"stablecnn: error: STABLECNN_NUM_THREADS must be a positive integer, "
        f"got {value!r}\n"
    )
    assert out == ""


@pytest.fixture
def no_home(monkeypatch):
    """No ``HOME`` and no entry in the password database: ``Path.home()`` cannot answer."""
    import pwd

    def unknown_user(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("STABLECNN_DATA", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown_user)
    with pytest.raises(RuntimeError):
        Path.home()  # the situation the fixture promises


@pytest.mark.parametrize(
    "command",
    [
        ["data", "info"],
        ["data", "fetch", "mnist"],
        ["evaluate", "{ckpt}"],
        ["train", "--out", "{out}"],
    ],
)
def test_no_home_directory_is_one_line_and_exit_2(command, tmp_path, no_home, capsys):
    ckpt = save_small_checkpoint(tmp_path / "small.npz")
    out = tmp_path / "run"
    args = [a.format(ckpt=ckpt, out=out) for a in command]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stablecnn: error: no home directory"), err
    assert "STABLECNN_DATA" in err and "--data-dir" in err
    assert not out.exists(), "a refused run left its directory behind"


def test_stablecnn_data_with_a_tilde_and_no_home(tmp_path, no_home, monkeypatch, capsys):
    monkeypatch.setenv("STABLECNN_DATA", "~/data")
    assert cli.main(["data", "info"]) == 2
    err = capsys.readouterr().err
    assert "STABLECNN_DATA='~/data'" in err and err.count("\n") == 1


# -- Ctrl-C ----------------------------------------------------------------------------------------
def test_every_command_turns_ctrl_c_into_one_line(monkeypatch, capsys):
    """Whatever the command is doing when Ctrl-C arrives, the same line and 130."""
    import argparse

    parser = cli.build_parser()
    names = [a for a in parser._subparsers._group_actions[0].choices]  # every command
    assert {"train", "evaluate", "predict", "data", "plot", "summary"} <= set(names)

    def interrupted(args):
        raise KeyboardInterrupt

    for name in names:
        monkeypatch.setattr(
            argparse.ArgumentParser,
            "parse_args",
            lambda self, argv=None: argparse.Namespace(func=interrupted),
        )
        assert cli.main([name]) == 130, name
        captured = capsys.readouterr()
        assert captured.err == "stablecnn: interrupted\n", name
        assert captured.out == ""


def _interrupt_when(proc: subprocess.Popen, ready) -> tuple[str, str]:
    """Send SIGINT to ``proc`` once ``ready()`` is true; return its (stdout, stderr)."""
    start = time.monotonic()
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - start < DEADLINE, "the process never got ready"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=DEADLINE)


def _reader_waiting(fifo: Path, pid: int):
    """True once process ``pid`` has opened ``fifo`` for reading (our end is then kept open) and
    sleeps in its ``read``.

    A SIGINT that arrives between the reader's ``open`` and its ``read`` sets Python's flag but
    interrupts no system call, so the ``read`` would wait for ever (measured: 1 lost signal in 30
    sent the moment the FIFO opened, 0 in 60 sent once the reader slept in ``read``). Linux
    names the wait in ``/proc/PID/wchan`` (``pipe_read``, ``anon_pipe_read``); elsewhere, or
    where it is hidden, the reader gets half a second to reach its ``read``.
    """
    held = []
    opened_at = []

    def in_read() -> bool:
        try:
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            wchan = ""
        if wchan and wchan != "0":
            return "pipe" in wchan
        return time.monotonic() - opened_at[0] > 0.5

    def ready() -> bool:
        if not held:
            try:
                held.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: nobody reads it yet
                return False
            opened_at.append(time.monotonic())
        return in_read()

    return ready, held


def test_ctrl_c_while_predict_reads_a_file(tmp_path):
    """A real SIGINT while ``predict`` waits on its input (a FIFO that never delivers)."""
    ckpt = save_small_checkpoint(tmp_path / "small.npz")
    fifo = tmp_path / "picture.png"
    os.mkfifo(fifo)
    proc = stablecnn_process("predict", ckpt, fifo)
    ready, held = _reader_waiting(fifo, proc.pid)
    try:
        out, err = _interrupt_when(proc, ready)
    finally:
        for fd in held:
            os.close(fd)
    assert proc.returncode == 130
    assert err.strip() == "stablecnn: interrupted", err
    assert "Traceback" not in err


def test_ctrl_c_in_train_cnn_md1(tmp_path):
    """``python train_cnn_md1.py 0`` interrupted while it reads the test set."""
    script = (
        "import runpy, sys, time\n"
        "import stablecnn.legacy as legacy\n"
        "def slow(folder, split):\n"
        "    print('reading', flush=True)\n"
        "    time.sleep(60)\n"
        "legacy.read_split = slow\n"
        f"sys.argv = [{str(LEGACY_SCRIPT)!r}, '0']\n"
        f"runpy.run_path({str(LEGACY_SCRIPT)!r}, run_name='__main__')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    first = proc.stdout.readline()
    assert first == "reading\n", proc.communicate()
    out, err = _interrupt_when(proc, lambda: True)
    assert proc.returncode == 130
    assert err.strip() == "train_cnn_md1.py: interrupted", err


# -- a closed pipe --------------------------------------------------------------------------------
def test_a_closed_pipe_ends_predict_quietly(tmp_path):
    """``stablecnn predict RUN many.npy | head -1``: no error, status 141 (128 + SIGPIPE)."""
    ckpt = save_small_checkpoint(tmp_path / "small.npz")
    many = tmp_path / "many.npy"
    np.save(many, np.random.default_rng(0).integers(0, 256, (20_000, 2, 2), dtype=np.uint8))
    proc = stablecnn_process("predict", ckpt, many)
    first = proc.stdout.readline()
    assert first.startswith(f"{many}[0]: "), first
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read()
    proc.wait(timeout=DEADLINE)
    proc.stderr.close()
    assert err == ""
    assert proc.returncode == 141


def test_a_closed_pipe_from_a_shell_pipeline(tmp_path):
    ckpt = save_small_checkpoint(tmp_path / "small.npz")
    many = tmp_path / "many.npy"
    np.save(many, np.zeros((20_000, 2, 2), dtype=np.uint8))
    command = f"{sys.executable} -m stablecnn predict {ckpt} {many} | head -1"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0
    assert done.stdout.count("\n") == 1
    assert done.stderr == ""


@pytest.mark.parametrize("exc", [BrokenPipeError(32, "Broken pipe"), OSError(32, "Broken pipe")])
def test_run_command_treats_epipe_as_the_end_of_output(exc, capsys):
    def command():
        raise exc

    assert cli.run_command(command) == cli.EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""


def test_run_command_reports_an_os_error_with_its_file(capsys):
    def command():
        raise PermissionError(13, "Permission denied", "/runs/x/checkpoint.npz")

    assert cli.run_command(command, prog="train_cnn_md1.py") == 2
    assert (
        capsys.readouterr().err
        == "train_cnn_md1.py: error: /runs/x/checkpoint.npz: Permission denied\n"
    )


# -- the user's mistake or a bug ------------------------------------------------------------------
def test_only_the_projects_errors_become_one_line(capsys):
    """A ValueError from deep inside is a bug: its traceback is shown, and the status is 1."""
    from stablecnn.errors import ConfigError

    def bug():
        raise IndexError("index 7 is out of bounds for axis 0 with size 3")

    assert cli.run_command(bug) == cli.EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "IndexError: index 7" in err
    assert err.rstrip().endswith(
        "please report it with the traceback above and the command that caused it"
    )
    for exc in (ValueError("bad"), TypeError("bad")):

        def raises(exc=exc):
            raise exc

        assert cli.run_command(raises) == cli.EXIT_BUG
        assert "Traceback" in capsys.readouterr().err

    def mistake():
        raise ConfigError("momentum must be in [0, 1), got 1.5")

    assert cli.run_command(mistake) == 2
    assert capsys.readouterr().err == "stablecnn: error: momentum must be in [0, 1), got 1.5\n"


def test_debug_shows_the_traceback_of_the_users_mistake_too(capsys):
    assert cli.main(["summary", "no-such-model"]) == 2
    plain = capsys.readouterr().err
    assert plain.count("\n") == 1 and "Traceback" not in plain
    assert cli.main(["--debug", "summary", "no-such-model"]) == 2
    debug = capsys.readouterr().err
    assert "Traceback (most recent call last)" in debug and debug.endswith(plain)
