"""``spoofwatch serve`` as a real subprocess with real clients on loopback:
a stalled or dead ``--stdout`` reader, and the SIGTERM/SIGINT drain.
Everything synchronises on events (log lines, WebSocket events, exit), never sleeps."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from helpers import BONAFIDE_UTT, REPO_ROOT, la_clip
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from spoofwatch.audio import read_audio
from spoofwatch.stream.client import send_audio
from spoofwatch.stream.codecs import encode

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
ONSET_S = 8.0
#: Generous bounds for a loaded machine: they only stop a hung test, nothing is timed.
STARTUP_TIMEOUT_S = 180
EXIT_TIMEOUT_S = 120


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def concat(la_dir: Path) -> np.ndarray:
    bona = read_audio(la_clip(la_dir, BONAFIDE_UTT))
    spoof = read_audio(la_clip(la_dir, "LA_T_1000137"))
    n = int(ONSET_S * 16000)
    return np.concatenate([np.tile(bona, 4)[:n], np.tile(spoof, 4)[:n]]).astype(np.float32)


class ServerProcess:
    """A ``spoofwatch serve`` subprocess whose stderr is read by a thread."""

    def __init__(self, args: list[str], stdout: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spoofwatch",
                "serve",
                "--port",
                "0",
                "--device",
                "cpu",
                "--threads",
                "1",
                *args,
            ],
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for_line(self, pattern: str, timeout_s: float) -> re.Match[str]:
        regex = re.compile(pattern)
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if m := regex.search(line):
                        return m
                seen = len(self.lines)
                if "<eof>" in self.lines or not self._cond.wait(timeout_s):
                    raise AssertionError(f"no stderr line matching {pattern!r}:\n" + "\n".join(self.lines))

    def port(self) -> int:
        return int(self.wait_for_line(r"listening on ws://127\.0\.0\.1:(\d+)", STARTUP_TIMEOUT_S)[1])

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(EXIT_TIMEOUT_S)
        self._reader.join(30)
        return code


@contextmanager
def server_process(args: list[str], stdout: int = subprocess.DEVNULL) -> Iterator[ServerProcess]:
    server = ServerProcess(args, stdout)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(30)
        if server.proc.stderr:
            server.proc.stderr.close()


def read_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_complete(result: Any) -> None:
    """Closed normally with every window resolved (scored, gated, or dropped
    as stale if the machine was too slow for live scoring) and summarised."""
    assert result.close_code == 1000, result.close_reason
    summary = result.events[-1]
    assert summary["type"] == "summary" and summary["windows"] == 24
    scores = [e for e in result.events if e["type"] == "score"]
    assert len(scores) + summary["dropped_windows"] == 24


async def test_stalled_then_dead_stdout_reader_costs_only_its_events(
    onnx_aasist_l: Path, concat: np.ndarray, tmp_path: Path
) -> None:
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, 4096)  # one page: the pipe fills within the first stream
    events_file = tmp_path / "events.jsonl"
    args = ["--stdout", "--jsonl", str(events_file), "--sink-queue-events", "4"]
    try:
        with server_process(args, stdout=write_fd) as server:
            os.close(write_fd)
            write_fd = -1
            url = f"ws://127.0.0.1:{server.port()}/"
            # Nobody reads stdout: the pipe and the sink's queue fill, the streams go on.
            first = await send_audio(concat, url)
            check_complete(first)
            second = await send_audio(concat, url)  # beside the stalled consumer
            check_complete(second)
            # Two streams' events (> 8 KB) exceed the page-sized pipe plus 1 + 4 queued events.
            server.wait_for_line(r"<stdout> sink is not keeping up", EXIT_TIMEOUT_S)
            # The reader dies: its blocked write fails once, the server stays up.
            os.close(read_fd)
            read_fd = -1
            server.wait_for_line(r"<stdout> sink: reader went away", EXIT_TIMEOUT_S)
            third = await send_audio(concat, url)
            check_complete(third)
            assert server.stop() == 0
            counters = server.wait_for_line(r"<stdout> sink: written (\d+), dropped (\d+), failed (\d+)", 1)
            lines = list(server.lines)
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    written, dropped, failed = (int(x) for x in counters.groups())
    total = sum(len(r.events) for r in (first, second, third))
    assert failed == 1 and dropped > 0 and written + dropped + failed == total
    # Logged once each, not per event.
    assert sum("<stdout> sink is not keeping up" in line for line in lines) == 1
    assert sum("<stdout> sink: reader went away" in line for line in lines) == 1
    assert "Traceback" not in "\n".join(lines)
    # --jsonl, beside it, got every event of every stream.
    assert jsonl(events_file) == [*first.events, *second.events, *third.events]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_streams_with_alert_end_and_summary(
    onnx_aasist_l: Path, la_dir: Path, tmp_path: Path, signum: int
) -> None:
    # Spoofed speech throughout: even a machine too slow for live scoring
    # (which then scores only the freshest windows) reaches an alert.
    spoof = np.tile(read_audio(la_clip(la_dir, "LA_T_1000137")), 10)[: 24 * 16000].astype(np.float32)
    n_windows = (spoof.size - 64_600) // 8_000 + 1
    events_file = tmp_path / "events.jsonl"
    # Neither the idle timeout (the client waits for the alert) nor the drain's
    # grace period (scoring what is queued) may race a slow machine here.
    args = ["--jsonl", str(events_file), "--idle-timeout-s", "3600", "--shutdown-grace-s", "600"]
    with server_process(args) as server:
        url = f"ws://127.0.0.1:{server.port()}/"
        # The supervisor's probe timed the host cost before any worker admitted a
        # stream, and the worker starts from it (admission control).
        host = server.wait_for_line(
            r"measured host cost: ([\d.]+) ms CPU per second of audio \((\d+) real-time streams per worker\)",
            STARTUP_TIMEOUT_S,
        )
        assert float(host[1]) > 0
        ready = await anyio.to_thread.run_sync(read_json, url.replace("ws://", "http://") + "readyz")
        assert ready["host_capacity_streams"] == int(host[2])
        events: list[dict[str, Any]] = []
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}))
            for pos in range(0, spoof.size, 3200):
                await ws.send(encode(spoof[pos : pos + 3200], "pcm_s16le"))
            # No stop: wait until the stream is under alert, then signal the server.
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                while not events or events[-1]["type"] != "alert_start":
                    events.append(json.loads(await ws.recv()))
            server.proc.send_signal(signum)
            with pytest.raises(ConnectionClosed), anyio.fail_after(EXIT_TIMEOUT_S):
                while True:
                    events.append(json.loads(await ws.recv()))
            assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
        code = server.proc.wait(EXIT_TIMEOUT_S)
    assert code == 0
    alert_end, summary = events[-2:]
    assert alert_end["type"] == "alert_end" and alert_end["reason"] == "shutdown"
    # Flushed: every window was resolved before the close (scored, or dropped
    # as stale if this machine could not keep up live).
    # The drain stops reading: audio still in the socket is not part of the
    # stream, everything received is (its windows are all resolved).
    assert summary["type"] == "summary" and 0 < summary["windows"] <= n_windows
    scores = [e for e in events if e["type"] == "score"]
    assert len(scores) + summary["dropped_windows"] == summary["windows"]
    assert jsonl(events_file) == events  # every sink got the same, including alert_end and summary


async def test_a_paused_worker_does_not_close_its_sending_clients_as_idle(onnx_aasist_l: Path) -> None:
    """SIGSTOP then SIGCONT of a worker (a VM freeze, a debugger) longer than the idle
    timeout: on resume the idle timer fired before the socket was read, and every stream
    whose client had been sending all along was closed as idle. (Here asyncio happens to
    read the socket before the overdue timer; test_reader.py pins the watch's stall grace
    itself on a stopped clock, where the timer runs first.)"""
    args = ["--idle-timeout-s", "1", "--no-load-shedding"]
    with server_process(args) as server:
        url = f"ws://127.0.0.1:{server.port()}/"
        frame = encode(np.zeros(1600, np.float32), "pcm_s16le")  # 0.1 s
        async with connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}))
            await ws.send(encode(np.zeros(64_600 + 1600, np.float32), "pcm_s16le"))
            # The client keeps sending until the first event: the worker's warm-up
            # (ingest, resampling, the VAD) may take longer than the 1 s timeout on a
            # loaded machine, and a client silent meanwhile would rightly be idle.
            warm_up_frames = 0
            got_first = anyio.Event()

            async def keep_sending() -> None:
                nonlocal warm_up_frames
                while not got_first.is_set():
                    await ws.send(frame)  # never cancelled mid-send: the count is exact
                    warm_up_frames += 1
                    with anyio.move_on_after(0.1):
                        await got_first.wait()

            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_sending)
                with anyio.fail_after(STARTUP_TIMEOUT_S):
                    first = json.loads(await ws.recv())  # a (gated) score: it names the worker
                got_first.set()
            worker = int(first["stream_id"].split("-")[1])
            os.kill(worker, signal.SIGSTOP)
            try:
                for _ in range(30):  # at least 3 s of audio sent while the worker is stopped
                    await ws.send(frame)
                    await anyio.sleep(0.1)
            finally:
                os.kill(worker, signal.SIGCONT)
            await ws.send(json.dumps({"type": "stop"}))
            events = [first]
            with pytest.raises(ConnectionClosed), anyio.fail_after(EXIT_TIMEOUT_S):
                while True:
                    events.append(json.loads(await ws.recv()))
            assert (ws.close_code, ws.close_reason) == (1000, "stream complete")
        assert events[-1]["type"] == "summary"
        assert events[-1]["duration_s"] == pytest.approx(
            (64_600 + 1600 + (warm_up_frames + 30) * 1600) / 16000
        )
        assert server.stop() == 0
