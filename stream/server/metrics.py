"""Prometheus metrics of the WebSocket server (``GET /metrics``).

One :class:`ServerMetrics` per server process. With several worker
processes (``serve --workers N``) the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start, so
``prometheus-client`` keeps every worker's values in memory-mapped files
there, and whichever worker answers a scrape sums all of them
(``MultiProcessCollector``): the page covers the whole server however the
connections were spread. Gauges of live state use the ``live*`` modes, whose
files the supervisor deletes when a worker dies; counters and histograms of a
dead worker keep counting in the totals, as Prometheus expects.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .journal import StreamJournal
from .load import LoadMonitor

#: Environment variable that switches ``prometheus-client`` to multi-process mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Name of the active-streams gauge (the HorizontalPodAutoscaler scales on it).
ACTIVE_STREAMS = "spoofwatch_active_streams"
SCORE_DELAY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    def __init__(self, provider: str, max_streams: int) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        r = self.registry = CollectorRegistry()
        self.active_streams = Gauge(
            ACTIVE_STREAMS, "Streams being served now", registry=r, multiprocess_mode="livesum"
        )
        self.max_streams = Gauge(
            "spoofwatch_max_streams", "--max-streams (all workers)", registry=r, multiprocess_mode="max"
        )
        self.windows = Counter(
            "spoofwatch_windows",
            "Windows by outcome: scored, dropped (stale), gated (no speech)",
            ["outcome"],
            registry=r,
        )
        self.score_delay = Histogram(
            "spoofwatch_score_delay_seconds",
            "Seconds from the arrival of a window's last audio to its score",
            buckets=SCORE_DELAY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "spoofwatch_batch_size_windows",
            "Windows per ONNX Runtime call",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.alerts = Counter("spoofwatch_alerts", "Spoof alerts started", registry=r)
        self.refused = Counter(
            "spoofwatch_refused_connections",
            "Connections refused, by WebSocket close code (or HTTP status) and reason",
            ["code", "reason"],
            registry=r,
        )
        self.keepalive = Counter(
            "spoofwatch_keepalive_pings",
            "WebSocket keepalive pings: sent, and dropped (no pong within the timeout of waiting on the client)",
            ["outcome"],
            registry=r,
        )
        self.provider = Gauge(
            "spoofwatch_provider",
            "Compute provider in use (1 for the one in use)",
            ["provider"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.sink_events = Counter(
            "spoofwatch_sink_events",
            "Events per sink kind (jsonl, stdout, webhook) by outcome: written, dropped (queue full), failed",
            ["sink", "outcome"],
            registry=r,
        )
        self._sink_totals: dict[tuple[str, str], int] = {}
        self.score_lag = Gauge(
            "spoofwatch_score_lag_seconds",
            "Recent score lag (quantile) of the most loaded worker",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.capacity_streams = Gauge(
            "spoofwatch_capacity_streams",
            "Measured real-time stream capacity (sum over workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.host_cost = Gauge(
            "spoofwatch_host_cpu_seconds_per_audio_second",
            "CPU a worker spends outside the model per second of stream audio (the costliest worker)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.workers = Gauge(
            "spoofwatch_workers", "Worker processes serving", registry=r, multiprocess_mode="livesum"
        )
        for outcome in ("scored", "dropped", "gated"):
            self.windows.labels(outcome)  # present at 0 from the start
        for outcome in ("sent", "dropped"):
            self.keepalive.labels(outcome)
        self.provider.labels(provider).set(1)
        self.max_streams.set(max_streams)
        self.workers.set(1)

    def observe_sinks(self, stats: dict[str, dict[str, int]]) -> None:
        """Add what ``ServerSinks.stats()`` counted since the last call to ``sink_events``."""
        for name, counters in stats.items():
            kind = name.split(" ", 1)[0]  # "jsonl PATH", "webhook URL": no paths or URLs in labels
            for outcome, total in counters.items():
                key = (name, outcome)
                delta = total - self._sink_totals.get(key, 0)
                if delta > 0:
                    self.sink_events.labels(kind, outcome).inc(delta)
                    self._sink_totals[key] = total

    def exposition(self) -> bytes:
        """The Prometheus text page: this process, or every worker in multi-process mode."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class StreamStats:
    """The sessions' :class:`~.load.WindowObserver`: feeds the load monitor and the metrics."""

    def __init__(
        self, monitor: LoadMonitor, metrics: ServerMetrics, journal: StreamJournal | None = None
    ) -> None:
        self.monitor = monitor
        self.metrics = metrics
        self.journal = journal
        self.now = monitor.clock

    def window_done(self, outcome: str, arrived_at: float | None) -> None:
        self.metrics.windows.labels(outcome).inc()
        if arrived_at is None or outcome == "gated":
            return  # a gated window costs no scoring: its lag says nothing about load
        lag = self.monitor.record_lag(arrived_at)  # a dropped window waited at least this long
        if outcome == "scored":
            self.metrics.score_delay.observe(lag)

    def ingested(self, cpu_s: float, audio_s: float) -> None:
        self.monitor.host.add_ingest(cpu_s, audio_s)

    def events(self, events: list[dict[str, Any]]) -> None:
        alerts = sum(e.get("type") == "alert_start" for e in events)
        if alerts:
            self.metrics.alerts.inc(alerts)
        if self.journal is not None:
            self.journal.update(events)

    def discarded(self, tags: dict[str, Any], windows: int) -> None:
        if self.journal is not None:  # so that a crash summary counts them too
            self.journal.discarded(tags, windows)
