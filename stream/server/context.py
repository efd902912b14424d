"""Server configuration and the state shared by every connection."""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from spoofwatch.errors import ConfigError

from ..engine import Engine
from ..gate import SileroVad
from ..runner import build_engine
from .batcher import BatchScorer
from .journal import AlertJournal
from .load import LoadMonitor, LocalSlots, SheddingConfig, StreamSlots, TimedScorer
from .metrics import ServerMetrics, StreamStats
from .sinks import ServerSinks

if TYPE_CHECKING:
    from spoofwatch.calibration.calfile import Calibration


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
        if (
            self.max_message_bytes < 1024
            or self.max_streams < 1
            or self.idle_timeout_s <= 0
            or self.max_stream_duration_s <= 0
        ):
            raise ConfigError("server limits must be positive (max_message_bytes >= 1024)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerContext:
    """Shared by all connections: the batch scorer, VAD, calibration, sinks, counters."""

    def __init__(
        self,
        config: ServerConfig,
        batcher: BatchScorer,
        calibration: Calibration,
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
        self.calibration = calibration
        self.vad = vad
        self.sinks = sinks
        self.active_streams = 0
        self._ids = itertools.count(1)
        # ---- capacity, load shedding and metrics (issue 11) ----
        self.model = model or calibration.model
        self.provider = str(getattr(batcher.scorer, "device", "unknown"))
        self.slots: StreamSlots = slots or LocalSlots(config.max_streams)
        self.load = load or LoadMonitor(config.shedding, calibration.stream.hop_s, config.max_batch_windows)
        self.metrics = ServerMetrics(self.provider, config.max_streams)
        self.stats = StreamStats(self.load, self.metrics, journal)
        batcher.scorer = TimedScorer(batcher.scorer, self.load, self.metrics.batch_size.observe)
        self.stream_id_prefix = stream_id_prefix

    def new_stream_id(self) -> str:
        return f"{self.stream_id_prefix}s{next(self._ids)}"

    def new_engine(self) -> Engine:
        return build_engine(self.calibration, self.vad)
