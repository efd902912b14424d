"""Cached model files are checked against what spoofwatch wrote, at every use.

An exported graph in the cache is found by its name (model, weights hash,
version), and nothing in a name says the bytes are still the ones exported:
a graph damaged in place, or replaced by another model's (an ``export --out``
into the cache, a copy from another machine), was scored silently, with
verdicts inverted. So every file spoofwatch installs in the cache gets a
digest beside it (``<file>.sha256``, the SHA-256 of its bytes), and every use
compares the two (a few milliseconds: the graphs are megabytes). A file is
replaced with its old digest removed first and the new one written after:
a run that dies in between leaves a file without a digest, which the next
use treats as below, never a digest that refuses a good file.

A file without a digest comes from an earlier release: the caller re-exports
it when it can (the FP32 graphs), or records its digest now (a reduced-
precision variant, already checked against its FP32 source).
"""

from __future__ import annotations

import hashlib
import logging
import os
from enum import Enum
from pathlib import Path

from spoofwatch.errors import ModelError
from spoofwatch.paths import cache_tempfile

log = logging.getLogger(__name__)

DIGEST_SUFFIX = ".sha256"
_CHUNK_BYTES = 1 << 20


class Cached(Enum):
    INTACT = "intact"  # the bytes spoofwatch wrote
    UNRECORDED = "unrecorded"  # no digest: a file from an earlier release


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def record(final: Path, digest: str | None = None) -> None:
    """Write ``final``'s digest (``digest``, else computed), atomically."""
    digest = digest or file_sha256(final)
    fd, name = cache_tempfile(final.parent, DIGEST_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(digest + "\n")
        os.replace(name, digest_path(final))
    finally:
        Path(name).unlink(missing_ok=True)


def forget(final: Path) -> None:
    """Remove ``final``'s digest before ``final`` is written anew."""
    digest_path(final).unlink(missing_ok=True)


def install(tmp: Path | str, final: Path) -> None:
    """Rename the finished ``tmp`` to ``final`` and record its digest (the old
    one removed first: see the module's docstring)."""
    digest = file_sha256(tmp)
    forget(final)
    os.replace(tmp, final)
    record(final, digest)


def check(path: Path) -> Cached:
    """:attr:`Cached.INTACT` or :attr:`Cached.UNRECORDED`; a :class:`ModelError`
    saying what to do when ``path`` is not the file spoofwatch wrote."""
    try:
        expected = digest_path(path).read_text("ascii").strip()
    except FileNotFoundError:
        return Cached.UNRECORDED
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{digest_path(path)}: cannot read the cached file's digest: {exc}") from None
    if file_sha256(path) != expected:
        raise ModelError(
            f"{path}: this cached model file changed since spoofwatch wrote it (damaged, or replaced by "
            "another model): delete it and the next run rebuilds it"
        )
    return Cached.INTACT


def record_legacy(path: Path) -> None:
    """Record the digest of a file from an earlier release now; a cache this
    user cannot write (a read-only image) is used as it is."""
    try:
        record(path)
    except Exception as exc:  # cache_unwritable's InputError, or an OSError
        log.warning("%s: cannot record its digest (%s); it is used unchecked", path, exc)
    else:
        log.info("%s: recorded its digest (cached by an earlier release)", path)
