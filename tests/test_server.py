"""The WebSocket server end to end on loopback with real sockets."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from helpers import BONAFIDE_UTT, ONSET_S, FakeScorer, la_clip
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from spoofwatch.audio import read_audio, resample
from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.commands.server_cmds import TOKEN_ENV
from spoofwatch.errors import ConfigError
from spoofwatch.stream.client import send_audio
from spoofwatch.stream.codecs import decode, encode, mulaw_encode
from spoofwatch.stream.server.app import WebSocketServer
from spoofwatch.stream.server.batcher import BatchScorer
from spoofwatch.stream.server.context import ServerConfig, ServerContext
from spoofwatch.stream.server.load import LoadMonitor, SheddingConfig
from spoofwatch.stream.server.sinks import ServerSinks, webhook_sink_name

pytestmark = pytest.mark.anyio


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def frozen_session_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams past their first second count as uploads whatever the machine's
    speed: they are slowed down, never dropped, so window counts are exact."""
    monkeypatch.setattr(ServerContext, "clock", staticmethod(lambda: 0.0))


@pytest.fixture()
def concat(spoof_stream: np.ndarray) -> np.ndarray:
    return spoof_stream


def make_ctx(
    scorer: Any, vad: Any, tmp_path: Path, webhook: str | None = None, **limits: Any
) -> ServerContext:
    # No load shedding: these tests must not depend on this machine's speed.
    config = ServerConfig(host="127.0.0.1", port=0, **{"shedding": None, **limits})
    sinks = ServerSinks(jsonl=tmp_path / "events.jsonl", webhook=webhook)
    return ServerContext(config, BatchScorer(scorer), load_calibration(model="aasist-l").live, vad, sinks)


@asynccontextmanager
async def running(ctx: ServerContext, close_timeout_s: float = 30.0) -> AsyncIterator[str]:
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(WebSocketServer(ctx).run)
            yield f"ws://127.0.0.1:{port}"
            tg.cancel_scope.cancel()
    finally:
        ctx.sinks.close(close_timeout_s)


def jsonl(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]


def check_alert_after_onset(events: list[dict[str, Any]]) -> None:
    starts = [e for e in events if e["type"] == "alert_start"]
    assert starts and all(e["t"] > ONSET_S for e in starts)
    summary = events[-1]
    assert summary["type"] == "summary" and summary["windows"] == 24 and summary["dropped_windows"] == 0


@pytest.mark.parametrize("encoding", ["pcm_s16le", "f32le", "mulaw"])
async def test_native_protocol_each_encoding(
    encoding: str, concat: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    ctx = make_ctx(scorer, vad, tmp_path)
    async with running(ctx) as url:
        result = await send_audio(concat, url + "/", encoding=encoding)
    assert result.close_code == 1000
    check_alert_after_onset(result.events)
    assert {e["stream_id"] for e in result.events} == {"s1"}
    assert jsonl(tmp_path) == result.events  # --jsonl logs what the client got
    assert ctx.active_streams == 0


class NanScorer:
    """A model that fails on every window (as a broken GPU session would)."""

    window_samples = 64_600

    def scores(self, windows: np.ndarray) -> np.ndarray:
        return np.full(windows.shape[0], np.nan, np.float32)


async def test_a_model_failing_on_every_window_ends_the_stream_with_its_reason(
    concat: np.ndarray, vad: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It kept a stream running that could never alert; now the stream ends
    after MAX_MODEL_FAILURES_IN_ROW speech windows: 1011 naming the model
    error, an alert-free summary in the sinks, no traceback in the log."""
    from spoofwatch.stream.engine import MAX_MODEL_FAILURES_IN_ROW

    ctx = make_ctx(NanScorer(), vad, tmp_path)
    async with running(ctx) as url:
        result = await send_audio(np.tile(concat, 2), url + "/")
    assert result.close_code == 1011
    assert result.close_reason.startswith(
        f"model error: the model failed on {MAX_MODEL_FAILURES_IN_ROW} speech"
    )
    summary = jsonl(tmp_path)[-1]
    assert summary["type"] == "summary" and summary["scored_windows"] == 0
    assert summary["dropped_windows"] >= MAX_MODEL_FAILURES_IN_ROW
    assert ctx.active_streams == 0
    assert not [r for r in caplog.records if r.exc_info]  # said in one line, not a crash


def twilio_messages(inbound: np.ndarray, outbound: np.ndarray) -> list[str]:
    msgs = [{"event": "connected", "protocol": "Call", "version": "1.0.0"}]
    msgs.append(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ0001",
            "start": {
                "streamSid": "MZ0001",
                "accountSid": "AC1",
                "callSid": "CA0001",
                "tracks": ["inbound", "outbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )
    seq = 2
    for track, audio in (("inbound", inbound), ("outbound", outbound)):
        payload = mulaw_encode(audio)
        for chunk, pos in enumerate(range(0, len(payload), 160)):
            msgs.append(
                {
                    "event": "media",
                    "sequenceNumber": str(seq),
                    "streamSid": "MZ0001",
                    "media": {
                        "track": track,
                        "chunk": str(chunk + 1),
                        "timestamp": str(pos // 8),
                        "payload": base64.b64encode(payload[pos : pos + 160]).decode(),
                    },
                }
            )
            seq += 1
    msgs.append({"event": "mark", "streamSid": "MZ0001", "mark": {"name": "greeting"}})
    msgs.append({"event": "dtmf", "streamSid": "MZ0001", "dtmf": {"track": "inbound_track", "digit": "1"}})
    msgs.append({"event": "stop", "streamSid": "MZ0001", "stop": {"accountSid": "AC1", "callSid": "CA0001"}})
    return [json.dumps(m) for m in msgs]


async def test_twilio_media_stream(
    concat: np.ndarray,
    la_dir: Path,
    scorer: Any,
    vad: Any,
    tmp_path: Path,
    loopback_http: Callable[[type[http.server.BaseHTTPRequestHandler]], str],
) -> None:
    inbound = resample(concat, 16000, 8000)
    outbound = resample(np.tile(read_audio(la_clip(la_dir, BONAFIDE_UTT)), 4)[: 10 * 16000], 16000, 8000)
    posted: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    ctx = make_ctx(scorer, vad, tmp_path, webhook=loopback_http(Hook) + "/alerts")
    await _twilio_call(ctx, inbound, outbound)
    events = jsonl(tmp_path)
    assert all(e["callSid"] == "CA0001" and e["streamSid"] == "MZ0001" for e in events)
    check_alert_after_onset([e for e in events if e["track"] == "inbound"])
    outbound_events = [e for e in events if e["track"] == "outbound"]
    assert not [e for e in outbound_events if e["type"] == "alert_start"]
    assert outbound_events[-1]["type"] == "summary" and outbound_events[-1]["scored_windows"] > 0
    # The webhook got exactly the alert events, tagged with the call.
    assert posted == [e for e in events if e["type"] in ("alert_start", "alert_end")]
    assert posted and posted[0]["type"] == "alert_start" and posted[0]["callSid"] == "CA0001"


async def _twilio_call(ctx: ServerContext, inbound: np.ndarray, outbound: np.ndarray) -> None:
    async with running(ctx) as url, connect(url + "/twilio") as ws:
        for message in twilio_messages(inbound, outbound):
            await ws.send(message)
        with pytest.raises(ConnectionClosed):
            await ws.recv()  # Twilio gets nothing back; the server just closes
        assert ws.close_code == 1000


START = json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1})
STOP = json.dumps({"type": "stop"})


def f32_start(rate: int, channels: int = 1) -> str:
    return json.dumps({"type": "start", "sample_rate": rate, "encoding": "f32le", "channels": channels})


def burst_1e38() -> bytes:
    audio = 0.1 * np.sin(np.linspace(0, 500, 4000)).astype("<f4")
    audio[2000:2010] = 1e38
    return audio.astype("<f4").tobytes()


BAD_NATIVE = [
    ("non-JSON start", ["start please"], 1007, "expected a JSON start"),
    (
        "unknown encoding",
        [json.dumps({"type": "start", "sample_rate": 16000, "encoding": "opus", "channels": 1})],
        1003,
        "unknown encoding 'opus'",
    ),
    ("odd s16 byte count", [START, b"\x00" * 4097], 1007, "got 4097 bytes"),
    (
        "NaN f32",
        [
            json.dumps({"type": "start", "sample_rate": 16000, "encoding": "f32le", "channels": 1}),
            np.array([0.1, np.nan], "<f4").tobytes(),
        ],
        1007,
        "NaN or Inf",
    ),
    (
        "f32 3e38 at 44.1 kHz",
        [f32_start(44100), np.full(441, 3e38, "<f4").tobytes()],
        1007,
        "magnitude of 3e+38",
    ),
    (
        "f32 3e38 stereo",
        [f32_start(16000, 2), np.full(640, 3e38, "<f4").tobytes()],
        1007,
        "magnitude of 3e+38",
    ),
    ("f32 burst of 1e38 at 16 kHz", [f32_start(16000), burst_1e38()], 1007, "magnitude of 1e+38"),
    (
        "channels true",
        [json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": True})],
        1003,
        "expected channels 1 or 2, got True",
    ),
    (
        "channels 1.0",
        [json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1.0})],
        1003,
        "expected channels 1 or 2, got 1.0",
    ),
    ("audio before start", [b"\x00\x00" * 160], 1002, "binary audio"),
    ("bad control", [START, json.dumps({"type": "pause"})], 1002, "expected 'stop'"),
    ("oversize frame", [START, b"\x00" * (1 << 16)], 1009, ""),
]


async def _bad_client(url: str, messages: list[Any]) -> tuple[int | None, str]:
    async with connect(url) as ws:
        try:
            for m in messages:
                await ws.send(m)
            await ws.recv()
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        return ws.close_code, ws.close_reason or ""


async def test_bad_clients_do_not_disturb_a_good_stream(
    concat: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    ctx = make_ctx(scorer, vad, tmp_path, max_message_bytes=32 * 1024)
    bad_twilio = [
        json.dumps(
            {
                "event": "start",
                "streamSid": "MZ9",
                "start": {
                    "callSid": "C",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        ),
        json.dumps({"event": "media", "media": {"track": "inbound", "payload": "%%% not base64 %%%"}}),
    ]
    async with running(ctx) as url:
        good: dict[str, Any] = {}
        good_started, bad_done = anyio.Event(), anyio.Event()

        async def good_stream() -> None:
            good["result"] = await gated_client(url + "/", concat, good_started, bad_done)

        async with anyio.create_task_group() as tg:
            tg.start_soon(good_stream)
            await good_started.wait()  # the good stream is open and has sent audio
            for name, messages, code, reason in BAD_NATIVE:
                got_code, got_reason = await _bad_client(url + "/", messages)
                assert got_code == code, name
                assert reason in got_reason, (name, got_reason)
            assert await _bad_client(url + "/twilio", bad_twilio) == (
                1007,
                "media.payload is not valid base64",
            )
            assert (
                await _bad_client(url + "/twilio", [json.dumps({"event": "media", "media": {"payload": ""}})])
            )[0] == 1002
            bad_done.set()
    result = good["result"]
    assert result.close_code == 1000
    check_alert_after_onset(result.events)


async def test_hostile_json_and_loud_audio_get_their_close_codes(
    scorer: Any, vad: Any, tmp_path: Path
) -> None:
    """JSON that Python's decoder refuses beyond JSONDecodeError (an integer
    past its digit limit, nesting past its stack), Twilio fields of the wrong
    JSON type, and f32 audio within ±100 that the resampler rings past: each
    gets the close code of its kind, never 1011 "internal error"."""
    ctx = make_ctx(scorer, vad, tmp_path, max_message_bytes=32 * 1024)
    twilio_ok = json.loads(twilio_start(["inbound"]))
    square = np.where(np.sin(np.linspace(0, 2 * np.pi * 200, 48_000)) >= 0, 99.9, -99.9).astype("<f4")
    cases = [
        ("/", ['{"type": "start", "sample_rate": ' + "9" * 5000 + "}"], 1007, "expected a JSON start"),
        ("/", ['{"type": "start", "x": ' + "[" * 15000 + "]" * 15000 + "}"], 1007, "expected a JSON start"),
        (
            "/twilio",
            [json.dumps({**twilio_ok, "start": "inbound"})],
            1007,
            "expected start to be a JSON object",
        ),
        (
            "/twilio",
            [json.dumps({**twilio_ok, "start": {**twilio_ok["start"], "mediaFormat": "mulaw"}})],
            1007,
            "expected start.mediaFormat to be a JSON object",
        ),
        (
            "/twilio",
            [json.dumps({**twilio_ok, "start": {**twilio_ok["start"], "tracks": 7}})],
            1007,
            "expected start.tracks to be a list",
        ),
        (
            "/twilio",
            [twilio_start(["inbound"]), json.dumps({"event": "media", "media": ["inbound"]})],
            1007,
            "expected media to be a JSON object",
        ),
        (
            "/",
            [f32_start(48_000), *(square[i : i + 4800].tobytes() for i in range(0, 48_000, 4800)), STOP],
            1000,
            "",
        ),
    ]
    async with running(ctx) as url:
        for path, messages, code, reason in cases:
            got_code, got_reason = await _bad_client(url + path, messages)
            assert (got_code, reason in got_reason) == (code, True), (path, messages[0][:60], got_reason)


async def gated_client(url: str, audio: np.ndarray, started: anyio.Event, go_on: anyio.Event) -> Any:
    """Sends two seconds, waits for ``go_on``, sends the rest and stop; returns events and close."""
    from spoofwatch.stream.client import SendResult

    result = SendResult()
    async with connect(url) as ws:
        await ws.send(START)
        for pos in range(0, audio.size, 3200):
            if pos == 32000:
                started.set()
                await go_on.wait()
            await ws.send(encode(audio[pos : pos + 3200], "pcm_s16le"))
        await ws.send(json.dumps({"type": "stop"}))
        with pytest.raises(ConnectionClosed):
            while True:
                result.events.append(json.loads(await ws.recv()))
        result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
    return result


async def test_auth(scorer: Any, vad: Any, tmp_path: Path) -> None:
    ctx = make_ctx(scorer, vad, tmp_path, token="s3cret")
    audio = np.zeros(16000, np.float32)
    async with running(ctx) as url:
        for bad_url, headers in (
            (url + "/", None),
            (url + "/?token=wrong", None),
            (url + "/", {"Authorization": "Bearer nope"}),
        ):
            with pytest.raises(InvalidStatus) as info:
                async with connect(bad_url, additional_headers=headers):
                    pass
            assert info.value.response.status_code == 401
            # RFC 7235: a 401 names the scheme it wants.
            assert info.value.response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert (await send_audio(audio, url + "/", token="s3cret")).close_code == 1000
        assert (await send_audio(audio, url + "/?token=s3cret")).close_code == 1000
        for scheme in ("bearer", "BEARER"):  # schemes are case-insensitive (RFC 7235)
            async with connect(url + "/", additional_headers={"Authorization": f"{scheme} s3cret"}) as ws:
                await ws.send(START)
                await ws.send(json.dumps({"type": "stop"}))
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.recv()
                assert ws.close_code == 1000, (scheme, ws.close_reason)
    with pytest.raises(ConfigError, match="without --token"):
        ServerConfig(host="0.0.0.0").validate()
    ServerConfig(host="0.0.0.0", token="t").validate()
    ServerConfig(host="::1").validate()


async def test_limits(scorer: Any, vad: Any, tmp_path: Path) -> None:
    # The slot holder ends with its stop, not the idle timeout: a short timeout would
    # race the refused client's handshake, a long one cost its length (the idle
    # close, with its summary, is test_idle_timeout's). An hour: only a hang guard.
    ctx = make_ctx(scorer, vad, tmp_path, max_streams=1, max_stream_duration_s=2.0, idle_timeout_s=3600)
    async with running(ctx) as url:
        async with connect(url + "/") as first:
            await first.send(START)
            code, reason = await _bad_client(url + "/", [START])
            assert code == 1013 and "capacity" in reason
            await first.send(STOP)
            with anyio.fail_after(60):
                (summary,) = [json.loads(m) async for m in _until_closed(first)]
            assert summary["type"] == "summary" and summary["windows"] == 0
            assert (first.close_code, first.close_reason) == (1000, "stream complete")
        await streams_settle(ctx, 0)  # the slot is free again
        result = await send_audio(np.zeros(3 * 16000, np.float32), url + "/")
        assert result.close_code == 1008 and "maximum duration" in result.close_reason
        with pytest.raises(InvalidStatus):
            async with connect(url + "/nowhere"):
                pass
    assert ctx.active_streams == 0


async def test_client_vanishing_mid_frame_leaves_nothing(scorer: Any, vad: Any, tmp_path: Path) -> None:
    ctx = make_ctx(scorer, vad, tmp_path)
    async with running(ctx) as url:
        before = set(asyncio.all_tasks())
        for _ in range(5):
            ws = await connect(url + "/").__aenter__()
            await ws.send(START)
            await ws.send(encode(np.zeros(70000, np.float32), "pcm_s16le"))
            ws.transport.write(
                b"\x82\xfe\x40\x00\x01\x02\x03\x04" + b"\x00" * 100
            )  # header of a 16 KiB frame, then 100 bytes
            ws.transport.abort()
        with anyio.fail_after(60):  # every task the clients caused ends
            while ctx.active_streams or set(asyncio.all_tasks()) - before:  # noqa: ASYNC110 - no event to wait on for task exit
                await anyio.sleep(0.05)
    assert ctx.active_streams == 0
    ctx.sinks.close()
    summaries = [
        e
        for e in map(json.loads, (tmp_path / "events.jsonl").read_text().splitlines())
        if e["type"] == "summary"
    ]
    assert [e["reason"] for e in summaries] == ["disconnect"] * 5  # a sink tells a cut connection apart


async def test_idle_timeout(scorer: Any, vad: Any, tmp_path: Path) -> None:
    """The idle timer fires by itself: the test waits for the close, it does not race it."""
    ctx = make_ctx(scorer, vad, tmp_path, idle_timeout_s=0.5)
    async with running(ctx) as url, connect(url + "/") as ws:
        await ws.send(START)
        with anyio.fail_after(60):
            received = [json.loads(m) async for m in _until_closed(ws)]
        assert [e["type"] for e in received] == ["summary"]  # the stream still gets its summary
        assert received[0]["reason"] == "idle"
        assert (ws.close_code, ws.close_reason) == (1001, "idle for 0.5 s")


async def test_twilio_marks_and_empty_media_are_not_activity(scorer: Any, vad: Any, tmp_path: Path) -> None:
    """A call sending only marks (or media with an empty payload) held its slot forever:
    every Twilio message is non-empty JSON, so none looked like an empty frame."""
    ctx = make_ctx(scorer, vad, tmp_path, idle_timeout_s=0.5)
    fillers = [
        json.dumps({"event": "mark", "streamSid": "MZ7", "mark": {"name": "x"}}),
        json.dumps({"event": "media", "streamSid": "MZ7", "media": {"track": "inbound", "payload": ""}}),
    ]
    async with running(ctx) as url:
        for filler in fillers:
            async with connect(url + "/twilio") as call:
                await call.send(twilio_start(["inbound"]))
                with anyio.fail_after(60):
                    try:
                        while True:  # paced, not timed: the server alone decides when this ends
                            await call.send(filler)
                            await anyio.sleep(0.02)
                    except ConnectionClosed:
                        pass
                assert (call.close_code, call.close_reason) == (1001, "idle for 0.5 s"), filler
        await streams_settle(ctx, 0)
    summaries = [e for e in jsonl(tmp_path) if e["type"] == "summary"]
    assert len(summaries) == 2 and all(e["duration_s"] == 0 for e in summaries)


def test_codecs_round_trip() -> None:
    x = (0.5 * np.sin(np.linspace(0, 60, 4000))).astype(np.float32)
    for encoding, tol in (("pcm_s16le", 1e-4), ("f32le", 0.0), ("mulaw", 0.02)):
        np.testing.assert_allclose(decode(encode(x, encoding), encoding, 1), x, atol=tol)
    stereo = np.stack([x, -x], axis=1).reshape(-1).astype("<f4").tobytes()
    np.testing.assert_allclose(decode(stereo, "f32le", 2), 0.0, atol=1e-7)
    assert decode(bytes([0xFF, 0x7F, 0x00, 0x80]), "mulaw", 1).tolist() == pytest.approx(
        [0.0, 0.0, -32124 / 32768, 32124 / 32768]
    )


async def streams_settle(ctx: ServerContext, n: int) -> None:
    """Handlers release their slots just after the close frame; wait for that."""
    with anyio.fail_after(60):
        while ctx.active_streams != n:  # noqa: ASYNC110 - no event marks a handler's exit
            await anyio.sleep(0.01)


def twilio_start(tracks: list[str], stream_sid: str | None = "MZ7") -> str:
    start: dict[str, Any] = {
        "callSid": "CA7",
        "tracks": tracks,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    message: dict[str, Any] = {"event": "start", "start": start}
    if stream_sid is not None:
        message["streamSid"] = stream_sid
    return json.dumps(message)


async def _call_close_code(url: str, tracks: list[str]) -> int | None:
    """A Twilio call with ``tracks`` that starts and stops at once: its close code."""
    async with connect(url + "/twilio") as call:
        await call.send(twilio_start(tracks))
        await call.send(json.dumps({"event": "stop"}))
        with pytest.raises(ConnectionClosed):
            await call.recv()
    return call.close_code


async def test_twilio_tracks_count_against_max_streams(scorer: Any, vad: Any, tmp_path: Path) -> None:
    ctx = make_ctx(scorer, vad, tmp_path, max_streams=2)
    async with running(ctx) as url:
        async with connect(url + "/") as native:
            await native.send(START)  # one of the two slots
            code, reason = await _bad_client(url + "/twilio", [twilio_start(["inbound", "outbound"])])
            assert code == 1013 and "cannot add another track" in reason
            assert "server at capacity (2 streams)" in reason
            assert refused_count(ctx, "capacity") == 1  # counted like a refused connection
            await streams_settle(ctx, 1)  # the refused call released its slot
            # One track still fits beside the native stream.
            assert await _call_close_code(url, ["inbound"]) == 1000
        # Both slots free: the two-track call is accepted.
        async with connect(url + "/twilio") as call:
            await call.send(twilio_start(["inbound", "outbound"]))
            await call.send(json.dumps({"event": "stop"}))
            with pytest.raises(ConnectionClosed):
                await call.recv()
            assert call.close_code == 1000
        await streams_settle(ctx, 0)
    summaries = [
        e for e in jsonl(tmp_path) if e["type"] == "summary" and "callSid" in e
    ]  # not the native one
    assert sorted(e["track"] for e in summaries) == ["inbound", "inbound", "outbound"]
    assert all(e["streamSid"] == "MZ7" for e in summaries)
    # Calls reusing the client's sids are still told apart (sinks, alert journal): by the server's stream_id.
    assert len({e["stream_id"] for e in summaries}) == 3


def refused_count(ctx: ServerContext, reason: str) -> float | None:
    return ctx.metrics.registry.get_sample_value(
        "spoofwatch_refused_connections_total", {"code": "1013", "reason": reason}
    )


async def test_a_twilio_track_is_refused_by_load_shedding_and_counted(vad: Any, tmp_path: Path) -> None:
    """A call's second track is admitted like a new connection: a worker whose
    measured host cost leaves room for one stream (0.5 s of CPU per second of
    audio, 0.8 of a core) refuses it with the shedding reason, and counts it."""
    load = LoadMonitor(
        SheddingConfig(host_cost_weight=1e-9, max_score_lag_s=3600.0), hop_s=0.5, max_batch_windows=16
    )
    load.host.seed(0.5)
    config = ServerConfig(host="127.0.0.1", port=0, max_streams=8)
    sinks = ServerSinks(jsonl=tmp_path / "events.jsonl")
    live = load_calibration(model="aasist-l").live
    ctx = ServerContext(config, BatchScorer(FakeScorer()), live, vad, sinks, load=load)
    async with running(ctx) as url:
        code, reason = await _bad_client(url + "/twilio", [twilio_start(["inbound", "outbound"])])
        assert code == 1013
        assert reason == (
            "overloaded: measured host capacity is 1 real-time streams per worker; retry later: "
            "cannot add another track"
        )
        assert refused_count(ctx, "overloaded") == 1
        await streams_settle(ctx, 0)
        # One track fits: the call carries on to its summary.
        assert await _call_close_code(url, ["inbound"]) == 1000
    assert refused_count(ctx, "overloaded") == 1


async def test_twilio_start_without_stream_sid_is_refused(scorer: Any, vad: Any, tmp_path: Path) -> None:
    ctx = make_ctx(scorer, vad, tmp_path)
    async with running(ctx) as url:
        code, reason = await _bad_client(url + "/twilio", [twilio_start(["inbound"], stream_sid=None)])
        bad_type = await _bad_client(
            url + "/twilio",
            [twilio_start(["inbound"], stream_sid=None).replace('"start": {', '"streamSid": 7, "start": {')],
        )
    assert (code, reason) == (1002, "expected a string streamSid in the start message")
    assert bad_type[0] == 1002
    assert not (tmp_path / "events.jsonl").read_text()  # no events tagged with a null streamSid


async def test_failed_auth_is_logged_without_the_token(
    scorer: Any, vad: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spoofwatch")
    ctx = make_ctx(scorer, vad, tmp_path, token="s3cret")
    async with running(ctx) as url:
        for bad_url in (url + "/", url + "/?token=guess-me"):
            with pytest.raises(InvalidStatus):
                async with connect(bad_url):
                    pass
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refused) == 2
    assert "no token" in refused[0] and "wrong token" in refused[1]
    assert all("127.0.0.1:" in m for m in refused)
    assert not any("guess-me" in r.getMessage() or "s3cret" in r.getMessage() for r in caplog.records)


async def test_keepalive_drop_is_logged_as_such(
    scorer: Any, vad: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that completes the handshake and then never reads (so never
    answers a ping) is dropped by the keepalive, and the log says so."""
    caplog.set_level(logging.INFO, logger="spoofwatch")
    ctx = make_ctx(scorer, vad, tmp_path, ping_interval_s=0.1, ping_timeout_s=0.1, idle_timeout_s=3600)
    async with running(ctx) as url:
        port = int(url.rsplit(":", 1)[1])
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            await stream.send(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            received = b""
            with anyio.fail_after(60):
                try:
                    while True:  # pings arrive and are never answered, until the server hangs up
                        received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
        assert received.startswith(b"HTTP/1.1 101")
        with anyio.fail_after(60):
            while ctx.active_streams:  # noqa: ASYNC110 - the handler logs, then releases its slot
                await anyio.sleep(0.01)
    messages = [r.getMessage() for r in caplog.records]
    drops = [m for m in messages if "keepalive ping timeout" in m]
    assert len(drops) == 1 and drops[0].startswith("dropped 127.0.0.1:"), messages  # once, naming the peer
    assert not any(m.startswith("closing stream with 1001: idle") for m in messages)


async def test_webhook_that_never_answers_does_not_delay_the_stream(
    concat: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    """The webhook POST is never awaited by the scoring path: with a webhook that
    accepts and never answers (and an hour's timeout), the stream still ends."""
    hook = socket.socket()
    hook.bind(("127.0.0.1", 0))
    hook.listen(64)
    url_hook = f"http://127.0.0.1:{hook.getsockname()[1]}/alerts"
    config = ServerConfig(host="127.0.0.1", port=0)
    sinks = ServerSinks(jsonl=tmp_path / "events.jsonl", webhook=url_hook, webhook_timeout_s=3600)
    ctx = ServerContext(config, BatchScorer(scorer), load_calibration(model="aasist-l").live, vad, sinks)
    try:
        async with running(ctx, close_timeout_s=0.2) as url:
            with anyio.fail_after(300):
                result = await send_audio(concat, url + "/")
        assert result.close_code == 1000
        check_alert_after_onset(result.events)
        assert ctx.sinks.stats()[webhook_sink_name(url_hook)]["written"] == 0
    finally:
        hook.close()  # resets the pending POST: the sink thread logs it and ends
    # ... within this test, while its log capture is still open.
    assert all(sink.join(timeout_s=60) for sink in sinks.sinks)


async def test_client_that_never_reads_stalls_only_itself(
    concat: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    """A client that sends audio and never reads its events: the server's
    write buffer for it is bounded (write_limit), its stream waits, and a
    normal stream beside it completes."""
    ctx = make_ctx(scorer, vad, tmp_path, write_limit_bytes=1024, max_queue_messages=1)
    async with running(ctx) as url:
        stuck = await anyio.connect_tcp("127.0.0.1", int(url.rsplit(":", 1)[1]))
        async with stuck:
            await stuck.send(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            assert (await stuck.receive()).startswith(b"HTTP/1.1 101")
            await stuck.send(_masked_text(START))
            for pos in range(0, concat.size, 3200):
                await stuck.send(_masked_binary(encode(concat[pos : pos + 3200], "pcm_s16le")))
            result = await send_audio(concat, url + "/")
            assert result.close_code == 1000
            check_alert_after_onset(result.events)


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client-to-server WebSocket frame (clients must mask; a zero mask keeps the bytes)."""
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


def _masked_text(text: str) -> bytes:
    return _masked_frame(0x1, text.encode())


def _masked_binary(data: bytes) -> bytes:
    return _masked_frame(0x2, data)


def test_send_errors_are_one_line(
    onnx_aasist_l: Path,
    scorer: Any,
    vad: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import soundfile

    # The server shares this process's stderr; only the client's lines are under test.
    caplog.set_level(logging.ERROR, logger="spoofwatch.stream.server")

    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.zeros(1600, np.float32), 16000)
    ctx = make_ctx(scorer, vad, tmp_path, token="s3cret")
    # `main` runs its own event loop, so the server runs in a portal's thread.
    with anyio.from_thread.start_blocking_portal() as portal:
        server, port = portal.start_task(WebSocketServer(ctx).run)
        try:
            _send_cases(port, wav, capsys)
        finally:
            server.cancel()
    ctx.sinks.close()


def _send_cases(port: int, wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spoofwatch.cli import main

    base = f"ws://127.0.0.1:{port}"
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    refused = f"ws://127.0.0.1:{free.getsockname()[1]}/"
    free.close()
    cases = [
        ([base + "/", "--token", "wrong"], 6, "HTTP 401"),
        ([base + "/nowhere", "--token", "s3cret"], 6, "HTTP 404"),
        (
            [base + "/healthz"],
            6,
            "not a WebSocket endpoint (the server answered HTTP 200); stream to one of /, /twilio",
        ),
        ([refused], 9, "cannot connect"),
        ([f"http://127.0.0.1:{port}/"], 2, "expected a ws:// or wss:// URL"),
        (["ws://127.0.0.1:99999/"], 2, "Port out of range"),
        (["ws://127.0.0.1:abc/"], 2, "expected a ws:// or wss:// URL"),
        (["ws://[::1/"], 2, "Invalid IPv6 URL"),
        # The Twilio path speaks another protocol: said before connecting, not a 1007 after.
        ([base + "/twilio"], 2, "/twilio takes Twilio Media Streams messages"),
        # A TLS hello to this plain server is reset: the hint names the likely cause.
        ([f"wss://127.0.0.1:{port}/"], 9, "(is the server plain WebSocket? then use ws://)"),
    ]
    for args, code, text in cases:
        assert main(["send", str(wav), *args]) == code, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert text in err, err
    assert main(["send", str(wav), base + "/", "--token", "s3cret"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["type"] == "summary"
    # The token serve reads from the environment, send reads too.
    with pytest.MonkeyPatch.context() as env:
        env.setenv(TOKEN_ENV, "s3cret")
        assert main(["send", str(wav), base + "/"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["type"] == "summary"


def test_send_exit_says_whether_to_retry(
    scorer: Any,
    vad: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every close but 1000 was exit 6 ("protocol error"): a script could not
    tell a full server (retry later) from a lost connection or a refusal."""
    import soundfile
    from websockets.sync.client import connect as connect_sync

    from spoofwatch.cli import main
    from spoofwatch.commands.server_cmds import SEND_RETRY_EXIT, send_exit
    from spoofwatch.errors import NetworkError, ProtocolError

    caplog.set_level(logging.ERROR, logger="spoofwatch.stream.server")
    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.zeros(1600, np.float32), 16000)
    ctx = make_ctx(scorer, vad, tmp_path, max_streams=1)
    with anyio.from_thread.start_blocking_portal() as portal:
        server, port = portal.start_task(WebSocketServer(ctx).run)
        try:
            with connect_sync(f"ws://127.0.0.1:{port}/") as holder:  # the one stream the server takes
                holder.send(START)
                assert main(["send", str(wav), f"ws://127.0.0.1:{port}/"]) == SEND_RETRY_EXIT
                err = capsys.readouterr().err
                assert "server closed with 1013: server at capacity (1 streams) (retry later)" in err
        finally:
            server.cancel()
    ctx.sinks.close()
    assert send_exit(1001, "server shutting down") == (SEND_RETRY_EXIT, " (retry later)")
    assert send_exit(1001, "idle for 30 s") == (ProtocolError.exit_code, "")  # the same stall would recur
    assert send_exit(1006)[0] == send_exit(None)[0] == NetworkError.exit_code
    assert send_exit(1007) == (ProtocolError.exit_code, "")


@pytest.mark.parametrize("how", ["protocol_error", "disconnect", "too_big"])
async def test_abnormal_end_closes_the_open_alert(
    how: str, concat: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    """An alert open when the stream breaks gets alert_end with the reason, then one summary."""
    ctx = make_ctx(scorer, vad, tmp_path)
    async with running(ctx) as url:
        ws = await connect(url + "/").__aenter__()
        await ws.send(START)
        for frame in np.array_split(concat, 50):
            await ws.send(encode(frame, "pcm_s16le"))
        received = []
        while not received or received[-1]["type"] != "alert_start":
            received.append(json.loads(await ws.recv()))
        if how == "disconnect":
            ws.transport.abort()
        elif how == "too_big":  # refused by the WebSocket layer itself, before any handler sees it
            await ws.send(b"\x00" * (ctx.config.max_message_bytes + 2))
            received += [json.loads(m) async for m in _until_closed(ws)]
            assert ws.close_code == 1009
        else:
            await ws.send(json.dumps({"type": "pause"}))
            received += [json.loads(m) async for m in _until_closed(ws)]
            assert ws.close_code == 1002
        with anyio.fail_after(60):
            while ctx.active_streams:  # noqa: ASYNC110 - the handler's exit is not an event we can wait on
                await anyio.sleep(0.05)
    logged = jsonl(tmp_path)
    end, summary = logged[-2:]
    # a message over the limit is the client breaking a limit, not a client that went away
    assert end["type"] == "alert_end" and end["reason"] == ("protocol_error" if how == "too_big" else how)
    assert summary["type"] == "summary" and summary["alerts"] == 1
    assert [e["type"] for e in logged].count("summary") == 1
    if how == "protocol_error":
        assert received[-2:] == [end, summary]  # the client got them too, before the close


async def _until_closed(ws: Any) -> AsyncIterator[str]:
    try:
        async for message in ws:
            yield message
    except ConnectionClosed:
        return


async def test_ingest_threads_bound_the_workers_ingest(
    scorer: Any, vad: Any, tmp_path: Path, concat: np.ndarray
) -> None:
    """``ingest_threads``: every stream's resampling, VAD and windowing share that
    many threads; concurrent streams still each get every window and a summary."""
    with pytest.raises(ConfigError, match="ingest_threads: expected >= 1, got 0"):
        ServerConfig(ingest_threads=0).validate()
    ctx = make_ctx(scorer, vad, tmp_path, ingest_threads=1)
    seen: list[int] = []
    limiter = ctx.ingest_limiter
    assert limiter is not None and limiter.total_tokens == 1 and ctx.ingest_limiter is limiter
    real_run_sync = anyio.to_thread.run_sync

    async def run_sync(fn: Any, *args: Any, limiter: Any = None, **kw: Any) -> Any:
        seen.append(id(limiter))
        return await real_run_sync(fn, *args, limiter=limiter, **kw)

    audio = concat[: 6 * 16000]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(anyio.to_thread, "run_sync", run_sync)
        async with running(ctx) as url:
            results: list[Any] = []

            async def one() -> None:
                results.append(await send_audio(audio, url + "/"))

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(one)
    assert [r.close_code for r in results] == [1000] * 3
    summaries = [e for r in results for e in r.events if e["type"] == "summary"]
    assert len(summaries) == 3 and {s["windows"] for s in summaries} == {4}
    assert seen and set(seen) >= {id(limiter)}


def test_a_client_closing_with_an_error_code_left_it_was_not_refused() -> None:
    """A client's own close frame is echoed back: `sent` then carries the client's code,
    and a client closing with 1008 was taken for one the server refused."""
    from websockets.exceptions import ConnectionClosedError
    from websockets.frames import Close

    from spoofwatch.stream.server.connection import end_reason

    too_big = Close(1009, "frame exceeds limit")
    assert (
        end_reason(ConnectionClosedError(None, too_big, None)) == "protocol_error"
    )  # the server's own close
    assert (
        end_reason(ConnectionClosedError(too_big, too_big, False)) == "protocol_error"
    )  # sent first, answered
    done = Close(1008, "client done")
    assert end_reason(ConnectionClosedError(done, done, True)) == "disconnect"  # the client's, echoed
    assert end_reason(ConnectionClosedError(None, None, None)) == "disconnect"  # no close frame at all


def test_open_alerts_left_by_a_run_that_died_whole_are_ended_once(tmp_path: Path) -> None:
    """A kept state folder ($PROMETHEUS_MULTIPROC_DIR) held a dead run's journals: a new
    worker that got a reused PID 'crashed' with the old run's calls under alert."""
    from spoofwatch.stream.server.journal import StreamJournal, journal_path, leftover_crash_events

    old = StreamJournal(journal_path(tmp_path, 4321), exit_threshold=2.7)
    old.update(
        [{"type": "alert_start", "t": 30.0, "smoothed": -4.0, "threshold": 1.7, "stream_id": "w0-4321-s9"}]
    )
    journal_path(tmp_path, 4322).with_suffix(".tmp").write_text("[")  # a half-written one
    ends = leftover_crash_events(tmp_path)
    assert ends == [
        {
            "type": "alert_end",
            "t": 30.0,
            "smoothed": -4.0,
            "threshold": 2.7,
            "reason": "worker_crash",
            "stream_id": "w0-4321-s9",
        },
        {
            "type": "summary",
            "duration_s": 30.0,
            "windows": 0,
            "scored_windows": 0,
            "alerts": 1,
            "dropped_windows": 0,
            "reason": "worker_crash",
            "stream_id": "w0-4321-s9",
        },
    ]
    assert not list(tmp_path.glob("open-alerts-*"))
    assert leftover_crash_events(tmp_path) == []  # once


@asynccontextmanager
async def fake_server(behaviour: str) -> AsyncIterator[str]:
    """A WebSocket server on loopback that misbehaves as ``behaviour`` says:
    answers the start with text that is not JSON, with binary data, never
    answers nor closes, or (deaf) also stops reading."""
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the start message
        if behaviour == "deaf":  # gone without closing: reads nothing more, sends nothing
            await ws.wait_closed()  # until the client gives up (the server's close then ends it)
            return
        if behaviour == "not json":
            await ws.send("not json{")
        elif behaviour == "binary":
            await ws.send(b"\x00\x01")
        async for _ in ws:  # read (and ignore) everything else; never close
            pass

    # close_timeout: a deaf handler's connection is paused, and sees the client's abort only then.
    async with serve(handler, "127.0.0.1", 0, close_timeout=1) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


async def test_the_client_raises_one_clear_error_whatever_the_server_or_the_caller_does(
    concat: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    """A task group wrapped every failure in an ExceptionGroup (a traceback from
    `send`); a silent server held the client forever; bad audio was sent
    clipped or cast. Each is now one error of its own type."""
    from spoofwatch.errors import InputError, NetworkError, ProtocolError

    audio = concat[: 3 * 16000]
    nowhere = "ws://127.0.0.1:9/"  # checked before any connection is tried
    for bad, message in (
        (audio.astype(np.int16), "expected a 1-D float32 numpy chunk"),
        (np.stack([audio, audio]), "expected a 1-D float32 numpy chunk"),
        (np.full(100, np.nan, np.float32), "NaN"),
        (audio * 200, "within ±100"),
    ):
        with pytest.raises(InputError, match=message):
            await send_audio(bad, nowhere)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"expected an encoding in \('pcm_s16le', 'f32le', 'mulaw'\)"):
        await send_audio(audio, nowhere, encoding="opus")

    for behaviour in ("not json", "binary"):
        async with fake_server(behaviour) as url:
            with pytest.raises(ProtocolError, match="expected a JSON event object"):
                await send_audio(audio, url)
    async with fake_server("silent") as url:
        with pytest.raises(NetworkError, match=r"no answer for 0.2 s after the audio ended"):
            await send_audio(audio, url, reply_timeout_s=0.2)
    # A server gone without closing takes no audio: the upload's send waited for TCP's
    # own timeout (many minutes). 20 min of audio is more than the socket buffers hold.
    long_upload = np.tile(audio, 400)
    async with fake_server("deaf") as url:
        with pytest.raises(NetworkError, match=r"the server took no audio and sent nothing for 0.5 s"):
            await send_audio(long_upload, url, reply_timeout_s=0.5)

    def closed_stdout(event: dict[str, Any]) -> None:
        raise BrokenPipeError(32, "Broken pipe")  # `send ... | head -1`: the CLI exits 141

    ctx = make_ctx(scorer, vad, tmp_path)
    async with running(ctx) as url:
        with pytest.raises(BrokenPipeError):
            await send_audio(audio, url + "/", on_event=closed_stdout)


def test_a_client_cancelled_by_its_caller_leaves_no_socket_open(concat: np.ndarray) -> None:
    """A caller's timeout around `send_audio` (the host-cost probe's) cancelled
    the closing handshake too, and websockets then left the socket to the
    garbage collector: a ResourceWarning, raised in whatever test ran next.
    The server here never answers a close, so the handshake cannot finish
    before the cancellation, however fast either side is."""
    import gc
    import threading
    import warnings

    from websockets.utils import accept_key

    listener = socket.create_server(("127.0.0.1", 0))
    started: list[Callable[[], None]] = []  # the client loop's way to hear of the start

    def hanging_server() -> None:
        """Upgrades, reads the start message and then whatever comes; never answers."""
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
            )
            conn.recv(4096)  # the start message (the client sends it after the upgrade)
            started.pop()()
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass  # an abort

    async def cancelled_mid_stream(url: str) -> None:
        heard = anyio.Event()
        token = anyio.lowlevel.current_token()
        started.append(lambda: anyio.from_thread.run_sync(heard.set, token=token))
        async with anyio.create_task_group() as tg:
            # Minutes of audio at 1x: still sending when the caller gives up.
            tg.start_soon(send_audio, np.tile(concat, 8), url, "pcm_s16le", True)
            await heard.wait()
            tg.cancel_scope.cancel()

    with listener:
        server = threading.Thread(target=hanging_server, daemon=True)
        server.start()
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            anyio.run(cancelled_mid_stream, url)  # its own event loop, closed when it returns
            gc.collect()
    assert not started  # the server heard the start
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


async def test_the_first_ctrl_c_ends_the_audio_with_stop_and_the_summary_still_arrives(
    concat: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    """`send --realtime` interrupted: it died with "interrupted", no stop sent
    (the server logged a disconnect) and no summary. Now the first Ctrl-C
    sends stop at once; the server scores what it has and sends the summary."""
    import os
    import signal

    def interrupt_at_first_event(event: dict[str, Any]) -> None:
        if event["type"] == "score" and not seen:
            os.kill(os.getpid(), signal.SIGINT)
        seen.append(event)

    seen: list[dict[str, Any]] = []
    long = np.tile(concat, 8)  # minutes at 1x: the first score comes long before its end
    ctx = make_ctx(scorer, vad, tmp_path)
    async with running(ctx) as url:
        result = await send_audio(
            long, url + "/", realtime=True, on_event=interrupt_at_first_event, stop_on_sigint=True
        )
    assert result.interrupted and result.close_code == 1000
    summary = result.events[-1]
    assert summary["type"] == "summary" and summary["duration_s"] < long.size / 16000
