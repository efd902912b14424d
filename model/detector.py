"""The Python API: ``Detector.load("aasist-l").score(waveform)``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import AudioFile, official_window
from spoofwatch.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.errors import InputError, ModelError

from .export import ensure_onnx
from .runtime import Device, OnnxScorer

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


def window_starts(n_samples: int, hop_samples: int) -> list[int]:
    """Start offsets of the windows covering a clip of ``n_samples``.

    A clip no longer than one window gets a single window at 0 (padded by
    repetition, the official convention). Longer clips get a window every
    hop plus, when the hops stop short of the end, one ending at the last sample.
    """
    if hop_samples < 1:
        raise InputError(f"expected a hop of at least one sample, got {hop_samples}")
    if n_samples <= WINDOW_SAMPLES:
        return [0]
    starts = list(range(0, n_samples - WINDOW_SAMPLES + 1, hop_samples))
    if starts[-1] + WINDOW_SAMPLES < n_samples:
        starts.append(n_samples - WINDOW_SAMPLES)
    return starts


def stream_windows(
    chunks: Iterable[npt.NDArray[np.float32]], hop_samples: int
) -> Iterator[tuple[int, int, npt.NDArray[np.float32]]]:
    """``(start, end, window)`` over audio arriving in chunks, exactly the
    windows :func:`window_starts` gives for the whole signal, holding at most
    about one window plus a hop plus a chunk in memory.

    ``end`` is where the window's real audio stops (a clip shorter than one
    window is padded by repetition, the official convention).
    """
    if hop_samples < 1:
        raise InputError(f"expected a hop of at least one sample, got {hop_samples}")
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # stream offset of buf[0]
    n = 0  # samples received
    next_start = 0
    last_start = -1
    for chunk in chunks:
        buf = np.concatenate([buf, chunk.astype(np.float32, copy=False)])
        n += chunk.size
        while next_start + WINDOW_SAMPLES <= n:
            lo = next_start - buf_start
            yield next_start, next_start + WINDOW_SAMPLES, buf[lo : lo + WINDOW_SAMPLES].copy()
            last_start = next_start
            next_start += hop_samples
        # Keep what a later window may need: from the next start, and the
        # final window's worth for the tail window that ends at the last sample.
        keep_from = max(0, min(next_start, n - WINDOW_SAMPLES))
        if keep_from > buf_start:
            buf = buf[keep_from - buf_start :].copy()
            buf_start = keep_from
    if n == 0:
        raise InputError("expected a non-empty waveform, got 0 samples")
    if n <= WINDOW_SAMPLES:
        if last_start < 0:  # n == WINDOW_SAMPLES already yielded its window
            yield 0, n, official_window(buf)
    elif last_start + WINDOW_SAMPLES < n:
        yield n - WINDOW_SAMPLES, n, buf[buf.size - WINDOW_SAMPLES :].copy()


def iter_windows(
    audio: npt.NDArray[np.float32], hop_samples: int
) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """``(start, window)`` pairs; the first window follows the official convention."""
    for start, _, window in stream_windows([audio], hop_samples):
        yield start, window


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
        calibration: Path | None = None,
    ) -> Detector:
        """Load cached weights (exporting to ONNX on first use) and a calibration.

        ``calibration`` defaults to the shipped ``configs/calibration/<model>.toml``.
        """
        from spoofwatch.calibration.calfile import calibration_for

        cal = calibration_for(model, calibration, weights)
        scorer = OnnxScorer(ensure_onnx(model, weights), device=device, threads=threads)
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
        return float(self.scorer.scores(official_window(waveform))[0])

    def score_audio(
        self, audio: npt.NDArray[np.float32], hop_s: float = 1.0, name: str = "<array>"
    ) -> FileScore:
        """Window scores over a whole 16 kHz waveform, the utterance score and verdict."""
        return self.score_chunks([audio], hop_s, name)

    def score_chunks(
        self, chunks: Iterable[npt.NDArray[np.float32]], hop_s: float = 1.0, name: str = "<array>"
    ) -> FileScore:
        """Like :meth:`score_audio` for 16 kHz audio arriving in chunks, in
        memory independent of its length (a window, a hop and a batch)."""
        if hop_s <= 0:
            raise InputError(f"expected hop_s > 0, got {hop_s}")
        hop = max(1, round(hop_s * SAMPLE_RATE_HZ))
        spans: list[tuple[int, int]] = []
        scores: list[float] = []
        batch: list[npt.NDArray[np.float32]] = []
        for start, end, window in stream_windows(chunks, hop):
            spans.append((start, end))
            batch.append(window)
            if len(batch) == FILE_BATCH_WINDOWS:
                scores.extend(self.scorer.scores(np.stack(batch)).tolist())
                batch = []
        if batch:
            scores.extend(self.scorer.scores(np.stack(batch)).tolist())
        windows = [
            WindowScore(s / SAMPLE_RATE_HZ, e / SAMPLE_RATE_HZ, sc)
            for (s, e), sc in zip(spans, scores, strict=True)
        ]
        utterance = float(np.mean(scores))
        if not np.isfinite(utterance):  # sanitised input cannot get here; a broken model can
            raise ModelError(f"{name}: the model returned a non-finite score")
        return FileScore(name, utterance, self.verdict(utterance), self.threshold, windows)

    def score_file(self, path: str | Path, hop_s: float = 1.0) -> FileScore:
        """Score a file decoded block by block (bounded memory for any length)."""
        return self.score_chunks(AudioFile(path).chunks(), hop_s, name=str(path))
