"""The command line in a real process: started so that a test can interrupt it, on toy data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from support.runs import TOY_TEST, TOY_TRAIN

TESTS = Path(__file__).resolve().parents[1]  # tests/, where a child finds this package


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test interrupts: Ctrl-C's default action restored.

    A shell without job control starts background commands with SIGINT ignored, and a Python
    child then installs no KeyboardInterrupt handler, so a test sending SIGINT would wait for
    nothing. Give ``subprocess.Popen(..., preexec_fn=default_sigint)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stablecnn_process(*args, env=None, **popen) -> subprocess.Popen:
    """``python -m stablecnn ARGS`` in a new process (the installed command's entry point), with
    text pipes for stdout and stderr and ``env`` added to this process's environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "stablecnn", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=default_sigint,
        **popen,
    )


TOY_CLI = """
import sys
sys.path.insert(0, {tests!r})
from support.fakes import make_data, serve_data
serve_data(make_data(*{train!r}), make_data(*{test!r}))
{setup}
from stablecnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_process(
    *args, setup: str = "", train=TOY_TRAIN, test=TOY_TEST, **popen
) -> subprocess.Popen:
    """``stablecnn ARGS`` in a new process on toy data, after running ``setup`` (Python).

    The datasets are :func:`support.fakes.make_data` of ``train`` and ``test`` (``(n, seed)``;
    by default the recipe's :data:`support.runs.TRAIN` and ``TEST``); stdout and stderr are text
    pipes.
    """
    script = TOY_CLI.format(tests=str(TESTS), train=tuple(train), test=tuple(test), setup=setup)
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
        **popen,
    )


def wait_for_line(stream, marker: str, limit: int = 10_000) -> list[str]:
    """Read ``stream`` line by line until one contains ``marker``; return the lines read."""
    lines = []
    for _ in range(limit):
        line = stream.readline()
        if not line:
            raise AssertionError(
                f"the process ended before printing {marker!r}:\n" + "".join(lines)
            )
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} in {limit} lines")
