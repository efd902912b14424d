"""The server's keepalive owes a pong only for time spent waiting on the client
(stream/server/keepalive.py); the server-level behaviour is in test_serving.py
(an upload held back is not dropped) and test_server.py (a silent client is)."""

from __future__ import annotations

import asyncio
import logging

import anyio
import pytest

from spoofwatch.stream.server.keepalive import KEEPALIVE_REASON, Keepalive, PongClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # websockets' futures


def test_pong_clock_counts_overlapping_waits_once() -> None:
    clock = PongClock()
    assert clock.waited_s(5.0) == 0.0
    clock.begin_wait(10.0)  # a read pending
    clock.begin_wait(11.0)  # and a send
    assert clock.waited_s(12.0) == 2.0
    clock.end_wait(13.0)
    clock.end_wait(14.0)
    assert clock.waited_s(100.0) == 4.0  # nothing pending since 14 s
    clock.begin_wait(200.0)
    assert clock.waited_s(201.5) == 5.5
    clock.end_wait(202.0)
    with pytest.raises(RuntimeError):
        clock.end_wait(203.0)


class FakeConnection:
    """What the keepalive uses of a websockets connection: ``ping`` (its pong a
    future the test answers, or a ping that never gets out), ``close``, and the
    transport's ``abort``."""

    def __init__(self, answer: bool = False, ping_blocks: bool = False, close_blocks: bool = False) -> None:
        self.answer, self.ping_blocks, self.close_blocks = answer, ping_blocks, close_blocks
        self.pings = 0
        self.closed: tuple[int, str] | None = None
        self.aborted = False
        self.transport = self

    async def ping(self) -> asyncio.Future[float]:
        if self.ping_blocks:
            await anyio.sleep_forever()
        self.pings += 1
        pong: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if self.answer:
            pong.set_result(0.0)
        return pong

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        if self.close_blocks:
            await anyio.sleep_forever()

    def abort(self) -> None:
        self.aborted = True


async def pings_until(ws: FakeConnection, keepalive: Keepalive, count: int) -> None:
    """Run the keepalive until it has sent ``count`` pings (or ended)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(keepalive.run)
        with anyio.fail_after(60):  # a guard against hanging, not a speed bound
            while ws.pings < count and not keepalive.timed_out:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()


async def test_unanswered_pings_are_not_owed_while_the_server_waits_on_nothing() -> None:
    """The server is not waiting on the client (it is busy, the client held
    back): 40 pings, many timeouts' worth, go unanswered and nothing is dropped."""
    ws = FakeConnection()
    keepalive = Keepalive(ws, interval_s=0.01, timeout_s=0.03, close_timeout_s=1.0)
    await pings_until(ws, keepalive, 40)
    assert ws.pings == 40 and not keepalive.timed_out and ws.closed is None


async def test_answered_pings_keep_a_waiting_connection_open() -> None:
    ws = FakeConnection(answer=True)
    keepalive = Keepalive(ws, interval_s=0.01, timeout_s=0.03, close_timeout_s=1.0)
    with keepalive.waiting():  # a read pending throughout
        await pings_until(ws, keepalive, 40)
    assert not keepalive.timed_out and ws.closed is None


async def test_a_pong_owed_for_the_timeout_drops_the_connection_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="spoofwatch")
    ws = FakeConnection()
    keepalive = Keepalive(ws, interval_s=0.01, timeout_s=0.03, close_timeout_s=1.0, peer="10.0.0.7:4242")
    with keepalive.waiting():  # a read pending: whatever the client sent has been read
        with anyio.fail_after(60):
            await keepalive.run()  # returns once it has dropped the connection
    assert keepalive.timed_out and ws.closed == (1011, KEEPALIVE_REASON) and not ws.aborted
    # Logged by the keepalive itself: a drop after the client's stop raises nothing to log it.
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 10.0.0.7:4242: no pong within 0.03 s (keepalive ping timeout)"
    ]


async def test_a_client_that_reads_nothing_is_cut_when_even_the_close_cannot_get_out() -> None:
    """Its socket is full: the ping never gets out, so the ping's own wait is
    owed; the close frame cannot get out either, so the connection is cut
    after the close timeout."""
    ws = FakeConnection(ping_blocks=True, close_blocks=True)
    keepalive = Keepalive(ws, interval_s=0.01, timeout_s=0.03, close_timeout_s=0.05)
    with anyio.fail_after(60):
        await keepalive.run()
    assert keepalive.timed_out and ws.closed == (1011, KEEPALIVE_REASON) and ws.aborted


async def test_a_closed_connection_ends_the_keepalive_quietly() -> None:
    from websockets.exceptions import ConnectionClosedOK
    from websockets.frames import Close

    class Closed(FakeConnection):
        async def ping(self) -> asyncio.Future[float]:
            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), rcvd_then_sent=True)

    ws = Closed()
    keepalive = Keepalive(ws, interval_s=0.01, timeout_s=0.03, close_timeout_s=1.0)
    with anyio.fail_after(60):
        await keepalive.run()
    assert not keepalive.timed_out and ws.closed is None


def test_keepalive_counts_pings_and_drops() -> None:
    """The metric's outcomes are the ones /metrics declares at 0."""
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    counter = Counter("k", "k", ["outcome"], registry=registry)
    ws = FakeConnection()
    keepalive = Keepalive(ws, interval_s=0.01, timeout_s=0.03, close_timeout_s=1.0, counter=counter)

    async def main() -> None:
        with keepalive.waiting():
            await keepalive.run()

    anyio.run(main)
    assert registry.get_sample_value("k_total", {"outcome": "dropped"}) == 1
    assert registry.get_sample_value("k_total", {"outcome": "sent"}) == ws.pings >= 1
