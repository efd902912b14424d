"""Graceful shutdown (SIGTERM, SIGINT) at the application level.

When a drain begins, every stream is ended as if its client had sent the
protocol's stop message: the handler flushes the resampler and windower,
scores what is queued, closes an open alert (``alert_end`` with reason
``shutdown``) and emits the ``summary`` to the client and every sink. The
close then says 1001 "server shutting down" instead of 1000.

Handlers see this through :class:`DrainingConnection`, a thin wrapper of
the WebSocket connection, so no protocol handler needs to know about
shutdown: ``recv`` returns the synthetic stop message once the drain has
begun (cancelling a pending ``websockets`` ``recv`` is safe: no message is
lost).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import anyio

from ..engine import Engine

log = logging.getLogger(__name__)
#: WebSocket close code and reason for streams ended by a server shutdown.
GOING_AWAY = 1001
SHUTDOWN_REASON = "server shutting down"
#: ``alert_end`` reason for an alert closed by a shutdown.
SHUTDOWN_END_REASON = "shutdown"


class Drain:
    """Shared by the app and every connection; ``begin`` is idempotent."""

    def __init__(self) -> None:
        self.started = False
        self._scopes: set[anyio.CancelScope] = set()
        self._engines: weakref.WeakSet[Engine] = weakref.WeakSet()

    def track(self, engine: Engine) -> Engine:
        """Engines created for streams, so that a drain can mark their end reason."""
        self._engines.add(engine)
        if self.started:
            engine.end_reason = SHUTDOWN_END_REASON
        return engine

    def begin(self) -> None:
        if self.started:
            return
        self.started = True
        for engine in list(self._engines):
            engine.end_reason = SHUTDOWN_END_REASON
        for scope in list(self._scopes):
            scope.cancel()

    async def recv(self, ws: Any, stop_message: str) -> Any:
        """``ws.recv()``, or ``stop_message`` once the drain has begun."""
        if self.started:
            return stop_message
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                return await ws.recv()
            finally:
                self._scopes.discard(scope)
        return stop_message  # the drain cancelled the wait


class DrainingConnection:
    """A server connection as its stream handler sees it (see the module docstring)."""

    def __init__(self, ws: Any, drain: Drain, stop_message: str) -> None:
        self._ws = ws
        self._drain = drain
        self._stop_message = stop_message

    async def recv(self) -> Any:
        return await self._drain.recv(self._ws, self._stop_message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._drain.started:
            code, reason = GOING_AWAY, SHUTDOWN_REASON
        await self._ws.close(code, reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)
