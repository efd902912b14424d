"""Twilio Media Streams on ``/twilio``.

Twilio sends JSON text messages: ``connected``, ``start`` (``streamSid``,
``callSid``, ``tracks``, ``mediaFormat`` audio/x-mulaw 8000 Hz mono),
``media`` (base64 μ-law ``payload``, ``track``, ``chunk``, ``timestamp``),
``mark``, ``dtmf`` and ``stop``. Twilio does not accept arbitrary messages
back, so events go to the server's sinks, tagged with ``callSid``,
``streamSid`` and ``track``; each track is scored as its own stream.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

import anyio

from spoofwatch.errors import ProtocolError

from .codecs import INVALID_PAYLOAD, decode
from .context import ServerContext
from .native import PROTOCOL_ERROR, UNSUPPORTED, parse_json
from .session import StreamSession

log = logging.getLogger(__name__)
TWILIO_RATE_HZ = 8000
TRACKS = ("inbound", "outbound")


def _media_format(start: dict[str, Any]) -> None:
    fmt = start.get("mediaFormat") or {}
    if (
        fmt.get("encoding") != "audio/x-mulaw"
        or fmt.get("sampleRate") != TWILIO_RATE_HZ
        or fmt.get("channels", 1) != 1
    ):
        raise ProtocolError(
            f"expected mediaFormat audio/x-mulaw, 8000 Hz, 1 channel; got {fmt!r}", UNSUPPORTED
        )


def _payload(media: dict[str, Any]) -> bytes:
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise ProtocolError("expected a base64 string in media.payload", INVALID_PAYLOAD)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("media.payload is not valid base64", INVALID_PAYLOAD) from None


async def handle_twilio(ws: Any, ctx: ServerContext) -> None:
    # Each track is a stream against --max-streams: the app counted one, the
    # call claims the others at ``start`` and they are released here.
    extra_tracks = [0]
    try:
        await _handle_call(ws, ctx, extra_tracks)
    finally:
        ctx.release_streams(extra_tracks[0])


async def _handle_call(ws: Any, ctx: ServerContext, extra_tracks: list[int]) -> None:
    idle = ctx.config.idle_timeout_s
    sessions: dict[str, StreamSession] = {}
    async with anyio.create_task_group() as tg:
        while True:
            with anyio.fail_after(idle):
                message = parse_json(await ws.recv(), "Twilio", key="event")
            kind = message["event"]
            if kind == "start" and not sessions:
                start = message.get("start") or {}
                _media_format(start)
                tracks = [t for t in TRACKS if t in (start.get("tracks") or ["inbound"])] or ["inbound"]
                stream_sid = message.get("streamSid") or start.get("streamSid")
                if not isinstance(stream_sid, str) or not stream_sid:
                    raise ProtocolError("expected a string streamSid in the start message", PROTOCOL_ERROR)
                ctx.claim_streams(len(tracks) - 1)
                extra_tracks[0] = len(tracks) - 1
                tags = {"callSid": start.get("callSid"), "streamSid": stream_sid}
                for track in tracks:
                    engine = ctx.new_engine()
                    sessions[track] = StreamSession(
                        engine,
                        ctx.batcher,
                        ctx.sinks.emit,
                        TWILIO_RATE_HZ,
                        ctx.config.max_stream_duration_s,
                        {**tags, "track": track},
                    )
                    tg.start_soon(sessions[track].serve)
            elif kind == "media":
                if not sessions:
                    raise ProtocolError("media arrived before start", PROTOCOL_ERROR)
                media = message.get("media") or {}
                track = media.get("track", "inbound")
                if track not in sessions:
                    raise ProtocolError(
                        f"media for track {track!r}, which start did not announce", PROTOCOL_ERROR
                    )
                await sessions[track].push(decode(_payload(media), "mulaw", 1))
            elif kind == "stop":
                break
            elif kind in ("connected", "mark", "dtmf"):
                log.debug("twilio %s message", kind)
            else:
                raise ProtocolError(f"unexpected Twilio message {kind!r}", PROTOCOL_ERROR)
        for session in sessions.values():
            session.close_input()
    for session in sessions.values():
        await session.finish()
    await ws.close(1000, "stream complete")
