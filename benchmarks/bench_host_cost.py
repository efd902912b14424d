"""What a serve worker spends outside the model per second of stream audio.

    python benchmarks/bench_host_cost.py --streams 32 --seconds 20 --frame-ms 100 [--profile]

On an H100 (docs/scaling.md) the GPU steps ~2,000 windows/s per worker, but
each worker's Python (event loop and ingest threads, one at a time under
the GIL) handled only ~40 real-time streams: the host, not the model,
bounds a GPU box. This measures that cost on any machine, with no GPU:

* one worker's server in this process (the real ``WebSocketServer``, real
  silero VAD, the calibrated engine), its model replaced by an instant
  stand-in, so that only what surrounds the model is timed;
* one client process sending N real-time streams of real speech
  (LibriSpeech test-other from ../shared) over loopback WebSockets, paced at
  1x in ``--frame-ms`` frames (``bench_server.py``'s client);
* CPU time per second of audio received, split into the ingest threads
  (resampling, VAD, windows; what admission control times at start-up)
  and the event-loop thread (frames, protocol, events, tasks), and the
  whole process. Thread CPU time: another program loading the machine
  slows the run, not the figures.

It prints the live figures against the start-up probe that admission
control starts from (``selftest.measure_host_cost``), run in the same
process, as a ratio. ``--profile``
adds the event loop's cProfile, the costliest functions first.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import client_main


def build_ctx(streams: int, ingest_tick_s: float | None = None) -> Any:
    """One worker's server as serve builds it, model replaced by an instant stand-in."""
    from spoofwatch.calibration.calfile import load_calibration
    from spoofwatch.stream.server.context import ServerConfig
    from spoofwatch.stream.server.selftest import probe_context
    from spoofwatch.stream.vad import SileroVad

    live = load_calibration(model="aasist-l").live
    config = ServerConfig() if ingest_tick_s is None else ServerConfig(ingest_tick_s=ingest_tick_s)
    return probe_context(live, SileroVad(), config, streams)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from spoofwatch.stream.server.app import WebSocketServer
    from spoofwatch.stream.server.selftest import measure_host_cost

    ctx = build_ctx(args.streams, args.ingest_tick_s)
    # What admission control starts from (the supervisor's probe), in this process.
    startup = measure_host_cost(ctx.live, ctx.vad, ctx.config)
    profiler = cProfile.Profile() if args.profile else None
    out: dict[str, Any] = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(WebSocketServer(ctx).run)
            mp = multiprocessing.get_context("spawn")
            results: Any = mp.Queue()
            offsets = [7.0 * i for i in range(args.streams)]
            client = mp.Process(
                target=client_main,
                args=(
                    f"ws://127.0.0.1:{port}/",
                    offsets,
                    args.seconds,
                    time.time() + 3.0,
                    args.frame_ms,
                    results,
                ),
            )
            client.start()
            host = ctx.load.host
            ingest0, audio0 = host.totals()
            loop0, process0 = time.thread_time(), time.process_time()
            if profiler is not None:
                profiler.enable()
            got = await anyio.to_thread.run_sync(results.get, True, args.seconds + 120)
            streams = got["streams"]
            if profiler is not None:
                profiler.disable()
            loop1, process1 = time.thread_time(), time.process_time()
            ingest1, audio1 = host.totals()
            await anyio.to_thread.run_sync(client.join)
            audio_s = audio1 - audio0
            out.update(
                streams=args.streams,
                frame_ms=args.frame_ms,
                completed=sum(s["close_code"] == 1000 for s in streams),
                audio_s=round(audio_s, 1),
                startup_probe_ms_per_audio_s=round(1e3 * startup, 2),
                ingest_ms_per_audio_s=round(1e3 * (ingest1 - ingest0) / audio_s, 2),
                event_loop_ms_per_audio_s=round(1e3 * (loop1 - loop0) / audio_s, 2),
                process_ms_per_audio_s=round(1e3 * (process1 - process0) / audio_s, 2),
                client_ms_per_audio_s=round(1e3 * got["cpu_s"] / audio_s, 2),
            )
            live = (ingest1 - ingest0 + loop1 - loop0) / audio_s
            out["host_cost_ms_per_audio_s"] = round(1e3 * live, 2)
            out["ratio_live_to_startup"] = round(live / startup, 2)
            tg.cancel_scope.cancel()

    anyio.run(main)
    ctx.sinks.close()
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.profile_lines)
        out["profile"] = text.getvalue()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per stream, sent at 1x")
    parser.add_argument("--frame-ms", type=int, default=100)
    parser.add_argument("--ingest-tick-s", type=float, default=None, help="serve --ingest-tick-s")
    parser.add_argument("--profile", action="store_true", help="the event loop's cProfile")
    parser.add_argument("--profile-lines", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.streams < 1 or args.seconds < 5 or args.frame_ms < 1:
        parser.error("expected --streams >= 1, --seconds >= 5 and --frame-ms >= 1")
    report = run(args)
    profile = report.pop("profile", None)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        for key, value in report.items():
            sys.stdout.write(f"{key}: {value}\n")
    if profile is not None:
        sys.stdout.write(profile)


if __name__ == "__main__":
    main()
