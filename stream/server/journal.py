"""Open streams of a worker process, on disk, for the supervisor to end if it dies.

A worker killed mid-call cannot send anything, yet an operator watching the
sinks (for Twilio the only output) must not see a call "under alert" forever,
and every stream must end with exactly one ``summary``. Each worker therefore
keeps its open streams in a small JSON file: their tags, what their events
have counted so far and whether an alert is open. When the worker dies, the
supervisor emits, for each, an ``alert_end`` with ``reason: "worker_crash"``
for an open alert and a ``summary`` (``reason: "worker_crash"`` too), tagged
like the stream's own events. The summary counts what the stream's events
said before the crash: windows cut but never resolved are not in it.

The file is rewritten (atomically) when a stream starts or ends or an alert
opens or closes, and at most once per ``flush`` call otherwise (the server's
load refresh, every second), so the figures of a crash ``alert_end`` and
``summary`` are at most that old.
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
    # The name from when only open alerts were kept: a kept state folder from
    # an older run is still found (``leftover_crash_events``).
    return Path(directory) / f"open-alerts-{pid}.json"


class StreamJournal:
    """Fed every event a worker emits; mirrors its open streams on disk.

    ``exit_threshold`` is the worker's alert band's exit threshold: an
    ``alert_end`` carries it (the ``alert_start`` carries the enter threshold)."""

    def __init__(self, path: Path, exit_threshold: float) -> None:
        self.path = path
        self.exit_threshold = exit_threshold
        self._open: dict[str, dict[str, Any]] = {}
        self._dirty = False

    def opened(self, tags: dict[str, Any]) -> None:
        """A stream started (``tags`` as its events will carry them): it gets a
        summary if the worker dies before its first event."""
        self._entry(_stream_tags(tags))
        self._write()

    def _entry(self, tags: dict[str, Any]) -> dict[str, Any]:
        key = _key(tags)
        stream = self._open.get(key)
        if stream is None:
            stream = self._open[key] = {**tags, **_NEW_STREAM, "threshold": self.exit_threshold}
        return stream

    def update(self, events: list[dict[str, Any]]) -> None:
        changed = False
        for event in events:
            tags = _stream_tags(event)
            kind = event.get("type")
            if kind == "summary":
                changed |= self._open.pop(_key(tags), None) is not None
                continue
            known = len(self._open)
            stream = self._entry(tags)
            changed |= len(self._open) != known
            if kind == "alert_start":
                stream.update(
                    alert=True, t=event["t"], smoothed=event["smoothed"], alerts=stream["alerts"] + 1
                )
                changed = True
            elif kind == "alert_end":
                stream.update(alert=False, t=event["t"], smoothed=event["smoothed"])
                changed = True
            elif kind == "score":
                # A stream's first window is written at once: a crash in the
                # second after it gave a summary of 0 windows, while the
                # client and the sinks already had a score.
                changed |= stream["windows"] == 0
                _count_window(stream, event)
                self._dirty = True
        if changed:
            self._write()

    def discarded(self, tags: dict[str, Any], windows: int) -> None:
        """``windows`` of a stream's windows were dropped unscored: no event
        says so, but its summary counts them (as the engine's does)."""
        stream = self._open.get(_key(_stream_tags(tags)))
        if stream is None:  # not journalled (ended, or a session built outside a connection)
            return
        stream["windows"] += windows
        stream["dropped_windows"] += windows
        self._dirty = True

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
            log.warning("cannot write the open-stream journal %s: %s", self.path, exc)


def _stream_tags(tagged: dict[str, Any]) -> dict[str, Any]:
    """The tags that name a stream, out of an event or a session's tags."""
    return {k: tagged[k] for k in STREAM_TAGS if k in tagged}


def _key(tags: dict[str, Any]) -> str:
    return json.dumps(tags, sort_keys=True)


#: A stream's journal entry before its first window.
_NEW_STREAM: dict[str, Any] = {
    "t": 0.0,
    "smoothed": None,
    "alert": False,
    "windows": 0,
    "scored_windows": 0,
    "alerts": 0,
    "dropped_windows": 0,
}


def _count_window(stream: dict[str, Any], event: dict[str, Any]) -> None:
    """A ``score`` event: one window resolved, as the engine's summary counts it
    (a speech window without a score is one the model failed on: dropped)."""
    stream["windows"] += 1
    if event["score"] is not None:
        stream["scored_windows"] += 1
    elif event["speech"]:
        stream["dropped_windows"] += 1
    stream.update(t=event["t_end"], smoothed=event["smoothed"])


def leftover_crash_events(directory: str | Path) -> list[dict[str, Any]]:
    """``alert_end`` events (reason ``worker_crash``) for the journals a previous run left
    in a kept state folder (``$PROMETHEUS_MULTIPROC_DIR``) when it died whole; the
    files are removed, so that a new worker that gets a reused PID inherits nothing."""
    events: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("open-alerts-*")):
        if path.suffix == ".json":
            events += crash_events(path)
        else:  # a half-written journal (``.tmp``)
            path.unlink(missing_ok=True)
    return events


def crash_events(path: Path, reason: str = CRASH_REASON) -> list[dict[str, Any]]:
    """The events a dead worker's open streams never got, from ``path`` (which is
    removed): an ``alert_end`` for an open alert, then a ``summary``."""
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.error("unreadable open-stream journal %s: %s", path, exc)
        return []
    finally:
        path.unlink(missing_ok=True)
    events: list[dict[str, Any]] = []
    for e in entries:
        tags = _stream_tags(e)
        if e.get("alert", True):  # an entry without the key: an older journal, open alerts only
            events.append(
                {
                    "type": "alert_end",
                    "t": e["t"],
                    "smoothed": e["smoothed"],
                    "threshold": e["threshold"],
                    "reason": reason,
                    **tags,
                }
            )
        if "windows" in e:
            events.append(
                {
                    "type": "summary",
                    "duration_s": e["t"],
                    **{k: e[k] for k in ("windows", "scored_windows", "alerts", "dropped_windows")},
                    "reason": reason,
                    **tags,
                }
            )
    return events
