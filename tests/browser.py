"""Headless Chromium driven over the DevTools protocol (imported by tests as ``browser``).

Debian's ``chromium`` with a fresh profile and every flag that would make it
reach the network turned off; a fake microphone fed from a WAV file; the
DevTools protocol spoken with the ``websockets`` sync client on loopback.
All waits poll page state with a deadline; nothing sleeps as synchronisation.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_NAMES = ("chromium", "chromium-browser")
#: Flags that keep Chromium off the network and quiet in a container.
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1200,1000",
)


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class PageError(AssertionError):
    """The page did not reach the awaited state, or a script in it failed."""


class Chromium:
    """One headless Chromium with one page, driven over its DevTools socket."""

    def __init__(self, executable: str, profile: Path, fake_audio: Path | None = None) -> None:
        flags = [*OFFLINE_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0"]
        if fake_audio is not None:
            flags += [
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={fake_audio}",
            ]
        self.log_path = profile.parent / (profile.name + "-chromium.log")
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [executable, *flags, "about:blank"], stdout=self._log, stderr=subprocess.STDOUT
        )
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        try:
            port = self._wait_for_port(profile / "DevToolsActivePort", timeout_s=60.0)
            self._ws = self._stack.enter_context(
                connect(self._page_socket(port), max_size=None, open_timeout=30)
            )
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _wait_for_port(self, path: Path, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PageError(f"chromium exited with {self.process.returncode}: {self.log_tail()}")
            if path.is_file():
                first = path.read_text().splitlines()[:1]
                if first and first[0].isdigit():
                    return int(first[0])
            time.sleep(0.05)  # polling a file Chromium writes once it listens
        raise PageError(f"chromium did not open its DevTools port in {timeout_s} s: {self.log_tail()}")

    @staticmethod
    def _page_socket(port: int) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            targets = json.load(response)
        pages = [t for t in targets if t.get("type") == "page"]
        if not pages:
            raise PageError(f"no page target in {targets}")
        return str(pages[0]["webSocketDebuggerUrl"])

    def log_tail(self, n: int = 2000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def call(self, method: str, timeout_s: float = 60.0, **params: Any) -> dict[str, Any]:
        """One DevTools command; events arriving meanwhile are skipped."""
        assert self._ws is not None
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PageError(f"DevTools {method} got no answer in {timeout_s} s")
            message = json.loads(self._ws.recv(timeout=remaining))
            if message.get("id") != call_id:
                continue
            if "error" in message:
                raise PageError(f"DevTools {method} failed: {message['error']}")
            result: dict[str, Any] = message.get("result", {})
            return result

    def evaluate(self, expression: str, user_gesture: bool = False) -> Any:
        """The JSON value of ``expression`` in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
            userGesture=user_gesture,
        )
        if "exceptionDetails" in result:
            raise PageError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str, timeout_s: float = 60.0) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && window.spoofwatch !== undefined", timeout_s)

    def wait_for(self, expression: str, timeout_s: float, describe: str = "") -> Any:
        """Poll ``expression`` until it is truthy; returns its value or fails with the page's state."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            if self.process.poll() is not None:
                raise PageError(f"chromium exited with {self.process.returncode}: {self.log_tail()}")
            time.sleep(0.1)  # polling page state, not synchronising on time
        raise PageError(f"timed out after {timeout_s} s waiting for {describe or expression}")

    def wait_for_file(self, path: Path, timeout_s: float) -> None:
        """Wait until Chromium has finished writing ``path`` (it renames a .crdownload at the end)."""
        deadline = time.monotonic() + timeout_s
        while not path.is_file():
            if time.monotonic() > deadline:
                raise PageError(f"no file {path} after {timeout_s} s")
            time.sleep(0.05)  # polling the file system for Chromium's write

    def set_file(self, selector: str, path: Path) -> None:
        """Choose ``path`` in a file input, as a user picking it would (fires ``change``)."""
        node = self.call("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        self.call("DOM.setFileInputFiles", files=[str(path)], objectId=node["result"]["objectId"])

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if self._ws is not None:
            # Already gone: the process wait below settles it.
            with contextlib.suppress(Exception):
                self.call("Browser.close", timeout_s=10)
            self._stack.close()
            self._ws = None
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        self._log.close()
