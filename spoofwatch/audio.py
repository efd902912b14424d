"""Audio decoding, channel mixing and resampling to the model rate."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from .errors import AudioError, InputError

log = logging.getLogger(__name__)

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
    check_sample_rate(target_hz, "target_hz")  # soxr's own error for 0 was a bare ValueError
    if rate_hz == target_hz:
        return audio
    import soxr

    return _within_bound(np.asarray(soxr.resample(audio, rate_hz, target_hz, quality="HQ"), dtype=np.float32))


def _within_bound(audio: FloatArray) -> FloatArray:
    """Resampled audio clipped to ±:data:`MAX_ABS_SAMPLE`: the input passed that
    check, but the filter rings past it (a ±99.9 square wave at 48 kHz comes out
    at ±117), and the engine would refuse what the client did right."""
    return np.clip(audio, -MAX_ABS_SAMPLE, MAX_ABS_SAMPLE, out=audio)


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
        return _within_bound(np.asarray(out, dtype=np.float32))


#: Sample rates (Hz) accepted from files and streams: below 4 kHz is not speech
#: audio, and a header declaring 1 Hz would turn a few bytes into hours of samples.
MIN_SAMPLE_RATE_HZ = 4_000
MAX_SAMPLE_RATE_HZ = 192_000
#: Largest |sample| accepted in float audio. Audio is nominally within ±1;
#: beyond ±100 (40 dB over full scale) a value is a scaling bug, not sound,
#: and it would overflow float32 in mixing, resampling or the model.
MAX_ABS_SAMPLE = 100.0
#: File suffixes taken as audio when a command scans a folder (what libsndfile decodes).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")
#: Native-rate frames decoded at a time when streaming a file.
DECODE_BLOCK_FRAMES = 1 << 16


def audio_files(folder: Path, recursive: bool = True) -> list[Path]:
    """The audio files (by suffix, any case) under ``folder``, sorted."""
    found = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in found if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def sample_problem(samples: npt.NDArray[np.floating]) -> str | None:
    """Why ``samples`` (any shape) cannot be treated as audio, or ``None``.

    The one rule for every input (files, WebSocket frames, the microphone),
    applied to the raw samples before channel mixing or resampling, where
    huge finite values would overflow to Inf and then NaN.
    """
    if samples.size == 0:
        return None
    peak = float(np.max(np.abs(samples)))  # NaN propagates through max
    if not np.isfinite(peak):
        return "expected finite audio samples, got NaN or Inf"
    if peak > MAX_ABS_SAMPLE:
        return f"expected audio samples within ±{MAX_ABS_SAMPLE:g}, got a magnitude of {peak:.6g}"
    return None


def check_sample_rate(rate_hz: int, what: str) -> None:
    if not MIN_SAMPLE_RATE_HZ <= rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise AudioError(
            f"{what}: expected a sample rate in [{MIN_SAMPLE_RATE_HZ}, {MAX_SAMPLE_RATE_HZ}] Hz, got {rate_hz} Hz"
        )


def _decode_error(path: Path, exc: Exception) -> AudioError:
    return AudioError(
        f"{path}: cannot decode audio (expected a format libsndfile reads: wav, flac, ogg, mp3): {exc}"
    )


#: libsndfile's name for MP3 (``soundfile.info().format``; "MPEG_LAYER_III" is
#: its subtype), whose frame count is an estimate, not a header field.
MP3_FORMAT = "MP3"
_DECODE_ERRORS: tuple[type[Exception], ...] = (RuntimeError, TypeError, ValueError)


#: libsndfile's log line for a WAV whose data chunk runs past the end of the
#: file: ``data : 92784 (should be 39922)`` (bytes announced, bytes there).
_SHORT_DATA_CHUNK = re.compile(r"^data : (\d+) \(should be (\d+)\)", re.MULTILINE)


#: A data size at or above this is a placeholder, not a length: a WAV written
#: to a pipe (``ffmpeg ... -f wav -``) cannot seek back to fill it in, and
#: writes 0xFFFFFFFF (some writers 0x7FFFFFFF) for "unknown".
_UNKNOWN_WAV_SIZE = 0x7FFFF000


def _announced_frames(open_log: str, frames: int) -> int:
    """The frames a WAV header announces, from libsndfile's log of opening it
    (``frames`` when the log reports nothing cut short)."""
    match = _SHORT_DATA_CHUNK.search(open_log)
    if match is None or int(match.group(2)) <= 0 or int(match.group(1)) >= _UNKNOWN_WAV_SIZE:
        return frames
    return round(frames * int(match.group(1)) / int(match.group(2)))


def _samples(n: int) -> str:
    return f"{n} sample" if n == 1 else f"{n} samples"


def _bytes_after_empty_wav_data(path: Path) -> int:
    """Bytes after a WAV's ``data`` chunk header when that chunk announces a
    size of 0 (else 0): walks the RIFF chunks (id, 32-bit size, padded to
    even), at most 64 of them."""
    with open(os.fsencode(path), "rb") as f:
        if f.read(12)[:4] != b"RIFF":
            return 0
        for _ in range(64):
            header = f.read(8)
            if len(header) < 8:
                return 0
            size = int.from_bytes(header[4:], "little")
            if header[:4] == b"data":
                return max(0, os.fstat(f.fileno()).st_size - f.tell()) if size == 0 else 0
            f.seek(size + (size & 1), os.SEEK_CUR)
    return 0


class AudioFile:
    """An audio file opened for decoding: the header is checked now (rate,
    emptiness), the samples are decoded block by block by :meth:`chunks`,
    so memory does not grow with the file's length."""

    def __init__(self, path: str | Path | bytes) -> None:
        import soundfile

        if isinstance(path, bytes):  # a name as the OS gives it (os.listdir(b".")): any bytes
            path = os.fsdecode(path)
        if not isinstance(path, str | os.PathLike):
            raise InputError(f"expected an audio file's path (str, bytes or Path), got {type(path).__name__}")
        self.path = Path(path)
        if self.path.is_dir():
            raise AudioError(f"{self.path}: is a folder; expected an audio file")
        if not self.path.exists():
            if self.path.is_symlink():  # exists() follows the link
                raise AudioError(
                    f"{self.path}: a symbolic link to nothing (its target is missing, or a loop)"
                )
            raise AudioError(f"{self.path}: no such audio file")
        if not self.path.is_file():  # a FIFO, a device: libsndfile needs to seek
            raise AudioError(
                f"{self.path}: not a regular file; expected an audio file (save a pipe's audio first)"
            )
        size_bytes = self.path.stat().st_size
        if size_bytes == 0:
            raise AudioError(f"{self.path}: the file is empty (0 bytes)")
        try:
            info = soundfile.info(os.fsencode(self.path))  # a name that is not UTF-8 too
        except (soundfile.LibsndfileError, *_DECODE_ERRORS) as exc:
            raise _decode_error(self.path, exc) from None
        self.rate_hz = int(info.samplerate)
        self.channels = int(info.channels)
        self.frames = int(info.frames)
        #: libsndfile's container format ("WAV", "FLAC", "MPEG", ...).
        self.format = str(info.format)
        #: The frames the header announces: more than ``frames`` for a WAV cut
        #: short on disk, whose length libsndfile takes from the file's size.
        self.announced_frames = max(self.frames, _announced_frames(str(info.extra_info), self.frames))
        check_sample_rate(self.rate_hz, str(self.path))
        if self.frames == 0:
            after = _bytes_after_empty_wav_data(self.path) if self.format == "WAV" else 0
            if after:
                raise AudioError(
                    f"{self.path}: its header announces no samples, yet {after} bytes follow it (a writer "
                    "that never filled in its header?); rewrite the file (e.g. ffmpeg -i in.wav out.flac) "
                    "if they are audio"
                )
            raise AudioError(f"{self.path}: audio is empty (0 samples)")

    def warn_if_short(self, frames_read: int) -> None:
        """Cut short on disk (still being written, or damaged): say so, the
        events end early. (An MP3's length is an estimate: see Known limits.)"""
        if frames_read < self.announced_frames and self.format != MP3_FORMAT:
            log.warning(
                "%s: ended after %.2f s of the %.2f s its header announces (truncated?)",
                self.path,
                frames_read / self.rate_hz,
                self.announced_frames / self.rate_hz,
            )

    def blocks(self, block_frames: int = DECODE_BLOCK_FRAMES) -> Iterator[FloatArray]:
        """The file's frames as decoded, ``(n, channels)`` float32 blocks.

        Reads until the decoder returns nothing, trusting what each read
        returns, not the header: soundfile.blocks() slices its reused buffer
        by the header's frame count, so a truncated MP3 (whose header
        promises more) yielded stale or uninitialised samples. A decoder
        error after some audio (a FLAC cut short on disk: "lost sync") ends
        the audio there with a warning, as a WAV or MP3 cut short does;
        before any, it is an :class:`AudioError`. So are samples that fail
        :func:`sample_problem`, as soon as the offending block is read.
        """
        import soundfile

        total = 0
        try:
            with soundfile.SoundFile(os.fsencode(self.path)) as f:
                while (block := f.read(block_frames, dtype="float32", always_2d=True)).shape[0]:
                    if (problem := sample_problem(block)) is not None:
                        raise AudioError(f"{self.path}: {problem}")
                    total += block.shape[0]
                    yield block
        except (soundfile.LibsndfileError, *_DECODE_ERRORS) as exc:
            if total == 0:
                raise _decode_error(self.path, exc) from None
            log.warning(
                "%s: decoding stopped after %.2f s (damaged or cut short?): %s",
                self.path,
                total / self.rate_hz,
                exc,
            )
            return
        if total == 0:
            raise AudioError(f"{self.path}: audio is empty (0 samples)")
        self.warn_if_short(total)

    def chunks(
        self, target_hz: int = SAMPLE_RATE_HZ, block_frames: int = DECODE_BLOCK_FRAMES
    ) -> Iterator[FloatArray]:
        """Mono float32 at ``target_hz``, one decoded block at a time (errors
        and warnings as :meth:`blocks`)."""
        resampler = StreamResampler(self.rate_hz, target_hz)
        total = produced = 0
        for block in self.blocks(block_frames):
            total += block.shape[0]
            out = resampler(to_mono(block))
            produced += out.size
            if out.size:
                yield out
        tail = resampler(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            yield tail
        elif produced == 0:  # a handful of samples at a high rate, as read_audio says
            raise AudioError(
                f"{self.path}: {_samples(total)} at {self.rate_hz} Hz are none at {target_hz} Hz"
            )


def read_audio(path: str | Path | bytes, target_hz: int = SAMPLE_RATE_HZ) -> FloatArray:
    """Decode any format libsndfile reads, mix to mono and resample to ``target_hz``.

    Decodes the whole file at once (for clips; stream long files with
    :class:`AudioFile`). Raises :class:`AudioError` naming the file for
    unreadable, empty or non-finite audio, absurd magnitudes and sample
    rates outside [4, 192] kHz.
    """
    check_sample_rate(target_hz, "target_hz")
    header = AudioFile(path)  # checks existence, header and sample rate before decoding
    path = header.path
    frames = np.concatenate(list(header.blocks()))
    rate = header.rate_hz
    audio = resample(to_mono(frames), int(rate), target_hz)
    if audio.size == 0:  # a handful of samples at a high rate
        raise AudioError(f"{path}: {_samples(frames.shape[0])} at {rate} Hz are none at {target_hz} Hz")
    return audio


def official_window(audio: FloatArray, window_samples: int = WINDOW_SAMPLES) -> FloatArray:
    """The official evaluation input: the first ``window_samples``, or the clip
    repeated until it is that long."""
    if audio.ndim != 1 or audio.size == 0:
        raise InputError(f"expected a non-empty 1-D waveform, got shape {audio.shape}")
    if audio.size >= window_samples:
        return np.ascontiguousarray(audio[:window_samples], dtype=np.float32)
    repeats = window_samples // audio.size + 1
    return np.tile(audio, repeats)[:window_samples].astype(np.float32, copy=False)
