"""Bootstrap intervals of pooled EERs and of paired differences, on the
official AASIST-L's real scores of the ASVspoof 2019 LA eval set (13 attacks,
71,237 trials) from ../shared."""

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
from spoofwatch.errors import InputError

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
    # two genuine corpora and three spoof systems; every clip has a clean and a channel copy
    samples = [
        Sample(bonafide, stratum, f"{stratum}-{clip}")
        for bonafide, stratum, clips in ((True, "LJ", 4), (True, "VCTK", 3), (False, "A", 5), (False, "B", 2))
        for clip in range(clips)
        for _ in range(2)
    ]
    for resample_systems in (False, True):
        resampler = Resampler(samples, seed=3, resample_spoof_strata=resample_systems)
        for _ in range(50):
            idx = resampler.draw()
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
