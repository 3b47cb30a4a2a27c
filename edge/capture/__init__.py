"""Camera and file sources, and the capture thread that feeds the latest-frame slot.

`open_source(cfg, model_size)` builds the configured source without touching the device (the
capture thread opens it, and reopens it after failures); it raises EdgeError for settings that
can never work, so a caller can report those before starting.
"""

from __future__ import annotations

from pathlib import Path

from edge.capture.base import Frame, Source, SourceError
from edge.capture.files import FilesSource
from edge.capture.opencv import OpenCVSource
from edge.capture.runner import CaptureThread, LatestFrame
from edge.capture.spec import apply_source, parse_source
from edge.config import SourceConfig
from edge.errors import EdgeError

__all__ = [
    "CaptureThread", "Frame", "LatestFrame", "Source", "SourceError", "apply_source",
    "open_source", "parse_source",
]  # fmt: skip


def open_source(cfg: SourceConfig, model_size: tuple[int, int]) -> Source:
    """The source `cfg` describes; model_size (w, h) sizes the Pi camera's lores stream."""
    kind, device = cfg.kind, cfg.device
    if kind == "auto":
        from edge.capture.auto import detect

        kind, device = detect()
        cfg = cfg.model_copy(update={"kind": kind, "device": device})
    if kind == "picamera2":
        from edge.capture.picamera2 import Picamera2Source, import_picamera2

        import_picamera2()  # not installed: say how now, not at every reconnect
        return Picamera2Source(cfg, model_size)
    if kind == "opencv":
        source = OpenCVSource(cfg)
        if source.kind == "file" and not Path(str(device)).is_file():
            raise EdgeError(f"source.device {device}: no such video file (a camera is a number "
                            "or /dev/videoN, a stream a URL)")
        return source
    if not cfg.path:
        raise EdgeError("source.path is required with kind: files (an image, folder or glob)")
    source = FilesSource(cfg.path, loop=cfg.loop, fps=cfg.fps if cfg.realtime else None)
    source.check()  # a path with no images can never work: say so now, not in a retry loop
    return source
