"""Constants and small helpers shared by the tests (imported as ``helpers``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def missing(message: str) -> NoReturn:
    """A tool or extra a test needs is absent: CI installs them all (.ci/run, the
    Makefile), so there it fails loudly; elsewhere it skips, saying why."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def la_clip(la_dir: Path, utt: str) -> Path:
    return la_dir / "flac" / f"{utt}.flac"


BONAFIDE_UTT = "LA_T_1272637"
SPOOF_UTTS = ("LA_T_1000137", "LA_D_1003356", "LA_E_6163791")

#: Seconds of genuine speech before the spoofed voice starts in the test stream.
ONSET_S = 8.0


def repeat_to(audio: Any, n: int) -> Any:
    """``audio`` tiled to exactly ``n`` samples."""
    return np.tile(audio, n // audio.size + 1)[:n]


def genuine_then_spoof(
    la_dir: Path, onset_s: float = ONSET_S, spoof_s: float = ONSET_S, spoof_utt: str = SPOOF_UTTS[0]
) -> Any:
    """The test stream: ``onset_s`` of the bona fide LA clip, then ``spoof_s`` of a spoofed one (16 kHz)."""
    from spoofwatch.audio import read_audio

    bona = read_audio(la_clip(la_dir, BONAFIDE_UTT))
    spoof = read_audio(la_clip(la_dir, spoof_utt))
    return np.concatenate(
        [repeat_to(bona, int(onset_s * 16000)), repeat_to(spoof, int(spoof_s * 16000))]
    ).astype(np.float32)


# ---- fakes for fast unit tests ------------------------------------------------


class FakeScorer:
    """A model stand-in: a window's score is 100 x its mean sample, so audio with
    a positive offset scores "genuine" and a negative offset "spoof"."""

    def __init__(self) -> None:
        self.calls = 0

    def scores(self, windows: Any) -> Any:
        self.calls += 1
        return (100.0 * windows.mean(axis=1, dtype=np.float64)).astype(np.float32)


class FakeVad:
    """silero's interface: every frame louder than -40 dBFS is speech."""

    def step_batch(self, frames_with_context: Any, states: Any) -> tuple[Any, Any]:
        frames = frames_with_context[:, 64:]
        rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
        return np.where(rms > 0.01, 0.9, 0.0).astype(np.float32), states


def offset_audio(seconds: float, offset: float, rng_seed: int = 0) -> Any:
    """Noise around ``offset``: FakeScorer scores it about 100 x offset; FakeVad calls it speech."""
    rng = np.random.default_rng(rng_seed)
    return (offset + 0.02 * rng.standard_normal(round(seconds * 16000))).astype(np.float32)


def fake_engine(hop_s: float = 0.5, max_pending_windows: int = 4, **policy: Any) -> Any:
    """An engine with the default calibration's policy and gate, on FakeVad."""
    from dataclasses import replace

    from spoofwatch.calibration.calfile import load_calibration
    from spoofwatch.stream.engine import EngineConfig, LiveConfig, build_engine

    cal = load_calibration(model="aasist-l")
    live = LiveConfig(EngineConfig(hop_s, max_pending_windows), cal.gate, replace(cal.policy, **policy))
    return build_engine(live, FakeVad())  # type: ignore[arg-type]
