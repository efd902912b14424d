"""The detection engine: one Sans-I/O object per stream.

It owns the windower, the speech gate and the alert policy, and never
scores by itself: ``push`` returns the windows that need a model score and
``resolve`` feeds scores back in stream order. That split lets every
adapter decide *where* inference runs (inline for files, a worker thread for
the microphone, a batch shared across WebSocket connections) while all of
them run this one implementation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import sample_problem
from spoofwatch.constants import LIVE_HOP_SAMPLES, SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.errors import InputError, ModelError

from .events import END_OF_STREAM, Event, ScoreEvent, StatusEvent, SummaryEvent
from .gate import VAD_FRAME_SAMPLES, GateConfig, GateResult, SpeechGate, VadModel, run_staged
from .policy import AlertPolicy, PolicyConfig
from .windower import Window, Windower

log = logging.getLogger(__name__)

#: Shortest hop: one VAD frame (32 ms). Finer hops would only re-score windows
#: the gate cannot tell apart, at one model call each.
MIN_HOP_S = VAD_FRAME_SAMPLES / SAMPLE_RATE_HZ
#: Longest hop: one window, so consecutive windows never leave audio unscored.
MAX_HOP_S = WINDOW_SAMPLES / SAMPLE_RATE_HZ


#: Longest backlog a live stream may keep (its waiting windows are held in memory).
MAX_LAG_S = 60.0
#: Speech windows in a row the model may fail on (NaN, Inf, or an error that
#: scoring turned into NaN) before the stream ends with a ModelError. A model
#: can fail on some audio and still score the rest; one that fails on every
#: window (a broken GPU session, a model unfit for this audio) would otherwise
#: leave a stream running that can never alert, with only a warning to show.
MAX_MODEL_FAILURES_IN_ROW = 20


@dataclass(frozen=True)
class EngineConfig:
    #: Seconds between the starts of consecutive windows, rounded to whole samples.
    #: Incremental scoring needs a multiple of 729 samples; the default is 8,019.
    hop_s: float = LIVE_HOP_SAMPLES / SAMPLE_RATE_HZ
    #: Windows a live stream may queue for scoring at least; beyond the
    #: driver's bound the oldest is dropped. The driver raises the bound to
    #: one more than the in-order backlog of an incremental stream
    #: (``max_lag_windows`` + 1), which a step needs to stay in order.
    max_pending_windows: int = 4
    #: Backlog (s of hops) within which a live stream scored incrementally
    #: still scores every window, in order; beyond it, it jumps to its freshest
    #: window. Streams scored from scratch always jump (see ``StreamDriver``).
    max_lag_s: float = 8.0

    def __post_init__(self) -> None:
        if not MIN_HOP_S <= self.hop_s <= MAX_HOP_S:
            raise InputError(
                f"hop_s: expected a value in [{MIN_HOP_S:g}, {MAX_HOP_S:.4f}] seconds "
                f"(one VAD frame to one window), got {self.hop_s}"
            )
        if self.max_pending_windows < 1:
            raise InputError(f"max_pending_windows: expected >= 1, got {self.max_pending_windows}")
        if not 0 < self.max_lag_s <= MAX_LAG_S:  # also refuses NaN
            raise InputError(
                f"max_lag_s: expected a value in (0, {MAX_LAG_S:g}] seconds, got {self.max_lag_s}"
            )

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * SAMPLE_RATE_HZ)

    @property
    def max_lag_windows(self) -> int:
        """``max_lag_s`` in windows (at least one)."""
        return max(1, int(self.max_lag_s * SAMPLE_RATE_HZ // self.hop_samples))


def check_hop_fits(config: EngineConfig, window_samples: int) -> None:
    """A hop no longer than the model's window: a model card's window can be
    shorter than the calibration's hop, and a longer hop would leave audio
    between windows that is never scored."""
    if config.hop_samples > window_samples:
        raise InputError(
            f"hop_s: expected at most the model's window ({window_samples} samples = "
            f"{window_samples / SAMPLE_RATE_HZ:g} s), got {config.hop_s:g} s "
            "(set a shorter hop_s in the calibration's [stream] table, or --hop-s where the command has it)"
        )


class Scorer(Protocol):
    """A model: bona fide logits for a batch of windows, each scored from scratch."""

    def scores(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


@runtime_checkable
class WindowScorer(Protocol):
    """What a driver calls to score ONE stream's windows, in stream order.

    Windows may be skipped (gated, dropped): the scorer sees the jump in
    ``start_sample``. Implementations: ``spoofwatch.stream.scoring``
    (incremental, or full windows through a ``Scorer``).
    """

    #: ``"incremental"`` (skipping a window saves nothing) or ``"full"`` (it
    #: saves a full pass): decides the stale-window rule of ``StreamDriver``.
    mode: str

    def score_window(self, window: Window) -> float:
        """Bona fide logit of ``window``, equal to scoring its samples from scratch."""
        ...

    def reset(self) -> None:
        """The stream restarted: forget anything cached."""
        ...


@dataclass(frozen=True)
class PendingWindow:
    """A window cut from the stream with its gate decision, awaiting resolution."""

    window: Window
    gate: GateResult


def validate_chunk(chunk: object, rate_hz: int = SAMPLE_RATE_HZ) -> npt.NDArray[np.float32]:
    """A chunk of mono audio as every input takes it: a 1-D float32 numpy array
    of finite samples within the bound (:func:`~spoofwatch.audio.sample_problem`)."""
    if not isinstance(chunk, np.ndarray) or chunk.dtype != np.float32 or chunk.ndim != 1:
        got = f"{chunk.dtype} {chunk.shape}" if isinstance(chunk, np.ndarray) else type(chunk).__name__
        raise InputError(f"expected a 1-D float32 numpy chunk at {rate_hz} Hz, got {got}")
    if (problem := sample_problem(chunk)) is not None:  # the rule every input adapter applies first
        raise InputError(problem)
    return chunk


class Engine:
    """``push(chunk) -> [PendingWindow]``; ``resolve(pending, score) -> [Event]``.

    ``push`` touches only the windower, the gate and the window count;
    ``resolve`` and ``drop`` write only the policy and the other counters
    (``drop`` reads the window count). A driver
    (:class:`~spoofwatch.stream.driver.StreamDriver`) may therefore push from
    one thread while resolving on another, as long as each of the two is
    called from one thread at a time.
    """

    def __init__(
        self,
        config: EngineConfig,
        gate_config: GateConfig,
        policy_config: PolicyConfig,
        vad: VadModel,
        window_samples: int = WINDOW_SAMPLES,
    ) -> None:
        self.config = config
        check_hop_fits(config, window_samples)
        # window_samples: the model's input length (a model card may declare its own).
        self.windower = Windower(config.hop_samples, window_samples)
        # push() feeds the gate at most one hop ahead of the windows it assesses,
        # so one window plus one hop of VAD frames (and a frame of slack) suffices.
        history = (window_samples + config.hop_samples) // VAD_FRAME_SAMPLES + 2
        self.gate = SpeechGate(gate_config, vad, history_frames=history)
        self.policy = AlertPolicy(policy_config)
        self.reset()

    def reset(self) -> None:
        self.windower.reset()
        self.gate.reset()
        self.policy.reset()
        self.windows = 0
        self.scored_windows = 0
        self.dropped_windows = 0
        self.model_failures = 0
        self._failures_in_row = 0
        self._last_t = 0.0

    @property
    def duration_s(self) -> float:
        return self.windower.total_samples / SAMPLE_RATE_HZ

    def push(self, chunk: npt.NDArray[np.float32]) -> list[PendingWindow]:
        """Feed 16 kHz mono float32 audio; returns windows in stream order
        (:func:`push_many` does the same for many streams at once)."""
        pending = []
        for part in self.parts(validate_chunk(chunk)):
            self.gate.stage(part)
            run_staged((self.gate,))
            pending += self.cut_windows(part)
        return pending

    def parts(self, chunk: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """``chunk`` in slices of at most one hop: fed one at a time, they keep
        the gate's VAD frames at most a hop ahead of the windows it assesses
        (its history holds a window and a hop), whatever the caller's chunk size."""
        step = self.config.hop_samples
        return [chunk[pos : pos + step] for pos in range(0, chunk.shape[0], step)]

    def cut_windows(self, part: npt.NDArray[np.float32]) -> list[PendingWindow]:
        """The windows ``part`` (one of :meth:`parts`) completes, assessed by the
        gate, which must have run the VAD on the part already."""
        return [self._pend(w) for w in self.windower.push(part)]

    def flush(self) -> list[PendingWindow]:
        """End of stream: a padded window if the stream was shorter than one window."""
        return [self._pend(w) for w in self.windower.flush()]

    def _pend(self, window: Window) -> PendingWindow:
        self.windows += 1
        return PendingWindow(window, self.gate.assess(window))

    def resolve(self, pending: PendingWindow, score: float | None) -> list[Event]:
        """Feed the model score of a speech window (``None`` for a gated one)."""
        w, gate = pending.window, pending.gate
        self._last_t = w.t_end
        if score is not None and not math.isfinite(score):
            return [self._model_failed(pending, score)]
        if not gate.speech or score is None:
            since = w.t_start if gate.speech_end_s is None else gate.speech_end_s
            events = self.policy.no_speech(w.t_end, since)
            return [
                ScoreEvent(
                    w.t_start,
                    w.t_end,
                    None,
                    self.policy.smoothed,
                    False,
                    gate.speech_fraction,
                    gate.speech_end_s,
                ),
                *events,
            ]
        self.scored_windows += 1
        self._failures_in_row = 0
        events = self.policy.update(w.t_end, score)
        return [
            ScoreEvent(
                w.t_start,
                w.t_end,
                score,
                self.policy.smoothed,
                True,
                gate.speech_fraction,
                gate.speech_end_s,
            ),
            *events,
        ]

    def _model_failed(self, pending: PendingWindow, score: float) -> ScoreEvent:
        """A non-finite score (a model card's model can return one; the
        official model cannot on sanitised audio): the window counts as
        dropped, the alert policy never sees it, and no NaN reaches an event."""
        w = pending.window
        if not self.model_failures:
            log.warning(
                "the model returned a non-finite score (%s) for the window %.2f-%.2f s; "
                "such windows are counted as dropped",
                score,
                w.t_start,
                w.t_end,
            )
        self.model_failures += 1
        self.dropped_windows += 1
        self._failures_in_row += 1
        if self._failures_in_row >= MAX_MODEL_FAILURES_IN_ROW:
            raise ModelError(
                f"the model failed on {self._failures_in_row} speech windows in a row (up to "
                f"{w.t_end:.2f} s): it cannot score this stream"
            )
        gate = pending.gate
        return ScoreEvent(
            w.t_start,
            w.t_end,
            None,
            self.policy.smoothed,
            gate.speech,
            gate.speech_fraction,
            gate.speech_end_s,
        )

    def drop(self, pending: PendingWindow) -> None:
        """The driver fell behind (or the stream was aborted) and discarded this
        window unscored. Its audio was still heard: stream time moves to its end."""
        if pending.window.index >= self.windows:
            raise InputError(f"drop: window {pending.window.index} was not cut by this engine")
        self.dropped_windows += 1
        self._last_t = max(self._last_t, pending.window.t_end)

    def finish(self, reason: str = END_OF_STREAM) -> list[Event]:
        """End of stream: close any open alert (with ``reason``) and summarise."""
        return [*self.policy.finish(max(self._last_t, self.duration_s), reason), self.summary(reason)]

    def status(
        self, overruns: int = 0, lost_samples: int = 0, input_overflows: int = 0, **info: object
    ) -> StatusEvent:
        return StatusEvent(overruns, lost_samples, self.dropped_windows, input_overflows, dict(info))

    def summary(self, reason: str = END_OF_STREAM) -> SummaryEvent:
        return SummaryEvent(
            round(self.duration_s, 6),
            self.windows,
            self.scored_windows,
            self.policy.alerts,
            self.dropped_windows,
            reason,
        )


@dataclass(frozen=True)
class LiveConfig:
    """Everything an engine is built from: plain config objects, whatever file they came from."""

    stream: EngineConfig
    gate: GateConfig
    policy: PolicyConfig
    #: The model's input length in samples. Not a calibration setting: the
    #: command layer sets it from the model in use (a model card may declare
    #: its own; the built-in AASIST models take ``WINDOW_SAMPLES``).
    window_samples: int = WINDOW_SAMPLES


def push_many(
    engines: Sequence[Engine], chunks: Sequence[npt.NDArray[np.float32]]
) -> list[list[PendingWindow]]:
    """``Engine.push`` for many streams at once, the VAD frames run in
    batches across the streams
    (:func:`~spoofwatch.stream.gate.run_staged`): the same windows and gate
    decisions as pushing each alone, for about half the VAD's CPU time (a
    server worker's ingest tick)."""
    parts = [engine.parts(validate_chunk(chunk)) for engine, chunk in zip(engines, chunks, strict=True)]
    pending: list[list[PendingWindow]] = [[] for _ in engines]
    for k in range(max(map(len, parts), default=0)):
        active = [i for i, stream_parts in enumerate(parts) if k < len(stream_parts)]
        for i in active:
            engines[i].gate.stage(parts[i][k])
        run_staged([engines[i].gate for i in active])
        for i in active:
            pending[i] += engines[i].cut_windows(parts[i][k])
    return pending


def build_engine(live: LiveConfig, vad: VadModel, hop_s: float | None = None) -> Engine:
    """The one way to build an engine (``hop_s`` overrides the configured hop)."""
    from dataclasses import replace

    stream = live.stream if hop_s is None else replace(live.stream, hop_s=hop_s)
    return Engine(stream, live.gate, live.policy, vad, live.window_samples)
