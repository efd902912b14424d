"""Where spoofwatch keeps per-user files (weights, exported ONNX models)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that overrides the cache root.
HOME_ENV = "SPOOFWATCH_HOME"


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
