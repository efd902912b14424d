"""The ``spoofwatch`` command line. ``main(argv)`` is testable and returns an exit code.

Errors the library raises on purpose (:class:`SpoofwatchError`) become one
line on stderr and the exit code of their class (see ``spoofwatch.errors``);
Ctrl-C exits 130. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import SpoofwatchError

#: Sub-command modules, each with ``register(subparsers)``.
_COMMAND_MODULES = (
    "spoofwatch.commands.model_cmds",
    "spoofwatch.commands.stream_cmds",
    "spoofwatch.commands.server_cmds",
    "spoofwatch.commands.calibration_cmds",
    "spoofwatch.commands.training_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="spoofwatch",
        description="Real-time voice-deepfake detection with AASIST / AASIST-L. "
        "Scores are bona fide logits: higher means more genuine.",
    )
    parser.add_argument("--version", action="version", version=f"spoofwatch {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    try:
        return int(args.func(args) or 0)
    except SpoofwatchError as exc:
        sys.stderr.write(f"spoofwatch {args.command}: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
