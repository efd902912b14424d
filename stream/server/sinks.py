"""Server-side event sinks: JSON lines, stdout, and an alert webhook.

Each is a :class:`~spoofwatch.stream.sinks.QueuedSink`: its own bounded
queue and thread, so a stalled ``--stdout`` reader, a full disk or a webhook
that never answers costs only that sink's events (counted in
:meth:`ServerSinks.stats`), never the event loop or a stream's scoring.
"""

from __future__ import annotations

import logging
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spoofwatch.errors import ConfigError

from ..events import event_json
from ..sinks import SINK_CLOSE_TIMEOUT_S, SINK_QUEUE_EVENTS, JsonlSink, QueuedSink

log = logging.getLogger(__name__)
ALERT_TYPES = ("alert_start", "alert_end")
#: Seconds one webhook POST may take (on the webhook's own thread).
WEBHOOK_TIMEOUT_S = 5.0


def webhook_poster(url: str, timeout_s: float = WEBHOOK_TIMEOUT_S) -> Callable[[str], None]:
    def post(line: str) -> None:
        request = urllib.request.Request(
            url, data=line.encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()

    return post


def check_webhook_url(url: str) -> str:
    """``url`` if a POST can be made to it, else a ``ConfigError`` that names
    only its scheme and host (the rest may be a secret): a typo would
    otherwise surface only as a failed POST on the first alert."""
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        shown = f"{parts.scheme or '?'}://{parts.hostname or '?'}/..."
        raise ConfigError(f"expected an http:// or https:// URL with a host and a valid port, got {shown}")
    return url


def webhook_sink_name(url: str) -> str:
    """The webhook sink's name in logs, stats and metrics: its scheme and host
    only. Chat webhooks (Slack, Teams, Discord) carry their secret in the path
    or query, and a ``user:password@`` may come with the host."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"webhook {parts.scheme}://{host}{port}"


class ServerSinks:
    """Where the server logs events: every event to ``--jsonl`` (and stdout
    when asked), alerts also POSTed as JSON to ``--webhook``."""

    def __init__(
        self,
        jsonl: Path | None = None,
        stdout: bool = False,
        webhook: str | None = None,
        max_queue_events: int = SINK_QUEUE_EVENTS,
        webhook_timeout_s: float = WEBHOOK_TIMEOUT_S,
        webhook_queue_events: int | None = None,
    ) -> None:
        self.webhook = webhook
        self._all: list[QueuedSink] = []
        if jsonl:
            self._all.append(JsonlSink(jsonl, max_queue_events))
        if stdout:
            self._all.append(JsonlSink(sys.stdout, max_queue_events))
        self._webhook = (
            QueuedSink(
                webhook_sink_name(webhook),
                webhook_poster(webhook, webhook_timeout_s),
                None,
                webhook_queue_events or max_queue_events,
            )
            if webhook
            else None
        )

    @property
    def sinks(self) -> list[QueuedSink]:
        return self._all + ([self._webhook] if self._webhook else [])

    def submit(self, event: dict[str, Any]) -> None:
        """Queue ``event`` in every sink; never blocks, never raises for a sink's failure."""
        line = event_json(event)
        for sink in self._all:
            sink.submit_line(line)
        if self._webhook is not None and event.get("type") in ALERT_TYPES:
            self._webhook.submit_line(line)

    async def emit(self, event: dict[str, Any]) -> None:
        """Async spelling of :meth:`submit` for stream handlers (it does not wait for I/O)."""
        self.submit(event)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per-sink counters (written, dropped, failed), for ``status`` events and metrics."""
        return {sink.name: sink.counters.as_dict() for sink in self.sinks}

    @property
    def dropped(self) -> int:
        return sum(sink.counters.dropped for sink in self.sinks)

    def close(self, timeout_s: float = SINK_CLOSE_TIMEOUT_S) -> None:
        """Flush every sink (a stalled one is given up on after ``timeout_s``)."""
        for sink in self.sinks:
            sink.close(timeout_s)
