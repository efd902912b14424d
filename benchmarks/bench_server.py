"""WebSocket server load: N real-time streams on loopback, incremental against full windows.

    python benchmarks/bench_server.py [--streams 16] [--seconds 32] [--full-windows] [--json]

Each stream sends real speech paced at 1x through the native protocol; the
server scores with the calibration's hop (incremental unless
``--full-windows``). Prints dropped windows (a live server drops stale ones
when it falls behind) and the delay from a window's end to its score event.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from bench_stream import speech

from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.model.export import ensure_onnx
from spoofwatch.model.incremental_runtime import load_incremental
from spoofwatch.model.runtime import OnnxScorer
from spoofwatch.stream.client import send_audio
from spoofwatch.stream.gate import SileroVad
from spoofwatch.stream.server.app import WebSocketServer
from spoofwatch.stream.server.batcher import BatchScorer
from spoofwatch.stream.server.context import ServerConfig, ServerContext
from spoofwatch.stream.server.sinks import ServerSinks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="aasist-l", choices=("aasist-l", "aasist"))
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=32.0)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--full-windows", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    cal = load_calibration(model=args.model)
    full = OnnxScorer(ensure_onnx(args.model), device="cpu", threads=args.threads)
    inc = (
        None
        if args.full_windows
        else load_incremental(args.model, cal.stream.hop_samples, "cpu", args.threads)
    )
    audios = [speech(args.seconds, first_clip=3 * i) for i in range(args.streams)]
    results: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        sinks = ServerSinks(jsonl=Path(tmp) / "events.jsonl")
        config = ServerConfig(host="127.0.0.1", port=0, max_streams=max(32, args.streams))
        ctx = ServerContext(config, BatchScorer(full, incremental=inc), cal, SileroVad(), sinks)

        async def run() -> None:
            async with anyio.create_task_group() as tg:
                port = await tg.start(WebSocketServer(ctx).run)

                async def one(audio: np.ndarray) -> None:
                    results.append(await send_audio(audio, f"ws://127.0.0.1:{port}/", "f32le", realtime=True))

                async with anyio.create_task_group() as clients:
                    for audio in audios:
                        clients.start_soon(one, audio)
                tg.cancel_scope.cancel()

        try:
            anyio.run(run)
        finally:
            sinks.close()
    windows = dropped = 0
    delays = []
    for r in results:
        summary = r.events[-1]
        windows += summary["windows"]
        dropped += summary["dropped_windows"]
        for event, at in zip(r.events, r.received_at, strict=True):
            if event["type"] == "score" and event["score"] is not None:
                delays.append(at - (r.started_at + event["t_end"]))
    d = np.array(delays)
    out = {
        "model": args.model,
        "scoring": "full" if inc is None else "incremental",
        "hop_samples": cal.stream.hop_samples,
        "streams": args.streams,
        "seconds": args.seconds,
        "windows": windows,
        "dropped_windows": dropped,
        "delay_p50_s": float(np.median(d)) if d.size else None,
        "delay_p99_s": float(np.percentile(d, 99)) if d.size else None,
    }
    if args.json:
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        sys.stdout.write(
            f"{out['streams']} streams x {out['seconds']:.0f} s at 1x, {out['scoring']} windows "
            f"(hop {out['hop_samples']} = {out['hop_samples'] / SAMPLE_RATE_HZ:.4f} s): {windows} windows, "
            f"{dropped} dropped ({100 * dropped / max(windows, 1):.1f} %); window end -> score event "
            f"p50 {out['delay_p50_s']:.2f} s, p99 {out['delay_p99_s']:.2f} s\n"
        )


if __name__ == "__main__":
    main()
