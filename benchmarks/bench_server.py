"""Real-time streams against a real ``spoofwatch serve``: what one box holds.

    python benchmarks/bench_server.py --streams 64 --clients 4 --seconds 20 \\
        [--workers W] [--device cpu|cuda] [--precision fp32|fp16] [--full-windows] [--json]

Starts ``python -m spoofwatch serve --port 0`` (its own process tree), then
K client processes open N WebSocket streams between them, each sending real
speech (LibriSpeech test-other from ../shared, a different stretch per
stream) paced at 1x in 20 ms frames, the stream starts spread over one hop.
Reports:

* close codes (1000 done, 1013 refused: at capacity or overloaded, ...);
* windows: scored, gated (no speech), dropped (stale, skipped to stay live), in %;
* score delay, window end -> score event at the client, p50/p90/p99/max;
* the server's CPU use (supervisor and workers, from /proc) in cores, and
  the client processes' (on a box that serves and drives itself, their share);
* the server's own view from ``GET /metrics`` (mean batch, refusals).

It needs no network and finishes in about ``startup + seconds + 30 s``
(``--startup-timeout-s`` bounds the model load); meant to run unattended on
a GPU box (see ../shared/tools/gpu/README.md for the set-up there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPOOFWATCH_SHARED", REPO.parent / "shared"))
SPEECH = SHARED / "data" / "speech" / "bonafide" / "librispeech_test-other"
RATE = 16000
HOP_S = 0.5


def load_corpus(max_s: float) -> np.ndarray:
    """LibriSpeech test-other utterances back to back (16 kHz float32), up to ``max_s``."""
    from spoofwatch.audio import read_audio

    parts, total = [], 0
    for path in sorted(SPEECH.glob("*.flac")):
        parts.append(read_audio(path))
        total += parts[-1].size
        if total >= max_s * RATE:
            break
    if not parts:
        raise SystemExit(f"no LibriSpeech audio in {SPEECH} (set SPOOFWATCH_SHARED)")
    return np.concatenate(parts).astype(np.float32)


# ---- client processes ----------------------------------------------------------------


class _ClientStream:
    """One stream of a client process: its frames, encoded once, and what it saw."""

    def __init__(self, audio: np.ndarray, start_at: float, frame: int) -> None:
        from spoofwatch.stream.codecs import encode

        payload = encode(audio, "pcm_s16le")  # 2 bytes per sample
        step = 2 * frame
        self.frames = [payload[i : i + step] for i in range(0, len(payload), step)]
        self.frame_s = frame / RATE
        self.start_at = start_at
        self.ws: Any = None
        self.started = 0.0
        self.sent = 0
        self.sending_done = asyncio.Event()
        self.out: dict[str, Any] = {"close_code": None, "close_reason": "", "delays": [], "summary": None}

    async def receive(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic()
                event = json.loads(message)
                if event["type"] == "score" and event["score"] is not None:
                    self.out["delays"].append(now - (self.started + event["t_end"]))
                elif event["type"] == "summary":
                    self.out["summary"] = event
        except ConnectionClosed:
            pass

    async def send_due(self, now: float) -> None:
        """Send every frame whose audio has been "captured" by ``now`` (real time)."""
        due = min(len(self.frames), int((now - self.started) / self.frame_s))
        try:
            while self.sent < due:
                await self.ws.send(self.frames[self.sent])
                self.sent += 1
        except ConnectionClosed:
            self.sent = len(self.frames)
        if self.sent == len(self.frames):
            self.sending_done.set()


async def _one_stream(url: str, stream: _ClientStream, live: set[_ClientStream]) -> dict[str, Any]:
    """Connect at the stream's start time, hand it to the pacer, and stop once it has sent everything."""
    await asyncio.sleep(max(0.0, stream.start_at - time.time()))
    try:
        stream.ws = await connect(url, max_size=None, open_timeout=60)
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        stream.out["close_reason"] = f"connect failed: {exc}"
        return stream.out
    async with stream.ws as ws:
        reader = asyncio.create_task(stream.receive())
        try:
            await ws.send(
                json.dumps({"type": "start", "sample_rate": RATE, "encoding": "pcm_s16le", "channels": 1})
            )
            stream.started = time.monotonic()
            live.add(stream)
            await stream.sending_done.wait()
            await ws.send(json.dumps({"type": "stop"}))
        except ConnectionClosed:
            pass
        finally:
            live.discard(stream)
        await reader
    stream.out["close_code"] = ws.close_code
    stream.out["close_reason"] = ws.close_reason or ""
    return stream.out


#: Pacer ticks per frame. Streams start at spread times, so their frames fall
#: due at spread phases; sending them only on frame boundaries would deliver
#: every stream's frame in one burst, which a server handles more cheaply
#: than independent callers' frames (measured: 5.5 against 8.1 ms of server
#: CPU per second of audio at 32 streams in 20 ms frames).
PACER_TICKS_PER_FRAME = 16


async def _pace(live: set[_ClientStream], frame_s: float, finished: asyncio.Event) -> None:
    """One timer for every stream of the process: each tick, send what has become due.

    Per-stream sleeps cost a timer and a task wake-up per frame (20 ms frames:
    50 per second per stream), which made the clients nearly as costly as
    the server on a box that drives itself (docs/scaling.md).
    """
    tick_s = frame_s / PACER_TICKS_PER_FRAME
    while not finished.is_set():
        for stream in list(live):
            await stream.send_due(time.monotonic())
        await asyncio.sleep(tick_s - time.monotonic() % tick_s)


def client_main(
    url: str, offsets: list[float], seconds: float, start_at: float, frame_ms: int, results: Any
) -> None:
    """Send one real-time stream per offset; put ``{"streams": [...], "cpu_s": ...}``
    (this process's CPU time while streaming: on a box that also serves, the
    clients' share of its cores)."""
    corpus = load_corpus(max(offsets) + seconds + 1)
    n = int(seconds * RATE)
    frame = RATE * frame_ms // 1000

    def clip(offset: float) -> np.ndarray:
        start = int(offset * RATE) % max(1, corpus.size - n)
        return np.resize(corpus[start:], n)  # wraps around a short corpus

    async def run() -> list[dict[str, Any]]:
        # Stream starts spread over one hop, so that windows do not all fall due together.
        streams = [
            _ClientStream(clip(off), start_at + (i * HOP_S / max(1, len(offsets))) % HOP_S, frame)
            for i, off in enumerate(offsets)
        ]
        live: set[_ClientStream] = set()
        finished = asyncio.Event()
        pacer = asyncio.create_task(_pace(live, frame / RATE, finished))
        try:
            return list(await asyncio.gather(*(_one_stream(url, s, live) for s in streams)))
        finally:
            finished.set()
            await pacer

    cpu0 = time.process_time()
    streams = asyncio.run(run())
    results.put({"streams": streams, "cpu_s": time.process_time() - cpu0})


# ---- the server ------------------------------------------------------------------------


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        cmd = [
            sys.executable,
            "-m",
            "spoofwatch",
            "serve",
            "--port",
            "0",
            "--device",
            args.device,
            "--max-streams",
            str(args.max_streams or args.streams),
            "--precision",
            args.precision,
        ]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        if args.ingest_threads:
            cmd += ["--ingest-threads", str(args.ingest_threads)]
        if args.max_batch_windows:
            cmd += ["--max-batch-windows", str(args.max_batch_windows)]
        if args.no_load_shedding:
            cmd.append("--no-load-shedding")
        if args.full_windows:
            cmd.append("--full-windows")
        if args.keep_live_windows:
            cmd.append("--keep-live-windows")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        # Its own process group: stop() can then kill every worker, restarted ones included.
        self.proc = subprocess.Popen(
            cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, start_new_session=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")

    def wait_ready(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise StartupTimeout(f"the server was not ready within {timeout_s:g} s") from None
            self.log.append(line)
            if not line:
                raise SystemExit("server exited during start-up:\n" + "".join(self.log))
            m = re.search(r"serving \S+ on ws://[^:]+:(\d+)/", line)
            if m:
                return int(m[1])

    def drain_log(self) -> list[str]:
        """Every line the server logged, including those after start-up (call once it stopped)."""
        while True:
            try:
                line = self.lines.get(timeout=5)
            except queue.Empty:
                return self.log
            if not line:
                return self.log
            self.log.append(line)

    def tree(self) -> list[int]:
        """The supervisor and every descendant (the workers)."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
        pids, frontier = [self.proc.pid], [self.proc.pid]
        while frontier:
            frontier = [p for p, pp in parents.items() if pp in frontier]
            pids += frontier
        return pids

    def cpu_s(self) -> float:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
            except (OSError, IndexError, ValueError):
                continue
        return total

    def stop(self) -> None:
        """Stop the server and every worker: a worker left behind would keep
        its GPU memory and cores from the next run on the same machine."""
        self.proc.terminate()  # the supervisor drains its workers
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + 10
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # any worker left behind
            while time.monotonic() < deadline:
                os.killpg(self.proc.pid, 0)  # raises once the group is gone
                time.sleep(0.1)


def scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        page = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            key = s.name + "".join(f"[{k}={v}]" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" not in s.labels:
                out[key] = s.value
    return out


def drive(
    url: str, n_streams: int, n_clients: int, args: argparse.Namespace, server_cpu: Any
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run ``n_streams`` real-time streams from ``n_clients`` processes; their results and the
    CPU used meanwhile (cores) by the server and by the client processes."""
    mp = multiprocessing.get_context("spawn")
    results: Any = mp.Queue()
    offsets = [7.0 * i for i in range(n_streams)]  # a different stretch of speech per stream
    start_at = time.time() + 5.0  # the clients load their audio first
    procs = [
        mp.Process(
            target=client_main,
            args=(url, offsets[k::n_clients], args.seconds, start_at, args.frame_ms, results),
        )
        for k in range(n_clients)
    ]
    for p in procs:
        p.start()
    cpu0, wall0 = server_cpu(), time.monotonic()
    streams: list[dict[str, Any]] = []
    client_cpu_s = 0.0
    for _ in procs:
        got = results.get(timeout=args.seconds + 120)
        streams += got["streams"]
        client_cpu_s += got["cpu_s"]
    wall = time.monotonic() - wall0
    cores = (server_cpu() - cpu0) / wall
    for p in procs:
        p.join()
    return streams, {"server": cores, "clients": client_cpu_s / wall}


# ---- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--clients", type=int, default=2, help="client processes sharing the streams")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per stream, sent at 1x")
    parser.add_argument("--workers", type=int, default=None, help="server workers (default: serve's default)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument(
        "--precision", default="fp32", choices=("fp32", "int8", "fp16"), help="serve --precision (fp16: CUDA)"
    )
    parser.add_argument("--max-streams", type=int, default=None, help="default: --streams")
    parser.add_argument("--ingest-threads", type=int, default=None, help="serve --ingest-threads")
    parser.add_argument(
        "--max-batch-windows", type=int, default=None, help="serve --max-batch-windows (default: serve's)"
    )
    parser.add_argument("--no-load-shedding", action="store_true")
    parser.add_argument(
        "--full-windows", action="store_true", help="serve with --full-windows (default: incremental)"
    )
    parser.add_argument(
        "--keep-live-windows",
        action="store_true",
        help="serve with --keep-live-windows: score every live window, drop none (delay grows if it cannot keep up)",
    )
    parser.add_argument("--frame-ms", type=int, default=20)
    parser.add_argument("--startup-timeout-s", type=float, default=180.0)
    parser.add_argument(
        "--baseline", action="store_true", help="first run one stream alone; report delay ratios against it"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    parser.add_argument("--server-log", type=Path, default=None, help="write the server's whole log here")
    args = parser.parse_args()
    if not 1 <= args.clients <= args.streams:
        parser.error("expected 1 <= --clients <= --streams")

    # `timeout` (gpu_serving.sh) sends SIGTERM: exit through the `finally` below,
    # so that the server (its own process group) is stopped with us.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    server = Server(args)
    try:
        t_start = time.monotonic()
        try:
            port = server.wait_ready(args.startup_timeout_s)
        except StartupTimeout as exc:
            # What the workers logged so far (warm-up, timings) is the measurement.
            failed = {
                "error": str(exc),
                **log_figures(server.log),
                "gpu_memory_used_mb": gpu_memory_used_mb(),
            }
            print(json.dumps(failed) if args.json else failed)
            raise SystemExit(3) from None
        startup_s = time.monotonic() - t_start
        gpu_mb = {"after_startup": gpu_memory_used_mb()}
        url = f"ws://127.0.0.1:{port}/"
        # The baseline: one stream alone on the same server, same audio length.
        baseline = drive(url, 1, 1, args, server.cpu_s) if args.baseline else None
        streams, cores = drive(url, args.streams, args.clients, args, server.cpu_s)
        gpu_mb["after_streams"] = gpu_memory_used_mb()
        metrics = scrape(port)
    finally:
        server.stop()
        if args.server_log is not None:
            args.server_log.write_text("".join(server.drain_log()))

    report = summarise(args, streams, metrics, startup_s, cores)
    report.update(log_figures(server.log))
    report["capacity_streams_metric"] = metrics.get("spoofwatch_capacity_streams")
    # The costliest worker's host cost as measured while serving (ms CPU per second of audio).
    live_cost = metrics.get("spoofwatch_host_cpu_seconds_per_audio_second")
    report["host_cost_live_ms_per_audio_s"] = None if live_cost is None else round(1e3 * live_cost, 2)
    # The GPU's memory in use (all processes).
    report["gpu_memory_used_mb"] = gpu_mb
    if baseline is not None:
        one = summarise(args, baseline[0], {}, startup_s, baseline[1])["score_delay_s"]
        many = report["score_delay_s"]
        report["baseline_1_stream_delay_s"] = one
        report["delay_ratio_vs_1_stream"] = {
            q: round(many[q] / one[q], 2) if many[q] and one[q] else None for q in ("p50", "p99")
        }
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)


class StartupTimeout(Exception):
    pass


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def log_figures(log: list[str]) -> dict[str, list[float]]:
    """What the workers logged at start-up: their scoring-rate timing (windows/s
    at the largest batch) and how long their batch buckets took to warm (model/shapes.py)."""
    text = "".join(log)
    return {
        "calibrated_windows_per_s": [
            float(m[1]) for m in re.finditer(r"measured scoring capacity: ([\d.]+) windows/s", text)
        ],
        "warmup_s": [
            float(m[1]) for m in re.finditer(r"batch buckets opened and run once in ([\d.]+) s", text)
        ],
        # Admission control's start-up host cost (ms of CPU per second of audio): the supervisor's probe.
        "host_cost_probe_ms_per_audio_s": [
            float(m[1]) for m in re.finditer(r"measured host cost: ([\d.]+) ms CPU per second of audio", text)
        ],
    }


def gpu_memory_used_mb() -> int | None:
    """Memory in use on GPU 0 (``nvidia-smi``), or ``None`` without one."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return int(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def summarise(
    args: argparse.Namespace,
    streams: list[dict[str, Any]],
    metrics: dict[str, float],
    startup_s: float,
    cores: dict[str, float],
) -> dict[str, Any]:
    codes: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for s in streams:
        codes[str(s["close_code"])] = codes.get(str(s["close_code"]), 0) + 1
        if s["close_code"] not in (1000, None) or not s["summary"]:
            reasons[s["close_reason"][:80]] = reasons.get(s["close_reason"][:80], 0) + 1
    summaries = [s["summary"] for s in streams if s["summary"]]
    per_worker: dict[str, int] = {}
    for x in summaries:  # stream ids of a worker process are "w<index>-<pid>-s<n>"
        worker = str(x.get("stream_id", "?")).split("-")[0]
        per_worker[worker] = per_worker.get(worker, 0) + 1
    windows = sum(x["windows"] for x in summaries)
    dropped = sum(x["dropped_windows"] for x in summaries)
    scored = sum(x["scored_windows"] for x in summaries)
    delays = np.array([d for s in streams for d in s["delays"]]) if summaries else np.zeros(0)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(delays, q)), 3) if delays.size else None

    batches = metrics.get("spoofwatch_batch_size_windows_count", 0.0)
    return {
        "streams": args.streams,
        "clients": args.clients,
        "seconds": args.seconds,
        "workers": int(metrics.get("spoofwatch_workers", 0)),
        "device": args.device,
        "precision": args.precision,
        "max_batch_windows": args.max_batch_windows,
        "ingest_threads": args.ingest_threads,
        "scoring": "full" if args.full_windows else "incremental",
        "provider": next(
            (k.split("=")[1].rstrip("]") for k in metrics if k.startswith("spoofwatch_provider[")), None
        ),
        "startup_s": round(startup_s, 1),
        "close_codes": codes,
        "close_reasons": reasons,
        "completed_streams": len(summaries),
        "completed_per_worker": dict(sorted(per_worker.items())),
        "windows": windows,
        "scored_windows": scored,
        "gated_windows": windows - scored - dropped,
        "dropped_windows": dropped,
        "dropped_pct": round(100 * dropped / windows, 2) if windows else None,
        "score_delay_s": {
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "max": pct(100),
            "n": int(delays.size),
        },
        "server_cpu_cores": round(cores["server"], 2),
        "client_cpu_cores": round(cores["clients"], 2),
        "machine_cores": os.cpu_count(),
        "server_mean_batch_windows": round(metrics.get("spoofwatch_batch_size_windows_sum", 0.0) / batches, 2)
        if batches
        else None,
        "server_refused": {
            k: v for k, v in metrics.items() if k.startswith("spoofwatch_refused_connections_total")
        },
    }


def print_report(r: dict[str, Any]) -> None:
    d = r["score_delay_s"]
    print(
        f"server: {r['workers']} worker(s), provider {r['provider']}, ready in {r['startup_s']} s\n"
        f"streams: {r['streams']} x {r['seconds']:g} s from {r['clients']} client processes; "
        f"close codes {r['close_codes']}; completed {r['completed_streams']} (per worker {r['completed_per_worker']})\n"
        + (f"  other ends: {r['close_reasons']}\n" if r["close_reasons"] else "")
        + f"windows: {r['windows']} ({r['scored_windows']} scored, {r['gated_windows']} gated, "
        f"{r['dropped_windows']} dropped = {r['dropped_pct']} %)\n"
        f"score delay (window end -> score event): p50 {d['p50']} s, p90 {d['p90']} s, p99 {d['p99']} s, "
        f"max {d['max']} s over {d['n']} windows\n"
        f"server CPU: {r['server_cpu_cores']} cores of {r['machine_cores']} (clients: {r['client_cpu_cores']}); "
        f"mean batch {r['server_mean_batch_windows']} windows\n"
        f"server refusals: {r['server_refused'] or 'none'}\n"
        f"workers' start-up timing (windows/s): {r['calibrated_windows_per_s']}; "
        f"bucket warm-up (s): {r['warmup_s'] or 'none'}; GPU memory used (MB): {r['gpu_memory_used_mb']}\n"
        f"host cost (ms CPU per second of audio): start-up probe {r['host_cost_probe_ms_per_audio_s'] or 'none'}, "
        f"live {r['host_cost_live_ms_per_audio_s']} (the costliest worker)"
        + (
            f"\nbaseline, 1 stream alone: delay {r['baseline_1_stream_delay_s']}; "
            f"ratio of {r['streams']} streams to it: {r['delay_ratio_vs_1_stream']}"
            if "baseline_1_stream_delay_s" in r
            else ""
        )
    )


if __name__ == "__main__":
    main()
