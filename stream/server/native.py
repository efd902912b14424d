"""The native protocol on ``/``.

1. Client sends text ``{"type":"start","sample_rate":N,"encoding":"pcm_s16le"|"f32le"|"mulaw","channels":1|2}``.
2. Client sends binary audio frames of any size; the server sends events back as JSON text.
3. Client sends ``{"type":"stop"}``; the server sends the remaining events and a
   ``summary``, then closes with 1000.
"""

from __future__ import annotations

import json
from typing import Any

import anyio

from spoofwatch.errors import ProtocolError

from ..events import event_json
from .codecs import ENCODINGS, INVALID_PAYLOAD, decode
from .context import ServerContext
from .session import StreamSession

PROTOCOL_ERROR = 1002
UNSUPPORTED = 1003
MAX_SAMPLE_RATE_HZ = 192_000


def parse_json(message: str | bytes, what: str, key: str = "type") -> dict[str, Any]:
    if isinstance(message, bytes):
        raise ProtocolError(
            f"expected a JSON text {what} message, got {len(message)} bytes of binary audio", PROTOCOL_ERROR
        )
    try:
        data = json.loads(message)
    except json.JSONDecodeError:
        raise ProtocolError(
            f"expected a JSON {what} message, got {message[:60]!r}", INVALID_PAYLOAD
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get(key), str):
        raise ProtocolError(
            f"expected a JSON object with a string {key!r} for the {what} message", INVALID_PAYLOAD
        )
    return data


def parse_start(message: str | bytes) -> tuple[int, str, int]:
    """``(sample_rate, encoding, channels)`` from the start message."""
    data = parse_json(message, "start")
    if data["type"] != "start":
        raise ProtocolError(
            f"expected the first message to be type 'start', got {data['type']!r}", PROTOCOL_ERROR
        )
    rate, encoding, channels = data.get("sample_rate"), data.get("encoding"), data.get("channels", 1)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 4000 <= rate <= MAX_SAMPLE_RATE_HZ:
        raise ProtocolError(
            f"expected an integer sample_rate in [4000, {MAX_SAMPLE_RATE_HZ}], got {rate!r}", UNSUPPORTED
        )
    if encoding not in ENCODINGS:
        raise ProtocolError(
            f"unknown encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}", UNSUPPORTED
        )
    if isinstance(channels, bool) or not isinstance(channels, int) or channels not in (1, 2):
        raise ProtocolError(f"expected channels 1 or 2, got {channels!r}", UNSUPPORTED)
    return rate, str(encoding), int(channels)


async def handle_native(ws: Any, ctx: ServerContext) -> None:
    idle = ctx.config.idle_timeout_s
    with anyio.fail_after(idle):
        rate, encoding, channels = parse_start(await ws.recv())
    stream_id = ctx.new_stream_id()

    async def emit(event: dict[str, Any]) -> None:
        await ctx.sinks.emit(event)
        await ws.send(event_json(event))

    session = StreamSession(
        ctx.new_engine(), ctx.batcher, emit, rate, ctx.config.max_stream_duration_s, {"stream_id": stream_id}
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.serve)
        while True:
            with anyio.fail_after(idle):
                message = await ws.recv()
            if isinstance(message, bytes):
                await session.push(decode(message, encoding, channels))
                continue
            control = parse_json(message, "control")
            if control["type"] == "stop":
                break
            raise ProtocolError(
                f"unknown control message type {control['type']!r}: expected 'stop'", PROTOCOL_ERROR
            )
        session.close_input()
    await session.finish()
    await ws.close(1000, "stream complete")
