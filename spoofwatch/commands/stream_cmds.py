"""``spoofwatch stream`` (a file through the live engine) and ``monitor`` (microphone)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spoofwatch.stream.events import Event

from .common import (
    InterruptOnce,
    add_model_args,
    add_scoring_args,
    check_sink_wrote_all,
    load_live_scoring,
    print_event,
)

if TYPE_CHECKING:
    from spoofwatch.calibration.calfile import Calibration
    from spoofwatch.stream.engine import LiveConfig


def register(sub: Any) -> None:
    stream = sub.add_parser("stream", help="feed a file through the live engine and print events")
    add_model_args(stream)
    stream.add_argument("--hop-s", type=float, default=None, help="override the calibration's hop")
    stream.add_argument(
        "--realtime", action="store_true", help="pace the file at 1x instead of as fast as possible"
    )
    stream.add_argument("--json", action="store_true", help="events as JSON lines")
    add_scoring_args(stream)
    stream.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw score, smoothed score, thresholds, speech and alerts over time to this PNG",
    )
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
    add_scoring_args(monitor)
    monitor.set_defaults(func=cmd_monitor)


def _settings(args: argparse.Namespace) -> tuple[Calibration, LiveConfig]:
    """The calibration and engine settings, validated before any device, file or model is opened."""
    from dataclasses import replace

    from spoofwatch.model.detector import calibration_for
    from spoofwatch.model.scorers import preflight
    from spoofwatch.stream.engine import LiveConfig

    preflight(args.model, args.precision, args.device, args.weights)  # precision/device, card, cache
    cal = calibration_for(args.model, args.calibration, args.weights, args.precision)
    if args.hop_s is None:
        return cal, cal.live
    return cal, LiveConfig(replace(cal.stream, hop_s=args.hop_s), cal.gate, cal.policy)


def _load(args: argparse.Namespace, cal: Calibration, live: LiveConfig) -> tuple[Any, Any, Any]:
    """Detector, engine and the stream's window scorer (incremental unless ruled out)."""
    from dataclasses import replace

    from spoofwatch.model.detector import Detector
    from spoofwatch.stream.engine import build_engine
    from spoofwatch.stream.vad import SileroVad

    detector = Detector.load(args.model, args.device, args.threads, args.weights, cal, args.precision)
    # The engine cuts windows of the model's own length (a model card may declare its own).
    engine = build_engine(replace(live, window_samples=detector.scorer.window_samples), SileroVad())
    scoring = load_live_scoring(
        detector.scorer,
        args.model,
        engine.config.hop_samples,
        detector.scorer.window_samples,
        device=args.device,
        threads=args.threads,
        weights=args.weights,
        precision=args.precision,
        full_windows=args.full_windows,
    )
    return detector, engine, scoring.new_stream()


def _emit(events: list[Event], as_json: bool) -> None:
    from spoofwatch.stream.sinks import format_event

    for event in events:
        data = event.to_json()
        if as_json:
            print_event(data)
        else:
            sys.stdout.write(format_event(data) + "\n")


def cmd_stream(args: argparse.Namespace) -> int:
    # SIGTERM (`timeout`, a supervisor) ends as Ctrl-C does, from the start (a
    # signal while the model loads was a silent exit 143); a second signal
    # cannot cut off the closing events.
    with InterruptOnce((signal.SIGINT, signal.SIGTERM)):
        return _stream(args)


def _stream(args: argparse.Namespace) -> int:
    from spoofwatch.stream.driver import StreamDriver
    from spoofwatch.stream.events import ERROR, SHUTDOWN
    from spoofwatch.stream.sources.file import file_chunks

    cal, live = _settings(args)  # before any audio is read
    if args.plot:
        from spoofwatch.plots import prepare_plot_file

        prepare_plot_file(args.plot)
    chunks = file_chunks(
        args.file, realtime=args.realtime
    )  # decodes now: bad files fail before loading the model
    _, engine, scorer = _load(args, cal, live)
    driver = StreamDriver(engine)
    drawn: list[Event] = []

    def emit(events: list[Event]) -> None:
        drawn.extend(events if args.plot else [])
        _emit(events, args.json)

    try:
        for chunk in chunks:
            emit(driver.feed(chunk, scorer))
        emit(driver.close(scorer))
    except KeyboardInterrupt:  # flush and summarise what was heard, then exit 130
        emit(driver.close(scorer, SHUTDOWN))
        raise
    except Exception:  # bad audio mid-file, a model failure: an open alert ends, and the summary
        emit(driver.abort(ERROR))
        raise
    finally:
        if args.plot:
            _plot_stream(drawn, engine, args)
    return 0


def _plot_stream(events: list[Event], engine: Any, args: argparse.Namespace) -> None:
    from spoofwatch.plots import plot_timeline

    policy = engine.policy.config
    title = f"{args.file.name} ({args.model})"
    plot_timeline(
        [e.to_json() for e in events], policy.enter_threshold, policy.exit_threshold, args.plot, title
    )
    sys.stderr.write(f"wrote {args.plot}\n")


def cmd_monitor(args: argparse.Namespace) -> int:
    from spoofwatch.stream.driver import StreamDriver
    from spoofwatch.stream.monitor import monitor
    from spoofwatch.stream.sinks import JsonlSink, check_appendable, format_event, live_line
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
    cal, live = _settings(args)
    device = parse_device(args.input_device)
    name, rate = input_device_info(device)  # fails fast, before the model loads
    if args.jsonl:
        check_appendable(args.jsonl)
    detector, engine, scorer = _load(args, cal, live)
    source = MicrophoneSource(rate, device)
    driver = StreamDriver(engine, rate, drop_stale=True, incremental=scorer.mode == "incremental")
    sink = JsonlSink(args.jsonl) if args.jsonl else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # a service's normal stop: exit 0
    sys.stderr.write(
        f"monitoring {name!r} at {rate} Hz with {args.model} on {detector.scorer.device} "
        f"({scorer.mode} windows); Ctrl-C stops\n"
    )

    # The updating score line is for a terminal; redirected (a log file, a
    # service), stderr gets the other events as plain lines, no escape codes.
    terminal = sys.stderr.isatty()

    def on_events(events: list[Event]) -> None:
        for event in events:
            data = event.to_json()
            if sink:
                sink.write(data)
            if data["type"] == "score":
                if terminal:
                    sys.stderr.write("\r" + live_line(data, engine.policy.active) + "\x1b[K")
            elif terminal:
                sys.stderr.write("\r" + format_event(data) + "\x1b[K\n")
            else:
                sys.stderr.write(format_event(data) + "\n")
        sys.stderr.flush()

    # Ctrl-C ends the capture with its closing events (a second one cannot cut
    # them off) and exits 130, as in every command.
    with InterruptOnce() as interrupt:
        try:
            monitor(source, driver, scorer, on_events, stop)
        finally:
            if sink:
                sink.close()
        if sink:
            check_sink_wrote_all(sink)
    return 130 if interrupt.received is not None else 0
