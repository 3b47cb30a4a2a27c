"""OpenCV sources: a USB camera (index or /dev/videoN), an RTSP/HTTP stream, or a video file.

Cameras are opened with V4L2, the configured fourcc (MJPG lets USB 2 cameras reach 30 fps at
640x480) and a one-frame driver buffer, so a read returns a recent frame rather than a queued
one. An unplugged USB camera is known to keep returning its last frame from `read()`; that is
caught by comparing a cheap fingerprint of consecutive frames (`stale_frames`). Streams get
FFmpeg open/read timeouts equal to the stall timeout, so a dead server raises instead of
hanging. Video files are finite (or loop) and, with `realtime`, are paced to their own fps.

Reading is split in two, as OpenCV's own grab()/retrieve(): `grab` takes the next frame off
the camera or file, `retrieve` decodes the last one grabbed, so the capture thread only
decodes the frames inference will use. For a V4L2 camera a grab only dequeues the driver's
buffer (the MJPG decode is in retrieve); FFmpeg (streams, video files) decodes in grab and
only converts the colours in retrieve, except for MJPG video files: their packets are read raw
and decoded by libjpeg straight to RGB (no BGR frame, no colour conversion: 0.3 ms less per
640x480 frame here, and a grab that costs nothing).

A raw packet is decoded at reduced size (edge.decode: libjpeg's scaled IDCT does the box
resize's first halvings) when nothing wants the full-resolution image (`wants_full`,
edge.fullres) and the model's resize is `box` (`decode_to`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge.capture.base import Pacer, SourceError
from edge.config import SourceConfig
from edge.decode import decode_image, target

log = logging.getLogger(__name__)

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
VIDEO_EXTS = (
    ".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv",
    ".h264", ".h265", ".mjpeg", ".mjpg", ".gif",
)  # fmt: skip


def device_kind(device: int | str) -> str:
    """'camera' (index or /dev/videoN), 'url' (rtsp://, http://, ...) or 'file'."""
    if isinstance(device, int) or str(device).isdigit() or str(device).startswith("/dev/"):
        return "camera"
    return "url" if URL.match(str(device)) else "file"


def fingerprint(img: np.ndarray) -> int:
    """A cheap hash of every 8th pixel: identical frames give identical fingerprints."""
    return hash(img[::8, ::8].tobytes())


class StaleCheck:
    """Counts consecutive identical frames; True once `limit` in a row were seen (0: never)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.last: int | None = None
        self.count = 0

    def stale(self, img: np.ndarray, frames: int = 1) -> bool:
        """`frames`: camera frames since the last image checked (those passed over undecoded
        count too: a camera whose every decoded frame is the same is frozen in between)."""
        if not self.limit:
            return False
        key = fingerprint(img)
        self.count = self.count + frames if key == self.last else 1
        self.last = key
        return self.count >= self.limit


class OpenCVSource:
    def __init__(self, cfg: SourceConfig, check_stale: bool | None = None,
                 decode_to: tuple[int, int] | None = None,
                 wants_full: Callable[[], bool] | None = None) -> None:
        """`decode_to`: the smallest size a raw JPEG may be decoded to (a `box`-resized
        model's input), when `wants_full()` says nothing needs the full image; None: full."""
        self.cfg = cfg
        self.device = cfg.device
        self.kind = device_kind(cfg.device)
        self.live = self.kind != "file"
        self.name = f"opencv:{cfg.device}"
        # Stale frames mean a dead USB camera; a video file may repeat frames legitimately.
        self.check_stale = self.kind == "camera" if check_stale is None else check_stale
        self.cap: cv2.VideoCapture | None = None
        self.stale = StaleCheck(cfg.stale_frames)
        self.pacer: Pacer | None = None
        self.frame_rate: float | None = None  # video files: their own fps (Frame.media_s)
        self.frames = 0
        self.raw = False  # MJPG packets read undecoded (video files only)
        self._grabbed: np.ndarray | None = None  # the raw packet of the last grab
        self._grabs = 0  # frames grabbed since the last retrieve
        self.decode_to = decode_to
        self.wants_full = wants_full
        self.size: tuple[int, int] | None = None  # video files: their frames' (w, h)

    def _capture(self) -> cv2.VideoCapture:
        cfg = self.cfg
        if self.kind == "camera":
            dev = int(self.device) if str(self.device).isdigit() else str(self.device)
            cap = cv2.VideoCapture(dev, cv2.CAP_V4L2)
            if cap.isOpened():
                # FOURCC first: the size and rate on offer depend on the pixel format.
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
                cap.set(cv2.CAP_PROP_FPS, cfg.fps)
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return cap
        if self.kind == "url":
            ms = int(cfg.stall_timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            return cv2.VideoCapture(str(self.device), cv2.CAP_FFMPEG, params)
        if not Path(str(self.device)).is_file():
            raise SourceError(f"{self.device}: no such video file")
        return cv2.VideoCapture(str(self.device))

    def open(self) -> None:
        cap = self._capture()
        if not cap.isOpened():
            cap.release()
            hint = {
                "camera": "is a camera plugged in? `v4l2-ctl --list-devices` lists them",
                "url": "is the stream reachable?",
                "file": "is it a video OpenCV can decode?",
            }[self.kind]
            raise SourceError(f"{self.device}: cannot open ({hint})")
        self.cap = cap
        self.frames = 0
        self.stale = StaleCheck(self.cfg.stale_frames)
        self.pacer = None
        if self.kind == "file":
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.frame_rate = fps if 0 < fps <= 1000 and not math.isnan(fps) else self.cfg.fps
            if self.cfg.realtime:
                self.pacer = Pacer(self.frame_rate)
        if self.kind == "file":
            self.raw = _raw_mjpg(cap)
            self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if self.kind == "camera":
            got = (
                int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                cap.get(cv2.CAP_PROP_FPS),
            )
            log.info("%s: opened at %dx%d, %.1f fps", self.name, *got)

    def _next(self) -> bool:
        if self.raw:
            ok, self._grabbed = self.cap.read()
            return ok
        return self.cap.grab()

    def grab(self) -> bool | None:
        """Take the next frame without decoding it; None at the end of a file or stream."""
        if self.cap is None:
            raise SourceError(f"{self.name}: not open")
        ok = self._next()
        if not ok and self.kind == "file" and self.cfg.loop and self.frames:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            if not self._next():
                raise SourceError(f"{self.device}: cannot read the first frame again to loop")
            ok = True
        if not ok:
            if self.kind == "camera":
                raise SourceError(f"{self.device}: read failed (camera unplugged?)")
            if self.kind == "file" and not self.frames:
                raise SourceError(f"{self.device}: no frame could be read (a corrupt or empty "
                                  "video, or not a video OpenCV can decode)")
            return None  # end of the file (or of the stream: the capture thread reconnects)
        self.frames += 1
        self._grabs += 1
        return True

    def retrieve(self) -> tuple[np.ndarray, None]:
        """Decode the frame of the last `grab` to RGB."""
        if self.raw:
            img = decode_image(self._grabbed, target(self.decode_to, self.wants_full), self.size)
        else:
            ok, img = self.cap.retrieve()
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img) if ok else None
        if img is None:
            raise SourceError(f"{self.device}: cannot decode frame {self.frames}")
        grabs, self._grabs = self._grabs, 0
        if self.check_stale and self.stale.stale(img, grabs):
            raise SourceError(
                f"{self.device}: stall: {self.stale.count} identical frames in a row "
                "(camera unplugged or frozen)"
            )
        return img, None

    def read(self) -> tuple[np.ndarray, None] | None:
        return self.retrieve() if self.grab() else None

    def close(self) -> None:
        self._grabbed = None
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def _raw_mjpg(cap: cv2.VideoCapture) -> bool:
    """Switch an MJPG file to raw packets if its first packet is a JPEG; rewinds either way."""
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
    if (fourcc != cv2.VideoWriter_fourcc(*"MJPG") or not hasattr(cv2, "IMREAD_COLOR_RGB")
            or not cap.set(cv2.CAP_PROP_FORMAT, -1)):
        return False  # (IMREAD_COLOR_RGB: OpenCV 4.11 and later)
    ok, packet = cap.read()
    raw = bool(ok) and packet is not None and packet.size > 2 and packet.ravel()[:2].tolist() == [
        0xFF, 0xD8]
    if not raw:
        cap.set(cv2.CAP_PROP_FORMAT, 0)
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return raw
