"""Peak RSS and speed of ONNX Runtime calls per batch size, with and without the CPU arena.

    python benchmarks/bench_memory.py [--batches 1,4,8,16] [--precision fp32] [--threads 2]

Each configuration runs in a fresh child process (peak RSS is a
per-process high-water mark): open the session, score ``--calls`` batches
of N real-speech-like windows in one ONNX Runtime call each, and report
the peak RSS, the growth over the idle session and windows/s over the calls
after the first. The parent prints each row against the batch-1 arena-off
baseline measured in the same run (children run one at a time, so machine
load affects the speed column; run it on an otherwise idle machine).
Without the arena every call takes its working memory from the OS afresh:
~33,000 page faults per window here, which is what the arena saves.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def child(batch: int, arena: bool, precision: str, threads: int, calls: int) -> None:
    import numpy as np

    from spoofwatch.model.export import ensure_onnx
    from spoofwatch.model.runtime import OnnxScorer, SessionLimits

    path = ensure_onnx("aasist-l", precision=precision)
    scorer = OnnxScorer(
        Path(path),
        "cpu",
        threads,
        max_batch_windows=batch,
        precision=precision,
        limits=SessionLimits(arena),  # type: ignore[arg-type]
    )
    windows = (0.1 * np.random.default_rng(0).standard_normal((batch, scorer.window_samples))).astype(
        np.float32
    )
    idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scorer.scores(windows)  # the first call: session set-up, untimed
    t0 = time.perf_counter()
    for _ in range(calls - 1):
        scorer.scores(windows)
    rate = (calls - 1) * batch / (time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {
        "batch": batch,
        "arena": arena,
        "idle_mb": idle / 1024,
        "peak_mb": peak / 1024,
        "windows_per_s": rate,
    }
    print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,4,8,16")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--calls", type=int, default=4, help="calls per configuration (>= 2: the first is untimed)"
    )
    parser.add_argument("--child", nargs=2, metavar=("BATCH", "ARENA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.calls < 2:
        parser.error("--calls must be at least 2: the first call is not timed")
    if args.child:
        child(int(args.child[0]), args.child[1] == "1", args.precision, args.threads, args.calls)
        return
    rows = []
    for arena in (False, True):
        for batch in (int(b) for b in args.batches.split(",")):
            cmd = [sys.executable, __file__, "--child", str(batch), str(int(arena))]
            cmd += ["--precision", args.precision, "--threads", str(args.threads), "--calls", str(args.calls)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    base = next(r for r in rows if r["batch"] == rows[0]["batch"] and not r["arena"])
    print(f"precision {args.precision}; peak RSS of one process scoring {args.calls} calls of N windows each")
    print(
        f"{'batch':>5s} {'arena':>5s} {'idle MB':>8s} {'peak MB':>8s} {'growth MB':>9s} {'x base':>7s}"
        f" {'win/s':>6s} {'x base':>7s}"
    )
    for r in rows:
        growth = r["peak_mb"] - r["idle_mb"]
        print(
            f"{r['batch']:5d} {r['arena']!s:>5s} {r['idle_mb']:8.0f} {r['peak_mb']:8.0f} {growth:9.0f} "
            f"{r['peak_mb'] / base['peak_mb']:7.2f} {r['windows_per_s']:6.2f} "
            f"{r['windows_per_s'] / base['windows_per_s']:7.2f}"
        )


if __name__ == "__main__":
    main()
