"""Helpers shared by the tests (``import support``: tests/conftest.py puts tests/ on the path)."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test interrupts: Ctrl-C's default action restored.

    A shell without job control starts background commands with SIGINT ignored, and a Python
    child then installs no KeyboardInterrupt handler, so a test sending SIGINT would wait for
    nothing. Give ``subprocess.Popen(..., preexec_fn=default_sigint)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
