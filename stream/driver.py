"""The one stream driver: every input (file, microphone, WebSocket, calibration
trace, benchmark) runs its engine through this class.

It owns what used to be rewritten around the engine by each adapter:

* **resampling** from the input rate to 16 kHz (``cut``), flushed at the end;
* the **stale-window rule**: a *live* stream that falls behind drops
  waiting windows (never audio), counted. What a skipped window saves
  decides how far behind. Scored from scratch (``incremental=False``), each
  skipped window saves a full pass, so a stream scores its freshest window
  and drops older waiting ones. Scored incrementally, a skipped window saves
  nothing (the scorer steps through it to reach the next one) and jumping
  ahead costs a full pass, about eight steps: so the stream scores every
  window in order, catching up with cheap steps, while its backlog is
  within ``EngineConfig.max_lag_s``, and only beyond that jumps to the
  freshest window (a score that late no longer helps anyone). A stream is live
  when ``drop_stale`` is set and it is not an upload: a stream whose audio
  ever arrived more than ``realtime_slack_s`` ahead of the clock is a file
  sent faster than real time, is never dropped from, and waits instead
  (``backlogged``). A real-time source can arrive late, never early, so the
  decision does not depend on how fast the machine scores;
* **end of stream**: ``close`` flushes the resampler and the windower, scores
  what is left and finishes; ``abort`` finishes at once (protocol error,
  disconnect, shutdown). Either way the stream gets exactly one ``summary``,
  and an open alert gets an ``alert_end`` carrying the reason;
* **counters**: samples received here, windows in the engine.

It is synchronous and does no I/O. ``cut`` (resampler, windower, VAD) may run
in a worker thread while the queue side (``enqueue``, ``next_window``,
``resolve``) runs on another, as long as each side stays on one thread:
neither writes what the other reads, except the engine's window count,
which the queue side only reads (a stale count is one window off in a drop
summary, never a wrong score). ``feed``/``close`` do everything inline for callers
that score in their own thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ, StreamResampler
from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import InputError

from .engine import Engine, PendingWindow, Scorer, WindowScorer, validate_chunk
from .events import END_OF_STREAM, END_REASONS, Event
from .scoring import as_window_scorer

#: How far (s) a stream's audio may run ahead of the clock and still count as live.
REALTIME_SLACK_S = 1.0

Clock = Callable[[], float]
_EMPTY = np.zeros(0, dtype=np.float32)


class StreamDriver:
    """Drives one engine: ``feed(chunk, scorer)`` / ``close(scorer)`` inline (``scorer``
    the stream's ``WindowScorer``, or a ``Scorer`` for full windows), or
    ``cut`` + ``enqueue`` + ``next_window`` + ``resolve`` when scoring happens elsewhere."""

    def __init__(
        self,
        engine: Engine,
        rate_hz: int = SAMPLE_RATE_HZ,
        *,
        drop_stale: bool = False,
        clock: Clock | None = None,
        realtime_slack_s: float = REALTIME_SLACK_S,
        incremental: bool = False,
    ) -> None:
        # The rates files and the protocols accept, in whole Hz.
        whole = isinstance(rate_hz, int) and not isinstance(rate_hz, bool)
        if not whole or not MIN_SAMPLE_RATE_HZ <= rate_hz <= MAX_SAMPLE_RATE_HZ:
            raise InputError(
                f"StreamDriver: expected a whole number of Hz in [{MIN_SAMPLE_RATE_HZ}, "
                f"{MAX_SAMPLE_RATE_HZ}], got {rate_hz!r}"
            )
        self.engine = engine
        self.rate_hz = rate_hz
        self.drop_stale = drop_stale
        self._clock = clock
        self._slack_s = realtime_slack_s
        config = engine.config
        #: Windows a live stream may have waiting and still score them all, in order.
        self.in_order_windows = config.max_lag_windows if incremental else 1
        #: Most windows a live stream keeps queued; beyond it the oldest is dropped.
        #: One more than ``in_order_windows``, so that ``next_window`` sees the
        #: stream fall out of reach and jumps to the freshest window.
        self.max_queued = max(config.max_pending_windows, self.in_order_windows + 1)
        self._resampler = StreamResampler(rate_hz)
        self._queue: deque[PendingWindow] = deque()
        self._t0: float | None = None
        #: The audio once ran ahead of the clock: an upload, never dropped from.
        self.upload = False
        #: Input samples (at ``rate_hz``) the driver has been told about.
        self.received_samples = 0
        #: Every window of the stream has been queued (the input ended and was flushed).
        self.input_closed = False
        self.finished = False
        self._undelivered: list[Event] = []

    # ---- input side ---------------------------------------------------------

    def arrived(self, n_samples: int) -> None:
        """``n_samples`` of input arrived now (starts the real-time clock)."""
        if self._t0 is None and self._clock is not None:
            self._t0 = self._clock()
        self.received_samples += n_samples
        if self._clock is not None and self._t0 is not None and not self.upload:
            self.upload = self.received_s > self._clock() - self._t0 + self._slack_s

    @property
    def received_s(self) -> float:
        return self.received_samples / self.rate_hz

    def _checked(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The input at its own rate, checked before the resampler sees it (it
        would cast and clip it): then the same rule holds at every rate."""
        if self.input_closed or self.finished:
            raise InputError("this stream has ended (close or abort was called); use a new StreamDriver")
        return validate_chunk(audio, self.rate_hz)

    def cut(self, audio: npt.NDArray[np.float32], last: bool = False) -> list[PendingWindow]:
        """Resample and window ``audio``; ``last`` flushes the resampler and a short stream."""
        pending = self.engine.push(self._resampler(self._checked(audio), last=last))
        return pending + self.engine.flush() if last else pending

    def resample(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``audio`` (not the last) at 16 kHz and checked, ready for ``push_many``:
        ``cut`` in two halves, for a caller that windows many streams at once."""
        return self._resampler(self._checked(audio))  # checked input resamples within the bound

    # ---- queue side ---------------------------------------------------------

    def is_live(self) -> bool:
        """Whether stale windows may be dropped."""
        return self.drop_stale and not self.upload

    def enqueue(self, pending: list[PendingWindow], last: bool = False) -> None:
        """Queue windows for scoring; a live stream keeps at most ``max_queued``."""
        self._queue.extend(pending)
        if self.is_live():
            while len(self._queue) > self.max_queued:
                self.engine.drop(self._queue.popleft())
        self.input_closed = self.input_closed or last

    def backlogged(self) -> bool:
        """A stream ahead of real time with a full queue: its sender should wait."""
        return len(self._queue) > self.max_queued and not self.is_live()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def next_window(self) -> PendingWindow | None:
        """The next window to score, or None. A live stream with more than
        ``in_order_windows`` waiting skips to the freshest; the final flush of
        a stream is never skipped."""
        if self.is_live() and not self.input_closed and len(self._queue) > self.in_order_windows:
            while len(self._queue) > 1:
                self.engine.drop(self._queue.popleft())
        return self._queue.popleft() if self._queue else None

    def resolve(self, pending: PendingWindow, score: float | None) -> list[Event]:
        return self.engine.resolve(pending, score)

    def score_due(self, scorer: Scorer | WindowScorer) -> list[Event]:
        """Score every due window inline, one per model call (so scores do not
        depend on how the audio was chunked), and resolve them in order.

        ``scorer`` is the stream's own ``WindowScorer`` (incremental or full:
        pass the same object for every call of one stream), or a plain
        ``Scorer``, which then scores every window from scratch."""
        window_scorer = as_window_scorer(scorer)
        while (pending := self.next_window()) is not None:
            try:
                score = window_scorer.score_window(pending.window) if pending.gate.speech else None
            except BaseException:  # Ctrl-C lands here most of the time: the window is off the queue
                self.engine.drop(pending)
                raise
            self._undelivered += self.resolve(pending, score)
        return self._deliver()

    def _deliver(self) -> list[Event]:
        """Events resolved but not yet returned. An exception (Ctrl-C) in the
        middle of ``score_due`` leaves them here, and ``finish`` returns them
        ahead of the summary, so the summary always agrees with the events."""
        events, self._undelivered = self._undelivered, []
        return events

    # ---- inline use ---------------------------------------------------------

    def ingest(self, audio: npt.NDArray[np.float32], last: bool = False) -> None:
        pending = self.cut(audio, last)  # checks ``audio`` first
        self.arrived(audio.shape[0])
        self.enqueue(pending, last)

    def feed(self, audio: npt.NDArray[np.float32], scorer: Scorer | WindowScorer) -> list[Event]:
        """Input-rate mono float32 in; the events it completes out."""
        self.ingest(audio)
        return self.score_due(scorer)

    # ---- end of stream ------------------------------------------------------

    def close(self, scorer: Scorer | WindowScorer, reason: str = END_OF_STREAM) -> list[Event]:
        """Normal end: flush the resampler and windower, score the rest, finish."""
        if self.finished:
            return []
        if not self.input_closed:
            self.ingest(_EMPTY, last=True)
        return [*self.score_due(scorer), *self.finish(reason)]

    def abort(self, reason: str) -> list[Event]:
        """Abnormal end: unscored windows are dropped (counted), then finish."""
        while self._queue:
            self.engine.drop(self._queue.popleft())
        return self.finish(reason)

    def finish(self, reason: str = END_OF_STREAM) -> list[Event]:
        """Close an open alert with ``reason`` and summarise: once per stream."""
        if reason not in END_REASONS:
            raise InputError(f"expected an end reason in {END_REASONS}, got {reason!r}")
        if self.finished:
            return []
        self.finished = True
        return [*self._deliver(), *self.engine.finish(reason)]
