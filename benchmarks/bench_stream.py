"""Live-engine cost per hop, full windows against the exact incremental encoder, in one run.

    python benchmarks/bench_stream.py [--model aasist-l] [--hop-s 0.5011875] [--threads 2]
                                      [--streams 16] [--json] [--delay]

All figures come from this process on this machine, so their ratios are
meaningful even on a busy machine; the absolute numbers are not portable.

1. One stream, 30 s of real speech (LibriSpeech) in 20 ms chunks through the
   engine (VAD + gate + scoring): wall and CPU time per hop with full-window
   scoring and with incremental scoring, their ratio, and the largest
   |incremental - full| score.
2. ``--streams`` streams fed one hop at a time, all on this machine's cores:
   the time per round gives the sustained real-time stream count, for full
   windows, incremental steps stacked into one ONNX Runtime call per round
   (the server's batching) and incremental steps one call per stream.
3. The cost of one full pass and one step, which decides how a stream that
   skipped windows (speech gate, dropped windows) is brought up to date:
   ``k`` catch-up steps or one full pass.
4. The state bytes one stream keeps.
5. With ``--delay``: the spoof-onset-to-alert delay on LA clips (incremental scoring).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spoofwatch.audio import read_audio
from spoofwatch.calibration.calfile import load_calibration
from spoofwatch.constants import SAMPLE_RATE_HZ, WINDOW_SAMPLES
from spoofwatch.model.export import ensure_onnx
from spoofwatch.model.incremental_runtime import IncrementalModel, IncrementalScorer
from spoofwatch.model.runtime import OnnxScorer, make_session
from spoofwatch.stream.driver import StreamDriver
from spoofwatch.stream.engine import Engine, PendingWindow, build_engine
from spoofwatch.stream.scoring import FullWindowScorer, IncrementalWindowScorer
from spoofwatch.stream.vad import SileroVad

SHARED = Path(os.environ.get("SPOOFWATCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LA = SHARED / "data" / "asvspoof2019_la" / "flac"
LIBRISPEECH = SHARED / "data" / "speech" / "bonafide" / "librispeech_test-other"
CHUNK = 320  # 20 ms


def repeat_to(x: np.ndarray, n: int) -> np.ndarray:
    return np.tile(x, n // x.size + 1)[:n]


def speech(seconds: float, first_clip: int = 0) -> np.ndarray:
    """Real read speech: LibriSpeech clips end to end."""
    n = int(seconds * SAMPLE_RATE_HZ)
    clips, total = [], 0
    for path in sorted(LIBRISPEECH.glob("*.flac"))[first_clip:]:
        clips.append(read_audio(path))
        total += clips[-1].size
        if total >= n:
            break
    return repeat_to(np.concatenate(clips), n)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, wall s, CPU s of this process)``."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def one_stream(
    audio: np.ndarray, engine: Engine, scorer: Any
) -> tuple[list[float | None], float, float, int]:
    driver = StreamDriver(engine)
    events, wall, cpu = timed(
        lambda: [e for p in range(0, audio.size, CHUNK) for e in driver.feed(audio[p : p + CHUNK], scorer)]
    )
    scores = [e.score for e in events if e.type == "score"]
    return scores, wall, cpu, engine.windows


def rounds(
    engines: list[Engine],
    audios: list[np.ndarray],
    hop: int,
    n_rounds: int,
    score: Callable[[list[tuple[int, PendingWindow]]], None],
) -> tuple[float, float]:
    """Feed every stream its first window, then ``n_rounds`` hops each; time the hops only.

    ``score`` gets the round's windows as ``(stream index, window)``.
    """

    def feed(lo: int, hi: int) -> None:
        score(
            [(i, p) for i, (e, a) in enumerate(zip(engines, audios, strict=True)) for p in e.push(a[lo:hi])]
        )

    feed(0, WINDOW_SAMPLES)
    wall = cpu = 0.0
    for r in range(n_rounds):
        lo = WINDOW_SAMPLES + r * hop
        _, w, c = timed(lambda lo=lo: feed(lo, lo + hop))  # type: ignore[misc]
        wall, cpu = wall + w, cpu + c
    return wall / n_rounds, cpu / n_rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="aasist-l", choices=("aasist-l", "aasist"))
    parser.add_argument("--hop-s", type=float, default=None, help="default: the calibration's hop")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6, help="hops per stream in the multi-stream test")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio of the one-stream test")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--delay", action="store_true", help="also measure spoof-onset-to-alert delay")
    args = parser.parse_args()

    cal = load_calibration(model=args.model)
    hop_s = cal.stream.hop_s if args.hop_s is None else args.hop_s
    hop = round(hop_s * SAMPLE_RATE_HZ)
    cores = os.cpu_count() or 1
    vad = SileroVad()
    # Both scorers on the same ONNX Runtime settings: no spinning (it only burns idle cores).
    full = OnnxScorer(ensure_onnx(args.model), device="cpu", threads=args.threads)
    full.session = make_session(full.onnx_path, "cpu", args.threads, allow_spinning=False)
    batched = IncrementalModel.load(args.model, hop, "cpu", args.threads, batch_streams=True)
    single = IncrementalModel.load(args.model, hop, "cpu", args.threads, batch_streams=False)
    out: dict[str, Any] = {
        "model": args.model,
        "hop_samples": hop,
        "hop_s": hop / SAMPLE_RATE_HZ,
        "cores": cores,
        "ort_threads": args.threads,
        "mac_ratio_step_over_full": batched.plan.step_macs() / batched.plan.full_macs(),
    }

    # 1. one stream through the engine
    audio = speech(args.seconds)
    f_scores, f_wall, f_cpu, windows = one_stream(
        audio, build_engine(cal.live, vad, hop_s), FullWindowScorer(full)
    )
    inc = IncrementalWindowScorer(single)
    i_scores, i_wall, i_cpu, _ = one_stream(audio, build_engine(cal.live, vad, hop_s), inc)
    diffs = [abs(a - b) for a, b in zip(f_scores, i_scores, strict=True) if a is not None and b is not None]
    out["one_stream"] = {
        "windows": windows,
        "scored_windows": len(diffs),
        "full_ms_per_hop": {"wall": 1000 * f_wall / windows, "cpu": 1000 * f_cpu / windows},
        "incremental_ms_per_hop": {"wall": 1000 * i_wall / windows, "cpu": 1000 * i_cpu / windows},
        "ratio_full_over_incremental": {"wall": f_wall / i_wall, "cpu": f_cpu / i_cpu},
        "max_abs_score_diff": max(diffs) if diffs else None,
        "full_passes": inc.stream.full_passes,
        "steps": inc.stream.steps,
    }
    out["state_bytes_per_stream"] = inc.stream.state_bytes

    # 2. many streams, one hop per round
    audios = [
        speech(WINDOW_SAMPLES / SAMPLE_RATE_HZ + args.rounds * hop_s + 1, first_clip=3 * i)
        for i in range(args.streams)
    ]

    def run(kind: str, n_rounds: int) -> dict[str, float]:
        engines = [build_engine(cal.live, vad, hop_s) for _ in audios]
        model = batched if kind == "incremental_batched" else single
        streams = [IncrementalScorer(model) for _ in engines]

        def score(pending: list[tuple[int, PendingWindow]]) -> None:
            speech_windows = [(i, p.window) for i, p in pending if p.gate.speech]
            if kind == "full":
                for _, w in speech_windows:  # one call per window, as the inline engine does
                    full.scores(w.samples[np.newaxis, :])
                return
            mine = [streams[i] for i, _ in speech_windows]
            wins = [(w.start_sample, w.samples) for _, w in speech_windows]
            if kind == "incremental_batched":
                model.score(mine, wins)
            else:
                for stream, win in zip(mine, wins, strict=True):
                    stream.score(*win)

        wall, cpu = rounds(engines, audios, hop, n_rounds, score)
        return {
            "ms_per_round": {"wall": 1000 * wall, "cpu": 1000 * cpu},
            "realtime_streams_wall": args.streams * hop_s / wall,
            "realtime_streams_cpu": cores * args.streams * hop_s / cpu,
        }

    out["streams"] = args.streams
    out["multi_stream"] = {
        "full": run("full", max(1, args.rounds // 3)),
        "incremental_batched": run("incremental_batched", args.rounds),
        "incremental_per_stream": run("incremental_per_stream", args.rounds),
    }
    best = max(
        ("incremental_batched", "incremental_per_stream"),
        key=lambda k: out["multi_stream"][k]["realtime_streams_wall"],
    )
    # "wall": what the run delivered (other load on the machine lowers it);
    # "cpu": what the cores sustain at the CPU time measured per round.
    ms = out["multi_stream"]
    out["sustained_realtime_streams"] = {
        "full": {"wall": ms["full"]["realtime_streams_wall"], "cpu": ms["full"]["realtime_streams_cpu"]},
        "incremental": {"wall": ms[best]["realtime_streams_wall"], "cpu": ms[best]["realtime_streams_cpu"]},
        "incremental_mode": best,
    }

    # 3. catch-up after skipped windows: k steps or one full pass?
    window = audio[:WINDOW_SAMPLES][np.newaxis, :].copy()
    probe = IncrementalScorer(single)
    probe.score(0, audio[:WINDOW_SAMPLES])
    assert probe.state is not None
    head, tail = (
        window[:, : single.plan.head_samples],
        audio[np.newaxis, WINDOW_SAMPLES + hop - single.plan.tail_samples : WINDOW_SAMPLES + hop],
    )
    reps = 5
    _, init_wall, init_cpu = timed(lambda: [single.run_init(window) for _ in range(reps)])
    _, step_wall, step_cpu = timed(
        lambda: [single.run_step(head, tail, probe.state.graph) for _ in range(reps)]
    )  # type: ignore[union-attr]
    out["catch_up"] = {
        "full_pass_ms": {"wall": 1000 * init_wall / reps, "cpu": 1000 * init_cpu / reps},
        "step_ms": {"wall": 1000 * step_wall / reps, "cpu": 1000 * step_cpu / reps},
        "break_even_steps_measured": init_cpu / step_cpu,
        "catch_up_limit_steps": single.catch_up_limit,
    }

    if args.delay:
        out["delay"] = detection_delay(cal, vad, hop_s, single)

    if args.json:
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        report(out)


def detection_delay(cal: Any, vad: SileroVad, hop_s: float, model: IncrementalModel) -> dict[str, Any]:
    """Bona fide LA speech then spoofed LA speech; time from spoof onset to alert_start."""
    bona = read_audio(LA / "LA_T_1272637.flac")
    spoofs = [read_audio(LA / f"{u}.flac") for u in ("LA_T_1000137", "LA_D_1003356", "LA_E_6163791")]
    delays: list[float] = []
    missed = early = 0
    for spoof in spoofs:
        for bona_s in (6.0, 7.3, 8.0, 9.1, 10.6):
            onset = int(bona_s * SAMPLE_RATE_HZ)
            stream = np.concatenate([repeat_to(bona, onset), repeat_to(spoof, 10 * SAMPLE_RATE_HZ)])
            driver = StreamDriver(build_engine(cal.live, vad, hop_s))
            scorer = IncrementalWindowScorer(model)
            events = [
                e for p in range(0, stream.size, CHUNK) for e in driver.feed(stream[p : p + CHUNK], scorer)
            ]
            starts = [e.t for e in [*events, *driver.close(scorer)] if e.type == "alert_start"]  # type: ignore[attr-defined]
            early += any(t <= bona_s for t in starts)
            late = [t for t in starts if t > bona_s]
            if late:
                delays.append(late[0] - bona_s)
            else:
                missed += 1
    d = np.array(delays)
    return {
        "streams": len(spoofs) * 5,
        "missed": missed,
        "false_alerts_before_onset": early,
        "median_s": float(np.median(d)) if d.size else None,
        "p90_s": float(np.percentile(d, 90)) if d.size else None,
    }


def report(o: dict[str, Any]) -> None:
    s, m = o["one_stream"], o["multi_stream"]
    lines = [
        f"{o['model']}, hop {o['hop_samples']} samples ({o['hop_s']:.4f} s), {o['cores']} cores, "
        f"{o['ort_threads']} ONNX Runtime threads (no spinning)",
        f"one stream, {s['windows']} windows of real speech (VAD + gate + scoring per hop):",
        f"  full windows:  {s['full_ms_per_hop']['wall']:6.1f} ms wall  {s['full_ms_per_hop']['cpu']:6.1f} ms CPU per hop",
        f"  incremental:   {s['incremental_ms_per_hop']['wall']:6.1f} ms wall  "
        f"{s['incremental_ms_per_hop']['cpu']:6.1f} ms CPU per hop "
        f"({s['full_passes']} full pass, {s['steps']} steps)",
        f"  ratio full / incremental: {s['ratio_full_over_incremental']['wall']:.2f} wall, "
        f"{s['ratio_full_over_incremental']['cpu']:.2f} CPU (convolution MACs per step: "
        f"{o['mac_ratio_step_over_full']:.3f} of a full pass)",
        f"  max |incremental - full| score over {s['scored_windows']} windows: {s['max_abs_score_diff']:.2e}",
        f"{o['streams']} streams, one hop each per round, on {o['cores']} cores:",
    ]
    for kind, r in m.items():
        lines.append(
            f"  {kind:24s} {r['ms_per_round']['wall']:8.1f} ms wall {r['ms_per_round']['cpu']:8.1f} ms CPU per round"
            f" -> {r['realtime_streams_wall']:5.1f} real-time streams (wall), {r['realtime_streams_cpu']:5.1f} (CPU)"
        )
    sus = o["sustained_realtime_streams"]
    lines.append(
        f"sustained real-time streams on {o['cores']} cores: full {sus['full']['cpu']:.1f}, incremental "
        f"{sus['incremental']['cpu']:.1f} ({sus['incremental_mode']}) from CPU time; "
        f"delivered in this run (wall, lowered by other load): {sus['full']['wall']:.1f} and {sus['incremental']['wall']:.1f}"
    )
    c = o["catch_up"]
    lines += [
        f"skipped windows: one full pass {c['full_pass_ms']['cpu']:.1f} ms CPU, one step {c['step_ms']['cpu']:.1f} ms CPU: "
        f"catching up is cheaper up to {c['break_even_steps_measured']:.1f} skipped hops "
        f"(the scorer catches up to {c['catch_up_limit_steps']} hops, by MAC count)",
        f"state per stream: {o['state_bytes_per_stream']} bytes ({o['state_bytes_per_stream'] / 2**20:.2f} MiB)",
    ]
    if "delay" in o:
        d = o["delay"]
        lines.append(
            f"detection delay over {d['streams']} streams ({d['missed']} missed, {d['false_alerts_before_onset']} "
            f"false before onset): median {d['median_s']:.2f} s, p90 {d['p90_s']:.2f} s"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
