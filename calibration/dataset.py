"""Pairing a CM protocol with an audio folder, and checking the layout first."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from spoofwatch.errors import DatasetError

from .protocol import Trial, parse_protocol

log = logging.getLogger(__name__)
#: Names listed when reporting missing files.
SHOW_FIRST = 5


@dataclass(frozen=True)
class Dataset:
    trials: list[Trial]
    paths: dict[str, Path]
    missing: list[str]


def audio_path(audio_dir: Path, utt: str) -> Path:
    return audio_dir / f"{utt}.flac"


#: What to do about missing files, for the commands that have ``--skip-missing``.
SKIP_MISSING_HINT = "use --skip-missing to continue without them"


def check_dataset(
    protocol: Path, audio_dir: Path, allow_missing: bool = False, missing_hint: str = SKIP_MISSING_HINT
) -> Dataset:
    """Every protocol utterance must have ``audio_dir/UTT.flac`` (non-empty);
    ``missing_hint`` ends the error when one has not (what the caller can do).

    Real LA layout: ``LA/ASVspoof2019_LA_dev/flac`` with
    ``LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt``.
    """
    if not audio_dir.is_dir():
        raise DatasetError(
            f"{audio_dir}: audio directory not found (expected e.g. LA/ASVspoof2019_LA_dev/flac)"
        )
    trials = parse_protocol(protocol)
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for t in trials:
        path = audio_path(audio_dir, t.utt)
        if path.is_file() and path.stat().st_size > 0:
            paths[t.utt] = path
        else:
            missing.append(t.utt)
    if missing:
        message = (
            f"{len(missing)} of {len(trials)} files in {protocol.name} are missing or empty in {audio_dir}: "
            f"{', '.join(missing[:SHOW_FIRST])}{' ...' if len(missing) > SHOW_FIRST else ''}"
        )
        if not allow_missing:
            raise DatasetError(f"{message} ({missing_hint})")
        log.warning("%s; continuing without them", message)
    return Dataset([t for t in trials if t.utt in paths], paths, missing)
