"""Sans-I/O wire protocols: the native protocol and Twilio Media Streams.

Each protocol object takes one WebSocket message at a time (``str`` for a
text frame, ``bytes`` for a binary one) and returns what it meant: a stream
starting, decoded audio for a track, or the end of input. It never touches a
socket, so every rule is testable with plain values; a message that breaks a
rule raises :class:`ProtocolError` carrying its :class:`CloseCode`. The
server's handlers are thin adapters around these classes
(``spoofwatch.stream.server.connection``).

Native protocol (path ``/``):

1. text ``{"type":"start","sample_rate":N,"encoding":"pcm_s16le"|"f32le"|"mulaw","channels":1|2}``;
2. binary audio frames of any size (events go back to the client as JSON text);
3. text ``{"type":"stop"}``: the server sends the remaining events and a
   ``summary``, then closes with 1000.

Twilio Media Streams (path ``/twilio``): JSON text messages ``connected``,
``start`` (``streamSid``, ``callSid``, ``tracks``, ``mediaFormat``
audio/x-mulaw 8000 Hz mono), ``media`` (base64 μ-law ``payload``,
``track``), ``mark``, ``dtmf`` and ``stop`` (other message types are
ignored, with one warning). Twilio accepts nothing back,
so events go to the server's sinks, tagged with ``callSid``, ``streamSid``
and ``track``; each track is its own stream.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from spoofwatch.errors import CloseCode, ProtocolError

from .codecs import ENCODINGS, decode

log = logging.getLogger(__name__)

TWILIO_RATE_HZ = 8_000
#: Where a server takes Twilio Media Streams (the native protocol is on ``/``).
TWILIO_PATH = "/twilio"
TWILIO_TRACKS = ("inbound", "outbound")
#: The track of a call whose ``start`` names none (Twilio's default), and of its media.
DEFAULT_TWILIO_TRACK = TWILIO_TRACKS[0]
#: The single track of a native stream.
NATIVE_TRACK = "audio"


@dataclass(frozen=True)
class StreamStart:
    """A new stream (one per track) at ``rate_hz``, its events tagged with ``tags``."""

    track: str
    rate_hz: int
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class AudioIn:
    """Decoded mono float32 audio at the track's rate."""

    track: str
    samples: npt.NDArray[np.float32]


@dataclass(frozen=True)
class StreamStop:
    """The client ended its input normally."""


ProtocolEvent = StreamStart | AudioIn | StreamStop


class WireProtocol(Protocol):
    #: Whether the client reads events back on the connection.
    replies: bool

    def receive(self, message: str | bytes) -> list[ProtocolEvent]: ...


def parse_json(message: str | bytes, what: str, key: str = "type") -> dict[str, Any]:
    """A JSON object with a string ``key``, from a text message."""
    if isinstance(message, bytes):
        raise ProtocolError(
            f"expected a JSON text {what} message, got {len(message)} bytes of binary audio",
            CloseCode.PROTOCOL_ERROR,
        )
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):  # JSONDecodeError, and what the decoder raises
        # for an integer past Python's digit limit or for arrays nested deeper than its stack
        raise ProtocolError(
            f"expected a JSON {what} message, got {message[:60]!r}", CloseCode.INVALID_PAYLOAD
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get(key), str):
        raise ProtocolError(
            f"expected a JSON object with a string {key!r} for the {what} message", CloseCode.INVALID_PAYLOAD
        )
    return data


def parse_start(message: str | bytes) -> tuple[int, str, int]:
    """``(sample_rate, encoding, channels)`` from the native start message."""
    data = parse_json(message, "start")
    if data["type"] != "start":
        raise ProtocolError(
            f"expected the first message to be type 'start', got {data['type']!r}", CloseCode.PROTOCOL_ERROR
        )
    rate, encoding, channels = data.get("sample_rate"), data.get("encoding"), data.get("channels", 1)
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int)
        or not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ
    ):
        raise ProtocolError(
            f"expected an integer sample_rate in [{MIN_SAMPLE_RATE_HZ}, {MAX_SAMPLE_RATE_HZ}], got {rate!r}",
            CloseCode.UNSUPPORTED,
        )
    if encoding not in ENCODINGS:
        raise ProtocolError(
            f"unknown encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}", CloseCode.UNSUPPORTED
        )
    # bool is an int (True == 1) and 1.0 == 1: neither is a channel count.
    if isinstance(channels, bool) or not isinstance(channels, int) or channels not in (1, 2):
        raise ProtocolError(f"expected channels 1 or 2, got {channels!r}", CloseCode.UNSUPPORTED)
    return rate, str(encoding), int(channels)


class NativeProtocol:
    """start, then binary audio, then stop."""

    replies = True

    def __init__(self) -> None:
        self._format: tuple[str, int] | None = None  # (encoding, channels) once started
        self.stopped = False

    def receive(self, message: str | bytes) -> list[ProtocolEvent]:
        if self.stopped:
            raise ProtocolError("expected nothing after stop", CloseCode.PROTOCOL_ERROR)
        if self._format is None:
            rate, encoding, channels = parse_start(message)
            self._format = (encoding, channels)
            return [StreamStart(NATIVE_TRACK, rate)]
        if isinstance(message, bytes):
            return [AudioIn(NATIVE_TRACK, decode(message, *self._format))]
        control = parse_json(message, "control")
        if control["type"] == "start":
            raise ProtocolError(
                "start sent twice: after start, expected audio or 'stop'", CloseCode.PROTOCOL_ERROR
            )
        if control["type"] != "stop":
            raise ProtocolError(
                f"unknown control message type {control['type']!r}: expected 'stop'", CloseCode.PROTOCOL_ERROR
            )
        self.stopped = True
        return [StreamStop()]


#: Longest streamSid/callSid kept (Twilio's are 34 characters): they tag every event.
TWILIO_SID_MAX_CHARS = 128


def _object(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """``data[key]``, a JSON object (absent or null: empty)."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(
            f"expected {where}{key} to be a JSON object, got {type(value).__name__}",
            CloseCode.INVALID_PAYLOAD,
        )
    return value


def _check_media_format(start: dict[str, Any]) -> None:
    fmt = _object(start, "mediaFormat", "start.")
    if (
        fmt.get("encoding") != "audio/x-mulaw"
        or fmt.get("sampleRate") != TWILIO_RATE_HZ
        or fmt.get("channels", 1) != 1
    ):
        raise ProtocolError(
            f"expected mediaFormat audio/x-mulaw, {TWILIO_RATE_HZ} Hz, 1 channel; got {fmt!r}",
            CloseCode.UNSUPPORTED,
        )


def _media_payload(media: dict[str, Any]) -> bytes:
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise ProtocolError("expected a base64 string in media.payload", CloseCode.INVALID_PAYLOAD)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("media.payload is not valid base64", CloseCode.INVALID_PAYLOAD) from None


class TwilioProtocol:
    """Twilio Media Streams: one ``start``, ``media`` per announced track, ``stop``."""

    replies = False

    def __init__(self) -> None:
        self.tracks: tuple[str, ...] = ()
        self.stopped = False
        self._ignored = False  # an unknown message type was logged
        self.stream_sid: str | None = None

    def receive(self, message: str | bytes) -> list[ProtocolEvent]:
        data = parse_json(message, "Twilio", key="event")
        kind = data["event"]
        if self.stopped:
            raise ProtocolError(f"expected nothing after stop, got {kind!r}", CloseCode.PROTOCOL_ERROR)
        sid = data.get("streamSid")
        if self.tracks and sid is not None and sid != self.stream_sid:
            # One connection is one Twilio stream: its events are tagged with the start's sid.
            raise ProtocolError(
                f"streamSid changed from the start's {self.stream_sid!r}: expected one stream per connection",
                CloseCode.PROTOCOL_ERROR,
            )
        if kind == "start" and not self.tracks:
            start = _object(data, "start", "")
            _check_media_format(start)
            stream_sid = data.get("streamSid") or start.get("streamSid")
            if not isinstance(stream_sid, str) or not stream_sid:
                raise ProtocolError(
                    "expected a string streamSid in the start message", CloseCode.PROTOCOL_ERROR
                )
            if len(stream_sid) > TWILIO_SID_MAX_CHARS:  # it tags every event of the stream
                raise ProtocolError(
                    f"expected a streamSid of at most {TWILIO_SID_MAX_CHARS} characters, got {len(stream_sid)}",
                    CloseCode.INVALID_PAYLOAD,
                )
            announced = start.get("tracks") or [DEFAULT_TWILIO_TRACK]
            if not isinstance(announced, list):
                raise ProtocolError(
                    f"expected start.tracks to be a list, got {type(announced).__name__}",
                    CloseCode.INVALID_PAYLOAD,
                )
            unknown = [t for t in announced if t not in TWILIO_TRACKS]
            if unknown:  # refused now: dropping them made every later media message a puzzling error
                raise ProtocolError(
                    f"expected start.tracks from {list(TWILIO_TRACKS)}, got {unknown[0]!r}",
                    CloseCode.INVALID_PAYLOAD,
                )
            self.tracks = tuple(dict.fromkeys(announced))
            self.stream_sid = stream_sid
            call_sid = start.get("callSid")
            if not (isinstance(call_sid, str) and len(call_sid) <= TWILIO_SID_MAX_CHARS):
                call_sid = None  # informative only: not worth refusing a call, nor copying into every event
            tags = {"callSid": call_sid, "streamSid": stream_sid}
            return [StreamStart(t, TWILIO_RATE_HZ, {**tags, "track": t}) for t in self.tracks]
        if kind == "media":
            if not self.tracks:
                raise ProtocolError("media arrived before start", CloseCode.PROTOCOL_ERROR)
            media = _object(data, "media", "")
            track = media.get("track", DEFAULT_TWILIO_TRACK)
            if track not in self.tracks:
                raise ProtocolError(
                    f"media for track {track!r}, which start did not announce", CloseCode.PROTOCOL_ERROR
                )
            return [AudioIn(track, decode(_media_payload(media), "mulaw", 1))]
        if kind == "stop":
            if not self.tracks:  # no stream to end: not Twilio's order
                raise ProtocolError("stop before start: expected start first", CloseCode.PROTOCOL_ERROR)
            self.stopped = True
            return [StreamStop()]
        if kind in ("connected", "mark", "dtmf"):
            return []
        if kind == "start":
            raise ProtocolError(
                "Twilio start sent twice: expected media, mark, dtmf or stop", CloseCode.PROTOCOL_ERROR
            )
        # Twilio has added message types before (mark, dtmf): one more must not
        # end live calls. It carries no audio, and does not count as activity.
        if not self._ignored:
            log.warning(
                "ignoring Twilio message %r (expected connected, start, media, mark, dtmf or stop); "
                "further unknown ones are ignored silently",
                str(kind)[:64],
            )
        self._ignored = True
        return []
