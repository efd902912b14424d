"""Building an engine from a calibration, and the inline driver used by
files and the microphone (the WebSocket server batches across streams
instead; see ``spoofwatch.stream.server.batcher``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .engine import Engine, PendingWindow, Scorer, run_windows
from .events import Event


def keep_fresh(engine: Engine, pending: list[PendingWindow]) -> list[PendingWindow]:
    """A live driver that fell behind scores only the freshest window, like the
    server does: older ones are dropped (never audio) and counted."""
    for stale in pending[:-1]:
        engine.drop(stale)
    return pending[-1:]


class InlineRunner:
    """Drives one engine, scoring windows in the caller's thread."""

    def __init__(self, engine: Engine, scorer: Scorer, drop_stale: bool = False) -> None:
        self.engine = engine
        self.scorer = scorer
        self.drop_stale = drop_stale

    def feed(self, chunk: npt.NDArray[np.float32]) -> list[Event]:
        pending = self.engine.push(chunk)
        if self.drop_stale:
            pending = keep_fresh(self.engine, pending)
        return run_windows(self.engine, self.scorer, pending)

    def close(self) -> list[Event]:
        """End of stream: score a padded short stream, close alerts, summarise."""
        return [*run_windows(self.engine, self.scorer, self.engine.flush()), *self.engine.finish()]
