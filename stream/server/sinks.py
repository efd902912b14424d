"""Server-side event sinks: JSON lines, stdout, and an alert webhook."""

from __future__ import annotations

import json
import logging
import sys
import urllib.request
from pathlib import Path
from typing import Any

import anyio

from ..sinks import JsonlSink

log = logging.getLogger(__name__)
ALERT_TYPES = ("alert_start", "alert_end")


class ServerSinks:
    """Where the server logs events: every event to ``--jsonl`` (and stdout
    when asked), alerts also POSTed as JSON to ``--webhook``."""

    def __init__(self, jsonl: Path | None = None, stdout: bool = False, webhook: str | None = None) -> None:
        self._jsonl = JsonlSink(jsonl) if jsonl else None
        self._stdout = JsonlSink(sys.stdout) if stdout else None
        self.webhook = webhook
        self.webhook_failures = 0

    async def emit(self, event: dict[str, Any]) -> None:
        for sink in (self._jsonl, self._stdout):
            if sink is not None:
                sink.write(event)
        if self.webhook and event.get("type") in ALERT_TYPES:
            await anyio.to_thread.run_sync(self._post, event)

    def _post(self, event: dict[str, Any]) -> None:
        assert self.webhook is not None
        request = urllib.request.Request(
            self.webhook,
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        except OSError as exc:  # a dead webhook never breaks a stream
            self.webhook_failures += 1
            log.warning("webhook %s failed: %s", self.webhook, exc)

    def close(self) -> None:
        if self._jsonl:
            self._jsonl.close()
