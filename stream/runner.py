"""Building an engine from a calibration, and the inline driver used by
files and the microphone (the WebSocket server batches across streams
instead; see ``spoofwatch.stream.server.batcher``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .engine import Engine, PendingWindow, Scorer, WindowScorer, run_windows
from .events import Event
from .gate import SileroVad
from .scoring import as_window_scorer

if TYPE_CHECKING:
    from spoofwatch.calibration.calfile import Calibration


def build_engine(calibration: Calibration, vad: SileroVad, hop_s: float | None = None) -> Engine:
    """An engine configured by a calibration (``hop_s`` overrides its hop)."""
    from dataclasses import replace

    stream = calibration.stream if hop_s is None else replace(calibration.stream, hop_s=hop_s)
    return Engine(stream, calibration.gate, calibration.policy, vad)


def keep_fresh(engine: Engine, pending: list[PendingWindow]) -> list[PendingWindow]:
    """A live driver that fell behind scores only the freshest window, like the
    server does: older ones are dropped (never audio) and counted."""
    for stale in pending[:-1]:
        engine.drop(stale)
    return pending[-1:]


class InlineRunner:
    """Drives one engine, scoring windows in the caller's thread.

    ``scorer`` is the stream's ``WindowScorer`` (incremental or full), or a
    plain ``Scorer``, which then scores every window from scratch.
    """

    def __init__(self, engine: Engine, scorer: Scorer | WindowScorer, drop_stale: bool = False) -> None:
        self.engine = engine
        self.scorer = as_window_scorer(scorer)
        self.drop_stale = drop_stale

    def feed(self, chunk: npt.NDArray[np.float32]) -> list[Event]:
        pending = self.engine.push(chunk)
        if self.drop_stale:
            pending = keep_fresh(self.engine, pending)
        return run_windows(self.engine, self.scorer, pending)

    def close(self) -> list[Event]:
        """End of stream: score a padded short stream, close alerts, summarise."""
        return [*run_windows(self.engine, self.scorer, self.engine.flush()), *self.engine.finish()]
