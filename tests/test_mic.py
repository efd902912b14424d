"""The microphone adapter, driven by an injected stream object whose callback
runs on its own thread with real audio (this machine has no sound card)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
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


class ManualClock:
    """The monitor's clock, moved only by the test. It counts its readings, so
    that a test can wait until the monitor has looked at a given time."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.readings = 0
        self.retired = False  # its reader ended: no more readings will come
        self._read = threading.Condition()

    def __call__(self) -> float:
        with self._read:
            self.readings += 1
            self._read.notify_all()
            return self.now_s

    def advance(self, by_s: float, then_readings: int = 0) -> None:
        """Move the clock on, then wait until it has been read ``then_readings``
        more times (or its reader ended)."""
        with self._read:
            self.now_s += by_s
            target = self.readings + then_readings
            assert self._read.wait_for(lambda: self.readings >= target or self.retired, timeout=600)

    def retire(self) -> None:
        with self._read:
            self.retired = True
            self._read.notify_all()


class FrozenInputStream(FakeInputStream):
    """An audio server frozen after the audio (``kill -STOP`` of PulseAudio):
    no more callbacks, yet PortAudio never ends the stream, and ``stop()``
    blocks until the server resumes (``resume``: only the test's teardown)."""

    def __init__(self, *args: Any, journal: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journal = journal
        self.resume = threading.Event()
        self.closed = False

    def stop(self) -> None:
        self.journal.append({"type": "device stop"})
        self._halt.set()
        self.resume.wait()
        self._thread.join()

    def close(self) -> None:
        self.closed = True


class FrozenCapture:
    """A monitor on a FrozenInputStream, run on its own thread, with the
    monitor's clock and a journal of the events and the device's stop."""

    def __init__(self, audio: np.ndarray, engine: Any, scorer: Any) -> None:
        self.consumed = threading.Semaphore(0)
        self.opened = threading.Event()
        self.streams: list[FrozenInputStream] = []
        self.journal: list[dict[str, Any]] = []
        self.clock = ManualClock()
        self.stop = threading.Event()
        self.failure: BaseException | None = None

        def factory(**kwargs: Any) -> FrozenInputStream:
            self.streams.append(
                FrozenInputStream(audio, BLOCK, self.consumed, journal=self.journal, **kwargs)
            )
            self.opened.set()
            return self.streams[-1]

        # Any time limit will do: the frozen stop never returns by itself.
        self.source = MicrophoneSource(NATIVE_HZ, "usb mic", stream_factory=factory, stop_timeout_s=0.01)
        driver = StreamDriver(engine, NATIVE_HZ, drop_stale=True)
        self.thread = threading.Thread(target=self._run, args=(driver, scorer))

    def _on_events(self, events: list[Event]) -> None:
        self.journal.extend(e.to_json() for e in events)
        self.consumed.release()  # the fake may deliver its next block

    def _run(self, driver: StreamDriver, scorer: Any) -> None:
        try:
            monitor(
                self.source,
                driver,
                scorer,
                self._on_events,
                self.stop,
                no_audio_timeout_s=5.0,
                clock=self.clock,
            )
        except BaseException as exc:
            self.failure = exc
        finally:
            self.clock.retire()

    def start_and_wait_frozen(self) -> FrozenInputStream:
        """Every block delivered and processed: the audio server is frozen from now on."""
        self.thread.start()
        assert self.opened.wait(timeout=60)
        assert self.streams[0].finished.wait(timeout=600)
        return self.streams[0]

    def types(self) -> list[str]:
        return [e["type"] for e in self.journal]


@pytest.fixture()
def frozen_captures() -> Iterator[list[FrozenCapture]]:
    """The test's frozen captures: their audio servers resume at teardown, so
    that no abandoned ``stop()`` thread outlives its test."""
    captures: list[FrozenCapture] = []
    yield captures
    for capture in captures:
        for stream in capture.streams:
            stream.resume.set()


def test_an_audio_server_that_freezes_ends_the_capture_with_a_device_error(
    sw_home: Path,
    audio48: np.ndarray,
    scorer: Any,
    make_engine: Callable[[], Any],
    frozen_captures: list[FrozenCapture],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It used to poll the empty ring forever (PortAudio never ends such a
    stream), then hang in the device's stop. Now no samples for
    ``no_audio_timeout_s`` on the monitor's clock is a device that stopped:
    the alert ends (reason "error"), the summary follows, and the stop that
    never returns is abandoned with a warning."""
    frozen_captures.append(run := FrozenCapture(audio48[: 15 * NATIVE_HZ], make_engine(), scorer))
    stream = run.start_and_wait_frozen()
    # Under the limit the monitor waits on: it read the clock at 4 s, and again.
    run.clock.advance(4.0, then_readings=2)
    assert run.thread.is_alive() and run.failure is None and "summary" not in run.types()
    run.clock.advance(1.0)
    run.thread.join(timeout=600)
    assert not run.thread.is_alive()  # ended, although the device never stopped
    assert isinstance(run.failure, DeviceError)
    assert "input device 'usb mic' stopped delivering audio (no samples for 5.0 s" in str(run.failure)
    types = run.types()
    assert types.count("alert_start") == 1
    assert types[-3:] == ["alert_end", "summary", "device stop"]  # the closing events first
    assert run.journal[-3]["reason"] == "error"
    assert run.journal[-2]["duration_s"] == pytest.approx(15.0, abs=0.02)  # everything heard was scored
    assert not stream.closed  # abandoned: its stop never returned
    assert "input device 'usb mic' did not stop within 0.01 s" in caplog.text


def test_a_device_that_cannot_be_stopped_does_not_hold_up_the_end(
    sw_home: Path,
    audio48: np.ndarray,
    scorer: Any,
    make_engine: Callable[[], Any],
    frozen_captures: list[FrozenCapture],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ctrl-C or SIGTERM (``stop``) while the audio server is frozen: the
    capture ends normally, with the alert's end and the summary written
    before the device's stop, which never returns and is abandoned."""
    frozen_captures.append(run := FrozenCapture(audio48[: 15 * NATIVE_HZ], make_engine(), scorer))
    stream = run.start_and_wait_frozen()
    run.stop.set()
    run.thread.join(timeout=600)
    assert not run.thread.is_alive() and run.failure is None
    types = run.types()
    assert types.count("alert_start") == 1
    assert types[-4:] == ["alert_end", "summary", "status", "device stop"]
    assert run.journal[-4]["reason"] == "end_of_stream"
    assert run.journal[-3]["duration_s"] == pytest.approx(15.0, abs=0.02)
    assert not stream.closed
    assert "did not stop within 0.01 s (its audio server hung?); abandoning it" in caplog.text


def test_a_consumer_slower_than_the_watchdog_is_not_a_stalled_device(
    sw_home: Path, audio48: np.ndarray, scorer: Any, make_engine: Callable[[], Any]
) -> None:
    """A busy machine: each chunk takes the consumer twice the watchdog's limit
    (on its clock), while the device goes on delivering. The audio waiting in
    the ring is what counts, not the time between two reads: no error."""
    consumed = threading.Semaphore(0)
    clock = ManualClock()
    streams: list[FakeInputStream] = []
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def factory(**kwargs: Any) -> FakeInputStream:
        streams.append(FakeInputStream(audio48[: 3 * NATIVE_HZ], 10 * BLOCK, consumed, **kwargs))
        return streams[-1]

    source = MicrophoneSource(NATIVE_HZ, device=None, stream_factory=factory)

    def on_events(events: list[Event]) -> None:
        seen.extend(e.to_json() for e in events)
        if stop.is_set():  # the closing events
            return
        clock.now_s += 10.0  # the slow scoring of this chunk...
        consumed.release()  # ...while the device delivers the next block
        stream = streams[0]
        while source.ring.available == 0 and not stream.finished.is_set():
            stream.finished.wait(0.01)
        if stream.finished.is_set():  # all delivered: the user stops the capture
            stop.set()

    driver = StreamDriver(make_engine(), NATIVE_HZ, drop_stale=True)
    monitor(source, driver, scorer, on_events, stop, no_audio_timeout_s=5.0, clock=clock)
    summary = next(e for e in seen if e["type"] == "summary")
    assert summary["duration_s"] == pytest.approx(3.0, abs=0.02)
    assert clock.now_s >= 30 * 5.0  # the consumer was far slower than the limit, 30 times
