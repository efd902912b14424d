"""The live-monitor loop: ring buffer -> driver (resampler, engine), on one consumer thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import sample_problem
from spoofwatch.errors import AudioError, DeviceError

from .driver import StreamDriver
from .engine import Scorer, WindowScorer
from .events import ERROR, Event
from .sources.mic import MicrophoneSource

#: How long the consumer waits for audio before polling the ring again.
POLL_S = 0.05
#: Seconds of audio between two ``status`` events.
STATUS_EVERY_S = 30.0


def monitor(
    source: MicrophoneSource,
    driver: StreamDriver,
    scorer: Scorer | WindowScorer,
    on_events: Callable[[list[Event]], None],
    stop: threading.Event,
    status_every_s: float = STATUS_EVERY_S,
) -> None:
    """Consume audio until ``stop`` is set or Ctrl-C (both a normal end), or a
    failure (bad samples, the model, a device that stopped), which is raised.

    The capture callback only writes the ring; this loop resamples, gates
    and scores through ``driver`` (built at the source's rate with
    ``drop_stale``). If scoring falls behind, audio waits in the ring and the
    driver drops stale windows, so detection stays live. However it ends,
    ``on_events`` gets the closing events: an open alert's ``alert_end``
    (reason ``error`` for a failure) and the one ``summary``.
    """
    next_status_s = status_every_s
    source.start()
    try:
        try:
            while not stop.is_set():
                chunk = source.ring.read()
                if chunk.size == 0:
                    if source.ended:  # PortAudio ended the stream: no audio will come
                        raise DeviceError(
                            f"input device {source.device!r} stopped delivering audio "
                            "(unplugged, or its audio server went away)"
                        )
                    stop.wait(POLL_S)
                    continue
                events = driver.feed(checked(chunk), scorer)
                if driver.engine.duration_s >= next_status_s:
                    events.append(capture_status(source, driver))
                    next_status_s += status_every_s
                on_events(events)
        except KeyboardInterrupt:  # a normal end: flush and summarise below
            stop.set()
        finally:
            source.stop()
        closing = close_monitor(source, driver, scorer)
    except Exception:
        on_events(driver.abort(ERROR))
        raise
    on_events(closing)


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
