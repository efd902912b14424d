"""CPU book-keeping of one stacked incremental call, the graphs taken out (issue 11).

    python benchmarks/bench_step_overhead.py [--streams 32,64] [--calls 30]

On a GPU the step graph itself is fast (thousands of steps/s), so what a
``serve`` worker does around each ONNX Runtime call on the CPU matters:
checking and stacking the windows, stacking the streams' cached states,
caching the new ones. This times ``IncrementalModel.score`` for N streams
one hop further each call, with ``run_init``/``run_step`` replaced by
functions that return real-shaped outputs at once, and prints it next to
the one copy no design of per-stream states avoids (concatenating the N
states, the baseline, timed in the same process).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from spoofwatch.constants import LIVE_HOP_SAMPLES, WINDOW_SAMPLES
from spoofwatch.model.incremental_runtime import IncrementalModel


def instant_graphs(inc: Any, state: list[np.ndarray]) -> None:
    """Replace the graph calls by ones returning outputs of the real shapes, precomputed per batch size."""
    outputs: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}

    def out(n: int) -> tuple[np.ndarray, list[np.ndarray]]:
        if n not in outputs:
            outputs[n] = np.zeros((n, 2), np.float32), [np.repeat(s, n, axis=0) for s in state]
        return outputs[n]

    inc.run_init = lambda windows: out(len(windows))
    inc.run_step = lambda head, tail, states: out(len(head))


def per_call_s(fn: Any, calls: int) -> float:
    fn(1)  # untimed: first-call allocations
    t0 = time.perf_counter()
    for k in range(2, calls + 2):
        fn(k)
    return (time.perf_counter() - t0) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=lambda s: [int(v) for v in s.split(",")], default=[32, 64])
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    inc = IncrementalModel.load("aasist-l", LIVE_HOP_SAMPLES, "cpu", 1, batch_streams=True)
    audio = 0.05 * np.random.default_rng(0).standard_normal(
        WINDOW_SAMPLES + (args.calls + 2) * LIVE_HOP_SAMPLES
    )
    audio = audio.astype(np.float32)
    _, state = inc.run_init(audio[np.newaxis, :WINDOW_SAMPLES])
    instant_graphs(inc, state)
    # Group calls as on CUDA (64 steps, 8 first passes per call; the CPU's cap
    # is 4): the graphs are faked, so only the grouping reads the device.
    inc.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    for n in args.streams:
        streams = [inc.open_stream() for _ in range(n)]
        inc.score(streams, [(0, audio[:WINDOW_SAMPLES])] * n)  # first passes

        def step(k: int, streams: list[Any] = streams, n: int = n) -> None:
            start = k * LIVE_HOP_SAMPLES
            inc.score(streams, [(start, audio[start : start + WINDOW_SAMPLES])] * n)

        rows = [[s[:1] for s in state] for _ in range(n)]
        baseline = per_call_s(
            lambda k, rows=rows: [np.concatenate(p) for p in zip(*rows, strict=True)], args.calls
        )
        book = per_call_s(step, args.calls)
        # Every timed call was a stacked step, not a full pass.
        assert all((s.full_passes, s.steps) == (1, args.calls + 1) for s in streams)
        print(
            f"{n} streams per call: {1000 * book:.2f} ms per call ({1e6 * book / n:.0f} us per stream); "
            f"{book / baseline:.2f}x the state concatenation alone ({1000 * baseline:.2f} ms)"
        )


if __name__ == "__main__":
    main()
