"""One stream behind an async boundary: audio in, events out, scoring shared."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt

from spoofwatch.audio import StreamResampler
from spoofwatch.errors import ProtocolError

from ..engine import Engine, PendingWindow
from .batcher import BatchScorer

Emit = Callable[[dict[str, Any]], Awaitable[None]]
#: Close code for a stream that exceeds the server's maximum duration.
POLICY_VIOLATION = 1008
#: How far (s) a stream's audio may run ahead of wall-clock time and still count as live.
REALTIME_SLACK_S = 1.0
#: Audio (s) received but not yet through the VAD before the reader waits.
MAX_INBOX_S = 10.0


class StreamSession:
    """The reader calls ``push``; ``serve`` (one task) ingests, scores in order and emits.

    ``push`` only appends to an inbox. An ingest task hands everything
    accumulated to one worker-thread call (resampling, VAD, windowing), so
    that work stays off the event loop and, under load, many messages share
    one thread hop. Windows then wait in a queue of at most
    ``max_pending_windows``:

    * a live stream (audio not ahead of wall-clock time) never waits for a
      stale score: ``run`` skips a window when a newer one is already queued,
      and a full queue drops its oldest; every drop is counted, audio never is;
    * a client sending faster than real time (a file upload) is slowed down
      instead: ``push`` waits for room, and TCP pushes back on the client.
    """

    #: Wall clock (monotonic seconds) that tells a live stream from an upload;
    #: tests replace it to make that decision deterministic.
    clock = staticmethod(time.monotonic)

    def __init__(
        self,
        engine: Engine,
        batcher: BatchScorer,
        emit: Emit,
        rate_hz: int,
        max_duration_s: float,
        tags: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.batcher = batcher
        self.emit = emit
        self.tags = tags or {}
        self.rate_hz = rate_hz
        self.max_duration_s = max_duration_s
        self._resampler = StreamResampler(rate_hz)
        self._inbox: list[npt.NDArray[np.float32]] = []
        self._inbox_samples = 0
        self._received_samples = 0
        self._input_done = False
        self._queue: deque[PendingWindow] = deque()
        self._closed = False  # every window of the stream is queued
        self._have_audio = anyio.Event()
        self._have_windows = anyio.Event()
        self._progress = anyio.Event()
        self._t0: float | None = None

    # ---- reader side -------------------------------------------------------

    async def push(self, audio: npt.NDArray[np.float32]) -> None:
        if self._t0 is None:
            self._t0 = self.clock()
        self._inbox.append(audio)
        self._inbox_samples += audio.shape[0]
        self._received_samples += audio.shape[0]
        self._have_audio.set()
        if self._received_samples / self.rate_hz > self.max_duration_s:
            raise ProtocolError(
                f"stream exceeded the maximum duration of {self.max_duration_s:g} s", POLICY_VIOLATION
            )
        while self._must_wait():
            self._progress = anyio.Event()
            await self._progress.wait()

    def _must_wait(self) -> bool:
        if self._inbox_samples > MAX_INBOX_S * self.rate_hz:
            return True  # never drop audio: slow the sender instead
        full = len(self._queue) > self.engine.config.max_pending_windows
        return full and self._ahead_of_real_time()

    def close_input(self) -> None:
        """No more audio: the ingest task flushes the resampler and the windower."""
        self._input_done = True
        self._have_audio.set()

    def _ahead_of_real_time(self) -> bool:
        if self._t0 is None:
            return False
        received_s = self._received_samples / self.rate_hz
        return received_s > self.clock() - self._t0 + REALTIME_SLACK_S

    # ---- worker side -------------------------------------------------------

    async def serve(self) -> None:
        """Ingest and score until input is closed and every window is resolved."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._ingest_loop)
            tg.start_soon(self._score_loop)

    def _ingest(self, audio: npt.NDArray[np.float32], last: bool) -> list[PendingWindow]:
        # Engine.push and Engine.resolve touch disjoint state, so this may run in
        # a worker thread while _score_loop resolves on the event loop.
        pending = self.engine.push(self._resampler(audio, last=last))
        return pending + self.engine.flush() if last else pending

    async def _ingest_loop(self) -> None:
        while True:
            await self._have_audio.wait()
            self._have_audio = anyio.Event()
            last = self._input_done  # read before taking the inbox: nothing can follow it
            batch = np.concatenate(self._inbox) if self._inbox else np.zeros(0, dtype=np.float32)
            self._inbox, self._inbox_samples = [], 0
            pending = await anyio.to_thread.run_sync(self._ingest, batch, last)
            self._queue.extend(pending)
            if not self._ahead_of_real_time():
                while len(self._queue) > self.engine.config.max_pending_windows:
                    self.engine.drop(self._queue.popleft())
            self._closed = last
            self._have_windows.set()
            self._progress.set()
            if last:
                return

    async def _score_loop(self) -> None:
        while True:
            if self._queue:
                pending = self._queue.popleft()
                self._progress.set()
                if self._superseded():
                    self.engine.drop(pending)
                    continue
                score = await self.batcher.score(pending.window.samples) if pending.gate.speech else None
                for event in self.engine.resolve(pending, score):
                    await self.emit({**event.to_json(), **self.tags})
            elif self._closed:
                return
            else:
                await self._have_windows.wait()
                self._have_windows = anyio.Event()

    def _superseded(self) -> bool:
        """A live stream scores its freshest window: the one just popped is stale
        if a newer one waits. End-of-stream flushes and uploads are never skipped."""
        return bool(self._queue) and not self._closed and not self._ahead_of_real_time()

    async def finish(self) -> None:
        """After ``serve`` returned: close alerts and emit the summary."""
        for event in self.engine.finish():
            await self.emit({**event.to_json(), **self.tags})
