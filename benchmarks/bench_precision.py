"""The price of reduced precision, measured in one run on one machine.

    python benchmarks/bench_precision.py [--threads 2] [--precisions fp32,int8,fp16]
                                         [--tts-every 5] [--json]

For each precision: seconds per window and windows/s (batches of
``--batch`` windows, precisions interleaved so machine load hits them
alike); max and median |Δ bona fide logit| against FP32 and the number of
window decisions that flip at the default threshold, on real speech from
``../shared`` that the INT8 calibration never saw; EER on the four LA clips
and on ``../shared/data/tts_demos`` (every ``--tts-every``-th clip of the
manifest, official first window).

FP16 targets the CUDA provider. On a machine without a GPU it is run on the
CPU provider, which upcasts: its accuracy figures then bound the rounding of
the FP16 graph, and its speed figure says nothing about a GPU (flagged in
the output). Needs installed weights and ``$SPOOFWATCH_SHARED``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from spoofwatch.audio import official_window, read_audio
from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.calibration.metrics import eer
from spoofwatch.constants import WINDOW_SAMPLES
from spoofwatch.model.export import ensure_onnx, export_precision
from spoofwatch.model.quantize import default_calibration_files
from spoofwatch.model.runtime import OnnxScorer

LA_LABELS = {
    "LA_T_1272637": "bonafide",
    "LA_T_1000137": "spoof",
    "LA_D_1003356": "spoof",
    "LA_E_6163791": "spoof",
}
SPEECH_SETS = (
    "bonafide/librispeech_test-other",
    "bonafide/ljspeech",
    "bonafide/vctk",
    "spoof/nii_nsf",
    "pairs/nii_wave_replacement/real",
    "pairs/nii_wave_replacement/vocoded",
)


def speech_windows(shared: Path, per_file: int) -> np.ndarray:
    """Windows of real speech, excluding every INT8 calibration file."""
    excluded = {p.resolve() for p in default_calibration_files(shared)}
    rows = []
    for folder in SPEECH_SETS:
        for path in sorted((shared / "data" / "speech" / folder).glob("*")):
            if path.suffix.lower() not in (".flac", ".wav") or path.resolve() in excluded:
                continue
            audio = read_audio(path)
            for k in range(per_file):
                start = k * WINDOW_SAMPLES
                if k and start + WINDOW_SAMPLES > audio.size:
                    break
                rows.append(official_window(audio[start:]))
    return np.stack(rows)


def tts_clips(shared: Path, every: int) -> tuple[np.ndarray, np.ndarray]:
    root = shared / "data" / "tts_demos"
    with (root / "manifest.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))[::every]
    windows = np.stack([official_window(read_audio(root / r["path"])) for r in rows])
    labels = np.array([r["label"] == "bonafide" for r in rows])
    return windows, labels


def la_clips(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    root = shared / "data" / "asvspoof2019_la" / "flac"
    windows = np.stack([official_window(read_audio(root / f"{u}.flac")) for u in LA_LABELS])
    return windows, np.array([v == "bonafide" for v in LA_LABELS.values()])


def eer_percent(scores: np.ndarray, bonafide: np.ndarray) -> float:
    return float(100 * eer(scores[bonafide], scores[~bonafide])[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="aasist-l")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default="fp32,int8,fp16")
    parser.add_argument("--batch", type=int, default=4, help="windows per timed call")
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("--per-file", type=int, default=2, help="speech windows per file")
    parser.add_argument("--tts-every", type=int, default=5, help="score every k-th tts_demos clip")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    shared = Path(os.environ.get("SPOOFWATCH_SHARED", "../shared"))
    precisions = args.precisions.split(",")
    threshold = load_calibration(None, model=args.model).verdict_threshold

    paths = {
        p: ensure_onnx(args.model) if p == "fp32" else export_precision_cached(args.model, p)
        for p in precisions
    }
    # FP16 on a CPU-only machine: the CPU provider, for accuracy only (see the docstring).
    scorers = {p: OnnxScorer(path, "cpu", args.threads, precision=p) for p, path in paths.items()}  # type: ignore[arg-type]
    speech = speech_windows(shared, args.per_file)
    tts, tts_bona = tts_clips(shared, args.tts_every)
    la, la_bona = la_clips(shared)
    print(f"{len(speech)} speech windows, {len(tts)} tts_demos clips, {len(la)} LA clips", file=sys.stderr)

    timing = {p: [] for p in precisions}
    batch = speech[: args.batch]
    for s in scorers.values():
        s.scores(batch)  # warm-up
    for _ in range(args.timing_rounds):
        for p, s in scorers.items():  # interleaved: load changes hit every precision alike
            t0 = time.perf_counter()
            s.scores(batch)
            timing[p].append((time.perf_counter() - t0) / len(batch))

    scores = {
        p: {k: s.scores(x) for k, x in (("speech", speech), ("tts", tts), ("la", la))}
        for p, s in scorers.items()
    }
    ref = scores["fp32"]
    rows = []
    for p in precisions:
        sec = float(np.median(timing[p]))
        delta = np.abs(np.concatenate([scores[p][k] - ref[k] for k in ("speech", "tts", "la")]))
        flips = sum(
            int(np.sum((scores[p][k] >= threshold) != (ref[k] >= threshold))) for k in ("speech", "tts", "la")
        )
        rows.append(
            {
                "precision": p,
                "device": "cpu",
                "s_per_window": sec,
                "windows_per_s": 1 / sec,
                "speed_vs_fp32": float(np.median(timing["fp32"])) / sec,
                "max_abs_delta": float(delta.max()),
                "median_abs_delta": float(np.median(delta)),
                "flips": flips,
                "windows_compared": int(delta.size),
                "eer_la_percent": eer_percent(scores[p]["la"], la_bona),
                "eer_tts_demos_percent": eer_percent(scores[p]["tts"], tts_bona),
                "note": "CPU provider (upcast): accuracy only, not a GPU speed" if p == "fp16" else "",
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(
        f"threshold {threshold:.4f}; {args.threads} threads; batch {args.batch}; FP32 baseline in the same run"
    )
    print(
        f"{'prec':5s} {'s/window':>9s} {'win/s':>7s} {'x fp32':>7s} {'max|Δ|':>8s} {'med|Δ|':>8s} {'flips':>9s} {'EER LA':>7s} {'EER tts':>8s}"
    )
    for r in rows:
        print(
            f"{r['precision']:5s} {r['s_per_window']:9.3f} {r['windows_per_s']:7.2f} {r['speed_vs_fp32']:7.2f} "
            f"{r['max_abs_delta']:8.4f} {r['median_abs_delta']:8.4f} {r['flips']:4d}/{r['windows_compared']:<4d} "
            f"{r['eer_la_percent']:6.1f}% {r['eer_tts_demos_percent']:7.1f}%  {r['note']}"
        )


def export_precision_cached(model: str, precision: str) -> Path:
    """The cached variant (built on first use); FP16 is built even without a GPU."""
    from spoofwatch.model.export import cached_onnx_path

    path = cached_onnx_path(model, precision=precision)
    return path if path.is_file() else export_precision(model, precision)


if __name__ == "__main__":
    main()
