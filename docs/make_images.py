"""Build the README's pictures from ../shared data (``make docs``). Nothing here is committed.

Writes into ``docs/img/`` (ignored by git):

- ``timeline.png``: ``spoofwatch stream --plot`` on genuine LA speech, a pause,
  then spoofed LA speech (real clips from ../shared);
- ``score/<file>.png``: ``spoofwatch score --plot`` on the four LA clips;
- ``calibration/``: the calibration report (DET curve, histograms, per-attack
  EER) of the official AASIST-L scores on ASVspoof 2019 LA eval;
- ``spoofwatch-page-alert.png``: the browser page during an alert, taken by the
  headless-Chromium test (tests/test_browser.py; needs ``chromium``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("SPOOFWATCH_SHARED", REPO.parent / "shared"))
    )
    parser.add_argument("--no-screenshot", action="store_true", help="skip the browser screenshot")
    args = parser.parse_args()

    from spoofwatch.audio import read_audio
    from spoofwatch.cli import main as cli

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    la = args.shared / "data" / "asvspoof2019_la"
    clips = sorted((la / "flac").glob("*.flac"))
    bona = read_audio(la / "flac" / "LA_T_1272637.flac")
    spoof = read_audio(la / "flac" / "LA_T_1000137.flac")
    n = 10 * 16000
    demo = np.concatenate([np.tile(bona, 5)[:n], np.zeros(4 * 16000, np.float32), np.tile(spoof, 5)[:n]])
    wav = out / "genuine_pause_spoof.wav"
    sf.write(wav, demo, 16000, subtype="PCM_16")

    steps = [
        ["-q", "stream", "--plot", str(out / "timeline.png"), str(wav)],
        ["-q", "score", "--plot", str(out / "score"), *map(str, clips)],
        [
            "-q",
            "calibrate",
            "fit",
            "--scores",
            str(args.shared / "data" / "scores" / "aasist-l_official_la_eval_scores.txt"),
            "--out",
            str(out / "calibration" / "eval_eer.toml"),
            "--report",
            str(out / "calibration"),
        ],
    ]
    for argv in steps:
        sys.stdout.write("spoofwatch " + " ".join(argv) + "\n")
        sys.stdout.flush()
        code = cli(argv)
        if code:
            return code
    if not args.no_screenshot:
        env = {**os.environ, "SPOOFWATCH_SCREENSHOT_DIR": str(out), "SPOOFWATCH_SHARED": str(args.shared)}
        test = "tests/test_browser.py::test_spoofed_microphone_raises_the_alert_banner"
        code = subprocess.run([sys.executable, "-m", "pytest", "-q", test], cwd=REPO, env=env).returncode
        if code:
            return code
    sys.stdout.write(f"pictures in {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
