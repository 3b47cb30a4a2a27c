"""The mqtt sink against a real mosquitto broker on 127.0.0.1, with a real paho subscriber."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import REPO
from test_sinks import make_event, make_frame, make_result, photo, wait_for

from edge.errors import ConfigError
from edge.sinks.outbox import Outbox

MOSQUITTO = Path("/usr/sbin/mosquitto")
pytestmark = pytest.mark.skipif(
    not MOSQUITTO.exists(), reason="mosquitto not installed (apt install mosquitto)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto process on a free local port; stop() and start() simulate an outage."""

    def __init__(self, tmp: Path, persistence: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", *extra]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read tmp_path
        if not any(x.startswith("allow_anonymous") for x in extra):
            lines.append("allow_anonymous true")
        if persistence:
            lines += ["persistence true", f"persistence_location {tmp}/"]
        else:
            lines.append("persistence false")
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = tmp / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    msg = f"mosquitto did not start: {self.log.read_text()}"
                    raise RuntimeError(msg) from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def persistent_broker(tmp_path):
    b = Broker(tmp_path, persistence=True)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A real paho client recording every message; reconnects quickly after an outage."""

    def __init__(self, port: int, topics: str = "#", client_id: str = "", clean=True) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=clean)
        self.mid: int | None = None
        self.subscribed = threading.Event()  # the broker's SUBACK granted our subscription
        self.c.on_connect = lambda c, u, f, rc, p: setattr(self, "mid", c.subscribe(topics, 1)[1])
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid == self.mid and not any(rc.is_failure for rc in reason_codes):
            self.subscribed.set()

    def wait_subscribed(self, timeout: float = 10) -> Subscriber:
        """Block until the broker acknowledged the subscription: later messages reach us."""
        assert self.subscribed.wait(timeout), "no SUBACK from the broker"
        return self

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def payloads(self, topic: str) -> list[str]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def events(self, base: str) -> list[dict]:
        return [json.loads(p) for p in self.payloads(f"{base}/events")]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def mqtt_outbox(port: int, tmp: Path, **params) -> Outbox:
    spec = {"port": port, "spool": str(tmp / "spool.jsonl"), "backoff_min_s": 0.1,
            "backoff_max_s": 0.5, "keepalive_s": 5, **params}
    ob = Outbox([("mqtt", spec)], "porch pi", "mobilenet_v2")
    ob.start()
    wait_for(lambda: ob.sink_stats()["mqtt"]["connected"], 10, "the sink to connect")
    return ob


def publish(ob: Outbox, seq: int, kind: str = "enter", label: str = "cat", roi=None, img=None):
    f = make_frame(seq, img)
    ob.publish(make_result(f, [(label, 0.9)], roi), [make_event(kind, label, f, roi)], f)


BASE = "edge/porch_pi"


@pytest.fixture(scope="module")
def img(assets):
    return photo("cat.bmp")


def test_events_state_availability_and_discovery(broker, tmp_path, img):
    sub = Subscriber(broker.port).wait_subscribed()
    ob = mqtt_outbox(broker.port, tmp_path, homeassistant=True, labels=["feeder/bird"])
    publish(ob, 1, "enter", "tabby cat", "feeder", img)
    publish(ob, 2, "status", "tabby cat", "feeder", img)
    publish(ob, 3, "exit", "tabby cat", "feeder", img)
    wait_for(lambda: len(sub.events(BASE)) == 3, 10, "3 events")
    ev = sub.events(BASE)
    assert [e["seq"] for e in ev] == [1, 2, 3]
    assert ev[0]["device"] == "porch pi" and ev[0]["model"] == "mobilenet_v2"
    assert ev[0]["label"] == "tabby cat" and ev[0]["ts"].endswith("Z")
    assert sub.payloads(f"{BASE}/availability")[0] == "online"
    wait_for(lambda: sub.payloads(f"{BASE}/state/feeder/tabby_cat") == ["ON", "OFF"], 5, "state")
    disc = {t: json.loads(p) for t, p, _ in sub.messages if t.startswith("homeassistant/")}
    assert set(disc) == {
        "homeassistant/binary_sensor/porch_pi/feeder_bird/config",  # announced at connect
        "homeassistant/binary_sensor/porch_pi/feeder_tabby_cat/config",  # on its first event
    }
    for cfg in disc.values():
        for key in ("name", "unique_id", "state_topic", "availability_topic", "payload_on",
                    "payload_off", "device"):
            assert key in cfg
        assert cfg["availability_topic"] == f"{BASE}/availability"
        assert cfg["device"]["identifiers"] == ["edge_porch_pi"]
    cat = disc["homeassistant/binary_sensor/porch_pi/feeder_tabby_cat/config"]
    assert cat["state_topic"] == f"{BASE}/state/feeder/tabby_cat"
    assert cat["name"] == "feeder tabby cat"
    assert cat["unique_id"] == "edge_porch_pi_feeder_tabby_cat"
    ob.close()
    wait_for(lambda: sub.payloads(f"{BASE}/availability")[-1:] == ["offline"], 5, "offline")
    s = ob.sink_stats()["mqtt"]
    assert s["sent"] == 3 and s["spooled"] == 0 and s["lost"] == 0 and s["dropped"] == 0
    sub.close()


def retained(port: int, topic: str, expect: set[str]) -> dict[str, str]:
    """What a newly connecting client gets as retained messages under `topic` (waiting until
    every topic in `expect` has arrived)."""
    sub = Subscriber(port, topic)

    def got() -> dict[str, str]:
        with sub.lock:
            return {t: p for t, p, r in sub.messages if r}

    try:
        wait_for(lambda: expect <= set(got()), 10, f"retained {sorted(expect)}")
    finally:
        sub.close()
    return got()


def test_retained_state_is_correct_after_a_broker_restart(broker, tmp_path, img):
    ob = mqtt_outbox(broker.port, tmp_path)
    publish(ob, 1, "enter", "cat", None, img)
    publish(ob, 2, "enter", "bird", "feeder", img)
    publish(ob, 3, "exit", "bird", "feeder", img)
    wait_for(lambda: ob.sink_stats()["mqtt"]["sent"] == 3, 5, "acks")
    want = {f"{BASE}/state/all/cat": "ON", f"{BASE}/state/feeder/bird": "OFF",
            f"{BASE}/availability": "online"}
    attrs = f"{BASE}/state/all/cat/attributes"
    got = retained(broker.port, f"{BASE}/#", {*want, attrs})
    assert {t: got.get(t) for t in want} == want
    assert json.loads(got[attrs])["seq"] == 1
    # a broker without persistence forgets retained messages: the sink republishes them
    broker.stop()
    wait_for(lambda: not ob.sink_stats()["mqtt"]["connected"], 5, "the disconnect")
    broker.start()
    # a client on the new broker sees the republished state arrive (live if it subscribed
    # first, else retained); the attributes of the last key come last
    watch = Subscriber(broker.port, f"{BASE}/#")
    try:
        wait_for(lambda: ob.sink_stats()["mqtt"]["connects"] == 2, 10, "the reconnect")
        wait_for(lambda: watch.payloads(f"{BASE}/state/feeder/bird/attributes"), 10,
                 "the republished state")
    finally:
        watch.close()
    got = retained(broker.port, f"{BASE}/#", {*want, attrs})
    assert {t: got.get(t) for t in want} == want
    assert json.loads(got[attrs])["seq"] == 1
    ob.close()


KILLED = """
import sys, time
from edge.errors import ConfigError
from edge.sinks.outbox import Outbox
ob = Outbox([("mqtt", {"port": int(sys.argv[1]), "spool": sys.argv[2]})], "porch pi", "m")
ob.start()
while not ob.sink_stats()["mqtt"]["connected"]:
    time.sleep(0.02)
print("ready", flush=True)
time.sleep(600)
"""


def test_last_will_fires_when_the_process_is_killed(broker, tmp_path):
    sub = Subscriber(broker.port, f"{BASE}/availability").wait_subscribed()
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(broker.port), str(tmp_path / "spool.jsonl")],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        wait_for(lambda: sub.payloads(f"{BASE}/availability") == ["online"], 5, "online")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    wait_for(lambda: sub.payloads(f"{BASE}/availability") == ["online", "offline"], 5, "the will")
    avail = f"{BASE}/availability"
    assert retained(broker.port, avail, {avail}) == {avail: "offline"}
    sub.close()


def test_broker_outage_loses_no_event(persistent_broker, tmp_path, img):
    """Events during an outage are spooled on disk, also across a restart of the sender, and
    replayed in order when the broker is back."""
    broker = persistent_broker
    sub = Subscriber(broker.port, f"{BASE}/events", client_id="test-sub", clean=False)
    sub.wait_subscribed()
    ob = mqtt_outbox(broker.port, tmp_path)
    for seq in range(1, 6):
        publish(ob, seq, img=img)
    wait_for(lambda: ob.sink_stats()["mqtt"]["sent"] == 5, 5, "acks")
    broker.stop()
    wait_for(lambda: not ob.sink_stats()["mqtt"]["connected"], 5, "the disconnect")
    for seq in range(6, 26):
        publish(ob, seq, img=img)
    wait_for(lambda: ob.sink_stats()["mqtt"]["spooled"] == 20, 5, "the spool")
    ob.close(timeout=2)  # the sender restarts during the outage: the spool stays on disk
    assert ob.sink_stats()["mqtt"]["spooled"] == 20
    ob2 = Outbox([("mqtt", {"port": broker.port, "spool": str(tmp_path / "spool.jsonl"),
                            "backoff_min_s": 0.1, "backoff_max_s": 0.5})], "porch pi", "m")
    ob2.start()
    for seq in range(26, 31):
        publish(ob2, seq, img=img)
    wait_for(lambda: ob2.sink_stats()["mqtt"]["spooled"] == 25, 10, "the 5 new events spooled")
    broker.start()
    wait_for(lambda: len({e["seq"] for e in sub.events(BASE)}) == 30, 20, "all 30 events")
    seqs = [e["seq"] for e in sub.events(BASE)]
    assert sorted(set(seqs)) == list(range(1, 31))
    assert [s for s in seqs if s > 5] == list(range(6, 31))  # replayed in order
    wait_for(lambda: ob2.sink_stats()["mqtt"]["spooled"] == 0, 5, "the spool to empty")
    s = ob2.sink_stats()["mqtt"]
    assert s["lost"] == 0 and s["dropped"] == 0
    ob2.close()
    sub.close()


def test_spool_overflow_counts_each_lost_event(tmp_path, img):
    port = free_port()  # no broker at all
    spec = {"port": port, "spool": str(tmp_path / "spool.jsonl"), "spool_mb": 0.01,
            "backoff_min_s": 0.1}
    ob = Outbox([("mqtt", spec)], "porch pi", "m")
    ob.start()
    n = 100
    for seq in range(n):
        publish(ob, seq, img=img)
    wait_for(lambda: ob.sink_stats()["mqtt"]["queued"] == 0, 5, "the queue")
    s = ob.sink_stats()["mqtt"]
    assert s["lost"] > 0 and s["spooled"] + s["lost"] == n
    assert s["state"].startswith("unreachable") and not s["connected"]
    assert (tmp_path / "spool.jsonl").stat().st_size <= 0.01 * 1024 * 1024
    ob.close(timeout=1)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_broker(tmp_path):
    """A TLS-only broker with a throwaway CA, a certificate for 127.0.0.1 and one user."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=edge test CA", cwd=tmp_path)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
            cwd=tmp_path)
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
            cwd=tmp_path)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "edge", "s3cret"],
                   check=True, capture_output=True)
    b = Broker(tmp_path, extra=(
        f"cafile {tmp_path}/ca.crt", f"certfile {tmp_path}/server.crt",
        f"keyfile {tmp_path}/server.key", f"password_file {tmp_path}/passwd",
        "allow_anonymous false",
    ))
    b.start()
    yield b
    b.stop()


def test_tls_with_password_file(tls_broker, tmp_path, img):
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    ob = mqtt_outbox(tls_broker.port, tmp_path, tls=True, ca_file=str(tmp_path / "ca.crt"),
                     username="edge", password_file=str(secret))
    publish(ob, 1, img=img)
    wait_for(lambda: ob.sink_stats()["mqtt"]["sent"] == 1, 5, "the ack over TLS")
    ob.close()
    # a wrong password is refused: events wait in the spool, nothing is lost
    secret.write_text("wrong\n")
    spec = {"port": tls_broker.port, "spool": str(tmp_path / "spool2.jsonl"), "tls": True,
            "ca_file": str(tmp_path / "ca.crt"), "username": "edge",
            "password_file": str(secret), "backoff_min_s": 0.1}
    ob = Outbox([("mqtt", spec)], "porch pi", "m")
    ob.start()
    wait_for(lambda: ob.sink_stats()["mqtt"]["state"].startswith("refused"), 5, "the refusal")
    publish(ob, 2, img=img)
    wait_for(lambda: ob.sink_stats()["mqtt"]["spooled"] == 1, 5, "the spool")
    assert "not authorized" in ob.sink_stats()["mqtt"]["state"].lower()
    ob.close(timeout=1)
    with pytest.raises(ConfigError, match="cannot read"):
        Outbox([("mqtt", {**spec, "password_file": str(tmp_path / "missing")})], "d", "m")


def test_spool_replay_rewrites_once_not_per_batch(tmp_path):
    from edge.sinks.mqtt import Spool

    path = tmp_path / "spool.jsonl"
    spool = Spool(path, max_bytes=1 << 20)
    for i in range(100):
        spool.append({"topic": "t", "payload": str(i)})
    inode = path.stat().st_ino
    got = []
    while spool.count:
        batch = spool.pending()[:30]  # what one tick manages to hand to paho
        got += [r["payload"] for r, _ in batch]
        if len(got) < 100:
            assert path.stat().st_ino == inode  # no rewrite while the replay is under way
        spool.delivered(sum(n for _, n in batch), len(batch))
    assert got == [str(i) for i in range(100)]
    assert path.stat().st_size == 0 and path.stat().st_ino != inode  # one rewrite at the end
    spool.append({"topic": "t", "payload": "after"})
    assert [r["payload"] for r, _ in Spool(path, 1 << 20).pending()] == ["after"]
