"""The ``spoofwatch`` command line. ``main(argv)`` is testable and returns an exit code.

Errors the library raises on purpose (:class:`SpoofwatchError`) become one
line on stderr and the exit code of their class (see ``spoofwatch.errors``);
Ctrl-C exits 130. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from . import __version__
from .errors import SinkError, SpoofwatchError
from .paths import shown

#: Sub-command modules, each with ``register(subparsers)``.
_COMMAND_MODULES = (
    "spoofwatch.commands.model_cmds",
    "spoofwatch.commands.stream_cmds",
    "spoofwatch.commands.server_cmds",
    "spoofwatch.commands.calibration_cmds",
    "spoofwatch.commands.training_cmds",
    "spoofwatch.commands.run_cmds",
    "spoofwatch.commands.corpus_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="spoofwatch",
        description="Real-time voice-deepfake detection with AASIST / AASIST-L. "
        "Scores are bona fide logits: higher means more genuine.",
    )
    parser.add_argument("--version", action="version", version=f"spoofwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class _GuardedStdout:
    """``sys.stdout`` while a command runs: a write that fails (a full disk, an
    I/O error; not a reader gone away, which ``main`` ends quietly) is a
    :class:`SinkError`, one line and exit 10 as for ``--jsonl``, not a
    traceback that a caller would read as exit 1 ("some files failed").
    Standard output then points at /dev/null, so that the flush at exit
    does not fail again."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _failed(self, exc: OSError) -> SinkError:
        # No descriptor (a test's capture): nothing to redirect.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        return SinkError(f"cannot write to standard output: {exc.strerror or exc}")

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._failed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    try:  # building the parser imports every command module: seconds, and Ctrl-C may come
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    # spoofwatch's own INFO lines (the provider in use, files written) show by
    # default; other libraries only speak up for warnings.
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    own = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.getLogger("spoofwatch").setLevel(own)
    stdout, sys.stdout = sys.stdout, _GuardedStdout(sys.stdout)  # type: ignore[assignment]
    try:
        code = int(args.func(args) or 0)
        # Through the guard: output still buffered (a short table) would
        # otherwise fail at the interpreter's exit flush, as a traceback.
        sys.stdout.flush()
        return code
    except SpoofwatchError as exc:
        sys.stderr.write(f"spoofwatch {args.command}: error: {shown(exc)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        # Whoever read our output went away (`spoofwatch stream ... | head`): stop
        # quietly, as Unix tools do. Point stdout at /dev/null so that the final
        # flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        sys.stdout = stdout
