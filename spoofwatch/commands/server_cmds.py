"""``spoofwatch serve`` (WebSocket server) and ``send`` (reference client)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spoofwatch.errors import InputError

from .common import add_model_args, print_event


def register(sub: Any) -> None:
    from spoofwatch.stream.server.codecs import ENCODINGS
    from spoofwatch.stream.server.context import ServerConfig
    from spoofwatch.stream.sinks import SINK_QUEUE_EVENTS

    d = ServerConfig()
    serve = sub.add_parser(
        "serve", help="WebSocket server: native PCM protocol on /, Twilio Media Streams on /twilio"
    )
    add_model_args(serve)
    serve.add_argument("--host", default=d.host, help=f"bind address (default {d.host}; others need --token)")
    serve.add_argument("--port", type=int, default=d.port)
    serve.add_argument("--token", default=None, help="require 'Authorization: Bearer T' or ?token=T")
    serve.add_argument(
        "--jsonl", type=Path, default=None, help="append every event (all streams) to this file"
    )
    serve.add_argument("--stdout", action="store_true", help="also print every event as a JSON line")
    serve.add_argument(
        "--webhook", default=None, metavar="URL", help="POST each alert event as JSON to this URL"
    )
    serve.add_argument("--max-streams", type=int, default=d.max_streams)
    serve.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes)
    serve.add_argument("--idle-timeout-s", type=float, default=d.idle_timeout_s)
    serve.add_argument("--max-stream-duration-s", type=float, default=d.max_stream_duration_s)
    serve.add_argument(
        "--shutdown-grace-s",
        type=float,
        default=d.shutdown_grace_s,
        help="on SIGTERM/SIGINT, seconds to let streams flush before cutting them",
    )
    serve.add_argument(
        "--sink-queue-events",
        type=int,
        default=SINK_QUEUE_EVENTS,
        help="events each of --jsonl/--stdout/--webhook may hold while its consumer is slow; "
        "beyond that they are dropped and counted",
    )
    serve.set_defaults(func=cmd_serve)

    send = sub.add_parser("send", help="stream a file to a spoofwatch server and print its events")
    send.add_argument("file", type=Path, metavar="FILE")
    send.add_argument("url", metavar="URL", help="e.g. ws://127.0.0.1:8765/")
    send.add_argument("--realtime", action="store_true", help="pace at 1x")
    send.add_argument("--encoding", default="pcm_s16le", choices=ENCODINGS)
    send.add_argument("--token", default=None)
    send.set_defaults(func=cmd_send)


def cmd_serve(args: argparse.Namespace) -> int:
    import anyio

    from spoofwatch.model.detector import Detector
    from spoofwatch.stream.gate import SileroVad
    from spoofwatch.stream.server.app import WebSocketServer
    from spoofwatch.stream.server.batcher import BatchScorer
    from spoofwatch.stream.server.context import ServerConfig, ServerContext
    from spoofwatch.stream.server.sinks import ServerSinks

    config = ServerConfig(
        host=args.host,
        port=args.port,
        token=args.token,
        max_message_bytes=args.max_message_bytes,
        max_streams=args.max_streams,
        idle_timeout_s=args.idle_timeout_s,
        max_stream_duration_s=args.max_stream_duration_s,
        shutdown_grace_s=args.shutdown_grace_s,
    )
    config.validate()  # before loading the model: a refused config fails fast
    detector = Detector.load(args.model, args.device, args.threads, args.weights, args.calibration)
    if args.sink_queue_events < 1:
        raise InputError(f"--sink-queue-events: expected >= 1, got {args.sink_queue_events}")
    sinks = ServerSinks(args.jsonl, args.stdout, args.webhook, args.sink_queue_events)
    ctx = ServerContext(
        config,
        BatchScorer(detector.scorer, config.max_batch_windows),
        detector.calibration,
        SileroVad(),
        sinks,
    )
    sys.stderr.write(
        f"serving {args.model} on ws://{config.host}:{config.port}/ and /twilio ({detector.scorer.device}); Ctrl-C or SIGTERM drains and stops\n"
    )
    try:
        anyio.run(WebSocketServer(ctx, handle_signals=True).run)
    finally:
        sinks.close()
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    import anyio

    from spoofwatch.audio import read_audio
    from spoofwatch.stream.client import send_audio

    audio = read_audio(args.file)
    result = anyio.run(
        lambda: send_audio(audio, args.url, args.encoding, args.realtime, args.token, print_event)
    )
    if result.close_code != 1000:
        sys.stderr.write(f"spoofwatch send: server closed with {result.close_code}: {result.close_reason}\n")
        return 6
    return 0
