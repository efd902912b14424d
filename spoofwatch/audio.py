"""Audio decoding, channel mixing and resampling to the model rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from .constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from .errors import AudioError, InputError

FloatArray = npt.NDArray[np.float32]


def to_mono(frames: npt.NDArray[np.floating]) -> FloatArray:
    """Mix ``(n,)`` or ``(n, channels)`` audio down to ``(n,)`` float32."""
    if frames.ndim == 1:
        return frames.astype(np.float32, copy=False)
    if frames.ndim != 2:
        raise InputError(f"expected audio shaped (samples,) or (samples, channels), got {frames.shape}")
    mixed: FloatArray = frames.mean(axis=1, dtype=np.float64).astype(np.float32)
    return mixed


def resample(audio: FloatArray, rate_hz: int, target_hz: int = SAMPLE_RATE_HZ) -> FloatArray:
    """Resample a whole mono signal with soxr (high quality)."""
    if rate_hz <= 0:
        raise InputError(f"expected a positive sample rate, got {rate_hz}")
    if rate_hz == target_hz:
        return audio
    import soxr

    return np.asarray(soxr.resample(audio, rate_hz, target_hz, quality="HQ"), dtype=np.float32)


class StreamResampler:
    """Chunk-by-chunk resampler whose output does not depend on chunk sizes.

    soxr keeps filter state between calls, so feeding the same audio in any
    chunking gives the same samples once ``flush`` has been called.
    """

    def __init__(self, rate_hz: int, target_hz: int = SAMPLE_RATE_HZ) -> None:
        if rate_hz <= 0:
            raise InputError(f"expected a positive sample rate, got {rate_hz}")
        self.rate_hz = rate_hz
        self.target_hz = target_hz
        self._stream: object | None = None
        self.reset()

    def reset(self) -> None:
        if self.rate_hz == self.target_hz:
            self._stream = None
            return
        import soxr

        self._stream = soxr.ResampleStream(self.rate_hz, self.target_hz, 1, dtype="float32", quality="HQ")

    def __call__(self, chunk: FloatArray, last: bool = False) -> FloatArray:
        if self._stream is None:
            return chunk
        out = self._stream.resample_chunk(np.ascontiguousarray(chunk, dtype=np.float32), last=last)  # type: ignore[attr-defined]
        return np.asarray(out, dtype=np.float32)


def read_audio(path: str | Path, target_hz: int = SAMPLE_RATE_HZ) -> FloatArray:
    """Decode any format libsndfile reads, mix to mono and resample to ``target_hz``.

    Raises :class:`AudioError` naming the file for unreadable, empty or
    non-finite audio.
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        frames, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(
            f"{path}: cannot decode audio (expected a format libsndfile reads: wav, flac, ogg, mp3): {exc}"
        ) from None
    if frames.shape[0] == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    mono = to_mono(frames)
    if not np.all(np.isfinite(mono)):
        raise AudioError(f"{path}: audio contains NaN or Inf samples")
    return resample(mono, int(rate), target_hz)


def official_window(audio: FloatArray, window_samples: int = WINDOW_SAMPLES) -> FloatArray:
    """The official evaluation input: the first ``window_samples``, or the clip
    repeated until it is that long."""
    if audio.ndim != 1 or audio.size == 0:
        raise InputError(f"expected a non-empty 1-D waveform, got shape {audio.shape}")
    if audio.size >= window_samples:
        return np.ascontiguousarray(audio[:window_samples], dtype=np.float32)
    repeats = window_samples // audio.size + 1
    return np.tile(audio, repeats)[:window_samples].astype(np.float32, copy=False)
