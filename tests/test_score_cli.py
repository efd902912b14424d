"""``spoofwatch score`` end to end on real LA clips, plus audio decoding."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers import BONAFIDE_UTT, SPOOF_UTTS, la_clip

from spoofwatch.audio import official_window, read_audio
from spoofwatch.cli import main
from spoofwatch.errors import AudioError
from spoofwatch.model.detector import Detector
from spoofwatch.stream.windower import window_starts


def _reference_score(reference: dict[str, np.ndarray], utt: str) -> float:
    names = [str(n) for n in reference["names"]]
    row = names.index(f"asvspoof2019_la/flac/{utt}.flac#official_pad")
    return float(reference["AASIST-L_logits"][row, 1])


def test_score_json_on_la_clips(
    sw_home: Path, la_dir: Path, reference: dict[str, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    utts = [BONAFIDE_UTT, *SPOOF_UTTS]
    assert main(["score", "--json", "--device", "cpu", *(str(la_clip(la_dir, u)) for u in utts)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["file"]).stem for r in rows] == utts
    for utt, row in zip(utts, rows, strict=True):
        assert set(row) == {"file", "score", "verdict", "threshold", "windows"}
        assert abs(row["windows"][0]["score"] - _reference_score(reference, utt)) < 1e-3
        assert row["windows"][0]["start_s"] == 0.0
    scores = {Path(r["file"]).stem: r["score"] for r in rows}
    assert all(scores[BONAFIDE_UTT] > scores[s] for s in SPOOF_UTTS)
    verdicts = {Path(r["file"]).stem: r["verdict"] for r in rows}
    assert verdicts == {BONAFIDE_UTT: "bonafide", **{s: "spoof" for s in SPOOF_UTTS}}


def test_score_table_and_failing_files(
    sw_home: Path, la_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    good = la_clip(la_dir, BONAFIDE_UTT)
    code = main(
        [
            "score",
            "--device",
            "cpu",
            str(empty),
            str(corrupt),
            str(good),
            str(text),
            str(tmp_path / "missing.wav"),
            str(tmp_path),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "LA_T_1272637" in captured.out and "bonafide" in captured.out
    assert "empty.wav: audio is empty" in captured.err
    assert "corrupt.flac: cannot decode audio" in captured.err
    assert "notes.wav: cannot decode audio" in captured.err
    assert "missing.wav: no such audio file" in captured.err
    assert f"{tmp_path}: is a folder; expected an audio file" in captured.err


def test_hostile_file_names_cannot_forge_output_or_stop_the_run(
    sw_home: Path, la_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name with a newline forged a "verdict bonafide" line in the table, an
    ESC recoloured the terminal; a name that is not UTF-8 crashed --plot's
    title (a matplotlib traceback) and a name near 255 bytes failed its
    picture name: either ended the run, the files after it never scored."""
    import os

    audio = read_audio(la_clip(la_dir, SPOOF_UTTS[0]))[:16000]
    forged = tmp_path / "evil\n  score +9.9999  verdict bonafide  (threshold +1.7640)\n.wav"
    coloured = tmp_path / "esc\x1b[31mRED\x1b[0m.wav"
    not_utf8 = Path(os.fsdecode(os.fsencode(tmp_path) + b"/bad\xff.wav"))
    long = tmp_path / ("a" * 251 + ".wav")
    last = tmp_path / "last.wav"
    for path in (forged, coloured, not_utf8, long, last):
        soundfile.write(os.fsencode(path), audio, 16000)
    plots = tmp_path / "plots"
    files = [str(p) for p in (forged, coloured, not_utf8, long, last)]
    assert main(["score", "--device", "cpu", "--plot", str(plots), *files]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mRED" in out and "bad\\udcff.wav" in out
    assert [line for line in out.splitlines() if "verdict" in line and not line.startswith("  score")] == [
        str(forged).replace("\n", "\\n")
    ]  # one result line per file: the forged one is part of its (escaped) name
    assert "evil\\n  score +9.9999  verdict bonafide  (threshold +1.7640)\\n.wav\n" in out
    assert len(list(plots.glob("*.png"))) == 5  # every file drawn, the last too
    assert any(p.name.startswith("a" * 100) and len(p.name) <= 255 for p in plots.iterdir())
    # An error naming such a file is escaped too.
    assert main(["score", "--device", "cpu", str(tmp_path / "gone\x1b[2J.wav")]) == 1
    assert "gone\\x1b[2J.wav: no such audio file" in capsys.readouterr().err


def test_long_file_windows_follow_the_hop(sw_home: Path, shared: Path) -> None:
    path = shared / "data/speech/pairs/nii_wave_replacement/real/11463_11657_000002.flac"
    detector = Detector.load("aasist-l", device="cpu")
    result = detector.score_file(path, hop_s=1.0)
    audio = read_audio(path)
    assert [w.start_s for w in result.windows[:3]] == [0.0, 1.0, 2.0]
    assert result.windows[-1].end_s == pytest.approx(audio.size / 16000)
    assert result.windows[0].score == pytest.approx(detector.score(audio), abs=1e-5)
    assert result.score == pytest.approx(np.mean([w.score for w in result.windows]))


def test_window_starts() -> None:
    assert window_starts(1000, 16000) == [0]
    assert window_starts(64600, 16000) == [0]
    assert window_starts(64600 + 16000, 16000) == [0, 16000]
    assert window_starts(64600 + 20000, 16000) == [0, 16000, 20000]


def test_official_window_repeats_short_clips() -> None:
    clip = np.arange(1, 30001, dtype=np.float32)
    window = official_window(clip)
    assert window.shape == (64600,)
    np.testing.assert_array_equal(window[:30000], clip)
    np.testing.assert_array_equal(window[30000:60000], clip)
    np.testing.assert_array_equal(window[60000:], clip[:4600])


def test_22k_file_is_resampled(tmp_path: Path) -> None:
    rate = 22050
    t = np.arange(rate * 2) / rate
    path = tmp_path / "tone22k.wav"
    soundfile.write(path, (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), rate)
    audio = read_audio(path)
    assert audio.dtype == np.float32
    assert abs(audio.size - 32000) <= 1
    spectrum = np.abs(np.fft.rfft(audio[1000:-1000]))
    peak_hz = spectrum.argmax() * 16000 / (audio.size - 2000)
    assert abs(peak_hz - 1000) < 2
    assert 0.45 < np.abs(audio[1000:-1000]).max() < 0.55


def test_real_22k_ljspeech_file(shared: Path) -> None:
    path = sorted((shared / "data/speech/bonafide/ljspeech").glob("*.wav"))[0]
    info = soundfile.info(str(path))
    assert info.samplerate == 22050
    audio = read_audio(path)
    assert abs(audio.size - round(info.frames * 16000 / 22050)) <= 1


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"), ("FLAC", "PCM_16")]
)
def test_compressed_formats_decode(tmp_path: Path, fmt: str, subtype: str) -> None:
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / f"tone.{fmt.lower()}"
    soundfile.write(path, tone, 16000, format=fmt, subtype=subtype)
    audio = read_audio(path)
    assert abs(audio.size - 16000) < 1200  # codecs may pad a frame
    spectrum = np.abs(np.fft.rfft(audio[:15000]))
    assert abs(spectrum.argmax() * 16000 / 15000 - 440) < 3


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    frames = np.stack([np.full(1600, 0.2), np.full(1600, 0.6)], axis=1).astype(np.float32)
    soundfile.write(path, frames, 16000)
    np.testing.assert_allclose(read_audio(path), 0.4, atol=1e-4)


def test_nan_audio_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    soundfile.write(path, np.array([0.0, np.nan, 0.1], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf"):
        read_audio(path)


def test_score_refuses_a_hop_that_is_not_a_finite_number_of_seconds(
    la_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = la_clip(la_dir, BONAFIDE_UTT)
    for hop in ("nan", "inf", "1e-7", "4.04"):
        assert main(["score", "--device", "cpu", "--hop-s", hop, str(good)]) == 2, hop
        err = capsys.readouterr().err
        assert "expected a finite hop_s in [0.032, 4.0375] s" in err and "Traceback" not in err


def test_the_api_refuses_a_hop_that_is_not_a_number(sw_home: Path, la_dir: Path) -> None:
    """``score_audio(a, hop_s="1")`` was a bare TypeError from ``math.isfinite``."""
    from spoofwatch.audio import read_audio
    from spoofwatch.errors import InputError
    from spoofwatch.model.detector import Detector

    detector = Detector.load(device="cpu")
    audio = read_audio(la_clip(la_dir, BONAFIDE_UTT))
    for hop in ("1", None.__class__, True, np.bool_(True)):
        with pytest.raises(InputError, match="expected hop_s as a number of seconds, got "):
            detector.score_audio(audio, hop_s=hop)  # type: ignore[arg-type]
    # NumPy's numbers are numbers ("expected a finite hop_s in [0.032, 4.0375] s ..., got 1.0").
    plain = detector.score_audio(audio, hop_s=1.0)
    for hop in (np.float32(1.0), np.int64(1), np.float64(1.0)):
        assert detector.score_audio(audio, hop_s=hop).windows == plain.windows  # type: ignore[arg-type]
    with pytest.raises(InputError, match="expected a finite hop_s"):
        detector.score_audio(audio, hop_s=np.float32("nan"))  # type: ignore[arg-type]


def test_a_full_standard_output_is_one_error_not_a_traceback(sw_home: Path, la_dir: Path) -> None:
    """``score ... > /dev/full`` was a traceback and exit 1, which also means
    "some files failed"; ``stream`` lost its closing events to a second one.
    Now one line and exit 10, as for a --jsonl file that cannot be written."""
    import os
    import subprocess
    import sys

    from helpers import REPO_ROOT

    from spoofwatch.errors import SinkError

    assert Path("/dev/full").exists(), "this test needs Linux's /dev/full"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("PYTHONUNBUFFERED", None)  # buffered, as a plain shell runs it: the failure comes at the end
    clip = ["--device", "cpu", str(la_clip(la_dir, BONAFIDE_UTT))]
    # A table written at once and never flushed before exit (`weights list`) too.
    for command in (
        ["score", "--json", *clip],
        ["score", *clip],
        ["stream", "--json", *clip],
        ["weights", "list"],
    ):
        with open("/dev/full", "w") as full:
            proc = subprocess.run(
                [sys.executable, "-m", "spoofwatch", *command],
                stdout=full,
                stderr=subprocess.PIPE,
                env=env,
                text=True,
                timeout=600,
            )
        assert proc.returncode == SinkError.exit_code, proc.stderr
        assert "error: cannot write to standard output: No space left on device" in proc.stderr
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_a_detector_pickles_as_the_way_to_load_it(sw_home: Path, la_dir: Path) -> None:
    """A process pool pickles what it hands its workers: a Detector raised
    ONNX Runtime's raw TypeError (its session cannot be pickled)."""
    import pickle

    from spoofwatch.errors import InputError

    detector = Detector.load(device="cpu", threads=1)
    again = pickle.loads(pickle.dumps(detector))
    audio = read_audio(la_clip(la_dir, BONAFIDE_UTT))
    assert again.score_audio(audio, hop_s=1.0).windows == detector.score_audio(audio, hop_s=1.0).windows
    assert again.calibration == detector.calibration and again.scorer is not detector.scorer
    # The calibration it has when pickled, not the one it was loaded with (a pool's workers use the parent's).
    detector.calibration = dataclasses.replace(detector.calibration, verdict_threshold=5.0)
    assert pickle.loads(pickle.dumps(detector)).threshold == 5.0
    built = Detector("aasist-l", detector.scorer, detector.calibration)
    with pytest.raises(InputError, match=r"cannot be pickled; load one in each process with Detector\.load"):
        pickle.dumps(built)
