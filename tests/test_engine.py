"""The live engine on real audio with the real ONNX model and silero VAD."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from helpers import BONAFIDE_UTT, ONSET_S, la_clip

from spoofwatch.audio import read_audio
from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.cli import main
from spoofwatch.errors import InputError
from spoofwatch.stream.driver import StreamDriver
from spoofwatch.stream.engine import Engine, build_engine, push_many

SPOOF_ONSET_S = ONSET_S


@pytest.fixture(scope="module")
def concat_wav(spoof_stream: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The genuine-then-spoof test stream as a WAV file."""
    path = tmp_path_factory.mktemp("audio") / "bona_then_spoof.wav"
    soundfile.write(path, spoof_stream, 16000, subtype="FLOAT")
    return path


def engine_for(vad: Any) -> Engine:
    return build_engine(load_calibration(model="aasist-l").live, vad)


def run_chunked(audio: np.ndarray, chunks: list[int], scorer: Any, vad: Any) -> list[dict[str, Any]]:
    driver = StreamDriver(engine_for(vad))
    events = []
    pos = 0
    for size in chunks:
        events += driver.feed(audio[pos : pos + size], scorer)
        pos += size
    assert pos >= audio.size
    return [e.to_json() for e in [*events, *driver.close(scorer)]]


def test_stream_cli_alerts_only_after_spoof_onset(
    sw_home: Path, concat_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stream", "--json", "--device", "cpu", str(concat_wav)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    starts = [e for e in events if e["type"] == "alert_start"]
    assert starts, "the spoofed half must raise an alert"
    assert all(e["t"] > SPOOF_ONSET_S for e in starts)
    assert starts[0]["t"] < SPOOF_ONSET_S + 6.0
    scores = [e for e in events if e["type"] == "score"]
    assert all(e["speech"] for e in scores)
    assert all(e["smoothed"] > starts[0]["threshold"] for e in scores if e["t_end"] <= SPOOF_ONSET_S)
    assert events[-1]["type"] == "summary" and events[-1]["alerts"] == len(starts)
    assert events[-1]["duration_s"] == pytest.approx(16.0)


@pytest.mark.parametrize("kind", ["silence", "tone", "quiet_noise"])
def test_silence_and_tones_never_alert(kind: str, scorer: Any, vad: Any) -> None:
    t = np.arange(12 * 16000) / 16000
    audio = {
        "silence": np.zeros_like(t),
        "tone": 0.5 * np.sin(2 * np.pi * 1000 * t),
        "quiet_noise": 1e-4 * np.random.default_rng(0).standard_normal(t.size),
    }[kind].astype(np.float32)
    events = run_chunked(audio, [320] * (audio.size // 320), scorer, vad)
    assert not [e for e in events if e["type"] == "alert_start"]
    assert all(not e["speech"] and e["score"] is None for e in events if e["type"] == "score")
    assert events[-1]["scored_windows"] == 0


def test_chunk_size_does_not_change_events(concat_wav: Path, scorer: Any, vad: Any) -> None:
    audio = read_audio(concat_wav)
    reference = run_chunked(audio, [audio.size], scorer, vad)
    assert len([e for e in reference if e["type"] == "score"]) == 24
    rng = np.random.default_rng(7)
    random_sizes = list(rng.integers(1, 5000, size=audio.size // 2000))
    random_sizes.append(audio.size)
    for sizes in (
        [160] * (audio.size // 160 + 1),
        [320] * (audio.size // 320 + 1),
        [4096] * (audio.size // 4096 + 1),
        random_sizes,
    ):
        assert run_chunked(audio, sizes, scorer, vad) == reference


def test_single_sample_chunks(concat_wav: Path, scorer: Any, vad: Any) -> None:
    audio = read_audio(concat_wav)[: 6 * 16000]  # 96,000 one-sample pushes
    assert run_chunked(audio, [1] * audio.size, scorer, vad) == run_chunked(audio, [audio.size], scorer, vad)


def test_short_stream_gets_the_official_score(la_dir: Path, scorer: Any, vad: Any) -> None:
    audio = read_audio(la_clip(la_dir, BONAFIDE_UTT))  # 2.9 s: shorter than one window
    events = run_chunked(audio, [320] * (audio.size // 320 + 1), scorer, vad)
    (score,) = [e for e in events if e["type"] == "score"]
    assert score["speech"] and score["score"] == pytest.approx(6.8474245, abs=1e-3)
    assert score["t_end"] == pytest.approx(audio.size / 16000)


def test_engine_rejects_bad_chunks_and_keeps_state(vad: Any) -> None:
    engine = engine_for(vad)
    engine.push(np.zeros(1000, dtype=np.float32))
    for bad in (
        np.zeros(10, dtype=np.float64),
        np.zeros((10, 2), dtype=np.float32),
        np.array([np.nan], dtype=np.float32),
    ):
        with pytest.raises(InputError):
            engine.push(bad)
    assert engine.windower.total_samples == 1000
    engine.reset()
    assert engine.windower.total_samples == 0


def test_stream_cli_bad_file(sw_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVE")
    assert main(["stream", str(bad)]) == 3
    assert "cannot decode audio" in capsys.readouterr().err


def test_stream_cli_ctrl_c_flushes_and_closes_the_alert(
    sw_home: Path,
    spoof_stream: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C mid-file: what was heard is flushed and scored, the open alert ends
    with reason "shutdown", one summary follows, and the exit status is 130."""
    import spoofwatch.stream.sources.file as file_source

    heard = spoof_stream[: 13 * 16000 + 123]  # mid-alert, not on a chunk or hop boundary

    def interrupted(path: object, realtime: bool = False) -> Any:
        def chunks() -> Any:
            yield from file_source.iter_chunks(heard)
            raise KeyboardInterrupt

        return chunks()

    monkeypatch.setattr(file_source, "file_chunks", interrupted)
    assert main(["stream", "--json", "--device", "cpu", "unused.wav"]) == 130
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["type"] for e in events].count("alert_start") == 1
    end, summary = events[-2:]
    assert end["type"] == "alert_end" and end["reason"] == "shutdown"
    assert summary["type"] == "summary" and summary["duration_s"] == pytest.approx(heard.size / 16000)
    assert [e["type"] for e in events].count("summary") == 1


def test_stream_cli_bad_samples_mid_file_end_the_alert_and_summarise(
    sw_home: Path, spoof_stream: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NaN 15 s into a file, while an alert is open: the alert ends with
    reason "error", the one summary follows, then the error (exit 3)."""
    audio = spoof_stream[: 15 * 16000].copy()
    audio[-100] = np.nan
    path = tmp_path / "nan_mid.wav"
    soundfile.write(path, audio, 16000, subtype="FLOAT")
    assert main(["stream", "--json", "--device", "cpu", str(path)]) == 3
    out = capsys.readouterr()
    events = [json.loads(line) for line in out.out.splitlines()]
    types = [e["type"] for e in events]
    assert types.count("alert_start") == 1 and types[-2:] == ["alert_end", "summary"]
    assert events[-2]["reason"] == "error" and "NaN" in out.err
    summary = events[-1]
    assert summary["windows"] == types.count("score") + summary["dropped_windows"]


def test_an_alert_ends_three_seconds_after_the_speech_does(
    spoof_stream: np.ndarray, scorer: Any, vad: Any
) -> None:
    """Spoofed speech with an open alert, then 5 s of silence: the alert ends
    for silence about ``silence_reset_s`` (3 s) after the last speech, at the
    first window judged silent, not 3 s after that window (~6 s)."""
    stop_s = 16.0
    audio = np.concatenate([spoof_stream, np.zeros(5 * 16000, np.float32)])
    driver = StreamDriver(engine_for(vad))
    events = [
        e.to_json() for c in range(0, audio.size, 4000) for e in driver.feed(audio[c : c + 4000], scorer)
    ]
    events += [e.to_json() for e in driver.close(scorer)]
    ends = [e for e in events if e["type"] == "alert_end"]
    assert [e["type"] for e in events].count("alert_start") == 1 and len(ends) == 1
    assert ends[0]["reason"] == "silence" and stop_s + 3.0 <= ends[0]["t"] < stop_s + 4.6
    gated = [e for e in events if e["type"] == "score" and e["score"] is None]
    assert gated and all(e["speech_end_s"] is None or e["speech_end_s"] <= stop_s + 0.1 for e in gated)


def test_stream_cli_checks_the_plot_path_before_the_work(
    concat_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad, message in (
        (tmp_path / "timeline.txt", "expected a file name ending in one of"),
        (tmp_path, "is a folder"),
    ):
        assert (
            main(["stream", "--device", "cpu", "--plot", str(bad), str(concat_wav)]) == InputError.exit_code
        )
        out = capsys.readouterr()
        assert message in out.err and out.out == ""  # nothing was streamed


def test_stream_cli_stops_quietly_when_its_reader_goes_away(concat_wav: Path, tmp_path: Path) -> None:
    """``spoofwatch stream ... | head -1``: the reader closes the pipe; the
    command ends with 141 (as if killed by SIGPIPE), without a traceback."""
    import os
    import subprocess
    import sys

    from helpers import REPO_ROOT

    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader is gone before the first event
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "spoofwatch", "stream", "--json", "--device", "cpu", str(concat_wav)],
        stdout=write_fd,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        timeout=600,
    )
    os.close(write_fd)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


class CountingVad:
    """The real silero VAD, counting the frames of each call."""

    def __init__(self, vad: Any) -> None:
        self._vad = vad
        self.batch_sizes: list[int] = []

    def step_batch(self, frames: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batch_sizes.append(frames.shape[0])
        return self._vad.step_batch(frames, states)  # type: ignore[no-any-return]


def window_facts(pending: list[Any]) -> list[tuple[Any, ...]]:
    return [(p.window.start_sample, p.window.end_sample, p.gate) for p in pending]


@pytest.mark.parametrize("hop_s", [None, 0.032])
def test_push_many_batches_the_vad_and_changes_nothing(
    spoof_stream: np.ndarray, shared: Path, vad: Any, hop_s: float | None
) -> None:
    """Streams pushed together give exactly the windows and gate decisions
    each gives alone, whatever the chunk sizes (and hops shorter than a chunk)."""
    live = load_calibration(model="aasist-l").live
    speech = sorted((shared / "data" / "speech" / "bonafide" / "librispeech_test-other").glob("*.flac"))
    audios = [spoof_stream, read_audio(speech[0]), spoof_stream[::-1].copy(), np.zeros(40_000, np.float32)]
    sizes = [320, 1600, 4000, 777]  # 20 ms, 100 ms, 250 ms frames and an odd size
    alone = []
    for audio, size in zip(audios, sizes, strict=True):
        engine = build_engine(live, vad, hop_s)
        alone.append(
            window_facts(
                [p for pos in range(0, audio.size, size) for p in engine.push(audio[pos : pos + size])]
            )
        )
    counting = CountingVad(vad)
    engines = [build_engine(live, counting, hop_s) for _ in audios]  # type: ignore[arg-type]
    together: list[list[Any]] = [[] for _ in audios]
    for tick in range(max(a.size // s + 1 for a, s in zip(audios, sizes, strict=True))):
        chunks = [a[tick * s : (tick + 1) * s] for a, s in zip(audios, sizes, strict=True)]
        for i, pending in enumerate(push_many(engines, chunks)):
            together[i] += pending
    assert [window_facts(t) for t in together] == alone
    assert sum(len(a) for a in alone) > 20 and any(g.speech for a in alone for *_, g in a)
    # Every frame ran once, in fewer calls than frames (each round batches the streams with a frame due).
    assert sum(counting.batch_sizes) == sum(a.size // 512 for a in audios)
    assert max(counting.batch_sizes) == len(audios) and len(counting.batch_sizes) < sum(counting.batch_sizes)


def test_push_many_refuses_a_bad_chunk_before_touching_any_engine(vad: Any) -> None:
    live = load_calibration(model="aasist-l").live
    engines = [build_engine(live, vad), build_engine(live, vad)]
    with pytest.raises(InputError, match="finite"):
        push_many(engines, [np.zeros(1000, np.float32), np.array([np.nan], np.float32)])
    assert [e.windower.total_samples for e in engines] == [0, 0]


def test_a_batched_vad_row_equals_its_single_call(spoof_stream: np.ndarray, vad: Any) -> None:
    """What push_many's exactness rests on: silero's result for a row does not
    depend on the batch around it (real speech frames, real states)."""
    frames = np.stack([spoof_stream[i * 9000 : i * 9000 + 576] for i in range(24)]).astype(np.float32)
    states = np.random.default_rng(3).standard_normal((2, 24, 128)).astype(np.float32) * 0.3
    probs, new_states = vad.step_batch(frames, states)
    for i in range(24):
        prob, state = vad.step_batch(frames[i : i + 1], np.ascontiguousarray(states[:, i : i + 1]))
        assert prob[0] == probs[i] and np.array_equal(state, new_states[:, i : i + 1])
    assert 0.0 < probs.min() < probs.max() < 1.0


def test_frame_levels_in_one_pass_equal_each_frame_alone(spoof_stream: np.ndarray) -> None:
    """The gate's energy floor reads each VAD frame's level from one numpy call
    per round: every row must be the single-frame figure bit for bit, whatever
    the batch (real speech, a silent frame, a frame near the floor)."""
    from spoofwatch.stream.gate import rms_dbfs, rows_rms_dbfs

    frames = np.stack([spoof_stream[i * 7000 : i * 7000 + 576] for i in range(20)]).astype(np.float32)
    frames[3] = 0.0
    frames[5] *= np.float32(1e-3)
    rows = frames[:, 64:]  # the frames without their context, as the gate passes them
    levels = rows_rms_dbfs(rows)
    for i in range(20):
        assert levels[i] == rms_dbfs(rows[i]) == rows_rms_dbfs(rows[i : i + 1])[0]
    assert levels[3] == -120.0 and levels.max() > -40.0 and levels[5] < levels.max() - 50


def test_stream_cli_sigterm_ends_as_ctrl_c_and_a_second_signal_cannot_cut_the_summary(
    sw_home: Path,
    spoof_stream: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM (`timeout`, a supervisor) mid-alert: the alert ends ("shutdown")
    and the summary follows, as for Ctrl-C (it used to kill the process with
    neither). A Ctrl-C while those closing events are written is ignored."""
    import os
    import signal

    import spoofwatch.commands.stream_cmds as stream_cmds
    import spoofwatch.stream.sources.file as file_source

    heard = spoof_stream[: 13 * 16000 + 123]

    def terminated(path: object, realtime: bool = False) -> Any:
        def chunks() -> Any:
            yield from file_source.iter_chunks(heard)
            os.kill(os.getpid(), signal.SIGTERM)  # handled before the next statement runs
            yield np.zeros(0, np.float32)

        return chunks()

    emit = stream_cmds._emit

    def emit_then_interrupt(events: list[Any], as_json: bool) -> None:
        for event in events:
            emit([event], as_json)
            if event.type == "alert_end":  # between the alert's end and the summary
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(file_source, "file_chunks", terminated)
    monkeypatch.setattr(stream_cmds, "_emit", emit_then_interrupt)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["stream", "--json", "--device", "cpu", "unused.wav"]) == 130
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    types = [e["type"] for e in events]
    assert types.count("alert_start") == 1 and types[-2:] == ["alert_end", "summary"]
    assert events[-2]["reason"] == "shutdown"
    assert events[-1]["duration_s"] == pytest.approx(heard.size / 16000)


def test_sigterm_while_stream_starts_is_an_interrupt_not_a_silent_kill(
    sw_home: Path, concat_wav: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM while the model loaded killed `stream` with 143 and no word;
    README says SIGTERM ends it as Ctrl-C does (130, "interrupted")."""
    import os
    import signal

    import spoofwatch.commands.stream_cmds as stream_cmds

    def load_terminated(*args: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # handled before the next statement runs
        raise AssertionError("the signal did not interrupt the start-up")

    monkeypatch.setattr(stream_cmds, "_load", load_terminated)
    assert main(["stream", "--json", "--device", "cpu", str(concat_wav)]) == 130
    said = capsys.readouterr()
    assert said.out == "" and said.err.strip().endswith("interrupted")
