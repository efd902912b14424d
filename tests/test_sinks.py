"""Sinks behind bounded queues: a slow, stalled or dead consumer costs only
its own events (counted), never the caller; failures are logged once."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path

import pytest

from spoofwatch.stream.server.sinks import ServerSinks, webhook_sink_name
from spoofwatch.stream.sinks import JsonlSink, QueuedSink


class GatedWriter:
    """A consumer that blocks until released (a pipe nobody reads)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.entered.set()
        assert self.release.wait(60)
        self.lines.append(line)


def test_stalled_consumer_drops_and_counts_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spoofwatch")
    writer = GatedWriter()
    sink = QueuedSink("slow", writer, max_queue_events=3)
    sink.submit({"type": "score", "i": 0})
    assert writer.entered.wait(30)  # the thread holds event 0 in a blocked write
    for i in range(1, 11):
        sink.submit({"type": "score", "i": i})  # returns at once: queue of 3, then drops
    assert sink.counters.dropped == 7 and sink.counters.written == 0
    writer.release.set()
    sink.close(timeout_s=30)
    assert [json.loads(x)["i"] for x in writer.lines] == [0, 1, 2, 3]
    assert sink.counters.as_dict() == {"written": 4, "dropped": 7, "failed": 0}
    drops = [r for r in caplog.records if "not keeping up" in r.getMessage()]
    assert len(drops) == 1  # logged once, then counted


def test_close_gives_up_on_a_stalled_consumer() -> None:
    writer = GatedWriter()
    sink = QueuedSink("stuck", writer, max_queue_events=4)
    for i in range(3):
        sink.submit({"type": "score", "i": i})
    assert writer.entered.wait(30)
    sink.close(timeout_s=0.2)  # bounded: the consumer never comes back
    # Two queued and the one the stalled write holds: every event is accounted for.
    assert sink.counters.written == 0 and sink.counters.dropped == 3
    sink.submit({"type": "score"})  # after close: dropped, not queued
    assert sink.counters.dropped == 4
    writer.release.set()  # the stalled write ends after all: not counted twice
    assert sink.join(timeout_s=60)
    assert sink.counters.as_dict() == {"written": 0, "dropped": 4, "failed": 0}


def test_write_failures_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spoofwatch")
    calls = []

    def failing(line: str) -> None:
        calls.append(line)
        raise OSError(28, "No space left on device")

    sink = QueuedSink("disk", failing)
    for i in range(20):
        sink.submit({"type": "score", "i": i})
    sink.close(timeout_s=30)
    assert len(calls) == 20 and sink.counters.as_dict() == {"written": 0, "dropped": 0, "failed": 20}
    assert len([r for r in caplog.records if "disk sink failed" in r.getMessage()]) == 1


def test_dead_pipe_reader_kills_only_the_sink(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="spoofwatch")
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader died
    with os.fdopen(write_fd, "w") as stream:
        sink = JsonlSink(stream)
        for i in range(50):
            sink.write({"type": "score", "i": i})
        sink.close(timeout_s=30)
    c = sink.counters
    assert c.written == 0 and c.failed == 1 and c.dropped == 49
    assert len([r for r in caplog.records if "reader went away" in r.getMessage()]) == 1


def test_webhook_that_never_answers_costs_only_its_own_events(tmp_path: Path) -> None:
    """Events reach --jsonl at once while every POST hangs on a loopback
    server that accepts and never answers."""
    hook = socket.socket()
    hook.bind(("127.0.0.1", 0))
    hook.listen(64)  # the kernel accepts connections; nobody ever reads or answers
    url = f"http://127.0.0.1:{hook.getsockname()[1]}/alerts"
    conn: socket.socket | None = None
    sinks = ServerSinks(
        jsonl=tmp_path / "e.jsonl", webhook=url, webhook_timeout_s=3600, webhook_queue_events=2
    )
    try:
        events = [
            {"type": "alert_start", "t": float(i), "smoothed": -3.0, "threshold": -1.0} for i in range(6)
        ]
        sinks.submit(events[0])
        hook.settimeout(60)
        conn, _ = hook.accept()  # the first POST is now in flight, and never answered
        for event in events[1:]:
            sinks.submit(event)  # never waits for the webhook
        sinks.submit({"type": "summary", "duration_s": 1.0})
        jsonl = next(s for s in sinks.sinks if s.name.startswith("jsonl"))
        jsonl.close(timeout_s=30)
        lines = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
        assert lines == [*events, {"type": "summary", "duration_s": 1.0}]
        stats = sinks.stats()[webhook_sink_name(url)]
        # One POST in flight, two queued, the other three dropped; the summary is no alert.
        assert stats == {"written": 0, "dropped": 3, "failed": 0}
        assert sinks.dropped == 3
    finally:
        sinks.close(timeout_s=0.2)
        if conn is not None:
            conn.close()
        hook.close()
    # The POST in flight fails, the queued ones are refused, and the thread ends,
    # logging its failure while this test's log capture is still open.
    assert all(sink.join(timeout_s=60) for sink in sinks.sinks)


def test_sink_counters_feed_the_metrics_once(tmp_path: Path) -> None:
    from spoofwatch.stream.server.metrics import ServerMetrics

    sinks = ServerSinks(jsonl=tmp_path / "events.jsonl")
    for i in range(3):
        sinks.submit({"type": "score", "i": i})
    sinks.close()
    metrics = ServerMetrics("cpu", 4)
    for _ in range(2):  # the refresh loop calls it again and again: totals are not re-added
        metrics.observe_sinks(sinks.stats())
    page = metrics.exposition().decode()
    assert 'spoofwatch_sink_events_total{outcome="written",sink="jsonl"} 3.0' in page
    assert str(tmp_path) not in page  # paths and URLs stay out of the labels


def test_an_unusable_events_file_is_one_error_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve opens --jsonl in every worker: a path that cannot take events is
    refused once, before a model loads or a worker starts (it was five
    worker tracebacks); the sink itself raises the same clear error."""
    from spoofwatch.cli import main
    from spoofwatch.errors import InputError

    bad = tmp_path / "no" / "such" / "folder" / "events.jsonl"
    assert main(["serve", "--port", "0", "--workers", "1", "--jsonl", str(bad)]) == InputError.exit_code
    err = capsys.readouterr().err
    assert f"{bad}: cannot open the events file for appending" in err and "Traceback" not in err
    with pytest.raises(InputError, match="cannot open the events file"):
        JsonlSink(tmp_path)  # a folder


FULL_DISK_SCRIPT = """
import json, resource, signal, sys
from pathlib import Path
from spoofwatch.commands.common import check_sink_wrote_all
from spoofwatch.errors import SinkError
from spoofwatch.stream.sinks import JsonlSink

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
sink = JsonlSink(Path(sys.argv[1]))
for i in range(50):
    sink.write({"type": "score", "i": i, "pad": "x" * 37})
sink.close()
try:
    check_sink_wrote_all(sink)
except SinkError as exc:
    print(json.dumps({"error": str(exc), "exit_code": exc.exit_code, **sink.counters.as_dict()}))
"""


def test_a_full_disk_leaves_whole_lines_and_says_events_were_lost(tmp_path: Path) -> None:
    """The disk fills mid-line (a file-size limit stands in for a full disk):
    the fragment is cut back off, so the file holds whole JSON lines only and
    the next append starts clean, and the loss is an error, not a log line."""
    import subprocess
    import sys

    from helpers import REPO_ROOT

    path = tmp_path / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", FULL_DISK_SCRIPT, str(path), "1000"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(run.stdout)
    text = path.read_text()
    lines = text.splitlines()
    assert text.endswith("\n") and [json.loads(line)["i"] for line in lines] == list(range(len(lines)))
    assert report["written"] == len(lines) and report["failed"] == 50 - len(lines) > 0
    assert report["exit_code"] == 10 and f"{50 - len(lines)} of 50 events were not written" in report["error"]


def test_a_webhook_secret_never_reaches_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Chat webhooks carry their secret in the path (Slack) or the query, and
    a URL may carry a password: the sink's name, which its warnings, its
    shutdown counts and the metrics' labels show, held the whole URL."""
    hook = socket.socket()
    hook.bind(("127.0.0.1", 0))  # bound, not listening: every POST is refused
    port = hook.getsockname()[1]
    url = f"http://user:pa55@127.0.0.1:{port}/services/T000/B000/XXXXsecretXXXX?key=k3y"
    assert webhook_sink_name(url) == f"webhook http://127.0.0.1:{port}"
    assert webhook_sink_name("https://[::1]/x/s3cret") == "webhook https://[::1]"
    sinks = ServerSinks(webhook=url, webhook_timeout_s=60)
    try:
        with caplog.at_level(logging.DEBUG):
            sinks.submit({"type": "alert_start", "t": 4.0, "smoothed": -3.0, "threshold": -1.0})
            sinks.close(timeout_s=60)
            assert all(sink.join(timeout_s=60) for sink in sinks.sinks)
    finally:
        hook.close()
    assert sinks.stats()[f"webhook http://127.0.0.1:{port}"]["failed"] == 1
    assert "sink failed" in caplog.text  # the failure is logged ...
    for secret in ("XXXXsecretXXXX", "k3y", "pa55", "user"):
        assert secret not in caplog.text  # ... without the secret


@pytest.mark.parametrize(
    "url", ["hooks.example.com/x", "ftp://example.com/x", "http:///x", "http://h:99999/T0/s3cret"]
)
def test_a_webhook_that_cannot_be_posted_to_is_refused_at_start(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in --webhook surfaced only as a failed POST at the first alert;
    the refusal names the scheme and host only (the rest may be the secret),
    and where the URL came from."""
    from spoofwatch.cli import main
    from spoofwatch.errors import ConfigError

    monkeypatch.setenv("SPOOFWATCH_HOME", str(tmp_path))  # nothing may load before the refusal
    assert main(["serve", "--webhook", url]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "--webhook: expected an http:// or https:// URL with a host and a valid port, got " in err
    assert "s3cret" not in err and "T0" not in err
    monkeypatch.setenv("SPOOFWATCH_WEBHOOK", url)
    assert main(["serve"]) == ConfigError.exit_code
    assert "$SPOOFWATCH_WEBHOOK: expected an http" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
