"""The page's files over real HTTP on the server's own port, beside the WebSocket routes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.stream.server.app import WebSocketServer
from spoofwatch.stream.server.batcher import BatchScorer
from spoofwatch.stream.server.context import ServerConfig, ServerContext
from spoofwatch.stream.server.sinks import ServerSinks
from spoofwatch.stream.server.static import PAGE_FILES, page_url, read_page_file

pytestmark = pytest.mark.anyio


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running(
    scorer: Any, vad: Any, token: str | None = None
) -> AsyncIterator[tuple[str, ServerContext]]:
    config = ServerConfig(host="127.0.0.1", port=0, token=token)
    ctx = ServerContext(
        config, BatchScorer(scorer), load_calibration(model="aasist-l").live, vad, ServerSinks()
    )
    try:
        async with anyio.create_task_group() as tg:
            port = await tg.start(WebSocketServer(ctx).run)
            yield f"127.0.0.1:{port}", ctx
            tg.cancel_scope.cancel()
    finally:
        ctx.sinks.close()


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    return await anyio.to_thread.run_sync(http_get, url)


async def test_page_and_files_are_served_beside_the_websocket(scorer: Any, vad: Any) -> None:
    async with running(scorer, vad) as (host, ctx):
        for path, name in PAGE_FILES.items():
            status, headers, body = await get(f"http://{host}{path}")
            assert status == 200, path
            assert body == read_page_file(name)
            expected = {"html": "text/html", "js": "text/javascript", "css": "text/css"}[name.rsplit(".")[-1]]
            assert headers["Content-Type"].startswith(expected)
            assert "default-src 'self'" in headers["Content-Security-Policy"]
        status, headers, body = await get(f"http://{host}/static/config.json")
        assert status == 200 and headers["Content-Type"] == "application/json"
        config = json.loads(body)
        assert config["enter_threshold"] == ctx.live.policy.enter_threshold
        assert config["exit_threshold"] == ctx.live.policy.exit_threshold
        assert config["token_required"] is False
        # Unknown paths are still the server's 404; nothing outside web/ is reachable.
        for path in ("/nope", "/static/../app.py", "/static/", "/twilio"):
            status, _, _ = await get(f"http://{host}{path}")
            assert status == (426 if path == "/twilio" else 404), path
        # The WebSocket on / is untouched: a stream starts and stops.
        async with connect(f"ws://{host}/") as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}))
            await ws.send(json.dumps({"type": "stop"}))
            events = [json.loads(m) async for m in ws]
        assert events[-1]["type"] == "summary" and ws.close_code == 1000


async def test_with_a_token_the_page_is_public_and_the_stream_is_not(scorer: Any, vad: Any) -> None:
    async with running(scorer, vad, token="s3cret") as (host, _):
        status, _, body = await get(f"http://{host}/")
        assert status == 200 and b"spoofwatch" in body
        status, _, body = await get(f"http://{host}/static/config.json")
        assert json.loads(body)["token_required"] is True
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://{host}/"):
                pass
        assert refused.value.response.status_code == 401
        async with connect(f"ws://{host}/?token=s3cret") as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}))
            await ws.send(json.dumps({"type": "stop"}))
            assert json.loads([m async for m in ws][-1])["type"] == "summary"


def test_page_url() -> None:
    assert page_url("127.0.0.1", 8765) == "http://127.0.0.1:8765/"
    assert page_url("0.0.0.0", 80, "a b") == "http://127.0.0.1:80/?token=a%20b"
    assert page_url("::1", 9000) == "http://[::1]:9000/"


def test_page_uses_no_third_party_origin() -> None:
    """No CDN, no framework download: every URL in the page's files is its own origin's."""
    import re

    for name in PAGE_FILES.values():
        text = read_page_file(name).decode()
        assert not re.search(r"https?://(?!127\.0\.0\.1)", text), name


def http_request(method: str, url: str) -> tuple[int, dict[str, str], bytes]:
    # No body: websockets' HTTP parser refuses request bodies before any handler runs.
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def test_head_gets_headers_only_and_other_methods_get_405(scorer: Any, vad: Any) -> None:
    """GET and HEAD are the only methods: HEAD answers GET's status and headers
    without the body (RFC 9110), anything else is refused with 405 and Allow."""
    from spoofwatch.stream.server import health

    async with running(scorer, vad) as (host, _):
        for path in ("/", "/static/config.json", health.HEALTHZ, health.READYZ, health.METRICS):
            status, headers, body = await anyio.to_thread.run_sync(
                http_request, "GET", f"http://{host}{path}"
            )
            head = await anyio.to_thread.run_sync(http_request, "HEAD", f"http://{host}{path}")
            assert status == 200 and body, path
            assert head[0] == 200 and head[2] == b"", path
            assert head[1]["Content-Type"] == headers["Content-Type"], path
            for method in ("POST", "PUT", "DELETE", "OPTIONS"):
                refused = await anyio.to_thread.run_sync(http_request, method, f"http://{host}{path}")
                assert refused[0] == 405 and refused[1]["Allow"] == "GET, HEAD", (method, path)
                assert f"method {method} not allowed".encode() in refused[2]
        # The WebSocket on / still opens with GET.
        async with connect(f"ws://{host}/") as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}))
            await ws.send(json.dumps({"type": "stop"}))
            assert json.loads([m async for m in ws][-1])["type"] == "summary"
