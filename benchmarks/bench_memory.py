"""Peak RSS of one ONNX Runtime call per batch size, with and without the CPU arena.

    python benchmarks/bench_memory.py [--batches 1,4,8,16] [--precision fp32] [--threads 2]

Each configuration runs in a fresh child process (peak RSS is a
per-process high-water mark): open the session, score ``--calls`` batches
of N real-speech-like windows in one ONNX Runtime call each, and report
the peak RSS and the growth over the idle session. The parent prints each
row against the batch-1 arena-off baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
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
    for _ in range(calls):
        scorer.scores(windows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"batch": batch, "arena": arena, "idle_mb": idle / 1024, "peak_mb": peak / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,4,8,16")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("BATCH", "ARENA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
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
    print(f"{'batch':>5s} {'arena':>5s} {'idle MB':>8s} {'peak MB':>8s} {'growth MB':>9s} {'x base':>7s}")
    for r in rows:
        growth = r["peak_mb"] - r["idle_mb"]
        print(
            f"{r['batch']:5d} {r['arena']!s:>5s} {r['idle_mb']:8.0f} {r['peak_mb']:8.0f} {growth:9.0f} "
            f"{r['peak_mb'] / base['peak_mb']:7.2f}"
        )


if __name__ == "__main__":
    main()
