"""Graceful shutdown (SIGTERM, SIGINT): the one drain path of the server.

A single-process server and every worker of ``serve --workers`` drain the
same way (``WebSocketServer.request_shutdown``): stop accepting, then end
every stream as if its client had sent the protocol's stop message. The
connection adapter flushes the resampler and windower, scores what is
queued, closes an open alert (``alert_end`` with reason ``shutdown``) and
emits the ``summary`` to the client and every sink; the close then says
1001 "server shutting down". Streams still open after ``shutdown_grace_s``
are cut (their sessions abort with reason ``shutdown``).

The adapter sees the drain through :meth:`Drain.recv`, which returns
``None`` (no more messages) once the drain has begun; cancelling a pending
``websockets`` ``recv`` is safe: no message is lost.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from spoofwatch.errors import CloseCode

log = logging.getLogger(__name__)
#: WebSocket close code and reason for streams ended by a server shutdown.
GOING_AWAY = CloseCode.GOING_AWAY
SHUTDOWN_REASON = "server shutting down"


class Drain:
    """Shared by the app and every connection; ``begin`` is idempotent."""

    def __init__(self) -> None:
        self.started = False
        self._scopes: set[anyio.CancelScope] = set()

    def begin(self) -> None:
        if self.started:
            return
        self.started = True
        for scope in list(self._scopes):
            scope.cancel()

    async def recv(self, ws: Any) -> Any:
        """``ws.recv()``, or ``None`` once the drain has begun."""
        if self.started:
            return None
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                return await ws.recv()
            finally:
                self._scopes.discard(scope)
        return None  # the drain cancelled the wait
