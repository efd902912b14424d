"""Scorers that time every call they make, for :class:`~.load.LoadMonitor`'s
capacity fit (a full-window batch, or one incremental step of many streams)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .load import LoadMonitor


class _Timed:
    """Reports the size and duration (on the monitor's clock) of every call it
    makes to the monitor, and the size to ``on_batch`` (the metrics)."""

    def __init__(self, monitor: LoadMonitor, on_batch: Callable[[int], None] | None) -> None:
        self.monitor = monitor
        self.on_batch = on_batch

    def _timed(self, n_windows: int, call: Callable[[], Any]) -> Any:
        t0 = self.monitor.clock()
        out = call()
        self.monitor.record_batch(n_windows, self.monitor.clock() - t0)
        if self.on_batch is not None:
            self.on_batch(n_windows)
        return out


class TimedScorer(_Timed):
    """A batch scorer (full windows), timed."""

    def __init__(
        self, scorer: Any, monitor: LoadMonitor, on_batch: Callable[[int], None] | None = None
    ) -> None:
        super().__init__(monitor, on_batch)
        self.scorer = scorer

    @property
    def device(self) -> str:
        return str(getattr(self.scorer, "device", "unknown"))

    def scores(self, windows: Any) -> Any:
        return self._timed(len(windows), lambda: self.scorer.scores(windows))


class TimedIncremental(_Timed):
    """An incremental backend (``IncrementalBackend``), timed: every call's
    windows (steps, and the occasional first pass) and duration."""

    def __init__(
        self, backend: Any, monitor: LoadMonitor, on_batch: Callable[[int], None] | None = None
    ) -> None:
        super().__init__(monitor, on_batch)
        self.backend = backend

    @property
    def device(self) -> str:
        return str(self.backend.device)

    def open_stream(self) -> Any:
        return self.backend.open_stream()

    def score(self, streams: Any, windows: Any) -> list[float]:
        out: list[float] = self._timed(len(windows), lambda: self.backend.score(streams, windows))
        return out


def step_batches(backend: Any, window_samples: int, hop_samples: int) -> Callable[[int], Any]:
    """``make_batch`` for :meth:`LoadMonitor.calibrate` with an incremental
    backend: ``n`` fresh streams whose first pass is done here (untimed) and
    their next window, so that ``calibrate`` times the steps live streams pay."""
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[list[Any], list[tuple[int, Any]]]:
        audio = (0.1 * rng.standard_normal((n, window_samples + hop_samples))).astype(np.float32)
        streams = [backend.open_stream() for _ in range(n)]
        backend.score(streams, [(0, a[:window_samples]) for a in audio])
        return streams, [(hop_samples, a[hop_samples:]) for a in audio]

    return make
