"""JPEG of the full-resolution frame on chosen events, written atomically within a disk budget."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
from pydantic import Field

from edge.atomic import write_atomic
from edge.overlay import draw_text
from edge.sinks.base import SINKS, EventSinkParams, EventType, Item, Sink, frame_queue
from edge.sinks.files import MB, DiskBudget, budget_files, budget_mb, event_filename, jpeg, make_dir


class SnapshotParams(EventSinkParams):
    dir: str = Field("/var/lib/edge/snapshots", description="where the JPEGs go")
    events: list[EventType] = Field(
        default_factory=lambda: ["enter"], description="event types that take a snapshot"
    )
    queue: int = frame_queue()
    max_mb: float = budget_mb(500.0, "disk budget for the directory; the oldest files go first")
    max_files: int = budget_files(0, "file count limit; 0: only max_mb applies")
    quality: int = Field(90, ge=1, le=100, description="JPEG quality")
    overlay: bool = Field(False, description="draw the label and score on the image")


def draw_label(bgr, text: str):
    """A copy of `bgr` with `text` in white on a dark band at the top left, sized to the image."""
    out = bgr.copy()
    draw_text(out, text, 0, 0, (255, 255, 255), max(0.5, out.shape[1] / 1000))
    return out


def event_text(e: dict) -> str:
    roi = f" ({e['roi']})" if e["roi"] else ""
    return f"{e['label']} {e['score']:.2f}{roi}"


@SINKS.register("snapshot")
class SnapshotSink(Sink):
    """Save a JPEG of the full-resolution frame when an event happens."""

    Params = SnapshotParams

    def __init__(self, params: SnapshotParams, ctx) -> None:
        super().__init__(params, ctx)
        self.dir = make_dir(params.dir, "outputs.snapshot.dir")
        self.serves = self.dir  # the web page shows these files beside their events
        self.prefix = str(self.dir) + os.sep  # events this sink named (the last one listed wins)
        self.budget = DiskBudget(self.dir, ".jpg", int(params.max_mb * MB), params.max_files)
        self.state = "ok"

    def annotate(self, event: dict, frame) -> None:
        if event["type"] in self.params.events:
            event["snapshot"] = str(self.dir / event_filename(event, ".jpg"))

    def offer(self, result, events, frame) -> Item | None:
        mine = self.prefix
        chosen = [e for e in events if e["snapshot"] and e["snapshot"].startswith(mine)]
        return Item(chosen, None, frame) if chosen else None

    def handle(self, item: Item) -> None:
        bgr = cv2.cvtColor(item.frame.image, cv2.COLOR_RGB2BGR)
        plain = None
        for e in item.events:
            if self.params.overlay:
                data = jpeg(draw_label(bgr, event_text(e)), self.params.quality)
            else:
                plain = plain or jpeg(bgr, self.params.quality)
                data = plain
            path = Path(e["snapshot"])
            write_atomic(path, data)
            self.budget.add(path)
            self.sent += 1
        self.state = "ok"

    def extra(self) -> dict:
        return self.budget.stats()
