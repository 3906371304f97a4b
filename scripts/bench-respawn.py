#!/usr/bin/env python3
"""Time from a worker's death (SIGKILL) to its replacement answering /healthz.

One worker, so the only process that can answer after the kill is the replacement. Repeats
20 times and prints min / median / max in milliseconds. Loopback only, bounded.
"""
import os, signal, socket, statistics, subprocess, sys, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/wsredis"
PORT = int(os.environ.get("PORT", "18081"))
ROUNDS = 20


def health_pid():
    try:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=1)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
        s.close()
        body = data.split(b"\r\n\r\n", 1)[1]
        import json
        return json.loads(body)["pid"]
    except Exception:
        return None


master = subprocess.Popen([BIN, "serve", "--bind", f"127.0.0.1:{PORT}", "--workers", "1",
                           "--metrics-bind", "off", "--log", "warn"])
try:
    deadline = time.time() + 10
    while health_pid() is None and time.time() < deadline:
        time.sleep(0.02)
    times = []
    for _ in range(ROUNDS):
        victim = health_pid()
        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        while True:
            pid = health_pid()
            if pid is not None and pid != victim:
                break
            if time.perf_counter() - t0 > 10:
                raise SystemExit("no replacement within 10 s")
        times.append((time.perf_counter() - t0) * 1000)
        # Let the replacement live past the master's 1 s "failed start" window, so each kill
        # measures a plain crash replacement, not the start-up backoff.
        time.sleep(1.2)
    print(f"worker death to replacement answering, {ROUNDS} kills: "
          f"min {min(times):.1f} ms, median {statistics.median(times):.1f} ms, "
          f"max {max(times):.1f} ms")
finally:
    master.send_signal(signal.SIGTERM)
    master.wait(timeout=30)
