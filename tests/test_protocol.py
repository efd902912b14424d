"""The Sans-I/O wire protocols: messages in, stream events out, errors with
their close code. No sockets, no server."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from spoofwatch.errors import CloseCode, ProtocolError
from spoofwatch.stream.codecs import decode, encode, mulaw_encode
from spoofwatch.stream.protocol import (
    NATIVE_TRACK,
    AudioIn,
    NativeProtocol,
    StreamStart,
    StreamStop,
    TwilioProtocol,
)

START = json.dumps({"type": "start", "sample_rate": 44100, "encoding": "pcm_s16le", "channels": 2})


def start(**fields: object) -> str:
    return json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", **fields})


class TestNative:
    def test_start_audio_stop(self) -> None:
        proto = NativeProtocol()
        assert proto.receive(START) == [StreamStart(NATIVE_TRACK, 44100)]
        stereo = np.array([[0.5, -0.5], [0.25, 0.25]], np.float32)
        (audio,) = proto.receive(encode(stereo.reshape(-1), "pcm_s16le"))
        assert isinstance(audio, AudioIn) and audio.track == NATIVE_TRACK
        np.testing.assert_allclose(audio.samples, [0.0, 0.25], atol=1e-4)  # mixed to mono
        assert proto.receive(json.dumps({"type": "stop"})) == [StreamStop()]

    @pytest.mark.parametrize(
        ("messages", "code", "reason"),
        [
            (["start please"], CloseCode.INVALID_PAYLOAD, "expected a JSON start"),
            ([b"\x00\x00"], CloseCode.PROTOCOL_ERROR, "binary audio"),
            ([json.dumps({"type": "stop"})], CloseCode.PROTOCOL_ERROR, "type 'start'"),
            ([start(encoding="opus")], CloseCode.UNSUPPORTED, "unknown encoding 'opus'"),
            ([start(sample_rate=1)], CloseCode.UNSUPPORTED, "sample_rate in [4000, 192000]"),
            ([start(sample_rate=True)], CloseCode.UNSUPPORTED, "integer sample_rate"),
            ([start(channels=3)], CloseCode.UNSUPPORTED, "channels 1 or 2"),
            ([start(), b"\x00" * 3], CloseCode.INVALID_PAYLOAD, "got 3 bytes"),
            (
                [start(encoding="f32le"), np.array([np.nan], "<f4").tobytes()],
                CloseCode.INVALID_PAYLOAD,
                "NaN or Inf",
            ),
            ([start(), json.dumps({"type": "pause"})], CloseCode.PROTOCOL_ERROR, "expected 'stop'"),
            (
                [start(), start()],
                CloseCode.PROTOCOL_ERROR,
                "start sent twice: after start, expected audio or 'stop'",
            ),
            ([start(), json.dumps([1, 2])], CloseCode.INVALID_PAYLOAD, "JSON object"),
            ([start(), json.dumps({"type": "stop"}), b"\x00\x00"], CloseCode.PROTOCOL_ERROR, "after stop"),
        ],
    )
    def test_errors_carry_their_close_code(
        self, messages: list[str | bytes], code: CloseCode, reason: str
    ) -> None:
        proto = NativeProtocol()
        with pytest.raises(ProtocolError) as info:
            for message in messages:
                proto.receive(message)
        assert info.value.close_code is code
        assert reason in str(info.value)


def twilio(event: str, **fields: object) -> str:
    return json.dumps({"event": event, "streamSid": "MZ1", **fields})


TWILIO_START = twilio(
    "start",
    start={
        "callSid": "CA1",
        "tracks": ["inbound", "outbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
)


def media(track: str, audio: np.ndarray) -> str:
    return twilio("media", media={"track": track, "payload": base64.b64encode(mulaw_encode(audio)).decode()})


class TestTwilio:
    def test_call_with_both_tracks(self) -> None:
        proto = TwilioProtocol()
        assert proto.receive(twilio("connected")) == []
        assert proto.receive(TWILIO_START) == [
            StreamStart("inbound", 8000, {"callSid": "CA1", "streamSid": "MZ1", "track": "inbound"}),
            StreamStart("outbound", 8000, {"callSid": "CA1", "streamSid": "MZ1", "track": "outbound"}),
        ]
        x = (0.3 * np.sin(np.arange(160) / 5)).astype(np.float32)
        (audio,) = proto.receive(media("outbound", x))
        assert isinstance(audio, AudioIn) and audio.track == "outbound"
        np.testing.assert_array_equal(audio.samples, decode(mulaw_encode(x), "mulaw", 1))
        assert proto.receive(twilio("mark", mark={"name": "x"})) == []
        assert proto.receive(twilio("dtmf", dtmf={"digit": "1"})) == []
        assert proto.receive(twilio("stop")) == [StreamStop()]

    def test_unknown_message_types_are_ignored_with_one_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Twilio has added message types before (mark, dtmf): a new one ended live calls with 1002."""
        proto = TwilioProtocol()
        assert proto.receive(twilio("hangup")) == []  # before start too: it carries nothing
        assert len(proto.receive(TWILIO_START)) == 2
        assert proto.receive(twilio("transcript", text="x" * 1000)) == []
        x = np.zeros(160, np.float32)
        assert [type(e) for e in proto.receive(media("inbound", x))] == [AudioIn]
        assert proto.receive(twilio("stop")) == [StreamStop()]
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "ignoring Twilio message 'hangup'" in warnings[0]

    @pytest.mark.parametrize(
        ("messages", "code", "reason"),
        [
            ([media("inbound", np.zeros(8, np.float32))], CloseCode.PROTOCOL_ERROR, "before start"),
            ([b"\x00"], CloseCode.PROTOCOL_ERROR, "binary audio"),
            (["{"], CloseCode.INVALID_PAYLOAD, "expected a JSON Twilio"),
            ([json.dumps({"no": "event"})], CloseCode.INVALID_PAYLOAD, "string 'event'"),
            (
                [twilio("start", start={"mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000}})],
                CloseCode.UNSUPPORTED,
                "expected mediaFormat audio/x-mulaw",
            ),
            (
                [TWILIO_START, twilio("media", media={"track": "inbound", "payload": "%%%"})],
                CloseCode.INVALID_PAYLOAD,
                "not valid base64",
            ),
            (
                [TWILIO_START, twilio("media", media={"track": "inbound", "payload": 5})],
                CloseCode.INVALID_PAYLOAD,
                "base64 string",
            ),
            (
                [TWILIO_START, media("both", np.zeros(8, np.float32))],
                CloseCode.PROTOCOL_ERROR,
                "did not announce",
            ),
            ([TWILIO_START, TWILIO_START], CloseCode.PROTOCOL_ERROR, "start sent twice: expected media"),
            ([TWILIO_START, twilio("stop"), twilio("mark")], CloseCode.PROTOCOL_ERROR, "after stop"),
            ([twilio("connected"), twilio("stop")], CloseCode.PROTOCOL_ERROR, "stop before start"),
            (
                [TWILIO_START, json.dumps({"event": "media", "streamSid": "MZ2", "media": {"payload": ""}})],
                CloseCode.PROTOCOL_ERROR,
                "streamSid changed from the start's 'MZ1'",
            ),
            (
                [
                    twilio(
                        "start",
                        start={
                            "tracks": ["inbound", "foo"],
                            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                        },
                    )
                ],
                CloseCode.INVALID_PAYLOAD,
                "expected start.tracks from ['inbound', 'outbound'], got 'foo'",
            ),
        ],
    )
    def test_errors_carry_their_close_code(
        self, messages: list[str | bytes], code: CloseCode, reason: str
    ) -> None:
        proto = TwilioProtocol()
        with pytest.raises(ProtocolError) as info:
            for message in messages:
                proto.receive(message)
        assert info.value.close_code is code
        assert reason in str(info.value)


def test_protocol_error_requires_a_close_code() -> None:
    with pytest.raises(TypeError, match="needs a CloseCode"):
        ProtocolError("bad", 1003)  # type: ignore[arg-type]
    assert ProtocolError("bad", CloseCode.UNSUPPORTED).close_code == 1003
