"""One batch shape per ONNX Runtime session on CUDA: padded calls, no plan rebuilds.

Why: ONNX Runtime's CUDA convolution (cuDNN 9, through the cuDNN frontend;
``Conv::UpdateState`` in ORT's ``cuda/nn/conv.cc``) keeps, per node and per
session, the execution plan of the *last* input shape it ran, and nothing
else. A call whose batch size differs from the previous call's rebuilds the
plan of every convolution in the graph (validate, query the heuristics,
build) before any arithmetic. An FP16 graph builds twice: with TF32 off,
cuDNN first finds no plan ("No execution plans support the graph", logged on
the H100) and ORT retries. The plan cache is one entry deep, so
the rebuild recurs on every change of size, not only at the first call of a
size.

A server's calls change size all the time: streams become ready in varying
numbers, full passes and catch-up rounds come in between, and a worker's
start-up timing alternates batches of 1 and of ``max_batch_windows``. That is
the likely cause of the gap measured on an H100 (docs/scaling.md, "Where the
time goes"): the step graph ran ~3,000 steps/s in a loop of one batch size,
and a serve worker timed ~300/s at start-up.

So on CUDA a graph is opened once per *bucket*: the powers of two up to the
call cap, the cap itself, and the largest call a server makes
(``--max-batch-windows``, added by :meth:`BucketedSession.warm`). A call is
padded to the smallest bucket that holds it, with copies of its last row (a
valid input for any model), and the padding rows' outputs are dropped; a
call larger than the cap is split. Each session then sees one shape for
life and builds its plans once. The price: up to twice the rows in a call
(the GPU has time to spare when calls are not full; a loaded server's calls
are full, and a full call is a bucket of its own), and one session (weights
and arena) per bucket in use: the arenas together hold the sum of the
buckets in use, 2x the largest for a power of two (1 + ... + 32 = 63) and
up to ~3x for a largest call just above one (1 + ... + 32 + 33 = 96). Sessions open at their first call, or
all at once with :meth:`BucketedSession.warm` (a server worker does this at
start-up, before it times itself).

On the CPU a shape change costs nothing measurable and padding would cost
arithmetic, so CPU sessions are not bucketed (:func:`wants_buckets`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from spoofwatch.constants import CUDA_PROVIDER
from spoofwatch.errors import InputError

log = logging.getLogger(__name__)


def batch_buckets(cap: int) -> tuple[int, ...]:
    """The batch sizes calls are padded to: powers of two below ``cap``, then ``cap``."""
    if cap < 1:
        raise InputError(f"expected a batch cap >= 1, got {cap}")
    sizes = []
    size = 1
    while size < cap:
        sizes.append(size)
        size *= 2
    sizes.append(cap)
    return tuple(sizes)


def wants_buckets(session: Any, buckets: bool | None) -> bool:
    """Whether a graph opened as ``session`` should be bucketed: ``buckets``
    when given (tests force it on the CPU), else only on the CUDA provider."""
    if buckets is not None:
        return buckets
    return bool(session.get_providers()[0] == CUDA_PROVIDER)


def _pad_rows(array: Any, rows: int) -> Any:
    """``array`` with its last row repeated up to ``rows`` rows."""
    missing = rows - len(array)
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)], axis=0)


class BucketedSession:
    """One ONNX Runtime session per batch bucket of one graph; ``run`` like a session.

    ``open_session()`` opens a new session of the graph; ``first`` is one
    already open (it serves bucket 1, and answers ``get_providers`` etc.).
    Every input and output has the batch on axis 0.
    """

    def __init__(self, open_session: Callable[[], Any], cap: int, first: Any | None = None) -> None:
        self.buckets = batch_buckets(cap)
        self.cap = cap
        self._open = open_session
        # Sessions open lazily; two threads must not both open one (an extra CUDA arena).
        self._lock = threading.Lock()
        self._sessions: dict[int, Any] = {self.buckets[0]: first if first is not None else open_session()}
        #: Rows added by padding, over the session's life.
        self.padded_rows = 0
        #: Calls run, per bucket.
        self.calls: dict[int, int] = dict.fromkeys(self.buckets, 0)

    @property
    def _any(self) -> Any:
        return self._sessions[self.buckets[0]]

    def get_providers(self) -> list[str]:
        return list(self._any.get_providers())

    def get_inputs(self) -> Any:
        return self._any.get_inputs()

    def get_outputs(self) -> Any:
        return self._any.get_outputs()

    @property
    def opened(self) -> tuple[int, ...]:
        """The buckets whose sessions are open."""
        return tuple(sorted(self._sessions))

    def bucket(self, rows: int) -> int:
        """The smallest bucket that holds ``rows`` rows (1 <= ``rows`` <= the cap)."""
        for size in self.buckets:
            if size >= rows:
                return size
        raise InputError(f"expected at most {self.cap} rows per bucket, got {rows}")

    def add_bucket(self, size: int) -> None:
        """Make ``size`` (at most the cap) a bucket of its own, e.g. the largest call a server makes."""
        if not 1 <= size <= self.cap:
            raise InputError(f"expected a bucket of 1 to {self.cap} rows, got {size}")
        if size not in self.buckets:
            self.buckets = tuple(sorted((*self.buckets, size)))
            self.calls[size] = 0

    def _session(self, size: int) -> Any:
        with self._lock:
            if size not in self._sessions:
                log.debug("opening the session for batches of %d", size)
                self._sessions[size] = self._open()
            return self._sessions[size]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[Any]:
        """Run ``feeds`` (all with the same number of rows) padded to their bucket
        and outputs trimmed back; more rows than the cap go in several calls."""
        rows = {len(v) for v in feeds.values()}
        if len(rows) != 1 or 0 in rows:
            raise InputError(
                f"expected every input to have the same number (>= 1) of rows, got {sorted(rows)}"
            )
        (n,) = rows
        if n <= self.cap:
            return self._run_bucket(output_names, feeds, n)
        parts = []
        for start in range(0, n, self.cap):
            chunk = {k: v[start : start + self.cap] for k, v in feeds.items()}
            parts.append(self._run_bucket(output_names, chunk, min(self.cap, n - start)))
        return [np.concatenate(outs) for outs in zip(*parts, strict=True)]

    def _run_bucket(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any], n: int) -> list[Any]:
        size = self.bucket(n)
        if size > n:
            feeds = {name: _pad_rows(value, size) for name, value in feeds.items()}
            self.padded_rows += size - n
        self.calls[size] += 1
        out = self._session(size).run(output_names, dict(feeds))
        return [o[:n] for o in out] if size > n else list(out)

    def warm(self, up_to: int) -> list[int]:
        """Make ``up_to`` rows (the largest call to come; at most the cap) a
        bucket, open the sessions of every bucket up to it and run each once on
        zeros, so that no live call pays a session's set-up or its first plan
        build. Returns the buckets warmed (none when an input has a dimension
        other than the batch that is not fixed)."""
        largest = min(up_to, self.cap)
        self.add_bucket(largest)
        if up_to > self.cap and up_to % self.cap:  # a full call is split: its last part too
            self.add_bucket(up_to % self.cap)
        inputs = self.get_inputs()
        if any(not isinstance(d, int) for i in inputs for d in i.shape[1:]):
            names = [i.name for i in inputs]
            log.info("not warming %s: an input has a free dimension besides the batch", names)
            return []
        warmed = [size for size in self.buckets if size <= largest]
        for size in warmed:
            feeds = {i.name: np.zeros((size, *i.shape[1:]), _numpy_type(i.type)) for i in inputs}
            self._session(size).run(None, feeds)
        return warmed


def _numpy_type(onnx_type: str) -> Any:
    """``tensor(float)`` and friends -> the numpy dtype ONNX Runtime expects."""
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}
    if onnx_type not in types:
        raise InputError(f"cannot warm an input of type {onnx_type}")
    return types[onnx_type]
