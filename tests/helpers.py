"""Constants and small helpers shared by the tests (imported as ``helpers``)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def la_clip(la_dir: Path, utt: str) -> Path:
    return la_dir / "flac" / f"{utt}.flac"


BONAFIDE_UTT = "LA_T_1272637"
SPOOF_UTTS = ("LA_T_1000137", "LA_D_1003356", "LA_E_6163791")
