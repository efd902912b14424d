"""Audio sanitising (one rule for every input), file sample-rate limits, the
streamed file decode, and the single event -> JSON place that refuses NaN."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from helpers import BONAFIDE_UTT, la_clip

from spoofwatch.audio import (
    MAX_ABS_SAMPLE,
    MP3_FORMAT,
    AudioFile,
    read_audio,
    sample_problem,
)
from spoofwatch.cli import main
from spoofwatch.constants import WINDOW_SAMPLES
from spoofwatch.errors import AudioError, InputError, ModelError, ProtocolError
from spoofwatch.model.detector import Detector
from spoofwatch.stream.codecs import decode
from spoofwatch.stream.events import ScoreEvent, event_json
from spoofwatch.stream.monitor import checked
from spoofwatch.stream.sinks import JsonlSink
from spoofwatch.stream.sources.file import file_chunks, iter_chunks
from spoofwatch.stream.windower import stream_windows, window_starts


def test_sample_rule() -> None:
    assert sample_problem(np.zeros(0, np.float32)) is None
    assert sample_problem(np.array([0.5, -1.0, MAX_ABS_SAMPLE], np.float32)) is None
    assert "NaN or Inf" in str(sample_problem(np.array([0.0, np.inf], np.float32)))
    assert "NaN or Inf" in str(sample_problem(np.array([[np.nan, 0.0]], np.float32)))
    assert "magnitude of 3e+38" in str(sample_problem(np.array([0.0, 3e38], np.float32)))


def test_extreme_f32_frames_are_1007_before_mixing() -> None:
    huge = np.full(320, 3e38, "<f4")
    with pytest.raises(ProtocolError) as info:
        decode(huge.tobytes(), "f32le", 1)
    assert info.value.close_code == 1007 and "magnitude" in str(info.value)
    # Two finite channels that would sum to Inf in the mix.
    stereo = np.stack([huge, huge], axis=1).reshape(-1)
    with pytest.raises(ProtocolError) as info:
        decode(stereo.tobytes(), "f32le", 2)
    assert info.value.close_code == 1007
    burst = np.zeros(1600, "<f4")
    burst[100:110] = 1e38
    with pytest.raises(ProtocolError, match="magnitude of 1e\\+38"):
        decode(burst.tobytes(), "f32le", 1)
    with pytest.raises(ProtocolError, match="NaN or Inf"):
        decode(np.array([0.1, np.nan], "<f4").tobytes(), "f32le", 1)


def test_microphone_chunks_pass_the_same_rule() -> None:
    ok = np.full(480, 0.5, np.float32)
    assert checked(ok) is ok
    with pytest.raises(AudioError, match="microphone: expected audio samples within"):
        checked(np.full(480, 1e38, np.float32))


def test_float_wav_scaled_by_1e30_fails_score_with_exit_code(
    sw_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "scaled.wav"
    t = np.arange(3 * 16000) / 16000
    soundfile.write(path, (1e30 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="magnitude of 1e\\+30"):
        read_audio(path)
    code = main(["score", "--json", "--device", "cpu", str(path)])
    captured = capsys.readouterr()
    assert code != 0
    assert "scaled.wav: expected audio samples within" in captured.err and "Traceback" not in captured.err
    for line in captured.out.splitlines():
        row = json.loads(line)  # valid JSON, no NaN
        assert "score" not in row and "magnitude" in row["error"]
    # The live path (`stream`) refuses it too, with the audio exit code.
    assert main(["stream", "--device", "cpu", str(path)]) == AudioError.exit_code
    assert "magnitude" in capsys.readouterr().err


def _wav_header(rate_hz: int, data_bytes: int) -> bytes:
    """A PCM-16 mono WAV header declaring ``rate_hz`` (soundfile refuses to write 1 Hz)."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate_hz, rate_hz * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def test_tiny_wav_declaring_1_hz_is_refused(
    sw_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "one_hz.wav"
    path.write_bytes(_wav_header(1, 200) + bytes(200))
    assert path.stat().st_size == 244
    with pytest.raises(AudioError, match=r"expected a sample rate in \[4000, 192000\] Hz, got 1 Hz"):
        AudioFile(path)
    with pytest.raises(AudioError, match="got 1 Hz"):
        read_audio(path)
    assert main(["score", "--device", "cpu", str(path)]) != 0
    assert "got 1 Hz" in capsys.readouterr().err


@pytest.mark.parametrize(("rate", "ok"), [(3999, False), (4000, True), (192_000, True), (192_001, False)])
def test_file_rate_limits(tmp_path: Path, rate: int, ok: bool) -> None:
    path = tmp_path / "r.wav"
    path.write_bytes(_wav_header(rate, rate // 5 * 2) + bytes(rate // 5 * 2))
    if ok:
        assert AudioFile(path).rate_hz == rate
    else:
        with pytest.raises(AudioError, match=f"got {rate} Hz"):
            AudioFile(path)


def test_streamed_decode_matches_whole_decode(tmp_path: Path, la_dir: Path) -> None:
    clip = read_audio(la_clip(la_dir, BONAFIDE_UTT))
    path = tmp_path / "clip.wav"
    soundfile.write(path, clip, 16000, subtype="FLOAT")
    blocks = list(AudioFile(path).chunks(block_frames=4096))
    assert len(blocks) > 10 and max(b.size for b in blocks) <= 4096
    np.testing.assert_array_equal(np.concatenate(blocks), clip)
    # Resampled in blocks: same length and the same signal as the whole-file resampler.
    path44 = tmp_path / "clip44.wav"
    from spoofwatch.audio import resample

    soundfile.write(path44, resample(clip, 16000, 44100), 44100, subtype="FLOAT")
    streamed = np.concatenate(list(AudioFile(path44).chunks(block_frames=5000)))
    whole = read_audio(path44)
    assert abs(streamed.size - whole.size) <= 1
    n = min(streamed.size, whole.size)
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-3
    # The file source streams too, in 20 ms chunks that add up to the file.
    chunks = list(file_chunks(path))
    assert {c.size for c in chunks[:-1]} == {320}
    np.testing.assert_array_equal(np.concatenate(chunks), clip)


def test_decode_error_mid_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "late_bad.wav"
    audio = np.zeros(50_000, np.float32)
    audio[45_000] = np.inf
    soundfile.write(path, audio, 16000, subtype="FLOAT")
    reader = AudioFile(path)  # the header is fine
    with pytest.raises(AudioError, match=r"late_bad\.wav: expected finite"):
        list(reader.chunks(block_frames=8192))


@pytest.mark.parametrize(
    ("n", "hop"),
    [(n, hop) for n in (1, 30_000, 64_600, 64_601, 200_000) for hop in (7_919, 16_000, 70_000)]
    + [(64_601, 1), (66_000, 1)],
)
def test_stream_windows_equal_whole_signal_windows(n: int, hop: int) -> None:
    rng = np.random.default_rng(n + hop)
    audio = rng.standard_normal(n).astype(np.float32)
    cuts = np.sort(rng.integers(0, n, 6))
    got = list(stream_windows(np.split(audio, cuts), hop))
    assert [s for s, _, _ in got] == window_starts(n, hop)
    from spoofwatch.audio import official_window

    for start, end, window in got:
        np.testing.assert_array_equal(window, official_window(audio[start:]))
        assert end == min(start + 64_600, n)
    with pytest.raises(InputError):
        list(stream_windows([], hop))


def test_score_file_streams_and_equals_score_audio(sw_home: Path, la_dir: Path, tmp_path: Path) -> None:
    clip = read_audio(la_clip(la_dir, BONAFIDE_UTT))
    long = np.tile(clip, 4)[: 20 * 16000]
    path = tmp_path / "long.wav"
    soundfile.write(path, long, 16000, subtype="FLOAT")
    detector = Detector.load("aasist-l", device="cpu")
    streamed = detector.score_file(path, hop_s=2.0)
    whole = detector.score_audio(long, hop_s=2.0, name=str(path))
    assert [(w.start_s, w.end_s) for w in streamed.windows] == [(w.start_s, w.end_s) for w in whole.windows]
    np.testing.assert_allclose(
        [w.score for w in streamed.windows], [w.score for w in whole.windows], atol=1e-4
    )


class _NanScorer:
    window_samples = WINDOW_SAMPLES

    def scores(self, windows: np.ndarray) -> np.ndarray:
        return np.full(windows.shape[0], np.nan, dtype=np.float32)


def test_nan_never_reaches_json(tmp_path: Path) -> None:
    event = ScoreEvent(0.0, 4.0375, float("nan"), None, True, 1.0).to_json()
    with pytest.raises(ModelError, match="'score' event with a non-finite number"):
        event_json(event)
    with pytest.raises(ModelError):
        event_json({"type": "summary", "duration_s": float("inf")})
    sink = JsonlSink(tmp_path / "events.jsonl")
    with pytest.raises(ModelError):
        sink.write(event)
    sink.write({"type": "summary", "duration_s": 1.0})
    sink.close()
    assert [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()] == [
        {"type": "summary", "duration_s": 1.0}
    ]
    # A model that returns NaN for a file is an error, not a NaN score.
    from spoofwatch.calibration.calfile import load_calibration

    detector = Detector("aasist-l", _NanScorer(), load_calibration(model="aasist-l"))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="non-finite score"):
        detector.score_audio(np.zeros(16000, np.float32))


def test_iter_chunks_paces_lazily_decoded_blocks() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    blocks: list[Any] = [np.zeros(500, np.float32), np.zeros(1000, np.float32), np.zeros(100, np.float32)]
    chunks = list(iter_chunks(blocks, 320, realtime=True, clock=lambda: now[0], sleep=sleep))
    assert [c.size for c in chunks] == [320, 320, 320, 320, 320]
    # A chunk is due once all of its audio would have been captured (due_in_s).
    assert now[0] == pytest.approx(5 * 320 / 16000)


def test_audio_files_one_rule_for_every_folder_scan(tmp_path: Path) -> None:
    """Folder scans (calibrate bonafide, export --calibration-audio, data manifest) share one
    suffix list: they disagreed (an .ogg or .aiff was audio to one command and not to another)."""
    from spoofwatch.audio import AUDIO_SUFFIXES, audio_files

    (tmp_path / "sub").mkdir()
    (tmp_path / "folder.wav").mkdir()  # a folder named like audio is not a file
    names = ["a.WAV", "b.flac", "c.ogg", "d.opus", "e.mp3", "f.aiff", "sub/g.Aif", "notes.txt", "h.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in audio_files(tmp_path)]
    assert found == sorted(["a.WAV", "b.flac", "c.ogg", "d.opus", "e.mp3", "f.aiff", "sub/g.Aif"])
    assert "sub/g.Aif" not in [p.relative_to(tmp_path).as_posix() for p in audio_files(tmp_path, False)]
    assert {Path(n).suffix.lower() for n in found} == set(AUDIO_SUFFIXES)


def test_truncated_mp3_streams_only_what_it_holds(tmp_path: Path) -> None:
    """soundfile.blocks() sliced its reused buffer by the header's frame count, so a
    truncated MP3 streamed its first block again and then uninitialised memory."""
    noise = (0.1 * np.random.default_rng(1).standard_normal(9 * 16000)).astype(np.float32)
    whole = tmp_path / "whole.mp3"
    soundfile.write(whole, noise, 16000, format="MP3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    assert soundfile.info(str(cut)).frames == 9 * 16000  # the header still promises 9 s
    decoded = read_audio(cut)
    streamed = np.concatenate(list(AudioFile(cut).chunks(block_frames=4096)))
    assert decoded.size < 5 * 16000
    assert streamed.size == decoded.size
    np.testing.assert_allclose(streamed, decoded, atol=1e-6)


def test_a_flac_cut_short_on_disk_is_read_up_to_the_cut_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A FLAC cut short stops its decoder with "lost sync": the whole file was
    refused, where a WAV or MP3 cut the same way is read up to the cut. And an
    intact MP3 is not "truncated?" (its length is an estimate): libsndfile
    names the format "MP3", and the check compared with "MPEG"."""
    noise = (0.1 * np.random.default_rng(2).standard_normal(8 * 16000)).astype(np.float32)
    whole = tmp_path / "whole.flac"
    soundfile.write(whole, noise, 16000, subtype="PCM_24")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    for read in (read_audio, lambda p: np.concatenate(list(AudioFile(p).chunks(block_frames=4096)))):
        caplog.clear()
        audio = read(cut)
        assert 3 * 16000 < audio.size < noise.size
        np.testing.assert_allclose(audio, noise[: audio.size], atol=1e-6)  # what decoded is the audio
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warned) == 1 and warned[0].startswith(f"{cut}: decoding stopped after ")
        assert "(damaged or cut short?)" in warned[0]
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(whole.read_bytes()[:4] + bytes(1000))  # nothing decodes: still an error
    with pytest.raises(AudioError, match="cannot decode audio"):
        read_audio(garbage)
    mp3 = tmp_path / "whole.mp3"
    soundfile.write(mp3, noise, 16000, format="MP3")
    assert AudioFile(mp3).format == MP3_FORMAT


def test_empty_files_say_what_is_empty(tmp_path: Path) -> None:
    """A 0-byte file was "Format not recognised"; a WAV whose header says 0
    samples while audio follows (a writer that never finished its header)
    was "audio is empty", though ffmpeg reads it whole."""
    import struct

    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    with pytest.raises(AudioError, match=r"zero\.wav: the file is empty \(0 bytes\)"):
        read_audio(zero)
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    unfinished = tmp_path / "unfinished.wav"
    unfinished.write_bytes(
        b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + fmt + b"data" + bytes(4) + bytes(32000)
    )
    with pytest.raises(AudioError, match="its header announces no samples, yet 32000 bytes follow it"):
        read_audio(unfinished)
    for subtype in ("PCM_16", "FLOAT"):  # really empty, header chunks and all
        empty = tmp_path / f"empty-{subtype}.wav"
        soundfile.write(empty, np.zeros(0, np.float32), 16000, subtype=subtype)
        with pytest.raises(AudioError, match=r"audio is empty \(0 samples\)"):
            read_audio(empty)
    # The API: a path as bytes (a name that is not UTF-8 too), a clear error for anything else.
    named = Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xff.wav"))
    soundfile.write(os.fsencode(named), np.full(1600, 0.1, np.float32), 16000)
    assert read_audio(os.fsencode(named)).size == 1600  # type: ignore[arg-type]
    with pytest.raises(InputError, match="expected an audio file's path \\(str, bytes or Path\\), got int"):
        read_audio(3)  # type: ignore[arg-type]
    with pytest.raises(
        AudioError, match=r"target_hz: expected a sample rate in \[4000, 192000\] Hz, got 0 Hz"
    ):
        read_audio(named, target_hz=0)
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling.wav"
    dangling.symlink_to(tmp_path / "moved-away.wav")
    for link in (loop, dangling):
        with pytest.raises(AudioError, match="a symbolic link to nothing"):
            read_audio(link)


def test_a_wav_cut_short_on_disk_is_read_with_a_warning(
    tmp_path: Path, la_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """libsndfile takes a WAV's length from the file's size, so a WAV cut short
    (still being written, or damaged) was scored as a shorter clip, silently."""
    audio = read_audio(la_clip(la_dir, BONAFIDE_UTT))
    whole = tmp_path / "whole.wav"
    soundfile.write(whole, audio, 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: 44 + 2 * 16000])  # the header and 1 s of samples
    for read in (read_audio, lambda p: np.concatenate(list(AudioFile(p).chunks()))):
        caplog.clear()
        assert read(cut).size == 16000
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warned == [
            f"{cut}: ended after 1.00 s of the {audio.size / 16000:.2f} s its header announces (truncated?)"
        ]
    caplog.clear()
    assert read_audio(whole).size == audio.size and not caplog.records  # a whole file: no warning
    # A WAV written to a pipe has 0xFFFFFFFF for its sizes ("unknown"): whole, no warning.
    piped = tmp_path / "piped.wav"
    data = bytearray(whole.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"  # RIFF size
    data[40:44] = b"\xff\xff\xff\xff"  # data size (a 44-byte header: soundfile's PCM_16)
    assert data[36:40] == b"data"
    piped.write_bytes(bytes(data))
    assert read_audio(piped).size == audio.size and not caplog.records


def test_audio_whose_name_is_not_utf8_is_read(tmp_path: Path, la_dir: Path) -> None:
    """soundfile encodes a str name strictly, so a name with bytes that are not
    UTF-8 (as Python's surrogate escapes hold them) was 'cannot decode audio'."""
    from spoofwatch.model.train import check_decodable

    name = tmp_path / os.fsdecode(b"caf\xe9-latin1.flac")
    name.write_bytes(la_clip(la_dir, BONAFIDE_UTT).read_bytes())
    expected = read_audio(la_clip(la_dir, BONAFIDE_UTT))
    np.testing.assert_array_equal(read_audio(name), expected)
    np.testing.assert_array_equal(np.concatenate(list(AudioFile(name).chunks())), expected)
    check_decodable([name])  # the trainer's header check


def test_a_few_samples_at_a_high_rate_are_an_audio_error_naming_the_file(
    tmp_path: Path, la_dir: Path, sw_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`score` stopped the whole batch with an unnamed 'expected a non-empty waveform'."""
    from spoofwatch.cli import main

    tiny = tmp_path / "one44k.wav"
    soundfile.write(tiny, np.array([0.1], np.float32), 44100, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"one44k\.wav: 1 sample at 44100 Hz are none at 16000 Hz"):
        list(AudioFile(tiny).chunks())
    good = la_clip(la_dir, BONAFIDE_UTT)
    assert main(["score", "--device", "cpu", "--json", str(tiny), str(good)]) == 1
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0]["file"] == str(tiny) and "none at 16000 Hz" in out[0]["error"]
    assert out[1]["file"] == str(good) and "score" in out[1]


def test_detector_api_refuses_what_files_and_streams_refuse(sw_home: Path) -> None:
    """Large finite samples came back as a NaN score (verdict 'spoof'); score_audio took
    int16, float64 and 2-D arrays the way score refuses; a hop past one window left audio unscored."""
    from spoofwatch.errors import InputError

    detector = Detector.load("aasist-l", device="cpu")
    ok = (0.1 * np.random.default_rng(0).standard_normal(64_600)).astype(np.float32)
    with pytest.raises(InputError, match="within ±100"):
        detector.score(np.full(64_600, 1e19, np.float32))
    with pytest.raises(InputError, match="within ±100"):
        detector.scorer.scores(np.full((2, 64_600), 2e4, np.float32))
    for bad, expected in (
        ((ok * 32767).astype(np.int16), "expected dtype float32, got int16"),
        (ok.astype(np.float64), "expected dtype float32, got float64"),
        (np.stack([ok, ok], 1), r"expected a 1-D numpy float32 waveform at 16 kHz, got shape \(64600, 2\)"),
        (ok.tolist(), "got list"),
    ):
        with pytest.raises(InputError, match=expected):
            detector.score_audio(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"got shape \(2, 64600\)"):
        detector.score(np.stack([ok, ok]))
    with pytest.raises(InputError, match=r"got \(64599,\)"):
        detector.scorer.scores(ok[:-1])
    with pytest.raises(InputError, match=r"hop_s in \[0.032, 4.0375\] s .* got 10"):
        detector.score_audio(ok, hop_s=10)
    assert detector.score_audio(ok, hop_s=4.0375).windows[0].score == pytest.approx(
        detector.score(ok), abs=1e-5
    )


def test_unreadable_weights_are_a_weights_error(
    tmp_path: Path, la_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spoofwatch.cli import main
    from spoofwatch.errors import WeightsError

    good = str(la_clip(la_dir, BONAFIDE_UTT))
    for weights, expected in ((tmp_path / "missing.pth", "no such weights file"), (tmp_path, "is a folder")):
        assert main(["score", "--device", "cpu", "--weights", str(weights), good]) == WeightsError.exit_code
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
        with pytest.raises(WeightsError, match=expected):
            Detector.load("aasist-l", device="cpu", weights=str(weights))  # type: ignore[arg-type]
        for precision in ("fp32", "int8"):
            args = ["export", "--weights", str(weights), "--precision", precision]
            assert main(args) == WeightsError.exit_code
            err = capsys.readouterr().err
            assert expected in err and "Traceback" not in err
    with pytest.raises(InputError, match=r"expected threads >= 1 \(an integer\), got 2\.5"):
        Detector.load("aasist-l", device="cpu", threads=2.5)  # type: ignore[arg-type]


def test_damaged_cached_export_says_how_to_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spoofwatch.errors import ModelError
    from spoofwatch.model.runtime import make_session
    from spoofwatch.paths import onnx_dir

    monkeypatch.setenv("SPOOFWATCH_HOME", str(tmp_path))
    damaged = onnx_dir() / "aasist-l-0123456789abcdef-v1.onnx"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"\x08\x07truncated")
    with pytest.raises(ModelError, match="delete it and the next run rebuilds it"):
        make_session(damaged, "cpu", 1)
    elsewhere = tmp_path / "mine.onnx"
    elsewhere.write_bytes(b"\x08\x07truncated")
    with pytest.raises(ModelError) as exc:
        make_session(elsewhere, "cpu", 1)
    assert "delete it" not in str(exc.value)


def test_threads_loading_a_model_first_time_export_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.export is not thread-safe: two threads of one process loading a model on an
    empty cache both exported at once and failed. A fake exporter stands in for it, and
    holds the first export until the second thread has come: waiting for the export lock
    (a spy on it says so), or, if nothing stops it, exporting too. No timer decides."""
    import threading

    from spoofwatch.model import export

    monkeypatch.setenv("SPOOFWATCH_HOME", str(tmp_path))
    second_came = threading.Event()
    came_in_time: list[bool] = []
    calls: list[int] = []
    active = [0]

    class SpyLock:
        """The export lock; a thread that finds it taken says so before it waits."""

        def __init__(self) -> None:
            self._lock = threading.RLock()

        def __enter__(self) -> None:
            if not self._lock.acquire(blocking=False):
                second_came.set()
                self._lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self._lock.release()

    def held_export(
        model: str, out: Path, weights: Path | None = None, config: object = None, cached: bool = False
    ) -> float:
        active[0] += 1
        calls.append(active[0])
        if active[0] > 1:
            second_came.set()
        else:
            came_in_time.append(second_came.wait(60))  # a hang guard: the second thread comes at once
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"onnx")
        if cached:  # as the real export installs a cached graph: with its digest
            from spoofwatch.model.cached import record

            record(out)
        active[0] -= 1
        return 0.0

    monkeypatch.setattr(export, "_EXPORT_LOCK", SpyLock())
    monkeypatch.setattr(export, "export_onnx", held_export)
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(export.ensure_onnx("aasist-l"))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert came_in_time == [True]  # the first export was held until the second thread came
    assert calls == [1], calls  # one export, never two at once
    assert len(paths) == 2 and paths[0] == paths[1] and paths[0].read_bytes() == b"onnx"


def test_a_pipe_is_named_as_not_a_file_and_a_cut_short_file_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIFO exists (it was "no such audio file"); a WAV cut short while it
    is read (its header, read at open, said more) is read as far as it goes,
    with a warning saying how far that was."""
    import os

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError, match=r"pipe.wav: not a regular file; expected an audio file"):
        AudioFile(fifo)
    with pytest.raises(AudioError, match=r"missing.wav: no such audio file"):
        AudioFile(tmp_path / "missing.wav")

    path = tmp_path / "cut.wav"
    soundfile.write(path, np.full(16000 * 4, 0.1, np.float32), 16000, subtype="PCM_16")
    whole = path.read_bytes()
    opened = AudioFile(path)  # the header says 4 s
    path.write_bytes(whole[: len(whole) // 4])
    with caplog.at_level("WARNING", logger="spoofwatch.audio"):
        samples = np.concatenate(list(opened.chunks()))
    assert samples.size < 16000 * 4
    assert "cut.wav: ended after 1.00 s of the 4.00 s its header announces" in caplog.text
    caplog.clear()
    path.write_bytes(whole)
    with caplog.at_level("WARNING", logger="spoofwatch.audio"):
        assert np.concatenate(list(AudioFile(path).chunks())).size == 16000 * 4
    assert "header announces" not in caplog.text
