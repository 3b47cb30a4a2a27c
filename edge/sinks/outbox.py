"""The outbox: fans each classified frame out to the sinks without ever blocking the frame loop.

Each sink gets a worker thread and a bounded queue. `publish` does O(1) work per sink: it
builds the event dicts once (the one JSON shape every sink sees, file paths included), asks
each sink for its item and appends it; when a queue is full the oldest item is dropped and
counted. A sink that hangs only ever fills its own queue.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from edge.capture.base import Frame
from edge.errors import ConfigError
from edge.events import Event, Result
from edge.registry import Registry
from edge.sinks.base import SINKS, Context, Item, Sink

log = logging.getLogger(__name__)


class Worker:
    """One sink's thread and bounded queue."""

    def __init__(self, key: str, sink: Sink, capacity: int) -> None:
        self.key = key
        self.sink = sink
        self.capacity = capacity
        self.queue: deque[Item] = deque()
        self.cond = threading.Condition()
        self.dropped = 0
        self.stopping = False
        self.deadline = float("inf")
        self.thread = threading.Thread(target=self._run, name=f"sink-{key}", daemon=True)

    def put(self, item: Item) -> None:
        with self.cond:
            if len(self.queue) >= self.capacity:
                self.queue.popleft()
                self.dropped += 1
            self.queue.append(item)
            self.cond.notify()

    def _call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:  # a sink's failure is counted and shown, never fatal
            self.sink.errors += 1
            state = f"error: {e}"
            if state != self.sink.state:
                log.warning("output %s: %s", self.key, e)
            self.sink.state = state

    def _run(self) -> None:
        sink = self.sink
        self._call(sink.open)
        next_tick = time.monotonic() + sink.tick_s
        while True:
            with self.cond:
                if self.stopping and time.monotonic() > self.deadline:
                    self.dropped += len(self.queue)
                    self.queue.clear()
                if not self.queue:
                    if self.stopping:
                        break
                    self.cond.wait(max(0.0, next_tick - time.monotonic()))
                item = self.queue.popleft() if self.queue else None
            if item is not None:
                self._call(sink.handle, item)
            if time.monotonic() >= next_tick:
                self._call(sink.tick)
                next_tick = time.monotonic() + sink.tick_s
        self._call(sink.close)
        if not sink.state.startswith("error"):
            sink.state = "closed"

    def stats(self) -> dict:
        s = self.sink
        return {
            "queued": len(self.queue),
            "capacity": self.capacity,
            "sent": s.sent,
            "dropped": self.dropped,
            "errors": s.errors,
            "state": s.state,
            **s.extra(),
        }


class Outbox:
    """Build the sinks from (name, params) specs and run each in its own worker."""

    def __init__(
        self,
        specs: list[tuple[str, Any]],
        device: str,
        model: str,
        registry: Registry | None = None,
    ) -> None:
        registry = SINKS if registry is None else registry
        self.device, self.model = device, model
        ctx = Context(device=device, model=model)
        self.workers: list[Worker] = []
        names: dict[str, int] = {}
        dirs: dict[str, str] = {}  # outputs that write files into a directory with a budget
        for name, params in specs:
            if name not in registry:
                raise ValueError(f"unknown output {name!r} (known: {', '.join(registry)})")
            cls = registry[name]
            if params is None or isinstance(params, dict):
                params = cls.Params.model_validate(params or {})
            names[name] = names.get(name, 0) + 1
            key = name if names[name] == 1 else f"{name}{names[name]}"
            folder = getattr(params, "dir", None)
            if folder is not None:
                where = os.path.realpath(folder)
                if where in dirs:
                    raise ConfigError(
                        f"outputs: {key} and {dirs[where]} both write into {folder}: each "
                        "output needs a directory of its own (their budgets would fight)"
                    )
                dirs[where] = key
            self.workers.append(Worker(key, cls(params, ctx), params.queue))
        self._per_frame = [w for w in self.workers if w.sink.per_frame]
        self._annotators = [
            w.sink for w in self.workers if type(w.sink).annotate is not Sink.annotate
        ]
        self.started = False

    def start(self) -> None:
        for w in self.workers:
            w.thread.start()
        self.started = True

    def event_dicts(self, events: list[Event], frame: Frame) -> list[dict]:
        """The JSON shape of each event, with device, model and file paths filled in."""
        out = []
        for e in events:
            d = e.to_dict()
            d["device"] = d["device"] or self.device
            d["model"] = d["model"] or self.model
            for sink in self._annotators:
                sink.annotate(d, frame)
            out.append(d)
        return out

    def publish(self, result: Result, events: list[Event], frame: Frame) -> list[dict]:
        """Hand one classified frame (one ROI) to the sinks; never blocks on their I/O.

        Returns the events in their JSON shape (with snapshot/clip paths), as every sink sees
        them, for the web page and `edge run --json`.
        """
        dicts = self.event_dicts(events, frame) if events else []
        for w in self.workers if events else self._per_frame:
            item = w.sink.offer(result, dicts, frame)
            if item is not None:
                w.put(item)
        return dicts

    def sink_stats(self) -> dict[str, dict]:
        return {w.key: w.stats() for w in self.workers}

    def served_dirs(self) -> tuple[Path, ...]:
        """The folders whose files the sinks say the web page may serve (snapshots)."""
        return tuple(w.sink.serves for w in self.workers if w.sink.serves is not None)

    def close(self, timeout: float = 5.0) -> None:
        """Let each sink flush what is queued within `timeout` seconds, then stop it."""
        deadline = time.monotonic() + timeout
        for w in self.workers:
            with w.cond:
                w.stopping = True
                w.deadline = deadline
                w.cond.notify()
            w.sink.stopping.set()
        if not self.started:
            for w in self.workers:
                w._call(w.sink.close)
            return
        for w in self.workers:
            w.thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
            if w.thread.is_alive():
                log.warning("output %s did not stop within %.1f s", w.key, timeout)
                w.sink.state = "stuck"
