"""File source: decoded audio cut into chunks, optionally paced at 1x."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import read_audio
from spoofwatch.constants import SAMPLE_RATE_HZ

#: Chunk size of the file source: 20 ms, a typical capture block.
FILE_CHUNK_SAMPLES = 320


def due_in_s(start: float, samples: int, now: float, rate_hz: int = SAMPLE_RATE_HZ) -> float:
    """Seconds until ``samples`` of audio are due at 1x when sample 0 was due at
    ``start`` (<= 0: already due). The one pacing rule of files and the client:
    a chunk is due once all of its audio would have been captured."""
    return start + samples / rate_hz - now


def iter_chunks(
    audio: npt.NDArray[np.float32],
    chunk_samples: int = FILE_CHUNK_SAMPLES,
    realtime: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[npt.NDArray[np.float32]]:
    """Yield consecutive chunks; with ``realtime`` no chunk comes before its time."""
    start = clock()
    for pos in range(0, audio.size, chunk_samples):
        chunk = audio[pos : pos + chunk_samples]
        if realtime and (delay := due_in_s(start, pos + chunk.size, clock())) > 0:
            sleep(delay)
        yield chunk


def file_chunks(path: str | Path, realtime: bool = False) -> Iterator[npt.NDArray[np.float32]]:
    return iter_chunks(read_audio(path), realtime=realtime)
