"""Waveform augmentations for robustness training.

Each takes a float32 waveform at 16 kHz and a ``numpy.random.Generator``
and returns a new float32 array of the same shape, clipped to [-1, 1]; the
same seed always gives the same output. The RawBoost-style ones follow the
ideas of Tak et al. (ICASSP 2022): linear and non-linear convolutive noise,
and impulsive signal-dependent noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import ConfigError

Wave = npt.NDArray[np.float32]
Augment = Callable[[Wave, np.random.Generator], Wave]


def _finish(x: npt.NDArray[np.floating]) -> Wave:
    out: Wave = np.clip(x, -1.0, 1.0).astype(np.float32)
    return out


def gain(x: Wave, rng: np.random.Generator, min_db: float = -12.0, max_db: float = 6.0) -> Wave:
    """Scale by a random gain: AASIST-L's score moves with input level."""
    return _finish(x * 10 ** (rng.uniform(min_db, max_db) / 20))


def add_noise(x: Wave, rng: np.random.Generator, min_snr_db: float = 10.0, max_snr_db: float = 40.0) -> Wave:
    """White noise at a random SNR."""
    power = float(np.mean(np.square(x, dtype=np.float64))) or 1e-10
    snr = rng.uniform(min_snr_db, max_snr_db)
    noise = rng.standard_normal(x.shape) * np.sqrt(power / 10 ** (snr / 10))
    return _finish(x + noise)


def _fir_bandpass(low_hz: float, high_hz: float, taps: int, rate_hz: int) -> npt.NDArray[np.float64]:
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * high_hz / rate_hz * np.sinc(2 * high_hz * n / rate_hz) - 2 * low_hz / rate_hz * np.sinc(
        2 * low_hz * n / rate_hz
    )
    return h * np.hamming(taps)


def telephony(x: Wave, rng: np.random.Generator) -> Wave:
    """A phone channel: 300-3400 Hz band-limit, 8 kHz resampling and a G.711 μ-law round trip."""
    from spoofwatch.audio import resample
    from spoofwatch.stream.codecs import MULAW_TO_FLOAT, mulaw_encode

    low = rng.uniform(200.0, 400.0)
    high = rng.uniform(3200.0, 3600.0)
    band = np.convolve(x, _fir_bandpass(low, high, 101, SAMPLE_RATE_HZ), mode="same").astype(np.float32)
    narrow = resample(np.clip(band, -1, 1), SAMPLE_RATE_HZ, 8000)
    decoded = MULAW_TO_FLOAT[np.frombuffer(mulaw_encode(narrow), dtype=np.uint8)]
    wide = resample(decoded, 8000, SAMPLE_RATE_HZ)
    out = np.zeros_like(x)
    out[: min(x.size, wide.size)] = wide[: x.size]
    return _finish(out)


def _random_filter(rng: np.random.Generator, bands: int) -> npt.NDArray[np.float64]:
    # A sum of random band-pass filters: a random coloured channel response.
    h = np.zeros(101)
    for _ in range(bands):
        centre = rng.uniform(20, 8000 - 100)
        width = rng.uniform(100, 1000)
        h += _fir_bandpass(max(centre - width / 2, 1.0), min(centre + width / 2, 7999.0), 101, SAMPLE_RATE_HZ)
    return h


def rawboost_convolutive(x: Wave, rng: np.random.Generator, orders: int = 5) -> Wave:
    """Linear and non-linear convolutive noise: x + x^2 + ... each through a random filter."""
    out = np.zeros(x.shape, dtype=np.float64)
    for order in range(1, orders + 1):
        filtered = np.convolve(np.power(x.astype(np.float64), order), _random_filter(rng, 3), mode="same")
        out += filtered * rng.uniform(0.0, 1.0) ** (order - 1)
    peak = np.max(np.abs(out)) or 1.0
    return _finish(out / peak * np.max(np.abs(x)))


def rawboost_impulsive(x: Wave, rng: np.random.Generator, max_fraction: float = 0.1) -> Wave:
    """Impulsive signal-dependent noise on a random fraction of the samples."""
    out = x.astype(np.float64)
    count = int(rng.uniform(0, max_fraction) * x.size)
    idx = rng.choice(x.size, size=count, replace=False)
    out[idx] += x[idx] * rng.uniform(-1, 1, size=count) * rng.uniform(1, 10)
    return _finish(out)


AUGMENTATIONS: dict[str, Augment] = {
    "gain": gain,
    "noise": add_noise,
    "telephony": telephony,
    "rawboost_convolutive": rawboost_convolutive,
    "rawboost_impulsive": rawboost_impulsive,
}


@dataclass(frozen=True)
class AugmentConfig:
    #: Names from AUGMENTATIONS, each applied with probability ``probability``.
    names: tuple[str, ...] = ()
    probability: float = 0.5

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(
                f"unknown augmentation(s) {', '.join(unknown)}: expected some of {', '.join(AUGMENTATIONS)}"
            )
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"augment probability must be in [0, 1], got {self.probability}")

    def apply(self, x: Wave, rng: np.random.Generator) -> Wave:
        for name in self.names:
            if rng.uniform() < self.probability:
                x = AUGMENTATIONS[name](x, rng)
        return x
