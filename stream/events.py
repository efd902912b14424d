"""Events the engine emits. Every event serialises to one JSON object.

Schema (times are seconds of stream audio, scores are bona fide logits):

- ``score``: ``t_start``, ``t_end``, ``score`` (null when not scored),
  ``smoothed`` (null before the first scored window, and again after a
  silence reset until the next one), ``speech`` (bool), ``speech_fraction``,
  ``speech_end_s`` (where the window's last speech frame ended; null when it
  has none).
- ``alert_start`` / ``alert_end``: ``t``, ``smoothed``, ``threshold``
  (``alert_end`` also has ``reason``: one of :data:`END_REASONS`).
- ``status``: ``overruns``, ``lost_samples``, ``dropped_windows``,
  ``input_overflows`` and an ``info`` object (device, provider, sample rate).
- ``summary``: ``duration_s``, ``windows``, ``scored_windows``, ``alerts``,
  ``dropped_windows``, ``reason`` (how the stream ended: one of
  :data:`STREAM_END_REASONS`; capture health such as ring overruns is in
  ``status``, which adapters that own a capture emit). Every stream ends
  with exactly one.

Adapters may add ``stream`` identifiers (``stream_id``, ``callSid``, ``track``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from spoofwatch.errors import ModelError

# Why an alert ended (``alert_end.reason``). The first two come from the
# policy; the others are how the stream itself ended.
RECOVERED = "recovered"  # the smoothed score rose above the exit threshold
SILENCE = "silence"  # no speech for silence_reset_s
END_OF_STREAM = "end_of_stream"  # the input ended normally (stop, end of file, monitor stopped)
DISCONNECT = "disconnect"  # the client went away
PROTOCOL_ERROR = "protocol_error"  # the client broke the protocol or a limit
IDLE = "idle"  # no message within the idle timeout
SHUTDOWN = "shutdown"  # the process is stopping (signal, Ctrl-C, server shutdown)
ERROR = "error"  # an internal error ended the stream
WORKER_CRASH = "worker_crash"  # the server process holding the stream died (written by its supervisor)
#: How a stream can end (``summary.reason``, and ``alert_end.reason`` of an
#: alert still open then).
STREAM_END_REASONS = (END_OF_STREAM, DISCONNECT, PROTOCOL_ERROR, IDLE, SHUTDOWN, ERROR, WORKER_CRASH)
END_REASONS = (
    RECOVERED,
    SILENCE,
    END_OF_STREAM,
    DISCONNECT,
    PROTOCOL_ERROR,
    IDLE,
    SHUTDOWN,
    ERROR,
    WORKER_CRASH,
)


@dataclass(frozen=True)
class Event:
    type: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class ScoreEvent(Event):
    type: ClassVar[str] = "score"
    t_start: float
    t_end: float
    score: float | None
    smoothed: float | None
    speech: bool
    speech_fraction: float
    #: Where the window's last speech frame ends (stream s); ``None``: no speech in it.
    speech_end_s: float | None = None


@dataclass(frozen=True)
class AlertStart(Event):
    type: ClassVar[str] = "alert_start"
    t: float
    smoothed: float
    threshold: float


@dataclass(frozen=True)
class AlertEnd(Event):
    type: ClassVar[str] = "alert_end"
    t: float
    smoothed: float | None
    threshold: float
    reason: str


@dataclass(frozen=True)
class StatusEvent(Event):
    type: ClassVar[str] = "status"
    overruns: int = 0
    lost_samples: int = 0
    dropped_windows: int = 0
    input_overflows: int = 0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SummaryEvent(Event):
    type: ClassVar[str] = "summary"
    duration_s: float
    windows: int
    scored_windows: int
    alerts: int
    dropped_windows: int
    #: How the stream ended (one of :data:`STREAM_END_REASONS`): without it a
    #: sink could not tell a hang-up from a cut connection or a protocol error
    #: unless an alert happened to be open.
    reason: str = END_OF_STREAM


def event_json(event: dict[str, Any]) -> str:
    """The one place events become JSON text (sinks, WebSocket replies, CLI).

    ``NaN`` and ``Inf`` are not JSON: rather than write a line no parser
    accepts, this raises :class:`ModelError` naming the event.
    """
    try:
        return json.dumps(event, allow_nan=False)
    except ValueError as exc:
        raise ModelError(
            f"refusing to serialise a {event.get('type', '?')!r} event with a non-finite number: {exc}"
        ) from None
