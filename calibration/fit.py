"""Choosing thresholds: from labelled dev scores, or from genuine audio alone."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from spoofwatch.stream.policy import AlertPolicy, PolicyConfig

from spoofwatch.errors import CalibrationError, InputError

from .calfile import Calibration
from .metrics import eer
from .protocol import ScoreTable

TARGETS = ("eer", "bonafide-false-alarm", "spoof-miss")


def threshold_for(table: ScoreTable, target: str, rate: float | None = None) -> float:
    """Score threshold (bona fide if >=) for an operating point.

    - ``eer``: where bona fide rejections equal spoof acceptances;
    - ``bonafide-false-alarm``: at most ``rate`` of bona fide scores fall below it;
    - ``spoof-miss``: at most ``rate`` of spoof scores reach it.
    """
    bona, spoof = table.by_label("bonafide"), table.by_label("spoof")
    if target == "eer":
        return eer(bona, spoof)[1]
    if rate is None or not 0.0 <= rate < 1.0:
        raise InputError(f"target {target!r} needs --rate in [0, 1), got {rate}")
    if target == "bonafide-false-alarm":
        if bona.size == 0:
            raise CalibrationError("no bona fide scores to set a false-alarm rate from")
        return float(np.quantile(bona, rate, method="lower"))
    if target == "spoof-miss":
        if spoof.size == 0:
            raise CalibrationError("no spoof scores to set a miss rate from")
        return float(np.nextafter(np.quantile(spoof, 1.0 - rate, method="higher"), np.inf))
    raise InputError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")


def with_threshold(base: Calibration, threshold: float, provenance: dict[str, Any]) -> Calibration:
    """``base`` with a new threshold; the alert band keeps its width."""
    margin = base.policy.exit_threshold - base.policy.enter_threshold
    policy = dataclasses.replace(base.policy, enter_threshold=threshold, exit_threshold=threshold + margin)
    stamp = {"created": datetime.date.today().isoformat(), **provenance}
    return dataclasses.replace(base, threshold=threshold, policy=policy, provenance=stamp)


@dataclass(frozen=True)
class StreamTrace:
    """What the engine saw of one genuine recording: (t_end, score or None) per window."""

    name: str
    duration_s: float
    windows: list[tuple[float, float | None]]


def count_alerts(traces: list[StreamTrace], policy: PolicyConfig) -> int:
    alerts = 0
    for trace in traces:
        p = AlertPolicy(policy)
        for t, score in trace.windows:
            if score is None:
                p.no_speech(t)
            else:
                p.update(t, score)
        alerts += p.alerts
    return alerts


def bonafide_threshold(
    traces: list[StreamTrace], base: PolicyConfig, target_per_hour: float
) -> tuple[float, float]:
    """Highest enter threshold whose false alerts per hour on genuine audio stay
    within ``target_per_hour``; returns ``(threshold, achieved rate)``."""
    hours = sum(t.duration_s for t in traces) / 3600
    scores: npt.NDArray[np.float64] = np.array([s for t in traces for _, s in t.windows if s is not None])
    if hours <= 0 or scores.size == 0:
        raise CalibrationError("no speech found in the genuine recordings: nothing to calibrate on")
    margin = base.exit_threshold - base.enter_threshold
    # Candidates: just below each distinct smoothed level, highest (most sensitive) first.
    for candidate in np.unique(np.concatenate([scores, [scores.min() - 1.0]]))[::-1]:
        threshold = float(np.nextafter(candidate, -np.inf))
        policy = dataclasses.replace(base, enter_threshold=threshold, exit_threshold=threshold + margin)
        rate = count_alerts(traces, policy) / hours
        if rate <= target_per_hour:
            return threshold, rate
    raise CalibrationError("no threshold meets the target")  # unreachable: below every score nothing alerts


def trace_file(path: Path, engine: Any, scorer: Any) -> StreamTrace:
    """Run a recording through the real live engine and record its window scores."""
    from spoofwatch.stream.events import ScoreEvent
    from spoofwatch.stream.runner import InlineRunner

    from spoofwatch.audio import read_audio

    engine.reset()
    runner = InlineRunner(engine, scorer)
    audio = read_audio(path)
    events = [e for pos in range(0, audio.size, 4096) for e in runner.feed(audio[pos : pos + 4096])]
    events += runner.close()
    windows = [(e.t_end, e.score) for e in events if isinstance(e, ScoreEvent)]
    return StreamTrace(str(path), audio.size / 16000, windows)
