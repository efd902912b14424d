"""Batch buckets (model/shapes.py): on CUDA every session sees one batch shape.

CUDA is not needed to test the mechanism: bucketing is forced on the CPU
provider, and every session is wrapped in a spy that records the number of
rows of each call. The claims tested: each bucket's session only ever sees
its own batch size, whatever sizes the callers send; sessions open at first
use or when warmed; and the scores equal unpadded scoring (a real tiny graph,
the real AASIST-L full-window graph and the real incremental graphs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_incremental import EXACT, librispeech

from spoofwatch.constants import LIVE_HOP_SAMPLES, WINDOW_SAMPLES
from spoofwatch.errors import InputError
from spoofwatch.model import runtime
from spoofwatch.model.config import load_model_config
from spoofwatch.model.export import ensure_onnx
from spoofwatch.model.incremental import ensure_incremental_onnx, plan_for
from spoofwatch.model.incremental_runtime import IncrementalModel, stack_cap
from spoofwatch.model.runtime import (
    CUDA_MAX_BATCH_WINDOWS,
    OnnxScorer,
    SessionLimits,
    make_session,
    open_graph,
)
from spoofwatch.model.shapes import BucketedSession, batch_buckets, wants_buckets

#: An IR version the installed ONNX Runtime reads (onnx's newest may be ahead of it).
IR_VERSION = 9


class Spy:
    """A real session that records the rows of every call it runs."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.rows: list[int] = []

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.rows.extend({len(v) for v in feeds.values()})
        return self.session.run(names, feeds)

    def get_providers(self) -> list[str]:
        return list(self.session.get_providers())

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def get_outputs(self) -> Any:
        return self.session.get_outputs()


def spied(path: Path, cap: int) -> tuple[BucketedSession, list[Spy]]:
    """A bucketed session of the graph at ``path`` whose sessions are all spies."""
    spies: list[Spy] = []

    def open_one() -> Spy:
        spies.append(Spy(make_session(path, "cpu", threads=1)))
        return spies[-1]

    return BucketedSession(open_one, cap), spies


def rows_seen(bucketed: BucketedSession, spies: list[Spy]) -> dict[int, set[int]]:
    """Per open bucket, the row counts its session was called with."""
    by_session = {id(s): set(s.rows) for s in spies}
    return {size: by_session[id(bucketed._sessions[size])] for size in bucketed.opened}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``y = concat(2 * a, b)``: ``a`` (batch, 3), ``b`` (batch, 2) -> ``y`` (batch, 5); rows independent."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["a", "two"], ["a2"]),
            helper.make_node("Concat", ["a2", "b"], ["y"], axis=1),
        ],
        "tiny",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        initializer=[two],
    )
    path = tmp_path_factory.mktemp("shapes") / "tiny.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION), path
    )
    return path


def test_buckets_are_powers_of_two_up_to_the_cap() -> None:
    assert batch_buckets(64) == (1, 2, 4, 8, 16, 32, 64)
    assert batch_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    assert batch_buckets(1) == (1,)
    with pytest.raises(InputError, match="cap >= 1"):
        batch_buckets(0)


def test_every_session_sees_one_batch_size_and_outputs_are_trimmed(tiny: Path) -> None:
    bucketed, spies = spied(tiny, cap=8)
    rng = np.random.default_rng(0)
    for n in (3, 1, 5, 2, 8, 3, 7, 1):
        a = rng.standard_normal((n, 3)).astype(np.float32)
        b = rng.standard_normal((n, 2)).astype(np.float32)
        (y,) = bucketed.run(None, {"a": a, "b": b})
        np.testing.assert_array_equal(y, np.concatenate([2 * a, b], axis=1))
    # Bucket 1 opens with the object; the others at their first call.
    assert bucketed.opened == (1, 2, 4, 8)
    assert rows_seen(bucketed, spies) == {1: {1}, 2: {2}, 4: {4}, 8: {8}}
    assert bucketed.calls == {1: 2, 2: 1, 4: 2, 8: 3}
    assert bucketed.padded_rows == 1 + 3 + 1 + 1  # 3->4, 5->8, 3->4, 7->8


def test_calls_larger_than_the_cap_are_split_into_buckets(tiny: Path) -> None:
    bucketed, spies = spied(tiny, cap=4)
    a = np.arange(30, dtype=np.float32).reshape(10, 3)
    b = np.arange(20, dtype=np.float32).reshape(10, 2)
    (y,) = bucketed.run(None, {"a": a, "b": b})
    np.testing.assert_array_equal(y, np.concatenate([2 * a, b], axis=1))
    assert rows_seen(bucketed, spies) == {1: set(), 2: {2}, 4: {4}}  # 4 + 4 + 2; bucket 1 unused
    assert bucketed.calls == {1: 0, 2: 1, 4: 2} and bucketed.padded_rows == 0


def test_bad_calls_are_refused_with_what_was_expected(tiny: Path) -> None:
    bucketed, _ = spied(tiny, cap=4)
    a, b = np.zeros((5, 3), np.float32), np.zeros((5, 2), np.float32)
    with pytest.raises(InputError, match="same number"):
        bucketed.run(None, {"a": a[:2], "b": b[:3]})
    with pytest.raises(InputError, match=r"same number \(>= 1\) of rows, got \[0\]"):
        bucketed.run(None, {"a": a[:0], "b": b[:0]})
    with pytest.raises(InputError, match="a bucket of 1 to 4 rows, got 5"):
        bucketed.add_bucket(5)


def test_warm_makes_the_largest_call_a_bucket_and_runs_every_bucket_up_to_it(tiny: Path) -> None:
    """A server's largest call (``--max-batch-windows`` 24) gets a session of
    its own, so a full call is never padded to the next power of two."""
    bucketed, spies = spied(tiny, cap=64)
    assert bucketed.warm(24) == [1, 2, 4, 8, 16, 24]
    a, b = np.zeros((20, 3), np.float32), np.zeros((20, 2), np.float32)
    bucketed.run(None, {"a": a, "b": b})
    assert rows_seen(bucketed, spies) == {1: {1}, 2: {2}, 4: {4}, 8: {8}, 16: {16}, 24: {24}}
    # Past the cap, a full call is split (64 + 36): its last part is a bucket too.
    assert bucketed.warm(100) == [1, 2, 4, 8, 16, 24, 32, 36, 64]


def test_a_graph_with_a_free_dimension_besides_the_batch_is_not_warmed(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "free",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "n"])],
    )
    path = tmp_path / "free.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=IR_VERSION), path
    )
    bucketed, _ = spied(path, cap=8)
    assert bucketed.warm(8) == [] and bucketed.opened == (1,)


class _OnCuda:
    """What ``wants_buckets`` reads of a session that got the CUDA provider."""

    def get_providers(self) -> list[str]:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_only_cuda_sessions_are_bucketed_unless_forced(tiny: Path) -> None:
    plain = open_graph(tiny, "cpu", 1, cap=8)
    assert not isinstance(plain, BucketedSession) and not wants_buckets(plain, None)
    assert wants_buckets(_OnCuda(), None) and not wants_buckets(_OnCuda(), False)
    assert isinstance(open_graph(tiny, "cpu", 1, cap=8, buckets=True), BucketedSession)
    assert OnnxScorer(tiny, "cpu", 1, spec=None).warm(8) == []  # a plain session: nothing to warm


def test_bucket_caps_match_the_cuda_call_caps(sw_home: Path) -> None:
    """The buckets end where stacked calls are split on CUDA (steps 64, full
    passes 8), and never past the MaxPool-safe 64 whatever a caller asks."""
    hop = LIVE_HOP_SAMPLES
    paths = ensure_incremental_onnx("aasist-l", hop, None, "fp32")
    inc = IncrementalModel(paths, plan_for(load_model_config("aasist-l"), hop), "cpu", 1, shape_buckets=True)
    assert inc.init_session.cap == stack_cap("cuda", full_pass=True) == 8
    assert inc.step_session.cap == stack_cap("cuda", full_pass=False) == CUDA_MAX_BATCH_WINDOWS
    scorer = OnnxScorer(ensure_onnx("aasist-l"), "cpu", 1, max_batch_windows=200, shape_buckets=True)
    assert scorer.session.cap == CUDA_MAX_BATCH_WINDOWS


def test_full_window_scores_through_buckets_equal_unpadded_scores(shared: Path, sw_home: Path) -> None:
    """The real AASIST-L graph: batches of 3 and 1 (padded to 4 and 1) score as unpadded calls do."""
    path = ensure_onnx("aasist-l")
    plain = OnnxScorer(path, "cpu", 2)
    bucketed = OnnxScorer(path, "cpu", 2, shape_buckets=True, max_batch_windows=4)
    bucketed.session, spies = spied(path, cap=4)
    audio = librispeech(shared, 8.0, first=0)
    windows = np.stack([audio[k * 16_000 :][:WINDOW_SAMPLES] for k in range(4)])
    got = np.concatenate([bucketed.scores(windows[:3]), bucketed.scores(windows[3:])])
    want = plain.scores(windows)
    assert np.abs(got - want).max() <= EXACT
    assert rows_seen(bucketed.session, spies) == {1: {1}, 4: {4}}


def test_buckets_sharing_one_arena_score_as_separate_arenas_do(shared: Path, sw_home: Path) -> None:
    """``SessionLimits(shared_arena=True)``: every bucket's session draws from
    the process's one arena (what a CUDA worker would do to hold the largest
    bucket's activations instead of the sum; benchmarks/gpu_memory.py
    measures the memory). Calls of changing size through it score exactly
    as unshared sessions do."""
    path = ensure_onnx("aasist-l")
    plain = OnnxScorer(path, "cpu", 2)
    sharing = OnnxScorer(
        path, "cpu", 2, shape_buckets=True, max_batch_windows=4, limits=SessionLimits(shared_arena=True)
    )
    assert runtime._SHARED_ARENAS["CPUExecutionProvider"]  # registered: the sessions share it
    audio = librispeech(shared, 8.0, first=6)
    windows = np.stack([audio[k * 12_000 :][:WINDOW_SAMPLES] for k in range(6)])
    got = np.concatenate(
        [sharing.scores(windows[:3]), sharing.scores(windows[3:4]), sharing.scores(windows[4:])]
    )
    assert sharing.session.opened == (1, 2, 4)
    assert np.abs(got - plain.scores(windows)).max() <= EXACT


def test_incremental_calls_of_changing_size_through_buckets_stay_exact(
    shared: Path, sw_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three streams whose stacked calls change size (a first pass of 3, steps of
    2, a catch-up round of 1, steps of 3): every step session sees one size, and
    the scores equal full-window scoring and unbucketed incremental scoring."""
    monkeypatch.setattr(runtime, "CPU_MAX_BATCH_WINDOWS", 4)  # stacked as on a GPU (the CPU's cap is 1)
    hop = LIVE_HOP_SAMPLES
    paths = ensure_incremental_onnx("aasist-l", hop, None, "fp32")
    plan = plan_for(load_model_config("aasist-l"), hop)
    plain = IncrementalModel(paths, plan, "cpu", 2, batch_streams=True)
    bucketed = IncrementalModel(paths, plan, "cpu", 2, batch_streams=True, shape_buckets=True)
    bucketed.step_session, spies = spied(paths.step, cap=4)
    full = OnnxScorer(ensure_onnx("aasist-l"), "cpu", 2)
    audios = [librispeech(shared, 8.0, first=3 * k) for k in range(3)]
    # Per call, the streams that send a window and at which hop: stream 2 skips hop 1.
    schedule = [{0: 0, 1: 0, 2: 0}, {0: 1, 1: 1}, {0: 2, 1: 2, 2: 2}]

    def run(model: IncrementalModel) -> list[list[float]]:
        streams = [model.open_stream() for _ in audios]
        out = []
        for call in schedule:
            windows = [(h * hop, audios[k][h * hop :][:WINDOW_SAMPLES]) for k, h in call.items()]
            out.append(model.score([streams[k] for k in call], windows))
            want = full.scores(np.stack([w for _, w in windows]))
            assert np.abs(np.array(out[-1]) - want).max() <= EXACT
        return out

    got, want = run(bucketed), run(plain)
    assert (
        max(abs(g - w) for gs, ws in zip(got, want, strict=True) for g, w in zip(gs, ws, strict=True)) <= 1e-6
    )
    # Steps of 2, a catch-up of 1 and steps of 3 (padded to 4): three sessions, one size each.
    assert rows_seen(bucketed.step_session, spies) == {1: {1}, 2: {2}, 4: {4}}
    assert bucketed.step_session.padded_rows == 1
    assert isinstance(bucketed.init_session, BucketedSession)
    assert bucketed.init_session.calls[4] == 1  # the first pass of 3, padded to 4
    # More first passes than one call takes on CUDA (8): split, and still exact.
    windows = np.stack([a[k * hop :][:WINDOW_SAMPLES] for a in audios for k in range(4)][:10])
    got_logits, got_state = bucketed.run_init(windows)
    want_logits, want_state = plain.run_init(windows)
    assert np.abs(got_logits - want_logits).max() <= 1e-6
    assert all(g.shape == w.shape for g, w in zip(got_state, want_state, strict=True))
    assert bucketed.init_session.calls[8] == 1 and bucketed.init_session.calls[2] == 1
