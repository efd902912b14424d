"""CUDA checks in one run, for an H100/H200 host (see ``benchmarks/gpu_serving.sh``).

    python benchmarks/gpu_checks.py [--json]

Prints one JSON object per check (``--json``) or a line each:

* ``parity``: the official reference windows (``reference/official_outputs.npz``
  from ``$SPOOFWATCH_SHARED``) scored on the CUDA provider with the shipped
  options (``use_tf32=0``), one window per call and all in one call, against
  the official PyTorch logits, for both models;
* ``batch_cap``: 200 windows in one ``scores`` call (split into calls of at
  most ``CUDA_MAX_BATCH_WINDOWS``) against the same windows one call each;
* ``throughput``: windows/s of full-window scoring at batch 1, 16 and the cap;
* ``fp16``: the FP16 graph against FP32 on CUDA: max / median |Δ logit| and
  decision flips at the default threshold on real speech, and its speed;
* ``incremental``: the exact incremental encoder on CUDA: every window of
  several streams of real speech against full-window scoring of the same
  samples;
* ``fp16_incremental``: the FP16 incremental graphs against FP32 incremental
  scoring of the same windows (max / median |Δ logit|, decision flips);
* ``incremental_throughput``: steps/s per precision with the streams'
  states stacked into one call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from spoofwatch.audio import read_audio
from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.constants import LIVE_HOP_SAMPLES, SCORE_COLUMN, WINDOW_SAMPLES
from spoofwatch.model.export import ensure_onnx
from spoofwatch.model.incremental_runtime import IncrementalModel
from spoofwatch.model.runtime import CUDA_MAX_BATCH_WINDOWS, OnnxScorer

MODELS = {"aasist-l": "AASIST-L", "aasist": "AASIST"}


def report(out: list[dict[str, Any]], as_json: bool, **row: Any) -> None:
    out.append(row)
    print(json.dumps(row) if as_json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def timed(fn: Any, rounds: int = 5) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - t0) / rounds


def speech_streams(shared: Path, n: int, seconds: float) -> list[np.ndarray]:
    files = sorted((shared / "data" / "speech" / "bonafide" / "librispeech_test-other").glob("*.flac"))
    audio = np.concatenate([read_audio(p) for p in files[: 4 * n]])
    length = int(seconds * 16000)
    return [audio[i * length : (i + 1) * length] for i in range(n)]


def windows_of(stream: np.ndarray, hop: int) -> list[tuple[int, np.ndarray]]:
    return [(s, stream[s : s + WINDOW_SAMPLES]) for s in range(0, stream.size - WINDOW_SAMPLES + 1, hop)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--streams", type=int, default=8, help="streams in the incremental exactness check")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the script"
    )
    parser.add_argument(
        "--step-batches", default="1,16,64", help="streams per call in the step throughput check"
    )
    args = parser.parse_args()
    shared = Path(os.environ.get("SPOOFWATCH_SHARED", "../shared"))
    out: list[dict[str, Any]] = []
    ref = np.load(shared / "reference" / "official_outputs.npz")
    waves = ref["waveforms"].astype(np.float32)

    for model, key in MODELS.items():
        scorer = OnnxScorer(ensure_onnx(model), args.device, 1)
        expected = ref[f"{key}_logits"][:, SCORE_COLUMN]
        single = np.array([scorer.scores(w[np.newaxis])[0] for w in waves])
        batch = scorer.scores(waves)
        report(
            out,
            args.json,
            check="parity",
            model=model,
            provider=scorer.device,
            windows=len(waves),
            max_abs_single=float(np.abs(single - expected).max()),
            max_abs_batch=float(np.abs(batch - expected).max()),
        )

    scorer = OnnxScorer(ensure_onnx("aasist-l"), args.device, 1)
    streams = speech_streams(shared, args.streams, args.seconds)
    speech = np.stack([w for s in streams for _, w in windows_of(s, WINDOW_SAMPLES // 2)])
    many = np.concatenate([speech] * (1 + 200 // len(speech)))[:200]
    one_call = scorer.scores(many)
    each = np.concatenate([scorer.scores(many[i : i + 1]) for i in range(len(many))])
    report(
        out,
        args.json,
        check="batch_cap",
        windows=len(many),
        cap=CUDA_MAX_BATCH_WINDOWS,
        max_abs_vs_single_calls=float(np.abs(one_call - each).max()),
    )
    for b in (1, 16, CUDA_MAX_BATCH_WINDOWS):
        x = many[:b]
        report(
            out,
            args.json,
            check="throughput",
            precision="fp32",
            batch=b,
            windows_per_s=b / timed(lambda x=x: scorer.scores(x)),
        )

    threshold = load_calibration(None, model="aasist-l").verdict_threshold
    fp16 = OnnxScorer(ensure_onnx("aasist-l", precision="fp16"), args.device, 1, precision="fp16")
    s32, s16 = scorer.scores(speech), fp16.scores(speech)
    delta = np.abs(s16 - s32)
    x = many[:CUDA_MAX_BATCH_WINDOWS]
    report(
        out,
        args.json,
        check="fp16",
        windows=len(speech),
        max_abs_delta=float(delta.max()),
        median_abs_delta=float(np.median(delta)),
        flips=int(np.sum((s16 >= threshold) != (s32 >= threshold))),
        windows_per_s_fp16=CUDA_MAX_BATCH_WINDOWS / timed(lambda: fp16.scores(x)),
        windows_per_s_fp32=CUDA_MAX_BATCH_WINDOWS / timed(lambda: scorer.scores(x)),
    )

    for model in MODELS:
        full = OnnxScorer(ensure_onnx(model), args.device, 1)
        inc = IncrementalModel.load(model, LIVE_HOP_SAMPLES, args.device, 1)
        caches = [inc.open_stream() for _ in streams]
        per_stream = [windows_of(s, LIVE_HOP_SAMPLES) for s in streams]
        worst = 0.0
        for step in range(len(per_stream[0])):
            got = inc.score(caches, [w[step] for w in per_stream])
            want = full.scores(np.stack([w[step][1] for w in per_stream]))
            worst = max(worst, float(np.abs(np.array(got) - want).max()))
        report(
            out,
            args.json,
            check="incremental",
            model=model,
            provider=inc.device,
            streams=len(streams),
            windows=sum(len(w) for w in per_stream),
            max_abs_vs_full=worst,
            full_passes=sum(c.full_passes for c in caches),
            steps=sum(c.steps for c in caches),
        )
    # FP16 incremental graphs against FP32 incremental scoring of the same windows.
    inc = IncrementalModel.load("aasist-l", LIVE_HOP_SAMPLES, args.device, 1)
    half = IncrementalModel.load("aasist-l", LIVE_HOP_SAMPLES, args.device, 1, precision="fp16")
    a, b32 = [half.open_stream() for _ in streams], [inc.open_stream() for _ in streams]
    per_stream = [windows_of(s, LIVE_HOP_SAMPLES) for s in streams]
    got16: list[float] = []
    got32: list[float] = []
    for step in range(len(per_stream[0])):
        windows = [w[step] for w in per_stream]
        got16 += half.score(a, windows)
        got32 += inc.score(b32, windows)
    d = np.abs(np.subtract(got16, got32))
    report(
        out,
        args.json,
        check="fp16_incremental",
        provider=half.device,
        windows=len(d),
        max_abs_vs_fp32=float(d.max()),
        median_abs_vs_fp32=float(np.median(d)),
        flips=int(np.sum((np.array(got16) >= threshold) != (np.array(got32) >= threshold))),
    )
    # Step throughput: B streams stacked into one call, steady state, per precision.
    long = np.concatenate(streams)
    batches = [int(v) for v in args.step_batches.split(",")]
    for precision, model_at, b in [(p, m, b) for p, m in (("fp32", inc), ("fp16", half)) for b in batches]:
        caches = [model_at.open_stream() for _ in range(b)]
        offsets = [(i * 7919) % max(1, long.size - 3 * WINDOW_SAMPLES) for i in range(b)]
        k = [0]

        def advance(
            caches: list[Any] = caches, offsets: list[int] = offsets, k: list[int] = k, m: Any = model_at
        ) -> None:
            start = k[0] * LIVE_HOP_SAMPLES
            k[0] += 1
            m.score(caches, [(start, long[o + start : o + start + WINDOW_SAMPLES]) for o in offsets])

        advance()  # first passes
        report(
            out,
            args.json,
            check="incremental_throughput",
            precision=precision,
            streams_per_call=b,
            steps_per_s=b / timed(advance, rounds=6),
        )
    if not args.json:
        print(f"{len(out)} checks", file=sys.stderr)


if __name__ == "__main__":
    main()
