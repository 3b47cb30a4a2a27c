"""Image bytes to RGB, JPEGs decoded only as large as the model's input needs.

The default `box` resize halves a frame 2x2 while it stays at least the model's input size,
then resizes bilinearly (edge.preprocess). libjpeg can do those halvings itself: its scaled
IDCT decodes at 1/2, 1/4 or 1/8 straight from the DCT coefficients, a low-pass like the 2x2
average (no aliasing), skipping most of the colour conversion and resize work (640x480 to
224x224: 1.26 -> 0.9 ms of decode and resize per frame here; 1280x720 saves twice that). It
is integer arithmetic, the same bytes on x86 and aarch64 (the emulated aarch64 run checks).

So every path from a JPEG to a box-resized model decodes through `decode_image` with
`decode_to` = the model's input size (`ModelInput.decode_to`): MJPG video packets, image
files (`edge run --source folder`), `edge classify`, and training's images. They agree with
each other to the byte. Whatever needs the whole image (a region's crop, snapshots, clips,
collect, the preview, segmentation masks) decodes at full size (`decode_to=None`).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np

from edge.imagesize import jpeg_size
from edge.preprocess import box_factors

_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV 4.11 and later: no BGR pass
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_scale(frame_size: tuple[int, int], decode_to: tuple[int, int] | None) -> int:
    """The largest JPEG scale denominator (1, 2, 4, 8) that keeps a (w, h) frame at least
    `decode_to` on both axes: the halvings the box resize would do on both."""
    if decode_to is None or min(frame_size) <= 0:
        return 1
    kx, ky = box_factors((frame_size[1], frame_size[0]), decode_to)
    return min(kx, ky, 8)


def decode_flags(scale: int = 1) -> int:
    """imdecode flags for 1/`scale` of the image's size, RGB where OpenCV can (else BGR)."""
    flags = _REDUCED[scale]
    return flags if _RGB is None else (flags & ~cv2.IMREAD_COLOR) | _RGB


def is_jpeg(data: np.ndarray | bytes) -> bool:
    """A JPEG's start-of-image marker (`data`: bytes, or a flat uint8 array)."""
    return bytes(data[:2]) == b"\xff\xd8"


def decode_image(data: np.ndarray | bytes, decode_to: tuple[int, int] | None = None,
                 size: tuple[int, int] | None = None) -> np.ndarray | None:
    """RGB uint8 pixels of an encoded image (None if OpenCV cannot decode it); a JPEG at the
    scale `decode_scale` allows toward `decode_to` (its (w, h) `size` read from its header
    unless given). cv2.error propagates (OpenCV's own size guard)."""
    # (a video packet comes as a 1xN array)
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes | bytearray) else data.ravel()
    scale = 1
    if decode_to is not None and is_jpeg(buf):
        size = size or jpeg_size(io.BytesIO(buf.tobytes()))
        scale = decode_scale(size, decode_to) if size else 1
    img = cv2.imdecode(buf, decode_flags(scale))
    if img is None or _RGB is not None:
        return img
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)


def target(decode_to: tuple[int, int] | None,
           wants_full: Callable[[], bool] | None) -> tuple[int, int] | None:
    """What a source decodes this frame toward: `decode_to`, unless `wants_full()` says
    something needs the whole image (edge.fullres; None: always)."""
    if decode_to is None or wants_full is None or wants_full():
        return None
    return decode_to
