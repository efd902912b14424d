"""Live-engine capacity and detection delay, measured in one run.

    python benchmarks/bench_stream.py [--hop-s 0.5] [--threads 2]

1. Capacity: CPU time the engine spends per hop of one stream (VAD on the
   hop's audio + gate + one AASIST-L window), against the hop length. The
   ratio is how many concurrent real-time streams the machine sustains.
2. Delay: bona fide LA speech followed by spoofed LA speech (each repeated
   to several lengths), streamed through the engine; the time from spoof
   onset to ``alert_start``, median and p90.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from spoofwatch.audio import read_audio
from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.model.export import ensure_onnx
from spoofwatch.model.runtime import OnnxScorer
from spoofwatch.stream.driver import StreamDriver
from spoofwatch.stream.engine import build_engine
from spoofwatch.stream.gate import SileroVad

SHARED = Path(os.environ.get("SPOOFWATCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LA = SHARED / "data" / "asvspoof2019_la" / "flac"


def repeat_to(x: np.ndarray, n: int) -> np.ndarray:
    return np.tile(x, n // x.size + 1)[:n]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hop-s", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    cal = load_calibration(model="aasist-l")
    scorer = OnnxScorer(ensure_onnx("aasist-l"), device="cpu", threads=args.threads)
    vad = SileroVad()
    bona = read_audio(LA / "LA_T_1272637.flac")
    spoofs = [read_audio(LA / f"{u}.flac") for u in ("LA_T_1000137", "LA_D_1003356", "LA_E_6163791")]

    # 1. capacity: process 30 s of speech in 20 ms chunks, measure CPU time per hop.
    audio = repeat_to(bona, 30 * 16000)
    driver = StreamDriver(build_engine(cal.live, vad, args.hop_s))
    t0 = time.process_time()
    w0 = time.perf_counter()
    for pos in range(0, audio.size, 320):
        driver.feed(audio[pos : pos + 320], scorer)
    cpu = time.process_time() - t0
    wall = time.perf_counter() - w0
    hops = driver.engine.windows
    per_hop_cpu = cpu / hops
    per_hop_wall = wall / hops
    print(
        f"capacity: {hops} windows, CPU {1000 * per_hop_cpu:.1f} ms/hop, wall {1000 * per_hop_wall:.1f} ms/hop, hop {1000 * args.hop_s:.0f} ms"
    )
    print(
        f"  sustained real-time streams (hop / wall per hop, {args.threads} ORT threads): {args.hop_s / per_hop_wall:.1f}"
    )
    print(
        f"  sustained real-time streams (hop / CPU per hop, all {os.cpu_count()} cores): {os.cpu_count() * args.hop_s / per_hop_cpu:.1f}"
    )

    # 2. detection delay from spoof onset to alert_start.
    delays = []
    missed = 0
    for spoof in spoofs:
        for bona_s in (6.0, 7.3, 8.0, 9.1, 10.6):
            onset = int(bona_s * 16000)
            stream = np.concatenate([repeat_to(bona, onset), repeat_to(spoof, 10 * 16000)])
            driver = StreamDriver(build_engine(cal.live, vad, args.hop_s))
            events = [
                e for pos in range(0, stream.size, 320) for e in driver.feed(stream[pos : pos + 320], scorer)
            ]
            events += driver.close(scorer)
            starts = [e.t for e in events if e.type == "alert_start"]  # type: ignore[attr-defined]
            early = [t for t in starts if t <= bona_s]
            late = [t for t in starts if t > bona_s]
            if early:
                print(f"  false alert before onset at {early[0]:.2f} s (onset {bona_s} s)")
            if late:
                delays.append(late[0] - bona_s)
            else:
                missed += 1
    d = np.array(delays)
    print(
        f"detection delay over {len(d)} streams ({missed} missed): median {np.median(d):.2f} s, p90 {np.percentile(d, 90):.2f} s"
    )


if __name__ == "__main__":
    main()
