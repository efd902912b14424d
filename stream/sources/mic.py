"""Microphone source: a PortAudio callback that only copies into a ring buffer.

``sounddevice`` is imported lazily so that machines without PortAudio can
use everything else; every failure to open a device becomes a one-line
:class:`DeviceError`. The stream object can be injected (``stream_factory``)
so the adapter is testable on machines without a sound card.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from spoofwatch.errors import DeviceError

from ..ring import RingBuffer

log = logging.getLogger(__name__)

#: Seconds of native-rate audio the ring buffer holds before overrunning.
RING_CAPACITY_S = 30.0

StreamFactory = Callable[..., Any]


def import_sounddevice() -> ModuleType:
    try:
        import sounddevice
    except OSError as exc:  # raised when the PortAudio shared library is missing
        raise DeviceError(
            f"PortAudio is not available ({exc}); install it, e.g. `apt-get install libportaudio2`"
        ) from None
    module: ModuleType = sounddevice
    return module


def list_input_devices() -> list[dict[str, Any]]:
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list audio devices: {exc}") from None
    return [
        {"id": i, "name": d["name"], "channels": d["max_input_channels"], "rate_hz": d["default_samplerate"]}
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]


def parse_device(value: str | None) -> int | str | None:
    """``--device`` accepts a numeric ID or a name substring."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def input_device_info(device: int | str | None) -> tuple[str, int]:
    """``(name, native rate)`` of the input device, or a clear DeviceError."""
    sd = import_sounddevice()
    try:
        info = sd.query_devices(device, "input")
    except (ValueError, sd.PortAudioError) as exc:
        if device is None:
            raise DeviceError(
                f"no audio input device found ({exc}); connect a microphone or use `spoofwatch stream FILE`"
            ) from None
        raise DeviceError(
            f"bad input device {device!r} ({exc}); see `spoofwatch monitor --list-devices`"
        ) from None
    return str(info["name"]), int(info["default_samplerate"])


class MicrophoneSource:
    """Captures mono float32 audio at ``rate_hz`` into ``ring``."""

    def __init__(
        self,
        rate_hz: int,
        device: int | str | None = None,
        stream_factory: StreamFactory | None = None,
    ) -> None:
        self.rate_hz = rate_hz
        self.device = device
        self.ring = RingBuffer(int(RING_CAPACITY_S * rate_hz))
        self.input_overflows = 0
        self._factory = stream_factory
        self._stream: Any = None
        #: Set by PortAudio when the stream ends: by ``stop``, or on its own when
        #: the device goes away (unplugged, the audio server killed).
        self._ended = threading.Event()

    def _callback(self, indata: npt.NDArray[np.float32], frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's thread: copy and return. No locks, no I/O, no logging.
        if status and getattr(status, "input_overflow", False):
            self.input_overflows += 1
        self.ring.write(indata[:, 0])

    def start(self) -> None:
        factory = self._factory
        if factory is None:
            factory = import_sounddevice().InputStream
        try:
            self._stream = factory(
                device=self.device,
                channels=1,
                samplerate=self.rate_hz,
                dtype="float32",
                callback=self._callback,
                finished_callback=self._ended.set,
            )
            self._stream.start()
        except DeviceError:
            raise
        except Exception as exc:  # PortAudioError and friends
            raise DeviceError(
                f"cannot open input device {self.device!r} at {self.rate_hz} Hz: {exc}"
            ) from None
        log.info("capturing from %r at %d Hz", self.device, self.rate_hz)

    @property
    def ended(self) -> bool:
        """The stream ended (after ``start``): a device that died, unless ``stop`` ended it."""
        return self._ended.is_set()

    def stop(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                stream.stop()
                stream.close()
            except Exception as exc:  # a device that died may fail to stop; the capture is over anyway
                log.warning("closing input device %r: %s", self.device, exc)
