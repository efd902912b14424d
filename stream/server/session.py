"""One stream behind an async boundary: audio in, events out, scoring shared.

All stream logic (resampling, the stale-window rule, end of stream) is the
:class:`~spoofwatch.stream.driver.StreamDriver`'s; this adapter only moves
audio and windows between the connection's reader, a worker thread and the
shared :class:`BatchScorer`, through bounded memory object streams.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
import numpy.typing as npt
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from spoofwatch.errors import CloseCode, ProtocolError

from ..driver import StreamDriver
from ..engine import PendingWindow
from ..events import END_OF_STREAM, Event
from .batcher import BatchScorer
from .ingest import IngestTicker

if TYPE_CHECKING:
    from .load import WindowObserver

Emit = Callable[[dict[str, Any]], Awaitable[None]]
#: Messages of audio received but not yet through the VAD before the reader waits.
INBOX_MESSAGES = 256
#: Audio (s) received but not yet through the VAD before the reader waits. A
#: message count alone let a client queue 256 messages of 1 MiB (hours of
#: audio, cut into windows at once: 7 GB in one worker); a larger message
#: goes in pieces of this length, each waiting for room.
INBOX_MAX_S = 4.0
#: Audio (s) the ingest task cuts on the event loop itself; more goes to a
#: worker thread. A thread hop cost the loop about as much CPU as cutting a
#: 20-100 ms frame (benchmarks/bench_host_cost.py), and the GIL is a worker's
#: bound; 0.25 s is ~8 VAD frames, about a millisecond of the loop.
INLINE_INGEST_MAX_S = 0.25


def window_outcome(speech: bool, score: float | None) -> str:
    """A resolved window's outcome for the metrics, as its events count it: a
    non-finite score (a model card's model can return one) is a dropped window
    (``Engine.resolve``), so it must not count as scored nor add a score delay."""
    if not speech:
        return "gated"
    return "scored" if score is not None and math.isfinite(score) else "dropped"


def _ring(doorbell: MemoryObjectSendStream[None]) -> None:
    """Wake the other task; a wake-up already pending is enough (capacity 1)."""
    with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
        doorbell.send_nowait(None)


class StreamSession:
    """The reader calls ``push``, then ``close_input``; ``serve`` (run in a task
    group) ingests and scores until every window is resolved; then ``finish``,
    or ``abort`` when the stream ended abnormally.

    Three bounded memory object streams connect the tasks:

    * ``audio`` (reader -> ingest, ``INBOX_MESSAGES`` and ``INBOX_MAX_S`` of
      audio, whichever fills first; ``inbox_room`` wakes a waiting reader): the ingest task cuts
      everything waiting in one call (resampling, VAD, windowing): on the
      event loop when it is a live frame or two (``INLINE_INGEST_MAX_S``,
      or a few ticks' worth), at the worker's next ingest tick together with
      the other streams (:class:`~.ingest.IngestTicker`); else in a worker
      thread, so that an upload's large messages do not stall the loop. A full inbox makes the reader wait, and TCP pushes
      back on the client: audio is never dropped;
    * ``ready`` (ingest -> scorer, capacity 1): windows were queued;
    * ``room`` (scorer -> ingest, capacity 1): a window left the queue.

    A live stream never waits for a stale score (the driver drops stale
    windows); a client sending faster than real time (an upload) is slowed
    down instead: the ingest task waits for ``room`` while the driver is backlogged.

    An ``observer`` (load shedding and metrics, issue 11) hears of every
    window: scored, gated or dropped, with the time its audio arrived.
    """

    def __init__(
        self,
        driver: StreamDriver,
        batcher: BatchScorer,
        emit: Emit,
        max_duration_s: float = math.inf,
        tags: dict[str, Any] | None = None,
        observer: WindowObserver | None = None,
        ingest_limiter: anyio.CapacityLimiter | None = None,
        ticker: IngestTicker | None = None,
        inbox_max_s: float = INBOX_MAX_S,
    ) -> None:
        self.driver = driver
        self.batcher = batcher
        self._cache = batcher.open_stream()  # this stream's incremental state, if any
        self.emit = emit
        self.tags = tags or {}
        self.max_duration_s = max_duration_s
        self._ingest_limiter = ingest_limiter
        self._ticker = ticker
        # Each message with the (observer clock) time it arrived.
        self._audio_send: MemoryObjectSendStream[tuple[npt.NDArray[np.float32], float]]
        self._audio_recv: MemoryObjectReceiveStream[tuple[npt.NDArray[np.float32], float]]
        self._audio_send, self._audio_recv = anyio.create_memory_object_stream[
            tuple[npt.NDArray[np.float32], float]
        ](INBOX_MESSAGES)
        # ---- load and metrics hooks (issue 11) ----
        self._observer = observer
        #: Arrival time of each window in the driver's queue, oldest first. The
        #: driver only ever drops from the front, so the two stay in step.
        self._arrivals: deque[float] = deque()
        self._ready_send, self._ready_recv = anyio.create_memory_object_stream[None](1)
        self._room_send, self._room_recv = anyio.create_memory_object_stream[None](1)
        #: Samples (at the stream's rate) in the inbox, and the ingest task's
        #: doorbell for a reader waiting for room.
        self._inbox_samples = 0
        self._inbox_max_samples = max(1, int(inbox_max_s * driver.rate_hz))
        self._inbox_room_send, self._inbox_room_recv = anyio.create_memory_object_stream[None](1)

    # ---- reader side -------------------------------------------------------

    async def push(self, audio: npt.NDArray[np.float32]) -> None:
        arrived = self._now()
        self.driver.arrived(audio.shape[0])
        if self.driver.received_s > self.max_duration_s:
            raise ProtocolError(
                f"stream exceeded the maximum duration of {self.max_duration_s:g} s",
                CloseCode.POLICY_VIOLATION,
            )
        cap = self._inbox_max_samples
        for start in range(0, max(1, audio.shape[0]), cap):
            piece = audio[start : start + cap]
            while self._inbox_samples and self._inbox_samples + piece.shape[0] > cap:
                try:
                    await self._inbox_room_recv.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    break  # the ingest task has ended: the send below says so
            self._inbox_samples += piece.shape[0]
            await self._audio_send.send((piece, arrived))

    def close_input(self) -> None:
        """No more audio: the ingest task flushes the resampler and the windower."""
        self._audio_send.close()

    # ---- worker side -------------------------------------------------------

    async def serve(self) -> None:
        """Ingest and score until input is closed and every window is resolved."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._ingest_loop)
            tg.start_soon(self._score_loop)

    async def _ingest_loop(self) -> None:
        with self._ready_send, self._room_recv, self._audio_recv, self._inbox_room_send:
            ended = False
            while not ended:
                try:
                    chunks = [await self._audio_recv.receive()]
                except anyio.EndOfStream:
                    chunks, ended = [], True
                # The oldest audio in the batch bounds its windows' arrival from below.
                arrived = chunks[0][1] if chunks else self._now()
                while not ended:
                    try:
                        chunks.append(self._audio_recv.receive_nowait())
                    except anyio.WouldBlock:
                        break
                    except anyio.EndOfStream:
                        ended = True
                self._inbox_samples -= sum(c.shape[0] for c, _ in chunks)
                _ring(self._inbox_room_send)
                while self.driver.backlogged():
                    await self._room_recv.receive()
                audio = np.concatenate([c for c, _ in chunks]) if chunks else np.zeros(0, dtype=np.float32)
                if audio.shape[0] <= self._on_loop_max_s() * self.driver.rate_hz and not ended:
                    pending = await self._cut_on_loop(audio)
                else:  # the final flush may hold a short stream's padding and resampler tail
                    pending = await anyio.to_thread.run_sync(
                        self._cut, audio, ended, limiter=self._ingest_limiter
                    )
                self._arrivals.extend([arrived] * len(pending))
                self.driver.enqueue(pending, last=ended)
                self._dropped_to(self.driver.queued)
                _ring(self._ready_send)

    def _live_ticker(self) -> IngestTicker | None:
        """The worker's ingest ticker while it serves."""
        return self._ticker if self._ticker is not None and self._ticker.running else None

    def _on_loop_max_s(self) -> float:
        """Most audio (s) cut on the event loop: a live frame or two, or what a
        live stream gathers between ingest ticks; more is an upload's (a thread's)."""
        ticker = self._live_ticker()
        return INLINE_INGEST_MAX_S if ticker is None else max(INLINE_INGEST_MAX_S, ticker.max_chunk_s)

    async def _cut_on_loop(self, audio: npt.NDArray[np.float32]) -> list[PendingWindow]:
        """A live frame or two: at the worker's next ingest tick, with the other
        streams (once the ticker serves), else at once."""
        ticker = self._live_ticker()
        if ticker is None:
            return self._cut(audio, False, on_loop=True)
        pending = await ticker.cut(self.driver, audio)
        if self._observer is not None:  # the tick's CPU is the loop thread's
            self._observer.ingested(0.0, audio.shape[0] / self.driver.rate_hz)
        return pending

    def _cut(self, audio: npt.NDArray[np.float32], ended: bool, on_loop: bool = False) -> list[PendingWindow]:
        """The driver's cut, its audio and CPU time reported for admission control
        (on the event loop, its CPU is already part of the loop thread's)."""
        t0 = None if on_loop else time.thread_time()
        pending = self.driver.cut(audio, ended)
        if self._observer is not None:
            cpu_s = 0.0 if t0 is None else time.thread_time() - t0
            self._observer.ingested(cpu_s, audio.shape[0] / self.driver.rate_hz)
        return pending

    async def _score_loop(self) -> None:
        with self._room_send:
            async with self._ready_recv:
                async for _ in self._ready_recv:
                    while (pending := self.driver.next_window()) is not None:
                        _ring(self._room_send)
                        self._dropped_to(self.driver.queued + 1)
                        arrived = self._arrivals.popleft()
                        score = (
                            await self.batcher.score(
                                pending.window.samples, self._cache, pending.window.start_sample
                            )
                            if pending.gate.speech
                            else None
                        )
                        if self._observer is not None:
                            # A sender ahead of real time (an upload) waits by design: no lag to report.
                            live = arrived if self.driver.is_live() else None
                            self._observer.window_done(window_outcome(pending.gate.speech, score), live)
                        await self._send(self.driver.resolve(pending, score))

    async def _send(self, events: list[Event]) -> None:
        tagged = [{**event.to_json(), **self.tags} for event in events]
        if self._observer is not None:
            self._observer.events(tagged)
        for event in tagged:
            await self.emit(event)

    # ---- load and metrics hooks (issue 11) ---------------------------------

    def _now(self) -> float:
        return self._observer.now() if self._observer is not None else 0.0

    def _dropped_to(self, queued: int, lag: bool = True) -> None:
        """The driver dropped windows from the front of its queue until ``queued``
        were left: report each (a dropped window waited at least this long)."""
        discarded = 0
        while len(self._arrivals) > queued:
            arrived = self._arrivals.popleft()
            discarded += 1
            if self._observer is not None:
                self._observer.window_done("dropped", arrived if lag else None)
        if discarded and self._observer is not None:
            self._observer.discarded(self.tags, discarded)

    # ---- end of stream -----------------------------------------------------

    def _close_streams(self) -> None:
        for stream in (
            self._audio_send,
            self._audio_recv,
            self._ready_send,
            self._ready_recv,
            self._room_send,
            self._room_recv,
            self._inbox_room_send,
            self._inbox_room_recv,
        ):
            stream.close()

    async def finish(self, reason: str = END_OF_STREAM) -> None:
        """After ``serve`` returned: close alerts and emit the summary."""
        self._close_streams()
        await self._send(self.driver.finish(reason))

    async def abort(self, reason: str) -> None:
        """The stream ended abnormally (``serve`` was cancelled): unscored windows
        are dropped, an open alert ends with ``reason``, and the summary follows."""
        self._close_streams()
        events = self.driver.abort(reason)
        self._dropped_to(0, lag=False)  # dropped for the abnormal end, not for load
        await self._send(events)
