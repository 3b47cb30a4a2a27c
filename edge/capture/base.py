"""The one interface every camera or file source implements.

A source only knows how to open, read one image and close. Sequence numbers, timestamps,
stall detection and reconnect backoff live in the capture thread (`edge.pipeline`), so every
source gets them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class SourceError(RuntimeError):
    """The source failed (open error, read error, stall); the capture thread reconnects."""


@dataclass(slots=True)
class Frame:
    seq: int  # increases by one per captured frame, across reconnects
    ts: float  # wall-clock capture time (time.time()), for events
    mono: float  # time.monotonic() at capture, for latency
    rgb: np.ndarray  # HxWx3 uint8 RGB image to classify (may be a low-res stream)
    full: np.ndarray | None = None  # full-resolution RGB for snapshots; None: same as rgb

    @property
    def snapshot(self) -> np.ndarray:
        return self.rgb if self.full is None else self.full


class Source(Protocol):
    """A camera, stream, video or image folder.

    `read()` returns the next image as (rgb, full_or_None), or None at the end of a finite
    source (a file or folder without loop). It raises `SourceError` on any failure; it must
    not block longer than the configured stall timeout (it raises instead).
    """

    name: str
    live: bool  # True for cameras and streams (end of stream means reconnect)

    def open(self) -> None: ...

    def read(self) -> tuple[np.ndarray, np.ndarray | None] | None: ...

    def close(self) -> None: ...
