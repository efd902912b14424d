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
        if realtime:
            due = start + pos / SAMPLE_RATE_HZ
            delay = due - clock()
            if delay > 0:
                sleep(delay)
        yield audio[pos : pos + chunk_samples]


def file_chunks(path: str | Path, realtime: bool = False) -> Iterator[npt.NDArray[np.float32]]:
    return iter_chunks(read_audio(path), realtime=realtime)
