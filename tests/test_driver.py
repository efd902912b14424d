"""The engine, the stream driver and the server session with fakes: a fake
scorer and VAD (tests/helpers.py), a fake clock, no model and no sockets."""

from __future__ import annotations

from typing import Any

import anyio
import numpy as np
import pytest
from helpers import FakeScorer, fake_engine, offset_audio

from spoofwatch.audio import resample
from spoofwatch.errors import InputError
from spoofwatch.stream.driver import StreamDriver
from spoofwatch.stream.events import (
    DISCONNECT,
    END_OF_STREAM,
    PROTOCOL_ERROR,
    AlertEnd,
    AlertStart,
    Event,
    ScoreEvent,
    SummaryEvent,
)
from spoofwatch.stream.server.batcher import BatchScorer
from spoofwatch.stream.server.session import INBOX_MAX_S, StreamSession

# FakeScorer scores offset_audio(+0.05) about +5 (genuine) and offset_audio(-0.05) about -5 (spoof).
GENUINE, SPOOF = 0.05, -0.05


def genuine_then_spoof(genuine_s: float = 8.0, spoof_s: float = 8.0) -> np.ndarray:
    return np.concatenate([offset_audio(genuine_s, GENUINE, 1), offset_audio(spoof_s, SPOOF, 2)])


def chunks(audio: np.ndarray, size: int) -> list[np.ndarray]:
    return [audio[i : i + size] for i in range(0, audio.size, size)]


def run(driver: StreamDriver, audio: np.ndarray, size: int = 320) -> list[Event]:
    scorer = FakeScorer()
    events = [e for c in chunks(audio, size) for e in driver.feed(c, scorer)]
    return [*events, *driver.close(scorer)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestEngineWithFakes:
    def test_an_interrupt_while_scoring_loses_no_window_and_no_event(self) -> None:
        """Ctrl-C lands in a model call (where nearly all the time goes) in the
        middle of a feed that had already resolved windows: those windows'
        events still come out (ahead of the summary), the interrupted window
        counts as dropped, and the summary agrees with the events."""

        class InterruptedOnce(FakeScorer):
            def scores(self, windows: Any) -> Any:
                out = super().scores(windows)
                if self.calls == 10:
                    raise KeyboardInterrupt
                return out

        driver, scorer = StreamDriver(fake_engine()), InterruptedOnce()
        with pytest.raises(KeyboardInterrupt):
            driver.feed(genuine_then_spoof(), scorer)  # one feed: 24 windows due at once
        events = driver.close(scorer, "shutdown")
        scores = [e for e in events if isinstance(e, ScoreEvent)]
        summary = events[-1]
        assert isinstance(summary, SummaryEvent) and summary.windows == 24
        assert len(scores) == 23 and summary.dropped_windows == 1  # the 10th window
        assert [e.t_end for e in scores] == sorted(e.t_end for e in scores)
        assert len(scores) + summary.dropped_windows == summary.windows

    def test_alert_after_the_switch_and_one_summary(self) -> None:
        events = run(StreamDriver(fake_engine()), genuine_then_spoof())
        scores = [e for e in events if isinstance(e, ScoreEvent)]
        assert len(scores) == 24  # (16 s - 4.0375 s) / 0.5 s + 1
        assert all(e.speech for e in scores)
        starts = [e for e in events if isinstance(e, AlertStart)]
        assert len(starts) == 1 and starts[0].t > 8.0
        assert all(e.smoothed is not None and e.smoothed > 1.764 for e in scores if e.t_end <= 8.0)
        (end,) = [e for e in events if isinstance(e, AlertEnd)]
        assert end.reason == END_OF_STREAM and end.t == pytest.approx(16.0)
        summaries = [e for e in events if isinstance(e, SummaryEvent)]
        assert summaries == [events[-1]]
        assert summaries[0].to_json() == {
            "type": "summary",
            "duration_s": 16.0,
            "windows": 24,
            "scored_windows": 24,
            "alerts": 1,
            "dropped_windows": 0,
            "reason": "end_of_stream",
        }

    def test_silence_is_gated_and_never_scored(self) -> None:
        scorer = FakeScorer()
        driver = StreamDriver(fake_engine())
        events = driver.feed(np.zeros(8 * 16000, np.float32), scorer) + driver.close(scorer)
        assert scorer.calls == 0
        assert all(e.score is None for e in events if isinstance(e, ScoreEvent))
        assert events[-1] == SummaryEvent(8.0, 8, 0, 0, 0)

    def test_chunking_never_changes_events(self) -> None:
        audio = genuine_then_spoof(6.0, 6.0)
        reference = [e.to_json() for e in run(StreamDriver(fake_engine()), audio, audio.size)]
        for size in (1000, 320, 7777):
            assert [e.to_json() for e in run(StreamDriver(fake_engine()), audio, size)] == reference

    def test_drop_uses_its_window(self) -> None:
        engine = fake_engine()
        (first,) = engine.push(offset_audio(4.0375, GENUINE))
        engine.drop(first)
        assert engine.dropped_windows == 1
        # Stream time moved to the dropped window's end: an alert closed now ends there, not at 0.
        assert engine.finish()[-1] == SummaryEvent(4.0375, 1, 0, 0, 1)
        other = fake_engine()
        with pytest.raises(InputError, match="not cut by this engine"):
            other.drop(first)


class TestDriver:
    def test_resamples_and_flushes_the_resampler_at_the_end(self) -> None:
        audio8k = resample(genuine_then_spoof(3.0, 0.0), 16000, 8000)
        driver = StreamDriver(fake_engine(), 8000)
        events = run(driver, audio8k, 160)
        assert driver.received_s == pytest.approx(3.0)
        # Every input sample reached the engine: the resampler's tail was flushed.
        assert events[-1].duration_s == pytest.approx(3.0, abs=1e-3)  # type: ignore[attr-defined]
        assert events[-1].windows == 1  # type: ignore[attr-defined]  # a short stream: one padded window

    @pytest.mark.parametrize("rate_hz", [16000, 8000, 48000])
    def test_every_rate_checks_its_input_before_resampling(self, rate_hz: int) -> None:
        """At 16 kHz every bad chunk was refused; at other rates the resampler
        took int16, float64 and huge samples (cast and clipped) and a 2-D array
        gave soxr's bare error. The rule is now the same at every rate."""
        driver = StreamDriver(fake_engine(), rate_hz)
        good = np.full(rate_hz // 10, 0.1, np.float32)
        bad = {
            "int16": good.astype(np.int16),
            "float64": good.astype(np.float64),
            "2-D": np.stack([good, good]),
            "huge": good * 1e6,
            "NaN": np.full(8, np.nan, np.float32),
        }
        for name, chunk in bad.items():
            with pytest.raises(
                InputError,
                match=rf"expected a 1-D float32 numpy chunk at {rate_hz} Hz|"
                r"within ±100|NaN",
            ):
                driver.ingest(chunk)
            assert driver.received_samples == 0, name  # nothing counted, nothing queued
        driver.ingest(good)
        assert driver.received_samples == good.size

    def test_a_finished_stream_takes_no_more_input_and_reasons_are_checked(self) -> None:
        scorer = FakeScorer()
        driver = StreamDriver(fake_engine())
        driver.feed(genuine_then_spoof(), scorer)
        summary = driver.close(scorer)[-1]
        with pytest.raises(InputError, match="this stream has ended"):
            driver.feed(genuine_then_spoof(1.0, 0.0), scorer)  # it returned events after the summary
        assert driver.engine.summary() == summary  # the counters did not move
        with pytest.raises(InputError, match="expected an end reason in"):
            StreamDriver(fake_engine()).abort("bogus reason")
        for rate in (1, 10**9, 8000.5, True):
            with pytest.raises(InputError):
                StreamDriver(fake_engine(), rate)  # type: ignore[arg-type]

    def test_exactly_one_summary_however_it_ends(self) -> None:
        scorer = FakeScorer()
        driver = StreamDriver(fake_engine())
        driver.feed(genuine_then_spoof(), scorer)
        closing = driver.close(scorer)
        assert sum(isinstance(e, SummaryEvent) for e in closing) == 1
        assert driver.close(scorer) == [] and driver.abort(DISCONNECT) == [] and driver.finish() == []

    def test_abort_closes_the_alert_with_its_reason(self) -> None:
        scorer = FakeScorer()
        driver = StreamDriver(fake_engine())
        events = driver.feed(genuine_then_spoof(), scorer)
        assert any(isinstance(e, AlertStart) for e in events)
        driver.enqueue(driver.cut(offset_audio(1.0, SPOOF)))  # two windows cut, never scored
        end, summary = driver.abort(PROTOCOL_ERROR)
        assert isinstance(end, AlertEnd) and end.reason == PROTOCOL_ERROR and end.t == pytest.approx(17.0)
        assert isinstance(summary, SummaryEvent) and summary.dropped_windows == 2
        assert summary.windows == summary.scored_windows + summary.dropped_windows

    def test_live_stream_scores_its_freshest_window(self) -> None:
        clock = FakeClock()
        driver = StreamDriver(fake_engine(), drop_stale=True, clock=clock)
        for second in range(4):  # real time: each second of audio arrives after that second
            clock.now += 1.0
            driver.ingest(offset_audio(1.0, GENUINE, second))
        clock.now += 2.5  # 6.04 s of audio 5.5 s after the first second: within the slack, still live
        driver.ingest(offset_audio(2.0375, GENUINE))  # five windows, all waiting
        assert driver.queued == 4 and not driver.upload  # at most max_pending_windows: the oldest was dropped
        fresh = driver.next_window()
        assert fresh is not None and fresh.window.index == 4
        assert driver.next_window() is None
        assert driver.engine.dropped_windows == 4
        assert not driver.backlogged()

    def test_incremental_stream_scores_every_window_within_its_lag_budget(self) -> None:
        # Scored incrementally, a skipped window saves nothing (the scorer steps
        # through it anyway): a live stream with up to max_lag_s of windows
        # waiting scores every one of them, in order.
        driver = StreamDriver(fake_engine(), drop_stale=True, incremental=True)  # no clock: live
        assert driver.in_order_windows == 16  # 8 s at a 0.5 s hop
        driver.ingest(offset_audio(11.5375, GENUINE))  # 16 windows waiting
        assert driver.queued == 16
        assert [driver.next_window().window.index for _ in range(16)] == list(range(16))  # type: ignore[union-attr]
        assert driver.engine.dropped_windows == 0

    def test_incremental_stream_beyond_its_lag_budget_jumps_to_its_freshest_window(self) -> None:
        driver = StreamDriver(fake_engine(), drop_stale=True, incremental=True)
        driver.ingest(offset_audio(4.0375, GENUINE))  # 1 window
        driver.ingest(offset_audio(9.0, GENUINE))  # 18 more: 19, the queue holds 16 + 1
        assert driver.queued == 17 and driver.engine.dropped_windows == 2
        fresh = driver.next_window()  # more than 16 waiting: a score that late helps nobody
        assert fresh is not None and fresh.window.index == 18
        assert driver.next_window() is None and driver.engine.dropped_windows == 18

    def test_upload_ahead_of_real_time_is_never_dropped_but_backlogged(self) -> None:
        clock = FakeClock()
        driver = StreamDriver(fake_engine(), drop_stale=True, clock=clock)
        driver.ingest(offset_audio(8.0, GENUINE))  # 8 s of audio at t = 0: far ahead of the clock
        assert driver.queued == 8 and driver.backlogged()
        assert [driver.next_window().window.index for _ in range(8)] == list(range(8))  # type: ignore[union-attr]
        assert driver.engine.dropped_windows == 0
        clock.now += 60.0  # scoring was slow: the clock overtook the audio; still an upload
        driver.ingest(offset_audio(2.0, GENUINE))
        assert [driver.next_window().window.index for _ in range(4)] == [8, 9, 10, 11]  # type: ignore[union-attr]
        assert driver.engine.dropped_windows == 0 and driver.upload

    def test_the_final_flush_is_never_skipped(self) -> None:
        driver = StreamDriver(fake_engine(), drop_stale=True)  # no clock: always live (the microphone)
        driver.ingest(offset_audio(5.0, GENUINE))
        driver.ingest(np.zeros(0, np.float32), last=True)
        assert [driver.next_window().window.index for _ in range(2)] == [0, 1]  # type: ignore[union-attr]
        assert driver.next_window() is None

    def test_bad_hop_is_refused(self) -> None:
        with pytest.raises(InputError, match="hop_s: expected a value in"):
            fake_engine(hop_s=0.00001)


class TestSessionWithoutSockets:
    """The server session with a real BatchScorer around the fake scorer."""

    @staticmethod
    async def _run(
        audio: np.ndarray,
        abort_after: int | None = None,
        message_samples: int = 640,
        cuts: list[int] | None = None,
    ) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []

        async def emit(event: dict[str, Any]) -> None:
            got.append(event)

        batcher = BatchScorer(FakeScorer())
        driver = StreamDriver(fake_engine())
        if cuts is not None:  # the audio of each cut (resampling, VAD, windows at once)
            cut = driver.cut

            def spy(chunk: np.ndarray, last: bool = False) -> Any:
                cuts.append(chunk.shape[0])
                return cut(chunk, last)

            driver.cut = spy  # type: ignore[method-assign]
        session = StreamSession(driver, batcher, emit, tags={"stream_id": "t"})
        async with anyio.create_task_group() as outer:
            outer.start_soon(batcher.serve)
            if abort_after is None:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(session.serve)
                    for c in chunks(audio, message_samples):
                        await session.push(c)
                    session.close_input()
                await session.finish()
            else:
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(session.serve)
                        for c in chunks(audio, 640):
                            await session.push(c)
                        while len([e for e in got if e["type"] == "score"]) < abort_after:
                            await anyio.wait_all_tasks_blocked()
                        scope.cancel()
                await session.abort(DISCONNECT)
            batcher.close()
        return got

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_ends_with_the_same_events_as_the_inline_driver(self, anyio_backend: str) -> None:
        audio = genuine_then_spoof()
        expected = [{**e.to_json(), "stream_id": "t"} for e in run(StreamDriver(fake_engine()), audio)]
        assert await self._run(audio) == expected

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_a_huge_message_is_cut_a_few_seconds_at_a_time(self, anyio_backend: str) -> None:
        """One message of 16 s (a client may send 1 MiB at once, and many): the
        inbox takes it in pieces of INBOX_MAX_S, so no cut makes more than a few
        seconds' windows at once (a 256-message inbox of such messages once cut
        hours of audio into 7 GB of windows), and the events are those of small
        messages."""
        audio = genuine_then_spoof()
        cuts: list[int] = []
        got = await self._run(audio, message_samples=audio.size, cuts=cuts)
        assert got == await self._run(audio)
        assert sum(cuts) == audio.size and max(cuts) <= INBOX_MAX_S * 16_000 < audio.size

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_abort_mid_alert_sends_alert_end_and_summary(self, anyio_backend: str) -> None:
        events = await self._run(genuine_then_spoof(), abort_after=20)
        assert [e["type"] for e in events].count("alert_start") == 1
        assert events[-2]["type"] == "alert_end" and events[-2]["reason"] == DISCONNECT
        assert events[-1]["type"] == "summary" and events[-1]["stream_id"] == "t"
        assert [e["type"] for e in events].count("summary") == 1
