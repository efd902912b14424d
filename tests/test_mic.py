"""The microphone adapter, driven by an injected stream object whose callback
runs on its own thread with real audio (this machine has no sound card)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spoofwatch.audio import resample
from spoofwatch.cli import main
from spoofwatch.errors import DeviceError
from spoofwatch.stream.driver import StreamDriver
from spoofwatch.stream.events import Event
from spoofwatch.stream.monitor import monitor
from spoofwatch.stream.sources.mic import MicrophoneSource, parse_device

NATIVE_HZ = 48_000
BLOCK = 480  # 10 ms at 48 kHz


class _Status:
    def __init__(self, overflow: bool) -> None:
        self.input_overflow = overflow

    def __bool__(self) -> bool:
        return self.input_overflow


class FakeInputStream:
    """Stands in for sounddevice.InputStream: calls back from its own thread.

    It delivers ``block`` frames per callback in lockstep with the consumer
    (the next block only after the consumer has processed the previous one,
    signalled through ``consumed``), so what the monitor sees per read does
    not depend on the machine's speed.
    """

    def __init__(self, audio: np.ndarray, block: int, consumed: threading.Semaphore, **kwargs: Any) -> None:
        assert kwargs["channels"] == 1 and kwargs["dtype"] == "float32"
        self.rate = kwargs["samplerate"]
        self.callback = kwargs["callback"]
        self.audio = audio
        self.block = block
        self.consumed = consumed
        self.finished = threading.Event()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        for i, pos in enumerate(range(0, self.audio.size - self.block + 1, self.block)):
            if self._halt.is_set():
                break
            block = self.audio[pos : pos + self.block].reshape(-1, 1)
            self.callback(block, self.block, None, _Status(overflow=i == 3))
            while not self.consumed.acquire(timeout=0.5):
                if self._halt.is_set():
                    return
        self.finished.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join()

    def close(self) -> None:
        pass


def _run_monitor(
    audio48: np.ndarray, block: int, make_engine: Callable[[], Any], scorer: Any
) -> tuple[MicrophoneSource, list[dict[str, Any]]]:
    consumed = threading.Semaphore(0)
    opened = threading.Event()
    streams: list[FakeInputStream] = []

    def factory(**kwargs: Any) -> FakeInputStream:
        streams.append(FakeInputStream(audio48, block, consumed, **kwargs))
        opened.set()
        return streams[-1]

    def on_events(events: list[Event]) -> None:
        seen.extend(events)
        consumed.release()  # called once per chunk processed: the fake may deliver the next block

    source = MicrophoneSource(NATIVE_HZ, device=None, stream_factory=factory)
    driver = StreamDriver(make_engine(), NATIVE_HZ, drop_stale=True)
    seen: list[Event] = []
    stop = threading.Event()
    consumer = threading.Thread(
        target=lambda: monitor(source, driver, scorer, on_events, stop, status_every_s=5.0)
    )
    consumer.start()
    assert opened.wait(timeout=60)
    assert streams[0].finished.wait(timeout=600)
    stop.set()
    consumer.join(timeout=600)
    assert not consumer.is_alive()
    return source, [e.to_json() for e in seen]  # the closing events included


@pytest.fixture()
def audio48(spoof_stream: np.ndarray) -> np.ndarray:
    return resample(spoof_stream, 16000, NATIVE_HZ)


def test_monitor_with_injected_stream(
    sw_home: Path, audio48: np.ndarray, scorer: Any, make_engine: Callable[[], Any]
) -> None:
    source, events = _run_monitor(audio48, BLOCK, make_engine, scorer)
    assert source.input_overflows == 1
    assert source.ring.overruns == 0
    starts = [e for e in events if e["type"] == "alert_start"]
    assert starts and all(e["t"] > 8.0 for e in starts)
    statuses = [e for e in events if e["type"] == "status"]
    assert len(statuses) == 4  # at 5, 10 and 15 s of audio, and when stopping
    assert statuses[-1]["input_overflows"] == 1 and statuses[-1]["overruns"] == 0
    assert statuses[-1]["info"] == {"device": None, "rate_hz": NATIVE_HZ}
    summary = events[-2]
    assert summary["type"] == "summary"
    assert summary["duration_s"] == pytest.approx(16.0, abs=0.02)
    # 10 ms per read never holds two windows: none is stale, none is dropped.
    assert summary["windows"] == 24 and summary["dropped_windows"] == 0


def test_monitor_drops_stale_windows_when_audio_arrives_in_bursts(
    sw_home: Path, audio48: np.ndarray, scorer: Any, make_engine: Callable[[], Any]
) -> None:
    """A consumer that fell behind reads 2 s at once (four hops): it scores
    only the freshest window of each read and counts the others as dropped."""
    _, events = _run_monitor(audio48, 2 * NATIVE_HZ, make_engine, scorer)
    scores = [e for e in events if e["type"] == "score"]
    summary = events[-2]
    assert summary["type"] == "summary" and summary["windows"] == 24
    assert summary["dropped_windows"] >= 12  # at least 3 of each 4 windows of a full read
    assert len(scores) == summary["windows"] - summary["dropped_windows"]
    assert events[-1]["type"] == "status" and events[-1]["dropped_windows"] == summary["dropped_windows"]


def test_monitor_failing_mid_alert_ends_the_alert_and_summarises(
    sw_home: Path, audio48: np.ndarray, scorer: Any, make_engine: Callable[[], Any]
) -> None:
    """Bad samples from the device 15 s in, while an alert is open: the error
    is raised, and the sinks still get the alert's end (reason "error") and
    the one summary."""
    from spoofwatch.errors import AudioError

    audio = audio48[: 15 * NATIVE_HZ].copy()
    audio[-BLOCK // 2] = np.nan
    consumed = threading.Semaphore(0)
    seen: list[Event] = []

    def on_events(events: list[Event]) -> None:
        seen.extend(events)
        consumed.release()

    source = MicrophoneSource(
        NATIVE_HZ, device=None, stream_factory=lambda **kw: FakeInputStream(audio, BLOCK, consumed, **kw)
    )
    driver = StreamDriver(make_engine(), NATIVE_HZ, drop_stale=True)
    with pytest.raises(AudioError, match=r"microphone: .*NaN"):
        monitor(source, driver, scorer, on_events, threading.Event())
    events = [e.to_json() for e in seen]
    types = [e["type"] for e in events]
    assert types.count("alert_start") == 1 and types[-2:] == ["alert_end", "summary"]
    assert events[-2]["reason"] == "error"
    assert events[-1]["windows"] == types.count("score") + events[-1]["dropped_windows"]


def test_missing_device_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """No input device (this machine, CI): the default device is missing. Where
    one exists (a PulseAudio server running), a device name that matches none."""
    from spoofwatch.stream.sources.mic import list_input_devices

    try:
        devices = list_input_devices()
    except DeviceError:
        devices = []
    code = main(["monitor"] if not devices else ["monitor", "--device", "no such device anywhere"])
    err = capsys.readouterr().err
    assert code == DeviceError.exit_code
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "PortAudio" in err or "no audio input device" in err or "bad input device" in err


def test_bad_device_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "--device", "97"]) == DeviceError.exit_code
    err = capsys.readouterr().err
    assert "PortAudio" in err or "bad input device 97" in err


def test_list_devices_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """What PortAudio sees decides the expected output: each input device with
    its id, a line saying there are none, or (PortAudio failing) a one-line error."""
    from spoofwatch.stream.sources.mic import list_input_devices

    try:
        devices: list[dict[str, Any]] | None = list_input_devices()
    except DeviceError:
        devices = None
    code = main(["monitor", "--list-devices"])
    captured = capsys.readouterr()
    if devices is None:
        assert code == DeviceError.exit_code and captured.out == ""
        assert "cannot list audio devices" in captured.err and len(captured.err.strip().splitlines()) == 1
    elif not devices:
        assert code == 0 and captured.out == "no input devices found\n"
    else:
        assert code == 0 and len(captured.out.splitlines()) == len(devices)
        for d, line in zip(devices, captured.out.splitlines(), strict=True):
            assert line.startswith(f"{d['id']:3d}  {d['name']}  ("), line


def test_failing_stream_open_is_a_device_error() -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("Invalid sample rate")

    with pytest.raises(DeviceError, match="cannot open input device"):
        MicrophoneSource(44_100, device=3, stream_factory=broken).start()


def test_parse_device() -> None:
    assert parse_device(None) is None
    assert parse_device("3") == 3
    assert parse_device("USB Mic") == "USB Mic"


class DyingInputStream(FakeInputStream):
    """A device that goes away after its audio: PortAudio then ends the stream
    on its own and calls the stream's ``finished_callback`` (as it does when
    the audio server is killed), and no more audio comes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.finished_callback = kwargs["finished_callback"]

    def _run(self) -> None:
        super()._run()
        if not self._halt.is_set():
            self.finished_callback()


def test_a_device_that_dies_mid_alert_ends_the_capture_with_an_error(
    sw_home: Path, audio48: np.ndarray, scorer: Any, make_engine: Callable[[], Any]
) -> None:
    """It used to wait for audio forever, the alert open. Now: what was heard
    is scored, the alert ends (reason "error"), the summary follows, and a
    DeviceError says what happened."""
    consumed = threading.Semaphore(0)
    seen: list[Event] = []

    def on_events(events: list[Event]) -> None:
        seen.extend(events)
        consumed.release()

    audio = audio48[: 15 * NATIVE_HZ]
    source = MicrophoneSource(
        NATIVE_HZ,
        device="usb mic",
        stream_factory=lambda **kw: DyingInputStream(audio, BLOCK, consumed, **kw),
    )
    driver = StreamDriver(make_engine(), NATIVE_HZ, drop_stale=True)
    with pytest.raises(DeviceError, match=r"input device 'usb mic' stopped delivering audio"):
        monitor(source, driver, scorer, on_events, threading.Event())
    events = [e.to_json() for e in seen]
    types = [e["type"] for e in events]
    assert types.count("alert_start") == 1 and types[-2:] == ["alert_end", "summary"]
    assert events[-2]["reason"] == "error"
    assert events[-1]["duration_s"] == pytest.approx(15.0, abs=0.02)  # everything heard was scored
