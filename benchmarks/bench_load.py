"""Concurrent real-time streams through the WebSocket server (moved out of the
test suite: it measures speed, which tests must not assert).

    python benchmarks/bench_load.py [--streams 16] [--seconds 32] [--threads 2]

N clients stream bona fide then spoofed LA speech paced at 1x to one
in-process server on loopback. Prints windows, dropped windows, batches
(mean windows per ONNX Runtime call) and the delay from a window's end in
stream time to the arrival of its score event (p50, p99), next to the same
figures for a single stream in the same process as the baseline.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from spoofwatch.audio import read_audio
from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.model.export import ensure_onnx
from spoofwatch.model.runtime import OnnxScorer
from spoofwatch.stream.client import send_audio
from spoofwatch.stream.server.app import WebSocketServer
from spoofwatch.stream.server.batcher import BatchScorer
from spoofwatch.stream.server.context import ServerConfig, ServerContext
from spoofwatch.stream.server.sinks import ServerSinks
from spoofwatch.stream.vad import SileroVad

SHARED = Path(os.environ.get("SPOOFWATCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LA = SHARED / "data" / "asvspoof2019_la" / "flac"


async def run_load(
    scorer: Any, vad: Any, audio: np.ndarray, n_streams: int, sinks_dir: Path
) -> dict[str, float]:
    ctx = ServerContext(
        ServerConfig(host="127.0.0.1", port=0),
        BatchScorer(scorer),
        load_calibration(model="aasist-l").live,
        vad,
        ServerSinks(jsonl=sinks_dir / f"events_{n_streams}.jsonl"),
    )
    results: list[Any] = []
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(WebSocketServer(ctx).run)

            async def one() -> None:
                results.append(await send_audio(audio, f"ws://127.0.0.1:{port}/", realtime=True))

            async with anyio.create_task_group() as clients:
                for _ in range(n_streams):
                    clients.start_soon(one)
            tg.cancel_scope.cancel()
    finally:
        ctx.sinks.close()
    delays, dropped, windows = [], 0, 0
    for r in results:
        summary = r.events[-1]
        dropped += summary["dropped_windows"]
        windows += summary["windows"]
        for event, at in zip(r.events, r.received_at, strict=True):
            if event["type"] == "score" and event["score"] is not None:
                delays.append(at - (r.started_at + event["t_end"]))
    d = np.array(delays) if delays else np.zeros(1)
    return {
        "windows": windows,
        "dropped": dropped,
        "batches": ctx.batcher.batches,
        "mean_batch": ctx.batcher.windows / max(ctx.batcher.batches, 1),
        "p50": float(np.median(d)),
        "p99": float(np.percentile(d, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=32.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    scorer = OnnxScorer(ensure_onnx("aasist-l"), device="cpu", threads=args.threads)
    vad = SileroVad()
    bona = read_audio(LA / "LA_T_1272637.flac")
    spoof = read_audio(LA / "LA_T_1000137.flac")
    n = int(args.seconds * 16000)
    audio = np.concatenate([np.tile(bona, 8)[: n // 2], np.tile(spoof, 8)[: n - n // 2]]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        base = anyio.run(run_load, scorer, vad, audio, 1, Path(tmp))
        load = anyio.run(run_load, scorer, vad, audio, args.streams, Path(tmp))
    for name, r in (("1 stream (baseline)", base), (f"{args.streams} streams", load)):
        print(
            f"{name:22s} windows {r['windows']:5.0f}  dropped {r['dropped']:5.0f} "
            f"({100 * r['dropped'] / max(r['windows'], 1):4.1f} %)  batches {r['batches']:5.0f} "
            f"(mean {r['mean_batch']:.1f})  delay p50 {r['p50']:.2f} s  p99 {r['p99']:.2f} s"
        )
    print(f"p99 delay ratio {args.streams} streams / 1 stream: {load['p99'] / max(base['p99'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
