"""``spoofwatch stream`` (a file through the live engine) and ``monitor`` (microphone)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from spoofwatch.stream.events import Event

from .common import add_model_args, print_event


def register(sub: Any) -> None:
    stream = sub.add_parser("stream", help="feed a file through the live engine and print events")
    add_model_args(stream)
    stream.add_argument("--hop-s", type=float, default=None, help="override the calibration's hop")
    stream.add_argument(
        "--realtime", action="store_true", help="pace the file at 1x instead of as fast as possible"
    )
    stream.add_argument("--json", action="store_true", help="events as JSON lines")
    stream.add_argument("file", type=Path, metavar="FILE")
    stream.set_defaults(func=cmd_stream)

    monitor = sub.add_parser("monitor", help="live detection on a microphone")
    add_model_args(monitor, device_flag="--compute-device")
    monitor.add_argument(
        "--device",
        dest="input_device",
        default=None,
        metavar="ID",
        help="input device ID or name (see --list-devices)",
    )
    monitor.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    monitor.add_argument("--jsonl", type=Path, default=None, help="append events to this JSON-lines file")
    monitor.add_argument("--hop-s", type=float, default=None, help="override the calibration's hop")
    monitor.set_defaults(func=cmd_monitor)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from spoofwatch.model.detector import Detector
    from spoofwatch.stream.gate import SileroVad
    from spoofwatch.stream.runner import build_engine

    detector = Detector.load(args.model, args.device, args.threads, args.weights, args.calibration)
    engine = build_engine(detector.calibration, SileroVad(), args.hop_s)
    return detector, engine


def _emit(events: list[Event], as_json: bool) -> None:
    from spoofwatch.stream.sinks import format_event

    for event in events:
        data = event.to_json()
        if as_json:
            print_event(data)
        else:
            sys.stdout.write(format_event(data) + "\n")


def cmd_stream(args: argparse.Namespace) -> int:
    from spoofwatch.stream.runner import InlineRunner
    from spoofwatch.stream.sources.file import file_chunks

    chunks = file_chunks(
        args.file, realtime=args.realtime
    )  # decodes now: bad files fail before loading the model
    detector, engine = _load(args)
    runner = InlineRunner(engine, detector.scorer)
    for chunk in chunks:
        _emit(runner.feed(chunk), args.json)
    _emit(runner.close(), args.json)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from spoofwatch.stream.monitor import capture_status, run_monitor
    from spoofwatch.stream.runner import InlineRunner
    from spoofwatch.stream.sinks import JsonlSink, format_event, live_line
    from spoofwatch.stream.sources.mic import (
        MicrophoneSource,
        input_device_info,
        list_input_devices,
        parse_device,
    )

    if args.list_devices:
        devices = list_input_devices()
        for d in devices:
            sys.stdout.write(f"{d['id']:3d}  {d['name']}  ({d['channels']} ch, {d['rate_hz']:.0f} Hz)\n")
        if not devices:
            sys.stdout.write("no input devices found\n")
        return 0
    device = parse_device(args.input_device)
    name, rate = input_device_info(device)  # fails fast, before the model loads
    detector, engine = _load(args)
    source = MicrophoneSource(rate, device)
    runner = InlineRunner(engine, detector.scorer, drop_stale=True)
    sink = JsonlSink(args.jsonl) if args.jsonl else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sys.stderr.write(
        f"monitoring {name!r} at {rate} Hz with {args.model} on {detector.scorer.device}; Ctrl-C stops\n"
    )

    def on_events(events: list[Event]) -> None:
        for event in events:
            data = event.to_json()
            if sink:
                sink.write(data)
            if data["type"] == "score":
                sys.stderr.write("\r" + live_line(data, engine.policy.active) + "\x1b[K")
            else:
                sys.stderr.write("\r" + format_event(data) + "\x1b[K\n")
        sys.stderr.flush()

    try:
        closing = run_monitor(source, runner, on_events, stop)
    except KeyboardInterrupt:  # Ctrl-C: the capture is already stopped; summarise
        stop.set()
        closing = [*runner.close(), capture_status(source, runner)]
    on_events(closing)
    if sink:
        sink.close()
    return 0
