"""Fixtures: the shared data (fails loudly in CI when missing), an isolated
SPOOFWATCH_HOME with the official weights installed through the real fetch
code, the ONNX exports (built once per test session), the genuine-then-spoof
test stream, real engines, and a loopback HTTP server."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import REPO_ROOT, genuine_then_spoof

from spoofwatch.paths import SHARED_ENV


def _shared_root() -> Path:
    return Path(os.environ.get(SHARED_ENV, REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    """The read-only ``../shared`` folder. Missing data fails under CI, skips elsewhere."""
    root = _shared_root()
    if not (root / "weights" / "AASIST-L.pth").is_file():
        message = f"shared data not found at {root} (set {SHARED_ENV})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def la_dir(shared: Path) -> Path:
    return shared / "data" / "asvspoof2019_la"


@pytest.fixture(scope="session")
def reference(shared: Path) -> dict[str, np.ndarray]:
    with np.load(shared / "reference" / "official_outputs.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def sw_home(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Iterator[Path]:
    """A private cache with both official models fetched from ``../shared``."""
    from spoofwatch.model.weights import fetch_weights

    home = tmp_path_factory.mktemp("spoofwatch_home")
    old = os.environ.get("SPOOFWATCH_HOME")
    os.environ["SPOOFWATCH_HOME"] = str(home)
    for model in ("aasist-l", "aasist"):
        fetch_weights(model, str(shared / "weights"), progress=False)
    yield home
    if old is None:
        os.environ.pop("SPOOFWATCH_HOME", None)
    else:
        os.environ["SPOOFWATCH_HOME"] = old


@pytest.fixture(scope="session")
def onnx_aasist_l(sw_home: Path) -> Path:
    from spoofwatch.model.export import ensure_onnx

    return ensure_onnx("aasist-l")


@pytest.fixture(scope="session")
def scorer(onnx_aasist_l: Path):  # type: ignore[no-untyped-def]
    from spoofwatch.model.runtime import OnnxScorer

    return OnnxScorer(onnx_aasist_l, device="cpu", threads=2)


@pytest.fixture(scope="session")
def vad():  # type: ignore[no-untyped-def]
    from spoofwatch.stream.vad import SileroVad

    return SileroVad()


@pytest.fixture(scope="session")
def spoof_stream(la_dir: Path) -> np.ndarray:
    """16 s at 16 kHz: 8 s of bona fide LA speech, then 8 s of a spoofed LA clip (onset: ``helpers.ONSET_S``)."""
    return genuine_then_spoof(la_dir)


@pytest.fixture()
def make_engine(vad: Any) -> Callable[..., Any]:
    """Builds a real engine (silero VAD) from the shipped AASIST-L calibration."""
    from spoofwatch.calibration.calfile import load_calibration
    from spoofwatch.stream.engine import build_engine

    def make(hop_s: float | None = None) -> Any:
        return build_engine(load_calibration(model="aasist-l").live, vad, hop_s)

    return make


@pytest.fixture()
def loopback_http() -> Iterator[Callable[[type[http.server.BaseHTTPRequestHandler]], str]]:
    """Starts an HTTP server on 127.0.0.1 for a handler class and returns its base
    URL (``http://127.0.0.1:PORT``); every server started is stopped at teardown."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(handler: type[http.server.BaseHTTPRequestHandler]) -> str:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        servers.append((httpd, thread))
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd, thread in servers:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
