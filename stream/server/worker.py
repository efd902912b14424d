"""One worker process of ``serve --workers N``: its spec, entry point and server.

A worker is started by the supervisor (:mod:`.workers`) with ``spawn``; it
loads the model (one worker at a time on a shared GPU), times its scoring
capacity, builds its :class:`~.app.WebSocketServer` on the supervisor's
listening socket, reports ready, and drains on SIGTERM.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spoofwatch.constants import DEFAULT_MODEL, DEFAULT_PRECISION
from spoofwatch.errors import SpoofwatchError

from .context import ServerConfig
from .journal import journal_path
from .metrics import MULTIPROC_ENV
from .sizing import calibration_wait_s, cpu_count, worker_shedding, worker_threads
from .slots import DeviceRates, SharedSlots

if TYPE_CHECKING:
    from ..engine import LiveConfig, Scorer
    from ..scoring import IncrementalBackend

log = logging.getLogger(__name__)


#: Loads the model in a worker process: ``(spec, threads) -> (scorer, live config,
#: incremental model or None)``. The scorer has ``scores(windows)`` and ``device``;
#: the incremental model (``IncrementalBackend``) scores each stream's windows
#: from its cache (``None``: full windows). It is a module-level
#: function of the commands layer (the stream layer never imports the model),
#: pickled by reference for ``spawn``.
ModelLoader = Callable[["WorkerSpec", int], "tuple[Scorer, LiveConfig, IncrementalBackend | None]"]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build its server (picklable)."""

    config: ServerConfig
    load_model: ModelLoader
    model: str = DEFAULT_MODEL
    device: str = "auto"
    #: Whether ``device`` resolves to a GPU that every worker shares (set by
    #: ``serve``, which may import the model layer): models then load and are
    #: timed one worker at a time, with one ONNX Runtime thread each.
    gpu: bool = False
    threads: int | None = None
    weights: Path | None = None
    calibration: Path | None = None
    precision: str = DEFAULT_PRECISION
    jsonl: Path | None = None
    stdout: bool = False
    webhook: str | None = None
    log_level: int = logging.INFO
    #: Score every window from scratch (``--full-windows``) instead of incrementally.
    full_windows: bool = False
    #: The live settings without a model, for the supervisor's host-cost probe
    #: (``None``: no probe; workers then measure their host cost only live).
    load_live: Callable[[WorkerSpec], LiveConfig] | None = None
    #: CPU s per second of audio outside the model, set by the supervisor's probe.
    host_cpu_s_per_audio_s: float | None = None


def _exit_with_parent() -> None:
    """A worker must not outlive its supervisor (killed with SIGKILL, say)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass(frozen=True)
class SharedState:
    """What the supervisor shares with every worker (``multiprocessing`` objects, passed at spawn)."""

    #: ``--max-streams`` slots per worker (:func:`~.load.shared_cells`) and their lock.
    cells: Any
    lock: Any
    #: Held by the worker loading and timing its model on a shared GPU.
    calibration_lock: Any
    #: Each worker's timed scoring rate on the shared device (:func:`~.load.shared_rates`).
    rates: Any


def worker_main(
    spec: WorkerSpec, index: int, workers: int, sock: socket.socket, shared: SharedState, conn: Any
) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which drains us
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(levelname)s %(name)s [worker {index}]: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("spoofwatch").setLevel(spec.log_level)
    _exit_with_parent()
    try:
        server = build_worker_server(spec, index, workers, sock, shared)
    except SpoofwatchError as exc:
        log.error("worker %d cannot start: %s", index, exc)
        sys.exit(exc.exit_code)
    import anyio

    try:
        anyio.run(_serve_until_sigterm, server, conn)
    finally:
        server.ctx.sinks.close()


def build_worker_server(
    spec: WorkerSpec, index: int, workers: int, sock: socket.socket, shared: SharedState
) -> Any:
    from ..vad import SileroVad
    from .app import WebSocketServer
    from .batcher import BatchScorer
    from .context import ServerContext
    from .journal import StreamJournal
    from .sinks import ServerSinks

    config = spec.config
    threads = worker_threads(spec.threads, spec.gpu, cpu_count(), workers)
    # Workers that may share a GPU load and time their models one at a time:
    # a CUDA session's set-up (cuDNN handles, lazily loaded kernels) in one
    # worker would otherwise slow another's start-up timing, and with it the
    # capacity that worker admits streams against for its whole life.
    wait_s = calibration_wait_s(workers)
    locked = spec.gpu and shared.calibration_lock.acquire(timeout=wait_s)
    if spec.gpu and not locked:  # e.g. a worker killed while holding it: time on our own
        log.warning(
            "worker %d: no other worker finished loading within %g s; loading and timing alongside",
            index,
            wait_s,
        )
    try:
        scorer, live, incremental = spec.load_model(spec, threads)
        load = _measured_load(spec, config, workers, index, shared.rates, scorer, live, incremental)
    finally:
        if locked:
            shared.calibration_lock.release()
    ctx = ServerContext(
        config,
        BatchScorer(scorer, config.max_batch_windows, incremental=incremental),
        live,
        SileroVad(),
        ServerSinks(spec.jsonl, spec.stdout, spec.webhook, config.sink_queue_events),
        slots=SharedSlots(shared.cells, shared.lock, workers, index, config.max_streams),
        load=load,
        stream_id_prefix=f"w{index}-{os.getpid()}-",
        model=spec.model,
        journal=StreamJournal(
            journal_path(os.environ[MULTIPROC_ENV], os.getpid()), live.policy.exit_threshold
        ),
    )
    if ctx.load.enabled and spec.host_cpu_s_per_audio_s is not None:
        ctx.load.host.seed(spec.host_cpu_s_per_audio_s)  # measured by the supervisor
    return WebSocketServer(ctx, sock=sock)


def _measured_load(
    spec: WorkerSpec,
    config: Any,
    workers: int,
    index: int,
    rates: Any,
    scorer: Any,
    live: Any,
    incremental: Any,
) -> Any:
    """This worker's :class:`LoadMonitor`, its scoring capacity timed on the
    loaded model; on a shared GPU it admits against the fastest worker's
    timing (see :class:`DeviceRates`)."""
    import numpy as np

    from .context import skip_lag_s
    from .load import CALIBRATION_BATCH, LoadMonitor
    from .timing import step_batches

    # All workers score on the one GPU; on CPU each has its own share of the cores.
    on_gpu = getattr(scorer, "device", None) == "cuda"
    load = LoadMonitor(
        None if config.shedding is None else worker_shedding(config.shedding, workers),
        live.stream.hop_s,
        config.max_batch_windows,
        device_workers=workers if on_gpu else 1,
        skip_lag_s=skip_lag_s(live, incremental is not None),
    )
    if not load.enabled:
        return load
    rng = np.random.default_rng(0)
    # Time what live streams pay per window: a full pass, or one incremental step.
    # The model's own window: a model card may declare another length than AASIST's.
    window = live.window_samples
    if incremental is None:
        score: Any = scorer.scores
        make_batch: Any = lambda n: (0.1 * rng.standard_normal((n, window))).astype(np.float32)  # noqa: E731
    else:
        score = lambda batch: incremental.score(*batch)  # noqa: E731
        make_batch = step_batches(incremental, window, live.stream.hop_samples)
    # A GPU times the real batch size in milliseconds; a CPU pays ~0.2 s per window.
    load.calibrate(score, make_batch, largest=config.max_batch_windows if on_gpu else CALIBRATION_BATCH)
    if load.shared_device:
        own = load.capacity_windows_per_s() or 0.0
        load.device_rates = DeviceRates(rates)
        load.device_rates.publish(index, own)
    return load


async def _serve_until_sigterm(server: Any, conn: Any) -> None:
    import anyio

    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
            conn.send(("ready", server.ctx.provider))
            async for _ in signals:
                server.request_shutdown()
                break
