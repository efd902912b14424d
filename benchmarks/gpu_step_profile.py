"""Where the time of an incremental step goes on a GPU (issue 11), in one run.

    python benchmarks/gpu_step_profile.py [--device cuda] [--batches 16,32,64] [--json]

For each precision (FP32, FP16) and cuDNN algorithm search (HEURISTIC, the
shipped option, and EXHAUSTIVE, ONNX Runtime's default), the step graph of
AASIST-L at the live hop is timed at several streams per call:

* ``run_numpy``: ``session.run`` with the stacked states as numpy arrays, as
  the server calls it (host-to-device and back every call);
* ``run_device``: the same call with every input and output bound to GPU
  memory (``io_binding``), so no copies: the ceiling if states stayed on the GPU;
* ``concat_ms``: stacking B streams' states on the CPU (``np.concatenate``),
  which the server also pays per call.

Then ``processes``: P processes (1, 2, 4, ...) each calling ``run_numpy`` at
the shipped options in a loop on the same GPU for a fixed time; the total
steps/s says whether worker processes add or split the GPU's step rate.

And ``worker_like``: fresh processes one after another, each loading the
FP16 incremental graphs with 1 or 4 ONNX Runtime threads and timing steps
the way a ``serve`` worker does at start-up (``LoadMonitor.calibrate``):
do the timings agree between processes (on an H100 some workers timed 10x
slower than others), and does the thread count matter?

And ``shape_churn``: the step graph called with a changing number of streams
per call (as a server calls it), through one plain session and through the
shipped batch buckets (model/shapes.py, one session per bucket), against one
fixed size. ONNX Runtime's CUDA convolutions rebuild their cuDNN plans at
every change of input shape; the buckets should bring the changing sizes
close to the fixed-size rate.

Speeds are ratios within this one run; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from typing import Any

import numpy as np

from spoofwatch.constants import LIVE_HOP_SAMPLES, WINDOW_SAMPLES
from spoofwatch.model.config import load_model_config
from spoofwatch.model.incremental import STEP_INPUTS, ensure_incremental_onnx, plan_for
from spoofwatch.model.incremental_runtime import IncrementalModel
from spoofwatch.model.runtime import CUDA_PROVIDER_OPTIONS, Device, open_graph

MODEL = "aasist-l"


def emit(as_json: bool, **row: Any) -> None:
    print(json.dumps(row) if as_json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def session(precision: str, device: str, algo: str) -> Any:
    import onnxruntime as ort

    path = ensure_incremental_onnx(MODEL, LIVE_HOP_SAMPLES, precision=precision).step
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if device == "cpu":
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    cuda = dict(CUDA_PROVIDER_OPTIONS, cudnn_conv_algo_search=algo)
    return ort.InferenceSession(str(path), options, providers=[("CUDAExecutionProvider", cuda)])


_INIT: dict[str, IncrementalModel] = {}


def feeds(batch: int, device: Device) -> dict[str, np.ndarray]:
    """Step inputs of ``batch`` streams: the state after a full pass over random speech-level audio."""
    plan = plan_for(load_model_config(MODEL), LIVE_HOP_SAMPLES)
    if device not in _INIT:
        _INIT[device] = IncrementalModel.load(MODEL, LIVE_HOP_SAMPLES, device, 1)
    inc = _INIT[device]
    rng = np.random.default_rng(0)
    windows = (0.05 * rng.standard_normal((batch, WINDOW_SAMPLES))).astype(np.float32)
    _, state = inc.run_init(windows)
    head = np.ascontiguousarray(windows[:, : plan.head_samples])
    tail = np.ascontiguousarray(windows[:, WINDOW_SAMPLES - plan.tail_samples :])
    out = dict(zip(STEP_INPUTS, (head, tail), strict=True))
    out.update(zip(plan.state_names(), state, strict=True))
    return out


def per_call_s(fn: Any, rounds: int) -> float:
    fn()
    fn()  # warm-up: first calls of a shape set up kernels
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - t0) / rounds


def profile_one(sess: Any, batch: int, device: Device, rounds: int) -> dict[str, Any]:
    """One session at ``batch`` streams per call: numpy I/O, device I/O, CPU stacking."""
    import onnxruntime as ort

    x = feeds(batch, device)
    row: dict[str, Any] = {"streams_per_call": batch}
    row["run_numpy_steps_per_s"] = round(batch / per_call_s(lambda: sess.run(None, x), rounds), 1)
    if device == "cuda":
        binding = sess.io_binding()
        for name, value in x.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        for out in sess.get_outputs():
            binding.bind_output(out.name, "cuda")
        on_device = per_call_s(lambda: sess.run_with_iobinding(binding), rounds)
        row["run_device_steps_per_s"] = round(batch / on_device, 1)
    parts = [{k: v[i : i + 1] for k, v in x.items()} for i in range(batch)]
    concat_s = per_call_s(lambda: [np.concatenate([p[k] for p in parts]) for k in x], rounds)
    row["concat_ms"] = round(1000 * concat_s, 3)
    row["state_mb"] = round(sum(v.nbytes for v in x.values()) / 1e6, 2)
    return row


def profile(args: argparse.Namespace) -> None:
    for precision in ("fp32", "fp16"):
        for algo in ("HEURISTIC", "EXHAUSTIVE"):
            sess = session(precision, args.device, algo)
            for b in args.batches:
                row = profile_one(sess, b, args.device, args.rounds)
                emit(args.json, check="step_profile", precision=precision, algo=algo, **row)


def _spin(
    device: Device, precision: str, batch: int, seconds: float, start: Any, counts: Any, slot: int
) -> None:
    sess = session(precision, device, CUDA_PROVIDER_OPTIONS["cudnn_conv_algo_search"])
    x = feeds(batch, device)
    sess.run(None, x)
    start.wait()
    steps = 0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        sess.run(None, x)
        steps += batch
    counts[slot] = steps / seconds


def processes(args: argparse.Namespace) -> None:
    ctx = mp.get_context("spawn")
    for precision in ("fp32", "fp16"):
        for n in args.processes:
            start = ctx.Barrier(n)
            counts = ctx.Array("d", n)
            procs = [
                ctx.Process(
                    target=_spin,
                    args=(args.device, precision, args.process_batch, args.process_seconds, start, counts, i),
                )
                for i in range(n)
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            emit(
                args.json,
                check="processes",
                precision=precision,
                processes=n,
                streams_per_call=args.process_batch,
                total_steps_per_s=round(sum(counts[:]), 1),
                per_process=[round(c, 1) for c in counts[:]],
            )


def _worker_like(device: Device, precision: str, threads: int, batch: int, out: Any, slot: int) -> None:
    """What a `serve` worker does at start-up, in a fresh process: load the
    incremental graphs with ``threads`` and time steps like ``LoadMonitor.calibrate``."""
    from spoofwatch.stream.server.load import LoadMonitor, SheddingConfig
    from spoofwatch.stream.server.timing import step_batches

    inc = IncrementalModel.load(MODEL, LIVE_HOP_SAMPLES, device, threads, precision=precision)
    monitor = LoadMonitor(SheddingConfig(), LIVE_HOP_SAMPLES / 16000, batch)
    monitor.calibrate(
        lambda b: inc.score(*b), step_batches(inc, WINDOW_SAMPLES, LIVE_HOP_SAMPLES), largest=batch
    )
    out[slot] = monitor.capacity_windows_per_s() or 0.0


def worker_like(args: argparse.Namespace) -> None:
    """Fresh processes one after another, as `serve` workers start on a GPU:
    do their start-up timings agree, and does the thread count matter?"""
    ctx = mp.get_context("spawn")
    for threads in (1, 4):
        rates = ctx.Array("d", args.fresh)
        for k in range(args.fresh):
            p = ctx.Process(
                target=_worker_like, args=(args.device, "fp16", threads, args.process_batch, rates, k)
            )
            p.start()
            p.join()
        emit(
            args.json,
            check="worker_like",
            precision="fp16",
            threads=threads,
            streams_per_call=args.process_batch,
            windows_per_s=[round(r, 1) for r in rates[:]],
        )


#: Streams per call in ``shape_churn``: what a server's batcher sends as streams
#: become ready unevenly (fixed, so that every run calls the same sizes).
CHURN_SIZES = (32, 5, 32, 17, 32, 1, 29, 32, 12, 32, 3, 24)


def shape_churn(args: argparse.Namespace) -> None:
    """Changing call sizes, plain session vs batch buckets, against one fixed size."""
    for precision in ("fp32", "fp16"):
        path = ensure_incremental_onnx(MODEL, LIVE_HOP_SAMPLES, precision=precision).step
        x = feeds(max(CHURN_SIZES), args.device)
        row: dict[str, Any] = {}
        for label, buckets, sizes in (
            ("fixed_32", False, [32] * len(CHURN_SIZES)),
            ("churn_plain", False, list(CHURN_SIZES)),
            ("churn_buckets", True, list(CHURN_SIZES)),
        ):
            sess = open_graph(path, args.device, 1, allow_spinning=False, cap=64, buckets=buckets)
            calls = [{k: v[:n] for k, v in x.items()} for n in sizes]
            for call in calls:  # warm-up: each session's first call of a size
                sess.run(None, call)
            t0 = time.perf_counter()
            for _ in range(args.rounds):
                for call in calls:
                    sess.run(None, call)
            row[f"{label}_steps_per_s"] = round(args.rounds * sum(sizes) / (time.perf_counter() - t0), 1)
        emit(args.json, check="shape_churn", precision=precision, sizes=list(CHURN_SIZES), **row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run")
    parser.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[16, 32, 64])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--processes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--process-batch", type=int, default=32)
    parser.add_argument("--process-seconds", type=float, default=4.0)
    parser.add_argument("--fresh", type=int, default=4, help="fresh processes per thread count (worker_like)")
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=["shape_churn", "profile", "processes", "worker_like"],
        help="comma-separated: shape_churn, profile, processes, worker_like",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    checks = (
        ("shape_churn", shape_churn),
        ("profile", profile),
        ("processes", processes),
        ("worker_like", worker_like),
    )
    for name, check in checks:
        if name in args.only:
            check(args)


if __name__ == "__main__":
    main()
