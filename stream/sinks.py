"""Event sinks: JSON lines to a file or stdout, and a readable terminal line."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO, Any


class JsonlSink:
    """Appends one JSON object per line; safe to share between threads."""

    def __init__(self, target: Path | IO[str]) -> None:
        self._own = isinstance(target, Path)
        self._fh: IO[str] = target.open("a", encoding="utf-8") if isinstance(target, Path) else target
        self._lock = threading.Lock()

    def write(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(", ", ": ")) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        if self._own:
            self._fh.close()


def _num(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:+6.2f}"


def format_event(event: dict[str, Any]) -> str:
    """One human-readable line per event."""
    kind = event["type"]
    if kind == "score":
        speech = "speech" if event["speech"] else "no speech"
        return f"[{event['t_start']:7.2f}-{event['t_end']:7.2f} s] score {_num(event['score'])}  smoothed {_num(event['smoothed'])}  {speech}"
    if kind == "alert_start":
        return f"[{event['t']:7.2f} s] SPOOF ALERT START  smoothed {event['smoothed']:+.2f} < {event['threshold']:+.2f}"
    if kind == "alert_end":
        return f"[{event['t']:7.2f} s] spoof alert end ({event['reason']})"
    fields = ", ".join(f"{k}={v}" for k, v in event.items() if k != "type")
    return f"{kind}: {fields}"


def live_line(event: dict[str, Any], alert_active: bool) -> str:
    """The monitor's single updating status line."""
    speech = "speech" if event.get("speech") else "silence"
    state = "ALERT" if alert_active else "ok"
    return f"t={event['t_end']:8.2f}s  score {_num(event.get('score'))}  smoothed {_num(event.get('smoothed'))}  {speech:7s}  {state}"
