"""Where a serve worker's GPU memory goes, and what one shared arena saves.

    python benchmarks/gpu_memory.py [--device cuda] [--precision fp16] [--max-batch-windows 32]
                                    [--streams 64] [--hops 4] [--json]

On an H100 a serve worker held ~7.9 GB before its first stream (8 workers:
63 GB), so 8-9 workers fit and the box's CPU cores went unused
(docs/scaling.md). Each batch bucket (model/shapes.py) is a session with
its own arena, so the arenas together hold every bucket's activations. This
loads the incremental graphs as a worker does (``load_worker_model``: both
graphs, every bucket up to ``--max-batch-windows`` opened and run once),
then steps ``--streams`` streams of real speech for ``--hops`` hops, in a
fresh child process per arena mode (``SessionLimits.shared_arena`` off and
on), and reports the process's memory after each phase:

* on CUDA, the GPU memory of the child (``nvidia-smi``'s per-process figure);
* on the CPU (a dry run of the script; buckets forced on), the resident set.

The two modes' scores of the same windows are compared (max |Δ|): sharing
an arena must not change a digit. Needs ``$SPOOFWATCH_SHARED`` for speech.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

PHASES = ("opened", "warmed", "streams")


def used_mb(device: str) -> float:
    """This process's memory on ``device``: GPU memory on CUDA, resident set on the CPU."""
    if device == "cuda":
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows = [line.split(",") for line in out.strip().splitlines() if line.strip()]
        return float(sum(float(mb) for pid, mb in rows if int(pid) == os.getpid()))
    with open("/proc/self/status", encoding="ascii") as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return kb / 1024


def child(args: argparse.Namespace, shared: bool) -> dict[str, Any]:
    from gpu_checks import speech_streams

    from spoofwatch.constants import LIVE_HOP_SAMPLES, WINDOW_SAMPLES
    from spoofwatch.model.config import load_model_config
    from spoofwatch.model.incremental import ensure_incremental_onnx, plan_for
    from spoofwatch.model.incremental_runtime import IncrementalModel
    from spoofwatch.model.runtime import SessionLimits

    hop = LIVE_HOP_SAMPLES
    plan = plan_for(load_model_config(args.model), hop)
    paths = ensure_incremental_onnx(args.model, hop, None, args.precision)
    memory: dict[str, float] = {}
    model = IncrementalModel(
        paths,
        plan,
        args.device,
        threads=1,
        batch_streams=True,
        shape_buckets=True,  # as on CUDA; forced on the CPU
        limits=SessionLimits(shared_arena=shared),
    )
    memory["opened"] = used_mb(args.device)
    warmed = model.warm(args.max_batch_windows)
    memory["warmed"] = used_mb(args.device)
    seconds = (WINDOW_SAMPLES + args.hops * hop) / 16_000 + 0.1
    audio = speech_streams(Path(os.environ.get("SPOOFWATCH_SHARED", "../shared")), args.streams, seconds)
    streams = [model.open_stream() for _ in audio]
    scores: list[float] = []
    for k in range(args.hops + 1):
        start = k * hop
        windows = [(start, a[start : start + WINDOW_SAMPLES]) for a in audio]
        scores += model.score(streams, windows)
    memory["streams"] = used_mb(args.device)
    return {"shared_arena": shared, "memory_mb": memory, "warmed": warmed, "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="aasist-l")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--max-batch-windows", type=int, default=32, help="serve --max-batch-windows")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--hops", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=("0", "1"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args, args.child == "1")))
        return
    rows = []
    for shared in ("0", "1"):  # each in a fresh process: memory is per process
        cmd = [sys.executable, __file__, "--child", shared, *sys.argv[1:]]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    delta = float(np.max(np.abs(np.array(rows[0]["scores"]) - np.array(rows[1]["scores"]))))
    unit = "GPU MB" if args.device == "cuda" else "RSS MB"
    if args.json:
        for row in rows:
            print(json.dumps({k: v for k, v in row.items() if k != "scores"} | {"max_abs_delta": delta}))
        return
    print(
        f"{args.model} {args.precision} on {args.device}; buckets up to {args.max_batch_windows}: "
        f"{rows[0]['warmed']}; {args.streams} streams x {args.hops + 1} windows"
    )
    print(f"{'arena':12s} " + " ".join(f"{p + ' ' + unit:>17s}" for p in PHASES))
    for row in rows:
        name = "shared" if row["shared_arena"] else "per session"
        print(f"{name:12s} " + " ".join(f"{row['memory_mb'][p]:17.0f}" for p in PHASES))
    ratios = [rows[1]["memory_mb"][p] / rows[0]["memory_mb"][p] for p in PHASES]
    print(f"{'shared / per':12s} " + " ".join(f"{r:17.2f}" for r in ratios))
    print(f"max |Δ score| between the modes: {delta:.3g}")


if __name__ == "__main__":
    main()
