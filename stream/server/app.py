"""The WebSocket server: auth, limits, routing, and per-connection isolation.

A connection that breaks the protocol is closed with a code and a reason
naming what was expected; no other connection notices. The codes are the
:class:`~spoofwatch.errors.CloseCode` members: 1000 done, 1001 idle timeout,
1002 protocol order, 1003 unsupported format, 1007 bad payload, 1008 duration
limit, 1009 message too big, 1011 server error, 1013 too many streams. Bad or
missing tokens get HTTP 401 before the WebSocket upgrade.
"""

from __future__ import annotations

import hmac
import logging
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import anyio
from anyio.abc import TaskStatus
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from spoofwatch.errors import CloseCode, ProtocolError

from .connection import ROUTES, first_leaf
from .context import ServerConfig, ServerContext
from .static import page_response, page_url

log = logging.getLogger(__name__)


def _token_from(request: Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer ") :].strip()
    values = parse_qs(urlsplit(request.path).query).get("token")
    return values[0] if values else None


class WebSocketServer:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        # Browser client (static.py): a plain GET of the page or its files; upgrades go on.
        page = page_response(request, self.ctx)
        if page is not None:
            return page
        path = urlsplit(request.path).path
        if path not in ROUTES:
            return connection.respond(
                HTTPStatus.NOT_FOUND, f"unknown path {path}: expected one of {', '.join(ROUTES)}\n"
            )
        expected = self.ctx.config.token
        if expected:
            given = _token_from(request)
            if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
                return connection.respond(
                    HTTPStatus.UNAUTHORIZED,
                    "missing or wrong token: send 'Authorization: Bearer T' or ?token=T\n",
                )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        handler = ROUTES[urlsplit(ws.request.path).path]
        if self.ctx.active_streams >= self.ctx.config.max_streams:
            await self._close(
                ws, CloseCode.TRY_AGAIN_LATER, f"server at capacity ({self.ctx.config.max_streams} streams)"
            )
            return
        self.ctx.active_streams += 1
        try:
            await handler(ws, self.ctx)
        except Exception as raised:
            await self._fail(ws, first_leaf(raised))
        finally:
            self.ctx.active_streams -= 1

    async def _fail(self, ws: ServerConnection, exc: BaseException) -> None:
        if isinstance(exc, ProtocolError):
            await self._close(ws, exc.close_code, str(exc))
        elif isinstance(exc, TimeoutError):
            await self._close(ws, CloseCode.GOING_AWAY, f"idle for {self.ctx.config.idle_timeout_s:g} s")
        elif isinstance(exc, ConnectionClosed):
            log.info("client went away")
        else:
            log.error("stream handler failed", exc_info=exc)
            await self._close(ws, CloseCode.INTERNAL_ERROR, "internal error")

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
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
                process_request=self._check_request,
                ping_interval=20,
            ) as server:
                port = int(next(iter(server.sockets)).getsockname()[1])
                log.info("listening on ws://%s:%d (paths: %s)", config.host, port, ", ".join(ROUTES))
                # The token itself is never logged: the user knows it, logs may travel.
                hint = " (add ?token=YOUR_TOKEN)" if config.token else ""
                log.info("browser page at %s%s", page_url(config.host, port), hint)
                task_status.started(port)
                await anyio.sleep_forever()
