"""Microphone source: a PortAudio callback that only copies into a ring buffer.

``sounddevice`` is imported lazily so that machines without PortAudio can
use everything else; every failure to open a device becomes a one-line
:class:`DeviceError`. The stream object can be injected (``stream_factory``)
so the adapter is testable on machines without a sound card.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
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
#: How long stopping the stream may take before it is abandoned. A healthy
#: PortAudio stop returns within a buffer's time (milliseconds); one on a
#: frozen audio server (``kill -STOP`` of PulseAudio) never returns, and
#: ``abort()`` blocks there as well.
STOP_TIMEOUT_S = 2.0

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


def release_portaudio_at_exit() -> None:
    """Let the process exit although a PortAudio stream never stopped.

    sounddevice's exit handler calls ``Pa_Terminate``, which closes every
    open stream and so waits for the frozen one forever. Without that
    handler, the interpreter's exit unloads libportaudio while PortAudio's
    own capture thread is still blocked inside it, and that thread crashes
    the process (SIGSEGV) when it wakes. So the handler goes, and the library
    is pinned in memory (``RTLD_NODELETE``) until the process ends.
    """
    sd = import_sounddevice()
    handler = getattr(sd, "_exit_handler", None)  # private: checked, never assumed
    if handler is not None:
        atexit.unregister(handler)
    libname = getattr(sd, "_libname", None)
    nodelete = getattr(os, "RTLD_NODELETE", None)  # POSIX only
    if libname is None or nodelete is None:
        return
    try:
        ctypes.CDLL(libname, mode=nodelete | getattr(os, "RTLD_NOLOAD", 0))
    except OSError as exc:
        log.warning("cannot pin PortAudio for the process exit: %s", exc)


class MicrophoneSource:
    """Captures mono float32 audio at ``rate_hz`` into ``ring``."""

    def __init__(
        self,
        rate_hz: int,
        device: int | str | None = None,
        stream_factory: StreamFactory | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.rate_hz = rate_hz
        self.device = device
        self.stop_timeout_s = stop_timeout_s
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
        """Stop and close the stream, waiting at most ``stop_timeout_s``.

        A device whose audio server froze never stops: its stream is then
        abandoned (still open, on a daemon thread) with a warning, so that
        the capture ends anyway.
        """
        if self._stream is None:
            return
        stream, self._stream = self._stream, None
        closer = threading.Thread(target=self._close, args=(stream,), name="mic-stop", daemon=True)
        closer.start()
        closer.join(self.stop_timeout_s)
        if not closer.is_alive():
            return
        log.warning(
            "input device %r did not stop within %g s (its audio server hung?); abandoning it",
            self.device,
            self.stop_timeout_s,
        )
        if self._factory is None:  # a real PortAudio stream: it must not hold up the exit either
            release_portaudio_at_exit()

    def _close(self, stream: Any) -> None:
        try:
            stream.stop()
            stream.close()
        except Exception as exc:  # a device that died may fail to stop; the capture is over anyway
            log.warning("closing input device %r: %s", self.device, exc)
