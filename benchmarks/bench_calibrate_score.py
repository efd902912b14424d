"""``calibrate score`` throughput on a synthetic LA-sized protocol, per precision.

    python benchmarks/bench_calibrate_score.py [--files 96] [--precisions fp32,int8] [--threads 2]

Builds ``--files`` FLAC clips cut from LibriSpeech and LJSpeech in
``../shared`` with LA-like lengths (cycling through DURATIONS_S: mean
3.3 s, one in four clips longer than the 4.04 s window, as LA has long
utterances; the LA dev audio itself is not available here), a protocol in
the LA format, and runs the real ``score_dataset`` (decoding one batch
ahead of scoring) for each precision and window-score hop (``--hop-s 0``:
the first window only) in the same process. Prints files/s,
windows/s and the time extrapolated to the 24,844 files of LA dev.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from spoofwatch.audio import read_audio
from spoofwatch.calibration.dataset import check_dataset
from spoofwatch.calibration.scoreset import score_dataset
from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.model.scorers import build_scorer
from spoofwatch.stream.windower import window_starts

LA_DEV_FILES = 24_844
#: Clip lengths cycled through (s): an assumption standing in for LA dev's distribution.
DURATIONS_S = (1.9, 2.3, 2.5, 2.9, 3.3, 3.8, 4.5, 5.5)
SOURCES = ("bonafide/librispeech_test-other", "bonafide/ljspeech")


def build_protocol(shared: Path, out: Path, n_files: int) -> tuple[Path, Path, list[int]]:
    audio_dir = out / "flac"
    audio_dir.mkdir(parents=True)
    sources = [
        p
        for s in SOURCES
        for p in sorted((shared / "data" / "speech" / s).glob("*"))
        if p.suffix in (".flac", ".wav")
    ]
    lines: list[str] = []
    lengths: list[int] = []
    i = 0
    for path in sources:
        audio = read_audio(path)
        pos = 0
        while i < n_files:
            n = round(DURATIONS_S[i % len(DURATIONS_S)] * SAMPLE_RATE_HZ)
            if pos + n > audio.size:
                break
            utt = f"LA_D_{9_000_000 + i}"
            soundfile.write(str(audio_dir / f"{utt}.flac"), audio[pos : pos + n], SAMPLE_RATE_HZ)
            lines.append(
                f"LA_0000 {utt} - {'-' if i % 10 == 0 else 'A01'} {'bonafide' if i % 10 == 0 else 'spoof'}"
            )
            lengths.append(n)
            pos += n
            i += 1
    protocol = out / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n", "utf-8")
    return protocol, audio_dir, lengths


def windows_at(lengths: list[int], hop_s: float) -> int:
    """Windows ``calibrate score --hop-s hop_s`` scores for clips of ``lengths`` samples."""
    if hop_s == 0:
        return len(lengths)
    return sum(len(window_starts(n, round(hop_s * SAMPLE_RATE_HZ))) for n in lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=96)
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="decoder threads")
    parser.add_argument(
        "--hops-s",
        default="0.5,0",
        help="window-score hops to time (0: the official first window only, `calibrate score --hop-s 0`)",
    )
    args = parser.parse_args()
    shared = Path(os.environ.get("SPOOFWATCH_SHARED", "../shared"))
    with tempfile.TemporaryDirectory(prefix="bench-calibrate-") as tmp:
        protocol, audio_dir, lengths = build_protocol(shared, Path(tmp), args.files)
        dataset = check_dataset(protocol, audio_dir)
        print(
            f"{len(dataset.trials)} files, {windows_at(lengths, 0.5)} windows at a 0.5 s hop; {args.threads} threads"
        )
        for precision in args.precisions.split(","):
            scorer = build_scorer("aasist-l", precision, "cpu", args.threads)
            scorer.scores(
                np.zeros((1, scorer.window_samples), np.float32)
            )  # untimed: the first call's set-up
            score_files: dict[float, str] = {}
            for run, hop_s in enumerate(float(h) for h in args.hops_s.split(",")):
                out = Path(tmp) / f"scores-{precision}-{run}.txt"  # a fresh file: never a resumed run
                t0 = time.perf_counter()
                score_dataset(dataset, scorer, out, hop_s, args.workers, progress=False)
                elapsed = time.perf_counter() - t0
                rate = len(dataset.trials) / elapsed
                score_files[hop_s] = out.read_text("utf-8")
                print(
                    f"{precision:5s} hop {hop_s:g} s  {rate:6.2f} files/s  "
                    f"{windows_at(lengths, hop_s) / elapsed:6.2f} windows/s  "
                    f"LA dev ({LA_DEV_FILES} files): {LA_DEV_FILES / rate / 60:6.1f} min"
                )
                assert np.isfinite(rate)
            # Every hop writes the same first-window score file.
            same = len(set(score_files.values())) == 1
            print(f"{precision:5s} score files identical across hops {sorted(score_files)}: {same}")


if __name__ == "__main__":
    main()
