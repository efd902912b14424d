"""The stream slots (``--max-streams``, a total across worker processes).

:class:`LocalSlots` in one process, :class:`SharedSlots` in shared memory for a
multi-process server (each worker counts its own streams in its own cell;
admission reads the total and increments under one lock, so the total is
exact; a dead worker's cell is zeroed by the supervisor). :class:`DeviceRates`
shares each worker's timed scoring rate on a shared GPU.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)


class StreamSlots(Protocol):
    max_streams: int

    #: This worker's index (0 for a single process).
    index: int

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...

    def total(self) -> int: ...

    def own(self) -> int: ...

    def set_shedding(self, shedding: bool) -> None: ...

    def any_worker_admitting(self) -> bool: ...


class LocalSlots:
    """``--max-streams`` within one process."""

    def __init__(self, max_streams: int) -> None:
        self.max_streams = max_streams
        self.index = 0
        self.active = 0
        self._shedding = False

    def try_acquire(self) -> bool:
        if self.active >= self.max_streams:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1

    def total(self) -> int:
        return self.active

    def own(self) -> int:
        return self.active

    def set_shedding(self, shedding: bool) -> None:
        self._shedding = shedding

    def any_worker_admitting(self) -> bool:
        return not self._shedding


#: Seconds a worker waits for the admission lock before refusing the stream
#: (only a worker killed inside its few-microsecond critical section can hold it
#: that long; the supervisor then frees it).
SLOT_LOCK_TIMEOUT_S = 1.0


class SharedSlots:
    """``--max-streams`` as a total over worker processes, in shared memory.

    ``cells`` holds, per worker, its active streams and (after them) whether it
    is shedding load. Create it in the supervisor with :func:`shared_cells`
    and hand it to each worker with its index.
    """

    def __init__(self, cells: Any, lock: Any, workers: int, index: int, max_streams: int) -> None:
        self.cells = cells
        self.lock = lock
        self.workers = workers
        self.index = index
        self.max_streams = max_streams

    def try_acquire(self) -> bool:
        if not self.lock.acquire(timeout=SLOT_LOCK_TIMEOUT_S):
            log.error("stream admission lock unavailable for %.1f s", SLOT_LOCK_TIMEOUT_S)
            return False
        try:
            if sum(self.cells[: self.workers]) >= self.max_streams:
                return False
            self.cells[self.index] += 1
            return True
        finally:
            self.lock.release()

    def release(self) -> None:
        with self.lock:
            self.cells[self.index] -= 1

    def total(self) -> int:
        return int(sum(self.cells[: self.workers]))

    def own(self) -> int:
        return int(self.cells[self.index])

    def set_shedding(self, shedding: bool) -> None:
        self.cells[self.workers + self.index] = int(shedding)  # one writer per cell

    def any_worker_admitting(self) -> bool:
        return not all(self.cells[self.workers : 2 * self.workers])


class DeviceRates:
    """Each worker's start-up scoring rate (windows/s at its largest batch) on
    a shared device, in shared memory; the fastest is the device's figure.

    Every worker times the same graphs on the same GPU, and contention or a
    hiccup can only slow a timing down, never speed it up: the fastest median
    is the closest to what the device sustains. Create the cells in the
    supervisor with :func:`shared_rates`.
    """

    def __init__(self, cells: Any) -> None:
        self.cells = cells

    def publish(self, index: int, windows_per_s: float) -> None:
        self.cells[index] = windows_per_s

    def best(self) -> float | None:
        """The fastest published rate; ``None`` before any worker published one."""
        fastest = max(self.cells[:], default=0.0)
        return float(fastest) if fastest > 0 else None


def shared_rates(ctx: Any, workers: int) -> Any:
    """Cells for :class:`DeviceRates`, from a multiprocessing context."""
    return ctx.Array("d", workers, lock=False)


def shared_cells(ctx: Any, workers: int) -> tuple[Any, Any]:
    """``(cells, lock)`` for :class:`SharedSlots`, from a multiprocessing context."""
    return ctx.Array("i", 2 * workers, lock=False), ctx.Lock()


def reset_worker_cells(cells: Any, lock: Any, workers: int, index: int) -> None:
    """A worker died: its streams are gone and it sheds nothing (supervisor side)."""
    if not lock.acquire(timeout=SLOT_LOCK_TIMEOUT_S):
        # The dead worker held the admission lock: free it for the living.
        log.warning("worker %d died holding the admission lock; releasing it", index)
    try:
        cells[index] = 0
        cells[workers + index] = 0
    finally:
        lock.release()
