"""Per-stream window scoring for the live drivers: incremental when the hop allows it.

The one interface a driver needs is ``WindowScorer``: one object per stream,
fed that stream's speech windows in stream order. Gated (non-speech) windows
and windows a driver drops are simply not passed; the incremental scorer
notices the jump from the window's ``start_sample`` and either catches up
with cheap steps or rebuilds its cache with a full pass, whichever costs
less, so every score equals full-window scoring of the same samples.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from spoofwatch.model.incremental_runtime import IncrementalModel, IncrementalScorer, load_incremental
from spoofwatch.model.runtime import Device

from .engine import Scorer, WindowScorer
from .windower import Window

log = logging.getLogger(__name__)


class FullWindowScorer:
    """Scores every window from scratch with a batch ``Scorer`` (any hop)."""

    mode = "full"

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def score_window(self, window: Window) -> float:
        return float(self.scorer.scores(window.samples[np.newaxis, :])[0])

    def reset(self) -> None:
        pass


class IncrementalWindowScorer:
    """A ``WindowScorer`` over one stream's incremental state."""

    mode = "incremental"

    def __init__(self, model: IncrementalModel) -> None:
        self.stream = IncrementalScorer(model)

    def score_window(self, window: Window) -> float:
        return self.stream.score(window.start_sample, window.samples)

    def reset(self) -> None:
        self.stream.reset()


def as_window_scorer(scorer: Scorer | WindowScorer) -> WindowScorer:
    """Accept either kind: a plain batch ``Scorer`` scores full windows."""
    return scorer if isinstance(scorer, WindowScorer) else FullWindowScorer(scorer)


class LiveScoring:
    """Makes one ``WindowScorer`` per stream; incremental when a model for the hop is loaded."""

    def __init__(self, full: Scorer, incremental: IncrementalModel | None) -> None:
        self.full = full
        self.incremental = incremental

    @property
    def mode(self) -> str:
        return "incremental" if self.incremental is not None else "full"

    def new_stream(self) -> WindowScorer:
        if self.incremental is not None:
            return IncrementalWindowScorer(self.incremental)
        return FullWindowScorer(self.full)


def live_scoring(
    full: Scorer,
    model: str,
    hop_samples: int,
    device: Device = "auto",
    threads: int | None = None,
    weights: Path | None = None,
    incremental: bool = True,
    batch_streams: bool | None = None,
) -> LiveScoring:
    """Scoring for a live engine at ``hop_samples``: incremental unless the hop rules it
    out (a hop that is not a multiple of 729 samples; the reason is logged) or
    ``incremental`` is off."""
    inc = (
        load_incremental(model, hop_samples, device, threads, weights, batch_streams) if incremental else None
    )
    log.info("live scoring: %s windows at a hop of %d samples", "incremental" if inc else "full", hop_samples)
    return LiveScoring(full, inc)
