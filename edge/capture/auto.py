"""`source: {kind: auto}`: the Pi camera when there is one, else the first USB camera.

Detection is cheap (an import and libcamera's camera list) and touches no device. It runs on
every (re)connect, inside the capture thread: a camera plugged in after boot is found by the
next retry, so a service started before its camera waits (STATUS= and the web page say "no
camera found ...") instead of failing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.capture.base import SourceError
from edge.capture.picamera2 import import_picamera2, pi_cameras
from edge.errors import EdgeError

log = logging.getLogger(__name__)

HOW_TO_SET = (
    "set `source` in the config (e.g. `source: {kind: opencv, device: /dev/video2}`, "
    "`source: {kind: files, path: photos/}`) or pass --source "
    "(0, /dev/videoN, rtsp://..., clip.mp4, photos/, 'photos/*.jpg', picamera2)"
)


def picamera2_present() -> bool:
    """picamera2 imports and libcamera sees a Pi camera (not a USB webcam)."""
    try:
        picam_cls = import_picamera2()
    except EdgeError:
        return False
    return bool(pi_cameras(picam_cls))


def detect(video0: str | Path = "/dev/video0") -> tuple[str, int | str]:
    """(kind, device) for `auto`: ('picamera2', 0) or ('opencv', '/dev/video0'); else EdgeError."""
    if picamera2_present():
        return "picamera2", 0
    if Path(video0).exists():
        return "opencv", str(video0)
    raise EdgeError(f"no camera found (no Pi camera via picamera2, no {video0}): {HOW_TO_SET}")


class AutoSource:
    """Detects the camera when opened, then is that camera's source."""

    live = True

    def __init__(self, make) -> None:
        self.make = make  # (kind, device) -> the source of that kind
        self.inner = None
        self.name = "auto"

    def open(self) -> None:
        try:
            kind, device = detect()
        except EdgeError as e:
            raise SourceError(str(e)) from None  # retried with backoff, like any open failure
        self.inner = self.make(kind, device)
        self.name = f"auto:{self.inner.name}"
        self.inner.open()

    def __getattr__(self, name: str):
        # read, grab, retrieve, drop, pacer: the detected camera's own
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
