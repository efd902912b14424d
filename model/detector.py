"""The Python API: ``Detector.load("aasist-l").score(waveform)``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import official_window, read_audio
from spoofwatch.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.errors import InputError

from .card import is_card_reference
from .precision import check_precision_device
from .runtime import Device, OnnxScorer, build_scorer, resolve_device

if TYPE_CHECKING:
    from spoofwatch.calibration.calfile import Calibration

#: Windows scored per ONNX Runtime call when scoring a long file.
FILE_BATCH_WINDOWS = 8


@dataclass(frozen=True)
class WindowScore:
    start_s: float
    end_s: float
    score: float


@dataclass(frozen=True)
class FileScore:
    """Scores of one file. ``score`` is the mean of the window scores."""

    file: str
    score: float
    verdict: str
    threshold: float
    windows: list[WindowScore] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "score": self.score,
            "verdict": self.verdict,
            "threshold": self.threshold,
            "windows": [{"start_s": w.start_s, "end_s": w.end_s, "score": w.score} for w in self.windows],
        }


def window_starts(n_samples: int, hop_samples: int, window_samples: int = WINDOW_SAMPLES) -> list[int]:
    """Start offsets of the windows covering a clip of ``n_samples``.

    A clip no longer than one window gets a single window at 0 (padded by
    repetition, the official convention). Longer clips get a window every
    hop plus, when the hops stop short of the end, one ending at the last sample.
    """
    if hop_samples < 1:
        raise InputError(f"expected a hop of at least one sample, got {hop_samples}")
    if n_samples <= window_samples:
        return [0]
    starts = list(range(0, n_samples - window_samples + 1, hop_samples))
    if starts[-1] + window_samples < n_samples:
        starts.append(n_samples - window_samples)
    return starts


def iter_windows(
    audio: npt.NDArray[np.float32], hop_samples: int, window_samples: int = WINDOW_SAMPLES
) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """``(start, window)`` pairs; the first window follows the official convention."""
    for start in window_starts(audio.size, hop_samples, window_samples):
        yield start, official_window(audio[start:], window_samples)


class Detector:
    """An ONNX detector (AASIST or a model card) plus the active decision threshold."""

    def __init__(self, model: str, scorer: OnnxScorer, calibration: Calibration) -> None:
        self.model = model
        self.scorer = scorer
        self.calibration = calibration

    @classmethod
    def load(
        cls,
        model: str = "aasist-l",
        device: Device = "auto",
        threads: int | None = None,
        weights: Path | None = None,
        calibration: Path | None = None,
        precision: str = "fp32",
    ) -> Detector:
        """Load cached weights (exporting to ONNX on first use) and a calibration.

        ``model`` is a built-in name or a model card path. ``calibration``
        defaults to the shipped ``configs/calibration/<model>.toml`` (for a
        card: the card's own file). The precision and device are checked
        before any file is loaded.
        """
        from spoofwatch.calibration.calfile import calibration_for

        if is_card_reference(model):
            scorer = build_scorer(model, precision, device, threads, weights)
            cal = calibration_for(model, calibration, weights, scorer.precision, scorer.spec)
        else:  # a mismatching calibration fails before a first-use export or quantization
            prec = check_precision_device(precision, device, resolve_device)
            cal = calibration_for(model, calibration, weights, prec)
            scorer = build_scorer(model, prec, device, threads, weights)
        return cls(model, scorer, cal)

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def verdict(self, score: float) -> str:
        return "bonafide" if score >= self.threshold else "spoof"

    def score(self, waveform: npt.NDArray[np.float32]) -> float:
        """Bona fide logit of a 16 kHz mono waveform's first (official) window."""
        if not isinstance(waveform, np.ndarray) or waveform.ndim != 1:
            raise InputError("expected a 1-D numpy float32 waveform at 16 kHz")
        if waveform.dtype != np.float32:
            raise InputError(f"expected dtype float32, got {waveform.dtype}")
        return float(self.scorer.scores(official_window(waveform, self.scorer.window_samples))[0])

    def score_audio(
        self, audio: npt.NDArray[np.float32], hop_s: float = 1.0, name: str = "<array>"
    ) -> FileScore:
        """Window scores over a whole 16 kHz waveform, the utterance score and verdict."""
        if hop_s <= 0:
            raise InputError(f"expected hop_s > 0, got {hop_s}")
        hop = max(1, round(hop_s * SAMPLE_RATE_HZ))
        starts: list[int] = []
        scores: list[float] = []
        batch: list[npt.NDArray[np.float32]] = []
        size = self.scorer.window_samples
        for start, window in iter_windows(audio, hop, size):
            starts.append(start)
            batch.append(window)
            if len(batch) == FILE_BATCH_WINDOWS:
                scores.extend(self.scorer.scores(np.stack(batch)).tolist())
                batch = []
        if batch:
            scores.extend(self.scorer.scores(np.stack(batch)).tolist())
        windows = [
            WindowScore(s / SAMPLE_RATE_HZ, min(s + size, audio.size) / SAMPLE_RATE_HZ, sc)
            for s, sc in zip(starts, scores, strict=True)
        ]
        utterance = float(np.mean(scores))
        return FileScore(name, utterance, self.verdict(utterance), self.threshold, windows)

    def score_file(self, path: str | Path, hop_s: float = 1.0) -> FileScore:
        return self.score_audio(read_audio(path), hop_s, name=str(path))
