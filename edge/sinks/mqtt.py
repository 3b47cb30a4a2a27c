"""MQTT: events, retained per-label state, availability with a last will, Home Assistant
discovery, and an on-disk spool so a broker outage loses no event.

Delivery is at least once (QoS 1). While connected, events go straight to paho (which keeps
unacknowledged messages and resends them after a reconnect); while disconnected they are
appended to the spool file, replayed in order on reconnect. Unacknowledged events left at
close go to the spool too, so the next start sends them.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from pathlib import Path
from typing import Literal

import paho.mqtt.client as mqtt
from pydantic import Field, field_validator

import edge
from edge.atomic import replacing, temp_path
from edge.errors import ConfigError
from edge.paths import state_dir
from edge.schema import read_secret
from edge.sinks.base import SINKS, EventSinkParams, Item, Sink
from edge.sinks.files import MAX_DISK_MB, MB, LineFile, make_dir, slug

log = logging.getLogger(__name__)


class MqttParams(EventSinkParams):
    host: str = Field("127.0.0.1", min_length=1, description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual for TLS)")
    topic: str | None = Field(
        None, description="topic prefix; default edge/DEVICE (events go to PREFIX/events)"
    )
    client_id: str | None = Field(None, description="MQTT client id; default edge-DEVICE")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of events and state")
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="keepalive; a dead link is noticed within 1.5x this"
    )
    username: str | None = Field(None, description="broker user name")
    password: str | None = Field(None, description="broker password (prefer password_file)")
    password_file: str | None = Field(None, description="file holding the broker password")
    tls: bool = Field(False, description="connect with TLS (system CAs unless ca_file)")
    ca_file: str | None = Field(None, description="CA certificate(s) to trust (PEM)")
    cert_file: str | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key_file: str | None = Field(None, description="client key (PEM) for mutual TLS")
    tls_insecure: bool = Field(False, description="skip the host name check (testing only)")
    retain_state: bool = Field(True, description="publish per-label state as retained messages")
    spool: str | None = Field(
        None,
        description="file holding events while the broker is unreachable; default "
        "$STATE_DIRECTORY (or /var/lib/edge, ~/.local/state/edge)/mqtt-spool-DEVICE.jsonl",
    )
    spool_mb: float = Field(
        20.0, gt=0, le=MAX_DISK_MB,
        description="spool cap; past it the oldest spooled events are lost (counted)",
    )
    backoff_min_s: float = Field(
        1.0, ge=0.01, le=3600, description="first reconnect delay (doubles)"
    )
    backoff_max_s: float = Field(60.0, ge=0.01, le=3600, description="reconnect delay cap")
    homeassistant: bool = Field(
        False, description="publish Home Assistant MQTT discovery: one binary_sensor per label"
    )
    discovery_prefix: str = Field("homeassistant", description="Home Assistant discovery prefix")
    labels: list[str] = Field(
        default_factory=list,
        description="labels announced to Home Assistant at connect ('cat', or 'ROI/cat'); "
        "others are announced when their first event arrives",
    )

    @field_validator("topic", "discovery_prefix")
    @classmethod
    def _publishable(cls, v: str | None) -> str | None:
        """paho refuses to publish to these (ValueError in the worker, every time: events
        only piled up in the spool): say so at validation instead."""
        if v is None:
            return v
        if not v.strip("/"):
            raise ValueError("a topic needs at least one level (e.g. edge/porch)")
        if bad := sorted({c for c in v if c in "+#\0"}):
            raise ValueError(
                f"{', '.join(repr(c) for c in bad)} cannot be in a topic published to ('+' and "
                "'#' are MQTT subscription wildcards; e.g. edge/porch)")
        if len(v.encode()) > 60000:
            raise ValueError("longer than MQTT allows (65535 bytes with the suffix)")
        return v


class Spool:
    """Events waiting for the broker: a JSON-lines file, bounded, oldest dropped first.

    Replay sends from a byte offset (`done`) and the delivered head is cut off in one rewrite
    when the replay completes (or when the file must be trimmed), so draining a large spool
    costs one rewrite, not one per batch: an SD card's writes are worth saving.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._tmp().unlink(missing_ok=True)  # a rewrite cut short (full disk, power cut)
        self.file = LineFile(path, fsync="interval", fsync_every_s=1.0)
        self.lost = 0
        self.disk_error: str | None = None  # the last write that failed, until one succeeds
        self.done = 0  # bytes at the head of the file already delivered
        self.count = sum(1 for _ in self._lines())

    def _lines(self, start: int = 0) -> list[bytes]:
        with open(self.path, "rb") as f:
            f.seek(start)
            return [line for line in f if line.strip()]

    def _tmp(self) -> Path:
        return temp_path(self.path)

    def append(self, record: dict) -> bool:
        """Spool one record; False (counted in `lost`) when the disk refuses it."""
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            if self.file.size - self.done + len(line) > self.max_bytes:
                self._trim(self.max_bytes * 3 // 4 - len(line))
            self.file.write(line)
        except OSError as e:  # ENOSPC, EIO, read-only: the event is lost, and counted
            self.lost += 1
            why = f"{self.path}: {e.strerror}" if e.strerror else str(e)  # (short write: no errno)
            if self.disk_error is None:
                log.warning("mqtt spool: cannot write (%s): events are lost (counted in lost) "
                            "until it can", why)
            self.disk_error = why
            return False
        self.disk_error = None
        self.count += 1
        return True

    def _trim(self, target: int) -> None:
        """Drop the delivered head, then the oldest lines until it fits `target` bytes."""
        lines = self._lines(self.done)
        size = sum(map(len, lines))
        dropped = 0
        while lines and size > target:
            size -= len(lines.pop(0))
            dropped += 1
        self._rewrite(lines)
        self.lost += dropped  # (a rewrite that failed dropped nothing)

    def pending(self) -> list[tuple[dict, int]]:
        """(record, its line's length in bytes) for every event not yet delivered, in order."""
        out = []
        for line in self._lines(self.done):
            try:
                out.append((json.loads(line), len(line)))
            except ValueError:
                self.lost += 1
                self.done += len(line)
                self.count -= 1
        return out

    def delivered(self, nbytes: int, n: int) -> None:
        """`n` records (`nbytes`) from the head were sent; cut them off once all are."""
        self.done += nbytes
        self.count -= n
        if self.count <= 0:
            self._rewrite([])

    def _rewrite(self, lines: list[bytes]) -> None:
        """Atomically make `lines` the spool's contents."""
        self.file.close()
        try:
            with replacing(self.path, fsync=True) as tmp, open(tmp, "wb") as f:
                f.writelines(lines)
        finally:
            self.file.open()  # the old contents, when the rewrite failed
        self.done, self.count = 0, len(lines)

    def close(self) -> None:
        self.file.close()


def discovery(prefix: str, base: str, device: str, model: str, roi: str | None, label: str,
              qos: int) -> tuple[str, dict]:
    """Home Assistant binary_sensor config topic and payload for one (ROI, label)."""
    dev, r, lb = slug(device), slug(roi), slug(label)
    state = f"{base}/state/{r}/{lb}"
    payload = {
        "name": f"{roi} {label}" if roi else label,
        "unique_id": f"edge_{dev}_{r}_{lb}",
        "object_id": f"{dev}_{r}_{lb}",
        "state_topic": state,
        "payload_on": "ON",
        "payload_off": "OFF",
        "json_attributes_topic": f"{state}/attributes",
        "availability_topic": f"{base}/availability",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device_class": "occupancy",
        "qos": qos,
        "device": {
            "identifiers": [f"edge_{dev}"],
            "name": device,
            "model": model,
            "manufacturer": "edge",
            "sw_version": edge.__version__,
        },
    }
    return f"{prefix}/binary_sensor/{dev}/{r}_{lb}/config", payload


@SINKS.register("mqtt")
class MqttSink(Sink):
    """Publish events and retained per-label state to an MQTT broker (QoS 1, spooled)."""

    Params = MqttParams
    tick_s = 0.2

    def __init__(self, params: MqttParams, ctx) -> None:
        super().__init__(params, ctx)
        p = params
        self.base = (p.topic or f"edge/{slug(ctx.device, 'edge')}").rstrip("/")
        self.avail = f"{self.base}/availability"
        spool = Path(p.spool).expanduser() if p.spool else (
            state_dir() / f"mqtt-spool-{slug(ctx.device, 'edge')}.jsonl"
        )
        make_dir(spool.parent, "outputs.mqtt.spool")
        self.spool = Spool(spool, int(p.spool_mb * MB))
        self.states: dict[tuple[str | None, str], tuple[str, dict]] = {}
        self.announced: set[tuple[str | None, str]] = set()
        for entry in p.labels:
            roi, _, label = entry.rpartition("/")
            self.states.setdefault((roi or None, label), ("OFF", {}))
        self.pending: list[tuple[mqtt.MQTTMessageInfo, dict]] = []
        self.connected = False
        self._fresh = False  # connected since the last announce
        self.connects = 0
        self.client = self._client(p, ctx)
        self.started = False

    def open(self) -> None:
        p = self.params
        self.state = "connecting"
        self.client.connect_async(p.host, p.port, p.keepalive_s)
        self.client.loop_start()
        self.started = True

    def _client(self, p: MqttParams, ctx) -> mqtt.Client:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=p.client_id or f"edge-{slug(ctx.device, 'edge')}",
            protocol=mqtt.MQTTv311,
        )
        if p.username:
            c.username_pw_set(
                p.username, read_secret(p.password, p.password_file, "outputs.mqtt.password_file")
            )
        if p.tls:
            try:
                c.tls_set(
                    ca_certs=p.ca_file, certfile=p.cert_file, keyfile=p.key_file,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"outputs.mqtt: TLS setup failed ({e})") from None
            c.tls_insecure_set(p.tls_insecure)
        c.will_set(self.avail, "offline", qos=1, retain=True)
        c.reconnect_delay_set(p.backoff_min_s, p.backoff_max_s)
        c.max_queued_messages_set(1000)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        return c

    # -- paho's network thread: flags only ---------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            state = f"refused: {reason_code}"
            if state != self.state:  # once, not on every retry
                log.warning("mqtt %s:%s refused the connection: %s", self.params.host,
                            self.params.port, reason_code)
            self.state = state
            return
        client.publish(self.avail, "online", qos=1, retain=True)
        self.connected = True
        self._fresh = True
        self.connects += 1
        self.state = "connected"
        log.info("mqtt connected to %s:%s", self.params.host, self.params.port)

    def _on_connect_fail(self, client, userdata) -> None:
        if not self.state.startswith("unreachable"):
            log.warning("mqtt %s:%s unreachable; events are spooled, retrying",
                        self.params.host, self.params.port)
        self.state = "unreachable: retrying with backoff"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected and not self.stopping.is_set():
            log.warning("mqtt disconnected from %s:%s (%s); events are spooled",
                        self.params.host, self.params.port, reason_code)
        self.connected = False
        if not self.state.startswith("refused"):
            self.state = f"disconnected: {reason_code}"

    # -- worker ------------------------------------------------------------------------------
    def _publish(self, topic: str, payload: str, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=self.params.qos, retain=retain)

    def _send(self, record: dict) -> bool:
        """Hand an event record to paho; False when paho's queue is full."""
        info = self._publish(record["topic"], record["payload"])
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            return False
        self.pending.append((info, record))
        return True

    def _reconcile(self) -> None:
        still = []
        for info, record in self.pending:
            if info.is_published():
                self.sent += 1
            else:
                still.append((info, record))
        self.pending = still

    def _announce(self) -> None:
        """After every connect: discovery, then the retained state (a restarted broker
        without persistence has forgotten it)."""
        p = self.params
        for key in list(self.states):
            self._announce_one(key)
        if p.retain_state:
            for key, (value, attrs) in list(self.states.items()):
                self._state_publish(key, value, attrs)

    def _announce_one(self, key: tuple[str | None, str]) -> None:
        p = self.params
        if p.homeassistant:
            topic, payload = discovery(
                p.discovery_prefix, self.base, self.ctx.device, self.ctx.model, *key, p.qos
            )
            self._publish(topic, json.dumps(payload), retain=True)
        self.announced.add(key)

    def _state_publish(self, key, value: str, attrs: dict) -> None:
        t = f"{self.base}/state/{slug(key[0])}/{slug(key[1])}"
        self._publish(t, value, retain=True)
        self._publish(f"{t}/attributes", json.dumps(attrs), retain=True)

    def _flush(self) -> None:
        """On (re)connect: announce, then replay the spool in order."""
        self._reconcile()
        if not self.connected:
            return
        if self._fresh:
            self._fresh = False
            self._announce()
        if self.spool.count:
            sent = nbytes = 0
            for record, size in self.spool.pending():
                if not self._send(record):
                    break
                sent, nbytes = sent + 1, nbytes + size
            self.spool.delivered(nbytes, sent)

    def handle(self, item: Item) -> None:
        self._flush()
        for e in item.events:
            record = {"topic": f"{self.base}/events", "payload": json.dumps(e)}
            if not (self.connected and not self.spool.count and self._send(record)):
                self.spool.append(record)  # a disk that refuses it counts the event lost
            if e["type"] in ("enter", "exit"):
                key = (e["roi"], e["label"])
                value = "ON" if e["type"] == "enter" else "OFF"
                self.states[key] = (value, e)
                if self.connected:
                    if key not in self.announced:
                        self._announce_one(key)
                    if self.params.retain_state:
                        self._state_publish(key, value, e)

    def tick(self) -> None:
        self._flush()

    def close(self) -> None:
        """Say offline, wait briefly for acks, spool what is unacknowledged, disconnect."""
        if self.connected:
            self._flush()
            offline = self._publish(self.avail, "offline", retain=True)
            deadline = time.monotonic() + 2.0
            while self.connected and time.monotonic() < deadline:
                self._reconcile()
                if not self.pending and offline.is_published():
                    break
                time.sleep(0.02)
        self._reconcile()
        for _, record in self.pending:
            self.spool.append(record)
        self.pending = []
        if self.started:
            self.client.disconnect()
            self.client.loop_stop()
        self.spool.close()

    def extra(self) -> dict:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "inflight": len(self.pending),
            "spooled": self.spool.count,
            "lost": self.spool.lost,
            "spool_error": self.spool.disk_error,
        }
