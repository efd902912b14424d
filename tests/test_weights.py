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
    rows = {(r.model, r.source): r for r in list_weights()}
    cached = rows[("aasist-l", "cache")]
    assert cached.ok and cached.sha256 == PINNED and cached.in_use  # the cache wins over the package
    assert not rows[("aasist-l", "packaged")].in_use
    assert rows[("aasist", "cache")].sha256 is None and not rows[("aasist", "cache")].in_use
    assert rows[("aasist", "packaged")].ok and rows[("aasist", "packaged")].in_use


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/truncated/AASIST-L.pth", "truncated"),
        ("/wrong/AASIST-L.pth", "does not match the pinned"),
        ("/missing/AASIST-L.pth", "HTTP 404"),
    ],
)
def test_fetch_rejects_bad_downloads(server: str, home: Path, path: str, message: str) -> None:
    # The source is named, never the temporary file it was fetched into.
    with pytest.raises(WeightsError, match=rf"^(?!.*\.partial-).*{message}"):
        fetch_weights("aasist-l", server + path, progress=False)
    assert _installed(home) == []


def test_fetch_from_nothing_listening_is_a_network_error(home: Path) -> None:
    import socket

    from spoofwatch.errors import NetworkError

    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    with pytest.raises(NetworkError, match=rf"downloading http://127\.0\.0\.1:{port}/AASIST-L\.pth"):
        fetch_weights("aasist-l", f"http://127.0.0.1:{port}/AASIST-L.pth", progress=False)
    assert _installed(home) == []


def test_bad_download_keeps_the_existing_good_file(server: str, home: Path) -> None:
    good = fetch_weights("aasist-l", f"{server}/good/AASIST-L.pth", progress=False)
    with pytest.raises(WeightsError):
        fetch_weights("aasist-l", f"{server}/wrong/AASIST-L.pth", progress=False)
    assert sha256_file(good) == PINNED


def test_fetch_from_directory_and_file(shared: Path, home: Path) -> None:
    installed = fetch_weights("aasist-l", str(shared / "weights"), progress=False)
    assert sha256_file(installed) == PINNED
    assert installed.stat().st_mode & 0o777 == 0o644  # readable by all, as a shared cache needs
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
    assert f"* aasist-l  cache    ok       {PINNED} {home / 'weights' / 'AASIST-L.pth'}" in out
    assert f"  aasist-l  packaged ok       {PINNED}" in out
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
    # The cache copy shadows the packaged weights: the message says how to recover.
    with pytest.raises(
        WeightsError, match="this copy in the cache is used before the packaged weights: delete it"
    ):
        load_torch_model("aasist-l")


def test_weights_files_that_are_not_plain_weights_say_what_they_are(shared: Path, tmp_path: Path) -> None:
    """Torch's raw text (which suggests weights_only=False, i.e. running the
    file's code), an empty reason for an empty file, a missing-keys list for a
    wrapped or DDP state dict, and a parity failure "of the export" for NaN
    weights."""
    import torch

    from spoofwatch.model.weights import load_torch_model

    official = torch.load(shared / "weights" / "AASIST-L.pth", map_location="cpu", weights_only=True)
    cases: list[tuple[str, object, str]] = [
        ("objects.pth", {"net": object}, "it holds Python objects, not only tensors"),
        ("wrapped.pth", {"state_dict": official}, "wrapped under 'state_dict'"),
        ("ddp.pth", {f"module.{k}": v for k, v in official.items()}, "every key starts with 'module.'"),
        (
            "nan.pth",
            {k: v * float("nan") if v.is_floating_point() else v for k, v in official.items()},
            "NaN or Inf",
        ),
    ]
    for name, state, message in cases:
        torch.save(state, tmp_path / name)
        with pytest.raises(WeightsError, match=message):
            load_torch_model("aasist-l", tmp_path / name)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"an empty file \(0 bytes\)"):
        load_torch_model("aasist-l", tmp_path / "empty.pth")


def test_missing_weights_say_how_to_fetch(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spoofwatch.model import weights

    monkeypatch.setattr(weights, "packaged_weights_dir", lambda: tmp_path / "no-package")
    with pytest.raises(WeightsError, match="spoofwatch weights fetch --model aasist-l"):
        weights.load_torch_model("aasist-l")


@pytest.mark.parametrize("model", ["aasist-l", "aasist"])
def test_packaged_weights_load_with_an_empty_cache(home: Path, model: str) -> None:
    """The wheel's own files: no fetch, no network, verified against the pinned hash."""
    from spoofwatch.model.config import load_model_config
    from spoofwatch.model.weights import load_torch_model, packaged_weights_dir, resolve_weights

    config = load_model_config(model)
    source, path = resolve_weights(config)
    assert (source, path) == ("packaged", packaged_weights_dir() / config.weights_file)
    assert sha256_file(path) == config.weights_sha256
    net = load_torch_model(model)
    assert sum(p.numel() for p in net.parameters()) == config.n_parameters
    assert _installed(home) == []  # nothing was written to the cache
    for notice in ("LICENSE", "NOTICE"):
        assert "NAVER" in (packaged_weights_dir() / notice).read_text()


def test_corrupted_packaged_weights_are_caught_at_load(
    shared: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spoofwatch.model import weights

    package = tmp_path / "package"
    package.mkdir()
    data = bytearray((shared / "weights" / "AASIST-L.pth").read_bytes())
    data[-100] ^= 0xFF
    (package / "AASIST-L.pth").write_bytes(bytes(data))
    monkeypatch.setattr(weights, "packaged_weights_dir", lambda: package)
    with pytest.raises(WeightsError, match="does not match the pinned"):
        weights.load_torch_model("aasist-l")


def test_list_names_custom_files_in_the_cache(
    shared: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "weights").mkdir()
    custom = home / "weights" / "my-finetune.pth"
    custom.write_bytes((shared / "weights" / "AASIST-L.pth").read_bytes())
    rows = [r for r in list_weights() if r.source == "custom"]
    assert [(r.model, r.path, r.sha256, r.in_use) for r in rows] == [(None, custom, PINNED, False)]
    assert main(["weights", "list"]) == 0
    assert f"  -         custom   custom   {PINNED} {custom}" in capsys.readouterr().out
