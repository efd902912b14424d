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
#: A live stream's window is dropped unscored once the stream has moved on
#: this many seconds past its end: a late score is worth less than a fresh one.
STALE_AFTER_S = 2.0


class StreamSession:
    """``push`` audio from the reader task; ``run`` scores in order and emits events.

    Windows wait in a bounded queue. When it is full and the stream is live
    (its audio is not ahead of wall-clock time), the stalest window is
    dropped (never audio) and counted, so a slow server stays live. A client
    sending faster than real time (a file upload) is slowed down instead:
    ``push`` waits for room, and TCP pushes back on the client.
    """

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
        self.max_duration_s = max_duration_s
        self._resampler = StreamResampler(rate_hz)
        self._queue: deque[PendingWindow] = deque()
        self._wake = anyio.Event()
        self._space = anyio.Event()
        self._closed = False
        self._t0: float | None = None

    async def push(self, audio: npt.NDArray[np.float32]) -> None:
        if self._t0 is None:
            self._t0 = time.monotonic()
        self._enqueue(self.engine.push(self._resampler(audio)))
        if self.engine.duration_s > self.max_duration_s:
            raise ProtocolError(
                f"stream exceeded the maximum duration of {self.max_duration_s:g} s", POLICY_VIOLATION
            )
        while len(self._queue) > self.engine.config.max_pending_windows:
            if self._ahead_of_real_time():
                self._space = anyio.Event()
                await self._space.wait()
            else:
                self.engine.drop(self._queue.popleft())

    def _is_stale(self, pending: PendingWindow) -> bool:
        """A live stream that fell behind scores its freshest window first."""
        if self._closed or self._t0 is None or self._ahead_of_real_time():
            return False  # end-of-stream flushes and uploads are never dropped
        newer_waiting = bool(self._queue)
        return newer_waiting or self.engine.duration_s - pending.window.t_end > STALE_AFTER_S

    def _ahead_of_real_time(self) -> bool:
        assert self._t0 is not None
        return self.engine.duration_s > time.monotonic() - self._t0 + REALTIME_SLACK_S

    def close_input(self) -> None:
        """No more audio: flush the resampler and the windower."""
        self._enqueue(self.engine.push(self._resampler(np.zeros(0, dtype=np.float32), last=True)))
        self._enqueue(self.engine.flush())
        self._closed = True
        self._wake.set()

    def _enqueue(self, pending: list[PendingWindow]) -> None:
        self._queue.extend(pending)
        if pending:
            self._wake.set()

    async def run(self) -> None:
        """Score queued windows in stream order until input is closed and drained."""
        while True:
            if self._queue:
                pending = self._queue.popleft()
                self._space.set()
                if self._is_stale(pending):
                    self.engine.drop(pending)
                    continue
                score = await self.batcher.score(pending.window.samples) if pending.gate.speech else None
                for event in self.engine.resolve(pending, score):
                    await self.emit({**event.to_json(), **self.tags})
            elif self._closed:
                return
            else:
                await self._wake.wait()
                self._wake = anyio.Event()

    async def finish(self) -> None:
        """After ``run`` returned: close alerts and emit the summary."""
        for event in self.engine.finish():
            await self.emit({**event.to_json(), **self.tags})
