"""The server's ingest tick (stream/server/ingest.py) with the real silero VAD and
real speech: streams cut together get exactly what each gets alone, in one
batched pass per tick; a bad chunk fails only its own stream."""

from __future__ import annotations

from typing import Any

import anyio
import numpy as np
import pytest
from test_engine import CountingVad, window_facts

from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.errors import ConfigError, InputError
from spoofwatch.stream.driver import StreamDriver
from spoofwatch.stream.engine import build_engine
from spoofwatch.stream.server.context import ServerConfig
from spoofwatch.stream.server.ingest import IngestTicker

pytestmark = pytest.mark.anyio

FRAME = 160  # 20 ms at 8 kHz: a Twilio frame


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ManualTicks:
    """The ticker's sleep, released by the test: no timer in the test's outcome."""

    def __init__(self) -> None:
        self.release = anyio.Event()

    async def sleep(self, _seconds: float) -> None:
        await self.release.wait()
        self.release = anyio.Event()


def drivers(vad: Any, n: int) -> list[StreamDriver]:
    live = load_calibration(model="aasist-l").live
    return [StreamDriver(build_engine(live, vad), 8000) for _ in range(n)]


async def test_one_tick_cuts_every_waiting_stream_as_each_alone(spoof_stream: np.ndarray, vad: Any) -> None:
    audio = spoof_stream[::2].copy()  # 8 kHz stand-in: the driver resamples to 16 kHz
    streams = [audio, audio[::-1].copy(), np.roll(audio, 4000)]  # one length: every tick cuts all
    # Each stream alone, 20 ms at a time.
    alone = []
    for driver, a in zip(drivers(vad, len(streams)), streams, strict=True):
        chunks = [a[p : p + FRAME * 5] for p in range(0, a.size - FRAME * 5, FRAME * 5)]
        alone.append(window_facts([w for c in chunks for w in driver.cut(c)]))
    counting = CountingVad(vad)
    together_drivers = drivers(counting, len(streams))
    ticks = ManualTicks()
    ticker = IngestTicker(0.1, sleep=ticks.sleep)
    together: list[list[Any]] = [[] for _ in streams]

    async def stream(i: int) -> None:
        a = streams[i]
        for p in range(0, a.size - FRAME * 5, FRAME * 5):
            together[i] += await ticker.cut(together_drivers[i], a[p : p + FRAME * 5])

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.serve)
        async with anyio.create_task_group() as clients:
            for i in range(len(streams)):
                clients.start_soon(stream, i)
            while True:
                await anyio.wait_all_tasks_blocked()
                if not ticker._waiting:
                    break
                assert len(ticker._waiting) == len(streams)  # every stream waits for the tick
                ticks.release.set()
        tg.cancel_scope.cancel()
    assert [window_facts(t) for t in together] == alone
    assert ticker.requests == len(streams) * ticker.ticks
    assert max(counting.batch_sizes) == len(streams) and 1 not in counting.batch_sizes


async def test_a_bad_chunk_fails_its_own_stream_only(vad: Any) -> None:
    good, bad = drivers(vad, 2)
    ticks = ManualTicks()
    ticker = IngestTicker(0.1, sleep=ticks.sleep)
    outcome: dict[str, Any] = {}

    async def cut(name: str, driver: StreamDriver, audio: np.ndarray) -> None:
        try:
            outcome[name] = await ticker.cut(driver, audio)
        except InputError as exc:
            outcome[name] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.serve)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(cut, "good", good, np.full(8000, 0.1, np.float32))
        tg.start_soon(cut, "bad", bad, np.where(np.arange(8000) == 4000, np.inf, 0.1).astype(np.float32))
        await anyio.wait_all_tasks_blocked()
        ticks.release.set()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert outcome["good"] == [] and good.engine.windower.total_samples > 0
    assert isinstance(outcome["bad"], InputError) and "finite" in str(outcome["bad"])
    assert bad.engine.windower.total_samples == 0


async def test_an_abandoned_request_is_not_cut_and_a_stopped_ticker_cuts_what_waits(vad: Any) -> None:
    first, second = drivers(vad, 2)
    ticks = ManualTicks()
    ticker = IngestTicker(0.1, sleep=ticks.sleep)
    got: list[Any] = []

    async def waiter() -> None:
        got.append(await ticker.cut(second, np.full(8000, 0.1, np.float32)))

    async with anyio.create_task_group() as outer, anyio.create_task_group() as tg:
        tg.start_soon(ticker.serve)
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            tg.start_soon(_cancel_soon, scope)
            await ticker.cut(first, np.full(8000, 0.1, np.float32))
        assert scope.cancelled_caught
        ticks.release.set()  # the tick runs: the abandoned request must not be cut
        await anyio.wait_all_tasks_blocked()
        assert first.engine.windower.total_samples == 0 and ticker.ticks == 0
        outer.start_soon(waiter)  # outside the ticker's task group: it must be woken, not cancelled
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()  # the ticker stops with a request waiting: it cuts it on the way out
    assert not ticker.running
    assert got == [[]] and second.engine.windower.total_samples > 0


async def test_an_unexpected_error_fails_its_stream_and_the_ticker_goes_on(
    vad: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, bad = drivers(vad, 2)

    def broken(audio: np.ndarray) -> np.ndarray:
        raise ValueError("resampler broke")

    monkeypatch.setattr(bad, "resample", broken)
    ticks = ManualTicks()
    ticker = IngestTicker(0.1, sleep=ticks.sleep)
    outcome: dict[str, Any] = {}

    async def cut(name: str, driver: StreamDriver) -> None:
        try:
            outcome[name] = await ticker.cut(driver, np.full(8000, 0.1, np.float32))
        except ValueError as exc:
            outcome[name] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.serve)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(cut, "good", good)
        tg.start_soon(cut, "bad", bad)
        await anyio.wait_all_tasks_blocked()
        ticks.release.set()
        await anyio.wait_all_tasks_blocked()
        assert ticker.running  # the next tick still comes
        tg.start_soon(cut, "again", good)
        await anyio.wait_all_tasks_blocked()
        ticks.release.set()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert outcome["good"] == [] and outcome["again"] == []
    assert str(outcome["bad"]) == "resampler broke"
    assert good.engine.windower.total_samples > 30_000  # both good cuts (less the resampler delay)


async def test_windows_cut_for_a_stream_cancelled_in_the_same_pass_are_dropped(vad: Any) -> None:
    """Cancelled, then cut in the same loop pass (before the waiter could
    withdraw): its windows count as dropped, so the stream's summary adds up."""
    (driver,) = drivers(vad, 1)
    ticker = IngestTicker(0.1, sleep=ManualTicks().sleep)  # never ticks by itself

    async def waiter() -> None:
        await ticker.cut(driver, np.full(5 * 8000, 0.1, np.float32))  # 5 s: windows

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.serve)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as inner:
                inner.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()  # the stream is cancelled...
                batch, ticker._waiting = ticker._waiting, []
                ticker.cut_now(batch)  # ...and the tick cuts its audio before it could withdraw
        tg.cancel_scope.cancel()
    assert driver.engine.windows == driver.engine.dropped_windows >= 1


async def _cancel_soon(scope: anyio.CancelScope) -> None:
    await anyio.wait_all_tasks_blocked()
    scope.cancel()


@pytest.mark.parametrize("tick_s", [0.0, -1.0, 5.0, float("nan")])
def test_bad_ticks_are_refused(tick_s: float) -> None:
    with pytest.raises(ConfigError, match="ingest_tick_s"):
        ServerConfig(ingest_tick_s=tick_s).validate()
