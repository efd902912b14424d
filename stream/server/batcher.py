"""One scorer shared by every connection: windows that are ready together
are scored in one ONNX Runtime call, off the event loop.

With an incremental model, each stream holds its own cache (``open_stream``)
and passes it with its windows; the steps of the streams that are ready
together share one ONNX Runtime call (their states stacked, where the model
batches streams), and first windows share another.

Every model call of a worker runs on one long-lived thread of its own
(:class:`ScoringThread`), never on anyio's shared pool.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import numpy as np
import numpy.typing as npt
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from spoofwatch.errors import ModelError

from ..engine import Scorer
from ..scoring import IncrementalBackend, StreamCache

log = logging.getLogger(__name__)

T = TypeVar("T")


class ScoringThread:
    """One long-lived thread that runs every model call of a worker.

    Why not anyio's thread pool: the pool hands each call to whichever of its
    threads is idle, and with many streams ingesting there are dozens. ONNX
    Runtime's CUDA provider keeps a context per session *and per calling
    thread* (cuDNN and cuBLAS handles, with their workspaces), so calls that
    wander over threads build new contexts in every bucket's session
    (model/shapes.py) and the GPU memory of a worker grows with the number of
    threads that ever scored. One thread: one live context per session (plus
    the one of the worker's main thread, which times the model at start-up).
    """

    def __init__(self, name: str = "spoofwatch-scorer") -> None:
        self.name = name
        self._executor: ThreadPoolExecutor | None = None  # started on first use, again after close

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the thread. Like ``anyio.to_thread.run_sync``, a
        cancelled caller still waits for the call; the cancellation then takes
        effect at its next checkpoint."""
        token = anyio.lowlevel.current_token()
        done = anyio.Event()
        outcome: list[T] = []
        failure: list[BaseException] = []

        def call() -> None:
            # The wake-up runs here, on the scoring thread, never as a future's
            # done-callback: a future that finished before ``add_done_callback``
            # runs it on the event loop's thread, which then waits for itself forever.
            try:
                outcome.append(fn(*args))
            except BaseException as exc:  # re-raised in the caller
                failure.append(exc)
            finally:
                try:
                    anyio.from_thread.run_sync(done.set, token=token)
                except RuntimeError:  # anyio.RunFinishedError: the loop has ended, nobody waits
                    log.debug("scoring call finished after its event loop")
                except Exception:  # anything else would leave the caller waiting: say so
                    log.exception("could not wake the task waiting for a scoring call")

        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._executor.submit(call)
        with anyio.CancelScope(shield=True):
            await done.wait()
        if failure:
            raise failure[0]
        return outcome[0]

    def close(self) -> None:
        """Let the thread end once its call (if any) is done."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


@dataclass
class _Request:
    window: npt.NDArray[np.float32]
    stream: StreamCache | None
    start_sample: int
    done: anyio.Event = field(default_factory=anyio.Event)
    score: float | None = None
    error: BaseException | None = None


#: Windows scored per ONNX Runtime call at most, unless ``serve --max-batch-windows`` says.
DEFAULT_BATCH_WINDOWS = 16


class BatchScorer:
    """``await score(window, stream, start_sample)``; run ``serve()`` in a task group for its lifetime."""

    def __init__(
        self,
        scorer: Scorer,
        max_batch_windows: int = DEFAULT_BATCH_WINDOWS,
        queue_windows: int = 256,
        incremental: IncrementalBackend | None = None,
    ) -> None:
        self.scorer = scorer
        self.incremental = incremental
        self.max_batch_windows = max_batch_windows
        self._send: MemoryObjectSendStream[_Request]
        self._receive: MemoryObjectReceiveStream[_Request]
        self._send, self._receive = anyio.create_memory_object_stream[_Request](queue_windows)
        self.batches = 0
        self.windows = 0
        # Its own thread: a batch never queues behind the streams' ingest calls
        # in anyio's shared pool, and always calls the model from the same thread.
        self._thread = ScoringThread()

    @property
    def mode(self) -> str:
        return "full" if self.incremental is None else "incremental"

    def open_stream(self) -> StreamCache | None:
        """A new stream's incremental state (``None``: its windows are scored from scratch)."""
        return None if self.incremental is None else self.incremental.open_stream()

    async def score(
        self, window: npt.NDArray[np.float32], stream: StreamCache | None = None, start_sample: int = 0
    ) -> float:
        """Score one window; a stream's windows (with its cache) must come in stream order."""
        request = _Request(window, stream, start_sample)
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
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    while len(batch) < self.max_batch_windows:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except anyio.WouldBlock:
                            break
                    await self._run(batch)
        finally:
            self._thread.close()

    def _score_batch(self, batch: list[_Request]) -> list[float]:
        scores = [0.0] * len(batch)
        full = [i for i, r in enumerate(batch) if r.stream is None]
        inc = [i for i, r in enumerate(batch) if r.stream is not None]
        if full:
            stacked = np.stack([batch[i].window for i in full])
            try:
                values = self.scorer.scores(stacked).tolist()
            except ModelError as exc:
                # One stream's audio may be what the model fails on (a card's model can
                # raise on some inputs): each window alone, so that the others are scored.
                log.warning("%s; scoring the batch's %d windows one by one", exc, len(full))
                values = [self._score_alone(w) for w in stacked]
            for i, v in zip(full, values, strict=True):
                scores[i] = float(v)
        if inc:
            assert self.incremental is not None
            streams = [batch[i].stream for i in inc]
            windows = [(batch[i].start_sample, batch[i].window) for i in inc]
            for i, v in zip(inc, self.incremental.score(streams, windows), strict=True):
                scores[i] = v
        return scores

    def _score_alone(self, window: npt.NDArray[np.float32]) -> float:
        """One window's score; NaN when the model fails on it (the engine counts
        it as dropped, and no NaN reaches an event)."""
        try:
            return float(self.scorer.scores(window[np.newaxis, :])[0])
        except ModelError:
            return math.nan

    async def _run(self, batch: list[_Request]) -> None:
        try:
            scores = await self._thread.run(self._score_batch, batch)
        except Exception as exc:  # reported to every waiting stream
            log.exception("scoring a batch of %d windows failed", len(batch))
            for r in batch:
                r.error = exc
                r.done.set()
            return
        self.batches += 1
        self.windows += len(batch)
        for r, s in zip(batch, scores, strict=True):
            r.score = s
            r.done.set()
