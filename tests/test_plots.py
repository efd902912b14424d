"""``stream --plot`` and ``score --plot`` on real LA audio, and the timeline they draw."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import BONAFIDE_UTT, la_clip

from spoofwatch.audio import read_audio
from spoofwatch.cli import main
from spoofwatch.plots import timeline_from_events

ONSET_S = 10.0
SILENCE_S = 4.0


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_timeline_spans_from_events() -> None:
    events = [
        {"type": "score", "t_start": 0.0, "t_end": 4.0, "score": 5.0, "smoothed": 5.0, "speech": True},
        {"type": "score", "t_start": 0.5, "t_end": 4.5, "score": None, "smoothed": 5.0, "speech": False},
        {"type": "score", "t_start": 1.0, "t_end": 5.0, "score": -3.0, "smoothed": 1.0, "speech": True},
        {"type": "alert_start", "t": 5.0, "smoothed": 1.0, "threshold": 1.7},
        {"type": "score", "t_start": 1.5, "t_end": 5.5, "score": -4.0, "smoothed": -1.0, "speech": True},
        {"type": "alert_end", "t": 6.0, "smoothed": -1.0, "threshold": 2.7, "reason": "end_of_stream"},
        {"type": "alert_start", "t": 7.0, "smoothed": -1.0, "threshold": 1.7},
    ]
    line = timeline_from_events(events)
    assert line.t_end_s == [4.0, 4.5, 5.0, 5.5]
    assert line.scores == [5.0, None, -3.0, -4.0]
    assert line.speech_spans_s == [(0.0, 4.0), (4.5, 5.5)]
    assert line.alert_spans_s == [(5.0, 6.0), (7.0, 7.0)]  # an open alert ends at the last time seen


@pytest.fixture(scope="module")
def bona_then_spoof(la_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Genuine speech, a pause, then spoofed speech: all real LA clips."""
    bona = read_audio(la_clip(la_dir, BONAFIDE_UTT))
    spoof = read_audio(la_clip(la_dir, "LA_T_1000137"))
    n = int(ONSET_S * 16000)
    audio = np.concatenate(
        [np.tile(bona, 5)[:n], np.zeros(int(SILENCE_S * 16000), np.float32), np.tile(spoof, 5)[:n]]
    )
    path = tmp_path_factory.mktemp("plots") / "bona_then_spoof.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


def test_stream_plot_draws_the_run(
    sw_home: Path,
    onnx_aasist_l: Path,
    bona_then_spoof: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    png = tmp_path / "timeline.png"
    assert main(["stream", "--json", "--device", "cpu", "--plot", str(png), str(bona_then_spoof)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    width, height = png_size(png)
    assert width >= 800 and height >= 300 and png.stat().st_size > 20_000
    line = timeline_from_events(events)
    # What the picture shows: an alert in the spoofed part only, and the pause outside speech.
    assert line.alert_spans_s and all(start > ONSET_S + SILENCE_S for start, _ in line.alert_spans_s)
    pause_mid = ONSET_S + SILENCE_S / 2
    assert not any(start < pause_mid < end for start, end in line.speech_spans_s)
    assert any(start < 5.0 < end for start, end in line.speech_spans_s)


def test_score_plot_writes_one_picture_per_file(
    sw_home: Path, onnx_aasist_l: Path, la_dir: Path, bona_then_spoof: Path, tmp_path: Path
) -> None:
    out = tmp_path / "plots"
    twin = tmp_path / "other" / bona_then_spoof.name  # same name, another folder: its own picture
    twin.parent.mkdir()
    twin.write_bytes(bona_then_spoof.read_bytes())
    files = [la_clip(la_dir, BONAFIDE_UTT), bona_then_spoof, twin]
    assert main(["score", "--device", "cpu", "--plot", str(out), *map(str, files)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([*(f"{f.name}.png" for f in files[:2]), f"{twin.name}-2.png"])
    for name in written:
        width, height = png_size(out / name)
        assert width >= 800 and height >= 300
