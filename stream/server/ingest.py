"""The ingest tick: a worker's live streams are cut together, a few times a second.

A live client sends small frames (Twilio: 20 ms). Cutting each one as it
arrives (resampling, VAD, windows) cost a worker's event loop ~210 µs of
Python per message, and one silero call per 32 ms frame per stream: at
hundreds of streams per worker that, not the model, bounded a GPU box
(docs/scaling.md). So a stream's ingest task hands what it received to the
:class:`IngestTicker` and waits; once per ``tick_s`` the ticker cuts every
waiting stream in one pass, with the VAD batched across streams
(:func:`~spoofwatch.stream.engine.push_many`). Each stream's audio is then
cut a tick's worth at a time (a few messages), and its windows come up to
two ticks later (a message that arrives just after its stream's request
waits for that tick and the next; the default 0.1 s against a 0.5 s hop and
a 1 s score-delay budget). What a stream is cut into does not depend on the tick: windows and
gate decisions are the same as cutting each message alone.

A bad chunk (NaN, a resampler error) fails only its own stream's request;
a failure past that (the batched VAD and windowing) fails the tick's
requests, never the ticker. A ticker that stops (the worker ends) cuts what still waits.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import numpy as np
import numpy.typing as npt

from spoofwatch.errors import ConfigError

from ..driver import StreamDriver
from ..engine import PendingWindow, push_many

log = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]

#: Seconds between cuts of a worker's live streams (``ServerConfig.ingest_tick_s``).
DEFAULT_TICK_S = 0.1
#: Longest tick accepted: windows wait up to two ticks before they are scored.
MAX_TICK_S = 1.0
#: Ticks' worth of audio a stream may hand one tick (``IngestTicker.max_chunk_s``).
TICK_CHUNKS = 4


def check_tick_s(tick_s: float) -> None:
    if not 0 < tick_s <= MAX_TICK_S:  # also refuses NaN
        raise ConfigError(f"ingest_tick_s: expected a value in (0, {MAX_TICK_S:g}] seconds, got {tick_s}")


@dataclass(eq=False)
class _Request:
    driver: StreamDriver
    audio: npt.NDArray[np.float32]
    done: anyio.Event = field(default_factory=anyio.Event)
    pending: list[PendingWindow] = field(default_factory=list)
    error: BaseException | None = None
    #: The tick cut it (``pending`` holds its windows).
    cut: bool = False
    #: The waiting task was cancelled (its stream ended): cut nothing.
    abandoned: bool = False


class IngestTicker:
    """``await cut(driver, audio)`` from each stream; ``serve()`` in the worker's task group."""

    def __init__(self, tick_s: float = DEFAULT_TICK_S, sleep: Sleep = anyio.sleep) -> None:
        check_tick_s(tick_s)
        self.tick_s = tick_s
        self._sleep = sleep  # tests wait for a tick they release themselves
        self._waiting: list[_Request] = []
        self._work: anyio.Event | None = None  # made by serve(): events need the event loop
        #: Ticks that cut something, and the requests they cut (for the tests and benchmarks).
        self.ticks = 0
        self.requests = 0

    @property
    def max_chunk_s(self) -> float:
        """Audio (s) a live stream may hand one tick: about a tick's worth, two
        after a frame that just missed its tick; four allow for a late tick.
        More is an upload's or a stream far behind, cut in a thread instead."""
        return TICK_CHUNKS * self.tick_s

    @property
    def running(self) -> bool:
        return self._work is not None

    async def cut(self, driver: StreamDriver, audio: npt.NDArray[np.float32]) -> list[PendingWindow]:
        """``driver.cut(audio)`` at the next tick (``audio`` is not a stream's last)."""
        if self._work is None:
            raise RuntimeError("IngestTicker.cut: the ticker is not serving")
        request = _Request(driver, audio)
        self._waiting.append(request)
        self._work.set()
        try:
            await request.done.wait()
        except BaseException:
            request.abandoned = True  # not cut, or cut in the same pass: its windows are dropped
            for pending in request.pending:
                driver.engine.drop(pending)
            raise
        if request.error is not None:
            raise request.error
        return request.pending

    async def serve(self) -> None:
        """Cut what is waiting once per tick, until cancelled."""
        self._work = work = anyio.Event()
        try:
            while True:
                await work.wait()  # an idle worker does not tick
                await self._sleep(self.tick_s)
                batch, self._waiting = self._waiting, []
                self._work = work = anyio.Event()
                self.cut_now(batch)
        finally:
            # Stopped (the worker is ending): cut what still waits, so that no
            # stream waits for a tick that will not come.
            self._work = None
            batch, self._waiting = self._waiting, []
            self.cut_now(batch)

    def cut_now(self, batch: list[_Request]) -> None:
        """Cut every request of ``batch`` in one pass and wake their streams.
        Never raises: a failure is the failing request's (or, past the
        per-stream part, every request's of this tick)."""
        try:
            live = [r for r in batch if not r.abandoned]
            chunks: list[npt.NDArray[np.float32]] = []
            ready: list[_Request] = []
            for request in live:
                try:
                    chunks.append(request.driver.resample(request.audio))
                    ready.append(request)
                except Exception as exc:  # this stream's audio (or resampler) only
                    request.error = exc
            try:
                results = push_many([r.driver.engine for r in ready], chunks)
            except Exception as exc:  # e.g. the VAD failed: every stream of the tick hears of it
                log.exception("ingest tick failed for %d stream(s)", len(ready))
                for request in ready:
                    request.error = exc
            else:
                for request, pending in zip(ready, results, strict=True):
                    request.pending, request.cut = pending, True
            if live:
                self.ticks += 1
                self.requests += len(live)
        finally:
            for request in batch:
                if not (request.cut or request.abandoned or request.error is not None):
                    request.error = RuntimeError("the ingest tick failed")
                request.done.set()
