"""The WebSocket server: auth, limits, routing, and per-connection isolation.

A connection that breaks the protocol is closed with a code and a reason
naming what was expected; no other connection notices. The codes are the
:class:`~spoofwatch.errors.CloseCode` members: 1000 done, 1001 idle timeout,
1002 protocol order, 1003 unsupported format, 1007 bad payload, 1008 duration
limit, 1009 message too big, 1011 server error, 1013 too many streams or an
overloaded worker (load shedding). Bad or missing tokens get HTTP 401 before
the WebSocket upgrade. ``GET /healthz``, ``/readyz`` and ``/metrics`` share the
port (:mod:`.health`).
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import socket
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import anyio
from anyio.abc import TaskStatus
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import MultipleValuesError
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from spoofwatch.errors import CloseCode, IdleTimeout, ModelError, ProtocolError

from . import health
from .connection import (
    ABORT_GRACE_S,
    ROUTES,
    close_discarding,
    first_leaf,
    peer_name,
    refused_by_websocket_layer,
)
from .context import ServerConfig, ServerContext
from .drain import GOING_AWAY, SHUTDOWN_REASON
from .keepalive import KEEPALIVE_REASON
from .static import page_response, page_url, target_path, target_query

log = logging.getLogger(__name__)


class _PipelinedRequestFilter(logging.Filter):
    """websockets (17.4) fails an assertion, sending EOF twice, when a client
    pipelines HTTP requests (two in one write) and logs it as an ERROR with a
    traceback: anyone could flood the log with those. The connection is
    closed either way; here that is one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, AssertionError) and _raised_in(exc, "send_eof"):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "closed a connection that sent HTTP requests back to back (pipelining is not served)",
                (),
                None,
                None,
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _raised_in(exc: BaseException, function: str) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == function


#: websockets' server logger, which that filter cleans up.
_WEBSOCKETS_LOG = logging.getLogger("websockets.server")
_PIPELINED = _PipelinedRequestFilter()
#: Seconds between refreshes of the load gauges and the shared shedding flag.
LOAD_REFRESH_S = 1.0
#: Bytes of a close reason that fit in a close frame (RFC 6455: 125 less the code).
CLOSE_REASON_BYTES = 123
#: The ``WWW-Authenticate`` challenge of a 401 (RFC 7235, RFC 6750).
BEARER_CHALLENGE = 'Bearer realm="spoofwatch"'


def _token_from(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":  # auth schemes are case-insensitive (RFC 7235)
        return credentials.strip()
    values = parse_qs(target_query(request.path)).get("token")
    return values[0] if values else None


class WebSocketServer:
    def __init__(self, ctx: ServerContext, sock: socket.socket | None = None) -> None:
        self.ctx = ctx
        #: A listening socket to serve on (a worker process of ``serve --workers``).
        self.sock = sock
        self._shutdown = anyio.Event()

    def request_shutdown(self) -> None:
        """Drain (see :mod:`.drain`), then return from ``run``. Idempotent; the
        one shutdown path of a single-process server and of every worker."""
        self.ctx.shutting_down = True
        self._shutdown.set()

    async def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The HTTP answer to a request, or ``None`` to go on with a WebSocket
        handshake. Every path answers GET; HEAD gets the same headers without
        the body (RFC 9110); other methods get 405."""
        if request.method not in ("GET", "HEAD"):
            refused = connection.respond(
                HTTPStatus.METHOD_NOT_ALLOWED, f"method {request.method} not allowed: expected GET or HEAD\n"
            )
            refused.headers["Allow"] = "GET, HEAD"
            return refused
        try:
            response = await self._answer(connection, request)
        except MultipleValuesError as exc:
            # Two Authorization (or Upgrade) headers are ambiguous: refused,
            # not a 500 with a traceback in the log.
            self.ctx.metrics.refused.labels("400", "header").inc()
            log.warning(
                "refused %s from %s: header %s sent twice",
                request.path.split("?")[0],
                peer_name(connection),
                exc,
            )
            return connection.respond(
                HTTPStatus.BAD_REQUEST, f"header {exc} sent more than once: expected it once\n"
            )
        if request.method == "GET":
            return response
        if response is None:  # a WebSocket upgrade: the handshake needs GET
            response = connection.respond(
                HTTPStatus.METHOD_NOT_ALLOWED, "a WebSocket upgrade needs GET, not HEAD\n"
            )
            response.headers["Allow"] = "GET"
        return dataclasses.replace(response, body=b"")  # Content-Length still says the GET's

    async def _answer(self, connection: ServerConnection, request: Request) -> Response | None:
        # Browser client (static.py): a plain GET of the page or its files; upgrades go on.
        page = page_response(request, self.ctx)
        if page is not None:
            return page
        path = target_path(request.path)
        if path not in ROUTES and path not in health.HEALTH_PATHS:
            return connection.respond(
                HTTPStatus.NOT_FOUND,
                f"unknown path {path}: expected one of {', '.join((*ROUTES, *health.HEALTH_PATHS))}\n",
            )
        expected = self.ctx.config.token
        if expected and path not in health.PUBLIC_PATHS:
            given = _token_from(request)
            if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
                self.ctx.metrics.refused.labels("401", "token").inc()
                log.warning(
                    "refused %s from %s: %s token",
                    path,
                    peer_name(connection),
                    "no" if given is None else "wrong",
                )
                refused = connection.respond(
                    HTTPStatus.UNAUTHORIZED,
                    "missing or wrong token: send 'Authorization: Bearer T' or ?token=T\n",
                )
                # RFC 7235: a 401 names the scheme it wants (RFC 6750's realm for clients that show it).
                refused.headers["WWW-Authenticate"] = BEARER_CHALLENGE
                return refused
        if path in health.HEALTH_PATHS:  # ---- health and metrics (issue 11) ----
            return await health.respond(self.ctx, connection, path)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        handler = ROUTES[target_path(ws.request.path)]
        refused = self.ctx.admit()
        if refused is not None:
            self.ctx.refuse(refused[0])
            await self._close(ws, CloseCode.TRY_AGAIN_LATER, refused[1])
            return
        self.ctx.active_streams += 1
        self.ctx.metrics.active_streams.inc()
        try:
            await handler(ws, self.ctx)
        except Exception as raised:
            await self._fail(ws, first_leaf(raised))
        finally:
            self.ctx.active_streams -= 1
            self.ctx.metrics.active_streams.dec()
            self.ctx.slots.release()

    async def _refresh_load(self) -> None:
        """Publish this worker's lag, capacity and shedding state (for /metrics, /readyz)."""
        ctx = self.ctx
        while True:
            # The event loop's own CPU time, for the host cost (its thread: this one).
            ctx.load.host.sample(time.thread_time())
            ctx.slots.set_shedding(ctx.load.refusal(ctx.slots.own(), ctx.slots.total()) is not None)
            ctx.metrics.score_lag.set(ctx.load.recent_lag_s())
            ctx.metrics.capacity_streams.set(ctx.load.capacity_share())
            ctx.metrics.host_cost.set(ctx.load.host.cpu_s_per_audio_s or 0.0)
            ctx.metrics.observe_sinks(ctx.sinks.stats())
            if ctx.stats.journal is not None:
                ctx.stats.journal.flush()
            await anyio.sleep(LOAD_REFRESH_S)

    async def _fail(self, ws: ServerConnection, exc: BaseException) -> None:
        if isinstance(exc, ProtocolError):
            await self._close(ws, exc.close_code, str(exc))
        elif isinstance(exc, IdleTimeout):
            await self._close(ws, CloseCode.GOING_AWAY, f"idle for {self.ctx.config.idle_timeout_s:g} s")
        elif isinstance(exc, ConnectionClosed):
            if exc.sent is not None and exc.sent.reason == KEEPALIVE_REASON:
                pass  # the keepalive logged its drop
            elif refused_by_websocket_layer(exc) and exc.sent is not None:
                log.info("closed %s with %d: %s", peer_name(ws), exc.sent.code, exc.sent.reason)
            else:
                log.info("client went away")
        elif isinstance(exc, ModelError):  # the model could not score this stream: said, not a crash
            log.error("ended the stream of %s: %s", peer_name(ws), exc)
            await self._close(ws, CloseCode.INTERNAL_ERROR, f"model error: {exc}")
        else:
            log.error("stream handler failed", exc_info=exc)
            await self._close(ws, CloseCode.INTERNAL_ERROR, "internal error")

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        if self.ctx.drain.started:
            code, reason = GOING_AWAY, SHUTDOWN_REASON
        # A close reason must fit in a control frame (123 bytes); the log gets
        # the same bounded text (a reason can quote what the client sent, and
        # a megabyte of it per connection would flood the log).
        reason = reason.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")
        log.info("closing stream with %d: %s", code, reason)
        await close_discarding(ws, code, reason)

    async def run(self, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the bound port through ``task_status``."""
        config = self.ctx.config
        config.validate()
        try:
            await self._serve(config, task_status)
        finally:
            self.ctx.batcher.close()

    async def _serve(self, config: ServerConfig, task_status: TaskStatus[int]) -> None:
        _WEBSOCKETS_LOG.addFilter(_PIPELINED)  # once: a filter already there is not added again
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.ctx.batcher.serve)
            tg.start_soon(self.ctx.ingest_ticker.serve)
            tg.start_soon(self._refresh_load)
            where: dict[str, Any] = (
                {"sock": self.sock} if self.sock is not None else {"host": config.host, "port": config.port}
            )
            async with serve(
                self._handle,
                max_size=config.max_message_bytes,
                process_request=self._check_request,
                max_queue=config.max_queue_messages,
                write_limit=config.write_limit_bytes,
                # Each connection pings on its own terms (keepalive.py): websockets'
                # timeout would drop an upload whose pong waits behind unread audio.
                ping_interval=None,
                close_timeout=config.close_timeout_s,
                # No permessage-deflate: PCM audio hardly compresses, and inflating
                # every frame (and deflating every event) cost CPU that bounds a worker.
                compression=None,
                logger=_WEBSOCKETS_LOG,
                **where,
            ) as server:
                port = int(next(iter(server.sockets)).getsockname()[1])
                log.info("listening on ws://%s:%d (paths: %s)", config.host, port, ", ".join(ROUTES))
                # The token itself is never logged: the user knows it, logs may travel.
                hint = " (add ?token=YOUR_TOKEN)" if config.token else ""
                log.info("browser page at %s%s", page_url(config.host, port), hint)
                task_status.started(port)
                await self._shutdown.wait()
                await self._drain(server)
            tg.cancel_scope.cancel()

    async def _drain(self, server: Any) -> None:
        """Stop accepting, end every stream as if it sent stop, wait (bounded), cut the rest."""
        server.close(close_connections=False)
        log.info("shutting down: draining %d stream(s)", self.ctx.active_streams)
        self.ctx.drain.begin()
        grace = self.ctx.config.shutdown_grace_s
        with anyio.move_on_after(grace) as scope:
            await server.wait_closed()
        if scope.cancelled_caught:
            # Every connection not yet closed: ``server.connections`` lists only
            # OPEN ones, and a stream whose 1001 went out but whose client never
            # answered it (CLOSING) would hold the drain for the close timeout.
            stuck = list(server.all_connections)
            log.warning("%d stream(s) still open after %g s: cutting them", len(stuck), grace)
            for conn in stuck:
                conn.transport.abort()
            # Their handlers end the sessions (reason shutdown), bounded by ABORT_GRACE_S.
            with anyio.move_on_after(ABORT_GRACE_S):
                await server.wait_closed()
