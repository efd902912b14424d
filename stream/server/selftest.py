"""A server's host cost, measured before it admits any stream.

Admission control (:class:`~.load.HostCost`) bounds a worker by the CPU it
spends outside the model per second of stream audio. Timing the ingest alone
(resampling, VAD, windows) predicted a third to a half of what live workers
spent (docs/scaling.md): the event loop's share (WebSocket frames, the
protocol, tasks, events) is as large. So the start-up figure comes from the
real thing: a throw-away copy of the server on a loopback port, its model
replaced by an instant stand-in, takes a few real-time streams of noise in
20 ms frames (the ``send`` client's, and telephony's) and its own threads'
CPU time per second of audio is the cost. Real time, because frames sent
faster share reads and cuts: 20 ms frames sent flat out cost 40 % less than
paced ones (benchmarks/bench_host_cost.py). The smallest common frame, so
that clients sending larger ones are admitted conservatively at first (the
live measurement then raises the bound). The VAD runs on every 32 ms frame
whatever the audio holds, so noise costs what speech does. It takes about
``SELFTEST_AUDIO_S`` seconds.

What it does not copy: the model and its book-keeping (timed with the model,
on the scoring thread), a model card's own window length (it times the
calibration's), and speech (noise is mostly gated, so its windows end as
events without a score). On the H100 box it read 40.3 ms where the live
workers then measured 36.7 ms.

It runs in two threads of its own (the server's event loop, the clients'), so
that it can be called from anywhere; the clients' CPU is not counted. Run it
where its metrics cannot mix with a live server's: the supervisor runs it
before any worker starts (see :mod:`.workers`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

import anyio
import numpy as np

from spoofwatch.constants import SAMPLE_RATE_HZ
from spoofwatch.errors import CloseCode, NetworkError

from ..client import send_audio
from ..engine import LiveConfig
from ..gate import VadModel
from .app import WebSocketServer
from .batcher import BatchScorer
from .connection import first_leaf
from .context import ServerConfig, ServerContext
from .sinks import ServerSinks

#: Streams sent at once, and seconds of audio each (enough for 5 windows).
SELFTEST_STREAMS = 8
SELFTEST_AUDIO_S = 6.0
#: The probe gives up after this long (a machine far too loaded to serve anyway),
#: and is given this much more to end.
SELFTEST_TIMEOUT_S = 120.0
SELFTEST_TIMEOUT_MARGIN_S = 30.0


class InstantScorer:
    """The model's place, at no cost: every window scores 0."""

    device = "cpu"

    def scores(self, windows: Any) -> Any:
        return np.zeros(len(windows), dtype=np.float32)


def probe_context(
    live: LiveConfig, vad: VadModel, config: ServerConfig | None = None, streams: int = SELFTEST_STREAMS
) -> ServerContext:
    """A throw-away server like ``config``'s, model replaced by :class:`InstantScorer`:
    loopback, an ephemeral port, no token, no refusals, and default limits on a
    stream's duration and silence (the user's might end the probe's streams)."""
    defaults = ServerConfig()
    probe_config = dataclasses.replace(
        config or defaults,
        host="127.0.0.1",
        port=0,
        token=None,
        max_streams=streams,
        shedding=None,
        max_stream_duration_s=defaults.max_stream_duration_s,
        idle_timeout_s=defaults.idle_timeout_s,
    )
    return ServerContext(probe_config, BatchScorer(InstantScorer()), live, vad, ServerSinks())


def measure_host_cost(
    live: LiveConfig,
    vad: VadModel,
    config: ServerConfig | None = None,
    streams: int = SELFTEST_STREAMS,
    audio_s: float = SELFTEST_AUDIO_S,
    timeout_s: float = SELFTEST_TIMEOUT_S,
) -> float:
    """CPU seconds per second of audio that the server spends outside the model.

    ``config``: the server's settings (see :func:`probe_context` for what the
    probe replaces). Raises :class:`NetworkError` when the probe's streams fail
    or it does not finish within ``timeout_s``.
    """
    ctx = probe_context(live, vad, config, streams)
    result: dict[str, Any] = {}
    # A daemon: a probe that never finishes must not keep the process alive.
    thread = threading.Thread(
        target=_serve_probe, args=(ctx, streams, audio_s, timeout_s, result), name="host-probe", daemon=True
    )
    # The throw-away server's own news ("listening on ...") would read as the real server's.
    stream_log = logging.getLogger("spoofwatch.stream")
    level = stream_log.level
    stream_log.setLevel(max(logging.WARNING, stream_log.getEffectiveLevel()))
    try:
        thread.start()
        # The probe ends itself at ``timeout_s`` (server and clients); the margin
        # is for that ending, on a machine loaded enough to have timed out.
        thread.join(timeout_s + SELFTEST_TIMEOUT_MARGIN_S)
    finally:
        stream_log.setLevel(level)
    if thread.is_alive():
        raise NetworkError(f"the host-cost probe did not end within {timeout_s:g} s")
    ctx.sinks.close()
    if "error" in result:
        raise result["error"]
    if "cost" not in result:
        raise NetworkError("the host-cost probe ended without a result")
    cost: float = result["cost"]
    return cost


def _serve_probe(
    ctx: ServerContext, streams: int, audio_s: float, timeout_s: float, result: dict[str, Any]
) -> None:
    """The probe server's thread: serve, time this thread's CPU while the clients send."""

    async def main() -> None:
        with anyio.fail_after(timeout_s):
            await _measure(ctx, streams, audio_s, timeout_s, result)

    deadline = time.monotonic() + timeout_s
    late = NetworkError(f"the host-cost probe did not finish within {timeout_s:g} s")
    try:
        anyio.run(main)
    except BaseException as exc:  # reported in the caller's thread, as one clear error
        leaf = first_leaf(exc)
        if isinstance(leaf, TimeoutError) or time.monotonic() >= deadline:
            # Whichever side noticed first (server, clients), the deadline ended it.
            result["error"] = late
        else:
            result["error"] = NetworkError(f"the host-cost probe failed: {type(leaf).__name__}: {leaf}")
    else:
        if "error" in result and time.monotonic() >= deadline:
            # The clients' own timeout (their thread cannot be cancelled) can end their
            # streams before the server's deadline is delivered: still the deadline's doing.
            result["error"] = late


async def _measure(
    ctx: ServerContext, streams: int, audio_s: float, timeout_s: float, result: dict[str, Any]
) -> None:
    async with anyio.create_task_group() as tg:
        port = await tg.start(WebSocketServer(ctx).run)
        ingest0, audio0 = ctx.load.host.totals()
        loop0 = time.thread_time()
        # The clients in a thread of their own: their CPU is theirs, not the server's.
        closes = await anyio.to_thread.run_sync(_send_streams, port, streams, audio_s, timeout_s)
        loop1 = time.thread_time()
        ingest1, audio1 = ctx.load.host.totals()
        tg.cancel_scope.cancel()
    if any(code != CloseCode.NORMAL for code in closes) or audio1 <= audio0:
        result["error"] = NetworkError(
            f"the host-cost probe's streams did not complete: close codes {closes}"
        )
    else:
        result["cost"] = (loop1 - loop0 + ingest1 - ingest0) / (audio1 - audio0)


def _send_streams(port: int, streams: int, audio_s: float, timeout_s: float) -> list[int | None]:
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(round(audio_s * SAMPLE_RATE_HZ))).astype(np.float32)
    url = f"ws://127.0.0.1:{port}/"

    async def main() -> list[int | None]:
        codes: list[int | None] = [None] * streams

        async def one(k: int) -> None:
            codes[k] = (await send_audio(audio, url, realtime=True)).close_code

        with anyio.fail_after(timeout_s):  # the server's side gives up at the same time
            async with anyio.create_task_group() as tg:
                for k in range(streams):
                    tg.start_soon(one, k)
        return codes

    return anyio.run(main)
