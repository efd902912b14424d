"""ASVspoof 2019 LA file formats: CM protocols, score files and ASV score files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt

from spoofwatch.errors import DatasetError

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
LABELS = ("bonafide", "spoof")
#: Decimals of the scores ``calibrate score`` writes: a score read back may be
#: off by half a unit of the last one, which a threshold set on it must allow for.
SCORE_DECIMALS = 6
ASV_KEYS = ("target", "nontarget", "spoof")


@dataclass(frozen=True)
class Trial:
    """One protocol line: ``SPEAKER UTT_ID - ATTACK|- bonafide|spoof``."""

    speaker: str
    utt: str
    attack: str  # "-" for bona fide, "A01".."A19" for spoofs
    label: str  # "bonafide" or "spoof"


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text("utf-8-sig")  # an editor's byte-order mark is not part of the first id
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    return [(i, line.split()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def parse_protocol(path: Path) -> list[Trial]:
    """Parse a CM protocol; a malformed line is an error naming file, line and format."""
    trials = []
    first_line: dict[str, int] = {}
    for lineno, fields in _lines(path):
        if len(fields) != 5 or fields[4] not in LABELS:
            raise DatasetError(
                f"{path}:{lineno}: expected 'SPEAKER UTT_ID - ATTACK|- bonafide|spoof', got {' '.join(fields)!r}"
            )
        if (seen := first_line.setdefault(fields[1], lineno)) != lineno:
            # Scored twice, it would count twice in every rate.
            raise DatasetError(
                f"{path}:{lineno}: utterance {fields[1]} is listed again (first on line {seen})"
            )
        trials.append(Trial(fields[0], fields[1], fields[3], fields[4]))
    if not trials:
        raise DatasetError(f"{path}: protocol is empty")
    return trials


@dataclass(frozen=True)
class ScoreTable:
    """CM scores with labels: parallel arrays, one entry per utterance."""

    utts: list[str]
    attacks: list[str]
    labels: list[str]
    scores: npt.NDArray[np.float64]

    def by_label(self, label: str) -> npt.NDArray[np.float64]:
        mask = np.array([lab == label for lab in self.labels], dtype=bool)
        return cast(Array, self.scores[mask])


def score_value(value: str) -> float | None:
    """A score field's number, or ``None`` when it is not a finite number: the
    one rule for what a score file may hold (read here, resumed by ``scoreset``)."""
    # float() reads "1_000" as Python source does, and any script's digits
    # ("٣", "１"); no score file writes either.
    if "_" in value or not value.isascii():
        return None
    try:
        score = float(value)
    except ValueError:
        return None
    return score if np.isfinite(score) else None


def _parse_score(value: str, path: Path, lineno: int) -> float:
    score = score_value(value)
    if score is None:
        raise DatasetError(f"{path}:{lineno}: expected a finite numeric score, got {value!r}")
    return score


def read_scores(path: Path, protocol: Path | None = None) -> ScoreTable:
    """Read ``UTT ATTACK KEY SCORE`` lines, or ``UTT SCORE`` lines labelled from ``protocol``."""
    trials = {t.utt: t for t in parse_protocol(protocol)} if protocol is not None else None
    utts: list[str] = []
    attacks: list[str] = []
    labels: list[str] = []
    scores: list[float] = []
    seen: set[str] = set()
    for lineno, fields in _lines(path):
        if fields and fields[0] in seen:  # counted twice, it would weigh twice in every rate
            raise DatasetError(f"{path}:{lineno}: utterance {fields[0]!r} is scored again")
        if trials is not None and len(fields) in (2, 4):
            # The protocol is the truth: a line's own labels must agree with it.
            utt = fields[0]
            if utt not in trials:
                raise DatasetError(f"{path}:{lineno}: utterance {utt!r} is not in the protocol {protocol}")
            attack, label = trials[utt].attack, trials[utt].label
            if len(fields) == 4 and (fields[1], fields[2]) != (attack, label):
                raise DatasetError(
                    f"{path}:{lineno}: {utt} is '{fields[1]} {fields[2]}' here but '{attack} {label}' "
                    f"in the protocol {protocol}"
                )
        elif len(fields) == 4 and fields[2] in LABELS:
            utt, attack, label = fields[0], fields[1], fields[2]
        else:
            raise DatasetError(
                f"{path}:{lineno}: expected 'UTT_ID ATTACK bonafide|spoof SCORE' "
                f"(or 'UTT_ID SCORE' with --protocol), got {' '.join(fields)!r}"
            )
        seen.add(utt)
        utts.append(utt)
        attacks.append(attack)
        labels.append(label)
        scores.append(_parse_score(fields[-1], path, lineno))
    if not utts:
        raise DatasetError(f"{path}: score file is empty")
    if trials is not None and len(utts) < len(trials):
        # Not an error (a partial run is worth a look), but every rate is over
        # the scored subset only, which the reader must know.
        log.warning(
            "%s scores %d of the %d utterances in %s: the rates are over those %d only",
            path,
            len(utts),
            len(trials),
            protocol,
            len(utts),
        )
    return ScoreTable(utts, attacks, labels, np.asarray(scores, dtype=np.float64))


@dataclass(frozen=True)
class AsvScores:
    target: npt.NDArray[np.float64]
    nontarget: npt.NDArray[np.float64]
    spoof: npt.NDArray[np.float64]


def read_asv_scores(path: Path) -> AsvScores:
    """Read the organisers' ``SOURCE KEY SCORE`` ASV score file."""
    groups: dict[str, list[float]] = {k: [] for k in ASV_KEYS}
    for lineno, fields in _lines(path):
        if len(fields) != 3 or fields[1] not in groups:
            raise DatasetError(
                f"{path}:{lineno}: expected 'SOURCE target|nontarget|spoof SCORE', got {' '.join(fields)!r}"
            )
        groups[fields[1]].append(_parse_score(fields[2], path, lineno))
    if not groups["target"] or not groups["nontarget"]:
        raise DatasetError(f"{path}: needs both target and nontarget ASV scores")
    return AsvScores(*(np.asarray(groups[k], dtype=np.float64) for k in ASV_KEYS))
