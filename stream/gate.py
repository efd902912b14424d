"""Speech gate: a VAD model plus an energy floor (Sans-I/O: the model is injected).

AASIST-L scores silence, noise and tones as spoof-like, so a window is only
scored when enough of it is speech. The VAD (:class:`VadModel`; in the
product silero-vad's ONNX model, loaded by :mod:`spoofwatch.stream.vad`)
runs once per 32 ms frame as audio arrives (frames aligned to the stream
start, so chunking cannot change the result) and each window looks up the
frames it covers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import InputError

from .windower import Window

#: silero VAD frame and context sizes at 16 kHz (fixed by the model).
VAD_FRAME_SAMPLES = 512
_VAD_CONTEXT_SAMPLES = 64
_VAD_STATE_SHAPE = (2, 1, 128)
#: Floor used when a frame is exactly zero, so dBFS stays finite.
_MIN_DBFS = -120.0


@dataclass(frozen=True)
class GateConfig:
    #: silero speech probability at or above which a frame counts as speech.
    vad_threshold: float = 0.5
    #: Fraction of a window's frames that must be speech for it to be scored.
    min_speech_fraction: float = 0.25
    #: Frames and windows quieter than this RMS level (dBFS) are never speech.
    energy_floor_dbfs: float = -60.0

    def __post_init__(self) -> None:
        if not 0.0 < self.vad_threshold < 1.0:
            raise InputError(f"gate.vad_threshold: expected a value in (0, 1), got {self.vad_threshold}")
        if not 0.0 <= self.min_speech_fraction <= 1.0:
            raise InputError(
                f"gate.min_speech_fraction: expected a value in [0, 1], got {self.min_speech_fraction}"
            )
        if self.energy_floor_dbfs > 0:
            raise InputError(f"gate.energy_floor_dbfs: expected <= 0 dBFS, got {self.energy_floor_dbfs}")


@dataclass(frozen=True)
class GateResult:
    speech: bool
    speech_fraction: float
    level_dbfs: float
    #: Stream time (s) where the window's last speech frame ends; ``None``: no speech frame in it.
    speech_end_s: float | None = None


def rms_dbfs(x: npt.NDArray[np.float32]) -> float:
    """RMS level of ``x`` in dBFS (``_MIN_DBFS`` for silence or no samples)."""
    return float(rows_rms_dbfs(x.reshape(1, -1))[0]) if x.size else _MIN_DBFS


def rows_rms_dbfs(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """:func:`rms_dbfs` of each row of a (B, N) array, in one pass: a VAD
    round's frames cost one numpy call instead of B (~25 us each, a tenth of
    a server's host cost). A row's level does not depend on the batch around
    it, bit for bit (tests/test_engine.py)."""
    rms = np.sqrt(np.mean(np.square(rows, dtype=np.float64), axis=1))
    with np.errstate(divide="ignore"):  # a silent row: -inf, floored below
        levels: npt.NDArray[np.float64] = np.maximum(20.0 * np.log10(rms), _MIN_DBFS)
    return levels


class VadModel(Protocol):
    """A voice-activity model stepped over 32 ms frames of many streams at once
    (the ONNX adapter: :class:`spoofwatch.stream.vad.SileroVad`). Thread-safe:
    per-stream state lives in :class:`SpeechGate`."""

    def step_batch(
        self, frames_with_context: npt.NDArray[np.float32], states: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(B, 64 + 512) samples and states (2, B, 128) -> speech probabilities (B,) and new states.

        Rows are independent streams: a row's result must not depend on the batch around it."""
        ...


class SpeechGate:
    """Per-stream gate: ``stage(chunk)`` as audio arrives, then :func:`run_staged`;
    ``assess(window)`` per window."""

    def __init__(self, config: GateConfig, vad: VadModel, history_frames: int) -> None:
        self.config = config
        self._vad = vad
        self._history_frames = history_frames
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros(_VAD_STATE_SHAPE, dtype=np.float32)
        self._buffer = np.zeros(_VAD_CONTEXT_SAMPLES + VAD_FRAME_SAMPLES, dtype=np.float32)
        self._filled = 0  # samples of the current frame received so far
        self._frames_done = 0
        # Complete frames (with their context, (576,)) waiting for the VAD, oldest first.
        self._staged: deque[npt.NDArray[np.float32]] = deque()
        # (frame index, counts as speech) for the most recent frames
        self._frames: deque[tuple[int, bool]] = deque(maxlen=self._history_frames)

    def stage(self, chunk: npt.NDArray[np.float32]) -> None:
        """Buffer ``chunk``; the frames it completes wait for the VAD
        (:func:`run_staged`, for one stream or many at once)."""
        pos = 0
        while pos < chunk.shape[0]:
            take = min(chunk.shape[0] - pos, VAD_FRAME_SAMPLES - self._filled)
            start = _VAD_CONTEXT_SAMPLES + self._filled
            self._buffer[start : start + take] = chunk[pos : pos + take]
            self._filled += take
            pos += take
            if self._filled == VAD_FRAME_SAMPLES:
                self._staged.append(self._buffer.copy())
                # The model wants the previous frame's last 64 samples as context.
                self._buffer[:_VAD_CONTEXT_SAMPLES] = self._buffer[-_VAD_CONTEXT_SAMPLES:]
                self._filled = 0

    def record(self, prob: float, state: npt.NDArray[np.float32], level_dbfs: float) -> None:
        """The VAD's result for the oldest staged frame: its probability, the
        next state, and the frame's level (:func:`rows_rms_dbfs`)."""
        self._staged.popleft()
        self._state = state
        loud = level_dbfs >= self.config.energy_floor_dbfs
        self._frames.append((self._frames_done, loud and prob >= self.config.vad_threshold))
        self._frames_done += 1

    def assess(self, window: Window) -> GateResult:
        """Speech decision for a window, from the VAD frames inside it."""
        level = rms_dbfs(window.samples)
        first = -(-window.start_sample // VAD_FRAME_SAMPLES)  # first frame fully inside
        last = window.end_sample // VAD_FRAME_SAMPLES  # exclusive
        inside = [(index, speech) for index, speech in self._frames if first <= index < last]
        flags = [speech for _, speech in inside]
        fraction = float(np.mean(flags)) if flags else 0.0
        speech = (
            level >= self.config.energy_floor_dbfs
            and bool(flags)
            and fraction >= self.config.min_speech_fraction
        )
        spoken = [index for index, speech in inside if speech]
        end_s = (spoken[-1] + 1) * VAD_FRAME_SAMPLES / SAMPLE_RATE_HZ if spoken else None
        return GateResult(speech, fraction, level, end_s)


#: Most frames in one batched VAD call (past ~32 a frame costs no less).
VAD_MAX_BATCH_FRAMES = 64


def run_staged(gates: Sequence[SpeechGate]) -> None:
    """Run every staged frame of many gates, batched across gates.

    Each round takes the oldest staged frame of every gate that has one (a
    gate's frames must go in order: the VAD's state is recurrent), so the
    flags are exactly those of running each gate's frames alone.
    """
    waiting = [gate for gate in gates if gate._staged]
    while waiting:
        for start in range(0, len(waiting), VAD_MAX_BATCH_FRAMES):
            _run_round(waiting[start : start + VAD_MAX_BATCH_FRAMES])
        waiting = [gate for gate in waiting if gate._staged]


def _run_round(gates: Sequence[SpeechGate]) -> None:
    by_model: dict[int, list[SpeechGate]] = {}
    for gate in gates:
        by_model.setdefault(id(gate._vad), []).append(gate)
    for group in by_model.values():
        if len(group) == 1:  # one stream (a file, the microphone): nothing to stack
            gate = group[0]
            frame = gate._staged[0][None]  # (1, 576)
            probs, new_state = gate._vad.step_batch(frame, gate._state)
            gate.record(float(probs[0]), new_state, float(rows_rms_dbfs(frame[:, _VAD_CONTEXT_SAMPLES:])[0]))
            continue
        frames = np.stack([gate._staged[0] for gate in group])  # (B, 576)
        states = np.concatenate([gate._state for gate in group], axis=1)  # (2, B, 128)
        probs, new_states = group[0]._vad.step_batch(frames, states)
        levels = rows_rms_dbfs(frames[:, _VAD_CONTEXT_SAMPLES:])  # (B,), the frames without context
        for i, gate in enumerate(group):
            gate.record(float(probs[i]), np.ascontiguousarray(new_states[:, i : i + 1]), float(levels[i]))
