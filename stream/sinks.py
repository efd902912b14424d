"""Event sinks: JSON lines to a file, stdout or a webhook, and readable terminal lines.

Every sink that does I/O sits behind a bounded queue drained by its own
thread (:class:`QueuedSink`). ``submit`` never blocks: a consumer that is
slow, stalled (a pipe nobody reads) or dead costs only its own events,
which are counted as dropped, never the caller (the event loop, the
microphone consumer). A write failure is logged once per sink; later ones
are only counted. Events are serialised by the caller through
:func:`spoofwatch.stream.events.event_json`, so a non-finite number fails
loudly where it was produced instead of becoming an invalid line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from spoofwatch.errors import InputError

from .events import event_json

log = logging.getLogger(__name__)

#: Events a sink may hold while its consumer is slow; more are dropped and counted.
SINK_QUEUE_EVENTS = 1024
#: Seconds ``close`` waits for a sink to write what it holds before giving up on it.
SINK_CLOSE_TIMEOUT_S = 5.0


@dataclass
class SinkCounters:
    """What happened to the events submitted to one sink."""

    #: Written (or POSTed) successfully.
    written: int = 0
    #: Never attempted: the queue was full (slow consumer) or the sink was dead or closed.
    dropped: int = 0
    #: Attempted and failed (write error, webhook timeout or error status).
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


#: How often (s) an idle sink thread checks whether its sink was closed.
DRAIN_POLL_S = 0.5


class _Stop:
    """Queue sentinel: the writer thread ends when it sees this."""


_STOP = _Stop()


class QueuedSink:
    """A line writer behind a bounded queue, drained by a daemon thread.

    ``write_line`` runs on that thread only. It may block (a full pipe, a
    webhook that never answers): the queue then fills and further lines are
    dropped and counted. A ``BrokenPipeError`` (the reader went away) kills
    the sink: nothing more is attempted, everything later counts as dropped.
    """

    def __init__(
        self,
        name: str,
        write_line: Callable[[str], None],
        close: Callable[[], None] | None = None,
        max_queue_events: int = SINK_QUEUE_EVENTS,
    ) -> None:
        if max_queue_events < 1:
            raise InputError(f"max_queue_events: expected >= 1, got {max_queue_events}")
        self.name = name
        self.counters = SinkCounters()
        self._write_line = write_line
        self._close = close
        self._queue: queue.Queue[str | _Stop] = queue.Queue(max_queue_events)
        self._dead = False
        self._closed = False
        #: A line taken from the queue and not yet written (or failed).
        self._in_flight = False
        #: ``close`` stopped waiting for the thread and counted what it held as dropped.
        self._given_up = False
        self._drop_logged = False
        self._thread = threading.Thread(target=self._drain, name=f"sink-{name}", daemon=True)
        self._thread.start()

    def submit(self, event: dict[str, Any]) -> None:
        """Queue one event (serialised here, on the caller's thread); never blocks."""
        self.submit_line(event_json(event))

    def submit_line(self, line: str) -> None:
        if self._dead or self._closed:
            self.counters.dropped += 1
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.counters.dropped += 1
            if not self._drop_logged:
                self._drop_logged = True
                log.warning(
                    "%s sink is not keeping up (%d events queued): dropping its events; "
                    "further drops are counted, not logged",
                    self.name,
                    self._queue.maxsize,
                )

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=DRAIN_POLL_S)
            except queue.Empty:
                if self._closed:  # closed while the queue was full: no _STOP could be queued
                    return
                continue
            if isinstance(item, _Stop):
                return
            if self._dead:
                self.counters.dropped += 1
                continue
            self._in_flight = True
            try:
                self._write_line(item)
            except Exception as exc:  # any failure of the consumer; the caller never sees it
                if self._given_up:  # already counted as dropped by ``close``
                    return
                self.counters.failed += 1
                if isinstance(exc, BrokenPipeError):
                    self._dead = True
                    log.warning(
                        "%s sink: reader went away (%s); its events are dropped from now on", self.name, exc
                    )
                elif self.counters.failed == 1:
                    log.warning(
                        "%s sink failed: %s; further failures are counted, not logged", self.name, exc
                    )
            else:
                if self._given_up:
                    return
                self.counters.written += 1
            finally:
                self._in_flight = False

    def join(self, timeout_s: float) -> bool:
        """After ``close``: wait up to ``timeout_s`` for a consumer that was given
        up on to return (its last failure is logged first). True when it ended."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def close(self, timeout_s: float = SINK_CLOSE_TIMEOUT_S) -> None:
        """Write what is queued, waiting at most ``timeout_s`` for a stalled consumer."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        stop_queued = False
        try:
            self._queue.put(_STOP, timeout=timeout_s)
            stop_queued = True
            self._thread.join(max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass
        if self._thread.is_alive():
            # The queued lines, and the one a stalled write still holds: the
            # thread counts nothing more once given up on.
            self._given_up = True
            left = self._queue.qsize() - stop_queued + self._in_flight
            self.counters.dropped += left
            log.warning("%s sink stalled: gave up on %d events at shutdown", self.name, left)
        if self._close is not None and not self._thread.is_alive():
            try:
                self._close()
            except OSError as exc:
                log.warning("%s sink: closing failed: %s", self.name, exc)
        log.info("%s sink: %s", self.name, ", ".join(f"{k} {v}" for k, v in self.counters.as_dict().items()))


def open_for_append(path: Path) -> IO[str]:
    """``path`` opened for appending events, or an :class:`InputError` naming it."""
    try:
        return path.open("a", encoding="utf-8")
    except OSError as exc:
        raise InputError(
            f"{path}: cannot open the events file for appending: {exc.strerror or exc}"
        ) from None


def check_appendable(path: Path) -> None:
    """Fail now, before a model loads or a worker starts, if ``path`` cannot take events."""
    open_for_append(path).close()


def file_writer(path: Path) -> tuple[Callable[[str], None], Callable[[], None]]:
    """Append lines to ``path`` (opened now, so a bad path fails at start-up).

    Whole lines only: a write that fails part-way (a full disk) is cut back
    off the file, since a fragment would also spoil the next line appended."""
    fh = open_for_append(path)
    fh.close()  # the check and its message; the lines go straight to the descriptor
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def write(line: str) -> None:
        data = (line + "\n").encode()
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_size <= start + len(data):  # nobody else appended since
                    os.ftruncate(fd, start)
            raise

    return write, lambda: os.close(fd)


def stream_writer(stream: IO[str]) -> Callable[[str], None]:
    """Write lines to a text stream such as ``sys.stdout``.

    When the stream has a file descriptor the lines go straight to it with
    ``os.write``: a stalled reader then blocks only the sink's thread, and
    the stream's own buffer (flushed at interpreter exit) stays empty.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd < 0:

        def write_text(line: str) -> None:
            stream.write(line + "\n")
            stream.flush()

        return write_text
    stream.flush()

    def write_fd(line: str) -> None:
        data = memoryview((line + "\n").encode())
        while data:
            data = data[os.write(fd, data) :]

    return write_fd


class JsonlSink(QueuedSink):
    """Appends one JSON object per line to a file or a text stream; thread-safe, never blocks."""

    def __init__(self, target: Path | IO[str], max_queue_events: int = SINK_QUEUE_EVENTS) -> None:
        if isinstance(target, Path):
            write, close = file_writer(target)
            super().__init__(f"jsonl {target}", write, close, max_queue_events)
        else:
            super().__init__(getattr(target, "name", "stream"), stream_writer(target), None, max_queue_events)

    def write(self, event: dict[str, Any]) -> None:
        self.submit(event)


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
