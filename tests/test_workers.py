"""``spoofwatch serve --workers N`` as a real process tree on loopback: the
supervisor, a shared ``--max-streams``, metrics summed over workers, a killed
worker restarted, and a drain on SIGTERM. Synchronised on the supervisor's
log lines and on protocol events, never on sleeps."""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import NoReturn

import anyio
import numpy as np
import pytest
from helpers import BONAFIDE_UTT, REPO_ROOT, la_clip
from test_serving import http_get, samples
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from spoofwatch.audio import read_audio
from spoofwatch.cli import main
from spoofwatch.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.errors import ConfigError
from spoofwatch.stream.client import send_audio
from spoofwatch.stream.server import health, sizing
from spoofwatch.stream.server.context import ServerConfig
from spoofwatch.stream.server.load import SheddingConfig
from spoofwatch.stream.server.sizing import (
    calibration_wait_s,
    default_workers,
    worker_shedding,
    worker_threads,
)
from spoofwatch.stream.server.worker import WorkerSpec
from spoofwatch.stream.server.workers import Supervisor

#: Generous: two workers load the model on a busy 2-core machine.
STARTUP_S = 300.0
START = json.dumps({"type": "start", "sample_rate": 16000, "encoding": "f32le", "channels": 1})


@pytest.mark.parametrize("workers", ["0", "-2", "100000"])
def test_absurd_worker_counts_fail_before_the_model_loads(
    workers: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOFWATCH_HOME", str(tmp_path))  # no weights here: loading would fail differently
    assert main(["serve", "--workers", workers]) == 2
    err = capsys.readouterr().err
    assert "--workers: expected 1 to" in err and f"got {workers}" in err
    assert not any(tmp_path.iterdir())  # nothing was exported or fetched


@pytest.mark.parametrize("tick", ["0", "-0.1", "2", "nan"])
def test_a_bad_ingest_tick_fails_before_the_model_loads(
    tick: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPOOFWATCH_HOME", str(tmp_path))
    assert main(["serve", "--ingest-tick-s", tick]) == 2
    assert "ingest_tick_s: expected a value in (0, 1] seconds" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_more_workers_than_streams_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["serve", "--workers", "2", "--max-streams", "1"]) == 2
    assert "--workers 2 exceeds --max-streams 1" in capsys.readouterr().err
    # The default is half the cores (at least one), and fits whatever --max-streams says.
    for cores, workers in [(1, 1), (2, 1), (3, 1), (16, 8)]:
        monkeypatch.setattr(sizing, "cpu_count", lambda cores=cores: cores)
        assert default_workers(10**6) == workers
        assert default_workers(1) == 1
    monkeypatch.setattr(sizing, "cpu_count", lambda: 16)
    assert default_workers(5) == 5


def test_worker_sessions_use_one_thread_on_a_gpu_and_share_the_cores_on_a_cpu() -> None:
    assert worker_threads(None, on_gpu=True, cores=16, workers=4) == 1
    assert worker_threads(None, on_gpu=False, cores=16, workers=4) == 4
    assert worker_threads(None, on_gpu=False, cores=2, workers=4) == 1
    assert worker_threads(3, on_gpu=True, cores=16, workers=4) == 3  # --threads wins


def test_a_workers_host_budget_is_one_core_or_its_share_of_the_cores() -> None:
    assert worker_shedding(SheddingConfig(), workers=8, cores=16).host_cores == 1.0
    assert worker_shedding(SheddingConfig(), workers=4, cores=2).host_cores == 0.5
    assert worker_shedding(SheddingConfig(host_cores=0.25), workers=1, cores=2).host_cores == 0.25


def _no_live_config(spec: WorkerSpec) -> NoReturn:
    raise ConfigError("calibration.toml: expected a [stream] table")


def test_a_failed_host_cost_probe_leaves_the_workers_to_measure_it_live(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from spoofwatch.commands.server_cmds import load_worker_model

    spec = WorkerSpec(ServerConfig(), load_worker_model, load_live=_no_live_config)
    with caplog.at_level(logging.WARNING, logger="spoofwatch"):
        assert Supervisor(spec, 1)._probe_host_cost() is None
    assert "no start-up host cost (calibration.toml: expected a [stream] table)" in caplog.text


def test_gpu_workers_wait_longer_for_the_lock_when_there_are_more_of_them() -> None:
    """GPU workers load, warm and time one at a time: the last waits for all the others."""
    assert calibration_wait_s(1) == calibration_wait_s(4) == 120.0
    assert calibration_wait_s(8) == 240.0


def test_a_port_in_use_is_a_clear_error(
    onnx_aasist_l: Path, sw_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--workers", "1", "--device", "cpu"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


class ServerProcess:
    """``python -m spoofwatch serve`` with its stderr read line by line."""

    def __init__(self, args: list[str], home: Path) -> None:
        env = {**os.environ, "SPOOFWATCH_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spoofwatch", "serve", "--port", "0", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")  # EOF

    def expect(
        self, pattern: str, timeout_s: float = STARTUP_S, accept: Callable[[re.Match[str]], bool] = bool
    ) -> re.Match[str]:
        """The first log line so far, or to come, that matches and is accepted
        (blocks on the server's own report, not on a timer)."""
        seen = 0
        while True:
            for line in self.log[seen:]:
                match = re.search(pattern, line)
                if match and accept(match):
                    return match
            seen = len(self.log)
            line = self.lines.get(timeout=timeout_s)
            if not line:
                raise AssertionError(f"server exited before logging {pattern!r}:\n{''.join(self.log)}")
            self.log.append(line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=60)  # it ends at EOF, once every holder of the pipe exited
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture()
def two_workers(
    onnx_aasist_l: Path, sw_home: Path, tmp_path: Path
) -> Iterator[tuple[ServerProcess, int, dict[int, int]]]:
    server = ServerProcess(
        [
            *("--workers", "2", "--max-streams", "2", "--device", "cpu", "--threads", "1"),
            *("--no-load-shedding", "--idle-timeout-s", "600", "--jsonl", str(tmp_path / "events.jsonl")),
        ],
        sw_home,
    )
    try:
        pids = {i: int(server.expect(rf"worker {i} ready \(pid (\d+)")[1]) for i in range(2)}
        port = int(server.expect(r"serving aasist-l on ws://127\.0\.0\.1:(\d+)/")[1])
        yield server, port, pids
    finally:
        server.close()


async def open_alert_stream(url: str, audio: np.ndarray) -> tuple[ClientConnection, str]:
    """A stream that holds a slot with an open alert: genuine then spoofed speech, no stop."""
    ws = await connect(url, max_size=None)
    await ws.send(START)
    await ws.send(audio.astype("<f4").tobytes())
    while True:
        event = json.loads(await ws.recv())
        if event["type"] == "alert_start":
            return ws, event["stream_id"]


async def open_stream(url: str) -> tuple[ClientConnection, str]:
    """A stream that holds a slot: one window of silence, answered by a (gated) score event."""
    ws = await connect(url)
    await ws.send(START)
    await ws.send(np.zeros(WINDOW_SAMPLES + SAMPLE_RATE_HZ // 10, "<f4").tobytes())
    event = json.loads(await ws.recv())
    assert event["type"] == "score" and event["speech"] is False
    return ws, event["stream_id"]


def logged_events(path: Path) -> set[tuple[str, str | None]]:
    """(type, stream_id) of each whole line of a JSONL file another process appends to."""
    events = [json.loads(line) for line in path.read_text().split("\n")[:-1]]  # not a line being written
    return {(e["type"], e.get("stream_id")) for e in events}


def worker_pid(stream_id: str) -> int:
    """Stream ids of a worker are ``w<index>-<pid>-s<n>``."""
    return int(stream_id.split("-")[1])


def test_workers_share_max_streams_restart_after_a_crash_and_drain(
    two_workers: tuple[ServerProcess, int, dict[int, int]], la_dir: Path, tmp_path: Path
) -> None:
    server, port, pids = two_workers
    speech = read_audio(la_clip(la_dir, BONAFIDE_UTT))
    spoof = read_audio(la_clip(la_dir, "LA_T_1000137"))
    n = 8 * SAMPLE_RATE_HZ
    genuine_then_spoof = np.concatenate([np.tile(speech, 4)[:n], np.tile(spoof, 4)[:n]])
    url = f"ws://127.0.0.1:{port}/"

    async def scenario() -> None:
        first, id1 = await open_alert_stream(url, genuine_then_spoof)
        second, id2 = await open_stream(url)
        assert id1 != id2
        refused = await send_audio(np.zeros(16000, np.float32), url)
        assert refused.close_code == 1013 and "at capacity (2 streams)" in refused.close_reason

        status, _, body = await http_get(port, health.READYZ)
        ready = json.loads(body)
        assert status == 503 and ready["active_streams"] == 2 and ready["capacity_left"] == 0
        # The per-worker figures say whose they are.
        assert ready["worker"] in (0, 1) and 0 <= ready["worker_streams"] <= 2
        page = samples((await http_get(port, health.METRICS))[2])
        assert page[("spoofwatch_workers", ())] == 2  # summed over both processes
        assert page[("spoofwatch_active_streams", ())] == 2
        assert page[("spoofwatch_refused_connections_total", (("code", "1013"), ("reason", "capacity")))] == 1

        # The client has alert_start once it was queued for the sinks, not once the
        # --jsonl sink's thread wrote it: wait for the line (bounded) before the kill.
        events_file = tmp_path / "events.jsonl"
        with anyio.fail_after(60):
            while ("alert_start", id1) not in logged_events(events_file):  # noqa: ASYNC110 - another process
                await anyio.sleep(0.05)

        # Kill both workers (one or both hold the streams); each comes back as a new process.
        assert {worker_pid(id1), worker_pid(id2)} <= set(pids.values())
        old = dict(pids)
        for pid in old.values():
            os.kill(pid, signal.SIGKILL)
        for ws in (first, second):
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
            assert ws.close_code == 1006  # the process vanished: no close frame
        for index, pid in old.items():
            await anyio.to_thread.run_sync(
                server.expect,
                rf"worker {index} \(pid {pid}\) died \(signal 9\): its connections were cut; restarting",
            )
            new = partial(
                server.expect, rf"worker {index} ready \(pid (\d+)", accept=lambda m, p=pid: int(m[1]) != p
            )
            pids[index] = int((await anyio.to_thread.run_sync(new))[1])
        # The sinks got an alert_end for the alert the crash left open, and
        # both streams a summary with what their events had counted (the
        # kernel may have given both connections to one worker).
        ended = await anyio.to_thread.run_sync(
            server.expect,
            r"ended [12] stream\(s\) and 1 open alert\(s\) in the sinks \(reason worker_crash\)",
        )
        # The death is said before the lines that end its streams.
        lines = server.log
        first_death = min(i for i, line in enumerate(lines) if "died (signal 9)" in line)
        assert first_death < next(i for i, line in enumerate(lines) if ended.string == line)
        with anyio.fail_after(60):  # the supervisor's sinks write in their own threads
            while not {("summary", id1), ("summary", id2)} <= logged_events(events_file):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        logged = [json.loads(line) for line in events_file.read_text().splitlines()]
        mine = [e for e in logged if e.get("stream_id") == id1]
        assert [e["type"] for e in mine].count("alert_start") == 1
        end, summary = mine[-2:]
        assert end["type"] == "alert_end" and end["reason"] == "worker_crash"
        start = next(e for e in mine if e["type"] == "alert_start")
        assert end["threshold"] > start["threshold"]  # the exit threshold, as a live alert_end has
        assert end["t"] >= start["t"]
        # As the journal last saw the stream: at its alert_start at least
        # (written at once), at most a flush interval before the kill (the
        # killed worker's --jsonl thread may not have written its last lines).
        before_alert = mine[: next(k for k, e in enumerate(mine) if e["type"] == "alert_start")]
        windows = [e for e in before_alert if e["type"] == "score"]
        assert summary["windows"] >= len(windows) and summary["duration_s"] >= start["t"]
        assert summary["scored_windows"] >= sum(e["score"] is not None for e in windows)
        assert summary["scored_windows"] <= summary["windows"]
        assert {k: summary[k] for k in ("alerts", "dropped_windows", "reason", "stream_id")} == {
            "alerts": 1,
            "dropped_windows": 0,
            "reason": "worker_crash",
            "stream_id": id1,
        }
        for stream_id in (id1, id2):
            assert [e["type"] for e in logged if e.get("stream_id") == stream_id].count("summary") == 1
        # The dead workers' slots were freed: a new stream is served in full, by a new worker.
        result = await send_audio(speech, url)
        assert result.close_code == 1000 and result.events[-1]["type"] == "summary"
        assert result.events[-1]["scored_windows"] > 0
        assert worker_pid(result.events[-1]["stream_id"]) in set(pids.values()) - set(old.values())
        # The client has the close frame before the worker's handler returns and
        # frees the slot (how much before depends on the machine's load): wait
        # for the release, bounded, rather than race it.
        with anyio.fail_after(60):
            while json.loads((await http_get(port, health.READYZ))[2])["active_streams"] != 0:  # noqa: ASYNC110 - another process
                await anyio.sleep(0.05)
        await first.close()
        await second.close()

    anyio.run(scenario)
    assert server.stop() == 0
    server.expect(r"draining 2 workers", timeout_s=60)
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # every worker exited and was reaped
