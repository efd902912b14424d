"""Where spoofwatch keeps per-user files (weights, exported ONNX models), and
how a run writes its outputs (temporary names, one run per output)."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError

log = logging.getLogger(__name__)

#: Environment variable that overrides the cache root.
HOME_ENV = "SPOOFWATCH_HOME"
#: The shared development data (official outputs, LA clips, speech corpora).
SHARED_ENV = "SPOOFWATCH_SHARED"
#: Where that data is when the variable is unset: ``shared`` beside the checkout.
DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared"


def shown(text: object) -> str:
    """``str(text)`` (a file name, or an error naming one) safe to show on a
    terminal or in a picture: each unprintable character (a newline, an
    escape sequence's ESC, a byte that is not UTF-8, kept as a lone
    surrogate) is written as its Python escape. A file name could otherwise
    forge a result line in ``score``'s table or recolour the terminal."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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


#: The suffix of a file being written, renamed into place once whole.
PARTIAL_SUFFIX = ".partial"


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: named per
    process, so that no two processes ever write one temporary file, and
    ending in :data:`PARTIAL_SUFFIX`, so that a run holding the output's lock
    can remove what a killed run left."""
    return path.with_name(f"{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")


#: The lock file a run holds in (or beside) its output: see :func:`lock_output`.
OUTPUT_LOCK_NAME = ".spoofwatch.lock"
#: A lock file's mode before the umask.
LOCK_FILE_MODE = 0o666
#: Lock files this process holds: path -> (descriptor, holders). A run takes its
#: lock again from several of its functions (the corpus build's stamp check,
#: build and outputs), which must not refuse each other.
_held_locks: dict[str, tuple[int, int]] = {}


def lock_output(lock_file: Path, output: str) -> Callable[[], None]:
    """Hold an exclusive advisory lock (``flock``) on ``lock_file`` for the run
    writing ``output`` (e.g. ``"--out corpus"``), or raise :class:`InputError`
    naming the run that holds it: two runs into one output would mix their
    files silently. Never waits. The kernel drops the lock when the process
    ends, however it ends, so a killed run leaves nothing to clean up; the file
    itself stays (deleting it would let a third run lock a new file while the
    second still holds the old one). Re-entrant within a process (two runs
    into one output from one process are not told apart). Returns the
    function that releases this hold; a run that never calls it keeps the lock
    until it exits."""
    import fcntl  # POSIX only: imported here so that the module loads everywhere

    key = os.path.realpath(lock_file)
    if key in _held_locks:
        fd, holders = _held_locks[key]
        _held_locks[key] = (fd, holders + 1)
        return _releaser(key)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        # 0o666 less the umask: a group sharing an output folder can lock the file one of them made.
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, LOCK_FILE_MODE)
        writable = True
    except PermissionError:  # another user's lock file: flock needs no write access, only the pid does
        try:
            fd = os.open(lock_file, os.O_RDONLY)
        except OSError as exc:
            raise InputError(
                f"{output}: cannot open its lock file {lock_file}: {exc.strerror or exc}"
            ) from None
        writable = False
    except OSError as exc:
        raise InputError(f"{output}: cannot make its lock file {lock_file}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise InputError(
            f"{output} is in use by another run (pid {holder}; it holds {lock_file}): wait for it to "
            "finish, or write to another output"
        ) from None
    except OSError as exc:
        # ENOLCK and kin: a file system without locks (some NFS and FUSE
        # mounts). Refusing would make the output unusable there; the lock
        # only guards against a mistake, so the run goes on unguarded.
        os.close(fd)
        log.warning(
            "%s: cannot lock %s (%s): a second run writing to it at the same time would not be noticed",
            output,
            lock_file,
            exc.strerror or exc,
        )
        return lambda: None
    _held_locks[key] = (fd, 1)
    if writable:
        # The holder's pid, for the message above: best effort (the lock, not
        # this text, decides; a full disk must not fail a run that holds it).
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as exc:
            log.debug("could not write the pid into %s: %s", lock_file, exc)
    return _releaser(key)


def _releaser(key: str) -> Callable[[], None]:
    """The release of one hold on ``key``; calling it again does nothing (it
    must not release another holder's hold)."""
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        fd, holders = _held_locks.pop(key)
        if holders > 1:
            _held_locks[key] = (fd, holders - 1)
        else:
            os.close(fd)  # closing the last descriptor drops the flock

    return release
