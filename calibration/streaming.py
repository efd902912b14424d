"""Streaming calibration: simulated conversations through the real live engine.

Conversations are built from dataset utterances: bona fide-only streams,
and streams that switch from bona fide to spoof speech (same speaker when
the protocol has one). Each is run once through the live engine (gate,
windows, model: the code ``monitor`` and ``serve`` run) to record its window
scores; alert policies are then replayed on those traces with the same
:class:`AlertPolicy` class, so every candidate is judged exactly as it would
behave live, without re-running the model per candidate.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import read_audio
from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import CalibrationError
from spoofwatch.stream.driver import StreamDriver
from spoofwatch.stream.engine import Engine, Scorer
from spoofwatch.stream.events import ScoreEvent
from spoofwatch.stream.policy import AlertPolicy, PolicyConfig

from .dataset import Dataset

log = logging.getLogger(__name__)

#: Candidate smoothing lengths and minimum alert lengths, in windows.
SMOOTHING_WINDOWS = (1, 2, 3, 4, 6, 8)
MIN_ALERT_WINDOWS = (1, 2, 3, 4)
#: Candidate hysteresis widths: exit threshold minus enter threshold.
HYSTERESIS_MARGINS = (0.5, 1.0, 2.0)
N_THRESHOLDS = 16


@dataclass(frozen=True)
class Conversation:
    name: str
    audio: npt.NDArray[np.float32]
    onset_s: float | None  # None: bona fide throughout


#: Genuine audio below which ``calibrate bonafide`` and ``fit --audio-dir``
#: warn: a rate per hour measured on a few minutes rests on a handful of windows.
MIN_BONAFIDE_MINUTES = 10.0
#: The version of :class:`Trace`'s content, part of every cache key of traces:
#: 2 since windows carry where a gated window's silence began.
TRACE_FORMAT = 2


@dataclass(frozen=True)
class Trace:
    name: str
    duration_s: float
    onset_s: float | None
    #: (t_end, score or None when gated, silent since: where a gated window's
    #: silence began, as the live engine tells the policy; None when scored).
    windows: list[tuple[float, float | None, float | None]]
    #: Speech windows the model gave no finite score (NaN/Inf), left out of ``windows``.
    unscored_windows: int = 0


@dataclass(frozen=True)
class StreamMetrics:
    false_alerts_per_hour: float
    detection_rate: float
    median_delay_s: float | None
    p90_delay_s: float | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _concat_until(paths: list[Any], seconds: float, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    parts: list[npt.NDArray[np.float32]] = []
    total = 0
    while total < seconds * SAMPLE_RATE_HZ:
        audio = read_audio(paths[int(rng.integers(len(paths)))])
        parts.append(audio)
        total += audio.size
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE_HZ)]


def build_conversations(dataset: Dataset, n_each: int, seconds: float, seed: int = 0) -> list[Conversation]:
    """``n_each`` bona fide-only and ``n_each`` bona fide -> spoof conversations."""
    rng = np.random.default_rng(seed)
    bona = [t for t in dataset.trials if t.label == "bonafide"]
    spoof = [t for t in dataset.trials if t.label == "spoof"]
    if not bona or not spoof:
        raise CalibrationError("streaming calibration needs both bona fide and spoof utterances")
    conversations = []
    for i in range(n_each):
        conversations.append(
            Conversation(
                f"bonafide-{i}", _concat_until([dataset.paths[t.utt] for t in bona], seconds, rng), None
            )
        )
    for i in range(n_each):
        speaker = bona[int(rng.integers(len(bona)))].speaker
        own_bona = [t for t in bona if t.speaker == speaker] or bona
        own_spoof = [t for t in spoof if t.speaker == speaker] or spoof
        half = seconds / 2
        first = _concat_until([dataset.paths[t.utt] for t in own_bona], half, rng)
        second = _concat_until([dataset.paths[t.utt] for t in own_spoof], seconds - half, rng)
        conversations.append(
            Conversation(f"switch-{i}", np.concatenate([first, second]), first.size / SAMPLE_RATE_HZ)
        )
    return conversations


def trace(conversation: Conversation, engine: Engine, scorer: Scorer) -> Trace:
    """Run one conversation through the live engine; record every window."""
    engine.reset()
    driver = StreamDriver(engine)
    audio = conversation.audio
    events = [e for pos in range(0, audio.size, 4096) for e in driver.feed(audio[pos : pos + 4096], scorer)]
    events += driver.close(scorer)
    scored = [e for e in events if isinstance(e, ScoreEvent)]
    # A speech window without a score is one the model gave no finite score:
    # live, the policy never sees it (it is neither a score nor silence).
    windows = [(e.t_end, e.score, _silent_since(e)) for e in scored if e.score is not None or not e.speech]
    return Trace(
        conversation.name,
        audio.size / SAMPLE_RATE_HZ,
        conversation.onset_s,
        windows,
        unscored_windows=sum(1 for e in scored if e.score is None and e.speech),
    )


def _silent_since(event: ScoreEvent) -> float | None:
    """What the engine passed the policy for a gated window (None for a scored one)."""
    if event.score is not None:
        return None
    return event.t_start if event.speech_end_s is None else event.speech_end_s


def alert_spans(tr: Trace, policy: PolicyConfig) -> list[tuple[float, float]]:
    """``(start, end)`` of each alert the policy raises on a recorded trace;
    one still open when the trace ends ends with it."""
    p = AlertPolicy(policy)
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for t, score, since in tr.windows:
        for e in p.no_speech(t, since) if score is None else p.update(t, score):
            if e.type == "alert_start":
                start = e.t  # type: ignore[attr-defined]
            elif e.type == "alert_end" and start is not None:
                spans.append((start, e.t))  # type: ignore[attr-defined]
                start = None
    if start is not None:
        spans.append((start, max(start, tr.duration_s)))
    return spans


def replay(tr: Trace, policy: PolicyConfig) -> list[float]:
    """Alert start times the policy raises on a recorded trace."""
    return [start for start, _ in alert_spans(tr, policy)]


def _bona_fide_s(tr: Trace) -> float:
    """Seconds of the trace before its spoof onset (all of it when it has none)."""
    return tr.onset_s if tr.onset_s is not None else tr.duration_s


def _bona_fide_hours(traces: list[Trace]) -> float:
    """Hours of bona fide audio in ``traces``, summed exactly: the same in any
    order, so that a rate compared with a target decides the same way however
    a search orders the recordings."""
    return math.fsum(_bona_fide_s(tr) for tr in traces) / 3600


def false_alert_spans(traces: list[Trace], policy: PolicyConfig) -> list[tuple[str, float, float]]:
    """``(recording, start s, end s)`` of every false alert: one that starts
    in a recording's bona fide part."""
    return [
        (tr.name, start, end)
        for tr in traces
        for start, end in alert_spans(tr, policy)
        if start <= _bona_fide_s(tr)
    ]


def meets_false_alert_target(traces: list[Trace], policy: PolicyConfig, target_per_hour: float) -> bool:
    """Whether ``measure(traces, policy).false_alerts_per_hour <= target_per_hour``,
    decided as soon as the count passes the target: a search that tries the
    most sensitive thresholds first rejects most of them within a recording
    or two instead of replaying every one."""
    return false_alert_overrun(traces, policy, target_per_hour) == 0


def false_alert_overrun(traces: list[Trace], policy: PolicyConfig, target_per_hour: float) -> int:
    """How many of ``traces``, replayed in order, give more false alerts per
    hour (of all the traces' bona fide audio) than ``target_per_hour``; 0 when
    all of them together stay within it. Those first recordings alone decide
    that ``policy`` misses the target, which lets a search skip thresholds
    that do not change their alerts."""
    hours = _bona_fide_hours(traces)
    if not hours:
        return 0 if target_per_hour >= 0.0 else max(len(traces), 1)
    false_alerts = 0
    for k, tr in enumerate(traces, 1):
        onset = _bona_fide_s(tr)
        false_alerts += sum(1 for t in replay(tr, policy) if t <= onset)
        if false_alerts / hours > target_per_hour:  # the count only grows
            return k
    return 0


def measure(traces: list[Trace], policy: PolicyConfig) -> StreamMetrics:
    """False alerts per hour of bona fide audio; detection rate and delay after spoof onsets."""
    false_alerts = 0
    hours = _bona_fide_hours(traces)
    delays = []
    switches = 0
    for tr in traces:
        starts = replay(tr, policy)
        onset = _bona_fide_s(tr)
        false_alerts += sum(1 for t in starts if t <= onset)
        if tr.onset_s is not None:
            switches += 1
            late = [t - tr.onset_s for t in starts if t > tr.onset_s]
            if late:
                delays.append(late[0])
    d = np.array(delays)
    return StreamMetrics(
        false_alerts / hours if hours else 0.0,
        len(delays) / switches if switches else 0.0,
        float(np.median(d)) if d.size else None,
        float(np.percentile(d, 90)) if d.size else None,
    )


def candidate_thresholds(traces: list[Trace], n: int = N_THRESHOLDS) -> list[float]:
    scores = np.array([s for tr in traces for _, s, _ in tr.windows if s is not None])
    if scores.size == 0:
        raise CalibrationError("no window passed the speech gate: nothing to calibrate on")
    return sorted({float(q) for q in np.quantile(scores, np.linspace(0.02, 0.98, n))})


def fit_policy(
    traces: list[Trace], base: PolicyConfig, target_false_alerts_per_hour: float
) -> tuple[PolicyConfig, StreamMetrics]:
    """Smoothing, minimum length, thresholds and hysteresis width that meet the
    false-alert target on bona fide audio, with the best detection rate, then
    the lowest median delay, then the fewest false alerts (with 0 % detected,
    the first setting within the target was kept, even when others gave none)."""
    longest = max((sum(1 for _, score, _ in tr.windows if score is not None) for tr in traces), default=0)
    lengths = [m for m in MIN_ALERT_WINDOWS if m <= longest]
    if not lengths:
        # No setting could alert: every one would "meet" the target (as in calibrate bonafide).
        raise CalibrationError(
            f"an alert needs at least {min(MIN_ALERT_WINDOWS)} scored windows in one conversation, and "
            f"the longest has {longest}: simulate longer conversations (--conversation-s)"
        )
    minutes = _bona_fide_hours(traces) * 60
    if minutes < MIN_BONAFIDE_MINUTES:
        log.warning(
            "%.1f min of genuine conversation audio: a false-alert rate per hour measured on less than %g min "
            "says little; simulate more (--conversations, --conversation-s)",
            minutes,
            MIN_BONAFIDE_MINUTES,
        )
    best: tuple[tuple[float, float, float], PolicyConfig, StreamMetrics] | None = None
    grid = itertools.product(SMOOTHING_WINDOWS, lengths, candidate_thresholds(traces), HYSTERESIS_MARGINS)
    for k, m, threshold, margin in grid:
        policy = dataclasses.replace(base, smoothing_windows=k, min_alert_windows=m).with_band(
            threshold, margin
        )
        metrics = measure(traces, policy)
        if metrics.false_alerts_per_hour > target_false_alerts_per_hour:
            continue
        key = (
            -metrics.detection_rate,
            metrics.median_delay_s if metrics.median_delay_s is not None else np.inf,
            metrics.false_alerts_per_hour,
        )
        if best is None or key < best[0]:
            best = (key, policy, metrics)
    if best is None:
        raise CalibrationError(
            f"no smoothing/threshold setting meets {target_false_alerts_per_hour} false alerts per hour"
        )
    return best[1], best[2]


def sweep_thresholds(traces: list[Trace], policy: PolicyConfig) -> list[tuple[float, StreamMetrics]]:
    """Metrics across enter thresholds with the chosen smoothing, for the report."""
    return [(t, measure(traces, policy.with_band(t))) for t in candidate_thresholds(traces, 40)]
