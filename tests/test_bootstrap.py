"""Bootstrap intervals of pooled and balanced EERs and of paired differences,
and the weighted EER they rest on, on the official AASIST-L's real scores of
the ASVspoof 2019 LA eval set (13 attacks, 71,237 trials) from ../shared."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from spoofwatch.calibration.bootstrap import (
    BETTER,
    UNCLEAR,
    WORSE,
    BootstrapConfig,
    Resampler,
    Sample,
    compare_eers,
)
from spoofwatch.calibration.metrics import balanced_eer, balanced_weights, eer
from spoofwatch.errors import CalibrationError, InputError

#: the official report's EER for these scores (../shared/data/scores/aasist-l_official_la_eval_report.txt)
OFFICIAL_EER_PERCENT = 0.990923080


@pytest.fixture(scope="module")
def la_eval(shared: Path) -> tuple[list[Sample], np.ndarray]:
    rows = [
        line.split()
        for line in (shared / "data/scores/aasist-l_official_la_eval_scores.txt").read_text().splitlines()
    ]
    samples = [Sample(key == "bonafide", attack, utt) for utt, attack, key, _ in rows]
    return samples, np.array([float(r[3]) for r in rows])


def _subset(samples: list[Sample], scores: np.ndarray, step: int) -> tuple[list[Sample], np.ndarray]:
    return samples[::step], scores[::step]


def test_the_interval_holds_the_official_eer_and_narrows_with_more_trials(
    la_eval: tuple[list[Sample], np.ndarray],
) -> None:
    samples, scores = la_eval
    cfg = BootstrapConfig(draws=100, seed=1)
    full = compare_eers(samples, {"official": scores}, cfg)["official"]
    assert full["eer_percent"] == pytest.approx(OFFICIAL_EER_PERCENT, abs=5e-9)
    low, high = full["ci_percent"]
    assert low < OFFICIAL_EER_PERCENT < high
    # systems fixed: only the trials vary, so the interval is narrower than when
    # the 13 attacks are drawn too (their EERs range from ~0 to a few %)
    fixed_cfg = BootstrapConfig(draws=100, seed=1, resample_systems=False)
    f_low, f_high = compare_eers(samples, {"official": scores}, fixed_cfg)["official"]["ci_percent"]
    assert f_low < OFFICIAL_EER_PERCENT < f_high
    assert f_high - f_low < high - low
    # a twentieth of the trials (systems fixed): a wider interval around the same figure
    sub_samples, sub_scores = _subset(samples, scores, 20)
    s_low, s_high = compare_eers(sub_samples, {"official": sub_scores}, fixed_cfg)["official"]["ci_percent"]
    assert s_high - s_low > 2 * (f_high - f_low)
    # the same seed, the same interval
    assert compare_eers(samples, {"official": scores}, cfg)["official"]["ci_percent"] == [low, high]


def test_a_model_against_itself_shows_no_difference(la_eval: tuple[list[Sample], np.ndarray]) -> None:
    samples, scores = _subset(*la_eval, 10)
    report = compare_eers(
        samples, {"official": scores, "copy": scores.copy()}, BootstrapConfig(draws=100), "official"
    )
    assert "verdict" not in report["official"]
    copy = report["copy"]
    assert copy["difference_percent"] == 0.0 and copy["difference_ci_percent"] == [0.0, 0.0]
    assert copy["verdict"] == UNCLEAR and copy["vs"] == "official"


def test_failing_one_attack_is_worse_on_these_systems_but_not_clearly_on_others(
    la_eval: tuple[list[Sample], np.ndarray],
) -> None:
    """A candidate that lets one of 13 attacks through is clearly worse with the
    systems fixed. Drawing systems, about a third of the draws leave that attack
    out and show no difference, so the verdict is not clear: the interval
    answers for systems like these, not only for these."""
    samples, scores = _subset(*la_eval, 4)
    blind = scores.copy()
    a17 = np.array([not s.bonafide and s.stratum == "A17" for s in samples])
    genuine = scores[np.array([s.bonafide for s in samples])]
    blind[a17] = np.random.default_rng(0).choice(genuine, size=int(a17.sum()))  # scored like genuine speech
    both = {"official": scores, "blind to A17": blind}
    fixed = compare_eers(samples, both, BootstrapConfig(draws=300, resample_systems=False), "official")
    assert fixed["blind to A17"]["verdict"] == WORSE
    assert fixed["blind to A17"]["difference_percent"] > 1.0
    drawn = compare_eers(samples, both, BootstrapConfig(draws=300), "official")
    assert drawn["blind to A17"]["verdict"] == UNCLEAR
    assert drawn["blind to A17"]["difference_ci_percent"][0] == 0.0
    # and the other way round: the official model is better than the blind one
    reverse = compare_eers(samples, both, BootstrapConfig(draws=300, resample_systems=False), "blind to A17")
    assert reverse["official"]["verdict"] == BETTER


def test_draws_keep_the_design_and_a_clip_with_its_copies() -> None:
    # two genuine corpora and two spoof systems; every clip has a clean and a channel copy
    samples = [
        Sample(bonafide, stratum, f"{stratum}-{clip}")
        for bonafide, stratum, clips in ((True, "LJ", 4), (True, "VCTK", 3), (False, "A", 5), (False, "B", 2))
        for clip in range(clips)
        for _ in range(2)
    ]
    for resample_systems in (False, True):
        resampler = Resampler(samples, seed=3, resample_spoof_strata=resample_systems)
        for _ in range(50):
            idx, groups = resampler.draw()
            # a drawn stratum is one group, as large as its stratum, even when drawn twice
            members: dict[int, list[int]] = {}
            for i, g in zip(idx, groups, strict=True):
                members.setdefault(int(g), []).append(int(i))
            assert len(members) == 4
            for group in members.values():
                assert len({samples[i].stratum for i in group}) == 1
                assert len(group) == sum(s.stratum == samples[group[0]].stratum for s in samples)
            drawn = Counter(samples[i].clip for i in idx)
            copies = Counter(int(i) for i in idx)
            # each drawn clip brings both copies, the same number of times
            for i in idx:
                partner = i ^ 1  # copies sit side by side
                assert copies[int(i)] == copies[int(partner)]
            genuine = Counter(samples[i].stratum for i in idx if samples[i].bonafide)
            assert genuine == {"LJ": 8, "VCTK": 6}  # genuine corpora are fixed strata, clip counts kept
            n_spoof_clips = sum(v for k, v in drawn.items() if k[0] in "AB") // 2
            if not resample_systems:
                assert Counter(samples[i].stratum for i in idx if not samples[i].bonafide) == {
                    "A": 10,
                    "B": 4,
                }
            else:
                assert n_spoof_clips in (4, 7, 10)  # two draws among systems of 5 and 2 clips


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"draws": -1}, "bootstrap draws: expected an integer >= 0, got -1"),
        ({"draws": 2.5}, "bootstrap draws: expected an integer >= 0"),
        ({"level": 1.0}, "bootstrap level: expected a number between 0 and 1"),
        ({"level": 0}, "bootstrap level: expected a number between 0 and 1"),
        ({"resample_systems": "yes"}, "bootstrap resample_systems: expected true or false"),
    ],
)
def test_bootstrap_config_checks_its_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        BootstrapConfig(**kwargs)  # type: ignore[arg-type]


def _split(samples: list[Sample], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    bonafide = np.array([s.bonafide for s in samples])
    return scores[bonafide], scores[~bonafide], [s.stratum for s in samples if not s.bonafide]


def test_a_weighted_eer_counts_each_score_as_often_as_its_weight(
    la_eval: tuple[list[Sample], np.ndarray],
) -> None:
    # (Repeating a score adds DET points between its copies that a weight does
    # not, so the two agree where, as here, no tie sits at the EER.)
    genuine, spoof, _ = _split(*_subset(*la_eval, 7))
    weights = np.random.default_rng(2).integers(1, 4, size=spoof.size)
    weighted, _ = eer(genuine, spoof, None, weights.astype(np.float64))
    repeated, _ = eer(genuine, np.repeat(spoof, weights))
    assert weighted == pytest.approx(repeated, abs=1e-12)
    assert weighted != pytest.approx(eer(genuine, spoof)[0], abs=1e-4)  # the weights mattered
    # unit weights give the official figure, and the counting EER wherever ties fall
    ties = np.random.default_rng(5)
    for _ in range(200):
        pos, neg = (
            ties.integers(0, 4, size=ties.integers(1, 9)),
            ties.integers(0, 4, size=ties.integers(1, 9)),
        )
        pos_f, neg_f = pos.astype(np.float64), neg.astype(np.float64)
        assert eer(pos_f, neg_f, np.ones(pos.size), np.ones(neg.size))[0] == _counting_eer(pos_f, neg_f)
    full_genuine, full_spoof, _ = _split(*la_eval)
    unit = eer(full_genuine, full_spoof, np.ones(full_genuine.size), np.ones(full_spoof.size))[0]
    assert 100 * unit == pytest.approx(OFFICIAL_EER_PERCENT, abs=5e-9)
    with pytest.raises(CalibrationError, match=r"negative weights: expected 3 finite weights >= 0"):
        eer(genuine, spoof[:3], None, np.array([1.0, -1.0, 1.0]))
    with pytest.raises(CalibrationError, match=r"positive weights: expected \d+ finite weights"):
        eer(genuine, spoof, np.ones(2))


def _counting_eer(positive: np.ndarray, negative: np.ndarray) -> float:
    """The official scripts' EER by plain counting: step through the scores in
    stable sorted order (positives first among ties), one at a time."""
    ranked = sorted(
        [(v, 0) for v in positive.tolist()] + [(v, 1) for v in negative.tolist()], key=lambda r: r[0]
    )
    below_pos, below_neg = 0, 0
    best = (1.0, 0.5)  # (|miss - false alarm|, EER) before the first score: miss 0, false alarm 1
    for _, is_negative in ranked:
        below_pos += 1 - is_negative
        below_neg += is_negative
        miss, fa = below_pos / positive.size, (negative.size - below_neg) / negative.size
        if abs(miss - fa) < best[0]:
            best = (abs(miss - fa), (miss + fa) / 2)
    return best[1]


def test_a_balanced_eer_does_not_change_when_one_system_brings_more_utterances(
    la_eval: tuple[list[Sample], np.ndarray],
) -> None:
    """Every LA eval attack has 4,914 trials, so balanced equals pooled. Give
    the hardest attack (A17) ten times its trials and the pooled EER follows
    it, while the balanced EER stays where it was."""
    genuine, spoof, attacks = _split(*la_eval)
    assert balanced_weights(["a", "b", "b", "b"]).tolist() == [3.0, 1.0, 1.0, 1.0]  # each group 3 in all
    base = balanced_eer(genuine, ["LA"] * genuine.size, spoof, attacks)
    assert 100 * base == pytest.approx(OFFICIAL_EER_PERCENT, abs=1e-8)
    a17 = np.array([a == "A17" for a in attacks])
    more_spoof = np.concatenate([spoof, *[spoof[a17]] * 9])
    more_attacks = attacks + ["A17"] * (9 * int(a17.sum()))
    assert eer(genuine, more_spoof)[0] > base + 0.003  # pooled: 0.99 % -> 1.40 %, A17 weighs more
    balanced = balanced_eer(genuine, ["LA"] * genuine.size, more_spoof, more_attacks)
    assert balanced == pytest.approx(base, abs=1e-9)


def test_balanced_intervals_follow_the_draws_strata(la_eval: tuple[list[Sample], np.ndarray]) -> None:
    samples, scores = _subset(*la_eval, 10)
    cfg = BootstrapConfig(draws=60, seed=4)
    pooled = compare_eers(samples, {"official": scores}, cfg)["official"]
    balanced = compare_eers(samples, {"official": scores}, cfg, balanced=True)["official"]
    low, high = balanced["ci_percent"]
    assert low < balanced["eer_percent"] < high
    # near-equal attacks: balanced and pooled nearly agree, but are computed apart
    assert balanced["eer_percent"] == pytest.approx(pooled["eer_percent"], abs=0.05)
    # A17's trials four times over: pooled moves, balanced does not
    a17 = [i for i, s in enumerate(samples) if s.stratum == "A17"]
    extra = [Sample(False, "A17", f"{samples[i].clip}+{k}") for k in range(3) for i in a17]
    more = [*samples, *extra]
    more_scores = np.concatenate([scores, np.tile(scores[a17], 3)])
    heavy = compare_eers(more, {"official": more_scores}, cfg, balanced=True)["official"]
    assert heavy["eer_percent"] == pytest.approx(balanced["eer_percent"], abs=1e-9)
    assert (
        compare_eers(more, {"official": more_scores}, cfg)["official"]["eer_percent"] > pooled["eer_percent"]
    )
    # One draw, by hand: every drawn system is its own group, a system drawn
    # twice is two groups, each weighing the same.
    idx, _ = Resampler(more, seed=7).draw()
    one = compare_eers(more, {"official": more_scores}, BootstrapConfig(draws=1, seed=7), balanced=True)
    drawn_low, drawn_high = one["official"]["ci_percent"]
    assert drawn_low == drawn_high
    by_instance = _hand_balanced_eer(more, more_scores, Resampler(more, seed=7).draw())
    assert drawn_low == pytest.approx(by_instance, abs=1e-9)
    # the draw tells the three readings apart, so the check above has teeth
    drawn = [more[i] for i in idx]
    by_name = _hand_balanced_eer(more, more_scores, (idx, np.array([s.stratum for s in drawn])))
    unweighted = (
        100
        * eer(
            more_scores[idx][[s.bonafide for s in drawn]], more_scores[idx][[not s.bonafide for s in drawn]]
        )[0]
    )
    assert len({round(by_instance, 6), round(by_name, 6), round(unweighted, 6)}) == 3


def _hand_balanced_eer(
    samples: list[Sample], scores: np.ndarray, draw: tuple[np.ndarray, np.ndarray]
) -> float:
    """A draw's balanced EER (%) with weights counted out by hand: 1 / (groups
    of the class x members of the group)."""
    idx, groups = draw
    bonafide = np.array([samples[i].bonafide for i in idx])
    weights = np.zeros(idx.size)
    for cls in (True, False):
        members = [g for g, b in zip(groups.tolist(), bonafide, strict=True) if b == cls]
        sizes = Counter(members)
        for k in np.flatnonzero(bonafide == cls):
            weights[k] = 1.0 / (len(sizes) * sizes[groups[k].item()])
    values = scores[idx]
    return 100 * eer(values[bonafide], values[~bonafide], weights[bonafide], weights[~bonafide])[0]


def test_bad_scores_are_refused_with_what_was_expected() -> None:
    samples = [Sample(True, "g", "a"), Sample(False, "s", "b"), Sample(False, "s", "c")]
    cfg = BootstrapConfig(draws=10)
    with pytest.raises(
        InputError, match=r"short: expected 3 finite scores, one per sample, got shape \(2,\)"
    ):
        compare_eers(samples, {"short": np.zeros(2)}, cfg)
    with pytest.raises(InputError, match="nan: expected 3 finite scores"):
        compare_eers(samples, {"nan": np.array([1.0, np.nan, 0.0])}, cfg)
    with pytest.raises(InputError, match=r"reference 'x': expected one of \['m'\]"):
        compare_eers(samples, {"m": np.zeros(3)}, cfg, "x")
    with pytest.raises(InputError, match="needs bona fide and spoof samples"):
        Resampler(samples[1:])
    assert compare_eers(samples, {"m": np.zeros(3)}, BootstrapConfig(draws=0)) == {}
