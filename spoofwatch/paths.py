"""Where spoofwatch keeps per-user files (weights, exported ONNX models)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError

#: Environment variable that overrides the cache root.
HOME_ENV = "SPOOFWATCH_HOME"
#: The shared development data (official outputs, LA clips, speech corpora).
SHARED_ENV = "SPOOFWATCH_SHARED"
#: Where that data is when the variable is unset: ``shared`` beside the checkout.
DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared"


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


def cannot_write_in(folder: Path) -> str | None:
    """Why a file cannot be made in the existing ``folder``, or None: tried, not
    guessed from permission bits (root passes every ``os.access`` check, and
    /proc or /sys refuse new files whoever asks)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def make_cache_folder(folder: Path) -> None:
    """``folder`` made (with its parents) for cached files; a clear error if it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cache_unwritable(folder, exc) from None


def cache_tempfile(folder: Path, suffix: str) -> tuple[int, str]:
    """A temporary file in ``folder`` to write a cached file into and rename
    into place (``tempfile.mkstemp``), with :data:`CACHE_FILE_MODE`."""
    try:
        fd, name = tempfile.mkstemp(prefix=".partial-", suffix=suffix, dir=folder)
    except OSError as exc:
        raise cache_unwritable(folder, exc) from None
    os.fchmod(fd, CACHE_FILE_MODE)
    return fd, name


def cache_unwritable(folder: Path | str, exc: OSError) -> InputError:
    """The one error for a cache folder this user cannot write (a read-only
    image, another user's cache): what to change, instead of a traceback."""
    return InputError(
        f"cannot write to the spoofwatch cache folder {folder} ({exc.strerror or exc}): models are "
        f"exported there on first use. Set {HOME_ENV} to a folder this user can write, make this one "
        "writable, or prepare the cache beforehand as a user who can (`spoofwatch serve --prepare-only` "
        "with the same --model, --precision and --calibration)"
    )
