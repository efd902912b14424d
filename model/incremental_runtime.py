"""Incremental scoring on ONNX Runtime: the shared graphs and the per-stream state.

``IncrementalModel`` holds the two ONNX Runtime sessions of one model at one
hop (``init``: a full pass that also returns the state; ``step``: the next
window from the state); every stream shares it. ``IncrementalScorer`` is one
stream's state and the only thing a driver needs::

    scorer = IncrementalScorer(model)
    score = scorer.score(window.start_sample, window.samples)   # in stream order

Each call decides between a full pass and steps by itself, from the window's
start and its samples:

* the first window, a window after ``reset()``, or one that does not follow
  the cached one by a whole number of hops gets a full pass;
* a window ``k`` hops after the cached one (windows skipped by the speech
  gate, or dropped by a driver that fell behind) is reached by ``k`` steps
  when that costs fewer convolution MACs than a full pass and the skipped
  windows' inputs still lie inside this window; otherwise a full pass;
* the samples the cache was built from must match the window's overlap
  (a cheap check of ``GUARD_SAMPLES`` and the head samples), so a driver that
  forgets ``reset()`` between two streams gets a full pass, never a wrong score.

``IncrementalModel.score`` does the same for several streams at once and can
stack their steps into one ONNX Runtime call (``batch_streams``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from spoofwatch.constants import CUDA_PROVIDER, SCORE_COLUMN
from spoofwatch.errors import InputError

from .config import load_model_config
from .incremental import (
    INIT_INPUT,
    LOGITS,
    STEP_INPUTS,
    IncrementalPaths,
    IncrementalPlan,
    ensure_incremental_onnx,
    hop_incompatibility,
    plan_for,
)
from .runtime import CUDA_MAX_BATCH_WINDOWS, Device, SessionLimits, batch_cap, open_graph, validate_windows
from .shapes import BucketedSession

log = logging.getLogger(__name__)

#: Last samples of a window kept to check that the next window continues the same audio.
GUARD_SAMPLES = 256

Array = npt.NDArray[np.float32]


@dataclass
class StreamState:
    """What one stream keeps between windows (all of it is float32)."""

    #: Stream sample at which the cached window starts.
    start_sample: int
    #: The step graph's state, each with a batch axis of 1 (``IncrementalPlan.state_names``).
    graph: list[Array]
    #: ``(sample_slots, head_samples)``: the first samples of each of the next windows.
    heads: Array
    #: The cached window's last ``GUARD_SAMPLES`` samples.
    guard: Array

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.graph) + self.heads.nbytes + self.guard.nbytes


#: Full passes (first windows, resets) stacked per CUDA call at most. Measured
#: on an H100 (80 GB, docs/scaling.md): 8 server workers whose full passes
#: took 32 windows per call ran the GPU out of memory at start-up (each
#: worker's arena keeps its largest activations); at 16 they did not. On CUDA
#: each batch bucket has its own session and arena (model/shapes.py): buckets
#: of 1, 2, 4 and 8 hold 15 windows' activations together, about what one
#: session of 16 held.
CUDA_MAX_FULL_PASS_STREAMS = 8


def stack_cap(device: str, full_pass: bool) -> int:
    """Streams one stacked call may take on ``device``: the device's batch cap
    (cuDNN's MaxPool limit on CUDA, memory on the CPU), and for full passes on
    CUDA at most :data:`CUDA_MAX_FULL_PASS_STREAMS`."""
    cap = batch_cap(device)
    return min(cap, CUDA_MAX_FULL_PASS_STREAMS) if full_pass and device.startswith("cuda") else cap


def _stack_states(states: list[list[Array]]) -> list[Array]:
    """Several streams' graph states as one batch (each state tensor stacked on axis 0)."""
    return states[0] if len(states) == 1 else [np.concatenate(parts) for parts in zip(*states, strict=True)]


def catch_up_limit(plan: IncrementalPlan) -> int:
    """Most hops a stream may lag and still be brought up to date by steps.

    Steps are taken only while they cost fewer convolution MACs than one full
    pass, and only while the skipped windows' heads are cached and their tails
    lie inside the newest window.
    """
    w, hop = plan.window_samples, plan.hop_samples
    by_cost = plan.full_macs() // plan.step_macs()
    by_heads = plan.sample_slots + 1
    by_tails = 1 + (w - plan.tail_samples) // hop
    by_guard = (w - GUARD_SAMPLES) // hop
    return max(0, min(by_cost, by_heads, by_tails, by_guard))


class IncrementalModel:
    """The ``init`` and ``step`` sessions of one model at one hop, shared by all streams."""

    def __init__(
        self,
        paths: IncrementalPaths,
        plan: IncrementalPlan,
        device: Device = "auto",
        threads: int | None = None,
        batch_streams: bool | None = None,
        allow_spinning: bool = False,
        shape_buckets: bool | None = None,
        limits: SessionLimits | None = None,
    ) -> None:
        self.plan = plan
        self.names = plan.state_names()
        # On CUDA one session per batch bucket (model/shapes.py): stacked calls
        # change size from call to call, and each change would rebuild cuDNN plans.
        self.init_session = open_graph(
            paths.init,
            device,
            threads,
            limits,
            allow_spinning=allow_spinning,
            cap=CUDA_MAX_FULL_PASS_STREAMS,
            buckets=shape_buckets,
        )
        self.step_session = open_graph(
            paths.step,
            device,
            threads,
            limits,
            allow_spinning=allow_spinning,
            cap=CUDA_MAX_BATCH_WINDOWS,
            buckets=shape_buckets,
        )
        self.providers: list[str] = list(self.step_session.get_providers())
        # On CPU one call per stream costs less than one stacked call (measured in
        # benchmarks/bench_stream.py: bigger intermediates, no parallelism gained);
        # a GPU is expected to gain from stacking, so auto (None) batches only there.
        self.batch_streams = self.device == "cuda" if batch_streams is None else batch_streams
        self.catch_up_limit = catch_up_limit(plan)
        # Where the tail and the head of each window are read from.
        self._tail_from = plan.window_samples - plan.tail_samples

    @classmethod
    def load(
        cls,
        model: str,
        hop_samples: int,
        device: Device = "auto",
        threads: int | None = None,
        weights: Path | None = None,
        batch_streams: bool | None = None,
        precision: str = "fp32",
    ) -> IncrementalModel:
        """Load (exporting on first use) the graphs of ``model`` at ``hop_samples`` and ``precision``."""
        plan = plan_for(load_model_config(model), hop_samples)
        paths = ensure_incremental_onnx(model, hop_samples, weights, precision)
        return cls(paths, plan, device, threads, batch_streams)

    @property
    def device(self) -> str:
        return "cuda" if self.providers[0] == CUDA_PROVIDER else "cpu"

    @property
    def hop_samples(self) -> int:
        return self.plan.hop_samples

    def warm(self, up_to: int) -> dict[str, list[int]]:
        """Open and run once the batch buckets of both graphs up to ``up_to``
        streams per call (CUDA; see :mod:`.shapes`), so that live calls never
        pay a session's set-up or a first plan build. Returns the buckets warmed."""
        sessions = {"init": self.init_session, "step": self.step_session}
        # Each session's cap is its call cap on CUDA: calls past it are split, and so is the warm-up.
        return {name: s.warm(up_to) for name, s in sessions.items() if isinstance(s, BucketedSession)}

    def open_stream(self) -> IncrementalScorer:
        """A new stream's (empty) cache."""
        return IncrementalScorer(self)

    # ---- raw graph calls ------------------------------------------------------

    def run_init(self, windows: Array) -> tuple[Array, list[Array]]:
        """``(B, 64600)`` -> logits ``(B, 2)`` and the state (each with batch B)."""
        out = self.init_session.run([LOGITS, *self.names], {INIT_INPUT: windows})
        return out[0], out[1:]

    def run_step(self, head: Array, tail: Array, state: Sequence[Array]) -> tuple[Array, list[Array]]:
        """Head ``(B, head_samples)``, tail ``(B, tail_samples)``, state -> logits ``(B, 2)``, state."""
        feeds = dict(zip(STEP_INPUTS, (head, tail), strict=True))
        feeds.update(zip(self.names, state, strict=True))
        out = self.step_session.run(None, feeds)
        return out[0], out[1:]

    # ---- scoring ----------------------------------------------------------------

    def score(
        self, streams: Sequence[IncrementalScorer], windows: Sequence[tuple[int, Array]]
    ) -> list[float]:
        """Score one window ``(start_sample, samples)`` for each stream; returns bona fide logits.

        Every stream appears at most once. Full passes and final steps are
        stacked into one call each when ``batch_streams`` is set.
        """
        if len(streams) != len(windows) or len({id(s) for s in streams}) != len(streams):
            raise InputError("expected one window per stream and each stream once")
        cut = [(start, validate_windows(samples)[0]) for start, samples in windows]
        try:
            return self._score(streams, cut)
        except BaseException:
            # A failed call may leave a cache half advanced: never reuse it.
            for stream in streams:
                stream.reset()
            raise

    def _score(self, streams: Sequence[IncrementalScorer], cut: list[tuple[int, Array]]) -> list[float]:
        full: list[int] = []
        step: list[int] = []
        lags: dict[int, int] = {}
        for i, (stream, (start, samples)) in enumerate(zip(streams, cut, strict=True)):
            lag = stream.lag(start, samples)
            if lag is None:
                full.append(i)
                continue
            lags[i] = lag
            step.append(i)
        self._catch_up(streams, cut, lags)
        scores: list[float] = [0.0] * len(streams)
        for rows, run, full_pass in ((full, self._full_rows, True), (step, self._step_rows, False)):
            for group in self._groups(rows, full_pass):
                if not group:
                    continue
                logits, state = run([cut[i][1] for i in group], [streams[i] for i in group])
                for row, i in enumerate(group):
                    start, samples = cut[i]
                    streams[i].remember(start, samples, [a[row : row + 1] for a in state])
                    scores[i] = float(logits[row, SCORE_COLUMN])
        return scores

    def _groups(self, rows: list[int], full_pass: bool = False) -> list[list[int]]:
        """Rows per ONNX Runtime call: all of them stacked (under :func:`stack_cap`), or one each."""
        size = stack_cap(self.device, full_pass) if self.batch_streams else 1
        return [rows[k : k + size] for k in range(0, len(rows), size)]

    def _catch_up(
        self, streams: Sequence[IncrementalScorer], cut: list[tuple[int, Array]], lags: dict[int, int]
    ) -> None:
        """Step every lagging stream through the windows it skipped, oldest first.

        Round ``j`` takes the ``j``-th skipped window of every stream that
        skipped at least ``j``, stacked like the final steps: streams that fall
        behind together (a loaded server drops their stale windows) catch up in
        a few calls, not one call per window per stream.
        """
        plan = self.plan
        for j in range(1, max(lags.values(), default=1)):
            for group in self._groups([i for i, lag in lags.items() if lag > j]):
                heads, tails, states = [], [], []
                for i in group:
                    state = streams[i].state
                    assert state is not None
                    end = plan.window_samples - (lags[i] - j) * plan.hop_samples
                    heads.append(state.heads[j - 1 : j])
                    tails.append(cut[i][1][np.newaxis, end - plan.tail_samples : end])
                    states.append(state.graph)
                _, graph = self.run_step(np.concatenate(heads), np.concatenate(tails), _stack_states(states))
                for row, i in enumerate(group):
                    state = streams[i].state
                    assert state is not None
                    state.graph = [a[row : row + 1] for a in graph]
                    streams[i].catch_up_steps += 1

    def _full_rows(self, samples: list[Array], streams: list[IncrementalScorer]) -> tuple[Array, list[Array]]:
        for stream in streams:
            stream.full_passes += 1
        return self.run_init(np.stack(samples))

    def _step_rows(self, samples: list[Array], streams: list[IncrementalScorer]) -> tuple[Array, list[Array]]:
        # Only the head and the tail of each window enter a step: stacking whole
        # windows first copied 258 KB per stream for 33 KB used.
        head = np.stack([s[: self.plan.head_samples] for s in samples])
        tail = np.stack([s[self._tail_from :] for s in samples])
        for stream in streams:
            stream.steps += 1
        return self.run_step(
            head, tail, _stack_states([s.state.graph for s in streams if s.state is not None])
        )


class IncrementalScorer:
    """One stream's incremental scoring state; ``score`` windows in stream order."""

    def __init__(self, model: IncrementalModel) -> None:
        self.model = model
        self.state: StreamState | None = None
        #: Counters: full passes, steps that produced a score, steps that caught up skipped windows.
        self.full_passes = 0
        self.steps = 0
        self.catch_up_steps = 0

    def reset(self) -> None:
        """Forget the cache: the next window gets a full pass."""
        self.state = None

    def score(self, start_sample: int, samples: Array) -> float:
        """Bona fide logit of the window of ``samples`` starting at stream sample ``start_sample``."""
        return self.model.score([self], [(start_sample, samples)])[0]

    @property
    def state_bytes(self) -> int:
        return 0 if self.state is None else self.state.nbytes

    def lag(self, start_sample: int, samples: Array) -> int | None:
        """Hops from the cached window to this one if steps can reach it, else ``None``."""
        state, plan = self.state, self.model.plan
        if state is None:
            return None
        offset = start_sample - state.start_sample
        if offset <= 0 or offset % plan.hop_samples:
            return None
        lag = offset // plan.hop_samples
        if lag > self.model.catch_up_limit:
            return None
        w = plan.window_samples
        same_end = np.array_equal(samples[w - GUARD_SAMPLES - offset : w - offset], state.guard)
        same_head = lag > len(state.heads) or np.array_equal(
            samples[: plan.head_samples], state.heads[lag - 1]
        )
        if not (same_end and same_head):
            log.debug("window at %d does not continue the cached audio: full pass", start_sample)
            return None
        return lag

    def remember(self, start_sample: int, samples: Array, graph: list[Array]) -> None:
        """Cache the state of the window just scored."""
        plan = self.model.plan
        hop, n = plan.hop_samples, plan.head_samples
        heads = np.stack([samples[k * hop : k * hop + n] for k in range(1, plan.sample_slots + 1)])
        self.state = StreamState(start_sample, graph, heads, samples[-GUARD_SAMPLES:].copy())


def incremental_unavailable(model: str, hop_samples: int) -> str | None:
    """Why ``model`` cannot be scored incrementally at ``hop_samples`` (``None``: it can)."""
    reason = hop_incompatibility(hop_samples)
    if reason is None:
        try:
            plan_for(load_model_config(model), hop_samples)
        except InputError as exc:
            reason = str(exc)
    return reason
