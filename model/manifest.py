"""Source manifests: the ``tts_demos`` table format that ``build-corpus`` reads
(``extra_manifests``), and a writer that describes a folder of your own audio.

A manifest is tab-separated with the header :data:`MANIFEST_HEADER`; ``path``
is relative to the manifest's folder. Genuine rows have label ``bonafide``,
system ``GT`` and kind ``gt``; spoofed rows name their system and one of
:data:`SPOOF_KINDS`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from spoofwatch.audio import AudioFile, audio_files
from spoofwatch.calibration.protocol import LABELS
from spoofwatch.errors import AudioError, InputError
from spoofwatch.paths import partial_path

MANIFEST_HEADER = (
    "path",
    "label",
    "system",
    "kind",
    "speaker_or_corpus",
    "source_repo",
    "licence",
    "original_format",
    "original_rate",
)
#: Columns ``build-corpus`` needs filled in every row.
MANIFEST_COLUMNS = MANIFEST_HEADER[:6]
SPOOF_KINDS = ("tts", "vc", "vocoder", "codec")
SPEAKER_FROM = ("folder", "corpus")


#: What a genuine row's system and kind columns say.
GENUINE_SYSTEM = "GT"
GENUINE_KIND = "gt"


@dataclass(frozen=True)
class FolderSource:
    """How to describe every file under a folder."""

    label: str  # bonafide | spoof
    corpus: str  # genuine: the corpus; spoof: what the system imitates
    source: str  # the ``source_repo`` column: where the audio came from
    system: str = GENUINE_SYSTEM
    kind: str = GENUINE_KIND
    speaker_from: str = "folder"  # folder: the file's parent folder names the speaker
    licence: str = "unknown"

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise InputError(f"label {self.label!r}: expected one of {LABELS}")
        if self.label == "spoof" and (self.kind not in SPOOF_KINDS or self.system in ("", GENUINE_SYSTEM)):
            raise InputError(f"a spoof folder needs --system NAME and --kind one of {SPOOF_KINDS}")
        if self.label == "bonafide" and (self.system, self.kind) != (GENUINE_SYSTEM, GENUINE_KIND):
            # A genuine row is written as GENUINE_SYSTEM/GENUINE_KIND whatever was given.
            raise InputError(
                f"--system and --kind describe spoof folders; a bonafide folder is system "
                f"{GENUINE_SYSTEM}, kind {GENUINE_KIND} (got --system {self.system} --kind {self.kind})"
            )
        if self.speaker_from not in SPEAKER_FROM:
            raise InputError(f"speaker_from {self.speaker_from!r}: expected one of {SPEAKER_FROM}")
        for name in ("corpus", "source", "system", "licence"):
            value = getattr(self, name)
            if not value or any(c in value for c in _UNSAFE):
                raise InputError(
                    f"{name} {value!r}: expected a non-empty name without tabs, newlines or double quotes"
                )


#: Characters a tab-separated manifest field cannot hold: the writer does not
#: quote, and the reader (csv, default dialect) would take a '"' as quoting.
_UNSAFE = '\t\r\n"'


def scan_folder(root: Path, spec: FolderSource, out_dir: Path) -> tuple[list[list[str]], list[str]]:
    """Manifest rows (paths relative to ``out_dir``) for every readable audio file
    under ``root``, and one message per file skipped (unreadable, empty, odd rate)."""
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    rows: list[list[str]] = []
    skipped: list[str] = []
    for path in audio_files(root):
        if any(c in str(path) for c in _UNSAFE):
            skipped.append(f"{path}: a tab, newline or double quote in the name")
            continue
        try:
            info = AudioFile(path)
        except AudioError as exc:
            skipped.append(str(exc))
            continue
        speaker = path.parent.name if spec.speaker_from == "folder" and path.parent != root else ""
        # "Corpus (speaker)": the suite groups genuine results by corpus family
        # (parenthesised parts dropped), the corpus build balances by speaker.
        who = f"{spec.corpus} ({speaker})" if speaker else spec.corpus
        rows.append(
            [
                _relative(path, out_dir),
                spec.label,
                spec.system,
                spec.kind,
                who,
                spec.source,
                spec.licence,
                path.suffix.lstrip(".").upper(),
                str(info.rate_hz),
            ]
        )
    return rows, skipped


def _relative(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def write_manifest(path: Path, rows: Iterable[list[str]]) -> None:
    """Write ``rows`` under :data:`MANIFEST_HEADER` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)
    tmp.replace(path)
