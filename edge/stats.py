"""One in-process record of how the pipeline is doing, read by logs, web, metrics and systemd.

Writers (capture thread, inference loop, sinks) call small methods under one lock; readers
take a `summary()` dict. Rates and percentiles come from bounded rings of recent samples.
"""

from __future__ import annotations

import subprocess
import threading
import time
from bisect import bisect_left
from collections import deque
from pathlib import Path

import numpy as np

RING = 512  # samples kept for rates and percentiles
SECONDS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Histogram:
    """Cumulative counts per bucket since start, for Prometheus (the rings forget old samples).

    Bucket i counts values <= bounds[i]; the last one counts the rest (+Inf).
    """

    def __init__(self, bounds: tuple[float, ...] = SECONDS_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def copy(self) -> Histogram:
        h = Histogram(self.bounds)
        h.counts, h.sum = list(self.counts), self.sum
        return h


def _rate(times: deque, now: float, window: float = 5.0) -> float:
    recent = [t for t in times if now - t <= window]
    if len(recent) < 2:
        return 0.0
    span = recent[-1] - recent[0]
    return (len(recent) - 1) / span if span > 0 else 0.0


def _pct(values: deque, q: float) -> float | None:
    return float(np.percentile(np.fromiter(values, float), q)) if values else None


def temperatures() -> dict[str, float]:
    """Every thermal zone in degrees C by its type (the Pi's SoC is `cpu-thermal`)."""
    out = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            raw = (zone / "temp").read_text().strip()
            kind = (zone / "type").read_text().strip() or zone.name
        except OSError:
            continue
        if raw.lstrip("-").isdigit():
            out[kind] = int(raw) / 1000
    return out


def cpu_temperature() -> float | None:
    """SoC temperature in degrees C from the first thermal zone, when there is one."""
    return next(iter(temperatures().values()), None)


THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm-frequency-capped",
    2: "throttled",
    3: "soft-temperature-limit",
    16: "under-voltage-occurred",
    17: "arm-frequency-capping-occurred",
    18: "throttling-occurred",
    19: "soft-temperature-limit-occurred",
}


def throttled() -> dict | None:
    """Raspberry Pi throttling flags from `vcgencmd get_throttled` (None off a Pi)."""
    try:
        out = subprocess.run(
            ["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2
        ).stdout
        value = int(out.strip().split("=")[1], 16)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None
    return {"raw": value, "flags": [n for b, n in THROTTLE_BITS.items() if value >> b & 1]}


class SystemInfo:
    """CPU temperature and Pi throttling flags, refreshed in the background every few seconds.

    `read()` never blocks: `vcgencmd` forks a process (up to 2 s), which must not happen on the
    frame loop or hold up a web request, so callers get the last value and a refresh starts
    beside them when it is due.
    """

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.lock = threading.Lock()  # held while a refresh runs
        self.at = -1e9
        self.value: dict = {}

    def read(self) -> dict:
        if time.monotonic() - self.at >= self.every_s and self.lock.acquire(blocking=False):
            self.at = time.monotonic()
            threading.Thread(target=self._refresh, name="sysinfo", daemon=True).start()
        return self.value

    def _refresh(self) -> None:
        try:
            self.value = {"cpu_temperature_c": cpu_temperature(), "throttled": throttled()}
        finally:
            self.lock.release()


class Stats:
    def __init__(self) -> None:
        self.system = SystemInfo()
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.captured = 0
        self.classified = 0
        self.dropped = 0
        self.skipped = 0  # unchanged frames the motion gate did not classify
        self.reconnects = 0
        self.source_state = "starting"
        self.source_since = time.time()
        self.source_error: str | None = None
        self.last_frame_mono: float | None = None  # last frame captured
        self.last_result_mono: float | None = None  # last frame classified
        self.capture_times: deque[float] = deque(maxlen=RING)
        self.classify_times: deque[float] = deque(maxlen=RING)
        self.invoke_ms: deque[float] = deque(maxlen=RING)
        self.latency_ms: deque[float] = deque(maxlen=RING)
        self.cpu_s: deque[float] = deque(maxlen=RING)  # process CPU seconds per classified frame
        self.events: dict[str, int] = {}
        self.invokes: dict[str, int] = {}  # per model name (regions may run models of their own)
        self.invoke_hist = Histogram()  # seconds, whole-frame invoke time
        self.latency_hist = Histogram()  # seconds, capture to result
        self.active: list[str] = []

    def frame_captured(self, mono: float) -> None:
        with self.lock:
            self.captured += 1
            self.last_frame_mono = mono
            self.capture_times.append(mono)

    def frame_skipped(self) -> None:
        with self.lock:
            self.skipped += 1

    def frame_dropped(self, n: int = 1) -> None:
        with self.lock:
            self.dropped += n

    def frame_classified(self, invoke_ms: float, latency_ms: float, cpu_s: float | None = None):
        now = time.monotonic()
        with self.lock:
            self.classified += 1
            self.last_result_mono = now
            self.classify_times.append(now)
            self.invoke_ms.append(invoke_ms)
            self.latency_ms.append(latency_ms)
            if cpu_s is not None:
                self.cpu_s.append(cpu_s)
            self.invoke_hist.observe(invoke_ms / 1000)
            self.latency_hist.observe(latency_ms / 1000)

    def invoked(self, counts: dict[str, int]) -> None:
        """One frame's invokes per model."""
        with self.lock:
            for name, n in counts.items():
                self.invokes[name] = self.invokes.get(name, 0) + n

    def histograms(self) -> dict[str, Histogram]:
        """Copies of the cumulative histograms (seconds), taken under the lock."""
        with self.lock:
            return {"invoke": self.invoke_hist.copy(), "latency": self.latency_hist.copy()}

    def set_active(self, labels: list[str]) -> None:
        with self.lock:
            self.active = labels

    def event(self, label: str, kind: str) -> None:
        with self.lock:
            key = f"{kind}:{label}"
            self.events[key] = self.events.get(key, 0) + 1

    def set_source_state(self, state: str, error: str | None = None) -> bool:
        """Record a source state; True when it changed (so callers log once per change)."""
        with self.lock:
            if state == self.source_state and error == self.source_error:
                return False
            if state == "reconnecting" and self.source_state != "reconnecting":
                self.reconnects += 1
            if state != self.source_state:
                self.source_since = time.time()
            self.source_state, self.source_error = state, error
            return True

    def summary(self) -> dict:
        now = time.monotonic()
        with self.lock:
            return {
                "uptime_s": round(now - self.started, 1),
                "frames_captured": self.captured,
                "frames_classified": self.classified,
                "frames_dropped": self.dropped,
                "frames_skipped": self.skipped,
                "capture_fps": round(_rate(self.capture_times, now), 2),
                "classify_fps": round(_rate(self.classify_times, now), 2),
                "invoke_ms_p50": _pct(self.invoke_ms, 50),
                "invoke_ms_p99": _pct(self.invoke_ms, 99),
                "latency_ms_p50": _pct(self.latency_ms, 50),
                "latency_ms_p99": _pct(self.latency_ms, 99),
                "cpu_ms_per_frame": (
                    round(float(np.mean(self.cpu_s)) * 1000, 3) if self.cpu_s else None
                ),
                "source_state": self.source_state,
                "source_since": self.source_since,
                "source_error": self.source_error,
                "reconnects": self.reconnects,
                "last_frame_age_s": (
                    round(now - self.last_frame_mono, 3) if self.last_frame_mono else None
                ),
                "last_result_age_s": (
                    round(now - self.last_result_mono, 3) if self.last_result_mono else None
                ),
                "events": dict(self.events),
                "invokes": dict(self.invokes),
                "active": list(self.active),
            }

    def line(self) -> str:
        """One log line: what an operator wants to see every minute."""
        s = self.summary()
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        system = self.system.read()
        temp = system.get("cpu_temperature_c")
        flags = (system.get("throttled") or {}).get("flags") or []
        extra = (f", {temp:.0f} C" if temp is not None else "") + (
            f", throttling: {' '.join(flags)}" if flags else "")
        return (
            f"stats: capture {s['capture_fps']:.1f} fps, classify {s['classify_fps']:.1f} fps, "
            f"dropped {s['frames_dropped']}"
            + (f", skipped {s['frames_skipped']}" if s["frames_skipped"] else "")
            + f", invoke p50 {fmt(s['invoke_ms_p50'])} ms "
            f"p99 {fmt(s['invoke_ms_p99'])} ms, latency p50 {fmt(s['latency_ms_p50'])} ms "
            f"p99 {fmt(s['latency_ms_p99'])} ms, source {s['source_state']}{extra}"
        )
