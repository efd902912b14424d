"""File source: decoded audio cut into chunks, optionally paced at 1x."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import AudioFile
from spoofwatch.constants import SAMPLE_RATE_HZ

#: Chunk size of the file source: 20 ms, a typical capture block.
FILE_CHUNK_SAMPLES = 320


def due_in_s(start: float, samples: int, now: float, rate_hz: int = SAMPLE_RATE_HZ) -> float:
    """Seconds until ``samples`` of audio are due at 1x when sample 0 was due at
    ``start`` (<= 0: already due). The one pacing rule of files and the client:
    a chunk is due once all of its audio would have been captured."""
    return start + samples / rate_hz - now


def iter_chunks(
    audio: npt.NDArray[np.float32] | Iterable[npt.NDArray[np.float32]],
    chunk_samples: int = FILE_CHUNK_SAMPLES,
    realtime: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[npt.NDArray[np.float32]]:
    """Yield consecutive chunks of ``audio`` (an array, or blocks of one
    decoded lazily); with ``realtime`` no chunk comes before its time."""
    blocks = [audio] if isinstance(audio, np.ndarray) else audio
    start = clock()
    pos = 0
    carry = np.zeros(0, dtype=np.float32)
    for block in blocks:
        data = np.concatenate([carry, block]) if carry.size else block
        whole = data.size - data.size % chunk_samples
        for off in range(0, whole, chunk_samples):
            yield _paced(data[off : off + chunk_samples], pos, start, realtime, clock, sleep)
            pos += chunk_samples
        carry = data[whole:]
    if carry.size:
        yield _paced(carry, pos, start, realtime, clock, sleep)


def _paced(
    chunk: npt.NDArray[np.float32],
    pos: int,
    start: float,
    realtime: bool,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> npt.NDArray[np.float32]:
    if realtime and (delay := due_in_s(start, pos + chunk.size, clock())) > 0:
        sleep(delay)
    return chunk


def file_chunks(path: str | Path, realtime: bool = False) -> Iterator[npt.NDArray[np.float32]]:
    """Chunks of a file decoded block by block. The header is checked now,
    so a missing file or a bad sample rate fails before the model loads."""
    return iter_chunks(AudioFile(path).chunks(), realtime=realtime)
