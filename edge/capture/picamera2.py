"""The Raspberry Pi camera through picamera2 (libcamera).

Two streams: `main` at the configured size for snapshots, and `lores` at the model's input
size, so the ISP scales the image and the CPU never resizes a full frame. A Pi 4's ISP (VC4)
only gives a YUV420 lores stream, converted here with OpenCV (I420 layout: Y plane, then U,
then V; picamera2 returns it as an array of height*3/2 rows of `stride` bytes). A Pi 5 (PiSP)
can give RGB directly.

picamera2 names 24-bit formats by libcamera's (DRM) convention: its "RGB888" has bytes B,G,R
and "BGR888" has bytes R,G,B. We want R,G,B, so both RGB streams are requested as "BGR888".

Reading is split in two like the OpenCV source's: `grab` takes the next completed request,
`retrieve` copies its arrays out, `drop` lets it go uncopied, so frames inference will not use
cost no copy and no YUV conversion. The capture thread calls one of the two right after
`grab`; every request is released in a `finally` as soon as its arrays are copied out (a held
request pins a DMA buffer, and long capture loops that leak them run the camera dry). Captures
use
`wait=` so a stalled camera raises instead of hanging; after a timeout the pending capture job
is cancelled so it cannot grab (and leak) a request later.

Untested on hardware: the tests run this module against tests/fake_picamera2.py.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge.capture.base import SourceError
from edge.config import SourceConfig
from edge.errors import EdgeError

log = logging.getLogger(__name__)

BUFFERS = 4  # enough for the ISP to keep going while we hold one request briefly
PICAMERA2_FORMAT = {"RGB888": "BGR888", "YUV420": "YUV420"}  # our name -> picamera2's


def import_picamera2():
    """The Picamera2 class, or EdgeError saying how to install it."""
    try:
        from picamera2 import Picamera2
    except ImportError as e:
        raise EdgeError(
            f"picamera2 is not importable ({e}); on Raspberry Pi OS: sudo apt install "
            "python3-picamera2, and create the venv with --system-site-packages"
        ) from None
    return Picamera2


def is_pisp(picam_cls) -> bool:
    """True on a Pi 5 (PiSP ISP), False on earlier Pis (VC4).

    picamera2 decides this itself (`Picamera2.platform`, from the ISP's V4L2 card name); older
    picamera2 releases predate the Pi 5 and lack it, so we fall back to the board model.
    """
    platform = getattr(picam_cls, "platform", None)
    if platform is not None:
        return getattr(platform, "name", str(platform)).upper().endswith("PISP")
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False
    return "Raspberry Pi 5" in model or "Compute Module 5" in model


def pi_cameras(picam_cls) -> list[dict]:
    """Cameras libcamera sees that the Pi's ISP drives (USB webcams excluded: no lores)."""
    try:
        cams = picam_cls.global_camera_info()
    except Exception as e:  # libcamera trouble: treat as no camera, say why
        log.debug("picamera2: global_camera_info failed: %s", e)
        return []
    return [c for c in cams if "/usb" not in str(c.get("Id", ""))]


def yuv420_to_rgb(yuv: np.ndarray, width: int) -> np.ndarray:
    """picamera2's YUV420 array (h*3/2 rows of `stride` bytes, I420 planes) to HxWx3 RGB.

    Converting the padded array as a whole image of width `stride` keeps the chroma planes
    aligned (their rows are stride/2 wide); the padding columns are cut afterwards.
    Note: cv2.COLOR_YUV420p2RGB is the YV12 (V before U) conversion and swaps the chroma.
    """
    rgb = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
    return rgb if rgb.shape[1] == width else np.ascontiguousarray(rgb[:, :width])


class Picamera2Source:
    live = True

    def __init__(self, cfg: SourceConfig, model_size: tuple[int, int],
                 wants_full: Callable[[], bool] | None = None) -> None:
        if isinstance(cfg.device, str) and not cfg.device.isdigit():
            raise EdgeError(
                f"source.device {cfg.device!r}: picamera2 takes a camera number (0, 1, ...)"
            )
        self.cfg = cfg
        self.camera_num = int(cfg.device)
        self.model_size = (int(model_size[0]), int(model_size[1]))
        self.name = f"picamera2:{self.camera_num}"
        self.cam = None
        self.lores_format = "YUV420"
        self.lores_width = self.model_size[0]
        self._request = None  # the grabbed request, held until retrieve() or drop()
        # asked per frame whether anything needs `main` (edge.fullres); None: always copy it
        self.wants_full = wants_full

    def _lores_format(self, pisp: bool) -> str:
        fmt = self.cfg.lores_format
        if fmt == "auto":
            return "RGB888" if pisp else "YUV420"
        if fmt == "RGB888" and not pisp:
            raise SourceError("source.lores_format RGB888 needs a Pi 5; a Pi 4 needs YUV420")
        return fmt

    def configuration(self, cam, pisp: bool) -> dict:
        """The video configuration: main for snapshots, lores at the model's input size."""
        self.lores_format = self._lores_format(pisp)
        w, h = self.model_size
        main_w, main_h = max(self.cfg.width, w), max(self.cfg.height, h)  # lores <= main
        return cam.create_video_configuration(
            main={"size": (main_w - main_w % 2, main_h - main_h % 2), "format": "BGR888"},
            lores={"size": (w - w % 2, h - h % 2), "format": PICAMERA2_FORMAT[self.lores_format]},
            buffer_count=BUFFERS,
            controls={"FrameRate": self.cfg.fps},
            display=None,
            encode=None,
        )

    def open(self) -> None:
        picam_cls = import_picamera2()
        if not pi_cameras(picam_cls):
            raise SourceError(
                "picamera2: no Pi camera found (is the ribbon cable seated? USB webcams: use "
                "kind: opencv)"
            )
        try:
            cam = picam_cls(self.camera_num)
        except (RuntimeError, IndexError) as e:
            raise SourceError(f"{self.name}: cannot open the camera ({e})") from None
        self.cam = cam
        try:
            cam.configure(self.configuration(cam, is_pisp(picam_cls)))
            cam.start()
        except RuntimeError as e:
            raise SourceError(f"{self.name}: cannot start the camera ({e})") from None
        lores = cam.camera_configuration()["lores"]
        self.lores_width = lores["size"][0]  # libcamera may have adjusted it
        log.info(
            "%s: main %s, lores %s %s (%s)", self.name, cam.camera_configuration()["main"]["size"],
            lores["size"], self.lores_format, "Pi 5 / PiSP" if is_pisp(picam_cls) else "VC4",
        )  # fmt: skip

    def grab(self) -> bool:
        """Wait (at most the stall timeout) for the next frame and hold its request."""
        if self.cam is None:
            raise SourceError(f"{self.name}: not open")
        self.drop()
        timeout = self.cfg.stall_timeout_s
        try:
            self._request = self.cam.capture_request(wait=timeout)
        except concurrent.futures.TimeoutError:
            self.cam.cancel_all_and_flush()  # else the queued job takes a request nobody frees
            raise SourceError(f"{self.name}: stall: no frame within {timeout:g} s") from None
        except RuntimeError as e:
            raise SourceError(f"{self.name}: capture failed ({e})") from None
        return True

    def retrieve(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Copy the grabbed frame out (lores as RGB; main only when something needs it, else
        None) and release its request."""
        request, self._request = self._request, None
        if request is None:
            raise SourceError(f"{self.name}: retrieve without a grab")
        try:
            lores = request.make_array("lores")  # make_array copies out of the DMA buffer
            full = (request.make_array("main")
                    if self.wants_full is None or self.wants_full() else None)
        finally:
            request.release()
        if self.lores_format == "YUV420":
            return yuv420_to_rgb(lores, self.lores_width), full
        return lores, full

    def drop(self) -> None:
        """Release the grabbed frame without copying it."""
        request, self._request = self._request, None
        if request is not None:
            request.release()

    def read(self) -> tuple[np.ndarray, np.ndarray | None]:
        self.grab()
        return self.retrieve()

    def close(self) -> None:
        try:
            self.drop()
        except Exception as e:  # a camera gone wrong: still stop and close it below
            log.warning("%s: releasing the last request failed: %s", self.name, e)
        cam, self.cam = self.cam, None
        if cam is None:
            return
        for step in (cam.stop, cam.close):
            try:
                step()
            except Exception as e:  # keep closing: a half-closed camera blocks the reopen
                log.warning("%s: %s failed: %s", self.name, step.__name__, e)
