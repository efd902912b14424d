"""Server configuration and the state shared by every connection."""

from __future__ import annotations

import ipaddress
import itertools
import math
import time
from dataclasses import dataclass, field

import anyio

from spoofwatch.errors import CloseCode, ConfigError, ProtocolError

from ..driver import StreamDriver
from ..engine import Engine, LiveConfig, build_engine
from ..gate import VadModel
from ..sinks import SINK_QUEUE_EVENTS
from .batcher import DEFAULT_BATCH_WINDOWS, BatchScorer
from .drain import Drain
from .ingest import DEFAULT_TICK_S, IngestTicker, check_tick_s
from .journal import StreamJournal
from .load import LoadMonitor, SheddingConfig
from .metrics import ServerMetrics, StreamStats
from .sinks import ServerSinks
from .slots import LocalSlots, StreamSlots
from .timing import TimedIncremental, TimedScorer


def skip_lag_s(live: LiveConfig, incremental: bool) -> float:
    """The score lag at which a live stream starts skipping windows (``StreamDriver``)."""
    return live.stream.max_lag_s if incremental else live.stream.hop_s


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    #: Required when binding to a non-loopback address.
    token: str | None = None
    #: Largest WebSocket message accepted (bigger ones close with 1009).
    max_message_bytes: int = 1 << 20
    #: Concurrent connections; more are refused with close code 1013.
    max_streams: int = 32
    #: Seconds without any message before a connection is closed (1001).
    idle_timeout_s: float = 30.0
    #: Seconds of audio one stream may send (then closed with 1008).
    max_stream_duration_s: float = 4 * 3600.0
    #: Windows scored per ONNX Runtime call at most.
    max_batch_windows: int = DEFAULT_BATCH_WINDOWS
    #: Threads per worker that run the streams' ingest (resampling, VAD,
    #: windowing). ``None``: anyio's shared default pool (40). Fewer threads
    #: contend less for the one GIL when hundreds of streams share a worker.
    ingest_threads: int | None = None
    #: Received messages websockets buffers per connection before it stops
    #: reading the socket; with ``max_message_bytes`` it bounds a connection's
    #: receive memory (TCP then pushes back on the client).
    max_queue_messages: int = 4
    #: Bytes of outgoing events buffered per connection before sending waits
    #: (a client that never reads then stalls only its own stream).
    write_limit_bytes: int = 1 << 15
    #: Seconds between keepalive pings, and to wait for the pong before dropping the client.
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    #: Seconds a shutdown drain (SIGTERM/SIGINT) lets streams flush before cutting them.
    shutdown_grace_s: float = 10.0
    #: Seconds a closing handshake waits for the client's close frame before
    #: dropping the connection (websockets' ``close_timeout``).
    close_timeout_s: float = 10.0
    #: Events each sink (--jsonl/--stdout/--webhook) may hold while its consumer is slow.
    sink_queue_events: int = SINK_QUEUE_EVENTS
    #: Score every window of live streams too (never drop stale ones): scores
    #: then lag behind on a slow machine instead of skipping ahead. For tests
    #: and offline checks whose outcome must not depend on the machine's speed.
    keep_live_windows: bool = False
    #: Seconds between the cuts of a worker's live streams (resampling, VAD,
    #: windows), all streams in one pass with the VAD batched across them
    #: (:mod:`.ingest`); windows wait up to this long before they are scored.
    ingest_tick_s: float = DEFAULT_TICK_S
    #: When a worker counts as overloaded (new streams then get 1013); ``None``: never.
    shedding: SheddingConfig | None = field(default_factory=SheddingConfig)

    def validate(self) -> None:
        if not self.token and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to listen on {self.host} without --token: auth is required off loopback"
            )
        checks = (
            ("port", 0 <= self.port <= 65535, "an integer in [0, 65535]"),
            ("max_message_bytes", self.max_message_bytes >= 1024, ">= 1024"),
            ("max_streams", self.max_streams >= 1, ">= 1"),
            ("idle_timeout_s", 0 < self.idle_timeout_s < math.inf, "a finite number > 0"),
            ("max_stream_duration_s", 0 < self.max_stream_duration_s < math.inf, "a finite number > 0"),
            ("max_batch_windows", self.max_batch_windows >= 1, ">= 1"),
            ("ingest_threads", self.ingest_threads is None or self.ingest_threads >= 1, ">= 1"),
            ("max_queue_messages", self.max_queue_messages >= 1, ">= 1"),
            ("write_limit_bytes", self.write_limit_bytes >= 1024, ">= 1024"),
            ("ping_interval_s", 0 < self.ping_interval_s < math.inf, "a finite number > 0"),
            ("ping_timeout_s", 0 < self.ping_timeout_s < math.inf, "a finite number > 0"),
            ("shutdown_grace_s", 0 < self.shutdown_grace_s < math.inf, "a finite number > 0"),
            ("close_timeout_s", 0 < self.close_timeout_s < math.inf, "a finite number > 0"),
            ("sink_queue_events", self.sink_queue_events >= 1, ">= 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"server {name}: expected {expected}, got {getattr(self, name)!r}")
        check_tick_s(self.ingest_tick_s)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerContext:
    """Shared by all connections: the batch scorer, VAD, engine settings, sinks, counters."""

    def __init__(
        self,
        config: ServerConfig,
        batcher: BatchScorer,
        live: LiveConfig,
        vad: VadModel,
        sinks: ServerSinks,
        *,
        slots: StreamSlots | None = None,
        load: LoadMonitor | None = None,
        stream_id_prefix: str = "",
        model: str | None = None,
        journal: StreamJournal | None = None,
    ) -> None:
        self.config = config
        self.batcher = batcher
        self.live = live
        self.vad = vad
        self.sinks = sinks
        self.active_streams = 0
        self._ids = itertools.count(1)
        # ---- capacity, load shedding and metrics (issue 11) ----
        #: The model name reported by /readyz (``None`` when the caller did not say).
        self.model = model
        self.provider = str(getattr(batcher.scorer, "device", "unknown"))
        self.slots: StreamSlots = slots or LocalSlots(config.max_streams)
        self.load = load or LoadMonitor(
            config.shedding,
            live.stream.hop_s,
            config.max_batch_windows,
            skip_lag_s=skip_lag_s(live, batcher.incremental is not None),
        )
        self.metrics = ServerMetrics(self.provider, config.max_streams)
        self.stats = StreamStats(self.load, self.metrics, journal)
        self._ingest_limiter: anyio.CapacityLimiter | None = None
        #: Cuts the live streams together (served by ``WebSocketServer``).
        self.ingest_ticker = IngestTicker(config.ingest_tick_s)
        # Time whichever scores live windows: the capacity is measured in its units.
        if batcher.incremental is None:
            batcher.scorer = TimedScorer(batcher.scorer, self.load, self.metrics.batch_size.observe)
        else:
            batcher.incremental = TimedIncremental(
                batcher.incremental, self.load, self.metrics.batch_size.observe
            )
        self.stream_id_prefix = stream_id_prefix
        #: Set by ``WebSocketServer.request_shutdown``: a stream closed now ends for ``shutdown``.
        self.shutting_down = False
        #: The one shutdown drain (single process or worker): see :mod:`.drain`.
        self.drain = Drain()

    @property
    def ingest_limiter(self) -> anyio.CapacityLimiter | None:
        """The worker's ingest thread limit (made in the event loop, on first use)."""
        if self._ingest_limiter is None and self.config.ingest_threads is not None:
            self._ingest_limiter = anyio.CapacityLimiter(self.config.ingest_threads)
        return self._ingest_limiter

    def new_stream_id(self) -> str:
        return f"{self.stream_id_prefix}s{next(self._ids)}"

    def new_engine(self) -> Engine:
        return build_engine(self.live, self.vad)

    #: Wall clock (monotonic seconds) that tells a live stream from an upload;
    #: tests replace it to make that decision independent of the machine's speed.
    clock = staticmethod(time.monotonic)

    def new_driver(self, rate_hz: int) -> StreamDriver:
        """A live stream's driver: stale windows dropped unless the client sends
        faster than real time (by :attr:`clock`), or ``keep_live_windows`` is set."""
        return StreamDriver(
            self.new_engine(),
            rate_hz,
            drop_stale=not self.config.keep_live_windows,
            clock=self.clock,
            incremental=self.batcher.incremental is not None,
        )

    def admit(self) -> tuple[str, str] | None:
        """Take one of ``max_streams`` for a new stream, or ``(reason label,
        close reason)`` when it must get 1013: the worker is overloaded (load
        shedding) or the server is full. The one admission rule of new
        connections and of a Twilio call's further tracks."""
        overload = self.load.refusal(self.slots.own(), self.slots.total())
        if overload is not None:
            return "overloaded", overload
        if not self.slots.try_acquire():
            return "capacity", f"server at capacity ({self.slots.max_streams} streams)"
        return None

    def refuse(self, label: str) -> None:
        """Count a stream refused with 1013 (``label``: ``capacity`` or ``overloaded``)."""
        self.metrics.refused.labels(str(int(CloseCode.TRY_AGAIN_LATER)), label).inc()

    def claim_extra_stream(self) -> None:
        """Count one more stream for a connection that already holds one (a
        Twilio call's second track), admitted like a new connection
        (:meth:`admit`); refused with 1013, and counted as refused."""
        refused = self.admit()
        if refused is not None:
            self.refuse(refused[0])
            raise ProtocolError(f"{refused[1]}: cannot add another track", CloseCode.TRY_AGAIN_LATER)
        self.active_streams += 1
        self.metrics.active_streams.inc()

    def release_extra_stream(self) -> None:
        self.active_streams -= 1
        self.metrics.active_streams.dec()
        self.slots.release()
