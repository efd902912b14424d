"""``spoofwatch serve`` (WebSocket server) and ``send`` (reference client)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    add_model_args,
    add_scoring_args,
    incremental_reason,
    load_live_scoring,
    print_event,
)

if TYPE_CHECKING:
    from spoofwatch.stream.engine import LiveConfig
    from spoofwatch.stream.server.worker import WorkerSpec

log = logging.getLogger(__name__)

#: Environment variable holding the server token (keeps it out of the process list).
TOKEN_ENV = "SPOOFWATCH_TOKEN"
#: Environment variable with serve's default ``--webhook`` (chat webhooks carry a secret).
WEBHOOK_ENV = "SPOOFWATCH_WEBHOOK"
#: Environment variable with serve's default ``--model`` (the images set it from
#: their MODEL build argument, so that what was exported is what is served).
MODEL_ENV = "SPOOFWATCH_MODEL"


def register(sub: Any) -> None:
    from spoofwatch.constants import DEFAULT_MODEL
    from spoofwatch.stream.codecs import ENCODINGS
    from spoofwatch.stream.server.context import ServerConfig

    d = ServerConfig()
    serve = sub.add_parser(
        "serve", help="WebSocket server: native PCM protocol on /, Twilio Media Streams on /twilio"
    )
    add_model_args(serve)  # its --model defaults to $SPOOFWATCH_MODEL here (set_defaults below)
    serve.add_argument("--host", default=d.host, help=f"bind address (default {d.host}; others need --token)")
    serve.add_argument("--port", type=int, default=d.port)
    serve.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"require 'Authorization: Bearer T' or ?token=T (default: ${TOKEN_ENV})",
    )
    serve.add_argument(
        "--jsonl", type=Path, default=None, help="append every event (all streams) to this file"
    )
    serve.add_argument("--stdout", action="store_true", help="also print every event as a JSON line")
    serve.add_argument(
        "--webhook",
        default=os.environ.get(WEBHOOK_ENV) or None,
        metavar="URL",
        help=f"POST each alert event as JSON to this URL (default: ${WEBHOOK_ENV}, which keeps a "
        "secret URL out of the process list; logs name only its scheme and host)",
    )
    serve.add_argument("--max-streams", type=int, default=d.max_streams)
    serve.add_argument(
        "--ingest-threads",
        type=int,
        default=d.ingest_threads,
        help="threads per worker for resampling, VAD and windowing (default: anyio's shared pool of 40)",
    )
    serve.add_argument(
        "--ingest-tick-s",
        type=float,
        default=d.ingest_tick_s,
        help=f"seconds between the cuts of a worker's live streams, all at once with the VAD batched "
        f"(default {d.ingest_tick_s:g}; windows wait up to two ticks; longer ticks cost less CPU)",
    )
    serve.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes)
    serve.add_argument(
        "--max-batch-windows",
        type=int,
        default=d.max_batch_windows,
        help=f"windows (or incremental steps) of ready streams scored per ONNX Runtime call at most "
        f"(default {d.max_batch_windows}; calls on CUDA are split at the MaxPool cap; on CUDA a power "
        f"of two keeps the batch buckets' memory lowest)",
    )
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
        default=d.sink_queue_events,
        help="events each of --jsonl/--stdout/--webhook may hold while its consumer is slow; "
        "beyond that they are dropped and counted",
    )
    serve.add_argument(
        "--keep-live-windows",
        action="store_true",
        help="score every window of live streams instead of dropping stale ones (scores may then lag)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes sharing the port (default: one per 2 CPU cores); --max-streams is their total",
    )
    serve.add_argument(
        "--no-load-shedding",
        action="store_true",
        help="admit streams up to --max-streams even when scoring cannot keep up (default: refuse with 1013)",
    )
    serve.add_argument(
        "--prepare-only",
        action="store_true",
        help="export and check everything serve loads for these options (the ONNX graphs, the "
        "incremental graphs at the calibration's hop, the calibration) into the cache, then exit "
        "without serving: for image builds, whose cache the server cannot write",
    )
    add_scoring_args(serve)
    serve.set_defaults(func=cmd_serve, model=os.environ.get(MODEL_ENV) or DEFAULT_MODEL)

    send = sub.add_parser("send", help="stream a file to a spoofwatch server and print its events")
    send.add_argument("file", type=Path, metavar="FILE")
    send.add_argument("url", metavar="URL", help="e.g. ws://127.0.0.1:8765/")
    send.add_argument("--realtime", action="store_true", help="pace at 1x")
    send.add_argument("--encoding", default="pcm_s16le", choices=ENCODINGS)
    send.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"send 'Authorization: Bearer T' (default: ${TOKEN_ENV}, as serve reads it)",
    )
    send.set_defaults(func=cmd_send)


def cmd_serve(args: argparse.Namespace) -> int:
    from spoofwatch.stream.server.workers import interrupt_on_sigterm

    # Before any slow start-up work: as PID 1 (a container) SIGTERM is otherwise ignored.
    with interrupt_on_sigterm():
        return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from spoofwatch.stream.server.context import ServerConfig
    from spoofwatch.stream.server.sizing import default_workers, validate_workers
    from spoofwatch.stream.server.worker import WorkerSpec
    from spoofwatch.stream.server.workers import Supervisor

    config = ServerConfig(
        host=args.host,
        port=args.port,
        token=args.token,
        max_message_bytes=args.max_message_bytes,
        max_batch_windows=args.max_batch_windows,
        ingest_threads=args.ingest_threads,
        ingest_tick_s=args.ingest_tick_s,
        max_streams=args.max_streams,
        idle_timeout_s=args.idle_timeout_s,
        max_stream_duration_s=args.max_stream_duration_s,
        shutdown_grace_s=args.shutdown_grace_s,
        sink_queue_events=args.sink_queue_events,
        keep_live_windows=args.keep_live_windows,
    )
    if args.no_load_shedding:
        config = dataclasses.replace(config, shedding=None)
    # Before any worker loads the model: a refused config fails fast.
    config.validate()
    if args.webhook is not None:
        from spoofwatch.errors import ConfigError
        from spoofwatch.stream.server.sinks import check_webhook_url

        given = "--webhook" if os.environ.get(WEBHOOK_ENV) != args.webhook else f"${WEBHOOK_ENV}"
        try:
            check_webhook_url(args.webhook)
        except ConfigError as exc:
            raise ConfigError(f"{given}: {exc}") from None
    workers = default_workers(config.max_streams) if args.workers is None else args.workers
    validate_workers(workers, config.max_streams)
    from spoofwatch.model.runtime import resolve_device
    from spoofwatch.model.scorers import preflight

    preflight(args.model, args.precision, args.device, args.weights)
    if args.jsonl is not None and not args.prepare_only:
        # Each worker opens it; a bad path is one error here, not five crashes.
        from spoofwatch.stream.sinks import check_appendable

        check_appendable(args.jsonl)
    prepare_model(args)
    if args.prepare_only:
        log.info("prepared %s at %s for serve; not serving (--prepare-only)", args.model, args.precision)
        return 0
    spec = WorkerSpec(
        config,
        load_worker_model,
        model=args.model,
        device=args.device,
        gpu=resolve_device(args.device) == "cuda",
        threads=args.threads,
        weights=args.weights,
        calibration=args.calibration,
        precision=args.precision,
        jsonl=args.jsonl,
        stdout=args.stdout,
        webhook=args.webhook,
        log_level=logging.getLogger("spoofwatch").getEffectiveLevel(),
        full_windows=args.full_windows,
        load_live=load_worker_live,
    )
    return Supervisor(spec, workers).run()


def prepare_model(args: argparse.Namespace) -> None:
    """Export the ONNX graphs serve will load (full windows; incremental at the
    calibration's hop) and check the calibration: once here, not racing in
    every worker, and (``--prepare-only``) at image build time. A cache this
    user cannot write is one clear error (``paths.cache_unwritable``)."""
    from spoofwatch.paths import cache_unwritable, home_dir

    try:
        _prepare_model(args)
    except PermissionError as exc:  # making a cache folder (the model layer's mkdir)
        where = Path(str(exc.filename or ""))
        if not where.is_relative_to(home_dir()):
            raise  # not the cache's (a --weights or --calibration file): a bug to see whole
        raise cache_unwritable(where, exc) from None


def _prepare_model(args: argparse.Namespace) -> None:
    from spoofwatch.constants import WINDOW_SAMPLES
    from spoofwatch.model.card import is_card_reference
    from spoofwatch.model.detector import calibration_for
    from spoofwatch.model.export import ensure_onnx

    window_samples = WINDOW_SAMPLES
    if is_card_reference(args.model):
        from spoofwatch.model.card import load_card

        # The graph too (names, shapes, a probe call): a bad card is one error
        # here, not five worker deaths.
        window_samples = load_card(Path(args.model)).window_samples
    else:
        ensure_onnx(args.model, args.weights, args.precision)

    from spoofwatch.stream.engine import check_hop_fits

    cal = calibration_for(args.model, args.calibration, args.weights, args.precision)
    check_hop_fits(cal.live.stream, window_samples)
    hop_samples = cal.live.stream.hop_samples
    if incremental_reason(args.model, hop_samples, window_samples, args.precision, args.full_windows) is None:
        from spoofwatch.model.incremental import ensure_incremental_onnx

        ensure_incremental_onnx(args.model, hop_samples, args.weights, args.precision)


def load_worker_live(spec: WorkerSpec) -> LiveConfig:
    """The live settings without loading a model: for the supervisor's host-cost
    probe (``stream/server/selftest.py``). A model card's own window length is
    the workers' business; the probe times the calibration's."""
    from spoofwatch.model.detector import calibration_for

    return calibration_for(spec.model, spec.calibration, spec.weights, spec.precision).live


def load_worker_model(spec: WorkerSpec, threads: int) -> tuple[Any, LiveConfig, Any]:
    """Run in each worker process (``WorkerSpec.load_model``): its own scorer, the live
    config and the incremental model (``None``: full windows, the reason logged)."""
    from spoofwatch.model.detector import Detector

    device: Any = spec.device  # validated by serve's argument parser
    detector = Detector.load(spec.model, device, threads, spec.weights, spec.calibration, spec.precision)
    live = detector.live
    scoring = load_live_scoring(
        detector.scorer,
        spec.model,
        live.stream.hop_samples,
        detector.scorer.window_samples,
        device=spec.device,
        threads=threads,
        weights=spec.weights,
        precision=spec.precision,
        full_windows=spec.full_windows,
    )
    # On a GPU, open and run every batch bucket that live calls can use
    # (model/shapes.py) before the worker times itself: a live call must not
    # pay a session's set-up or a cuDNN plan build. Only the graphs that score
    # live windows: each warmed bucket keeps an arena. A no-op on the CPU.
    up_to = spec.config.max_batch_windows
    t0 = time.monotonic()
    if scoring.incremental is not None:
        warmed: Any = scoring.incremental.warm(up_to)
    else:
        warmed = detector.scorer.warm(up_to)
    if warmed:
        log.info("batch buckets opened and run once in %.1f s: %s", time.monotonic() - t0, warmed)
    return detector.scorer, live, scoring.incremental


#: ``send``'s exit status for a stream a server ended early and would take
#: again later (1013: at capacity or overloaded; 1001: shutting down):
#: sysexits' EX_TEMPFAIL, so that a script can tell "retry" from "refused".
SEND_RETRY_EXIT = 75
#: The close code a client sees when the connection ended without a close
#: frame (RFC 6455 7.1.5: never sent, only observed).
CONNECTION_LOST = 1006


def send_exit(close_code: int | None, reason: str = "") -> tuple[int, str]:
    """``send``'s exit status and a hint for a stream closed with ``close_code``
    and ``reason`` (not 1000): a retryable refusal, a lost connection (1006:
    no close frame, a network error) or the server refusing what was sent (a
    protocol error; 1001 for an idle stream too: the same stall would recur)."""
    from spoofwatch.errors import CloseCode, NetworkError, ProtocolError
    from spoofwatch.stream.server.drain import SHUTDOWN_REASON

    if close_code == CloseCode.TRY_AGAIN_LATER or (
        close_code == CloseCode.GOING_AWAY and reason == SHUTDOWN_REASON
    ):
        return SEND_RETRY_EXIT, " (retry later)"
    if close_code in (CONNECTION_LOST, None):
        return NetworkError.exit_code, " (the connection was lost)"
    return ProtocolError.exit_code, ""


def cmd_send(args: argparse.Namespace) -> int:
    import anyio

    from spoofwatch.audio import read_audio
    from spoofwatch.errors import CloseCode
    from spoofwatch.stream.client import send_audio

    audio = read_audio(args.file)
    result = anyio.run(
        lambda: send_audio(
            audio, args.url, args.encoding, args.realtime, args.token, print_event, stop_on_sigint=True
        )
    )
    if result.close_code != CloseCode.NORMAL:
        reason = result.close_reason or "no reason given"
        code, hint = send_exit(result.close_code, result.close_reason or "")
        sys.stderr.write(f"spoofwatch send: server closed with {result.close_code}: {reason}{hint}\n")
        return code
    if result.interrupted:  # Ctrl-C: the audio ended early, the server's summary was printed
        sys.stderr.write("interrupted: sent stop early\n")
        return 130
    return 0
