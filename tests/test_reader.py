"""A connection's reads (stream/server/drain.py, ``MessageReader``): the idle
timeout counts only time spent waiting for a message, and a shutdown drain
ends a pending read at once but lets a message being handled finish.

The connection is a memory object stream standing in for ``websockets``'
``recv`` (the server tests run the real thing on loopback); every outcome
here is decided by the order of events, never by how fast the machine is."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from spoofwatch.errors import IdleTimeout
from spoofwatch.stream.server.connection import end_reason
from spoofwatch.stream.server.drain import STALL_GRACE_S, Drain, Handled, MessageReader

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeConnection:
    def __init__(self) -> None:
        self.send, self._receive = anyio.create_memory_object_stream[str](10)
        self.reads = 0

    async def recv(self) -> str:
        self.reads += 1
        try:  # like websockets: a queued message returns without yielding to the loop
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            return await self._receive.receive()

    def close(self) -> None:
        self.send.close()
        self._receive.close()


@pytest.fixture
def connections() -> Any:
    made: list[FakeConnection] = []

    def make() -> FakeConnection:
        made.append(FakeConnection())
        return made[-1]

    yield make
    for ws in made:
        ws.close()


class StoppedClock:
    """The event loop's clock as the reader sees it, moved only by the test:
    ``jump`` is the loop having been stopped (SIGSTOP, a VM freeze) for that long."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        woken = anyio.Event()
        self._sleepers.append((self.now + delay, woken))
        await woken.wait()

    async def jump(self, seconds: float) -> None:
        """Advance the clock and let every task that is due run until all block again."""
        self.now += seconds
        for due, woken in [s for s in self._sleepers if s[0] <= self.now]:
            self._sleepers.remove((due, woken))
            woken.set()
        await anyio.wait_all_tasks_blocked()


@pytest.fixture
def stopped_clock(monkeypatch: pytest.MonkeyPatch) -> StoppedClock:
    clock = StoppedClock()
    monkeypatch.setattr(anyio, "current_time", clock.time)
    monkeypatch.setattr(anyio, "sleep", clock.sleep)
    return clock


async def test_time_spent_handling_is_not_idle_time(connections: Any) -> None:
    ws, drain = connections(), Drain()
    reader = MessageReader(ws, drain, idle_timeout_s=0.05)
    handled: list[str] = []

    async def handle(message: str) -> Handled:
        await anyio.sleep(0.3)  # six idle timeouts while handling: not idle
        handled.append(message)
        return Handled.ACTIVE if message else Handled.NOTHING

    ws.send.send_nowait("first")
    with pytest.raises(IdleTimeout, match=r"no message for 0\.05 s"):
        await reader.run(handle)  # then nothing more comes: the pending read times out
    assert handled == ["first"] and ws.reads == 2 and reader.idle


async def test_only_the_readers_own_timeout_is_idleness() -> None:
    """The idle timeout was a builtin TimeoutError, and any other one (a
    socket's ETIMEDOUT) ended its stream as "idle", closed 1001."""
    assert end_reason(IdleTimeout("no message for 30 s")) == "idle"
    assert end_reason(TimeoutError(110, "Connection timed out")) == "error"


async def test_a_drain_ends_a_pending_read_and_lets_a_handled_message_finish(connections: Any) -> None:
    ws, drain = connections(), Drain()
    reader = MessageReader(ws, drain, idle_timeout_s=3600)
    release = anyio.Event()
    handled: list[str] = []
    finished: list[bool] = []

    async def handle(message: str) -> Handled:
        if message == "slow":
            await release.wait()
        handled.append(message)
        return Handled.ACTIVE if message else Handled.NOTHING

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_then_mark, reader, handle, finished)
        ws.send.send_nowait("fast")
        ws.send.send_nowait("slow")
        ws.send.send_nowait("never read")
        await anyio.wait_all_tasks_blocked()
        assert handled == ["fast"]  # "slow" is being handled
        drain.begin()
        release.set()
        await anyio.wait_all_tasks_blocked()
    assert handled == ["fast", "slow"] and finished == [True] and not reader.idle
    assert ws.reads == 2  # the drain began while "slow" was handled: no further read

    # A read pending when the drain begins ends at once.
    ws2 = connections()
    reader2 = MessageReader(ws2, drain2 := Drain(), idle_timeout_s=3600)
    ended: list[bool] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_then_mark, reader2, _never_called, ended)
        await anyio.wait_all_tasks_blocked()
        assert ws2.reads == 1 and not ended
        drain2.begin()
        await anyio.wait_all_tasks_blocked()
        assert ended == [True]  # at once: nothing else happened in between
    assert not reader2.idle


async def test_a_message_arriving_as_the_drain_begins_is_still_handled(connections: Any) -> None:
    """The read completes and the drain cancels the reader's scope in the same
    loop pass: the message must still be handled to the end, not cancelled at
    its handler's first await."""
    ws, drain = connections(), Drain()
    reader = MessageReader(ws, drain, idle_timeout_s=3600)
    handle = CheckpointedHandler()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader.run, handle)
        await anyio.wait_all_tasks_blocked()
        ws.send.send_nowait("audio")  # completes the pending read...
        drain.begin()  # ...and the drain begins before the reader resumes
    assert handle.handled == ["audio"] and ws.reads == 1 and not reader.idle


async def test_a_message_arriving_as_the_idle_watch_fires_is_handled_and_reading_goes_on(
    connections: Any,
) -> None:
    """The watch's verdict and a message land in the same loop pass: the
    message is handled, the connection was not idle, and the reader reads on
    under a new scope (here until a drain ends it)."""
    ws, drain = connections(), Drain()
    reader = MessageReader(ws, drain, idle_timeout_s=3600)  # the test gives the verdict itself
    handle = CheckpointedHandler()
    ended: list[bool] = []

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_then_mark, reader, handle, ended)
        await anyio.wait_all_tasks_blocked()
        ws.send.send_nowait("late")  # completes the pending read...
        reader.expire()  # ...and the watch's verdict comes before the reader resumes
        await anyio.wait_all_tasks_blocked()
        assert handle.handled == ["late"] and not reader.idle
        assert ws.reads == 2 and not ended  # reading on
        ws.send.send_nowait("next")
        await anyio.wait_all_tasks_blocked()
        assert handle.handled == ["late", "next"]  # under the new scope
        drain.begin()
    assert ended == [True] and ws.reads == 3 and not reader.idle


class CheckpointedHandler:
    """Records each message after a checkpoint: where a cancelled scope would strike."""

    def __init__(self) -> None:
        self.handled: list[str] = []

    async def __call__(self, message: str) -> Handled:
        await anyio.lowlevel.checkpoint()
        self.handled.append(message)
        return Handled.ACTIVE if message else Handled.NOTHING


async def run_then_mark(reader: MessageReader, handle: Any, ended: list[bool]) -> None:
    """``reader.run(handle)``, then a mark that it returned."""
    await reader.run(handle)
    ended.append(True)


async def _never_called(message: Any) -> Handled:
    raise AssertionError(f"no message was sent, got {message!r}")


async def test_empty_messages_do_not_keep_a_connection_alive(
    connections: Any, stopped_clock: StoppedClock
) -> None:
    """A client that sends only empty frames, however often, is idle: each is
    handled, but the timeout runs from the last message that carried
    something. (The loop never waits here: every read finds an empty frame
    queued, so only the reader itself can give the verdict.)

    The reader's clock is the stopped one, moved only by the frames (one frame
    every 0.125 s, a binary fraction, so the sums are exact; the watch's sleep
    never ends): the verdict
    comes after exactly four empty frames, however the machine schedules
    this process. Real sleeps here raced the timeout on a loaded machine."""
    ws, drain = connections(), Drain()
    reader = MessageReader(ws, drain, idle_timeout_s=0.5)
    handled: list[str] = []

    async def handle(message: str) -> Handled:
        handled.append(message)
        stopped_clock.now += 0.125  # the frame took its time to arrive
        assert len(handled) < 50, "empty frames kept the connection alive"
        await anyio.lowlevel.checkpoint()
        ws.send.send_nowait("")  # the next empty frame is already there
        return Handled.ACTIVE if message else Handled.NOTHING

    ws.send.send_nowait("audio")
    with anyio.fail_after(30), pytest.raises(IdleTimeout, match=r"no message for 0\.5 s"):
        await reader.run(handle)
    assert handled == ["audio", "", "", "", ""]  # the timer ran from "audio" (t + 0.125) to t + 0.625
    assert reader.idle


async def test_after_a_stalled_loop_a_message_that_arrived_meanwhile_is_read_before_the_verdict(
    connections: Any, stopped_clock: StoppedClock
) -> None:
    """The process was stopped for three idle timeouts while its client kept
    sending. On resume the watch's overdue timer can run before the socket is
    read: it must give the reader a moment (``STALL_GRACE_S``) to read what
    arrived, not close a sending client as idle."""
    ws, drain = connections(), Drain()
    reader = MessageReader(ws, drain, idle_timeout_s=1.0)
    handle = CheckpointedHandler()
    ended: list[bool] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_then_mark, reader, handle, ended)
        ws.send.send_nowait("audio")
        await anyio.wait_all_tasks_blocked()  # handled; a read pending, the watch asleep until t + 1
        await stopped_clock.jump(3.0)  # the loop resumes; the watch runs first...
        assert not reader.idle and not ended
        ws.send.send_nowait("sent while stopped")  # ...then the socket is read
        await anyio.wait_all_tasks_blocked()
        await stopped_clock.jump(STALL_GRACE_S)  # the watch judges again: a read began just now
        assert handle.handled == ["audio", "sent while stopped"]
        assert not reader.idle and not ended
        drain.begin()
    assert ended == [True] and not reader.idle


async def test_after_a_stalled_loop_a_client_that_sent_nothing_is_still_idle(
    connections: Any, stopped_clock: StoppedClock
) -> None:
    ws, drain = connections(), Drain()
    reader = MessageReader(ws, drain, idle_timeout_s=1.0)
    handle = CheckpointedHandler()
    errors: list[BaseException] = []

    async def run() -> None:
        try:
            await reader.run(handle)
        except IdleTimeout as e:
            errors.append(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        ws.send.send_nowait("audio")
        await anyio.wait_all_tasks_blocked()
        await stopped_clock.jump(3.0)
        assert not reader.idle and not errors  # the grace first
        await stopped_clock.jump(STALL_GRACE_S)  # nothing arrived: idle after all
    assert [str(e) for e in errors] == ["no message for 1 s"]
    assert handle.handled == ["audio"] and reader.idle
