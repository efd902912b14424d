"""Server configuration and the state shared by every connection."""

from __future__ import annotations

import ipaddress
import itertools
import math
import time
from dataclasses import dataclass, field

from spoofwatch.errors import ConfigError

from ..driver import StreamDriver
from ..engine import Engine, LiveConfig, build_engine
from ..gate import SileroVad
from .batcher import BatchScorer
from .journal import AlertJournal
from .load import LoadMonitor, LocalSlots, SheddingConfig, StreamSlots, TimedScorer
from .metrics import ServerMetrics, StreamStats
from .sinks import ServerSinks


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
    max_batch_windows: int = 16
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
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"server {name}: expected {expected}, got {getattr(self, name)!r}")


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
        vad: SileroVad,
        sinks: ServerSinks,
        *,
        slots: StreamSlots | None = None,
        load: LoadMonitor | None = None,
        stream_id_prefix: str = "",
        model: str | None = None,
        journal: AlertJournal | None = None,
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
        self.load = load or LoadMonitor(config.shedding, live.stream.hop_s, config.max_batch_windows)
        self.metrics = ServerMetrics(self.provider, config.max_streams)
        self.stats = StreamStats(self.load, self.metrics, journal)
        batcher.scorer = TimedScorer(batcher.scorer, self.load, self.metrics.batch_size.observe)
        self.stream_id_prefix = stream_id_prefix
        #: Set by ``WebSocketServer.request_shutdown``: a stream closed now ends for ``shutdown``.
        self.shutting_down = False

    def new_stream_id(self) -> str:
        return f"{self.stream_id_prefix}s{next(self._ids)}"

    def new_engine(self) -> Engine:
        return build_engine(self.live, self.vad)

    def new_driver(self, rate_hz: int) -> StreamDriver:
        """A live stream's driver: stale windows dropped unless the client sends
        faster than real time (by the wall clock)."""
        return StreamDriver(self.new_engine(), rate_hz, drop_stale=True, clock=time.monotonic)
