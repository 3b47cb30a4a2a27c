"""Event clips: seconds before and after an event, from an in-memory ring of JPEG frames.

The frame loop only decides which frames to sample (a time check) and names the clip; the
worker JPEG-encodes samples into a ring bounded by count and bytes, and on an event writes
the ring plus the frames that follow as an MJPG .avi (temp file, then rename).
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from edge.atomic import replacing
from edge.sinks.base import SINKS, EventSinkParams, EventType, Item, Sink, frame_queue
from edge.sinks.files import (
    MB,
    DiskBudget,
    budget_files,
    budget_mb,
    event_filename,
    jpeg,
    make_dir,
    scale_to_width,
)


class ClipParams(EventSinkParams):
    dir: str = Field("/var/lib/edge/clips", description="where the .avi clips go")
    events: list[EventType] = Field(
        default_factory=lambda: ["enter"], description="event types that start (or extend) a clip"
    )
    queue: int = frame_queue()
    pre_s: float = Field(3.0, ge=0, le=60, description="seconds kept before the event")
    post_s: float = Field(3.0, ge=0, le=300, description="seconds recorded after the last event")
    max_s: float = Field(
        30.0, gt=0, le=600, description="longest clip; later events then start a new one"
    )
    fps: float = Field(10.0, ge=0.1, le=60, description="frames sampled per second")
    width: int = Field(
        640, ge=0, le=8192, description="frames are scaled down to this width; 0: full size"
    )
    quality: int = Field(80, ge=1, le=100, description="JPEG quality of the ring and the clip")
    ring_mb: float = Field(
        16.0, gt=0, le=4096,
        description="memory cap for the encoded frames held (ring and open clip)",
    )
    max_mb: float = budget_mb(1000.0, "disk budget; the oldest clips go first")
    max_files: int = budget_files(0, "clip count limit; 0: only max_mb applies")


@dataclass
class Recording:
    path: Path
    end: float  # wall-clock time after which no frame belongs to this clip
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    size: int = 0

    def add(self, sample: tuple[float, bytes]) -> None:
        self.frames.append(sample)
        self.size += len(sample[1])


def write_avi(path: Path, frames: list[tuple[float, bytes]], fps: float) -> None:
    """Decode the JPEGs and write them as an MJPG .avi, atomically."""
    first = cv2.imdecode(np.frombuffer(frames[0][1], np.uint8), cv2.IMREAD_COLOR)
    h, w = first.shape[:2]
    span = frames[-1][0] - frames[0][0]
    rate = (len(frames) - 1) / span if len(frames) > 1 and span > 0 else fps
    with replacing(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), min(rate, fps),
                                 (w, h))
        if not writer.isOpened():
            raise RuntimeError(f"cannot write video {tmp}")
        try:
            for _, data in frames:
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if img.shape[:2] != (h, w):
                    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
                writer.write(img)
        finally:
            writer.release()


@SINKS.register("clip")
class ClipSink(Sink):
    """Write a short video around each event from a ring of recent frames."""

    Params = ClipParams
    per_frame = True

    def __init__(self, params: ClipParams, ctx) -> None:
        super().__init__(params, ctx)
        self.dir = make_dir(params.dir, "outputs.clip.dir")
        self.prefix = str(self.dir) + os.sep  # events this sink named (the last one listed wins)
        self.budget = DiskBudget(self.dir, ".avi", int(params.max_mb * MB), params.max_files)
        self.interval = 1.0 / params.fps
        self.ring: deque[tuple[float, bytes]] = deque(
            maxlen=max(1, math.ceil(params.pre_s * params.fps))
        )
        self.ring_bytes = 0
        self.max_bytes = int(params.ring_mb * MB)
        self.rec: Recording | None = None
        self.done: Path | None = None  # the last clip written
        self.clips = 0
        self.truncated = 0
        # frame loop state: sampling clock and the clip being named
        self._last_sample = -math.inf
        self._path: str | None = None
        self._start = self._end = 0.0
        self.state = "ok"

    # -- frame loop --------------------------------------------------------------------------
    def annotate(self, event: dict, frame) -> None:
        if event["type"] not in self.params.events:
            return
        p = self.params
        if not (self._path and frame.mono <= self._end and frame.mono - self._start < p.max_s):
            self._path = str(self.dir / event_filename(event, ".avi"))
            self._start = frame.mono
        self._end = min(frame.mono + p.post_s, self._start + p.max_s)
        event["clip"] = self._path

    def offer(self, result, events, frame) -> Item | None:
        chosen = [e for e in events if e["clip"] and e["clip"].startswith(self.prefix)]
        if not chosen and frame.mono - self._last_sample < self.interval:
            return None
        self._last_sample = frame.mono
        return Item(chosen, None, frame)

    # -- worker ------------------------------------------------------------------------------
    def _encode(self, rgb: np.ndarray) -> bytes:
        rgb = scale_to_width(rgb, self.params.width)
        return jpeg(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), self.params.quality)

    def _held(self) -> int:
        return self.ring_bytes + (self.rec.size if self.rec else 0)

    def handle(self, item: Item) -> None:
        ts = item.frame.mono  # the ring and the clip window run on the monotonic clock
        sample = (ts, self._encode(item.frame.image))
        for e in item.events:
            path = Path(e["clip"])
            if path == self.done:  # cut short by the memory cap: the file is written
                continue
            if self.rec and self.rec.path != path:
                self._finish()
            if self.rec is None:
                self.rec = Recording(path, ts)
                for old in self.ring:
                    self.rec.add(old)
            self.rec.end = max(self.rec.end, ts + self.params.post_s)
        if self.rec and ts > self.rec.end:
            self._finish()
        if self.rec:
            if self._held() + len(sample[1]) > self.max_bytes:
                self.truncated += 1
                self._finish()
            else:
                self.rec.add(sample)
        self._ring_add(sample)

    def _ring_add(self, sample: tuple[float, bytes]) -> None:
        if len(self.ring) == self.ring.maxlen:
            self.ring_bytes -= len(self.ring[0][1])
        self.ring.append(sample)
        self.ring_bytes += len(sample[1])
        while self.ring and self._held() > self.max_bytes:
            self.ring_bytes -= len(self.ring.popleft()[1])

    def _finish(self) -> None:
        rec, self.rec = self.rec, None
        if rec:
            self.done = rec.path
        if rec and rec.frames:
            write_avi(rec.path, rec.frames, self.params.fps)
            self.budget.add(rec.path)
            self.clips += 1
            self.sent += 1
        self.state = "ok"

    def tick(self) -> None:
        if self.rec and time.monotonic() > self.rec.end + 1.0:  # frames stopped coming
            self._finish()

    def close(self) -> None:
        self._finish()

    def extra(self) -> dict:
        return {
            "clips": self.clips,
            "ring_frames": len(self.ring),
            "held_bytes": self._held(),
            "truncated": self.truncated,
            **self.budget.stats(),
        }
