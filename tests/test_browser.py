"""The browser client in real headless Chromium against a real ``spoofwatch serve``.

Chromium's fake microphone plays a WAV built here from real ASVspoof 2019 LA
clips (it loops the file), so the page captures it through getUserMedia and
the AudioWorklet exactly as it would a microphone. Every wait polls the
page's state with a deadline; nothing here depends on the machine's speed.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from browser import Chromium, find_chromium
from cli_process import CliProcess
from helpers import BONAFIDE_UTT, SPOOF_UTTS, la_clip

from spoofwatch.audio import read_audio

TOKEN = "browser-test-token"
#: Seconds of audio in each fake-microphone WAV (Chromium loops it).
WAV_S = 16.0
#: A file the test stops mid-way at 1x: far longer than the few page actions before
#: the Stop click take on a loaded machine, so the click always lands before its end.
MID_FILE_S = 120.0
#: Scored windows the genuine stream must pass without an alert; the spoofed
#: stream must alert within as many, so both runs are judged on equal terms.
JUDGED_WINDOWS = 10
#: Scored windows to wait for after the alert before the screenshot.
AFTER_ALERT_WINDOWS = 6
#: Generous deadlines for a loaded 2-core machine (waits end as soon as the page is ready).
STREAM_TIMEOUT_S = 240.0
#: A screenshot of the page is a PNG of at least this size.
MIN_SCREENSHOT = (800, 600)
MIN_SCREENSHOT_BYTES = 20_000

SCORED = "window.spoofwatch.events.filter(e => e.type === 'score' && e.score !== null).length"
ALERTS = "window.spoofwatch.events.filter(e => e.type === 'alert_start').length"


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        message = "chromium not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def server(onnx_aasist_l: Path) -> Iterator[str]:
    """``spoofwatch serve`` on a loopback port the OS picks, with a token; yields the page URL."""
    # --keep-live-windows: the fake microphone plays at 1x, and a loaded machine
    # would drop its stale windows; every window is scored instead, so what the
    # tests judge (which windows are scored) does not depend on the machine's speed.
    # --idle-timeout-s: a page whose stop is swallowed sends nothing more, and the
    # default 30 s would close its stream while the test still clicks and reads.
    proc = CliProcess(
        [
            *("serve", "--port", "0", "--token", TOKEN, "--device", "cpu", "--threads", "2"),
            *("--keep-live-windows", "--idle-timeout-s", "3600"),
        ]
    )
    try:
        url = proc.page_url()
        assert TOKEN not in "\n".join(proc.lines)  # the token is never printed
        assert url.endswith("/") and "add ?token=YOUR_TOKEN" in proc.lines[-1]
        yield f"{url}?token={TOKEN}"
    finally:
        proc.stop()


def write_long_wav(path: Path, clip: Path, seconds: float) -> Path:
    """One real clip repeated to ``seconds``, as 16-bit 16 kHz mono."""
    audio = read_audio(clip)
    n = int(seconds * 16000)
    sf.write(path, np.tile(audio, n // audio.size + 1)[:n], 16000, subtype="PCM_16")
    return path


def write_wav(path: Path, clips: list[Path]) -> Path:
    """Real clips back to back, repeated to ``WAV_S`` seconds, as 16-bit 16 kHz mono."""
    audio = np.concatenate([read_audio(c) for c in clips])
    n = int(WAV_S * 16000)
    sf.write(path, np.tile(audio, n // audio.size + 1)[:n], 16000, subtype="PCM_16")
    return path


@pytest.fixture()
def browser_for(chromium: str, tmp_path: Path) -> Iterator[Any]:
    opened: list[Chromium] = []

    def launch(fake_audio: Path | None) -> Chromium:
        browser = Chromium(chromium, tmp_path / f"profile{len(opened)}", fake_audio)
        opened.append(browser)
        return browser

    yield launch
    for browser in opened:
        browser.close()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def start_microphone(page: Chromium, url: str) -> None:
    page.navigate(url)
    page.wait_for("window.spoofwatch.config !== null", 60, "the page's settings")
    # A click with a user gesture, as a person would make it.
    page.evaluate("document.getElementById('mic-start').click()", user_gesture=True)
    page.wait_for("window.spoofwatch.connected", 60, "the WebSocket to open")


def drop_js(path: Path) -> str:
    """A drop event carrying ``path``, as the browser delivers one when a user drops a file."""
    import base64

    encoded = base64.b64encode(path.read_bytes()).decode()
    return (
        "(() => { const bytes = Uint8Array.from(atob('" + encoded + "'), c => c.charCodeAt(0));"
        f" const dt = new DataTransfer(); dt.items.add(new File([bytes], '{path.name}', {{type: 'audio/wav'}}));"
        " document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));"
        " })()"
    )


#: Counts the page's WebSockets and records what each sends ("audio" or the control message's type).
RECORD_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.sockets = 0;
  window.sent = [];
  const Recording = function (url, protocols) {
    const ws = new Native(url, protocols);
    window.sockets += 1;
    const send = ws.send.bind(ws);
    ws.send = (data) => {
      window.sent.push(typeof data === "string" ? JSON.parse(data).type : "audio");
      send(data);
    };
    return ws;
  };
  Object.assign(Recording, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
  window.WebSocket = Recording;
})()"""


def stop_and_wait_for_summary(page: Chromium) -> dict[str, Any]:
    page.evaluate("document.getElementById('stop').click()", user_gesture=True)
    page.wait_for("window.spoofwatch.lastClose !== null", STREAM_TIMEOUT_S, "the server to close the stream")
    close: dict[str, Any] = page.evaluate("window.spoofwatch.lastClose")
    assert close["code"] == 1000, close
    summary = page.evaluate("window.spoofwatch.events.filter(e => e.type === 'summary')")
    assert len(summary) == 1
    return dict(summary[0])


def test_spoofed_microphone_raises_the_alert_banner(
    server: str, browser_for: Any, la_dir: Path, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "spoof.wav", [la_clip(la_dir, u) for u in SPOOF_UTTS])
    page = browser_for(wav)
    start_microphone(page, server)
    page.wait_for(ALERTS, STREAM_TIMEOUT_S, "the spoof alert")
    events = page.evaluate("window.spoofwatch.events")
    first_alert = next(i for i, e in enumerate(events) if e["type"] == "alert_start")
    scored_before = [e for e in events[:first_alert] if e["type"] == "score" and e["score"] is not None]
    assert 1 <= len(scored_before) <= JUDGED_WINDOWS
    alert = events[first_alert]
    assert alert["smoothed"] < alert["threshold"]
    banner = page.evaluate(
        "(() => { const b = document.getElementById('alert-banner');"
        " return {hidden: b.hidden, state: b.dataset.state, text: b.innerText,"
        " height: b.getBoundingClientRect().height,"
        " color: getComputedStyle(b).backgroundColor}; })()"
    )
    assert not banner["hidden"] and banner["state"] == "active" and banner["height"] > 40
    assert "SPOOF ALERT" in banner["text"]
    assert f"Started at {alert['t']:.1f} s" in banner["text"]
    assert page.evaluate("window.spoofwatch.alertActive") is True
    assert banner["color"] == "rgb(198, 40, 40)"
    # Let the chart run on a little past the alert, for a screenshot worth reading.
    page.wait_for(f"{SCORED} >= {len(scored_before) + AFTER_ALERT_WINDOWS}", STREAM_TIMEOUT_S, "more windows")
    # The chart and the log show what happened.
    assert page.evaluate("document.querySelectorAll('#log li.alert_start').length") == 1
    assert page.evaluate("document.getElementById('speech-state').dataset.state") == "speech"

    shot = page.screenshot(tmp_path / "spoofwatch-page-alert.png")
    width, height = png_size(shot)
    assert width >= MIN_SCREENSHOT[0] and height >= MIN_SCREENSHOT[1]
    assert shot.stat().st_size >= MIN_SCREENSHOT_BYTES
    docs = os.environ.get("SPOOFWATCH_SCREENSHOT_DIR")  # `make docs` keeps a copy for the README
    if docs:
        Path(docs).mkdir(parents=True, exist_ok=True)
        (Path(docs) / shot.name).write_bytes(shot.read_bytes())

    summary = stop_and_wait_for_summary(page)
    assert summary["alerts"] >= 1
    # Every event the server sent is kept, in order, ending with the summary.
    kept = page.evaluate("window.spoofwatch.events")
    assert kept[: len(events)] == events and kept[-1]["type"] == "summary"
    assert len({e["stream_id"] for e in kept}) == 1  # one stream, one id


def test_genuine_microphone_raises_no_alert(
    server: str, browser_for: Any, la_dir: Path, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "bonafide.wav", [la_clip(la_dir, BONAFIDE_UTT)])
    page = browser_for(wav)
    start_microphone(page, server)
    page.wait_for(f"{SCORED} >= {JUDGED_WINDOWS}", STREAM_TIMEOUT_S, f"{JUDGED_WINDOWS} scored windows")
    summary = stop_and_wait_for_summary(page)
    assert summary["alerts"] == 0 and summary["scored_windows"] >= JUDGED_WINDOWS
    assert page.evaluate(ALERTS) == 0
    assert page.evaluate("document.getElementById('alert-banner').hidden") is True
    assert page.evaluate("document.getElementById('conn-state').textContent").startswith("finished")

    # "Download events (JSONL)" saves exactly the events the page kept.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    page.call("Page.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    page.evaluate("document.getElementById('download').click()", user_gesture=True)
    saved = downloads / "spoofwatch-events.jsonl"
    page.wait_for_file(saved, 60)
    kept = page.evaluate("window.spoofwatch.events")
    assert [json.loads(line) for line in saved.read_text().splitlines()] == kept


def test_dropped_file_as_fast_as_accepted_matches_the_reference_client(
    server: str, browser_for: Any, la_dir: Path, tmp_path: Path
) -> None:
    """A file chosen on the page gives the events the Python reference client gets."""
    import anyio

    from spoofwatch.stream.client import send_audio

    wav = write_wav(tmp_path / "mixed.wav", [la_clip(la_dir, BONAFIDE_UTT), la_clip(la_dir, SPOOF_UTTS[0])])
    page = browser_for(None)
    page.navigate(server)
    page.wait_for("window.spoofwatch.config !== null", 60, "the page's settings")
    page.evaluate("document.getElementById('pace').value = 'fast'")
    page.set_file("#file-input", wav)
    page.wait_for("window.spoofwatch.lastClose !== null", STREAM_TIMEOUT_S, "the file's stream to finish")
    assert page.evaluate("window.spoofwatch.lastClose.code") == 1000
    got = page.evaluate("window.spoofwatch.events")

    ws_url = server.replace("http://", "ws://")
    reference = anyio.run(lambda: send_audio(read_audio(wav), ws_url, encoding="f32le"))
    # The same audio reached the server: same stream length and windows, and
    # (the server keeps live windows) every window has the same score.
    summary, want_summary = got[-1], reference.events[-1]
    assert summary["type"] == want_summary["type"] == "summary"
    assert summary["duration_s"] == pytest.approx(want_summary["duration_s"])
    assert summary["windows"] == want_summary["windows"]
    want_scores = {e["t_start"]: e["score"] for e in reference.events if e["type"] == "score"}
    got_scores = {e["t_start"]: e["score"] for e in got if e["type"] == "score"}
    assert summary["dropped_windows"] == want_summary["dropped_windows"] == 0
    assert got_scores.keys() == want_scores.keys()
    shared = [t for t, v in got_scores.items() if v is not None and want_scores.get(t) is not None]
    assert shared, "no window scored by both"
    for t in shared:
        assert got_scores[t] == pytest.approx(want_scores[t], abs=1e-3), t


def test_page_without_the_token_says_why_it_cannot_stream(
    server: str, browser_for: Any, tmp_path: Path
) -> None:
    page = browser_for(None)
    page.navigate(server.split("?")[0])  # the same page, without ?token=
    error = page.wait_for(
        "!document.getElementById('error').hidden && document.getElementById('error').textContent",
        60,
        "an error message",
    )
    assert "needs a token" in error and "?token=" in error


def test_dropped_file_at_real_time(server: str, browser_for: Any, la_dir: Path, tmp_path: Path) -> None:
    """A file dropped on the page, paced at 1x: the stream runs to its summary."""
    wav = tmp_path / "short.wav"
    audio = read_audio(la_clip(la_dir, SPOOF_UTTS[1]))
    sf.write(wav, np.tile(audio, 3)[: 6 * 16000], 16000, subtype="PCM_16")
    page = browser_for(None)
    page.navigate(server)
    page.wait_for("window.spoofwatch.config !== null", 60, "the page's settings")
    assert page.evaluate("document.getElementById('pace').value") == "realtime"  # the default
    page.evaluate(drop_js(wav))
    page.wait_for(
        "window.spoofwatch.lastClose !== null", STREAM_TIMEOUT_S, "the dropped file's stream to finish"
    )
    assert page.evaluate("window.spoofwatch.lastClose.code") == 1000
    events = page.evaluate("window.spoofwatch.events")
    assert events[-1]["type"] == "summary"
    assert events[-1]["duration_s"] == pytest.approx(6.0, abs=0.01)
    assert page.evaluate("document.getElementById('conn-state').textContent").startswith("finished")
    assert "file short.wav" in page.evaluate("document.getElementById('log').innerText")


def test_one_stream_at_a_time(server: str, browser_for: Any, la_dir: Path, tmp_path: Path) -> None:
    """A second Start click, or a file dropped while the microphone is still opening,
    started a second stream the Stop button could not end (its microphone stayed on)."""
    page = browser_for(write_wav(tmp_path / "mic.wav", [la_clip(la_dir, BONAFIDE_UTT)]))
    page.navigate(server)
    page.wait_for("window.spoofwatch.config !== null", 60, "the page's settings")
    page.evaluate(RECORD_SOCKETS)
    short = tmp_path / "short.wav"
    sf.write(short, read_audio(la_clip(la_dir, BONAFIDE_UTT))[:16000], 16000, subtype="PCM_16")
    page.evaluate(
        "(() => { const start = document.getElementById('mic-start'); start.click(); start.click(); })()",
        user_gesture=True,
    )
    page.evaluate(drop_js(short))  # while the first start is still under way
    page.wait_for("window.spoofwatch.connected", 60, "the WebSocket to open")
    assert "a stream is running" in page.evaluate("document.getElementById('error').textContent")
    stop_and_wait_for_summary(page)
    assert page.evaluate("window.sockets") == 1
    sent = page.evaluate("window.sent")
    assert sent[0] == "start" and sent[-1] == "stop" and sent.count("stop") == 1, sent
    assert page.evaluate("document.getElementById('mic-start').disabled") is False


def test_a_new_stream_starts_clean_and_stop_is_its_last_message(
    server: str, browser_for: Any, la_dir: Path, tmp_path: Path
) -> None:
    """The second stream of a page showed the first one's chart, alert band and banner; Stop
    during a 1x file sent an audio frame and a second stop after the first."""
    first = write_wav(tmp_path / "first.wav", [la_clip(la_dir, u) for u in SPOOF_UTTS])
    second = write_long_wav(tmp_path / "second.wav", la_clip(la_dir, BONAFIDE_UTT), MID_FILE_S)
    page = browser_for(None)
    page.navigate(server)
    page.wait_for("window.spoofwatch.config !== null", 60, "the page's settings")
    page.evaluate(RECORD_SOCKETS)
    page.evaluate("document.getElementById('pace').value = 'fast'")
    page.set_file("#file-input", first)
    page.wait_for("window.spoofwatch.lastClose !== null", STREAM_TIMEOUT_S, "the first stream to finish")
    assert page.evaluate("window.spoofwatch.points.length") > 0
    page.evaluate("document.getElementById('pace').value = 'realtime'")
    page.evaluate(drop_js(second))
    fresh = page.evaluate(
        "(() => { const s = window.spoofwatch; return {points: s.points.length, alerts: s.alerts.length,"
        " active: s.alertActive, close: s.lastClose, banner: document.getElementById('alert-banner').hidden,"
        " score: document.getElementById('score-now').textContent}; })()"
    )
    assert fresh == {"points": 0, "alerts": 0, "active": False, "close": None, "banner": True, "score": "–"}
    page.wait_for(
        "window.sent.lastIndexOf('start') > 0 && window.sent.length - window.sent.lastIndexOf('start') > 5",
        60,
        "the second stream's first frames",
    )
    page.evaluate("document.getElementById('stop').click()", user_gesture=True)  # mid-file, at 1x
    page.wait_for("window.spoofwatch.lastClose !== null", STREAM_TIMEOUT_S, "the second stream to finish")
    assert page.evaluate("window.spoofwatch.lastClose.code") == 1000
    sent = page.evaluate("window.sent")
    second_stream = sent[sent.index("start", 1) :]
    assert second_stream[-1] == "stop" and second_stream.count("stop") == 1, second_stream[-5:]
    summaries = page.evaluate("window.spoofwatch.events.filter(e => e.type === 'summary')")
    assert len(summaries) == 2 and summaries[1]["duration_s"] < MID_FILE_S
    # the page now shows only the second stream: its points, and its summary in the connection line
    assert page.evaluate(
        "window.spoofwatch.points.every(p => p.t_end <= " + str(summaries[1]["duration_s"]) + ")"
    )
    assert "windows scored" in page.evaluate("document.getElementById('conn-state').textContent")


#: On top of RECORD_SOCKETS: the page's stop never leaves it, so the server cannot answer it
#: (as a frozen server would not).
SWALLOW_STOP = (
    "(() => { const Recording = window.WebSocket; window.WebSocket = function (url) {"
    " const ws = new Recording(url); const send = ws.send;"
    " ws.send = (data) => { if (typeof data === 'string' && JSON.parse(data).type === 'stop') {"
    " window.sent.push('stop (swallowed)'); return; } send(data); }; return ws; };"
    " Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3}); })()"
)
PAGE_STATE = (
    "(() => ({start: document.getElementById('mic-start').disabled,"
    " stop: document.getElementById('stop').disabled, connected: window.spoofwatch.connected,"
    " conn: document.getElementById('conn-state').textContent,"
    " error: document.getElementById('error').textContent}))()"
)


@pytest.mark.parametrize("pace", ["realtime", "fast"])
def test_a_second_stop_frees_the_page_when_the_server_never_answers(
    pace: str, server: str, browser_for: Any, la_dir: Path, tmp_path: Path
) -> None:
    """With stop sent and no answer (a frozen server), the page stayed busy: Start disabled,
    Stop doing nothing. The first Stop waits for the summary (at 1x, mid-file; fast, after the
    page's own stop at the file's end, while the server still scores its backlog: that Stop
    threw the summary away); a second Stop gives up on it."""
    seconds = MID_FILE_S if pace == "realtime" else 6.0
    wav = write_long_wav(tmp_path / "long.wav", la_clip(la_dir, BONAFIDE_UTT), seconds)
    page = browser_for(None)
    page.navigate(server)
    page.wait_for("window.spoofwatch.config !== null", 60, "the page's settings")
    page.evaluate(f"document.getElementById('pace').value = '{pace}'")
    page.evaluate(RECORD_SOCKETS)
    page.evaluate(SWALLOW_STOP)
    page.evaluate(drop_js(wav))
    if pace == "realtime":
        page.wait_for("window.sent.filter(m => m === 'audio').length > 5", 60, "the first frames")
    else:
        page.wait_for("window.sent.includes('stop (swallowed)')", 120, "the page's own stop")
    page.evaluate("document.getElementById('stop').click()", user_gesture=True)
    first = page.evaluate(PAGE_STATE)
    assert page.evaluate("window.sent.includes('stop (swallowed)')")
    assert first["start"] is True and first["stop"] is False, first  # still waiting for the summary
    assert first["conn"].startswith("stopping: waiting for the server's summary") and not first["error"]
    page.evaluate("document.getElementById('stop').click()", user_gesture=True)
    state = page.evaluate(PAGE_STATE)
    assert state["start"] is False and state["stop"] is True and state["connected"] is False
    assert "did not answer the stop" in state["error"]
