"""The ``stablecnn`` command line: ``stablecnn train | predict | evaluate | data | plot | ...``.

Each command lives in the module that owns its concern and registers itself here through a
``add_parser(subparsers)`` function that sets ``func`` on its parser; this module only wires them
together and, in :func:`run_command`, turns what ends a command early into one line and an exit
status (shared with ``train_cnn_md1.py``):

=========================================  =================================  ======
what happened                              what is printed (stderr)           status
=========================================  =================================  ======
the user's mistake (a ``StableCNNError``)  ``PROG: error: <message>``         2
an ``OSError`` (full disk, no access)      ``PROG: error: <file>: <reason>``  2
Ctrl-C (``KeyboardInterrupt``)             ``PROG: interrupted``              130
the reader of stdout went away (EPIPE)     nothing                            141
any other exception: a bug in stablecnn    its traceback, and a line saying   1
                                           so
=========================================  =================================  ======

Only the project's own errors (:mod:`stablecnn.errors`: bad arguments, settings, files, data)
and the system's are the user's to fix, so only they become one line; a ``ValueError`` or
``IndexError`` from deeper down is a bug and shows where it happened. ``--debug`` (before the
command: ``stablecnn --debug train ...``) shows the traceback of every error.

130 and 141 are 128 + SIGINT and 128 + SIGPIPE, the statuses a shell reports for a program
those signals stop, so ``stablecnn predict RUN many.npy | head -1`` ends as ``cat`` would.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Callable

from stablecnn.errors import StableCNNError

EXIT_BUG = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    from stablecnn.cli import data, evaluate, interop, legacy, plot, predict, serve, train
    from stablecnn.interop.common import installed_version

    parser = argparse.ArgumentParser(
        prog="stablecnn",
        description="A numerically stable CNN library in NumPy: train, predict, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of any error, not only of bugs",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    train.add_parser(sub)
    evaluate.add_parser(sub)  # evaluate, summary
    predict.add_parser(sub)
    plot.add_parser(sub)
    legacy.add_parser(sub)  # export-pickle, import-pickle
    data.add_parser(sub)
    serve.add_parser(sub)
    interop.add_parser(sub)  # export-onnx, import-onnx
    return parser


def run_command(
    command: Callable[[], int | None],
    prog: str = "stablecnn",
    debug: Callable[[], bool] = lambda: False,
) -> int:
    """Run ``command()`` and return its exit status, ending early as the module doc's table says.

    Every setting a command reads (``STABLECNN_NUM_THREADS``, the data cache's folder, ...) is
    read inside ``command``, so a bad one is reported the same way as a bad option. ``debug()``
    (asked after the failure, once the options are parsed) adds the traceback to every error.
    """
    try:
        return int(command() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except StableCNNError as exc:
        _traceback_if(debug())
        return _error(prog, str(exc))
    except OSError as exc:  # a full disk or a read-only folder under the logs, the plots, ...
        if exc.errno == errno.EPIPE:
            return _quiet_broken_pipe()
        _traceback_if(debug())
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(prog, f"{where}{exc.strerror or exc}")
    except Exception:  # noqa: BLE001 - not the user's to fix: show where it happened
        traceback.print_exc()
        print(
            f"{prog}: internal error: this is a bug in stablecnn; please report it with the "
            f"traceback above and the command that caused it",
            file=sys.stderr,
        )
        return EXIT_BUG


def _traceback_if(wanted: bool) -> None:
    if wanted:
        traceback.print_exc()


def _error(prog: str, message: str) -> int:
    try:
        print(f"{prog}: error: {message}", file=sys.stderr)
    except OSError:  # stderr itself is gone: the status still tells
        pass
    return EXIT_ERROR


def _quiet_broken_pipe() -> int:
    """Point stdout at /dev/null so Python's own flush at exit does not complain, then stop."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured in a test, closed)
        pass
    return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    debug = False

    def command() -> int | None:
        nonlocal debug
        from stablecnn.kernels import runtime

        args = build_parser().parse_args(argv)
        debug = getattr(args, "debug", False)
        runtime.configure()  # STABLECNN_NUM_THREADS or every CPU; see stablecnn.kernels.runtime
        return args.func(args)

    return run_command(command, debug=lambda: debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
