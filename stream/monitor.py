"""The live-monitor loop: ring buffer -> driver (resampler, engine), on one consumer thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import sample_problem
from spoofwatch.errors import AudioError, DeviceError

from .driver import Clock, StreamDriver
from .engine import Scorer, WindowScorer
from .events import ERROR, Event
from .sources.mic import MicrophoneSource

#: How long the consumer waits for audio before polling the ring again.
POLL_S = 0.05
#: Seconds of audio between two ``status`` events.
STATUS_EVERY_S = 30.0
#: How long (s, on the monitor's clock) the device may deliver no samples at
#: all before the capture ends as a device that stopped. A quiet microphone
#: still delivers (zeros) every few milliseconds; a frozen audio server
#: delivers nothing, yet PortAudio never ends its stream. Generous, so that a
#: busy machine or a slow device start does not trip it.
NO_AUDIO_TIMEOUT_S = 5.0


def monitor(
    source: MicrophoneSource,
    driver: StreamDriver,
    scorer: Scorer | WindowScorer,
    on_events: Callable[[list[Event]], None],
    stop: threading.Event,
    status_every_s: float = STATUS_EVERY_S,
    *,
    no_audio_timeout_s: float = NO_AUDIO_TIMEOUT_S,
    clock: Clock = time.monotonic,
) -> None:
    """Consume audio until ``stop`` is set or Ctrl-C (both a normal end), or a
    failure (bad samples, the model, a device that stopped or delivered no
    samples for ``no_audio_timeout_s`` on ``clock``), which is raised.

    The capture callback only writes the ring; this loop resamples, gates
    and scores through ``driver`` (built at the source's rate with
    ``drop_stale``). If scoring falls behind, audio waits in the ring and the
    driver drops stale windows, so detection stays live. However it ends,
    ``on_events`` gets the closing events: an open alert's ``alert_end``
    (reason ``error`` for a failure) and the one ``summary``, before the
    device is stopped (which a frozen audio server can block: the source
    abandons it after a time limit).
    """
    source.start()
    try:
        try:
            capture(source, driver, scorer, on_events, stop, status_every_s, no_audio_timeout_s, clock)
            closing = close_monitor(source, driver, scorer)
        except Exception:
            on_events(driver.abort(ERROR))
            raise
        on_events(closing)
    finally:
        # Only after the closing events: a device whose audio server froze
        # cannot be stopped, and the source gives up on it after a time limit.
        source.stop()


def capture(
    source: MicrophoneSource,
    driver: StreamDriver,
    scorer: Scorer | WindowScorer,
    on_events: Callable[[list[Event]], None],
    stop: threading.Event,
    status_every_s: float,
    no_audio_timeout_s: float,
    clock: Clock,
) -> None:
    """The loop of :func:`monitor`, until ``stop`` or Ctrl-C (which sets ``stop``)."""
    next_status_s = status_every_s
    heard_s = clock()  # when samples last arrived; the capture's start counts as one
    try:
        while not stop.is_set():
            chunk = source.ring.read()
            if chunk.size == 0:
                check_delivering(source, clock() - heard_s, no_audio_timeout_s)
                stop.wait(POLL_S)
                continue
            heard_s = clock()
            events = driver.feed(checked(chunk), scorer)
            if driver.engine.duration_s >= next_status_s:
                events.append(capture_status(source, driver))
                next_status_s += status_every_s
            on_events(events)
    except KeyboardInterrupt:  # a normal end: flush and summarise
        stop.set()


def check_delivering(source: MicrophoneSource, silent_s: float, no_audio_timeout_s: float) -> None:
    """A :class:`DeviceError` for a device that stopped delivering audio:
    PortAudio ended its stream (unplugged, its audio server killed), or no
    samples came for ``no_audio_timeout_s`` (its audio server frozen: then
    PortAudio neither calls back nor ends the stream)."""
    if source.ended:
        why = "unplugged, or its audio server went away"
    elif silent_s >= no_audio_timeout_s:
        why = f"no samples for {silent_s:.1f} s: its audio server hung?"
    else:
        return
    name = "the default input device" if source.device is None else f"input device {source.device!r}"
    raise DeviceError(f"{name} stopped delivering audio ({why})")


def close_monitor(
    source: MicrophoneSource, driver: StreamDriver, scorer: Scorer | WindowScorer
) -> list[Event]:
    """End of a capture (stop or Ctrl-C): what is left in the ring, the
    resampler's tail, the closing events and a final ``status``."""
    if driver.finished:
        return []
    events = driver.feed(checked(source.ring.read()), scorer)
    return [*events, *driver.close(scorer), capture_status(source, driver)]


def checked(chunk: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The input rule every source applies (:func:`~spoofwatch.audio.sample_problem`)."""
    if (problem := sample_problem(chunk)) is not None:
        raise AudioError(f"microphone: {problem}")
    return chunk


def capture_status(source: MicrophoneSource, driver: StreamDriver) -> Event:
    """Capture health: ring overruns, PortAudio overflows, dropped windows."""
    return driver.engine.status(
        source.ring.overruns,
        source.ring.lost_samples,
        source.input_overflows,
        device=source.device,
        rate_hz=source.rate_hz,
    )
