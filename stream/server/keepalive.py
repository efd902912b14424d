"""The server's WebSocket keepalive: a pong is owed only for time the server waits on the client.

``websockets``' own keepalive drops a connection whose pong has not come
back within ``ping_timeout`` of the ping. That is wrong for an upload: a
client sending faster than real time is slowed down, not dropped from (the
reader stops reading while the stream's inbox is full, and TCP pushes back
on the client), and its pong then sits in the socket behind audio the
server has not read yet. A 10-minute file sent with ``spoofwatch send`` was
cut after about 100 s with 1011 "keepalive ping timeout".

Here the timeout runs only while the server is waiting on the client: a
read is pending (everything the client sent has been read, so a pong it
sent would have been too) or a send is pending (the client does not read
what it is sent). A dead peer or a client that never reads is still
dropped ``ping_timeout_s`` after a ping; a client that is only being held
back never is. :class:`PongClock` keeps that time (Sans-I/O: the caller
passes the time); :class:`Keepalive` pings and judges.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterator
from typing import Any

import anyio
from websockets.exceptions import ConnectionClosed

from spoofwatch.errors import CloseCode

log = logging.getLogger(__name__)

#: The close reason of a keepalive drop (websockets' own wording, which the logs match).
KEEPALIVE_REASON = "keepalive ping timeout"


class PongClock:
    """Seconds the server has spent waiting on the client (overlapping waits count once)."""

    def __init__(self) -> None:
        self._waits = 0
        self._total_s = 0.0
        self._since = 0.0

    def begin_wait(self, now: float) -> None:
        if self._waits == 0:
            self._since = now
        self._waits += 1

    def end_wait(self, now: float) -> None:
        if self._waits <= 0:
            raise RuntimeError("end_wait without begin_wait")
        self._waits -= 1
        if self._waits == 0:
            self._total_s += now - self._since

    @property
    def waiting(self) -> bool:
        """Whether a wait on the client is in progress."""
        return self._waits > 0

    def waited_s(self, now: float) -> float:
        """All the waiting so far, the wait in progress included."""
        return self._total_s + (now - self._since if self._waits else 0.0)


class Keepalive:
    """Ping every ``interval_s``; drop the connection (1011) when a pong has
    been owed for ``timeout_s`` of :class:`PongClock` time."""

    def __init__(
        self,
        ws: Any,
        interval_s: float,
        timeout_s: float,
        close_timeout_s: float,
        counter: Any = None,
        peer: str = "client",
    ) -> None:
        self._ws = ws
        self.peer = peer  # who is dropped, for the log
        self.interval_s, self.timeout_s, self.close_timeout_s = interval_s, timeout_s, close_timeout_s
        self.clock = PongClock()
        #: A Prometheus counter labelled by outcome (``sent``, ``dropped``), or None.
        self._counter = counter
        self.timed_out = False

    def _count(self, outcome: str) -> None:
        if self._counter is not None:
            self._counter.labels(outcome).inc()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Around an await on the client: a read of its next message, or a send to it."""
        self.clock.begin_wait(anyio.current_time())
        try:
            yield
        finally:
            self.clock.end_wait(anyio.current_time())

    async def run(self) -> None:
        """Until cancelled or the connection closes; never raises otherwise.

        A ping goes out every ``interval_s`` whether or not the last one was
        answered (a pong answers every earlier ping too); the oldest
        unanswered one decides."""
        # (clock time owed when sent, the pong's future), oldest first
        unanswered: deque[tuple[float, Any]] = deque()
        next_ping = anyio.current_time() + self.interval_s
        try:
            while True:
                now = anyio.current_time()
                while unanswered and unanswered[0][1].done():
                    unanswered.popleft()
                owed_from = unanswered[0][0] if unanswered else self.clock.waited_s(now)
                left_s = self.timeout_s - (self.clock.waited_s(now) - owed_from)
                if unanswered and left_s <= 0:
                    break
                if now < next_ping:
                    # Owed time grows no faster than the clock: nothing expires
                    # sooner. While the server waits on nothing it does not grow
                    # at all: judge again at the next ping, not in a tight loop.
                    owing = unanswered and self.clock.waiting
                    await anyio.sleep(min(next_ping - now, left_s) if owing else next_ping - now)
                    continue
                next_ping = now + self.interval_s
                sent_at = self.clock.waited_s(now)
                # ping() itself waits while a client that does not read has
                # filled the socket: that time is owed too, and bounded.
                with anyio.move_on_after(left_s if unanswered else self.timeout_s):
                    with self.waiting():
                        unanswered.append((sent_at, await self._ws.ping()))
                    self._count("sent")
                    continue
                break
        except ConnectionClosed:
            return
        await self._drop()

    async def _drop(self) -> None:
        """Close with 1011; a client that reads nothing cannot take the close frame,
        so the connection is cut after ``close_timeout_s`` (as websockets does)."""
        self.timed_out = True
        self._count("dropped")
        # Logged here, not where the connection's error surfaces: a drop after
        # the client's stop (its events still being scored) raises nothing.
        log.info("dropped %s: no pong within %g s (%s)", self.peer, self.timeout_s, KEEPALIVE_REASON)
        with anyio.move_on_after(self.close_timeout_s):
            with contextlib.suppress(ConnectionClosed):
                await self._ws.close(CloseCode.INTERNAL_ERROR, KEEPALIVE_REASON)
            return
        self._ws.transport.abort()
