"""What every sink shares: its options base, the item it receives, and the hooks the outbox calls.

A sink's code runs in two places. `annotate` and `offer` run in the frame loop, so they must be
cheap (string formatting, a time comparison); everything that touches the disk, the network or
the pixels runs in `handle`, in the sink's own worker thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from edge.capture.base import Frame
from edge.events import Result
from edge.registry import Registry
from edge.schema import EVENT_TYPES, EventType, Strict

SINKS = Registry("sink")  # YAML name -> sink class; the sink modules register here


class SinkParams(Strict):
    """Options every sink has."""

    queue: int = Field(
        256,
        ge=1,
        le=100_000,
        description="items waiting for this output; when full the oldest is dropped (counted)",
    )


def frame_queue():
    """The `queue` option of sinks whose items hold frames: short, so memory stays bounded."""
    return Field(
        8,
        ge=1,
        le=1000,
        description="frames waiting for this output (each holds a full-resolution image); "
        "when full the oldest is dropped (counted)",
    )


class EventSinkParams(SinkParams):
    """Options of sinks that take events."""

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        """YAML 1.1 reads a bare `on:` key as true: take it as `events:` (the sketch's name)."""
        if isinstance(data, dict) and True in data and "events" not in data:
            data = {("events" if k is True else k): v for k, v in data.items()}
        return data

    events: list[EventType] = Field(
        default_factory=lambda: list(EVENT_TYPES), description="event types this output receives"
    )


@dataclass(slots=True)
class Item:
    """One unit of work for a sink: event dicts (shared, read-only), and a result and frame."""

    events: list[dict] = field(default_factory=list)
    result: Result | None = None
    frame: Frame | None = None


@dataclass(slots=True)
class Context:
    device: str
    model: str


class Sink:
    """Base class: override `handle`; the other hooks have useful defaults."""

    name = "sink"  # set by the registry
    Params: type[SinkParams] = SinkParams
    per_frame = False  # True: `offer` is called for frames without events too
    serves: Path | None = None  # a folder whose files the web page may serve (snapshots)
    tick_s = 0.5  # `tick` runs this often when the queue is idle

    def __init__(self, params: Any, ctx: Context) -> None:
        self.params = params
        self.ctx = ctx
        self.sent = 0
        self.errors = 0
        self.state = "starting"
        self.stopping = threading.Event()  # set by the outbox on close: cut sleeps short

    # -- frame loop (cheap) ------------------------------------------------------------------
    def annotate(self, event: dict, frame: Frame) -> None:
        """Add this sink's file path to an event dict before any sink sees it."""

    def offer(self, result: Result, events: list[dict], frame: Frame) -> Item | None:
        """The work item for this frame, or None. Default: the events of the chosen types
        (for sinks whose Params derive from EventSinkParams)."""
        if not events:
            return None
        kinds = self.params.events
        chosen = [e for e in events if e["type"] in kinds]
        return Item(chosen) if chosen else None

    # -- worker thread -----------------------------------------------------------------------
    def open(self) -> None:
        """Start background I/O (connections); runs first in the worker."""

    def handle(self, item: Item) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Called in the worker when idle (retries, reconnects, finishing clips)."""

    def close(self) -> None:
        """Flush and release; runs in the worker after the queue is drained."""

    def extra(self) -> dict:
        """Sink-specific counters for `sink_stats()`."""
        return {}

    def sleep(self, seconds: float) -> bool:
        """Wait (backoff) unless the outbox is closing; True when closing."""
        return self.stopping.wait(seconds)
