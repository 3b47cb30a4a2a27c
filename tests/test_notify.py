"""sd_notify protocol, watchdog-on-progress hooks, signals and pidfile against real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

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


def test_signal_handlers_set_flags():
    woken = []
    flags = install_signal_handlers(on_reload=lambda: woken.append("hup"))
    try:
        assert not flags.take_reload()
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)
        assert flags.take_reload() and not flags.take_reload()
        assert woken == ["hup", "hup"]
        assert not flags.stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert flags.stop.wait(1)
        flags.stop.clear()
        os.kill(os.getpid(), signal.SIGINT)
        assert flags.stop.wait(1)
    finally:
        flags.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_pidfile_locations(tmp_path):
    assert default_pidfile({}) == Path("/run/edge/edge.pid")
    assert default_pidfile({"RUNTIME_DIRECTORY": "/run/edge:/run/x"}) == Path("/run/edge/edge.pid")
    assert pidfile_for_run(None, {}) is None  # a shell run writes no pidfile
    assert pidfile_for_run(None, {"RUNTIME_DIRECTORY": str(tmp_path)}) == tmp_path / "edge.pid"
    assert pidfile_for_run(tmp_path / "p", {}) == tmp_path / "p"


CHILD = """
import sys, time
from edge.service import PidFile, install_signal_handlers
flags = install_signal_handlers()
with PidFile(sys.argv[1]):
    print("up", flush=True)
    while not flags.stop.is_set():
        if flags.take_reload():
            print("reload", flush=True)
        time.sleep(0.02)
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
