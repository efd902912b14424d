"""One scorer shared by every connection: windows that are ready together
are scored in one ONNX Runtime call, off the event loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
import numpy as np
import numpy.typing as npt
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..engine import Scorer

log = logging.getLogger(__name__)


@dataclass
class _Request:
    window: npt.NDArray[np.float32]
    done: anyio.Event = field(default_factory=anyio.Event)
    score: float | None = None
    error: BaseException | None = None


class BatchScorer:
    """``await score(window)``; run ``serve()`` in a task group for its lifetime."""

    def __init__(self, scorer: Scorer, max_batch_windows: int = 16, queue_windows: int = 256) -> None:
        self.scorer = scorer
        self.max_batch_windows = max_batch_windows
        self._send: MemoryObjectSendStream[_Request]
        self._receive: MemoryObjectReceiveStream[_Request]
        self._send, self._receive = anyio.create_memory_object_stream[_Request](queue_windows)
        self.batches = 0
        self.windows = 0
        # Its own thread: a batch never queues behind the streams' ingest calls
        # in anyio's shared thread pool (one batch runs at a time anyway).
        self._limiter = anyio.CapacityLimiter(1)

    async def score(self, window: npt.NDArray[np.float32]) -> float:
        request = _Request(window)
        await self._send.send(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.score is not None
        return request.score

    def close(self) -> None:
        """Stop accepting windows (``serve`` then ends once the queue is drained)."""
        self._send.close()

    async def serve(self) -> None:
        async with self._receive:
            async for first in self._receive:
                batch = [first]
                while len(batch) < self.max_batch_windows:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                await self._run(batch)

    async def _run(self, batch: list[_Request]) -> None:
        windows = np.stack([r.window for r in batch])
        try:
            scores = await anyio.to_thread.run_sync(self.scorer.scores, windows, limiter=self._limiter)
        except Exception as exc:  # reported to every waiting stream
            log.exception("scoring a batch of %d windows failed", len(batch))
            for r in batch:
                r.error = exc
                r.done.set()
            return
        self.batches += 1
        self.windows += len(batch)
        for r, s in zip(batch, scores.tolist(), strict=True):
            r.score = float(s)
            r.done.set()
