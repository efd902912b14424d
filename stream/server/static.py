"""The browser client: plain files served on ``GET /`` through the server's HTTP hook.

A WebSocket upgrade on ``/`` is the native protocol; a plain ``GET /`` (no
``Upgrade: websocket`` header) gets the page instead, so one port serves
both. The page and its scripts are static files in ``web/`` inside the
package: no build step, no CDN, no framework. ``/static/config.json`` tells
the page the thresholds it draws (the calibration in use) and whether the
server wants a token.

The files are not secret and need no token; the WebSocket they open does.
"""

from __future__ import annotations

import json
from email.utils import formatdate
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

if TYPE_CHECKING:
    from .context import ServerContext

#: URL path -> file in ``web/``.
PAGE_FILES = {
    "/": "index.html",
    "/static/app.js": "app.js",
    "/static/capture-worklet.js": "capture-worklet.js",
    "/static/style.css": "style.css",
}
CONFIG_PATH = "/static/config.json"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
}
#: Only what the page itself loads: no third-party origin, no inline script.
_SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-cache"),
)


def page_url(host: str, port: int, token: str | None = None) -> str:
    """The address to open in a browser (with the token, when the server wants one)."""
    shown = f"[{host}]" if ":" in host else host
    if shown in ("0.0.0.0", "[::]"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/" + (f"?token={quote(token)}" if token else "")


def is_websocket_upgrade(request: Request) -> bool:
    return "websocket" in request.headers.get("Upgrade", "").lower()


def read_page_file(name: str) -> bytes:
    """The bytes of one file of the browser client."""
    return resources.files("spoofwatch.stream.server").joinpath("web", name).read_bytes()


def page_config(ctx: ServerContext) -> dict[str, Any]:
    """What the page needs to draw the chart before the first alert arrives."""
    live = ctx.live
    return {
        "enter_threshold": live.policy.enter_threshold,
        "exit_threshold": live.policy.exit_threshold,
        "hop_s": live.stream.hop_s,
        "token_required": bool(ctx.config.token),
        "max_message_bytes": ctx.config.max_message_bytes,
    }


def _response(body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Date", formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            *_SECURITY_HEADERS,
        ]
    )
    return Response(HTTPStatus.OK.value, HTTPStatus.OK.phrase, headers, body)


def target_path(target: str) -> str:
    """The path of an HTTP request target (``/readyz?token=T`` -> ``/readyz``).
    The origin form is split by hand: ``urlsplit`` reads ``//healthz`` as a
    host and an empty path. The absolute form (``http://host/healthz``, which
    a server must accept, RFC 9112 3.2.2) is a URL."""
    if not target.startswith("/"):
        return urlsplit(target).path or "/"
    return target.partition("#")[0].partition("?")[0]


def target_query(target: str) -> str:
    if not target.startswith("/"):
        return urlsplit(target).query
    return target.partition("#")[0].partition("?")[2]


def page_response(request: Request, ctx: ServerContext) -> Response | None:
    """The response for a plain GET of the page or one of its files, else ``None``.

    ``None`` means "not a page request": WebSocket upgrades and other paths
    go on to the server's own routing (and its 404 for unknown paths).
    """
    if is_websocket_upgrade(request):
        return None
    path = target_path(request.path)
    if path == CONFIG_PATH:
        return _response(json.dumps(page_config(ctx)).encode(), _CONTENT_TYPES[".json"])
    name = PAGE_FILES.get(path)
    if name is None:
        return None
    return _response(read_page_file(name), _CONTENT_TYPES["." + name.rsplit(".", 1)[1]])
