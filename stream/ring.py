"""Single-producer, single-consumer float32 ring buffer.

The producer (the microphone's PortAudio callback) only copies samples in
and advances ``_written``; the consumer only advances ``_read``. Each index
has exactly one writer, and a Python int store is atomic, so neither side
takes a lock. When the producer laps the consumer the oldest unread samples
are overwritten: the consumer notices, skips them, and counts an overrun.
A copy that raced with such an overwrite is detected by re-reading the write
index afterwards (a seqlock), so the consumer never returns torn samples.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from spoofwatch.errors import InputError


def write_circular(data: npt.NDArray[np.float32], start: int, chunk: npt.NDArray[np.float32]) -> None:
    """Copy ``chunk`` (at most ``len(data)`` samples) into ``data`` from ``start``, wrapping."""
    first = min(chunk.shape[0], data.shape[0] - start)
    data[start : start + first] = chunk[:first]
    data[: chunk.shape[0] - first] = chunk[first:]


def read_circular(data: npt.NDArray[np.float32], start: int, n: int) -> npt.NDArray[np.float32]:
    """A copy of ``n`` samples of ``data`` from ``start``, wrapping."""
    first = min(n, data.shape[0] - start)
    return np.concatenate([data[start : start + first], data[: n - first]])


class RingBuffer:
    """Fixed-capacity ring of float32 samples with overrun counting."""

    def __init__(self, capacity_samples: int) -> None:
        if capacity_samples < 1:
            raise InputError(f"expected capacity_samples >= 1, got {capacity_samples}")
        self.capacity = capacity_samples
        self._data = np.zeros(capacity_samples, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget all audio and counters (only while no producer is writing)."""
        self._written = 0  # total samples ever written (producer-owned)
        self._reserved = 0  # end of the write in progress (producer-owned)
        self._read = 0  # total samples ever consumed or skipped (consumer-owned)
        self.overruns = 0  # times the consumer found unread audio overwritten
        self.lost_samples = 0  # samples overwritten before they were read

    @property
    def available(self) -> int:
        """Unread samples (capped at capacity: older ones are already lost)."""
        return min(self._written - self._read, self.capacity)

    def write(self, chunk: npt.NDArray[np.float32]) -> None:
        """Producer side: copy ``chunk`` in. Never blocks, never allocates."""
        n = chunk.shape[0]
        if n == 0:
            return
        skipped = max(0, n - self.capacity)  # only the newest `capacity` samples can survive
        chunk = chunk[skipped:]
        # Announce the overwrite before touching memory, publish after (seqlock).
        self._reserved = self._written + n
        write_circular(self._data, (self._written + skipped) % self.capacity, chunk)
        self._written += n

    def read(self, max_samples: int | None = None) -> npt.NDArray[np.float32]:
        """Consumer side: return (a copy of) up to ``max_samples`` unread samples."""
        written = self._written
        self._skip_lost(written)
        n = written - self._read
        if max_samples is not None:
            n = min(n, max_samples)
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        out = read_circular(self._data, self._read % self.capacity, n)
        # Seqlock check: did the producer overwrite (or start overwriting)
        # part of what we copied? `_reserved` is set before each write begins.
        overwritten = self._reserved - self.capacity - self._read
        if overwritten > 0:
            drop = min(overwritten, n)
            self._count_loss(drop)
            out = out[drop:]
            self._read += drop
        self._read += out.shape[0]
        return out

    def _skip_lost(self, written: int) -> None:
        lost = written - self._read - self.capacity
        if lost > 0:
            self._count_loss(lost)
            self._read += lost

    def _count_loss(self, samples: int) -> None:
        self.overruns += 1
        self.lost_samples += samples
