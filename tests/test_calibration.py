"""Metrics reproduce the official report; dataset scoring, fitting and
in-domain tuning work end to end on real shared data."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import BONAFIDE_UTT, SPOOF_UTTS, genuine_then_spoof, la_clip

from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.calibration.fit import threshold_for
from spoofwatch.calibration.metrics import eer, min_tdcf
from spoofwatch.calibration.protocol import AsvScores, ScoreTable, parse_protocol, read_scores
from spoofwatch.cli import main
from spoofwatch.constants import WINDOW_SAMPLES
from spoofwatch.errors import CalibrationError, ConfigError, DatasetError, InputError, ModelError

OFFICIAL = {
    "A07": 0.553447233,
    "A08": 0.203721550,
    "A09": 0.0,
    "A10": 1.001634642,
    "A11": 0.139206037,
    "A12": 0.692653269,
    "A13": 0.203721550,
    "A14": 0.057717417,
    "A15": 0.570420339,
    "A16": 0.634935852,
    "A17": 1.914982568,
    "A18": 3.049025150,
    "A19": 0.709626376,
}


def test_evaluate_reproduces_official_report(shared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scores = shared / "data/scores/aasist-l_official_la_eval_scores.txt"
    asv = shared / "data/asvspoof2019_la/asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
    assert main(["evaluate", "--json", "--scores", str(scores), "--asv-scores", str(asv)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert round(report["eer_percent"], 6) == 0.990923
    assert round(report["min_tdcf"], 6) == 0.030806
    assert report["per_attack_eer_percent"].keys() == OFFICIAL.keys()
    for attack, value in OFFICIAL.items():
        assert abs(report["per_attack_eer_percent"][attack] - value) < 1e-4
    assert report["n_bonafide"] + report["n_spoof"] == 71237
    assert main(["evaluate", "--scores", str(scores), "--asv-scores", str(asv)]) == 0
    text = capsys.readouterr().out
    official = (shared / "data/scores/aasist-l_official_la_eval_report.txt").read_text()
    assert text.strip() == official.strip()


@pytest.fixture()
def mini_la(la_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A real-layout LA tree built from the four shared clips and a protocol subset."""
    root = tmp_path / "LA"
    flac = root / "ASVspoof2019_LA_dev" / "flac"
    flac.mkdir(parents=True)
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir()
    lines = []
    for split in ("train.trn", "dev.trl", "eval.trl"):
        for line in (la_dir / f"protocols/ASVspoof2019.LA.cm.{split}.txt").read_text().splitlines():
            if line.split()[1] in (BONAFIDE_UTT, *SPOOF_UTTS):
                lines.append(line)
    for utt in (BONAFIDE_UTT, *SPOOF_UTTS):
        shutil.copy(la_dir / "flac" / f"{utt}.flac", flac / f"{utt}.flac")
    protocol = protocols / "ASVspoof2019.LA.cm.dev.trl.txt"
    protocol.write_text("\n".join(lines) + "\n")
    return protocol, flac


def score_command(mini_la: tuple[Path, Path], out: Path) -> list[str]:
    protocol, flac = mini_la
    return [
        "calibrate",
        "score",
        "--device",
        "cpu",
        "--protocol",
        str(protocol),
        "--audio-dir",
        str(flac),
        "--out",
        str(out),
    ]


def test_score_fit_and_load_end_to_end(
    sw_home: Path, mini_la: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flac = mini_la[1]
    out = tmp_path / "scores.txt"
    args = score_command(mini_la, out)
    assert main(args) == 0
    table = read_scores(out)
    assert sorted(table.utts) == sorted([BONAFIDE_UTT, *SPOOF_UTTS])
    bona = table.by_label("bonafide")[0]
    assert bona == pytest.approx(6.847424, abs=1e-3)
    assert all(s < bona for s in table.by_label("spoof"))
    windows = [
        json.loads(line) for line in out.with_name("scores.txt.windows.jsonl").read_text().splitlines()
    ]
    assert {w["utt"] for w in windows} == set(table.utts)
    # Resumable: a rerun scores nothing new and leaves the file as it was.
    before = out.read_text()
    assert main(args) == 0
    assert out.read_text() == before and "scored 0 files (4 already done" in capsys.readouterr().out

    cal_path = tmp_path / "calibration.toml"
    # The run stamp says what made the scores: a fit for another model or
    # precision would stamp the calibration with what it does not fit.
    for other in (["--model", "aasist"], ["--precision", "int8"]):
        assert (
            main(["calibrate", "fit", "--scores", str(out), *other, "--out", str(cal_path)])
            == InputError.exit_code
        )
        assert (
            "pass the --model, --weights and --precision the scores were made with" in capsys.readouterr().err
        )
    assert not cal_path.exists()
    # Fitting for custom weights is calibrating them: no "calibrate for them" warning.
    mine = tmp_path / "mine.pth"
    shutil.copy(Path(sw_home) / "weights" / "AASIST-L.pth", mine)
    argv = ["calibrate", "fit", "--scores", str(out), "--weights", str(mine), "--out", str(cal_path)]
    assert main(argv) == 0
    assert "calibrate for them" not in capsys.readouterr().err
    assert main(["calibrate", "fit", "--scores", str(out), "--target", "eer", "--out", str(cal_path)]) == 0
    cal = load_calibration(cal_path, model="aasist-l")
    # Verdicts are "bona fide if >= threshold": the fitted EER (0 %) must hold, the
    # highest spoof score (the DET threshold) included.
    assert max(table.by_label("spoof")) < cal.verdict_threshold <= bona
    assert cal.policy.enter_threshold == cal.verdict_threshold
    assert cal.provenance["metrics"]["eer_percent"] == 0.0
    assert (
        main(
            [
                "score",
                "--json",
                "--device",
                "cpu",
                "--calibration",
                str(cal_path),
                str(flac / f"{BONAFIDE_UTT}.flac"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["threshold"] == cal.verdict_threshold
    assert (
        main(
            [
                "calibrate",
                "fit",
                "--scores",
                str(out),
                "--target",
                "spoof-miss",
                "--rate",
                "0.0",
                "--out",
                str(cal_path),
            ]
        )
        == 0
    )
    assert load_calibration(cal_path).verdict_threshold > max(table.by_label("spoof"))


def test_first_window_only_scores_long_files_once_with_the_same_scores(
    sw_home: Path, mini_la: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--hop-s 0`` (the fast path for EER/min t-DCF): the score file is what
    the default writes, and a file longer than one window is scored once, not
    once per hop. Every LA clip here is shorter than a window, so a 7.2 s file
    is made by joining three of them."""
    import soundfile

    from spoofwatch.audio import read_audio

    protocol, flac = mini_la
    joined = np.concatenate([read_audio(flac / f"{u}.flac") for u in (BONAFIDE_UTT, *SPOOF_UTTS[:2])])
    assert joined.size > 64_600 + 8_000 * 2  # at least three windows at the default hop
    soundfile.write(str(flac / "LA_D_9999999.flac"), joined, 16_000)
    protocol.write_text(protocol.read_text() + "LA_0000 LA_D_9999999 - A01 spoof\n")
    runs = {}
    for hop in ("0.5", "0"):
        out = tmp_path / f"hop{hop}.txt"
        assert main([*score_command(mini_la, out), "--hop-s", hop]) == 0
        windows = [json.loads(x) for x in out.with_name(out.name + ".windows.jsonl").read_text().splitlines()]
        runs[hop] = (out.read_text(), {w["utt"]: len(w["scores"]) for w in windows})
    assert runs["0"][0] == runs["0.5"][0]
    assert runs["0.5"][1]["LA_D_9999999"] >= 3
    assert set(runs["0"][1].values()) == {1}
    for bad in ("-1", "nan", "inf", "1e-5", "x"):
        with pytest.raises(SystemExit) as exit_info:
            main([*score_command(mini_la, tmp_path / "bad.txt"), "--hop-s", bad])
        assert exit_info.value.code == 2, bad
        assert "--hop-s: expected" in capsys.readouterr().err, bad
    assert not (tmp_path / "bad.txt").exists()  # refused before anything was scored


def test_missing_and_corrupt_files(
    sw_home: Path, mini_la: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flac = mini_la[1]
    (flac / f"{SPOOF_UTTS[0]}.flac").unlink()
    args = score_command(mini_la, tmp_path / "s.txt")
    assert main(args) == DatasetError.exit_code
    assert "1 of 4 files in ASVspoof2019.LA.cm.dev.trl.txt are missing or empty" in capsys.readouterr().err
    (flac / f"{SPOOF_UTTS[1]}.flac").write_bytes(b"fLaC garbage")
    assert main([*args, "--skip-missing"]) == 1  # the corrupt file fails, the others are scored
    assert len(read_scores(tmp_path / "s.txt").utts) == 2


def test_malformed_protocol_and_scores(tmp_path: Path) -> None:
    bad = tmp_path / "protocol.txt"
    bad.write_text("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - maybe\n")
    with pytest.raises(
        DatasetError, match=r"protocol.txt:2: expected 'SPEAKER UTT_ID - ATTACK\|- bonafide\|spoof'"
    ):
        parse_protocol(bad)
    scores = tmp_path / "scores.txt"
    scores.write_text("LA_E_1 A07 spoof 1.5\nLA_E_2 - bonafide nan\n")
    with pytest.raises(DatasetError, match=r"scores\.txt:2: expected a finite numeric score, got 'nan'"):
        read_scores(scores)
    scores.write_text("LA_E_1 A07 spoof 1.5\nLA_E_2 - bonafide 1_000\n")  # float() reads it as 1000
    with pytest.raises(DatasetError, match=r"scores\.txt:2: expected a finite numeric score, got '1_000'"):
        read_scores(scores)
    scores.write_text(
        "LA_E_1 A07 spoof 1.5\nLA_E_2 - bonafide \u0663\n"
    )  # an Arabic-Indic 3, as float() reads it
    with pytest.raises(DatasetError, match=r"scores\.txt:2: expected a finite numeric score, got '\u0663'"):
        read_scores(scores)
    scores.write_text("LA_E_1 A07 spoof 1.5\nLA_E_2 - bonafide 2.0\nLA_E_1 A07 spoof 1.5\n")
    with pytest.raises(DatasetError, match=r"scores\.txt:3: utterance 'LA_E_1' is scored again"):
        read_scores(scores)
    scores.write_bytes(b"\xef\xbb\xbfLA_E_1 1.5\nLA_E_2 2.0\n")  # an editor's byte-order mark
    bom_protocol = tmp_path / "bom_protocol.txt"
    bom_protocol.write_bytes(b"\xef\xbb\xbfS1 LA_E_1 - A07 spoof\nS2 LA_E_2 - - bonafide\n")
    assert read_scores(scores, bom_protocol).utts == ["LA_E_1", "LA_E_2"]
    # With a protocol, the protocol is the truth: a line's labels must agree, its utterance be listed.
    protocol = tmp_path / "truth.txt"
    protocol.write_text("LA_0079 LA_E_1 - A07 spoof\nLA_0079 LA_E_2 - - bonafide\n")
    scores.write_text("LA_E_1 A07 spoof 1.5\nLA_E_2 2.0\n")
    assert read_scores(scores, protocol).labels == ["spoof", "bonafide"]
    scores.write_text("LA_E_1 - bonafide 1.5\n")
    with pytest.raises(DatasetError, match=r"LA_E_1 is '- bonafide' here but 'A07 spoof' in the protocol"):
        read_scores(scores, protocol)
    scores.write_text("LA_E_9 A01 spoof 0.0\n")
    with pytest.raises(DatasetError, match=r"utterance 'LA_E_9' is not in the protocol"):
        read_scores(scores, protocol)


def test_calibration_file_validation(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'schema_version = 1\nmodel = "aasist-l"\nweights_sha256 = "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a"\nthreshold = "high"\n'
        + POLICY
    )
    with pytest.raises(ConfigError, match="threshold: expected a finite number"):
        load_calibration(path)
    path.write_text(
        'schema_version = 1\nmodel = "aasist-l"\nweights_sha256 = "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a"\nthreshold = 1.0\n'
    )
    with pytest.raises(ConfigError, match="missing required field 'policy'"):
        load_calibration(path)
    path.write_text(
        'schema_version = 1\nmodel = "aasist-l"\nweights_sha256 = "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a"\nthreshold = 1.0\n[policy]\nsmoothing = 3\n'
    )
    with pytest.raises(ConfigError, match="unknown field"):
        load_calibration(path)
    path.write_text("not = [toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_calibration(path)
    from spoofwatch.calibration.calfile import save_calibration

    save_calibration(load_calibration(model="aasist-l"), path)
    with pytest.raises(CalibrationError, match="made for model 'aasist-l', not 'aasist'"):
        load_calibration(path, model="aasist")


SHA_L = "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a"
POLICY = "[policy]\nenter_threshold = 0.5\nexit_threshold = 1.5\n"


def test_schema_1_files_still_load_and_newer_ones_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text(
        f'schema_version = 1\nmodel = "aasist-l"\nweights_sha256 = "{SHA_L}"\nthreshold = 0.25\n{POLICY}'
    )
    cal = load_calibration(path, model="aasist-l")
    assert cal.verdict_threshold == 0.25 and (cal.policy.enter_threshold, cal.policy.exit_threshold) == (
        0.5,
        1.5,
    )
    from spoofwatch.calibration.calfile import save_calibration

    save_calibration(cal, tmp_path / "new.toml")
    text = (tmp_path / "new.toml").read_text()
    assert "schema_version = 2" in text and "verdict_threshold = 0.25" in text
    assert load_calibration(tmp_path / "new.toml") == cal
    # A schema 2 file uses the new name only.
    path.write_text(
        f'schema_version = 2\nmodel = "aasist-l"\nweights_sha256 = "{SHA_L}"\nthreshold = 0.25\n{POLICY}'
    )
    with pytest.raises(ConfigError, match=r"unknown top-level field.*threshold for schema_version 2"):
        load_calibration(path)
    path.write_text(f'schema_version = 3\nmodel = "aasist-l"\nweights_sha256 = "{SHA_L}"\n')
    with pytest.raises(ConfigError, match=r"expected schema_version 1 or 2, got 3 .written by a newer"):
        load_calibration(path)


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("[stream]\nhop_s = 0.00001\n", "hop_s", r"hop_s: expected a value in \[0.032, 4.0375\]"),
        ("[stream]\nhop_s = 5.0\n", "hop_s", "hop_s: expected"),
        ("[stream]\nmax_pending_windows = 0\n", "", "max_pending_windows: expected >= 1"),
        ("[stream]\nmax_lag_s = 600.0\n", "", r"max_lag_s: expected a value in \(0, 60\] seconds"),
        ("[stream]\nmax_lag_s = 0.0\n", "", "max_lag_s: expected"),
        ("[gate]\nvad_threshold = 1.5\n", "", "vad_threshold: expected a value in"),
    ],
)
def test_out_of_range_fields_are_refused_at_load(
    section: str, value: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f'schema_version = 2\nmodel = "aasist-l"\nweights_sha256 = "{SHA_L}"\nverdict_threshold = 0.0\n{POLICY}{section}'
    )
    with pytest.raises(ConfigError, match=message):
        load_calibration(path)


def test_every_command_refuses_a_bad_calibration_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``serve`` used to accept hop_s = 0.00001 and then fail every stream with 1011."""
    path = tmp_path / "tiny_hop.toml"
    path.write_text(
        f'schema_version = 2\nmodel = "aasist-l"\nweights_sha256 = "{SHA_L}"\nverdict_threshold = 0.0\n{POLICY}[stream]\nhop_s = 0.00001\n'
    )
    wav = tmp_path / "x.wav"
    import numpy as np
    import soundfile

    soundfile.write(wav, np.zeros(16000, np.float32), 16000)
    for command in (["serve", "--port", "0"], ["score", str(wav)], ["stream", str(wav)], ["monitor"]):
        assert main([*command, "--calibration", str(path)]) == ConfigError.exit_code, command
        assert "hop_s: expected a value in" in capsys.readouterr().err, command


def test_default_calibration_provenance() -> None:
    cal = load_calibration(model="aasist-l")
    assert cal.verdict_threshold == pytest.approx(1.76397, abs=1e-4)
    assert "LA eval" in cal.provenance["source"] and "dev set replaces it" in cal.provenance["note"]


def test_shipped_calibrations_write_only_what_differs_from_the_code_defaults() -> None:
    """Each setting is defined once: a shipped file holds what was calibrated
    (thresholds; a card's hop), never a copy of a dataclass default."""
    import tomllib
    from importlib import resources

    from spoofwatch.stream.engine import EngineConfig
    from spoofwatch.stream.gate import GateConfig
    from spoofwatch.stream.policy import PolicyConfig

    sections = {"stream": EngineConfig, "policy": PolicyConfig, "gate": GateConfig}
    folder = resources.files("spoofwatch.configs").joinpath("calibration")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".toml"))
    assert names == ["aasist-l.toml", "aasist.toml", "model-card.toml"]
    for name in names:
        data = tomllib.loads(folder.joinpath(name).read_text("utf-8"))
        for section, cls in sections.items():
            defaults = {
                f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
            }
            repeated = {k: v for k, v in data.get(section, {}).items() if defaults.get(k) == v}
            assert not repeated, f"{name} [{section}] repeats code defaults: {repeated}"


def test_bonafide_tuning_meets_its_target(
    sw_home: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audio_dir = tmp_path / "mine"
    (audio_dir / "b").mkdir(parents=True)
    for k, path in enumerate(
        sorted((shared / "data/speech/bonafide/librispeech_test-other").glob("*.flac"))[:12]
    ):
        shutil.copy(path, audio_dir / ("b" if k % 2 else ".") / path.name)  # a subfolder is searched too
    (audio_dir / "zz-notes.wav").write_text("not audio")  # skipped with a warning, not fatal
    out = tmp_path / "cal.toml"
    assert (
        main(
            [
                "calibrate",
                "bonafide",
                "--device",
                "cpu",
                "--audio-dir",
                str(audio_dir),
                "--target-false-alerts-per-hour",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "skipping" in captured.err
    (audio_dir / "zz-notes.wav").unlink()
    cal = load_calibration(out, model="aasist-l")
    assert cal.provenance["metrics"]["false_alerts_per_hour"] == 0.0
    assert cal.provenance["dataset"].startswith("12 genuine recordings")
    # It names the genuine moments that hold the threshold down, by their
    # path under the folder (what they promise is tested on random traces in
    # test_limiting_alerts_name_what_the_next_threshold_adds).
    limits = cal.provenance["limited_by"]
    assert limits and f"a higher threshold would add false alerts in: {limits[0]}" in captured.out
    files = sorted(audio_dir.rglob("*.flac"))
    assert {label.rsplit(" at ", 1)[0] for label in limits} <= {
        p.relative_to(audio_dir).as_posix() for p in files
    }
    # Replaying the same audio through the live engine with the new calibration raises no alert.
    for path in files:
        assert main(["stream", "--json", "--device", "cpu", "--calibration", str(out), str(path)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert not [e for e in events if e["type"] == "alert_start"]
    assert (
        cal.verdict_threshold < load_calibration(model="aasist-l").verdict_threshold
    )  # LibriSpeech sits below LA bona fide


def test_streaming_calibration_and_report(
    sw_home: Path,
    la_dir: Path,
    mini_la: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import soundfile

    protocol, flac = mini_la
    scores = tmp_path / "scores.txt"
    assert main(score_command(mini_la, scores)) == 0
    cal_path = tmp_path / "calibration.toml"
    report_dir = tmp_path / "report"
    args = ["calibrate", "fit", "--device", "cpu", "--scores", str(scores), "--protocol", str(protocol)]
    args += ["--audio-dir", str(flac), "--conversations", "2", "--conversation-s", "16"]
    args += ["--target-false-alerts-per-hour", "0", "--report", str(report_dir), "--out", str(cal_path)]
    assert main(args) == 0
    cal = load_calibration(cal_path, model="aasist-l")
    metrics = cal.provenance["metrics"]
    assert cal.provenance["streaming"].startswith("4 simulated conversations")
    assert metrics["false_alerts_per_hour"] == 0.0
    assert metrics["detection_rate"] == 1.0 and 0 < metrics["median_delay_s"] < 10
    width = cal.policy.exit_threshold - cal.policy.enter_threshold
    assert any(width == pytest.approx(m) for m in (0.5, 1.0, 2.0))
    for name in ("det.png", "histograms.png", "per_attack_eer.png", "false_alerts.png", "delay.png"):
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    text = (report_dir / "report.md").read_text()
    assert "## Streaming" in text and "false alerts per hour" in text and "![DET curve](det.png)" in text
    # The fitted policy, run live on a new bona fide -> spoof stream, alerts only after the switch.
    stream = genuine_then_spoof(la_dir, onset_s=9.0, spoof_s=8.0, spoof_utt=SPOOF_UTTS[2])
    soundfile.write(tmp_path / "switch.wav", stream, 16000, subtype="FLOAT")
    capsys.readouterr()
    assert (
        main(
            [
                "stream",
                "--json",
                "--device",
                "cpu",
                "--calibration",
                str(cal_path),
                str(tmp_path / "switch.wav"),
            ]
        )
        == 0
    )
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    starts = [e["t"] for e in events if e["type"] == "alert_start"]
    assert starts and all(t > 9.0 for t in starts)


def test_eer_threshold_realises_the_eer_it_reports(tmp_path: Path) -> None:
    """``calibrate fit --target eer``: the calibration accepts scores >= its
    threshold, the DET curve rejects scores <= it. At the fitted threshold the
    dev scores must fall where the EER counted them, the one on the DET
    threshold included, also when the score file rounded it down."""
    cases = [([6.85], [-3.0, -1.0, 0.5]), ([0.0, 1.0, 2.0, 3.0, 4.0], [-2.0, -1.0, 0.5, 1.5, 2.5])]
    for bona_list, spoof_list in cases:
        bona, spoof = np.array(bona_list), np.array(spoof_list)
        table = ScoreTable(
            [f"b{i}" for i in range(bona.size)] + [f"s{i}" for i in range(spoof.size)],
            ["-"] * bona.size + ["A01"] * spoof.size,
            ["bonafide"] * bona.size + ["spoof"] * spoof.size,
            np.concatenate([bona, spoof]),
        )
        reported, det_threshold = eer(bona, spoof)
        threshold = threshold_for(table, "eer")
        rejected, accepted = np.mean(bona < threshold), np.mean(spoof >= threshold)
        assert (rejected + accepted) / 2 == pytest.approx(reported)
        # A score rounded to 6 decimals onto the DET threshold: the true one is up to 5e-7 higher.
        assert det_threshold + 5e-7 < threshold


def test_rate_thresholds_hold_for_the_scores_a_score_file_rounded() -> None:
    """`calibrate fit --target bonafide-false-alarm|spoof-miss` took its threshold
    straight from the score file, whose scores are rounded to 6 decimals: a
    genuine score rounded up onto it fell below it at run time (a false alarm at
    --rate 0), a spoof rounded down onto it was accepted (a miss too many)."""
    true_bona = np.array([3.9074535, 5.1, 6.2, 7.0, 7.5])
    true_spoof = np.array([-2.0, -1.0, 0.5, 1.2, 1.80526328, 2.5])
    table = ScoreTable(
        [f"b{i}" for i in range(true_bona.size)] + [f"s{i}" for i in range(true_spoof.size)],
        ["-"] * true_bona.size + ["A01"] * true_spoof.size,
        ["bonafide"] * true_bona.size + ["spoof"] * true_spoof.size,
        np.round(np.concatenate([true_bona, true_spoof]), 6),  # what the file holds
    )
    assert np.round(3.9074535, 6) > 3.9074535 and np.round(1.80526328, 6) < 1.80526328
    for rate in (0.0, 0.2, 0.4):
        threshold = threshold_for(table, "bonafide-false-alarm", rate)
        assert np.mean(true_bona < threshold) <= rate
        assert np.mean(true_spoof >= threshold) == np.mean(table.by_label("spoof") >= threshold)
    for rate in (0.0, 0.2, 0.4):
        threshold = threshold_for(table, "spoof-miss", rate)
        assert np.mean(true_spoof >= threshold) <= rate
        assert np.mean(true_bona < threshold) == np.mean(table.by_label("bonafide") < threshold)
    # Below every dev score: a unit of the last decimal below the lowest.
    only_bona = ScoreTable(["b0", "b1"], ["-", "-"], ["bonafide"] * 2, np.array([1.0, 2.0]))
    assert threshold_for(only_bona, "bonafide-false-alarm", 0.0) == pytest.approx(1.0 - 1e-6, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_rate_thresholds_allow_every_error_the_rate_allows(seed: int) -> None:
    """The rate targets never exceeded the rate, but read it as a quantile
    (index rate·(n−1)): with 4 genuine scores at --rate 0.25 none was
    rejected, at no gain and at the cost of a spoof accepted. Each threshold
    must now be the least strict that keeps to the rate: one more score on
    the wrong side would break it. Ties included (score files round)."""
    rng = np.random.default_rng(seed)
    for _ in range(200):
        n_bona, n_spoof = rng.integers(1, 30, size=2)
        bona = np.round(rng.normal(1.0, 1.0, n_bona), int(rng.integers(0, 3)))
        spoof = np.round(rng.normal(-1.0, 1.0, n_spoof), int(rng.integers(0, 3)))
        table = ScoreTable(
            [f"b{i}" for i in range(n_bona)] + [f"s{i}" for i in range(n_spoof)],
            ["-"] * n_bona + ["A01"] * n_spoof,
            ["bonafide"] * n_bona + ["spoof"] * n_spoof,
            np.concatenate([bona, spoof]),
        )
        rate = float(rng.choice([0.0, 0.1, 0.25, 0.29, 0.5, 0.99]))
        t = threshold_for(table, "bonafide-false-alarm", rate)
        assert np.sum(bona < t) <= rate * n_bona + 1e-9
        accepted = bona[bona >= t]  # rejecting the lowest of them as well breaks the rate
        assert np.sum(bona <= accepted.min()) > rate * n_bona + 1e-9
        t = threshold_for(table, "spoof-miss", rate)
        assert np.sum(spoof >= t) <= rate * n_spoof + 1e-9
        rejected = spoof[spoof < t]
        if rejected.size:  # accepting the highest of them as well breaks the rate
            assert np.sum(spoof >= rejected.max()) > rate * n_spoof + 1e-9
    # 1 of 4 genuine may be rejected, 2 of 4 spoofs accepted.
    four = ScoreTable(
        [f"u{i}" for i in range(8)],
        ["-"] * 4 + ["A01"] * 4,
        ["bonafide"] * 4 + ["spoof"] * 4,
        np.array([1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.5, -2.0]),
    )
    assert threshold_for(four, "bonafide-false-alarm", 0.25) == 1.75
    assert threshold_for(four, "spoof-miss", 0.5) == -0.5


def test_fit_says_what_its_threshold_does_on_the_dev_scores(
    sw_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A false-alarm rate needs genuine scores only, but fit also computed the
    EER for its provenance and refused a genuine-only file. And with scores
    tied across the classes the EER it recorded is a point no threshold
    reaches (the official tools count tied scores one at a time): fit now
    says so, and records what its threshold rejects and accepts."""
    only_bona = tmp_path / "bona.txt"
    only_bona.write_text("u1 - bonafide 1\nu2 - bonafide 2\nu3 - bonafide 3\nu4 - bonafide 4\n")
    out = tmp_path / "cal.toml"
    fit = ["calibrate", "fit", "--scores", str(only_bona), "--out", str(out)]
    assert main([*fit, "--target", "bonafide-false-alarm", "--rate", "0.25"]) == 0
    assert (
        "threshold +1.5000 (bonafide-false-alarm); bona fide rejected 25.0000 %;" in capsys.readouterr().out
    )
    metrics = load_calibration(out).provenance["metrics"]
    assert metrics == {"n_bonafide": 4, "n_spoof": 0, "bonafide_rejected_percent": 25.0}
    assert (
        main([*fit, "--target", "bonafide-false-alarm", "--rate", "0.25", "--report", str(tmp_path / "r")])
        == InputError.exit_code
    )
    assert (
        "--report plots the DET curve and EER, which need bona fide and spoof scores"
        in capsys.readouterr().err
    )

    ties = tmp_path / "ties.txt"
    ties.write_text(
        "b1 - bonafide 0\nb2 - bonafide 0\nb3 - bonafide 1\ns1 A01 spoof -1\ns2 A01 spoof 0\ns3 A01 spoof 0\n"
    )
    fit = ["calibrate", "fit", "--scores", str(ties), "--out", str(out), "--target", "eer"]
    assert main(fit) == 0
    said = capsys.readouterr()
    assert "EER 66.6667 %; bona fide rejected 66.6667 %; spoofs accepted 0.0000 %" in said.out
    assert "scores tie at the EER point" in said.err
    metrics = load_calibration(out).provenance["metrics"]
    assert metrics["eer_percent"] == pytest.approx(200 / 3) and metrics["spoof_accepted_percent"] == 0.0


def test_min_tdcf_undefined_is_an_error_not_nan() -> None:
    """An ASV that rejects every spoof at its EER threshold zeroes the t-DCF's
    normalisation: a clear error, never NaN in a JSON report."""
    asv = AsvScores(target=np.array([5.0, 6.0]), nontarget=np.array([-5.0, -6.0]), spoof=np.array([-9.0]))
    with pytest.raises(CalibrationError, match="rejects every spoof"):
        min_tdcf(np.array([3.0, 4.0]), np.array([-1.0, 0.0]), asv)


class _ScoresByContent:
    """A stand-in model: a score from each window's content, NaN for the
    windows of one utterance (as a broken model card's model might)."""

    window_samples = WINDOW_SAMPLES

    def __init__(
        self, nan_for: np.ndarray | None = None, all_nan: bool = False, raise_for: np.ndarray | None = None
    ) -> None:
        self.nan_for = nan_for
        self.all_nan = all_nan
        self.raise_for = raise_for

    def scores(self, windows: np.ndarray) -> np.ndarray:
        if self.raise_for is not None and any(np.array_equal(w, self.raise_for) for w in windows):
            raise ModelError("stand-in.onnx: ONNX Runtime failed on this window")
        out = np.abs(windows).mean(axis=1).astype(np.float32) * 100
        if self.all_nan:
            return np.full_like(out, np.nan)
        if self.nan_for is not None:
            out[[np.array_equal(w, self.nan_for) for w in windows]] = np.nan
        return out


def test_score_dataset_repairs_a_cut_last_line_and_reports_what_it_cannot_score(
    shared: Path, tmp_path: Path
) -> None:
    """A run cut mid-line resumes to the file an uncut run writes; a file that
    resamples to no samples and a non-finite score are failures of their own
    utterance, never of the run, and never written; a protocol listing an
    utterance twice is refused."""
    import soundfile

    from spoofwatch.audio import official_window, read_audio
    from spoofwatch.calibration.dataset import check_dataset
    from spoofwatch.calibration.scoreset import score_dataset

    flac = tmp_path / "flac"
    flac.mkdir()
    for utt in (BONAFIDE_UTT, *SPOOF_UTTS):
        shutil.copy(shared / "data" / "asvspoof2019_la" / "flac" / f"{utt}.flac", flac / f"{utt}.flac")
    lines = [f"LA_0000 {BONAFIDE_UTT} - - bonafide"] + [f"LA_0000 {u} - A04 spoof" for u in SPOOF_UTTS]
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n")
    dataset = check_dataset(protocol, flac)
    whole, cut = tmp_path / "whole.txt", tmp_path / "cut.txt"
    score_dataset(dataset, _ScoresByContent(), whole, 0.0, workers=1, progress=False)
    text = whole.read_text()
    stamp = whole.with_name("whole.txt.run.json")  # what wrote it: resumed only by the same run
    for keep in (len(text) - 5, len(text) - 12):  # inside the last score; inside its label
        cut.write_text(text[:keep])
        shutil.copy(stamp, tmp_path / "cut.txt.run.json")
        run = score_dataset(dataset, _ScoresByContent(), cut, 0.0, workers=1, progress=False)
        assert cut.read_text() == text and run.scored == 1 and run.skipped == len(lines) - 1
        assert read_scores(cut).utts == read_scores(whole).utts
    # Damaged lines (a NaN, a field missing, a stray line, one utterance twice) were kept
    # beside the rescored line, and the file no longer read back: a resume removes them.
    first, second, *rest = text.splitlines(keepends=True)
    first_utt = first.split()[0]
    damaged = [
        f"{first_utt} - bonafide nan\n",
        second.rsplit(" ", 1)[0] + "\n",
        "garbage\n",
        *rest[:1],
        *rest,
    ]
    cut.write_text("".join(damaged))
    run = score_dataset(dataset, _ScoresByContent(), cut, 0.0, workers=1, progress=False)
    assert run.scored == 2 and run.skipped == len(lines) - 2
    assert sorted(cut.read_text().splitlines()) == sorted(text.splitlines())
    assert sorted(read_scores(cut).utts) == sorted(read_scores(whole).utts)  # reads back
    # Another hop or model would mix its scores in (or skip utterances as done): refused.
    with pytest.raises(InputError, match=r"was scored with another hop_s \(hop_s=0\.0\)"):
        score_dataset(dataset, _ScoresByContent(), whole, 0.5, workers=1, progress=False)
    with pytest.raises(InputError, match=r"was scored with another model"):
        score_dataset(dataset, _ScoresByContent(), whole, 0.0, workers=1, progress=False, model_identity="x")
    (tmp_path / "unstamped.txt").write_text(text)
    with pytest.raises(InputError, match=r"already holds scores but no unstamped.txt.run.json"):
        score_dataset(dataset, _ScoresByContent(), tmp_path / "unstamped.txt", 0.0, workers=1, progress=False)
    # The labels are copied into the score file: a resume from a relabelled
    # (or another) protocol would keep the old ones. Refused, naming one.
    relabelled = tmp_path / "relabelled.txt"
    relabelled.write_text("\n".join(line.replace("A04", "A99") for line in lines) + "\n")
    with pytest.raises(
        InputError, match=rf"scored {SPOOF_UTTS[0]} as 'A04 spoof' but this protocol says 'A99 spoof'"
    ):
        score_dataset(
            check_dataset(relabelled, flac), _ScoresByContent(), whole, 0.0, workers=1, progress=False
        )
    relabelled.write_text(lines[0] + "\n")
    with pytest.raises(
        InputError, match=rf"scored {SPOOF_UTTS[0]} as 'A04 spoof' but it is not in this protocol"
    ):
        score_dataset(
            check_dataset(relabelled, flac), _ScoresByContent(), whole, 0.0, workers=1, progress=False
        )
    assert whole.read_text() == text

    soundfile.write(str(flac / "LA_X_0000001.flac"), np.full(5, 0.1, np.float32), 192_000)
    protocol.write_text("\n".join([*lines, "LA_0000 LA_X_0000001 - A01 spoof"]) + "\n")
    broken = _ScoresByContent(nan_for=official_window(read_audio(flac / f"{SPOOF_UTTS[0]}.flac")))
    for hop_s in (0.0, 0.5):
        out = tmp_path / f"scores-{hop_s}.txt"
        run = score_dataset(check_dataset(protocol, flac), broken, out, hop_s, workers=1, progress=False)
        assert sorted(run.failed) == sorted(["LA_X_0000001", SPOOF_UTTS[0]])
        assert len(read_scores(out).utts) == len(lines) - 1  # readable: no NaN written
    # A model that fails in ONNX Runtime on one file's windows (a card's model can):
    # that file fails, the rest of its batch is scored, the run goes on.
    raising = _ScoresByContent(raise_for=official_window(read_audio(flac / f"{SPOOF_UTTS[0]}.flac")))
    out = tmp_path / "scores-raising.txt"
    run = score_dataset(check_dataset(protocol, flac), raising, out, 0.0, workers=1, progress=False)
    assert sorted(run.failed) == sorted(["LA_X_0000001", SPOOF_UTTS[0]])
    assert read_scores(out).utts == read_scores(tmp_path / "scores-0.0.txt").utts

    protocol.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(
        DatasetError, match=rf"protocol.txt:{len(lines) + 1}: utterance {SPOOF_UTTS[0]} is listed again"
    ):
        parse_protocol(protocol)


def test_bonafide_threshold_is_the_highest_the_smoothed_scores_allow() -> None:
    """The policy alerts on the mean of the last two scores: raw scores 5, 1, 5
    smooth to 5, 3, 3, so any threshold up to 3 raises no alert on this
    genuine trace, and anything above 3 alerts. The fit must find that edge
    (candidates taken at raw scores stopped just below 1)."""
    from spoofwatch.calibration.fit import bonafide_threshold, limiting_alerts
    from spoofwatch.calibration.streaming import Trace, measure
    from spoofwatch.stream.policy import PolicyConfig

    base = PolicyConfig(0.0, 0.5, smoothing_windows=2, min_alert_windows=1, cooldown_s=0.0)
    scores = [5.0, 1.0, 5.0, 5.0, None, 5.0]
    genuine = Trace(
        "genuine",
        60.0,
        None,
        [(float(i + 1), s, None if s is not None else float(i)) for i, s in enumerate(scores)],
    )
    threshold, rate = bonafide_threshold([genuine], base, target_per_hour=0.0)
    assert 2.0 < threshold <= 3.0 and rate == 0.0
    assert measure([genuine], base.with_band(3.0 + 1e-9)).false_alerts_per_hour > 0  # the edge
    # What holds it there: the alert that starts at 2 s (smoothed 3) once past the edge.
    assert limiting_alerts([genuine], base, threshold) == [("genuine", 2.0)]
    assert limiting_alerts([genuine], base, 6.0) == []  # nothing lies above the top level
    # With one window of smoothing the raw scores decide: the edge is at 1.
    raw = PolicyConfig(0.0, 0.5, smoothing_windows=1, min_alert_windows=1, cooldown_s=0.0)
    threshold, rate = bonafide_threshold([genuine], raw, target_per_hour=0.0)
    assert 0.0 < threshold <= 1.0 and rate == 0.0


def test_provenance_strings_with_control_characters_round_trip(tmp_path: Path) -> None:
    """A file name in ``limited_by`` may hold any character; the file must
    still be valid TOML and load back to the same strings."""
    from spoofwatch.calibration.calfile import save_calibration

    odd = ["a\rb.wav at 1.0 s", "x\x01\x7fy", 'tab\tq"uote\\slash', "new\nline", "é"]
    cal = dataclasses.replace(
        load_calibration(model="aasist-l"), provenance={"limited_by": odd, "note": odd[0]}
    )
    save_calibration(cal, tmp_path / "odd.toml")
    loaded = load_calibration(tmp_path / "odd.toml", model="aasist-l")
    assert loaded.provenance == {"limited_by": odd, "note": odd[0]}
    # A name that was not valid UTF-8 reaches Python with a lone surrogate,
    # which neither UTF-8 nor TOML can hold: it is written as U+FFFD.
    cal = dataclasses.replace(cal, provenance={"limited_by": ["bad\udcffname.wav at 2.0 s"]})
    save_calibration(cal, tmp_path / "odd.toml")
    assert load_calibration(tmp_path / "odd.toml").provenance["limited_by"] == ["bad\ufffdname.wav at 2.0 s"]
    assert [p.name for p in tmp_path.iterdir()] == ["odd.toml"]  # nothing half-written left


def test_limiting_alerts_name_only_alerts_a_higher_threshold_adds() -> None:
    """An alert that a higher threshold merely starts earlier, or pushes
    later with the cooldown of one it stretched, adds nothing; one where there
    was none is added. A threshold on a level acts like one of its two
    neighbouring intervals; the next one up that adds an alert decides."""
    from spoofwatch.calibration.fit import bonafide_threshold, limiting_alerts
    from spoofwatch.calibration.streaming import Trace
    from spoofwatch.stream.policy import PolicyConfig

    def recording(name: str, scores: list[float], seconds: float = 1800.0) -> Trace:
        return Trace(name, seconds, None, [(1.0 + i, s, None) for i, s in enumerate(scores)])

    two = PolicyConfig(0.0, 0.5, smoothing_windows=1, min_alert_windows=2, cooldown_s=0.0)
    # At 2.75 "a" alerts at 3 s; above 3 it alerts at 2 s instead (moved), and
    # "b" alerts where it did not.
    traces = [recording("a", [3.0, 1.0, 1.0, 10.0]), recording("b", [3.0, 3.0, 10.0])]
    threshold, _ = bonafide_threshold(traces, two, target_per_hour=1.0)
    assert threshold == 2.75
    assert limiting_alerts(traces, two, threshold) == [("b", 2.0)]
    # With a 3 s cooldown: at 0.25 "r1" alerts at 1-2 s and 5-6 s; at 0.75 at
    # 1-3 s, and its cooldown then holds the second back to 7 s. Two alerts
    # either way: only "r2"'s is added.
    slow = PolicyConfig(0.0, 0.5, smoothing_windows=1, min_alert_windows=1, cooldown_s=3.0)
    pushed = [
        recording("r1", [0.0, 1.0, 10.0, 10.0, 0.0, 10.0, 0.0, 10.0]),
        recording("r2", [0.5, 10.0]),
        recording("r3", [5.0, 10.0] * 10),
    ]
    threshold, _ = bonafide_threshold(pushed, slow, target_per_hour=4 / 3)
    assert threshold == 0.25
    assert limiting_alerts(pushed, slow, threshold) == [("r2", 1.0)]
    one = PolicyConfig(0.0, 0.5, smoothing_windows=1, min_alert_windows=1, cooldown_s=0.0)
    # 0.5 is a level (1.0 minus the band) and raises what 0.6 raises; the next
    # interval up that adds an alert starts "e"'s at 0.7.
    levels = [recording("d", [0.0, 1.0, 0.8, 10.0]), recording("e", [0.7, 10.0])]
    assert limiting_alerts(levels, one, 0.5) == limiting_alerts(levels, one, 0.6) == [("e", 1.0)]
    assert limiting_alerts([recording("d", [5.0])], one, 5.0) == [("d", 1.0)]
    assert limiting_alerts([recording("d", [5.0])], one, 5.6) == []  # past every level
    # A lax target is met above every level, where nothing holds it down.
    lax = [recording("r", [1.0, 1.0], seconds=3600.0)]
    threshold, rate = bonafide_threshold(lax, one, target_per_hour=2.0)
    assert threshold > 1.0 and rate == 1.0 and limiting_alerts(lax, one, threshold) == []


def test_alert_spans_end_an_open_alert_with_the_recording() -> None:
    from spoofwatch.calibration.streaming import Trace, alert_spans, replay
    from spoofwatch.stream.policy import PolicyConfig

    one = PolicyConfig(0.0, 0.5, smoothing_windows=1, min_alert_windows=1, cooldown_s=0.0)
    tr = Trace("r", 30.0, None, [(1.0, -1.0, None), (2.0, 5.0, None), (3.0, -1.0, None), (4.0, -2.0, None)])
    assert alert_spans(tr, one) == [(1.0, 2.0), (3.0, 30.0)]
    assert replay(tr, one) == [1.0, 3.0]


def test_limiting_alerts_name_what_the_next_threshold_adds() -> None:
    """What ``limited_by`` promises, on random recordings and targets: at the
    next threshold up, each recording is named once for each alert it gains,
    at the start of an alert raised there; at a target of 0, the next
    threshold meets the target once the named recordings are left out."""
    from spoofwatch.calibration.fit import _alert_levels, bonafide_threshold, limiting_alerts, smoothed_scores
    from spoofwatch.calibration.streaming import Trace, meets_false_alert_target, replay
    from spoofwatch.stream.policy import PolicyConfig

    rng = np.random.default_rng(5)
    checked = 0
    for case in range(600):
        base = PolicyConfig(
            0.0,
            float(rng.choice([0.5, 1.0, 3.0])),
            smoothing_windows=int(rng.integers(1, 4)),
            min_alert_windows=int(rng.integers(1, 3)),
            cooldown_s=float(rng.choice([0.0, 2.0, 4.0])),
        )
        traces = []
        for k in range(int(rng.integers(1, 5))):
            scores = [
                None if rng.random() < 0.1 else float(rng.normal(2.0, 3.0))
                for _ in range(int(rng.integers(3, 16)))
            ]
            traces.append(
                Trace(
                    f"r{k}",
                    600.0,
                    None,
                    [(1.0 + i, v, None if v is not None else float(i)) for i, v in enumerate(scores)],
                )
            )
        if max(sum(v is not None for _, v, _ in tr.windows) for tr in traces) < base.min_alert_windows:
            continue
        target = float(rng.choice([0.0, 6.0, 12.0]))  # 600 s recordings: 0, 1 or 2 alerts per recording
        threshold, _ = bonafide_threshold(traces, base, target_per_hour=target)
        levels = np.sort(_alert_levels(smoothed_scores(traces, base), base))
        # One threshold per interval between levels, lowest first, and one past the top.
        steps = [*((levels[:-1] + levels[1:]) / 2), levels[-1] + 1.0]

        def counts(at: float, traces: list[Trace] = traces, base: PolicyConfig = base) -> dict[str, int]:
            return {tr.name: len(replay(tr, base.with_band(at))) for tr in traces}

        # At the search's threshold, and at any other (where a higher one may
        # first only move alerts before one adds any).
        for at in (threshold, float(rng.choice(steps))):
            limits = limiting_alerts(traces, base, at)
            gained: dict[str, int] = {}
            for nxt in (float(x) for x in steps if x > at):
                gained = {n: c - counts(at)[n] for n, c in counts(nxt).items() if c > counts(at)[n]}
                if gained:
                    break
            named = [name for name, _ in limits]
            assert {n: named.count(n) for n in named} == gained, case
            if not gained:
                continue
            assert all(
                t in replay(tr, base.with_band(nxt)) for tr in traces for n, t in limits if n == tr.name
            )
            if target == 0.0 and at == threshold:
                rest = [tr for tr in traces if tr.name not in named]
                assert meets_false_alert_target(rest, base.with_band(nxt), 0.0)
            checked += 1
    assert checked > 300


def test_bonafide_threshold_finds_a_longer_alert_that_swallows_a_second_one() -> None:
    """The alert band has a width (it ends only above enter + 1 here), so the
    alert count need not fall with the threshold. One genuine recording
    scores 0, 2.3, 0, 5: below an enter threshold of 1.3 its alert ends at 2.3
    and a second starts at the next 0 (2 alerts); from 1.3 on, the exit at
    threshold + 1 is above 2.3, so the first alert runs on to the 5 (1 alert).
    Another scores 2.3 and 10 in turn: any threshold above 2.3 gives it three
    alerts. One hour in all, a target of 1 per hour: the highest threshold
    that meets it lies in [1.3, 2.3], a gap between two smoothed scores
    (0 and 2.3) that a search over smoothed scores alone tries only at its
    middle, 1.15, where the count is 2; it would then settle below 0."""
    from spoofwatch.calibration.fit import bonafide_threshold, describe_alerts, limiting_alerts
    from spoofwatch.calibration.streaming import Trace, measure
    from spoofwatch.stream.policy import PolicyConfig

    base = PolicyConfig(0.0, 1.0, smoothing_windows=1, min_alert_windows=1, cooldown_s=0.0)

    def recording(name: str, scores: list[float]) -> Trace:
        return Trace(name, 1800.0, None, [(4.04 + i, s, None) for i, s in enumerate(scores)])

    traces = [recording("a", [0.0, 2.3, 0.0, 5.0]), recording("b", [2.3, 10.0, 2.3, 10.0, 2.3])]

    def alerts(threshold: float) -> float:
        return measure(traces, base.with_band(threshold)).false_alerts_per_hour

    assert (alerts(1.15), alerts(1.8), alerts(2.4)) == (2.0, 1.0, 4.0)
    threshold, rate = bonafide_threshold(traces, base, target_per_hour=1.0)
    assert 1.3 < threshold < 2.3 and rate == 1.0
    # Past 2.3, "b" alerts at each of its 2.3s: those are what hold the
    # threshold down, not "a"'s alert, which it raises either way.
    assert limiting_alerts(traces, base, threshold) == [("b", 4.04), ("b", 6.04), ("b", 8.04)]
    assert describe_alerts(limiting_alerts(traces, base, threshold)) == "b at 4.0 s, b at 6.0 s, b at 8.0 s"
    assert (
        describe_alerts([("x", float(t)) for t in range(5)])
        == "x at 0.0 s, x at 1.0 s, x at 2.0 s and 2 more"
    )


def random_traces(
    rng: np.random.Generator,
    name: str,
    most_recordings: int,
    windows: tuple[int, int],
    gated_share: float,
    score_sd: float,
    onset_share: float,
    onset_s: tuple[float, float],
    quantum: float | None = None,
) -> list[Any]:
    """Random recordings at a 0.5 s hop: gated windows (silent for a second),
    scores around 1 (rounded to ``quantum``: levels then tie or lie a
    rounding error apart), and a spoof onset in some (property tests)."""
    from spoofwatch.calibration.streaming import Trace

    traces = []
    for k in range(int(rng.integers(1, most_recordings))):
        trace_windows: list[tuple[float, float | None, float | None]] = []
        for i in range(int(rng.integers(*windows))):
            t = 4.04 + i / 2
            if rng.random() < gated_share:
                trace_windows.append((t, None, t - 1.0))
                continue
            score = float(rng.normal(1.0, score_sd))
            if quantum is not None:
                score = round(score / quantum) * quantum  # 0.3 and 0.7 - 0.4 differ by an ulp
            trace_windows.append((t, score, None))
        onset = float(rng.uniform(*onset_s)) if rng.random() < onset_share else None
        traces.append(Trace(f"{name}-{k}", 4.04 + len(trace_windows) / 2, onset, trace_windows))
    return traces


def random_policy(
    rng: np.random.Generator,
    most_smoothing: int,
    most_min_alert: int,
    band_widths: tuple[float, ...] = (0.0, 0.5, 2.0),
) -> Any:
    """A random alert policy shape (band width, smoothing, minimum length, cooldown)."""
    from spoofwatch.stream.policy import PolicyConfig

    return PolicyConfig(
        0.0,
        float(rng.choice(band_widths)),
        smoothing_windows=int(rng.integers(1, most_smoothing)),
        min_alert_windows=int(rng.integers(1, most_min_alert)),
        cooldown_s=float(rng.choice([0.0, 2.0])),
    )


def test_bonafide_threshold_equals_trying_every_interval() -> None:
    """The search skips thresholds that cannot meet the target (the first
    recordings that miss it keep their alerts until the threshold crosses
    one of their own levels) and replays recordings lowest-scoring first. On
    random recordings (gated windows, onsets, every policy shape, targets
    from none to many alerts per recording) it must return what trying
    every interval's threshold, most sensitive first, with the full
    measurement returns; and ``false_alert_overrun`` must name a prefix
    that alone misses the target and is no longer than it need be."""
    from spoofwatch.calibration.fit import (
        _alert_levels,
        _interval_thresholds,
        bonafide_threshold,
        smoothed_scores,
    )
    from spoofwatch.calibration.streaming import false_alert_overrun, measure, replay

    rng = np.random.default_rng(23)
    searched = 0
    for case in range(300):
        # Every other case on a 0.1 grid with narrow bands: levels a rounding
        # error apart put a candidate threshold on a level.
        quantum = 0.1 if case % 2 else None
        traces = random_traces(rng, f"c{case}", 9, (2, 30), 0.1, 2.5, 0.2, (5, 15), quantum)
        base = random_policy(rng, 4, 3, (0.1, 0.3, 0.4, 0.7) if quantum else (0.0, 0.5, 2.0))
        if max(sum(v is not None for _, v, _ in tr.windows) for tr in traces) < base.min_alert_windows:
            continue
        bona_fide_s = [tr.onset_s if tr.onset_s is not None else tr.duration_s for tr in traces]
        hours = math.fsum(bona_fide_s) / 3600  # as the code sums them: the same in any order
        target = float(rng.choice([0.0, 1.0, 2.0, 5.0])) / hours  # that many false alerts in all
        expected = next(
            (th, rate)
            for th in _interval_thresholds(_alert_levels(smoothed_scores(traces, base), base))
            if (rate := measure(traces, base.with_band(th)).false_alerts_per_hour) <= target
        )
        assert bonafide_threshold(traces, base, target) == expected, case
        searched += 1
        for th in np.linspace(-3.0, 5.0, 5):
            policy = base.with_band(float(th))
            k = false_alert_overrun(traces, policy, target)
            assert (k == 0) == (measure(traces, policy).false_alerts_per_hour <= target)
            if k:
                # The first k alone miss the target (counted per hour of all the
                # traces' audio); the first k - 1 do not.
                alerts = [
                    sum(1 for t in replay(tr, policy) if t <= bona)
                    for tr, bona in zip(traces, bona_fide_s, strict=True)
                ]
                assert sum(alerts[:k]) / hours > target >= sum(alerts[: k - 1]) / hours
    assert searched > 200


def test_the_early_stopping_target_check_decides_as_the_full_measurement() -> None:
    """`meets_false_alert_target` stops replaying once the count passes the
    target; on random recordings (gated windows, spoof onsets, every policy
    shape) it must decide exactly as the full `measure` does, at thresholds
    across the whole score range and at targets from none to many."""
    from spoofwatch.calibration.streaming import measure, meets_false_alert_target

    rng = np.random.default_rng(11)
    decided = set()
    for case in range(40):
        traces = random_traces(rng, f"c{case}", 8, (1, 40), 0.15, 2.0, 0.3, (0, 20))
        base = random_policy(rng, 5, 4)
        for threshold in np.linspace(-4.0, 6.0, 11):
            policy = base.with_band(float(threshold))
            full = measure(traces, policy).false_alerts_per_hour
            for target in (0.0, 60.0, 600.0, 6000.0):
                fast = meets_false_alert_target(traces, policy, target)
                assert fast == (full <= target), (case, threshold, target, full)
                decided.add(fast)
    assert decided == {True, False}


def test_unbounded_numbers_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A million ONNX Runtime threads, an astronomically long simulated
    conversation or a hop of 1e308 s ran the machine out of memory or crashed
    late; each is now one clear error naming the range."""
    from spoofwatch.calibration.scoreset import score_dataset
    from spoofwatch.cli import main
    from spoofwatch.errors import InputError

    afile = tmp_path / "a.wav"
    afile.write_bytes(b"")
    fit = ["calibrate", "fit", "--scores", str(afile), "--out", str(tmp_path / "c.toml")]
    for argv, message in (
        (["score", "--threads", "1000000", str(afile)], "expected an integer from 1 to 1024"),
        (["stream", "--threads", "0", str(afile)], "expected an integer from 1 to 1024"),
        (
            ["evaluate-suite", "--corpus", str(tmp_path), "--threads", "100000"],
            "expected an integer from 1 to",
        ),
        ([*fit, "--conversation-s", "1e308"], "expected seconds > 0 and <= 3600"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err, argv
    # Each within its range, but together 2 x 1000 x 30 s of audio in memory.
    assert main([*fit, "--conversations", "1000", "--conversation-s", "30"]) == InputError.exit_code
    assert "60000 s of audio, all held in memory: expected at most 7200 s" in capsys.readouterr().err
    # The window is known once the model is: checked before any file is read.
    with pytest.raises(InputError, match=r"at most one window \(4.0375 s\), got 1e\+308 s"):
        score_dataset(None, None, tmp_path / "s.txt", hop_s=1e308)  # type: ignore[arg-type]
    assert not (tmp_path / "s.txt").exists()


def test_offline_commands_check_outputs_and_numbers_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad output paths and numbers are one clear error before any work (they
    were tracebacks, some after all the scoring); nothing is overwritten."""
    scores = tmp_path / "scores.txt"
    scores.write_text("LA_E_1 A07 spoof -1.5\nLA_E_2 - bonafide 2.0\n")
    folder, afile = tmp_path / "folder", tmp_path / "afile"
    folder.mkdir()
    afile.write_text("keep me")

    def bonafide_into(out: str, *more: str) -> list[str]:
        audio = ["--audio-dir", str(folder), "--target-false-alerts-per-hour", "1"]
        return ["calibrate", "bonafide", *audio, *more, "--out", out]

    cases = [
        (["calibrate", "fit", "--scores", str(scores), "--out", str(folder)], "is a folder; expected a file"),
        (["calibrate", "fit", "--scores", str(scores), "--out", str(scores)], "is the --scores file itself"),
        (
            ["calibrate", "fit", "--scores", str(scores), "--protocol", str(afile), "--out", str(afile)],
            "is the --protocol file itself",
        ),
        (
            ["calibrate", "fit", "--scores", str(scores), "--asv-scores", str(afile), "--out", str(afile)],
            "is the --asv-scores file itself",
        ),
        (
            ["calibrate", "fit", "--scores", str(scores), "--weights", str(afile), "--out", str(afile)],
            "is the --weights file itself",
        ),
        (
            ["calibrate", "fit", "--scores", str(scores), "--model", str(afile), "--out", str(afile)],
            "is the --model file itself",
        ),
        (
            bonafide_into(str(afile), "--weights", str(afile)),
            "is the --weights file itself",
        ),
        # The weights of a fine-tune may be its only copy.
        (["export", "--weights", str(afile), "--out", str(afile)], "is the --weights file itself"),
        (
            ["export", "--calibration-audio", str(folder), "--out", str(tmp_path / "m.onnx")],
            "expected --precision int8, got fp32",
        ),
        (
            [
                "calibrate",
                "fit",
                "--scores",
                str(scores),
                "--out",
                str(tmp_path / "c.toml"),
                "--report",
                str(afile),
            ],
            "is a file; expected a folder",
        ),
        (
            ["calibrate", "fit", "--scores", str(scores), "--out", str(afile / "c.toml")],
            "cannot make its folder",
        ),
        (["evaluate-suite", "--corpus", str(folder), "--out", str(afile)], "is a file; expected a folder"),
        (["evaluate-suite", "--corpus", str(folder), "--cache", str(afile)], "is a file; expected a folder"),
        (["data", "build-corpus", "--out", str(afile)], "is a file; expected a folder"),
        (["export", "--out", str(folder)], "is a folder; expected a file"),
        # /proc takes no new files, even from root: found by trying, before any work.
        (["calibrate", "fit", "--scores", str(scores), "--out", "/proc/c.toml"], "cannot write in /proc"),
        (
            [
                "calibrate",
                "fit",
                "--scores",
                str(scores),
                "--out",
                str(tmp_path / "c.toml"),
                "--report",
                "/proc",
            ],
            "--report /proc: cannot write in /proc",
        ),
        (bonafide_into("/proc/b.toml"), "cannot write in /proc"),
        (["evaluate-suite", "--corpus", str(folder), "--out", "/proc"], "cannot write in /proc"),
        (["score", "--plot", "/proc", str(afile)], "--plot: cannot write pictures in /proc"),
        (["stream", "--plot", "/proc/t.png", str(afile)], "--plot: cannot write pictures in /proc"),
        (bonafide_into(str(folder)), "is a folder"),
    ]
    for argv, message in cases:
        assert main(argv) == InputError.exit_code, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert afile.read_text() == "keep me" and scores.read_text().startswith("LA_E_1")
    for argv in (
        [
            "calibrate",
            "score",
            "--protocol",
            str(scores),
            "--audio-dir",
            str(folder),
            "--out",
            "o",
            "--workers",
            "0",
        ],
        [
            "calibrate",
            "bonafide",
            "--audio-dir",
            str(folder),
            "--target-false-alerts-per-hour",
            "nan",
            "--out",
            "o",
        ],
        ["calibrate", "fit", "--scores", str(scores), "--out", "o", "--conversation-s", "0"],
        ["evaluate-suite", "--corpus", str(folder), "--limit-per-group", "-1"],
        ["evaluate-suite", "--corpus", str(folder), "--bootstrap-draws", "-5"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv
        assert "expected" in capsys.readouterr().err


def test_json_reports_write_undefined_numbers_as_null(capsys: pytest.CaptureFixture[str]) -> None:
    """`evaluate --json` and `train` records went through json.dumps, which writes NaN:
    not JSON, and strict readers (jq, JSON.parse) reject the whole line."""
    from spoofwatch.commands.common import print_json

    print_json(
        {"eer": float("nan"), "loss": float("inf"), "per_attack": {"A07": [1.5, float("-inf")]}, "n": 3}
    )
    line = capsys.readouterr().out
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == {
        "eer": None,
        "loss": None,
        "per_attack": {"A07": [1.5, None]},
        "n": 3,
    }


@pytest.mark.parametrize("bonafide_attack", ["-", "A01"])
def test_per_attack_eer_counts_only_that_attacks_spoofs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bonafide_attack: str
) -> None:
    """Bona fide lines may carry any attack field (``-``, or a system name in
    an open corpus); they are never counted as that attack's spoofs."""
    scores = tmp_path / "scores.txt"
    scores.write_text(
        f"b1 {bonafide_attack} bonafide 5\nb2 {bonafide_attack} bonafide 6\n"
        "s1 A01 spoof 1\ns2 A01 spoof 2\ns3 - spoof 3\n"
    )
    assert main(["evaluate", "--scores", str(scores), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["eer_percent"] == 0.0
    assert report["per_attack_eer_percent"] == {"-": 0.0, "A01": 0.0}


def test_evaluate_with_a_protocol_says_when_it_scores_a_subset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("".join(f"SPK u{i} - - bonafide\n" for i in range(3)) + "SPK s1 - A01 spoof\n")
    scores = tmp_path / "scores.txt"
    scores.write_text("u0 4.0\ns1 -2.0\n")
    assert main(["evaluate", "--scores", str(scores), "--protocol", str(protocol)]) == 0
    assert "scores 2 of the 4 utterances" in capsys.readouterr().err
    scores.write_text("u0 4.0\nu1 3.0\nu2 2.0\ns1 -2.0\n")
    assert main(["evaluate", "--scores", str(scores), "--protocol", str(protocol)]) == 0
    assert "utterances in" not in capsys.readouterr().err


def test_bonafide_fit_refuses_what_it_cannot_measure(shared: Path) -> None:
    """Through the real live engine and VAD: a model that gives NaN on speech is
    named as the fault (it was "no speech found"); windows it gave no score
    are not replayed as silence (live, the policy never sees them); and
    recordings too short for any alert cannot set a threshold (every threshold
    would "meet" the target, so the most sensitive was chosen)."""
    from spoofwatch.audio import read_audio
    from spoofwatch.calibration.fit import bonafide_threshold
    from spoofwatch.calibration.streaming import Conversation, trace
    from spoofwatch.stream.engine import EngineConfig, LiveConfig, build_engine
    from spoofwatch.stream.vad import SileroVad

    cal = load_calibration(model="aasist-l")
    engine = build_engine(LiveConfig(EngineConfig(1.0), cal.gate, cal.policy), SileroVad())
    audio = read_audio(shared / "data" / "asvspoof2019_la" / "flac" / f"{BONAFIDE_UTT}.flac")
    speech = np.concatenate([audio, audio, audio])  # ~10 s: several windows of speech
    nan_trace = trace(Conversation("nan", speech, None), engine, _ScoresByContent(nan_for=None, all_nan=True))
    ok_trace = trace(Conversation("ok", speech, None), engine, _ScoresByContent())
    speech_windows = sum(1 for _, score, _ in ok_trace.windows if score is not None)
    assert speech_windows >= 2 and nan_trace.unscored_windows == speech_windows
    assert len(nan_trace.windows) == len(ok_trace.windows) - speech_windows  # not replayed as silence
    with pytest.raises(CalibrationError, match=r"no finite score .* the model, not the audio, is at fault"):
        bonafide_threshold([nan_trace], cal.policy, 1.0)

    short = trace(Conversation("short", audio[: WINDOW_SAMPLES + 100], None), engine, _ScoresByContent())
    with pytest.raises(
        CalibrationError, match=r"an alert needs 2 scored windows in one recording, and the longest"
    ):
        bonafide_threshold([short], cal.policy, 0.0)


def test_streaming_fit_prefers_fewer_false_alerts_when_detection_ties(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With detection tied (here nothing can be detected), the fit kept the
    first setting within the target, one that raised false alerts, though
    others raised none."""
    from spoofwatch.calibration.streaming import Trace, fit_policy
    from spoofwatch.stream.policy import PolicyConfig

    genuine = [(4.0 + 0.5 * i, -10.0 if i == 20 else 0.0, None) for i in range(60)]  # one dip
    spoof = [(4.0 + 0.5 * i, 0.0, None) for i in range(60)]  # scores like genuine: undetectable
    traces = [Trace("genuine", 34.0, None, genuine), Trace("spoof", 34.0, 0.0, spoof)]
    base = PolicyConfig(enter_threshold=0.0, exit_threshold=1.0)
    policy, metrics = fit_policy(traces, base, target_false_alerts_per_hour=1000.0)
    assert metrics.detection_rate == 0.0
    assert metrics.false_alerts_per_hour == 0.0  # the dip alerts only with 1-window alerts: not chosen
    assert policy.min_alert_windows >= 2
    assert "min of genuine conversation audio" in caplog.text  # 34 s: the rate says little


def test_genuine_audio_that_cannot_alert_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    """Clips too short to ever alert add to the hours and loosen the
    threshold, silently; and the "less than 10 min" warning came once per
    threshold searched (three times per model in evaluate-suite)."""
    from spoofwatch.calibration.fit import bonafide_threshold, warn_about_genuine
    from spoofwatch.calibration.streaming import Trace
    from spoofwatch.stream.policy import PolicyConfig

    base = PolicyConfig(enter_threshold=0.0, exit_threshold=1.0)  # alerts need 2 windows
    long = Trace("long", 60.0, None, [(4.0 + 0.5 * i, 1.0 - (i == 30) * 5.0, None) for i in range(110)])
    short = [Trace(f"clip{i}", 4.5, None, [(4.04, 2.0, None)]) for i in range(3)]
    warn_about_genuine([long, *short], base, "official")
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "official: 1.2 min of genuine audio: a false-alert rate per hour measured on less than 10 min says "
        "little; record more for a threshold you can trust",
        "official: 3 of 4 genuine recordings (0.2 min) have fewer than 2 scored windows and can never alert: "
        "they count towards the hours, which loosens the threshold (join short clips into longer recordings, "
        "or leave them out)",
    ]
    caplog.clear()
    for target in (0.0, 10.0, 100.0):
        bonafide_threshold([long, *short], base, target)
    assert not caplog.records  # the search itself says nothing, however often it runs


def test_copies_of_a_genuine_recording_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from spoofwatch.commands.calibration_cmds import _warn_duplicates

    (tmp_path / "sub").mkdir()
    for name, content in (("a.wav", b"one"), ("b.wav", b"two"), ("sub/a.wav", b"one")):
        (tmp_path / name).write_bytes(content)
    _warn_duplicates(sorted(tmp_path.rglob("*.wav")), tmp_path)
    assert [r.getMessage() for r in caplog.records] == [
        "sub/a.wav is a copy of a.wav: both count (twice the hours, and any false alert twice)"
    ]


def test_calibration_out_is_never_one_of_its_recordings(
    tmp_path: Path, la_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`calibrate bonafide --out DIR/x.wav` replaced that genuine recording
    with TOML (exit 0), and the next run skipped it as undecodable."""
    recordings = tmp_path / "genuine"
    recordings.mkdir()
    clip = recordings / "a.flac"
    shutil.copy(la_clip(la_dir, BONAFIDE_UTT), clip)
    before = clip.read_bytes()

    def bonafide(audio_dir: Path, out: Path) -> list[str]:
        target = ["--target-false-alerts-per-hour", "1"]
        return ["calibrate", "bonafide", *target, "--audio-dir", str(audio_dir), "--out", str(out)]

    for out in (clip, recordings / "sub" / "cal.toml"):
        assert main(bonafide(recordings, out)) == InputError.exit_code
        assert (
            f"is inside --audio-dir {recordings}, whose audio it could overwrite" in capsys.readouterr().err
        )
    fit = ["calibrate", "fit", "--scores", str(tmp_path / "s.txt"), "--audio-dir", str(recordings)]
    assert main([*fit, "--out", str(clip)]) == InputError.exit_code
    assert "whose audio it could overwrite" in capsys.readouterr().err
    assert clip.read_bytes() == before
    assert main(bonafide(tmp_path / "nowhere", tmp_path / "c.toml")) == DatasetError.exit_code
    assert "--audio-dir " + str(tmp_path / "nowhere") + ": no such folder" in capsys.readouterr().err


def test_one_scoring_run_at_a_time_into_a_score_file(shared: Path, tmp_path: Path) -> None:
    """Two `calibrate score` runs into one --out both appended every utterance
    (a file evaluate then refuses as "scored again"): the second is refused,
    naming the first, before it reads or writes the file."""
    import fcntl

    from spoofwatch.calibration.dataset import check_dataset
    from spoofwatch.calibration.scoreset import score_dataset

    flac = tmp_path / "flac"
    flac.mkdir()
    shutil.copy(shared / "data" / "asvspoof2019_la" / "flac" / f"{BONAFIDE_UTT}.flac", flac)
    protocol = tmp_path / "protocol.txt"
    protocol.write_text(f"LA_0000 {BONAFIDE_UTT} - - bonafide\n")
    dataset = check_dataset(protocol, flac)
    out = tmp_path / "scores.txt"
    with (tmp_path / "scores.txt.lock").open("w") as held:  # another run's hold
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        with pytest.raises(InputError, match=r"--out .*scores.txt is in use by another run \(pid 4242;"):
            score_dataset(dataset, _ScoresByContent(), out, 0.0, workers=1, progress=False)
    assert not out.exists()
    run = score_dataset(dataset, _ScoresByContent(), out, 0.0, workers=1, progress=False)
    assert run.scored == 1 and len(out.read_text().splitlines()) == 1
    with (tmp_path / "scores.txt.lock").open("a") as probe:  # released when the run ended
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
