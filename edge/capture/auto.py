"""`source: {kind: auto}`: the Pi camera when there is one, else the first USB camera.

Detection is cheap (an import and libcamera's camera list) and touches no device, so it can
run before the capture thread starts and turn "no camera" into a message saying what to set.
"""

from __future__ import annotations

import logging
from pathlib import Path

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
