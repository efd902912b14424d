"""The live-monitor loop: ring buffer -> resampler -> engine, on one consumer thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

from spoofwatch.audio import StreamResampler

from .events import Event
from .runner import InlineRunner
from .sources.mic import MicrophoneSource

#: How long the consumer waits for audio before polling the ring again.
POLL_S = 0.05


def run_monitor(
    source: MicrophoneSource,
    runner: InlineRunner,
    on_events: Callable[[list[Event]], None],
    stop: threading.Event,
) -> list[Event]:
    """Consume audio until ``stop`` is set; returns the closing events.

    The capture callback only writes the ring; this loop resamples, gates
    and scores. If scoring falls behind, audio waits in the ring and the
    runner drops stale windows (``drop_stale``), so detection stays live.
    """
    resampler = StreamResampler(source.rate_hz)
    source.start()
    try:
        while not stop.is_set():
            chunk = source.ring.read()
            if chunk.size == 0:
                stop.wait(POLL_S)
                continue
            on_events(runner.feed(resampler(chunk)))
    finally:
        source.stop()
    events = runner.feed(resampler(source.ring.read(), last=True))
    return [*events, *runner.close()]
