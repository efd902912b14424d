"""Admission control: how many streams this server may hold, measured, not guessed.

Two independent pieces, both Sans-I/O:

* :class:`LoadMonitor` (one per worker process) watches two self-measured
  quantities and decides whether the worker can take one more stream:

  - the **score lag**: seconds from the arrival of a window's last audio to
    its score (ingest thread, session queue, batch queue, inference and the
    event loop's own delay in resuming the stream all count). Beyond
    ``max_score_lag_s`` a live stream starts skipping windows, so a worker
    whose recent lag exceeds it refuses new streams;
  - the **scoring capacity**: windows per second the scorer sustains at its
    largest batch, fitted online from the measured duration of every batch
    (``t(n) = a + c * n``); with incremental scoring a window is one step of
    a stream's cache, and steps are what is timed. A new stream is refused
    when the streams already admitted would need more than
    ``target_utilisation`` of it, assuming every window of every stream is
    speech (the real-time guarantee).

  The clock is injected, so the rules are tested without waiting.

* The stream slots (``--max-streams``, a total across worker processes):
  :mod:`.slots`. The timed scorers that feed the capacity: :mod:`.timing`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spoofwatch.errors import ConfigError

if TYPE_CHECKING:
    from .slots import DeviceRates

log = logging.getLogger(__name__)

Clock = Callable[[], float]
#: Largest batch timed at start-up (small: a CPU pays ~0.2 s per window).
CALIBRATION_BATCH = 4
#: Timings per batch size at start-up; their median is kept (robust to one slow call).
CALIBRATION_ROUNDS = 3


@dataclass(frozen=True)
class SheddingConfig:
    #: Score lag (s) beyond which new streams are refused. ``None``: the lag at
    #: which a live stream starts skipping windows (the stale-window rule of
    #: ``StreamDriver``): one hop when windows are scored from scratch,
    #: ``EngineConfig.max_lag_s`` when they are scored incrementally.
    max_score_lag_s: float | None = None
    #: The quantile of recent score lags compared with ``max_score_lag_s``.
    lag_quantile: float = 0.95
    #: Score lags older than this (s) no longer count.
    lag_horizon_s: float = 5.0
    #: Share of the measured scoring capacity that admitted streams may claim.
    target_utilisation: float = 0.8
    #: Weight of the newest batch timing in the running fit (exponential forgetting).
    fit_weight: float = 0.05
    #: CPU a worker's stream handling may use, in cores. One: the Python part
    #: of a worker (event loop, ingest threads) runs one thread at a time.
    host_cores: float = 1.0
    #: Weight of the newest once-a-second host cost measurement.
    host_cost_weight: float = 0.2

    def __post_init__(self) -> None:
        checks = (
            ("max_score_lag_s", self.max_score_lag_s is None or self.max_score_lag_s > 0, "> 0 (or none)"),
            ("lag_quantile", 0 < self.lag_quantile <= 1, "in (0, 1]"),
            ("lag_horizon_s", self.lag_horizon_s > 0, "> 0"),
            ("target_utilisation", 0 < self.target_utilisation <= 1, "in (0, 1]"),
            ("fit_weight", 0 < self.fit_weight <= 1, "in (0, 1]"),
            ("host_cores", self.host_cores > 0, "> 0"),
            ("host_cost_weight", 0 < self.host_cost_weight <= 1, "in (0, 1]"),
        )
        for name, ok, expected in checks:
            if not ok:  # a NaN fails every comparison: refused too
                raise ConfigError(f"load shedding: expected {name} {expected}, got {getattr(self, name)}")


class BatchFit:
    """Exponentially weighted least-squares fit of batch duration vs batch size."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.samples = 0
        self._n = self._t = self._nn = self._nt = 0.0

    def add(self, n_windows: int, seconds: float) -> None:
        w = 1.0 if self.samples == 0 else self.weight
        self.samples += 1
        self._n += w * (n_windows - self._n)
        self._t += w * (seconds - self._t)
        self._nn += w * (n_windows * n_windows - self._nn)
        self._nt += w * (n_windows * seconds - self._nt)

    def windows_per_s(self, batch: int) -> float | None:
        """Sustained throughput at ``batch`` windows per call; ``None`` before any timing."""
        if self.samples == 0 or self._t <= 0:
            return None
        var = self._nn - self._n * self._n
        observed = self._n / self._t
        if var < 0.25:  # one batch size only: no slope to extrapolate with
            return observed
        slope = (self._nt - self._n * self._t) / var
        if slope <= 0:  # noise: trust what was seen, never a guess above it
            return observed
        intercept = max(self._t - slope * self._n, 0.0)
        return batch / (intercept + slope * batch)


class HostCost:
    """CPU seconds a worker spends per second of stream audio outside the
    model, as an exponentially weighted running figure. Its inverse is the
    number of real-time streams one core handles.

    Seeded at start-up (:func:`.selftest.measure_host_cost`), then measured while the
    worker serves: the ingest threads report the CPU time and the audio of
    each cut (:meth:`add_ingest`) and, once a second, the event loop reports
    its own thread's CPU time (:meth:`sample`); the CPU of both per second of
    audio received is the cost. Per second of *audio*, not per stream and
    second: an upload sent faster than real time costs what its audio costs.
    Thread CPU time, not wall time: waiting for the GIL or the GPU costs
    nothing here. Fixed costs (metrics, refused handshakes) are charged to the
    audio, which errs on the side of refusing.
    """

    #: Audio (s) an interval needs to count: one with less says more about
    #: fixed costs (scrapes, pings, idle timers) than about streams, and is
    #: dropped, its CPU with it (else an idle night would be charged to the
    #: first second of audio after it).
    MIN_AUDIO_S = 0.5

    def __init__(self, weight: float) -> None:
        self.weight = weight
        #: The running cost (CPU s per second of audio); ``None`` before any measurement.
        self.cpu_s_per_audio_s: float | None = None
        self._lock = threading.Lock()  # ingest threads add, the event loop samples
        self._ingest_cpu_s = 0.0
        self._audio_s = 0.0
        self._last: tuple[float, float, float] | None = (
            None  # (loop CPU, ingest CPU, audio) at the last count
        )

    def seed(self, cpu_s_per_audio_s: float) -> None:
        self.cpu_s_per_audio_s = cpu_s_per_audio_s

    def add_ingest(self, cpu_s: float, audio_s: float) -> None:
        with self._lock:
            self._ingest_cpu_s += cpu_s
            self._audio_s += audio_s

    def totals(self) -> tuple[float, float]:
        """``(ingest CPU s, audio s)`` reported since the worker started."""
        with self._lock:
            return self._ingest_cpu_s, self._audio_s

    def sample(self, loop_cpu_s: float) -> None:
        """The event loop's thread CPU time now (call it from that thread)."""
        with self._lock:
            now = (loop_cpu_s, self._ingest_cpu_s, self._audio_s)
        if self._last is None:
            self._last = now
            return
        last, self._last = self._last, now
        audio_s = now[2] - last[2]
        if audio_s < self.MIN_AUDIO_S:
            return
        cost = ((now[0] - last[0]) + (now[1] - last[1])) / audio_s
        if self.cpu_s_per_audio_s is None:
            self.cpu_s_per_audio_s = cost
        else:
            self.cpu_s_per_audio_s += self.weight * (cost - self.cpu_s_per_audio_s)


def host_capacity(config: SheddingConfig, cpu_s_per_audio_s: float | None) -> int | None:
    """Real-time streams a worker's CPU handles at this host cost (``None``:
    nothing measured, or a cost below the clock's resolution)."""
    if cpu_s_per_audio_s is None or cpu_s_per_audio_s <= 0:
        return None
    return int(config.target_utilisation * config.host_cores / cpu_s_per_audio_s)


class LoadMonitor:
    """Per-worker score lag and scoring capacity; ``refusal()`` says why not to admit."""

    def __init__(
        self,
        config: SheddingConfig | None,
        hop_s: float,
        max_batch_windows: int,
        clock: Clock = time.monotonic,
        device_workers: int = 1,
        skip_lag_s: float | None = None,
    ) -> None:
        #: ``None``: measure, but never refuse (load shedding off).
        self.enabled = config is not None
        self.config = config = config or SheddingConfig()
        self.hop_s = hop_s
        self.max_batch_windows = max_batch_windows
        self.clock = clock
        # ``skip_lag_s``: where live streams start skipping windows (default one hop).
        self.max_score_lag_s = config.max_score_lag_s or skip_lag_s or hop_s
        self._lags: deque[tuple[float, float]] = deque()  # (when, lag_s)
        self._fit = BatchFit(config.fit_weight)
        #: CPU per stream-second outside the model (see :class:`HostCost`).
        self.host = HostCost(config.host_cost_weight)
        self._lock = threading.Lock()  # batches are timed in a worker thread
        #: Workers scoring on the same device (a GPU): >1 makes the capacity a
        #: device-wide figure, compared with the streams of every worker.
        self.device_workers = device_workers
        self._fit_frozen = False
        #: On a shared device, every worker's start-up rate (see :class:`DeviceRates`).
        self.device_rates: DeviceRates | None = None

    # ---- measurements --------------------------------------------------------

    def record_lag(self, arrived_at: float) -> float:
        """A window whose audio arrived at ``arrived_at`` (this clock) was just scored."""
        now = self.clock()
        lag = max(now - arrived_at, 0.0)
        with self._lock:
            self._lags.append((now, lag))
        return lag

    def record_batch(self, n_windows: int, seconds: float) -> None:
        with self._lock:
            if not self._fit_frozen:
                self._fit.add(n_windows, seconds)

    # ---- derived -------------------------------------------------------------

    def recent_lag_s(self) -> float:
        """The configured quantile of the score lags within the horizon (0 without any)."""
        horizon = self.clock() - self.config.lag_horizon_s
        with self._lock:
            while self._lags and self._lags[0][0] < horizon:
                self._lags.popleft()
            lags = sorted(lag for _, lag in self._lags)
        if not lags:
            return 0.0
        return lags[min(len(lags) - 1, math.ceil(self.config.lag_quantile * len(lags)) - 1)]

    def capacity_windows_per_s(self) -> float | None:
        with self._lock:
            own = self._fit.windows_per_s(self.max_batch_windows)
        best = self.device_rates.best() if self.shared_device and self.device_rates is not None else None
        if best is not None and (own is None or best > own):
            return best
        return own

    def capacity_streams(self) -> int | None:
        """Streams this worker can hold in real time; ``None`` before any batch was timed."""
        capacity = self.capacity_windows_per_s()
        if capacity is None:
            return None
        return int(self.config.target_utilisation * capacity * self.hop_s)

    def host_capacity_streams(self) -> int | None:
        """Streams this worker's CPU can handle in real time; ``None`` before any measurement."""
        return host_capacity(self.config, self.host.cpu_s_per_audio_s)

    @property
    def shared_device(self) -> bool:
        return self.device_workers > 1

    def refusal(self, own_streams: int, total_streams: int | None = None) -> str | None:
        """Why a new stream must be refused now, or ``None`` to admit it.

        ``own_streams``: this worker's; ``total_streams``: every worker's (used
        when the scoring device is shared).
        """
        if not self.enabled:
            return None
        lag = self.recent_lag_s()
        if lag > self.max_score_lag_s:
            return f"overloaded: score lag {lag:.2f} s > {self.max_score_lag_s:g} s; retry later"
        capacity = self.capacity_streams()
        shared = self.shared_device and total_streams is not None
        streams = total_streams if shared and total_streams is not None else own_streams
        # A worker without streams admits one whatever its measured capacity:
        # it has no stream to protect, and a machine too slow for one real-time
        # stream should serve it with skipped windows rather than refuse everyone.
        if capacity is not None and own_streams > 0 and streams + 1 > capacity:
            where = "on the shared device" if shared else "per worker"
            return f"overloaded: measured capacity is {capacity} real-time streams {where}; retry later"
        host = self.host_capacity_streams()
        if host is not None and own_streams > 0 and own_streams + 1 > host:
            return f"overloaded: measured host capacity is {host} real-time streams per worker; retry later"
        return None

    def calibrate(
        self,
        score: Callable[[Any], Any],
        make_batch: Callable[[int], Any],
        largest: int = CALIBRATION_BATCH,
        rounds: int = CALIBRATION_ROUNDS,
    ) -> None:
        """Time the scorer on batches of 1 and ``largest`` windows: a seed for
        the fit and a warm-up that takes the first-call cost out of live scoring.

        Each size is timed ``rounds`` times and its median is what the fit
        gets: one slow call (a driver hiccup, another process's set-up) would
        otherwise set a capacity for the life of the worker.

        On a device of its own, live batches then refine the fit. On a shared
        device (run this while no other worker scores), live timings include
        waiting for the other workers' batches, so the uncontended figure is
        kept and the score lag catches any drift.
        """
        large = min(largest, self.max_batch_windows)
        sizes = (1, large) if large > 1 else (1,)
        log.info(
            "measuring scoring capacity (batches of %s windows, %d rounds)",
            " and ".join(map(str, sizes)),
            rounds,
        )
        for n in sizes:  # untimed: a provider's first call at a shape sets it up (cuDNN plans)
            score(make_batch(n))
        timings: dict[int, list[float]] = {n: [] for n in sizes}
        for _ in range(rounds):
            for n in sizes:
                batch = make_batch(n)
                t0 = self.clock()
                score(batch)
                timings[n].append(self.clock() - t0)
        for n in sizes:
            self.record_batch(n, float(np.median(timings[n])))
        self._fit_frozen = self.shared_device
        log.info(
            "measured scoring capacity: %.0f windows/s at batch %d (%s real-time streams %s)",
            self.capacity_windows_per_s() or 0.0,
            self.max_batch_windows,
            self.capacity_streams(),
            f"on a device shared by {self.device_workers} workers" if self.shared_device else "per worker",
        )

    def capacity_share(self) -> int:
        """This worker's part of the capacity (summed over workers for the metrics):
        its share of the scoring capacity, bounded by its host capacity."""
        capacity = self.capacity_streams() or 0
        share = capacity // self.device_workers if self.shared_device else capacity
        host = self.host_capacity_streams()
        return share if host is None else min(share, host)


class WindowObserver(Protocol):
    """What a stream session reports about each window (load and metrics)."""

    def now(self) -> float: ...

    def window_done(self, outcome: str, arrived_at: float | None) -> None:
        """``outcome``: ``scored``, ``dropped`` or ``gated``; ``arrived_at`` is
        ``None`` where the lag means nothing (a sender ahead of real time)."""

    def events(self, events: list[dict[str, Any]]) -> None: ...

    def discarded(self, tags: dict[str, Any], windows: int) -> None:
        """The stream tagged ``tags`` discarded ``windows`` windows unscored
        (behind, or aborted): no event tells of them until its summary."""

    def ingested(self, cpu_s: float, audio_s: float) -> None:
        """An ingest call (resampling, VAD, windowing) of ``audio_s`` of audio took
        ``cpu_s`` of its thread's CPU time."""
