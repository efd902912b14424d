"""The WebSocket server: auth, limits, routing, and per-connection isolation.

A connection that breaks the protocol is closed with a code and a reason
naming what was expected; no other connection notices. Close codes:
1000 done, 1001 idle timeout, 1002 protocol order, 1003 unsupported format,
1007 bad payload, 1008 duration limit, 1009 message too big, 1011 server
error, 1013 too many streams. Bad or missing tokens get HTTP 401 before the
WebSocket upgrade (and a log line naming the peer, never the token).
SIGTERM/SIGINT (``handle_signals``) drain: no new connections, every stream
flushed and closed with 1001 "server shutting down" (see ``drain``).
"""

from __future__ import annotations

import hmac
import logging
import signal
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from anyio.abc import TaskStatus
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from spoofwatch.errors import ProtocolError

from .context import TRY_AGAIN_LATER, ServerConfig, ServerContext
from .drain import GOING_AWAY, SHUTDOWN_REASON, DrainingConnection
from .native import handle_native
from .twilio import handle_twilio

log = logging.getLogger(__name__)
ROUTES = {"/": handle_native, "/twilio": handle_twilio}
IDLE_TIMEOUT = 1001
SERVER_ERROR = 1011
#: The stop message of each route, which a drain feeds to its handler.
STOP_MESSAGES = {"/": '{"type": "stop"}', "/twilio": '{"event": "stop"}'}


def _token_from(request: Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer ") :].strip()
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values else None


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class WebSocketServer:
    def __init__(self, ctx: ServerContext, handle_signals: bool = False) -> None:
        self.ctx = ctx
        self.handle_signals = handle_signals
        #: Set (by a signal or a caller) to drain and stop the server.
        self.stop_requested = anyio.Event()

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path not in ROUTES:
            return connection.respond(
                HTTPStatus.NOT_FOUND, f"unknown path {path}: expected one of {', '.join(ROUTES)}\n"
            )
        expected = self.ctx.config.token
        if expected:
            given = _token_from(request)
            if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
                log.warning(
                    "refused %s from %s: %s token",
                    path,
                    _peer(connection),
                    "no" if given is None else "wrong",
                )
                return connection.respond(
                    HTTPStatus.UNAUTHORIZED,
                    "missing or wrong token: send 'Authorization: Bearer T' or ?token=T\n",
                )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = urlsplit(ws.request.path).path
        handler = ROUTES[path]
        if self.ctx.active_streams >= self.ctx.config.max_streams:
            await self._close(
                ws, TRY_AGAIN_LATER, f"server at capacity ({self.ctx.config.max_streams} streams)"
            )
            return
        self.ctx.active_streams += 1
        try:
            await handler(DrainingConnection(ws, self.ctx.drain, STOP_MESSAGES[path]), self.ctx)
        except Exception as raised:
            await self._fail(ws, _first_leaf(raised))
        finally:
            self.ctx.active_streams -= 1

    async def _fail(self, ws: ServerConnection, exc: BaseException) -> None:
        if isinstance(exc, ProtocolError):
            await self._close(ws, exc.close_code, str(exc))
        elif isinstance(exc, TimeoutError):
            await self._close(ws, IDLE_TIMEOUT, f"idle for {self.ctx.config.idle_timeout_s:g} s")
        elif isinstance(exc, ConnectionClosed):
            if exc.sent is not None and "keepalive" in exc.sent.reason:
                log.info(
                    "dropped %s: no pong within %g s (keepalive ping timeout)",
                    _peer(ws),
                    self.ctx.config.ping_timeout_s,
                )
            else:
                log.info("client went away")
        else:
            log.error("stream handler failed", exc_info=exc)
            await self._close(ws, SERVER_ERROR, "internal error")

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        if self.ctx.drain.started:
            code, reason = GOING_AWAY, SHUTDOWN_REASON
        log.info("closing stream with %d: %s", code, reason)
        # A close reason must fit in a control frame (123 bytes).
        await ws.close(code, reason.encode()[:123].decode(errors="ignore"))

    async def run(self, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the bound port through ``task_status``."""
        config = self.ctx.config
        config.validate()
        try:
            await self._serve(config, task_status)
        finally:
            self.ctx.batcher.close()

    async def _serve(self, config: ServerConfig, task_status: TaskStatus[int]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.ctx.batcher.serve)
            async with serve(
                self._handle,
                config.host,
                config.port,
                max_size=config.max_message_bytes,
                max_queue=config.max_queue_messages,
                write_limit=config.write_limit_bytes,
                process_request=self._check_request,
                ping_interval=config.ping_interval_s,
                ping_timeout=config.ping_timeout_s,
            ) as server:
                port = int(next(iter(server.sockets)).getsockname()[1])
                log.info("listening on ws://%s:%d (paths: %s)", config.host, port, ", ".join(ROUTES))
                if self.handle_signals:
                    tg.start_soon(self._watch_signals)
                task_status.started(port)
                await self.stop_requested.wait()
                await self._drain(server)
            self.ctx.batcher.close()  # serve() ends once the queue is empty

    # ---- SIGTERM / SIGINT drain (reliability) ---------------------------------

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("%s: shutting down", signal.Signals(signum).name)
                self.stop_requested.set()
                return

    async def _drain(self, server: Any) -> None:
        """Stop accepting, end every stream as if it sent stop, wait (bounded)."""
        server.close(close_connections=False)
        log.info("draining %d stream(s)", self.ctx.active_streams)
        self.ctx.drain.begin()
        with anyio.move_on_after(self.ctx.config.shutdown_grace_s) as scope:
            await server.wait_closed()
        if scope.cancelled_caught:
            stuck = list(server.connections)
            log.warning(
                "%d stream(s) still open after %g s: cutting them",
                len(stuck),
                self.ctx.config.shutdown_grace_s,
            )
            for conn in stuck:
                conn.transport.abort()


def _peer(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
    except (TypeError, ValueError):
        return "unknown peer"
    return f"{host}:{port}"
