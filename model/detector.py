"""The Python API: ``Detector.load("aasist-l").score(waveform)``."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import official_window, read_audio
from spoofwatch.calibration.calfile import Calibration
from spoofwatch.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.errors import InputError
from spoofwatch.stream.windower import iter_windows

from .config import load_model_config
from .export import ensure_onnx
from .runtime import Device, OnnxScorer

log = logging.getLogger(__name__)

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


def calibration_for(model: str, path: Path | None, weights: Path | None) -> Calibration:
    """The calibration to use with ``model`` and (optionally custom) ``weights``.

    An explicit file must match the weights in use (the pinned official ones
    unless ``weights`` is given). With custom weights and no file, the shipped
    default is used with a warning, re-stamped with the custom weights' hash,
    so files written from it (``calibrate fit``) fit them.
    """
    from spoofwatch.calibration.calfile import load_calibration

    from .weights import sha256_file

    if weights is None:
        return load_calibration(path, model=model, weights_sha256=load_model_config(model).weights_sha256)
    digest = sha256_file(weights)
    if path is None:
        log.warning("using the default calibration with custom weights; calibrate for these weights")
        return dataclasses.replace(load_calibration(None, model=model), weights_sha256=digest)
    return load_calibration(path, model=model, weights_sha256=digest)


class Detector:
    """An AASIST model on ONNX Runtime plus the active decision threshold."""

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
        calibration: Path | Calibration | None = None,
    ) -> Detector:
        """Load cached weights (exporting to ONNX on first use) and a calibration.

        ``calibration`` defaults to the shipped ``configs/calibration/<model>.toml``.
        """
        cal = (
            calibration
            if isinstance(calibration, Calibration)
            else calibration_for(model, calibration, weights)
        )
        scorer = OnnxScorer(ensure_onnx(model, weights), device=device, threads=threads)
        return cls(model, scorer, cal)

    @property
    def threshold(self) -> float:
        return self.calibration.verdict_threshold

    def verdict(self, score: float) -> str:
        return "bonafide" if score >= self.threshold else "spoof"

    def score(self, waveform: npt.NDArray[np.float32]) -> float:
        """Bona fide logit of a 16 kHz mono waveform's first (official) window."""
        if not isinstance(waveform, np.ndarray) or waveform.ndim != 1:
            raise InputError("expected a 1-D numpy float32 waveform at 16 kHz")
        if waveform.dtype != np.float32:
            raise InputError(f"expected dtype float32, got {waveform.dtype}")
        return float(self.scorer.scores(official_window(waveform))[0])

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
        for start, window in iter_windows(audio, hop):
            starts.append(start)
            batch.append(window)
            if len(batch) == FILE_BATCH_WINDOWS:
                scores.extend(self.scorer.scores(np.stack(batch)).tolist())
                batch = []
        if batch:
            scores.extend(self.scorer.scores(np.stack(batch)).tolist())
        windows = [
            WindowScore(s / SAMPLE_RATE_HZ, min(s + WINDOW_SAMPLES, audio.size) / SAMPLE_RATE_HZ, sc)
            for s, sc in zip(starts, scores, strict=True)
        ]
        utterance = float(np.mean(scores))
        return FileScore(name, utterance, self.verdict(utterance), self.threshold, windows)

    def score_file(self, path: str | Path, hop_s: float = 1.0) -> FileScore:
        return self.score_audio(read_audio(path), hop_s, name=str(path))
