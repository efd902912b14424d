"""Per-window latency of AASIST-L in PyTorch and ONNX Runtime, measured in one run.

    python benchmarks/bench_model.py [--model aasist-l] [--threads 2] [--repeats 30] [--device cpu]

Prints the median (and p90) latency of one 64,600-sample window for each
backend and the PyTorch / ONNX Runtime ratio. Needs installed weights.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spoofwatch.model.export import ensure_onnx, parity_inputs
from spoofwatch.model.runtime import OnnxScorer
from spoofwatch.model.weights import load_torch_model


def timed(fn: object, repeats: int) -> np.ndarray:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return np.array(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="aasist-l")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()

    window = parity_inputs(batch=args.batch)
    torch.set_num_threads(args.threads)
    torch_device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    net = load_torch_model(args.model).to(torch_device)
    x = torch.from_numpy(window).to(torch_device)

    def run_torch() -> None:
        with torch.inference_mode():
            net(x)
        if torch_device == "cuda":
            torch.cuda.synchronize()

    scorer = OnnxScorer(ensure_onnx(args.model), device=args.device, threads=args.threads)
    for _ in range(3):  # warm-up both
        run_torch()
        scorer.scores(window)
    pt = timed(run_torch, args.repeats)
    ort = timed(lambda: scorer.scores(window), args.repeats)
    print(
        f"model {args.model}, batch {args.batch}, threads {args.threads}, torch on {torch_device}, ORT providers {scorer.providers}"
    )
    print(f"PyTorch       median {np.median(pt):8.1f} ms   p90 {np.percentile(pt, 90):8.1f} ms")
    print(f"ONNX Runtime  median {np.median(ort):8.1f} ms   p90 {np.percentile(ort, 90):8.1f} ms")
    print(f"ratio PyTorch / ONNX Runtime: {np.median(pt) / np.median(ort):.2f}x")


if __name__ == "__main__":
    main()
