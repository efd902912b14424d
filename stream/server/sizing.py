"""How many worker processes, threads and how long to wait: the sizing rules of
``serve --workers N`` (pure functions of the machine and the settings)."""

from __future__ import annotations

import os
from dataclasses import replace

from spoofwatch.errors import InputError

from .load import SheddingConfig

#: Most worker processes per CPU core that ``--workers`` accepts.
MAX_WORKERS_PER_CPU = 4


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(max_streams: int) -> int:
    """One worker per two cores (each uses about two: event loop plus ingest and
    scoring threads), and no more workers than streams."""
    return max(1, min(cpu_count() // 2, max_streams))


def validate_workers(workers: int, max_streams: int) -> None:
    """Raise :class:`InputError` for a worker count that cannot make sense here."""
    most = MAX_WORKERS_PER_CPU * cpu_count()
    if not 1 <= workers <= most:
        raise InputError(
            f"--workers: expected 1 to {most} worker processes ({MAX_WORKERS_PER_CPU} per CPU core; "
            f"this machine has {cpu_count()}), got {workers}"
        )
    if workers > max_streams:
        raise InputError(
            f"--workers {workers} exceeds --max-streams {max_streams}: every worker must be able to hold a stream"
        )


#: Seconds a worker waits for another's device calibration before timing on its own.
CALIBRATION_WAIT_S = 120.0
#: ... or this much per worker, when more (each opens and warms its batch buckets: model/shapes.py).
CALIBRATION_WAIT_PER_WORKER_S = 30.0


def calibration_wait_s(workers: int) -> float:
    """How long a GPU worker waits for the others to load and time their models:
    they go one at a time, so the last waits for all the others."""
    return max(CALIBRATION_WAIT_S, CALIBRATION_WAIT_PER_WORKER_S * workers)


def worker_shedding(shedding: SheddingConfig, workers: int, cores: int | None = None) -> SheddingConfig:
    """A worker's admission settings: its Python gets ``host_cores`` (one by
    default), or less when there are more workers than cores (thread CPU time
    does not show waiting for a core, so the host cost alone would not notice)."""
    share = (cores or cpu_count()) / workers
    return replace(shedding, host_cores=min(shedding.host_cores, share))


def worker_threads(requested: int | None, on_gpu: bool, cores: int, workers: int) -> int:
    """ONNX Runtime intra-op threads per worker session.

    On a GPU, one: the graphs run on the device, and the few nodes left on
    the CPU (shape arithmetic) only pay a thread pool's wake-ups. Every GPU
    rate in docs/scaling.md was measured with one thread. On the CPU the
    workers share the cores.
    """
    if requested is not None:
        return requested
    return 1 if on_gpu else max(1, cores // workers)
