"""The Python API: ``Detector.load("aasist-l").score(waveform)``."""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import AudioFile, official_window, sample_problem
from spoofwatch.calibration.calfile import Calibration
from spoofwatch.constants import DEFAULT_MODEL, DEFAULT_PRECISION, SAMPLE_RATE_HZ
from spoofwatch.errors import CalibrationError, InputError, ModelError
from spoofwatch.stream.engine import MIN_HOP_S, LiveConfig
from spoofwatch.stream.windower import stream_windows

from .card import ModelSpec, is_card_reference, parse_card
from .config import load_model_config
from .precision import check_precision_device, validate_precision
from .runtime import Device, OnnxScorer, resolve_device
from .scorers import build_scorer

log = logging.getLogger(__name__)

#: Windows scored per ONNX Runtime call when scoring a long file.
FILE_BATCH_WINDOWS = 8
#: Seconds between window starts when scoring a file (``score``, :meth:`Detector.score_file`),
#: unless given; a model whose window is shorter hops one window.
FILE_HOP_S = 1.0


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


def calibration_for(
    model: str,
    path: Path | None,
    weights: Path | None,
    precision: str = DEFAULT_PRECISION,
    spec: ModelSpec | None = None,
    *,
    warn: bool = True,
) -> Calibration:
    """The calibration to use with ``model`` (a built-in name or a model card
    path), (optionally custom) ``weights`` and ``precision``. ``warn=False``:
    no warning that the default is not calibrated for them (the caller is
    calibrating them now: ``calibrate fit``/``bonafide``).

    An explicit file must match the model, the weights in use (the pinned
    official ones unless ``weights`` is given) and the precision. With custom
    weights or a reduced precision and no file, the shipped FP32 default is
    used with a warning, re-stamped with the weights' hash and the precision,
    so files written from it (``calibrate fit``) fit them. For a model card
    (``spec``, parsed from ``model`` when not given) the default is the card's
    own ``calibration`` file, else the shipped uncalibrated card default.
    """
    from spoofwatch.calibration.calfile import load_calibration

    from .weights import check_weights_file, sha256_file

    if weights is not None:
        weights = check_weights_file(weights)
    if spec is None and is_card_reference(model):
        spec = parse_card(Path(model))
    if spec is not None:
        return _card_calibration(spec, path, warn)
    prec = validate_precision(precision)
    if weights is None and prec == DEFAULT_PRECISION:
        return load_calibration(path, model=model, weights_sha256=load_model_config(model).weights_sha256)
    digest = sha256_file(weights) if weights is not None else load_model_config(model).weights_sha256
    if path is None:
        if warn:
            log.warning(
                "using the default (FP32, official weights) calibration with %s; calibrate for them",
                "custom weights" if weights is not None else f"precision {prec}",
            )
        return dataclasses.replace(load_calibration(None, model=model), weights_sha256=digest, precision=prec)
    return load_calibration(path, model=model, weights_sha256=digest, precision=prec)


def calibration_stamp(model: str, weights: Path | None, precision: str) -> dict[str, str]:
    """What a calibration for ``model`` with ``weights`` at ``precision`` is
    stamped with (model name, weights SHA-256, precision), as
    :func:`calibration_for` stamps it; ``calibrate score`` records it beside
    its scores so that ``calibrate fit`` can check it fits for the same."""
    from .weights import check_weights_file, sha256_file

    if weights is not None:
        weights = check_weights_file(weights)
    if is_card_reference(model):
        spec = parse_card(Path(model))
        return {"model": spec.name, "weights_sha256": spec.calibration_key, "precision": DEFAULT_PRECISION}
    digest = sha256_file(weights) if weights is not None else load_model_config(model).weights_sha256
    return {"model": model, "weights_sha256": digest, "precision": validate_precision(precision)}


def _card_calibration(spec: ModelSpec, path: Path | None, warn: bool = True) -> Calibration:
    """A card's calibration: ``path``, else the card's own file, else the shipped
    uncalibrated default. Cards are scored at fp32 (as their ONNX file is)."""
    from spoofwatch.calibration.calfile import CARD_CALIBRATION, load_calibration, load_card_default

    origin = path or spec.calibration_path
    if origin is None:
        if warn:
            log.warning(
                "%s: no calibration file (neither --calibration nor the card's 'calibration'); using the "
                "uncalibrated configs/calibration/%s: run `spoofwatch calibrate` for this model",
                spec.card_path,
                CARD_CALIBRATION,
            )
        return load_card_default(spec.name, spec.calibration_key, spec.window_samples)
    return load_calibration(origin, model=spec.name, weights_sha256=spec.calibration_key)


def _check_precision(cal: Calibration, precision: str) -> None:
    if cal.precision != precision:
        raise CalibrationError(
            f"the calibration for {cal.model} was made at precision {cal.precision}, but the model is "
            f"scored at {precision}; recalibrate at {precision} or pass --precision {cal.precision}"
        )


def _checked_waveform(waveform: object) -> npt.NDArray[np.float32]:
    """A 16 kHz waveform (or chunk of one) as the API takes it: 1-D float32 audio samples."""
    if not isinstance(waveform, np.ndarray):
        raise InputError(f"expected a 1-D numpy float32 waveform at 16 kHz, got {type(waveform).__name__}")
    if waveform.ndim != 1:
        raise InputError(f"expected a 1-D numpy float32 waveform at 16 kHz, got shape {waveform.shape}")
    if waveform.dtype != np.float32:
        raise InputError(f"expected dtype float32, got {waveform.dtype}")
    if (problem := sample_problem(waveform)) is not None:
        raise InputError(problem)
    return waveform


class Detector:
    """An ONNX detector (AASIST or a model card) plus the active decision threshold."""

    def __init__(self, model: str, scorer: OnnxScorer, calibration: Calibration) -> None:
        self.model = model
        self.scorer = scorer
        self.calibration = calibration
        #: How :meth:`load` made it: what a pickled Detector is loaded again from.
        self._loaded_with: tuple[Any, ...] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """A Detector pickles as the way to load it again (an ONNX Runtime
        session cannot be pickled): a process pool's workers each load their own."""
        if self._loaded_with is None:
            raise InputError(
                "this Detector was built around a scorer, not by Detector.load: it cannot be pickled; "
                "load one in each process with Detector.load"
            )
        model, device, threads, weights, _, precision = self._loaded_with
        # The calibration it has now (a caller may have set another one), not the one it was loaded with.
        return (_load_again, (model, device, threads, weights, self.calibration, precision))

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        device: Device = "auto",
        threads: int | None = None,
        weights: Path | None = None,
        calibration: Path | Calibration | None = None,
        precision: str = DEFAULT_PRECISION,
    ) -> Detector:
        """Load cached weights (exporting to ONNX on first use) and a calibration.

        ``model`` is a built-in name or a model card path. ``calibration`` is a
        file (default: the shipped ``configs/calibration/<model>.toml``; for a
        card, the card's own file) or a :class:`Calibration` already chosen by
        :func:`calibration_for`. The precision and device are checked before
        any file is loaded; a calibration made at another precision is refused.
        """
        given = calibration if isinstance(calibration, Calibration) else None
        path = None if isinstance(calibration, Calibration) else calibration
        if is_card_reference(model):
            scorer = build_scorer(model, precision, device, threads, weights)
            cal = given or calibration_for(model, path, weights, scorer.precision, scorer.spec)
            _check_precision(cal, scorer.precision)
        else:  # a mismatching calibration fails before a first-use export or quantization
            prec = check_precision_device(precision, device, resolve_device)
            cal = given or calibration_for(model, path, weights, prec)
            _check_precision(cal, prec)
            scorer = build_scorer(model, prec, device, threads, weights)
        detector = cls(model, scorer, cal)
        detector._loaded_with = (model, device, threads, weights, cal, precision)
        return detector

    @property
    def live(self) -> LiveConfig:
        """The live engine's settings: the calibration's, with this model's window length."""
        return dataclasses.replace(self.calibration.live, window_samples=self.scorer.window_samples)

    @property
    def threshold(self) -> float:
        return self.calibration.verdict_threshold

    def verdict(self, score: float) -> str:
        return "bonafide" if score >= self.threshold else "spoof"

    def score(self, waveform: npt.NDArray[np.float32]) -> float:
        """Bona fide logit of a 16 kHz mono waveform's first (official) window."""
        score = float(
            self.scorer.scores(official_window(_checked_waveform(waveform), self.scorer.window_samples))[0]
        )
        if not math.isfinite(score):  # as score_audio: a broken model's NaN is no verdict
            raise ModelError(f"the model returned a non-finite score ({score}) for the first window")
        return score

    def score_audio(
        self, audio: npt.NDArray[np.float32], hop_s: float | None = None, name: str = "<array>"
    ) -> FileScore:
        """Window scores over a whole 16 kHz waveform, the utterance score and verdict.

        ``hop_s`` defaults to :data:`FILE_HOP_S`, or one window for a model whose window is shorter."""
        return self.score_chunks([audio], hop_s, name)

    def score_chunks(
        self, chunks: Iterable[npt.NDArray[np.float32]], hop_s: float | None = None, name: str = "<array>"
    ) -> FileScore:
        """Like :meth:`score_audio` for 16 kHz audio arriving in chunks, in
        memory independent of its length (a window, a hop and a batch)."""
        return self._score_checked((_checked_waveform(c) for c in chunks), hop_s, name)

    def _score_checked(
        self, chunks: Iterable[npt.NDArray[np.float32]], hop_s: float | None, name: str
    ) -> FileScore:
        """:meth:`score_chunks` of chunks already checked (a file's, by :class:`AudioFile`)."""
        size = self.scorer.window_samples
        max_hop_s = size / SAMPLE_RATE_HZ
        if hop_s is None:  # the file default, or one window for a model whose window is shorter
            hop_s = min(FILE_HOP_S, max_hop_s)
        # numbers.Real: NumPy's scalars too (np.float32(1.0) was refused, "got 1.0").
        if not isinstance(hop_s, numbers.Real) or isinstance(hop_s, bool | np.bool_):
            raise InputError(f"expected hop_s as a number of seconds, got {type(hop_s).__name__} {hop_s!r}")
        hop_s = float(hop_s)
        if not (math.isfinite(hop_s) and MIN_HOP_S <= hop_s <= max_hop_s):
            # A near-zero hop would score a window per sample; one past a window would leave audio unscored.
            raise InputError(
                f"expected a finite hop_s in [{MIN_HOP_S:g}, {max_hop_s:g}] s (one VAD frame to one window), "
                f"got {hop_s}"
            )
        hop = max(1, round(hop_s * SAMPLE_RATE_HZ))
        spans: list[tuple[int, int]] = []
        scores: list[float] = []
        batch: list[npt.NDArray[np.float32]] = []
        for start, end, window in stream_windows(chunks, hop, size):
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
            bad = next(w for w in windows if not np.isfinite(w.score))
            raise ModelError(
                f"{name}: the model returned a non-finite score ({bad.score}) for the window "
                f"{bad.start_s:g}-{bad.end_s:g} s"
            )
        return FileScore(name, utterance, self.verdict(utterance), self.threshold, windows)

    def score_file(self, path: str | Path | bytes, hop_s: float | None = None) -> FileScore:
        """Score a file decoded block by block (bounded memory for any length)."""
        audio = AudioFile(path)
        return self._score_checked(audio.chunks(), hop_s, str(audio.path))


def _load_again(*args: Any) -> Detector:
    """Unpickling a :class:`Detector`: load it as it was loaded."""
    return Detector.load(*args)
