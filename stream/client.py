"""The reference client of the native protocol (``spoofwatch send``)."""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import CloseCode, InputError, NetworkError, ProtocolError

from .codecs import ENCODINGS, encode
from .engine import validate_chunk
from .protocol import TWILIO_PATH
from .sources.file import due_in_s

#: Audio per binary frame: 20 ms, like most telephony stacks.
FRAME_MS = 20
#: Seconds the server may stay silent once the audio has ended (it first
#: scores what is queued, sending each score as it goes) before we give up.
REPLY_TIMEOUT_S = 60.0


@dataclass
class SendResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    #: Wall-clock time (monotonic) at which audio of stream time 0 was due.
    started_at: float = 0.0
    #: Monotonic receive time of each event, parallel to ``events``.
    received_at: list[float] = field(default_factory=list)
    #: A Ctrl-C ended the audio early (``stop_on_sigint``).
    interrupted: bool = False


async def send_audio(
    audio: npt.NDArray[np.float32],
    url: str,
    encoding: str = "pcm_s16le",
    realtime: bool = False,
    token: str | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    *,
    reply_timeout_s: float = REPLY_TIMEOUT_S,
    stop_on_sigint: bool = False,
) -> SendResult:
    """Stream 16 kHz mono audio to ``url``; returns every event and how the server closed.

    ``audio`` and ``encoding`` are checked before connecting (:class:`InputError`).
    A connection that cannot be made raises one clear error: :class:`InputError`
    for a URL that is not ``ws://``/``wss://``, :class:`ProtocolError` when the
    server refuses the upgrade (401 wrong token, 404 path) or answers a path that
    is not a WebSocket endpoint (``/healthz``), :class:`NetworkError`
    when nothing answers. A server that sends something other than JSON events
    is a :class:`ProtocolError`; one that stays silent for ``reply_timeout_s``
    after the audio ended, or while it takes none of the audio, a
    :class:`NetworkError`. An exception of
    ``on_event`` (a closed stdout) is raised as it is. ``stop_on_sigint`` (the
    CLI, main thread only): the first Ctrl-C ends the audio early with ``stop``,
    so the server's closing events still arrive (``SendResult.interrupted``);
    a second one interrupts.
    """
    validate_chunk(audio)
    if encoding not in ENCODINGS:
        raise InputError(f"expected an encoding in {ENCODINGS}, got {encoding!r}")
    if not reply_timeout_s > 0:
        raise InputError(f"reply_timeout_s: expected a number > 0, got {reply_timeout_s}")
    _check_url(url)
    if urlsplit(url).path.rstrip("/") == TWILIO_PATH:
        raise InputError(
            f"{url}: {TWILIO_PATH} takes Twilio Media Streams messages; the native protocol this "
            "client speaks is served on /"
        )
    try:
        return await _send_audio(
            audio, url, encoding, realtime, token, on_event, reply_timeout_s, stop_on_sigint
        )
    except InvalidURI as exc:
        raise InputError(f"expected a ws:// or wss:// URL, got {url!r} ({exc})") from None
    except InvalidStatus as exc:
        status = exc.response.status_code
        if 200 <= status < 300:  # a plain HTTP route (/healthz, the browser page) answered instead
            from .server.connection import ROUTES

            raise ProtocolError(
                f"{url}: not a WebSocket endpoint (the server answered HTTP {status}); "
                f"stream to one of {', '.join(ROUTES)}",
                CloseCode.PROTOCOL_ERROR,
            ) from None
        body = exc.response.body.decode(errors="replace").strip().splitlines() if exc.response.body else []
        detail = f": {body[0]}" if body else ""
        raise ProtocolError(
            f"{url}: server refused the connection with HTTP {status}{detail}", CloseCode.PROTOCOL_ERROR
        ) from None
    except InvalidHandshake as exc:
        raise ProtocolError(f"{url}: WebSocket handshake failed: {exc}", CloseCode.PROTOCOL_ERROR) from None
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, BrokenPipeError):  # our own output's reader went away (on_event)
            raise
        # A TLS hello to a plain server is reset (or an SSL error comes back):
        # the usual cause of a reset at once with a wss:// URL.
        hint = " (is the server plain WebSocket? then use ws://)" if url.startswith("wss://") else ""
        raise NetworkError(f"{url}: cannot connect: {_describe(exc)}{hint}") from None


def _describe(exc: BaseException) -> str:
    """A non-empty description (``ConnectionResetError()`` has no message)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return text or type(exc).__name__


def _check_url(url: str) -> None:
    """A ws:// or wss:// URL with a valid host and port, before connecting
    (``websockets`` reports a bad port or IPv6 literal as a bare ValueError)."""
    from websockets.uri import parse_uri

    try:
        parse_uri(url)
        urlsplit(url).port  # noqa: B018 (raises ValueError for a port out of range or not a number)
    except (InvalidURI, ValueError) as exc:
        raise InputError(f"expected a ws:// or wss:// URL, got {url!r} ({exc})") from None


async def _send_audio(
    audio: npt.NDArray[np.float32],
    url: str,
    encoding: str,
    realtime: bool,
    token: str | None,
    on_event: Callable[[dict[str, Any]], None] | None,
    reply_timeout_s: float,
    stop_on_sigint: bool,
) -> SendResult:
    result = SendResult()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    frame = SAMPLE_RATE_HZ * FRAME_MS // 1000
    # The first failure of any task, raised as it is after the task group ends
    # (a task group would wrap it in an ExceptionGroup nobody can catch by type).
    failures: list[BaseException] = []
    stop_early = anyio.Event()
    async with _connection(url, headers) as ws:
        stalls = _SendWatch(ws, reply_timeout_s)
        async with anyio.create_task_group() as tg:

            def fail(exc: BaseException) -> None:
                failures.append(exc)
                tg.cancel_scope.cancel()

            async def receive() -> None:
                try:
                    async for message in ws:
                        stalls.heard()
                        result.events.append(_event(message))
                        result.received_at.append(time.monotonic())
                        if on_event:
                            on_event(result.events[-1])
                except ConnectionClosed:
                    pass
                except Exception as exc:  # a bad message, a closed stdout
                    fail(exc)
                    return
                tg.cancel_scope.cancel()  # closed: nothing more to send or wait for

            async def send() -> None:
                start = {"type": "start", "sample_rate": SAMPLE_RATE_HZ, "encoding": encoding, "channels": 1}
                try:
                    await ws.send(json.dumps(start))
                    result.started_at = time.monotonic()
                    for pos in range(0, audio.size, frame):
                        if stop_early.is_set():
                            result.interrupted = True
                            break
                        chunk = audio[pos : pos + frame]
                        due = due_in_s(result.started_at, pos + chunk.size, time.monotonic())
                        if realtime and due > 0:
                            with anyio.move_on_after(due):
                                await stop_early.wait()
                        await stalls.send(encode(chunk, encoding))
                    await stalls.send(json.dumps({"type": "stop"}))
                except ConnectionClosed:
                    return  # the server closed early; its close code says why
                # The server scores what is queued, then sends the summary and
                # closes; a silent one would hold us forever.
                while True:
                    heard = len(result.events)
                    await anyio.sleep(reply_timeout_s)
                    if len(result.events) == heard:
                        fail(
                            NetworkError(f"{url}: no answer for {reply_timeout_s:g} s after the audio ended")
                        )
                        return

            async def interrupts() -> None:
                with anyio.open_signal_receiver(signal.SIGINT) as signals:
                    async for _ in signals:
                        if stop_early.is_set():  # the second Ctrl-C: stop waiting
                            fail(KeyboardInterrupt())
                            return
                        stop_early.set()

            tg.start_soon(receive)
            tg.start_soon(send)
            tg.start_soon(stalls.watch, url, fail)
            if stop_on_sigint:
                tg.start_soon(interrupts)
        if failures:
            raise failures[0]
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
    return result


class _SendWatch:
    """Gives up on a server that takes no audio and says nothing.

    A server scoring behind reads slowly on purpose (TCP pushes back), and
    a send then waits, but its events keep coming. A server that vanished
    without closing (a network cut, a frozen host) reads nothing and sends
    nothing: the send would wait for TCP's own timeout, many minutes. Only
    time spent inside a send that is waiting counts (a send that does not
    wait is never seen pending), with nothing heard meanwhile."""

    def __init__(self, ws: ClientConnection, timeout_s: float) -> None:
        self._ws = ws
        self.timeout_s = timeout_s
        self._blocked_since: float | None = None
        self._heard_at = -math.inf

    def heard(self) -> None:
        self._heard_at = anyio.current_time()

    async def send(self, message: str | bytes) -> None:
        self._blocked_since = anyio.current_time()
        try:
            await self._ws.send(message)
        finally:
            self._blocked_since = None

    def _stalled_s(self, now: float) -> float:
        if self._blocked_since is None:
            return 0.0
        return now - max(self._blocked_since, self._heard_at)

    async def watch(self, url: str, fail: Callable[[BaseException], None]) -> None:
        while True:
            await anyio.sleep(self.timeout_s / 4)
            if self._stalled_s(anyio.current_time()) >= self.timeout_s:
                # No close handshake: its frame would wait behind the audio a
                # server that reads nothing never takes (10 s, then 10 more).
                self._ws.transport.abort()
                fail(
                    NetworkError(
                        f"{url}: the server took no audio and sent nothing for {self.timeout_s:g} s "
                        "(gone without closing?)"
                    )
                )
                return


@asynccontextmanager
async def _connection(url: str, headers: dict[str, str] | None) -> AsyncIterator[ClientConnection]:
    """An open connection, closed with the closing handshake; its socket freed however we leave.

    A caller's cancellation (a timeout around :func:`send_audio`) cancels the
    closing handshake too, and ``websockets`` then leaves the socket open until
    the garbage collector finds it after the event loop is gone (a
    ResourceWarning, in whatever code runs then). After a completed handshake
    the abort does nothing.
    """
    # No pong deadline: while the server holds an upload back (it reads no
    # faster than it scores), our pings wait in the socket behind our own
    # audio, and websockets' 20 s deadline cut long uploads. A server that
    # goes silent after the audio is caught by ``reply_timeout_s``.
    ws = await connect(url, additional_headers=headers, max_size=None, open_timeout=30, ping_timeout=None)
    try:
        async with ws:
            yield ws
    finally:
        ws.transport.abort()


def _event(message: str | bytes) -> dict[str, Any]:
    """One server message: a JSON object (an event), else a :class:`ProtocolError`."""
    try:
        event = json.loads(message) if isinstance(message, str) else None
    except ValueError:
        event = None
    if not isinstance(event, dict):
        shown = message[:80] if isinstance(message, str) else f"{len(message)} bytes of binary data"
        raise ProtocolError(
            f"the server sent {shown!r}; expected a JSON event object", CloseCode.PROTOCOL_ERROR
        )
    return event
