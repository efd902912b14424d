"""Serving at scale: admission control, stream slots, the session's window
observer, health and metrics on loopback, load shedding under a fake slow
scorer (injected clock)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from helpers import BONAFIDE_UTT, FakeScorer, FakeVad, fake_engine, la_clip, offset_audio
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from spoofwatch.audio import read_audio
from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.errors import InputError, NetworkError
from spoofwatch.stream.client import send_audio
from spoofwatch.stream.driver import StreamDriver
from spoofwatch.stream.server import health
from spoofwatch.stream.server.app import WebSocketServer
from spoofwatch.stream.server.batcher import BatchScorer, ScoringThread
from spoofwatch.stream.server.context import ServerConfig, ServerContext
from spoofwatch.stream.server.load import CALIBRATION_ROUNDS, BatchFit, HostCost, LoadMonitor, SheddingConfig
from spoofwatch.stream.server.metrics import MULTIPROC_ENV
from spoofwatch.stream.server.selftest import measure_host_cost
from spoofwatch.stream.server.session import StreamSession
from spoofwatch.stream.server.sinks import ServerSinks
from spoofwatch.stream.server.slots import (
    DeviceRates,
    LocalSlots,
    SharedSlots,
    reset_worker_cells,
    shared_cells,
    shared_rates,
)
from spoofwatch.stream.server.worker import WorkerSpec
from spoofwatch.stream.server.workers import Supervisor

pytestmark = pytest.mark.anyio


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# ---- the load monitor (Sans-I/O) -------------------------------------------------


def monitor(clock: FakeClock, **config: Any) -> LoadMonitor:
    return LoadMonitor(SheddingConfig(**config), hop_s=0.5, max_batch_windows=16, clock=clock)


def test_score_lag_refuses_until_it_ages_out() -> None:
    clock = FakeClock()
    m = monitor(clock)
    assert m.max_score_lag_s == 0.5  # one hop when not configured
    assert m.refusal(0) is None  # nothing measured: admit
    for lag in (0.1, 0.2, 0.1):
        m.record_lag(clock.t - lag)
    assert m.refusal(3) is None and m.recent_lag_s() == pytest.approx(0.2)
    m.record_lag(clock.t - 1.5)  # one window scored 1.5 s after its audio arrived
    reason = m.refusal(3)
    assert reason is not None and "score lag 1.50 s > 0.5 s" in reason
    clock.t += 5.01  # past the horizon: old lags no longer count
    assert m.recent_lag_s() == 0.0 and m.refusal(3) is None


def test_lag_quantile_ignores_a_single_outlier_among_many() -> None:
    clock = FakeClock()
    m = monitor(clock, lag_quantile=0.9)
    for _ in range(19):
        m.record_lag(clock.t - 0.1)
    m.record_lag(clock.t - 3.0)
    assert m.recent_lag_s() == pytest.approx(0.1) and m.refusal(0) is None


def test_capacity_is_fitted_from_batch_timings() -> None:
    clock = FakeClock()
    m = monitor(clock, fit_weight=0.5)
    assert m.capacity_streams() is None
    for n in (1, 4, 8, 1, 16, 2):
        m.record_batch(n, 0.01 + 0.005 * n)  # 10 ms per call + 5 ms per window
    # At batch 16: 16 / 0.09 s = 177.8 windows/s; 80 % of it at 2 windows/s per stream.
    assert m.capacity_windows_per_s() == pytest.approx(16 / 0.09, rel=1e-6)
    assert m.capacity_streams() == int(0.8 * 16 / 0.09 * 0.5) == 71
    assert m.refusal(70) is None
    reason = m.refusal(71)
    assert reason is not None and "measured capacity is 71 real-time streams" in reason


def test_an_idle_worker_admits_one_stream_even_below_capacity_one() -> None:
    clock = FakeClock()
    m = monitor(clock)
    m.record_batch(1, 2.0)  # 0.5 windows/s: not even one stream at 2 windows/s
    assert m.capacity_streams() == 0
    assert m.refusal(0) is None  # nothing to protect
    reason = m.refusal(1)
    assert reason is not None and "capacity is 0 real-time streams" in reason


def test_a_shared_gpu_counts_every_workers_streams_against_its_calibrated_capacity() -> None:
    clock = FakeClock()
    m = LoadMonitor(SheddingConfig(), hop_s=0.5, max_batch_windows=16, clock=clock, device_workers=4)

    def score(batch: list[int]) -> None:
        clock.t += 0.001 + 0.001 * len(batch)  # uncontended: 1 ms per call + 1 ms per window

    m.calibrate(score, lambda n: [0] * n, largest=16)
    capacity = int(0.8 * 16 / 0.017 * 0.5)
    assert m.capacity_streams() == capacity == 376 and m.capacity_share() == 94
    # Live batches wait for the other workers' batches: they must not lower the device figure.
    for _ in range(50):
        m.record_batch(16, 0.2)
    assert m.capacity_streams() == capacity
    assert m.refusal(own_streams=10, total_streams=capacity - 1) is None
    reason = m.refusal(own_streams=10, total_streams=capacity)
    assert reason is not None and f"capacity is {capacity} real-time streams on the shared device" in reason
    assert m.refusal(own_streams=0, total_streams=capacity) is None  # an idle worker admits one


def test_one_slow_call_during_calibration_does_not_set_the_capacity() -> None:
    """Each size is timed several times and the median kept: a driver hiccup
    or another process's set-up during one call changes nothing."""
    clock = FakeClock()
    m = LoadMonitor(SheddingConfig(), hop_s=0.5, max_batch_windows=16, clock=clock, device_workers=4)
    sizes: list[int] = []

    def score(batch: list[int]) -> None:
        sizes.append(len(batch))
        clock.t += 0.001 + 0.001 * len(batch) + (2.0 if len(sizes) == 4 else 0.0)

    m.calibrate(score, lambda n: [0] * n, largest=16)
    assert sizes == [1, 16] + [1, 16] * CALIBRATION_ROUNDS  # warm-ups, then timed rounds
    assert CALIBRATION_ROUNDS >= 3 and m.capacity_streams() == int(0.8 * 16 / 0.017 * 0.5)


def test_workers_on_a_shared_gpu_admit_against_the_fastest_workers_timing() -> None:
    """A worker whose start-up timing was slowed (another process's set-up, a
    driver hiccup in every round) admits against the fastest worker's figure:
    contention only ever slows a timing down."""
    import multiprocessing

    rates = DeviceRates(shared_rates(multiprocessing.get_context("spawn"), 3))
    assert rates.best() is None
    clock = FakeClock()
    monitors = []
    for per_window_s in (0.001, 0.010, 0.002):  # worker 1 timed 10x slower

        def score(batch: list[int], per_window_s: float = per_window_s) -> None:
            clock.t += 0.001 + per_window_s * len(batch)

        m = LoadMonitor(SheddingConfig(), hop_s=0.5, max_batch_windows=16, clock=clock, device_workers=3)
        m.calibrate(score, lambda n: [0] * n, largest=16)
        monitors.append(m)
    own = [m.capacity_streams() for m in monitors]
    assert own == [int(0.8 * 16 / 0.017 * 0.5), int(0.8 * 16 / 0.161 * 0.5), int(0.8 * 16 / 0.033 * 0.5)]
    for i, m in enumerate(monitors):
        rate = m.capacity_windows_per_s()
        assert rate is not None
        m.device_rates = rates
        rates.publish(i, rate)
    assert [m.capacity_streams() for m in monitors] == [own[0]] * 3
    reason = monitors[1].refusal(own_streams=5, total_streams=own[0])
    assert reason is not None and f"capacity is {own[0]} real-time streams on the shared device" in reason
    # A worker of its own device (a CPU worker) keeps its own figure.
    alone = LoadMonitor(SheddingConfig(), hop_s=0.5, max_batch_windows=16, clock=clock)
    alone.record_batch(16, 0.161)
    alone.device_rates = rates
    assert alone.capacity_streams() == own[1]


def test_incremental_lag_limit_is_where_streams_start_skipping() -> None:
    from spoofwatch.stream.server.context import skip_lag_s

    live = load_calibration(None).live  # the packaged AASIST-L calibration
    assert skip_lag_s(live, incremental=False) == live.stream.hop_s
    assert skip_lag_s(live, incremental=True) == live.stream.max_lag_s == 8.0
    m = LoadMonitor(SheddingConfig(), hop_s=0.5, max_batch_windows=16, clock=FakeClock(), skip_lag_s=8.0)
    assert m.max_score_lag_s == 8.0


class FakeIncremental:
    """An incremental backend whose steps cost 2 ms each and first passes 20 ms, on a fake clock."""

    device = "cpu"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[list[int]] = []

    def open_stream(self) -> dict[str, int]:
        return {}

    def score(self, streams: list[dict[str, int]], windows: list[tuple[int, Any]]) -> list[float]:
        self.calls.append([start for start, _ in windows])
        for stream, (start, _) in zip(streams, windows, strict=True):
            self.clock.t += 0.002 if "last" in stream else 0.020
            stream["last"] = start
        return [1.0] * len(windows)


def test_incremental_capacity_is_calibrated_on_steps_and_refined_live() -> None:
    from spoofwatch.stream.server.timing import TimedIncremental, step_batches

    clock = FakeClock()
    m = LoadMonitor(SheddingConfig(), hop_s=0.5, max_batch_windows=4, clock=clock)
    backend = FakeIncremental(clock)
    m.calibrate(lambda batch: backend.score(*batch), step_batches(backend, 64600, 8019), largest=4)
    # Each batch size is warmed up untimed; then each batch's first passes are untimed
    # (window 0) and its steps timed (window 1).
    assert backend.calls[:4] == [[0], [8019], [0] * 4, [8019] * 4]
    assert backend.calls[4:8] == [[0], [8019], [0] * 4, [8019] * 4]
    assert m.capacity_windows_per_s() == pytest.approx(500.0)  # 2 ms per step, not 20 ms per pass
    assert m.capacity_streams() == int(0.8 * 500 * 0.5) == 200
    sizes: list[int] = []
    timed = TimedIncremental(backend, m, sizes.append)
    assert timed.device == "cpu"
    streams = [timed.open_stream() for _ in range(3)]
    timed.score(streams, [(0, None)] * 3)  # three first passes: 60 ms for 3 windows, timed live
    assert sizes == [3] and m.capacity_windows_per_s() < 500.0


def test_host_cost_refuses_past_what_one_core_of_the_worker_handles() -> None:
    m = monitor(FakeClock())
    assert m.host_capacity_streams() is None and m.refusal(500) is None  # nothing measured: no bound
    m.host.seed(0.01)  # 10 ms of CPU per second of audio: 100 streams per core
    assert m.host_capacity_streams() == 80  # target_utilisation 0.8 of host_cores 1
    assert m.refusal(79) is None
    assert (
        m.refusal(80) == "overloaded: measured host capacity is 80 real-time streams per worker; retry later"
    )
    assert m.refusal(0) is None  # an idle worker admits one stream whatever it measured
    assert m.capacity_share() == 0  # no scoring capacity timed yet bounds it first
    m.record_batch(16, 0.016)  # 1,000 windows/s: 400 streams at a 0.5 s hop
    assert m.capacity_share() == 80  # the host bound, not the model's
    assert LoadMonitor(SheddingConfig(host_cores=2.0), 0.5, 16).host_capacity_streams() is None
    two = LoadMonitor(SheddingConfig(host_cores=2.0), 0.5, 16)
    two.host.seed(0.01)
    assert two.host_capacity_streams() == 160


def test_host_cost_is_measured_per_second_of_audio_from_the_workers_threads() -> None:
    host = HostCost(weight=0.5)
    host.sample(10.0)  # the event loop's first report: a reference only
    assert host.cpu_s_per_audio_s is None
    host.add_ingest(0.1, 2.0)
    host.add_ingest(0.1, 2.0)
    host.sample(10.2)  # loop 0.2 + ingest 0.2 CPU s for 4 s of audio
    assert host.cpu_s_per_audio_s == pytest.approx(0.1)
    host.add_ingest(0.0, 1.0)
    host.sample(11.0)  # 1 s of audio for 0.8 s of loop CPU, weighed in at 0.5
    assert host.cpu_s_per_audio_s == pytest.approx(0.45)
    # An upload sends 60 s of audio in a second: charged per second of audio, not per stream.
    host.add_ingest(0.3, 60.0)
    host.sample(11.0)
    assert host.cpu_s_per_audio_s == pytest.approx(0.5 * 0.45 + 0.5 * 0.005)


def test_host_cost_drops_idle_intervals_with_their_cpu() -> None:
    """A night without streams (scrapes, pings) is not charged to the first audio after it."""
    host = HostCost(weight=0.5)
    host.seed(0.02)
    host.sample(0.0)
    for hour in range(1, 9):
        host.sample(0.5 * 3600 * hour)  # half a core-second of loop CPU per second, no audio
        assert host.cpu_s_per_audio_s == pytest.approx(0.02)
    host.add_ingest(0.01, 0.3)  # a little audio: still mostly fixed costs, dropped too
    host.sample(0.5 * 3600 * 8 + 0.05)
    assert host.cpu_s_per_audio_s == pytest.approx(0.02)
    host.add_ingest(0.03, 1.0)
    host.sample(0.5 * 3600 * 8 + 0.06)  # 0.01 loop + 0.03 ingest for 1 s of audio
    assert host.cpu_s_per_audio_s == pytest.approx(0.5 * 0.02 + 0.5 * 0.04)


def test_the_host_cost_probe_times_real_time_streams_through_a_loopback_server(vad: Any) -> None:
    """The supervisor's start-up figure: real streams through a throw-away copy of
    the server (the real VAD and engine; the model an instant stand-in), whatever
    address, token and limits the real one has."""
    config = ServerConfig(host="0.0.0.0", port=1, token="s3cret", max_streams=1)
    # The user's stream limits would end the probe's streams: the probe keeps its own.
    config = dataclasses.replace(config, max_stream_duration_s=2.0, idle_timeout_s=0.5)
    cost = measure_host_cost(load_calibration(model="aasist-l").live, vad, config, streams=2, audio_s=5.0)
    assert math.isfinite(cost) and cost > 0  # CPU seconds per second of audio


def test_a_host_cost_probe_that_gets_no_audio_through_says_so(vad: Any) -> None:
    live = load_calibration(model="aasist-l").live
    with pytest.raises(NetworkError, match="probe's streams did not complete"):
        measure_host_cost(live, vad, streams=1, audio_s=0.0)


def test_a_host_cost_probe_past_its_time_ends_itself_with_a_clear_error(vad: Any) -> None:
    """5 s of real-time audio cannot arrive within 10 ms, however fast the machine."""
    live = load_calibration(model="aasist-l").live
    with pytest.raises(NetworkError, match=r"the host-cost probe did not finish within 0\.01 s"):
        measure_host_cost(live, vad, streams=1, audio_s=5.0, timeout_s=0.01)
    assert not [t for t in threading.enumerate() if t.name == "host-probe"]  # it ended


def test_batch_fit_without_a_slope_trusts_what_it_saw() -> None:
    fit = BatchFit(0.1)
    assert fit.windows_per_s(16) is None
    for _ in range(3):
        fit.add(1, 0.25)
    assert fit.windows_per_s(16) == pytest.approx(4.0)  # one batch size: no extrapolation
    slow_big = BatchFit(1.0)
    slow_big.add(1, 0.1)
    slow_big.add(16, 0.05)  # noise: bigger batch faster
    assert slow_big.windows_per_s(16) is not None


def test_disabled_monitor_measures_but_never_refuses() -> None:
    clock = FakeClock()
    m = LoadMonitor(None, hop_s=0.5, max_batch_windows=16, clock=clock)
    m.record_lag(clock.t - 100.0)
    m.record_batch(1, 100.0)
    assert not m.enabled and m.recent_lag_s() == 100.0 and m.refusal(1000) is None


def test_shedding_config_is_validated() -> None:
    from spoofwatch.errors import ConfigError

    for bad in ({"max_score_lag_s": 0.0}, {"target_utilisation": 1.5}, {"lag_quantile": 0.0}):
        (name,) = bad
        with pytest.raises(ConfigError, match=f"^load shedding: expected {name} "):
            SheddingConfig(**bad)


# ---- stream slots ------------------------------------------------------------------


def test_local_slots() -> None:
    slots = LocalSlots(2)
    assert slots.try_acquire() and slots.try_acquire() and not slots.try_acquire()
    slots.release()
    assert slots.total() == slots.own() == 1 and slots.try_acquire()


def test_shared_slots_count_a_total_across_workers() -> None:
    ctx = multiprocessing.get_context("spawn")
    cells, lock = shared_cells(ctx, 3)
    w0, w1, w2 = (SharedSlots(cells, lock, 3, i, max_streams=3) for i in range(3))
    assert w0.try_acquire() and w0.try_acquire() and w1.try_acquire()
    assert not w2.try_acquire()  # the total is 3, though worker 2 holds none
    assert (w0.own(), w1.own(), w2.own(), w2.total()) == (2, 1, 0, 3)
    w1.release()
    assert w2.try_acquire() and not w0.try_acquire()
    # Worker 0 dies: the supervisor zeroes its cells, the others can use its share.
    w0.set_shedding(True)
    reset_worker_cells(cells, lock, 3, 0)
    assert w1.total() == 1 and w1.try_acquire() and w1.try_acquire() and not w1.try_acquire()
    w1.set_shedding(True)
    assert w1.any_worker_admitting()  # worker 0's flag was cleared with its death
    w2.set_shedding(True)
    w0.set_shedding(True)
    assert not w1.any_worker_admitting()


def test_dead_worker_holding_the_admission_lock_is_freed() -> None:
    ctx = multiprocessing.get_context("spawn")
    cells, lock = shared_cells(ctx, 2)
    w1 = SharedSlots(cells, lock, 2, 1, max_streams=2)
    cells[0] = 1
    assert lock.acquire()  # as if worker 0 died inside its critical section
    reset_worker_cells(cells, lock, 2, 0)
    assert w1.try_acquire() and w1.total() == 1


# ---- the session's window observer (fake scorer and VAD, no sockets) ---------------


class RecordingObserver:
    """A :class:`WindowObserver` that keeps what it hears, on a clock the test sets."""

    def __init__(self) -> None:
        self.t = 0.0
        self.windows: list[tuple[str, float | None]] = []
        self.seen: list[dict[str, Any]] = []
        self.ingests: list[tuple[float, float]] = []
        self.discards: list[tuple[dict[str, Any], int]] = []

    def now(self) -> float:
        return self.t

    def window_done(self, outcome: str, arrived_at: float | None) -> None:
        self.windows.append((outcome, arrived_at))

    def events(self, events: list[dict[str, Any]]) -> None:
        self.seen += events

    def discarded(self, tags: dict[str, Any], windows: int) -> None:
        self.discards.append((tags, windows))

    def ingested(self, cpu_s: float, audio_s: float) -> None:
        self.ingests.append((cpu_s, audio_s))


class StallingScorer(FakeScorer):
    """Scores ``free`` calls, then blocks (in the batcher's thread) until released."""

    def __init__(self, free: int) -> None:
        super().__init__()
        self.free = free
        self.stalled, self.release = threading.Event(), threading.Event()

    def scores(self, windows: Any) -> Any:
        if self.calls >= self.free:
            self.stalled.set()
            self.release.wait(timeout=120)
        return super().scores(windows)


async def observed_stream(
    driver: StreamDriver, stall_after: int | None = None
) -> tuple[RecordingObserver, list[dict[str, Any]]]:
    """16 s of fake speech pushed in 1 s messages (message i arrives at observer time i);
    with ``stall_after``, the scorer stalls after that many calls and the stream is aborted."""
    observer, got = RecordingObserver(), []

    async def emit(event: dict[str, Any]) -> None:
        got.append(event)

    audio = np.concatenate([offset_audio(8.0, 0.05, 1), offset_audio(8.0, -0.05, 2)])
    scorer = StallingScorer(10**6 if stall_after is None else stall_after)
    batcher = BatchScorer(scorer)
    # An inbox that holds the whole stream: it is pushed before the session serves.
    session = StreamSession(
        driver, batcher, emit, tags={"stream_id": "t"}, observer=observer, inbox_max_s=16.0
    )
    async with anyio.create_task_group() as outer:
        outer.start_soon(batcher.serve)
        for i in range(16):
            observer.t = float(i)
            await session.push(audio[i * 16000 : (i + 1) * 16000])
        if stall_after is None:
            session.close_input()  # before serve: the whole stream is one ingest batch
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.serve)
            await session.finish()
        else:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(session.serve)
                    await anyio.to_thread.run_sync(scorer.stalled.wait, 120)
                    scope.cancel()
            await session.abort("disconnect")
            scorer.release.set()
        batcher.close()
    return observer, got


class ThreadRecordingScorer(FakeScorer):
    """Records the thread of every model call."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def scores(self, windows: Any) -> Any:
        self.threads.append(threading.get_ident())
        return super().scores(windows)


async def test_every_model_call_of_a_batcher_runs_on_one_thread_of_its_own() -> None:
    """ONNX Runtime's CUDA provider keeps a context per session and calling
    thread, so the batcher must not wander over anyio's pool (which the
    streams' ingest keeps busy with other work meanwhile)."""
    scorer = ThreadRecordingScorer()
    batcher = BatchScorer(scorer, max_batch_windows=2)
    window = offset_audio(4.0375, 0.05)
    pool_threads: set[int] = set()

    def ingest_like() -> None:
        pool_threads.add(threading.get_ident())

    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.serve)
        for _ in range(10):
            async with anyio.create_task_group() as callers:
                for _ in range(4):
                    callers.start_soon(batcher.score, window)
                    callers.start_soon(anyio.to_thread.run_sync, ingest_like)
        batcher.close()
    assert scorer.calls >= 20  # at most 2 windows per call
    assert len(set(scorer.threads)) == 1
    assert scorer.threads[0] != threading.get_ident() and scorer.threads[0] not in pool_threads


@pytest.mark.timeout(120)  # the hang blocks the event loop itself: only pytest-timeout can end it
async def test_a_scoring_thread_returns_instant_results_and_raises_failures() -> None:
    """Calls that finish at once: in a first version, the first call of a fresh
    thread could run its wake-up on the event loop's own thread, which then
    waited for itself forever."""
    for _ in range(200):
        thread = ScoringThread()
        assert await thread.run(int, "7") == 7
        with pytest.raises(ValueError, match="invalid literal"):
            await thread.run(int, "x")
        thread.close()


async def test_a_live_session_reports_every_window_with_its_arrival() -> None:
    observer, got = await observed_stream(StreamDriver(fake_engine(), drop_stale=True))
    summary = got[-1]
    assert summary["type"] == "summary" and summary["dropped_windows"] > 0
    outcomes = [o for o, _ in observer.windows]
    assert len(outcomes) == summary["windows"]  # every window once
    assert outcomes.count("dropped") == summary["dropped_windows"]
    assert outcomes.count("scored") == summary["scored_windows"]
    # The journal hears of the discarded windows too (no event tells of them): a crash summary counts them.
    assert {k for tags, _ in observer.discards for k in tags} == {"stream_id"}
    assert sum(n for _, n in observer.discards) == summary["dropped_windows"]
    # One ingest batch: each window's audio began arriving with the first message.
    assert {arrived for _, arrived in observer.windows} == {0.0}
    assert observer.seen == got  # the observer sees each event before it is sent
    # The one ingest call reported its CPU time and its 16 s of audio (host cost).
    assert len(observer.ingests) == 1 and observer.ingests[0][0] > 0  # cut on a thread: its own CPU time
    assert observer.ingests[0][1] == pytest.approx(16.0)


async def test_an_upload_reports_no_lag_and_an_abort_drops_without_lag() -> None:
    clock = FakeClock()  # never moves: 16 s of audio arrive at once, far ahead of it
    driver = StreamDriver(fake_engine(), drop_stale=True, clock=clock)
    observer, got = await observed_stream(driver, stall_after=3)
    assert driver.upload
    summary = got[-1]
    assert summary["type"] == "summary" and summary["scored_windows"] == 3
    # An upload is never dropped from and waits by design: its lag says nothing about load.
    assert observer.windows[:3] == [("scored", None)] * 3
    # The abort dropped what was still queued (the window stuck in the scorer is
    # neither): counted, but without a lag either.
    dropped = observer.windows[3:]
    assert dropped == [("dropped", None)] * summary["dropped_windows"]
    assert summary["dropped_windows"] == summary["windows"] - 4
    assert observer.discards == [({"stream_id": "t"}, summary["dropped_windows"])]


# ---- the server on loopback -------------------------------------------------------


@pytest.fixture(scope="module")
def speech(la_dir: Path) -> np.ndarray:
    return np.tile(read_audio(la_clip(la_dir, BONAFIDE_UTT)), 3)[: 6 * 16000].astype(np.float32)


def make_ctx(
    scorer: Any, vad: Any, tmp_path: Path, load: LoadMonitor | None = None, **cfg: Any
) -> ServerContext:
    config = ServerConfig(host="127.0.0.1", port=0, **cfg)
    return ServerContext(
        config,
        BatchScorer(scorer),
        load_calibration(model="aasist-l").live,
        vad,
        ServerSinks(jsonl=tmp_path / "events.jsonl"),
        load=load,
        model="aasist-l",
    )


async def http_get(
    port: int, path: str, token: str | None = None, extra_headers: str = ""
) -> tuple[int, dict[str, str], str]:
    """A minimal HTTP/1.1 GET on loopback: status, headers, body."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    async with await anyio.connect_tcp("127.0.0.1", port) as s:
        await s.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{extra_headers}\r\n".encode())
        data = b""
        try:
            while True:
                data += await s.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body.decode()


def samples(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_health_readiness_and_metrics(
    speech: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    ctx = make_ctx(scorer, vad, tmp_path, token="s3cret", max_streams=3, shedding=None)
    async with anyio.create_task_group() as tg:
        port = await tg.start(WebSocketServer(ctx).run)
        assert (await http_get(port, health.HEALTHZ))[0] == 200  # liveness needs no token
        for path in (health.READYZ, health.METRICS):
            assert (await http_get(port, path))[0] == 401
            assert (await http_get(port, path, "wrong"))[0] == 401
        status, headers, body = await http_get(port, health.READYZ, "s3cret")
        ready = json.loads(body)
        assert status == 200 and headers["content-type"] == "application/json"
        assert headers["cache-control"] == "no-store"  # a probe must never read a cached state
        # "//healthz" was read as a host and an empty path: "unknown path : expected one of /, /twilio".
        status, _, body = await http_get(port, "//healthz")
        assert status == 404
        assert body == "unknown path //healthz: expected one of /, /twilio, /healthz, /readyz, /metrics\n"
        assert (await http_get(port, health.READYZ + "?token=s3cret"))[0] == 200  # the query still read
        assert (await http_get(port, health.READYZ + "?token=s3cret#top"))[0] == 200  # not "s3cret#top"
        # The absolute form, which a server must accept (RFC 9112 3.2.2; some proxies send it).
        assert (await http_get(port, f"http://127.0.0.1:{port}{health.READYZ}?token=s3cret"))[0] == 200
        assert ready["ready"] and ready["provider"] == "cpu" and ready["model"] == "aasist-l"
        assert ready["capacity_left"] == 3 and ready["active_streams"] == 0 and ready["shedding"] is None
        assert ready["worker"] == 0 and ready["worker_streams"] == 0

        result = await send_audio(speech, f"ws://127.0.0.1:{port}/", token="s3cret")
        assert result.close_code == 1000
        summary = result.events[-1]
        # The slot is freed after the closing handshake, so after the client has
        # its close: wait for it (bounded) rather than count on which comes first.
        with anyio.fail_after(60):
            while ctx.active_streams:  # noqa: ASYNC110 - no event marks a handler's exit
                await anyio.sleep(0.01)

        status, headers, page = await http_get(port, health.METRICS, "s3cret")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=")
        m = samples(page)
        assert m[("spoofwatch_windows_total", (("outcome", "scored"),))] == summary["scored_windows"] > 0
        gated = summary["windows"] - summary["scored_windows"] - summary["dropped_windows"]
        assert m[("spoofwatch_windows_total", (("outcome", "gated"),))] == gated
        assert m[("spoofwatch_windows_total", (("outcome", "dropped"),))] == summary["dropped_windows"]
        assert m[("spoofwatch_batch_size_windows_sum", ())] == summary["scored_windows"]
        assert m[("spoofwatch_batch_size_windows_count", ())] == ctx.batcher.batches
        assert m[("spoofwatch_active_streams", ())] == 0
        assert m[("spoofwatch_provider", (("provider", "cpu"),))] == 1
        assert m[("spoofwatch_max_streams", ())] == 3
        assert m[("spoofwatch_alerts_total", ())] == summary["alerts"]
        assert m[("spoofwatch_refused_connections_total", (("code", "401"), ("reason", "token")))] == 4
        # Only windows scored while the stream was not ahead of real time have a delay.
        assert m[("spoofwatch_score_delay_seconds_count", ())] <= summary["scored_windows"]
        tg.cancel_scope.cancel()
    ctx.sinks.close()


async def test_a_header_sent_twice_is_refused_with_400_and_counted(
    scorer: Any, vad: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two Authorization headers (or two Upgrade headers, even on the public
    /healthz) are ambiguous: a 400 naming the header, logged and counted as a
    refusal, not a 500 with a traceback; the server serves on."""
    caplog.set_level(logging.INFO)
    ctx = make_ctx(scorer, vad, tmp_path, token="s3cret")
    async with anyio.create_task_group() as tg:
        port = await tg.start(WebSocketServer(ctx).run)
        twice = "Authorization: Bearer s3cret\r\nAuthorization: Bearer guess\r\n"
        status, _, body = await http_get(port, health.READYZ, extra_headers=twice)
        assert status == 400 and "'Authorization' sent more than once" in body
        upgrades = "Upgrade: websocket\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        status, _, body = await http_get(port, health.HEALTHZ, extra_headers=upgrades)
        assert status == 400 and "'Upgrade' sent more than once" in body
        assert (await http_get(port, health.HEALTHZ))[0] == 200
        status, _, page = await http_get(port, health.METRICS, "s3cret")
        assert (
            samples(page)[("spoofwatch_refused_connections_total", (("code", "400"), ("reason", "header")))]
            == 2
        )
        tg.cancel_scope.cancel()
    ctx.sinks.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refused) == 2 and "'Authorization'" in refused[0] and "s3cret" not in " ".join(refused)


async def test_pipelined_http_requests_are_one_info_line_not_a_traceback(
    scorer: Any, vad: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two HTTP requests in one write made websockets fail an assertion and log
    an ERROR with a traceback, per connection, for anyone (no token needed)."""
    caplog.set_level(logging.INFO)
    ctx = make_ctx(scorer, vad, tmp_path)
    async with anyio.create_task_group() as tg:
        port = await tg.start(WebSocketServer(ctx).run)
        for _ in range(3):
            async with await anyio.connect_tcp("127.0.0.1", port) as s:
                two = f"GET {health.HEALTHZ} HTTP/1.1\r\nHost: x\r\n\r\n"
                await s.send((two + two.replace(health.HEALTHZ, health.READYZ)).encode())
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    while await s.receive():
                        pass
        assert (await http_get(port, health.HEALTHZ))[0] == 200  # served on
        tg.cancel_scope.cancel()
    ctx.sinks.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    said = [r.getMessage() for r in caplog.records if r.name == "websockets.server"]
    assert (
        said.count("closed a connection that sent HTTP requests back to back (pipelining is not served)") == 3
    )


async def test_a_huge_bad_value_is_not_copied_into_the_log(
    scorer: Any, vad: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A close reason quotes what the client sent: a megabyte-long encoding
    name is refused with 1003 as any other, and the log line is as bounded as
    the close frame's reason (one client used to add a megabyte per connection)."""
    caplog.set_level(logging.INFO)
    ctx = make_ctx(scorer, vad, tmp_path)
    async with anyio.create_task_group() as tg:
        port = await tg.start(WebSocketServer(ctx).run)
        async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
            start = {"type": "start", "sample_rate": 16000, "encoding": "x" * 1_000_000, "channels": 1}
            await ws.send(json.dumps(start))
            with pytest.raises(ConnectionClosed):
                await ws.recv()  # no stream started: nothing but the close
        assert ws.close_code == 1003 and "unknown encoding" in (ws.close_reason or "")
        tg.cancel_scope.cancel()
    ctx.sinks.close()
    closing = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("closing stream with 1003")
    ]
    assert len(closing) == 1 and len(closing[0].encode()) <= 200, closing


def nan_card(folder: Path) -> Path:
    """A model card whose tiny ONNX model returns NaN for any window that is not
    silent: sqrt(-mean(x^2)) (a broken third-party model; silence, which the
    card's load-time probe may use, scores 0)."""
    import onnx
    from onnx import TensorProto, helper

    from spoofwatch.constants import WINDOW_SAMPLES

    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", WINDOW_SAMPLES])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Mul", ["audio", "audio"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["power"], keepdims=1),  # (B, 1)
        helper.make_node("Neg", ["power"], ["negative"]),
        helper.make_node("Sqrt", ["negative"], ["nan"]),  # NaN unless the power is 0
        helper.make_node("Concat", ["nan", "nan"], ["scores"], axis=1),  # (B, 2)
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "nan_on_audio", [x], [out], [axes]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "nan.onnx"))
    card = folder / "nan.toml"
    card.write_text(
        f'[model]\nonnx = "nan.onnx"\nsample_rate_hz = 16000\nwindow_samples = {WINDOW_SAMPLES}\n'
        'input = "audio"\noutput = "scores"\nbonafide_index = 1\nhigher_is_bonafide = true\n'
    )
    return card


async def test_windows_the_model_scores_nan_are_dropped_in_the_metrics_as_in_the_summary(
    speech: np.ndarray, vad: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN score reaches the client as a null score, counted in the summary's
    dropped windows: /metrics must say the same (not ``scored``), and such a
    window has no score delay."""
    from spoofwatch.model.scorers import build_scorer

    # The client looks slower than real time whatever this machine's speed: a
    # live stream, whose scored windows would have a delay.
    ticks = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(ServerContext, "clock", staticmethod(lambda: float(next(ticks))))
    scorer = build_scorer(str(nan_card(tmp_path)), device="cpu", threads=1)
    ctx = make_ctx(scorer, vad, tmp_path, shedding=None)
    async with anyio.create_task_group() as tg:
        port = await tg.start(WebSocketServer(ctx).run)
        result = await send_audio(speech, f"ws://127.0.0.1:{port}/")
        assert result.close_code == 1000
        summary = result.events[-1]
        nulls = [e for e in result.events if e["type"] == "score" and e["speech"] and e["score"] is None]
        assert summary["scored_windows"] == 0 and len(nulls) > 0  # the model ran and said NaN
        m = samples((await http_get(port, health.METRICS))[2])
        assert m[("spoofwatch_windows_total", (("outcome", "scored"),))] == 0
        assert m[("spoofwatch_windows_total", (("outcome", "dropped"),))] == summary["dropped_windows"]
        gated = summary["windows"] - summary["dropped_windows"]
        assert m[("spoofwatch_windows_total", (("outcome", "gated"),))] == gated
        assert m[("spoofwatch_score_delay_seconds_count", ())] == 0
        tg.cancel_scope.cancel()
    ctx.sinks.close()


async def start_stream(ws: Any, audio: np.ndarray) -> dict[str, Any]:
    """Start a stream on ``ws``, send ``audio`` in one message, return the first event."""
    await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "f32le", "channels": 1}))
    await ws.send(audio.astype("<f4").tobytes())
    return json.loads(await ws.recv())  # type: ignore[no-any-return]


async def stop_and_read(ws: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stop the stream on ``ws`` and read its events until the server closes."""
    await ws.send(json.dumps({"type": "stop"}))
    with pytest.raises(ConnectionClosed):
        while True:
            events.append(json.loads(await ws.recv()))
    return events


class SlowScorer:
    """The real scorer, but every call takes ``seconds`` on the injected clock."""

    def __init__(self, scorer: Any, clock: FakeClock, seconds: float) -> None:
        self.scorer, self.clock, self.seconds = scorer, clock, seconds
        self.device = scorer.device

    def scores(self, windows: np.ndarray) -> np.ndarray:
        out = self.scorer.scores(windows)
        self.clock.t += self.seconds
        return out  # type: ignore[no-any-return]


async def test_overloaded_worker_refuses_new_streams_with_1013(
    speech: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    """A scorer that needs 2 s per window sustains no real-time stream: once that
    is measured, a new stream gets 1013 with the reason, and the stream already
    admitted carries on to its summary."""
    clock = FakeClock()
    load = LoadMonitor(SheddingConfig(), hop_s=0.5, max_batch_windows=16, clock=clock)
    ctx = make_ctx(SlowScorer(scorer, clock, 2.0), vad, tmp_path, load=load, max_streams=8)
    async with anyio.create_task_group() as tg:
        port = await tg.start(WebSocketServer(ctx).run)
        url = f"ws://127.0.0.1:{port}/"
        async with connect(url) as first:
            event = await start_stream(first, speech)  # a window was scored (and timed)
            assert event["type"] == "score" and event["score"] is not None

            refused = await send_audio(speech, url)
            assert refused.close_code == 1013 and refused.events == []
            assert "overloaded: measured capacity is 0 real-time streams" in refused.close_reason

            status, _, body = await http_get(port, health.READYZ)
            assert status == 503 and json.loads(body)["shedding"] == refused.close_reason

            events = await stop_and_read(first, [event])
            assert first.close_code == 1000
        summary = events[-1]
        assert summary["type"] == "summary" and summary["scored_windows"] > 0
        page = samples((await http_get(port, health.METRICS))[2])
        assert (
            page[("spoofwatch_refused_connections_total", (("code", "1013"), ("reason", "overloaded")))] == 1
        )
        assert page[("spoofwatch_batch_size_windows_count", ())] == summary["scored_windows"]
        tg.cancel_scope.cancel()
    ctx.sinks.close()


async def test_a_worker_whose_cpu_is_spent_refuses_with_1013_and_keeps_its_stream(
    speech: np.ndarray, vad: Any, tmp_path: Path
) -> None:
    """Host cost: 0.5 s of CPU per second of audio leaves room for one real-time
    stream (0.8 of a core); the second gets 1013 with the reason, the first
    carries on to its summary. The model is a stand-in that costs nothing, so
    that only the host bound can refuse, however fast this machine is."""
    # No lag bound either: the clip arrives in one message, and its VAD counts in the lag.
    load = LoadMonitor(
        SheddingConfig(host_cost_weight=1e-9, max_score_lag_s=3600.0), hop_s=0.5, max_batch_windows=16
    )
    load.host.seed(0.5)
    ctx = make_ctx(FakeScorer(), vad, tmp_path, load=load, max_streams=8)
    async with anyio.create_task_group() as tg:
        port = await tg.start(WebSocketServer(ctx).run)
        url = f"ws://127.0.0.1:{port}/"
        async with connect(url) as first:
            events = [await start_stream(first, speech)]
            assert events[0]["type"] == "score"

            refused = await send_audio(speech, url)
            assert refused.close_code == 1013 and refused.events == []
            assert refused.close_reason == (
                "overloaded: measured host capacity is 1 real-time streams per worker; retry later"
            )
            status, _, body = await http_get(port, health.READYZ)
            ready = json.loads(body)
            assert status == 503 and ready["host_capacity_streams"] == 1
            assert ready["shedding"] == refused.close_reason

            events = await stop_and_read(first, events)
            assert first.close_code == 1000 and events[-1]["type"] == "summary"
        page = samples((await http_get(port, health.METRICS))[2])
        assert page[("spoofwatch_capacity_streams", ())] <= 1
        assert page[("spoofwatch_host_cpu_seconds_per_audio_second", ())] == pytest.approx(0.5, rel=1e-6)
        tg.cancel_scope.cancel()
    ctx.sinks.close()


async def test_a_drain_ends_an_open_alert_with_reason_shutdown(
    spoof_stream: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    """A worker's drain (SIGTERM -> ``request_shutdown``) closes its streams with
    1001; their open alerts end with ``shutdown``, not ``disconnect``. The grace is
    generous: the drain scores what is queued first, and on a loaded machine that took
    longer than the default 10 s (the stream was then cut, 1006)."""
    ctx = make_ctx(scorer, vad, tmp_path, shedding=None, shutdown_grace_s=600.0)
    server = WebSocketServer(ctx)
    async with anyio.create_task_group() as tg:
        port = await tg.start(server.run)
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send(
                json.dumps({"type": "start", "sample_rate": 16000, "encoding": "f32le", "channels": 1})
            )
            await ws.send(spoof_stream.astype("<f4").tobytes())  # no stop: the stream stays open
            while json.loads(await ws.recv())["type"] != "alert_start":
                pass
            server.request_shutdown()
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 1001
        # run() returned by itself: the task group exits without a cancel.
    ctx.sinks.close()
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    ends = [e for e in logged if e["type"] == "alert_end"]
    assert len(ends) == 1 and ends[0]["reason"] == "shutdown"
    assert [e["type"] for e in logged].count("summary") == 1 and logged[-1]["type"] == "summary"


async def test_a_drain_cuts_a_client_that_never_answers_the_close(
    speech: np.ndarray, vad: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The client stops reading once its stream runs: the drain's 1001 close
    frame is never answered (the connection stays CLOSING). After the grace
    period the drain cuts it too, instead of waiting out the closing
    handshake's timeout (an hour here, so only the cut can end the run)."""
    ctx = make_ctx(FakeScorer(), vad, tmp_path, shedding=None, shutdown_grace_s=0.2, close_timeout_s=3600.0)
    server = WebSocketServer(ctx)
    stopped = anyio.Event()

    async def serve_then_mark(*, task_status: Any) -> None:
        await server.run(task_status=task_status)
        stopped.set()

    with caplog.at_level(logging.WARNING, logger="spoofwatch.stream.server.app"):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_then_mark)
            async with connect(f"ws://127.0.0.1:{port}/", close_timeout=1) as ws:
                await start_stream(ws, speech)  # no stop: the stream stays open
                ws.transport.pause_reading()  # the client stops reading: nothing it gets is answered
                server.request_shutdown()
                with anyio.move_on_after(120) as guard:  # against hanging, not a speed bound
                    await stopped.wait()
                ws.transport.resume_reading()
                if guard.cancelled_caught:  # a hung drain: end the server, then fail
                    tg.cancel_scope.cancel()
    ctx.sinks.close()
    assert not guard.cancelled_caught, "the drain never finished"
    assert "1 stream(s) still open after 0.2 s: cutting them" in caplog.text
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in logged].count("summary") == 1


async def test_a_drain_closes_a_client_that_keeps_streaming(
    speech: np.ndarray, vad: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C with a live stream (``send --realtime``, 20 ms frames): the
    client sends audio until it sees the 1001, so its frames must be read and
    dropped while the server closes, or its answer to the close waits behind
    them until the close timeout (the grace period is an hour here: only the
    closing handshake can end the drain). The verdict is the server side's
    close code: the client's answer to the close was read (1001), not cut
    after the close timeout (1006); the timeout is an hour, so the guard
    below only stops a hang."""
    from spoofwatch.stream.client import send_audio

    ctx = make_ctx(
        FakeScorer(), vad, tmp_path, shedding=None, shutdown_grace_s=3600.0, close_timeout_s=3600.0
    )
    server = WebSocketServer(ctx)
    stopped, scored = anyio.Event(), anyio.Event()
    results: list[Any] = []
    connections: list[Any] = []  # the server's side of each stream
    handle = server._handle

    async def recording_handle(ws: Any) -> None:
        connections.append(ws)
        await handle(ws)

    server._handle = recording_handle  # type: ignore[method-assign]

    async def serve_then_mark(*, task_status: Any) -> None:
        await server.run(task_status=task_status)
        stopped.set()

    async def client(url: str) -> None:
        on_event = lambda e: scored.set() if e["type"] == "score" else None  # noqa: E731
        results.append(await send_audio(np.tile(speech, 10), url, realtime=True, on_event=on_event))

    with caplog.at_level(logging.WARNING, logger="spoofwatch.stream.server.app"):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_then_mark)
            tg.start_soon(client, f"ws://127.0.0.1:{port}/")
            await scored.wait()  # the stream is live
            server.request_shutdown()
            with anyio.move_on_after(300) as guard:  # against hanging, not a speed bound
                await stopped.wait()
            if guard.cancelled_caught:  # a hung drain: end the server, then fail
                tg.cancel_scope.cancel()
    ctx.sinks.close()
    assert not guard.cancelled_caught, "the close waits for the timeout: the client's answer was never read"
    (conn,) = connections
    assert conn.close_code == 1001  # the client's close frame, read: 1006 if the connection was cut
    assert "still open after" not in caplog.text
    (result,) = results
    assert result.close_code == 1001 and result.events[-1]["type"] == "summary"


class BlockedScorer:
    """The real scorer behind a gate the test opens: scoring that takes as long as the test wants."""

    def __init__(self, scorer: Any) -> None:
        self.scorer, self.device = scorer, getattr(scorer, "device", "cpu")
        self.entered, self.release = threading.Event(), threading.Event()

    def scores(self, windows: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.release.wait(timeout=120)
        return self.scorer.scores(windows)  # type: ignore[no-any-return]


async def test_keepalive_and_health_answer_while_scoring_is_stuck(
    speech: np.ndarray, scorer: Any, vad: Any, tmp_path: Path
) -> None:
    """Scoring runs off the event loop: while a batch is stuck in the scorer,
    the server still answers WebSocket pings and /healthz, then finishes the stream."""
    blocked = BlockedScorer(scorer)
    ctx = make_ctx(blocked, vad, tmp_path, shedding=None)
    async with anyio.create_task_group() as tg:
        port = await tg.start(WebSocketServer(ctx).run)
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send(
                json.dumps({"type": "start", "sample_rate": 16000, "encoding": "f32le", "channels": 1})
            )
            await ws.send(speech.astype("<f4").tobytes())
            await anyio.to_thread.run_sync(blocked.entered.wait, 120)
            try:
                pong = await ws.ping()
                with anyio.fail_after(60):  # a guard against hanging, not a speed bound
                    await pong
                    assert (await http_get(port, health.HEALTHZ))[0] == 200
                assert not blocked.release.is_set()  # the scorer was still stuck throughout
            finally:
                blocked.release.set()
            await ws.send(json.dumps({"type": "stop"}))
            events = [json.loads(m) async for m in ws]
        assert ws.close_code == 1000 and events[-1]["type"] == "summary"
        tg.cancel_scope.cancel()
    ctx.sinks.close()


async def keepalive_pings(port: int) -> dict[str, float]:
    """The server's keepalive pings by outcome, from /metrics."""
    page = samples((await http_get(port, health.METRICS))[2])
    return {o: page[("spoofwatch_keepalive_pings_total", (("outcome", o),))] for o in ("sent", "dropped")}


async def test_an_upload_held_back_by_scoring_is_not_dropped_by_the_keepalive(
    speech: np.ndarray, tmp_path: Path
) -> None:
    """While scoring is stuck, the server stops reading an upload (TCP pushes
    back: audio is never dropped), and the client's pongs wait in its socket
    behind audio the server has not read. That client owes no pong: with pings
    every 0.05 s and a 1 s timeout, many pings go unanswered while it is held
    back (3 s of them), and the stream still completes (websockets' own
    keepalive cut it). The timeout is not shorter: while the server catches up
    afterwards, a read pending in an event loop starved of CPU (a loaded CI
    machine) is time a pong is owed, and 0.2 s of it cut the stream once."""
    blocked = BlockedScorer(FakeScorer())  # scoring of minutes of audio is not what is tested
    ctx = make_ctx(blocked, FakeVad(), tmp_path, shedding=None, ping_interval_s=0.05, ping_timeout_s=1.0)
    audio = np.tile(speech, 160).astype("<f4")  # 61 MB: more than loopback's socket buffers hold
    frames = [audio[i : i + 16000].tobytes() for i in range(0, audio.size, 16000)]
    async with anyio.create_task_group() as tg:
        port = await tg.start(WebSocketServer(ctx).run)
        # Without a pong deadline of its own, as `spoofwatch send` (its pings wait behind its audio too).
        async with connect(f"ws://127.0.0.1:{port}/", ping_timeout=None) as ws:
            await ws.send(
                json.dumps({"type": "start", "sample_rate": 16000, "encoding": "f32le", "channels": 1})
            )
            events: list[dict[str, Any]] = []

            async def upload() -> None:
                for frame in frames:
                    await ws.send(frame)
                await ws.send(json.dumps({"type": "stop"}))

            async def read() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for message in ws:
                        events.append(json.loads(message))

            tg.start_soon(upload)
            tg.start_soon(read)
            try:
                assert await anyio.to_thread.run_sync(blocked.entered.wait, 120)
                with anyio.fail_after(120):  # guards against hanging, not speed bounds
                    while not ws.transport.get_write_buffer_size():  # noqa: ASYNC110
                        await anyio.sleep(0.01)  # the client's writes are held back
                    pings = (await keepalive_pings(port))["sent"]
                    while (await keepalive_pings(port))["sent"] < pings + 60:  # noqa: ASYNC110 - 3 timeouts
                        await anyio.sleep(0.05)
                # Every pong to those pings is queued behind audio the server has not read.
                assert ws.transport.get_write_buffer_size() > 0
                assert (await keepalive_pings(port))["dropped"] == 0
            finally:
                blocked.release.set()
            with anyio.fail_after(600):
                while not events or events[-1]["type"] != "summary":  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        assert ws.close_code == 1000
        assert events[-1]["duration_s"] == pytest.approx(audio.size / 16000, abs=0.01)
        tg.cancel_scope.cancel()
    ctx.sinks.close()


def test_a_shedding_setting_out_of_range_is_named() -> None:
    """It said "shedding config out of range: SheddingConfig(...)", all nine fields."""
    from spoofwatch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^load shedding: expected lag_quantile in \(0, 1\], got 2$"):
        SheddingConfig(lag_quantile=2)
    with pytest.raises(ConfigError, match=r"expected target_utilisation in \(0, 1\], got nan"):
        SheddingConfig(target_utilisation=float("nan"))


def test_stream_journal_lets_the_supervisor_end_every_open_stream(tmp_path: Path) -> None:
    """A dead worker's streams get, in the sinks, an alert_end for an open alert
    and a summary with what their events had counted; a stream that ended
    leaves nothing behind."""
    from spoofwatch.stream.events import END_REASONS
    from spoofwatch.stream.server.journal import StreamJournal, crash_events, journal_path

    path = journal_path(tmp_path, 1234)
    journal = StreamJournal(path, exit_threshold=2.7)  # an alert_end carries the exit threshold
    a, b = {"stream_id": "w0-1234-s1"}, {"callSid": "CA1", "streamSid": "MZ1", "track": "inbound"}

    def score(t: float, value: float | None, speech: bool, tags: dict[str, str]) -> dict[str, Any]:
        return {
            "type": "score",
            "t_start": t - 4,
            "t_end": t,
            "score": value,
            "smoothed": -3.5,
            "speech": speech,
            **tags,
        }

    journal.update([score(4.0, None, False, a)])
    # A stream's first window is on disk at once, not at the next flush (up to a
    # second later): a crash then gave "0 windows" for a stream already scored.
    assert [(e["stream_id"], e["windows"]) for e in json.loads(path.read_text())] == [(a["stream_id"], 1)]
    journal.update([score(4.5, -4.0, True, a), score(5.0, None, True, a)])
    journal.update([{"type": "alert_start", "t": 9.0, "smoothed": -3.0, "threshold": 1.7, **a}])
    journal.update([{"type": "alert_start", "t": 5.0, "smoothed": -2.0, "threshold": 1.7, **b}])
    journal.update(
        [{"type": "alert_end", "t": 7.0, "smoothed": 2.0, "threshold": 1.7, "reason": "recovered", **b}]
    )
    journal.update([score(10.0, -4.0, True, a)])
    journal.discarded({**a, "other": "tag"}, 2)  # shed while behind: no event says so
    journal.discarded({"stream_id": "ended-or-unknown"}, 5)  # not journalled: ignored
    journal.opened({"stream_id": "w0-1234-s2", "other": "tag"})  # started, no event yet
    journal.flush()  # the score moved the stream's time on
    ends = crash_events(path)
    crash = "worker_crash"
    assert ends == [
        {"type": "alert_end", "t": 10.0, "smoothed": -3.5, "threshold": 2.7, "reason": crash, **a},
        # gated, scored, a speech window the model failed on (dropped), scored, two shed
        {"type": "summary", "duration_s": 10.0, "windows": 6, "scored_windows": 2, "alerts": 1}
        | {"dropped_windows": 3, "reason": crash, **a},
        {"type": "summary", "duration_s": 7.0, "windows": 0, "scored_windows": 0, "alerts": 1}
        | {"dropped_windows": 0, "reason": crash, **b},
        {"type": "summary", "duration_s": 0.0, "windows": 0, "scored_windows": 0, "alerts": 0}
        | {"dropped_windows": 0, "reason": crash, "stream_id": "w0-1234-s2"},
    ]
    assert ends[0]["reason"] in END_REASONS
    assert not path.exists() and crash_events(path) == []
    ended = [{"type": "summary", **tags} for tags in (a, b, {"stream_id": "w0-1234-s2"})]
    journal.update(ended)  # streams that ended leave nothing
    assert json.loads(path.read_text()) == []


# ---- the supervisor's start-up ---------------------------------------------------


def no_model(spec: WorkerSpec, threads: int) -> Any:
    raise AssertionError("no worker may start in this test")


def supervisor_spec(port: int = 0) -> WorkerSpec:
    """A server whose start-up runs the host-cost probe (tests replace it) and no model."""
    return WorkerSpec(
        ServerConfig(host="127.0.0.1", port=port),
        no_model,
        load_live=lambda spec: load_calibration(model="aasist-l").live,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_startup_probe_stops_the_server_even_as_pid_1(
    monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    """PID 1 in a container has no default action for SIGTERM: without a handler
    of its own the server ignored it until the ~8 s probe was over. Emulated by
    ignoring the signal; the probe is a stand-in that signals the process and
    then waits long: a start-up that handles the signal never gets to the wait."""

    def probe(self: Supervisor) -> float:
        os.kill(os.getpid(), signum)  # the handler runs in this (main) thread, at once
        threading.Event().wait(30)  # interrupted by a handler that raises
        raise AssertionError(f"{signal.Signals(signum).name} was ignored during start-up")

    monkeypatch.setattr(Supervisor, "_probe_host_cost", probe)
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    previous = signal.signal(signum, signal.SIG_IGN)
    try:
        supervisor = Supervisor(supervisor_spec(), 1)
        with pytest.raises(KeyboardInterrupt):
            supervisor.run()
        assert signal.getsignal(signum) == signal.SIG_IGN  # the handlers it set are undone
    finally:
        signal.signal(signum, previous)
    assert supervisor.sock is not None and supervisor.sock.fileno() == -1  # closed
    assert MULTIPROC_ENV not in os.environ


def test_a_port_in_use_fails_at_once_before_the_startup_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(self: Supervisor) -> float:
        raise AssertionError("the host-cost probe ran before the port was checked")

    monkeypatch.setattr(Supervisor, "_probe_host_cost", probe)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(
            InputError, match=rf"^cannot listen on 127\.0\.0\.1:{port}: Address already in use$"
        ):
            Supervisor(supervisor_spec(port), 1).run()
