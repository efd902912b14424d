"""Alert policy: smoothing, hysteresis, minimum duration, cooldown.

Scores are bona fide logits, so *low* means spoof-like. An alert starts when
the smoothed score has stayed below ``enter_threshold`` for
``min_alert_windows`` consecutive scored windows (and the cooldown since the
last alert has passed). It ends when the smoothed score rises above
``exit_threshold`` (>= enter: hysteresis), or once ``silence_reset_s`` have
passed since the last speech, which also clears the smoothing history so a
new talker starts fresh. (A window is judged silent only when most of it is,
about 3 s after speech stops; counting from that window's end would add
those seconds again, so the gate says where the last speech ended.)
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from spoofwatch.errors import InputError

from .events import END_OF_STREAM, RECOVERED, SILENCE, AlertEnd, AlertStart, Event


@dataclass(frozen=True)
class PolicyConfig:
    """The live alert band and its timing. The thresholds have no default in
    code: they come from the calibration file, where each is defined once."""

    #: Smoothed score below which a window counts toward an alert.
    enter_threshold: float
    #: Smoothed score above which an active alert ends (>= enter_threshold).
    exit_threshold: float
    #: Smoothing: mean of the last k scored windows.
    smoothing_windows: int = 4
    #: Consecutive below-threshold smoothed windows needed to start an alert.
    min_alert_windows: int = 2
    #: Seconds after an alert ends during which no new alert starts.
    cooldown_s: float = 5.0
    #: Seconds without speech that end an alert and reset smoothing.
    silence_reset_s: float = 3.0

    def __post_init__(self) -> None:
        if self.exit_threshold < self.enter_threshold:
            raise InputError(
                f"policy: expected exit_threshold >= enter_threshold, got {self.exit_threshold} < {self.enter_threshold}"
            )
        if not (math.isfinite(self.enter_threshold) and math.isfinite(self.exit_threshold)):
            raise InputError(
                f"policy: expected finite thresholds, got {self.enter_threshold}, {self.exit_threshold}"
            )
        if self.smoothing_windows < 1 or self.min_alert_windows < 1:
            raise InputError(
                f"policy: expected smoothing_windows >= 1 and min_alert_windows >= 1, "
                f"got {self.smoothing_windows} and {self.min_alert_windows}"
            )
        if not 0 <= self.cooldown_s < math.inf or not 0 < self.silence_reset_s < math.inf:
            raise InputError(
                f"policy: expected cooldown_s >= 0 and silence_reset_s > 0 (finite), "
                f"got {self.cooldown_s} and {self.silence_reset_s}"
            )

    @property
    def band_width(self) -> float:
        """Hysteresis: exit threshold minus enter threshold."""
        return self.exit_threshold - self.enter_threshold

    def with_band(self, enter_threshold: float, width: float | None = None) -> PolicyConfig:
        """The one way to move the alert band: enter at ``enter_threshold``, exit
        ``width`` above it (default: keep the current width)."""
        width = self.band_width if width is None else width
        return dataclasses.replace(
            self, enter_threshold=enter_threshold, exit_threshold=enter_threshold + width
        )


class AlertPolicy:
    """``update(t, score)`` for scored windows, ``no_speech(t)`` for gated ones."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._recent: deque[float] = deque(maxlen=self.config.smoothing_windows)
        self.smoothed: float | None = None
        self.active = False
        self.alerts = 0
        self._below = 0
        self._cooldown_until = -np.inf
        self._silent_since: float | None = None

    def update(self, t: float, score: float) -> list[Event]:
        """A scored window ending at stream time ``t``."""
        self._silent_since = None
        self._recent.append(score)
        self.smoothed = float(np.mean(self._recent))
        cfg = self.config
        if self.active:
            if self.smoothed > cfg.exit_threshold:
                return [self._end(t, RECOVERED)]
            return []
        self._below = self._below + 1 if self.smoothed < cfg.enter_threshold else 0
        if self._below >= cfg.min_alert_windows and t >= self._cooldown_until:
            self.active = True
            self.alerts += 1
            return [AlertStart(t, self.smoothed, cfg.enter_threshold)]
        return []

    def no_speech(self, t: float, silent_since: float | None = None) -> list[Event]:
        """A window without speech ending at ``t``, silent from ``silent_since``
        (where its last speech ended, or its start; default ``t``): never
        alerts; ``silence_reset_s`` after the last speech of a run of them, an
        alert ends and smoothing resets."""
        if silent_since is None:  # no word from the gate: silent from this window's end
            if self._silent_since is None:
                self._silent_since = t
        elif self._silent_since is None or silent_since > self._silent_since:
            self._silent_since = silent_since
        if t - self._silent_since < self.config.silence_reset_s:
            return []
        events: list[Event] = [self._end(t, SILENCE)] if self.active else []
        self._recent.clear()
        self._below = 0
        self.smoothed = None
        return events

    def finish(self, t: float, reason: str = END_OF_STREAM) -> list[Event]:
        """End of stream: close an open alert, saying why the stream ended."""
        return [self._end(t, reason)] if self.active else []

    def _end(self, t: float, reason: str) -> AlertEnd:
        self.active = False
        self._below = 0
        self._cooldown_until = t + self.config.cooldown_s
        return AlertEnd(t, self.smoothed, self.config.exit_threshold, reason)
