"""Is another CPU runtime the lever for issue 15's 30-minute LA dev goal?

    pip install openvino   # not a dependency of spoofwatch
    python benchmarks/bench_cpu_runtimes.py [--threads 2] [--rounds 3] [--json]

LA dev's 24,844 files in 30 minutes need ~13.8 windows/s (one official window
per file). ONNX Runtime FP32 gives ~8 here, and its INT8 graph no more
(README, "Reduced precision"): its integer convolutions are faster, but
layout reorders around every SELU eat the gain. OpenVINO compiles the same
ONNX files with its own fusions and can run BF16 arithmetic where the CPU
has it (AVX512-BF16, AMX). This scores the same windows with:

* ONNX Runtime FP32 (the baseline, run in the same process);
* OpenVINO FP32 and BF16 (the FP32 file, precision hint);
* OpenVINO INT8 (the QDQ file ``export --precision int8`` writes, reshaped
  to a fixed batch: its dynamic batch does not compile).

Each is timed as throughput (two requests in flight, ``--threads`` threads
in all), rounds interleaved so machine load hits them alike, and compared
with ONNX Runtime FP32 on real speech windows from ``../shared`` (max and
median |Δ bona fide logit|, decisions flipped at the default threshold).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precision import export_precision_cached, speech_windows

from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.constants import WINDOW_SAMPLES
from spoofwatch.model.export import ensure_onnx
from spoofwatch.model.runtime import OnnxScorer

#: Windows per timed round.
ROUND_WINDOWS = 16
#: Requests OpenVINO keeps in flight (throughput mode, one per core here).
IN_FLIGHT = 2


def openvino_runner(path: Path, precision_hint: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """Score windows one per request, ``IN_FLIGHT`` requests at a time."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({0: [1, WINDOW_SAMPLES]})
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "THROUGHPUT",
            "NUM_STREAMS": IN_FLIGHT,
            "INFERENCE_PRECISION_HINT": precision_hint,
        },
    )
    queue = ov.AsyncInferQueue(compiled, IN_FLIGHT)

    def run(windows: np.ndarray) -> np.ndarray:
        out = np.empty(len(windows), np.float32)

        def done(request: Any, row: int) -> None:
            out[row] = request.get_output_tensor(0).data[0, 1]  # [spoof, bonafide]

        queue.set_callback(done)
        for row in range(len(windows)):
            queue.start_async({0: windows[row : row + 1]}, row)
        queue.wait_all()
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="aasist-l")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import openvino
    except ImportError:
        sys.exit("this benchmark compares against OpenVINO: pip install openvino")
    shared = Path(os.environ.get("SPOOFWATCH_SHARED", "../shared"))
    threshold = load_calibration(None, model=args.model).verdict_threshold
    fp32, int8 = ensure_onnx(args.model), export_precision_cached(args.model, "int8")
    baseline = OnnxScorer(fp32, "cpu", args.threads)
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "onnxruntime fp32": baseline.scores,
        "openvino fp32": openvino_runner(fp32, "f32", args.threads),
        "openvino bf16": openvino_runner(fp32, "bf16", args.threads),
        "openvino int8": openvino_runner(int8, "f32", args.threads),
    }
    speech = speech_windows(shared, per_file=1)
    batch = speech[:ROUND_WINDOWS]
    timing: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        run(batch[:IN_FLIGHT])  # warm-up
    for _ in range(args.rounds):
        for name, run in runners.items():  # interleaved
            t0 = time.perf_counter()
            run(batch)
            timing[name].append(len(batch) / (time.perf_counter() - t0))
    ref = baseline.scores(speech)
    rows = []
    for name, run in runners.items():
        scores = run(speech)
        delta = np.abs(scores - ref)
        rows.append(
            {
                "runtime": name,
                "windows_per_s": float(np.median(timing[name])),
                "max_abs_delta": float(delta.max()),
                "median_abs_delta": float(np.median(delta)),
                "flips": int(np.sum((scores >= threshold) != (ref >= threshold))),
                "windows_compared": int(delta.size),
            }
        )
    base = rows[0]["windows_per_s"]
    if args.json:
        for row in rows:
            print(json.dumps({**row, "x_onnxruntime_fp32": row["windows_per_s"] / base}))
        return
    print(f"OpenVINO {openvino.__version__}; {args.threads} threads; {len(speech)} speech windows compared")
    print(f"{'runtime':17s} {'win/s':>6s} {'x ort':>6s} {'max|Δ|':>8s} {'med|Δ|':>8s} {'flips':>9s}")
    for r in rows:
        print(
            f"{r['runtime']:17s} {r['windows_per_s']:6.2f} {r['windows_per_s'] / base:6.2f} "
            f"{r['max_abs_delta']:8.4f} {r['median_abs_delta']:8.4f} {r['flips']:4d}/{r['windows_compared']}"
        )


if __name__ == "__main__":
    main()
