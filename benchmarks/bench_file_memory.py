"""Peak memory of ``spoofwatch score`` against file length (streamed decode).

    python benchmarks/bench_file_memory.py [--minutes 1 10] [--rate 44100]

Writes LA speech repeated to each length as a 16-bit WAV at ``--rate``
(so decoding, mixing and resampling are all exercised), scores each file in
a fresh subprocess and prints the child's peak RSS (``ru_maxrss``), with a
5-second file as the baseline (model + runtime alone). With the streamed
decode the peak must not grow with the file: the ratio stays near 1.
Also times the refusal of a 244-byte WAV that declares 1 Hz.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile

from spoofwatch.audio import read_audio, resample

SHARED = Path(os.environ.get("SPOOFWATCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CLIP = SHARED / "data" / "asvspoof2019_la" / "flac" / "LA_T_1272637.flac"
ROOT = Path(__file__).resolve().parents[1]


def write_long(path: Path, seconds: float, rate: int) -> None:
    clip = resample(read_audio(CLIP), 16000, rate)
    n = int(seconds * rate)
    with soundfile.SoundFile(path, "w", rate, 1, "PCM_16") as out:
        for pos in range(0, n, clip.size):
            out.write(clip[: min(clip.size, n - pos)])


#: The decode and windowing alone (no model): every window of the file is cut.
DECODE_ONLY = """
import sys
from spoofwatch.audio import AudioFile
from spoofwatch.stream.windower import stream_windows
n = sum(1 for _ in stream_windows(AudioFile(sys.argv[1]).chunks(), int(sys.argv[2])))
"""


def peak_rss_mb(args: list[str], decode_only: bool = False) -> tuple[float, float, int]:
    """(peak RSS in MiB, wall seconds, exit code) of ``spoofwatch ARGS`` (or the
    decode-only snippet) in a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = ["-c", DECODE_ONLY] if decode_only else ["-m", "spoofwatch"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *command, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, wall, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--rate", type=int, default=44_100)
    parser.add_argument("--hop-s", type=float, default=1.0)
    args = parser.parse_args()
    score = ["score", "--device", "cpu", "--threads", "2", "--hop-s", str(args.hop_s)]
    hop = str(round(args.hop_s * 16000))
    with tempfile.TemporaryDirectory() as tmp:
        base_path = Path(tmp) / "base.wav"
        write_long(base_path, 5.0, args.rate)
        dbase, _, code = peak_rss_mb([str(base_path), hop], decode_only=True)
        assert code == 0, code
        base, base_wall, code = peak_rss_mb([*score, str(base_path)])
        assert code == 0, code
        print(
            f"{'5 s (baseline)':>14s}: decode+windows peak RSS {dbase:6.1f} MiB; "
            f"score peak RSS {base:7.1f} MiB (wall {base_wall:5.1f} s)"
        )
        for minutes in args.minutes:
            path = Path(tmp) / f"{minutes:g}min.wav"
            write_long(path, minutes * 60, args.rate)
            drss, _, code = peak_rss_mb([str(path), hop], decode_only=True)
            assert code == 0, code
            rss, wall, code = peak_rss_mb([*score, str(path)])
            assert code == 0, code
            print(
                f"{f'{minutes:g} min':>14s}: decode+windows peak RSS {drss:6.1f} MiB (x{drss / dbase:.2f}); "
                f"score peak RSS {rss:7.1f} MiB (x{rss / base:.2f}, wall {wall:5.1f} s); "
                f"file {path.stat().st_size / 2**20:.0f} MiB"
            )
            path.unlink()
        one_hz = Path(tmp) / "one_hz.wav"
        fmt = struct.pack("<HHIIHH", 1, 1, 1, 2, 2, 16)
        one_hz.write_bytes(
            b"RIFF"
            + struct.pack("<I", 236)
            + b"WAVEfmt "
            + struct.pack("<I", 16)
            + fmt
            + b"data"
            + struct.pack("<I", 200)
            + bytes(200)
        )
        rss, wall, code = peak_rss_mb([*score, str(one_hz)])
        print(
            f"{'244 B at 1 Hz':>14s}: score peak RSS {rss:7.1f} MiB, wall {wall:5.1f} s, exit {code} (refused)"
        )


if __name__ == "__main__":
    main()
