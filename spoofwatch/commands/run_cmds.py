"""``spoofwatch run``: the main job on any machine (what ``make run`` starts).

With an audio input device it runs ``monitor`` on it. Without one (a server,
a CI box, a container) it runs ``serve`` on loopback instead and says why,
so the browser page (``GET /``) can stream a microphone or a file to it.
Either way the packaged weights make the first run work offline.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from spoofwatch.errors import DeviceError

from .common import add_precision_arg

#: Probe of the default input device: ``(name, native rate)`` or a DeviceError.
DeviceProbe = Callable[[], tuple[str, int]]


@dataclass(frozen=True)
class MainJob:
    command: Literal["monitor", "serve"]
    #: Why this job, in words for the person who typed ``make run``.
    reason: str


def default_input_probe() -> tuple[str, int]:
    from spoofwatch.stream.sources.mic import input_device_info

    return input_device_info(None)


def choose_main_job(probe: DeviceProbe = default_input_probe) -> MainJob:
    """``monitor`` when the default input device answers, else ``serve``."""
    try:
        name, rate = probe()
    except DeviceError as exc:
        return MainJob("serve", f"no microphone to listen to: {exc}")
    return MainJob("monitor", f"listening to the input device {name!r} ({rate} Hz)")


def register(sub: Any) -> None:
    from spoofwatch.constants import DEFAULT_MODEL, MODEL_NAMES
    from spoofwatch.stream.server.context import ServerConfig

    run = sub.add_parser(
        "run",
        help="the main job: monitor the microphone, or serve the browser page on loopback when there is none",
    )
    run.add_argument(
        "--model", default=DEFAULT_MODEL, choices=MODEL_NAMES, help=f"model (default {DEFAULT_MODEL})"
    )
    run.add_argument("--calibration", default=None, help="calibration TOML (default: the model's own)")
    add_precision_arg(run)
    run.add_argument(
        "--port",
        type=int,
        default=ServerConfig().port,
        help="port of the page when serving (default %(default)s; 0 picks a free one)",
    )
    run.set_defaults(func=cmd_run)


def _job_argv(job: MainJob, args: argparse.Namespace) -> list[str]:
    argv = [job.command, "--model", args.model, "--precision", args.precision]
    if args.calibration:
        argv += ["--calibration", str(args.calibration)]
    if job.command == "serve":
        argv += ["--host", "127.0.0.1", "--port", str(args.port)]
    return argv


def cmd_run(args: argparse.Namespace) -> int:
    from spoofwatch.cli import build_parser

    job = choose_main_job()
    if job.command == "serve":
        sys.stderr.write(
            f"spoofwatch run: {job.reason}\n"
            "spoofwatch run: serving on loopback instead; open the browser page printed below to stream "
            "a microphone or a file to it (Ctrl-C stops)\n"
        )
    else:
        sys.stderr.write(f"spoofwatch run: {job.reason}\n")
    sys.stderr.flush()
    job_args = build_parser().parse_args(_job_argv(job, args))
    return int(job_args.func(job_args) or 0)
