"""Where spoofwatch keeps per-user files (weights, exported ONNX models)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Environment variable that overrides the cache root.
HOME_ENV = "SPOOFWATCH_HOME"
#: The shared development data (official outputs, LA clips, speech corpora).
SHARED_ENV = "SPOOFWATCH_SHARED"


def home_dir() -> Path:
    """``$SPOOFWATCH_HOME``, else ``$XDG_CACHE_HOME/spoofwatch``, else ``~/.cache/spoofwatch``."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "spoofwatch"


def weights_dir() -> Path:
    return home_dir() / "weights"


def onnx_dir() -> Path:
    return home_dir() / "onnx"


#: Cached models and weights are readable by everyone, as files made with the
#: usual umask are (``mkstemp`` makes them 0600: a shared cache would fail).
CACHE_FILE_MODE = 0o644


def cache_tempfile(folder: Path, suffix: str) -> tuple[int, str]:
    """A temporary file in ``folder`` to write a cached file into and rename
    into place (``tempfile.mkstemp``), with :data:`CACHE_FILE_MODE`."""
    fd, name = tempfile.mkstemp(prefix=".partial-", suffix=suffix, dir=folder)
    os.fchmod(fd, CACHE_FILE_MODE)
    return fd, name
