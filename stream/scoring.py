"""Per-stream window scoring for the live drivers: incremental when the hop allows it.

The one interface a driver needs is ``WindowScorer``: one object per stream,
fed that stream's speech windows in stream order. Gated (non-speech) windows
and windows a driver drops are simply not passed; the incremental scorer
notices the jump from the window's ``start_sample`` and either catches up
with cheap steps or rebuilds its cache with a full pass, whichever costs
less, so every score equals full-window scoring of the same samples.

The stream layer never imports the model: the command layer loads the
incremental model (``spoofwatch.model.incremental_runtime.IncrementalModel``)
and injects it as an ``IncrementalBackend``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from spoofwatch.errors import ModelError

from .engine import Scorer, WindowScorer
from .windower import Window

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]


class StreamCache(Protocol):
    """One stream's incremental state (``IncrementalScorer``)."""

    def score(self, start_sample: int, samples: Array) -> float: ...

    def reset(self) -> None: ...


class IncrementalBackend(Protocol):
    """The incremental graphs of one model at one hop, shared by all streams (``IncrementalModel``)."""

    @property
    def device(self) -> str: ...

    def open_stream(self) -> StreamCache: ...

    def score(self, streams: Sequence[Any], windows: Sequence[tuple[int, Array]]) -> list[float]:
        """One window ``(start_sample, samples)`` per stream, each stream once: bona fide logits."""
        ...


class FullWindowScorer:
    """Scores every window from scratch with a batch ``Scorer`` (any hop)."""

    mode = "full"

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self._failed = False

    def score_window(self, window: Window) -> float:
        """The window's score; NaN when the model fails on it (a card's model can
        raise on some inputs), which the engine counts as a dropped window."""
        try:
            return float(self.scorer.scores(window.samples[np.newaxis, :])[0])
        except ModelError as exc:
            if not self._failed:
                log.warning(
                    "%s (window %.2f-%.2f s; such windows count as dropped)",
                    exc,
                    window.t_start,
                    window.t_end,
                )
            self._failed = True
            return math.nan

    def reset(self) -> None:
        pass


class IncrementalWindowScorer:
    """A ``WindowScorer`` over one stream's incremental state."""

    mode = "incremental"

    def __init__(self, model: IncrementalBackend) -> None:
        self.stream = model.open_stream()

    def score_window(self, window: Window) -> float:
        return self.stream.score(window.start_sample, window.samples)

    def reset(self) -> None:
        self.stream.reset()


def as_window_scorer(scorer: Scorer | WindowScorer) -> WindowScorer:
    """Accept either kind: a plain batch ``Scorer`` scores full windows."""
    return scorer if isinstance(scorer, WindowScorer) else FullWindowScorer(scorer)


class LiveScoring:
    """Makes one ``WindowScorer`` per stream; incremental when a model for the hop was injected."""

    def __init__(
        self, full: Scorer, incremental: IncrementalBackend | None, reason: str | None = None
    ) -> None:
        self.full = full
        self.incremental = incremental
        #: Why full windows are scored (``None`` when incremental).
        self.reason = reason
        log.info(
            "live scoring: %s windows%s",
            self.mode,
            "" if reason is None else f" ({reason})",
        )

    @property
    def mode(self) -> str:
        return "incremental" if self.incremental is not None else "full"

    def new_stream(self) -> WindowScorer:
        if self.incremental is not None:
            return IncrementalWindowScorer(self.incremental)
        return FullWindowScorer(self.full)
