"""Peak memory and thread count of a service-like `edge run`, to size MemoryMax=/TasksMax=.

    python benchmarks/service_limits.py [--seconds 60] [--model PATH] [--threads auto]

Runs `python -m edge run` on a looping 640x480 demo clip paced like a 30 fps camera, with
the web page (two MJPEG viewers and a poller of /api/status and /metrics), and outputs log,
jsonl, snapshot, clip, mqtt (to a port nobody listens on: events spool) and a webhook (to a
local server). Half-way it opens 200 half-sent HTTP connections. It samples the child's
/proc/PID/status every 0.1 s and prints the peak VmHWM (RSS high-water mark) and Threads.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _assets import DEFAULT_MODEL, IMAGES, REPO  # noqa: E402

from edge.demo import make_clip  # noqa: E402


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def viewer(url: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url + "stream.mjpg", timeout=10) as r:
                while not stop.is_set() and r.read(65536):
                    pass
        except OSError:
            time.sleep(0.5)


def poller(url: str, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        for path in ("api/status", "metrics", "api/events?since=0"):
            try:
                urllib.request.urlopen(url + path, timeout=10).read()
            except OSError:
                pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--threads", default="auto")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edge-limits-"))
    clip = make_clip(tmp / "clip.avi", IMAGES, frames_per_image=30)
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    port = free_port()
    cfg = tmp / "edge.yaml"
    cfg.write_text(f"""
device: limits
source: {{loop: true}}
model: {{threads: {args.threads}}}
postprocess:
  - smooth: {{method: ema, alpha: 0.5}}
  - hysteresis: {{enter: 0.3, exit: 0.2, min_frames: 1, cooldown_s: 0}}
outputs:
  - log: {{every_s: 10}}
  - jsonl: {{path: {tmp / "events.jsonl"}}}
  - snapshot: {{dir: {tmp / "snaps"}, max_mb: 50}}
  - clip: {{dir: {tmp / "clips"}, max_mb: 100}}
  - mqtt: {{port: {free_port()}, spool: {tmp / "spool.jsonl"}}}
  - webhook: {{url: "http://127.0.0.1:{hook.server_port}/hook"}}
web: {{bind: "127.0.0.1:{port}"}}
""")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg), "--source", str(clip),
         "--model", args.model],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=(tmp / "edge.log").open("w"))
    url = f"http://127.0.0.1:{port}/"
    stop = threading.Event()
    peak = {"VmHWM": 0, "Threads": 0}
    socks = []
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "healthz", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        helpers = [threading.Thread(target=viewer, args=(url, stop), daemon=True)
                   for _ in range(2)]
        helpers.append(threading.Thread(target=poller, args=(url, stop), daemon=True))
        for t in helpers:
            t.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            if not socks and time.monotonic() - t0 > args.seconds / 2:
                for _ in range(200):
                    s = socket.create_connection(("127.0.0.1", port))
                    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    socks.append(s)
            st = status(proc.pid)
            for k in peak:
                peak[k] = max(peak[k], st[k])
            time.sleep(0.1)
            if proc.poll() is not None:
                print((tmp / "edge.log").read_text()[-3000:])
                return 1
    finally:
        stop.set()
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(20)
        hook.shutdown()
    print(f"model {Path(args.model).name}, threads {args.threads}, {args.seconds:g} s, "
          f"{os.cpu_count()} CPUs: peak VmHWM {peak['VmHWM'] / 1024:.0f} MB, "
          f"peak Threads {peak['Threads']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
