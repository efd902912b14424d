"""Server memory per client that sends audio and never reads.

    python benchmarks/bench_slow_clients.py [--clients 20] [--frame-kib 512]

Starts ``spoofwatch serve`` in a subprocess, reads its RSS (``VmRSS``),
then opens N raw WebSocket clients that send ``start`` and then audio
frames of ``--frame-kib`` as fast as TCP lets them, never reading a byte
back. Once every client's sends are blocked (TCP pushes back because the
server stopped reading), it reads the RSS again and prints the growth per
client, next to the bound the server configuration implies
(``max_queue_messages`` x ``max_message_bytes`` of received frames, plus
``write_limit_bytes`` of events and at most 10 s of audio in the inbox).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from spoofwatch.stream.server.context import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload  # zero mask: payload unchanged


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text)[1]) / 1024  # type: ignore[index]


def never_reading_client(
    port: int, payload: bytes, blocked: threading.Event, sockets: list[socket.socket]
) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sockets.append(sock)
    sock.sendall(HANDSHAKE)
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    start = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1}
    sock.sendall(frame(0x1, json.dumps(start).encode()))
    sock.settimeout(5.0)  # a send that cannot progress for 5 s: TCP is pushing back
    data = frame(0x2, payload)
    try:
        while True:
            sock.sendall(data)
    except TimeoutError:
        blocked.set()
    except OSError:
        blocked.set()  # closed by the server (keepalive): also the end of its growth


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--frame-kib", type=int, default=512)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spoofwatch",
            "serve",
            "--port",
            "0",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--max-streams",
            str(2 * args.clients + 1),
        ],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    port = 0
    for line in proc.stderr:
        if m := re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line):
            port = int(m[1])
            break
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    rng = np.random.default_rng(0)
    payload = (rng.standard_normal(args.frame_kib * 512) * 3000).astype("<i2").tobytes()
    sockets: list[socket.socket] = []
    try:
        # Two waves of N clients: the first also warms up what every stream
        # shares (ONNX Runtime's arena, thread pools), so the growth during the
        # second wave is what each further client costs.
        rss = [rss_mib(proc.pid)]
        for _ in range(2):
            events = [threading.Event() for _ in range(args.clients)]
            for e in events:
                threading.Thread(
                    target=never_reading_client, args=(port, payload, e, sockets), daemon=True
                ).start()
            for e in events:
                e.wait(600)
            rss.append(rss_mib(proc.pid))
        c = ServerConfig()
        bound = (c.max_queue_messages * c.max_message_bytes + c.write_limit_bytes) / 2**20
        print(
            f"never-reading clients, {args.frame_kib} KiB frames: server RSS {rss[0]:.0f} MiB idle, "
            f"{rss[1]:.0f} MiB with {args.clients}, {rss[2]:.0f} MiB with {2 * args.clients}: "
            f"{(rss[2] - rss[1]) / args.clients:.2f} MiB per further client (WebSocket buffers bounded at "
            f"{bound:.1f} MiB: max_queue {c.max_queue_messages} x {c.max_message_bytes >> 10} KiB + write limit)"
        )
    finally:
        for s in sockets:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


if __name__ == "__main__":
    main()
