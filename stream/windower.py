"""Cuts a stream into overlapping model windows with absolute stream times.

Warm-up: no window is emitted until the first full window (64,600 samples,
about 4.04 s) has arrived; the first window covers samples [0, 64600), and
then one follows every hop. A stream that ends before the first full window
gets one window on ``flush()``: the audio it has, repeated to full length
(the official evaluation convention), so short clips are still scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spoofwatch.audio import official_window
from spoofwatch.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.errors import InputError

from .ring import read_circular, write_circular


@dataclass(frozen=True)
class Window:
    """One model input cut from the stream."""

    index: int  # 0, 1, 2, ... in stream order
    start_sample: int
    end_sample: int  # exclusive; for a padded short stream, the real end
    samples: npt.NDArray[np.float32]  # (window_samples,): 64,600 for the built-in models

    @property
    def t_start(self) -> float:
        return self.start_sample / SAMPLE_RATE_HZ

    @property
    def t_end(self) -> float:
        return self.end_sample / SAMPLE_RATE_HZ


class Windower:
    """``push(chunk) -> list[Window]``; chunk sizes never change the windows."""

    def __init__(self, hop_samples: int, window_samples: int = WINDOW_SAMPLES) -> None:
        if not 1 <= hop_samples <= window_samples:
            raise InputError(f"expected 1 <= hop_samples <= {window_samples}, got {hop_samples}")
        self.hop_samples = hop_samples
        self.window_samples = window_samples
        self._ring = np.zeros(window_samples, dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self.total_samples = 0
        self._next_end = self.window_samples
        self._emitted = 0

    def push(self, chunk: npt.NDArray[np.float32]) -> list[Window]:
        windows = []
        pos = 0
        while pos < chunk.shape[0]:
            take = min(chunk.shape[0] - pos, self._next_end - self.total_samples)
            self._store(chunk[pos : pos + take])
            pos += take
            if self.total_samples == self._next_end:
                windows.append(self._cut())
                self._next_end += self.hop_samples
        return windows

    def flush(self) -> list[Window]:
        """End of stream: a padded window if the stream never filled one."""
        if self._emitted or self.total_samples == 0:
            return []
        audio = self._ring[: self.total_samples]
        self._emitted = 1
        return [Window(0, 0, self.total_samples, official_window(audio, self.window_samples))]

    def _store(self, part: npt.NDArray[np.float32]) -> None:
        # Sample k of the stream lives at _ring[k % window_samples].
        write_circular(self._ring, self.total_samples % self.window_samples, part)
        self.total_samples += part.shape[0]

    def _cut(self) -> Window:
        samples = read_circular(self._ring, self.total_samples % self.window_samples, self.window_samples)
        start = self.total_samples - self.window_samples
        window = Window(self._emitted, start, self.total_samples, samples)
        self._emitted += 1
        return window


# ---- whole-file windowing (``score``, ``calibrate score``) ----------------


def window_starts(n_samples: int, hop_samples: int, window_samples: int = WINDOW_SAMPLES) -> list[int]:
    """Start offsets of the windows of ``window_samples`` covering a clip of ``n_samples``.

    A clip no longer than one window gets a single window at 0 (padded by
    repetition, the official convention). Longer clips get a window every
    hop plus, when the hops stop short of the end, one ending at the last sample.
    """
    if hop_samples < 1:
        raise InputError(f"expected a hop of at least one sample, got {hop_samples}")
    if n_samples <= window_samples:
        return [0]
    starts = list(range(0, n_samples - window_samples + 1, hop_samples))
    if starts[-1] + window_samples < n_samples:
        starts.append(n_samples - window_samples)
    return starts


def iter_windows(
    audio: npt.NDArray[np.float32], hop_samples: int, window_samples: int = WINDOW_SAMPLES
) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """``(start, window)`` pairs; the first window follows the official convention.

    ``window_samples`` is the model's input length (a model card may declare its own).
    """
    for start in window_starts(audio.size, hop_samples, window_samples):
        yield start, official_window(audio[start:], window_samples)


def stream_windows(
    chunks: Iterable[npt.NDArray[np.float32]], hop_samples: int, window_samples: int = WINDOW_SAMPLES
) -> Iterator[tuple[int, int, npt.NDArray[np.float32]]]:
    """``(start, end, window)`` over audio arriving in chunks, exactly the
    windows :func:`window_starts` gives for the whole signal, holding at most
    about one window plus a hop plus a chunk in memory.

    ``end`` is where the window's real audio stops (a clip shorter than one
    window is padded by repetition, the official convention).
    """
    if hop_samples < 1:
        raise InputError(f"expected a hop of at least one sample, got {hop_samples}")
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # stream offset of buf[0]
    n = 0  # samples received
    next_start = 0
    last_start = -1
    for chunk in chunks:
        buf = np.concatenate([buf, chunk.astype(np.float32, copy=False)])
        n += chunk.size
        while next_start + window_samples <= n:
            lo = next_start - buf_start
            yield next_start, next_start + window_samples, buf[lo : lo + window_samples].copy()
            last_start = next_start
            next_start += hop_samples
        # Keep what a later window may need: from the next start, and the
        # final window's worth for the tail window that ends at the last sample.
        keep_from = max(0, min(next_start, n - window_samples))
        if keep_from > buf_start:
            buf = buf[keep_from - buf_start :].copy()
            buf_start = keep_from
    if n == 0:
        raise InputError("expected a non-empty waveform, got 0 samples")
    if n <= window_samples:
        if last_start < 0:  # n == window_samples already yielded its window
            yield 0, n, official_window(buf, window_samples)
    elif last_start + window_samples < n:
        yield n - window_samples, n, buf[buf.size - window_samples :].copy()
