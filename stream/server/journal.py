"""Open alerts of a worker process, on disk, for the supervisor to close if it dies.

A worker killed mid-call cannot send anything, yet an operator watching the
sinks (for Twilio the only output) must not see a call "under alert" forever.
Each worker therefore keeps the alerts that are open on its streams in a
small JSON file; when the worker dies, the supervisor emits an ``alert_end``
with ``reason: "worker_crash"`` for each of them to the sinks, tagged like
the stream's own events.

The file is rewritten (atomically) when an alert opens or closes, and at most
once per ``flush`` call otherwise (the server's load refresh, every second),
so the ``t`` and ``smoothed`` of a crash ``alert_end`` are at most that old.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from spoofwatch.stream.events import WORKER_CRASH

log = logging.getLogger(__name__)

#: Event keys that identify a stream (native: ``stream_id``; Twilio: call, stream, track).
STREAM_TAGS = ("stream_id", "callSid", "streamSid", "track")
CRASH_REASON = WORKER_CRASH


def journal_path(directory: str | Path, pid: int) -> Path:
    return Path(directory) / f"open-alerts-{pid}.json"


class AlertJournal:
    """Fed every event a worker emits; ``open_alerts`` mirrors its open alerts on disk.

    ``exit_threshold`` is the worker's alert band's exit threshold: an
    ``alert_end`` carries it (the ``alert_start`` carries the enter threshold)."""

    def __init__(self, path: Path, exit_threshold: float) -> None:
        self.path = path
        self.exit_threshold = exit_threshold
        self._open: dict[str, dict[str, Any]] = {}
        self._dirty = False

    def update(self, events: list[dict[str, Any]]) -> None:
        changed = False
        for event in events:
            tags = {k: event[k] for k in STREAM_TAGS if k in event}
            key = json.dumps(tags, sort_keys=True)
            kind = event.get("type")
            if kind == "alert_start":
                self._open[key] = {
                    **tags,
                    "t": event["t"],
                    "smoothed": event["smoothed"],
                    "threshold": self.exit_threshold,
                }
                changed = True
            elif kind in ("alert_end", "summary"):
                changed |= self._open.pop(key, None) is not None
            elif kind == "score" and key in self._open:
                self._open[key].update(t=event["t_end"], smoothed=event["smoothed"])
                self._dirty = True
        if changed:
            self._write()

    def flush(self) -> None:
        if self._dirty:
            self._write()

    def _write(self) -> None:
        self._dirty = False
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(list(self._open.values())))
            os.replace(tmp, self.path)
        except OSError as exc:  # the journal is a safety net: never break a stream for it
            log.warning("cannot write the open-alert journal %s: %s", self.path, exc)


def leftover_alert_ends(directory: str | Path) -> list[dict[str, Any]]:
    """``alert_end`` events (reason ``worker_crash``) for the journals a previous run left
    in a kept state folder (``$PROMETHEUS_MULTIPROC_DIR``) when it died whole; the
    files are removed, so that a new worker that gets a reused PID inherits nothing."""
    events: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("open-alerts-*")):
        if path.suffix == ".json":
            events += crash_alert_ends(path)
        else:  # a half-written journal (``.tmp``)
            path.unlink(missing_ok=True)
    return events


def crash_alert_ends(path: Path, reason: str = CRASH_REASON) -> list[dict[str, Any]]:
    """``alert_end`` events for the open alerts a dead worker left in ``path`` (which is removed)."""
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.error("unreadable open-alert journal %s: %s", path, exc)
        return []
    finally:
        path.unlink(missing_ok=True)
    return [
        {
            "type": "alert_end",
            "t": e["t"],
            "smoothed": e["smoothed"],
            "threshold": e["threshold"],
            "reason": reason,
            **{k: e[k] for k in STREAM_TAGS if k in e},
        }
        for e in entries
    ]
