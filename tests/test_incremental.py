"""The exact incremental encoder against full-window scoring, on real speech.

Every comparison runs the real ONNX Runtime graphs: the incremental ``init``
and ``step`` exports against the full-window export, window by window.

Cost (CI has 2 cores): each (model, hop) is exported and loaded once for the
module (``incremental``) and the sessions are closed at its end; the same
sessions serve both stream-batching modes (``batch_streams`` is only how
calls are grouped); one long run (3 streams x 30 s, AASIST-L, default hop),
shorter ones for the other hops and for AASIST.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import soundfile

from spoofwatch.audio import read_audio
from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.cli import main
from spoofwatch.commands.common import load_live_scoring
from spoofwatch.constants import LIVE_HOP_SAMPLES, SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.errors import InputError
from spoofwatch.model import runtime
from spoofwatch.model.config import load_model_config
from spoofwatch.model.export import ensure_onnx
from spoofwatch.model.incremental import (
    cached_incremental_paths,
    ensure_incremental_onnx,
    hop_incompatibility,
    plan_for,
)
from spoofwatch.model.incremental_runtime import (
    CUDA_MAX_FULL_PASS_STREAMS,
    IncrementalModel,
    IncrementalScorer,
    catch_up_limit,
    stack_cap,
)
from spoofwatch.model.runtime import CUDA_MAX_BATCH_WINDOWS, OnnxScorer, batch_cap
from spoofwatch.model.shapes import batch_buckets
from spoofwatch.stream.driver import StreamDriver
from spoofwatch.stream.engine import build_engine
from spoofwatch.stream.scoring import FullWindowScorer, IncrementalWindowScorer

#: |incremental - full| allowed for one window's bona fide logit (the issue's bound).
EXACT = 1e-4
#: ``stream`` against ``score`` CLI: different batch sizes, same windows.
CLI_TOL = 1e-3


@pytest.fixture(scope="module")
def incremental(sw_home: Path) -> Iterator[Callable[[str, int, bool], IncrementalModel]]:
    """``incremental(model, hop, batch_streams)``: the real exported graphs, exported and
    loaded once per (model, hop) for the module and released at its end. ``batch_streams``
    only groups calls, so both modes share one pair of sessions."""
    models: dict[tuple[str, int], IncrementalModel] = {}

    def get(model: str, hop: int, batch_streams: bool = False) -> IncrementalModel:
        key = (model, hop)
        if key not in models:
            models[key] = IncrementalModel.load(model, hop, "cpu", 2)
        models[key].batch_streams = batch_streams
        return models[key]

    yield get
    models.clear()
    gc.collect()


@pytest.fixture(scope="module")
def full_scorer(sw_home: Path) -> Iterator[Callable[[str], OnnxScorer]]:
    scorers: dict[str, OnnxScorer] = {}

    def get(model: str) -> OnnxScorer:
        if model not in scorers:
            scorers[model] = OnnxScorer(ensure_onnx(model), device="cpu", threads=2)
        return scorers[model]

    yield get
    scorers.clear()
    gc.collect()


def librispeech(shared: Path, seconds: float, first: int) -> np.ndarray:
    """Real read speech: LibriSpeech test-other clips from ``first`` on, end to end."""
    paths = sorted((shared / "data" / "speech" / "bonafide" / "librispeech_test-other").glob("*.flac"))
    n = int(seconds * SAMPLE_RATE_HZ)
    clips: list[np.ndarray] = []
    for path in paths[first:]:
        clips.append(read_audio(path))
        if sum(c.size for c in clips) >= n:
            return np.concatenate(clips)[:n]
    raise AssertionError("not enough LibriSpeech audio")


def windows_of(audio: np.ndarray, hop: int) -> list[int]:
    return list(range(0, audio.size - WINDOW_SAMPLES + 1, hop))


# ---- geometry (no model run) ------------------------------------------------------


def test_geometry_at_the_default_hop() -> None:
    plan = plan_for(load_model_config("aasist-l"), LIVE_HOP_SAMPLES)
    assert LIVE_HOP_SAMPLES == 11 * 729
    # Each level moves by hop / 3**level frames and has one padded frame at the right.
    assert [lv.shift for lv in plan.levels] == [891, 297, 99, 33, 11]
    assert [lv.right_dirty for lv in plan.levels] == [1, 1, 1, 1, 1]
    assert plan.head_samples == 143 and plan.tail_samples > LIVE_HOP_SAMPLES
    # A step recomputes about the new hop's share of the window, not the window.
    ratio = plan.step_macs() / plan.full_macs()
    assert LIVE_HOP_SAMPLES / WINDOW_SAMPLES < ratio < 0.15
    assert catch_up_limit(plan) == int(plan.full_macs() // plan.step_macs())
    for model in ("aasist-l", "aasist"):
        assert plan_for(load_model_config(model), LIVE_HOP_SAMPLES).state_bytes() < 2 * 2**20


@pytest.mark.parametrize("hop", [8000, 8001, 2187 * 4 + 1, 243])
def test_hops_that_are_not_multiples_of_729_are_refused_with_a_reason(hop: int) -> None:
    reason = hop_incompatibility(hop)
    assert reason is not None and "multiple of 729" in reason
    with pytest.raises(InputError, match="729"):
        plan_for(load_model_config("aasist-l"), hop)


def test_the_hops_suggested_instead_are_usable() -> None:
    """At the ends of the hop range it suggested "729 or 729", or a hop past one window."""
    assert hop_incompatibility(8000).endswith("nearest usable hops: 7290 or 8019 samples")  # type: ignore[union-attr]
    assert hop_incompatibility(512).endswith("nearest usable hop: 729 samples")  # type: ignore[union-attr]
    assert hop_incompatibility(WINDOW_SAMPLES).endswith("nearest usable hop: 64152 samples")  # type: ignore[union-attr]
    assert hop_incompatibility(65400) == "hop of 65400 samples is longer than a window (64600 samples)"


@pytest.mark.parametrize(
    ("hop", "precision", "full_windows", "reason"),
    [
        (8000, "fp32", False, "729"),
        (LIVE_HOP_SAMPLES, "int8", False, "runs at fp32 or fp16, not int8"),
        (LIVE_HOP_SAMPLES, "fp32", True, "--full-windows"),
    ],
)
def test_live_scoring_falls_back_to_full_windows_with_a_logged_reason(
    hop: int, precision: str, full_windows: bool, reason: str, scorer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="spoofwatch"):
        scoring = load_live_scoring(
            scorer,
            "aasist-l",
            hop,
            WINDOW_SAMPLES,
            device="cpu",
            precision=precision,
            full_windows=full_windows,
        )
    assert scoring.mode == "full" and scoring.incremental is None and reason in scoring.reason
    assert isinstance(scoring.new_stream(), FullWindowScorer)
    assert any(reason in r.getMessage() for r in caplog.records)


def test_model_cards_score_full_windows(scorer: Any) -> None:
    """A model card may cut windows of another length: the encoder's geometry does not apply."""
    scoring = load_live_scoring(scorer, "cards/other.toml", LIVE_HOP_SAMPLES, 48_000, device="cpu")
    assert scoring.mode == "full" and "model card" in scoring.reason


# ---- exactness on real speech --------------------------------------------------------


def run_schedule(
    model: IncrementalModel, audios: list[np.ndarray], foreign: np.ndarray
) -> tuple[list[IncrementalScorer], list[list[tuple[int, np.ndarray, float]]]]:
    """Three streams in lock step, every window time scored in one ``IncrementalModel.score`` call:

    * stream 0: every window;
    * stream 1: skips two windows (a short gap: caught up by steps) and then
      ``catch_up_limit`` windows (a long gap: rebuilt by a full pass);
    * stream 2: ``reset()`` before window 5, and window ``n - 3`` is another
      stream's audio at the expected start (its overlap check forces full passes).
    """
    hop, limit = model.hop_samples, model.catch_up_limit
    n = len(windows_of(audios[0], hop))
    skip1 = {3, 4, *range(6, 6 + limit)}
    assert 6 + limit < n, "stream too short for the long gap"
    streams = [IncrementalScorer(model) for _ in audios]
    scored: list[list[tuple[int, np.ndarray, float]]] = [[] for _ in audios]
    for i in range(n):
        start = i * hop
        batch: list[tuple[int, np.ndarray]] = []
        who: list[int] = []
        for k, audio in enumerate(audios):
            if k == 1 and i in skip1:
                continue
            if k == 2 and i == 5:
                streams[2].reset()
            source = foreign if (k == 2 and i == n - 3) else audio
            batch.append((start, source[start : start + WINDOW_SAMPLES]))
            who.append(k)
        scores = model.score([streams[k] for k in who], batch)
        for k, (s, w), score in zip(who, batch, scores, strict=True):
            scored[k].append((s, w, score))
    return streams, scored


def max_diff_against_full(full: OnnxScorer, scored: list[list[tuple[int, np.ndarray, float]]]) -> float:
    worst = 0.0
    for stream in scored:
        for start in range(0, len(stream), 2):  # small batches keep ONNX Runtime's arena small
            part = stream[start : start + 2]
            reference = full.scores(np.stack([w for _, w, _ in part]))
            worst = max(worst, float(np.max(np.abs(reference - np.array([s for _, _, s in part])))))
    return worst


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "hop", "seconds", "batch_streams"),
    [
        # 11 x 729: not a multiple of 2,187; the 3 streams x 30 s, both batching modes.
        ("aasist-l", LIVE_HOP_SAMPLES, 30.0, True),
        ("aasist-l", LIVE_HOP_SAMPLES, 30.0, False),
        ("aasist", LIVE_HOP_SAMPLES, 12.0, True),
        ("aasist-l", 4 * 2187, 12.0, True),  # a multiple of 2,187
        ("aasist-l", 7 * 729, 12.0, True),  # neither a multiple of 2,187 nor of the default
    ],
)
def test_every_window_equals_full_window_scoring(
    model: str,
    hop: int,
    seconds: float,
    batch_streams: bool,
    shared: Path,
    incremental: Callable[[str, int, bool], IncrementalModel],
    full_scorer: Callable[[str], OnnxScorer],
) -> None:
    audios = [librispeech(shared, seconds, first=10 * k) for k in range(3)]
    foreign = librispeech(shared, seconds, first=40)
    inc = incremental(model, hop, batch_streams)
    streams, scored = run_schedule(inc, audios, foreign)

    assert max_diff_against_full(full_scorer(model), scored) <= EXACT
    # The schedule really exercised every path.
    assert [s.full_passes for s in streams] == [1, 2, 4]
    assert streams[1].catch_up_steps == 2
    assert streams[0].steps == len(scored[0]) - 1
    assert all(0 < s.state_bytes < 2 * 2**20 for s in streams)


def test_stack_caps_per_device() -> None:
    """Steps on CUDA stack up to the MaxPool cap; full passes (a whole window's
    activations each) only up to 8: their buckets 1-8 (one session each) hold
    15 windows' activations, about the 16 that 8 workers' memory held on an H100."""
    assert stack_cap("cuda", full_pass=False) == CUDA_MAX_BATCH_WINDOWS == 64
    assert stack_cap("cuda", full_pass=True) == CUDA_MAX_FULL_PASS_STREAMS == 8
    assert sum(batch_buckets(CUDA_MAX_FULL_PASS_STREAMS)) == 15
    assert stack_cap("cpu", full_pass=False) == stack_cap("cpu", full_pass=True) == batch_cap("cpu") == 1


def test_stacked_calls_are_split_at_the_device_batch_cap(
    shared: Path,
    incremental: Callable[[str, int, bool], IncrementalModel],
    full_scorer: Callable[[str], OnnxScorer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More streams than one call may take (a cap of 4 here; the CPU's own is
    1, 64 on CUDA): full passes, steps and the catch-up steps of streams that
    skipped windows together go out in stacked calls of at most the cap, and
    every score still equals full-window scoring."""
    monkeypatch.setattr(runtime, "CPU_MAX_BATCH_WINDOWS", 4)
    inc = incremental("aasist-l", LIVE_HOP_SAMPLES, True)
    cap = batch_cap(inc.device)
    audios = [librispeech(shared, 6.0, first=3 * k) for k in range(cap + 2)]
    calls: list[tuple[str, int]] = []
    run_init, run_step = inc.run_init, inc.run_step

    def init(windows: np.ndarray) -> Any:
        calls.append(("init", len(windows)))
        return run_init(windows)

    def step(head: np.ndarray, tail: np.ndarray, state: Any) -> Any:
        calls.append(("step", len(head)))
        return run_step(head, tail, state)

    inc.run_init, inc.run_step = init, step  # type: ignore[method-assign]
    # The third window comes two hops after the second: every stream skipped one.
    starts = [0, LIVE_HOP_SAMPLES, 3 * LIVE_HOP_SAMPLES]
    try:
        streams = [inc.open_stream() for _ in audios]
        worst = 0.0
        for start in starts:
            windows = [(start, a[start : start + WINDOW_SAMPLES]) for a in audios]
            got = inc.score(streams, windows)
            want = full_scorer("aasist-l").scores(np.stack([w for _, w in windows]))
            worst = max(worst, float(np.abs(np.array(got) - want).max()))
    finally:
        del inc.run_init, inc.run_step
    assert worst <= EXACT
    assert [(s.full_passes, s.steps, s.catch_up_steps) for s in streams] == [(1, 2, 1)] * len(audios)
    # Per window, one call of `cap` rows and one of the rest: the first passes,
    # the second window's steps, the skipped window's catch-up steps, the third's steps.
    assert calls == [(kind, n) for kind in ("init", "step", "step", "step") for n in (cap, 2)]


def test_streams_lagging_by_different_hops_catch_up_together_exactly(
    shared: Path,
    incremental: Callable[[str, int, bool], IncrementalModel],
    full_scorer: Callable[[str], OnnxScorer],
) -> None:
    """In one call, streams that skipped 0, 1 and 2 windows: the stacked
    catch-up rounds give every stream the scores (and counters) of full-window
    scoring and of one call per stream."""
    audios = [librispeech(shared, 8.0, first=3 * k) for k in range(6)]
    hops = [[0, 1, 4], [0, 1, 2], [0, 1, 3], [0, 1, 4], [0, 1, 3], [0, 1, 2]]  # per stream, in hops
    runs = []
    for batch_streams in (True, False):
        inc = incremental("aasist-l", LIVE_HOP_SAMPLES, batch_streams)
        streams = [inc.open_stream() for _ in audios]
        scores = []
        for r in range(3):
            windows = [
                (h[r] * LIVE_HOP_SAMPLES, a[h[r] * LIVE_HOP_SAMPLES :][:WINDOW_SAMPLES])
                for h, a in zip(hops, audios, strict=True)
            ]
            scores.append(inc.score(streams, windows))
            if batch_streams:
                want = full_scorer("aasist-l").scores(np.stack([w for _, w in windows]))
                assert np.abs(np.array(scores[-1]) - want).max() <= EXACT
        runs.append((np.array(scores), [(s.full_passes, s.steps, s.catch_up_steps) for s in streams]))
    (stacked, counts), (one_each, counts_one_each) = runs
    assert np.abs(stacked - one_each).max() <= EXACT
    assert counts == counts_one_each == [(1, 2, h[2] - 2) for h in hops]


@pytest.mark.slow
def test_engine_with_speech_gate_matches_full_windows(
    shared: Path, scorer: Any, vad: Any, incremental: Callable[[str, int, bool], IncrementalModel]
) -> None:
    """Speech with pauses: gated windows are not scored, and every scored window
    equals full-window scoring, however the gate skipped windows before it."""
    parts = []
    for k, pause_s in enumerate((2.5, 6.0, 1.0)):
        parts.append(librispeech(shared, 7.0, first=50 + 5 * k))
        parts.append(np.zeros(int(pause_s * SAMPLE_RATE_HZ), dtype=np.float32))
    audio = np.concatenate(parts)
    cal = load_calibration(model="aasist-l")
    inc_scorer = IncrementalWindowScorer(incremental("aasist-l", LIVE_HOP_SAMPLES, False))
    runs = []
    for window_scorer, chunk in ((FullWindowScorer(scorer), 320), (inc_scorer, 1234)):
        driver = StreamDriver(build_engine(cal.live, vad))
        events = [
            e for p in range(0, audio.size, chunk) for e in driver.feed(audio[p : p + chunk], window_scorer)
        ]
        runs.append([e.to_json() for e in [*events, *driver.close(window_scorer)]])
    full_events, inc_events = runs
    assert [e["type"] for e in full_events] == [e["type"] for e in inc_events]
    scores = [(a, b) for a, b in zip(full_events, inc_events, strict=True) if a["type"] == "score"]
    assert all(a["speech"] == b["speech"] and a["t_start"] == b["t_start"] for a, b in scores)
    gated = [a for a, _ in scores if not a["speech"]]
    assert gated, "the pauses must gate some windows"
    assert max(abs(a["score"] - b["score"]) for a, b in scores if a["speech"]) <= EXACT
    # Windows after a pause were reached by catch-up steps or a rebuild, never by guesswork.
    stream = inc_scorer.stream
    assert stream.full_passes + stream.steps == sum(1 for a, _ in scores if a["speech"])
    assert stream.full_passes > 1 or stream.catch_up_steps > 0


# ---- end to end: the CLI, the server ---------------------------------------------------


@pytest.fixture(scope="module")
def speech_wav(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("incremental") / "librispeech_30s.wav"
    soundfile.write(path, librispeech(shared, 30.0, first=20), SAMPLE_RATE_HZ, subtype="FLOAT")
    return path


def cli_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[list[Any], str]:
    """JSON lines on stdout, and stderr (where the CLI logs)."""
    assert main(args) == 0
    out = capsys.readouterr()
    return [json.loads(line) for line in out.out.splitlines()], out.err


@pytest.mark.slow
def test_stream_cli_scores_equal_score_cli_windows(
    sw_home: Path, speech_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hop_s = load_calibration(model="aasist-l").stream.hop_s
    events, log = cli_json(["stream", "--json", "--device", "cpu", str(speech_wav)], capsys)
    assert "live scoring: incremental windows" in log
    [result], _ = cli_json(
        ["score", "--json", "--device", "cpu", "--hop-s", str(hop_s), str(speech_wav)], capsys
    )
    by_start = {round(w["start_s"] * SAMPLE_RATE_HZ): w["score"] for w in result["windows"]}
    scored = [e for e in events if e["type"] == "score" and e["score"] is not None]
    assert len(scored) >= 40
    for e in scored:
        assert abs(e["score"] - by_start[round(e["t_start"] * SAMPLE_RATE_HZ)]) <= CLI_TOL


@pytest.mark.slow
def test_stream_cli_hop_not_multiple_of_729_falls_back_and_still_matches(
    sw_home: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "short.wav"
    soundfile.write(path, librispeech(shared, 7.0, first=30), SAMPLE_RATE_HZ, subtype="FLOAT")
    events, log = cli_json(["stream", "--json", "--device", "cpu", "--hop-s", "0.5", str(path)], capsys)
    assert "multiple of 729" in log and "live scoring: full windows" in log
    [result], _ = cli_json(["score", "--json", "--device", "cpu", "--hop-s", "0.5", str(path)], capsys)
    by_start = {round(w["start_s"] * SAMPLE_RATE_HZ): w["score"] for w in result["windows"]}
    scored = [e for e in events if e["type"] == "score" and e["score"] is not None]
    assert len(scored) == 6
    for e in scored:
        assert abs(e["score"] - by_start[round(e["t_start"] * SAMPLE_RATE_HZ)]) <= CLI_TOL


@pytest.mark.slow
def test_server_streams_score_incrementally_and_exactly(
    shared: Path,
    scorer: Any,
    vad: Any,
    tmp_path: Path,
    incremental: Callable[[str, int, bool], IncrementalModel],
) -> None:
    from spoofwatch.stream.client import send_audio
    from spoofwatch.stream.server.app import WebSocketServer
    from spoofwatch.stream.server.batcher import BatchScorer
    from spoofwatch.stream.server.context import ServerConfig, ServerContext
    from spoofwatch.stream.server.sinks import ServerSinks

    audios = [librispeech(shared, 10.0, first=60 + 5 * k) for k in range(3)]
    # Stacked steps: the server groups the streams that are ready together.
    batcher = BatchScorer(scorer, incremental=incremental("aasist-l", LIVE_HOP_SAMPLES, True))
    sinks = ServerSinks(jsonl=tmp_path / "events.jsonl")
    # No load shedding: admitting the three streams must not depend on this machine's speed.
    config = ServerConfig(host="127.0.0.1", port=0, shedding=None)
    ctx = ServerContext(config, batcher, load_calibration(model="aasist-l").live, vad, sinks)
    results: list[Any] = [None] * len(audios)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(WebSocketServer(ctx).run)

            async def one(k: int) -> None:
                results[k] = await send_audio(audios[k], f"ws://127.0.0.1:{port}/", encoding="f32le")

            async with anyio.create_task_group() as clients:
                for k in range(len(audios)):
                    clients.start_soon(one, k)
            tg.cancel_scope.cancel()

    try:
        anyio.run(run)
    finally:
        sinks.close()
    for audio, result in zip(audios, results, strict=True):
        assert result.close_code == 1000
        scored = [e for e in result.events if e["type"] == "score" and e["score"] is not None]
        assert len(scored) == len(windows_of(audio, LIVE_HOP_SAMPLES))
        starts = [round(e["t_start"] * SAMPLE_RATE_HZ) for e in scored]
        reference = scorer.scores(np.stack([audio[s : s + WINDOW_SAMPLES] for s in starts]))
        assert np.max(np.abs(reference - np.array([e["score"] for e in scored]))) <= EXACT


def test_server_workers_load_the_incremental_model(sw_home: Path) -> None:
    """``serve``'s per-worker loader builds the incremental graphs unless ``--full-windows``."""
    from spoofwatch.commands.server_cmds import load_worker_model
    from spoofwatch.stream.server.context import ServerConfig
    from spoofwatch.stream.server.worker import WorkerSpec

    spec = WorkerSpec(ServerConfig(), load_worker_model, model="aasist-l", device="cpu")
    scorer, live, inc = load_worker_model(spec, 1)
    assert inc is not None and inc.hop_samples == live.stream.hop_samples == LIVE_HOP_SAMPLES
    assert inc.open_stream().state is None
    del scorer, inc
    _, _, none = load_worker_model(WorkerSpec(ServerConfig(), load_worker_model, full_windows=True), 1)
    assert none is None


# ---- cache and input checks ------------------------------------------------------------


def test_export_is_cached_per_weights_and_hop(
    sw_home: Path, incremental: Callable[[str, int, bool], IncrementalModel]
) -> None:
    incremental("aasist-l", LIVE_HOP_SAMPLES, False)
    paths = cached_incremental_paths("aasist-l", LIVE_HOP_SAMPLES)
    assert paths.init.is_file() and paths.step.is_file()
    assert paths.step.is_relative_to(sw_home) and f"inc{LIVE_HOP_SAMPLES}" in paths.step.name
    stamp = paths.step.stat().st_mtime_ns
    assert ensure_incremental_onnx("aasist-l", LIVE_HOP_SAMPLES) == paths
    assert paths.step.stat().st_mtime_ns == stamp  # reused, not exported again
    assert cached_incremental_paths("aasist-l", 8748).step != paths.step


def test_scorer_rejects_bad_windows(incremental: Callable[[str, int, bool], IncrementalModel]) -> None:
    stream = IncrementalScorer(incremental("aasist-l", LIVE_HOP_SAMPLES, False))
    with pytest.raises(InputError, match="64600"):
        stream.score(0, np.zeros(1000, dtype=np.float32))
    with pytest.raises(InputError, match="float32"):
        stream.score(0, np.zeros(WINDOW_SAMPLES, dtype=np.float64))  # type: ignore[arg-type]
    bad = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    bad[5] = np.nan
    with pytest.raises(InputError, match="finite"):
        stream.score(0, bad)
    assert stream.state is None


# ---- FP16 graphs (for CUDA) ---------------------------------------------------------------

#: |FP16 - FP32| allowed for one bona fide logit: the full-window FP16 graph's bound.
FP16_TOL = 5e-2


def test_fp16_graphs_are_stamped_reused_and_close_to_fp32(
    sw_home: Path, shared: Path, incremental: Callable[[str, int, bool], IncrementalModel]
) -> None:
    """FP16 targets CUDA; here the pair runs on the CPU provider (which upcasts
    between FP16 tensors), so this bounds rounding, not GPU arithmetic."""
    from spoofwatch.model.quantize import META_FP32_LAYERS, META_PRECISION, read_metadata, sha256_of

    fp32 = incremental("aasist-l", LIVE_HOP_SAMPLES, True)
    paths = ensure_incremental_onnx("aasist-l", LIVE_HOP_SAMPLES, precision="fp16")
    source = cached_incremental_paths("aasist-l", LIVE_HOP_SAMPLES)
    assert paths == cached_incremental_paths("aasist-l", LIVE_HOP_SAMPLES, precision="fp16")
    assert paths.step != source.step and "fp16" in paths.step.name
    for half, full in ((paths.init, source.init), (paths.step, source.step)):
        meta = read_metadata(half)
        assert meta[META_PRECISION] == "fp16" and meta["spoofwatch.source_sha256"] == sha256_of(full)
        assert "node_Conv" in meta[META_FP32_LAYERS]  # the sinc front end, found inside the wrapper
    stamp = paths.step.stat().st_mtime_ns
    assert ensure_incremental_onnx("aasist-l", LIVE_HOP_SAMPLES, precision="fp16") == paths
    assert paths.step.stat().st_mtime_ns == stamp  # reused, not converted again

    half_model = IncrementalModel(paths, fp32.plan, "cpu", 2, batch_streams=True)
    audios = [librispeech(shared, 8.0, first=10 * k) for k in range(2)]
    a, b = [half_model.open_stream() for _ in audios], [fp32.open_stream() for _ in audios]
    worst = 0.0
    for start in windows_of(audios[0], LIVE_HOP_SAMPLES):
        windows = [(start, x[start : start + WINDOW_SAMPLES]) for x in audios]
        worst = max(worst, *np.abs(np.subtract(half_model.score(a, windows), fp32.score(b, windows))))
    assert 0 < worst <= FP16_TOL  # rounded (not the FP32 graph by mistake), within the bound
    assert [s.full_passes for s in a] == [1, 1] and all(s.steps > 0 for s in a)


def test_fp16_graph_from_another_fp32_source_and_int8_are_refused(sw_home: Path) -> None:
    import onnx

    from spoofwatch.errors import ModelError
    from spoofwatch.model.quantize import META_SOURCE_SHA256

    paths = ensure_incremental_onnx("aasist-l", LIVE_HOP_SAMPLES, precision="fp16")
    step = onnx.load(str(paths.step))
    for prop in step.metadata_props:
        if prop.key == META_SOURCE_SHA256:
            prop.value = "f" * 64
    onnx.save(step, str(paths.step))
    try:
        with pytest.raises(ModelError, match="made from an FP32 graph with SHA-256 ffff"):
            ensure_incremental_onnx("aasist-l", LIVE_HOP_SAMPLES, precision="fp16")
    finally:
        paths.step.unlink()
    with pytest.raises(InputError, match="runs at fp32 or fp16, not int8"):
        ensure_incremental_onnx("aasist-l", LIVE_HOP_SAMPLES, precision="int8")
