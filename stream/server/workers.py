"""``serve --workers N``: N worker processes on one port, and their supervisor.

One Python process is the limit of a big box (on a 16-core GPU machine one
server process used ~2.2 cores while the GPU sat mostly idle), so the
supervisor opens the listening socket once and starts N worker processes
(``spawn``: nothing of the parent's state, threads or CUDA context is
inherited) that all accept on it. A worker whose event loop is busy accepts
later than an idle one, so new connections lean towards idle workers; the
backlog belongs to the supervisor, so a dying worker loses no queued
connection. Each worker has its own engines, VAD and scorer (one ONNX
Runtime session each; on CUDA they share the GPU).

Shared between the workers: ``--max-streams`` as a total (:class:`SharedSlots`)
and the Prometheus metrics (multi-process mode, see :mod:`.metrics`).

The supervisor restarts a worker that dies (and logs it); one that dies before
it ever became ready is retried with a growing delay and, after
``MAX_EARLY_DEATHS`` in a row, the server stops with an error (a bad model,
device or calibration would otherwise restart forever). SIGTERM or Ctrl-C:
every worker gets SIGTERM and drains (``WebSocketServer.request_shutdown``,
:mod:`.drain`: queued windows scored, alerts ended with reason ``shutdown``,
summaries sent, 1001 "server shutting down") and exits; after
``--shutdown-grace-s`` plus ``DRAIN_MARGIN_S`` the stragglers are killed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spoofwatch.errors import InputError, SpoofwatchError

from .journal import CRASH_REASON, crash_events, journal_path, leftover_crash_events
from .metrics import MULTIPROC_ENV
from .sizing import validate_workers, worker_shedding
from .slots import reset_worker_cells, shared_cells, shared_rates
from .worker import SharedState, WorkerSpec, worker_main

log = logging.getLogger(__name__)

#: Consecutive deaths before becoming ready after which the supervisor gives up.
MAX_EARLY_DEATHS = 5
#: Restart delay (s) after the first early death; doubles with each further one.
RESTART_BACKOFF_S = 0.5
#: Seconds a worker gets beyond its own drain (``--shutdown-grace-s``, then the
#: bounded abort of streams it had to cut) before the supervisor kills it.
DRAIN_MARGIN_S = 10.0
#: Pending connections the kernel queues on the shared socket.
LISTEN_BACKLOG = 2048


@dataclass
class _Worker:
    index: int
    process: Any  # multiprocessing.process.BaseProcess
    conn: Any  # the supervisor's end of the worker's status pipe
    ready: bool = False


def bind_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound but not yet listening: a port in use fails at
    once, before the slow start-up work, while connections made meanwhile are
    refused (not left waiting in a backlog nobody accepts from yet)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As socket.create_server: a restarted server may rebind at once (TIME_WAIT),
        # and an IPv6 address means IPv6 only.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _cannot_listen(host, port, exc) from None
    return sock


def start_listening(sock: socket.socket, host: str, port: int) -> None:
    try:
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:  # another socket bound with SO_REUSEADDR listened first
        raise _cannot_listen(host, port, exc) from None
    sock.setblocking(False)


def _cannot_listen(host: str, port: int, exc: OSError) -> InputError:
    return InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within: SIGTERM stops the start-up as Ctrl-C does (``KeyboardInterrupt``),
    until the supervisor sets its own handlers. Needed: as PID 1 in a container
    a process has no default action for SIGTERM, which is then ignored until a
    handler is set, and start-up takes long (exports, the host-cost probe, the
    workers' models). The previous handler is restored on the way out."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class Supervisor:
    """Starts, watches, restarts and drains the worker processes; ``run()`` blocks."""

    def __init__(self, spec: WorkerSpec, workers: int, drain_timeout_s: float | None = None) -> None:
        validate_workers(workers, spec.config.max_streams)
        self.spec = spec
        self.n_workers = workers
        self.drain_timeout_s = (
            spec.config.shutdown_grace_s + DRAIN_MARGIN_S if drain_timeout_s is None else drain_timeout_s
        )
        self._mp = multiprocessing.get_context("spawn")
        self._cells, self._lock = shared_cells(self._mp, workers)
        # Workers sharing a GPU time it one at a time (see LoadMonitor.calibrate).
        self._calibration_lock = self._mp.Lock()
        self._rates = shared_rates(self._mp, workers)
        #: ``None`` while a slot has no live process (before start, between death and restart).
        self._workers: list[_Worker | None] = [None] * workers
        self._early_deaths = [0] * workers
        self._restart_at: dict[int, float] = {}
        self._stopping = False
        #: Until the workers start, a signal raises ``KeyboardInterrupt`` (see ``run``).
        self._starting = False
        self.port: int | None = None
        self._state_dir = ""
        self._sinks: Any = None  # the sinks, opened when a dead worker left open streams

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._starting:  # nothing to drain yet: stop the start-up where it is
            _raise_interrupt(signum, frame)
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit status (0 after a drain). A signal
        before the workers start raises ``KeyboardInterrupt`` (nothing to drain)."""
        config = self.spec.config
        config.validate()
        self._wake_r, self._wake_w = socket.socketpair()  # a signal wakes the supervision loop
        # First of all: SIGTERM during the slow start-up must stop it (see interrupt_on_sigterm).
        self._starting = True
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self.sock: socket.socket | None = None
        own_dir = False
        metrics_dir = ""
        try:
            # Bound before the probe: a port in use is reported at once.
            self.sock = bind_socket(config.host, config.port)
            # Before the socket listens (nobody waits on it meanwhile), and before the
            # metrics directory is cleaned (the probe's own server counts windows
            # too, and none of them may reach the workers' totals).
            if config.shedding is not None and self.spec.load_live is not None:
                self.spec = replace(self.spec, host_cpu_s_per_audio_s=self._probe_host_cost())
            start_listening(self.sock, config.host, config.port)
            self.port = int(self.sock.getsockname()[1])
            own_dir = MULTIPROC_ENV not in os.environ
            metrics_dir = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="spoofwatch-metrics-")
            for stale in Path(metrics_dir).glob("*.db"):  # a previous run's values must not count
                stale.unlink()
            os.environ[MULTIPROC_ENV] = metrics_dir  # inherited by the workers at spawn
            self._state_dir = metrics_dir  # also holds each worker's open-stream journal
            # From here a signal drains (the supervision loop sees _stopping):
            # the leftover alerts below are read and deleted, then submitted, and
            # an interrupt in between would lose them for good.
            self._starting = False
            # A previous run that died whole (SIGKILL, OOM) left its open alerts here: end them now, once.
            self._emit_crash_events(leftover_crash_events(metrics_dir), "a previous run")
            for i in range(self.n_workers):
                self._start(i)
            return self._supervise()
        finally:
            self._starting = False
            self._drain()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self.sock is not None:
                self.sock.close()
            self._wake_r.close()
            self._wake_w.close()
            if self._sinks is not None:
                self._sinks.close()
            if own_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)
                os.environ.pop(MULTIPROC_ENV, None)

    def _probe_host_cost(self) -> float | None:
        """The host cost every worker starts from (see :mod:`.selftest`);
        ``None`` when the probe failed (workers then measure it live only)."""
        from ..vad import SileroVad
        from .load import host_capacity
        from .selftest import SELFTEST_STREAMS, measure_host_cost

        config = self.spec.config
        assert self.spec.load_live is not None and config.shedding is not None  # see run()
        log.info("measuring the host cost: %d real-time streams on a loopback port", SELFTEST_STREAMS)
        try:
            cost = measure_host_cost(self.spec.load_live(self.spec), SileroVad(), config)
        except SpoofwatchError as exc:
            log.warning("no start-up host cost (%s); workers measure it while they serve", exc)
            return None
        shedding = worker_shedding(config.shedding, self.n_workers)
        log.info(
            "measured host cost: %.2f ms CPU per second of audio (%s real-time streams per worker)",
            1e3 * cost,
            host_capacity(shedding, cost),
        )
        return cost

    def _start(self, index: int) -> None:
        receive, send = self._mp.Pipe(duplex=False)
        process = self._mp.Process(
            target=worker_main,
            args=(
                self.spec,
                index,
                self.n_workers,
                self.sock,
                SharedState(self._cells, self._lock, self._calibration_lock, self._rates),
                send,
            ),
            name=f"spoofwatch-worker-{index}",
            daemon=False,
        )
        process.start()
        send.close()
        self._workers[index] = _Worker(index, process, receive)
        log.info("worker %d started (pid %d)", index, process.pid)

    def _supervise(self) -> int:
        announced = False
        while not self._stopping:
            live = [w for w in self._workers if w is not None]
            waitables: list[Any] = [self._wake_r]
            waitables += [w.process.sentinel for w in live] + [w.conn for w in live if not w.conn.closed]
            timeout = None
            if self._restart_at:
                timeout = max(0.0, min(self._restart_at.values()) - time.monotonic())
            ready = multiprocessing.connection.wait(waitables, timeout)
            if self._wake_r in ready:
                self._wake_r.recv(64)
            for w in live:
                if not w.conn.closed and w.conn in ready:
                    self._message(w)
                if w.process.sentinel in ready:
                    failed = self._died(w)
                    if failed is not None:
                        return failed
            now = time.monotonic()
            for index, due in list(self._restart_at.items()):
                if due <= now and not self._stopping:
                    del self._restart_at[index]
                    self._start(index)
            if not announced and all(w is not None and w.ready for w in self._workers):
                announced = True
                log.info(
                    "serving %s on ws://%s:%d/ and /twilio (GET /healthz /readyz /metrics) with %d workers "
                    "(pids %s); Ctrl-C stops",
                    self.spec.model,
                    self.spec.config.host,
                    self.port,
                    self.n_workers,
                    ", ".join(str(w.process.pid) for w in self._workers if w is not None),
                )
        return 0

    def _message(self, w: _Worker) -> None:
        try:
            kind, *info = w.conn.recv()
        except (EOFError, OSError):
            w.conn.close()  # the worker is gone; its sentinel says so
            return
        if kind == "ready":
            w.ready = True
            self._early_deaths[w.index] = 0
            log.info("worker %d ready (pid %d, provider %s)", w.index, w.process.pid, info[0])

    def _died(self, w: _Worker) -> int | None:
        """Clean up after a dead worker and schedule its restart; an exit status to give up."""
        w.process.join()
        code = w.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        self._workers[w.index] = None
        if not w.conn.closed:
            w.conn.close()
        _forget_worker_metrics(w.process.pid)
        reset_worker_cells(self._cells, self._lock, self.n_workers, w.index)
        if w.ready and not self._stopping:  # said first: the lines ending its streams follow from it
            log.error(
                "worker %d (pid %d) died (%s): its connections were cut; restarting",
                w.index,
                w.process.pid,
                how,
            )
        self._end_open_streams(w, "shutdown" if self._stopping else CRASH_REASON)
        if self._stopping:
            return None
        if w.ready:
            self._restart_at[w.index] = time.monotonic()
            return None
        self._early_deaths[w.index] += 1
        deaths = self._early_deaths[w.index]
        if deaths >= MAX_EARLY_DEATHS:
            log.error("worker %d failed to start %d times in a row (%s); stopping", w.index, deaths, how)
            return 1
        delay = RESTART_BACKOFF_S * 2 ** (deaths - 1)
        log.error(
            "worker %d (pid %d) died before it was ready (%s); retrying in %.1f s",
            w.index,
            w.process.pid,
            how,
            delay,
        )
        self._restart_at[w.index] = time.monotonic() + delay
        return None

    def _end_open_streams(self, w: _Worker, reason: str) -> None:
        """The sinks must not show a dead worker's calls under alert, or unfinished, forever."""
        events = crash_events(journal_path(self._state_dir, w.process.pid), reason)
        self._emit_crash_events(events, f"worker {w.index}")

    def _emit_crash_events(self, events: list[dict[str, Any]], whose: str) -> None:
        if not events:
            return
        import anyio

        from .sinks import ServerSinks

        if self._sinks is None:
            self._sinks = ServerSinks(
                self.spec.jsonl, self.spec.stdout, self.spec.webhook, self.spec.config.sink_queue_events
            )
        for event in events:
            anyio.run(self._sinks.emit, event)
        alerts = sum(e["type"] == "alert_end" for e in events)
        streams = sum(e["type"] == "summary" for e in events)
        log.warning(
            "%s: ended %d stream(s) and %d open alert(s) in the sinks (reason %s)",
            whose,
            streams,
            alerts,
            events[0]["reason"],
        )

    def _drain(self) -> None:
        live = [w for w in self._workers if w is not None and w.process.is_alive()]
        if not live:
            return
        log.info("draining %d workers (up to %.0f s)", len(live), self.drain_timeout_s)
        for w in live:
            _signal(w.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout_s
        for w in live:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                log.warning("worker %d (pid %d) did not drain in time; killing it", w.index, w.process.pid)
                w.process.kill()
                w.process.join()
            _forget_worker_metrics(w.process.pid)
            self._end_open_streams(w, "shutdown")  # streams a worker could not end itself


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _forget_worker_metrics(pid: int | None) -> None:
    from prometheus_client import multiprocess

    if pid is not None and os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# ---- worker side -----------------------------------------------------------------
