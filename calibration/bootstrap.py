"""How sure is an EER? A stratified, clustered, paired bootstrap.

The held-out suite has tens of genuine utterances per corpus and six spoofed
ones per system, so one utterance moves a pooled EER by points, and "model B
is 5 points better" may be luck. This module puts a confidence interval on
each model's pooled EER and on the *difference* between two models:

* stratified: every draw keeps the design, resampling within each stratum
  (a spoof system, a genuine corpus) as many clips as it has, so a draw never
  loses a class;
* two levels on the spoof side (``resample_systems``, the default): the
  systems themselves are drawn with replacement first, since the question is
  how a model does on systems it has not seen, not only on these 27; the few
  genuine corpora stay fixed strata (drawing among 8 corpora of very unequal
  size would mostly measure which ones were drawn);
* clustered: the clean and channel copies of one clip are not independent
  evidence, so a clip is drawn with all its copies;
* paired: every model is scored on the same draws, so the interval of a
  difference reflects how the models disagree, not how the test set varies
  (far narrower than two intervals side by side suggest).

Intervals are percentiles of the draws. The verdict of a comparison is
"better" or "worse" only when the whole interval of the difference lies on
one side of zero.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.errors import InputError

from .metrics import balanced_eer, eer

Array = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

BETTER, WORSE, UNCLEAR = "better", "worse", "no clear difference"


@dataclass(frozen=True)
class BootstrapConfig:
    #: resamples of the test set; 0 turns intervals off
    draws: int = 2000
    #: two-sided coverage of each interval
    level: float = 0.95
    seed: int = 0
    #: draw the spoof systems with replacement before their clips (else systems are fixed strata)
    resample_systems: bool = True

    def __post_init__(self) -> None:
        for name in ("draws", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"bootstrap {name}: expected an integer >= 0, got {value!r}")
        if not isinstance(self.resample_systems, bool):
            raise InputError(
                f"bootstrap resample_systems: expected true or false, got {self.resample_systems!r}"
            )
        level = self.level
        if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
            raise InputError(f"bootstrap level: expected a number between 0 and 1 (exclusive), got {level!r}")


@dataclass(frozen=True)
class Sample:
    """One utterance of the test design."""

    bonafide: bool
    #: resampled within: a spoof system or a genuine corpus
    stratum: str
    #: drawn together: the copies of one source clip
    clip: str


class Resampler:
    """Index arrays into ``samples``, one per draw, stratified and clustered."""

    def __init__(self, samples: Sequence[Sample], seed: int = 0, resample_spoof_strata: bool = True) -> None:
        if not any(s.bonafide for s in samples) or all(s.bonafide for s in samples):
            raise InputError("a bootstrap of an EER needs bona fide and spoof samples")
        clips: dict[tuple[bool, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, s in enumerate(samples):
            # the class is part of the stratum: a stratum name shared by both classes is two strata
            clips[(s.bonafide, s.stratum)][s.clip].append(i)
        # per stratum: one index array per clip
        strata = {
            key: [np.array(members, dtype=np.intp) for members in by_clip.values()]
            for key, by_clip in sorted(clips.items())
        }
        self._genuine = [v for (bonafide, _), v in strata.items() if bonafide]
        self._spoof = [v for (bonafide, _), v in strata.items() if not bonafide]
        self._resample_spoof_strata = resample_spoof_strata
        self._rng = np.random.default_rng(seed)

    def draw(self) -> tuple[IndexArray, IndexArray]:
        """A draw's indices, and for each the drawn stratum it came with: a
        system drawn twice is two strata of the draw, as a balanced EER needs."""
        spoof = self._spoof
        if self._resample_spoof_strata:
            spoof = [spoof[k] for k in self._rng.integers(0, len(spoof), size=len(spoof))]
        parts: list[IndexArray] = []
        groups: list[IndexArray] = []
        for g, clips in enumerate([*self._genuine, *spoof]):
            for k in self._rng.integers(0, len(clips), size=len(clips)):
                parts.append(clips[k])
                groups.append(np.full(clips[k].size, g, dtype=np.intp))
        return np.concatenate(parts), np.concatenate(groups)


def _eer_percent(
    scores: Array, bonafide: npt.NDArray[np.bool_], groups: npt.NDArray[Any] | None = None
) -> float:
    """Pooled EER (%), or balanced over ``groups`` (every group of a class weighing the same)."""
    if groups is None:
        return 100 * eer(scores[bonafide], scores[~bonafide])[0]
    return 100 * balanced_eer(scores[bonafide], groups[bonafide], scores[~bonafide], groups[~bonafide])


def percentile_interval(values: Array, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def compare_eers(
    samples: Sequence[Sample],
    scores: Mapping[str, Array],
    cfg: BootstrapConfig,
    reference: str | None = None,
    balanced: bool = False,
) -> dict[str, dict[str, Any]]:
    """Pooled EER (%) with its interval for each model, and, for every model
    but ``reference``, its paired difference to ``reference`` (model minus
    reference: negative is better) with an interval and a verdict.

    ``scores[name][i]`` is model ``name``'s score of ``samples[i]`` (higher
    means bona fide). ``balanced``: the EER weighs every stratum of a class the
    same (each genuine corpus, each spoof system; in a draw, each drawn one)."""
    if cfg.draws == 0:
        return {}
    bonafide = np.array([s.bonafide for s in samples])
    for name, values in scores.items():
        if values.shape != (len(samples),) or not np.all(np.isfinite(values)):
            raise InputError(
                f"{name}: expected {len(samples)} finite scores, one per sample, got shape {values.shape}"
            )
    if reference is not None and reference not in scores:
        raise InputError(f"reference {reference!r}: expected one of {sorted(scores)}")
    strata = np.array([s.stratum for s in samples]) if balanced else None
    draws: dict[str, list[float]] = {name: [] for name in scores}
    resampler = Resampler(samples, cfg.seed, cfg.resample_systems)
    for _ in range(cfg.draws):
        idx, drawn = resampler.draw()
        for name, values in scores.items():
            draws[name].append(_eer_percent(values[idx], bonafide[idx], drawn if balanced else None))
    report: dict[str, dict[str, Any]] = {}
    for name, values in scores.items():
        point = _eer_percent(values, bonafide, strata)
        entry: dict[str, Any] = {
            "n": len(samples),
            "eer_percent": point,
            "ci_percent": list(percentile_interval(np.array(draws[name]), cfg.level)),
        }
        if reference is not None and name != reference:
            diff = np.array(draws[name]) - np.array(draws[reference])
            low, high = percentile_interval(diff, cfg.level)
            entry["vs"] = reference
            entry["difference_percent"] = point - _eer_percent(scores[reference], bonafide, strata)
            entry["difference_ci_percent"] = [low, high]
            entry["verdict"] = BETTER if high < 0 else WORSE if low > 0 else UNCLEAR
        report[name] = entry
    return report


def level_label(level: float) -> str:
    """0.95 -> '95 %' (for tables)."""
    percent = 100 * level
    return f"{percent:.0f} %" if math.isclose(percent, round(percent)) else f"{percent:g} %"
