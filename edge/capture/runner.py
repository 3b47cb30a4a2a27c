"""The capture thread and the single-slot latest-frame holder between it and inference.

The slot holds at most one frame: a newer frame replaces an unread one (counted as dropped),
so the inference loop always gets the freshest image and no queue can build up. The no-drop
mode makes `put` wait for the consumer instead, for deterministic offline evaluation.

Frames are decoded just in time. The slot learns how long the consumer spends on a frame, so
the capture thread can tell when it will next want one: a source that can grab a frame without
decoding it (OpenCV, picamera2) only decodes (or copies out), and the pipeline's `prepare`
only resizes, the frames inference will take; frames grabbed while inference is busy are
dropped undecoded (on a Pi with a 30 fps camera and a 10 fps model that saves two decodes in
three). In no-drop mode the next frame is read so that it is ready as the current invoke ends,
not one invoke early: the overlap is the same, the frame's latency is not.

`CaptureThread` is a small supervisor. Each connection runs in its own reader thread (open,
then read in a loop, straight into the slot: no hand-off per frame). The supervisor only wakes
a few times per stall timeout to check the reader's progress: a reader stuck inside `open()`
or `read()` for 1.5 x `stall_timeout_s` is abandoned (it closes its source whenever the
call returns) and a new connection is made, so a driver call that never returns cannot wedge
capture. Failures reconnect with capped exponential backoff; the state is kept in `Stats` and
logged once per change.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from edge.capture.base import Frame, Source, SourceError
from edge.config import SourceConfig
from edge.errors import EdgeError
from edge.stats import Stats

log = logging.getLogger(__name__)

MAX_STUCK = 2  # abandoned readers still inside a call before we stop making new ones
WATCHDOG_MARGIN = 1.5  # x stall_timeout_s before a call that has not returned is abandoned


def moving_average(avg: float, x: float, weight: float) -> float:
    """Exponential moving average; the first sample (avg 0) starts it."""
    return (1 - weight) * avg + weight * x if avg else x


class LatestFrame:
    """One-frame mailbox from the capture thread to the inference loop."""

    def __init__(self, stats: Stats | None = None, no_drop: bool = False) -> None:
        self.stats = stats
        self.no_drop = no_drop
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._waiting = False  # the consumer is blocked in get()
        self._took: float | None = None  # when the consumer last took a frame (monotonic)
        self.busy_s = 0.0  # moving average of its time from taking a frame to asking again

    def put(self, frame: Frame) -> bool:
        """Offer a frame; False when the slot is closed (the frame is discarded)."""
        with self._cond:
            if self.no_drop:
                while self._frame is not None and not self._closed:
                    self._cond.wait()
            if self._closed:
                return False
            if self._frame is not None and self.stats is not None:
                self.stats.frame_dropped()
            self._frame = frame
            self._cond.notify_all()
            return True

    def wanted_in(self) -> float:
        """Seconds until the consumer is expected to ask for a frame: 0 while it is waiting,
        negative when it is later than expected, -inf when there is nothing to expect from
        (no frame taken yet, or its last wait timed out): then any frame should be fresh."""
        if self._waiting:
            return 0.0
        took = self._took  # one read: get() may clear it meanwhile
        return -math.inf if took is None else took + self.busy_s - time.monotonic()

    @property
    def full(self) -> bool:
        return self._frame is not None

    def wait_wanted(self, lead: float) -> bool:
        """No-drop: block until the slot is empty and a frame is wanted within `lead` seconds.

        The capture thread waits here *before* reading the next frame, so it reads one frame
        ahead of inference and has it ready as the current invoke ends. False once closed.
        """
        with self._cond:
            while not self._closed:
                if self._frame is None:
                    wait = self.wanted_in() - lead
                    if wait <= 0:
                        return True
                    self._cond.wait(wait)  # get() notifies: a consumer early is not kept waiting
                else:
                    self._cond.wait()
            return False

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, waiting up to `timeout`; None on timeout or once closed and empty.

        After None, `closed` tells the two apart: closed means the source is finished.
        """
        with self._cond:
            if self._took is not None:  # how long the consumer worked on the last frame
                busy = time.monotonic() - self._took
                self.busy_s = moving_average(self.busy_s, busy, 0.2)
                self._took = None
            if self._frame is None and not self._closed:
                self._waiting = True
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
                self._waiting = False
            frame, self._frame = self._frame, None
            if frame is not None:
                self._took = time.monotonic()
                if self.no_drop:
                    self._cond.notify_all()
            return frame

    def close(self) -> None:
        """No more frames: wakes a waiting consumer (after the last frame) and producer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class _Connection:
    """One open-read-close cycle of a source, run by its own reader thread."""

    def __init__(self) -> None:
        self.current = True  # False once the supervisor gave up on it
        self.busy_since: float | None = None  # monotonic start of the open()/read() in progress
        self.doing = "open"
        self.frames = 0
        self.in_hand = False
        self.outcome: tuple[str, str | None] = ("stopped", None)
        self.done = threading.Event()
        self.thread: threading.Thread | None = None


class CaptureThread:
    """Reads frames from `make_source()` into `slot`, reconnecting on any failure.

    States in `stats` (and the log, once per change): starting, running, reconnecting (with
    the error), failed (reconnects keep failing at the maximum backoff, or a file could not be
    read), ended (a finite source is done: the slot is closed), stopped.
    """

    def __init__(
        self,
        make_source: Callable[[], Source],
        slot: LatestFrame,
        stats: Stats,
        cfg: SourceConfig,
        name: str = "capture",
    ) -> None:
        self.make_source = make_source
        self.slot = slot
        self.stats = stats
        self.cfg = cfg
        self.name = name
        self.error: str | None = None  # the last failure, for callers and status pages
        self.fatal: str | None = None  # why a file source ended capture for good
        # Work done on each delivered frame in this thread (the input plan's tensors), so
        # inference finds it done; swapped by a reload, read once per frame.
        self.prepare: Callable[[Frame], object] | None = None
        self.decode_s = 0.0  # moving average of decode + prepare time, for the just-in-time lead
        # False on a single core: decoding beside an invoke would only take turns with it, so
        # frames are read between invokes instead, as soon as the consumer asks. With more
        # cores it pays even when the interpreter's threads take them all: XNNPACK's workers
        # steal the tiles of the one the decode preempts (docs/benchmarks.md, issue 17).
        self.overlap = True
        self._seq = 0
        self._stop = threading.Event()
        self._conn: _Connection | None = None
        self._stuck: list[_Connection] = []
        self._tick = min(1.0, max(0.01, cfg.stall_timeout_s / 4))
        self._thread = threading.Thread(target=self._supervise, name=name, daemon=True)

    # -------------------------------------------------------------- control

    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop capturing and close the slot; returns within about `timeout` seconds."""
        self._stop.set()
        self.slot.close()
        conn = self._conn
        if conn is not None:
            conn.done.set()  # wakes the supervisor's watch now rather than at its next tick
        deadline = time.monotonic() + timeout
        if self._thread.is_alive():
            self._thread.join(timeout)
        conn = self._conn
        if conn is not None and conn.thread is not None and conn.thread.is_alive():
            conn.thread.join(max(0.0, deadline - time.monotonic()))
        if self.state not in ("ended", "failed"):
            self._set_state("stopped")

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def state(self) -> str:
        return self.stats.source_state

    # -------------------------------------------------------------- supervisor

    def _set_state(self, state: str, error: str | None = None) -> None:
        if state in ("reconnecting", "failed"):
            self.error = error
        if self.stats.set_source_state(state, error):
            level = logging.WARNING if state in ("reconnecting", "failed") else logging.INFO
            log.log(level, "source %s%s", state, f": {error}" if error else "")

    def _supervise(self) -> None:
        cfg = self.cfg
        delay = cfg.backoff_initial_s
        while not self._stop.is_set():
            self._stuck = [c for c in self._stuck if c.thread.is_alive()]
            if len(self._stuck) >= MAX_STUCK:
                outcome, detail = "error", f"{len(self._stuck)} reads still stuck in the driver"
                conn = None
            else:
                conn = self._conn = _Connection()
                conn.thread = threading.Thread(
                    target=self._read_loop, args=(conn,), name=f"{self.name}-reader", daemon=True
                )
                try:
                    conn.thread.start()
                except RuntimeError as e:  # "can't start new thread": retry, never die
                    outcome, detail = "error", f"cannot start a reader thread ({e})"
                else:
                    outcome, detail = self._watch(conn)
            if self._stop.is_set() or outcome == "stopped":
                break
            if outcome == "ended":
                self._set_state("ended")
                break
            if outcome == "fatal":
                self.fatal = detail
                self._set_state("failed", detail)
                break
            if conn is not None and conn.frames:
                delay = cfg.backoff_initial_s  # it worked for a while: retry quickly
            self._set_state("failed" if delay >= cfg.backoff_max_s else "reconnecting", detail)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, cfg.backoff_max_s)
        self.slot.close()

    def _watch(self, conn: _Connection) -> tuple[str, str | None]:
        """Wait for the connection to end, or give up on it when a call overruns the timeout.

        The margin lets sources with a timeout of their own (picamera2's wait=, FFmpeg's read
        timeout) raise first and close cleanly; the watchdog is the backstop for calls that
        never return.
        """
        limit = self.cfg.stall_timeout_s * WATCHDOG_MARGIN
        while not conn.done.wait(self._tick):
            if self._stop.is_set():
                return "stopped", None
            since = conn.busy_since
            if since is not None and time.monotonic() - since > limit:
                conn.current = False
                self._stuck.append(conn)
                return "error", f"stall: no frame for {limit:g} s ({conn.doing} did not return)"
        return conn.outcome

    # -------------------------------------------------------------- reader

    def _read_loop(self, conn: _Connection) -> None:
        source = None
        try:
            conn.busy_since = time.monotonic()
            source = self.make_source()
            source.open()
            conn.doing = "read"
            live = source.live
            two_phase = hasattr(source, "grab") and hasattr(source, "retrieve")
            slot = self.slot
            last_grab: float | None = None
            period = 0.0  # moving average of the time between frames, for the drop decision
            while conn.current and not self._stop.is_set():
                if slot.no_drop and not slot.wait_wanted(self._lead()):
                    break
                conn.busy_since = start = time.monotonic()
                got = source.grab() if two_phase else source.read()
                conn.busy_since = None
                if not conn.current:
                    break
                pacer = getattr(source, "pacer", None)  # file sources played like a camera
                if got is not None and pacer is not None:
                    pacer.wait(self._stop)
                    start = None
                if got is None:
                    conn.outcome = ("error", "stream ended") if live else ("ended", None)
                    break
                mono = time.monotonic()
                seq, ts = self._seq, time.time()
                self._seq += 1
                self.stats.frame_captured(mono)
                conn.in_hand = True  # captured, not yet delivered or dropped
                if not conn.frames:
                    self._set_state("running")
                conn.frames += 1
                if last_grab is not None:
                    gap = mono - last_grab
                    period = moving_average(period, gap, 0.1)
                last_grab = mono
                if two_phase and not slot.no_drop and self._skip(period):
                    drop = getattr(source, "drop", None)
                    if drop is not None:
                        drop()  # e.g. give a camera buffer back at once
                    self.stats.frame_dropped()
                    conn.in_hand = False
                    continue
                conn.busy_since = t0 = time.monotonic()
                if slot.no_drop and start is not None:
                    t0 = start  # the lead in no-drop mode covers the whole read
                out = source.retrieve() if two_phase else got
                frame = Frame(seq, ts, mono, out[0], out[1])
                rate = None if live else getattr(source, "frame_rate", None)
                if rate:
                    frame.media_s = seq / rate
                prepare = self.prepare
                if prepare is not None:
                    frame.prepared = prepare(frame)
                conn.busy_since = None
                if not conn.current:  # abandoned meanwhile: a newer reader owns the slot
                    break
                took = time.monotonic() - t0
                self.decode_s = moving_average(self.decode_s, took, 0.1)
                conn.in_hand = False
                if not slot.put(frame):
                    break
        except (SourceError, EdgeError) as e:
            conn.outcome = self._failure(conn, source, str(e))
        except Exception as e:  # a bug or an odd driver error must not end capture
            log.debug("capture error", exc_info=True)
            conn.outcome = self._failure(conn, source, f"{type(e).__name__}: {e}")
        finally:
            conn.busy_since = None
            if conn.in_hand:  # a frame counted as captured that will never be delivered
                self.stats.frame_dropped()
            if source is not None:
                try:
                    source.close()
                except Exception as e:
                    log.warning("closing %s failed: %s", getattr(source, "name", "source"), e)
            conn.done.set()

    def _skip(self, period: float) -> bool:
        """Drop mode: whether to pass over the frame just grabbed without decoding it.

        Yes if inference will not want a frame before the next one arrives and is decoded (a
        later frame serves it better), or if it will want one sooner than this one could be
        decoded while a decoded frame waits in the slot (it will take that one). A consumer
        late by more than a frame (held up by a reload) gets fresh frames again.
        """
        wanted, lead = self.slot.wanted_in(), self._lead()
        return wanted > period + lead or (self.slot.full and -period < wanted < lead)

    def _lead(self) -> float:
        """How early to start decoding a frame so it is ready when inference asks for it."""
        return 1.5 * self.decode_s + 0.001 if self.overlap else 0.0

    @staticmethod
    def _failure(conn: _Connection, source: Source | None, msg: str) -> tuple[str, str]:
        # A file that fails to open or read fails the same way every time: retrying would loop
        # forever (or, in an evaluation, repeat frames), so that ends capture (and `edge run`,
        # with exit 2). A live source (camera, stream) is retried: it may come back.
        if source is not None and not source.live:
            return "fatal", msg
        return "error", msg
