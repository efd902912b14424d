"""The spoofwatch exception tree.

Every error the library raises on purpose derives from :class:`SpoofwatchError`,
so callers can catch one type. The CLI maps each child to an exit code::

    SpoofwatchError                 exit 1
    ├── InputError (ValueError)     exit 2  bad argument, array or config value
    │   └── ConfigError             exit 2  malformed config / calibration file
    ├── AudioError                  exit 3  unreadable, empty or corrupt audio
    ├── WeightsError                exit 4  missing, truncated or mismatching weights
    ├── ModelError                  exit 4  export / parity / runtime failures
    ├── DeviceError                 exit 5  no PortAudio, no input device, no CUDA
    ├── ProtocolError               exit 6  a client broke the streaming protocol
    ├── DatasetError                exit 7  missing files, malformed protocol lines
    ├── CalibrationError            exit 8  calibration made for another model, etc.
    ├── NetworkError                exit 9  a server cannot be reached (refused, unresolvable, timeout)
    ├── IdleTimeout                 exit 1  (server side) a client sent nothing for the idle timeout: 1001
    └── SinkError                   exit 10 events or standard output could not be written (a full disk)
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Every WebSocket close code spoofwatch sends (RFC 6455, section 7.4.1)."""

    NORMAL = 1000  # the stream completed
    GOING_AWAY = 1001  # idle timeout, or the server is shutting down
    PROTOCOL_ERROR = 1002  # wrong message order, unknown control message
    UNSUPPORTED = 1003  # unsupported format (encoding, rate, channels)
    INVALID_PAYLOAD = 1007  # a payload that does not match its declared format
    POLICY_VIOLATION = 1008  # a limit such as the maximum stream duration
    MESSAGE_TOO_BIG = 1009  # a message over --max-message-bytes
    INTERNAL_ERROR = 1011  # a server bug or failure
    TRY_AGAIN_LATER = 1013  # at capacity (--max-streams) or overloaded (load shedding)


class SpoofwatchError(Exception):
    """Root of every error spoofwatch raises deliberately."""

    exit_code = 1


class InputError(SpoofwatchError, ValueError):
    """A value passed in does not match what was expected."""

    exit_code = 2


class ConfigError(InputError):
    """A configuration or calibration file is malformed."""


class AudioError(SpoofwatchError):
    """Audio could not be read or decoded."""

    exit_code = 3


class WeightsError(SpoofwatchError):
    """Model weights are missing, truncated or do not match the pinned hash."""

    exit_code = 4


class ModelError(SpoofwatchError):
    """Model export, parity or runtime failure."""

    exit_code = 4


class DeviceError(SpoofwatchError):
    """An audio or compute device is missing or unusable."""

    exit_code = 5


class ProtocolError(SpoofwatchError):
    """A streaming client violated the wire protocol or a limit.

    ``close_code`` is the WebSocket close code the server answers with.
    """

    exit_code = 6

    def __init__(self, message: str, close_code: CloseCode) -> None:
        if not isinstance(close_code, CloseCode):
            raise TypeError(f"ProtocolError needs a CloseCode, got {close_code!r}")
        super().__init__(message)
        self.close_code = close_code


class DatasetError(SpoofwatchError):
    """A dataset layout or protocol file is incomplete or malformed."""

    exit_code = 7


class CalibrationError(SpoofwatchError):
    """A calibration cannot be computed or does not fit the model in use."""

    exit_code = 8


class NetworkError(SpoofwatchError):
    """A server could not be reached: connection refused, unknown host, timeout."""

    exit_code = 9


class IdleTimeout(SpoofwatchError):
    """A stream's client sent nothing for the server's idle timeout. Its own
    class: a builtin ``TimeoutError`` from anywhere else (a socket's
    ``ETIMEDOUT``) must not be taken for the client's silence."""


class SinkError(SpoofwatchError):
    """Events could not all be written to an events sink (a full disk, a closed reader)."""

    exit_code = 10
