"""The one interface every camera or file source implements.

A source only knows how to open, read one image and close. Sequence numbers, timestamps,
stall detection and reconnect backoff live in the capture thread (`edge.capture.runner`), so
every source gets them the same way.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class SourceError(RuntimeError):
    """The source failed (open error, read error, stall); the capture thread reconnects."""


@dataclass(slots=True)
class Frame:
    seq: int  # increases by one per captured frame, across reconnects
    ts: float  # wall-clock capture time (time.time()): only stamps events and files
    mono: float  # time.monotonic() at capture: every duration (latency, hysteresis, clips)
    rgb: np.ndarray  # HxWx3 uint8 RGB image to classify (may be a low-res stream)
    full: np.ndarray | None = None  # full-resolution RGB for snapshots; None: same as rgb
    # the model tensors per region (an `edge.preprocess.Prepared`) when the capture thread
    # made them; its plan is checked, so a reload never uses stale tensors
    prepared: object | None = None
    # a file's own time: frame number / its frame rate (None for cameras and streams); with
    # --no-drop, region rates (`every_s`) count in it, so an evaluation is deterministic
    media_s: float | None = None

    @property
    def image(self) -> np.ndarray:
        """The best image of the frame for people (snapshots, clips, the preview)."""
        return self.rgb if self.full is None else self.full


class Source(Protocol):
    """A camera, stream, video or image folder.

    `read()` returns the next image as (rgb, full_or_None), or None at the end of a finite
    source (a file or folder without loop) or of a live stream. It raises `SourceError` on any
    failure, and should not block much longer than the configured stall timeout (the capture
    thread's watchdog abandons a read that does). open, read and close are always called from
    the same thread.

    A source may also split `read` in two, and the capture thread then uses the split to
    decode only the frames inference will take: `grab()` takes the next frame without decoding
    it (True, or None at the end, like read), `retrieve()` decodes the last one grabbed, and
    an optional `drop()` lets it go undecoded.
    """

    name: str
    live: bool  # True for cameras and streams (end of stream means reconnect)

    def open(self) -> None: ...

    def read(self) -> tuple[np.ndarray, np.ndarray | None] | None: ...

    def close(self) -> None: ...


class Pacer:
    """Sleeps so a file source delivers frames at `fps`, like a camera would.

    When the reader falls behind by more than a frame it re-anchors instead of bursting to
    catch up, which is what a camera does too (it never queues old frames for us). The capture
    thread calls `wait` after `read()` returns, so a slow pace is never taken for a stall.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.next: float | None = None

    def wait(self, stop: threading.Event | None = None) -> None:
        now = time.monotonic()
        if self.next is None or now - self.next > self.period:
            self.next = now
        elif self.next > now:
            if stop is None:
                time.sleep(self.next - now)
            else:
                stop.wait(self.next - now)  # a stop request ends a long pause at once
        self.next += self.period
