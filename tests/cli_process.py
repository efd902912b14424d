"""A spoofwatch command run as a real subprocess, with its stderr read line by line.

Used for ``serve`` and ``run``: the test waits (with a deadline) for the
line that names the page's URL, which carries the port the OS picked.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

from helpers import REPO_ROOT

PAGE_LINE = re.compile(r"browser page at (http://\S+)")


class CliProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spoofwatch", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            cwd=cwd or REPO_ROOT,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        """The first output line matching ``pattern``; fails with the output so far."""
        while True:
            try:
                line = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern.pattern!r} within {timeout_s} s; output:\n"
                    + "\n".join(self.lines)
                ) from None
            if line is None:
                raise AssertionError(
                    f"process exited ({self.process.wait()}) before printing {pattern.pattern!r}; output:\n"
                    + "\n".join(self.lines)
                )
            self.lines.append(line)
            match = pattern.search(line)
            if match:
                return match

    def page_url(self, timeout_s: float = 300.0) -> str:
        return self.wait_for_line(PAGE_LINE, timeout_s).group(1)

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed if it does not stop)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        while (line := self._queue.get_nowait() if not self._queue.empty() else None) is not None:
            self.lines.append(line)
        return self.process.returncode
