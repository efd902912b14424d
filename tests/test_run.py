"""``spoofwatch run`` (what ``make run`` starts): monitor with a microphone, serve without one.

The no-device path runs the real command with this machine's input devices
hidden from PortAudio, with an empty cache: the packaged weights load, the
page is served and a stream is scored. The device path gives PortAudio a real input device
(a PulseAudio null sink whose monitor is the default source, fed by
``paplay``) and checks that ``run`` monitors it and alerts on spoofed speech.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
import soundfile as sf
from cli_process import CliProcess
from helpers import REPO_ROOT, SPOOF_UTTS, la_clip, missing

from spoofwatch.audio import read_audio
from spoofwatch.commands.run_cmds import choose_main_job
from spoofwatch.errors import DeviceError

SINK = "spoofwatch_test_mic"
#: Generous: the first run exports the packaged weights to ONNX on a loaded machine.
START_TIMEOUT_S = 400.0


def test_choice_follows_the_device_probe() -> None:
    def no_device() -> tuple[str, int]:
        raise DeviceError("no audio input device found (Error querying device -1)")

    job = choose_main_job(no_device)
    assert job.command == "serve" and "no audio input device found" in job.reason
    job = choose_main_job(lambda: ("USB mic", 48000))
    assert job.command == "monitor" and "'USB mic' (48000 Hz)" in job.reason


def _has_input_device(env: dict[str, str] | None = None) -> bool:
    """Asks PortAudio in a fresh process (it reads the sound setup once, at import)."""
    code = "from spoofwatch.commands.run_cmds import choose_main_job as c; print(c().command)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return out == "monitor"


def _no_devices_env(tmp_path: Path) -> dict[str, str]:
    """What hides this machine's input devices from PortAudio: an ALSA setup whose
    only device cannot open (no sound card can be opened without the system's
    setup, and there is no route to PulseAudio through ALSA; an empty setup
    crashes PortAudio 19.6's device scan), no PulseAudio server, and no JACK
    server started on demand."""
    setup = tmp_path / "no-devices.conf"
    setup.write_text('pcm.!default { type hw card "no_such_card" }\n')
    return {
        "ALSA_CONFIG_PATH": str(setup),
        "PULSE_SERVER": f"unix:{tmp_path / 'no-pulse'}",
        "JACK_NO_START_SERVER": "1",
    }


@pytest.mark.slow
def test_without_a_device_run_serves_the_page_offline_with_packaged_weights(
    shared: Path, la_dir: Path, tmp_path: Path
) -> None:
    # Run on any machine, one with a microphone too: its devices are hidden.
    no_devices = _no_devices_env(tmp_path)
    if _has_input_device(no_devices):  # e.g. an OSS device: no environment variable hides it
        missing("PortAudio finds an input device even with ALSA and PulseAudio hidden")
    empty_home = tmp_path / "home"  # no cached weights, no ONNX export: a first run
    proc = CliProcess(["run", "--port", "0"], env={"SPOOFWATCH_HOME": str(empty_home), **no_devices})
    try:
        url = proc.page_url(START_TIMEOUT_S)
        said = "\n".join(proc.lines)
        assert "no microphone to listen to" in said and "serving on loopback instead" in said
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b"spoofwatch" in response.read() and response.status == 200

        from spoofwatch.stream.client import send_audio

        audio = read_audio(la_clip(la_dir, SPOOF_UTTS[0]))
        result = anyio.run(lambda: send_audio(np.tile(audio, 2), url.replace("http://", "ws://")))
        assert result.close_code == 1000
        scored = [e for e in result.events if e["type"] == "score" and e["score"] is not None]
        assert scored and result.events[-1]["type"] == "summary"
    finally:
        proc.stop()
    assert not (empty_home / "weights").exists()  # the packaged weights were used, nothing fetched


@pytest.fixture()
def pulse_mic(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private PulseAudio whose default source is the monitor of a null sink."""
    if not (shutil.which("pulseaudio") and shutil.which("paplay") and shutil.which("pactl")):
        message = "PulseAudio not installed (apt-get install pulseaudio pulseaudio-utils libasound2-plugins)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run_dir = tmp_path / "pulse"
    run_dir.mkdir()
    socket = run_dir / "native"
    env = {
        "XDG_RUNTIME_DIR": str(run_dir),
        "PULSE_SERVER": f"unix:{socket}",
        "PULSE_COOKIE": str(run_dir / "cookie"),
    }
    full_env = {**os.environ, **env, "HOME": str(run_dir)}
    log = (run_dir / "log").open("wb")
    daemon = subprocess.Popen(
        [
            "pulseaudio",
            "--daemonize=no",
            "-n",  # no default script: only the modules below
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            f"--load=module-native-protocol-unix socket={socket} auth-anonymous=1",
            f"--load=module-null-sink sink_name={SINK}",
        ],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["pactl", "info"], env=full_env, capture_output=True).returncode != 0:
            assert daemon.poll() is None, (run_dir / "log").read_text()
            assert time.monotonic() < deadline, "PulseAudio did not start"
            time.sleep(0.1)  # polling the daemon's socket
        subprocess.run(["pactl", "set-default-source", f"{SINK}.monitor"], env=full_env, check=True)
        yield env
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_with_a_device_run_monitors_it(
    pulse_mic: dict[str, str], sw_home: Path, onnx_aasist_l: Path, la_dir: Path, tmp_path: Path
) -> None:
    assert _has_input_device(pulse_mic), "PortAudio does not see the PulseAudio source"
    spoof = np.concatenate([read_audio(la_clip(la_dir, u)) for u in SPOOF_UTTS])
    wav = tmp_path / "spoof.wav"
    sf.write(wav, np.tile(spoof, 3), 16000, subtype="PCM_16")
    proc = CliProcess(["run"], env=pulse_mic)
    player: subprocess.Popen[bytes] | None = None
    try:
        proc.wait_for_line(re.compile(r"spoofwatch run: listening to the input device"), START_TIMEOUT_S)
        proc.wait_for_line(re.compile(r"monitoring '.+' at \d+ Hz"), START_TIMEOUT_S)
        # The monitor is capturing: play spoofed speech into the null sink it listens to.
        player = subprocess.Popen(["paplay", "-d", SINK, str(wav)], env={**os.environ, **pulse_mic})
        proc.wait_for_line(re.compile(r"SPOOF ALERT START"), START_TIMEOUT_S)
    finally:
        if player is not None:
            player.terminate()
            player.wait(timeout=30)
        code = proc.stop()  # SIGTERM: the monitor stops cleanly and summarises
    assert code == 0, "\n".join(proc.lines)
    assert any("summary:" in line for line in proc.lines)


def _monitor_until_alert(
    env: dict[str, str], wav: Path, jsonl: Path
) -> tuple[CliProcess, subprocess.Popen[bytes]]:
    """``monitor`` capturing the null sink's monitor, with spoofed speech played
    into it, once its alert has started."""
    proc = CliProcess(["monitor", "--jsonl", str(jsonl)], env=env)
    proc.wait_for_line(re.compile(r"monitoring '.+' at \d+ Hz"), START_TIMEOUT_S)
    player = subprocess.Popen(["paplay", "-d", SINK, str(wav)], env={**os.environ, **env})
    proc.wait_for_line(re.compile(r"SPOOF ALERT START"), START_TIMEOUT_S)
    return proc, player


def _closing(jsonl: Path) -> list[dict[str, object]]:
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    types = [e["type"] for e in events]
    assert types.count("summary") == 1 and types.count("alert_start") == types.count("alert_end") == 1
    return [e for e in events if e["type"] == "alert_end"]


@pytest.mark.slow
def test_monitor_ends_with_its_closing_events_on_ctrl_c_twice_and_when_the_device_dies(
    pulse_mic: dict[str, str], sw_home: Path, onnx_aasist_l: Path, la_dir: Path, tmp_path: Path
) -> None:
    """Two Ctrl-C in a row mid-alert: the second cannot cut off the alert's end
    and the summary, and the exit status is 130 (it was 0, or no summary).
    Then the audio server is killed mid-alert: the monitor used to wait for
    audio forever with the alert open; now it ends the alert ("error"),
    writes the summary and exits with the device error's status."""
    assert _has_input_device(pulse_mic), "PortAudio does not see the PulseAudio source"
    spoof = np.concatenate([read_audio(la_clip(la_dir, u)) for u in SPOOF_UTTS])
    wav = tmp_path / "spoof.wav"
    sf.write(wav, np.tile(spoof, 6), 16000, subtype="PCM_16")

    jsonl = tmp_path / "ctrl_c.jsonl"
    proc, player = _monitor_until_alert(pulse_mic, wav, jsonl)
    try:
        proc.process.send_signal(signal.SIGINT)
        proc.process.send_signal(signal.SIGINT)
        assert proc.process.wait(timeout=120) == 130, "\n".join(proc.lines)
    finally:
        player.terminate()
        player.wait(timeout=30)
        proc.stop()
    (end,) = _closing(jsonl)
    assert end["reason"] != "error"

    jsonl = tmp_path / "device_gone.jsonl"
    proc, player = _monitor_until_alert(pulse_mic, wav, jsonl)
    try:
        socket_path = pulse_mic["PULSE_SERVER"].removeprefix("unix:")
        subprocess.run(["pkill", "-KILL", "-f", f"socket={socket_path}"], check=True)
        assert proc.process.wait(timeout=120) == DeviceError.exit_code, "\n".join(proc.lines)
    finally:
        player.terminate()
        player.wait(timeout=30)
        proc.stop()
    assert any("stopped delivering audio" in line for line in proc.lines), "\n".join(proc.lines)
    # stderr is a pipe here, not a terminal: plain lines, no updating score line.
    live_line = re.compile(r"t=\s*[\d.]+s\s+score")
    assert not any("\x1b[K" in line or live_line.search(line) for line in proc.lines), "\n".join(proc.lines)
    (end,) = _closing(jsonl)
    assert end["reason"] == "error"
