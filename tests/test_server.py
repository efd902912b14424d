"""The WebSocket server end to end on loopback with real sockets."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from helpers import BONAFIDE_UTT, ONSET_S, la_clip
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from spoofwatch.audio import read_audio, resample
from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.errors import ConfigError
from spoofwatch.stream.client import send_audio
from spoofwatch.stream.codecs import decode, encode, mulaw_encode
from spoofwatch.stream.server.app import WebSocketServer
from spoofwatch.stream.server.batcher import BatchScorer
from spoofwatch.stream.server.context import ServerConfig, ServerContext
from spoofwatch.stream.server.sinks import ServerSinks

pytestmark = pytest.mark.anyio


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


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
async def running(ctx: ServerContext) -> AsyncIterator[str]:
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(WebSocketServer(ctx).run)
            yield f"ws://127.0.0.1:{port}"
            tg.cancel_scope.cancel()
    finally:
        ctx.sinks.close()


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

        async def good_stream() -> None:
            good["result"] = await send_audio(concat, url + "/", realtime=True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(good_stream)
            await anyio.sleep(1.0)
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
    result = good["result"]
    assert result.close_code == 1000
    check_alert_after_onset(result.events)


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
        assert (await send_audio(audio, url + "/", token="s3cret")).close_code == 1000
        assert (await send_audio(audio, url + "/?token=s3cret")).close_code == 1000
    with pytest.raises(ConfigError, match="without --token"):
        ServerConfig(host="0.0.0.0").validate()
    ServerConfig(host="0.0.0.0", token="t").validate()
    ServerConfig(host="::1").validate()


async def test_limits(scorer: Any, vad: Any, tmp_path: Path) -> None:
    ctx = make_ctx(scorer, vad, tmp_path, max_streams=1, idle_timeout_s=0.5, max_stream_duration_s=2.0)
    async with running(ctx) as url:
        async with connect(url + "/") as first:
            await first.send(START)
            code, reason = await _bad_client(url + "/", [START])
            assert code == 1013 and "capacity" in reason
            await anyio.sleep(0.8)  # idle past the timeout
            (summary,) = [json.loads(m) async for m in first]  # the stream still gets its summary
            assert summary["type"] == "summary" and summary["windows"] == 0
            assert first.close_code == 1001
        result = await send_audio(np.zeros(3 * 16000, np.float32), url + "/")
        assert result.close_code == 1008 and "maximum duration" in result.close_reason
        with pytest.raises(InvalidStatus):
            async with connect(url + "/nowhere"):
                pass
    assert ctx.active_streams == 0


async def test_client_vanishing_mid_frame_leaves_nothing(scorer: Any, vad: Any, tmp_path: Path) -> None:
    ctx = make_ctx(scorer, vad, tmp_path)
    async with running(ctx) as url:
        await anyio.sleep(0.1)
        baseline = len(asyncio.all_tasks())
        for _ in range(5):
            ws = await connect(url + "/").__aenter__()
            await ws.send(START)
            await ws.send(encode(np.zeros(70000, np.float32), "pcm_s16le"))
            ws.transport.write(
                b"\x82\xfe\x40\x00\x01\x02\x03\x04" + b"\x00" * 100
            )  # header of a 16 KiB frame, then 100 bytes
            ws.transport.abort()
        with anyio.fail_after(10):
            while ctx.active_streams or len(asyncio.all_tasks()) > baseline:  # noqa: ASYNC110 - no event to wait on for task exit
                await anyio.sleep(0.05)
    assert ctx.active_streams == 0


def test_codecs_round_trip() -> None:
    x = (0.5 * np.sin(np.linspace(0, 60, 4000))).astype(np.float32)
    for encoding, tol in (("pcm_s16le", 1e-4), ("f32le", 0.0), ("mulaw", 0.02)):
        np.testing.assert_allclose(decode(encode(x, encoding), encoding, 1), x, atol=tol)
    stereo = np.stack([x, -x], axis=1).reshape(-1).astype("<f4").tobytes()
    np.testing.assert_allclose(decode(stereo, "f32le", 2), 0.0, atol=1e-7)
    assert decode(bytes([0xFF, 0x7F, 0x00, 0x80]), "mulaw", 1).tolist() == pytest.approx(
        [0.0, 0.0, -32124 / 32768, 32124 / 32768]
    )


@pytest.mark.slow
async def test_load_16_realtime_streams(
    concat: np.ndarray, scorer: Any, vad: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """16 concurrent streams paced at 1x for 32 s: the server stays live by
    dropping stale windows, and reports its drops and score delays."""
    n_streams, seconds = 16, 32.0
    audio = np.tile(concat, 3)[: int(seconds * 16000)]
    ctx = make_ctx(scorer, vad, tmp_path)
    results: list[Any] = []
    async with running(ctx) as url:

        async def one() -> None:
            results.append(await send_audio(audio, url + "/", realtime=True))

        with anyio.fail_after(seconds + 60):
            async with anyio.create_task_group() as tg:
                for _ in range(n_streams):
                    tg.start_soon(one)
    assert len(results) == n_streams and all(r.close_code == 1000 for r in results)
    delays = []
    dropped = windows = 0
    for r in results:
        summary = r.events[-1]
        assert summary["type"] == "summary" and summary["duration_s"] == pytest.approx(seconds)
        dropped += summary["dropped_windows"]
        windows += summary["windows"]
        for event, at in zip(r.events, r.received_at, strict=True):
            if event["type"] == "score" and event["score"] is not None:
                delays.append(at - (r.started_at + event["t_end"]))
    d = np.array(delays)
    with capsys.disabled():
        print(
            f"\nload: {n_streams} streams x {seconds:.0f} s at 1x: {windows} windows, {dropped} dropped "
            f"({100 * dropped / windows:.0f} %), {ctx.batcher.batches} batches (mean {ctx.batcher.windows / max(ctx.batcher.batches, 1):.1f} windows); "
            f"delay window end -> score event p50 {np.median(d):.2f} s, p99 {np.percentile(d, 99):.2f} s"
        )
    assert ctx.batcher.windows / ctx.batcher.batches > 1.5  # streams really share ONNX Runtime calls
    assert windows == n_streams * 56  # (32 s - 4.04 s) / 0.5 s + 1
    assert d.size > 0 and np.percentile(d, 99) < 10.0  # stale windows are dropped, so delay stays bounded


@pytest.mark.parametrize("how", ["protocol_error", "disconnect"])
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
        else:
            await ws.send(json.dumps({"type": "pause"}))
            received += [json.loads(m) async for m in _until_closed(ws)]
            assert ws.close_code == 1002
        with anyio.fail_after(60):
            while ctx.active_streams:  # noqa: ASYNC110 - the handler's exit is not an event we can wait on
                await anyio.sleep(0.05)
    logged = jsonl(tmp_path)
    end, summary = logged[-2:]
    assert end["type"] == "alert_end" and end["reason"] == how
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
