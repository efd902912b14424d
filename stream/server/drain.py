"""Graceful shutdown (SIGTERM, SIGINT): the one drain path of the server.

A single-process server and every worker of ``serve --workers`` drain the
same way (``WebSocketServer.request_shutdown``): stop accepting, then end
every stream as if its client had sent the protocol's stop message. The
connection adapter flushes the resampler and windower, scores what is
queued, closes an open alert (``alert_end`` with reason ``shutdown``) and
emits the ``summary`` to the client and every sink; the close then says
1001 "server shutting down". Streams still open after ``shutdown_grace_s``
are cut (their sessions abort with reason ``shutdown``).

The adapter reads through a :class:`MessageReader`, which stops reading
once the drain has begun (a read then pending is cancelled; cancelling a
pending ``websockets`` ``recv`` is safe: no message is lost).
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from spoofwatch.errors import CloseCode, IdleTimeout

log = logging.getLogger(__name__)
#: A watch waking this much later than due (s) found the event loop stalled, not the client idle.
STALL_S = 0.25
#: ... and gives the reader this long (s, loop time) to read what arrived meanwhile.
STALL_GRACE_S = 0.1
#: WebSocket close code and reason for streams ended by a server shutdown.
GOING_AWAY = CloseCode.GOING_AWAY
SHUTDOWN_REASON = "server shutting down"


class Handled(enum.Enum):
    """What a handled message was, for the idle timeout."""

    #: Carried no audio and no start/stop (an empty frame, a Twilio mark, dtmf or empty media):
    #: not activity, or a client sending only these would hold one of the stream slots forever.
    NOTHING = "nothing"
    #: Audio, or a start.
    ACTIVE = "active"
    #: The client's stop: reading ends.
    STOP = "stop"


class Drain:
    """Shared by the app and every connection; ``begin`` is idempotent."""

    def __init__(self) -> None:
        self.started = False
        self._readers: set[MessageReader] = set()

    def begin(self) -> None:
        if self.started:
            return
        self.started = True
        for reader in list(self._readers):
            reader.interrupt()


class MessageReader:
    """A connection's reads, ended by the drain or the idle timeout.

    ``run(handle)`` reads messages and awaits ``handle(message)`` for each
    until it returns :attr:`Handled.STOP` (the client's stop), or the drain
    begins (returns), or no message came for ``idle_timeout_s``
    (:class:`~spoofwatch.errors.IdleTimeout`). Messages that carried nothing (:attr:`Handled.NOTHING`:
    an empty frame, a Twilio mark) are handled (an empty frame before
    ``start`` is still a protocol error) but are not activity: a client
    sending nothing else would otherwise hold one of the server's stream
    slots forever.
    One cancel scope serves the whole connection, cancelled only while a
    read is pending: a scope (or two) per message cost a worker's event
    loop ~25 µs each at 50 messages a second per stream
    (benchmarks/bench_host_cost.py). Cancelling a pending ``websockets``
    ``recv`` is safe: no message is lost.
    """

    def __init__(
        self,
        ws: Any,
        drain: Drain,
        idle_timeout_s: float,
        waiting: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self._ws = ws
        self._drain = drain
        self.idle_timeout_s = idle_timeout_s
        #: Entered around each read: the keepalive owes the client a pong only meanwhile.
        self._waiting = waiting
        self._scope = anyio.CancelScope()
        #: When the pending read began (event-loop clock), ``None`` while handling.
        self._reading_since: float | None = None
        self.idle = False

    def interrupt(self) -> None:
        """The drain began: end a pending read now (a handler finishes its message first)."""
        if self._reading_since is not None:
            self._scope.cancel()

    def expire(self) -> None:
        """No message came in time: end the pending read as idle (the watch's verdict)."""
        self.idle = True
        self._scope.cancel()

    async def run(self, handle: Callable[[Any], Awaitable[Handled]]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch)
            self._drain._readers.add(self)
            try:
                while await self._read_until_interrupted(handle):
                    pass
            finally:
                self._reading_since = None
                self._drain._readers.discard(self)
                tg.cancel_scope.cancel()  # the watch
        if self.idle:
            raise IdleTimeout(f"no message for {self.idle_timeout_s:g} s")

    async def _read_until_interrupted(self, handle: Callable[[Any], Awaitable[Handled]]) -> bool:
        """Read and handle under one cancel scope until the client's stop, the
        drain or the idle timeout; ``True``: read on under a new scope.

        A read can complete in the very loop pass in which the drain or the
        watch cancels the scope: the message is then handled outside the
        cancelled scope (inside it, the handler's first await would be
        cancelled and the message lost), and it means the client was not idle.
        """
        self._scope = scope = anyio.CancelScope()
        late: Any = _NOTHING
        active = anyio.current_time()  # the last message that carried something
        with scope:
            while not self._drain.started:
                self._reading_since = active
                with self._waiting():
                    message = await self._ws.recv()
                self._reading_since = None
                if scope.cancel_called:
                    late = message
                    break
                handled = await handle(message)
                if handled is Handled.STOP:
                    return False
                if handled is Handled.ACTIVE:
                    active = anyio.current_time()
                elif anyio.current_time() >= active + self.idle_timeout_s:
                    self.idle = True  # only messages carrying nothing since: they hold a slot, not a stream
                    return False
        self._reading_since = None
        if late is _NOTHING:
            return False  # the drain, or the idle timeout (``self.idle`` says which)
        handled = await handle(late)
        if handled is Handled.ACTIVE:
            self.idle = False
        return handled is not Handled.STOP and not self._drain.started and not self.idle

    async def _watch(self) -> None:
        """Cancel a read pending for ``idle_timeout_s``: one timer per timeout, not per message.

        A watch that wakes much later than it asked to means the event loop itself
        was stalled (the process paused by SIGSTOP or a VM freeze, the loop blocked):
        messages that arrived meanwhile may still be unread, and the timer can fire
        before the socket is read. Such a wake gives the reader a moment first.
        """
        due: float | None = None
        while True:
            since, now = self._reading_since, anyio.current_time()
            fired = self._scope.cancel_called
            if since is not None and not fired and now >= since + self.idle_timeout_s:
                if due is not None and now - due > STALL_S:
                    due = now + STALL_GRACE_S
                    await anyio.sleep(STALL_GRACE_S)  # then judge again, after the pending reads
                    continue
                self.expire()
                fired = True
            # After a cancel, wait a whole timeout: the reader either ends or
            # reads on under a new scope, whose read began after the cancel.
            wait = self.idle_timeout_s if since is None or fired else since + self.idle_timeout_s - now
            due = now + wait
            await anyio.sleep(wait)


#: ``MessageReader``: no message arrived as the read was cancelled.
_NOTHING = object()
