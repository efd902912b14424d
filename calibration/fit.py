"""Choosing thresholds: from labelled dev scores, or from genuine audio alone."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import read_audio
from spoofwatch.errors import CalibrationError, InputError
from spoofwatch.stream.engine import Engine, Scorer
from spoofwatch.stream.policy import AlertPolicy, PolicyConfig

from .calfile import Calibration
from .metrics import eer
from .protocol import SCORE_DECIMALS, ScoreTable
from .streaming import (
    MIN_BONAFIDE_MINUTES,
    Conversation,
    Trace,
    false_alert_overrun,
    false_alert_spans,
    measure,
    trace,
)

log = logging.getLogger(__name__)

TARGETS = ("eer", "bonafide-false-alarm", "spoof-miss")
#: Limiting alerts named in a one-line summary; the rest are counted.
LIMITS_SHOWN = 3


def threshold_for(table: ScoreTable, target: str, rate: float | None = None) -> float:
    """Score threshold (bona fide if >=) for an operating point.

    - ``eer``: where bona fide rejections equal spoof acceptances;
    - ``bonafide-false-alarm``: at most ``rate`` of bona fide scores fall below it;
    - ``spoof-miss``: at most ``rate`` of spoof scores reach it.
    """
    bona, spoof = table.by_label("bonafide"), table.by_label("spoof")
    if target == "eer":
        return _accepting_above(eer(bona, spoof)[1], np.concatenate([bona, spoof]))
    if rate is None or not 0.0 <= rate < 1.0:
        raise InputError(f"target {target!r} needs --rate in [0, 1), got {rate}")
    every = np.concatenate([bona, spoof])
    if target == "bonafide-false-alarm":
        if bona.size == 0:
            raise CalibrationError("no bona fide scores to set a false-alarm rate from")
        # Reject the k lowest at most: accept from the (k+1)-th lowest (fewer
        # than k lie strictly below it, ties included).
        return _accepting_from(float(np.sort(bona)[_allowed(rate, bona.size)]), every)
    if target == "spoof-miss":
        if spoof.size == 0:
            raise CalibrationError("no spoof scores to set a miss rate from")
        # Accept the k highest at most: reject the (k+1)-th highest and all below.
        return _accepting_above(float(np.sort(spoof)[spoof.size - 1 - _allowed(rate, spoof.size)]), every)
    raise InputError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")


def _allowed(rate: float, n: int) -> int:
    """Most of ``n`` scores that may fall on the wrong side at ``rate`` (< 1):
    floor(rate·n), forgiving the float error of a product such as 0.29·100
    (28.999999999999996). A quantile of the scores (used before) indexes by
    rate·(n−1) and could allow one score fewer than the rate does."""
    return min(math.floor(rate * n + 1e-9), n - 1)


#: One unit of a score file's last decimal: more than a score read from the
#: file can be off from the model's (half a unit). A threshold beyond the dev
#: scores keeps this far from the outermost one.
_SCORE_UNIT = 10.0**-SCORE_DECIMALS


def _accepting_above(det_threshold: float, scores: npt.NDArray[np.float64]) -> float:
    """A "bona fide if >=" threshold that rejects ``det_threshold`` (a dev score)
    and accepts every dev score above it: halfway to the next dev score up
    (above the top one, by :data:`_SCORE_UNIT`). The next float up would do for exact
    scores, but score files round to :data:`SCORE_DECIMALS`, and a score
    rounded down onto the threshold would be accepted at run time."""
    above = scores[scores > det_threshold]
    if above.size == 0:
        return det_threshold + _SCORE_UNIT
    return float((det_threshold + above.min()) / 2)


def _accepting_from(lowest_accepted: float, scores: npt.NDArray[np.float64]) -> float:
    """A "bona fide if >=" threshold that accepts ``lowest_accepted`` (a dev
    score) and rejects every dev score below it: halfway to the next dev score
    down (below the bottom one, by :data:`_SCORE_UNIT`), not the score itself, which a
    score rounded up onto it would then be refused."""
    below = scores[scores < lowest_accepted]
    if below.size == 0:
        return lowest_accepted - _SCORE_UNIT
    return float((lowest_accepted + below.max()) / 2)


def with_threshold(base: Calibration, threshold: float, provenance: dict[str, Any]) -> Calibration:
    """``base`` with both the verdict threshold and the alert band's enter
    threshold at ``threshold``; the band keeps its width."""
    stamp = {"created": datetime.date.today().isoformat(), **provenance}
    return dataclasses.replace(
        base, verdict_threshold=threshold, policy=base.policy.with_band(threshold), provenance=stamp
    )


def warn_about_genuine(traces: list[Trace], base: PolicyConfig, whose: str = "") -> None:
    """Say what weakens a false-alert rate measured on these genuine recordings
    (once per set: a search may run many times on one): too little audio, and
    recordings too short to ever alert, which add to the hours, and so loosen
    the threshold, without any chance to hold it down."""
    minutes = sum(tr.duration_s for tr in traces) / 60
    if minutes < MIN_BONAFIDE_MINUTES:
        log.warning(
            "%s%.1f min of genuine audio: a false-alert rate per hour measured on less than %g min "
            "says little; record more for a threshold you can trust",
            f"{whose}: " if whose else "",
            minutes,
            MIN_BONAFIDE_MINUTES,
        )
    mute = [tr for tr in traces if sum(1 for _, s, _ in tr.windows if s is not None) < base.min_alert_windows]
    if mute:
        log.warning(
            "%s%d of %d genuine recordings (%.1f min) have fewer than %d scored windows and can never alert: "
            "they count towards the hours, which loosens the threshold (join short clips into longer "
            "recordings, or leave them out)",
            f"{whose}: " if whose else "",
            len(mute),
            len(traces),
            sum(tr.duration_s for tr in mute) / 60,
            base.min_alert_windows,
        )


def bonafide_threshold(
    traces: list[Trace], base: PolicyConfig, target_per_hour: float
) -> tuple[float, float]:
    """Highest enter threshold whose false alerts per hour on genuine audio stay
    within ``target_per_hour``; returns ``(threshold, achieved rate)``.

    The policy compares *smoothed* scores with the threshold (an alert starts
    below it) and with the threshold plus the band's width (an alert ends
    above that), so the alerts change only where the threshold passes a
    smoothed score or a smoothed score minus the width: the candidates are
    those levels (raw window scores, used before, would skip the highest
    threshold that meets the target whenever smoothing moves it between two
    raw scores; smoothed scores alone, whenever a longer alert that swallows
    a second one is what meets it). Each candidate is placed halfway to the
    next level down (the first 1 above the top level): every threshold in
    between raises the same alerts on these recordings. The count of alerts
    need not fall as the threshold falls, so every level is tried, most
    sensitive first."""
    # Recordings with the lowest smoothed scores first: they alert at the most
    # thresholds, so they decide a miss after the fewest replays. The order
    # changes no count, only how soon one passes the target.
    own_levels = [_alert_levels(smoothed_scores([tr], base), base) for tr in traces]
    order = sorted(range(len(traces)), key=lambda i: own_levels[i][-1] if own_levels[i].size else math.inf)
    ordered, own_levels = [traces[i] for i in order], [own_levels[i] for i in order]
    smoothed = smoothed_scores(traces, base)
    if smoothed.size == 0:
        unscored = sum(tr.unscored_windows for tr in traces)
        if unscored:
            raise CalibrationError(
                f"the model gave no finite score (NaN or Inf) on any of the {unscored} speech windows "
                "of the genuine recordings: the model, not the audio, is at fault"
            )
        raise CalibrationError("no speech found in the genuine recordings: nothing to calibrate on")
    longest = max(sum(1 for _, score, _ in tr.windows if score is not None) for tr in traces)
    if longest < base.min_alert_windows:
        # No threshold could raise an alert, so every one would "meet" the
        # target and the most sensitive would be chosen: a meaningless fit.
        raise CalibrationError(
            f"an alert needs {base.min_alert_windows} scored windows in one recording, and the longest "
            f"genuine recording has {longest}: give longer recordings of speech "
            f"(at least {MIN_BONAFIDE_MINUTES:g} min in all is advised)"
        )
    # Most sensitive first, from above the top level (past it nothing
    # changes; a lax target can be met there and not just below it). Below
    # the lowest smoothed score nothing can alert, so the loop always returns.
    skip_above = math.inf
    for threshold in _interval_thresholds(_alert_levels(smoothed, base)):
        if threshold > skip_above:
            continue
        overrun = false_alert_overrun(ordered, base.with_band(threshold), target_per_hour)
        if not overrun:
            return threshold, measure(traces, base.with_band(threshold)).false_alerts_per_hour
        # The first ``overrun`` recordings alone miss the target here, and a
        # recording's alerts change only where the threshold crosses one of
        # its own levels: every threshold down to the highest of their levels
        # below this one misses it the same way (on hours of audio, most of
        # the search).
        skip_above = max(
            (float(lv[lv < threshold][0]) for lv in own_levels[:overrun] if (lv < threshold).any()),
            default=-math.inf,
        )
    raise CalibrationError("no threshold meets the target")


def _interval_thresholds(levels: npt.NDArray[np.float64]) -> list[float]:
    """One threshold per interval between neighbouring ``levels`` (given
    highest first), highest first: 1 above the top level, then halfway
    between each two, the last halfway to 1 below the bottom one. The margin
    keeps a score a rounding error away (another device, a 6-decimal score
    file) deciding the same way."""
    lowers = [*levels[1:], levels[-1] - 1.0]
    return [float(levels[0] + 1.0)] + [float((u + lo) / 2) for u, lo in zip(levels, lowers, strict=True)]


def _alert_levels(smoothed: npt.NDArray[np.float64], base: PolicyConfig) -> npt.NDArray[np.float64]:
    """Where the alerts can change as the enter threshold moves, highest first:
    every smoothed score (an alert starts below it) and every smoothed score
    minus the band's width (an alert ends above it)."""
    return np.unique(np.concatenate([smoothed, smoothed - base.band_width]))[::-1]


def limiting_alerts(traces: list[Trace], base: PolicyConfig, threshold: float) -> list[tuple[str, float]]:
    """The genuine alerts that hold ``threshold`` down: ``(recording, start s)``
    of each false alert added by the lowest higher threshold that adds any.
    This is where to look when a threshold comes out low: often one
    recording, one moment. Empty when no higher threshold adds one."""
    now = false_alert_spans(traces, base.with_band(threshold))
    levels = _alert_levels(smoothed_scores(traces, base), base)
    # Every threshold between two neighbouring levels raises the same alerts,
    # and one on a level may act like either neighbour: walk up the intervals
    # above ``threshold`` to the first that adds an alert (usually the next).
    for higher_threshold in reversed(_interval_thresholds(levels)):
        if higher_threshold <= threshold:
            continue
        added = _added(now, false_alert_spans(traces, base.with_band(higher_threshold)))
        if added:
            return added
    return []


def _added(
    now: list[tuple[str, float, float]], higher: list[tuple[str, float, float]]
) -> list[tuple[str, float]]:
    """The alerts ``higher`` adds to ``now``, recording by recording: where a
    recording's count rises by n, its first n alerts that overlap none of
    ``now``'s. A higher threshold often starts an alert earlier or stretches
    it (it then never splits: its exit level is higher too), and a stretched
    alert's cooldown can push a later one past where it was: neither is new."""
    added = []
    for name in dict.fromkeys(n for n, _, _ in higher):
        mine = [(s, e) for n, s, e in now if n == name]
        theirs = [(s, e) for n, s, e in higher if n == name]
        fresh = [s for s, e in theirs if not any(s <= e0 and s0 <= e for s0, e0 in mine)]
        added += [(name, s) for s in fresh[: max(0, len(theirs) - len(mine))]]
    return added


def alert_label(alert: tuple[str, float]) -> str:
    """``a.wav at 12.3 s``."""
    return f"{alert[0]} at {alert[1]:.1f} s"


def describe_alerts(alerts: list[tuple[str, float]]) -> str:
    """``a.wav at 12.3 s, b.wav at 4.0 s and 5 more``."""
    named = ", ".join(alert_label(a) for a in alerts[:LIMITS_SHOWN])
    return named + (f" and {len(alerts) - LIMITS_SHOWN} more" if len(alerts) > LIMITS_SHOWN else "")


def smoothed_scores(traces: list[Trace], base: PolicyConfig) -> npt.NDArray[np.float64]:
    """Every smoothed score the alert policy computes on ``traces``. Smoothing
    depends on the window scores, ``smoothing_windows`` and silence resets,
    never on the thresholds, so one pass serves every candidate."""
    values: list[float] = []
    for tr in traces:
        policy = AlertPolicy(base)
        for t, score, since in tr.windows:
            if score is None:
                policy.no_speech(t, since)
            else:
                policy.update(t, score)
                assert policy.smoothed is not None
                values.append(policy.smoothed)
    return np.array(values, np.float64)


def trace_file(path: Path, engine: Engine, scorer: Scorer, name: str | None = None) -> Trace:
    """Run a genuine recording through the real live engine and record its
    window scores; the trace is called ``name`` (default: the file's name)."""
    return trace(Conversation(name or path.name, read_audio(path), None), engine, scorer)
