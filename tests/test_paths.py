"""One run per output: the advisory lock of ``spoofwatch.paths``."""

from __future__ import annotations

import errno
import fcntl
import logging
from pathlib import Path

import pytest

from spoofwatch.paths import lock_output


def test_a_hold_is_re_entrant_and_released_by_its_last_holder(tmp_path: Path) -> None:
    lock = tmp_path / "out.lock"
    first = lock_output(lock, "--out x")
    second = lock_output(lock, "--out x")  # the same process: one run's two parts
    second()
    second()  # a second call must not release the first hold
    probe = open(lock, "rb")  # noqa: SIM115 - a separate open file description, as another run has
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        first()
        fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
    finally:
        probe.close()


def test_a_file_system_without_locks_runs_unguarded_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """flock fails with ENOLCK on some NFS and FUSE mounts: that was a raw
    traceback, and the output could not be written at all."""

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock = tmp_path / "out.lock"
    with caplog.at_level(logging.WARNING, logger="spoofwatch.paths"):
        release = lock_output(lock, "--out corpus")
    assert "--out corpus: cannot lock" in caplog.text and "No locks available" in caplog.text
    release()
    monkeypatch.undo()
    lock_output(lock, "--out corpus")()  # nothing was left held
