"""The live-monitor loop: ring buffer -> resampler -> engine, on one consumer thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import StreamResampler, sample_problem
from spoofwatch.errors import AudioError

from .events import Event
from .runner import InlineRunner
from .sources.mic import MicrophoneSource

#: How long the consumer waits for audio before polling the ring again.
POLL_S = 0.05
#: Seconds of audio between two ``status`` events.
STATUS_EVERY_S = 30.0


def run_monitor(
    source: MicrophoneSource,
    runner: InlineRunner,
    on_events: Callable[[list[Event]], None],
    stop: threading.Event,
    status_every_s: float = STATUS_EVERY_S,
) -> list[Event]:
    """Consume audio until ``stop`` is set; returns the closing events.

    The capture callback only writes the ring; this loop resamples, gates
    and scores. If scoring falls behind, audio waits in the ring and the
    runner drops stale windows (``drop_stale``), so detection stays live.
    """
    resampler = StreamResampler(source.rate_hz)
    next_status_s = status_every_s
    source.start()
    try:
        while not stop.is_set():
            chunk = source.ring.read()
            if chunk.size == 0:
                stop.wait(POLL_S)
                continue
            events = runner.feed(resampler(checked(chunk)))
            if runner.engine.duration_s >= next_status_s:
                events.append(capture_status(source, runner))
                next_status_s += status_every_s
            on_events(events)
    finally:
        source.stop()
    events = runner.feed(resampler(checked(source.ring.read()), last=True))
    return [*events, *runner.close(), capture_status(source, runner)]


def checked(chunk: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The input rule every source applies (:func:`~spoofwatch.audio.sample_problem`)."""
    if (problem := sample_problem(chunk)) is not None:
        raise AudioError(f"microphone: {problem}")
    return chunk


def capture_status(source: MicrophoneSource, runner: InlineRunner) -> Event:
    """Capture health: ring overruns, PortAudio overflows, dropped windows."""
    return runner.engine.status(
        source.ring.overruns,
        source.ring.lost_samples,
        source.input_overflows,
        device=source.device,
        rate_hz=source.rate_hz,
    )
