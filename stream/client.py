"""The reference client of the native protocol (``spoofwatch send``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import CloseCode, InputError, NetworkError, ProtocolError

from .codecs import encode
from .sources.file import due_in_s

#: Audio per binary frame: 20 ms, like most telephony stacks.
FRAME_MS = 20


@dataclass
class SendResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    #: Wall-clock time (monotonic) at which audio of stream time 0 was due.
    started_at: float = 0.0
    #: Monotonic receive time of each event, parallel to ``events``.
    received_at: list[float] = field(default_factory=list)


async def send_audio(
    audio: npt.NDArray[np.float32],
    url: str,
    encoding: str = "pcm_s16le",
    realtime: bool = False,
    token: str | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> SendResult:
    """Stream 16 kHz mono audio to ``url``; returns every event and how the server closed.

    A connection that cannot be made raises one clear error: :class:`InputError`
    for a URL that is not ``ws://``/``wss://``, :class:`ProtocolError` when the
    server refuses the upgrade (401 wrong token, 404 path) or answers a path that
    is not a WebSocket endpoint (``/healthz``), :class:`NetworkError`
    when nothing answers.
    """
    _check_url(url)
    try:
        return await _send_audio(audio, url, encoding, realtime, token, on_event)
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
        raise NetworkError(f"{url}: cannot connect: {exc.strerror or exc}") from None


def _check_url(url: str) -> None:
    """A ws:// or wss:// URL with a valid host and port, before connecting
    (``websockets`` reports a bad port or IPv6 literal as a bare ValueError)."""
    from urllib.parse import urlsplit

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
) -> SendResult:
    result = SendResult()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    frame = SAMPLE_RATE_HZ * FRAME_MS // 1000
    async with connect(url, additional_headers=headers, max_size=None, open_timeout=30) as ws:

        async def receive() -> None:
            try:
                async for message in ws:
                    event = json.loads(message)
                    result.events.append(event)
                    result.received_at.append(time.monotonic())
                    if on_event:
                        on_event(event)
            except ConnectionClosed:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            start = {"type": "start", "sample_rate": SAMPLE_RATE_HZ, "encoding": encoding, "channels": 1}
            try:
                await ws.send(json.dumps(start))
                result.started_at = time.monotonic()
                for pos in range(0, audio.size, frame):
                    chunk = audio[pos : pos + frame]
                    if (
                        realtime
                        and (delay := due_in_s(result.started_at, pos + chunk.size, time.monotonic())) > 0
                    ):
                        await anyio.sleep(delay)
                    await ws.send(encode(chunk, encoding))
                await ws.send(json.dumps({"type": "stop"}))
            except ConnectionClosed:
                pass  # the server closed early; its close code says why
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
    return result
