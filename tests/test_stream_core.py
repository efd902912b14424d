"""Sans-I/O core: ring buffer, windower and alert policy, on plain arrays."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from spoofwatch.errors import InputError
from spoofwatch.stream.events import AlertEnd, AlertStart
from spoofwatch.stream.policy import AlertPolicy, PolicyConfig
from spoofwatch.stream.ring import RingBuffer
from spoofwatch.stream.windower import Windower


def ramp(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)


class TestRingBuffer:
    def test_wraps_around_in_order(self) -> None:
        ring = RingBuffer(10)
        out = []
        for i in range(0, 100, 7):
            ring.write(ramp(7, i))
            out.append(ring.read())
        np.testing.assert_array_equal(np.concatenate(out), ramp(105))
        assert ring.overruns == 0 and ring.lost_samples == 0

    def test_partial_reads(self) -> None:
        ring = RingBuffer(8)
        ring.write(ramp(6))
        np.testing.assert_array_equal(ring.read(4), ramp(4))
        ring.write(ramp(5, 6))
        assert ring.available == 7
        np.testing.assert_array_equal(ring.read(), ramp(7, 4))
        assert ring.read().size == 0

    def test_overrun_drops_oldest_and_counts(self) -> None:
        ring = RingBuffer(10)
        ring.write(ramp(8))
        ring.write(ramp(8, 8))  # 6 unread samples overwritten
        np.testing.assert_array_equal(ring.read(), ramp(10, 6))
        assert ring.overruns == 1 and ring.lost_samples == 6
        ring.write(ramp(25, 16))  # larger than capacity: keeps the newest 10
        np.testing.assert_array_equal(ring.read(), ramp(10, 31))
        assert ring.overruns == 2 and ring.lost_samples == 21

    def test_reset(self) -> None:
        ring = RingBuffer(4)
        ring.write(ramp(9))
        ring.reset()
        assert ring.available == 0 and ring.overruns == 0
        ring.write(ramp(3))
        np.testing.assert_array_equal(ring.read(), ramp(3))

    def test_threaded_producer_consumer_never_returns_torn_data(self) -> None:
        """Samples are a running counter: whatever the consumer gets must be a
        strictly increasing run of consecutive values, plus counted gaps."""
        ring = RingBuffer(4096)
        target = 2_000_000
        produced = [0]
        done = threading.Event()

        def produce() -> None:
            rng = np.random.default_rng(1)
            pos = 0
            while pos < target:
                n = int(rng.integers(1, 700))
                ring.write(np.arange(pos, pos + n, dtype=np.float64).astype(np.float32) % 1_000_000)
                pos += n
            produced[0] = pos
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        received = 0
        last = -1.0
        gaps = 0
        while not (done.is_set() and ring.available == 0):
            chunk = ring.read(int(np.random.default_rng(received).integers(1, 3000)))
            if chunk.size == 0:
                continue
            values = chunk.astype(np.float64)
            steps = np.diff(np.concatenate([[last], values]))
            steps[steps < 0] += 1_000_000  # the counter wraps at 1e6
            assert np.all(steps[1:] == 1), "a chunk must be contiguous"
            gaps += int(steps[0] != 1)
            received += chunk.size
            last = values[-1]
        producer.join()
        assert received + ring.lost_samples == produced[0]  # every sample read or counted lost
        assert gaps <= ring.overruns


class TestWindower:
    def test_first_window_after_warmup_then_every_hop(self) -> None:
        w = Windower(hop_samples=8000, window_samples=64600)
        assert w.push(ramp(64599)) == []
        first = w.push(ramp(1, 64599))
        assert len(first) == 1 and first[0].start_sample == 0 and first[0].end_sample == 64600
        np.testing.assert_array_equal(first[0].samples, ramp(64600))
        assert first[0].t_end == pytest.approx(4.0375)
        more = w.push(ramp(16000, 64600))
        assert [x.start_sample for x in more] == [8000, 16000]
        np.testing.assert_array_equal(more[1].samples, ramp(64600, 16000))
        assert [x.index for x in more] == [1, 2]

    @pytest.mark.parametrize("chunk", [1, 160, 320, 4096, 100_000])
    def test_chunking_does_not_change_windows(self, chunk: int) -> None:
        audio = np.random.default_rng(0).standard_normal(150_000).astype(np.float32)
        reference = Windower(8000).push(audio)
        w = Windower(8000)
        got = [x for i in range(0, audio.size, chunk) for x in w.push(audio[i : i + chunk])]
        assert [x.start_sample for x in got] == [x.start_sample for x in reference]
        for a, b in zip(got, reference, strict=True):
            np.testing.assert_array_equal(a.samples, b.samples)

    def test_short_stream_flushes_one_padded_window(self) -> None:
        w = Windower(8000)
        assert w.push(ramp(30000)) == []
        (window,) = w.flush()
        assert window.end_sample == 30000 and window.samples.shape == (64600,)
        np.testing.assert_array_equal(window.samples[30000:60000], ramp(30000))
        assert w.flush() == []

    def test_bad_hop(self) -> None:
        with pytest.raises(InputError, match="hop_samples"):
            Windower(0)


class TestAlertPolicy:
    cfg = PolicyConfig(
        enter_threshold=0.0,
        exit_threshold=2.0,
        smoothing_windows=1,
        min_alert_windows=2,
        cooldown_s=5.0,
        silence_reset_s=3.0,
    )

    def run(self, policy: AlertPolicy, scores: list[float], t0: float = 0.0) -> list[tuple[float, str]]:
        events = []
        for i, s in enumerate(scores):
            t = t0 + 0.5 * i
            events += [(t, e.type) for e in policy.update(t, s)]
        return events

    def test_minimum_duration(self) -> None:
        policy = AlertPolicy(self.cfg)
        assert self.run(policy, [1, -1, 1, -1, 1]) == []  # never two in a row
        assert self.run(policy, [-1, -1], t0=10) == [(10.5, "alert_start")]

    def test_hysteresis(self) -> None:
        policy = AlertPolicy(self.cfg)
        events = self.run(policy, [-1, -1, 1, 1.5, 0.5, 2.5])
        assert events == [(0.5, "alert_start"), (2.5, "alert_end")]  # 1 and 1.5 are inside the band

    def test_cooldown(self) -> None:
        policy = AlertPolicy(self.cfg)
        events = self.run(policy, [-1, -1, 3, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1])
        starts = [t for t, kind in events if kind == "alert_start"]
        assert starts[0] == 0.5
        assert events[1] == (1.0, "alert_end")
        assert starts[1] == pytest.approx(6.0)  # not before 1.0 + 5.0 s of cooldown

    def test_smoothing_is_a_mean_of_the_last_k(self) -> None:
        policy = AlertPolicy(
            PolicyConfig(enter_threshold=0.0, exit_threshold=1.0, smoothing_windows=3, min_alert_windows=1)
        )
        policy.update(0.0, 3.0)
        policy.update(0.5, -3.0)
        assert policy.smoothed == pytest.approx(0.0)
        events = policy.update(1.0, -1.5)
        assert policy.smoothed == pytest.approx(-0.5)
        assert isinstance(events[0], AlertStart) and events[0].smoothed == pytest.approx(-0.5)

    def test_silence_ends_alert_and_resets(self) -> None:
        policy = AlertPolicy(self.cfg)
        self.run(policy, [-1, -1])
        assert policy.active
        assert policy.no_speech(2.0) == [] and policy.no_speech(4.5) == []
        (end,) = policy.no_speech(5.0)
        assert isinstance(end, AlertEnd) and end.reason == "silence"
        assert policy.smoothed is None and not policy.active

    def test_silence_counts_from_the_last_speech(self) -> None:
        """A window is judged silent only ~3 s after speech stops: the reset
        counts from where the gate says the last speech ended, not from that
        window's end, and later speech inside gated windows moves it on."""
        policy = AlertPolicy(self.cfg)  # silence_reset_s = 3
        self.run(policy, [-1, -1])
        (end,) = policy.no_speech(5.0, silent_since=1.9)  # the first gated window: 3.1 s of silence
        assert isinstance(end, AlertEnd) and end.reason == "silence" and end.t == 5.0
        policy = AlertPolicy(self.cfg)
        self.run(policy, [-1, -1])
        assert policy.no_speech(4.0, silent_since=1.5) == []
        assert policy.no_speech(4.5, silent_since=2.5) == []  # a short burst of speech at 2.5 s
        assert policy.no_speech(5.0, silent_since=2.0) == []  # an older end changes nothing
        (end,) = policy.no_speech(5.5, silent_since=2.4)
        assert end.reason == "silence" and end.t == 5.5

    def test_finish_closes_alert(self) -> None:
        policy = AlertPolicy(self.cfg)
        self.run(policy, [-1, -1])
        (end,) = policy.finish(9.0)
        assert end.reason == "end_of_stream" and end.t == 9.0
        assert policy.finish(9.5) == []

    def test_with_band_moves_enter_and_keeps_the_width(self) -> None:
        moved = self.cfg.with_band(-1.0)
        assert (moved.enter_threshold, moved.exit_threshold) == (-1.0, 1.0)
        assert moved.smoothing_windows == self.cfg.smoothing_windows
        wider = self.cfg.with_band(0.5, width=3.0)
        assert (wider.enter_threshold, wider.exit_threshold, wider.band_width) == (0.5, 3.5, 3.0)
        with pytest.raises(InputError, match="exit_threshold >= enter_threshold"):
            self.cfg.with_band(0.0, width=-1.0)

    def test_thresholds_have_no_default_in_code(self) -> None:
        with pytest.raises(TypeError, match="enter_threshold"):
            PolicyConfig()  # type: ignore[call-arg]

    def test_invalid_config(self) -> None:
        with pytest.raises(InputError, match="exit_threshold >= enter_threshold"):
            PolicyConfig(enter_threshold=1.0, exit_threshold=0.0)
