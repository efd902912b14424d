"""``weights fetch`` through the real download code against a loopback HTTP server."""

from __future__ import annotations

import contextlib
import http.server
from collections.abc import Callable
from pathlib import Path

import pytest

from spoofwatch.cli import main
from spoofwatch.errors import WeightsError
from spoofwatch.model.weights import fetch_weights, list_weights, sha256_file

PINNED = "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a"


class _Handler(http.server.BaseHTTPRequestHandler):
    weights_dir: Path

    def do_GET(self) -> None:
        body = (self.weights_dir / "AASIST-L.pth").read_bytes()
        if self.path == "/good/AASIST-L.pth":
            self._send(200, body, len(body))
        elif self.path == "/truncated/AASIST-L.pth":
            self._send(200, body[: len(body) // 2], len(body))  # promises more than it sends
        elif self.path == "/wrong/AASIST-L.pth":
            self._send(200, b"\x00" * len(body), len(body))
        else:
            self._send(404, b"not found", 9)

    def _send(self, code: int, body: bytes, length: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server(shared: Path, loopback_http: Callable[[type[_Handler]], str]) -> str:
    return loopback_http(type("H", (_Handler,), {"weights_dir": shared / "weights"}))


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPOOFWATCH_HOME", str(tmp_path))
    return tmp_path


def _installed(home: Path) -> list[Path]:
    return sorted((home / "weights").glob("*")) if (home / "weights").exists() else []


def test_fetch_good_file_over_http(server: str, home: Path) -> None:
    path = fetch_weights("aasist-l", f"{server}/good/AASIST-L.pth", progress=False)
    assert path == home / "weights" / "AASIST-L.pth"
    assert sha256_file(path) == PINNED
    assert _installed(home) == [path]  # no partial files left behind
    rows = {r.model: r for r in list_weights()}
    assert rows["aasist-l"].ok and rows["aasist-l"].sha256 == PINNED
    assert not rows["aasist"].ok and rows["aasist"].sha256 is None


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/truncated/AASIST-L.pth", "truncated"),
        ("/wrong/AASIST-L.pth", "does not match the pinned"),
        ("/missing/AASIST-L.pth", "HTTP 404"),
    ],
)
def test_fetch_rejects_bad_downloads(server: str, home: Path, path: str, message: str) -> None:
    with pytest.raises(WeightsError, match=message):
        fetch_weights("aasist-l", server + path, progress=False)
    assert _installed(home) == []


def test_bad_download_keeps_the_existing_good_file(server: str, home: Path) -> None:
    good = fetch_weights("aasist-l", f"{server}/good/AASIST-L.pth", progress=False)
    with pytest.raises(WeightsError):
        fetch_weights("aasist-l", f"{server}/wrong/AASIST-L.pth", progress=False)
    assert sha256_file(good) == PINNED


def test_fetch_from_directory_and_file(shared: Path, home: Path) -> None:
    assert sha256_file(fetch_weights("aasist-l", str(shared / "weights"), progress=False)) == PINNED
    assert fetch_weights("aasist", str(shared / "weights" / "AASIST.pth"), progress=False).is_file()


def test_fetch_rejects_unreadable_local_file(tmp_path: Path, home: Path) -> None:
    bogus = tmp_path / "AASIST-L.pth"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="SHA-256"):
        fetch_weights("aasist-l", str(bogus), progress=False)
    with pytest.raises(WeightsError, match="expected a URL"):
        fetch_weights("aasist-l", str(tmp_path / "nowhere"), progress=False)


def test_cli_fetch_and_list(server: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "fetch", "--model", "aasist-l", "--source", f"{server}/good/AASIST-L.pth"]) == 0
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert f"aasist-l  ok       {PINNED}" in out
    assert main(["weights", "fetch", "--source", f"{server}/missing/AASIST-L.pth"]) == 4
    assert "HTTP 404" in capsys.readouterr().err


def test_corrupted_cache_is_caught_at_load(shared: Path, home: Path) -> None:
    from spoofwatch.model.weights import load_torch_model

    path = fetch_weights("aasist-l", str(shared / "weights"), progress=False)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match"):
        load_torch_model("aasist-l")


def test_missing_weights_say_how_to_fetch(home: Path) -> None:
    from spoofwatch.model.weights import load_torch_model

    with pytest.raises(WeightsError, match="spoofwatch weights fetch --model aasist-l"):
        load_torch_model("aasist-l")
