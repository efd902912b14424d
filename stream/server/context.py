"""Server configuration and the state shared by every connection."""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spoofwatch.errors import ConfigError, ProtocolError

from ..engine import Engine
from ..gate import SileroVad
from ..runner import build_engine
from .batcher import BatchScorer
from .drain import Drain
from .sinks import ServerSinks

if TYPE_CHECKING:
    from spoofwatch.calibration.calfile import Calibration

#: Close code for a connection (or a track) refused because the server is full.
TRY_AGAIN_LATER = 1013


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
    #: Seconds a SIGTERM/SIGINT drain waits for streams to flush before cutting them.
    shutdown_grace_s: float = 10.0

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
            or self.max_queue_messages < 1
            or self.write_limit_bytes < 1024
            or self.ping_interval_s <= 0
            or self.ping_timeout_s <= 0
            or self.shutdown_grace_s <= 0
        ):
            raise ConfigError(
                "server limits must be positive (max_message_bytes and write_limit_bytes >= 1024)"
            )


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
    ) -> None:
        self.config = config
        self.batcher = batcher
        self.calibration = calibration
        self.vad = vad
        self.sinks = sinks
        self.active_streams = 0
        self._ids = itertools.count(1)
        self.drain = Drain()

    def new_stream_id(self) -> str:
        return f"s{next(self._ids)}"

    def new_engine(self) -> Engine:
        return self.drain.track(build_engine(self.calibration, self.vad))

    def claim_streams(self, n: int) -> None:
        """Count ``n`` more streams for one connection (a Twilio call's second
        track); refused with 1013 like a connection over ``max_streams``."""
        if self.active_streams + n > self.config.max_streams:
            raise ProtocolError(
                f"server at capacity ({self.config.max_streams} streams): cannot add {n} more track(s)",
                TRY_AGAIN_LATER,
            )
        self.active_streams += n

    def release_streams(self, n: int) -> None:
        self.active_streams -= n
