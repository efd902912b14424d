"""The open corpus (plan, splits, resumable build), channel augmentation, local
generators, loudness normalisation and the evaluation suite, on real clips from
../shared and the real ONNX model."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, missing

from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.paths import SHARED_ENV

CONFIG = REPO_ROOT / "configs" / "data" / "open.toml"


@pytest.fixture(scope="module")
def open_cfg(shared: Path) -> Iterator[object]:
    from spoofwatch.model.corpus_config import load_corpus_config

    # Set for this module's tests and restored after them (the function-scoped
    # monkeypatch cannot serve a module fixture): it leaked into every later test.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SHARED_ENV, str(shared))
        yield load_corpus_config(CONFIG)


def test_plan_is_leave_systems_out(open_cfg: object) -> None:
    from spoofwatch.model.corpus_config import CorpusConfig
    from spoofwatch.model.corpus_plan import plan_corpus

    assert isinstance(open_cfg, CorpusConfig)
    items = plan_corpus(open_cfg)
    by_split = {s: [i for i in items if i.split == s] for s in ("train", "dev", "test")}
    assert all(by_split.values())
    spoof_systems = {s: {i.system for i in v if i.label == "spoof"} for s, v in by_split.items()}
    # No held-out system, generator, test repository or held-out genuine corpus reaches training.
    assert not spoof_systems["test"] & spoof_systems["train"]
    assert not spoof_systems["test"] & spoof_systems["dev"]
    assert {"Tortoise", "FreeVC", "piper-joe", "griffin-lim", "NII-NSF"} <= spoof_systems["test"]
    train_repos = {i.source_repo for i in by_split["train"]}
    assert not train_repos & set(open_cfg.splits.test_repos)
    assert not {i.corpus for i in by_split["train"]} & set(open_cfg.splits.test_corpora)
    # Resynthesis sources come from their own split's genuine audio.
    genuine_sources = {s: {i.source for i in v if i.label == "bonafide"} for s, v in by_split.items()}
    for split, members in by_split.items():
        for i in members:
            if i.generator in ("world", "griffin-lim"):
                assert i.params[0] in genuine_sources[split]
    # The plan is deterministic (the resume promise rests on it).
    assert [i.base_id for i in plan_corpus(open_cfg)] == [i.base_id for i in items]


def _tiny(cfg: object, want: dict[str, int]) -> list[object]:
    """A few items per (split, label, generator-or-file), in plan order."""
    from spoofwatch.model.corpus_plan import plan_corpus

    taken: dict[tuple[str, str, str], int] = {}
    out = []
    for i in plan_corpus(cfg):  # type: ignore[arg-type]
        key = (i.split, i.label, i.generator)
        limit = want.get(i.generator or "file", 0)
        if taken.get(key, 0) < limit:
            taken[key] = taken.get(key, 0) + 1
            out.append(i)
    return out


@pytest.fixture(scope="module")
def tiny_corpus(open_cfg: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spoofwatch.model.corpus import iter_build, write_outputs

    cfg = dataclasses.replace(open_cfg, subsets={"mini": ("test", 4)})  # type: ignore[type-var]
    out = tmp_path_factory.mktemp("corpus")
    items = _tiny(cfg, {"file": 3, "espeak-ng": 1})
    rows = [r for built in iter_build(cfg, out, items) for r in built]  # type: ignore[arg-type]
    write_outputs(cfg, out, rows)  # type: ignore[arg-type]
    return out


def test_build_writes_protocols_metadata_and_resumes(tiny_corpus: Path, open_cfg: object) -> None:
    from spoofwatch.calibration.dataset import check_dataset
    from spoofwatch.calibration.protocol import parse_protocol
    from spoofwatch.calibration.suite import read_metadata
    from spoofwatch.model.corpus import iter_build

    meta = read_metadata(tiny_corpus)
    assert {r["copy"] for r in meta} == {"0", "1"}
    assert {r["channel"] for r in meta if r["copy"] == "0"} == {"clean"}
    assert all(r["channel"] != "clean" for r in meta if r["copy"] == "1")
    for split in ("train", "dev", "test"):
        ds = check_dataset(tiny_corpus / "protocols" / f"{split}.txt", tiny_corpus / "flac")
        assert {t.utt for t in ds.trials} == {r["utt"] for r in meta if r["split"] == split}
        for t in ds.trials:
            row = next(r for r in meta if r["utt"] == t.utt)
            assert t.label == row["label"]
            assert (t.attack == "-") == (row["label"] == "bonafide")
    mini = parse_protocol(tiny_corpus / "protocols" / "mini.txt")
    assert len(mini) == 4 and sorted(t.label for t in mini) == ["bonafide", "bonafide", "spoof", "spoof"]
    summary = json.loads((tiny_corpus / "corpus.json").read_text())
    assert summary["test"]["utterances"] == sum(r["split"] == "test" for r in meta)
    # Resume: a deleted utterance is rebuilt identically, the others are left alone.
    victim = next(r for r in meta if r["copy"] == "1")
    flac = tiny_corpus / "flac" / f"{victim['utt']}.flac"
    before = flac.read_bytes()
    untouched = tiny_corpus / "flac" / f"{meta[0]['utt']}.flac"
    mtime = untouched.stat().st_mtime_ns
    flac.unlink()
    (tiny_corpus / "flac" / f"{victim['utt']}.json").unlink()
    items = _tiny(open_cfg, {"file": 3, "espeak-ng": 1})
    list(iter_build(open_cfg, tiny_corpus, items))  # type: ignore[arg-type]
    assert flac.read_bytes() == before
    if meta[0]["utt"].split("_c")[0] != victim["utt"].split("_c")[0]:
        assert untouched.stat().st_mtime_ns == mtime


def test_channel_ops_are_seeded_and_change_the_audio(shared: Path) -> None:
    from spoofwatch.audio import read_audio
    from spoofwatch.model.channel import ChannelConfig, available_codecs, ffmpeg_round_trip, random_channel

    x = read_audio(next((shared / "data" / "speech" / "bonafide" / "vctk").glob("*.flac")))
    cfg = ChannelConfig()
    codecs = available_codecs(cfg.codecs)
    a, tags_a = random_channel(x, np.random.default_rng(7), cfg, codecs)
    b, tags_b = random_channel(x, np.random.default_rng(7), cfg, codecs)
    assert tags_a == tags_b and np.array_equal(a, b)
    assert a.dtype == np.float32 and np.max(np.abs(a)) <= 1.0
    if "gsm" not in codecs:
        missing("ffmpeg without GSM (apt-get install ffmpeg)")
    y = ffmpeg_round_trip(x, "gsm")  # 8 kHz GSM 06.10: keeps the speech, loses the top band
    assert y.shape == x.shape
    assert np.corrcoef(x, y)[0, 1] > 0.8
    spectrum = lambda s: np.abs(np.fft.rfft(s))  # noqa: E731
    top = slice(int(5000 / SAMPLE_RATE_HZ * x.size), None)
    assert spectrum(y)[top].sum() < 0.1 * spectrum(x)[top].sum()


def test_world_resynthesis_keeps_length_and_is_not_a_copy(shared: Path) -> None:
    with warnings.catch_warnings():  # pyworld 0.3.5 imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        try:
            import pyworld  # noqa: F401
        except ImportError:
            missing("pyworld not installed (pip install -e '.[corpus]')")
    from spoofwatch.audio import read_audio
    from spoofwatch.model.synth import world_resynth

    x = read_audio(next((shared / "data" / "speech" / "bonafide" / "vctk").glob("*.flac")))[
        : 2 * SAMPLE_RATE_HZ
    ]
    y = world_resynth(x)
    assert y.shape == x.shape and y.dtype == np.float32
    assert not np.allclose(x, y, atol=1e-3)
    assert (
        np.corrcoef(np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y)))[0, 1] > 0.5
    )  # same speech, new waveform


def test_loudness_normalisation() -> None:
    from spoofwatch.model.loudness import LoudnessNormalisedScorer, normalise_windows

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((3, 1000)) * np.array([[0.001], [0.05], [0.3]])).astype(np.float32)
    out = normalise_windows(w, -26.0)
    rms_db = 20 * np.log10(np.sqrt(np.mean(out.astype(np.float64) ** 2, axis=1)))
    assert np.allclose(rms_db, -26.0, atol=0.5)

    class Rms:
        def scores(self, windows: np.ndarray) -> np.ndarray:
            return np.sqrt(np.mean(windows**2, axis=1)).astype(np.float32)

    s = LoudnessNormalisedScorer(Rms()).scores(w)
    assert np.allclose(s, s[0], rtol=0.05)  # level no longer reaches the model


def test_evaluate_suite_official_and_candidate(
    sw_home: Path,
    tiny_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from spoofwatch.calibration.suite import SuiteConfig, clip_of, corpus_family
    from spoofwatch.cli import main
    from spoofwatch.model.config import load_model_config
    from spoofwatch.model.weights import weights_path

    assert corpus_family("VCTK p225") == "VCTK"
    assert clip_of("OC_2c80c6458bc9_c1", "1") == "OC_2c80c6458bc9" == clip_of("OC_2c80c6458bc9_c0", "0")
    assert clip_of("mine_07", "0") == "mine_07"  # not named by build-corpus: its own clip
    assert corpus_family("celebrity/in-the-wild clip (tom)") == "celebrity/in-the-wild clip"
    # The candidate is a copy of the official weights: same scores, so same numbers.
    candidate = tmp_path / "copy.pth"
    shutil.copy(weights_path(load_model_config("aasist-l")), candidate)
    out = tmp_path / "suite"
    args = ["evaluate-suite", "--corpus", str(tiny_corpus), "--weights", str(candidate), "--copies", "clean"]
    args += ["--hop-s", "1.0", "--json", "--no-progress", "--cache", str(tmp_path / "cache")]
    assert main([*args, "--out", str(out)]) == 0
    first = capsys.readouterr()
    report = json.loads(first.out)
    # A second run reuses both variants' traces from the cache and reports the same.
    assert len(list((tmp_path / "cache").glob("variant-*.pkl"))) == 2
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["models"] == report["models"]
    # Another false-alert target, or curve, reads the same traces: nothing is scored again.
    assert main([*args, "--target-false-alerts-per-hour", "500", "--curve-false-alerts-per-hour", "3,7"]) == 0
    looser = json.loads(capsys.readouterr().out)["models"]
    assert len(list((tmp_path / "cache").glob("variant-*.pkl"))) == 2
    assert [p["target_false_alerts_per_hour"] for p in looser[0]["operating_curve"]] == [3.0, 7.0]
    assert [p["target_false_alerts_per_hour"] for p in report["models"][0]["operating_curve"]] == list(
        SuiteConfig().curve_false_alerts_per_hour
    )
    assert main([*args, "--curve-false-alerts-per-hour", ""]) == 0  # none
    assert json.loads(capsys.readouterr().out)["models"][0]["operating_curve"] == []
    assert looser[0]["at_target"]["enter_threshold"] >= report["models"][0]["at_target"]["enter_threshold"]
    # A corpus rebuilt under the same utterance IDs is not served from the cache.
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(tiny_corpus, rebuilt)
    flacs = sorted((rebuilt / "flac").glob("*.flac"))
    for a, b in zip(flacs, flacs[1:] + flacs[:1], strict=True):
        shutil.copy(b, a.with_suffix(".new"))
    for f in flacs:
        f.with_suffix(".new").replace(f)
    assert main([*args[:2], str(rebuilt), *args[3:]]) == 0
    assert len(list((tmp_path / "cache").glob("variant-*.pkl"))) == 4
    assert json.loads(capsys.readouterr().out)["models"] != report["models"]
    official, cand = report["models"]
    assert official["model"] == "official" and cand["model"] == "fine-tuned"
    assert official["hop_s"] == cand["hop_s"] == 1.0  # the hop each variant ran with, never null
    assert official["pooled_eer_percent"] == pytest.approx(cand["pooled_eer_percent"])
    assert official["n_genuine"] >= 2 and official["n_spoof"] >= 2
    meta_systems = {
        line.split("\t")[4]
        for line in (tiny_corpus / "metadata.tsv").read_text().splitlines()[1:]
        if "\ttest\tspoof\t" in line and "\t0\tclean\t" in line
    }
    assert set(official["eer_by_system"]) == meta_systems
    for s in official["eer_by_system"].values():
        assert 0.0 <= s["eer_percent"] <= 100.0
    at = official["at_target"]
    assert at["false_alerts_per_hour"] <= 1.0
    # At a 1 s hop a 4.04 s window and a 2-window minimum alert 5.04 s into a
    # stream at the earliest: "detected within 5 s" is not measurable, so it
    # is reported as missing (said before scoring and in the table), not as 0 %.
    assert at["detection_rate"] is None and at["detection_by_system"] == {}
    assert "comes 5.04 s into a spoof stream at the earliest" in at["detection_none_because"]
    assert 0.0 <= at["detection_rate_any"] <= 1.0
    assert "no detection within 5 s: an alert needs 2 scored windows" in (out / "suite.md").read_text()
    assert at["spoof_streams_can_alert_within"] == 0 < at["spoof_stream_count"] == official["n_spoof"]
    assert "alert comes 5.04 s into a stream at the earliest" in first.err
    assert (out / "det.png").stat().st_size > 1000
    assert "| **pooled** |" in (out / "suite.md").read_text()
    assert "| **balanced** (each genuine corpus and each system equal) |" in (out / "suite.md").read_text()
    assert official["balanced_eer_percent"] is not None
    assert official["balanced_eer_percent"] == pytest.approx(cand["balanced_eer_percent"])
    # Intervals: the same scores drawn the same way, so no difference at all.
    boot = official["pooled_eer_bootstrap"]
    low, high = boot["ci_percent"]
    assert low <= official["pooled_eer_percent"] <= high and "verdict" not in boot
    assert boot["n"] == official["n_genuine"] + official["n_spoof"] and boot["systems_resampled"] is True
    versus = cand["pooled_eer_bootstrap"]
    assert versus["vs"] == "official" and versus["difference_ci_percent"] == [0.0, 0.0]
    assert versus["verdict"] == "no clear difference"
    assert "minus official: +0.0 points" in (out / "suite.md").read_text()
    b_versus = cand["balanced_eer_bootstrap"]
    assert b_versus["difference_ci_percent"] == [0.0, 0.0] and b_versus["n"] == versus["n"]
    b_official = official["balanced_eer_bootstrap"]
    b_low, b_high = b_official["ci_percent"]
    assert b_low <= official["balanced_eer_percent"] <= b_high
    # every utterance was scored by both, so the bootstrap's point is the summary's
    assert b_official["eer_percent"] == pytest.approx(official["balanced_eer_percent"], abs=1e-9)
    assert main([*args, "--bootstrap-draws", "0"]) == 0  # traces from the cache
    models = json.loads(capsys.readouterr().out)["models"]
    assert all("pooled_eer_bootstrap" not in m and "balanced_eer_bootstrap" not in m for m in models)


def _write_manifest(path: Path, rows: list[tuple[str, ...]]) -> Path:
    header = (
        "path\tlabel\tsystem\tkind\tspeaker_or_corpus\tsource_repo\tlicence\toriginal_format\toriginal_rate"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *("\t".join(r) for r in rows)]) + "\n", "utf-8")
    return path


def test_extra_manifests_are_appended_and_follow_the_split_rules(
    open_cfg: object, shared: Path, tmp_path: Path
) -> None:
    from spoofwatch.errors import DatasetError
    from spoofwatch.model.corpus import iter_build
    from spoofwatch.model.corpus_plan import plan_corpus

    speech = shared / "data" / "speech"
    genuine, other = sorted((speech / "bonafide" / "ljspeech").glob("*"))[:2]
    vocoded = sorted((speech / "spoof" / "nii_nsf").glob("*"))[0]
    test_repo = open_cfg.splits.test_repos[0]  # type: ignore[attr-defined]
    manifest = _write_manifest(
        tmp_path / "mine" / "manifest.tsv",
        [
            (str(genuine), "bonafide", "GT", "gt", "my-call-centre", "me/recordings", "mine", "WAV", "8000"),
            (
                str(vocoded),
                "spoof",
                "MyVocoder",
                "vocoder",
                "agent-7",
                "me/recordings",
                "mine",
                "WAV",
                "8000",
            ),
            (str(other), "bonafide", "GT", "gt", "held-out-spk", test_repo, "mine", "WAV", "8000"),
        ],
    )
    base = plan_corpus(open_cfg)  # type: ignore[arg-type]
    cfg = dataclasses.replace(open_cfg, extra_manifests=(manifest,))  # type: ignore[type-var]
    items = plan_corpus(cfg)  # type: ignore[arg-type]
    # Adding a source never reshuffles an existing plan (or its test split).
    assert [(i.base_id, i.split) for i in items[: len(base)]] == [(i.base_id, i.split) for i in base]
    added = items[len(base) :]
    assert [(i.label, i.kind, i.system, i.split) for i in added] == [
        ("bonafide", "genuine", "-", "train"),
        ("spoof", "vocoder", "MyVocoder", "train"),
        ("bonafide", "genuine", "-", "test"),  # its repository is held out
    ]
    assert added[0].speaker == "me-my-call-centre" and added[0].source == str(genuine)
    # They are built like any other clip (real audio, clean + channel copy).
    rows = [r for built in iter_build(cfg, tmp_path / "corpus", added[:1]) for r in built]  # type: ignore[arg-type]
    assert [r.copy for r in rows] == [0, 1] and all(r.seconds > 1 for r in rows)

    bad = _write_manifest(
        tmp_path / "bad" / "manifest.tsv",
        [(str(vocoded), "spoof", "X", "deepfake", "spk", "me/x", "", "", "")],
    )
    with pytest.raises(DatasetError, match=r"manifest.tsv:2: .*kind 'deepfake'.*expected"):
        plan_corpus(dataclasses.replace(open_cfg, extra_manifests=(bad,)))  # type: ignore[type-var]
    with pytest.raises(DatasetError, match="not found"):
        plan_corpus(dataclasses.replace(open_cfg, extra_manifests=(tmp_path / "nope.tsv",)))  # type: ignore[type-var]
    with pytest.raises(DatasetError, match="listed twice"):
        plan_corpus(dataclasses.replace(open_cfg, extra_manifests=(manifest, manifest)))  # type: ignore[type-var]


def test_extra_manifests_config_is_relative_to_the_file(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spoofwatch.errors import ConfigError
    from spoofwatch.model.corpus_config import load_corpus_config

    monkeypatch.setenv(SHARED_ENV, str(shared))
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('extra_manifests = ["mine/manifest.tsv"]\n')
    assert load_corpus_config(cfg_file).extra_manifests == ((tmp_path / "mine" / "manifest.tsv").resolve(),)
    cfg_file.write_text('extra_manifests = "mine/manifest.tsv"\n')
    with pytest.raises(ConfigError, match="extra_manifests must be a list"):
        load_corpus_config(cfg_file)


def test_data_manifest_describes_a_folder_for_the_corpus(
    open_cfg: object, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import csv

    import soundfile

    from spoofwatch.audio import read_audio
    from spoofwatch.cli import main
    from spoofwatch.model.corpus import iter_build
    from spoofwatch.model.corpus_plan import plan_corpus

    speech = sorted((shared / "data" / "speech" / "bonafide" / "vctk").glob("*"))[:2]
    calls = tmp_path / "calls"
    for k, src in enumerate(speech):
        (calls / f"agent{k}").mkdir(parents=True)
        # Real speech, resampled to a telephone rate and stored as FLAC and WAV.
        soundfile.write(calls / f"agent{k}" / f"c{k}.{'flac' if k else 'wav'}", read_audio(src, 8000), 8000)
    (calls / "agent0" / "broken.wav").write_bytes(b"RIFF not really audio")
    (calls / "notes.txt").write_text("not audio")
    out = tmp_path / "man" / "manifest.tsv"
    rc = main(
        ["data", "manifest", str(calls), "--out", str(out), "--label", "bonafide", "--corpus", "Our calls"]
    )
    assert rc == 0
    assert "2 files, 2 speaker(s), 1 skipped" in capsys.readouterr().out
    # A system or kind for genuine audio was accepted and silently written as GT/gt.
    argv = ["data", "manifest", str(calls), "--out", str(tmp_path / "x.tsv"), "--label", "bonafide"]
    assert main([*argv, "--corpus", "Our calls", "--system", "Foo", "--kind", "tts"]) == 2
    assert "--system and --kind describe spoof folders" in capsys.readouterr().err
    rows = list(csv.DictReader(out.read_text().splitlines(), delimiter="\t"))
    assert [(r["path"], r["speaker_or_corpus"], r["original_rate"]) for r in rows] == [
        ("../calls/agent0/c0.wav", "Our calls (agent0)", "8000"),
        ("../calls/agent1/c1.flac", "Our calls (agent1)", "8000"),
    ]
    # build-corpus takes it as it is: genuine training items, built from the real files.
    cfg = dataclasses.replace(open_cfg, extra_manifests=(out,))  # type: ignore[type-var]
    added = plan_corpus(cfg)[-2:]  # type: ignore[arg-type]
    assert [(i.label, i.split, i.source) for i in added] == [
        ("bonafide", "train", str(out.parent / rows[0]["path"])),
        ("bonafide", "train", str(out.parent / rows[1]["path"])),
    ]
    built = [r for b in iter_build(cfg, tmp_path / "corpus", added) for r in b]  # type: ignore[arg-type]
    assert len(built) == 4 and all(r.seconds > 1 for r in built)
    # Spoof folders must say what made them; nothing readable is an error.
    assert main(["data", "manifest", str(calls), "--out", str(out), "--label", "spoof", "--corpus", "x"]) == 2
    assert "--system NAME and --kind" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "data",
                "manifest",
                str(tmp_path / "empty"),
                "--out",
                str(out),
                "--label",
                "bonafide",
                "--corpus",
                "x",
            ]
        )
        == 2
    )
    assert "no readable audio files" in capsys.readouterr().err
    # A double quote would break the tab-separated file: refused in names, skipped in paths.
    assert (
        main(
            ["data", "manifest", str(calls), "--out", str(out), "--label", "bonafide", "--corpus", 'our "x"']
        )
        == 2
    )
    assert "without tabs, newlines or double quotes" in capsys.readouterr().err
    soundfile.write(calls / "agent1" / 'say "hi".wav', read_audio(speech[0], 8000), 8000)
    assert (
        main(["data", "manifest", str(calls), "--out", str(out), "--label", "bonafide", "--corpus", "x"]) == 0
    )
    assert "2 files, 2 speaker(s), 2 skipped" in capsys.readouterr().out


def test_suite_scores_a_genuine_stream_shorter_than_half_a_window(shared: Path, sw_home: Path) -> None:
    """A genuine corpus of one 1.9 s clip is one padded window ending at 1.9 s:
    it belongs to that clip (the middle of the audio it holds), not to nothing."""
    from spoofwatch.calibration.suite import SuiteConfig, Utterance, run_variant
    from spoofwatch.model.detector import calibration_for
    from spoofwatch.model.scorers import build_scorer
    from spoofwatch.stream.engine import build_engine
    from spoofwatch.stream.vad import SileroVad

    clip = shared / "data" / "asvspoof2019_la" / "flac" / "LA_E_6163791.flac"  # 1.9 s
    utts = [
        Utterance("gen1", clip, "bonafide", "-", "-", "VCTK"),
        Utterance("spf1", clip, "spoof", "tts", "sysA", "VCTK"),
    ]
    live = calibration_for("aasist-l", None, None, "fp32").live
    result = run_variant(
        "official",
        utts,
        build_engine(live, SileroVad()),
        build_scorer("aasist-l", "fp32", "cpu", 1),
        SuiteConfig(),
    )
    assert result.unscored == []
    assert result.genuine["gen1"] == pytest.approx(result.spoof["spf1"], abs=1e-5)  # the same audio


def test_suite_table_survives_a_group_that_one_model_never_scored() -> None:
    """The candidate's own gate may leave a whole kind unscored: its cell reads
    '–' in the table instead of the report failing after all the scoring."""
    from spoofwatch.calibration.bootstrap import BootstrapConfig
    from spoofwatch.calibration.streaming import Trace
    from spoofwatch.calibration.suite import (
        SuiteConfig,
        Utterance,
        VariantResult,
        add_intervals,
        summarise,
    )
    from spoofwatch.calibration.suite_report import markdown
    from spoofwatch.stream.policy import PolicyConfig

    cfg = SuiteConfig()
    utts = [
        Utterance("g1", Path("g1"), "bonafide", "-", "-", "VCTK"),
        Utterance("s1", Path("s1"), "spoof", "tts", "sysA", "VCTK"),
        Utterance("s2", Path("s2"), "spoof", "vc", "sysB", "VCTK"),
    ]
    policy = PolicyConfig(enter_threshold=1.0, exit_threshold=2.0)
    genuine = [Trace("VCTK#0", 60.0, None, [(4.04 + i, 5.0, None) for i in range(50)])]

    def result(name: str, scored: set[str]) -> VariantResult:
        r = VariantResult(name, genuine={"g1": 5.0}, genuine_traces=genuine)
        for u in ("s1", "s2"):
            score = -3.0 if u in scored else None
            r.spoof_traces[u] = Trace(u, 6.0, 0.0, [(4.04, score, None), (4.54, score, None)])
            if score is None:
                r.unscored.append(u)
            else:
                r.spoof[u] = score
        return r

    results = [result("official", {"s1", "s2"}), result("tuned", {"s1"})]
    summaries = [summarise(r, utts, policy, cfg) for r in results]
    # the paired intervals use only what both scored: g1 and s1
    add_intervals(summaries, results, utts, BootstrapConfig(draws=20))
    assert [s["pooled_eer_bootstrap"]["n"] for s in summaries] == [2, 2]
    assert [s["balanced_eer_bootstrap"]["n"] for s in summaries] == [2, 2]
    table = markdown(summaries, cfg)
    vc_row = next(line for line in table.splitlines() if line.startswith("| kind vc"))
    assert "–" in vc_row and "sysB" in table
    assert "- tuned: pooled EER 0.0 %, 95 % interval 0.0–0.0 % (2 utterances scored by every model" in table
    assert "- tuned: balanced EER 0.0 %, 95 % interval 0.0–0.0 %" in table


def test_the_operating_point_is_the_highest_threshold_without_a_false_alert() -> None:
    """Under an hour of genuine streams, a 1/h target allows no false alert. An
    alert needs two consecutive smoothed scores below the threshold, so the
    highest threshold that raises none is, over every pair of consecutive
    smoothed genuine scores, the least of the pair's larger one (worked out
    here with a rolling mean of our own, not the policy's). The suite must land
    at it, not at a grid point below it: a spoof scoring between the two is
    detected there."""
    from spoofwatch.calibration.streaming import Trace
    from spoofwatch.calibration.suite import (
        SuiteConfig,
        Utterance,
        VariantResult,
        false_alerts_per_hour,
        summarise,
    )
    from spoofwatch.calibration.suite_report import markdown
    from spoofwatch.stream.policy import PolicyConfig

    policy = PolicyConfig(enter_threshold=0.0, exit_threshold=1.0)  # smoothing 4, alerts after 2 windows
    rng = np.random.default_rng(7)
    raw = [rng.normal(2.0, 1.5, 56) for _ in range(3)]  # 3 one-minute streams: 0.05 h
    genuine = [
        Trace(f"g#{k}", 60.0, None, [(4.04 + i, float(v), None) for i, v in enumerate(r)])
        for k, r in enumerate(raw)
    ]
    smoothed = [np.array([r[max(0, i - 3) : i + 1].mean() for i in range(len(r))]) for r in raw]
    t_star = min(float(np.maximum(sm[:-1], sm[1:]).min()) for sm in smoothed)
    next_down = max(float(v) for sm in smoothed for v in sm if v < t_star)

    inside = next_down + 0.25 * (t_star - next_down)  # below every threshold that raises no false alert
    spoof = {"inside": inside, "at": t_star, "far": -10.0}
    utts = [
        Utterance("g1", Path("g1"), "bonafide", "-", "-", "VCTK"),
        *(Utterance(u, Path(u), "spoof", "tts", "sys-" + u, "-") for u in spoof),
    ]
    result = VariantResult(
        "m",
        genuine={"g1": 2.0},
        spoof=spoof,
        genuine_traces=genuine,
        spoof_traces={u: Trace(u, 6.0, 0.0, [(4.04, v, None), (4.54, v, None)]) for u, v in spoof.items()},
    )
    # A long, clearly spoofed stream: most windows of the run lie far below the
    # genuine ones, as in a real suite, so quantiles of all windows leave wide
    # gaps where the threshold is decided.
    result.spoof_traces["far"] = Trace("far", 1004.0, 0.0, [(4.04 + i / 2, -10.0, None) for i in range(2000)])
    # Clearly spoofed but structurally late: one window only (a clip shorter
    # than a window plus a hop), or a first window the gate held back.
    for u, windows in {
        "short": [(4.04, -10.0, None)],
        "gated": [(4.04, None, None), (4.54, -10.0, None), (5.04, -10.0, None)],
    }.items():
        utts.append(Utterance(u, Path(u), "spoof", "tts", "sys-" + u, "-"))
        result.spoof[u] = -10.0
        result.spoof_traces[u] = Trace(u, 6.0, 0.0, windows)
    summary = summarise(result, utts, policy, SuiteConfig())
    at = summary["at_target"]
    assert next_down < at["enter_threshold"] <= t_star
    assert at["false_alerts_per_hour"] == 0.0
    # What holds it there: the pair that sets t_star, whose alert starts when
    # its second window is scored.
    k_star, i_star = min(
        ((k, i) for k, sm in enumerate(smoothed) for i in range(len(sm) - 1)),
        key=lambda ki: max(smoothed[ki[0]][ki[1]], smoothed[ki[0]][ki[1] + 1]),
    )
    assert at["limited_by"] == [{"stream": f"g#{k_star}", "t_s": 4.04 + i_star + 1}]
    assert (
        f"a higher threshold would add false alerts in g#{k_star} at {4.04 + i_star + 1:.1f} s"
        in markdown([summary], SuiteConfig())
    )
    assert false_alerts_per_hour(genuine, policy.with_band(float(np.nextafter(t_star, np.inf)))) > 0
    assert at["detection_by_system"] == {
        "sys-at": 0.0,
        "sys-far": 1.0,
        "sys-gated": 0.0,
        "sys-inside": 1.0,
        "sys-short": 0.0,
    }
    assert (
        at["detection_any_by_system"]["sys-gated"] == 1.0
        and at["detection_any_by_system"]["sys-short"] == 0.0
    )
    # The curve: the same search at other targets. Thresholds only rise with
    # the target, each stays within its target, the point at the main target
    # is the operating point itself, and once every genuine stream may alert
    # as it likes, every spoof that can alert within 5 s does.
    curve = summarise(
        result, utts, policy, SuiteConfig(curve_false_alerts_per_hour=(0.0, 1.0, 20.0, 1000.0))
    )["operating_curve"]
    assert [p["target_false_alerts_per_hour"] for p in curve] == [0.0, 1.0, 20.0, 1000.0]
    assert all(p["false_alerts_per_hour"] <= p["target_false_alerts_per_hour"] for p in curve)
    thresholds = [p["enter_threshold"] for p in curve]
    assert thresholds == sorted(thresholds) and thresholds[0] < thresholds[-1]
    assert (curve[1]["enter_threshold"], curve[1]["detection_rate"]) == (
        at["enter_threshold"],
        at["detection_rate"],
    )
    assert (curve[-1]["detection_rate"], curve[-1]["detection_rate_any"]) == (3 / 5, 4 / 5)
    assert "| 1000 | 60 % (80 %); " in markdown(
        [summarise(result, utts, policy, SuiteConfig(curve_false_alerts_per_hour=(1000.0,)))], SuiteConfig()
    )
    # the ceiling: 3 of 5 could alert within 5 s at all, 4 at any time
    assert (
        at["spoof_stream_count"],
        at["spoof_streams_can_alert"],
        at["spoof_streams_can_alert_within"],
    ) == (
        5,
        4,
        3,
    )

    # No genuine stream long enough to raise an alert: every threshold would
    # "meet" the target, so there is no operating point, said in the table.
    result.genuine_traces = [Trace("g#0", 60.0, None, [(4.04, 2.0, None)])]
    summary = summarise(result, utts, policy, SuiteConfig())
    assert summary["at_target"]["enter_threshold"] is None and summary["at_target"]["detection_rate"] is None
    assert "| 2 | no operating point |" in markdown([summary], SuiteConfig())
    assert "m: 0.02 h of genuine streams; no operating point (an alert needs 2 scored windows" in markdown(
        [summary], SuiteConfig()
    )


def test_a_call_is_one_trial_detected_by_its_first_alert() -> None:
    """Spoof utterances back to back in calls: each call counts once, detected
    when an alert starts within 5 s of the call's start, whichever utterance it
    falls in; an alert staying open over later utterances detects nothing more."""
    from spoofwatch.calibration.streaming import Trace
    from spoofwatch.calibration.suite import SuiteConfig, Utterance, VariantResult, summarise
    from spoofwatch.calibration.suite_report import markdown
    from spoofwatch.stream.policy import PolicyConfig

    policy = PolicyConfig(enter_threshold=0.0, exit_threshold=1.0, smoothing_windows=1, cooldown_s=0.0)

    def call(name: str, low_from_s: float, duration_s: float) -> Trace:
        """Windows every 0.5 s from 4.04 s, spoof-like (-5) from ``low_from_s`` on."""
        ends = [4.04 + i / 2 for i in range(int((duration_s - 4.04) * 2) + 1)]
        return Trace(name, duration_s, 0.0, [(t, -5.0 if t >= low_from_s else 5.0, None) for t in ends])

    calls = {
        "sysA_c0#0": call("sysA_c0#0", 0.0, 20.0),  # alert at 4.54 s
        "sysA_c1#1": call("sysA_c1#1", 9.0, 20.0),  # alert at 9.54 s: late
        "sysB_c0#2": call("sysB_c0#2", 99.0, 20.0),  # never
    }
    spans = {  # four utterances in the first call, one in each of the others
        **{f"a{k}": ("sysA_c0#0", 5.0 * k, 5.0 * k + 5.0) for k in range(4)},
        "a_late": ("sysA_c1#1", 0.0, 20.0),
        "b": ("sysB_c0#2", 0.0, 20.0),
    }
    utts = [Utterance(u, Path(u), "spoof", "tts", "sysB" if u == "b" else "sysA", "-") for u in spans]
    result = VariantResult(
        "m",
        genuine={"g1": 5.0},
        spoof=dict.fromkeys(spans, -1.0),
        genuine_traces=[Trace("g#0", 60.0, None, [(4.04 + i, 5.0, None) for i in range(56)])],
        spoof_traces=calls,
        spoof_spans=spans,
    )
    cfg = SuiteConfig(spoof_streams="calls")
    summary = summarise(result, utts, policy, cfg)
    at = summary["at_shipped_threshold"]
    assert at["detection_by_system"] == {"sysA": 0.5, "sysB": 0.0}
    assert at["detection_rate"] == pytest.approx(1 / 3)  # 1 of 3 calls, not 4 of 6 utterances
    assert at["detection_any_by_system"] == {"sysA": 1.0, "sysB": 0.0}
    assert at["median_first_alert_s"] == pytest.approx((4.54 + 9.54) / 2)
    assert (
        at["spoof_stream_count"],
        at["spoof_streams_can_alert"],
        at["spoof_streams_can_alert_within"],
    ) == (
        3,
        3,
        3,
    )
    table = markdown([summary], cfg)
    assert "| m calls detected |" in table and "a stream is a call: one spoof system's utterances" in table
    assert "3 of 3 spoof calls are long enough to alert within 5 s" in table


def test_a_call_lets_a_clip_too_short_to_alert_alone_be_scored_in_context(
    shared: Path, sw_home: Path
) -> None:
    """The real engine: three LA clips of one system as clips are three
    streams, the 1.9 s one a single padded window that can never alert. As a
    call they are one stream that can; each utterance is scored by the windows
    centred on it (none is, on the first 1.9 s), and a clip's channel copy goes
    to a call of its own."""
    from spoofwatch.calibration.suite import SuiteConfig, Utterance, alert_ready_s, run_variant
    from spoofwatch.model.detector import calibration_for
    from spoofwatch.model.scorers import build_scorer
    from spoofwatch.stream.engine import build_engine
    from spoofwatch.stream.vad import SileroVad

    flac = shared / "data" / "asvspoof2019_la" / "flac"
    clips = {
        "a_c0": flac / "LA_E_6163791.flac",  # 1.9 s
        "b_c0": flac / "LA_T_1000137.flac",
        "c_c0": flac / "LA_T_1272637.flac",
        "c_c1": flac / "LA_T_1272637.flac",  # c's channel copy
    }
    utts = [Utterance("g", flac / "LA_D_1003356.flac", "bonafide", "-", "-", "VCTK")]
    utts += [Utterance(u, p, "spoof", "tts", "sysA", "-", u[:1]) for u, p in clips.items()]
    cal = calibration_for("aasist-l", None, None, "fp32")
    engine = build_engine(cal.live, SileroVad(), 0.5)
    scorer = build_scorer("aasist-l", "fp32", "cpu", 1)
    alone = run_variant("official", utts, engine, scorer, SuiteConfig())
    call = run_variant("official", utts, engine, scorer, SuiteConfig(spoof_streams="calls"))
    assert sorted(alone.spoof_traces) == sorted(clips) and alone.spoof_spans == {}
    assert alert_ready_s(alone.spoof_traces["a_c0"], cal.policy) is None
    assert alone.unscored == []
    assert sorted(call.spoof_traces) == ["sysA_c0#0", "sysA_c1#1"]
    tr = call.spoof_traces["sysA_c0#0"]
    a_s, b_s, c_s = (alone.spoof_traces[u].duration_s for u in ("a_c0", "b_c0", "c_c0"))
    assert tr.duration_s == pytest.approx(a_s + b_s + c_s)
    assert call.spoof_spans["b_c0"] == ("sysA_c0#0", pytest.approx(a_s), pytest.approx(a_s + b_s))
    assert call.spoof_spans["c_c1"] == ("sysA_c1#1", 0.0, pytest.approx(c_s))
    ready = alert_ready_s(tr, cal.policy)
    assert ready is not None and ready <= tr.duration_s
    # The first window (4.04 s) is centred 2.02 s in, past the 1.9 s clip: it has none.
    assert call.unscored == ["a_c0"]
    # b's windows: those ending 2.02 s after a point inside it (until the stream's
    # last window, which ends with the stream and holds a shorter stretch).
    half_s = engine.windower.window_samples / 16000 / 2
    full = [s for t, s, _ in tr.windows if s is not None and a_s <= t - half_s < a_s + b_s]
    assert call.spoof["b_c0"] == pytest.approx(float(np.mean(full)))
    assert call.spoof["c_c1"] == pytest.approx(alone.spoof["c_c1"])  # a call of one clip is that clip


def test_the_balanced_eer_weighs_each_genuine_corpus_and_system_the_same() -> None:
    """Three LibriSpeech utterances that score below the spoofs and one VCTK one
    that does not: pooled, LibriSpeech is three quarters of the genuine side;
    balanced, a half, whatever the corpus sizes."""
    from spoofwatch.calibration.streaming import Trace
    from spoofwatch.calibration.suite import SuiteConfig, Utterance, VariantResult, summarise
    from spoofwatch.stream.policy import PolicyConfig

    genuine = {"ls1": -1.0, "ls2": -1.0, "ls3": -1.0, "vctk1": 5.0}
    spoof = {"a1": 0.0, "a2": 0.0, "b1": 0.0, "b2": 0.0}
    utts = [
        *(
            Utterance(u, Path(u), "bonafide", "-", "-", "LibriSpeech" if u.startswith("ls") else "VCTK")
            for u in genuine
        ),
        *(Utterance(u, Path(u), "spoof", "tts", "sys" + u[0], "-") for u in spoof),
    ]
    result = VariantResult(
        "m",
        genuine=genuine,
        spoof=spoof,
        genuine_traces=[Trace("g#0", 60.0, None, [(4.04, 5.0, None)])],
        spoof_traces={u: Trace(u, 6.0, 0.0, [(4.04, 0.0, None)]) for u in spoof},
    )
    summary = summarise(result, utts, PolicyConfig(enter_threshold=1.0, exit_threshold=2.0), SuiteConfig())
    # pooled: 3 of 4 genuine utterances score below every spoof, so the EER is 75 %
    assert summary["pooled_eer_percent"] == pytest.approx(75.0)
    # balanced: those 3 are one corpus of two, half of the genuine side
    assert summary["balanced_eer_percent"] == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[splits]\ntest_systems = "AutoVC"', r"\[splits\]\.test_systems: expected a list"),
        ("[splits]\ntest_systems = [1]", r"test_systems\[0\]: expected a string"),
        ("[splits]\ntest_sytems = []", r"unknown key\(s\) test_sytems"),
        ("splits = 5", r"\[splits\]: expected a table"),
        ('[subsets]\na = ["tarin", 4]', r"\[subsets\]\.a: expected \[split, utterances\]"),
        ('[subsets]\na = ["train"]', r"\[subsets\]\.a: expected \[split, utterances\]"),
        ('[subsets]\na = ["train", -4]', r"\[subsets\]\.a: expected \[split, utterances\]"),
        ("augmented_copies = -1", r"augmented_copies: expected an integer >= 0"),
        ("max_seconds = -1", r"max_seconds: expected >= 0.5"),
        ('seed = "1"', r"seed: expected an integer >= 0"),
        ("[channel]\ngain_db = [20.0]", r"\[channel\]\.gain_db: expected a pair of numbers"),
        ("[channel]\ngain_db = [20.0, -20.0]", r"channel gain_db: expected \[low, high\] with low <= high"),
        ('[generate]\nespeak_voices = "en-us"', r"\[generate\]\.espeak_voices: expected a list"),
        ("colour = 1", r"unknown key\(s\) colour"),
    ],
)
def test_corpus_config_types_are_checked(tmp_path: Path, toml: str, message: str) -> None:
    """A wrong type is one clear error before anything is built: a string
    where a list of held-out systems belongs was read as a set of letters,
    and the system went to training."""
    from spoofwatch.errors import ConfigError
    from spoofwatch.model.corpus_config import load_corpus_config

    path = tmp_path / "corpus.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        load_corpus_config(path)


def test_a_build_resumes_only_with_the_settings_that_made_its_clips(open_cfg: object, tmp_path: Path) -> None:
    """build.json records what the clips depend on: a rerun with another
    max_seconds is refused (it kept the old clips under the new settings'
    name), one with other subsets goes on; a sidecar cut short by an older
    build is rebuilt, not a crash."""
    from spoofwatch.errors import ConfigError
    from spoofwatch.model.corpus import _done_row, check_build_stamp, write_build_stamp

    out = tmp_path / "corpus"
    check_build_stamp(open_cfg, out)  # type: ignore[arg-type]
    write_build_stamp(open_cfg, out)  # type: ignore[arg-type]
    assert (out / "build.json").is_file()
    (out / "flac").mkdir()
    (out / "flac" / "OC_0_c0.json").write_text('{"copy": 0, "channel": "clean", "seconds": 2.5}')
    check_build_stamp(dataclasses.replace(open_cfg, subsets={"x": ("train", 4)}), out)  # type: ignore[type-var,arg-type]
    with pytest.raises(ConfigError, match=r"was built with other max_seconds settings"):
        check_build_stamp(dataclasses.replace(open_cfg, max_seconds=3.0), out)  # type: ignore[type-var,arg-type]
    sidecar = tmp_path / "u.json"
    sidecar.write_text("")
    assert _done_row(None, "u", sidecar) is None  # type: ignore[arg-type]
    sidecar.write_text('{"copy": 0, "channel": "clean", "seconds": 2.5}')
    assert _done_row(None, "u", sidecar).seconds == 2.5  # type: ignore[arg-type,union-attr]


def test_evaluate_suite_scores_a_model_card_beside_the_official_model(
    sw_home: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9: a card works wherever --model does, evaluate-suite included, its
    own window length (here 2 s) driving the windower; the baseline is the
    official default model, in the same run."""
    import pickle

    from test_model_card import WINDOW, _card, _tiny_model

    from spoofwatch.cli import main
    from spoofwatch.errors import InputError

    _tiny_model(tmp_path / "tiny.onnx")
    card = _card(tmp_path, "power.toml")  # named after its file
    args = ["evaluate-suite", "--corpus", str(tiny_corpus), "--model", str(card), "--copies", "clean"]
    args += ["--hop-s", "1.0", "--json", "--no-progress", "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    official, candidate = json.loads(capsys.readouterr().out)["models"]
    assert (official["model"], candidate["model"]) == ("official", "power")
    # (shorter windows can score an utterance whose one long window the gate skips)
    assert min(candidate["n_genuine"], official["n_genuine"], candidate["n_spoof"], official["n_spoof"]) >= 2
    assert candidate["pooled_eer_percent"] is not None
    windows_s = set()
    for pkl in (tmp_path / "cache").glob("variant-*.pkl"):
        with pkl.open("rb") as fh:
            result = pickle.load(fh)
        first_ends = {tr.windows[0][0] for tr in result.spoof_traces.values() if tr.duration_s >= 4.04}
        windows_s.add((result.name, min(first_ends)))
    # The first window of a long enough clip ends one model window in: 2 s for the card.
    assert windows_s == {("official", 64_600 / SAMPLE_RATE_HZ), ("power", WINDOW / SAMPLE_RATE_HZ)}
    # Each system's utterances back to back, as calls: fewer streams than utterances.
    calls = [*args[:-2], "--skip-official", "--spoof-streams", "calls", "--out", str(tmp_path / "calls")]
    assert main(calls) == 0
    (power,) = json.loads(capsys.readouterr().out)["models"]
    systems = len(power["eer_by_system"])
    assert power["at_shipped_threshold"]["spoof_stream_count"] == systems < power["n_spoof"]
    assert (
        "a call: one spoof system's utterances of one channel copy back to back, up to 60 s"
        in (tmp_path / "calls" / "suite.md").read_text()
    )
    # Refused before anything is scored or exported: weights belong to a built-in
    # architecture, a card is one ONNX file at its own precision, and 'official' is the baseline.
    for extra, message in (
        (["--weights", str(tmp_path / "x.pth")], "a model card names its ONNX file"),
        (["--precision", "int8"], "--precision int8: a model card describes one ONNX file"),
        (["--name", "official"], "expected another label than the baseline's"),
    ):
        assert main([*args, *extra]) == InputError.exit_code
        assert message in capsys.readouterr().err


def test_evaluate_suite_says_when_models_run_at_different_hops(
    sw_home: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each model runs at its calibration's hop: a card's default was 0.5 s,
    the official model's 0.5011875 s, so the official ONNX file as a card
    scored differently from itself, and only suite.json showed why."""
    import dataclasses

    from test_model_card import _card, _tiny_model

    from spoofwatch.calibration.calfile import load_calibration, load_card_default, save_calibration
    from spoofwatch.cli import main
    from spoofwatch.model.card import load_card

    _tiny_model(tmp_path / "tiny.onnx")
    card = _card(tmp_path, "power.toml")
    spec = load_card(card)
    default = load_card_default(spec.name, spec.calibration_key, spec.window_samples)
    assert default.stream.hop_s == load_calibration(model="aasist-l").stream.hop_s  # one hop by default
    own = tmp_path / "power-cal.toml"
    save_calibration(dataclasses.replace(default, stream=dataclasses.replace(default.stream, hop_s=0.5)), own)
    args = ["evaluate-suite", "--corpus", str(tiny_corpus), "--model", str(card), "--calibration", str(own)]
    args += ["--copies", "clean", "--limit-per-group", "1", "--no-progress", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    said = capsys.readouterr()
    assert "the models run at different hops (official 0.501188 s, power 0.5 s)" in said.err
    table = (tmp_path / "out" / "suite.md").read_text()
    assert "- official: hop 0.501188 s, " in table and "- power: hop 0.5 s, " in table


def test_evaluate_suite_refuses_a_selection_without_genuine_audio(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without genuine utterances there is no EER and no false-alert rate to
    hold a threshold to (it reported 0.0 false alerts/h)."""
    from spoofwatch.cli import main
    from spoofwatch.errors import DatasetError

    corpus = tmp_path / "spoof-only"
    shutil.copytree(tiny_corpus, corpus)
    lines = (corpus / "metadata.tsv").read_text().splitlines()
    (corpus / "metadata.tsv").write_text("\n".join(row for row in lines if "\tbonafide\t" not in row) + "\n")
    assert main(["evaluate-suite", "--corpus", str(corpus), "--no-progress"]) == DatasetError.exit_code
    assert "has no bonafide utterances: the suite needs both" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["-1", "nan", "inf"])
def test_evaluate_suite_refuses_an_impossible_false_alert_target(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A negative or NaN target matched no threshold, and after hours of scoring the
    report showed the fallback threshold as its operating point."""
    from spoofwatch.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["evaluate-suite", "--corpus", str(tmp_path), f"--target-false-alerts-per-hour={target}"])
    assert exc.value.code == 2
    assert "--target-false-alerts-per-hour: expected a finite number >= 0" in capsys.readouterr().err


def test_the_curve_rates_are_sorted_plain_floats_once_each() -> None:
    from spoofwatch.calibration.suite import SuiteConfig
    from spoofwatch.commands.common import non_negative_rates

    cfg = SuiteConfig(curve_false_alerts_per_hour=[10, np.float32(2.0), 5, 5.0])  # type: ignore[arg-type]
    assert cfg.curve_false_alerts_per_hour == (2.0, 5.0, 10.0) and hash(cfg)
    assert non_negative_rates("10,2,5,5,-0") == (0.0, 2.0, 5.0, 10.0) and non_negative_rates("") == ()


@pytest.mark.parametrize("rates", ["2,-1", "5,nan", "1;2", " , ", "2,,5"])
def test_evaluate_suite_refuses_a_bad_curve(
    rates: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spoofwatch.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["evaluate-suite", "--corpus", str(tmp_path), f"--curve-false-alerts-per-hour={rates}"])
    assert exc.value.code == 2
    assert (
        "--curve-false-alerts-per-hour: expected comma-separated finite numbers >= 0"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("target_false_alerts_per_hour", -1.0, "target_false_alerts_per_hour: expected a finite number >= 0"),
        ("target_false_alerts_per_hour", float("nan"), "expected a finite number >= 0"),
        ("stream_seconds", 0.0, "stream_seconds: expected a finite number > 0"),
        ("detect_within_s", float("inf"), "detect_within_s: expected a finite number > 0"),
        ("copies", "some", "copies: expected one of ('all', 'clean')"),
        ("spoof_streams", "call", "spoof_streams: expected one of ('clips', 'calls')"),
        ("limit_per_group", -2, "limit_per_group: expected an integer >= 0"),
        (
            "curve_false_alerts_per_hour",
            (2.0, float("nan")),
            "curve_false_alerts_per_hour: expected finite numbers",
        ),
        ("curve_false_alerts_per_hour", (-1.0,), "curve_false_alerts_per_hour: expected finite numbers >= 0"),
        ("curve_false_alerts_per_hour", 2.0, "curve_false_alerts_per_hour: expected a sequence of numbers"),
        ("curve_false_alerts_per_hour", "2,5", "curve_false_alerts_per_hour: expected a sequence of numbers"),
    ],
)
def test_suite_config_checks_its_values(field: str, value: object, expected: str) -> None:
    from spoofwatch.calibration.suite import SuiteConfig
    from spoofwatch.errors import InputError

    with pytest.raises(InputError, match=re.escape(expected)):
        SuiteConfig(**{field: value})  # type: ignore[arg-type]
    assert SuiteConfig(target_false_alerts_per_hour=0.0).target_false_alerts_per_hour == 0.0


# Tiny corpora built by the real `data build-corpus` over a few real clips from
# ../shared: three demo repositories (one held out for test, one for dev) and
# two ASVspoof LA clips, cut to 1 s, no channel copies.
TINY_REPOS = ("jik876/hifi-gan-demo", "mindslab-ai/univnet", "neonbjb/tortoise-tts")


@pytest.fixture(scope="module")
def tiny_shared(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared folder in the layout build-corpus reads, naming real files of ``shared``."""
    import csv

    root = tmp_path_factory.mktemp("tiny_shared")
    demos = shared / "data" / "tts_demos"
    with (demos / "manifest.tsv").open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        columns, rows = reader.fieldnames, list(reader)
    assert columns is not None
    picked = [
        {**r, "path": str(demos / r["path"])}
        for repo in TINY_REPOS
        for label in ("bonafide", "spoof")
        for r in [r for r in rows if r["source_repo"] == repo and r["label"] == label][:2]
    ]
    (root / "data" / "tts_demos").mkdir(parents=True)
    (root / "data" / "speech").mkdir()
    (root / "data" / "asvspoof2019_la").mkdir()
    with (root / "data" / "tts_demos" / "manifest.tsv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(picked)
    la = shared / "data" / "asvspoof2019_la"
    lines = (la / "clips.tsv").read_text("utf-8").splitlines()
    head = lines[0].split("\t")
    la_rows = [dict(zip(head, line.split("\t"), strict=True)) for line in lines[1:3]]
    (root / "data" / "asvspoof2019_la" / "clips.tsv").write_text(
        "\n".join(
            ["\t".join(head), *("\t".join({**r, "file": str(la / r["file"])}.values()) for r in la_rows)]
        )
        + "\n",
        "utf-8",
    )
    return root


def _recipe(
    folder: Path, shared: Path | None, top: dict[str, object] | None = None, **tables: dict[str, object]
) -> Path:
    """A tiny corpus TOML in ``folder``: 1 s clips, no channel copies, one
    espeak-ng sentence; ``top`` and ``tables`` override its keys (None drops one)."""
    recipe: dict[str, dict[str, object]] = {
        "": {"shared": None if shared is None else str(shared), "seed": 7, "max_seconds": 1.0}
        | {"augmented_copies": 0}
        | (top or {}),
        "splits": {
            "test_repos": [TINY_REPOS[2]],
            "test_generators": ["griffin-lim"],
            "dev_repos": [TINY_REPOS[1]],
        },
        "generate": {
            "world_per_split": 0,
            "espeak_voices": ["en-us"],
            "sentences": ["Glue the sheet to the dark blue background."],
        },
    }
    for name, table in tables.items():
        recipe[name] = recipe.get(name, {}) | table
    lines = []
    for name, table in recipe.items():
        lines += [f"[{name}]"] if name else []
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items() if v is not None]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.toml"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def _build(recipe: Path, out: Path) -> int:
    from spoofwatch.cli import main

    return main(["data", "build-corpus", "--out", str(out), "--config", str(recipe), "--no-progress"])


def _nothing_built(out: Path) -> bool:
    return not (out / "flac").exists() and not (out / "build.json").exists()


@pytest.mark.parametrize("name", ["train", "TEST", "../../escaped", "a/b", ".hidden", "-x", "a b"])
def test_subset_names_cannot_overwrite_a_split_or_leave_the_corpus(
    tiny_shared: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subset is written to protocols/<name>.txt: `train = ["test", 6]` filled
    train.txt with held-out test clips, "../../escaped" wrote outside --out and
    "a/b" failed with a traceback after the whole build."""
    from spoofwatch.errors import ConfigError
    from spoofwatch.model.corpus_config import CorpusConfig, load_corpus_config

    recipe = _recipe(tmp_path / "cfg", tiny_shared, subsets={name: ["test", 2]})
    out = tmp_path / "out" / "corpus"
    assert _build(recipe, out) == ConfigError.exit_code
    assert f"[subsets].{name}: expected a subset name" in capsys.readouterr().err
    assert _nothing_built(out) and not list(tmp_path.rglob("escaped*"))
    # A config made in code is held to the same names.
    good = load_corpus_config(_recipe(tmp_path / "cfg", tiny_shared, subsets={"train-cpu.v2": ["train", 2]}))
    with pytest.raises(ConfigError, match="expected a subset name"):
        dataclasses.replace(good, subsets={name: ("test", 2)})
    assert isinstance(good, CorpusConfig) and good.subsets == {"train-cpu.v2": ("train", 2)}


def test_a_run_that_fails_before_building_does_not_lock_its_folder(
    tiny_shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """build.json was written before planning: a run that failed there (a
    missing manifest, no shared data) refused the corrected config ("built
    with other ... settings")."""
    from spoofwatch.errors import ConfigError, DatasetError

    out = tmp_path / "corpus"
    wrong = _recipe(
        tmp_path / "wrong", tiny_shared, top={"max_seconds": 2.0, "extra_manifests": ["nope.tsv"]}
    )
    assert _build(wrong, out) == DatasetError.exit_code
    assert "nope.tsv: not found (an extra_manifests entry" in capsys.readouterr().err
    assert not (out / "build.json").exists()
    right = _recipe(tmp_path / "right", tiny_shared)
    assert _build(right, out) == 0
    assert json.loads((out / "build.json").read_text())["max_seconds"] == 1.0
    # Once clips are built, other settings are refused as before.
    assert (
        _build(_recipe(tmp_path / "other", tiny_shared, top={"max_seconds": 2.0}), out)
        == ConfigError.exit_code
    )
    assert "was built with other max_seconds settings" in capsys.readouterr().err
    # A folder that holds only a stamp (an older version wrote it before planning) takes new settings.
    from spoofwatch.model.corpus import write_build_stamp
    from spoofwatch.model.corpus_config import load_corpus_config

    stamped = tmp_path / "stamped"
    write_build_stamp(load_corpus_config(wrong), stamped)
    assert _build(right, stamped) == 0
    assert json.loads((stamped / "build.json").read_text())["max_seconds"] == 1.0


@pytest.mark.parametrize(
    ("generate", "expected"),
    [
        (
            {"espeak_voices": ["en-us", "xx-bogus"]},
            r"espeak_voices 'xx-bogus' are not installed \(languages: 'af', ",
        ),
        (
            {"espeak_voices": ["en-us+nosuchvariant"]},
            r"espeak_voices 'en-us\+nosuchvariant' are not installed",
        ),
        (
            {"festival_voices": ["nosuch_diphone"]},
            r"festival_voices 'nosuch_diphone' are not installed \(installed: '",
        ),
        (
            {"piper_voices": ["nosuch_piper_voice"]},
            r"piper_voices: piper voice package 'nosuch_piper_voice' is not installed",
        ),
    ],
)
def test_build_checks_every_voice_before_the_first_clip(
    tiny_shared: Path,
    tmp_path: Path,
    generate: dict[str, object],
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bogus espeak voice failed "after 56 files", festival with "SIOD ERROR",
    piper when the build reached it: hours into a real build."""
    from spoofwatch.errors import ConfigError

    program = {"espeak_voices": "espeak-ng", "festival_voices": "festival", "piper_voices": None}[
        next(iter(generate))
    ]
    if program and shutil.which(program) is None:
        missing(f"{program} is not installed")
    out = tmp_path / "corpus"
    assert _build(_recipe(tmp_path, tiny_shared, generate=generate), out) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert re.search(r"\[generate\]: " + expected, err), err
    assert _nothing_built(out)


def test_build_checks_every_listed_audio_file_before_the_first_clip(
    tiny_shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An extra manifest naming files that are not there failed at the first of them, mid-build."""
    from spoofwatch.errors import DatasetError

    real = next(
        p
        for p in (tiny_shared / "data" / "tts_demos" / "manifest.tsv").read_text().split()
        if p.startswith("/")
    )
    rows = [
        (real, "bonafide", "GT", "gt", "mine", "me/recordings", "mine", "WAV", "8000"),
        ("gone/a.wav", "bonafide", "GT", "gt", "mine", "me/recordings", "mine", "WAV", "8000"),
        ("gone/b.wav", "spoof", "X", "tts", "mine", "me/recordings", "mine", "WAV", "8000"),
    ]
    manifest = _write_manifest(tmp_path / "mine" / "manifest.tsv", rows)
    out = tmp_path / "corpus"
    assert (
        _build(_recipe(tmp_path, tiny_shared, top={"extra_manifests": [str(manifest)]}), out)
        == DatasetError.exit_code
    )
    err = capsys.readouterr().err
    assert f"{manifest}: 2 row(s) name audio files that do not exist" in err
    assert f"line 3: {manifest.parent / 'gone/a.wav'}; line 4: {manifest.parent / 'gone/b.wav'}" in err
    assert _nothing_built(out)


@pytest.mark.parametrize(
    ("splits", "expected"),
    [
        (
            {"test_systems": ["NoSuchSystem"]},
            r"test_systems: 'NoSuchSystem' not among the sources' systems \(known: .*'Tortoise",
        ),
        (
            {"test_corpora": ["LibriSpech"], "dev_repos": ["nobody/nothing"]},
            r"dev_repos: 'nobody/nothing' not among .*; test_corpora: 'LibriSpech'",
        ),
        (
            {"test_generators": ["piper-joe"]},
            r"test_generators: 'piper-joe' not among the sources' generators \(known: .*'world'",
        ),
        (
            {"test_repos": [], "test_generators": []},
            r"the test split of this corpus would be empty: expected test_repos",
        ),
        ({"dev_repos": []}, r"the dev split of this corpus would be empty: expected dev_repos"),
    ],
)
def test_split_names_must_name_sources_and_held_out_splits_must_not_be_empty(
    tiny_shared: Path,
    tmp_path: Path,
    splits: dict[str, object],
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A misspelt held-out name matched nothing and was ignored (the system went
    to training), and a recipe holding out nothing built a corpus without a test split."""
    from spoofwatch.errors import ConfigError

    out = tmp_path / "corpus"
    assert _build(_recipe(tmp_path, tiny_shared, splits=splits), out) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert _nothing_built(out)


def test_an_explicit_shared_wins_over_the_environment(
    tiny_shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$SPOOFWATCH_SHARED is the default of `shared`: it overrode a recipe's own value."""
    from spoofwatch.model.corpus_config import load_corpus_config

    monkeypatch.setenv(SHARED_ENV, str(tmp_path / "elsewhere"))
    assert load_corpus_config(_recipe(tmp_path / "a", tiny_shared)).shared == tiny_shared.resolve()
    relative = _recipe(tmp_path / "b", Path("..") / "c")
    assert load_corpus_config(relative).shared == (tmp_path / "c").resolve()
    assert load_corpus_config(_recipe(tmp_path / "d", None)).shared == (tmp_path / "elsewhere").resolve()


def test_a_subset_that_cannot_be_filled_stays_balanced_and_says_so(
    tiny_shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train-big = ["train", 1000]` wrote every train line, 4 genuine and 14
    spoof, without a word, though the CPU recipe relies on a balanced subset."""
    from spoofwatch.calibration.protocol import parse_protocol

    out = tmp_path / "corpus"
    recipe = _recipe(tmp_path, tiny_shared, subsets={"train-big": ["train", 1000], "train-2": ["train", 2]})
    assert _build(recipe, out) == 0
    train = parse_protocol(out / "protocols" / "train.txt")
    genuine = sum(t.label == "bonafide" for t in train)
    assert 0 < genuine < len(train) - genuine  # fewer genuine than spoof clips to choose from
    big = parse_protocol(out / "protocols" / "train-big.txt")
    assert sorted(t.label for t in big) == ["bonafide"] * genuine + ["spoof"] * genuine
    assert sorted(t.label for t in parse_protocol(out / "protocols" / "train-2.txt")) == ["bonafide", "spoof"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        f"WARNING spoofwatch.model.corpus: subset train-big: {2 * genuine} of the 1000 train utterances asked "
        f"for ({genuine} bona fide, {genuine} spoof: the train split has no more of one class, and the subset "
        "stays class-balanced)"
    ]


@pytest.mark.parametrize("bad", ["weights", "calibration"])
def test_evaluate_suite_checks_every_variant_before_scoring_any(
    sw_home: Path, tiny_corpus: Path, tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A candidate's bad --weights or --calibration was found only after the
    official model had been scored (and cached): hours on a real corpus. A file
    that is no checkpoint is one line, not torch's many."""
    from spoofwatch.cli import main
    from spoofwatch.model.config import load_model_config
    from spoofwatch.model.weights import weights_path

    weights = tmp_path / "candidate.pth"
    calibration = tmp_path / "candidate.toml"
    if bad == "weights":
        weights.write_bytes(b"garbage!")
    else:
        shutil.copy(weights_path(load_model_config("aasist-l")), weights)
        calibration.write_text("this is = not [a calibration\n")
    args = ["evaluate-suite", "--corpus", str(tiny_corpus), "--weights", str(weights), "--copies", "clean"]
    args += ["--hop-s", "1.0", "--no-progress", "--cache", str(tmp_path / "cache")]
    args += ["--calibration", str(calibration)] if bad == "calibration" else []
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("spoofwatch evaluate-suite: error: ") and str(tmp_path) in err[-1]
    assert not any("PyTorch 2.6" in line or "Please file an issue" in line for line in err)
    assert not list((tmp_path / "cache").glob("variant-*"))


@pytest.mark.parametrize(
    ("argv", "expected", "expected_official"),
    [
        ([], ["official", "fine-tuned"], ["official"]),
        (["--loudness", "on"], ["official", "fine-tuned+loudness"], ["official", "official+loudness"]),
        (
            ["--loudness", "both"],
            ["official", "fine-tuned", "fine-tuned+loudness"],
            ["official", "official+loudness"],
        ),
        (
            ["--loudness", "both", "--skip-official"],
            ["fine-tuned", "fine-tuned+loudness"],
            ["official+loudness"],
        ),
        (["--skip-official"], ["fine-tuned"], ["official"]),
    ],
)
def test_suite_variants_follow_loudness_modes(
    tmp_path: Path, argv: list[str], expected: list[str], expected_official: list[str]
) -> None:
    """`--loudness` off/on/both scores the candidate without, with, or both ways, beside
    the official model (without normalisation) unless skipped; the official model on its
    own gains a normalised variant only when normalisation is asked for."""
    from spoofwatch.cli import build_parser
    from spoofwatch.commands.corpus_cmds import _suite_variants

    base = ["evaluate-suite", "--corpus", str(tmp_path)]
    args = build_parser().parse_args([*base, "--weights", str(tmp_path / "w.pth"), *argv])
    variants = _suite_variants(args)
    assert [v[0] for v in variants] == expected
    assert all(v[4] == v[0].endswith("+loudness") for v in variants)
    assert [v[0] for v in _suite_variants(build_parser().parse_args([*base, *argv]))] == expected_official


def _leaky_manifest(folder: Path, tiny_shared: Path, labels: tuple[str, ...] = ("spoof", "spoof")) -> Path:
    """An extra manifest of one real clip copied once per corpus "A", "B", ...:
    system "Leaky" (its spoof rows), repository "me/leaky"."""
    real = next(
        Path(p)
        for p in (tiny_shared / "data" / "tts_demos" / "manifest.tsv").read_text().split()
        if p.startswith("/")
    )
    rows = []
    for n, label in enumerate(labels):
        (folder / "aud").mkdir(parents=True, exist_ok=True)
        shutil.copy(real, folder / "aud" / f"{n}{real.suffix}")
        system, kind = ("Leaky", "tts") if label == "spoof" else ("GT", "gt")
        corpus = "AB"[n % 2]
        rows.append(
            (f"aud/{n}{real.suffix}", label, system, kind, corpus, "me/leaky", "mine", "WAV", "16000")
        )
    return _write_manifest(folder / "manifest.tsv", rows)


def test_a_leaking_split_is_refused_before_the_first_clip(
    tiny_shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Holding out a corpus sends its clips of system Leaky to test, while
    Leaky's clips from another corpus go to train: the leak was found only
    after every clip was built, and its protocols were left in --out."""
    from spoofwatch.errors import DatasetError

    manifest = _leaky_manifest(tmp_path / "mine", tiny_shared)
    recipe = _recipe(
        tmp_path, tiny_shared, top={"extra_manifests": [str(manifest)]}, splits={"test_corpora": ["A"]}
    )
    out = tmp_path / "corpus"
    assert _build(recipe, out) == DatasetError.exit_code
    err = capsys.readouterr().err
    assert "corpus split leaks test systems ['Leaky'] into train (its clips from 'B')" in err
    assert "name the system in [splits] test_systems" in err
    assert _nothing_built(out) and not (out / "protocols").exists() and not (out / "corpus.json").exists()
    # Held out as the message says, it builds.
    fixed = _recipe(
        tmp_path / "fixed",
        tiny_shared,
        top={"extra_manifests": [str(manifest)]},
        splits={"test_corpora": ["A"], "test_systems": ["Leaky"]},
    )
    assert _build(fixed, out) == 0
    assert "Leaky" in (out / "protocols" / "test.txt").read_text()
    assert "Leaky" not in (out / "protocols" / "train.txt").read_text()


def test_a_dev_split_without_both_classes_is_refused_before_the_first_clip(
    tiny_shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training measures the dev EER after every epoch: `spoofwatch train`
    refused a one-class dev split only once the corpus was built."""
    from spoofwatch.errors import ConfigError

    manifest = _leaky_manifest(tmp_path / "mine", tiny_shared, labels=("bonafide", "bonafide"))
    recipe = _recipe(
        tmp_path, tiny_shared, top={"extra_manifests": [str(manifest)]}, splits={"dev_repos": ["me/leaky"]}
    )
    out = tmp_path / "corpus"
    assert _build(recipe, out) == ConfigError.exit_code
    assert "the dev split of this corpus would hold only bonafide clips" in capsys.readouterr().err
    assert _nothing_built(out)


def test_one_build_at_a_time_into_an_out(
    tiny_shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two builds into one --out mixed their clips (with other seeds: a corpus
    of both), and one crashed on the other's temporary sidecar. The second is
    refused, naming the first; a holder that is killed leaves nothing held;
    its partial files are removed by the next build."""
    import subprocess
    import sys

    from spoofwatch.errors import InputError
    from spoofwatch.paths import OUTPUT_LOCK_NAME

    recipe = _recipe(tmp_path, tiny_shared)
    out = tmp_path / "corpus"
    # Another build, stopped mid-way while it holds the folder (the lock is all it needs to hold).
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from spoofwatch.paths import lock_output; "
            f"lock_output(Path(sys.argv[1]) / {OUTPUT_LOCK_NAME!r}, 'x'); print('held', flush=True); sys.stdin.read()",
            str(out),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            assert _build(recipe, out) == InputError.exit_code
            assert f"--out {out} is in use by another run (pid {holder.pid};" in capsys.readouterr().err
            assert not (out / "build.json").exists()
            (out / "flac").mkdir()
            stale = out / "flac" / "OC_000000000000_c0.json.4242.partial"  # a dead run's
            stale.write_text("{")
        finally:
            holder.kill()  # as a crash would: the kernel drops its lock
    assert _build(recipe, out) == 0
    assert not stale.exists() and not list((out / "flac").glob("*.partial"))


def test_a_resumed_build_rebuilds_a_clip_deleted_or_emptied_since(
    tiny_shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resume trusted each clip's .json sidecar: a deleted clip was never
    built again, and stayed in the protocols."""
    out = tmp_path / "corpus"
    recipe = _recipe(tmp_path, tiny_shared)
    assert _build(recipe, out) == 0
    utts = [line.split()[1] for line in (out / "protocols" / "train.txt").read_text().splitlines()]
    deleted, emptied = (out / "flac" / f"{u}.flac" for u in utts[:2])
    built = {p: p.read_bytes() for p in (deleted, emptied)}
    deleted.unlink()
    emptied.write_bytes(b"")
    assert _build(recipe, out) == 0
    assert {p: p.read_bytes() for p in (deleted, emptied)} == built  # the same clips (seeded by their keys)
    assert capsys.readouterr().err.count("missing or empty, though its sidecar marks it built") == 2
