"""Channel augmentation for the open corpus: the same random channel for genuine and spoof.

Unlike :mod:`spoofwatch.model.augment` (on-the-fly, inside training), these
operations are applied once when a corpus is built and recorded in its
metadata, so that a test can be sliced by channel. Each operation takes a
16 kHz float32 waveform and a ``numpy.random.Generator`` and returns a new
waveform plus a short tag describing exactly what was done.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import AudioError, ConfigError

log = logging.getLogger(__name__)
Wave = npt.NDArray[np.float32]

#: ffmpeg encoder and container per codec name; (encoder, extension, rate_hz, extra args).
FFMPEG_CODECS: dict[str, tuple[str, str, int, tuple[str, ...]]] = {
    "opus": ("libopus", "ogg", 16_000, ("-b:a", "16k")),
    "mp3": ("libmp3lame", "mp3", 16_000, ("-b:a", "32k")),
    "gsm": ("libgsm", "gsm", 8_000, ()),
    "amr_nb": ("libopencore_amrnb", "amr", 8_000, ("-b:a", "12.2k")),
    "mulaw": ("pcm_mulaw", "wav", 8_000, ()),
    "alaw": ("pcm_alaw", "wav", 8_000, ()),
}


@dataclass(frozen=True)
class ChannelConfig:
    max_ops: int = 3
    gain_db: tuple[float, float] = (-20.0, 20.0)
    noise_snr_db: tuple[float, float] = (5.0, 35.0)
    reverb_rt60_s: tuple[float, float] = (0.15, 0.8)
    silence_s: tuple[float, float] = (0.2, 1.5)
    codecs: tuple[str, ...] = ("opus", "mp3", "gsm", "mulaw", "alaw")

    def __post_init__(self) -> None:
        unknown = [c for c in self.codecs if c not in FFMPEG_CODECS]
        if unknown:
            raise ConfigError(
                f"unknown codec(s) {', '.join(unknown)}: expected some of {', '.join(FFMPEG_CODECS)}"
            )
        if self.max_ops < 1:
            raise ConfigError(f"channel max_ops must be >= 1, got {self.max_ops}")
        for name in ("gain_db", "noise_snr_db", "reverb_rt60_s", "silence_s"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"channel {name}: expected [low, high] with low <= high, got {[low, high]}")


@cache
def ffmpeg_encoders() -> frozenset[str]:
    """Encoders the installed ffmpeg has (empty when there is no ffmpeg)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return frozenset()
    out = subprocess.run(
        [exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
    ).stdout
    return frozenset(
        line.split()[1] for line in out.splitlines() if len(line.split()) > 1 and line.startswith(" ")
    )


def available_codecs(wanted: tuple[str, ...]) -> tuple[str, ...]:
    have = ffmpeg_encoders()
    usable = tuple(c for c in wanted if FFMPEG_CODECS[c][0] in have)
    skipped = sorted(set(wanted) - set(usable))
    if skipped:
        log.warning("ffmpeg lacks the encoder for %s; those codecs are skipped", ", ".join(skipped))
    return usable


def _finish(x: npt.NDArray[np.floating]) -> Wave:
    out: Wave = np.clip(x, -1.0, 1.0).astype(np.float32)
    return out


def gain(x: Wave, rng: np.random.Generator, cfg: ChannelConfig) -> tuple[Wave, str]:
    db = float(rng.uniform(*cfg.gain_db))
    return _finish(x * 10 ** (db / 20)), f"gain{db:+.1f}dB"


def noise(x: Wave, rng: np.random.Generator, cfg: ChannelConfig) -> tuple[Wave, str]:
    """White or pink-ish (integrated) noise at a random SNR."""
    snr = float(rng.uniform(*cfg.noise_snr_db))
    power = float(np.mean(np.square(x, dtype=np.float64))) or 1e-10
    n = rng.standard_normal(x.size)
    colour = "white"
    if rng.uniform() < 0.5:
        n = np.cumsum(n)
        n -= np.convolve(n, np.ones(64) / 64, mode="same")  # brown noise, high-passed
        colour = "brown"
    n *= np.sqrt(power / 10 ** (snr / 10) / (np.mean(n**2) or 1e-10))
    return _finish(x + n), f"noise-{colour}{snr:.0f}dB"


def fft_convolve(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Full linear convolution through the FFT (a direct one is O(N*M): minutes for a long room response)."""
    n = a.size + b.size - 1
    size = 1 << (n - 1).bit_length()
    out: npt.NDArray[np.float64] = np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]
    return out


def reverb(x: Wave, rng: np.random.Generator, cfg: ChannelConfig) -> tuple[Wave, str]:
    """Convolution with a synthetic room response: exponentially decaying noise after a direct path."""
    rt60 = float(rng.uniform(*cfg.reverb_rt60_s))
    n = int(rt60 * SAMPLE_RATE_HZ)
    t = np.arange(n) / SAMPLE_RATE_HZ
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    rir[0] = 1.0 / max(float(rng.uniform(0.3, 1.0)), 1e-3)  # direct-to-reverberant ratio
    wet = fft_convolve(x.astype(np.float64), rir)[: x.size]
    peak = float(np.max(np.abs(wet))) or 1.0
    return _finish(wet / peak * float(np.max(np.abs(x)))), f"reverb{rt60:.2f}s"


def silence(x: Wave, rng: np.random.Generator, cfg: ChannelConfig) -> tuple[Wave, str]:
    """Leading and trailing near-silence (a faint noise floor, as a real capture has)."""
    lead = int(rng.uniform(*cfg.silence_s) * SAMPLE_RATE_HZ)
    trail = int(rng.uniform(*cfg.silence_s) * SAMPLE_RATE_HZ)
    floor = 10 ** (float(rng.uniform(-80, -55)) / 20)

    def pad(k: int) -> npt.NDArray[np.float64]:
        return rng.standard_normal(k) * floor

    return _finish(
        np.concatenate([pad(lead), x, pad(trail)])
    ), f"silence{lead / SAMPLE_RATE_HZ:.1f}+{trail / SAMPLE_RATE_HZ:.1f}s"


def ffmpeg_round_trip(x: Wave, codec: str) -> Wave:
    """Encode with ffmpeg's ``codec`` and decode back to 16 kHz (through the codec's rate)."""
    import soundfile

    encoder, ext, rate, extra = FFMPEG_CODECS[codec]
    with tempfile.TemporaryDirectory(prefix="sw-codec-") as tmp:
        src, enc, dec = Path(tmp, "in.wav"), Path(tmp, f"enc.{ext}"), Path(tmp, "out.wav")
        soundfile.write(src, x, SAMPLE_RATE_HZ, subtype="PCM_16")
        base = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
        steps = [
            [*base, "-i", str(src), "-ar", str(rate), "-ac", "1", "-c:a", encoder, *extra, str(enc)],
            [*base, "-i", str(enc), "-ar", str(SAMPLE_RATE_HZ), "-ac", "1", "-c:a", "pcm_s16le", str(dec)],
        ]
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise AudioError(f"ffmpeg {codec} round trip failed: {done.stderr.strip()[:300]}")
        y, _ = soundfile.read(dec, dtype="float32")
    out = np.zeros_like(x)
    # Codecs add a little delay/padding; keep the original length.
    out[: min(x.size, y.size)] = y[: x.size]
    return _finish(out)


Op = Callable[[Wave, np.random.Generator, ChannelConfig], tuple[Wave, str]]
OPS: dict[str, Op] = {"gain": gain, "noise": noise, "reverb": reverb, "silence": silence}


def random_channel(
    x: Wave, rng: np.random.Generator, cfg: ChannelConfig, codecs: tuple[str, ...]
) -> tuple[Wave, list[str]]:
    """Apply 1..max_ops distinct operations in a random order; the codec, if drawn, goes last (as on a real line)."""
    names = [*OPS, *(["codec"] if codecs else [])]
    k = int(rng.integers(1, min(cfg.max_ops, len(names)) + 1))
    chosen = [names[i] for i in rng.permutation(len(names))[:k]]
    if "codec" in chosen:
        chosen = [c for c in chosen if c != "codec"] + ["codec"]
    tags: list[str] = []
    for name in chosen:
        if name == "codec":
            codec = codecs[int(rng.integers(len(codecs)))]
            x, tag = ffmpeg_round_trip(x, codec), codec
        else:
            x, tag = OPS[name](x, rng, cfg)
        tags.append(tag)
    return x, tags
