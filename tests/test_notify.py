"""sd_notify protocol, watchdog-on-progress hooks, signals and pidfile against real sockets."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import DEFAULT_MODEL
from helpers import wait_for

from edge.service import (
    Notifier,
    PidFile,
    ServiceError,
    ServiceHooks,
    default_pidfile,
    find_running,
    format_status,
    install_signal_handlers,
    monotonic_usec,
    notify_address,
    pidfile_for_run,
    send_reload,
)


class Receiver:
    """A real AF_UNIX datagram socket standing where systemd's notify socket would be."""

    def __init__(self, address: str | bytes, env_value: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.env_value = env_value

    def messages(self, wait: float = 0.2) -> list[dict[str, str]]:
        """Every datagram that arrives within `wait` s of the previous one, parsed."""
        out = []
        self.sock.settimeout(wait)
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(str(tmp_path / "notify.sock"), str(tmp_path / "notify.sock"))
    yield r
    r.close()


@pytest.fixture
def abstract_receiver():
    name = f"edge-test-{uuid.uuid4().hex}"
    r = Receiver(b"\0" + name.encode(), "@" + name)
    yield r
    r.close()


def notifier_for(r: Receiver, **env: str) -> Notifier:
    return Notifier.from_env({"NOTIFY_SOCKET": r.env_value, **env})


def test_no_notify_socket_is_a_noop():
    n = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert n.watchdog_interval is None
    assert not n.ready() and not n.status("x") and not n.watchdog()
    assert not n.reloading() and not n.stopping()
    assert n.sent == 0 and n._sock is None
    hooks = ServiceHooks(n)
    hooks.on_frame_classified({"fps": 1.0})
    hooks.on_reload()
    hooks.on_stop()
    assert n._sock is None


def test_address_forms():
    assert notify_address(None) is None
    assert notify_address("") is None
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abc/def") == b"\0abc/def"
    assert notify_address("vsock:2:1234") is None


@pytest.mark.arm64
@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_messages_arrive_exactly(kind, receiver, abstract_receiver):
    r = receiver if kind == "path" else abstract_receiver
    n = notifier_for(r)
    assert n.enabled
    before = monotonic_usec()
    assert n.ready("fps=30.0\nactive=cat")  # newline must not split the field
    assert n.status("waiting for camera")
    assert n.reloading()
    assert n.stopping()
    after = monotonic_usec()
    got = r.messages()
    assert got[0] == {"READY": "1", "STATUS": "fps=30.0 active=cat"}
    assert got[1] == {"STATUS": "waiting for camera"}
    assert set(got[2]) == {"RELOADING", "MONOTONIC_USEC"} and got[2]["RELOADING"] == "1"
    assert before <= int(got[2]["MONOTONIC_USEC"]) <= after
    assert got[3] == {"STOPPING": "1"}
    assert len(got) == 4
    n.close()


def test_watchdog_env(receiver):
    n = notifier_for(receiver, WATCHDOG_USEC="3000000", WATCHDOG_PID=str(os.getpid()))
    assert n.watchdog_interval == pytest.approx(1.5)
    assert n.watchdog()
    assert receiver.messages() == [{"WATCHDOG": "1"}]
    # Inherited from a parent: the watchdog is not ours.
    other = notifier_for(receiver, WATCHDOG_USEC="3000000", WATCHDOG_PID=str(os.getpid() + 1))
    assert other.watchdog_interval is None and not other.watchdog()
    assert notifier_for(receiver).watchdog_interval is None
    assert notifier_for(receiver, WATCHDOG_USEC="junk").watchdog_interval is None
    assert receiver.messages() == []


@pytest.mark.arm64
def test_hooks_ready_once_watchdog_only_on_progress(receiver):
    now = [100.0]
    n = notifier_for(receiver, WATCHDOG_USEC="2000000")  # ping at most every 1 s
    hooks = ServiceHooks(n, status_every_s=5.0, clock=lambda: now[0])
    assert receiver.messages() == []  # nothing before the first classified frame
    hooks.on_frame_classified({"fps": 29.84, "active": ["cat", "bird"]})
    assert receiver.messages() == [
        {"WATCHDOG": "1"},
        {"READY": "1", "STATUS": "fps=29.8 active=cat,bird"},
    ]
    # Frames every 0.25 s for 3 s: one ping per second, no READY again, no status yet.
    for _ in range(12):
        now[0] += 0.25
        hooks.on_frame_classified({"fps": 30.0, "active": []})
    assert receiver.messages() == [{"WATCHDOG": "1"}] * 3
    # The source stalls: 10 s without a classified frame means no pings at all.
    now[0] += 10
    assert receiver.messages() == []
    # Progress again: a ping and (5 s passed) a status.
    hooks.on_frame_classified({"fps": 0.4, "active": []})
    assert receiver.messages() == [{"WATCHDOG": "1"}, {"STATUS": "fps=0.4 active=-"}]


def test_hooks_reload_then_ready_on_next_frame(receiver):
    now = [0.0]
    hooks = ServiceHooks(notifier_for(receiver), clock=lambda: now[0])
    hooks.on_frame_classified("fps=5.0")
    hooks.on_reload()
    hooks.on_status("reloading config")
    now[0] += 1
    hooks.on_frame_classified("fps=5.0")
    hooks.on_stop()
    got = receiver.messages()
    assert [sorted(m) for m in got] == [
        ["READY", "STATUS"],
        ["MONOTONIC_USEC", "RELOADING"],
        ["STATUS"],
        ["READY", "STATUS"],
        ["STOPPING"],
    ]


def test_send_never_blocks_when_nobody_reads(receiver):
    n = notifier_for(receiver)
    t0 = time.monotonic()
    results = [n.status(f"message {i}") for i in range(3000)]
    assert time.monotonic() - t0 < 5
    assert not all(results) and n.dropped > 0  # the socket queue filled up: dropped, not stuck
    assert n.sent + n.dropped == 3000


def test_format_status():
    assert format_status({"fps": 12.345, "active": ("cat",), "drops": 3}) == (
        "fps=12.3 active=cat drops=3"
    )
    assert format_status("a\nb") == "a b"


def test_signal_handlers_call_back_and_restore():
    reload, stop = threading.Event(), threading.Event()
    hups = []
    signums = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
    # what was there before (SIGINT is SIG_IGN, not Python's handler, under `cmd &` or nohup)
    before = {s: signal.getsignal(s) for s in signums}
    handlers = install_signal_handlers(on_reload=lambda: (hups.append(1), reload.set()),
                                       on_stop=stop.set)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)
        assert reload.wait(1) and wait_for(lambda: len(hups) == 2, 1)
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(1)
        stop.clear()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(1)
    finally:
        handlers.restore()
    assert all(signal.getsignal(s) is before[s] for s in signums)


def test_pidfile_locations(tmp_path):
    assert default_pidfile({}) == Path("/run/edge/edge.pid")
    assert default_pidfile({"RUNTIME_DIRECTORY": "/run/edge:/run/x"}) == Path("/run/edge/edge.pid")
    assert pidfile_for_run(None, {}) is None  # a shell run writes no pidfile
    assert pidfile_for_run(None, {"RUNTIME_DIRECTORY": str(tmp_path)}) == tmp_path / "edge.pid"
    assert pidfile_for_run(tmp_path / "p", {}) == tmp_path / "p"


CHILD = """
import sys, threading
from edge.service import PidFile, install_signal_handlers
reload, stop = threading.Event(), threading.Event()
install_signal_handlers(on_reload=reload.set, on_stop=stop.set)
with PidFile(sys.argv[1]):
    print("up", flush=True)
    while not stop.is_set():
        if reload.wait(0.05):
            reload.clear()
            print("reload", flush=True)
print("bye", flush=True)
"""


def test_reload_via_pidfile_reaches_running_instance(tmp_path):
    pidfile = tmp_path / "run" / "edge.pid"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(pidfile)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "up"
        assert find_running(pidfile) == child.pid
        with pytest.raises(ServiceError, match="already running"), PidFile(pidfile):
            pass
        assert send_reload(pidfile) == child.pid
        assert child.stdout.readline().strip() == "reload"
        child.send_signal(signal.SIGTERM)
        assert child.stdout.readline().strip() == "bye"
        assert child.wait(5) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not pidfile.exists()  # removed on exit
    with pytest.raises(ServiceError, match="missing"):
        send_reload(pidfile)
    pidfile.write_text(f"{child.pid}\n")  # the process is gone: stale
    with pytest.raises(ServiceError, match="stale"):
        send_reload(pidfile)


# --------------------------------------------------------------------------------------
# End to end: `python -m edge run` on a live MJPEG-over-HTTP stream that we can stall, with
# a real notify socket standing in for systemd.


class MjpegServer:
    """An IP camera on 127.0.0.1: multipart JPEG frames at ~15 fps while `flowing` is set;
    when cleared, open connections stay open but silent (a hung camera)."""

    def __init__(self, images: list[Path]) -> None:
        import cv2

        self.flowing = threading.Event()
        self.closing = threading.Event()
        self.frames = 0
        self.gets: list[float] = []  # when each GET came: each (re)connect of the capture
        pics = [cv2.resize(cv2.imread(str(p)), (640, 480)) for p in images]
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.gets.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                n = 0
                while not server.closing.is_set():
                    if not server.flowing.wait(0.1):
                        continue
                    img = pics[(n // 30) % len(pics)].copy()
                    cv2.putText(img, str(n), (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
                    jpg = cv2.imencode(".jpg", img)[1].tobytes()
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                    try:
                        self.wfile.write(head % len(jpg) + jpg + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    n += 1
                    server.frames += 1
                    time.sleep(1 / 15)

            def log_message(self, *args):
                pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class Recorder:
    """Collects (monotonic time, message) from a receiver in a background thread."""

    def __init__(self, r: Receiver) -> None:
        self.r = r
        self.log: list[tuple[float, dict[str, str]]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.r.sock.settimeout(0.1)
        while not self.done.is_set():
            try:
                data = self.r.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            msg = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.log.append((time.monotonic(), msg))

    def since(self, t: float, key: str | None = None) -> list[dict[str, str]]:
        return [m for ts, m in list(self.log) if ts >= t and (key is None or key in m)]

    def wait_for(self, key: str, since: float, timeout: float) -> dict[str, str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.since(since, key)
            if got:
                return got[0]
            time.sleep(0.05)
        raise AssertionError(f"no {key} within {timeout} s; got {self.since(since)}")


def test_edge_run_end_to_end(tmp_path, receiver, assets, images):
    cam = MjpegServer([images / "cat.bmp", images / "bird.bmp"])
    events = tmp_path / "events.jsonl"
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        f"""
device: e2e
source: {{kind: opencv, device: "{cam.url}", stall_timeout_s: 1.0,
          backoff_initial_s: 0.2, backoff_max_s: 0.5}}
model: {{path: "{DEFAULT_MODEL}"}}
postprocess:
  - hysteresis: {{enter: 0.3, exit: 0.1}}
outputs:
  - jsonl: {{path: "{events}"}}
web: {{enabled: false}}
service: {{status_every_s: 0.5, pidfile: "{tmp_path / "edge.pid"}"}}
"""
    )
    env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}
    env.update(NOTIFY_SOCKET=receiver.env_value, WATCHDOG_USEC="400000")  # ping every 0.2 s
    rec = Recorder(receiver)
    t_start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # 1. The process is up and the model loaded, but the camera sends nothing: no READY,
        # not even once the capture gave up on the silent stream (stall_timeout_s) and
        # connected again.
        assert wait_for(lambda: len(cam.gets) >= 2 or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.stderr.read()
        assert rec.since(t_start, "READY") == [] and rec.since(t_start, "WATCHDOG") == []
        # 2. Frames flow: READY with a status, then watchdog pings and STATUS updates.
        t_flow = time.monotonic()
        cam.flowing.set()
        ready = rec.wait_for("READY", t_flow, 30)
        assert ready["READY"] == "1" and "fps" in ready["STATUS"]
        assert wait_for(lambda: len(rec.since(t_flow, "WATCHDOG")) >= 5
                        and len(rec.since(t_flow, "STATUS")) >= 3, 30), rec.since(t_flow)
        # 3. The camera hangs: the pings stop. Between the hang and the capture giving up on
        # the stream (>= stall_timeout_s 1 s with no frame, then a new GET; pings every 0.2 s
        # would make 5 or more) only the frames already in flight (decoded, in the slot,
        # being classified) may still ping.
        cam.flowing.clear()
        t_stall, gets = time.monotonic(), len(cam.gets)
        assert wait_for(lambda: len(cam.gets) > gets, 30), "the capture never reconnected"
        pings = [ts for ts, m in list(rec.log)
                 if t_stall <= ts <= cam.gets[-1] and "WATCHDOG" in m]
        assert len(pings) <= 3, [round(ts - t_stall, 2) for ts in pings]
        assert proc.poll() is None
        # ... and come back with the frames (the capture thread reconnects).
        t_back = time.monotonic()
        cam.flowing.set()
        rec.wait_for("WATCHDOG", t_back, 30)
        # 4. SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
        t_hup = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        reloading = rec.wait_for("RELOADING", t_hup, 10)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        t_reload = next(ts for ts, m in rec.log if ts >= t_hup and "RELOADING" in m)
        rec.wait_for("READY", t_reload, 10)
        # 5. SIGTERM: STOPPING=1 and a clean exit 0; the events file is complete.
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read()
        rec.wait_for("STOPPING", t_term, 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        rec.done.set()
        cam.close()
    lines = events.read_text().splitlines()
    assert lines and all(json.loads(ln)["type"] in ("enter", "exit", "status") for ln in lines)
    assert any(json.loads(ln)["type"] == "enter" for ln in lines)
    assert not (tmp_path / "edge.pid").exists()
