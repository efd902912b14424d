"""The WebSocket handlers: thin adapters between a connection, a Sans-I/O wire
protocol (:mod:`spoofwatch.stream.protocol`) and one session per track.

The adapter reads messages (with the idle timeout), hands them to the
protocol, and routes what comes out: a start opens a session, audio goes to
its session, a stop ends input. However the connection ends, every session
ends with exactly one ``summary``, and an open alert with an ``alert_end``
whose ``reason`` says why (``end_of_stream``, ``protocol_error``, ``idle``,
``disconnect``, ``shutdown`` or ``error``); the error then goes on to
:class:`~spoofwatch.stream.server.app.WebSocketServer`, which closes the
connection with the error's close code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from websockets.exceptions import ConnectionClosed

from spoofwatch.errors import CloseCode, IdleTimeout, ProtocolError

from ..events import DISCONNECT, END_OF_STREAM, ERROR, IDLE, PROTOCOL_ERROR, SHUTDOWN, event_json
from ..protocol import (
    TWILIO_PATH,
    AudioIn,
    NativeProtocol,
    StreamStart,
    StreamStop,
    TwilioProtocol,
    WireProtocol,
)
from .context import ServerContext
from .drain import GOING_AWAY, SHUTDOWN_REASON, Handled, MessageReader
from .keepalive import Keepalive
from .session import StreamSession

log = logging.getLogger(__name__)
#: Seconds an abnormal end may spend emitting its closing events (shielded
#: from cancellation, so a shutdown still logs them; bounded, so a client
#: that stopped reading cannot hold the shutdown).
ABORT_GRACE_S = 5.0


def first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


#: Close codes the WebSocket layer itself sends for a client's fault (a message
#: over ``max_size``: 1009; text that is not UTF-8: 1007; a malformed frame: 1002),
#: before any handler sees the message.
CLIENT_FAULT_CODES = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.UNSUPPORTED,
        CloseCode.INVALID_PAYLOAD,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
    }
)


def refused_by_websocket_layer(exc: ConnectionClosed) -> bool:
    """Whether the server's WebSocket layer closed the connection for the client's fault.

    The server must have sent its close first: a client closing with one of these
    codes gets it echoed back (``rcvd_then_sent``), and that client just left."""
    return exc.sent is not None and exc.sent.code in CLIENT_FAULT_CODES and exc.rcvd_then_sent is not True


def peer_name(connection: Any) -> str:
    """``host:port`` of a connection's client, for the log."""
    try:
        host, port = connection.remote_address[:2]
    except (TypeError, ValueError):
        return "unknown peer"
    return f"{host}:{port}"


def end_reason(exc: BaseException) -> str:
    """The ``alert_end`` reason for a stream ended by ``exc``."""
    leaf = first_leaf(exc)
    if isinstance(leaf, ProtocolError):
        return PROTOCOL_ERROR
    if isinstance(leaf, IdleTimeout):
        return IDLE
    if isinstance(leaf, ConnectionClosed):
        return PROTOCOL_ERROR if refused_by_websocket_layer(leaf) else DISCONNECT
    if isinstance(leaf, anyio.get_cancelled_exc_class()):
        return SHUTDOWN
    return ERROR


async def handle_connection(ws: Any, ctx: ServerContext, protocol: WireProtocol) -> None:
    """Serve one connection: read, parse, route to sessions, end each stream once."""
    sessions: dict[str, StreamSession] = {}
    # The connection already holds one of --max-streams; each further track
    # (a Twilio call with both tracks) claims another and is released here.
    extra_streams = 0

    config = ctx.config
    keepalive = Keepalive(
        ws,
        config.ping_interval_s,
        config.ping_timeout_s,
        config.close_timeout_s,
        ctx.metrics.keepalive,
        peer_name(ws),
    )

    async def emit(event: dict[str, Any]) -> None:
        await ctx.sinks.emit(event)
        if protocol.replies:
            try:
                with keepalive.waiting():  # blocked only by a client that does not read
                    await ws.send(event_json(event))
            except ConnectionClosed:
                # The reader notices too and ends the stream; the sinks have the event.
                log.debug("client gone; event kept in the sinks only")
            except OSError as exc:  # a transport error other than a close: same, but say so
                log.warning("could not send a %s event to the client: %s", event.get("type"), exc)

    async def handle(message: Any) -> Handled:
        """One message: route what the protocol makes of it; say whether it carried anything."""
        nonlocal extra_streams
        events = protocol.receive(message)
        # Claim every further track before any of them starts, so a
        # refused call (1013) starts no stream at all.
        starts = sum(isinstance(e, StreamStart) for e in events)
        for _ in range(starts - (0 if sessions else min(starts, 1))):
            ctx.claim_extra_stream()
            extra_streams += 1
        handled = Handled.NOTHING
        for event in events:
            if isinstance(event, StreamStart):
                # Every stream gets a server-unique id, Twilio's too: its sids are the client's
                # and two calls may reuse them (the sinks and the alert journal tell streams apart by it).
                tags = {"stream_id": ctx.new_stream_id()}
                session = StreamSession(
                    ctx.new_driver(event.rate_hz),
                    ctx.batcher,
                    emit,
                    ctx.config.max_stream_duration_s,
                    {**tags, **event.tags},
                    observer=ctx.stats,  # load shedding and metrics (issue 11)
                    ingest_limiter=ctx.ingest_limiter,
                    ticker=ctx.ingest_ticker,
                )
                if ctx.stats.journal is not None:  # so that a worker crash still ends it
                    ctx.stats.journal.opened({**tags, **event.tags})
                sessions[event.track] = session
                tg.start_soon(session.serve)
                handled = Handled.ACTIVE
            elif isinstance(event, AudioIn):
                await sessions[event.track].push(event.samples)
                if event.samples.size:
                    handled = Handled.ACTIVE
            elif isinstance(event, StreamStop):
                return Handled.STOP  # the protocol refuses anything after its stop
        return handled

    # The keepalive runs until every stream has been scored and its events sent.
    async with anyio.create_task_group() as pinging:
        pinging.start_soon(keepalive.run)
        try:
            async with anyio.create_task_group() as tg:
                # Until the client's stop, the idle timeout, or a shutdown drain
                # (which ends the streams as if the client had sent stop).
                await MessageReader(ws, ctx.drain, config.idle_timeout_s, keepalive.waiting).run(handle)
                for session in sessions.values():
                    session.close_input()
        except BaseException as exc:
            reason = end_reason(exc)
            if reason == DISCONNECT and ctx.shutting_down:  # cut after the drain's grace
                reason = SHUTDOWN
            with anyio.move_on_after(ABORT_GRACE_S, shield=True):
                for session in sessions.values():
                    await session.abort(reason)
            raise
        finally:
            pinging.cancel_scope.cancel()
            for _ in range(extra_streams):
                ctx.release_extra_stream()
    if ctx.drain.started:
        for session in sessions.values():
            await session.finish(SHUTDOWN)
        await close_discarding(ws, GOING_AWAY, SHUTDOWN_REASON)
        return
    for session in sessions.values():
        await session.finish(END_OF_STREAM)
    await close_discarding(ws, CloseCode.NORMAL, "stream complete")


async def close_discarding(ws: Any, code: int, reason: str) -> None:
    """Close, reading and dropping whatever the client still sends meanwhile.

    A client streaming live audio goes on sending until it sees the close
    frame; unread, its frames fill the connection's small receive queue,
    websockets stops reading the socket, and the client's answer to the
    close waits behind them until the close timeout (a Ctrl-C of the server
    took the whole shutdown grace for every live stream)."""

    async def discard() -> None:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(discard)
        await ws.close(code, reason)
        tg.cancel_scope.cancel()


def _handler(protocol: Callable[[], WireProtocol]) -> Callable[[Any, ServerContext], Any]:
    async def handle(ws: Any, ctx: ServerContext) -> None:
        await handle_connection(ws, ctx, protocol())

    return handle


#: Path -> handler.
ROUTES = {"/": _handler(NativeProtocol), TWILIO_PATH: _handler(TwilioProtocol)}
