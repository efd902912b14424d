"""ASVspoof 2019 metrics: EER and the minimum normalised tandem DCF.

Conventions follow the ASVspoof 2019 evaluation plan and its reference
scripts, so figures reproduce the official reports to the printed digit:
higher scores mean bona fide; the DET curve's thresholds are the sorted
scores (with one below the lowest); the EER is the mean of the miss and
false-alarm rates where they are closest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spoofwatch.errors import CalibrationError

from .protocol import AsvScores, ScoreTable

Array = npt.NDArray[np.float64]
#: group labels, one per score: strings or integers
Groups = Sequence[str] | Sequence[int] | npt.NDArray[np.str_] | npt.NDArray[np.intp]


@dataclass(frozen=True)
class CostModel:
    """ASVspoof 2019 t-DCF costs and priors."""

    p_spoof: float = 0.05
    p_target_given_genuine: float = 0.99
    c_miss_asv: float = 1.0
    c_fa_asv: float = 10.0
    c_miss_cm: float = 1.0
    c_fa_cm: float = 10.0

    @property
    def p_target(self) -> float:
        return (1 - self.p_spoof) * self.p_target_given_genuine

    @property
    def p_nontarget(self) -> float:
        return (1 - self.p_spoof) * (1 - self.p_target_given_genuine)


def det_curve(
    positive: Array,
    negative: Array,
    positive_weights: Array | None = None,
    negative_weights: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Miss rate of ``positive`` and false-alarm rate of ``negative`` at each threshold.

    Threshold ``thresholds[i]`` rejects every score ``<= thresholds[i]``.
    With weights, each score counts in proportion to its weight within its
    class (see :func:`balanced_weights`); without, every score counts once.
    """
    if positive.size == 0 or negative.size == 0:
        raise CalibrationError(
            f"an error rate needs both classes, got {positive.size} positive (bona fide, or ASV target) "
            f"and {negative.size} negative (spoof, or non-target) scores"
        )
    scores = np.concatenate([positive, negative])
    order = np.argsort(scores, kind="mergesort")  # stable: ties keep positives first
    thresholds = np.concatenate([[scores[order[0]] - 0.001], scores[order]])
    pos_w = _weights(positive_weights, positive.size, "positive")
    neg_w = _weights(negative_weights, negative.size, "negative")
    # Sum the raw weights (whole numbers: counts, or balanced_weights) and
    # divide once at the end: adding up 1/n shares would let rounding decide
    # between two DET points whose miss/false-alarm gaps tie exactly. With no
    # weights the sums are the official scripts' counts, to the digit.
    positive_below = np.cumsum(np.concatenate([pos_w, np.zeros(negative.size)])[order])
    negative_below = np.cumsum(np.concatenate([np.zeros(positive.size), neg_w])[order])
    miss = np.concatenate([[0.0], positive_below / positive_below[-1]])
    false_alarm = np.concatenate([[1.0], (negative_below[-1] - negative_below) / negative_below[-1]])
    return miss, false_alarm, thresholds


def _weights(weights: Array | None, size: int, name: str) -> Array:
    """Checked weights (all ones when None)."""
    if weights is None:
        return np.ones(size)
    w: Array = np.asarray(weights, dtype=np.float64)
    if w.shape != (size,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise CalibrationError(
            f"{name} weights: expected {size} finite weights >= 0 with a positive sum, got shape {w.shape}"
        )
    return w


def balanced_weights(groups: Groups) -> Array:
    """A weight per member such that every group weighs the same in total,
    whatever its size (e.g. each genuine corpus, or each spoof system).

    The weight is the least common multiple of the group sizes over the
    member's group size: whole numbers, so the DET curve's sums are exact and
    equal groups give exactly the unweighted EER. Past what a float holds
    exactly, it falls back to 1 / the group size."""
    labels = np.asarray(groups)
    if labels.size == 0:
        return np.zeros(0)
    _, ids, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sizes = counts[ids.reshape(-1)].astype(np.float64)
    common = math.lcm(*(int(c) for c in counts))
    exact = common * labels.size < 2**52  # every partial sum stays a whole float
    weights: Array = common / sizes if exact else 1.0 / sizes
    return weights


def eer(
    positive: Array,
    negative: Array,
    positive_weights: Array | None = None,
    negative_weights: Array | None = None,
) -> tuple[float, float]:
    """``(EER as a fraction, threshold)`` where miss and false-alarm rates meet."""
    miss, false_alarm, thresholds = det_curve(positive, negative, positive_weights, negative_weights)
    i = int(np.argmin(np.abs(miss - false_alarm)))
    return float((miss[i] + false_alarm[i]) / 2), float(thresholds[i])


def balanced_eer(positive: Array, positive_groups: Groups, negative: Array, negative_groups: Groups) -> float:
    """EER (a fraction) with every group of each class weighing the same: a
    figure that does not change when one genuine corpus or one spoof system
    brings more utterances than another."""
    return eer(positive, negative, balanced_weights(positive_groups), balanced_weights(negative_groups))[0]


def min_tdcf(bonafide: Array, spoof: Array, asv: AsvScores, cost: CostModel = CostModel()) -> float:
    """Minimum normalised t-DCF with the ASV threshold fixed at the ASV EER point."""
    _, asv_threshold = eer(asv.target, asv.nontarget)
    p_fa_asv = np.count_nonzero(asv.nontarget >= asv_threshold) / asv.nontarget.size
    p_miss_asv = np.count_nonzero(asv.target < asv_threshold) / asv.target.size
    if asv.spoof.size == 0:
        raise CalibrationError("the t-DCF needs ASV scores of spoof trials")
    p_miss_spoof_asv = np.count_nonzero(asv.spoof < asv_threshold) / asv.spoof.size
    c1 = (
        cost.p_target * (cost.c_miss_cm - cost.c_miss_asv * p_miss_asv)
        - cost.p_nontarget * cost.c_fa_asv * p_fa_asv
    )
    c2 = cost.c_fa_cm * cost.p_spoof * (1 - p_miss_spoof_asv)
    if c1 < 0 or c2 < 0:
        raise CalibrationError("t-DCF weights are negative: the ASV error rates look wrong")
    if min(c1, c2) == 0:  # the normalisation divides by it
        raise CalibrationError(
            "the t-DCF is undefined for these ASV scores: "
            + ("the ASV rejects every spoof at its EER threshold" if c2 == 0 else "its miss cost cancels out")
        )
    miss_cm, fa_cm, _ = det_curve(bonafide, spoof)
    curve = (c1 * miss_cm + c2 * fa_cm) / min(c1, c2)
    return float(np.min(curve))


@dataclass(frozen=True)
class EvalReport:
    eer_percent: float
    eer_threshold: float
    min_tdcf: float | None
    per_attack_eer_percent: dict[str, float]
    n_bonafide: int
    n_spoof: int

    def to_json(self) -> dict[str, object]:
        return {
            "eer_percent": self.eer_percent,
            "eer_threshold": self.eer_threshold,
            "min_tdcf": self.min_tdcf,
            "per_attack_eer_percent": self.per_attack_eer_percent,
            "n_bonafide": self.n_bonafide,
            "n_spoof": self.n_spoof,
        }

    def to_text(self) -> str:
        """The official report's layout."""
        lines = [
            "",
            "CM SYSTEM",
            f"\tEER\t\t= {self.eer_percent:8.9f} % (Equal error rate for countermeasure)",
        ]
        if self.min_tdcf is not None:
            lines += ["", "TANDEM", f"\tmin-tDCF\t\t= {self.min_tdcf:8.9f}"]
        lines += ["", "BREAKDOWN CM SYSTEM"]
        lines += [
            f"\tEER {attack}\t\t= {value:8.9f} % (Equal error rate for {attack}"
            for attack, value in self.per_attack_eer_percent.items()
        ]
        return "\n".join(lines) + "\n"


def evaluate(table: ScoreTable, asv: AsvScores | None = None) -> EvalReport:
    """EER, min t-DCF (when ASV scores are given) and per-attack EERs."""
    bonafide = table.by_label("bonafide")
    spoof = table.by_label("spoof")
    eer_value, threshold = eer(bonafide, spoof)
    # One pass over the lines, not one per attack (a file whose attack field
    # was unique per line took minutes).
    by_attack: dict[str, list[float]] = {}
    for attack, label, score in zip(table.attacks, table.labels, table.scores.tolist(), strict=True):
        if label == "spoof":
            by_attack.setdefault(attack, []).append(score)
    per_attack = {a: 100 * eer(bonafide, np.asarray(by_attack[a]))[0] for a in sorted(by_attack)}
    tdcf = min_tdcf(bonafide, spoof, asv) if asv is not None else None
    return EvalReport(100 * eer_value, threshold, tdcf, per_attack, int(bonafide.size), int(spoof.size))
